/*
 * Unit tests of the Lua plugin runtime (gateway/lua/, lua/moongate/): a real
 * LuaJIT VM, real plugin files written to a temporary plugin_path, real
 * configs through the YAML loader. Config-time errors are checked to the exact
 * "file:line:col: routes[I].plugins[J]: plugin NAME: message" line; request
 * time through mg_lua_run / mg_lua_balance with a context built like the
 * proxy builds it. The bundled balancers and plugins are tested from
 * plugins/ (MG_PLUGIN_DIR) in test_lua_plugins.c.
 */
#include "lua_test.h"

#include <math.h>

#include "lua/ctx.h" /* mg_ffi_target_ewma */

/* ------------------------------------------------------------ config time */

static void check_accepts_bundled_plugins(void **state)
{
    struct mg_config *cfg = t_config(ROUTE("r", "  plugins:\n"
                                                "    - {name: request_id}\n"
                                                "    - {name: key_auth, config: {keys: [\"k\"]}}\n"
                                                "    - {name: rate_limit, config: {rate: 10}}\n"
                                                "  balancer: {name: p2c_ewma}\n"));
    char err[1024] = "";
    assert_int_equal(mg_lua_check_config(cfg, err, sizeof(err)), 0);
    assert_string_equal(err, "");
    mg_config_unref(cfg);
}

static void check_missing_plugin(void **state)
{
    char want[1024];
    struct mg_config *cfg = t_config(ROUTE("r", "  plugins:\n"
                                                "    - {name: nope}\n"));
    snprintf(want, sizeof(want),
             "t.yaml:9:7: routes[0].plugins[0]: plugin nope: not found (searched %s, %s)", t_dir,
             MG_PLUGIN_DIR);
    t_check_error(cfg, want);
    mg_config_unref(cfg);
}

static void check_syntax_error(void **state)
{
    char want[1024];
    t_plugin("bad", "local P = {}\n"
                    "function P.access(ctx, conf)\n"
                    "  local x = = 1\n"
                    "end\n"
                    "return P\n");
    struct mg_config *cfg = t_config(ROUTE("r", "  plugins:\n"
                                                "    - {name: request_id}\n"
                                                "    - {name: bad}\n"));
    snprintf(
        want, sizeof(want),
        "t.yaml:10:7: routes[0].plugins[1]: plugin bad: %s/bad.lua:3: unexpected symbol near '='",
        t_dir);
    t_check_error(cfg, want);
    mg_config_unref(cfg);
}

static void check_init_rejects_conf(void **state)
{
    t_plugin("picky",
             "local P = {}\n"
             "function P.init(conf)\n"
             "  if type(conf.limit) ~= 'number' then error('limit must be a number', 0) end\n"
             "end\n"
             "function P.access(ctx, conf) end\n"
             "return P\n");
    struct mg_config *cfg = t_config(ROUTE("r", "  plugins:\n"
                                                "    - name: picky\n"
                                                "      config: {limit: \"ten\"}\n"));
    t_check_error(cfg, "t.yaml:9:7: routes[0].plugins[0]: plugin picky: limit must be a number");
    mg_config_unref(cfg);
}

static void check_bundled_init_errors(void **state)
{
    struct mg_config *cfg = t_config(ROUTE("r", "  plugins:\n"
                                                "    - {name: rate_limit, config: {rate: 0}}\n"));
    t_check_error(cfg, "t.yaml:9:7: routes[0].plugins[0]: plugin rate_limit: rate_limit: "
                       "config.rate must be a positive number (tokens per second)");
    mg_config_unref(cfg);
    cfg = t_config(ROUTE("r", "  balancer: {name: consistent_hash, config: {key: \"body\"}}\n"));
    t_check_error(cfg, "t.yaml:8:13: routes[0].balancer: plugin consistent_hash: consistent_hash: "
                       "config.key must be ip, path, header:NAME or cookie:NAME, got 'body'");
    mg_config_unref(cfg);
}

static void check_runtime_error_in_chunk(void **state)
{
    char want[1024];
    t_plugin("crash", "local P = {}\n"
                      "local t = nil\n"
                      "t.x = 1\n"
                      "return P\n");
    struct mg_config *cfg = t_config(ROUTE("r", "  plugins: [{name: crash}]\n"));
    snprintf(want, sizeof(want),
             "t.yaml:8:13: routes[0].plugins[0]: plugin crash: %s/crash.lua:3: attempt to index "
             "local 't' (a nil value)",
             t_dir);
    t_check_error(cfg, want);
    mg_config_unref(cfg);
}

static void check_plugin_table_shape(void **state)
{
    t_plugin("none", "local x = 1\n");
    struct mg_config *cfg = t_config(ROUTE("r", "  plugins: [{name: none}]\n"));
    t_check_error(cfg, "t.yaml:8:13: routes[0].plugins[0]: plugin none: the file must return a "
                       "table of functions, got nil");
    mg_config_unref(cfg);

    t_plugin("typo", "return {acess = function(ctx) end}\n");
    cfg = t_config(ROUTE("r", "  plugins: [{name: typo}]\n"));
    t_check_error(cfg, "t.yaml:8:13: routes[0].plugins[0]: plugin typo: unknown function 'acess' "
                       "(a plugin table holds init, access, balance, response and log; keep "
                       "helpers local or start their name with _)");
    mg_config_unref(cfg);

    t_plugin("notfn", "return {access = 'yes'}\n");
    cfg = t_config(ROUTE("r", "  plugins: [{name: notfn}]\n"));
    t_check_error(cfg, "t.yaml:8:13: routes[0].plugins[0]: plugin notfn: 'access' must be a "
                       "function, got string");
    mg_config_unref(cfg);

    /* helpers starting with _ and non-function fields are fine */
    t_plugin("helpers", "return {VERSION = '1', _pick = function() end, log = function() end}\n");
    cfg = t_config(ROUTE("r", "  plugins: [{name: helpers}]\n"));
    t_check_ok(cfg);
    mg_config_unref(cfg);
}

static void check_balancer_roles(void **state)
{
    t_plugin("onlyaccess", "return {access = function(ctx) end}\n");
    t_plugin("onlybalance", "return {balance = function(ctx, conf, t) return 1 end}\n");
    struct mg_config *cfg = t_config(ROUTE("r", "  balancer: {name: onlyaccess}\n"));
    t_check_error(cfg, "t.yaml:8:13: routes[0].balancer: plugin onlyaccess: has no balance "
                       "function, so it cannot be a balancer");
    mg_config_unref(cfg);
    cfg = t_config(ROUTE("r", "  plugins: [{name: onlybalance}]\n"));
    t_check_error(cfg, "t.yaml:8:13: routes[0].plugins[0]: plugin onlybalance: is a balancer (it "
                       "has only balance): name it in the route's balancer");
    mg_config_unref(cfg);
    cfg = t_config(ROUTE("r", "  balancer: {name: nobal}\n"));
    char want[512];
    snprintf(want, sizeof(want),
             "t.yaml:8:13: routes[0].balancer: plugin nobal: not found (searched %s, %s)", t_dir,
             MG_PLUGIN_DIR);
    t_check_error(cfg, want);
    mg_config_unref(cfg);
}

