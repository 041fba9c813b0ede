/* tests for gateway/http/resphead.c: every head it takes is read exactly as
 * llhttp (strict, as upstream/h1client.c runs it) reads it: status, reason,
 * fields, Content-Length and Connection: close; and what it leaves to llhttp
 * is left. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <llhttp.h>

#include "http/fields.h"
#include "http/headscan.h"
#include "http/resphead.h"

/* llhttp's reading, through the same field lists as h1client.c's callbacks. */
struct ref {
    struct mg_arena *a;
    struct mg_headers h;
    struct mg_slice reason;
    /* As on_headers_complete sees them (a message without a body resets
     * llhttp's flags once complete). */
    uint64_t flags, content_length;
    int status, minor, upgrade;
};

static int ref_complete(llhttp_t *p)
{
    struct ref *r = p->data;
    r->flags = p->flags;
    r->content_length = p->content_length;
    r->status = p->status_code;
    r->minor = p->http_minor;
    r->upgrade = p->upgrade;
    return 0;
}

static int ref_status(llhttp_t *p, const char *at, size_t len)
{
    struct ref *r = p->data;
    if (r->reason.p)
        r->reason.len += len;
    else
        r->reason = (struct mg_slice){at, len};
    return 0;
}

static int ref_field(llhttp_t *p, const char *at, size_t len)
{
    struct ref *r = p->data;
    return mg_fields_name(r->a, &r->h, at, len);
}

static int ref_value(llhttp_t *p, const char *at, size_t len)
{
    return mg_fields_value(&((struct ref *)p->data)->h, at, len);
}

static int ref_value_done(llhttp_t *p)
{
    mg_fields_value_done(&((struct ref *)p->data)->h);
    return 0;
}

static const llhttp_settings_t ref_settings = {
    .on_status = ref_status,
    .on_header_field = ref_field,
    .on_header_value = ref_value,
    .on_header_value_complete = ref_value_done,
    .on_headers_complete = ref_complete,
};

static void same_as_llhttp_n(const char *head, size_t len)
{
    struct mg_arena arena;
    mg_arena_init(&arena, NULL);
    struct mg_headers h;
    mg_fields_init(&arena, &h);
    struct mg_resphead rh;
    if (!mg_resphead_parse(&arena, &h, head, len, &rh))
        fail_msg("not taken: %.*s", (int)len, head);
    struct ref r = {.a = &arena};
    mg_fields_init(&arena, &r.h);
    llhttp_t p;
    llhttp_init(&p, HTTP_RESPONSE, &ref_settings);
    p.data = &r;
    assert_int_equal(llhttp_execute(&p, head, len), HPE_OK);
    assert_int_equal(rh.status, r.status);
    assert_int_equal(p.http_major, 1);
    assert_int_equal(r.minor, 1);
    assert_int_equal(r.upgrade, 0);
    assert_int_equal(rh.reason.len, r.reason.len);
    assert_memory_equal(rh.reason.p, r.reason.p, r.reason.len);
    assert_int_equal(rh.has_length, (r.flags & F_CONTENT_LENGTH) != 0);
    if (rh.has_length)
        assert_true(rh.length == r.content_length);
    assert_int_equal(rh.close, (r.flags & F_CONNECTION_CLOSE) != 0);
    assert_int_equal(h.n, r.h.n);
    for (uint32_t i = 0; i < h.n; i++) {
        assert_int_equal(h.v[i].name.len, r.h.v[i].name.len);
        assert_memory_equal(h.v[i].name.p, r.h.v[i].name.p, h.v[i].name.len);
        assert_int_equal(h.v[i].value.len, r.h.v[i].value.len);
        assert_memory_equal(h.v[i].value.p, r.h.v[i].value.p, h.v[i].value.len);
    }
    mg_arena_destroy(&arena);
}

static void same_as_llhttp(const char *head)
{
    same_as_llhttp_n(head, strlen(head));
}

static void left_to_llhttp(const char *head, size_t len)
{
    struct mg_arena arena;
    mg_arena_init(&arena, NULL);
    struct mg_headers h;
    mg_fields_init(&arena, &h);
    struct mg_resphead rh;
    if (mg_resphead_parse(&arena, &h, head, len, &rh))
        fail_msg("taken: %.*s", (int)len, head);
    mg_arena_destroy(&arena);
}

#define LEFT(s) left_to_llhttp((s), sizeof(s) - 1)

static void common_heads_read_as_llhttp_does(void **state)
{
    (void)state;
    same_as_llhttp("HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 07 Dec 2026 02:11:19 "
                   "GMT\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: "
                   "keep-alive\r\n\r\n");
    same_as_llhttp("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    same_as_llhttp(
        "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\n\r\n");
    same_as_llhttp("HTTP/1.1 200 OK\r\n\r\n");
    same_as_llhttp("HTTP/1.1 200 OK\r\ncontent-length: 00012\r\nCONNECTION: Close\r\n\r\n");
    same_as_llhttp("HTTP/1.1 204 No Content\r\nX-A: a b\tc\r\nX-Empty-Looking: -\r\n\r\n");
    same_as_llhttp("HTTP/1.1 302 Found\r\nLocation: /x?y=1\r\nSet-Cookie: a=b; Path=/\r\n"
                   "Set-Cookie: c=d\r\nContent-Length: 999999999999999999\r\n\r\n");
    same_as_llhttp("HTTP/1.1 200 OK\r\nX-Quote: \"q\" {} [] ~!#$%&'*+-.^_`|\r\n\r\n");
    same_as_llhttp("HTTP/1.1 200 OK\r\nContent-Lengthy: x\r\nConnectionX: close\r\nTE: x\r\n\r\n");
    same_as_llhttp("HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n");
    same_as_llhttp("HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\nConnection: close\r\n\r\n");
    same_as_llhttp("HTTP/1.1 200 OK\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n");
    same_as_llhttp("HTTP/1.1 599 Whatever It Says\r\nKeep-Alive: timeout=5\r\n\r\n");
}

