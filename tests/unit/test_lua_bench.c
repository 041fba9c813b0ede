/*
 * Cost measurements of the Lua plugin runtime, printed (never asserted: CI
 * machines vary): ns per mg_lua_balance with each bundled balancer, per access
 * chain with the bundled request plugins, the runaway guard's cost per loop
 * iteration (instrumented vs original source, compiled and interpreted), and
 * a VM's creation time and heap. MOONGATE_LUA_BENCH_N sets the iterations
 * (default 20000: quick, and bearable under valgrind).
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "lua_test.h"

static long iterations(void)
{
    const char *s = getenv("MOONGATE_LUA_BENCH_N");
    long n = s ? atol(s) : 0;
    return n > 0 ? n : 20000;
}

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

#define ROUTES                                                                                     \
    ROUTE("first", "  balancer: {name: first}\n")                                                  \
    ROUTE("round_robin", "  balancer: {name: round_robin}\n")                                      \
    ROUTE("least_conn", "  balancer: {name: least_conn}\n")                                        \
    ROUTE("p2c_ewma", "  balancer: {name: p2c_ewma}\n")                                            \
    ROUTE("consistent_hash",                                                                       \
          "  balancer: {name: consistent_hash, config: {key: \"header:X-User\"}}\n")               \
    ROUTE("random", "  balancer: {name: random}\n")                                                \
    ROUTE("noop", "  plugins: [{name: noop}]\n")                                                   \
    ROUTE("request_id", "  plugins: [{name: request_id}]\n")                                       \
    ROUTE("key_auth", "  plugins: [{name: key_auth, config: {keys: [\"secret\"]}}]\n")             \
    ROUTE("rate_limit", "  plugins: [{name: rate_limit, config: {rate: 1000000000}}]\n")           \
    ROUTE("all3",                                                                                  \
          "  plugins: [{name: request_id}, {name: key_auth, config: {keys: [\"secret\"]}},"        \
          " {name: rate_limit, config: {rate: 1000000000}}]\n")                                    \
    ROUTE("noop_waits", "  plugins: [{name: noop_waits}]\n")
static const char *const route_names[] = {
    "first",      "round_robin", "least_conn", "p2c_ewma", "consistent_hash", "random", "noop",
    "request_id", "key_auth",    "rate_limit", "all3",     "noop_waits"};
#define NBALANCERS 6

static void balancers_and_plugins(void **state)
{
    static struct mg_target_stats st[3];
    static struct mg_lua_target ts[3] = {{"10.0.0.1:80", 1, 1, &st[0]},
                                         {"10.0.0.2:80", 2, 1, &st[1]},
                                         {"10.0.0.3:80", 1, 1, &st[2]}};
    long n = iterations();
    t_plugin("first", "return {balance = function(ctx, conf, t) return 1 end}\n");
    t_plugin("noop", "return {access = function(ctx, conf) end}\n");
    /* the same in a coroutine (a plugin that may wait, waiting for nothing) */
    t_plugin("noop_waits", "return {waits = true, access = function(ctx, conf) end}\n");
    const char *only = getenv("MOONGATE_LUA_BENCH_ONLY"); /* one route (callgrind) */
    for (int i = 0; i < 3; i++) {
        atomic_store(&st[i].ewma_ns, 1000000u * (unsigned)(i + 1));
        atomic_store(&st[i].ewma_at_ms, t_now_ms());
        atomic_store(&st[i].active, (unsigned)i);
    }
    /* round_robin from plugin_path, so the Lua file runs (see test_lua_plugins.c) */
    FILE *in = fopen(MG_PLUGIN_DIR "/round_robin.lua", "r");
    char src[8192];
    size_t len = fread(src, 1, sizeof(src) - 1, in);
    src[len] = '\0';
    fclose(in);
    t_plugin("round_robin", src);

    double t0 = now_ns();
    struct mg_config *cfg = t_config(ROUTES);
    struct mg_lua *vm = t_vm(cfg);
    print_message("  VM with %zu plugins: created in %.2f ms, %zu KiB of Lua heap\n",
                  mg_lua_nplugins(vm), (now_ns() - t0) / 1e6, mg_lua_memory(vm) / 1024);

    for (size_t r = 0; r < sizeof(route_names) / sizeof(route_names[0]); r++) {
        if (only && strcmp(only, route_names[r]) != 0)
            continue;
        char user[32];
        double start = 0;
        for (long k = -n / 10; k < n; k++) { /* a tenth to warm up (the JIT) */
            if (k == 0)
                start = now_ns();
            struct t_req q;
            t_req_init(&q, "GET", "/");
            snprintf(user, sizeof(user), "u%ld", k & 1023);
            t_req_header(&q, "X-User", user);
            t_req_header(&q, "X-Api-Key", "secret");
            if (r < NBALANCERS) {
                bool error;
                int i = mg_lua_balance(vm, r, &q.ctx, ts, 3, &error);
                assert_true(i >= 0 && !error);
            } else {
                assert_int_equal(mg_lua_run(vm, r, MG_LUA_ACCESS, &q.ctx), MG_LUA_OK);
            }
            t_req_done(vm, &q);
        }
        print_message("  %-16s %s %6.0f ns per request\n", route_names[r],
                      r < NBALANCERS ? "balance" : "access ", (now_ns() - start) / (double)n);
    }
    struct t_req q;
    double start = now_ns();
    for (long k = 0; k < n; k++) { /* the harness alone: what the lines above include */
        t_req_init(&q, "GET", "/");
        t_req_header(&q, "X-User", "u");
        t_req_done(vm, &q);
    }
    print_message("  (request setup alone: %.0f ns)\n", (now_ns() - start) / (double)n);
    assert_int_equal(mg_lua_errors(vm), 0);
    mg_lua_free(vm);
    mg_config_unref(cfg);
}

