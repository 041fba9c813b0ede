/* tests for gateway/http/body.c: the body framing decoder, whole and split at
 * every byte. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "http/body.h"

enum { DONE, MORE, ERROR, TOO_LARGE };

struct run {
    int outcome;
    size_t end; /* with DONE: bytes of the message */
    char data[8192];
    size_t data_len;
};

/* Feeds `in` in pieces of `step` bytes (each its own allocation, so ASan sees a
 * read past a piece), collecting data, as the codecs do. */
static struct run decode(enum mg_body_kind kind, uint64_t length, uint64_t limit, const char *in,
                         size_t len, size_t step)
{
    struct run r = {.outcome = MORE};
    struct mg_body b;
    mg_body_init(&b, kind, length, limit);
    size_t off = 0;
    do {
        size_t n = len - off < step ? len - off : step;
        char *piece = malloc(n ? n : 1);
        memcpy(piece, in + off, n);
        size_t at = 0;
        for (;;) {
            size_t used;
            struct mg_slice d;
            enum mg_body_result res = mg_body_feed(&b, piece + at, n - at, &used, &d);
            assert_true(used <= n - at);
            at += used;
            if (res == MG_BODY_DATA) {
                assert_true(d.p >= piece && d.p + d.len <= piece + n);
                assert_true(r.data_len + d.len <= sizeof r.data);
                memcpy(r.data + r.data_len, d.p, d.len);
                r.data_len += d.len;
                continue;
            }
            if (res == MG_BODY_MORE) {
                assert_int_equal(at, n);
                break;
            }
            free(piece);
            r.outcome = res == MG_BODY_DONE ? DONE : res == MG_BODY_ERROR ? ERROR : TOO_LARGE;
            r.end = off + at;
            return r;
        }
        free(piece);
        off += n;
    } while (off < len);
    return r;
}

#define CHUNKED(lit, step) decode(MG_BODY_CHUNKED, 0, UINT64_MAX, (lit), sizeof(lit) - 1, (step))

/* The same outcome for every split of the input. */
static struct run chunked_all_splits(const char *in, size_t len)
{
    struct run whole = decode(MG_BODY_CHUNKED, 0, UINT64_MAX, in, len, len ? len : 1);
    for (size_t step = 1; step < len; step++) {
        struct run r = decode(MG_BODY_CHUNKED, 0, UINT64_MAX, in, len, step);
        assert_int_equal(r.outcome, whole.outcome);
        if (r.outcome == DONE)
            assert_int_equal(r.end, whole.end);
        assert_int_equal(r.data_len, whole.data_len);
        assert_memory_equal(r.data, whole.data, r.data_len);
    }
    return whole;
}

#define ALL(lit) chunked_all_splits((lit), sizeof(lit) - 1)

static void decodes_chunks_and_stops_at_the_message_end(void **state)
{
    struct run r = ALL("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nGET / HTTP/1.1\r\n");
    assert_int_equal(r.outcome, DONE);
    assert_int_equal(r.end, strlen("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"));
    assert_int_equal(r.data_len, 11);
    assert_memory_equal(r.data, "hello world", 11);
}

static void accepts_valid_extensions_and_trailers(void **state)
{
    struct run r = ALL("5;foo=\"b;a\\\"r\"\r\nhello\r\n"
                       "3 ;a=b ; c\r\nabc\r\n"
                       "0005;x=\"\"\r\n12345\r\n"
                       "A\r\n0123456789\r\n"
                       "0\r\nTrailer-One: 1\r\nX-Two:\t2 \r\n\r\n");
    assert_int_equal(r.outcome, DONE);
    assert_int_equal(r.data_len, 23);
    assert_memory_equal(r.data, "helloabc123450123456789", 23);
}

