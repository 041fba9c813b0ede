/*
 * Unit tests of service discovery's pure parts (gateway/discovery/): TTL
 * clamping and retry delays, target sets (dedupe, order, equality, diff), the
 * derived snapshot (routes re-pointed, literal targets kept, discovery
 * replacing targets), and the configuration of `resolver`, `discovery` and
 * host-name targets. The DNS side runs against a real dnsmasq in
 * tests/integration/test_discovery.py.
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

#include <cmocka.h>

#include "config/config.h"
#include "discovery/derive.h"
#include "discovery/targetset.h"
#include "router.h"

static struct sockaddr_storage v4(const char *ip)
{
    struct sockaddr_storage ss = {0};
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    in->sin_family = AF_INET;
    assert_int_equal(inet_pton(AF_INET, ip, &in->sin_addr), 1);
    return ss;
}

static struct sockaddr_storage v6(const char *ip)
{
    struct sockaddr_storage ss = {0};
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    in6->sin6_family = AF_INET6;
    assert_int_equal(inet_pton(AF_INET6, ip, &in6->sin6_addr), 1);
    return ss;
}

static void add(struct mg_tset *s, const char *ip, uint16_t port, uint32_t w)
{
    struct sockaddr_storage ss = strchr(ip, ':') ? v6(ip) : v4(ip);
    assert_true(mg_tset_add(s, (struct sockaddr *)&ss, port, w, "h.test"));
}

static void test_ttl_clamped(void **state)
{
    (void)state;
    assert_int_equal(mg_tset_clamp_ttl_ms(0, 1000, 300000), 1000);       /* below min_ttl */
    assert_int_equal(mg_tset_clamp_ttl_ms(30, 1000, 300000), 30000);     /* inside */
    assert_int_equal(mg_tset_clamp_ttl_ms(86400, 1000, 300000), 300000); /* above max_ttl */
    assert_int_equal(mg_tset_clamp_ttl_ms(UINT32_MAX, 1000, 300000), 300000);
    assert_int_equal(mg_tset_clamp_ttl_ms(5, 5000, 5000), 5000);
}

static void test_retry_bounded(void **state)
{
    (void)state;
    assert_int_equal(mg_tset_retry_ms(1, 1000, 300000), 1000);
    assert_int_equal(mg_tset_retry_ms(2, 1000, 300000), 2000);
    assert_int_equal(mg_tset_retry_ms(5, 1000, 300000), 16000);
    assert_int_equal(mg_tset_retry_ms(6, 1000, 300000), 30000); /* capped at 30 s */
    assert_int_equal(mg_tset_retry_ms(1000, 1000, 300000), 30000);
    assert_int_equal(mg_tset_retry_ms(9, 1000, 4000), 4000);    /* max_ttl below the cap */
    assert_int_equal(mg_tset_retry_ms(3, 60000, 60000), 60000); /* min_ttl above the cap */
}

static void test_tset_text_and_dedupe(void **state)
{
    struct mg_tset s = {0};
    (void)state;
    add(&s, "10.0.0.2", 8080, 3);
    add(&s, "2001:db8::1", 8080, 1);
    add(&s, "10.0.0.2", 8080, 7); /* the same address again: first weight kept */
    add(&s, "10.0.0.2", 9090, 1); /* another port: another target */
    assert_int_equal(s.n, 3);
    assert_string_equal(s.v[0].text, "10.0.0.2:8080");
    assert_int_equal(s.v[0].weight, 3);
    assert_string_equal(s.v[1].text, "[2001:db8::1]:8080");
    assert_int_equal(ntohs(((struct sockaddr_in6 *)&s.v[1].addr)->sin6_port), 8080);
    assert_int_equal(s.v[1].addrlen, sizeof(struct sockaddr_in6));
    struct sockaddr_storage un = {.ss_family = AF_UNIX};
    assert_false(mg_tset_add(&s, (struct sockaddr *)&un, 1, 1, NULL));
    mg_tset_clear(&s);
    assert_null(s.v);
}

