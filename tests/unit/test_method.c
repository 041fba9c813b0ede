/* tests for gateway/http/method.c: every name of llhttp's HTTP map gives its
 * number, and nothing else does (RTSP-only names, case, prefixes, lengths),
 * so every number it returns is safe to pass to llhttp_method_name. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <llhttp.h>

#include "http/method.h"

static int of(const char *s)
{
    return mg_http_method(s, strlen(s));
}

static void every_http_method_gives_its_number(void **state)
{
    (void)state;
    int n = 0;
#define XX(num, id, text)                                                                          \
    assert_int_equal(of(#text), num);                                                              \
    assert_string_equal(llhttp_method_name((llhttp_method_t)of(#text)), #text);                    \
    n++;
    HTTP_METHOD_MAP(XX)
#undef XX
    assert_int_equal(n, 34);
}

/* Numbers outside the HTTP map make llhttp_method_name abort. */
static void rtsp_only_methods_are_unknown(void **state)
{
    (void)state;
#define XX(num, id, text)                                                                          \
    if (num > HTTP_SOURCE)                                                                         \
        assert_int_equal(of(#text), -1);
    RTSP_METHOD_MAP(XX)
#undef XX
    assert_int_equal(of("GET_PARAMETER"), -1);
    assert_int_equal(of("PLAY"), -1);
}

static void near_misses_are_unknown(void **state)
{
    (void)state;
    const char *bad[] = {"",
                         "G",
                         "GE",
                         "get",
                         "Get",
                         "GETS",
                         "GEt",
                         "POS",
                         "POSTT",
                         "LINKS",
                         "LOCKS",
                         "LUCK",
                         "LANK",
                         "UNLACK",
                         "UNBINE",
                         "UNLINX",
                         "REPORX",
                         "REBINT",
                         "SEARCX",
                         "SOURCX",
                         "MKCOLL",
                         "MERGX",
                         "PATCX",
                         "PURGX",
                         "FOO",
                         "OPTIONX",
                         "CONNECX",
                         "MSEARCH",
                         "M_SEARCH",
                         "PROPFINX",
                         "CHECKOUX",
                         "PROPPATCX",
                         "SUBSCRIBX",
                         "MKACTIVITX",
                         "MKCALENDAX",
                         "UNSUBSCRIBX",
                         "UNSUBSCRIBES",
                         "QUERY",
                         "TRACEX",
                         "DELETX"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (of(bad[i]) != -1)
            fail_msg("'%s' was taken as method %d", bad[i], of(bad[i]));
    }
    assert_int_equal(mg_http_method(NULL, 0), -1);
}

/* The length is the slice's, not a NUL's: HTTP/2 values are not terminated. */
static void the_slice_length_counts(void **state)
{
    (void)state;
    assert_int_equal(mg_http_method("GETX", 3), HTTP_GET);
    assert_int_equal(mg_http_method("GET", 2), -1);
    assert_int_equal(mg_http_method("DELETE\0", 7), -1);
    assert_int_equal(mg_http_method("M-SEARCH", 8), HTTP_MSEARCH);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_http_method_gives_its_number),
        cmocka_unit_test(rtsp_only_methods_are_unknown),
        cmocka_unit_test(near_misses_are_unknown),
        cmocka_unit_test(the_slice_length_counts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