/* Plain YAML scalars are typed like YAML 1.2's core schema; quoted stay strings. */
static void check_config_typing(void **state)
{
    t_plugin("types",
             "local P = {}\n"
             "local function eq(a, b, what) if a ~= b then error(what .. ': ' .. tostring(a), 0) "
             "end end\n"
             "function P.init(c)\n"
             "  eq(c.n, 42, 'n'); eq(c.neg, -7, 'neg'); eq(c.f, 1.5, 'f'); eq(c.e, 1000, 'e')\n"
             "  eq(c.hex, 31, 'hex'); eq(c.oct, 15, 'oct'); eq(c.inf, math.huge, 'inf')\n"
             "  eq(c.s, '42', 's'); eq(c.t, true, 't'); eq(c.F, false, 'F'); eq(c.z, nil, 'z')\n"
             "  eq(c.tilde, nil, 'tilde'); eq(c.word, 'hello', 'word'); eq(c.dur, '250ms', 'dur')\n"
             "  eq(c.big, '12345678901234567890', 'big'); eq(c.ver, '1.2.3', 'ver')\n"
             "  eq(#c.list, 3, 'list'); eq(c.list[2], 'x', 'list2'); eq(c.map.k.deep, 1, 'deep')\n"
             "  eq(c.qt, 'true', 'qt'); eq(c.nan ~= c.nan, true, 'nan')\n"
             "end\n"
             "function P.access() end\n"
             "return P\n");
    struct mg_config *cfg = t_config(
        ROUTE("r", "  plugins:\n"
                   "    - name: types\n"
                   "      config:\n"
                   "        n: 42\n        neg: -7\n        f: 1.5\n        e: 1e3\n"
                   "        hex: 0x1f\n        oct: 0o17\n        inf: .inf\n"
                   "        s: \"42\"\n        t: true\n        F: False\n        z: null\n"
                   "        tilde: ~\n        word: hello\n        dur: 250ms\n"
                   "        big: 12345678901234567890\n        ver: 1.2.3\n"
                   "        list: [1, x, 3]\n        map: {k: {deep: 1}}\n"
                   "        qt: 'true'\n        nan: .nan\n"));
    t_check_ok(cfg);
    mg_config_unref(cfg);
}

static void check_sandbox(void **state)
{
    t_plugin("usesio", "local P = {}\n"
                       "function P.init() io.open('/etc/passwd') end\n"
                       "function P.access() end\n"
                       "return P\n");
    char want[1024];
    struct mg_config *cfg = t_config(ROUTE("r", "  plugins: [{name: usesio}]\n"));
    snprintf(want, sizeof(want),
             "t.yaml:8:13: routes[0].plugins[0]: plugin usesio: %s/usesio.lua:2: global 'io' is "
             "not available to plugins (see docs/plugins.md, Environment)",
             t_dir);
    t_check_error(cfg, want);
    mg_config_unref(cfg);

    t_plugin("exits", "os.exit(1)\n");
    cfg = t_config(ROUTE("r", "  plugins: [{name: exits}]\n"));
    snprintf(want, sizeof(want),
             "t.yaml:8:13: routes[0].plugins[0]: plugin exits: %s/exits.lua:1: os.exit is not "
             "available to plugins (see docs/plugins.md, Environment)",
             t_dir);
    t_check_error(cfg, want);
    mg_config_unref(cfg);

    t_plugin("ffi", "local ffi = require('ffi')\n");
    cfg = t_config(ROUTE("r", "  plugins: [{name: ffi}]\n"));
    snprintf(want, sizeof(want),
             "t.yaml:8:13: routes[0].plugins[0]: plugin ffi: %s/ffi.lua:1: require(\"ffi\"): "
             "plugins may require only string, table, math, bit, coroutine, os, gw, table.new, "
             "table.clear",
             t_dir);
    t_check_error(cfg, want);
    mg_config_unref(cfg);

    t_plugin("typo_global", "local P = {}\nlocal x = strng.upper('a')\nreturn P\n");
    cfg = t_config(ROUTE("r", "  plugins: [{name: typo_global}]\n"));
    snprintf(want, sizeof(want),
             "t.yaml:8:13: routes[0].plugins[0]: plugin typo_global: %s/typo_global.lua:2: "
             "undefined global 'strng'",
             t_dir);
    t_check_error(cfg, want);
    mg_config_unref(cfg);

    /* allowed: the libraries, private globals, a protected string metatable */
    t_plugin("allowed", "local P = {}\n"
                        "COUNT = 0\n"
                        "local t = require('table.new')(4, 0)\n"
                        "assert(getmetatable('') == false, 'string metatable exposed')\n"
                        "string.upper = nil -- a private copy\n"
                        "assert(bit.band(7, 3) == 3 and os.time() > 0 and math.floor(1.5) == 1)\n"
                        "function P.init() COUNT = COUNT + 1 end\n"
                        "function P.access() end\n"
                        "return P\n");
    t_plugin("after",
             "local P = {}\n"
             "assert(string.upper('a') == 'A', 'string.upper leaked from another plugin')\n"
             "assert(rawget(_G, 'COUNT') == nil, 'globals leaked')\n"
             "function P.access() end\n"
             "return P\n");
    cfg = t_config(ROUTE("r", "  plugins: [{name: allowed}, {name: after}]\n"));
    t_check_ok(cfg);
    mg_config_unref(cfg);
}

static void check_runaway_init_is_bounded(void **state)
{
    mg_lua_set_time_limits(0, 100);
    t_plugin("spin_init", "local P = {}\n"
                          "function P.init()\n"
                          "  while true do end\n"
                          "end\n"
                          "function P.access() end\n"
                          "return P\n");
    char want[1024];
    struct mg_config *cfg = t_config(ROUTE("r", "  plugins: [{name: spin_init}]\n"));
    snprintf(want, sizeof(want),
             "t.yaml:8:13: routes[0].plugins[0]: plugin spin_init: %s/spin_init.lua:3: exceeded "
             "the 100 ms time limit (runaway loop?)",
             t_dir);
    uint64_t t0 = t_now_ms();
    t_check_error(cfg, want);
    assert_true(t_now_ms() - t0 < 2000);
    mg_config_unref(cfg);
    mg_lua_set_time_limits(0, MG_LUA_INIT_LIMIT_MS);
}

/* ---------------------------------------------------------- request time */

static void route_active_costs_nothing(void **state)
{
    t_plugin("acc", "return {access = function(ctx) end, log = function(ctx) end}\n");
    struct mg_config *cfg =
        t_config(ROUTE("plain", "") ROUTE("rr", "  balancer: {name: round_robin}\n")
                     ROUTE("acc", "  plugins: [{name: acc}]\n"
                                  "  balancer: {name: least_conn}\n"));
    assert_false(mg_lua_needed(cfg) == false);
    struct mg_lua *vm = t_vm(cfg);
    for (int p = MG_LUA_ACCESS; p < MG_LUA_PHASE__COUNT; p++) {
        assert_false(mg_lua_route_active(vm, 0, (enum mg_lua_phase)p));
        assert_false(mg_lua_route_active(vm, 1, (enum mg_lua_phase)p));
    }
    assert_true(mg_lua_route_active(vm, 2, MG_LUA_ACCESS));
    assert_true(mg_lua_route_active(vm, 2, MG_LUA_BALANCE));
    assert_false(mg_lua_route_active(vm, 2, MG_LUA_RESPONSE));
    assert_true(mg_lua_route_active(vm, 2, MG_LUA_LOG));
    assert_false(mg_lua_route_active(vm, 9, MG_LUA_ACCESS));
    assert_false(mg_lua_route_active(NULL, 0, MG_LUA_ACCESS));

    /* an inactive phase does not even bind the request */
    struct t_req r;
    t_req_init(&r, "GET", "/");
    assert_int_equal(mg_lua_run(vm, 0, MG_LUA_ACCESS, &r.ctx), MG_LUA_OK);
    assert_int_equal(r.ctx.slot, 0);
    t_req_done(vm, &r);
    mg_lua_free(vm);
    mg_config_unref(cfg);

    cfg = t_config(ROUTE("plain", "") ROUTE("rr", "  balancer: {name: round_robin, config: {}}\n"));
    assert_false(mg_lua_needed(cfg));
    mg_config_unref(cfg);
}

