-- moongate test plugins/spec/jwt_auth_spec.lua
config = [[
upstreams: {u: {targets: [{address: "127.0.0.1:1"}]}}
routes:
  - name: r
    upstream: u
    plugins: [{name: jwt_auth, config: {alg: [HS256], key: s3cret, aud: api,
                                        claims_to_headers: {sub: X-User}}}]
]]

local function token(claims, secret)
  local b64 = function(s) return gw.base64.encode(s, true) end
  local si = b64(gw.json.encode({alg = "HS256", typ = "JWT"})) .. "." .. b64(gw.json.encode(claims))
  return si .. "." .. b64(gw.crypto.hmac("sha256", secret or "s3cret", si))
end

describe("jwt_auth", function()
  it("passes a valid token and copies claims", function()
    local t = token({sub = "alice", aud = "api", exp = gw.now() + 60})
    local res = request{headers = {Authorization = "Bearer " .. t}}
    assert.equal(200, res.status)
    assert.equal("alice", res.upstream.headers["x-user"][1])
  end)
  it("refuses a missing, forged or expired token", function()
    assert.equal(401, request{}.status)
    local forged = token({sub = "alice", aud = "api"}, "guess")
    local res = request{headers = {Authorization = "Bearer " .. forged}}
    assert.equal(401, res.status)
    assert.matches("signature", gw.json.decode(res.body).message)
    local old = token({sub = "alice", aud = "api", exp = gw.now() - 3600})
    assert.matches("expired", request{headers = {Authorization = "Bearer " .. old}}.body)
  end)
  it("refuses another audience", function()
    local t = token({sub = "alice", aud = "other"})
    assert.equal(401, request{headers = {Authorization = "Bearer " .. t}}.status)
  end)
end)