static void test_tset_order_equal_diff(void **state)
{
    struct mg_tset a = {0}, b = {0};
    size_t added, removed;
    (void)state;
    add(&a, "10.0.0.3", 80, 1);
    add(&a, "10.0.0.1", 80, 1);
    add(&a, "10.0.0.2", 80, 1);
    add(&b, "10.0.0.2", 80, 1);
    add(&b, "10.0.0.1", 80, 1);
    add(&b, "10.0.0.3", 80, 1);
    mg_tset_sort(&a);
    mg_tset_sort(&b);
    assert_true(mg_tset_equal(&a, &b)); /* DNS answer order does not matter */
    assert_string_equal(a.v[0].text, "10.0.0.1:80");
    mg_tset_diff(&a, &b, &added, &removed);
    assert_int_equal(added, 0);
    assert_int_equal(removed, 0);

    /* 3 -> 5 -> 2 targets, as a deployment scales. */
    add(&b, "10.0.0.4", 80, 1);
    add(&b, "10.0.0.5", 80, 1);
    mg_tset_sort(&b);
    assert_false(mg_tset_equal(&a, &b));
    mg_tset_diff(&a, &b, &added, &removed);
    assert_int_equal(added, 2);
    assert_int_equal(removed, 0);
    struct mg_tset c = {0};
    add(&c, "10.0.0.5", 80, 1);
    add(&c, "10.0.0.1", 80, 1);
    mg_tset_sort(&c);
    mg_tset_diff(&b, &c, &added, &removed);
    assert_int_equal(added, 0);
    assert_int_equal(removed, 3);

    /* A weight change is a change, though no address came or went. */
    struct mg_tset d = {0};
    add(&d, "10.0.0.5", 80, 2);
    add(&d, "10.0.0.1", 80, 1);
    mg_tset_sort(&d);
    assert_false(mg_tset_equal(&c, &d));
    mg_tset_diff(&c, &d, &added, &removed);
    assert_int_equal(added + removed, 0);

    mg_tset_move(&a, &d); /* a's entries freed, d emptied */
    assert_int_equal(a.n, 2);
    assert_int_equal(d.n, 0);
    assert_null(d.v);
    mg_tset_clear(&a);
    mg_tset_clear(&b);
    mg_tset_clear(&c);
}

static struct mg_config *load(const char *yaml)
{
    char err[512];
    struct mg_config *cfg = mg_config_load_string(yaml, strlen(yaml), "t.yaml", err, sizeof(err));
    if (!cfg)
        fail_msg("unexpected error: %s", err);
    return cfg;
}

static void expect_error(const char *yaml, const char *want)
{
    char err[512];
    struct mg_config *cfg = mg_config_load_string(yaml, strlen(yaml), "t.yaml", err, sizeof(err));
    if (cfg)
        fail_msg("expected an error containing '%s'", want);
    if (!strstr(err, want))
        fail_msg("expected '%s' in: %s", want, err);
}

#define LISTEN "listen: [\"127.0.0.1:8080\"]\n"

static void test_config_defaults_and_names(void **state)
{
    (void)state;
    struct mg_config *cfg =
        load(LISTEN "upstreams:\n"
                    "  a:\n"
                    "    targets: [{address: \"orders.svc.local:8080\", weight: 2},"
                    " {address: \"127.0.0.1:9001\"}]\n"
                    "  b:\n"
                    "    targets: [{address: \"127.0.0.1:9002\"}]\n"
                    "routes:\n"
                    "  - {name: r, upstream: a}\n");
    assert_int_equal(cfg->resolver.nservers, 0); /* system */
    assert_int_equal(cfg->resolver.min_ttl_ms, 1000);
    assert_int_equal(cfg->resolver.max_ttl_ms, 300000);
    assert_int_equal(cfg->resolver.timeout_ms, 2000);
    assert_int_equal(cfg->resolver.family, MG_FAMILY_ANY);
    const struct mg_target_conf *t = &cfg->upstreams[0].targets[0];
    assert_string_equal(t->host, "orders.svc.local"); /* kept, not resolved at load */
    assert_int_equal(t->port, 8080);
    assert_int_equal(t->weight, 2);
    assert_int_equal(t->address.addrlen, 0);
    assert_null(cfg->upstreams[0].targets[1].host);
    assert_true(cfg->upstreams[0].dynamic);
    assert_false(cfg->upstreams[1].dynamic);
    assert_int_equal(cfg->upstreams[0].discovery.type, MG_DISCOVERY_NONE);
    mg_config_unref(cfg);

    cfg = load(LISTEN "redis: {address: \"redis.svc.local:6380\"}\n"
                      "upstreams:\n  a: {targets: [{address: \"127.0.0.1:1\"}]}\n"
                      "routes:\n  - {name: r, upstream: a}\n");
    assert_string_equal(cfg->redis.host, "redis.svc.local");
    assert_int_equal(cfg->redis.port, 6380);
    assert_string_equal(cfg->redis.address.text, "redis.svc.local:6380");
    mg_config_unref(cfg);
    cfg = load(LISTEN "redis: {db: 1}\n" /* the default address is a literal */
                      "upstreams:\n  a: {targets: [{address: \"127.0.0.1:1\"}]}\n"
                      "routes:\n  - {name: r, upstream: a}\n");
    assert_null(cfg->redis.host);
    assert_string_equal(cfg->redis.address.text, "127.0.0.1:6379");
    assert_int_equal(cfg->redis.address.addr.ss_family, AF_INET);
    mg_config_unref(cfg);
}

