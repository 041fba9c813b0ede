/*
 * Unit tests of the configuration loader (gateway/config/): good files and the
 * defaults they get, then each class of bad file with the exact
 * "file:line:col: key.path: message" it must produce. Run under valgrind: every
 * error path must free what the load allocated.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <llhttp.h>

#include "config/config.h"
#include "tls/context.h"

#define BIT(m) (1ull << (m))

/* The smallest valid file; lines 1-6. */
#define MINIMAL                                                                                    \
    "listen: [\"127.0.0.1:8080\"]\n"                                                               \
    "upstreams:\n"                                                                                 \
    "  a:\n"                                                                                       \
    "    targets: [{address: \"127.0.0.1:9001\"}]\n"                                               \
    "routes:\n"                                                                                    \
    "  - {name: r, upstream: a}\n"

/* Lines 1-4: listen and an upstream `a` whose map starts at 4:5. */
#define HEAD                                                                                       \
    "listen: [\"127.0.0.1:8080\"]\n"                                                               \
    "upstreams:\n"                                                                                 \
    "  a:\n"                                                                                       \
    "    targets: [{address: \"127.0.0.1:9001\"}]\n"

static struct mg_config *load(const char *yaml)
{
    char err[512] = "";
    struct mg_config *cfg = mg_config_load_string(yaml, strlen(yaml), "t.yaml", err, sizeof(err));

    if (cfg == NULL)
        fail_msg("load failed: %s", err);
    return cfg;
}

/* Asserts that `yaml` fails with an error that starts with `prefix`. */
static void expect_error(const char *yaml, const char *prefix)
{
    char err[512] = "";
    struct mg_config *cfg = mg_config_load_string(yaml, strlen(yaml), "t.yaml", err, sizeof(err));

    if (cfg != NULL) {
        mg_config_unref(cfg);
        fail_msg("loaded, expected error '%s'", prefix);
    }
    if (strncmp(err, prefix, strlen(prefix)) != 0)
        fail_msg("error  '%s'\nwanted '%s...'", err, prefix);
}

/* The rest of MINIMAL, after a first `listen` line. */
#define HEAD_TAIL                                                                                  \
    "upstreams:\n"                                                                                 \
    "  a:\n"                                                                                       \
    "    targets: [{address: \"127.0.0.1:9001\"}]\n"                                               \
    "routes:\n"                                                                                    \
    "  - {name: r, upstream: a}\n"

static uint16_t port_of(const struct mg_address *a)
{
    return ntohs(((const struct sockaddr_in *)&a->addr)->sin_port);
}

/* ---- good files ---- */

/* shared_dicts (DESIGN.md section 10.3): NAME: SIZE, 8k..1g; absent: none. */
static void test_shared_dicts(void **state)
{
    (void)state;
    struct mg_config *cfg = load(MINIMAL);
    assert_int_equal(cfg->shared_dicts.n, 0);
    mg_config_unref(cfg);
    cfg = load("shared_dicts: {limits: 10m, sessions: 8k}\n" MINIMAL);
    assert_int_equal(cfg->shared_dicts.n, 2);
    assert_string_equal(cfg->shared_dicts.v[0].name, "limits");
    assert_int_equal(cfg->shared_dicts.v[0].bytes, 10u * 1024 * 1024);
    assert_int_equal(cfg->shared_dicts.v[1].bytes, 8192);
    mg_config_unref(cfg);
    expect_error("shared_dicts: {limits: 1k}\n" MINIMAL,
                 "t.yaml:1:24: shared_dicts.limits: invalid size '1k' (expected 8k..1g");
    expect_error("shared_dicts: [limits]\n" MINIMAL, "t.yaml:1:15: shared_dicts: ");
}

static void test_minimal_top_level_defaults(void **state)
{
    struct mg_config *cfg = load(MINIMAL);

    (void)state;
    assert_int_equal(cfg->nlisten, 1);
    assert_string_equal(cfg->listen[0].address.text, "127.0.0.1:8080");
    assert_int_equal(port_of(&cfg->listen[0].address), 8080);
    assert_false(cfg->listen[0].http2);
    assert_false(cfg->listen[0].proxy_protocol);
    assert_null(cfg->listen[0].tls);
    assert_int_equal(cfg->workers, 0); /* auto */
    assert_string_equal(cfg->admin_listen.text, "127.0.0.1:9901");
    assert_int_equal(port_of(&cfg->admin_listen), 9901);
    assert_null(cfg->pid_file); /* the default depends on the user: process/pidfile.c */
    assert_int_equal(cfg->nplugin_path, 0);
    assert_string_equal(cfg->access_log, "stderr");
    assert_int_equal(cfg->drain_timeout_ms, 30000);
    assert_string_equal(cfg->path, "t.yaml");
    assert_non_null(cfg->router);
    mg_config_unref(cfg);
}

static void test_minimal_client_and_redis_defaults(void **state)
{
    struct mg_config *cfg = load(MINIMAL);

    (void)state;
    assert_int_equal(cfg->client.header_timeout_ms, 10000);
    assert_int_equal(cfg->client.body_timeout_ms, 30000);
    assert_int_equal(cfg->client.keepalive_timeout_ms, 75000);
    assert_int_equal(cfg->client.max_header_size, 16384);
    assert_int_equal(cfg->client.max_body_size, 10 << 20);
    assert_int_equal(cfg->client.max_connections, 10000);
    assert_false(cfg->redis.enabled);
    assert_string_equal(cfg->redis.address.text, "127.0.0.1:6379");
    assert_int_equal(cfg->redis.db, 0);
    assert_null(cfg->redis.password);
    assert_int_equal(cfg->redis.timeout_ms, 250);
    mg_config_unref(cfg);
}

static void test_minimal_upstream_defaults(void **state)
{
    struct mg_config *cfg = load(MINIMAL);
    const struct mg_upstream_conf *up = &cfg->upstreams[0];

    (void)state;
    assert_int_equal(cfg->nupstreams, 1);
    assert_string_equal(up->name, "a");
    assert_int_equal(up->index, 0);
    assert_int_equal(up->ntargets, 1);
    assert_int_equal(up->targets[0].weight, 1);
    assert_int_equal(up->keepalive, 64);
    assert_int_equal(up->connect_timeout_ms, 1000);
    assert_int_equal(up->send_timeout_ms, 10000);
    assert_int_equal(up->read_timeout_ms, 30000);
    assert_int_equal(up->bulkhead.max_concurrent, 256);
    assert_int_equal(up->bulkhead.max_queue, 128);
    assert_int_equal(up->bulkhead.queue_timeout_ms, 1000);
    mg_config_unref(cfg);
}

/* DESIGN.md section 10.7: every key off (or default) when absent. */
static void test_resilience2_defaults(void **state)
{
    struct mg_config *cfg = load(MINIMAL);
    const struct mg_upstream_conf *up = &cfg->upstreams[0];

    (void)state;
    assert_int_equal(up->per_try_timeout_ms, 0);
    assert_false(up->honor_retry_after);
    assert_null(up->deadline_header);
    assert_int_equal(cfg->routes[0].priority, MG_PRIO_DEFAULT);
    mg_config_unref(cfg);
}

static void test_resilience2_values(void **state)
{
    struct mg_config *cfg = load(HEAD "    timeouts: {per_try: 250ms}\n"
                                      "    honor_retry_after: {}\n"
                                      "    deadline_header: X-Request-Timeout-Ms\n"
                                      "routes:\n"
                                      "  - {name: r, upstream: a, priority: sheddable}\n"
                                      "  - {name: s, upstream: a, priority: critical}\n");
    const struct mg_upstream_conf *up = &cfg->upstreams[0];

    (void)state;
    assert_int_equal(up->per_try_timeout_ms, 250);
    assert_true(up->honor_retry_after);
    assert_int_equal(up->retry_after_max_ms, 30000);
    assert_string_equal(up->deadline_header, "X-Request-Timeout-Ms");
    assert_int_equal(cfg->routes[0].priority, MG_PRIO_SHEDDABLE);
    assert_int_equal(cfg->routes[1].priority, MG_PRIO_CRITICAL);
    mg_config_unref(cfg);
    cfg = load(HEAD "    timeouts: {per_try: null}\n"
                    "    honor_retry_after: {max: 5s}\n"
                    "routes:\n"
                    "  - {name: r, upstream: a}\n");
    assert_int_equal(cfg->upstreams[0].per_try_timeout_ms, 0);
    assert_int_equal(cfg->upstreams[0].retry_after_max_ms, 5000);
    assert_false(cfg->upstreams[0].hedge.enabled);
    mg_config_unref(cfg);
    cfg = load(HEAD "    hedge: {after: p95}\n"
                    "  b:\n"
                    "    targets: [{address: \"127.0.0.1:9002\"}]\n"
                    "    hedge: {after: 40ms, max: 2, budget: 2.5}\n"
                    "routes:\n"
                    "  - {name: r, upstream: a}\n");
    assert_true(cfg->upstreams[0].hedge.enabled);
    assert_int_equal(cfg->upstreams[0].hedge.after_permille, 950);
    assert_int_equal(cfg->upstreams[0].hedge.after_ms, 0);
    assert_int_equal(cfg->upstreams[0].hedge.max, 1);
    assert_int_equal(cfg->upstreams[1].hedge.after_ms, 40);
    assert_int_equal(cfg->upstreams[1].hedge.after_permille, 0);
    assert_int_equal(cfg->upstreams[1].hedge.max, 2);
    assert_true(cfg->upstreams[0].hedge.budget == 5.0); /* the default */
    assert_true(cfg->upstreams[1].hedge.budget == 2.5);
    assert_false(cfg->upstreams[1].outlier.enabled);
    mg_config_unref(cfg);
    cfg = load(HEAD "    outlier_detection: {interval: 2s}\n"
                    "routes:\n"
                    "  - {name: r, upstream: a}\n");
    const struct mg_outlier_conf *o = &cfg->upstreams[0].outlier;
    assert_true(o->enabled);
    assert_int_equal(o->interval_ms, 2000);
    assert_true(o->error_factor == 2.0 && o->latency_factor == 3.0);
    assert_int_equal(o->base_ejection_ms, 30000);
    assert_int_equal(o->max_ejection_percent, 50);
    assert_int_equal(o->min_requests, 50);
    assert_false(cfg->upstreams[0].bulkhead.adaptive.enabled);
    mg_config_unref(cfg);
    cfg = load(HEAD "    bulkhead: {adaptive: {max_limit: 64}}\n"
                    "routes:\n"
                    "  - {name: r, upstream: a}\n");
    const struct mg_adaptive_conf *ad = &cfg->upstreams[0].bulkhead.adaptive;
    assert_true(ad->enabled);
    assert_int_equal(ad->min_limit, 4);
    assert_int_equal(ad->max_limit, 64);
    assert_true(ad->smoothing == 0.2);
    mg_config_unref(cfg);
    expect_error(HEAD "    bulkhead: {adaptive: {min_limit: 10, max_limit: 5}}\n",
                 "t.yaml:5:26: upstreams.a.bulkhead.adaptive: min_limit must not exceed max_limit");
}

static void test_resilience2_errors(void **state)
{
    (void)state;
    expect_error(HEAD "    timeouts: {per_try: soon}\n",
                 "t.yaml:5:25: upstreams.a.timeouts.per_try: invalid duration 'soon'");
    expect_error(HEAD "    timeouts: {per_try: 0s}\n",
                 "t.yaml:5:25: upstreams.a.timeouts.per_try: per_try must be at least 1ms");
    expect_error(HEAD "    deadline_header: \"X Timeout\"\n",
                 "t.yaml:5:22: upstreams.a.deadline_header: invalid header name 'X Timeout'");
    expect_error(HEAD "    honor_retry_after: {max: 0s}\n",
                 "t.yaml:5:30: upstreams.a.honor_retry_after.max: duration must be at least 1ms");
    expect_error(HEAD "    hedge: {max: 1}\n",
                 "t.yaml:5:12: upstreams.a.hedge: hedge needs 'after'");
    expect_error(HEAD "    hedge: {after: p100}\n",
                 "t.yaml:5:20: upstreams.a.hedge.after: invalid percentile 'p100'");
    expect_error(HEAD "    hedge: {after: 0ms}\n",
                 "t.yaml:5:20: upstreams.a.hedge.after: invalid hedge delay '0ms'");
    expect_error(HEAD "    hedge: {after: 5ms, budget: 101}\n",
                 "t.yaml:5:33: upstreams.a.hedge.budget: 101 is out of range");
    expect_error(HEAD "    hedge: {after: 5ms, max: 4}\n",
                 "t.yaml:5:30: upstreams.a.hedge.max: 4 is out of range (expected 1..3)");
    expect_error(HEAD "routes:\n"
                      "  - {name: r, upstream: a, priority: urgent}\n",
                 "t.yaml:6:38: routes[0].priority: invalid value 'urgent' (expected one of: "
                 "critical, default, sheddable)");
}

