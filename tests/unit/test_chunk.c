/* tests for gateway/http/chunk.c: the CRLF after chunk data, across any split. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "http/chunk.h"

static void crlf_after_data_in_the_same_buffer(void **state)
{
    const char buf[] = "hello\r\n";
    struct mg_chunk_check k = {5, 0};
    assert_true(mg_chunk_data(&k, buf, 5, buf + 7));
    assert_int_equal(k.crlf, 0);
}

static void garbage_after_data_is_rejected(void **state)
{
    const char buf[] = "helloXX";
    struct mg_chunk_check k = {5, 0};
    assert_false(mg_chunk_data(&k, buf, 5, buf + 7));
}

static void crlf_split_across_reads(void **state)
{
    const char a[] = "hel", b[] = "lo\r", c[] = "\n";
    struct mg_chunk_check k = {5, 0};
    assert_true(mg_chunk_data(&k, a, 3, a + 3));
    assert_int_equal(k.left, 2);
    assert_true(mg_chunk_data(&k, b, 2, b + 3));
    assert_int_equal(k.crlf, 1);
    assert_true(mg_chunk_crlf_ok(&k, c, c + 1));
    assert_int_equal(k.crlf, 0);
}

static void bare_lf_after_data_is_rejected(void **state)
{
    const char a[] = "hello", b[] = "\n0\r\n";
    struct mg_chunk_check k = {5, 0};
    assert_true(mg_chunk_data(&k, a, 5, a + 5));
    assert_false(mg_chunk_crlf_ok(&k, b, b + 4));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(crlf_after_data_in_the_same_buffer),
        cmocka_unit_test(garbage_after_data_is_rejected),
        cmocka_unit_test(crlf_split_across_reads),
        cmocka_unit_test(bare_lf_after_data_is_rejected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
