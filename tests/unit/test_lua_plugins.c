/*
 * Unit tests of the bundled plugins (plugins/) running in the real
 * runtime: each balancer's choices (round robin smoothness with weights,
 * least_conn on in-flight counts, p2c_ewma on latency x load, consistent_hash
 * stability when a target goes away, random's weights), what every balancer
 * does with unavailable targets, and the request plugins key_auth, rate_limit
 * and request_id with their exact responses.
 */
#include <math.h>

#include "lua_test.h"

/* One route per balancer, in this order. */
#define BALANCER_ROUTES                                                                            \
    ROUTE("rr", "  balancer: {name: round_robin}\n")                                               \
    ROUTE("lc", "  balancer: {name: least_conn}\n")                                                \
    ROUTE("p2c", "  balancer: {name: p2c_ewma}\n")                                                 \
    ROUTE("ch", "  balancer: {name: consistent_hash, config: {key: \"header:X-User\"}}\n")         \
    ROUTE("rnd", "  balancer: {name: random}\n")                                                   \
    ROUTE("chip", "  balancer: {name: consistent_hash}\n")                                         \
    ROUTE("chc", "  balancer: {name: consistent_hash, config: {key: \"cookie:session\"}}\n")       \
    ROUTE("chp", "  balancer: {name: consistent_hash, config: {key: path}}\n")
enum { RR, LC, P2C, CH, RND, CHIP, CHC, CHP, NBAL };

struct fixture {
    struct mg_config *cfg;
    struct mg_lua *vm;
};

/* The bundled round_robin without config is the proxy's C balancer; a copy on
 * plugin_path (what users do to change it) runs the Lua file. */
static void copy_bundled(const char *name)
{
    char path[512], src[16384];
    snprintf(path, sizeof(path), "%s/%s.lua", MG_PLUGIN_DIR, name);
    FILE *in = fopen(path, "r");
    assert_non_null(in);
    size_t n = fread(src, 1, sizeof(src) - 1, in);
    src[n] = '\0';
    fclose(in);
    t_plugin(name, src);
}

static int setup(void **state)
{
    static struct fixture f;
    t_setup(state);
    copy_bundled("round_robin");
    f.cfg = t_config(BALANCER_ROUTES);
    f.vm = t_vm(f.cfg);
    for (int r = 0; r < NBAL; r++)
        assert_true(mg_lua_route_active(f.vm, (size_t)r, MG_LUA_BALANCE));
    *state = &f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(mg_lua_errors(f->vm), 0);
    mg_lua_free(f->vm);
    mg_config_unref(f->cfg);
    return t_teardown(state);
}

/* One balance call with an optional request header; returns the index. */
static int pick(struct mg_lua *vm, int route, const struct mg_lua_target *ts, size_t n,
                const char *header, const char *value)
{
    struct t_req r;
    bool error = false;
    t_req_init(&r, "GET", "/");
    if (header)
        t_req_header(&r, header, value);
    int i = mg_lua_balance(vm, (size_t)route, &r.ctx, ts, n, &error);
    assert_false(error);
    t_req_done(vm, &r);
    return i;
}

/* ----------------------------------------------------------------- balancers */

static void round_robin_is_smooth_and_weighted(void **state)
{
    struct fixture *f = *state;
    static const struct mg_lua_target ts[3] = {
        {"a:1", 5, 1, NULL}, {"b:1", 1, 1, NULL}, {"c:1", 1, 1, NULL}};
    char seq[8] = "";
    for (int k = 0; k < 7; k++)
        seq[k] = (char)('a' + pick(f->vm, RR, ts, 3, NULL, NULL));
    assert_string_equal(seq, "aabacaa"); /* nginx's order for weights 5, 1, 1 */
    int counts[3] = {0};
    for (int k = 0; k < 700; k++)
        counts[pick(f->vm, RR, ts, 3, NULL, NULL)]++;
    assert_int_equal(counts[0], 500);
    assert_int_equal(counts[1], 100);
    assert_int_equal(counts[2], 100);
}