static void test_minimal_retry_defaults(void **state)
{
    struct mg_config *cfg = load(MINIMAL);
    const struct mg_retry_conf *r = &cfg->upstreams[0].retry;

    (void)state;
    assert_int_equal(r->max_retries, 2);
    assert_int_equal(r->on_mask,
                     MG_RETRY_ON_CONNECT_FAILURE | MG_RETRY_ON_RESET | MG_RETRY_ON_TIMEOUT);
    assert_int_equal(r->n_on_statuses, 3);
    assert_int_equal(r->on_statuses[0], 502);
    assert_int_equal(r->on_statuses[1], 503);
    assert_int_equal(r->on_statuses[2], 504);
    assert_int_equal(r->backoff_base_ms, 25);
    assert_int_equal(r->backoff_max_ms, 250);
    assert_true(r->budget_ratio == 0.2);
    assert_int_equal(r->budget_min_per_second, 10);
    mg_config_unref(cfg);
}

static void test_minimal_breaker_and_health_defaults(void **state)
{
    struct mg_config *cfg = load(MINIMAL);
    const struct mg_breaker_conf *b = &cfg->upstreams[0].breaker;
    const struct mg_health_conf *h = &cfg->upstreams[0].health_check;

    (void)state;
    assert_int_equal(b->consecutive_failures, 5);
    assert_true(b->failure_rate == 0.5);
    assert_int_equal(b->window_ms, 10000);
    assert_int_equal(b->min_requests, 20);
    assert_int_equal(b->open_for_ms, 10000);
    assert_int_equal(b->max_open_for_ms, 300000);
    assert_int_equal(b->half_open_requests, 1);
    assert_int_equal(b->n_failure_statuses, 3);
    assert_int_equal(b->failure_statuses[0], 502);
    assert_int_equal(b->failure_statuses[2], 504);
    assert_false(h->enabled);
    assert_string_equal(h->path, "/healthz"); /* filled so enabling needs no default */
    assert_int_equal(h->interval_ms, 5000);
    assert_int_equal(h->timeout_ms, 1000);
    assert_int_equal(h->healthy_after, 2);
    assert_int_equal(h->unhealthy_after, 3);
    mg_config_unref(cfg);
}

static void test_minimal_route_defaults(void **state)
{
    struct mg_config *cfg = load(MINIMAL);
    const struct mg_route_conf *rt = &cfg->routes[0];

    (void)state;
    assert_int_equal(cfg->nroutes, 1);
    assert_string_equal(rt->name, "r");
    assert_int_equal(rt->index, 0);
    assert_int_equal(rt->nhosts, 0);
    assert_int_equal(rt->npaths, 0);
    assert_int_equal(rt->methods_mask, 0);
    assert_false(rt->strip_prefix);
    assert_ptr_equal(rt->upstream, &cfg->upstreams[0]);
    assert_int_equal(rt->timeout_ms, 15000);
    assert_string_equal(rt->balancer.name, "round_robin");
    assert_null(rt->balancer.config);
    assert_int_equal(rt->nplugins, 0);
    assert_false(rt->idempotency.enabled);
    mg_config_unref(cfg);
}

static void test_idempotency_defaults_when_present(void **state)
{
    struct mg_config *cfg = load(HEAD "routes:\n"
                                      "  - name: r\n"
                                      "    upstream: a\n"
                                      "    idempotency: {}\n");
    const struct mg_idempotency_conf *i = &cfg->routes[0].idempotency;

    (void)state;
    assert_true(i->enabled);
    assert_string_equal(i->header, "Idempotency-Key");
    assert_int_equal(i->methods_mask, BIT(HTTP_POST) | BIT(HTTP_PATCH));
    assert_false(i->required);
    assert_int_equal(i->ttl_ms, 24 * 3600 * 1000);
    assert_int_equal(i->lock_ttl_ms, 60000);
    assert_int_equal(i->max_body, 1 << 20);
    assert_int_equal(i->nscope, 0);
    assert_int_equal(i->store, MG_IDEM_STORE_MEMORY);
    assert_int_equal(i->on_store_error, MG_IDEM_REJECT);
    mg_config_unref(cfg);
}

static void test_empty_sections_enable_with_defaults(void **state)
{
    struct mg_config *cfg = load("listen: [\"127.0.0.1:8080\"]\n"
                                 "redis:\n"
                                 "client:\n"
                                 "upstreams:\n"
                                 "  a:\n"
                                 "    targets: [{address: \"127.0.0.1:9001\"}]\n"
                                 "    health_check: {}\n"
                                 "routes:\n"
                                 "  - {name: r, upstream: a}\n");

    (void)state;
    assert_true(cfg->redis.enabled);
    assert_int_equal(cfg->redis.timeout_ms, 250);
    assert_int_equal(cfg->client.max_connections, 10000);
    assert_true(cfg->upstreams[0].health_check.enabled);
    assert_string_equal(cfg->upstreams[0].health_check.path, "/healthz");
    mg_config_unref(cfg);
}

static void test_full_file_top_level(void **state)
{
    char err[512] = "";
    struct mg_config *cfg = mg_config_load(MG_TEST_DATA "/full.yaml", err, sizeof(err));

    (void)state;
    if (cfg == NULL)
        fail_msg("%s", err);
    assert_int_equal(cfg->nlisten, 3);
    assert_int_equal(cfg->listen[1].address.addr.ss_family, AF_INET6);
    assert_int_equal(((struct sockaddr_in *)&cfg->listen[2].address.addr)->sin_addr.s_addr,
                     INADDR_ANY);
    assert_int_equal(cfg->workers, 4);
    assert_int_equal(port_of(&cfg->admin_listen), 9911);
    assert_string_equal(cfg->pid_file, "/tmp/mg-test.pid");
    assert_string_equal(cfg->access_log, "/var/log/moongate.json");
    assert_int_equal(cfg->drain_timeout_ms, 5000);
    assert_true(cfg->redis.enabled);
    assert_int_equal(port_of(&cfg->redis.address), 6380);
    assert_int_equal(cfg->redis.db, 2);
    assert_string_equal(cfg->redis.password, "s3cret");
    assert_int_equal(cfg->redis.timeout_ms, 100);
    assert_int_equal(cfg->client.keepalive_timeout_ms, 0);
    assert_int_equal(cfg->client.max_header_size, 8192);
    assert_int_equal(cfg->client.max_body_size, 2 << 20);
    assert_int_equal(cfg->client.max_connections, 500);
    mg_config_unref(cfg);
}

static void test_full_file_plugin_path_is_absolute(void **state)
{
    char err[512] = "", want[1024];
    struct mg_config *cfg = mg_config_load(MG_TEST_DATA "/full.yaml", err, sizeof(err));
    const char *up = strrchr(MG_TEST_DATA, '/');

    (void)state;
    if (cfg == NULL)
        fail_msg("%s", err);
    assert_int_equal(cfg->nplugin_path, 3);
    assert_string_equal(cfg->plugin_path[0], MG_TEST_DATA "/plugins");
    snprintf(want, sizeof(want), "%.*s/shared/lua", (int)(up - MG_TEST_DATA), MG_TEST_DATA);
    assert_string_equal(cfg->plugin_path[1], want);
    assert_string_equal(cfg->plugin_path[2], "/opt/moongate/plugins");
    mg_config_unref(cfg);
}

static void test_full_file_upstream(void **state)
{
    char err[512] = "";
    struct mg_config *cfg = mg_config_load(MG_TEST_DATA "/full.yaml", err, sizeof(err));
    const struct mg_upstream_conf *up;

    (void)state;
    if (cfg == NULL)
        fail_msg("%s", err);
    up = &cfg->upstreams[0];
    assert_int_equal(cfg->nupstreams, 2);
    assert_string_equal(up->name, "orders");
    assert_int_equal(up->targets[1].weight, 3);
    assert_int_equal(up->keepalive, 8);
    assert_int_equal(up->connect_timeout_ms, 250);
    assert_int_equal(up->retry.max_retries, 10);
    assert_int_equal(up->retry.on_mask, MG_RETRY_ON_RESET);
    assert_int_equal(up->retry.n_on_statuses, 2);
    assert_int_equal(up->retry.on_statuses[0], 429);
    assert_int_equal(up->retry.backoff_max_ms, 1000);
    assert_true(up->retry.budget_ratio == 0.5);
    assert_true(up->breaker.failure_rate == 1.0);
    assert_int_equal(up->breaker.max_open_for_ms, 3600000);
    assert_int_equal(up->breaker.n_failure_statuses, 2);
    assert_int_equal(up->breaker.failure_statuses[0], 500);
    assert_int_equal(up->bulkhead.max_queue, 0);
    assert_true(up->health_check.enabled);
    assert_string_equal(up->health_check.path, "/ping");
    assert_int_equal(up->health_check.timeout_ms, 500);
    assert_string_equal(cfg->upstreams[1].name, "billing");
    assert_int_equal(cfg->upstreams[1].index, 1);
    assert_string_equal(cfg->upstreams[1].targets[0].address.text, "localhost:9100");
    mg_config_unref(cfg);
}

static void test_full_file_route(void **state)
{
    char err[512] = "";
    struct mg_config *cfg = mg_config_load(MG_TEST_DATA "/full.yaml", err, sizeof(err));
    const struct mg_route_conf *rt;

    (void)state;
    if (cfg == NULL)
        fail_msg("%s", err);
    rt = &cfg->routes[0];
    assert_int_equal(rt->nhosts, 2);
    assert_string_equal(rt->hosts[0], "api.example.com"); /* lowercased */
    assert_string_equal(rt->hosts[1], "*.example.org");
    assert_int_equal(rt->npaths, 2);
    assert_string_equal(rt->paths[1], "/v2/orders/");
    assert_int_equal(rt->methods_mask, BIT(HTTP_GET) | BIT(HTTP_POST) | BIT(HTTP_MSEARCH));
    assert_true(rt->strip_prefix);
    assert_ptr_equal(rt->upstream, &cfg->upstreams[0]);
    assert_int_equal(rt->timeout_ms, 20000);
    assert_ptr_equal(cfg->routes[1].upstream, &cfg->upstreams[1]);
    assert_int_equal(cfg->routes[1].index, 1);
    mg_config_unref(cfg);
}

static void test_full_file_idempotency(void **state)
{
    char err[512] = "";
    struct mg_config *cfg = mg_config_load(MG_TEST_DATA "/full.yaml", err, sizeof(err));
    const struct mg_idempotency_conf *i;

    (void)state;
    if (cfg == NULL)
        fail_msg("%s", err);
    i = &cfg->routes[0].idempotency;
    assert_true(i->enabled);
    assert_string_equal(i->header, "X-Idem-Key");
    assert_int_equal(i->methods_mask, BIT(HTTP_POST) | BIT(HTTP_PUT));
    assert_true(i->required);
    assert_int_equal(i->ttl_ms, 3600000);
    assert_int_equal(i->lock_ttl_ms, 5000);
    assert_int_equal(i->max_body, 65536);
    assert_int_equal(i->nscope, 2);
    assert_string_equal(i->scope[1], "header:X-Tenant");
    assert_int_equal(i->store, MG_IDEM_STORE_REDIS);
    assert_int_equal(i->on_store_error, MG_IDEM_PASS);
    assert_false(cfg->routes[1].idempotency.enabled);
    mg_config_unref(cfg);
}

