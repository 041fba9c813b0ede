/* tests for gateway/net/cidr.c: address blocks, IPv4, IPv6 and IPv4-mapped. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "net/cidr.h"

static bool in(const char *block, const char *addr)
{
    struct mg_cidr c;
    struct mg_ip ip;
    const char *why;
    if (!mg_cidr_parse(block, &c, &why))
        fail_msg("block %s: %s", block, why);
    if (!mg_ip_parse(addr, strlen(addr), &ip))
        fail_msg("address %s", addr);
    return mg_cidr_match(&c, 1, &ip);
}

static void ipv4_blocks(void **state)
{
    assert_true(in("10.0.0.0/8", "10.255.1.2"));
    assert_false(in("10.0.0.0/8", "11.0.0.1"));
    assert_true(in("192.168.4.0/22", "192.168.7.255"));
    assert_false(in("192.168.4.0/22", "192.168.8.0"));
    assert_false(in("192.168.4.0/22", "192.168.3.255"));
    assert_true(in("0.0.0.0/0", "203.0.113.9"));
    assert_true(in("203.0.113.9", "203.0.113.9")); /* a bare address: one host */
    assert_false(in("203.0.113.9", "203.0.113.8"));
    assert_true(in("203.0.113.9/32", "203.0.113.9"));
    assert_false(in("0.0.0.0/0", "2001:db8::1")); /* IPv4 blocks hold no IPv6 */
}

static void ipv6_blocks(void **state)
{
    assert_true(in("2001:db8::/32", "2001:db8:ffff::1"));
    assert_false(in("2001:db8::/32", "2001:db9::1"));
    assert_true(in("::1/128", "::1"));
    assert_false(in("::1/128", "::2"));
    assert_true(in("fe80::/10", "febf::1"));
    assert_false(in("fe80::/10", "fec0::1"));
    assert_true(in("::/0", "2001:db8::1"));
    assert_true(in("::/0", "10.0.0.1")); /* everything, mapped IPv4 included */
}

static void ipv4_mapped(void **state)
{
    assert_true(in("10.0.0.0/8", "::ffff:10.1.2.3"));
    assert_false(in("10.0.0.0/8", "::ffff:11.1.2.3"));
    assert_true(in("::ffff:10.0.0.0/104", "10.9.9.9"));
    char out[64];
    struct mg_ip ip;
    assert_true(mg_ip_parse("::ffff:10.1.2.3", 15, &ip));
    mg_ip_text(&ip, out, sizeof out);
    assert_string_equal(out, "10.1.2.3");
    assert_true(mg_ip_parse("2001:DB8:0:0::1", 15, &ip));
    mg_ip_text(&ip, out, sizeof out);
    assert_string_equal(out, "2001:db8::1");
}

static void bad_blocks(void **state)
{
    static const char *const bad[] = {
        "",           "10.0.0.0/",   "10.0.0.0/33", "10.0.0.0/08",    "10.0.0.1/8",
        "10/8",       "10.0.0.0/8x", "::/129",      "2001:db8::1/32", "example.com",
        "1.2.3.4/-1", "[::1]/128",   "fe80::1%lo",  "10.0.0.0/8/8",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        struct mg_cidr c;
        const char *why = NULL;
        if (mg_cidr_parse(bad[i], &c, &why))
            fail_msg("accepted %s", bad[i]);
        assert_non_null(why);
    }
    struct mg_ip ip;
    assert_false(mg_ip_parse("1.2.3", 5, &ip));
    assert_false(mg_ip_parse("01.2.3.4", 8, &ip));
    assert_false(mg_ip_parse("", 0, &ip));
    assert_false(mg_ip_parse("unknown", 7, &ip));
}

static void a_set_matches_any_member(void **state)
{
    struct mg_cidr set[3];
    const char *why;
    assert_true(mg_cidr_parse("10.0.0.0/8", &set[0], &why));
    assert_true(mg_cidr_parse("192.168.0.0/16", &set[1], &why));
    assert_true(mg_cidr_parse("fd00::/8", &set[2], &why));
    struct mg_ip ip;
    assert_true(mg_ip_parse("fd12::1", 7, &ip));
    assert_true(mg_cidr_match(set, 3, &ip));
    assert_true(mg_ip_parse("192.168.1.1", 11, &ip));
    assert_true(mg_cidr_match(set, 3, &ip));
    assert_false(mg_cidr_match(set, 1, &ip));
    assert_false(mg_cidr_match(set, 0, &ip));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ipv4_blocks),
        cmocka_unit_test(ipv6_blocks),
        cmocka_unit_test(ipv4_mapped),
        cmocka_unit_test(bad_blocks),
        cmocka_unit_test(a_set_matches_any_member),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
