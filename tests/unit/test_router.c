/*
 * Unit tests of gateway/router.c: hosts (exact, wildcard, ports, case), longest
 * path prefix at segment boundaries, methods, tie order, no match. Each test
 * loads a small YAML file so the router is the one mg_config_load builds.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <llhttp.h>

#include "config/config.h"
#include "router.h"

#define HEAD                                                                                       \
    "listen: [\"127.0.0.1:8080\"]\n"                                                               \
    "upstreams:\n"                                                                                 \
    "  a:\n"                                                                                       \
    "    targets: [{address: \"127.0.0.1:9001\"}]\n"                                               \
    "routes:\n"

static struct mg_config *load(const char *routes)
{
    char yaml[4096], err[512] = "";
    struct mg_config *cfg;

    snprintf(yaml, sizeof(yaml), HEAD "%s", routes);
    cfg = mg_config_load_string(yaml, strlen(yaml), "r.yaml", err, sizeof(err));
    if (cfg == NULL)
        fail_msg("%s", err);
    return cfg;
}

/* Name of the route matched for (host, path, method), or "-" for none. */
static const char *route(const struct mg_config *cfg, const char *host, const char *path,
                         int method)
{
    const struct mg_route_conf *rt = mg_router_match(cfg->router, host, host ? strlen(host) : 0,
                                                     path, strlen(path), method, NULL);

    return rt ? rt->name : "-";
}

static void test_exact_host(void **state)
{
    struct mg_config *cfg = load("  - {name: api, upstream: a, match: {hosts: [api.example.com]}}\n"
                                 "  - {name: other, upstream: a}\n");

    (void)state;
    assert_string_equal(route(cfg, "api.example.com", "/", HTTP_GET), "api");
    assert_string_equal(route(cfg, "www.example.com", "/", HTTP_GET), "other");
    assert_string_equal(route(cfg, "api.example.com.evil", "/", HTTP_GET), "other");
    assert_string_equal(route(cfg, "pi.example.com", "/", HTTP_GET), "other");
    mg_config_unref(cfg);
}

static void test_host_case_insensitive(void **state)
{
    struct mg_config *cfg =
        load("  - {name: api, upstream: a, match: {hosts: [Api.Example.COM]}}\n");

    (void)state;
    assert_string_equal(route(cfg, "api.example.com", "/", HTTP_GET), "api");
    assert_string_equal(route(cfg, "API.EXAMPLE.COM", "/", HTTP_GET), "api");
    assert_string_equal(route(cfg, "aPi.ExAmPlE.cOm", "/", HTTP_GET), "api");
    mg_config_unref(cfg);
}

static void test_host_port_is_ignored(void **state)
{
    struct mg_config *cfg = load("  - {name: api, upstream: a, match: {hosts: [api.example.com]}}\n"
                                 "  - {name: v6, upstream: a, match: {hosts: [\"[::1]\"]}}\n");

    (void)state;
    assert_string_equal(route(cfg, "api.example.com:8080", "/", HTTP_GET), "api");
    assert_string_equal(route(cfg, "API.example.com:443", "/", HTTP_GET), "api");
    assert_string_equal(route(cfg, "api.example.com.", "/", HTTP_GET), "api");
    assert_string_equal(route(cfg, "api.example.com.:80", "/", HTTP_GET), "api");
    assert_string_equal(route(cfg, "[::1]:8080", "/", HTTP_GET), "v6");
    assert_string_equal(route(cfg, "[::1]", "/", HTTP_GET), "v6");
    assert_string_equal(route(cfg, "[::2]:8080", "/", HTTP_GET), "-");
    mg_config_unref(cfg);
}

static void test_wildcard_host(void **state)
{
    struct mg_config *cfg =
        load("  - {name: org, upstream: a, match: {hosts: [\"*.example.org\"]}}\n");

    (void)state;
    assert_string_equal(route(cfg, "a.example.org", "/", HTTP_GET), "org");
    assert_string_equal(route(cfg, "a.b.example.org", "/", HTTP_GET), "org");
    assert_string_equal(route(cfg, "A.Example.Org:8443", "/", HTTP_GET), "org");
    assert_string_equal(route(cfg, "example.org", "/", HTTP_GET), "-");
    assert_string_equal(route(cfg, ".example.org", "/", HTTP_GET), "-");
    assert_string_equal(route(cfg, "aexample.org", "/", HTTP_GET), "-");
    assert_string_equal(route(cfg, "a.example.org.uk", "/", HTTP_GET), "-");
    mg_config_unref(cfg);
}

static void test_missing_host(void **state)
{
    struct mg_config *cfg =
        load("  - {name: api, upstream: a, match: {hosts: [api.example.com]}}\n");
    struct mg_config *any = load("  - {name: any, upstream: a}\n");

    (void)state;
    assert_string_equal(route(cfg, NULL, "/", HTTP_GET), "-");
    assert_string_equal(route(cfg, "", "/", HTTP_GET), "-");
    assert_string_equal(route(cfg, ":80", "/", HTTP_GET), "-");
    assert_string_equal(route(any, NULL, "/", HTTP_GET), "any");
    assert_string_equal(route(any, "whatever.test", "/x", HTTP_GET), "any");
    mg_config_unref(cfg);
    mg_config_unref(any);
}