static void test_full_file_plugins(void **state)
{
    char err[512] = "";
    struct mg_config *cfg = mg_config_load(MG_TEST_DATA "/full.yaml", err, sizeof(err));
    const struct mg_route_conf *rt;
    const struct mg_conf_value *c;

    (void)state;
    if (cfg == NULL)
        fail_msg("%s", err);
    rt = &cfg->routes[0];
    assert_string_equal(rt->balancer.name, "p2c_ewma");
    assert_int_equal(rt->balancer.config->kind, MG_VAL_MAP);
    assert_string_equal(rt->balancer.config->keys[0], "choices");
    assert_int_equal(rt->nplugins, 2);
    assert_string_equal(rt->plugins[0].name, "request_id");
    assert_null(rt->plugins[0].config);
    assert_int_equal(rt->plugins[0].line, 61);
    assert_int_equal(rt->plugins[0].col, 9);
    c = rt->plugins[1].config;
    assert_int_equal(c->kind, MG_VAL_MAP);
    assert_int_equal(c->n, 5);
    assert_string_equal(c->keys[0], "rate");
    assert_string_equal(c->items[0].scalar, "100");
    assert_false(c->items[0].quoted);
    assert_true(c->items[2].quoted);
    assert_int_equal(c->items[2].line, 63);
    assert_int_equal(c->items[3].kind, MG_VAL_SEQ);
    assert_int_equal(c->items[3].n, 2);
    assert_true(c->items[3].items[1].quoted);
    assert_int_equal(c->items[4].kind, MG_VAL_NULL);
    mg_config_unref(cfg);
}

static void test_shipped_config_loads(void **state)
{
    char err[512] = "";
    struct mg_config *cfg =
        mg_config_load(MG_TEST_DATA "/../../../conf/moongate.yaml", err, sizeof(err));

    (void)state;
    if (cfg == NULL)
        fail_msg("%s", err);
    assert_int_equal(cfg->workers, 1);
    assert_int_equal(port_of(&cfg->listen[0].address), 8080);
    assert_int_equal(port_of(&cfg->admin_listen), 9901);
    assert_int_equal(cfg->upstreams[0].ntargets, 2);
    assert_string_equal(cfg->routes[0].name, "demo");
    assert_string_equal(cfg->routes[0].paths[0], "/");
    mg_config_unref(cfg);
}

static void test_plugin_path_relative_to_file(void **state)
{
    const char *yaml = MINIMAL "plugin_path: [p, ../q, ./r/../s//, /abs/x/..]\n";
    char err[256];
    struct mg_config *cfg =
        mg_config_load_string(yaml, strlen(yaml), "/etc/moongate/gw.yaml", err, sizeof(err));

    (void)state;
    assert_non_null(cfg);
    assert_int_equal(cfg->nplugin_path, 4);
    assert_string_equal(cfg->plugin_path[0], "/etc/moongate/p");
    assert_string_equal(cfg->plugin_path[1], "/etc/q");
    assert_string_equal(cfg->plugin_path[2], "/etc/moongate/s");
    assert_string_equal(cfg->plugin_path[3], "/abs");
    mg_config_unref(cfg);
}

static void test_workers_forms(void **state)
{
    struct mg_config *cfg = load(MINIMAL "workers: auto\n");

    (void)state;
    assert_int_equal(cfg->workers, 0);
    mg_config_unref(cfg);
    cfg = load(MINIMAL "workers: 3\n");
    assert_int_equal(cfg->workers, 3);
    mg_config_unref(cfg);
}

static void test_redis_password_null_or_set(void **state)
{
    struct mg_config *cfg = load(MINIMAL "redis: {password: null}\n");

    (void)state;
    assert_true(cfg->redis.enabled);
    assert_null(cfg->redis.password);
    mg_config_unref(cfg);
    cfg = load(MINIMAL "redis: {password: \"null\"}\n"); /* quoted: a real password */
    assert_string_equal(cfg->redis.password, "null");
    mg_config_unref(cfg);
}

static void test_redis_sentinel(void **state)
{
    struct mg_config *cfg = load(MINIMAL "redis:\n"
                                         "  sentinel:\n"
                                         "    master: mymaster\n"
                                         "    addresses: [\"127.0.0.1:26379\", \"[::1]:26380\"]\n"
                                         "    password: pw\n"
                                         "  min_replicas_ack: 1\n");

    (void)state;
    assert_true(cfg->redis.enabled);
    assert_true(cfg->redis.sentinel.enabled);
    assert_string_equal(cfg->redis.sentinel.master, "mymaster");
    assert_int_equal(cfg->redis.sentinel.naddresses, 2);
    assert_string_equal(cfg->redis.sentinel.addresses[1].text, "[::1]:26380");
    assert_string_equal(cfg->redis.sentinel.password, "pw");
    assert_int_equal(cfg->redis.min_replicas_ack, 1);
    assert_int_equal(cfg->redis.timeout_ms, 250);
    mg_config_unref(cfg);
    /* defaults: no sentinel, no WAIT */
    cfg = load(MINIMAL "redis: {}\n");
    assert_false(cfg->redis.sentinel.enabled);
    assert_null(cfg->redis.sentinel.addresses);
    assert_int_equal(cfg->redis.min_replicas_ack, 0);
    mg_config_unref(cfg);
}

static void test_redis_sentinel_errors(void **state)
{
    (void)state;
    expect_error(MINIMAL "redis:\n"
                         "  address: \"127.0.0.1:6379\"\n"
                         "  sentinel: {master: m, addresses: [\"127.0.0.1:26379\"]}\n",
                 "t.yaml:9:13: redis.sentinel: 'sentinel' replaces 'address': give only one of "
                 "them");
    expect_error(MINIMAL "redis: {sentinel: {addresses: [\"127.0.0.1:26379\"]}}\n",
                 "t.yaml:7:19: redis.sentinel.master: missing required key");
    expect_error(MINIMAL "redis: {sentinel: {master: m}}\n",
                 "t.yaml:7:19: redis.sentinel.addresses: missing required key");
    expect_error(MINIMAL "redis: {sentinel: {master: m, addresses: []}}\n",
                 "t.yaml:7:42: redis.sentinel.addresses:");
    expect_error(MINIMAL "redis: {sentinel: {master: m, addresses: [\"nope\"]}}\n",
                 "t.yaml:7:43: redis.sentinel.addresses[0]:");
    expect_error(MINIMAL "redis: {sentinel: {master: m, addresses: [\"127.0.0.1:1\"], port: 1}}\n",
                 "t.yaml:7:59: redis.sentinel.port: unknown key (expected one of: master, "
                 "addresses, password, password_file)");
    expect_error(MINIMAL "redis: {min_replicas_ack: 101}\n",
                 "t.yaml:7:27: redis.min_replicas_ack:");
    expect_error(MINIMAL "redis: {min_replicas_ack: -1}\n", "t.yaml:7:27: redis.min_replicas_ack:");
}

static void test_access_log_any_string(void **state)
{
    struct mg_config *cfg = load(MINIMAL "access_log: \"off\"\n");

    (void)state;
    assert_string_equal(cfg->access_log, "off");
    mg_config_unref(cfg);
    cfg = load(MINIMAL "access_log: logs/access.json\n");
    assert_string_equal(cfg->access_log, "logs/access.json");
    mg_config_unref(cfg);
}

static void test_version_increases_and_loaded_at(void **state)
{
    struct mg_config *a = load(MINIMAL), *b = load(MINIMAL);

    (void)state;
    assert_true(b->version > a->version);
    assert_true(a->loaded_at > 0);
    mg_config_unref(a);
    mg_config_unref(b);
}

static void test_ref_keeps_snapshot_alive(void **state)
{
    struct mg_config *cfg = load(MINIMAL);

    (void)state;
    mg_config_ref(cfg);
    assert_int_equal(atomic_load(&cfg->refs), 2);
    mg_config_unref(cfg);
    assert_string_equal(cfg->routes[0].name, "r"); /* still valid (valgrind checks) */
    mg_config_unref(cfg);
    mg_config_unref(NULL);
}

static void test_yaml_anchors_and_aliases(void **state)
{
    struct mg_config *cfg = load("listen: [\"127.0.0.1:8080\"]\n"
                                 "upstreams:\n"
                                 "  a:\n"
                                 "    targets: &t [{address: \"127.0.0.1:9001\"}]\n"
                                 "  b:\n"
                                 "    targets: *t\n"
                                 "routes:\n"
                                 "  - {name: r, upstream: b}\n");

    (void)state;
    assert_int_equal(cfg->upstreams[1].ntargets, 1);
    mg_config_unref(cfg);
}

/* ---- bad files: syntax ---- */

static void test_error_format_from_brief(void **state)
{
    char err[512];

    (void)state;
    expect_error("listen: [\"127.0.0.1:8080\"]\n"
                 "upstreams:\n"
                 "  orders:\n"
                 "    targets: [{address: \"127.0.0.1:9001\"}]\n"
                 "    timeouts:\n"
                 "      connect: abc\n"
                 "routes:\n"
                 "  - {name: r, upstream: orders}\n",
                 "t.yaml:6:16: upstreams.orders.timeouts.connect: invalid duration 'abc' "
                 "(expected e.g. 250ms, 10s, 5m, 24h)");
    assert_null(mg_config_load(MG_TEST_DATA "/bad_duration.yaml", err, sizeof(err)));
    assert_string_equal(err, MG_TEST_DATA "/bad_duration.yaml:6:16: upstreams.orders.timeouts."
                                          "connect: invalid duration 'abc' (expected e.g. "
                                          "250ms, 10s, 5m, 24h)");
}

static void test_error_yaml_syntax(void **state)
{
    char err[512];

    (void)state;
    assert_null(mg_config_load(MG_TEST_DATA "/bad_syntax.yaml", err, sizeof(err)));
    assert_string_equal(err, MG_TEST_DATA "/bad_syntax.yaml:5:1: YAML syntax error: did not find "
                                          "expected ',' or ']' (while parsing a flow sequence at "
                                          "line 4)");
    expect_error("listen: [\"127.0.0.1:8080\"]\n"
                 "upstreams:\n"
                 "  a:\n"
                 "    targets: []\n"
                 "   keepalive: 3\n",
                 "t.yaml:5:4: YAML syntax error: did not find expected key");
    expect_error("listen: *nowhere\n", "t.yaml:1:9: YAML syntax error: found undefined alias");
    expect_error("listen: \"abc\x01\"\n", "t.yaml:1:13: YAML syntax error: control characters");
}

static void test_error_file_missing(void **state)
{
    char err[512];

    (void)state;
    assert_null(mg_config_load(MG_TEST_DATA "/does-not-exist.yaml", err, sizeof(err)));
    assert_string_equal(err, MG_TEST_DATA "/does-not-exist.yaml: cannot open: No such file or "
                                          "directory");
}

static void test_error_second_document(void **state)
{
    (void)state;
    expect_error(MINIMAL "---\nlisten: []\n", "t.yaml:7:1: only one YAML document is allowed");
    expect_error(MINIMAL "---\n[unclosed\n", "t.yaml:9:1: YAML syntax error");
}

static void test_error_duplicate_key(void **state)
{
    (void)state;
    expect_error(MINIMAL "listen: [\"127.0.0.1:8081\"]\n",
                 "t.yaml:7:1: listen: duplicate key (first at line 1)");
    expect_error(HEAD "    keepalive: 1\n"
                      "    keepalive: 2\n",
                 "t.yaml:6:5: upstreams.a.keepalive: duplicate key (first at line 5)");
}

static void test_error_empty_file(void **state)
{
    (void)state;
    expect_error("", "t.yaml:1:1: listen: missing required key");
    expect_error("# nothing\n", "t.yaml:1:1: listen: missing required key");
}

/* ---- bad files: keys and types ---- */

static void test_error_unknown_keys(void **state)
{
    (void)state;
    expect_error(
        MINIMAL "listen_port: 80\n",
        "t.yaml:7:1: listen_port: unknown key (expected one of: listen, workers, include, admin, "
        "pid_file, shutdown_delay, watch_config, plugin_path, access_log, access_log_fields, log, "
        "metrics, drain_timeout, idempotency_memory, redis, client, forwarded, resolver, "
        "shared_dicts, http2, upstreams, routes, plugins)");
    expect_error(HEAD "    timeouts: {conect: 1s}\n",
                 "t.yaml:5:16: upstreams.a.timeouts.conect: unknown key (expected one of: "
                 "connect, send, read, per_try)");
    expect_error(HEAD "routes:\n"
                      "  - name: r\n"
                      "    upstream: a\n"
                      "    match: {path: [/]}\n",
                 "t.yaml:8:13: routes[0].match.path: unknown key");
}

