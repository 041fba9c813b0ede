/* tests for gateway/resilience/retry_after.c: delta-seconds, IMF-fixdate
 * against a given clock, and what is not a Retry-After value. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "resilience/retry_after.h"

/* Sun, 06 Nov 1994 08:49:37 GMT (RFC 9110's example) */
#define EXAMPLE_S 784111777

static bool parse(const char *s, int64_t now, uint64_t *ms)
{
    return mg_retry_after_parse((struct mg_slice){s, strlen(s)}, now, ms);
}

static void delta_seconds(void **state)
{
    uint64_t ms = 7;
    (void)state;
    assert_true(parse("120", 0, &ms));
    assert_int_equal(ms, 120000);
    assert_true(parse(" 0 ", 0, &ms));
    assert_int_equal(ms, 0);
}

static void http_date(void **state)
{
    uint64_t ms = 7;
    (void)state;
    assert_true(parse("Sun, 06 Nov 1994 08:49:37 GMT", EXAMPLE_S - 30, &ms));
    assert_int_equal(ms, 30000);
    assert_true(parse("Sun, 06 Nov 1994 08:49:37 GMT", EXAMPLE_S + 5, &ms));
    assert_int_equal(ms, 0); /* in the past: no wait */
    assert_true(parse("Thu, 01 Jan 1970 00:00:10 GMT", 0, &ms));
    assert_int_equal(ms, 10000);
    assert_true(parse("Tue, 29 Feb 2028 23:59:59 GMT", 1835481599 - 1, &ms));
    assert_int_equal(ms, 1000);
}

static void refused(void **state)
{
    uint64_t ms;
    (void)state;
    assert_false(parse("", 0, &ms));
    assert_false(parse("-5", 0, &ms));
    assert_false(parse("1.5", 0, &ms));
    assert_false(parse("12345678901", 0, &ms));                    /* absurd: more than 9 digits */
    assert_false(parse("Sunday, 06-Nov-94 08:49:37 GMT", 0, &ms)); /* obsolete form */
    assert_false(parse("Sun, 06 Foo 1994 08:49:37 GMT", 0, &ms));
    assert_false(parse("Sun, 06 Nov 1994 25:49:37 GMT", 0, &ms));
    assert_false(parse("Sun, 06 Nov 1994 08:49:37 UTC", 0, &ms));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(delta_seconds),
        cmocka_unit_test(http_date),
        cmocka_unit_test(refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
