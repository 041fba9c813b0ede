/*
 * fuzz_chunk: the gateway's own framing code, fed arbitrary bytes in arbitrary
 * splits, as reads deliver them:
 * - gateway/http/body.h (the body decoder: chunked, Content-Length and
 *   close-delimited bodies), checked against an independent strict reference
 *   (refhttp.h, ref_chunked: RFC 9112 section 7.1 with body.h's limits);
 * - gateway/http/headscan.h (the pre-scan of every message head).
 *
 * Input: byte 0 flags, byte 1 the head size limit (64 * (1 + byte)), byte 2 the
 * number of cuts (mod 16), then one byte per cut (the distance to the previous
 * cut, 1..256); the rest is the payload: a body on its own, and a message head
 * on its own. Flags: bits 0-1 the body kind (0, 1: chunked; 2: Content-Length;
 * 3: close-delimited); bit 2: a body limit of 16 * (flags >> 3) bytes (else
 * none); the Content-Length is byte 1 * (1 + (flags >> 3)).
 *
 * Body invariants: the outcome (error or too large at byte N, done at byte N,
 * or more) and the data returned do not depend on the split; data returned
 * points inside the piece given and ends where *used does; MORE consumes the
 * whole piece; after DONE, an error or TOO_LARGE further calls return the same
 * and consume nothing; mg_body_eof() is true for a done or close-delimited body
 * and false for one cut short; and the decoder agrees with the reference: the
 * same accept (done at the same byte with the same data), reject (error or too
 * large, whichever) or more (with the same data so far). Each piece is its own
 * allocation, so a read past a piece is an ASan report.
 *
 * Head invariants: the head scan's verdict (and where it stops) does not depend
 * on the split either, and a head it accepts keeps its rules by an independent
 * reading (CRLF pairs only, no obs-fold, no whitespace before a colon).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "http/body.h"
#include "http/headscan.h"
#include "refhttp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_CUTS 16

struct split {
    size_t at[MAX_CUTS + 2]; /* piece i is payload[at[i], at[i+1]) */
    unsigned n;              /* pieces */
};

/* ---------------------------------------------------- known, reported issues */

static const uint8_t *g_input; /* for failure reports */
static size_t g_input_len;

static _Noreturn void fail(const char *what)
{
    fz_fail(what, g_input, g_input_len);
}

/* ------------------------------------------------------------ bodies */

enum outcome { O_MORE, O_DONE, O_REJECT };

static const char *outcome_text(enum outcome o)
{
    return o == O_MORE ? "more" : o == O_DONE ? "done" : "reject";
}

struct body_run {
    enum outcome o;
    enum mg_body_result last; /* DONE, ERROR, TOO_LARGE or MORE */
    size_t at;                /* DONE: payload offset just after the body; reject: where */
    struct ref_buf data;
    bool eof; /* mg_body_eof() after the last piece, when MORE */
};

/* Feeds p[0..n) (a piece at payload offset base) until MORE or an end. */
static bool feed_piece(struct mg_body *b, struct body_run *r, const char *p, size_t n, size_t base)
{
    size_t off = 0;
    for (;;) {
        size_t used = (size_t)-1;
        struct mg_slice d = {NULL, 0};
        enum mg_body_result res = mg_body_feed(b, p + off, n - off, &used, &d);
        if (used > n - off)
            fail("mg_body_feed consumed more than it was given");
        switch (res) {
        case MG_BODY_DATA:
            if (d.len == 0 || used == 0)
                fail("mg_body_feed returned DATA without data or progress");
            if (d.p < p + off || d.p + d.len > p + n)
                fail("mg_body_feed returned data outside the piece given");
            if (d.p + d.len != p + off + used)
                fail("mg_body_feed: *used does not end with the data returned");
            ref_buf_add(&r->data, (const uint8_t *)d.p, d.len);
            off += used;
            continue;
        case MG_BODY_MORE:
            if (used != n - off)
                fail("mg_body_feed returned MORE without consuming its input");
            return true;
        case MG_BODY_DONE:
        case MG_BODY_ERROR:
        case MG_BODY_TOO_LARGE:
            break;
        default:
            fail("mg_body_feed returned an unknown result");
        }
        r->o = res == MG_BODY_DONE ? O_DONE : O_REJECT;
        r->last = res;
        r->at = base + off + used;
        if (res == MG_BODY_DONE && !mg_body_done(b))
            fail("DONE returned but mg_body_done() is false");
        if (res == MG_BODY_ERROR && !mg_body_error(b))
            fail("ERROR returned without an error text");
        /* Sticky: the same answer again, nothing consumed, whatever comes next
         * (the rest of this piece, then bytes that would go on a chunk size). */
        static const char more[] = "0\r\n\r\n";
        const char *q[2] = {p + off + used, more};
        size_t qn[2] = {n - off - used, sizeof more - 1};
        for (int k = 0; k < 2; k++) {
            size_t used2 = (size_t)-1;
            struct mg_slice d2 = {NULL, 0};
            enum mg_body_result again = mg_body_feed(b, q[k], qn[k], &used2, &d2);
            if (again != res || used2 != 0) {
                fprintf(stderr, "first %d at %zu, then %d consuming %zu of \"%.*s\"\n", res, r->at,
                        again, used2, (int)qn[k], q[k]);
                fail("after DONE, an error or TOO_LARGE, mg_body_feed did not answer the same");
            }
        }
        return false;
    }
}

