/* tests for gateway/http/message.c: hop-by-hop marking, token lists, and the
 * underscore spellings of the gateway's own fields. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "http/message.h"

#define S(lit) ((struct mg_slice){(lit), sizeof(lit) - 1})

static void token_list_matches_case_insensitively_with_spaces(void **state)
{
    assert_true(mg_token_list_has(S("keep-alive, Upgrade"), S("upgrade")));
    assert_true(mg_token_list_has(S(" ,close ,"), S("close")));
    assert_false(mg_token_list_has(S("closed"), S("close")));
    assert_false(mg_token_list_has(S(""), S("close")));
}

static void field_names_must_be_tokens(void **state)
{
    assert_true(mg_field_name_valid(S("X-Custom_1")));
    assert_false(mg_field_name_valid(S("Host ")));
    assert_false(mg_field_name_valid(S("a:b")));
    assert_false(mg_field_name_valid(S("")));
}

static void underscore_spellings_of_own_fields_are_caught(void **state)
{
    (void)state;
    assert_true(mg_http_mimics_own_field(S("X_Forwarded_For")));
    assert_true(mg_http_mimics_own_field(S("x-forwarded_proto")));
    assert_true(mg_http_mimics_own_field(S("X-FORWARDED_HOST")));
    assert_true(mg_http_mimics_own_field(S("x_request_id")));
    /* the dash spellings are the gateway's own checks', not this one's */
    assert_false(mg_http_mimics_own_field(S("X-Forwarded-For")));
    assert_false(mg_http_mimics_own_field(S("X-Request-Id")));
    assert_false(mg_http_mimics_own_field(S("x_request_ids")));
    assert_false(mg_http_mimics_own_field(S("x_forwarded_fox")));
    assert_false(mg_http_mimics_own_field(S("content_type")));
    assert_false(mg_http_mimics_own_field(S("X_Forwarded")));
}

static void marks_fixed_and_connection_named_fields(void **state)
{
    struct mg_header v[] = {
        {S("Host"), S("a"), 0},
        {S("Connection"), S("close, X-Secret"), 0},
        {S("x-secret"), S("1"), 0},
        {S("Keep-Alive"), S("timeout=5"), 0},
        {S("TE"), S("trailers"), 0},
        {S("Transfer-Encoding"), S("chunked"), 0},
        {S("Upgrade"), S("websocket"), 0},
        {S("Proxy-Connection"), S("keep-alive"), 0},
        {S("Trailer"), S("X"), 0},
        {S("X-Kept"), S("1"), 0},
    };
    struct mg_headers h = {v, sizeof v / sizeof v[0], sizeof v / sizeof v[0]};
    mg_headers_mark_hop_by_hop(&h);
    assert_int_equal(v[0].flags & MG_HDR_HOP, 0);
    for (int i = 1; i <= 8; i++)
        assert_int_equal(v[i].flags & MG_HDR_HOP, MG_HDR_HOP);
    assert_int_equal(v[9].flags & MG_HDR_HOP, 0);
}

static void connection_never_removes_framing_or_routing_fields(void **state)
{
    struct mg_header v[] = {
        {S("Host"), S("a"), 0},
        {S("Content-Length"), S("5"), 0},
        {S("Connection"), S("Content-Length, Host, X-Gone"), 0},
        {S("X-Gone"), S("1"), 0},
    };
    struct mg_headers h = {v, 4, 4};
    mg_headers_mark_hop_by_hop(&h);
    assert_int_equal(v[0].flags & MG_HDR_HOP, 0);
    assert_int_equal(v[1].flags & MG_HDR_HOP, 0);
    assert_int_equal(v[3].flags & MG_HDR_HOP, MG_HDR_HOP);
}

static enum mg_framing framing_of(struct mg_header *v, uint32_t n)
{
    struct mg_headers h = {v, n, n};
    enum mg_framing f = mg_headers_framing(&h);
    for (uint32_t i = 0; i < n; i++)
        if (mg_slice_ieq(v[i].name, S("content-length")) ||
            mg_slice_ieq(v[i].name, S("transfer-encoding")))
            assert_int_equal(v[i].flags & MG_HDR_HOP, MG_HDR_HOP); /* never copied */
    return f;
}

#define TE(val)                                                                                    \
    {                                                                                              \
        S("Transfer-Encoding"), S(val), 0                                                          \
    }
#define CL(val)                                                                                    \
    {                                                                                              \
        S("Content-Length"), S(val), 0                                                             \
    }

