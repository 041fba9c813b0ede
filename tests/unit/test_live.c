/*
 * Unit tests of gateway/obs/live.c: rates and latency quantiles computed from
 * two samples of the metric shards, errors by name over the last minute,
 * `since` returning only new points, the ring wrapping at MG_LIVE_POINTS,
 * history kept across a reload for the routes that stay, and the reload
 * journal (escaped messages, newest first, bounded).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config/config.h"
#include "obs/live.h"
#include "obs/metrics.h"
#include "obs/textbuf.h"

#define BASE                                                                                       \
    "listen: [\"127.0.0.1:8080\"]\n"                                                               \
    "upstreams:\n"                                                                                 \
    "  orders:\n"                                                                                  \
    "    targets: [{address: \"127.0.0.1:9001\"}, {address: \"127.0.0.1:9002\"}]\n"

static struct mg_config *load(const char *yaml)
{
    char err[512] = "";
    struct mg_config *cfg = mg_config_load_string(yaml, strlen(yaml), "l.yaml", err, sizeof(err));

    if (cfg == NULL)
        fail_msg("%s", err);
    return cfg;
}

static char *render(struct mg_live *l, const struct mg_config *cfg, uint64_t since)
{
    struct mg_textbuf b = MG_TEXTBUF_INIT;

    mg_live_render(l, cfg, NULL, since, 0, &b);
    return mg_textbuf_take(&b, NULL);
}

/* The JSON text of route `name`'s object (up to the next route). */
static const char *route_json(const char *doc, const char *name)
{
    char key[64];

    snprintf(key, sizeof(key), "{\"name\":\"%s\"", name);
    const char *p = strstr(doc, key);
    assert_non_null(p);
    return p;
}

static void test_rates_quantiles_and_errors(void **state)
{
    struct mg_config *cfg =
        load(BASE "routes:\n  - {name: a, upstream: orders, match: {paths: [/a]}}\n");
    struct mg_metrics *m = mg_metrics_new(cfg, 2);
    struct mg_live *l = mg_live_new();

    mg_live_sample(l, cfg, m, NULL, 1000); /* primes: nothing yet */
    for (int i = 0; i < 10; i++)
        mg_metrics_request_done(m, (unsigned)i % 2, 0, 200, 2000000); /* 2 ms */
    for (int i = 0; i < 2; i++) {
        mg_metrics_error(m, 1, 0, MG_ERR_UPSTREAM_UNAVAILABLE);
        mg_metrics_request_done(m, 1, 0, 502, 2000000);
    }
    mg_metrics_request_done(m, 0, 0, 500, 2000000); /* the upstream's own 500 */
    mg_metrics_error(m, 0, -1, MG_ERR_NO_ROUTE);
    mg_metrics_request_done(m, 0, -1, 404, 1000);
    mg_metrics_in_flight(m, 0, 0, +1);
    mg_live_sample(l, cfg, m, NULL, 2000);

    char *doc = render(l, cfg, 0);
    const char *a = route_json(doc, "a");
    assert_non_null(strstr(a, "\"requests\":13,\"errors\":3"));
    assert_non_null(strstr(a, "\"rps\":[0,13]"));
    assert_non_null(strstr(a, "\"eps\":[0,3]"));
    /* 13 requests in (1 ms, 2.5 ms]: the median is interpolated to 1.75 ms. */
    assert_non_null(strstr(a, "\"p50\":[null,1.75]"));
    assert_non_null(strstr(a, "\"in_flight\":[0,1]"));
    assert_non_null(strstr(a, "\"errors_1m\":{\"upstream_unavailable\":2,\"upstream_5xx\":1}"));
    assert_non_null(strstr(route_json(doc, ""), "\"errors_1m\":{\"no_route\":1}"));
    assert_non_null(strstr(doc, "\"seq\":2,\"from\":1"));
    assert_non_null(strstr(doc, "\"workers\":2"));
    free(doc);

    /* since = the newest point: no point, same document shape */
    doc = render(l, cfg, 2);
    assert_non_null(strstr(doc, "\"seq\":2,\"from\":3"));
    assert_non_null(strstr(route_json(doc, "a"), "\"rps\":[]"));
    free(doc);

    mg_live_free(l);
    mg_metrics_unref(m);
    mg_config_unref(cfg);
}

