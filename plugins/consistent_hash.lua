-- consistent_hash: ketama consistent hashing (as nginx's `hash ... consistent`).
--
-- Every target owns 160 points per unit of weight on a 32-bit ring (XXH32 of
-- its address with the point number as seed); a request's key hashes to a
-- point and goes to the owner of the next point clockwise. Removing one of N
-- targets therefore moves only the keys it owned (about 1/N); the others keep
-- their target. An unavailable target's keys go to the next available owner
-- on the ring, and come back when it recovers.
--
-- config:
--   key: "ip" (default) | "path" | "header:NAME" | "cookie:NAME"
-- A request without the header or cookie is keyed by its client IP.
local P = {}

local POINTS = 160
local MAX_POINTS = 1000000 -- cap per ring: weights are scaled down beyond it
local SHIFT = 2 ^ 20       -- ring entries pack hash * SHIFT + target index

local floor, sort = math.floor, table.sort

function P.init(conf)
    local key = conf.key
    if key == nil then key = "ip" end
    if type(key) ~= "string" then
        error("consistent_hash: config.key must be a string, got " .. type(key), 0)
    end
    local kind, name = key:match("^(%a+):(.+)$")
    if key == "ip" or key == "path" then
        conf._kind = key
    elseif (kind == "header" or kind == "cookie") and name:match("^[%w!#$%%&'*+.^_`|~-]+$") then
        conf._kind, conf._name = kind, name
        if kind == "cookie" then
            conf._pattern = ";%s*" .. name:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0") .. "=([^;]*)"
        end
    else
        error("consistent_hash: config.key must be ip, path, header:NAME or cookie:NAME, got '"
            .. key .. "'", 0)
    end
    for k in pairs(conf) do
        if type(k) ~= "string" or (k ~= "key" and k:sub(1, 1) ~= "_") then
            error("consistent_hash: unknown config key '" .. tostring(k) .. "'", 0)
        end
    end
    conf._rings = setmetatable({}, { __mode = "k" }) -- targets view -> ring
end

local function build(targets)
    local total = 0
    for i = 1, #targets do total = total + targets[i].weight end
    local scale = total * POINTS > MAX_POINTS and MAX_POINTS / (total * POINTS) or 1
    local packed = {}
    for i = 1, #targets do
        local t = targets[i]
        local n = floor(POINTS * t.weight * scale)
        if n < 1 then n = 1 end
        for p = 0, n - 1 do
            packed[#packed + 1] = gw.hash(t.address, p) * SHIFT + (i - 1)
        end
    end
    sort(packed)
    local hashes, owners = {}, {}
    for k = 1, #packed do
        local v = packed[k]
        local owner = v % SHIFT
        hashes[k] = (v - owner) / SHIFT
        owners[k] = owner + 1
    end
    return { hashes = hashes, owners = owners, n = #packed }
end

local function key_of(ctx, conf)
    local kind = conf._kind
    local v
    if kind == "path" then
        v = ctx.path
    elseif kind == "header" then
        v = ctx:header(conf._name)
    elseif kind == "cookie" then
        local cookie = ctx:header("cookie")
        v = cookie and (";" .. cookie):match(conf._pattern)
    end
    return v or ctx.client_ip or ""
end

-- First ring index whose hash is >= h (1 past the end wraps to 1).
local function search(hashes, n, h)
    local lo, hi = 1, n
    while lo < hi do
        local mid = floor((lo + hi) / 2)
        if hashes[mid] < h then lo = mid + 1 else hi = mid end
    end
    if hashes[lo] < h then return 1 end
    return lo
end

function P.balance(ctx, conf, targets)
    local ring = conf._rings[targets]
    if ring == nil then
        ring = build(targets)
        conf._rings[targets] = ring
    end
    local n = ring.n
    local k = search(ring.hashes, n, gw.hash(key_of(ctx, conf)))
    local owners = ring.owners
    for _ = 1, n do -- clockwise until an available owner
        local i = owners[k]
        if targets[i].available then return i end
        k = k == n and 1 or k + 1
    end
    return nil
end

return P
