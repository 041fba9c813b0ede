-- p2c_ewma: power of two random choices on peak EWMA latency (Finagle,
-- Linkerd). Two distinct available targets are drawn at random and the one
-- with the lower cost wins:
--   cost = ewma * (active + 1) / weight
-- ewma is the target's peak-EWMA response latency, decayed to now; active the
-- process-wide requests in flight. A target with no latency sample yet is
-- costed with the other candidate's latency, so it is tried (and measured)
-- without being flooded: its in-flight count still counts.
local P = {}

local random = math.random

function P.init(conf)
    for k in pairs(conf) do
        error("p2c_ewma takes no config (unknown key '" .. tostring(k) .. "')", 0)
    end
    conf._avail = {} -- scratch list of available indexes, reused per call
end

-- The two candidates: a uniform pair of distinct available targets. The
-- usual case (both of a pair drawn among all targets are available) needs no
-- loop, so the JIT compiles the call as one straight trace; otherwise the
-- pair is drawn again among the available ones, which keeps every available
-- pair equally likely.
local function pair(conf, targets)
    local n = #targets
    if n >= 2 then
        local x = random(n)
        local y = random(n - 1)
        if y >= x then y = y + 1 end
        if targets[x].available and targets[y].available then return x, y end
    end
    local avail, m = conf._avail, 0
    for i = 1, n do
        if targets[i].available then
            m = m + 1
            avail[m] = i
        end
    end
    if m == 0 then return nil end
    if m == 1 then return avail[1] end
    local x = random(m)
    local y = random(m - 1)
    if y >= x then y = y + 1 end
    return avail[x], avail[y]
end

function P.balance(ctx, conf, targets)
    local ix, iy = pair(conf, targets)
    if iy == nil then return ix end
    local a, b = targets[ix], targets[iy]
    local ea, eb = a.ewma, b.ewma
    if ea == 0 then ea = eb end
    if eb == 0 then eb = ea end
    local ca = ea * (a.active + 1) / a.weight
    local cb = eb * (b.active + 1) / b.weight
    if ca == cb then -- both unmeasured (or equal): the less busy one
        ca, cb = (a.active + 1) / a.weight, (b.active + 1) / b.weight
    end
    return cb < ca and iy or ix
end

return P
