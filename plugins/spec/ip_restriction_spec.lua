-- moongate test plugins/spec/ip_restriction_spec.lua
config = [[
upstreams: {u: {targets: [{address: "127.0.0.1:1"}]}}
routes:
  - name: r
    upstream: u
    plugins: [{name: ip_restriction, config: {allow: ["10.0.0.0/8", "2001:db8::/32"], deny: ["10.9.0.0/16"]}}]
]]

describe("ip_restriction", function()
  it("allows listed networks", function()
    assert.equal(200, request{client_ip = "10.1.2.3"}.status)
    assert.equal(200, request{client_ip = "2001:db8:0:1::5"}.status)
  end)
  it("denies first, then refuses the unlisted", function()
    local res = request{client_ip = "10.9.1.1"}
    assert.equal(403, res.status)
    assert.equal("forbidden", gw.json.decode(res.body).error)
    assert.equal(403, request{client_ip = "192.168.1.1"}.status)
    assert.equal(403, request{client_ip = "2001:db9::1"}.status)
  end)
end)
