-- request_transformer: edit the request before it goes upstream (DESIGN.md 10.4).
--
-- Applied in this order: remove, rename, set, add, rewrite_path.
-- config:
--   remove: [X-Debug]                      headers dropped
--   rename: {X-Old: X-New}                 every value moves to the new name
--   set: {X-Env: prod}                     replaces any value
--   add: {X-Tag: a}                        added beside existing values
--   rewrite_path: {pattern: "^/v1/(.*)", replacement: "/api/%1"}   (a Lua pattern, gsub once)
local P = {}
P.priority = 800

P.schema = { fields = {
    remove = { type = "array", items = { type = "string" }, default = {} },
    rename = { type = "map", default = {} },
    set = { type = "map", default = {} },
    add = { type = "map", default = {} },
    rewrite_path = { type = "table", fields = {
        pattern = { type = "string", required = true },
        replacement = { type = "string", required = true },
    } },
} }

function P.init(conf)
    conf._remove, conf._rename, conf._set, conf._add = conf.remove, conf.rename, conf.set, conf.add
    local rw = conf.rewrite_path
    if rw ~= nil then
        local ok, err = pcall(string.find, "/", rw.pattern)
        if not ok then error("request_transformer: rewrite_path.pattern: " .. err, 0) end
    end
end

function P.access(ctx, conf)
    for _, name in ipairs(conf._remove) do ctx:clear_header(name) end
    for from, to in pairs(conf._rename) do
        local values = ctx:headers(from)
        if values[1] ~= nil then
            ctx:clear_header(from)
            for _, v in ipairs(values) do ctx:add_header(to, v) end
        end
    end
    for name, v in pairs(conf._set) do ctx:set_header(name, v) end
    for name, v in pairs(conf._add) do ctx:add_header(name, v) end
    local rw = conf.rewrite_path
    if rw then
        local path, n = ctx.path:gsub(rw.pattern, rw.replacement, 1)
        if n > 0 then ctx:set_path(path) end
    end
end

return P
