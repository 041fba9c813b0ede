-- The waiting part of the `gw` module (DESIGN.md section 10.3): gw.sleep,
-- gw.timer.at/every and gw.shared_dict. Installed into each VM's gw table by
-- gw.lua; the C side is gateway/lua/timer.c and gateway/lua/shdict.c.
local coro = require("moongate.coro")
local lio = require("moongate.lio")
local shd = require("moongate.shdict")

local M = {}

local type, tostring, select, unpack = type, tostring, select, unpack

local timers = {}       -- id -> {fn, n, args...}
local next_timer = 0

-- runner.timer(id): the callback of timer id (a job of the coroutine pool).
function M.timer_entry(id)
    local t = timers[id]
    if t == nil then return false end
    if not t.every then timers[id] = nil end
    return t
end

local function start_timer(what, delay, interval, fn, ...)
    if type(delay) ~= "number" or delay < 0 then
        error("bad argument #1 to " .. what .. " (seconds >= 0 expected, got " .. tostring(delay) .. ")", 3)
    end
    if type(fn) ~= "function" then
        error("bad argument #2 to " .. what .. " (function expected, got " .. type(fn) .. ")", 3)
    end
    next_timer = next_timer + 1
    local id = next_timer
    timers[id] = { fn = fn, n = select("#", ...), every = interval > 0, ... }
    local ok, err = lio.timer(id, delay, interval)
    if not ok then
        timers[id] = nil
        return nil, err
    end
    return true
end

-- Shared dictionaries: one object per dictionary of the config.
local Dict = {}
Dict.__index = Dict
function Dict:get(k) return shd.get(self[1], k) end
function Dict:set(k, v, ttl) return shd.set(self[1], k, v, ttl) end
function Dict:add(k, v, ttl) return shd.add(self[1], k, v, ttl) end
function Dict:incr(k, by, init, ttl) return shd.incr(self[1], k, by, init, ttl) end
function Dict:delete(k) return shd.delete(self[1], k) end
function Dict:ttl(k) return shd.ttl(self[1], k) end
function Dict:take(k, rate, burst) return shd.take(self[1], k, rate, burst) end

local dicts = {}
for name, i in pairs(shd.names()) do
    dicts[name] = setmetatable({ i, name = name }, Dict)
end

function M.install(gw)
    function gw.shared_dict(name)
        local d = dicts[name]
        if d == nil then
            error("gw.shared_dict: no dictionary '" .. tostring(name)
                .. "' (declare it under shared_dicts in the config)", 2)
        end
        return d
    end

    function gw.sleep(seconds)
        if type(seconds) ~= "number" then
            error("bad argument #1 to gw.sleep (number expected, got " .. type(seconds) .. ")", 2)
        end
        coro.check("gw.sleep")
        lio.sleep(seconds)
        coro.wait()
    end

    gw.timer = {
        at = function(delay, fn, ...)
            return start_timer("gw.timer.at", delay, 0, fn, ...)
        end,
        every = function(interval, fn, ...)
            if type(interval) ~= "number" or interval < 0.001 then
                error("bad argument #1 to gw.timer.every (seconds >= 0.001 expected, got "
                    .. tostring(interval) .. ")", 2)
            end
            return start_timer("gw.timer.every", interval, interval, fn, ...)
        end,
    }
end

M.unpack = unpack
return M