static void test_ring_wraps(void **state)
{
    struct mg_config *cfg =
        load(BASE "routes:\n  - {name: a, upstream: orders, match: {paths: [/a]}}\n");
    struct mg_metrics *m = mg_metrics_new(cfg, 1);
    struct mg_live *l = mg_live_new();

    for (int s = 0; s < MG_LIVE_POINTS + 20; s++) {
        mg_metrics_request_done(m, 0, 0, 200, 1000);
        mg_live_sample(l, cfg, m, NULL, 1000 * (int64_t)(s + 1));
    }
    char *doc = render(l, cfg, 0);
    char want[64];
    snprintf(want, sizeof(want), "\"seq\":%d,\"from\":%d", MG_LIVE_POINTS + 20, 21);
    assert_non_null(strstr(doc, want));
    /* exactly MG_LIVE_POINTS values in a series */
    const char *p = strstr(route_json(doc, "a"), "\"rps\":[");
    const char *end = strchr(p, ']');
    int commas = 0;
    for (const char *q = p; q < end; q++)
        commas += *q == ',';
    assert_int_equal(commas + 1, MG_LIVE_POINTS);
    free(doc);
    mg_live_free(l);
    mg_metrics_unref(m);
    mg_config_unref(cfg);
}

static void test_reload_keeps_history_by_name(void **state)
{
    struct mg_config *c1 = load(BASE "routes:\n"
                                     "  - {name: a, upstream: orders, match: {paths: [/a]}}\n"
                                     "  - {name: b, upstream: orders, match: {paths: [/b]}}\n");
    struct mg_config *c2 = load(BASE "routes:\n"
                                     "  - {name: c, upstream: orders, match: {paths: [/c]}}\n"
                                     "  - {name: a, upstream: orders, match: {paths: [/a]}}\n");
    struct mg_metrics *m1 = mg_metrics_new(c1, 1);
    struct mg_live *l = mg_live_new();

    mg_live_sample(l, c1, m1, NULL, 1000);
    for (int i = 0; i < 4; i++)
        mg_metrics_request_done(m1, 0, 0, 200, 1000);
    mg_live_sample(l, c1, m1, NULL, 2000);
    struct mg_metrics *m2 = mg_metrics_next(m1, c2);
    mg_metrics_unref(m1); /* the history keeps its own reference until it moves on */
    mg_metrics_request_done(m2, 0, 1, 200, 1000);
    mg_live_sample(l, c2, m2, NULL, 3000);

    char *doc = render(l, c2, 0);
    assert_null(strstr(doc, "{\"name\":\"b\""));
    assert_non_null(strstr(route_json(doc, "a"), "\"rps\":[0,4,1]"));
    assert_non_null(strstr(route_json(doc, "c"), "\"rps\":[0,0,0]"));
    free(doc);
    mg_live_free(l);
    mg_metrics_unref(m2);
    mg_config_unref(c1);
    mg_config_unref(c2);
}

static void test_reload_journal(void **state)
{
    struct mg_config *cfg =
        load(BASE "routes:\n  - {name: a, upstream: orders, match: {paths: [/a]}}\n");
    struct mg_live *l = mg_live_new();

    /* No sample yet: the document is still complete. */
    mg_live_reload(l, true, 1, NULL, 5);
    for (int i = 0; i < 9; i++)
        mg_live_reload(l, false, 0, "x.yaml:3:1: bad \"key\"", 10 + i);
    mg_live_reload(l, true, 2, NULL, 99);
    char *doc = render(l, cfg, 0);
    assert_non_null(strstr(doc, "\"routes\":[],\"upstreams\":[],\"plugins\":[]"));
    assert_non_null(strstr(doc, "\"reloads\":[{\"at\":99,\"ok\":true,\"version\":2,\"error\":null},"
                                "{\"at\":18,\"ok\":false,\"version\":0,"
                                "\"error\":\"x.yaml:3:1: bad \\\"key\\\"\"}"));
    assert_null(strstr(doc, "\"at\":5,")); /* only the last 8 are kept */
    assert_null(strstr(doc, "\"at\":11,"));
    assert_non_null(strstr(doc, "\"at\":12,"));
    free(doc);
    mg_live_free(l);
    mg_config_unref(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rates_quantiles_and_errors),
        cmocka_unit_test(test_ring_wraps),
        cmocka_unit_test(test_reload_keeps_history_by_name),
        cmocka_unit_test(test_reload_journal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