/* A copy of round_robin on plugin_path replaces the C balancer. */
static void user_round_robin_overrides_c(void **state)
{
    t_plugin("round_robin", "return {balance = function(ctx, conf, t) return #t end}\n");
    struct mg_config *cfg = t_config(ROUTE("rr", ""));
    struct mg_lua *vm = t_vm(cfg);
    assert_true(mg_lua_route_active(vm, 0, MG_LUA_BALANCE));
    struct mg_lua_target ts[3] = {{"a:1", 1, 1, NULL}, {"b:1", 1, 1, NULL}, {"c:1", 1, 1, NULL}};
    struct t_req r;
    t_req_init(&r, "GET", "/");
    bool error = true;
    assert_int_equal(mg_lua_balance(vm, 0, &r.ctx, ts, 3, &error), 2);
    assert_false(error);
    t_req_done(vm, &r);
    mg_lua_free(vm);
    mg_config_unref(cfg);
}

static void ctx_fields(void **state)
{
    t_plugin("fields",
             "local P = {}\n"
             "function P.access(ctx)\n"
             "  assert(ctx.method == 'POST', ctx.method)\n"
             "  assert(ctx.path == '/orders/7', ctx.path)\n"
             "  assert(ctx.query == 'a=1&b=2', tostring(ctx.query))\n"
             "  assert(ctx.client_ip == '10.0.0.9' and ctx.route == 'orders')\n"
             "  assert(ctx.request_id == 'rid-1')\n"
             "  assert(ctx.status == nil and ctx.latency == nil and ctx.upstream_address == nil)\n"
             "  assert(ctx:header('content-type') == 'application/json')\n"
             "  assert(ctx:header('X-EMPTY') == '' and ctx:header('missing') == nil)\n"
             "  assert(type(ctx.vars) == 'table')\n"
             "  local ok, err = pcall(function() return ctx.nosuch end)\n"
             "  assert(not ok and err:find(\"ctx has no field 'nosuch'\"), err)\n"
             "  ok, err = pcall(function() ctx.method = 'GET' end)\n"
             "  assert(not ok and err:find('cannot be assigned'), err)\n"
             "  ok, err = pcall(ctx.header, 'x')\n"
             "  assert(not ok and err:find('call it as a method'), err)\n"
             "  ok, err = pcall(ctx.header, ctx, 42)\n"
             "  assert(not ok and err:find('bad argument #1 to ctx:header %(string expected, got "
             "number%)'), err)\n"
             "  ok, err = pcall(ctx.response_header, ctx, 'x')\n"
             "  assert(not ok and err:find('not available in the access phase'), err)\n"
             "  ctx.vars.done = true\n"
             "end\n"
             "function P.response(ctx)\n"
             "  assert(ctx.vars.done and ctx.status == 201 and ctx.upstream_address == "
             "'127.0.0.1:9001')\n"
             "  assert(math.abs(ctx.latency - 0.25) < 1e-9)\n"
             "  assert(ctx:response_header('Location') == '/orders/8')\n"
             "  assert(ctx.method == 'POST')\n"
             "end\n"
             "return P\n");
    struct mg_config *cfg = t_config(ROUTE("orders", "  plugins: [{name: fields}]\n"));
    struct mg_lua *vm = t_vm(cfg);
    struct t_req r;
    t_req_init(&r, "POST", "/orders/7");
    r.ctx.query = T_STR("a=1&b=2");
    t_req_header(&r, "Content-Type", "application/json");
    t_req_header(&r, "X-Empty", "");
    assert_int_equal(mg_lua_run(vm, 0, MG_LUA_ACCESS, &r.ctx), MG_LUA_OK);
    t_resp(&r, 201, "Location", "/orders/8");
    assert_int_equal(mg_lua_run(vm, 0, MG_LUA_RESPONSE, &r.ctx), MG_LUA_OK);
    assert_int_equal(mg_lua_errors(vm), 0);
    t_req_done(vm, &r);
    mg_lua_free(vm);
    mg_config_unref(cfg);
}

static void access_respond_short_circuits(void **state)
{
    t_plugin("deny", "local P = {}\n"
                     "function P.access(ctx)\n"
                     "  if ctx.path == '/private' then\n"
                     "    return ctx:respond(403, '{\"error\":\"forbidden\"}',\n"
                     "      {['Content-Type'] = 'application/json', ['X-N'] = 7})\n"
                     "  end\n"
                     "end\n"
                     "return P\n");
    t_plugin("after_deny", "return {access = function(ctx) ctx:set_header('X-After', '1') end}\n");
    struct mg_config *cfg = t_config(ROUTE("r", "  plugins: [{name: deny}, {name: after_deny}]\n"));
    struct mg_lua *vm = t_vm(cfg);
    struct t_req r;
    t_req_init(&r, "GET", "/private");
    assert_int_equal(mg_lua_run(vm, 0, MG_LUA_ACCESS, &r.ctx), MG_LUA_RESPONDED);
    assert_int_equal(r.ctx.respond.status, 403);
    t_assert_str(r.ctx.respond.body, "{\"error\":\"forbidden\"}");
    assert_int_equal(t_edit_count(r.ctx.respond.headers), 2);
    t_assert_edit(r.ctx.respond.headers, "Content-Type", "application/json");
    t_assert_edit(r.ctx.respond.headers, "X-N", "7");
    assert_null(r.ctx.req_edits); /* the next plugin did not run */
    t_req_done(vm, &r);

    t_req_init(&r, "GET", "/public");
    assert_int_equal(mg_lua_run(vm, 0, MG_LUA_ACCESS, &r.ctx), MG_LUA_OK);
    assert_int_equal(r.ctx.respond.status, 0);
    t_assert_edit(r.ctx.req_edits, "X-After", "1");
    t_req_done(vm, &r);
    mg_lua_free(vm);
    mg_config_unref(cfg);
}

static void respond_validates(void **state)
{
    t_plugin(
        "badrespond",
        "local P = {}\n"
        "local function fails(pattern, f, ...)\n"
        "  local ok, err = pcall(f, ...)\n"
        "  if ok or not err:find(pattern) then error('expected ' .. pattern .. ', got ' .. "
        "tostring(err), 0) end\n"
        "end\n"
        "function P.access(ctx)\n"
        "  fails('integer status 200..599 expected, got 99', ctx.respond, ctx, 99)\n"
        "  fails('integer status 200..599 expected, got 200.5', ctx.respond, ctx, 200.5)\n"
        "  fails('bad argument #2 to ctx:respond %(string or nil expected, got table%)', "
        "ctx.respond, ctx, 200, {})\n"
        "  fails(\"header 'Content%-Length' is managed by the gateway\", ctx.respond, ctx, 200, "
        "'x', {['Content-Length'] = '1'})\n"
        "  fails('invalid value', ctx.respond, ctx, 200, 'x', {['X-A'] = 'a\\r\\nX-Injected: 1'})\n"
        "  fails('invalid header name', ctx.respond, ctx, 200, 'x', {['Bad Name'] = '1'})\n"
        "end\n"
        "function P.log(ctx)\n"
        "  fails('ctx:respond is not available in the log phase', ctx.respond, ctx, 200)\n"
        "end\n"
        "return P\n");
    struct mg_config *cfg = t_config(ROUTE("r", "  plugins: [{name: badrespond}]\n"));
    struct mg_lua *vm = t_vm(cfg);
    struct t_req r;
    t_req_init(&r, "GET", "/");
    /* a failed respond() may leave a partial slot: the request fails only if the
     * plugin lets the error through; here every error was caught */
    mg_lua_run(vm, 0, MG_LUA_ACCESS, &r.ctx);
    assert_int_equal(mg_lua_run(vm, 0, MG_LUA_LOG, &r.ctx), MG_LUA_OK);
    assert_int_equal(mg_lua_errors(vm), 0);
    t_req_done(vm, &r);
    mg_lua_free(vm);
    mg_config_unref(cfg);
}

