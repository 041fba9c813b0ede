-- gw.json, gw.base64, gw.crypto and gw.jwt (DESIGN.md 10.4): thin checks over
-- the native functions of gateway/lua/crypto.c and json.c.
local native = require("moongate.native")
local jwt = require("moongate.jwt")

local M = { loading = false }
local crypto, json = native.crypto, native.json

local function need(what, n, v, t)
    if type(v) ~= t then
        error(string.format("bad argument #%d to %s (%s expected, got %s)", n, what, t, type(v)), 3)
    end
end

function M.extend(gw)
    gw.json = {
        null = json.null,
        encode = function(v)
            local s, err = json.encode(v)
            if s == nil then error("gw.json.encode: " .. err, 2) end
            return s
        end,
        decode = function(s)
            need("gw.json.decode", 1, s, "string")
            return json.decode(s)
        end,
    }
    gw.base64 = {
        encode = function(s, url)
            need("gw.base64.encode", 1, s, "string")
            return crypto.b64encode(s, url)
        end,
        decode = function(s, url)
            need("gw.base64.decode", 1, s, "string")
            return crypto.b64decode(s, url)
        end,
    }
    local HMACS = { sha1 = true, sha256 = true, sha384 = true, sha512 = true }
    gw.crypto = {
        sha256 = function(s)
            need("gw.crypto.sha256", 1, s, "string")
            return crypto.digest("sha256", s)
        end,
        hmac = function(alg, key, data)
            need("gw.crypto.hmac", 1, alg, "string")
            if not HMACS[alg] then
                error("bad argument #1 to gw.crypto.hmac (sha1, sha256, sha384 or sha512 expected)", 2)
            end
            need("gw.crypto.hmac", 2, key, "string")
            need("gw.crypto.hmac", 3, data, "string")
            return crypto.hmac(alg, key, data)
        end,
        random_bytes = function(n)
            need("gw.crypto.random_bytes", 1, n, "number")
            local s, err = crypto.random_bytes(n)
            if s == nil then error("gw.crypto.random_bytes: " .. err, 2) end
            return s
        end,
        equal = function(a, b)
            need("gw.crypto.equal", 1, a, "string")
            need("gw.crypto.equal", 2, b, "string")
            return crypto.equal(a, b)
        end,
    }
    -- Files (keys, JWK sets) may be read while plugins load, never per request:
    -- file I/O would block the worker's event loop.
    gw.read_file = function(path)
        need("gw.read_file", 1, path, "string")
        if not M.loading then
            error("gw.read_file is only available while plugins load (init or the file's body)", 2)
        end
        local f, err = io.open(path, "rb")
        if f == nil then return nil, err end
        local data = f:read("*a")
        f:close()
        return data
    end
    gw.jwt = { verify = jwt.verify, verifier = jwt.verifier, request_verifier = jwt.request_verifier,
        claims = jwt.claims }
    gw.jit_report = require("moongate.jitreport").snapshot
    jwt.set_clock(gw.now)
end

return M
