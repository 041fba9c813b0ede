-- response_headers: edit the response's headers (DESIGN.md 10.4), for every
-- response the route sends (upstream answers and the gateway's own).
-- config:
--   remove: [Server]
--   set: {X-Frame-Options: DENY}
--   add: {Set-Cookie: "a=1"}   (added beside the upstream's values)
local P = {}
P.priority = 700

P.schema = { fields = {
    remove = { type = "array", items = { type = "string" }, default = {} },
    set = { type = "map", default = {} },
    add = { type = "map", default = {} },
} }

function P.init(conf)
    conf._remove, conf._set, conf._add = conf.remove, conf.set, conf.add
end

function P.response(ctx, conf)
    for _, name in ipairs(conf._remove) do ctx:clear_response_header(name) end
    for name, v in pairs(conf._set) do ctx:set_response_header(name, v) end
    for name, v in pairs(conf._add) do
        if type(v) == "table" then
            for _, one in ipairs(v) do ctx:add_response_header(name, one) end
        else
            ctx:add_response_header(name, v)
        end
    end
end

return P