static void set_header_edits(void **state)
{
    t_plugin("edits",
             "local P = {}\n"
             "function P.access(ctx)\n"
             "  ctx:set_header('X-A', '1')\n"
             "  ctx:set_header('x-a', 2)             -- same name: replaces\n"
             "  ctx:set_header('Authorization', nil) -- removes\n"
             "  ctx:set_header('Host', 'internal')\n"
             "  ctx:set_header('X-Empty', '')\n"
             "  assert(ctx:header('X-A') == '2' and ctx:header('authorization') == nil)\n"
             "  assert(ctx:header('host') == 'internal')\n"
             "  local ok, err = pcall(ctx.set_header, ctx, 'Transfer-Encoding', 'chunked')\n"
             "  assert(not ok and err:find(\"header 'Transfer%-Encoding' is managed\"), err)\n"
             "  ok, err = pcall(ctx.set_header, ctx, 'X-B', 'v\\r\\nInjected: 1')\n"
             "  assert(not ok and err:find('invalid value'), err)\n"
             "  ok, err = pcall(ctx.set_header, ctx, 'X-B', {})\n"
             "  assert(not ok and err:find('string, number or nil expected, got table'), err)\n"
             "  ok, err = pcall(ctx.set_header, ctx, 'X:B', '1')\n"
             "  assert(not ok and err:find('invalid header name'), err)\n"
             "  ok, err = pcall(ctx.set_header, ctx, 'X-Big', string.rep('x', 70000))\n"
             "  assert(not ok and err:find('over the per%-request budget'), err)\n"
             "  ctx:set_response_header('X-Served-By', 'lua')\n"
             "end\n"
             "function P.response(ctx)\n"
             "  assert(ctx:response_header('server') == 'up')\n"
             "  ctx:set_response_header('Server', nil)\n"
             "  assert(ctx:response_header('server') == nil)\n"
             "  assert(ctx:response_header('x-served-by') == 'lua')\n"
             "  local ok, err = pcall(ctx.set_header, ctx, 'X-Late', '1')\n"
             "  assert(not ok and err:find('ctx:set_header is not available in the response "
             "phase'), err)\n"
             "end\n"
             "function P.log(ctx)\n"
             "  local ok, err = pcall(ctx.set_response_header, ctx, 'X-Late', '1')\n"
             "  assert(not ok and err:find('not available in the log phase'), err)\n"
             "end\n"
             "return P\n");
    struct mg_config *cfg = t_config(ROUTE("r", "  plugins: [{name: edits}]\n"));
    struct mg_lua *vm = t_vm(cfg);
    struct t_req r;
    t_req_init(&r, "GET", "/");
    t_req_header(&r, "Authorization", "Bearer x");
    assert_int_equal(mg_lua_run(vm, 0, MG_LUA_ACCESS, &r.ctx), MG_LUA_OK);
    assert_int_equal(t_edit_count(r.ctx.req_edits), 4);
    t_assert_edit(r.ctx.req_edits, "X-A", "2");
    t_assert_edit(r.ctx.req_edits, "Authorization", NULL);
    t_assert_edit(r.ctx.req_edits, "Host", "internal");
    t_assert_edit(r.ctx.req_edits, "X-Empty", "");
    t_assert_str(r.ctx.req_edits->name, "X-A"); /* list order; the name as first set */
    t_resp(&r, 200, "Server", "up");
    assert_int_equal(mg_lua_run(vm, 0, MG_LUA_RESPONSE, &r.ctx), MG_LUA_OK);
    assert_int_equal(t_edit_count(r.ctx.resp_edits), 2);
    t_assert_edit(r.ctx.resp_edits, "X-Served-By", "lua");
    t_assert_edit(r.ctx.resp_edits, "Server", NULL);
    assert_int_equal(mg_lua_run(vm, 0, MG_LUA_LOG, &r.ctx), MG_LUA_OK);
    assert_int_equal(mg_lua_errors(vm), 0);
    t_req_done(vm, &r);
    mg_lua_free(vm);
    mg_config_unref(cfg);
}

/* ctx.vars: one table per request, shared by its plugins and phases, empty for
 * the next request; requests interleave on a worker, so each keeps its own. */
static void vars_shared_and_reset(void **state)
{
    t_plugin("first", "local P = {}\n"
                      "function P.access(ctx)\n"
                      "  assert(next(ctx.vars) == nil, 'vars not reset')\n"
                      "  ctx.vars.path = ctx.path\n"
                      "end\n"
                      "return P\n");
    t_plugin("second", "local P = {}\n"
                       "function P.access(ctx) ctx:set_header('X-Seen', ctx.vars.path) end\n"
                       "function P.log(ctx) ctx.vars.logged = (ctx.vars.logged or 0) + 1 \n"
                       "  gw.shared.last = ctx.vars.path end\n"
                       "return P\n");
    t_plugin("third", "return {log = function(ctx)\n"
                      "  if ctx.vars.logged ~= 1 then error('vars not shared in log') end\n"
                      "  if gw.shared.last ~= ctx.path then error('gw.shared') end end}\n");
    struct mg_config *cfg =
        t_config(ROUTE("r", "  plugins: [{name: first}, {name: second}, {name: third}]\n"));
    struct mg_lua *vm = t_vm(cfg);
    struct t_req a, b;
    t_req_init(&a, "GET", "/a");
    t_req_init(&b, "GET", "/b");
    assert_int_equal(mg_lua_run(vm, 0, MG_LUA_ACCESS, &a.ctx), MG_LUA_OK);
    assert_int_equal(mg_lua_run(vm, 0, MG_LUA_ACCESS, &b.ctx), MG_LUA_OK);
    t_assert_edit(a.ctx.req_edits, "X-Seen", "/a");
    t_assert_edit(b.ctx.req_edits, "X-Seen", "/b");
    assert_int_equal(mg_lua_run(vm, 0, MG_LUA_LOG, &b.ctx), MG_LUA_OK);
    assert_int_equal(mg_lua_run(vm, 0, MG_LUA_LOG, &a.ctx), MG_LUA_OK);
    t_req_done(vm, &a);
    t_req_done(vm, &b);
    for (int i = 0; i < 50; i++) { /* reused slots start empty */
        t_req_init(&a, "GET", i % 2 ? "/odd" : "/even");
        assert_int_equal(mg_lua_run(vm, 0, MG_LUA_ACCESS, &a.ctx), MG_LUA_OK);
        assert_int_equal(mg_lua_run(vm, 0, MG_LUA_LOG, &a.ctx), MG_LUA_OK);
        t_req_done(vm, &a);
    }
    assert_int_equal(mg_lua_errors(vm), 0);
    mg_lua_free(vm);
    mg_config_unref(cfg);
}

static void error_is_isolated(void **state)
{
    t_plugin("boom", "local P = {}\n"
                     "local function inner(ctx)\n"
                     "  if ctx.path == '/boom' then error('kaboom') end\n"
                     "end\n"
                     "function P.access(ctx) inner(ctx) end\n"
                     "return P\n");
    struct mg_config *cfg = t_config(ROUTE("r", "  plugins: [{name: boom}]\n"));
    struct mg_lua *vm = t_vm(cfg);
    struct t_req r;
    t_capture_start();
    t_req_init(&r, "GET", "/boom");
    assert_int_equal(mg_lua_run(vm, 0, MG_LUA_ACCESS, &r.ctx), MG_LUA_ERROR);
    t_req_done(vm, &r);
    char *log = t_capture_end();
    char want[512];
    snprintf(want, sizeof(want),
             "[error] plugin boom: access: %s/boom.lua:3: kaboom; stack traceback:", t_dir);
    assert_non_null(strstr(log, want));
    assert_non_null(strstr(log, "boom.lua:5: in function"));
    assert_int_equal(t_count(log, "\n"), 1); /* one line, traceback included */
    free(log);
    assert_int_equal(mg_lua_errors(vm), 1);
    unsigned id = t_plugin_id(vm, "boom");
    assert_int_equal(mg_lua_plugin_stats(vm, id, MG_LUA_ACCESS).errors, 1);
    assert_int_equal(mg_lua_plugin_stats(vm, id, MG_LUA_ACCESS).calls, 1);
    for (int i = 0; i < 100; i++) { /* the VM keeps serving */
        t_req_init(&r, "GET", "/fine");
        assert_int_equal(mg_lua_run(vm, 0, MG_LUA_ACCESS, &r.ctx), MG_LUA_OK);
        t_req_done(vm, &r);
    }
    assert_int_equal(mg_lua_plugin_stats(vm, id, MG_LUA_ACCESS).calls, 101);
    assert_int_equal(mg_lua_errors(vm), 1);
    mg_lua_free(vm);
    mg_config_unref(cfg);
}