static void round_robin_skips_unavailable(void **state)
{
    struct fixture *f = *state;
    static struct mg_lua_target ts[3] = {
        {"a:2", 1, 1, NULL}, {"b:2", 1, 0, NULL}, {"c:2", 1, 1, NULL}};
    int counts[3] = {0};
    for (int k = 0; k < 100; k++)
        counts[pick(f->vm, RR, ts, 3, NULL, NULL)]++;
    assert_int_equal(counts[0], 50);
    assert_int_equal(counts[1], 0);
    assert_int_equal(counts[2], 50);
}

static void least_conn_picks_fewest_in_flight(void **state)
{
    struct fixture *f = *state;
    static struct mg_target_stats st[3];
    static struct mg_lua_target ts[3] = {
        {"a:3", 1, 1, &st[0]}, {"b:3", 1, 1, &st[1]}, {"c:3", 4, 1, &st[2]}};
    atomic_store(&st[0].active, 5);
    atomic_store(&st[1].active, 2);
    atomic_store(&st[2].active, 9); /* weight 4: 2.25 per unit */
    for (int k = 0; k < 10; k++)
        assert_int_equal(pick(f->vm, LC, ts, 3, NULL, NULL), 1);
    atomic_store(&st[2].active, 7); /* 1.75 per unit: now the least loaded */
    assert_int_equal(pick(f->vm, LC, ts, 3, NULL, NULL), 2);
    ts[2].available = 0;
    assert_int_equal(pick(f->vm, LC, ts, 3, NULL, NULL), 1);
    ts[2].available = 1;
    /* ties rotate instead of piling on the first target */
    for (int i = 0; i < 3; i++)
        atomic_store(&st[i].active, 0);
    ts[2].weight = 1;
    int counts[3] = {0};
    for (int k = 0; k < 300; k++)
        counts[pick(f->vm, LC, ts, 3, NULL, NULL)]++;
    assert_int_equal(counts[0], 100);
    assert_int_equal(counts[1], 100);
    assert_int_equal(counts[2], 100);
}

static void p2c_prefers_low_latency_times_load(void **state)
{
    struct fixture *f = *state;
    static struct mg_target_stats st[3];
    static struct mg_lua_target ts[3] = {
        {"slow:4", 1, 1, &st[0]}, {"fast1:4", 1, 1, &st[1]}, {"fast2:4", 1, 1, &st[2]}};
    uint64_t now = t_now_ms();
    atomic_store(&st[0].ewma_ns, 50000000); /* 50 ms */
    atomic_store(&st[1].ewma_ns, 1000000);  /* 1 ms */
    atomic_store(&st[2].ewma_ns, 1000000);
    for (int i = 0; i < 3; i++)
        atomic_store(&st[i].ewma_at_ms, now);
    int counts[3] = {0};
    for (int k = 0; k < 1000; k++)
        counts[pick(f->vm, P2C, ts, 3, NULL, NULL)]++;
    print_message("  p2c idle: slow %d fast %d %d\n", counts[0], counts[1], counts[2]);
    assert_int_equal(counts[0], 0); /* it loses every pair it is drawn in */
    assert_true(counts[1] > 350 && counts[2] > 350);

    /* 1 ms x 101 in flight costs more than 50 ms x 1: the slow one wins its pairs */
    atomic_store(&st[1].active, 100);
    atomic_store(&st[2].active, 100);
    memset(counts, 0, sizeof(counts));
    for (int k = 0; k < 1000; k++)
        counts[pick(f->vm, P2C, ts, 3, NULL, NULL)]++;
    print_message("  p2c loaded: slow %d fast %d %d\n", counts[0], counts[1], counts[2]);
    assert_true(counts[0] > 550 && counts[0] < 780); /* 2 pairs in 3 */
    atomic_store(&st[1].active, 0);
    atomic_store(&st[2].active, 0);
}

