-- rate_limit: a local token bucket per key.
--
-- Each key gets a bucket of `burst` tokens that refills at `rate` tokens per
-- second; a request takes one token or is answered here with
--   429 {"error":"rate_limited","request_id":"...","retry_after":N,"status":429}
-- and `Retry-After: N` (whole seconds until a token is back).
--
-- Where the buckets live (`policy`):
--   local   per worker (the default): with W workers a key can get up to W x burst
--   shared  per process: a bucket in the shared dictionary `dict` (declared under
--           the top-level shared_dicts), taken atomically by every worker; it
--           survives a reload that keeps the dictionary
--   redis   across instances: the bucket lives in the top-level `redis`, under
--           "moongate:rl:ROUTE:KEY", updated by one script (Redis's clock) per request
-- A store failure (the shared dictionary is too small for one more key, Redis
-- down or slower than redis.timeout) follows `on_store_error`: allow (default)
-- or deny (answer 503 rate_limit_unavailable).
--
-- Memory: buckets idle for longer than burst/rate seconds are full again, so
-- they are forgotten (two generations, swapped every max(1, burst/rate) s):
-- memory follows the number of recently active keys.
--
-- Answers carry the IETF ratelimit-headers draft's RateLimit-Limit (burst),
-- RateLimit-Remaining (whole tokens left) and RateLimit-Reset (seconds until
-- the bucket is full again), plus the older X-RateLimit-Limit/-Remaining.
--
-- config:
--   rate: 100          tokens per `window` (required, > 0; per second with the default window)
--   window: 1s         the period of `rate`: seconds, or a duration like 500ms, 1s, 1m, 1h
--   burst: 50          bucket size (default: rate, at least 1)
--   key: "ip"          "ip" (default) | "header:NAME" (falls back to the IP when absent)
--   policy: local      local | shared | redis
--   dict: rate_limit   shared: the shared dictionary (default "rate_limit")
--   on_store_error: allow   allow | deny
--   headers: true      add the RateLimit-* headers to responses
local P = {}

-- Only the redis policy waits (its access phase then runs in a coroutine).
function P.waits(conf)
    return conf.policy == "redis"
end

-- A token bucket in a Redis hash: tokens and the time they were counted (ms).
local REDIS_BUCKET = [[
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(b[1]) or burst, tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local allowed = 0
if tokens >= 1 then tokens = tokens - 1 allowed = 1 end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate) + 1000)
return {allowed, tostring(tokens)}
]]

local KNOWN = {
    rate = true, burst = true, key = true, headers = true, window = true, policy = true,
    dict = true, on_store_error = true,
}
local ceil, floor, max = math.ceil, math.floor, math.max
local UNITS = { ms = 0.001, s = 1, m = 60, h = 3600 }

local function seconds(v)
    if type(v) == "number" then return v end
    if type(v) ~= "string" then return nil end
    local n, unit = v:match("^(%d+%.?%d*)(%a+)$")
    if n == nil or UNITS[unit] == nil then return nil end
    return tonumber(n) * UNITS[unit]
end

function P.init(conf)
    for k in pairs(conf) do
        if not KNOWN[k] then error("rate_limit: unknown config key '" .. tostring(k) .. "'", 0) end
    end
    if type(conf.rate) ~= "number" or not (conf.rate > 0) or conf.rate == math.huge then
        error("rate_limit: config.rate must be a positive number (tokens per second)", 0)
    end
    local window = conf.window == nil and 1 or seconds(conf.window)
    if window == nil or not (window > 0) or window == math.huge then
        error("rate_limit: config.window must be a duration like 1s or 1m, got "
            .. tostring(conf.window), 0)
    end
    conf._rate = conf.rate / window -- tokens per second
    local policy = conf.policy or "local"
    if policy ~= "local" and policy ~= "shared" and policy ~= "redis" then
        error("rate_limit: config.policy must be local, shared or redis, got " .. tostring(policy), 0)
    end
    if policy == "shared" then
        local ok, d = pcall(gw.shared_dict, conf.dict or "rate_limit")
        if not ok then
            error("rate_limit: policy shared needs the shared dictionary '"
                .. tostring(conf.dict or "rate_limit") .. "' under shared_dicts in the config", 0)
        end
        conf._dict = d
    end
    local ose = conf.on_store_error or "allow"
    if ose ~= "allow" and ose ~= "deny" then
        error("rate_limit: config.on_store_error must be allow or deny", 0)
    end
    conf._deny_on_error = ose == "deny"
    conf._redis = policy == "redis"
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
    conf._period = max(1, burst / conf._rate)
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

-- The local bucket of `key`: allowed, tokens left, seconds to the next token,
-- seconds to full.
local function take_local(conf, key)
    local now = gw.now()
    local b = bucket(conf, key, now)
    local tokens = b.tokens
    if now > b.at then
        tokens = tokens + (now - b.at) * conf._rate
        if tokens > conf._burst then tokens = conf._burst end
    end
    b.at = now
    local allowed = tokens >= 1
    if allowed then tokens = tokens - 1 end
    b.tokens = tokens
    return allowed, tokens, allowed and 0 or (1 - tokens) / conf._rate,
        (conf._burst - tokens) / conf._rate
end

function P.access(ctx, conf)
    local key
    if conf._header then
        local v = ctx:header(conf._header)
        key = v and ("h:" .. v) or nil
    end
    key = key or ("ip:" .. (ctx.client_ip or ""))
    local allowed, tokens, retry, full
    if conf._redis then
        local res, err = gw.redis:eval(REDIS_BUCKET, { "moongate:rl:" .. ctx.route .. ":" .. key },
            { conf._rate / 1000, conf._burst })
        if type(res) == "table" then
            allowed, tokens = res[1] == 1, tonumber(res[2]) or 0
            retry = allowed and 0 or (1 - tokens) / conf._rate
            full = (conf._burst - tokens) / conf._rate
        else
            allowed, tokens = nil, "redis: " .. tostring(err)
        end
    elseif conf._dict then
        local prefix = conf._prefix -- conf is per route entry: its route never changes
        if prefix == nil then
            prefix = ctx.route .. "\0"
            conf._prefix = prefix
        end
        allowed, tokens, retry, full = conf._dict:take(prefix .. key, conf._rate, conf._burst)
    else
        allowed, tokens, retry, full = take_local(conf, key)
    end
    if allowed == nil then
        gw.log("warn", "rate_limit: store error: " .. tostring(tokens))
        if conf._deny_on_error then
            ctx:respond(503, gw.json_encode({
                error = "rate_limit_unavailable", status = 503, request_id = ctx.request_id,
            }), { ["Content-Type"] = "application/json" })
        end
        return
    end
    if conf._headers then
        local remaining = floor(tokens)
        local reset = ceil(full)
        ctx:set_response_header("RateLimit-Limit", conf._limit_text)
        ctx:set_response_header("RateLimit-Remaining", remaining)
        ctx:set_response_header("RateLimit-Reset", reset)
        ctx:set_response_header("X-RateLimit-Limit", conf._limit_text)
        ctx:set_response_header("X-RateLimit-Remaining", remaining)
    end
    if allowed then return end
    retry = max(1, ceil(retry))
    ctx:respond(429, gw.json_encode({
        error = "rate_limited", status = 429, retry_after = retry, request_id = ctx.request_id,
    }), {
        ["Content-Type"] = "application/json",
        ["Retry-After"] = retry,
    })
end

return P
