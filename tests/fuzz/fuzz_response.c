/*
 * fuzz_response: the upstream response path. The client sends one fixed, valid
 * request (input byte 0 picks which: GET, HEAD, POST, Upgrade, a Lua route, an
 * Idempotency-Key route, HTTP/1.0, Expect: 100-continue); the in-loop upstream
 * answers it with the rest of the input, in pieces, then closes. Everything runs
 * through the real gateway (harness.h).
 *
 * Checked on top of the harness's invariants:
 * - the client receives well-formed HTTP/1.1 (llhttp strict, plus the gateway's
 *   own head rules and the CRLF after every chunk, which llhttp 8.1.0 skips), at
 *   most one final response, no interim response the upstream did not send,
 *   and a 100 Continue only when the client asked;
 * - a final response the client received whole is either the gateway's own
 *   error (no "Via: 1.1 moongate") or the upstream's response: the upstream's
 *   bytes, read by an independent reference parse, hold a complete response with
 *   the same status and the same body (DESIGN.md section 4: never a
 *   complete-looking response from a broken or truncated upstream);
 * - after 101 Switching Protocols the client gets a prefix of what the upstream
 *   sent after its 101 head.
 */
#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "http/headscan.h"
#include "http/writer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { T_GET, T_HEAD, T_POST, T_UPGRADE, T_LUA, T_IDEM, T_HTTP10, T_EXPECT, T_COUNT };

static const char *const templates[T_COUNT] = {
    [T_GET] = "GET /r?q=1 HTTP/1.1\r\nHost: gw.test\r\nAccept: */*\r\n\r\n",
    [T_HEAD] = "HEAD /r HTTP/1.1\r\nHost: gw.test\r\n\r\n",
    [T_POST] = "POST /r HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5\r\n\r\nhello",
    [T_UPGRADE] =
        "GET /ws HTTP/1.1\r\nHost: gw.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    [T_LUA] = "GET /lua/r HTTP/1.1\r\nHost: gw.test\r\nX-Api-Key: k1\r\nX-User: u1\r\n\r\n",
    [T_IDEM] = "POST /idem/r HTTP/1.1\r\nHost: gw.test\r\nIdempotency-Key: fz-%u\r\n"
               "Content-Length: 5\r\n\r\nhello",
    [T_HTTP10] = "GET /r HTTP/1.0\r\nHost: gw.test\r\n\r\n",
    [T_EXPECT] =
        "PUT /r HTTP/1.1\r\nHost: gw.test\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"
        "abc",
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fz_harness_init(FZ_UP_RAW);
    return 0;
}

/* ------------------------------------------------------------ a response stream */

struct view {
    /* in */
    bool head;         /* the request was HEAD: final responses have no body */
    bool upgrade_ok;   /* the request asked to upgrade: a 101 switches */
    bool all;          /* read every message (the client) or stop at the final one */
    bool clean_reason; /* a reason phrase must hold only HTAB, SP, VCHAR, obs-text */
    const char *end;   /* end of the bytes, for the chunk CRLF check */
    /* out */
    const char *invalid; /* why the bytes are not acceptable HTTP, or NULL */
    unsigned finals, interims, continues;
    bool final_complete, upgraded, close_delimited;
    int status;    /* of the final response */
    size_t tail;   /* upgraded: offset of the bytes after the 101 head */
    uint8_t *body; /* of the final response, decoded */
    size_t body_len, body_cap;
    bool forwarded; /* the final head carries the gateway's Via: not its own answer */
    uint64_t chunk_left;
    bool interim_now;
    const char *cur_head; /* the head being parsed, as the head scan found it */
    size_t cur_head_len;
};

static struct view *view_of(llhttp_t *p)
{
    return p->data;
}

/* llhttp 8.1 passes NUL and other control bytes in the status text; what the
 * gateway writes to a client must not carry them (RFC 9112 section 4). */
static int v_status(llhttp_t *p, const char *at, size_t len)
{
    struct view *v = view_of(p);
    if (v->clean_reason && !mg_http_reason_ok((struct mg_slice){at, len}))
        v->invalid = "a control byte in a reason phrase";
    return 0;
}