/* A target without a latency sample gets tried, but its load still counts. */
static void p2c_probes_unmeasured_targets(void **state)
{
    struct fixture *f = *state;
    static struct mg_target_stats st[2];
    static struct mg_lua_target ts[2] = {{"new:5", 1, 1, &st[0]}, {"old:5", 1, 1, &st[1]}};
    atomic_store(&st[1].ewma_ns, 10000000);
    atomic_store(&st[1].ewma_at_ms, t_now_ms());
    int counts[2] = {0};
    for (int k = 0; k < 1000; k++)
        counts[pick(f->vm, P2C, ts, 2, NULL, NULL)]++;
    assert_true(counts[0] > 400 && counts[1] > 400);
    atomic_store(&st[0].active, 5); /* busy and still unmeasured: not flooded */
    for (int k = 0; k < 100; k++)
        assert_int_equal(pick(f->vm, P2C, ts, 2, NULL, NULL), 1);
    ts[1].available = 0;
    assert_int_equal(pick(f->vm, P2C, ts, 2, NULL, NULL), 0);
}

#define NT   10
#define KEYS 10000

static struct mg_lua_target ring10[NT], ring9[NT - 1];
static char addrs[NT][32];

static void make_rings(void)
{
    for (int i = 0; i < NT; i++) {
        snprintf(addrs[i], sizeof(addrs[i]), "10.1.0.%d:8080", i + 1);
        ring10[i] = (struct mg_lua_target){addrs[i], 1, 1, NULL};
    }
    for (int i = 0, j = 0; i < NT; i++) /* the same, without target 3 */
        if (i != 3)
            ring9[j++] = ring10[i];
}

static void consistent_hash_is_stable(void **state)
{
    struct fixture *f = *state;
    static int before[KEYS];
    int counts[NT] = {0};
    char key[32];
    make_rings();
    for (int k = 0; k < KEYS; k++) {
        snprintf(key, sizeof(key), "user-%d", k);
        before[k] = pick(f->vm, CH, ring10, NT, "X-User", key);
        counts[before[k]]++;
    }
    for (int i = 0; i < NT; i++) { /* 160 points per target: within ~±35% of 1000 */
        print_message("  ketama target %d: %d keys\n", i, counts[i]);
        assert_true(counts[i] > 650 && counts[i] < 1350);
    }
    for (int k = 0; k < 1000; k++) { /* a key stays on its target */
        snprintf(key, sizeof(key), "user-%d", k);
        assert_int_equal(pick(f->vm, CH, ring10, NT, "X-User", key), before[k]);
    }
    /* removing one target of ten moves only its own keys (~1/10) */
    int moved = 0;
    for (int k = 0; k < KEYS; k++) {
        snprintf(key, sizeof(key), "user-%d", k);
        int now = pick(f->vm, CH, ring9, NT - 1, "X-User", key);
        if (strcmp(ring9[now].address, ring10[before[k]].address) != 0) {
            moved++;
            assert_int_equal(before[k], 3);
        }
    }
    print_message("  ketama: removing 1 of 10 targets moved %.1f%% of keys\n",
                  100.0 * moved / KEYS);
    assert_int_equal(moved, counts[3]);
    assert_true(moved > KEYS / 20 && moved < KEYS * 15 / 100);

    /* an unavailable target's keys move to the next owner, and come back */
    ring10[3].available = 0;
    moved = 0;
    for (int k = 0; k < KEYS; k++) {
        snprintf(key, sizeof(key), "user-%d", k);
        int now = pick(f->vm, CH, ring10, NT, "X-User", key);
        assert_true(now != 3);
        moved += now != before[k];
        if (before[k] != 3)
            assert_int_equal(now, before[k]);
    }
    assert_int_equal(moved, counts[3]);
    ring10[3].available = 1;
    for (int k = 0; k < KEYS; k += 7) {
        snprintf(key, sizeof(key), "user-%d", k);
        assert_int_equal(pick(f->vm, CH, ring10, NT, "X-User", key), before[k]);
    }
}

