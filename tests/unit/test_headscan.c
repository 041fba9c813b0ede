/* tests for gateway/http/headscan.c: head boundaries and the three checks Debian's
 * llhttp 8.1.0 leaves to us (bare CR, obs-fold, whitespace before colon). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "http/headscan.h"

static enum mg_headscan_result scan_all(const char *s, size_t limit, size_t *consumed)
{
    struct mg_headscan hs;
    mg_headscan_init(&hs, limit);
    return mg_headscan_feed(&hs, s, strlen(s), consumed);
}

static void finds_end_of_head_and_leaves_body(void **state)
{
    const char *req = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi";
    size_t used = 0;
    assert_int_equal(scan_all(req, 1024, &used), MG_HEADSCAN_DONE);
    assert_int_equal(used, strlen(req) - 2);
}

static void head_split_in_every_place_gives_same_result(void **state)
{
    const char *req = "GET /x HTTP/1.1\r\nHost: a\r\nX-A: b c\r\n\r\n";
    size_t n = strlen(req);
    for (size_t cut = 0; cut <= n; cut++) {
        struct mg_headscan hs;
        size_t used1 = 0, used2 = 0;
        mg_headscan_init(&hs, 1024);
        enum mg_headscan_result r = mg_headscan_feed(&hs, req, cut, &used1);
        if (cut < n) {
            assert_int_equal(r, MG_HEADSCAN_MORE);
            assert_int_equal(used1, cut);
            r = mg_headscan_feed(&hs, req + cut, n - cut, &used2);
        }
        assert_int_equal(r, MG_HEADSCAN_DONE);
        assert_int_equal(used1 + used2, n);
    }
}

static void rejects_bare_cr_ending_head(void **state)
{
    size_t used;
    assert_int_equal(scan_all("GET / HTTP/1.1\r\nHost: a\r\n\rGET / HTTP/1.1\r\n\r\n", 1024, &used),
                     MG_HEADSCAN_BARE_CR);
}

static void rejects_bare_cr_inside_value(void **state)
{
    size_t used;
    assert_int_equal(scan_all("GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", 1024, &used),
                     MG_HEADSCAN_BARE_CR);
}

static void rejects_bare_lf(void **state)
{
    size_t used;
    assert_int_equal(scan_all("GET / HTTP/1.1\nHost: a\n\n", 1024, &used), MG_HEADSCAN_BARE_LF);
}

static void rejects_obs_fold(void **state)
{
    size_t used;
    assert_int_equal(scan_all("GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n", 1024, &used),
                     MG_HEADSCAN_OBS_FOLD);
    assert_int_equal(scan_all("GET / HTTP/1.1\r\nX: a\r\n\tb\r\n\r\n", 1024, &used),
                     MG_HEADSCAN_OBS_FOLD);
}

static void rejects_space_before_colon(void **state)
{
    size_t used;
    assert_int_equal(scan_all("GET / HTTP/1.1\r\nHost : a\r\n\r\n", 1024, &used),
                     MG_HEADSCAN_SPACE_BEFORE_COLON);
    assert_int_equal(scan_all("GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", 1024, &used),
                     MG_HEADSCAN_SPACE_BEFORE_COLON);
}

static void rejects_empty_field_names(void **state)
{
    size_t used;
    assert_int_equal(scan_all("GET / HTTP/1.1\r\n: x\r\n\r\n", 1024, &used),
                     MG_HEADSCAN_EMPTY_NAME);
    assert_int_equal(scan_all("POST / HTTP/1.1\r\nContent-Length: 5\r\n"
                              ": Transfer-Encoding: chunked\r\n\r\n",
                              1024, &used),
                     MG_HEADSCAN_EMPTY_NAME);
}

static void allows_spaces_in_start_line_and_values(void **state)
{
    size_t used;
    assert_int_equal(scan_all("GET /a%20b HTTP/1.1\r\nX:  spaced  value \r\n\r\n", 1024, &used),
                     MG_HEADSCAN_DONE);
}

static void tolerates_leading_empty_lines(void **state)
{
    size_t used;
    const char *req = "\r\n\r\nGET / HTTP/1.1\r\n\r\n";
    assert_int_equal(scan_all(req, 1024, &used), MG_HEADSCAN_DONE);
    assert_int_equal(used, strlen(req));
}

static void enforces_size_limit(void **state)
{
    size_t used;
    assert_int_equal(scan_all("GET / HTTP/1.1\r\nX: aaaaaaaaaaaaaaaaaaaa\r\n\r\n", 20, &used),
                     MG_HEADSCAN_TOO_LARGE);
    assert_int_equal(scan_all("GET / HTTP/1.1\r\n\r\n", 18, &used), MG_HEADSCAN_DONE);
}

/* Values and start lines are skipped eight bytes at a time: a bare LF or CR
 * at every position within and across those words, in a buffer of exactly
 * the head's size (so a read past the end shows under ASan and valgrind),
 * is still found at its exact offset. */
static void finds_line_ends_at_every_offset_of_a_long_value(void **state)
{
    char head[128];
    for (int k = 0; k < 40; k++) {
        for (int variant = 0; variant < 3; variant++) {
            int n = snprintf(head, sizeof head, "GET /%.*s HTTP/1.1\r\nX: %.*s%s\r\n\r\n", k % 11,
                             "abcdefghijk", k, "vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv",
                             variant == 0   ? ""
                             : variant == 1 ? "\nY: z"
                                            : "\rz");
            size_t bad = strlen("GET / HTTP/1.1\r\nX: ") + (size_t)(k % 11) + (size_t)k;
            char *copy = malloc((size_t)n);
            assert_non_null(copy);
            memcpy(copy, head, (size_t)n);
            size_t used = 0;
            struct mg_headscan hs;
            mg_headscan_init(&hs, 1024);
            enum mg_headscan_result r = mg_headscan_feed(&hs, copy, (size_t)n, &used);
            if (variant == 0) {
                assert_int_equal(r, MG_HEADSCAN_DONE);
                assert_int_equal(used, (size_t)n);
            } else if (variant == 1) {
                assert_int_equal(r, MG_HEADSCAN_BARE_LF);
                assert_int_equal(used, bad);
            } else {
                assert_int_equal(r, MG_HEADSCAN_BARE_CR);
                assert_int_equal(used, bad + 1); /* the byte after the CR */
            }
            free(copy);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(finds_end_of_head_and_leaves_body),
        cmocka_unit_test(head_split_in_every_place_gives_same_result),
        cmocka_unit_test(rejects_bare_cr_ending_head),
        cmocka_unit_test(rejects_bare_cr_inside_value),
        cmocka_unit_test(rejects_bare_lf),
        cmocka_unit_test(rejects_obs_fold),
        cmocka_unit_test(rejects_space_before_colon),
        cmocka_unit_test(rejects_empty_field_names),
        cmocka_unit_test(allows_spaces_in_start_line_and_values),
        cmocka_unit_test(tolerates_leading_empty_lines),
        cmocka_unit_test(enforces_size_limit),
        cmocka_unit_test(finds_line_ends_at_every_offset_of_a_long_value),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
