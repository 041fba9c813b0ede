/*
 * fuzz_request: the downstream request path. The input is everything a client
 * sends on one connection (then it half-closes); it goes through the real
 * gateway (harness.h): head scan, llhttp, body decoding, request checks,
 * routing, Lua plugins, idempotency, upstream head building and body
 * forwarding, exactly as the server runs them. The upstream answers every
 * request with a fixed response.
 *
 * Checked on top of the harness's invariants (no leaked connection or handle,
 * only strictly valid HTTP forwarded, no sanitizer report):
 *
 * - what the client gets back is a sequence of well-formed HTTP/1.1 responses
 *   (llhttp, strict), cut short at most by a close. Skipped when the input
 *   contains "HEAD": a response to HEAD has no body whatever its
 *   Content-Length says, and which response answers a HEAD request is not known
 *   from the outside.
 * - request framing, "one request in, at most one request out", read with
 *   refhttp.h (independent of llhttp and of gateway/http/):
 *   1. the exact bytes each upstream connection received are a strict sequence
 *      of requests (ref_forwarded: clean heads with one Host, exactly one of
 *      Content-Length or Transfer-Encoding: chunked when there is a body, never
 *      both nor two, a chunked body without extensions or trailers decoding
 *      with nothing left over; the last request may be cut short);
 *   2. the upstream answered no more requests than the client got relayed
 *      responses: each relayed response (a response from the upstream or an
 *      idempotent replay) carries "Via: 1.1 moongate", the gateway's own errors
 *      do not, and the client cannot put that line into a response head;
 *   3. when the client's bytes can be framed without doubt (ref_client: clean
 *      heads, one unambiguous framing, bodies that decode or break the chunked
 *      grammar, no tunnel), the forwarded requests, in time order, are a
 *      subsequence of the client's complete requests with the same method and
 *      the same body: no request made up from body bytes, none joined, no body
 *      changed, and none forwarded from a message the gateway had to refuse.
 */
#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "refhttp.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---------------------------------------------------- known, reported issues */

/* Regression seeds: corpus/fuzz_request/crash-trailer-* (trailer fields of a
 * chunked body once joined the request head; the codecs now drop them) and
 * crash-bare-lf-request-line (head scan). The smuggle-* seeds are the shapes the
 * framing checks were written for; before commit b6fb808 "Smuggling: ...",
 * Connection: Content-Length, Connection: Host, empty field names and bare CRs
 * in chunk framing each broke one of them.
 *
 * Open: a request-target with HTAB or FF in it ("GET /a\tb HTTP/1.1") is
 * forwarded as is (check 1 fails); FZ_TOLERATE_TAB_TARGET=1 lets a run look past
 * it. */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fz_harness_init(FZ_UP_FIXED);
    const char *tab = getenv("FZ_TOLERATE_TAB_TARGET");
    ref_target_tab_ok = tab && strcmp(tab, "1") == 0;
    return 0;
}

static void check_responses(const uint8_t *got, size_t len)
{
    static const llhttp_settings_t settings; /* no callbacks: framing only */
    if (len == 0)
        return; /* closed without a word (got may be NULL: llhttp would add 0 to it) */
    llhttp_t p;
    llhttp_init(&p, HTTP_RESPONSE, &settings);
    llhttp_errno_t e = llhttp_execute(&p, (const char *)got, len);
    if (e != HPE_OK && e != HPE_PAUSED_UPGRADE) /* after a 101, tunnel bytes */
        fz_fail("the client received something other than well-formed responses", got, len);
}

/* ------------------------------------------------------------ framing */

/* A request the upstream received complete, for time order across connections. */
struct fwd {
    const struct ref_req *req;
    unsigned seq; /* of the read that brought its last byte */
    size_t end;
    unsigned conn;
};

static struct ref_reqs fwd_reqs[64]; /* per upstream connection (more: not checked) */
static struct ref_reqs client_reqs;

