-- rate_limit: a local token bucket per key.
--
-- Each key gets a bucket of `burst` tokens that refills at `rate` tokens per
-- second; a request takes one token or is answered here with
--   429 {"error":"rate_limited","request_id":"...","retry_after":N,"status":429}
-- and `Retry-After: N` (whole seconds until a token is back).
--
-- Buckets are per worker: with W workers a key can get up to W x rate in
-- total. A Redis-backed mode shared by every worker and instance will come
-- with the gateway's Redis client (the idempotency issue).
--
-- Memory: buckets idle for longer than burst/rate seconds are full again, so
-- they are forgotten (two generations, swapped every max(1, burst/rate) s):
-- memory follows the number of recently active keys.
--
-- config:
--   rate: 100          tokens per second (required, > 0)
--   burst: 50          bucket size (default: rate, at least 1)
--   key: "ip"          "ip" (default) | "header:NAME" (falls back to the IP when absent)
--   headers: true      add X-RateLimit-Limit / X-RateLimit-Remaining to responses
local P = {}

local KNOWN = { rate = true, burst = true, key = true, headers = true }
local ceil, floor, max = math.ceil, math.floor, math.max

function P.init(conf)
    for k in pairs(conf) do
        if not KNOWN[k] then error("rate_limit: unknown config key '" .. tostring(k) .. "'", 0) end
    end
    if type(conf.rate) ~= "number" or not (conf.rate > 0) or conf.rate == math.huge then
        error("rate_limit: config.rate must be a positive number (tokens per second)", 0)
    end
    local burst = conf.burst
    if burst == nil then burst = max(1, conf.rate) end
    if type(burst) ~= "number" or not (burst >= 1) or burst == math.huge then
        error("rate_limit: config.burst must be a number >= 1", 0)
    end
    conf._burst = burst
    local key = conf.key or "ip"
    if key ~= "ip" then
        local name = type(key) == "string" and key:match("^header:([%w!#$%%&'*+.^_`|~-]+)$")
        if not name then
            error("rate_limit: config.key must be ip or header:NAME, got " .. tostring(key), 0)
        end
        conf._header = name
    end
    if conf.headers ~= nil and type(conf.headers) ~= "boolean" then
        error("rate_limit: config.headers must be true or false", 0)
    end
    conf._headers = conf.headers ~= false
    conf._limit_text = tostring(burst)
    conf._period = max(1, burst / conf.rate)
    conf._cur, conf._old, conf._rotate_at = {}, {}, 0
end

local function bucket(conf, key, now)
    if now >= conf._rotate_at then
        conf._old, conf._cur = conf._cur, {}
        conf._rotate_at = now + conf._period
    end
    local b = conf._cur[key]
    if b == nil then
        b = conf._old[key]
        if b ~= nil then
            conf._old[key] = nil
        else
            b = { tokens = conf._burst, at = now }
        end
        conf._cur[key] = b
    end
    return b
end

function P.access(ctx, conf)
    local key
    if conf._header then
        local v = ctx:header(conf._header)
        key = v and ("h:" .. v) or nil
    end
    key = key or ("ip:" .. (ctx.client_ip or ""))
    local now = gw.now()
    local b = bucket(conf, key, now)
    local tokens = b.tokens
    if now > b.at then
        tokens = tokens + (now - b.at) * conf.rate
        if tokens > conf._burst then tokens = conf._burst end
    end
    b.at = now
    local allowed = tokens >= 1
    if allowed then tokens = tokens - 1 end
    b.tokens = tokens
    if conf._headers then
        ctx:set_response_header("X-RateLimit-Limit", conf._limit_text)
        ctx:set_response_header("X-RateLimit-Remaining", floor(tokens))
    end
    if allowed then return end
    local retry = max(1, ceil((1 - tokens) / conf.rate))
    ctx:respond(429, gw.json_encode({
        error = "rate_limited", status = 429, retry_after = retry, request_id = ctx.request_id,
    }), {
        ["Content-Type"] = "application/json",
        ["Retry-After"] = retry,
    })
end

return P
