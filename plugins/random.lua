-- random: a weighted random pick among the available targets.
local P = {}

local random = math.random

function P.init(conf)
    for k in pairs(conf) do
        error("random takes no config (unknown key '" .. tostring(k) .. "')", 0)
    end
end

function P.balance(ctx, conf, targets)
    local total = 0
    for i = 1, #targets do
        local t = targets[i]
        if t.available then total = total + t.weight end
    end
    if total == 0 then return nil end
    local r = random() * total
    local last
    for i = 1, #targets do
        local t = targets[i]
        if t.available then
            r = r - t.weight
            last = i
            if r < 0 then return i end
        end
    end
    return last -- rounding
end

return P