struct seen {
    unsigned calls, errors;
    unsigned last_plugin;
    enum mg_lua_phase last_phase;
};

static void on_plugin_done(void *data, unsigned plugin, enum mg_lua_phase phase, uint64_t ns,
                           bool error)
{
    struct seen *s = data;
    s->calls++;
    s->errors += error;
    s->last_plugin = plugin;
    s->last_phase = phase;
}

/* In log, an error is logged and the other plugins still run. */
static void log_errors_do_not_stop_the_chain(void **state)
{
    t_plugin("badlog", "return {log = function(ctx) error({}) end}\n");
    t_plugin("goodlog",
             "return {log = function(ctx) gw.shared.ran = (gw.shared.ran or 0) + 1 end,\n"
             "        access = function(ctx)\n"
             "          if gw.shared.ran ~= nil and gw.shared.ran ~= 1 then error('log did not "
             "run') end end}\n");
    struct mg_config *cfg = t_config(ROUTE("r", "  plugins: [{name: badlog}, {name: goodlog}]\n"));
    struct seen seen = {0};
    struct mg_lua_hooks hooks = {.plugin_done = on_plugin_done, .data = &seen};
    char err[512];
    struct mg_lua *vm = mg_lua_new(cfg, 3, &hooks, err, sizeof(err));
    assert_non_null(vm);
    unsigned before = seen.calls; /* the init phase of each plugin file */
    struct t_req r;
    t_req_init(&r, "GET", "/");
    t_capture_start();
    assert_int_equal(mg_lua_run(vm, 0, MG_LUA_LOG, &r.ctx), MG_LUA_ERROR);
    char *log = t_capture_end();
    assert_non_null(strstr(log, "[error] plugin badlog: log: (error object is a table value)"));
    free(log);
    assert_int_equal(seen.calls - before, 2);
    assert_int_equal(seen.errors, 1);
    assert_int_equal(seen.last_phase, MG_LUA_LOG);
    assert_string_equal(mg_lua_plugin_name(vm, seen.last_plugin), "goodlog");
    t_req_done(vm, &r);
    t_req_init(&r, "GET", "/");
    assert_int_equal(mg_lua_run(vm, 0, MG_LUA_ACCESS, &r.ctx), MG_LUA_OK);
    t_req_done(vm, &r);
    assert_int_equal(mg_lua_plugin_stats(vm, t_plugin_id(vm, "badlog"), MG_LUA_LOG).errors, 1);
    assert_int_equal(mg_lua_plugin_stats(vm, t_plugin_id(vm, "goodlog"), MG_LUA_LOG).errors, 0);
    assert_int_equal(mg_lua_plugin_stats(vm, t_plugin_id(vm, "goodlog"), MG_LUA_LOG).calls, 1);
    mg_lua_free(vm);
    mg_config_unref(cfg);
}

/* The runaway guard: compiled and interpreted loops, recursion, goto, and a
 * plugin that tries to swallow the error. Each call ends near the limit with
 * MG_LUA_ERROR; the VM keeps working. */
static void runaway_plugins_are_stopped(void **state)
{
    static const char *const bodies[] = {
        "while true do end",
        "local n = 0 while true do n = n + 1 end",
        "repeat local x = 1 until false",
        "for i = 1, math.huge do end",
        "local t = {1, 2, 3} while true do for _, v in ipairs(t) do end end",
        "local function f(n) return f(n + 1) end return f(0)",
        "local n = 0 ::top:: n = n + 1 goto top",
        "while true do pcall(function() while true do end end) end",
        "local co = coroutine.wrap(function() while true do end end) co()",
        "local s = 'x' while true do s = s:upper():lower() end",
    };
    mg_lua_set_time_limits(50, 0);
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        char src[512];
        snprintf(src, sizeof(src),
                 "local P = {}\n"
                 "function P.access(ctx)\n"
                 "  if ctx.path ~= '/spin' then return end\n"
                 "  %s\n"
                 "end\n"
                 "return P\n",
                 bodies[i]);
        t_plugin("spin", src);
        struct mg_config *cfg = t_config(ROUTE("r", "  plugins: [{name: spin}]\n"));
        struct mg_lua *vm = t_vm(cfg);
        struct t_req r;
        for (int k = 0; k < 200; k++) { /* warm the function up: it gets compiled */
            t_req_init(&r, "GET", "/");
            assert_int_equal(mg_lua_run(vm, 0, MG_LUA_ACCESS, &r.ctx), MG_LUA_OK);
            t_req_done(vm, &r);
        }
        t_capture_start();
        t_req_init(&r, "GET", "/spin");
        uint64_t t0 = t_now_ms();
        enum mg_lua_result res = mg_lua_run(vm, 0, MG_LUA_ACCESS, &r.ctx);
        uint64_t took = t_now_ms() - t0;
        t_req_done(vm, &r);
        char *log = t_capture_end();
        print_message("  runaway %zu stopped after %llu ms: %s\n", i, (unsigned long long)took,
                      bodies[i]);
        assert_int_equal(res, MG_LUA_ERROR);
        /* ~50-60 ms natively; valgrind runs one thread at a time and may leave
         * the watchdog waiting for seconds: the point is that it ends */
        assert_true(took >= 45 && took < 20000);
        assert_non_null(strstr(log, "exceeded the 50 ms time limit (runaway loop?)"));
        free(log);
        t_req_init(&r, "GET", "/");
        assert_int_equal(mg_lua_run(vm, 0, MG_LUA_ACCESS, &r.ctx), MG_LUA_OK);
        t_req_done(vm, &r);
        mg_lua_free(vm);
        mg_config_unref(cfg);
    }
    mg_lua_set_time_limits(MG_LUA_PHASE_LIMIT_MS, 0);
}

/* A plugin that is merely busy for less than the limit is not stopped. */
static void busy_but_bounded_is_not_stopped(void **state)
{
    /* 30x the busy time: a loaded machine (CI, valgrind) stretches wall time */
    mg_lua_set_time_limits(600, 0);
    t_plugin("busy", "return {access = function(ctx)\n"
                     "  local t0 = os.clock()\n"
                     "  while os.clock() - t0 < 0.02 do end\n"
                     "end}\n");
    struct mg_config *cfg = t_config(ROUTE("r", "  plugins: [{name: busy}]\n"));
    struct mg_lua *vm = t_vm(cfg);
    for (int i = 0; i < 10; i++) {
        struct t_req r;
        t_req_init(&r, "GET", "/");
        assert_int_equal(mg_lua_run(vm, 0, MG_LUA_ACCESS, &r.ctx), MG_LUA_OK);
        t_req_done(vm, &r);
    }
    mg_lua_free(vm);
    mg_config_unref(cfg);
    mg_lua_set_time_limits(MG_LUA_PHASE_LIMIT_MS, 0);
}