static void test_longest_prefix_wins(void **state)
{
    struct mg_config *cfg =
        load("  - {name: root, upstream: a, match: {paths: [/]}}\n"
             "  - {name: api, upstream: a, match: {paths: [/api]}}\n"
             "  - {name: orders, upstream: a, match: {paths: [/api/orders]}}\n");
    size_t len = 0;

    (void)state;
    assert_string_equal(route(cfg, NULL, "/api/orders/7", HTTP_GET), "orders");
    assert_string_equal(route(cfg, NULL, "/api/users", HTTP_GET), "api");
    assert_string_equal(route(cfg, NULL, "/", HTTP_GET), "root");
    assert_string_equal(route(cfg, NULL, "/static/x.css", HTTP_GET), "root");
    assert_non_null(mg_router_match(cfg->router, NULL, 0, "/api/orders/7", 13, HTTP_GET, &len));
    assert_int_equal(len, strlen("/api/orders"));
    mg_config_unref(cfg);
}

static void test_prefix_segment_boundary(void **state)
{
    struct mg_config *cfg = load("  - {name: orders, upstream: a, match: {paths: [/orders]}}\n"
                                 "  - {name: dir, upstream: a, match: {paths: [/static/]}}\n");

    (void)state;
    assert_string_equal(route(cfg, NULL, "/orders", HTTP_GET), "orders");
    assert_string_equal(route(cfg, NULL, "/orders/1", HTTP_GET), "orders");
    assert_string_equal(route(cfg, NULL, "/orders?x=1", HTTP_GET), "orders");
    assert_string_equal(route(cfg, NULL, "/ordersx", HTTP_GET), "-");
    assert_string_equal(route(cfg, NULL, "/order", HTTP_GET), "-");
    assert_string_equal(route(cfg, NULL, "/Orders", HTTP_GET), "-"); /* paths are case-sensitive */
    assert_string_equal(route(cfg, NULL, "/static/a.css", HTTP_GET), "dir");
    assert_string_equal(route(cfg, NULL, "/static/", HTTP_GET), "dir");
    assert_string_equal(route(cfg, NULL, "/static", HTTP_GET), "-");
    assert_string_equal(route(cfg, NULL, "/staticx", HTTP_GET), "-");
    mg_config_unref(cfg);
}

static void test_route_without_paths_matches_everything(void **state)
{
    struct mg_config *cfg = load("  - {name: all, upstream: a}\n");
    size_t len = 99;

    (void)state;
    assert_string_equal(route(cfg, "x", "/anything/at/all", HTTP_DELETE), "all");
    assert_non_null(mg_router_match(cfg->router, NULL, 0, "/a", 2, HTTP_GET, &len));
    assert_int_equal(len, 1);
    mg_config_unref(cfg);
}

static void test_methods(void **state)
{
    struct mg_config *cfg =
        load("  - {name: read, upstream: a, match: {paths: [/x], methods: [GET, HEAD]}}\n"
             "  - {name: write, upstream: a, match: {paths: [/x], methods: [POST]}}\n"
             "  - {name: any, upstream: a, match: {paths: [/]}}\n");

    (void)state;
    assert_string_equal(route(cfg, NULL, "/x", HTTP_GET), "read");
    assert_string_equal(route(cfg, NULL, "/x", HTTP_HEAD), "read");
    assert_string_equal(route(cfg, NULL, "/x", HTTP_POST), "write");
    assert_string_equal(route(cfg, NULL, "/x", HTTP_DELETE), "any"); /* falls to a shorter prefix */
    assert_string_equal(route(cfg, NULL, "/x", -1), "any");
    assert_string_equal(route(cfg, NULL, "/x", 99), "any");
    mg_config_unref(cfg);
}

static void test_method_mismatch_is_no_match(void **state)
{
    struct mg_config *cfg = load("  - {name: read, upstream: a, match: {methods: [GET]}}\n");

    (void)state;
    assert_string_equal(route(cfg, NULL, "/", HTTP_GET), "read");
    assert_string_equal(route(cfg, NULL, "/", HTTP_PUT), "-");
    mg_config_unref(cfg);
}

static void test_tie_goes_to_earlier_route(void **state)
{
    struct mg_config *cfg =
        load("  - {name: first, upstream: a, match: {paths: [/api]}}\n"
             "  - {name: second, upstream: a, match: {paths: [/api]}}\n"
             "  - {name: hosted, upstream: a, match: {hosts: [h.test], paths: [/api]}}\n");

    (void)state;
    assert_string_equal(route(cfg, "h.test", "/api", HTTP_GET), "first");
    assert_string_equal(route(cfg, NULL, "/api/x", HTTP_GET), "first");
    mg_config_unref(cfg);
}