static void test_config_resolver_and_srv(void **state)
{
    (void)state;
    struct mg_config *cfg =
        load(LISTEN "resolver: {servers: [\"127.0.0.1:5353\", \"10.0.0.53\", \"[::1]:53\"],"
                    " min_ttl: 2s, max_ttl: 1m, timeout: 500ms, family: ipv4}\n"
                    "upstreams:\n"
                    "  a:\n"
                    "    discovery: {type: srv, name: _http._tcp.orders.default.svc,"
                    " required: true}\n"
                    "routes:\n"
                    "  - {name: r, upstream: a}\n");
    assert_int_equal(cfg->resolver.nservers, 3);
    assert_string_equal(cfg->resolver.servers[0], "127.0.0.1:5353");
    assert_string_equal(cfg->resolver.servers[1], "10.0.0.53:53");
    assert_int_equal(cfg->resolver.min_ttl_ms, 2000);
    assert_int_equal(cfg->resolver.max_ttl_ms, 60000);
    assert_int_equal(cfg->resolver.timeout_ms, 500);
    assert_int_equal(cfg->resolver.family, MG_FAMILY_IPV4);
    const struct mg_upstream_conf *up = &cfg->upstreams[0];
    assert_int_equal(up->discovery.type, MG_DISCOVERY_SRV);
    assert_string_equal(up->discovery.name, "_http._tcp.orders.default.svc");
    assert_true(up->discovery.required);
    assert_int_equal(up->ntargets, 0);
    assert_true(up->dynamic);
    mg_config_unref(cfg);
}

static void test_config_errors(void **state)
{
    (void)state;
    expect_error(LISTEN "upstreams:\n  a: {keepalive: 1}\nroutes:\n  - {name: r, upstream: a}\n",
                 "t.yaml:3:6: upstreams.a: needs targets or discovery");
    expect_error(LISTEN "resolver: {min_ttl: 10s, max_ttl: 1s}\n"
                        "upstreams:\n  a: {targets: [{address: \"h:1\"}]}\n"
                        "routes:\n  - {name: r, upstream: a}\n",
                 "max_ttl (1000ms) must not be less than min_ttl (10000ms)");
    expect_error(LISTEN "resolver: {servers: [\"dns.example:53\"]}\n"
                        "upstreams:\n  a: {targets: [{address: \"h:1\"}]}\n"
                        "routes:\n  - {name: r, upstream: a}\n",
                 "resolver.servers[0]: invalid DNS server 'dns.example:53'");
    expect_error(LISTEN "resolver: {family: ipx}\n"
                        "upstreams:\n  a: {targets: [{address: \"h:1\"}]}\n"
                        "routes:\n  - {name: r, upstream: a}\n",
                 "resolver.family");
    expect_error(LISTEN "upstreams:\n  a: {discovery: {type: srv}}\n"
                        "routes:\n  - {name: r, upstream: a}\n",
                 "upstreams.a.discovery");
    expect_error(LISTEN "upstreams:\n  a: {discovery: {name: \"bad name\"}}\n"
                        "routes:\n  - {name: r, upstream: a}\n",
                 "invalid DNS name 'bad name'");
    expect_error(LISTEN "upstreams:\n  a: {targets: [{address: \"bad/host:80\"}]}\n"
                        "routes:\n  - {name: r, upstream: a}\n",
                 "invalid host 'bad/host'");
    expect_error(LISTEN "upstreams:\n  a: {targets: [{address: \"host:0\"}]}\n"
                        "routes:\n  - {name: r, upstream: a}\n",
                 "port must be 1..65535");
    expect_error(LISTEN "upstreams:\n  a: {targets: [{address: \"10.1:80\"}]}\n"
                        "routes:\n  - {name: r, upstream: a}\n",
                 "invalid IPv4 address '10.1'");
}