static void gw_module(void **state)
{
    t_plugin(
        "gwuser",
        "local P = {}\n"
        "function P.init(conf) gw.log('info', 'init on worker', gw.worker_id, gw.checking) end\n"
        "function P.access(ctx)\n"
        "  local now = gw.now()\n"
        "  assert(math.abs(now - os.time()) < 5, 'gw.now')\n"
        "  assert(gw.hash('abc') == gw.hash('abc') and gw.hash('abc') ~= gw.hash('abd'))\n"
        "  assert(gw.hash('abc', 1) ~= gw.hash('abc', 2) and gw.hash('') >= 0)\n"
        "  assert(gw.json_encode({b = 1, a = {true, 'x\"\\n'}, c = 1.5}) ==\n"
        "         '{\"a\":[true,\"x\\\\\"\\\\n\"],\"b\":1,\"c\":1.5}', gw.json_encode({a = "
        "{'x\"\\n'}}))\n"
        "  gw.log('warn', 'hello', 1, nil, true)\n"
        "  print('printed')\n"
        "  local ok, err = pcall(gw.log, 'loud', 'x')\n"
        "  assert(not ok and err:find('bad argument #1 to gw.log'), err)\n"
        "end\n"
        "return P\n");
    struct mg_config *cfg = t_config(ROUTE("r", "  plugins: [{name: gwuser}]\n"));
    t_capture_start();
    struct mg_lua *vm = t_vm(cfg);
    struct t_req r;
    t_req_init(&r, "GET", "/");
    assert_int_equal(mg_lua_run(vm, 0, MG_LUA_ACCESS, &r.ctx), MG_LUA_OK);
    t_req_done(vm, &r);
    char *log = t_capture_end();
    assert_non_null(strstr(log, "[info] plugin gwuser: init on worker 0 false"));
    assert_non_null(strstr(log, "[warn] plugin gwuser: hello 1 nil true"));
    assert_non_null(strstr(log, "[info] plugin gwuser: printed"));
    free(log);
    assert_int_equal(mg_lua_errors(vm), 0);
    mg_lua_free(vm);
    mg_config_unref(cfg);
}

/* A ctx kept past its request is refused, never another request's data. */
static void stale_ctx_is_refused(void **state)
{
    t_plugin("keeper", "local kept\n"
                       "return {access = function(ctx)\n"
                       "  if kept == nil then kept = ctx return end\n"
                       "  if kept ~= ctx then\n"
                       "    local ok, err = pcall(kept.header, kept, 'x')\n"
                       "    assert(not ok and err:find('this ctx is not valid here'), err)\n"
                       "  end\n"
                       "end}\n");
    struct mg_config *cfg = t_config(ROUTE("r", "  plugins: [{name: keeper}]\n"));
    struct mg_lua *vm = t_vm(cfg);
    struct t_req a, b;
    t_req_init(&a, "GET", "/a");
    assert_int_equal(mg_lua_run(vm, 0, MG_LUA_ACCESS, &a.ctx), MG_LUA_OK);
    t_req_init(&b, "GET", "/b"); /* a still in flight: b gets another slot */
    assert_int_equal(mg_lua_run(vm, 0, MG_LUA_ACCESS, &b.ctx), MG_LUA_OK);
    assert_int_equal(mg_lua_errors(vm), 0);
    t_req_done(vm, &a);
    t_req_done(vm, &b);
    mg_lua_free(vm);
    mg_config_unref(cfg);
}

/* Balance results the proxy must not trust. */
static void balance_results_are_validated(void **state)
{
    t_plugin("picker", "return {balance = function(ctx, conf, t)\n"
                       "  local want = ctx:header('X-Pick')\n"
                       "  if want == 'error' then error('no target for you') end\n"
                       "  if want == 'nil' then return nil end\n"
                       "  if want == 'str' then return 'x' end\n"
                       "  return tonumber(want)\n"
                       "end}\n");
    struct mg_config *cfg = t_config(ROUTE("r", "  balancer: {name: picker}\n"));
    struct mg_lua *vm = t_vm(cfg);
    struct mg_lua_target ts[3] = {{"a:1", 1, 1, NULL}, {"b:1", 1, 0, NULL}, {"c:1", 1, 1, NULL}};
    static const struct {
        const char *pick;
        int want;
        bool error;
    } cases[] = {{"1", 0, false},     {"3", 2, false},    {"2", -1, false},   {"0", -1, false},
                 {"4", -1, false},    {"1.5", -1, false}, {"nil", -1, false}, {"str", -1, false},
                 {"error", -1, true}, {"-1", -1, false}};
    t_capture_start();
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct t_req r;
        bool error = !cases[i].error;
        t_req_init(&r, "GET", "/");
        t_req_header(&r, "X-Pick", cases[i].pick);
        assert_int_equal(mg_lua_balance(vm, 0, &r.ctx, ts, 3, &error), cases[i].want);
        assert_int_equal(error, cases[i].error);
        t_req_done(vm, &r);
    }
    char *log = t_capture_end();
    assert_non_null(strstr(log, "plugin picker: balance:"));
    assert_non_null(strstr(log, "no target for you"));
    free(log);
    assert_int_equal(mg_lua_plugin_stats(vm, t_plugin_id(vm, "picker"), MG_LUA_BALANCE).errors, 1);
    mg_lua_free(vm);
    mg_config_unref(cfg);
}

/* The targets view reads the proxy's array and the process-wide stats in place. */
static void targets_view_reads_c_memory(void **state)
{
    t_plugin("inspect",
             "return {balance = function(ctx, conf, t)\n"
             "  assert(#t == 2 and t[1].address == '10.0.0.1:80' and t[2].weight == 3)\n"
             "  local want = tonumber(ctx:header('X-Active'))\n"
             "  assert(t[1].active == want, 'active ' .. tostring(t[1].active))\n"
             "  assert(t[1].failures == 9 and t[2].failures == 0 and t[2].active == 0)\n"
             "  assert(math.abs(t[1].ewma - 0.002) < 1e-4, 'ewma ' .. t[1].ewma)\n"
             "  assert(t[2].ewma == 0 and t[1].available == true and t[2].available == false)\n"
             "  local ok, err = pcall(function() t[1].weight2 = 1 end)\n"
             "  assert(not ok and err:find('read%-only'), err)\n"
             "  ok, err = pcall(function() t[1]._weight = 0 end)\n"
             "  assert(not ok and t[1].weight == 1, 'the view changed')\n"
             "  ok, err = pcall(function() return t[1].nope end)\n"
             "  assert(not ok and err:find(\"target has no field 'nope'\"), err)\n"
             "  return 1\n"
             "end}\n");
    struct mg_config *cfg = t_config(ROUTE("r", "  balancer: {name: inspect}\n"));
    struct mg_lua *vm = t_vm(cfg);
    static struct mg_target_stats st;
    atomic_store(&st.failures, 9);
    atomic_store(&st.ewma_ns, 2000000);
    atomic_store(&st.ewma_at_ms, t_now_ms());
    struct mg_lua_target ts[2] = {{"10.0.0.1:80", 1, 1, &st}, {"10.0.0.2:80", 3, 0, NULL}};
    for (unsigned active = 0; active < 5; active++) { /* changes seen without re-wrapping */
        atomic_store(&st.active, active);
        char v[8];
        snprintf(v, sizeof(v), "%u", active);
        struct t_req r;
        bool error;
        t_req_init(&r, "GET", "/");
        t_req_header(&r, "X-Active", v);
        assert_int_equal(mg_lua_balance(vm, 0, &r.ctx, ts, 2, &error), 0);
        assert_false(error);
        t_req_done(vm, &r);
    }
    mg_lua_free(vm);
    mg_config_unref(cfg);
}

/* A header array with its own element type (the proxy's struct mg_header):
 * the two slices first, something else after. */
struct wide_header {
    struct mg_lua_str name, value;
    unsigned flags;
    char pad[12];
};

struct fill_state {
    int calls;
    struct wide_header h[2];
};

static void fill_inputs(struct mg_lua_ctx *ctx, void *data)
{
    struct fill_state *f = data;
    f->calls++;
    ctx->method = T_STR("POST");
    ctx->path = T_STR("/lazy");
    ctx->req_headers = (const struct mg_lua_header *)f->h;
    ctx->n_req_headers = 2;
    ctx->req_header_stride = sizeof(struct wide_header);
}

/* ctx->fill: the request's inputs are set when a plugin first looks at the
 * request, once; a chain that never looks makes no call at all. */