static void framing_verdicts(void **state)
{
    struct mg_header none[] = {{S("Host"), S("a"), 0}};
    assert_int_equal(framing_of(none, 1), MG_FRAMING_NONE);
    struct mg_header cl[] = {CL("5")};
    assert_int_equal(framing_of(cl, 1), MG_FRAMING_LENGTH);
    struct mg_header te[] = {TE(" Chunked ")};
    assert_int_equal(framing_of(te, 1), MG_FRAMING_CHUNKED);
    struct mg_header both[] = {CL("5"), TE("chunked")};
    assert_int_equal(framing_of(both, 2), MG_FRAMING_BAD);
    struct mg_header empty_cl[] = {CL("5"), TE("")};
    assert_int_equal(framing_of(empty_cl, 2), MG_FRAMING_BAD);
    struct mg_header empty[] = {TE("")};
    assert_int_equal(framing_of(empty, 1), MG_FRAMING_BAD);
    struct mg_header trailing_comma[] = {TE("chunked,")};
    assert_int_equal(framing_of(trailing_comma, 1), MG_FRAMING_BAD);
    struct mg_header twice[] = {TE("chunked, chunked")};
    assert_int_equal(framing_of(twice, 1), MG_FRAMING_BAD);
    struct mg_header twice_lines[] = {TE("chunked"), TE("chunked")};
    assert_int_equal(framing_of(twice_lines, 2), MG_FRAMING_BAD);
    struct mg_header not_last[] = {TE("chunked, gzip")};
    assert_int_equal(framing_of(not_last, 1), MG_FRAMING_BAD);
    struct mg_header only_gzip[] = {TE("gzip")};
    assert_int_equal(framing_of(only_gzip, 1), MG_FRAMING_BAD);
    struct mg_header gzip_chunked[] = {TE("gzip, chunked")};
    assert_int_equal(framing_of(gzip_chunked, 1), MG_FRAMING_UNSUPPORTED);
    struct mg_header two_lines[] = {TE("gzip"), TE("chunked")};
    assert_int_equal(framing_of(two_lines, 2), MG_FRAMING_UNSUPPORTED);
    struct mg_header xchunked[] = {TE("xchunked")};
    assert_int_equal(framing_of(xchunked, 1), MG_FRAMING_BAD);
}

static void find_is_case_insensitive(void **state)
{
    struct mg_header v[] = {{S("Host"), S("a"), 0}, {S("X-Request-Id"), S("r"), 0}};
    struct mg_headers h = {v, 2, 2};
    assert_int_equal(mg_headers_find(&h, S("x-request-id")), 1);
    assert_int_equal(mg_headers_find(&h, S("x-missing")), -1);
}

static void te_tabs_become_spaces_in_transfer_encoding_only(void **state)
{
    (void)state;
    char head[] = "POST /\tx HTTP/1.1\r\nX-A: a\tb\r\ntransfer-ENCODING:\tchunked\t\r\n"
                  "Transfer-Encodings: c\td\r\nX-Transfer-Encoding: e\tf\r\n\r\n";
    const char want[] = "POST /\tx HTTP/1.1\r\nX-A: a\tb\r\ntransfer-ENCODING: chunked \r\n"
                        "Transfer-Encodings: c\td\r\nX-Transfer-Encoding: e\tf\r\n\r\n";
    mg_head_te_tabs(head, sizeof head - 1);
    assert_string_equal(head, want);
    char plain[] = "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
    mg_head_te_tabs(plain, sizeof plain - 1);
    assert_string_equal(plain, "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
    char cut[] = "GET / HTTP/1.1\r\nTransfer-Encoding:\t"; /* no end: stays in bounds */
    mg_head_te_tabs(cut, sizeof cut - 1);
    assert_string_equal(cut, "GET / HTTP/1.1\r\nTransfer-Encoding: ");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(token_list_matches_case_insensitively_with_spaces),
        cmocka_unit_test(field_names_must_be_tokens),
        cmocka_unit_test(underscore_spellings_of_own_fields_are_caught),
        cmocka_unit_test(marks_fixed_and_connection_named_fields),
        cmocka_unit_test(find_is_case_insensitive),
        cmocka_unit_test(connection_never_removes_framing_or_routing_fields),
        cmocka_unit_test(framing_verdicts),
        cmocka_unit_test(te_tabs_become_spaces_in_transfer_encoding_only),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
