/*
 * Unit tests of the scalar parsers of gateway/config/values.c: durations,
 * sizes and addresses, including their edge cases (overflow, units, ports).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "config/config.h"

static uint64_t duration(const char *s)
{
    uint64_t v = 12345;

    assert_int_equal(mg_parse_duration_ms(s, &v), 0);
    return v;
}

static void bad_duration(const char *s)
{
    uint64_t v = 12345;

    if (mg_parse_duration_ms(s, &v) != -1)
        fail_msg("duration '%s' accepted as %llu", s ? s : "(null)", (unsigned long long)v);
}

static void test_duration_units(void **state)
{
    (void)state;
    assert_int_equal(duration("250ms"), 250);
    assert_int_equal(duration("10s"), 10000);
    assert_int_equal(duration("5m"), 300000);
    assert_int_equal(duration("24h"), 86400000);
    assert_int_equal(duration("0s"), 0);
    assert_int_equal(duration("007ms"), 7);
}

static void test_duration_rejects_bare_number(void **state)
{
    (void)state;
    bad_duration("10");
    bad_duration("0");
}

static void test_duration_rejects_bad_syntax(void **state)
{
    (void)state;
    bad_duration("");
    bad_duration(NULL);
    bad_duration("s");
    bad_duration("-1s");
    bad_duration("+1s");
    bad_duration("1.5s");
    bad_duration("10 s");
    bad_duration(" 10s");
    bad_duration("10s ");
    bad_duration("10S");
    bad_duration("10sec");
    bad_duration("1d");
    bad_duration("1h30m");
    bad_duration("abc");
}

static void test_duration_overflow(void **state)
{
    (void)state;
    assert_true(duration("18446744073709551615ms") == UINT64_MAX);
    bad_duration("18446744073709551616ms");
    bad_duration("18446744073709551615s");
    bad_duration("5124095576030432h"); /* * 3600000 > 2^64 */
}

static uint64_t size(const char *s)
{
    uint64_t v = 12345;

    assert_int_equal(mg_parse_size(s, &v), 0);
    return v;
}

static void bad_size(const char *s)
{
    uint64_t v;

    if (mg_parse_size(s, &v) != -1)
        fail_msg("size '%s' accepted as %llu", s ? s : "(null)", (unsigned long long)v);
}

static void test_size_suffixes(void **state)
{
    (void)state;
    assert_int_equal(size("512"), 512);
    assert_int_equal(size("0"), 0);
    assert_int_equal(size("16k"), 16384);
    assert_int_equal(size("16K"), 16384);
    assert_int_equal(size("1m"), 1048576);
    assert_int_equal(size("10M"), 10485760);
    assert_true(size("1g") == 1073741824ull);
    assert_true(size("4G") == 4294967296ull);
}

static void test_size_rejects_bad_syntax(void **state)
{
    (void)state;
    bad_size("");
    bad_size(NULL);
    bad_size("k");
    bad_size("1kb");
    bad_size("1t");
    bad_size("-1");
    bad_size("1.5k");
    bad_size(" 1k");
    bad_size("1 k");
}

static void test_size_overflow(void **state)
{
    (void)state;
    assert_true(size("17179869183g") == 17179869183ull << 30);
    bad_size("17179869184g"); /* 2^34 * 2^30 = 2^64 */
    bad_size("99999999999999999999");
}

static const struct sockaddr_in *v4(const char *s)
{
    static struct sockaddr_storage ss;
    socklen_t len = 0;

    assert_int_equal(mg_parse_address(s, &ss, &len), 0);
    assert_int_equal(ss.ss_family, AF_INET);
    assert_int_equal(len, sizeof(struct sockaddr_in));
    return (const struct sockaddr_in *)&ss;
}

static void bad_address(const char *s)
{
    struct sockaddr_storage ss;
    socklen_t len;

    if (mg_parse_address(s, &ss, &len) != -1)
        fail_msg("address '%s' accepted", s ? s : "(null)");
}