static int abort_fn(lua_State *L)
{
    return luaL_error(L, "stopped");
}

/* Runs `src` (which defines function f) and times `calls` calls of f(). */
static double time_source(const char *src, size_t len, bool jit, long calls)
{
    static uint8_t stop[64];
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    luaL_dostring(L, jit ? "jit.on()" : "jit.off()");
    lua_getglobal(L, "require");
    lua_pushstring(L, "ffi");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "cast");
    lua_pushstring(L, "const uint8_t *");
    lua_pushlightuserdata(L, stop);
    lua_call(L, 2, 1);
    lua_setglobal(L, "__mg_w");
    lua_pop(L, 1);
    lua_pushcfunction(L, abort_fn);
    lua_setglobal(L, "__mg_a");
    if (luaL_loadbuffer(L, src, len, "=bench") || lua_pcall(L, 0, 0, 0))
        fail_msg("bench source: %s", lua_tostring(L, -1));
    double start = 0;
    for (long k = -calls / 10; k < calls; k++) {
        if (k == 0)
            start = now_ns();
        lua_getglobal(L, "f");
        if (lua_pcall(L, 0, 0, 0))
            fail_msg("bench f: %s", lua_tostring(L, -1));
    }
    double ns = (now_ns() - start) / (double)calls;
    lua_close(L);
    return ns;
}

/* The guard's cost: the same loops with and without the inserted checks. */
static void guard_cost(void **state)
{
    static const char src[] = "local t = {} for i = 1, 100 do t[i] = i end\n"
                              "local function add(a, b) return a + b end\n"
                              "function f()\n"
                              "  local s = 0\n"
                              "  for k = 1, 10 do\n"
                              "    for i = 1, #t do s = add(s, t[i]) end\n"
                              "  end\n"
                              "  return s\n"
                              "end\n";
    size_t glen;
    char *guarded = mg_lua_guard_source(src, sizeof(src) - 1, &glen);
    assert_non_null(guarded);
    long calls = iterations() / 10;
    const double checks = 1 + 10 + 10 * 100 * 2; /* f entry, outer do, inner do + add entry */
    for (int jit = 1; jit >= 0; jit--) {
        double plain = time_source(src, sizeof(src) - 1, jit, calls);
        double with = time_source(guarded, glen, jit, calls);
        print_message("  guard, %s: %.0f ns -> %.0f ns per call of 2011 checks: %.2f ns per "
                      "check (%+.0f%%)\n",
                      jit ? "JIT       " : "interpreter", plain, with, (with - plain) / checks,
                      100.0 * (with - plain) / plain);
    }
    free(guarded);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(balancers_and_plugins, t_setup, t_teardown),
        cmocka_unit_test(guard_cost),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