static void test_error_wrong_types(void **state)
{
    (void)state;
    expect_error("listen: \"127.0.0.1:8080\"\n",
                 "t.yaml:1:9: listen: expected a sequence, got a scalar");
    expect_error("listen: [\"127.0.0.1:8080\"]\nupstreams:\n  - a\n",
                 "t.yaml:3:3: upstreams: expected a mapping, got a sequence");
    expect_error("listen: [\"127.0.0.1:8080\"]\n"
                 "upstreams:\n"
                 "  a:\n"
                 "    targets: {address: \"127.0.0.1:9001\"}\n",
                 "t.yaml:4:14: upstreams.a.targets: expected a sequence, got a mapping");
    expect_error(HEAD "    timeouts: 1s\n",
                 "t.yaml:5:15: upstreams.a.timeouts: expected a mapping, got a scalar");
    expect_error(HEAD "    retry: {max_retries: [1]}\n",
                 "t.yaml:5:26: upstreams.a.retry.max_retries: expected an integer, got a sequence");
    expect_error(HEAD "routes:\n  - r\n", "t.yaml:6:5: routes[0]: expected a mapping");
    expect_error("- listen\n", "t.yaml:1:1: expected a mapping, got a sequence");
    expect_error("? [a]\n: b\n", "t.yaml:1:3: expected a scalar key, got a sequence");
}

static void test_error_null_value(void **state)
{
    (void)state;
    expect_error(HEAD "routes:\n"
                      "  - name: r\n"
                      "    upstream: a\n"
                      "    timeout:\n",
                 "t.yaml:8:13: routes[0].timeout: expected a duration, got null");
}

static void test_error_nul_in_value(void **state)
{
    static const char yaml[] = HEAD "routes:\n  - {name: \"a\\0b\", upstream: a}\n";

    (void)state;
    expect_error(yaml, "t.yaml:6:12: routes[0].name: NUL character in value");
}

/* ---- bad files: missing and dangling keys ---- */

static void test_error_missing_required_top_level(void **state)
{
    (void)state;
    expect_error("upstreams: {}\n", "t.yaml:1:1: listen: missing required key");
    expect_error("listen: [\"127.0.0.1:8080\"]\nroutes: []\n",
                 "t.yaml:1:1: upstreams: missing required key");
    expect_error(HEAD, "t.yaml:1:1: routes: missing required key");
}

static void test_error_missing_targets(void **state)
{
    (void)state;
    expect_error("listen: [\"127.0.0.1:8080\"]\n"
                 "upstreams:\n"
                 "  a:\n"
                 "    keepalive: 2\n",
                 "t.yaml:4:5: upstreams.a: needs targets or discovery");
    expect_error("listen: [\"127.0.0.1:8080\"]\nupstreams:\n  a:\n",
                 "t.yaml:3:5: upstreams.a: expected a mapping with targets");
    expect_error("listen: [\"127.0.0.1:8080\"]\n"
                 "upstreams:\n"
                 "  a:\n"
                 "    targets: [{weight: 2}]\n",
                 "t.yaml:4:15: upstreams.a.targets[0].address: missing required key");
}

static void test_error_missing_route_name_or_upstream(void **state)
{
    (void)state;
    expect_error(HEAD "routes:\n  - {upstream: a}\n",
                 "t.yaml:6:5: routes[0].name: missing required key");
    expect_error(HEAD "routes:\n  - {name: r}\n",
                 "t.yaml:6:5: routes[0].upstream: missing required key");
}

static void test_error_unknown_upstream(void **state)
{
    (void)state;
    expect_error(HEAD "routes:\n  - {name: r, upstream: b}\n",
                 "t.yaml:6:25: routes[0].upstream: unknown upstream 'b'");
}

static void test_error_duplicate_route_name(void **state)
{
    (void)state;
    expect_error(MINIMAL "  - {name: r, upstream: a}\n",
                 "t.yaml:7:12: routes[1].name: duplicate route name 'r'");
}

static void test_error_empty_lists(void **state)
{
    (void)state;
    expect_error("listen: [\"127.0.0.1:8080\"]\n"
                 "upstreams:\n"
                 "  a:\n"
                 "    targets: []\n",
                 "t.yaml:4:14: upstreams.a.targets: needs at least one target");
    expect_error("listen: []\n", "t.yaml:1:9: listen: needs at least one item");
    expect_error("listen: [\"127.0.0.1:8080\"]\nupstreams: {}\n",
                 "t.yaml:2:12: upstreams: needs at least one upstream");
    expect_error(HEAD "routes: []\n", "t.yaml:5:9: routes: needs at least one route");
}

static void test_error_duplicates_in_lists(void **state)
{
    (void)state;
    expect_error("listen: [\"127.0.0.1:8080\", \"127.0.0.1:8080\"]\n",
                 "t.yaml:1:28: listen[1]: duplicate address '127.0.0.1:8080'");
    expect_error("listen: [\"127.0.0.1:8080\"]\n"
                 "upstreams:\n"
                 "  a:\n"
                 "    targets: [{address: \"127.0.0.1:9001\"}, {address: \"127.0.0.1:9001\"}]\n",
                 "t.yaml:4:54: upstreams.a.targets[1].address: duplicate target '127.0.0.1:9001'");
}

/* ---- bad files: values ---- */

static void test_error_bad_durations(void **state)
{
    (void)state;
    expect_error(HEAD "    timeouts: {read: 30}\n",
                 "t.yaml:5:22: upstreams.a.timeouts.read: invalid duration '30'");
    expect_error(MINIMAL "drain_timeout: -1s\n",
                 "t.yaml:7:16: drain_timeout: invalid duration '-1s'");
    expect_error(MINIMAL "drain_timeout: 99999999999999999999h\n",
                 "t.yaml:7:16: drain_timeout: invalid duration");
    expect_error(HEAD "    timeouts: {connect: 0s}\n",
                 "t.yaml:5:25: upstreams.a.timeouts.connect: duration must be at least 1ms");
}

static void test_error_bad_sizes(void **state)
{
    (void)state;
    expect_error(MINIMAL "client: {max_body_size: 10mb}\n",
                 "t.yaml:7:25: client.max_body_size: invalid size '10mb' (expected e.g. 512, "
                 "16k, 1m)");
    expect_error(MINIMAL "client: {max_header_size: 0}\n",
                 "t.yaml:7:27: client.max_header_size: size must be at least 1");
}

static void test_error_bad_addresses(void **state)
{
    (void)state;
    expect_error("listen: [\"127.0.0.1\"]\n",
                 "t.yaml:1:10: listen[0]: invalid address '127.0.0.1': missing ':port'");
    expect_error("listen: [\"127.0.0.1:0\"]\n",
                 "t.yaml:1:10: listen[0]: invalid address '127.0.0.1:0': port must be 1..65535");
    expect_error("listen: [\"127.0.0.1:65536\"]\n", "t.yaml:1:10: listen[0]: invalid address");
    expect_error("listen: [\"::1:80\"]\n",
                 "t.yaml:1:10: listen[0]: invalid address '::1:80': IPv6 addresses need "
                 "brackets, e.g. [::1]:80");
    expect_error(MINIMAL "admin: {listen: \"bad host:80\"}\n",
                 "t.yaml:7:17: admin.listen: invalid address 'bad host:80': invalid host");
    expect_error("listen: [\"127.0.0.1:8080\"]\n"
                 "upstreams:\n"
                 "  a:\n"
                 "    targets: [{address: 9001}]\n",
                 "t.yaml:4:25: upstreams.a.targets[0].address: invalid address '9001': missing "
                 "':port'");
}

static void test_error_bad_numbers(void **state)
{
    (void)state;
    expect_error(HEAD "    retry: {max_retries: 11}\n",
                 "t.yaml:5:26: upstreams.a.retry.max_retries: 11 is out of range (expected "
                 "0..10)");
    expect_error(HEAD "    keepalive: lots\n",
                 "t.yaml:5:16: upstreams.a.keepalive: invalid integer 'lots'");
    expect_error(HEAD "    keepalive: -1\n",
                 "t.yaml:5:16: upstreams.a.keepalive: invalid integer '-1'");
    expect_error(HEAD "    circuit_breaker: {failure_rate: 1.5}\n",
                 "t.yaml:5:37: upstreams.a.circuit_breaker.failure_rate: 1.5 is out of range "
                 "(expected 0..1)");
    expect_error(HEAD "    retry: {budget: {ratio: -0.1}}\n",
                 "t.yaml:5:29: upstreams.a.retry.budget.ratio: invalid number '-0.1'");
    expect_error(HEAD "    retry: {budget: {ratio: nan}}\n",
                 "t.yaml:5:29: upstreams.a.retry.budget.ratio: invalid number 'nan'");
}

static void test_error_weight_zero(void **state)
{
    (void)state;
    expect_error("listen: [\"127.0.0.1:8080\"]\n"
                 "upstreams:\n"
                 "  a:\n"
                 "    targets: [{address: \"127.0.0.1:9001\", weight: 0}]\n",
                 "t.yaml:4:51: upstreams.a.targets[0].weight: 0 is out of range (expected "
                 "1..1000000)");
}

static void test_error_bad_enum_and_bool(void **state)
{
    (void)state;
    expect_error(HEAD "routes:\n  - {name: r, upstream: a, idempotency: {store: disk}}\n",
                 "t.yaml:6:49: routes[0].idempotency.store: invalid value 'disk' (expected one "
                 "of: memory, redis)");
    expect_error(HEAD "routes:\n  - {name: r, upstream: a, idempotency: {on_store_error: ok}}\n",
                 "t.yaml:6:58: routes[0].idempotency.on_store_error: invalid value 'ok' "
                 "(expected one of: reject, pass)");
    expect_error(HEAD "routes:\n  - {name: r, upstream: a, strip_prefix: yes}\n",
                 "t.yaml:6:42: routes[0].strip_prefix: invalid boolean 'yes' (expected true or "
                 "false)");
}

static void test_error_bad_workers(void **state)
{
    (void)state;
    expect_error(MINIMAL "workers: 0\n",
                 "t.yaml:7:10: workers: invalid workers '0' (expected auto or 1..1024)");
    expect_error(MINIMAL "workers: many\n", "t.yaml:7:10: workers: invalid workers 'many'");
    expect_error(MINIMAL "workers: [1]\n",
                 "t.yaml:7:10: workers: expected an integer or auto, got a sequence");
}

static void test_error_bad_methods(void **state)
{
    (void)state;
    expect_error(HEAD "routes:\n  - {name: r, upstream: a, match: {methods: [GET, get]}}\n",
                 "t.yaml:6:51: routes[0].match.methods[1]: unknown HTTP method 'get'");
    expect_error(HEAD "routes:\n  - {name: r, upstream: a, match: {methods: [FETCH]}}\n",
                 "t.yaml:6:46: routes[0].match.methods[0]: unknown HTTP method 'FETCH'");
    expect_error(HEAD "routes:\n  - {name: r, upstream: a, idempotency: {methods: []}}\n",
                 "t.yaml:6:51: routes[0].idempotency.methods: needs at least one item");
}

static void test_error_bad_paths(void **state)
{
    (void)state;
    expect_error(HEAD "routes:\n  - {name: r, upstream: a, match: {paths: [/ok, orders]}}\n",
                 "t.yaml:6:49: routes[0].match.paths[1]: path 'orders' must start with '/'");
    expect_error(HEAD "routes:\n  - {name: r, upstream: a, match: {paths: [\"/a?b\"]}}\n",
                 "t.yaml:6:44: routes[0].match.paths[0]: path must not contain");
    expect_error(HEAD "    health_check: {path: healthz}\n",
                 "t.yaml:5:26: upstreams.a.health_check.path: path 'healthz' must start with '/'");
}

static void test_error_bad_hosts(void **state)
{
    (void)state;
    expect_error(HEAD "routes:\n  - {name: r, upstream: a, match: {hosts: [\"*example.org\"]}}\n",
                 "t.yaml:6:44: routes[0].match.hosts[0]: a wildcard host must look like "
                 "'*.example.org'");
    expect_error(HEAD "routes:\n  - {name: r, upstream: a, match: {hosts: [\"a.*.org\"]}}\n",
                 "t.yaml:6:44: routes[0].match.hosts[0]: invalid host 'a.*.org'");
    expect_error(HEAD "routes:\n  - {name: r, upstream: a, match: {hosts: [\"*.\"]}}\n",
                 "t.yaml:6:44: routes[0].match.hosts[0]: a wildcard host must look like");
    expect_error(HEAD "routes:\n  - {name: r, upstream: a, match: {hosts: [\"A.com:80\"]}}\n",
                 "t.yaml:6:44: routes[0].match.hosts[0]: host 'a.com:80' must not carry a port");
}