static int v_headers_complete(llhttp_t *p)
{
    struct view *v = view_of(p);
    int s = p->status_code;
    v->interim_now = s >= 100 && s < 200 && s != 101;
    if (v->interim_now) {
        v->interims++;
        v->continues += s == 100;
        return 1; /* a 1xx has no body (RFC 9110 section 15.2), whatever it says */
    }
    v->finals++;
    v->status = s;
    static const char via[] = "\r\nVia: 1.1 moongate\r\n";
    v->forwarded = memmem(v->cur_head, v->cur_head_len, via, sizeof via - 1) != NULL;
    v->body_len = 0;
    bool bodyless = v->head || s == 204 || s == 304 || s == 101;
    v->close_delimited = !bodyless && !(p->flags & (F_CONTENT_LENGTH | F_CHUNKED));
    /* No body after HEAD, 204 or 304, whatever Content-Length or Transfer-Encoding
     * say (RFC 9110 sections 6.4.1, 15.3.5, 15.4.5); llhttp 8.1.0 itself knows only
     * HEAD (and only when told). */
    return bodyless && s != 101 ? 1 : 0;
}

static int v_chunk_header(llhttp_t *p)
{
    view_of(p)->chunk_left = p->content_length;
    return 0;
}

static int v_body(llhttp_t *p, const char *at, size_t len)
{
    struct view *v = view_of(p);
    if (v->body_len + len > v->body_cap) {
        size_t cap = v->body_cap ? v->body_cap * 2 : 4096;
        while (cap < v->body_len + len)
            cap *= 2;
        v->body = realloc(v->body, cap);
        if (!v->body)
            abort();
        v->body_cap = cap;
    }
    memcpy(v->body + v->body_len, at, len);
    v->body_len += len;
    if (p->flags & F_CHUNKED) {
        v->chunk_left -= len < v->chunk_left ? len : v->chunk_left;
        const char *after = at + len;
        /* llhttp 8.1.0 skips the two bytes after a chunk's data unseen. */
        if (v->chunk_left == 0 && after + 2 <= v->end && memcmp(after, "\r\n", 2) != 0) {
            v->invalid = "chunk data not followed by CRLF";
            return HPE_USER;
        }
    }
    return 0;
}

static int v_message_complete(llhttp_t *p)
{
    struct view *v = view_of(p);
    if (p->status_code == 101)
        return 0; /* llhttp stops with HPE_PAUSED_UPGRADE if it switches */
    if (!v->interim_now)
        v->final_complete = true;
    return HPE_PAUSED; /* one message at a time: each head gets its own scan */
}

static const llhttp_settings_t view_settings = {
    .on_status = v_status,
    .on_headers_complete = v_headers_complete,
    .on_chunk_header = v_chunk_header,
    .on_body = v_body,
    .on_message_complete = v_message_complete,
};

/* Reads a stream of responses message by message, as the gateway reads an
 * upstream: every head through the head scan, then llhttp (strict); a new parser
 * after each interim response. `eof`: the stream ended with a clean close. */
static void read_stream(struct view *v, const uint8_t *data, size_t len, bool eof)
{
    if (len == 0)
        return; /* data may be NULL */
    const char *p = (const char *)data, *end = p + len;
    v->end = end;
    llhttp_t parser;
    size_t pos = 0;
    bool in_message = false;
    while (pos < len) {
        if (!in_message) {
            struct mg_headscan scan;
            size_t used = 0;
            mg_headscan_init(&scan, 64 * 1024);
            enum mg_headscan_result r = mg_headscan_feed(&scan, p + pos, len - pos, &used);
            if (r >= MG_HEADSCAN_BARE_CR) {
                v->invalid = mg_headscan_result_text(r);
                return;
            }
            if (r == MG_HEADSCAN_MORE)
                return; /* an unfinished head: nothing more to learn */
            v->cur_head = p + pos;
            v->cur_head_len = used;
            llhttp_init(&parser, HTTP_RESPONSE, &view_settings);
            parser.data = v;
            in_message = true;
        }
        llhttp_errno_t e = llhttp_execute(&parser, p + pos, len - pos);
        if (v->invalid)
            return;
        if (e == HPE_OK)
            break; /* all consumed inside a message */
        if (e == HPE_PAUSED_UPGRADE) {
            if (!v->upgrade_ok || parser.status_code != 101) {
                v->invalid = "101 without an upgrade request";
                return;
            }
            v->upgraded = true;
            v->tail = (size_t)(llhttp_get_error_pos(&parser) - p);
            return;
        }
        if (e != HPE_PAUSED) {
            static char why[160];
            snprintf(why, sizeof why, "%s (%s) at byte %zu", llhttp_errno_name(e),
                     llhttp_get_error_reason(&parser) ? llhttp_get_error_reason(&parser) : "?",
                     (size_t)(llhttp_get_error_pos(&parser) - p));
            v->invalid = why;
            return;
        }
        pos = (size_t)(llhttp_get_error_pos(&parser) - p);
        llhttp_resume(&parser);
        in_message = false;
        if (v->final_complete && !v->all)
            return;
    }
    if (in_message && eof && !v->final_complete) {
        llhttp_errno_t e = llhttp_finish(&parser); /* a close-delimited body ends here */
        (void)e;
    }
}