static void refuses_bare_cr_and_lf_in_every_framing_position(void **state)
{
    static const char *const bad[] = {
        "5\rXhello\r\n0\r\n\r\n",       /* size line */
        "5\nhello\r\n0\r\n\r\n",        /* bare LF after the size */
        "5;a=b\rX\nhello\r\n0\r\n\r\n", /* extension */
        "5\r\nhello\rX0\r\n\r\n",       /* after data */
        "5\r\nhello\n0\r\n\r\n",        /* bare LF after data */
        "0\r\r\r\n",                    /* last chunk */
        "0\r\nT: x\rY\r\n\r\n",         /* trailer value */
        "0\r\nT: x\n\r\n",              /* trailer bare LF */
        "0\r\n\rX",                     /* final CRLF */
        "0\r\n\n",                      /* final bare LF */
        "2\r\r;a\r\n02\r\n41\r\n0\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(chunked_all_splits(bad[i], strlen(bad[i])).outcome, ERROR);
}

static void refuses_malformed_sizes_extensions_and_trailers(void **state)
{
    static const char *const bad[] = {
        "\r\n",                               /* empty size */
        "0x5\r\nhello\r\n0\r\n\r\n",          /* not hex */
        "-5\r\nhello\r\n0\r\n\r\n",           /* negative */
        " 5\r\nhello\r\n0\r\n\r\n",           /* leading space */
        "5 \r\nhello\r\n0\r\n\r\n",           /* trailing space without ';' */
        "10000000000000000\r\n",              /* 17 digits */
        "5;\r\nhello\r\n0\r\n\r\n",           /* ';' without a name */
        "5;a=\r\nhello\r\n0\r\n\r\n",         /* '=' without a value */
        "5;a=\"x\r\nhello\r\n0\r\n\r\n",      /* unterminated quote */
        "5;a=\"\x01\"\r\nhello\r\n0\r\n\r\n", /* control byte in a quoted value */
        "5;a\x7f\r\nhello\r\n0\r\n\r\n",      /* DEL in a name */
        "5;a=\"x\"y\r\nhello\r\n0\r\n\r\n",   /* junk after a quoted value */
        "5\r\nhelloXX0\r\n\r\n",              /* no CRLF after data */
        "0\r\n: x\r\n\r\n",                   /* empty trailer name */
        "0\r\n x: 1\r\n\r\n",                 /* obs-fold in trailers */
        "0\r\nX : 1\r\n\r\n",                 /* space before the colon */
        "0\r\nX\r\n\r\n",                     /* no colon */
        "0\r\nX: \x01\r\n\r\n",               /* control byte in a trailer value */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(chunked_all_splits(bad[i], strlen(bad[i])).outcome, ERROR);
}

static void bounds_size_lines_and_trailers(void **state)
{
    char *in = malloc(MG_BODY_MAX_TRAILER + 64);
    size_t n = 0;
    in[n++] = '5';
    in[n++] = ';';
    while (n < MG_BODY_MAX_LINE + 8)
        in[n++] = 'a';
    memcpy(in + n, "\r\nhello\r\n0\r\n\r\n", 14);
    n += 14;
    assert_int_equal(decode(MG_BODY_CHUNKED, 0, UINT64_MAX, in, n, 100).outcome, ERROR);
    n = 0;
    memcpy(in, "0\r\n", 3);
    n = 3;
    while (n < MG_BODY_MAX_TRAILER + 16) {
        memcpy(in + n, "X: 1\r\n", 6);
        n += 6;
    }
    assert_int_equal(decode(MG_BODY_CHUNKED, 0, UINT64_MAX, in, n, 1000).outcome, ERROR);
    free(in);
}

static void a_declared_size_over_the_limit_is_refused_before_its_data(void **state)
{
    const char in[] = "5\r\nhello\r\n400\r\n";
    struct run r = decode(MG_BODY_CHUNKED, 0, 1024, in, sizeof in - 1, sizeof in - 1);
    assert_int_equal(r.outcome, TOO_LARGE);
    assert_int_equal(r.data_len, 5);
    r = decode(MG_BODY_CHUNKED, 0, 1029, in, sizeof in - 1, 1);
    assert_int_equal(r.outcome, MORE); /* 5 + 1024 fits */
    r = decode(MG_BODY_CHUNKED, 0, UINT64_MAX, "ffffffffffffffff\r\n", 18, 18);
    assert_int_equal(r.outcome, MORE);
    r = decode(MG_BODY_LENGTH, 2048, 1024, "x", 1, 1);
    assert_int_equal(r.outcome, TOO_LARGE);
}

static void length_bodies_end_exactly(void **state)
{
    struct run r = decode(MG_BODY_LENGTH, 5, UINT64_MAX, "helloGET", 8, 3);
    assert_int_equal(r.outcome, DONE);
    assert_int_equal(r.end, 5);
    assert_memory_equal(r.data, "hello", 5);
    r = decode(MG_BODY_LENGTH, 5, UINT64_MAX, "hel", 3, 3);
    assert_int_equal(r.outcome, MORE);
    r = decode(MG_BODY_LENGTH, 0, UINT64_MAX, "GET", 3, 3);
    assert_int_equal(r.outcome, DONE);
    assert_int_equal(r.end, 0);
    r = decode(MG_BODY_NONE, 0, UINT64_MAX, "GET", 3, 3);
    assert_int_equal(r.outcome, DONE);
    assert_int_equal(r.end, 0);
}

static void close_delimited_bodies_end_at_eof(void **state)
{
    struct mg_body b;
    mg_body_init(&b, MG_BODY_CLOSE, 0, UINT64_MAX);
    size_t used;
    struct mg_slice d;
    assert_int_equal(mg_body_feed(&b, "abc", 3, &used, &d), MG_BODY_DATA);
    assert_int_equal(used, 3);
    assert_false(mg_body_done(&b));
    assert_true(mg_body_eof(&b));
    assert_int_equal(mg_body_feed(&b, "x", 1, &used, &d), MG_BODY_DONE);
    assert_int_equal(used, 0);

    mg_body_init(&b, MG_BODY_CHUNKED, 0, UINT64_MAX);
    assert_int_equal(mg_body_feed(&b, "5\r\nab", 5, &used, &d), MG_BODY_DATA);
    assert_false(mg_body_eof(&b)); /* cut short */
    mg_body_init(&b, MG_BODY_LENGTH, 4, UINT64_MAX);
    assert_false(mg_body_eof(&b));
}

static void errors_are_sticky(void **state)
{
    struct mg_body b;
    mg_body_init(&b, MG_BODY_CHUNKED, 0, UINT64_MAX);
    size_t used;
    struct mg_slice d;
    assert_int_equal(mg_body_feed(&b, "5\rX", 3, &used, &d), MG_BODY_ERROR);
    assert_int_equal(used, 2);
    assert_string_equal(mg_body_error(&b), "bare CR in chunk size line");
    assert_int_equal(mg_body_feed(&b, "\n", 1, &used, &d), MG_BODY_ERROR);
    assert_int_equal(used, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(decodes_chunks_and_stops_at_the_message_end),
        cmocka_unit_test(accepts_valid_extensions_and_trailers),
        cmocka_unit_test(refuses_bare_cr_and_lf_in_every_framing_position),
        cmocka_unit_test(refuses_malformed_sizes_extensions_and_trailers),
        cmocka_unit_test(bounds_size_lines_and_trailers),
        cmocka_unit_test(a_declared_size_over_the_limit_is_refused_before_its_data),
        cmocka_unit_test(length_bodies_end_exactly),
        cmocka_unit_test(close_delimited_bodies_end_at_eof),
        cmocka_unit_test(errors_are_sticky),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