static void test_error_bad_idempotency(void **state)
{
    (void)state;
    expect_error(HEAD "routes:\n  - {name: r, upstream: a, idempotency: {scope: [\"cookie:x\"]}}\n",
                 "t.yaml:6:50: routes[0].idempotency.scope[0]: invalid scope 'cookie:x' "
                 "(expected header:NAME)");
    expect_error(HEAD "routes:\n  - {name: r, upstream: a, idempotency: {scope: [\"header:\"]}}\n",
                 "t.yaml:6:50: routes[0].idempotency.scope[0]: invalid scope 'header:'");
    expect_error(HEAD "routes:\n  - {name: r, upstream: a, idempotency: {header: \"a b\"}}\n",
                 "t.yaml:6:50: routes[0].idempotency.header: invalid header name 'a b'");
    expect_error(HEAD "routes:\n  - {name: r, upstream: a, idempotency: {store: redis}}\n",
                 "t.yaml:6:49: routes[0].idempotency.store: store 'redis' needs the top-level "
                 "'redis' section");
}

static void test_error_bad_statuses_and_retry_on(void **state)
{
    (void)state;
    expect_error(HEAD "    circuit_breaker: {failure_statuses: [502, 600]}\n",
                 "t.yaml:5:47: upstreams.a.circuit_breaker.failure_statuses[1]: invalid status "
                 "code '600' (expected 100..599)");
    expect_error(HEAD "    retry: {on: [reset, 5xx]}\n",
                 "t.yaml:5:25: upstreams.a.retry.on[1]: invalid retry condition '5xx'");
}

static void test_error_order_of_limits(void **state)
{
    (void)state;
    expect_error(HEAD "    retry: {backoff: {base: 1s, max: 100ms}}\n",
                 "t.yaml:5:38: upstreams.a.retry.backoff.max: max (100ms) must not be less than "
                 "base (1000ms)");
    expect_error(HEAD "    retry: {backoff: {base: 1s}}\n",
                 "t.yaml:5:29: upstreams.a.retry.backoff.base: max (250ms) must not be less "
                 "than base (1000ms)");
    expect_error(HEAD "    circuit_breaker: {open_for: 10m}\n",
                 "t.yaml:5:33: upstreams.a.circuit_breaker.open_for: max_open_for (300000ms) "
                 "must not be less than open_for (600000ms)");
}

static void test_error_bad_plugins(void **state)
{
    (void)state;
    expect_error(HEAD "routes:\n  - {name: r, upstream: a, plugins: [{config: {}}]}\n",
                 "t.yaml:6:38: routes[0].plugins[0].name: missing required key");
    expect_error(HEAD "routes:\n  - {name: r, upstream: a, plugins: [{name: ../x}]}\n",
                 "t.yaml:6:45: routes[0].plugins[0].name: invalid plugin name '../x'");
    expect_error(HEAD "routes:\n  - {name: r, upstream: a, plugins: [request_id]}\n",
                 "t.yaml:6:38: routes[0].plugins[0]: expected a mapping like {name: NAME");
    expect_error(HEAD "routes:\n  - {name: r, upstream: a, balancer: {name: rr, config: [1]}}\n",
                 "t.yaml:6:57: routes[0].balancer.config: expected a mapping");
    expect_error(HEAD "routes:\n  - {name: r, upstream: a, balancer: {nme: rr}}\n",
                 "t.yaml:6:39: routes[0].balancer.nme: unknown key (expected one of: name, "
                 "config)");
}

static void test_error_plugin_config_alias_bomb(void **state)
{
    (void)state;
    expect_error(HEAD "routes:\n"
                      "  - name: r\n"
                      "    upstream: a\n"
                      "    plugins:\n"
                      "      - name: p\n"
                      "        config:\n"
                      "          a: &a [x, x, x, x, x, x, x, x, x, x]\n"
                      "          b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                      "          c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
                      "          d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
                      "          e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
                      "          f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n",
                 "t.yaml:11:45: routes[0].plugins[0].config.e[7][8][8][8][9]: value too large "
                 "or too deeply nested");
}

static void test_error_plugin_config_self_alias(void **state)
{
    (void)state;
    /* libyaml registers an anchor before its children, so a node may contain itself. */
    expect_error(HEAD "routes:\n"
                      "  - name: r\n"
                      "    upstream: a\n"
                      "    plugins:\n"
                      "      - name: p\n"
                      "        config: {self: &c [*c]}\n",
                 "t.yaml:10:24: routes[0].plugins[0].config.self[0][0]");
}

static void test_error_buffer_truncated_or_absent(void **state)
{
    const char *yaml = "listen: []\n";
    char err[16];

    (void)state;
    memset(err, 'x', sizeof(err));
    assert_null(mg_config_load_string(yaml, strlen(yaml), "t.yaml", err, sizeof(err)));
    assert_string_equal(err, "t.yaml:1:9: lis");
    assert_null(mg_config_load_string(yaml, strlen(yaml), "t.yaml", NULL, 0));
    assert_null(mg_config_load("/nonexistent/x.yaml", NULL, 0));
}

static void test_error_not_a_regular_file(void **state)
{
    char err[512];

    (void)state;
    assert_null(mg_config_load(MG_TEST_DATA, err, sizeof(err)));
    assert_string_equal(err, MG_TEST_DATA ": not a regular file");
    assert_null(mg_config_load_string(NULL, 0, "t.yaml", err, sizeof(err)));
    assert_string_equal(err, "t.yaml:1:1: listen: missing required key");
}

/* ---- listen entries and TLS (DESIGN.md section 10.1) ---- */

/* A temp dir with a self-signed EC certificate made by the openssl CLI at run
 * time (no private key is committed): server.crt, server.key, and other.key
 * that does not match it. Empty when the CLI is missing: those tests skip. */
static char tls_dir[64];

static int make_tls_dir(void **state)
{
    char cmd[1024];

    (void)state;
    snprintf(tls_dir, sizeof(tls_dir), "/tmp/mg-test-config-XXXXXX");
    if (mkdtemp(tls_dir) == NULL) {
        tls_dir[0] = '\0';
        return 0;
    }
    snprintf(cmd, sizeof(cmd),
             "cd %s && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
             "-nodes -keyout server.key -out server.crt -days 2 -subj /CN=localhost "
             "-addext subjectAltName=DNS:localhost >/dev/null 2>&1 && openssl genpkey "
             "-algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out other.key >/dev/null 2>&1",
             tls_dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "openssl CLI failed: the TLS file tests will skip\n");
        snprintf(cmd, sizeof(cmd), "rm -rf %s", tls_dir);
        if (system(cmd) != 0)
            fprintf(stderr, "cannot remove %s\n", tls_dir);
        tls_dir[0] = '\0';
    }
    return 0;
}

static int remove_tls_dir(void **state)
{
    static const char *const files[] = {"server.crt", "server.key", "other.key", "gw.yaml"};
    char path[128];

    (void)state;
    if (tls_dir[0] == '\0')
        return 0;
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", tls_dir, files[i]);
        unlink(path);
    }
    rmdir(tls_dir);
    mg_tls_tickets_free(); /* made by the first server context */
    return 0;
}

/* Writes `yaml` to tls_dir/gw.yaml and loads it (so relative paths resolve
 * against tls_dir). Returns the snapshot or NULL with `err` filled. */
static struct mg_config *load_in_tls_dir(const char *yaml, char *err, size_t errlen)
{
    char path[128];
    FILE *f;

    if (tls_dir[0] == '\0')
        skip();
    snprintf(path, sizeof(path), "%s/gw.yaml", tls_dir);
    f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(yaml, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
    return mg_config_load(path, err, errlen);
}

/* The rest of a file after `listen`: lines 2-6. */
#define TAIL                                                                                       \
    "upstreams:\n"                                                                                 \
    "  a:\n"                                                                                       \
    "    targets: [{address: \"127.0.0.1:9001\"}]\n"                                               \
    "routes:\n"                                                                                    \
    "  - {name: r, upstream: a}\n"

static void test_listen_mappings_plain_and_mixed(void **state)
{
    struct mg_config *cfg = load("listen: [{address: \"127.0.0.1:8080\"}]\n" TAIL);

    (void)state;
    assert_int_equal(cfg->nlisten, 1);
    assert_string_equal(cfg->listen[0].address.text, "127.0.0.1:8080");
    assert_int_equal(port_of(&cfg->listen[0].address), 8080);
    assert_false(cfg->listen[0].http2);
    assert_false(cfg->listen[0].proxy_protocol);
    assert_null(cfg->listen[0].tls);
    mg_config_unref(cfg);
    cfg = load("listen:\n"
               "  - \"127.0.0.1:8080\"\n"
               "  - address: \"127.0.0.1:8081\"\n"
               "    http2: false\n"
               "    proxy_protocol: false\n"
               "    tls: null\n"
               "  - {address: \"[::1]:8082\"}\n" TAIL);
    assert_int_equal(cfg->nlisten, 3);
    assert_string_equal(cfg->listen[0].address.text, "127.0.0.1:8080");
    assert_int_equal(port_of(&cfg->listen[1].address), 8081);
    assert_false(cfg->listen[1].http2);
    assert_null(cfg->listen[1].tls);
    assert_int_equal(cfg->listen[2].address.addr.ss_family, AF_INET6);
    mg_config_unref(cfg);
}

static void test_http2_listeners_and_section(void **state)
{
    struct mg_config *cfg = load("listen: [{address: \"127.0.0.1:8080\", http2: true}]\n" TAIL);

    (void)state;
    assert_true(cfg->listen[0].http2);
    /* DESIGN.md section 10.2's defaults */
    assert_int_equal(cfg->http2.max_concurrent_streams, 128);
    assert_int_equal(cfg->http2.initial_window_size, 65536);
    assert_int_equal(cfg->http2.max_frame_size, 16384);
    assert_int_equal(cfg->http2.idle_timeout_ms, 75000);
    assert_int_equal(cfg->http2.max_resets_per_second, 100);
    mg_config_unref(cfg);
    cfg = load("listen: [\"127.0.0.1:8080\"]\n"
               "http2: {max_concurrent_streams: 10, initial_window_size: 1m, max_frame_size: 32k,\n"
               "        idle_timeout: 5s, max_resets_per_second: 7}\n" TAIL);
    assert_int_equal(cfg->http2.max_concurrent_streams, 10);
    assert_int_equal(cfg->http2.initial_window_size, 1 << 20);
    assert_int_equal(cfg->http2.max_frame_size, 32768);
    assert_int_equal(cfg->http2.idle_timeout_ms, 5000);
    assert_int_equal(cfg->http2.max_resets_per_second, 7);
    mg_config_unref(cfg);
    expect_error("listen: [\"127.0.0.1:8080\"]\nhttp2: {max_frame_size: 32m}\n" TAIL,
                 "t.yaml:2:25: http2.max_frame_size: must be at most 16777215 (2^24-1)");
    expect_error("listen: [\"127.0.0.1:8080\"]\nhttp2: {max_frame_size: 1k}\n" TAIL,
                 "t.yaml:2:25: http2.max_frame_size: size must be at least 16384");
    expect_error("listen: [\"127.0.0.1:8080\"]\nhttp2: {initial_window_size: 4g}\n" TAIL,
                 "t.yaml:2:30: http2.initial_window_size: must be at most 2147483647 (2^31-1)");
    expect_error("listen: [\"127.0.0.1:8080\"]\nhttp2: {max_concurrent_streams: 0}\n" TAIL,
                 "t.yaml:2:33: http2.max_concurrent_streams:");
    expect_error("listen: [\"127.0.0.1:8080\"]\nhttp2: {streams: 1}\n" TAIL,
                 "t.yaml:2:9: http2.streams: unknown key");
}

static void test_error_listen_entries(void **state)
{
    (void)state;
    expect_error("listen: [{address: \"127.0.0.1:8080\", proxy_protocol: 1}]\n" TAIL,
                 "t.yaml:1:54: listen[0].proxy_protocol: invalid boolean '1'");
    expect_error("listen: [{address: \"127.0.0.1:8080\", http2: yes}]\n" TAIL,
                 "t.yaml:1:45: listen[0].http2: invalid boolean 'yes'");
    expect_error("listen: [\"127.0.0.1:8080\", {address: \"127.0.0.1:8080\"}]\n" TAIL,
                 "t.yaml:1:38: listen[1].address: duplicate address '127.0.0.1:8080'");
    expect_error("listen: [\"*:8080\", \"0.0.0.0:8080\"]\n" TAIL,
                 "t.yaml:1:20: listen[1]: duplicate address '0.0.0.0:8080' (listen[0] '*:8080' "
                 "is the same)");
    expect_error("listen: [{http2: false}]\n" TAIL,
                 "t.yaml:1:10: listen[0].address: missing required key");
    expect_error("listen: [{address: \"127.0.0.1:8080\", h2: true}]\n" TAIL,
                 "t.yaml:1:38: listen[0].h2: unknown key (expected one of: address, http2, "
                 "proxy_protocol, tls)");
    expect_error("listen: [[\"127.0.0.1:8080\"]]\n" TAIL,
                 "t.yaml:1:10: listen[0]: expected an address or a mapping with address, got a "
                 "sequence");
    expect_error("listen: [~]\n" TAIL,
                 "t.yaml:1:10: listen[0]: expected an address or a mapping with address, got "
                 "null");
    expect_error("listen: [{address: \"127.0.0.1\"}]\n" TAIL,
                 "t.yaml:1:20: listen[0].address: invalid address '127.0.0.1': missing ':port'");
}

/* Errors found while reading `tls`, before any file is opened. */
static void test_error_listen_tls_section(void **state)
{
    (void)state;
    expect_error("listen: [{address: \"127.0.0.1:8443\", tls: {}}]\n" TAIL,
                 "t.yaml:1:43: listen[0].tls.certificates: missing required key");
    expect_error("listen: [{address: \"127.0.0.1:8443\", tls: {certificates: []}}]\n" TAIL,
                 "t.yaml:1:58: listen[0].tls.certificates: needs at least one certificate");
    expect_error(
        "listen: [{address: \"127.0.0.1:8443\", tls: {certificates: [{cert: a.crt}]}}]\n" TAIL,
        "t.yaml:1:59: listen[0].tls.certificates[0].key: missing required key");
    expect_error("listen: [{address: \"127.0.0.1:8443\", tls: {certificates: [a.crt]}}]\n" TAIL,
                 "t.yaml:1:59: listen[0].tls.certificates[0]: expected a mapping like {cert: "
                 "FILE, key: FILE}");
    expect_error("listen: [{address: \"127.0.0.1:8443\", tls: true}]\n" TAIL,
                 "t.yaml:1:43: listen[0].tls: expected a mapping, got a scalar");
}

static void test_error_tls_protocols(void **state)
{
    /* Lines 1-5; the protocols value starts at 5:18. */
    static const char head[] = "listen:\n"
                               "  - address: \"127.0.0.1:8443\"\n"
                               "    tls:\n"
                               "      certificates: [{cert: a.crt, key: a.key}]\n"
                               "      protocols: ";
    static const struct {
        const char *value, *error;
    } cases[] = {
        {"[TLSv1.2, TLSv1.1]", "t.yaml:5:28: listen[0].tls.protocols[1]: invalid protocol "
                               "'TLSv1.1' (expected TLSv1.2 or TLSv1.3)"},
        {"[tlsv1.3]", "t.yaml:5:19: listen[0].tls.protocols[0]: invalid protocol 'tlsv1.3'"},
        {"[SSLv3]", "t.yaml:5:19: listen[0].tls.protocols[0]: invalid protocol 'SSLv3'"},
        {"[]", "t.yaml:5:18: listen[0].tls.protocols: needs at least one item"},
        {"~", "t.yaml:5:18: listen[0].tls.protocols: needs at least one item"},
        {"TLSv1.3", "t.yaml:5:18: listen[0].tls.protocols: expected a sequence, got a scalar"},
        {"[[TLSv1.3]]", "t.yaml:5:19: listen[0].tls.protocols[0]: expected a protocol name, got "
                        "a sequence"},
    };
    char yaml[512];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(yaml, sizeof(yaml), "%s%s\n%s", head, cases[i].value, TAIL);
        expect_error(yaml, cases[i].error);
    }
}