static int fwd_order(const void *a, const void *b)
{
    const struct fwd *x = a, *y = b;
    if (x->seq != y->seq)
        return x->seq < y->seq ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static size_t count(const uint8_t *hay, size_t len, const char *needle)
{
    size_t n = 0, nl = strlen(needle);
    if (len == 0)
        return 0; /* hay may be NULL */
    const uint8_t *p = hay, *end = hay + len;
    while (p && p < end) {
        p = memmem(p, (size_t)(end - p), needle, nl);
        if (p) {
            n++;
            p += nl;
        }
    }
    return n;
}

static void show_escaped(const char *label, const uint8_t *p, size_t n)
{
    fprintf(stderr, "  %s (%zu): \"", label, n);
    for (size_t i = 0; i < n && i < 512; i++) {
        uint8_t c = p[i];
        if (c == '\r')
            fputs("\\r", stderr);
        else if (c == '\n')
            fputs("\\n", stderr);
        else if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
            fputc(c, stderr);
        else
            fprintf(stderr, "\\x%02x", c);
    }
    fputs(n > 512 ? "\"...\n" : "\"\n", stderr);
}

static void show_requests(const char *who, const struct fwd *f, size_t nf, const struct ref_reqs *c)
{
    fprintf(stderr, "%s\n", who);
    for (size_t i = 0; i < nf; i++) {
        char label[80];
        snprintf(label, sizeof label, "forwarded %zu (conn %u): %s, body", i, f[i].conn,
                 (const char *)f[i].req->method);
        show_escaped(label, f[i].req->body.p, f[i].req->body.len);
    }
    for (size_t i = 0; c && i < c->n; i++) {
        char label[80];
        snprintf(label, sizeof label, "client request %zu: %s, body", i,
                 (const char *)c->v[i].method);
        show_escaped(label, c->v[i].body.p, c->v[i].body.len);
    }
}

static bool same_request(const struct ref_req *a, const struct ref_req *b)
{
    return strcmp((const char *)a->method, (const char *)b->method) == 0 &&
           a->body.len == b->body.len &&
           (a->body.len == 0 || memcmp(a->body.p, b->body.p, a->body.len) == 0);
}

static void check_framing(const uint8_t *data, size_t size, const struct fz_outcome *o)
{
    static struct fwd *fwd;
    static size_t fwd_cap;
    size_t nfwd = 0;
    unsigned nconns = o->nuplogs < 64 ? o->nuplogs : 64;

    /* 1. What each upstream connection received is strictly framed. */
    for (unsigned c = 0; c < nconns; c++) {
        const struct fz_uplog *l = &o->uplogs[c];
        struct ref_reqs *r = &fwd_reqs[c];
        ref_reqs_clear(r);
        size_t stop = l->tunnel_at < l->len ? l->tunnel_at : l->len, at = 0;
        const char *why = ref_forwarded(l->bytes, stop, r, &at);
        if (why) {
            fprintf(stderr, "forwarded bytes, connection %u: %s at byte %zu\n", c, why, at);
            show_escaped("upstream received", l->bytes, l->len);
            fz_fail("the gateway forwarded a request that is not strictly framed", data, size);
        }
        for (size_t i = 0; i < r->n; i++) {
            if (nfwd == fwd_cap) {
                fwd_cap = fwd_cap ? 2 * fwd_cap : 64;
                fwd = realloc(fwd, fwd_cap * sizeof *fwd);
                if (!fwd)
                    abort();
            }
            /* The read that brought the message's last byte. */
            unsigned seq = 0;
            for (size_t k = 0; k < l->nreads; k++)
                if (l->reads[k].end >= r->v[i].end) {
                    seq = l->reads[k].seq;
                    break;
                }
            fwd[nfwd++] = (struct fwd){.req = &r->v[i], .seq = seq, .end = r->v[i].end, .conn = c};
        }
    }
    if (nfwd > 1) /* qsort(NULL, 0, ...) is undefined */
        qsort(fwd, nfwd, sizeof *fwd, fwd_order);

    /* 2. No more requests answered upstream than responses relayed. */
    size_t relayed = count(o->got, o->got_len, "\r\nVia: 1.1 moongate\r\n");
    if (o->upstream_requests > relayed || nfwd > relayed) {
        fprintf(stderr,
                "the upstream answered %u request(s) (%zu by the reference reading), the client "
                "got %zu relayed response(s)\n",
                o->upstream_requests, nfwd, relayed);
        show_requests("requests:", fwd, nfwd, NULL);
        show_escaped("client got", o->got, o->got_len);
        fz_fail("more requests forwarded than the client got responses (request smuggling)", data,
                size);
    }

    /* 3. Forwarded requests are client requests, whole and in order. */
    if (nconns < o->nuplogs)
        return;
    ref_reqs_clear(&client_reqs);
    enum ref_stream_end end = ref_client(data, size, &client_reqs);
    if (end == REF_END_UNKNOWN)
        return;
    size_t j = 0;
    for (size_t i = 0; i < nfwd; i++) {
        while (j < client_reqs.n && !same_request(fwd[i].req, &client_reqs.v[j]))
            j++;
        if (j == client_reqs.n) {
            fprintf(stderr, "client bytes read as %zu complete request(s), then %s\n",
                    client_reqs.n, ref_stream_end_text(end));
            show_requests("requests:", fwd, nfwd, &client_reqs);
            fz_fail("a forwarded request (method, body) is not one the client sent, in order", data,
                    size);
        }
        j++;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fz_exchange e = {.client = data, .client_len = size};
    struct fz_outcome o;
    fz_harness_run(&e, &o);
    if (!memmem(data, size, "HEAD", 4))
        check_responses(o.got, o.got_len);
    check_framing(data, size, &o);
    return 0;
}
