-- moongate test plugins/spec/transformers_spec.lua: request_transformer and response_headers
config = [[
upstreams: {u: {targets: [{address: "127.0.0.1:1"}]}}
routes:
  - name: r
    upstream: u
    plugins:
      - {name: request_transformer, config: {remove: [X-Debug], rename: {X-Old: X-New},
                                             set: {X-Env: prod}, add: {X-Tag: b},
                                             rewrite_path: {pattern: "^/v1/", replacement: "/"}}}
      - {name: response_headers, config: {remove: [Server], set: {X-Frame-Options: DENY},
                                          add: {Set-Cookie: "s=1"}}}
]]

describe("request_transformer", function()
  it("edits what goes upstream", function()
    local res = request{path = "/v1/items", headers = {["X-Debug"] = "1", ["X-Old"] = {"a", "b"},
                                                       ["X-Env"] = "dev", ["X-Tag"] = "a"}}
    local up = res.upstream
    assert.equal("/items", up.path)
    assert.equal(nil, up.headers["x-debug"])
    assert.equal("b", up.headers["x-new"][2])
    assert.equal("prod", up.headers["x-env"][1])
    assert.equal(2, #up.headers["x-tag"])
  end)
end)

describe("response_headers", function()
  it("edits the response", function()
    local res = request{upstream = {status = 201, headers = {Server = "x", ["Set-Cookie"] = "u=1"}}}
    assert.equal(201, res.status)
    assert.equal(nil, res.headers["server"])
    assert.equal("DENY", res.headers["x-frame-options"][1])
    assert.equal(2, #res.headers["set-cookie"])
  end)
end)
