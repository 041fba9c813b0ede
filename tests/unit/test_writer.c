/* tests for gateway/http/writer.c: the reason table, numbers without printf,
 * status and field lines, and the gateway's tail in each of its modes (the
 * bytes every response head ends with). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "http/writer.h"

/* Output goes to a buffer pre-filled with GUARD, so writing past the end shows. */
#define GUARD 0x5a

static char out[1024];

static void reset(void)
{
    memset(out, GUARD, sizeof out);
}

/* The bytes from out to `end` are `want`, within `bound`, and nothing follows. */
static void assert_written(const char *end, const char *want, size_t bound)
{
    size_t n = (size_t)(end - out);
    assert_true(n <= bound);
    assert_int_equal((unsigned char)out[n], GUARD); /* nothing past the end */
    assert_int_equal(n, strlen(want));
    assert_memory_equal(out, want, n);
}

static void reason_phrases_of_both_old_tables(void **state)
{
    assert_string_equal(mg_http_reason(200), "OK");
    assert_string_equal(mg_http_reason(201), "Created");
    assert_string_equal(mg_http_reason(204), "No Content");
    assert_string_equal(mg_http_reason(304), "Not Modified");
    assert_string_equal(mg_http_reason(400), "Bad Request");
    assert_string_equal(mg_http_reason(404), "Not Found");
    assert_string_equal(mg_http_reason(405), "Method Not Allowed");
    assert_string_equal(mg_http_reason(413), "Content Too Large");
    assert_string_equal(mg_http_reason(422), "Unprocessable Content");
    assert_string_equal(mg_http_reason(431), "Request Header Fields Too Large");
    assert_string_equal(mg_http_reason(501), "Not Implemented");
    assert_string_equal(mg_http_reason(502), "Bad Gateway");
    assert_string_equal(mg_http_reason(503), "Service Unavailable");
    assert_string_equal(mg_http_reason(504), "Gateway Timeout");
}

static void unknown_status_gets_ok_below_400_else_error(void **state)
{
    assert_string_equal(mg_http_reason(299), "OK");
    assert_string_equal(mg_http_reason(399), "OK");
    assert_string_equal(mg_http_reason(499), "Error");
    assert_string_equal(mg_http_reason(599), "Error");
    assert_string_equal(mg_http_reason(0), "OK");
}

static void reasons_fit_the_bound(void **state)
{
    for (int s = 0; s < 1000; s++)
        assert_true(strlen(mg_http_reason(s)) <= MG_HTTP_REASON_MAX);
}

static void decimal_edges(void **state)
{
    reset();
    assert_int_equal(mg_http_put_dec(out, 0), 1);
    assert_memory_equal(out, "0", 1);
    assert_int_equal((unsigned char)out[1], GUARD);
    reset();
    assert_int_equal(mg_http_put_dec(out, 9), 1);
    assert_int_equal(mg_http_put_dec(out, 10), 2);
    assert_memory_equal(out, "10", 2);
    reset();
    assert_int_equal(mg_http_put_dec(out, UINT64_MAX), MG_HTTP_DEC_MAX);
    assert_memory_equal(out, "18446744073709551615", 20);
    assert_int_equal((unsigned char)out[20], GUARD);
}

static void hex_edges(void **state)
{
    reset();
    assert_int_equal(mg_http_put_hex(out, 0, 1), 1);
    assert_memory_equal(out, "0", 1);
    reset();
    assert_int_equal(mg_http_put_hex(out, 0, 0), 1); /* 0 acts as 1 */
    assert_memory_equal(out, "0", 1);
    reset();
    assert_int_equal(mg_http_put_hex(out, 0xabc, 1), 3);
    assert_memory_equal(out, "abc", 3);
    reset();
    assert_int_equal(mg_http_put_hex(out, 0xabc, 6), 6);
    assert_memory_equal(out, "000abc", 6);
    reset();
    assert_int_equal(mg_http_put_hex(out, UINT64_MAX, 1), MG_HTTP_HEX_MAX);
    assert_memory_equal(out, "ffffffffffffffff", 16);
    assert_int_equal((unsigned char)out[16], GUARD);
    reset(); /* more digits than fit in 64 bits are clamped, never overflow */
    assert_int_equal(mg_http_put_hex(out, 1, 40), MG_HTTP_HEX_MAX);
    assert_memory_equal(out, "0000000000000001", 16);
}