static void run_body(struct body_run *r, enum mg_body_kind kind, uint64_t length, uint64_t limit,
                     const uint8_t *payload, const struct split *s)
{
    struct mg_body b;
    r->o = O_MORE;
    r->last = MG_BODY_MORE;
    r->at = 0;
    r->data.len = 0;
    r->eof = false;
    mg_body_init(&b, kind, length, limit);
    for (unsigned i = 0; i < s->n; i++) {
        size_t n = s->at[i + 1] - s->at[i];
        char *piece = malloc(n ? n : 1);
        if (!piece)
            abort();
        memcpy(piece, payload + s->at[i], n);
        bool go_on = feed_piece(&b, r, piece, n, s->at[i]);
        free(piece);
        if (!go_on)
            break;
    }
    bool eof = mg_body_eof(&b);
    if (r->o == O_MORE)
        r->eof = eof;
    else if (r->o == O_DONE && !eof)
        fail("mg_body_eof() is false after the body was done");
}

/* What the decoder must answer for the whole payload, by the reference. */
static enum outcome reference(enum mg_body_kind kind, uint64_t length, uint64_t limit,
                              const uint8_t *p, size_t len, size_t *end, struct ref_buf *data,
                              const char **why)
{
    *why = "";
    switch (kind) {
    case MG_BODY_CHUNKED: {
        const struct ref_chunked_opts o = {
            .extensions = true,
            .trailers = true,
            .max_digits = 16,
            .max_line = MG_BODY_MAX_LINE,
            .max_trailer = MG_BODY_MAX_TRAILER,
            .limit = limit,
        };
        enum ref_result r = ref_chunked(p, len, &o, end, data, why);
        return r == REF_DONE ? O_DONE : r == REF_MORE ? O_MORE : O_REJECT;
    }
    case MG_BODY_LENGTH:
        if (length == 0) {
            *end = 0;
            return O_DONE;
        }
        if (length > limit) {
            *end = 0;
            return O_REJECT;
        }
        ref_buf_add(data, p, len < length ? len : (size_t)length);
        *end = len < length ? len : (size_t)length;
        return len < length ? O_MORE : O_DONE;
    default: /* MG_BODY_CLOSE: everything is data, the close ends it */
        ref_buf_add(data, p, len);
        *end = len;
        return O_MORE;
    }
}

static void show(const char *label, const struct ref_buf *b)
{
    fprintf(stderr, "  %s (%zu bytes): \"", label, b->len);
    for (size_t i = 0; i < b->len && i < 256; i++)
        fprintf(stderr, b->p[i] >= 0x20 && b->p[i] < 0x7f ? "%c" : "\\x%02x", b->p[i]);
    fprintf(stderr, "%s\"\n", b->len > 256 ? "..." : "");
}

static bool same_data(const struct ref_buf *a, const struct ref_buf *b)
{
    return a->len == b->len && (a->len == 0 || memcmp(a->p, b->p, a->len) == 0);
}

static void check_body(enum mg_body_kind kind, uint64_t length, uint64_t limit,
                       const uint8_t *payload, size_t len, const struct split *s)
{
    static struct body_run one, many;
    static struct ref_buf ref_data;
    struct split whole = {.at = {0, len}, .n = 1};
    run_body(&one, kind, length, limit, payload, &whole);
    run_body(&many, kind, length, limit, payload, s);
    if (one.o != many.o || one.last != many.last || (one.o != O_MORE && one.at != many.at) ||
        (one.o == O_MORE && one.eof != many.eof)) {
        fprintf(stderr, "whole: %s (%d) at %zu; split in %u: %s (%d) at %zu\n", outcome_text(one.o),
                one.last, one.at, s->n, outcome_text(many.o), many.last, many.at);
        fail("the body's outcome depends on how it is split");
    }
    if (!same_data(&one.data, &many.data)) {
        show("whole", &one.data);
        show("split", &many.data);
        fail("the body's data depends on how it is split");
    }
    if (one.o == O_MORE && one.eof != (kind == MG_BODY_CLOSE))
        fail(kind == MG_BODY_CLOSE ? "mg_body_eof() is false for a close-delimited body"
                                   : "mg_body_eof() is true for a body cut short");

    size_t ref_end = 0;
    const char *why = NULL;
    ref_data.len = 0;
    enum outcome ro = reference(kind, length, limit, payload, len, &ref_end, &ref_data, &why);
    bool agree = ro == one.o && (ro != O_DONE || ref_end == one.at) &&
                 (ro == O_REJECT || same_data(&ref_data, &one.data));
    if (!agree) {
        fprintf(stderr,
                "kind %d, length %llu, limit %llu: reference %s at %zu (%s); decoder %s (%d) at "
                "%zu (%s)\n",
                kind, (unsigned long long)length, (unsigned long long)limit, outcome_text(ro),
                ref_end, why, outcome_text(one.o), one.last, one.at,
                one.last == MG_BODY_ERROR ? "error" : "-");
        show("reference data", &ref_data);
        show("decoder data", &one.data);
        fail("the body decoder and the reference disagree");
    }
}

