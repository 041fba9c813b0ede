-- least_conn: the available target with the fewest requests in flight per
-- unit of weight. In-flight counts are process-wide (every worker's requests),
-- so all workers steer away from a target that is slow to answer.
-- Ties rotate, so idle targets share the load instead of the first one
-- taking it all.
local P = {}

function P.init(conf)
    for k in pairs(conf) do
        error("least_conn takes no config (unknown key '" .. tostring(k) .. "')", 0)
    end
    conf._next = 0
end

function P.balance(ctx, conf, targets)
    local n = #targets
    local start = conf._next
    conf._next = (start + 1) % n
    local best, best_load
    for k = 0, n - 1 do
        local i = (start + k) % n + 1
        local t = targets[i]
        if t.available then
            local load = t.active / t.weight
            if best == nil or load < best_load then
                best, best_load = i, load
            end
        end
    end
    return best
end

return P