/* The size line of a chunk: what the codecs frame body pieces with. */
static void chunk_head_is_hex_and_crlf(void **state)
{
    reset();
    assert_int_equal(mg_http_chunk_head(out, 1), 3);
    assert_memory_equal(out, "1\r\n", 3);
    reset();
    assert_int_equal(mg_http_chunk_head(out, 0x10000), 7);
    assert_memory_equal(out, "10000\r\n", 7);
    reset();
    assert_int_equal(mg_http_chunk_head(out, SIZE_MAX), MG_HTTP_CHUNK_HEAD_MAX);
    assert_memory_equal(out, "ffffffffffffffff\r\n", 18);
    assert_int_equal((unsigned char)out[18], GUARD);
}

static void status_line_passes_reason_verbatim(void **state)
{
    reset();
    assert_written(mg_http_put_status_line(out, 200, MG_SLICE_LIT("Fine")), "HTTP/1.1 200 Fine\r\n",
                   MG_HTTP_STATUS_LINE_SIZE(4));
    reset(); /* an upstream's empty reason stays empty, space kept */
    assert_written(mg_http_put_status_line(out, 204, (struct mg_slice){NULL, 0}),
                   "HTTP/1.1 204 \r\n", MG_HTTP_STATUS_LINE_SIZE(0));
    reset();
    assert_written(mg_http_put_status_line(out, 999, MG_SLICE_LIT("X")), "HTTP/1.1 999 X\r\n",
                   MG_HTTP_STATUS_LINE_SIZE(1));
}

static void status_line_from_table(void **state)
{
    size_t bound = MG_HTTP_STATUS_LINE_SIZE(MG_HTTP_REASON_MAX);
    reset();
    assert_written(mg_http_put_status(out, 431), "HTTP/1.1 431 Request Header Fields Too Large\r\n",
                   bound);
    reset();
    assert_written(mg_http_put_status(out, 101), "HTTP/1.1 101 Switching Protocols\r\n", bound);
    reset();
    assert_written(mg_http_put_status(out, 199), "HTTP/1.1 199 OK\r\n", bound);
    reset();
    assert_written(mg_http_put_status(out, 418), "HTTP/1.1 418 Error\r\n", bound);
}

static void reason_phrase_bytes(void **state)
{
    (void)state;
    assert_true(mg_http_reason_ok(MG_SLICE_LIT("")));
    assert_true(mg_http_reason_ok(MG_SLICE_LIT("Tr\xe8s\tbien !~")));
    assert_false(mg_http_reason_ok(MG_SLICE_LIT("O\x00K")));
    assert_false(mg_http_reason_ok(MG_SLICE_LIT("O\x7fK")));
    assert_false(mg_http_reason_ok(MG_SLICE_LIT("\x1b[31m")));
}

static void field_line(void **state)
{
    reset();
    assert_written(mg_http_put_field(out, MG_SLICE_LIT("Allow"), MG_SLICE_LIT("GET, HEAD")),
                   "Allow: GET, HEAD\r\n", MG_HTTP_FIELD_SIZE(5, 9));
    reset();
    assert_written(mg_http_put_field(out, MG_SLICE_LIT("X-Empty"), (struct mg_slice){NULL, 0}),
                   "X-Empty: \r\n", MG_HTTP_FIELD_SIZE(7, 0));
}

static void check_tail(const struct mg_http_tail *t, const char *want)
{
    reset();
    assert_written(mg_http_put_tail(out, t), want, mg_http_tail_max(t));
}

static void tail_empty_is_the_blank_line(void **state)
{
    check_tail(&(struct mg_http_tail){0}, "\r\n");
    assert_int_equal(mg_http_tail_max(&(struct mg_http_tail){0}), 2);
}

static void tail_proxied_keepalive_http11(void **state)
{
    check_tail(
        &(struct mg_http_tail){
            .via = true, .request_id = "abc", .framing = MG_HTTP_FRAME_LENGTH, .length = 5},
        "Via: 1.1 moongate\r\nX-Request-Id: abc\r\nContent-Length: 5\r\n\r\n");
}