/* ------------------------------------------------------------ head scan */

static enum mg_headscan_result scan(const uint8_t *p, const struct split *s, size_t limit,
                                    size_t *at)
{
    struct mg_headscan hs;
    mg_headscan_init(&hs, limit);
    for (unsigned i = 0; i < s->n; i++) {
        size_t n = s->at[i + 1] - s->at[i], used = 0;
        char *piece = malloc(n ? n : 1);
        if (!piece)
            abort();
        memcpy(piece, p + s->at[i], n);
        enum mg_headscan_result r = mg_headscan_feed(&hs, piece, n, &used);
        free(piece);
        if (used > n)
            abort();
        if (r != MG_HEADSCAN_MORE) {
            *at = s->at[i] + used;
            return r;
        }
    }
    *at = s->n ? s->at[s->n] : 0;
    return MG_HEADSCAN_MORE;
}

/* An independent reading of the rules the scan enforces, for a head it accepted:
 * CR and LF only as CRLF pairs, no field line starting with SP/HTAB (obs-fold),
 * no SP/HTAB in a field name before its colon. */
static const char *head_rule_broken(const uint8_t *h, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (h[i] == '\r' && (i + 1 >= len || h[i + 1] != '\n'))
            return "bare CR";
        if (h[i] == '\n' && (i == 0 || h[i - 1] != '\r'))
            return "bare LF";
    }
    size_t i = 0;
    while (i + 1 < len && h[i] == '\r') /* empty lines before the start line */
        i += 2;
    const uint8_t *nl = memchr(h + i, '\n', len - i);
    if (!nl)
        return "no start line";
    for (i = (size_t)(nl - h) + 1; i < len && h[i] != '\r'; i = (size_t)(nl - h) + 1) {
        if (h[i] == ' ' || h[i] == '\t')
            return "obs-fold";
        nl = memchr(h + i, '\n', len - i);
        if (!nl)
            return "unterminated field line";
        const uint8_t *colon = memchr(h + i, ':', (size_t)(nl - (h + i)));
        for (const uint8_t *q = h + i; colon && q < colon; q++)
            if (*q == ' ' || *q == '\t')
                return "whitespace before colon";
    }
    return NULL;
}

static void check_head(const uint8_t *payload, size_t len, const struct split *s, size_t limit)
{
    struct split whole = {.at = {0, len}, .n = 1};
    size_t at1 = 0, at2 = 0;
    enum mg_headscan_result r1 = scan(payload, &whole, limit, &at1);
    enum mg_headscan_result r2 = scan(payload, s, limit, &at2);
    bool same = r1 == r2 && (r1 == MG_HEADSCAN_TOO_LARGE || r1 == MG_HEADSCAN_MORE || at1 == at2);
    if (!same) {
        fprintf(stderr, "whole: %s at %zu; split in %u: %s at %zu\n", mg_headscan_result_text(r1),
                at1, s->n, mg_headscan_result_text(r2), at2);
        fail("the head scan's verdict depends on how the head is split");
    }
    if (r1 != MG_HEADSCAN_DONE)
        return;
    if (at1 > limit)
        fail("head scan accepted a head over its limit");
    const char *broken = head_rule_broken(payload, at1);
    if (broken) {
        fprintf(stderr, "accepted head: %s\n", broken);
        fail("the head scan accepted a head that breaks its rules");
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    g_input = data;
    g_input_len = size;
    unsigned flags = data[0];
    size_t head_limit = 64 * (1 + (size_t)data[1]);
    static const enum mg_body_kind kinds[4] = {MG_BODY_CHUNKED, MG_BODY_CHUNKED, MG_BODY_LENGTH,
                                               MG_BODY_CLOSE};
    enum mg_body_kind kind = kinds[flags & 3];
    uint64_t limit = (flags & 4) ? 16 * (uint64_t)(flags >> 3) : UINT64_MAX;
    uint64_t length = (uint64_t)data[1] * (1 + (flags >> 3));
    unsigned ncuts = data[2] % MAX_CUTS;
    if (size < 3 + (size_t)ncuts)
        return 0;
    const uint8_t *payload = data + 3 + ncuts;
    size_t len = size - 3 - ncuts;
    struct split s = {.at = {0}, .n = 0};
    size_t pos = 0;
    for (unsigned i = 0; i < ncuts; i++) {
        pos += 1 + (size_t)data[3 + i];
        if (pos >= len)
            break;
        s.at[++s.n] = pos;
    }
    s.at[++s.n] = len;

    check_body(kind, length, limit, payload, len, &s);
    check_head(payload, len, &s, head_limit);
    fz_check_no_sanitizer_report();
    return 0;
}