static void consistent_hash_keys(void **state)
{
    struct fixture *f = *state;
    make_rings();
    /* a request without the header is keyed by its client IP */
    int by_ip = pick(f->vm, CHIP, ring10, NT, NULL, NULL);
    assert_int_equal(pick(f->vm, CH, ring10, NT, NULL, NULL), by_ip);
    /* cookie: the named cookie only, wherever it sits */
    int a = pick(f->vm, CHC, ring10, NT, "Cookie", "session=abc");
    assert_int_equal(pick(f->vm, CHC, ring10, NT, "Cookie", "x=1; session=abc; y=2"), a);
    assert_int_equal(pick(f->vm, CHC, ring10, NT, "Cookie", "xsession=zzz;session=abc"), a);
    int spread = 0;
    char v[64];
    for (int k = 0; k < 50; k++) {
        snprintf(v, sizeof(v), "theme=dark; session=s%d", k);
        spread |= 1 << pick(f->vm, CHC, ring10, NT, "Cookie", v);
    }
    assert_true(__builtin_popcount((unsigned)spread) >= 5);
    /* path */
    struct t_req r;
    bool error;
    int first = -1;
    for (int k = 0; k < 3; k++) {
        t_req_init(&r, "GET", "/items/42");
        int i = mg_lua_balance(f->vm, CHP, &r.ctx, ring10, NT, &error);
        assert_true(first < 0 || i == first);
        first = i;
        t_req_done(f->vm, &r);
    }
}

static void random_respects_weights(void **state)
{
    struct fixture *f = *state;
    static struct mg_lua_target ts[3] = {
        {"a:6", 3, 1, NULL}, {"b:6", 1, 1, NULL}, {"c:6", 5, 0, NULL}};
    int counts[3] = {0};
    for (int k = 0; k < 4000; k++)
        counts[pick(f->vm, RND, ts, 3, NULL, NULL)]++;
    print_message("  random 3:1: %d %d\n", counts[0], counts[1]);
    assert_true(counts[0] > 2800 && counts[0] < 3200);
    assert_int_equal(counts[2], 0);
}

/* Every bundled balancer returns nil (-1 to the proxy) when nothing is available. */
static void balancers_with_nothing_available(void **state)
{
    struct fixture *f = *state;
    static struct mg_lua_target ts[2] = {{"a:7", 1, 0, NULL}, {"b:7", 1, 0, NULL}};
    for (int r = 0; r < NBAL; r++)
        assert_int_equal(pick(f->vm, r, ts, 2, "X-User", "u"), -1);
    ts[1].available = 1;
    for (int r = 0; r < NBAL; r++)
        assert_int_equal(pick(f->vm, r, ts, 2, "X-User", "u"), 1);
}

/* ----------------------------------------------------------- request plugins */

struct plug {
    struct mg_config *cfg;
    struct mg_lua *vm;
};

static struct plug plug_new(const char *routes)
{
    struct plug p;
    p.cfg = t_config(routes);
    p.vm = t_vm(p.cfg);
    return p;
}

static void plug_free(struct plug *p)
{
    assert_int_equal(mg_lua_errors(p->vm), 0);
    mg_lua_free(p->vm);
    mg_config_unref(p->cfg);
}

static void assert_body(const struct t_req *r, const char *want)
{
    t_assert_str(r->ctx.respond.body, want);
}