static void lazy_inputs_filled_on_first_read(void **state)
{
    t_plugin("blind", "return {access = function(ctx, conf) end}\n");
    t_plugin("reader", "return {access = function(ctx, conf)\n"
                       "  assert(ctx.method == 'POST' and ctx.path == '/lazy', ctx.method)\n"
                       "  assert(ctx:header('x-b') == '2' and ctx:header('X-A') == '1')\n"
                       "  assert(#ctx:headers('x-b') == 1 and ctx:header('x-c') == nil)\n"
                       "  ctx:set_header('X-C', '3')\n"
                       "end}\n");
    struct mg_config *cfg = t_config(ROUTE("blind", "  plugins: [{name: blind}]\n") ROUTE(
        "reader", "  plugins: [{name: reader}, {name: blind}]\n"));
    struct mg_lua *vm = t_vm(cfg);
    for (size_t route = 0; route < 2; route++) {
        struct fill_state f = {
            0, {{T_STR("X-A"), T_STR("1"), 0, {0}}, {T_STR("x-B"), T_STR("2"), 0, {0}}}};
        struct mg_arena arena;
        struct mg_lua_ctx ctx;
        mg_arena_init(&arena, NULL);
        mg_lua_ctx_init(&ctx, &arena);
        ctx.fill = fill_inputs;
        ctx.fill_data = &f;
        assert_int_equal(mg_lua_run(vm, route, MG_LUA_ACCESS, &ctx), MG_LUA_OK);
        assert_int_equal(f.calls, (int)route); /* blind: none; reader: one */
        assert_true(route == 0 || (ctx.req_edits && ctx.req_edits->value.len == 1));
        mg_lua_ctx_done(vm, &ctx);
        mg_arena_destroy(&arena);
    }
    assert_int_equal(mg_lua_errors(vm), 0);
    mg_lua_free(vm);
    mg_config_unref(cfg);
}

/* ewma is decayed to now: an old slow sample fades (tau 10 s). */
static void targets_ewma_decays(void **state)
{
    t_plugin(
        "ewma",
        "return {balance = function(ctx, conf, t)\n"
        "  local want = tonumber(ctx:header('X-Want'))\n"
        "  assert(math.abs(t[1].ewma - want) < want * 0.02 + 1e-9, t[1].ewma .. ' vs ' .. want)\n"
        "  return 1 end}\n");
    struct mg_config *cfg = t_config(ROUTE("r", "  balancer: {name: ewma}\n"));
    struct mg_lua *vm = t_vm(cfg);
    static struct mg_target_stats st;
    struct mg_lua_target ts[1] = {{"a:1", 1, 1, &st}};
    atomic_store(&st.ewma_ns, 1000000000); /* 1 s, measured 10 s ago: 1/e left */
    atomic_store(&st.ewma_at_ms, t_now_ms() - 10000);
    struct t_req r;
    bool error;
    t_req_init(&r, "GET", "/");
    t_req_header(&r, "X-Want", "0.36787944");
    assert_int_equal(mg_lua_balance(vm, 0, &r.ctx, ts, 1, &error), 0);
    assert_false(error);
    t_req_done(vm, &r);
    mg_lua_free(vm);
    mg_config_unref(cfg);
}

/* The decay to now: below tau/64 a series replaces exp(); both sides of
 * that edge agree with exp() to 1e-10 relative. */
static void targets_ewma_decay_matches_exp(void **state)
{
    (void)state;
    static struct mg_target_stats st;
    atomic_store(&st.ewma_ns, 2000000); /* 2 ms, measured at 1000 s */
    atomic_store(&st.ewma_at_ms, 1000000);
    static const uint64_t ages_ms[] = {0, 1, 7, 50, 156, 157, 1000, 30000};
    for (size_t i = 0; i < sizeof ages_ms / sizeof *ages_ms; i++) {
        double want = 2e-3 * exp(-(double)ages_ms[i] / 10000); /* MG_EWMA_TAU_MS */
        double got = mg_ffi_target_ewma(&st, (1000000 + ages_ms[i]) * 1000000ull);
        if (!(fabs(got - want) <= 1e-10 * want))
            fail_msg("age %llu ms: %.17g, exp() says %.17g", (unsigned long long)ages_ms[i], got,
                     want);
    }
    atomic_store(&st.ewma_ns, 0); /* no sample: 0 */
    assert_true(mg_ffi_target_ewma(&st, 1000001ull * 1000000) == 0);
}

/* ---------------------------------------------------------- instrumentation */

static void guard_source_instruments_loops_only(void **state)
{
    static const char src[] = "#!/usr/bin/env luajit\n"
                              "local s = \"do repeat function() goto\" -- do\n"
                              "--[==[ while x do end ]==] local t = [[function(a)]]\n"
                              "while x do y() end\n"
                              "repeat until true\n"
                              "local f = function(a, b) return a end\n"
                              "::l:: goto l\n"
                              "local n = 0x1e+5 local m = 1e+5 local e = 'it''s'\n";
    size_t len = 0;
    char *out = mg_lua_guard_source(src, sizeof(src) - 1, &len);
    assert_non_null(out);
    assert_int_equal(strlen(out), len);
    static const char want[] =
        MG_GUARD_PROLOGUE "--!/usr/bin/env luajit\n"
                          "local s = \"do repeat function() goto\" -- do\n"
                          "--[==[ while x do end ]==] local t = [[function(a)]]\n"
                          "while x do" MG_GUARD_CHECK " y() end\n"
                          "repeat" MG_GUARD_CHECK " until true\n"
                          "local f = function(a, b)" MG_GUARD_CHECK " return a end\n"
                          "::l:: " MG_GUARD_CHECK "goto l\n"
                          "local n = 0x1e+5 local m = 1e+5 local e = 'it''s'\n";
    assert_string_equal(out, want);
    free(out);
    static const char bad[] = "local s = 'unterminated\nlocal x = 1\n";
    assert_null(mg_lua_guard_source(bad, sizeof(bad) - 1, &len));
    static const char badlong[] = "local s = [[ never closed";
    assert_null(mg_lua_guard_source(badlong, sizeof(badlong) - 1, &len));
    static const char esc[] = "local s = 'a\\'b\\\nc\\z\n   d' do end";
    out = mg_lua_guard_source(esc, sizeof(esc) - 1, &len);
    assert_non_null(out);
    assert_non_null(strstr(out, "d' do" MG_GUARD_CHECK " end"));
    free(out);
}