static void test_derive(void **state)
{
    (void)state;
    struct mg_config *base = load(LISTEN "upstreams:\n"
                                         "  a:\n"
                                         "    targets: [{address: \"127.0.0.1:9001\"},"
                                         " {address: \"orders.test:8080\", weight: 3}]\n"
                                         "  b:\n"
                                         "    targets: [{address: \"127.0.0.1:9002\"}]\n"
                                         "    discovery: {name: _http._tcp.b.test}\n"
                                         "  c:\n"
                                         "    targets: [{address: \"127.0.0.1:9003\"}]\n"
                                         "routes:\n"
                                         "  - {name: ra, match: {paths: [/a]}, upstream: a}\n"
                                         "  - {name: rb, match: {paths: [/b]}, upstream: b}\n"
                                         "  - {name: rc, upstream: c}\n");
    struct mg_tset host = {0}, srv = {0};
    add(&host, "10.0.0.2", 8080, 3);
    add(&host, "127.0.0.1", 9001, 3); /* also listed literally: not repeated */
    add(&srv, "10.0.1.1", 7001, 5);
    struct mg_derived_source src[] = {{0, "orders.test", &host}, {1, "_http._tcp.b.test", &srv}};
    struct mg_config *cfg = mg_discovery_derive(base, src, 2);
    assert_ptr_equal(cfg->base, base);
    assert_int_equal(cfg->version, base->version);

    const struct mg_upstream_conf *a = &cfg->upstreams[0];
    assert_int_equal(a->ntargets, 2);
    assert_string_equal(a->targets[0].address.text, "127.0.0.1:9001");
    assert_null(a->targets[0].source);
    assert_string_equal(a->targets[1].address.text, "10.0.0.2:8080");
    assert_int_equal(a->targets[1].weight, 3);
    assert_string_equal(a->targets[1].source, "orders.test");
    assert_string_equal(a->targets[1].name, "h.test"); /* for TLS SNI */
    assert_int_equal(a->targets[1].address.addrlen, sizeof(struct sockaddr_in));

    const struct mg_upstream_conf *b = &cfg->upstreams[1];
    assert_int_equal(b->ntargets, 1); /* discovery replaces the literal targets */
    assert_string_equal(b->targets[0].address.text, "10.0.1.1:7001");
    assert_int_equal(b->targets[0].weight, 5);

    assert_ptr_equal(cfg->upstreams[2].targets, base->upstreams[2].targets); /* untouched */
    for (size_t r = 0; r < cfg->nroutes; r++) /* routes point into the derived upstreams */
        assert_ptr_equal(cfg->routes[r].upstream, &cfg->upstreams[r]);
    assert_non_null(cfg->router);
    assert_ptr_not_equal(cfg->router, base->router);

    /* No set yet (a name that does not resolve): no targets. */
    struct mg_tset none = {0};
    struct mg_derived_source empty[] = {{1, "_http._tcp.b.test", &none}};
    struct mg_config *cfg2 = mg_discovery_derive(base, empty, 1);
    assert_int_equal(cfg2->upstreams[1].ntargets, 0);
    assert_int_equal(cfg2->upstreams[0].ntargets, 1); /* the literal one only */

    mg_config_unref(base); /* the derived ones keep it alive */
    assert_string_equal(cfg->upstreams[2].targets[0].address.text, "127.0.0.1:9003");
    mg_config_unref(cfg);
    mg_config_unref(cfg2);
    mg_tset_clear(&host);
    mg_tset_clear(&srv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ttl_clamped),
        cmocka_unit_test(test_retry_bounded),
        cmocka_unit_test(test_tset_text_and_dedupe),
        cmocka_unit_test(test_tset_order_equal_diff),
        cmocka_unit_test(test_config_defaults_and_names),
        cmocka_unit_test(test_config_resolver_and_srv),
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_derive),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