/* The gateway's own answers (errors) carry no Via; everything it forwards does. */
static bool gateway_error(const struct view *v)
{
    return !v->forwarded;
}

static void check(unsigned t, const uint8_t *up, size_t uplen, const struct fz_outcome *o,
                  const uint8_t *input, size_t input_len)
{
    static struct view c, r;
    uint8_t *cb = c.body, *rb = r.body;
    size_t ccap = c.body_cap, rcap = r.body_cap;
    memset(&c, 0, sizeof c);
    memset(&r, 0, sizeof r);
    c.body = cb, c.body_cap = ccap, r.body = rb, r.body_cap = rcap;
    c.head = r.head = t == T_HEAD;
    c.upgrade_ok = r.upgrade_ok = t == T_UPGRADE;
    c.all = true;
    c.clean_reason = true;

    read_stream(&c, o->got, o->got_len, !o->reset);
    if (c.invalid) {
        fprintf(stderr, "client stream: %s\n", c.invalid);
        fz_fail("the client received malformed HTTP", o->got, o->got_len);
    }
    if (c.finals > 1)
        fz_fail("the client received more than one final response", o->got, o->got_len);
    if (c.continues && t != T_EXPECT)
        fz_fail("a 100 Continue reached a client that did not ask", o->got, o->got_len);

    read_stream(&r, up, uplen, true);
    /* 1xx other than 100 are forwarded (RFC 9110 section 15.2; at most 8 per
     * request), never made up. (Every attempt of a retried request gets the
     * same upstream bytes here, so each may forward its own.) */
    if ((c.interims > c.continues && !r.interims) || c.interims - c.continues > 8)
        fz_fail("an interim response the upstream did not send reached the client", o->got,
                o->got_len);
    if (c.upgraded) {
        if (!r.upgraded)
            fz_fail("the client was switched to a tunnel the upstream did not open", input,
                    input_len);
        size_t ct = o->got_len - c.tail, rt = uplen - r.tail;
        if (ct > rt || (ct && memcmp(o->got + c.tail, up + r.tail, ct) != 0))
            fz_fail("tunnel bytes differ from the upstream's", input, input_len);
        return;
    }
    if (!c.final_complete || gateway_error(&c))
        return;
    bool ok;
    if (c.close_delimited) {
        /* Only the close ends such a body (an HTTP/1.0 client and an upstream body of
         * unknown length): a failure after the head cannot be told from the end, so
         * the most one can ask is a prefix of what the upstream sent. */
        ok = r.finals > 0 && r.status == c.status && c.body_len <= r.body_len &&
             (!c.body_len || memcmp(c.body, r.body, c.body_len) == 0);
    } else {
        ok = r.final_complete && !r.invalid && r.status == c.status && c.body_len == r.body_len &&
             (!c.body_len || memcmp(c.body, r.body, c.body_len) == 0);
    }
    if (!ok) {
        fprintf(stderr,
                "client: status %d, body %zu bytes%s; upstream reference: %s, status %d, "
                "body %zu bytes\n",
                c.status, c.body_len, c.close_delimited ? " (close-delimited)" : "",
                r.invalid          ? r.invalid
                : r.final_complete ? "complete"
                                   : "incomplete",
                r.status, r.body_len);
        fz_fail("the client got a complete response that is not the upstream's", input, input_len);
    }
}

/* Regression seeds in corpus/fuzz_response/crash-*: an empty reason phrase
 * (memcpy from NULL in send_response_head), a 1xx response with framing whose
 * "body" reached the client as a forged response, a bare LF after the status
 * line (head scan). */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static unsigned serial;
    if (size < 1)
        return 0;
    unsigned t = data[0] % T_COUNT;
    char req[512];
    /* Idempotency keys are fresh per run: no input replays an earlier one's record. */
    int n = snprintf(req, sizeof req, templates[t], ++serial);
    struct fz_exchange e = {.client = (const uint8_t *)req,
                            .client_len = (size_t)n,
                            .upstream = data + 1,
                            .upstream_len = size - 1};
    struct fz_outcome o;
    fz_harness_run(&e, &o);
    check(t, data + 1, size - 1, &o, data, size);
    return 0;
}
