-- round_robin: smooth weighted round robin, as nginx does it.
--
-- Each pick adds every available target's weight to its running score, takes
-- the highest score and subtracts the total from it. With weights 5, 1, 1 the
-- order is a a b a c a a: spread out, never a burst of five.
--
-- The gateway runs the same algorithm in C for routes whose balancer is the
-- bundled round_robin without config, so this file is the reference (and a
-- starting point to copy); a copy on plugin_path overrides the C one.
--
-- State: per route and worker, one score per target (kept in conf).
local P = {}

function P.init(conf)
    for k in pairs(conf) do
        error("round_robin takes no config (unknown key '" .. tostring(k) .. "')", 0)
    end
    conf._scores = setmetatable({}, { __mode = "k" }) -- targets view -> scores
end

function P.balance(ctx, conf, targets)
    local scores = conf._scores[targets]
    if scores == nil then
        scores = {}
        for i = 1, #targets do scores[i] = 0 end
        conf._scores[targets] = scores
    end
    local best, total = nil, 0
    for i = 1, #targets do
        local t = targets[i]
        if t.available then
            local w = t.weight
            local s = scores[i] + w
            scores[i] = s
            total = total + w
            if best == nil or s > scores[best] then best = i end
        end
    end
    if best ~= nil then scores[best] = scores[best] - total end
    return best
end

return P
