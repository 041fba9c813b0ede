-- ip_restriction: allow or deny by client address (DESIGN.md 10.4).
--
-- ctx.client_ip is matched against CIDR lists: a deny match, or an allow list
-- without a match, answers
--   403 {"error":"forbidden","message":"...","request_id":"...","status":403}
--
-- config:
--   allow: ["10.0.0.0/8", "2001:db8::/32", "127.0.0.1"]   (default: all)
--   deny:  ["10.1.2.3/32"]                                 (default: none)
local P = {}
P.priority = 3000

local band, rshift = bit.band, bit.rshift

-- Address -> 16 bytes (IPv4 as ::ffff:a.b.c.d) as a Lua array, or nil.
local function parse_v4(s)
    local a, b, c, d = s:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
    if not a then return nil end
    local out = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255 }
    for _, x in ipairs({ a, b, c, d }) do
        x = tonumber(x)
        if x > 255 then return nil end
        out[#out + 1] = x
    end
    return out
end

local function parse_v6(s)
    if s:find("%.") then -- ::ffff:1.2.3.4
        local head, v4 = s:match("^(.*:)(%d+%.%d+%.%d+%.%d+)$")
        local b = v4 and parse_v4(v4)
        if not b then return nil end
        s = head .. string.format("%x:%x", b[13] * 256 + b[14], b[15] * 256 + b[16])
    end
    local left, right = s, nil
    local dc = s:find("::", 1, true)
    if dc then left, right = s:sub(1, dc - 1), s:sub(dc + 2) end
    local function groups(part)
        local g = {}
        if part == "" then return g end
        for h in (part .. ":"):gmatch("([^:]*):") do
            if not h:match("^%x%x?%x?%x?$") then return nil end
            g[#g + 1] = tonumber(h, 16)
        end
        return g
    end
    local l, r = groups(left), right and groups(right) or {}
    if not l or not r then return nil end
    local fill = 8 - #l - #r
    if (dc and fill < 1) or (not dc and fill ~= 0) then return nil end
    local all = {}
    for _, v in ipairs(l) do all[#all + 1] = v end
    for _ = 1, dc and fill or 0 do all[#all + 1] = 0 end
    for _, v in ipairs(r) do all[#all + 1] = v end
    local out = {}
    for _, v in ipairs(all) do
        out[#out + 1] = rshift(v, 8)
        out[#out + 1] = band(v, 255)
    end
    return out
end

local function parse(s)
    return parse_v4(s) or (s:find(":", 1, true) and parse_v6(s)) or nil
end

local function cidr(s)
    local addr, bits = s:match("^([^/]+)/(%d+)$")
    addr = addr or s
    local b = parse(addr)
    if not b then error("ip_restriction: invalid address or CIDR '" .. s .. "'", 0) end
    local v4 = parse_v4(addr) ~= nil
    bits = tonumber(bits) or (v4 and 32 or 128)
    if bits > (v4 and 32 or 128) then error("ip_restriction: invalid prefix length in '" .. s .. "'", 0) end
    return { b = b, bits = v4 and bits + 96 or bits }
end

local function matches(list, b)
    for _, c in ipairs(list) do
        local bits, ok = c.bits, true
        for i = 1, 16 do
            if bits <= 0 then break end
            if bits >= 8 then
                if b[i] ~= c.b[i] then ok = false break end
            else
                local mask = 256 - 2 ^ (8 - bits)
                if band(b[i], mask) ~= band(c.b[i], mask) then ok = false end
                break
            end
            bits = bits - 8
        end
        if ok then return true end
    end
    return false
end

P.schema = { fields = {
    allow = { type = "array", items = { type = "string" } },
    deny = { type = "array", items = { type = "string" } },
} }

local function compile(v)
    if v == nil then return nil end
    local out = {}
    for _, s in ipairs(v) do out[#out + 1] = cidr(tostring(s)) end
    return out
end

function P.init(conf)
    conf._allow, conf._deny = compile(conf.allow), compile(conf.deny)
    if not conf._allow and not conf._deny then error("ip_restriction: config.allow or config.deny is required", 0) end
end

local function forbid(ctx, message)
    ctx:respond(403, gw.json_encode({
        error = "forbidden", status = 403, message = message, request_id = ctx.request_id,
    }), { ["Content-Type"] = "application/json" })
end

function P.access(ctx, conf)
    local b = parse(ctx.client_ip or "")
    if not b then forbid(ctx, "client address not recognised") end
    if conf._deny and matches(conf._deny, b) then forbid(ctx, "client address denied") end
    if conf._allow and not matches(conf._allow, b) then forbid(ctx, "client address not allowed") end
end

return P