static void test_tie_after_host_filter(void **state)
{
    struct mg_config *cfg =
        load("  - {name: hosted, upstream: a, match: {hosts: [h.test], paths: [/api]}}\n"
             "  - {name: any, upstream: a, match: {paths: [/api]}}\n");

    (void)state;
    assert_string_equal(route(cfg, "h.test", "/api", HTTP_GET), "hosted");
    assert_string_equal(route(cfg, "other.test", "/api", HTTP_GET), "any");
    assert_string_equal(route(cfg, NULL, "/api", HTTP_GET), "any");
    mg_config_unref(cfg);
}

static void test_longer_prefix_beats_host_specific_route(void **state)
{
    struct mg_config *cfg =
        load("  - {name: hosted, upstream: a, match: {hosts: [h.test], paths: [/]}}\n"
             "  - {name: deep, upstream: a, match: {paths: [/api/v1]}}\n");

    (void)state;
    assert_string_equal(route(cfg, "h.test", "/api/v1/x", HTTP_GET), "deep");
    assert_string_equal(route(cfg, "h.test", "/api/v2", HTTP_GET), "hosted");
    mg_config_unref(cfg);
}

static void test_several_hosts_and_paths_per_route(void **state)
{
    struct mg_config *cfg =
        load("  - name: multi\n"
             "    upstream: a\n"
             "    match: {hosts: [a.test, \"*.b.test\"], paths: [/one, /two/]}\n");
    size_t len = 0;

    (void)state;
    assert_string_equal(route(cfg, "a.test", "/one", HTTP_GET), "multi");
    assert_string_equal(route(cfg, "x.b.test", "/two/3", HTTP_GET), "multi");
    assert_string_equal(route(cfg, "b.test", "/one", HTTP_GET), "-");
    assert_string_equal(route(cfg, "a.test", "/three", HTTP_GET), "-");
    assert_non_null(mg_router_match(cfg->router, "a.test", 6, "/two/3", 6, HTTP_GET, &len));
    assert_int_equal(len, 5);
    mg_config_unref(cfg);
}

static void test_no_match(void **state)
{
    struct mg_config *cfg = load("  - {name: api, upstream: a, match: {paths: [/api]}}\n");
    size_t len = 42;

    (void)state;
    assert_null(mg_router_match(cfg->router, NULL, 0, "/other", 6, HTTP_GET, &len));
    assert_int_equal(len, 42); /* untouched */
    assert_null(mg_router_match(cfg->router, NULL, 0, "", 0, HTTP_GET, NULL));
    assert_null(mg_router_match(NULL, NULL, 0, "/api", 4, HTTP_GET, NULL));
    mg_config_unref(cfg);
}

static void test_path_length_is_respected(void **state)
{
    struct mg_config *cfg =
        load("  - {name: api, upstream: a, match: {hosts: [h.test], paths: [/api]}}\n");
    const char *buf = "/apix/extra", *host = "h.testx:80";

    (void)state;
    /* Not NUL-terminated where the request ends: only the given lengths count. */
    assert_non_null(mg_router_match(cfg->router, host, 6, buf, 4, HTTP_GET, NULL));
    assert_null(mg_router_match(cfg->router, host, 6, buf, 5, HTTP_GET, NULL));
    assert_null(mg_router_match(cfg->router, host, 7, buf, 4, HTTP_GET, NULL));
    assert_null(mg_router_match(cfg->router, host, 5, buf, 4, HTTP_GET, NULL));
    mg_config_unref(cfg);
}

static void test_configured_paths_are_kept_in_route_form(void **state)
{
    struct mg_config *cfg = load("  - {name: admin, upstream: a, match: {paths: [\"/%61dmin\"]}}\n"
                                 "  - {name: enc, upstream: a, match: {paths: [\"/a%2fb\"]}}\n"
                                 "  - {name: all, upstream: a}\n");

    (void)state;
    assert_string_equal(cfg->routes[0].paths[0], "/admin");
    assert_string_equal(route(cfg, NULL, "/admin/x", HTTP_GET), "admin");
    assert_string_equal(route(cfg, NULL, "/a%2Fb", HTTP_GET), "enc");
    assert_string_equal(route(cfg, NULL, "/a/b", HTTP_GET), "all");
    mg_config_unref(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_host),
        cmocka_unit_test(test_host_case_insensitive),
        cmocka_unit_test(test_host_port_is_ignored),
        cmocka_unit_test(test_wildcard_host),
        cmocka_unit_test(test_missing_host),
        cmocka_unit_test(test_longest_prefix_wins),
        cmocka_unit_test(test_prefix_segment_boundary),
        cmocka_unit_test(test_route_without_paths_matches_everything),
        cmocka_unit_test(test_methods),
        cmocka_unit_test(test_method_mismatch_is_no_match),
        cmocka_unit_test(test_tie_goes_to_earlier_route),
        cmocka_unit_test(test_tie_after_host_filter),
        cmocka_unit_test(test_longer_prefix_beats_host_specific_route),
        cmocka_unit_test(test_several_hosts_and_paths_per_route),
        cmocka_unit_test(test_no_match),
        cmocka_unit_test(test_path_length_is_respected),
        cmocka_unit_test(test_configured_paths_are_kept_in_route_form),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
