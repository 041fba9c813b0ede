-- wrk script for bench/idempotency.sh: POST requests carrying an Idempotency-Key.
--
--   wrk -t1 -c16 -d10s -s bench/idem.lua http://127.0.0.1:PORT/ -- [mode] [path] [body_bytes] [key]
--
-- mode   unique (default): a key never used before on every request (every
--                          request is a first execution: lock + store)
--        replay:           one key per wrk thread, reused (after the first
--                          request, every request is a replay)
-- path   request path (default /pay)
-- body   request body size in bytes (default 64)
-- key    replay mode: the key to reuse (default: a random one per thread). Send
--        one request with it first (as bench/idempotency.sh does), or the first
--        wave of concurrent requests gets 409 idempotency_conflict.
--
-- Keys are "<random prefix>-<thread id>-<counter>": the prefix differs per run
-- (and per thread), so keys never repeat across runs that share a store.
-- Prints the same machine-readable BENCH line as wrk-report.lua (latencies in µs;
-- status = responses with a status >= 400). No response() callback, so wrk does
-- not hand every response to Lua.

local threads = {}
local counter = 0
local prefix = ""
local mode = "unique"
local path = "/pay"
local body = ""

function setup(thread)
   thread:set("tid", #threads + 1)
   table.insert(threads, thread)
end

function init(args)
   mode = args[1] or "unique"
   path = args[2] or "/pay"
   local n = tonumber(args[3] or "64")
   body = string.rep("b", n)
   -- the seed mixes wall time, the thread id and the address of a fresh table
   local seed = os.time() * 1000 + (tonumber(tid) or 0) * 7919
      + (tonumber(tostring({}):match("0x(%x+)") or "0", 16) or 0) % 1000003
   math.randomseed(seed)
   local chars = "abcdefghijklmnopqrstuvwxyz0123456789"
   local t = {}
   for i = 1, 12 do
      local j = math.random(1, #chars)
      t[i] = chars:sub(j, j)
   end
   prefix = table.concat(t) .. "-" .. tostring(tid or 0)
   if mode == "replay" then
      fixed = wrk.format("POST", path, {
         ["Idempotency-Key"] = args[4] or (prefix .. "-fixed"),
         ["Content-Type"] = "application/json",
      }, body)
   end
end

function request()
   if fixed then
      return fixed
   end
   counter = counter + 1
   return wrk.format("POST", path, {
      ["Idempotency-Key"] = prefix .. "-" .. counter,
      ["Content-Type"] = "application/json",
   }, body)
end

done = function(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "BENCH requests=%d duration_us=%d bytes=%d connect=%d read=%d write=%d " ..
      "status=%d timeout=%d p50=%d p90=%d p99=%d p999=%d max=%d mean=%.1f\n",
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency:percentile(99.9), latency.max, latency.mean))
end