static void key_auth(void **state)
{
    t_plugin(
        "who",
        "return {access = function(ctx) ctx:set_header('X-Consumer', ctx.vars.consumer) end}\n");
    struct plug p = plug_new(
        ROUTE("list", "  plugins: [{name: key_auth, config: {keys: [\"k1\", \"k2\"]}}]\n") ROUTE(
            "map", "  plugins:\n"
                   "    - name: key_auth\n"
                   "      config: {keys: {alice: \"k1\"}, hide_credentials: true, query: apikey}\n"
                   "    - {name: who}\n"));
    struct t_req r;
    char buf[128];

    t_req_init(&r, "GET", "/");
    assert_int_equal(mg_lua_run(p.vm, 0, MG_LUA_ACCESS, &r.ctx), MG_LUA_RESPONDED);
    assert_int_equal(r.ctx.respond.status, 401);
    assert_body(&r, "{\"error\":\"unauthorized\",\"message\":\"missing API key\","
                    "\"request_id\":\"rid-1\",\"status\":401}");
    t_assert_edit(r.ctx.respond.headers, "Content-Type", "application/json");
    t_assert_edit(r.ctx.respond.headers, "WWW-Authenticate", "Key realm=\"moongate\"");
    t_req_done(p.vm, &r);

    t_req_init(&r, "GET", "/");
    t_req_header(&r, "X-Api-Key", "nope");
    assert_int_equal(mg_lua_run(p.vm, 0, MG_LUA_ACCESS, &r.ctx), MG_LUA_RESPONDED);
    assert_body(&r, "{\"error\":\"unauthorized\",\"message\":\"invalid API key\","
                    "\"request_id\":\"rid-1\",\"status\":401}");
    t_req_done(p.vm, &r);

    t_req_init(&r, "GET", "/");
    t_req_header(&r, "x-api-key", "k2");
    assert_int_equal(mg_lua_run(p.vm, 0, MG_LUA_ACCESS, &r.ctx), MG_LUA_OK);
    assert_null(r.ctx.req_edits); /* the key is forwarded by default */
    t_req_done(p.vm, &r);

    /* map form: the consumer reaches the next plugin; the key is hidden */
    t_req_init(&r, "GET", "/");
    t_req_header(&r, "X-Api-Key", "k1");
    assert_int_equal(mg_lua_run(p.vm, 1, MG_LUA_ACCESS, &r.ctx), MG_LUA_OK);
    assert_string_equal(t_edit_value(r.ctx.req_edits, "X-Consumer", buf, sizeof(buf)), "alice");
    t_assert_edit(r.ctx.req_edits, "X-Api-Key", NULL);
    t_req_done(p.vm, &r);

    /* the query parameter, percent-decoded */
    t_req_init(&r, "GET", "/");
    r.ctx.query = T_STR("a=b&apikey=k%31");
    assert_int_equal(mg_lua_run(p.vm, 1, MG_LUA_ACCESS, &r.ctx), MG_LUA_OK);
    t_req_done(p.vm, &r);
    plug_free(&p);

    struct mg_config *cfg = t_config(ROUTE("r", "  plugins: [{name: key_auth}]\n"));
    t_check_error(cfg, "t.yaml:8:13: routes[0].plugins[0]: plugin key_auth: key_auth: "
                       "config.keys must be a non-empty list or map of keys");
    mg_config_unref(cfg);
    cfg = t_config(ROUTE("r", "  plugins: [{name: key_auth, config: {keys: [123]}}]\n"));
    t_check_error(cfg, "t.yaml:8:13: routes[0].plugins[0]: plugin key_auth: key_auth: "
                       "config.keys.1 must be a non-empty string (quote keys that look like "
                       "numbers)");
    mg_config_unref(cfg);
}

