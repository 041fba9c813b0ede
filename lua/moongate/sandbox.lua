-- The allow-listed environment each plugin file runs in.
--
-- Plugins are trusted code that the operator installs, so this is a guard
-- against accidents, not a security boundary: a plugin cannot exit the
-- process, block the event loop on files or sockets, load native code or
-- unguarded Lua (load/loadstring/dofile: the runaway guard instruments only
-- plugin files), or change the libraries other plugins and the runtime use.
-- Reading an undefined global is an error that names it, so typos and
-- forbidden functions fail loudly at the line that uses them.
--
-- Each plugin file gets its own environment table (its globals are private);
-- the library tables in it are copies, so changing string.x in one plugin
-- changes nothing elsewhere.
local M = {}

local function copy(t, except)
    local c = {}
    for k, v in pairs(t) do
        if not (except and except[k]) then c[k] = v end
    end
    return c
end

local FORBIDDEN = {
    io = true, debug = true, ffi = true, jit = true, package = true, module = true,
    load = true, loadstring = true, loadfile = true, dofile = true, collectgarbage = true,
    getfenv = true, setfenv = true, newproxy = true, gcinfo = true,
}

local function strict(t, what)
    return setmetatable(t, {
        __index = function(_, k)
            error(what .. tostring(k) .. " is not available to plugins (see docs/plugins.md, Environment)", 2)
        end,
    })
end

-- Builds the environment of one plugin file.
function M.env(gw, print_fn)
    local libs = {
        string = copy(string, { dump = true }),
        table = copy(table),
        math = copy(math),
        bit = copy(require("bit")),
        coroutine = copy(coroutine),
        os = strict({ time = os.time, clock = os.clock, date = os.date, difftime = os.difftime }, "os."),
        gw = gw,
    }
    libs.table.new = require("table.new")
    libs.table.clear = require("table.clear")
    libs["table.new"] = libs.table.new
    libs["table.clear"] = libs.table.clear

    local env = {
        assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs,
        pcall = pcall, xpcall = xpcall, select = select, tonumber = tonumber,
        tostring = tostring, type = type, unpack = unpack, rawequal = rawequal,
        rawget = rawget, rawset = rawset, setmetatable = setmetatable,
        getmetatable = getmetatable, _VERSION = _VERSION, print = print_fn,
        string = libs.string, table = libs.table, math = libs.math, bit = libs.bit,
        coroutine = libs.coroutine, os = libs.os, gw = gw,
    }
    env._G = env
    env.require = function(name)
        local lib = libs[name]
        -- Helper modules from plugin_path, never under the name of a library
        -- plugins may not have (a file ffi.lua does not make `ffi` available).
        if lib == nil and M.helper_loader ~= nil and type(name) == "string"
            and not FORBIDDEN[name:match("^[^.]*")] then
            return M.helper_loader(name)
        end
        if lib == nil then
            error("require(" .. string.format("%q", tostring(name)) .. "): plugins may require only"
                .. " string, table, math, bit, coroutine, os, gw, table.new, table.clear", 2)
        end
        return lib
    end
    return setmetatable(env, {
        __index = function(_, k)
            if FORBIDDEN[k] then
                error("global '" .. tostring(k) .. "' is not available to plugins"
                    .. " (see docs/plugins.md, Environment)", 2)
            end
            error("undefined global '" .. tostring(k) .. "'", 2)
        end,
    })
end

-- Keeps plugins from reaching the string metatable (getmetatable("").__index
-- is the real string library, shared by every plugin and the runtime).
function M.protect_string_metatable()
    local mt = getmetatable("")
    mt.__metatable = false
end

return M
