-- p2c_ewma: power of two random choices on peak EWMA latency (Finagle,
-- Linkerd). Two distinct available targets are drawn at random and the one
-- with the lower cost wins:
--   cost = ewma * (active + 1) / weight
-- ewma is the target's peak-EWMA response latency, decayed to now; active the
-- process-wide requests in flight. A target with no latency sample yet is
-- costed with the other candidate's latency, so it is tried (and measured)
-- without being flooded: its in-flight count still counts.
--
-- Written for the JIT: the usual call (both drawn targets available, both
-- measured) is one straight path with no branch that goes both ways, so it
-- compiles to one trace whatever order LuaJIT meets the branches in.
local P = {}

local random = math.random
local floor, min, max = math.floor, math.min, math.max

function P.init(conf)
    for k in pairs(conf) do
        error("p2c_ewma takes no config (unknown key '" .. tostring(k) .. "')", 0)
    end
    conf._avail = {} -- scratch list of available indexes, reused per call
end

-- The targets table last seen and its length (# is a call, not a load).
local last_targets, last_n = nil, 0

-- Some target of the pair drawn among all was not available: draw again among
-- the available ones, which keeps every available pair equally likely.
local function draw_available(conf, targets, n)
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
    return avail[x], avail[(x + random(m - 1) - 1) % m + 1]
end

function P.balance(ctx, conf, targets)
    local n = last_n
    if targets ~= last_targets then
        n = #targets
        last_targets, last_n = targets, n
    end
    if n < 2 then
        return n == 1 and targets[1].available and 1 or nil
    end
    -- Two distinct indexes, every ordered pair equally likely, from one
    -- draw: k = (x-1)(n-1) + d, the second index d+1 places after the first.
    local k = floor(random() * (n * (n - 1)))
    local x0 = floor(k / (n - 1))
    local x = x0 + 1
    local y = (x0 + 1 + k - x0 * (n - 1)) % n + 1
    local a, b = targets[x], targets[y]
    if not (a.available and b.available) then
        x, y = draw_available(conf, targets, n)
        if y == nil then return x end
        a, b = targets[x], targets[y]
    end
    local ea, eb = a.ewma, b.ewma
    if ea == 0 or eb == 0 then -- a target not measured yet: the other's latency
        ea, eb = max(ea, eb), max(ea, eb)
    end
    local la, lb = (a.active + 1) / a.weight, (b.active + 1) / b.weight
    local ca, cb = ea * la, eb * lb
    if ca == cb then -- both unmeasured (or equal): the less busy one
        ca, cb = la, lb
    end
    -- The cheaper of the two, x on a tie, without a branch: one that goes
    -- both ways would send half the calls through a side trace.
    -- floor(min(max(d * 1e300, 0), 1)) is 1 when cb < ca (by more than
    -- 1e-300), else 0.
    return x + (y - x) * floor(min(max((ca - cb) * 1e300, 0), 1))
end

return P