static void rate_limit(void **state)
{
    struct plug p =
        plug_new(ROUTE("ip", "  plugins: [{name: rate_limit, config: {rate: 1, burst: 2}}]\n")
                     ROUTE("hdr", "  plugins: [{name: rate_limit, config: {rate: 50, burst: 1, "
                                  "key: \"header:X-Api-Key\", headers: false}}]\n"));
    struct t_req r;
    char buf[64];
    for (int k = 0; k < 2; k++) {
        t_req_init(&r, "GET", "/");
        assert_int_equal(mg_lua_run(p.vm, 0, MG_LUA_ACCESS, &r.ctx), MG_LUA_OK);
        assert_string_equal(t_edit_value(r.ctx.resp_edits, "X-RateLimit-Limit", buf, sizeof(buf)),
                            "2");
        assert_string_equal(
            t_edit_value(r.ctx.resp_edits, "X-RateLimit-Remaining", buf, sizeof(buf)),
            k == 0 ? "1" : "0");
        t_req_done(p.vm, &r);
    }
    t_req_init(&r, "GET", "/");
    assert_int_equal(mg_lua_run(p.vm, 0, MG_LUA_ACCESS, &r.ctx), MG_LUA_RESPONDED);
    assert_int_equal(r.ctx.respond.status, 429);
    assert_body(&r, "{\"error\":\"rate_limited\",\"request_id\":\"rid-1\",\"retry_after\":1,"
                    "\"status\":429}");
    t_assert_edit(r.ctx.respond.headers, "Retry-After", "1");
    t_assert_edit(r.ctx.respond.headers, "Content-Type", "application/json");
    t_assert_edit(r.ctx.resp_edits, "X-RateLimit-Remaining", "0");
    t_req_done(p.vm, &r);

    /* per header value; refills at `rate` */
    const char *keys[] = {"alice", "bob"};
    for (int k = 0; k < 2; k++) {
        t_req_init(&r, "GET", "/");
        t_req_header(&r, "X-Api-Key", keys[k]);
        assert_int_equal(mg_lua_run(p.vm, 1, MG_LUA_ACCESS, &r.ctx), MG_LUA_OK);
        assert_null(r.ctx.resp_edits); /* headers: false */
        t_req_done(p.vm, &r);
    }
    t_req_init(&r, "GET", "/");
    t_req_header(&r, "X-Api-Key", "alice");
    assert_int_equal(mg_lua_run(p.vm, 1, MG_LUA_ACCESS, &r.ctx), MG_LUA_RESPONDED);
    t_req_done(p.vm, &r);
    usleep(40 * 1000); /* 50/s: a token is back after 20 ms */
    t_req_init(&r, "GET", "/");
    t_req_header(&r, "X-Api-Key", "alice");
    assert_int_equal(mg_lua_run(p.vm, 1, MG_LUA_ACCESS, &r.ctx), MG_LUA_OK);
    t_req_done(p.vm, &r);
    plug_free(&p);

    struct mg_config *cfg =
        t_config(ROUTE("r", "  plugins: [{name: rate_limit, config: {rate: 5, burst: 0.5}}]\n"));
    t_check_error(cfg, "t.yaml:8:13: routes[0].plugins[0]: plugin rate_limit: rate_limit: "
                       "config.burst must be a number >= 1");
    mg_config_unref(cfg);
    cfg = t_config(ROUTE("r", "  plugins: [{name: rate_limit, config: {rate: 5, key: path}}]\n"));
    t_check_error(cfg, "t.yaml:8:13: routes[0].plugins[0]: plugin rate_limit: rate_limit: "
                       "config.key must be ip or header:NAME, got path");
    mg_config_unref(cfg);
}

static void request_id(void **state)
{
    struct plug p = plug_new(ROUTE("d", "  plugins: [{name: request_id}]\n") ROUTE(
        "c", "  plugins: [{name: request_id, config: {response_header: X-Trace-Id, "
             "upstream_header: X-Correlation-Id}}]\n"));
    struct t_req r;
    t_req_init(&r, "GET", "/");
    assert_int_equal(mg_lua_run(p.vm, 0, MG_LUA_ACCESS, &r.ctx), MG_LUA_OK);
    t_assert_edit(r.ctx.resp_edits, "X-Request-Id", "rid-1");
    assert_null(r.ctx.req_edits);
    t_req_done(p.vm, &r);
    t_req_init(&r, "GET", "/");
    assert_int_equal(mg_lua_run(p.vm, 1, MG_LUA_ACCESS, &r.ctx), MG_LUA_OK);
    t_assert_edit(r.ctx.resp_edits, "X-Trace-Id", "rid-1");
    t_assert_edit(r.ctx.req_edits, "X-Correlation-Id", "rid-1");
    t_req_done(p.vm, &r);
    plug_free(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(round_robin_is_smooth_and_weighted, setup, teardown),
        cmocka_unit_test_setup_teardown(round_robin_skips_unavailable, setup, teardown),
        cmocka_unit_test_setup_teardown(least_conn_picks_fewest_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(p2c_prefers_low_latency_times_load, setup, teardown),
        cmocka_unit_test_setup_teardown(p2c_probes_unmeasured_targets, setup, teardown),
        cmocka_unit_test_setup_teardown(consistent_hash_is_stable, setup, teardown),
        cmocka_unit_test_setup_teardown(consistent_hash_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(random_respects_weights, setup, teardown),
        cmocka_unit_test_setup_teardown(balancers_with_nothing_available, setup, teardown),
        cmocka_unit_test_setup_teardown(key_auth, t_setup, t_teardown),
        cmocka_unit_test_setup_teardown(rate_limit, t_setup, t_teardown),
        cmocka_unit_test_setup_teardown(request_id, t_setup, t_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