static void test_address_ipv4(void **state)
{
    const struct sockaddr_in *sin = v4("1.2.3.4:80");

    (void)state;
    assert_int_equal(ntohs(sin->sin_port), 80);
    assert_int_equal(ntohl(sin->sin_addr.s_addr), 0x01020304);
    assert_int_equal(ntohs(v4("127.0.0.1:65535")->sin_port), 65535);
    assert_int_equal(ntohs(v4("127.0.0.1:1")->sin_port), 1);
}

static void test_address_any(void **state)
{
    (void)state;
    assert_int_equal(v4("*:80")->sin_addr.s_addr, htonl(INADDR_ANY));
    assert_int_equal(ntohs(v4("*:80")->sin_port), 80);
    assert_int_equal(v4(":8080")->sin_addr.s_addr, htonl(INADDR_ANY));
    assert_int_equal(v4("0.0.0.0:80")->sin_addr.s_addr, htonl(INADDR_ANY));
}

static void test_address_ipv6(void **state)
{
    struct sockaddr_storage ss;
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&ss;
    socklen_t len = 0;

    (void)state;
    assert_int_equal(mg_parse_address("[::1]:443", &ss, &len), 0);
    assert_int_equal(ss.ss_family, AF_INET6);
    assert_int_equal(len, sizeof(struct sockaddr_in6));
    assert_int_equal(ntohs(sin6->sin6_port), 443);
    assert_true(IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr));
    assert_int_equal(mg_parse_address("[::]:80", &ss, &len), 0);
    assert_true(IN6_IS_ADDR_UNSPECIFIED(&sin6->sin6_addr));
}

static void test_address_localhost_resolves(void **state)
{
    struct sockaddr_storage ss;
    socklen_t len = 0;

    (void)state;
    assert_int_equal(mg_parse_address("localhost:9000", &ss, &len), 0);
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)&ss;
        assert_int_equal(ntohs(sin->sin_port), 9000);
        assert_int_equal(ntohl(sin->sin_addr.s_addr) >> 24, 127);
    } else {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&ss;
        assert_int_equal(ss.ss_family, AF_INET6);
        assert_int_equal(ntohs(sin6->sin6_port), 9000);
        assert_true(IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr));
    }
}

static void test_address_port_range(void **state)
{
    (void)state;
    bad_address("1.2.3.4:0");
    bad_address("1.2.3.4:65536");
    bad_address("1.2.3.4:99999999999999999999999");
    bad_address("1.2.3.4:-1");
    bad_address("1.2.3.4:+80");
    bad_address("1.2.3.4:8o");
    bad_address("1.2.3.4:");
}

static void test_address_rejects_bad_forms(void **state)
{
    (void)state;
    bad_address(NULL);
    bad_address("");
    bad_address("1.2.3.4");
    bad_address("localhost");
    bad_address("[::1]");
    bad_address("[::1]80");
    bad_address("[::1:80");
    bad_address("::1:80");     /* IPv6 needs brackets */
    bad_address("[zz::1]:80"); /* not an IPv6 literal */
    bad_address("10.1:80");    /* inet_aton's legacy short form */
    bad_address("1.2.3.256:80");
    bad_address("bad host:80");
    bad_address("a/b:80");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_duration_units),
        cmocka_unit_test(test_duration_rejects_bare_number),
        cmocka_unit_test(test_duration_rejects_bad_syntax),
        cmocka_unit_test(test_duration_overflow),
        cmocka_unit_test(test_size_suffixes),
        cmocka_unit_test(test_size_rejects_bad_syntax),
        cmocka_unit_test(test_size_overflow),
        cmocka_unit_test(test_address_ipv4),
        cmocka_unit_test(test_address_any),
        cmocka_unit_test(test_address_ipv6),
        cmocka_unit_test(test_address_localhost_resolves),
        cmocka_unit_test(test_address_port_range),
        cmocka_unit_test(test_address_rejects_bad_forms),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