static void test_error_tls_values(void **state)
{
    static const char head[] = "listen:\n"
                               "  - address: \"127.0.0.1:8443\"\n"
                               "    tls:\n"
                               "      certificates: [{cert: a.crt, key: a.key}]\n";

    (void)state;
    char yaml[512];
    static const struct {
        const char *line, *error;
    } cases[] = {
        {"      handshake_timeout: 0s\n",
         "t.yaml:5:26: listen[0].tls.handshake_timeout: duration must be at least 1ms"},
        {"      session_cache: 10mb\n", "t.yaml:5:22: listen[0].tls.session_cache: invalid size"},
        {"      session_tickets: on\n",
         "t.yaml:5:24: listen[0].tls.session_tickets: invalid boolean 'on'"},
        {"      ciphers: \"\"\n", "t.yaml:5:16: listen[0].tls.ciphers: must not be empty"},
        {"      client_ca: [a]\n",
         "t.yaml:5:18: listen[0].tls.client_ca: expected a string, got a sequence"},
        {"      ocsp: true\n",
         "t.yaml:5:7: listen[0].tls.ocsp: unknown key (expected one of: certificates, "
         "protocols, ciphers, session_tickets, session_cache, handshake_timeout, client_ca)"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(yaml, sizeof(yaml), "%s%s%s", head, cases[i].line, TAIL);
        expect_error(yaml, cases[i].error);
    }
}

static void test_tls_defaults_and_relative_paths(void **state)
{
    char err[512] = "", want[128];
    struct mg_config *cfg =
        load_in_tls_dir("listen:\n"
                        "  - \"127.0.0.1:8080\"\n"
                        "  - address: \"127.0.0.1:8443\"\n"
                        "    tls:\n"
                        "      certificates:\n"
                        "        - {cert: server.crt, key: ./x/../server.key}\n" TAIL,
                        err, sizeof(err));
    const struct mg_tls_conf *t;

    (void)state;
    if (cfg == NULL)
        fail_msg("%s", err);
    assert_null(cfg->listen[0].tls);
    t = cfg->listen[1].tls;
    assert_non_null(t);
    assert_int_equal(t->ncerts, 1);
    snprintf(want, sizeof(want), "%s/server.crt", tls_dir);
    assert_string_equal(t->certs[0].cert, want);
    snprintf(want, sizeof(want), "%s/server.key", tls_dir);
    assert_string_equal(t->certs[0].key, want);
    assert_int_equal(t->protocols, MG_TLS_V12 | MG_TLS_V13);
    assert_string_equal(t->ciphers, "intermediate");
    assert_true(t->session_tickets);
    assert_int_equal(t->session_cache, 10 << 20);
    assert_int_equal(t->handshake_timeout_ms, 10000);
    assert_null(t->client_ca);
    assert_non_null(t->ctx);
    assert_false(cfg->listen[1].http2);
    mg_config_unref(cfg); /* frees the context (valgrind checks) */
}

static void test_tls_values_set(void **state)
{
    char err[512] = "", want[128];
    struct mg_config *cfg;
    const struct mg_tls_conf *t;
    char yaml[1024];

    (void)state;
    if (tls_dir[0] == '\0')
        skip();
    snprintf(yaml, sizeof(yaml),
             "listen:\n"
             "  - address: \"127.0.0.1:8443\"\n"
             "    tls:\n"
             "      certificates:\n"
             "        - {cert: %s/server.crt, key: %s/server.key}\n"
             "        - {cert: server.crt, key: server.key}\n"
             "      protocols: [TLSv1.3]\n"
             "      ciphers: \"HIGH:!aNULL\"\n"
             "      session_tickets: false\n"
             "      session_cache: 0\n"
             "      handshake_timeout: 2s\n"
             "      client_ca: server.crt\n" TAIL,
             tls_dir, tls_dir);
    cfg = load_in_tls_dir(yaml, err, sizeof(err));
    if (cfg == NULL)
        fail_msg("%s", err);
    t = cfg->listen[0].tls;
    assert_int_equal(t->ncerts, 2);
    snprintf(want, sizeof(want), "%s/server.crt", tls_dir);
    assert_string_equal(t->certs[0].cert, want);
    assert_string_equal(t->certs[1].cert, want);
    assert_string_equal(t->client_ca, want);
    assert_int_equal(t->protocols, MG_TLS_V13);
    assert_string_equal(t->ciphers, "HIGH:!aNULL");
    assert_false(t->session_tickets);
    assert_int_equal(t->session_cache, 0);
    assert_int_equal(t->handshake_timeout_ms, 2000);
    assert_non_null(t->ctx);
    mg_config_unref(cfg);
}

/* A context that cannot be built fails the load at what names the file. */
static void test_error_tls_missing_certificate(void **state)
{
    char err[512] = "", want[256];

    (void)state;
    assert_null(load_in_tls_dir("listen:\n"
                                "  - address: \"127.0.0.1:8443\"\n"
                                "    tls:\n"
                                "      certificates:\n"
                                "        - cert: server.crt\n"
                                "          key: server.key\n"
                                "        - cert: missing.crt\n"
                                "          key: server.key\n" TAIL,
                                err, sizeof(err)));
    snprintf(want, sizeof(want), "%s/gw.yaml:7:17: listen[0].tls.certificates[1].cert: ", tls_dir);
    if (strncmp(err, want, strlen(want)) != 0 || strstr(err, "missing.crt") == NULL)
        fail_msg("error  '%s'\nwanted '%s...missing.crt...'", err, want);
    assert_null(load_in_tls_dir("listen:\n"
                                "  - address: \"127.0.0.1:8443\"\n"
                                "    tls:\n"
                                "      certificates: [{cert: server.crt, key: server.key}]\n"
                                "      client_ca: nowhere/ca.pem\n" TAIL,
                                err, sizeof(err)));
    snprintf(want, sizeof(want), "%s/gw.yaml:5:18: listen[0].tls.client_ca: ", tls_dir);
    if (strncmp(err, want, strlen(want)) != 0 || strstr(err, "ca.pem") == NULL)
        fail_msg("error  '%s'\nwanted '%s...ca.pem...'", err, want);
}

/* A reason naming several files points at its subject, the first it names;
 * one about a key's value at that key. */
static void test_error_tls_key_mismatch_and_ciphers(void **state)
{
    char err[512] = "", want[512];

    (void)state;
    assert_null(load_in_tls_dir("listen:\n"
                                "  - address: \"127.0.0.1:8443\"\n"
                                "    tls:\n"
                                "      certificates: [{cert: server.crt, key: other.key}]\n" TAIL,
                                err, sizeof(err)));
    snprintf(want, sizeof(want),
             "%s/gw.yaml:4:46: listen[0].tls.certificates[0].key: %s/other.key: key does not "
             "match certificate %s/server.crt",
             tls_dir, tls_dir, tls_dir);
    assert_string_equal(err, want);
    assert_null(load_in_tls_dir("listen:\n"
                                "  - address: \"127.0.0.1:8443\"\n"
                                "    tls:\n"
                                "      certificates: [{cert: server.crt, key: server.key}]\n"
                                "      ciphers: NOPE\n" TAIL,
                                err, sizeof(err)));
    snprintf(want, sizeof(want),
             "%s/gw.yaml:5:16: listen[0].tls.ciphers: ciphers \"NOPE\": ", tls_dir);
    if (strncmp(err, want, strlen(want)) != 0)
        fail_msg("error  '%s'\nwanted '%s...'", err, want);
}

/* Contexts already built are freed when a later part of the file fails. */
static void test_error_after_tls_frees_contexts(void **state)
{
    char err[512] = "", want[256];

    (void)state;
    assert_null(load_in_tls_dir("listen:\n"
                                "  - address: \"127.0.0.1:8443\"\n"
                                "    tls: {certificates: [{cert: server.crt, key: server.key}]}\n"
                                "upstreams:\n"
                                "  a:\n"
                                "    targets: [{address: \"127.0.0.1:9001\"}]\n"
                                "    tls: {enabled: true}\n"
                                "routes: []\n",
                                err, sizeof(err)));
    snprintf(want, sizeof(want), "%s/gw.yaml:8:9: routes: needs at least one route", tls_dir);
    assert_string_equal(err, want);
    assert_null(
        load_in_tls_dir("listen:\n"
                        "  - address: \"127.0.0.1:8443\"\n"
                        "    tls: {certificates: [{cert: server.crt, key: server.key}]}\n"
                        "  - address: \"127.0.0.1:8443\"\n"
                        "    tls: {certificates: [{cert: server.crt, key: server.key}]}\n" TAIL,
                        err, sizeof(err)));
    snprintf(want, sizeof(want),
             "%s/gw.yaml:4:14: listen[1].address: duplicate address '127.0.0.1:8443'", tls_dir);
    assert_string_equal(err, want);
}

static void test_upstream_tls_defaults(void **state)
{
    struct mg_config *cfg = load(MINIMAL);
    const struct mg_upstream_tls_conf *t = &cfg->upstreams[0].tls;

    (void)state;
    assert_false(t->enabled);
    assert_null(t->sni);
    assert_true(t->verify);
    assert_string_equal(t->ca, "system");
    assert_null(t->cert);
    assert_null(t->key);
    assert_null(t->ctx);
    mg_config_unref(cfg);
}

static void test_upstream_tls_paths_resolved(void **state)
{
    const char *yaml = HEAD "    tls: {sni: api.example.com, verify: false, ca: cas/root.pem,\n"
                            "          cert: /abs/c.pem, key: ../k.pem}\n"
                            "routes:\n"
                            "  - {name: r, upstream: a}\n";
    char err[512] = "";
    struct mg_config *cfg =
        mg_config_load_string(yaml, strlen(yaml), "/etc/moongate/gw.yaml", err, sizeof(err));
    const struct mg_upstream_tls_conf *t;

    (void)state;
    if (cfg == NULL)
        fail_msg("%s", err);
    t = &cfg->upstreams[0].tls;
    assert_false(t->enabled); /* not enabled: read, checked, no context (no file opened) */
    assert_string_equal(t->sni, "api.example.com");
    assert_false(t->verify);
    assert_string_equal(t->ca, "/etc/moongate/cas/root.pem");
    assert_string_equal(t->cert, "/abs/c.pem");
    assert_string_equal(t->key, "/etc/k.pem");
    assert_null(t->ctx);
    mg_config_unref(cfg);
}

static void test_upstream_tls_enabled_builds_context(void **state)
{
    char err[512] = "", want[128];
    struct mg_config *cfg;
    const struct mg_upstream_tls_conf *t;

    (void)state;
    cfg = load_in_tls_dir(
        "listen: [\"127.0.0.1:8080\"]\n"
        "upstreams:\n"
        "  a:\n"
        "    targets: [{address: \"127.0.0.1:9001\"}]\n"
        "    tls: {enabled: true}\n"
        "  b:\n"
        "    targets: [{address: \"127.0.0.1:9002\"}]\n"
        "    tls: {enabled: true, ca: server.crt, cert: server.crt, key: server.key}\n"
        "routes:\n"
        "  - {name: r, upstream: a}\n",
        err, sizeof(err));
    if (cfg == NULL)
        fail_msg("%s", err);
    assert_non_null(cfg->upstreams[0].tls.ctx);
    assert_string_equal(cfg->upstreams[0].tls.ca, "system");
    t = &cfg->upstreams[1].tls;
    assert_non_null(t->ctx);
    snprintf(want, sizeof(want), "%s/server.crt", tls_dir);
    assert_string_equal(t->ca, want);
    assert_string_equal(t->cert, want);
    mg_config_unref(cfg);
    assert_null(load_in_tls_dir("listen: [\"127.0.0.1:8080\"]\n"
                                "upstreams:\n"
                                "  a:\n"
                                "    targets: [{address: \"127.0.0.1:9001\"}]\n"
                                "    tls: {enabled: true, ca: missing-ca.pem}\n"
                                "routes:\n"
                                "  - {name: r, upstream: a}\n",
                                err, sizeof(err)));
    snprintf(want, sizeof(want), "%s/gw.yaml:5:30: upstreams.a.tls.ca: ", tls_dir);
    if (strncmp(err, want, strlen(want)) != 0 || strstr(err, "missing-ca.pem") == NULL)
        fail_msg("error  '%s'\nwanted '%s...missing-ca.pem...'", err, want);
}

static void test_error_upstream_tls(void **state)
{
    (void)state;
    expect_error(HEAD "    tls: {enabled: true, cert: c.pem}\n",
                 "t.yaml:5:32: upstreams.a.tls.cert: 'cert' needs 'key' (give both or neither)");
    expect_error(HEAD "    tls: {key: k.pem, cert: null}\n",
                 "t.yaml:5:16: upstreams.a.tls.key: 'key' needs 'cert' (give both or neither)");
    expect_error(HEAD "    tls: {sni: \"api.example.com:443\"}\n",
                 "t.yaml:5:16: upstreams.a.tls.sni: invalid sni 'api.example.com:443' (expected "
                 "a host name)");
    expect_error(HEAD "    tls: {ca: null}\n",
                 "t.yaml:5:15: upstreams.a.tls.ca: expected a string, got null");
    expect_error(HEAD "    tls: {ca: /dev/null}\n",
                 "t.yaml:5:15: upstreams.a.tls.ca: '/dev/null' is not a regular file");
    expect_error("listen: [{address: \"127.0.0.1:8443\", tls: {certificates: [{cert: /, key: "
                 "k}]}}]\n" TAIL,
                 "t.yaml:1:66: listen[0].tls.certificates[0].cert: '/' is not a regular file");
    expect_error(HEAD "    tls: {enable: true}\n",
                 "t.yaml:5:11: upstreams.a.tls.enable: unknown key (expected one of: enabled, "
                 "sni, verify, ca, cert, key)");
}

/* ---- edge details (DESIGN section 10.8) ---- */

static void test_listen_proxy_protocol(void **state)
{
    (void)state;
    struct mg_config *cfg = load("listen:\n"
                                 "  - \"127.0.0.1:8080\"\n"
                                 "  - {address: \"127.0.0.1:8081\", proxy_protocol: true}\n" TAIL);
    assert_false(cfg->listen[0].proxy_protocol);
    assert_true(cfg->listen[1].proxy_protocol);
    mg_config_unref(cfg);
}

static void test_forwarded_defaults_and_values(void **state)
{
    (void)state;
    struct mg_config *cfg = load(MINIMAL);
    assert_int_equal(cfg->forwarded.ntrusted_proxies, 0);
    assert_int_equal(cfg->forwarded.x_forwarded_for, MG_XFF_APPEND);
    assert_false(cfg->forwarded.forwarded_header);
    mg_config_unref(cfg);
    cfg = load(MINIMAL "forwarded:\n"
                       "  trusted_proxies: [\"10.0.0.0/8\", \"2001:db8::/32\", 192.0.2.1]\n"
                       "  x_forwarded_for: replace\n"
                       "  forwarded_header: true\n");
    assert_int_equal(cfg->forwarded.ntrusted_proxies, 3);
    assert_int_equal(cfg->forwarded.trusted_proxies[0].bits, 96 + 8);
    assert_int_equal(cfg->forwarded.trusted_proxies[1].bits, 32);
    assert_int_equal(cfg->forwarded.trusted_proxies[2].bits, 128);
    assert_int_equal(cfg->forwarded.x_forwarded_for, MG_XFF_REPLACE);
    assert_true(cfg->forwarded.forwarded_header);
    mg_config_unref(cfg);
    cfg = load(MINIMAL "forwarded: {x_forwarded_for: \"off\"}\n");
    assert_int_equal(cfg->forwarded.x_forwarded_for, MG_XFF_OFF);
    mg_config_unref(cfg);
}

static void test_error_forwarded(void **state)
{
    (void)state;
    expect_error(MINIMAL "forwarded: {trusted_proxies: [\"10.0.0.0/8\", \"10.0.0.1/8\"]}\n",
                 "t.yaml:7:45: forwarded.trusted_proxies[1]: invalid address block '10.0.0.1/8': "
                 "host bits are set");
    expect_error(MINIMAL "forwarded: {trusted_proxies: [\"10.0.0.0/33\"]}\n",
                 "t.yaml:7:31: forwarded.trusted_proxies[0]: invalid address block");
    expect_error(
        MINIMAL "forwarded: {trusted_proxies: [proxy.example]}\n",
        "t.yaml:7:31: forwarded.trusted_proxies[0]: invalid address block 'proxy.example': "
        "not an IPv4 or IPv6 address");
    expect_error(MINIMAL "forwarded: {trusted_proxies: \"10.0.0.0/8\"}\n",
                 "t.yaml:7:30: forwarded.trusted_proxies: expected a sequence");
    expect_error(MINIMAL "forwarded: {x_forwarded_for: prepend}\n",
                 "t.yaml:7:30: forwarded.x_forwarded_for: invalid value 'prepend' (expected one "
                 "of: append, replace, off)");
    expect_error(MINIMAL "forwarded: {forwarded_headers: true}\n",
                 "t.yaml:7:13: forwarded.forwarded_headers: unknown key");
}

/* ---- ${VAR}, secret files and includes (DESIGN 10.8) ---- */

static void test_vars_substituted_with_defaults(void **state)
{
    struct mg_config *cfg;

    (void)state;
    setenv("MG_T_PORT", "8181", 1);
    setenv("MG_T_EMPTY", "", 1);
    unsetenv("MG_T_UNSET");
    cfg = load("listen: [\"127.0.0.1:${MG_T_PORT}\"]\n"
               "pid_file: /tmp/${MG_T_UNSET:-mg}-${MG_T_EMPTY:-x}${MG_T_EMPTY}.pid\n"
               "access_log: \"a$$b$${MG_T_PORT}$\"\n" HEAD_TAIL);
    assert_int_equal(port_of(&cfg->listen[0].address), 8181);
    assert_string_equal(cfg->pid_file, "/tmp/mg-x.pid");
    /* `$${` is a literal `${`; any other `$` is kept as written. */
    assert_string_equal(cfg->access_log, "a$$b${MG_T_PORT}$");
    mg_config_unref(cfg);
    unsetenv("MG_T_PORT");
    unsetenv("MG_T_EMPTY");
}

static void test_error_vars(void **state)
{
    (void)state;
    unsetenv("MG_T_UNSET");
    expect_error("listen: [\"127.0.0.1:8080\"]\n"
                 "pid_file: /tmp/${MG_T_UNSET}.pid\n" HEAD_TAIL,
                 "t.yaml:2:11: environment variable 'MG_T_UNSET' is not set");
    expect_error("listen: [\"127.0.0.1:8080\"]\npid_file: \"${1X}\"\n" HEAD_TAIL,
                 "t.yaml:2:11: invalid variable reference '${1X}'");
    expect_error("listen: [\"127.0.0.1:8080\"]\npid_file: \"${X:-a\"\n" HEAD_TAIL,
                 "t.yaml:2:11: unterminated variable reference");
}

static void test_log_and_access_log_fields(void **state)
{
    struct mg_config *cfg;

    (void)state;
    cfg = load(MINIMAL);
    assert_int_equal(cfg->log.level, 1); /* info */
    assert_int_equal(cfg->log.format, MG_LOG_FORMAT_TEXT);
    assert_null(cfg->access_log_field_ids); /* the access log's default list */
    mg_config_unref(cfg);
    cfg = load(MINIMAL "log: {level: warn, format: json}\n"
                       "access_log_fields: [status, host, tls]\n");
    assert_int_equal(cfg->log.level, 2);
    assert_int_equal(cfg->log.format, MG_LOG_FORMAT_JSON);
    assert_int_equal(cfg->naccess_log_fields, 3);
    assert_string_equal(cfg->access_log_fields[1], "host");
    assert_non_null(cfg->access_log_field_ids);
    mg_config_unref(cfg);
    expect_error(MINIMAL "log: {level: loud}\n",
                 "t.yaml:7:14: log.level: invalid value 'loud' (expected one of: debug, info, "
                 "warn, error)");
    expect_error(MINIMAL "access_log_fields: [status, agent]\n",
                 "t.yaml:7:29: access_log_fields[1]: unknown access log field 'agent'");
    expect_error(MINIMAL "access_log_fields: [status, status]\n",
                 "t.yaml:7:29: access_log_fields[1]: field 'status' is listed twice");
    cfg = load(MINIMAL);
    assert_int_equal(cfg->nduration_buckets, 16);
    assert_true(cfg->duration_buckets[0] == 0.00025 && cfg->duration_buckets[15] == 30);
    mg_config_unref(cfg);
    expect_error(MINIMAL "metrics: {duration_buckets: [0.1, 0.1]}\n",
                 "t.yaml:7:35: metrics.duration_buckets[1]: bounds must increase");
    expect_error(MINIMAL "metrics: {duration_buckets: [0, 1]}\n",
                 "t.yaml:7:30: metrics.duration_buckets[0]: invalid bound '0'");
    expect_error(MINIMAL "access_log_fields: []\n",
                 "t.yaml:7:20: access_log_fields: needs at least one item");
}

/* A scratch directory for files the config refers to. */
static char scratch[64];

static void put_file(const char *name, const char *text)
{
    char path[160];
    FILE *fp;

    snprintf(path, sizeof(path), "%s/%s", scratch, name);
    assert_non_null(fp = fopen(path, "w"));
    fputs(text, fp);
    fclose(fp);
}

static int make_scratch(void **state)
{
    (void)state;
    snprintf(scratch, sizeof(scratch), "/tmp/mg-test-include-XXXXXX");
    assert_non_null(mkdtemp(scratch));
    return 0;
}

static int remove_scratch(void **state)
{
    char cmd[128];

    (void)state;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", scratch);
    return system(cmd) == 0 ? 0 : -1;
}

static struct mg_config *load_scratch(const char *name, char *err, size_t errlen)
{
    char path[160];

    snprintf(path, sizeof(path), "%s/%s", scratch, name);
    return mg_config_load(path, err, errlen);
}

static void expect_scratch_error(const char *name, const char *suffix_fmt, const char *file)
{
    char err[512] = "", want[512];
    struct mg_config *cfg = load_scratch(name, err, sizeof(err));

    if (cfg != NULL) {
        mg_config_unref(cfg);
        fail_msg("loaded, expected an error in %s", file);
    }
    snprintf(want, sizeof(want), "%s/%s%s", scratch, file, suffix_fmt);
    if (strncmp(err, want, strlen(want)) != 0)
        fail_msg("error  '%s'\nwanted '%s...'", err, want);
}

static void test_secret_files(void **state)
{
    char err[512] = "";
    struct mg_config *cfg;

    (void)state;
    put_file("redis.pw", "s3cret\n");
    put_file("admin.tok", "tok-1\r\n");
    put_file("empty", "\n");
    put_file("ok.yaml", "listen: [\"127.0.0.1:8080\"]\n"
                        "admin: {token_file: admin.tok}\n"
                        "redis: {password_file: redis.pw}\n" HEAD_TAIL);
    cfg = load_scratch("ok.yaml", err, sizeof(err));
    if (cfg == NULL)
        fail_msg("%s", err);
    assert_string_equal(cfg->redis.password, "s3cret");
    assert_string_equal(cfg->admin_token, "tok-1");
    mg_config_unref(cfg);
    put_file("snt.yaml", "listen: [\"127.0.0.1:8080\"]\n"
                         "redis: {sentinel: {master: m, addresses: [\"127.0.0.1:26379\"], "
                         "password_file: redis.pw}}\n" HEAD_TAIL);
    cfg = load_scratch("snt.yaml", err, sizeof(err));
    if (cfg == NULL)
        fail_msg("%s", err);
    assert_string_equal(cfg->redis.sentinel.password, "s3cret");
    assert_null(cfg->redis.password);
    mg_config_unref(cfg);

    put_file("both.yaml", "listen: [\"127.0.0.1:8080\"]\n"
                          "redis: {password: x, password_file: redis.pw}\n" HEAD_TAIL);
    expect_scratch_error("both.yaml",
                         ":2:37: redis.password_file: give the secret inline or in a file",
                         "both.yaml");
    put_file("missing.yaml", "listen: [\"127.0.0.1:8080\"]\n"
                             "admin:\n  token_file: nope\n" HEAD_TAIL);
    expect_scratch_error("missing.yaml", ":3:15: admin.token_file: cannot read '", "missing.yaml");
    put_file("empty.yaml", "listen: [\"127.0.0.1:8080\"]\n"
                           "admin: {token_file: empty}\n" HEAD_TAIL);
    expect_scratch_error("empty.yaml", ":2:21: admin.token_file: '", "empty.yaml");
}

static void test_include_merges_maps_and_lists(void **state)
{
    char err[512] = "";
    struct mg_config *cfg;

    (void)state;
    put_file("main.yaml", "include: [\"inc-*.yaml\", sub/more.yaml]\n"
                          "listen: [\"127.0.0.1:8080\"]\n"
                          "upstreams:\n"
                          "  a: {targets: [{address: \"127.0.0.1:9001\"}]}\n"
                          "routes:\n"
                          "  - {name: r, upstream: a}\n");
    put_file("inc-1.yaml", "upstreams:\n  b: {targets: [{address: \"127.0.0.1:9002\"}]}\n"
                           "routes:\n  - {name: r2, upstream: b, match: {paths: [/b]}}\n");
    put_file("inc-2.yaml", "redis: {password_file: pw}\n");
    put_file("pw", "from-inc\n");
    {
        char cmd[160];
        snprintf(cmd, sizeof(cmd), "mkdir -p '%s/sub'", scratch);
        assert_int_equal(system(cmd), 0);
    }
    /* sub/more.yaml's own relative paths are resolved against sub/. */
    put_file("sub/more.yaml", "plugin_path: [lua]\n");
    cfg = load_scratch("main.yaml", err, sizeof(err));
    if (cfg == NULL)
        fail_msg("%s", err);
    assert_int_equal(cfg->nupstreams, 2);
    assert_int_equal(cfg->nroutes, 2);
    assert_string_equal(cfg->routes[1].name, "r2");
    assert_string_equal(cfg->routes[1].upstream->name, "b");
    assert_string_equal(cfg->redis.password, "from-inc");
    assert_int_equal(cfg->nplugin_path, 1);
    assert_non_null(strstr(cfg->plugin_path[0], "/sub/lua"));
    mg_config_unref(cfg);
}

static void test_error_include(void **state)
{
    (void)state;
    put_file("m1.yaml", "include: bad.yaml\n" MINIMAL);
    put_file("bad.yaml",
             "# a comment\nupstreams:\n  c:\n    targets: [{address: \"127.0.0.1:1\"}]\n"
             "    keepalive: lots\n");
    expect_scratch_error("m1.yaml", ":5:16: upstreams.c.keepalive: invalid integer 'lots'",
                         "bad.yaml");
    put_file("m2.yaml", "include: [dup.yaml]\n" MINIMAL);
    put_file("dup.yaml", "upstreams:\n  a: {targets: [{address: \"127.0.0.1:1\"}]}\n");
    expect_scratch_error("m2.yaml", ":2:3: upstreams.a: defined twice (first at ", "dup.yaml");
    put_file("m3.yaml", "include: [syntax.yaml]\n" MINIMAL);
    put_file("syntax.yaml", "routes: [\n");
    expect_scratch_error("m3.yaml", ":2:1: YAML syntax error", "syntax.yaml");
    put_file("m4.yaml", "include: [nothere.yaml, \"none-*.yaml\"]\n" MINIMAL);
    expect_scratch_error("m4.yaml", ":1:11: include: no such file", "m4.yaml");
    put_file("m5.yaml", "include: m5.yaml\n" MINIMAL);
    expect_scratch_error("m5.yaml", ":1:10: include: nested more than", "m5.yaml");
    unsetenv("MG_T_UNSET");
    put_file("m6.yaml", "include: v.yaml\n" MINIMAL);
    put_file("v.yaml", "\npid_file: ${MG_T_UNSET}\n");
    expect_scratch_error("m6.yaml", ":2:11: environment variable 'MG_T_UNSET'", "v.yaml");
    put_file("scalar.yaml", "listen: [\"127.0.0.1:9\"]\npid_file: /tmp/a\n");
    put_file("m8.yaml", "pid_file: /tmp/b\ninclude: [scalar.yaml]\n" MINIMAL);
    expect_scratch_error("m8.yaml", ":2:1: pid_file: defined twice (first at ", "scalar.yaml");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_minimal_top_level_defaults),
        cmocka_unit_test(test_minimal_client_and_redis_defaults),
        cmocka_unit_test(test_minimal_upstream_defaults),
        cmocka_unit_test(test_minimal_retry_defaults),
        cmocka_unit_test(test_minimal_breaker_and_health_defaults),
        cmocka_unit_test(test_minimal_route_defaults),
        cmocka_unit_test(test_idempotency_defaults_when_present),
        cmocka_unit_test(test_empty_sections_enable_with_defaults),
        cmocka_unit_test(test_full_file_top_level),
        cmocka_unit_test(test_full_file_plugin_path_is_absolute),
        cmocka_unit_test(test_full_file_upstream),
        cmocka_unit_test(test_full_file_route),
        cmocka_unit_test(test_full_file_idempotency),
        cmocka_unit_test(test_full_file_plugins),
        cmocka_unit_test(test_shipped_config_loads),
        cmocka_unit_test(test_plugin_path_relative_to_file),
        cmocka_unit_test(test_workers_forms),
        cmocka_unit_test(test_redis_password_null_or_set),
        cmocka_unit_test(test_redis_sentinel),
        cmocka_unit_test(test_redis_sentinel_errors),
        cmocka_unit_test(test_access_log_any_string),
        cmocka_unit_test(test_version_increases_and_loaded_at),
        cmocka_unit_test(test_ref_keeps_snapshot_alive),
        cmocka_unit_test(test_yaml_anchors_and_aliases),
        cmocka_unit_test(test_error_format_from_brief),
        cmocka_unit_test(test_error_yaml_syntax),
        cmocka_unit_test(test_error_file_missing),
        cmocka_unit_test(test_error_second_document),
        cmocka_unit_test(test_error_duplicate_key),
        cmocka_unit_test(test_error_empty_file),
        cmocka_unit_test(test_error_unknown_keys),
        cmocka_unit_test(test_shared_dicts),
        cmocka_unit_test(test_error_wrong_types),
        cmocka_unit_test(test_resilience2_defaults),
        cmocka_unit_test(test_resilience2_values),
        cmocka_unit_test(test_resilience2_errors),
        cmocka_unit_test(test_error_null_value),
        cmocka_unit_test(test_error_nul_in_value),
        cmocka_unit_test(test_error_missing_required_top_level),
        cmocka_unit_test(test_error_missing_targets),
        cmocka_unit_test(test_error_missing_route_name_or_upstream),
        cmocka_unit_test(test_error_unknown_upstream),
        cmocka_unit_test(test_error_duplicate_route_name),
        cmocka_unit_test(test_error_empty_lists),
        cmocka_unit_test(test_error_duplicates_in_lists),
        cmocka_unit_test(test_error_bad_durations),
        cmocka_unit_test(test_error_bad_sizes),
        cmocka_unit_test(test_error_bad_addresses),
        cmocka_unit_test(test_error_bad_numbers),
        cmocka_unit_test(test_error_weight_zero),
        cmocka_unit_test(test_error_bad_enum_and_bool),
        cmocka_unit_test(test_error_bad_workers),
        cmocka_unit_test(test_error_bad_methods),
        cmocka_unit_test(test_error_bad_paths),
        cmocka_unit_test(test_error_bad_hosts),
        cmocka_unit_test(test_error_bad_idempotency),
        cmocka_unit_test(test_error_bad_statuses_and_retry_on),
        cmocka_unit_test(test_error_order_of_limits),
        cmocka_unit_test(test_error_bad_plugins),
        cmocka_unit_test(test_error_plugin_config_alias_bomb),
        cmocka_unit_test(test_error_plugin_config_self_alias),
        cmocka_unit_test(test_error_buffer_truncated_or_absent),
        cmocka_unit_test(test_error_not_a_regular_file),
        cmocka_unit_test(test_listen_mappings_plain_and_mixed),
        cmocka_unit_test(test_http2_listeners_and_section),
        cmocka_unit_test(test_error_listen_entries),
        cmocka_unit_test(test_error_listen_tls_section),
        cmocka_unit_test(test_error_tls_protocols),
        cmocka_unit_test(test_error_tls_values),
        cmocka_unit_test(test_tls_defaults_and_relative_paths),
        cmocka_unit_test(test_tls_values_set),
        cmocka_unit_test(test_error_tls_missing_certificate),
        cmocka_unit_test(test_error_tls_key_mismatch_and_ciphers),
        cmocka_unit_test(test_error_after_tls_frees_contexts),
        cmocka_unit_test(test_vars_substituted_with_defaults),
        cmocka_unit_test(test_error_vars),
        cmocka_unit_test(test_log_and_access_log_fields),
        cmocka_unit_test_setup_teardown(test_secret_files, make_scratch, remove_scratch),
        cmocka_unit_test_setup_teardown(test_include_merges_maps_and_lists, make_scratch,
                                        remove_scratch),
        cmocka_unit_test_setup_teardown(test_error_include, make_scratch, remove_scratch),
        cmocka_unit_test(test_upstream_tls_defaults),
        cmocka_unit_test(test_upstream_tls_paths_resolved),
        cmocka_unit_test(test_upstream_tls_enabled_builds_context),
        cmocka_unit_test(test_error_upstream_tls),
        cmocka_unit_test(test_listen_proxy_protocol),
        cmocka_unit_test(test_forwarded_defaults_and_values),
        cmocka_unit_test(test_error_forwarded),
    };

    return cmocka_run_group_tests(tests, make_tls_dir, remove_tls_dir);
}
