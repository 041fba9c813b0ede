/* tests for gateway/http/forwarded.c: the real client address from trusted
 * X-Forwarded-For hops, the joined lists and RFC 7239 nodes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "http/forwarded.h"
#include "net/cidr.h"

static struct mg_header fields[8];
static struct mg_headers hdrs = {fields, 0, 8};
static struct mg_cidr trusted[2];

static void add(const char *name, const char *value, unsigned flags)
{
    fields[hdrs.n++] = (struct mg_header){{name, strlen(name)}, {value, strlen(value)}, flags};
}

static int setup(void **state)
{
    (void)state;
    const char *why;
    hdrs.n = 0;
    assert_true(mg_cidr_parse("127.0.0.0/8", &trusted[0], &why));
    assert_true(mg_cidr_parse("10.0.0.0/8", &trusted[1], &why));
    return 0;
}

static const char *client(const char *peer, size_t ntrusted)
{
    static char out[MG_FORWARDED_IP_MAX];
    mg_forwarded_client(&hdrs, peer, trusted, ntrusted, out, sizeof out);
    return out[0] ? out : peer;
}

static void untrusted_peer_is_the_client(void **state)
{
    (void)state;
    add("X-Forwarded-For", "6.6.6.6", 0);
    assert_string_equal(client("203.0.113.1", 2), "203.0.113.1");
    assert_string_equal(client("127.0.0.1", 0), "127.0.0.1"); /* nothing trusted */
}

static void walks_from_the_right_past_trusted_hops(void **state)
{
    (void)state;
    add("x-forwarded-for", "1.1.1.1, 2.2.2.2", 0);
    add("Via", "1.1 a", 0);
    add("X-FORWARDED-FOR", "10.0.0.3,\t10.0.0.4", 0);
    assert_string_equal(client("127.0.0.1", 2), "2.2.2.2");
    assert_string_equal(client("::ffff:127.0.0.1", 2), "2.2.2.2");
}

static void forms_and_stops(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"[2001:db8::1]:8443", "2001:db8::1"},
        {"2001:DB8::2", "2001:db8::2"},
        {"192.0.2.1:80", "192.0.2.1"},
        {"::ffff:192.0.2.2", "192.0.2.2"},
        {" , 192.0.2.3 ,, ", "192.0.2.3"},
        {"192.0.2.4, unknown, 10.0.0.9", "10.0.0.9"},
        {"192.0.2.5, _hidden", "127.0.0.1"},
        {"10.1.1.1, 10.2.2.2", "10.1.1.1"},
        {"", "127.0.0.1"},
        {"[2001:db8::1", "127.0.0.1"},
        {"[::1]x", "127.0.0.1"},
        {"1.2.3.4:5:6", "127.0.0.1"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        hdrs.n = 0;
        add("X-Forwarded-For", cases[i][0], 0);
        if (strcmp(client("127.0.0.1", 2), cases[i][1]) != 0)
            fail_msg("'%s': got %s, want %s", cases[i][0], client("127.0.0.1", 2), cases[i][1]);
    }
}

static void hop_by_hop_lines_are_not_read(void **state)
{
    (void)state;
    add("X-Forwarded-For", "6.6.6.6", MG_HDR_HOP);
    assert_string_equal(client("127.0.0.1", 2), "127.0.0.1");
}

static void lists_join_and_nodes_quote(void **state)
{
    (void)state;
    add("Forwarded", "for=a", 0);
    add("X-Forwarded-For", "", 0);
    add("forwarded", "for=b", 0);
    add("Forwarded", "for=c", MG_HDR_HOP);
    char out[128], *e;
    bool any;
    e = mg_forwarded_put_list(out, &hdrs, mg_forwarded_is_forwarded, &any);
    *e = '\0';
    assert_true(any);
    assert_string_equal(out, "for=a, for=b");
    e = mg_forwarded_put_list(out, &hdrs, mg_forwarded_is_xff, &any);
    assert_false(any);
    assert_true(e == out);
    e = mg_forwarded_put_node(out, "2001:db8::1");
    *e = '\0';
    assert_string_equal(out, "\"[2001:db8::1]\"");
    e = mg_forwarded_put_node(out, "192.0.2.1");
    *e = '\0';
    assert_string_equal(out, "192.0.2.1");
    e = mg_forwarded_put_node(out, "");
    *e = '\0';
    assert_string_equal(out, "unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(untrusted_peer_is_the_client, setup),
        cmocka_unit_test_setup(walks_from_the_right_past_trusted_hops, setup),
        cmocka_unit_test_setup(forms_and_stops, setup),
        cmocka_unit_test_setup(hop_by_hop_lines_are_not_read, setup),
        cmocka_unit_test_setup(lists_join_and_nodes_quote, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