/* The complete example of docs/plugins.md, as printed there. */
static void docs_example_plugin_works(void **state)
{
    t_plugin("tenant_router",
             "-- tenant_router.lua\n"
             "local P = {}\n"
             "\n"
             "-- Runs once per worker at load (and again on every reload), for each route\n"
             "-- that lists the plugin. Validate and precompute here; raise to reject.\n"
             "function P.init(conf)\n"
             "    if type(conf.plans) ~= \"table\" then\n"
             "        error(\"tenant_router: config.plans must map tenants to plans\", 0)\n"
             "    end\n"
             "    conf.slow = conf.slow or 0.5            -- seconds\n"
             "    conf._tenants = {}                      -- derived data lives in conf too\n"
             "    for tenant in pairs(conf.plans) do conf._tenants[tenant] = true end\n"
             "end\n"
             "\n"
             "function P.access(ctx, conf)\n"
             "    local tenant = ctx:header(\"X-Tenant\")\n"
             "    if not tenant or not conf._tenants[tenant] then\n"
             "        return ctx:respond(403, gw.json_encode({\n"
             "            error = \"unknown_tenant\", status = 403, request_id = ctx.request_id,\n"
             "        }), { [\"Content-Type\"] = \"application/json\" })\n"
             "    end\n"
             "    ctx.vars.tenant = tenant                -- shared with the other phases\n"
             "    ctx:set_header(\"X-Plan\", conf.plans[tenant])\n"
             "end\n"
             "\n"
             "-- Used when the route names this plugin as its balancer.\n"
             "function P.balance(ctx, conf, targets)\n"
             "    local n = #targets\n"
             "    local i = gw.hash(ctx.vars.tenant or ctx.client_ip) % n + 1\n"
             "    for _ = 1, n do                         -- first available from \"its\" slot\n"
             "        if targets[i].available then return i end\n"
             "        i = i % n + 1\n"
             "    end\n"
             "    return nil                              -- the core falls back\n"
             "end\n"
             "\n"
             "function P.response(ctx, conf)\n"
             "    ctx:set_response_header(\"X-Tenant\", ctx.vars.tenant)\n"
             "end\n"
             "\n"
             "function P.log(ctx, conf)\n"
             "    if ctx.latency and ctx.latency > conf.slow then\n"
             "        gw.log(\"warn\", \"slow request\", ctx.vars.tenant, ctx.path, ctx.status, "
             "ctx.latency)\n"
             "    end\n"
             "end\n"
             "\n"
             "return P\n");
    struct mg_config *cfg = t_config(
        ROUTE("api", "  plugins:\n"
                     "    - name: tenant_router\n"
                     "      config: {plans: {acme: gold, initech: free}, slow: 0.25}\n"
                     "  balancer: {name: tenant_router, config: {plans: {acme: gold}}}\n"));
    struct mg_lua *vm = t_vm(cfg);
    struct mg_lua_target ts[2] = {{"a:1", 1, 1, NULL}, {"b:1", 1, 1, NULL}};
    struct t_req r;
    bool error;
    t_req_init(&r, "GET", "/orders");
    assert_int_equal(mg_lua_run(vm, 0, MG_LUA_ACCESS, &r.ctx), MG_LUA_RESPONDED);
    assert_int_equal(r.ctx.respond.status, 403);
    t_assert_str(r.ctx.respond.body,
                 "{\"error\":\"unknown_tenant\",\"request_id\":\"rid-1\",\"status\":403}");
    t_req_done(vm, &r);
    t_req_init(&r, "GET", "/orders");
    t_req_header(&r, "X-Tenant", "acme");
    assert_int_equal(mg_lua_run(vm, 0, MG_LUA_ACCESS, &r.ctx), MG_LUA_OK);
    t_assert_edit(r.ctx.req_edits, "X-Plan", "gold");
    int first = mg_lua_balance(vm, 0, &r.ctx, ts, 2, &error);
    assert_true(first >= 0 && !error);
    ts[first].available = 0; /* its slot is down: the next one */
    assert_int_equal(mg_lua_balance(vm, 0, &r.ctx, ts, 2, &error), 1 - first);
    ts[first].available = 1;
    t_resp(&r, 200, "Server", "x");
    assert_int_equal(mg_lua_run(vm, 0, MG_LUA_RESPONSE, &r.ctx), MG_LUA_OK);
    t_assert_edit(r.ctx.resp_edits, "X-Tenant", "acme");
    r.ctx.latency = 1.0;
    t_capture_start();
    assert_int_equal(mg_lua_run(vm, 0, MG_LUA_LOG, &r.ctx), MG_LUA_OK);
    char *log = t_capture_end();
    assert_non_null(strstr(log, "[warn] plugin tenant_router: slow request acme /orders 200 1"));
    free(log);
    t_req_done(vm, &r);
    assert_int_equal(mg_lua_errors(vm), 0);
    mg_lua_free(vm);
    mg_config_unref(cfg);
}

/* tests/integration/plugins/ loads (all but the one that must not compile). */
static void integration_example_plugins_load(void **state)
{
    char yaml[2048], err[1024] = "";
    snprintf(yaml, sizeof(yaml),
             "listen: [\"127.0.0.1:8080\"]\n"
             "plugin_path: [\"%s/../integration/plugins\"]\n"
             "upstreams: {a: {targets: [{address: \"127.0.0.1:9001\"}]}}\n"
             "routes:\n"
             "- {name: r1, upstream: a, balancer: {name: first_available},\n"
             "   plugins: [{name: deny}, {name: tag}, {name: boom}, {name: spin},\n"
             "             {name: picky, config: {ok: true}}]}\n"
             "- {name: r2, upstream: a, balancer: {name: header_target}}\n"
             "- {name: r3, upstream: a, plugins: [{name: syntax_error}]}\n",
             MG_TEST_DATA "/..");
    struct mg_config *cfg = mg_config_load_string(yaml, strlen(yaml), "t.yaml", err, sizeof(err));
    assert_non_null(cfg);
    assert_int_equal(mg_lua_check_config(cfg, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "t.yaml:9:37: routes[2].plugins[0]: plugin syntax_error: "));
    assert_non_null(strstr(err, "syntax_error.lua:4: unexpected symbol near '='"));
    mg_config_unref(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(check_accepts_bundled_plugins, t_setup, t_teardown),
        cmocka_unit_test_setup_teardown(check_missing_plugin, t_setup, t_teardown),
        cmocka_unit_test_setup_teardown(check_syntax_error, t_setup, t_teardown),
        cmocka_unit_test_setup_teardown(check_init_rejects_conf, t_setup, t_teardown),
        cmocka_unit_test_setup_teardown(check_bundled_init_errors, t_setup, t_teardown),
        cmocka_unit_test_setup_teardown(check_runtime_error_in_chunk, t_setup, t_teardown),
        cmocka_unit_test_setup_teardown(check_plugin_table_shape, t_setup, t_teardown),
        cmocka_unit_test_setup_teardown(check_balancer_roles, t_setup, t_teardown),
        cmocka_unit_test_setup_teardown(check_config_typing, t_setup, t_teardown),
        cmocka_unit_test_setup_teardown(check_sandbox, t_setup, t_teardown),
        cmocka_unit_test_setup_teardown(check_runaway_init_is_bounded, t_setup, t_teardown),
        cmocka_unit_test_setup_teardown(route_active_costs_nothing, t_setup, t_teardown),
        cmocka_unit_test_setup_teardown(user_round_robin_overrides_c, t_setup, t_teardown),
        cmocka_unit_test_setup_teardown(ctx_fields, t_setup, t_teardown),
        cmocka_unit_test_setup_teardown(access_respond_short_circuits, t_setup, t_teardown),
        cmocka_unit_test_setup_teardown(respond_validates, t_setup, t_teardown),
        cmocka_unit_test_setup_teardown(set_header_edits, t_setup, t_teardown),
        cmocka_unit_test_setup_teardown(vars_shared_and_reset, t_setup, t_teardown),
        cmocka_unit_test_setup_teardown(error_is_isolated, t_setup, t_teardown),
        cmocka_unit_test_setup_teardown(log_errors_do_not_stop_the_chain, t_setup, t_teardown),
        cmocka_unit_test_setup_teardown(runaway_plugins_are_stopped, t_setup, t_teardown),
        cmocka_unit_test_setup_teardown(busy_but_bounded_is_not_stopped, t_setup, t_teardown),
        cmocka_unit_test_setup_teardown(gw_module, t_setup, t_teardown),
        cmocka_unit_test_setup_teardown(stale_ctx_is_refused, t_setup, t_teardown),
        cmocka_unit_test_setup_teardown(balance_results_are_validated, t_setup, t_teardown),
        cmocka_unit_test_setup_teardown(targets_view_reads_c_memory, t_setup, t_teardown),
        cmocka_unit_test_setup_teardown(lazy_inputs_filled_on_first_read, t_setup, t_teardown),
        cmocka_unit_test_setup_teardown(targets_ewma_decays, t_setup, t_teardown),
        cmocka_unit_test(targets_ewma_decay_matches_exp),
        cmocka_unit_test(guard_source_instruments_loops_only),
        cmocka_unit_test_setup_teardown(docs_example_plugin_works, t_setup, t_teardown),
        cmocka_unit_test(integration_example_plugins_load),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