static void unusual_heads_left_to_llhttp(void **state)
{
    (void)state;
    LEFT("HTTP/1.0 200 OK\r\n\r\n");
    LEFT("HTTP/2.0 200 OK\r\n\r\n");
    LEFT("http/1.1 200 OK\r\n\r\n");
    LEFT("\r\nHTTP/1.1 200 OK\r\n\r\n");
    LEFT("HTTP/1.1 100 Continue\r\n\r\n");
    LEFT("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n");
    LEFT("HTTP/1.1 199 X\r\n\r\n");
    LEFT("HTTP/1.1 600 X\r\n\r\n");
    LEFT("HTTP/1.1 20 OK\r\n\r\n");
    LEFT("HTTP/1.1 2000 OK\r\n\r\n");
    LEFT("HTTP/1.1 200\r\n\r\n");
    LEFT("HTTP/1.1 200 \r\n\r\n");
    LEFT("HTTP/1.1 200  OK\r\n\r\n");
    LEFT("HTTP/1.1 200 OK \r\n\r\n");
    LEFT("HTTP/1.1 200 O\x80K\r\n\r\n");
    LEFT("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    LEFT("HTTP/1.1 200 OK\r\nUpgrade: h2c\r\n\r\n");
    LEFT("HTTP/1.1 200 OK\r\nProxy-Connection: close\r\n\r\n");
    LEFT("HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\n\r\n");
    LEFT("HTTP/1.1 200 OK\r\nConnection: upgrade\r\n\r\n");
    LEFT("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n");
    LEFT("HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n");
    LEFT("HTTP/1.1 200 OK\r\nContent-Length: 1 2\r\n\r\n");
    LEFT("HTTP/1.1 200 OK\r\nContent-Length: 1234567890123456789\r\n\r\n");
    LEFT("HTTP/1.1 200 OK\r\nX-A:\r\n\r\n");
    LEFT("HTTP/1.1 200 OK\r\nX-A: \r\n\r\n");
    LEFT("HTTP/1.1 200 OK\r\nX-A: a \r\n\r\n");
    LEFT("HTTP/1.1 200 OK\r\nX-A:\ta\r\n\r\n");
    LEFT("HTTP/1.1 200 OK\r\nX-A: a\x01\r\n\r\n");
    LEFT("HTTP/1.1 200 OK\r\nX-A: a\x7f\r\n\r\n");
    LEFT("HTTP/1.1 200 OK\r\nX-A: caf\xc3\xa9\r\n\r\n");
    LEFT("HTTP/1.1 200 OK\r\nX(A): a\r\n\r\n");
    LEFT("HTTP/1.1 200 OK\r\n: a\r\n\r\n");
    LEFT("HTTP/1.1 200 OK\r\nX-A: a\r\n\r\nextra");
    LEFT("HTTP/1.1 200 OK\r\nX-A: a\r\n");
    LEFT("HTTP/1.1 200 OK\r\nX-A: a\0b\r\n\r\n");
}

/* Random edits of common heads: whatever the fast path takes among those the
 * head scan lets through, llhttp reads the same way. */
static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void random_edits_agree_with_llhttp(void **state)
{
    (void)state;
    static const char *const bases[] = {
        "HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n",
        "HTTP/1.1 404 Not Found\r\nConnection: close\r\nX-A: b\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nUpgrade: x\r\n\r\n",
    };
    static const char alphabet[] = " \t:\r\n,;\"=0129aAcCeEkKlLnNoOsStT-\x00\x01\x7f\x80\xff";
    unsigned taken = 0;
    for (int i = 0; i < 200000; i++) {
        char buf[256];
        const char *b = bases[next() % 3];
        size_t len = strlen(b);
        memcpy(buf, b, len);
        for (int k = 0, edits = 1 + (int)(next() % 3); k < edits; k++) {
            size_t at = next() % len;
            char c = alphabet[next() % (sizeof alphabet - 1)];
            switch (next() % 3) {
            case 0: /* replace */
                buf[at] = c;
                break;
            case 1: /* insert */
                if (len < sizeof buf) {
                    memmove(buf + at + 1, buf + at, len - at);
                    buf[at] = c;
                    len++;
                }
                break;
            default: /* delete */
                memmove(buf + at, buf + at + 1, len - at - 1);
                len--;
            }
        }
        struct mg_headscan scan;
        mg_headscan_init(&scan, 4096);
        size_t used = 0;
        if (mg_headscan_feed(&scan, buf, len, &used) != MG_HEADSCAN_DONE || used != len)
            continue;
        struct mg_arena arena;
        mg_arena_init(&arena, NULL);
        struct mg_headers h;
        mg_fields_init(&arena, &h);
        struct mg_resphead rh;
        bool fast = mg_resphead_parse(&arena, &h, buf, len, &rh);
        mg_arena_destroy(&arena);
        if (fast) {
            taken++;
            same_as_llhttp_n(buf, len);
        }
    }
    assert_true(taken > 1000); /* the edits left many heads on the fast path */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(common_heads_read_as_llhttp_does),
        cmocka_unit_test(unusual_heads_left_to_llhttp),
        cmocka_unit_test(random_edits_agree_with_llhttp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