static void tail_chunked_close_and_no_request_id(void **state)
{
    check_tail(&(struct mg_http_tail){.via = true,
                                      .framing = MG_HTTP_FRAME_CHUNKED,
                                      .conn = MG_HTTP_CONN_CLOSE},
               "Via: 1.1 moongate\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
}

static void tail_length_edges(void **state)
{
    check_tail(&(struct mg_http_tail){.framing = MG_HTTP_FRAME_LENGTH, .length = 0},
               "Content-Length: 0\r\n\r\n");
    check_tail(&(struct mg_http_tail){.framing = MG_HTTP_FRAME_LENGTH, .length = UINT64_MAX},
               "Content-Length: 18446744073709551615\r\n\r\n");
}

static void tail_keepalive_for_http10(void **state)
{
    check_tail(&(struct mg_http_tail){.request_id = "r1",
                                      .framing = MG_HTTP_FRAME_LENGTH,
                                      .length = 42,
                                      .conn = MG_HTTP_CONN_KEEP_ALIVE},
               "X-Request-Id: r1\r\nContent-Length: 42\r\nConnection: keep-alive\r\n\r\n");
}

static void tail_upgrade_pair(void **state)
{
    check_tail(&(struct mg_http_tail){.via = true,
                                      .request_id = "id",
                                      .conn = MG_HTTP_CONN_UPGRADE,
                                      .upgrade = MG_SLICE_LIT("websocket")},
               "Via: 1.1 moongate\r\nX-Request-Id: id\r\nConnection: upgrade\r\n"
               "Upgrade: websocket\r\n\r\n");
    check_tail(&(struct mg_http_tail){.conn = MG_HTTP_CONN_UPGRADE},
               "Connection: upgrade\r\nUpgrade: \r\n\r\n");
}

static void tail_bound_covers_everything(void **state)
{
    char id[201];
    memset(id, 'i', 200);
    id[200] = '\0';
    struct mg_http_tail t = {.via = true,
                             .request_id = id,
                             .framing = MG_HTTP_FRAME_LENGTH,
                             .length = UINT64_MAX,
                             .conn = MG_HTTP_CONN_UPGRADE,
                             .upgrade = MG_SLICE_LIT("h2c")};
    reset();
    char *end = mg_http_put_tail(out, &t);
    assert_int_equal((size_t)(end - out), mg_http_tail_max(&t)); /* exact at the widest length */
    assert_int_equal((unsigned char)*end, GUARD);
}

static void conn_for_close_and_versions(void **state)
{
    assert_int_equal(mg_http_conn_for(true, 1), MG_HTTP_CONN_CLOSE);
    assert_int_equal(mg_http_conn_for(true, 0), MG_HTTP_CONN_CLOSE);
    assert_int_equal(mg_http_conn_for(false, 0), MG_HTTP_CONN_KEEP_ALIVE);
    assert_int_equal(mg_http_conn_for(false, 1), MG_HTTP_CONN_NONE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(reason_phrases_of_both_old_tables),
        cmocka_unit_test(unknown_status_gets_ok_below_400_else_error),
        cmocka_unit_test(reasons_fit_the_bound),
        cmocka_unit_test(decimal_edges),
        cmocka_unit_test(hex_edges),
        cmocka_unit_test(chunk_head_is_hex_and_crlf),
        cmocka_unit_test(status_line_passes_reason_verbatim),
        cmocka_unit_test(status_line_from_table),
        cmocka_unit_test(reason_phrase_bytes),
        cmocka_unit_test(field_line),
        cmocka_unit_test(tail_empty_is_the_blank_line),
        cmocka_unit_test(tail_proxied_keepalive_http11),
        cmocka_unit_test(tail_chunked_close_and_no_request_id),
        cmocka_unit_test(tail_length_edges),
        cmocka_unit_test(tail_keepalive_for_http10),
        cmocka_unit_test(tail_upgrade_pair),
        cmocka_unit_test(tail_bound_covers_everything),
        cmocka_unit_test(conn_for_close_and_versions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
