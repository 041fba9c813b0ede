-- moongate test plugins/spec/cors_spec.lua
config = [[
upstreams: {u: {targets: [{address: "127.0.0.1:1"}]}}
routes:
  - name: r
    upstream: u
    plugins: [{name: cors, config: {origins: ["https://a.example"], expose: [X-Total]}}]
]]

describe("cors", function()
  it("answers a preflight itself", function()
    local res = request{method = "OPTIONS", path = "/x", headers = {
      Origin = "https://a.example", ["Access-Control-Request-Method"] = "PUT"}}
    assert.equal(204, res.status)
    assert.truthy(res.responded)
    assert.equal("https://a.example", res.headers["access-control-allow-origin"][1])
  end)
  it("marks responses for an allowed origin", function()
    local res = request{path = "/x", headers = {Origin = "https://a.example"},
                        upstream = {status = 200, headers = {Vary = "Accept"}, body = "ok"}}
    assert.equal(200, res.status)
    assert.equal("ok", res.body)
    assert.equal("X-Total", res.headers["access-control-expose-headers"][1])
    assert.equal("Accept", res.headers["vary"][1])
    assert.equal("Origin", res.headers["vary"][2])
  end)
  it("says nothing to other origins", function()
    local res = request{path = "/x", headers = {Origin = "https://evil.example"}}
    assert.equal(nil, res.headers["access-control-allow-origin"])
    assert.equal("/x", res.upstream.path)
  end)
end)
