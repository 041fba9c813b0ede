/*
 * fuzz_chunk: the framing checks that run beside llhttp, fed arbitrary bytes in
 * arbitrary splits, as reads deliver them:
 * - gateway/http/chunk.h (the CRLF after each chunk's data, which llhttp 8.1.0
 *   skips unseen), driven exactly as proxy.c drives it: llhttp strict with
 *   on_chunk_header/on_body/on_message_complete, mg_chunk_crlf_ok() before each
 *   read's bytes go to llhttp, mg_chunk_data() in on_body;
 * - gateway/http/headscan.h (the pre-scan of every message head).
 *
 * Input: byte 0 flags (bit 0: response instead of request), byte 1 the head
 * size limit (64 * (1 + byte)), byte 2 the number of cuts (mod 16), then one byte
 * per cut (the distance to the previous cut, 1..256); the rest is the payload:
 * the chunked body after a fixed head, and on its own a message head.
 *
 * Invariants: the outcome (error, complete at byte N with body B, or waiting for
 * more) does not depend on the split; every chunk of a body that is not
 * rejected is followed by CRLF (checked against the whole input, independently
 * of chunk.c); each piece is a separate allocation, so a read past a piece's end
 * is an ASan report. The head scan's verdict (and where it stops) does not depend
 * on the split either, and a head it accepts keeps its rules by an independent
 * reading (CRLF pairs only, no obs-fold, no whitespace before a colon).
 */
#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "http/chunk.h"
#include "http/headscan.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_CUTS 16

struct split {
    size_t at[MAX_CUTS + 2]; /* piece i is payload[at[i], at[i+1]) */
    unsigned n;              /* pieces */
};

/* ------------------------------------------------------------ chunked bodies */

enum outcome { O_MORE, O_DONE, O_ERROR };

struct body_run {
    llhttp_t parser;
    struct mg_chunk_check k;
    const char *piece, *end; /* the piece being parsed (its own allocation) */
    size_t base;             /* payload offset of piece[0] */
    const uint8_t *payload;
    size_t payload_len;
    uint64_t left; /* data bytes left in the chunk, counted here independently */
    bool crlf_missing;
    bool done;
    uint8_t body[4096];
    size_t body_len;
};

static struct body_run *run_of(llhttp_t *p)
{
    return p->data;
}

static int on_chunk_header(llhttp_t *p)
{
    struct body_run *r = run_of(p);
    r->k.left = p->content_length; /* as proxy.c on_req_chunk_header */
    r->left = p->content_length;
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    struct body_run *r = run_of(p);
    if (r->body_len + len <= sizeof r->body)
        memcpy(r->body + r->body_len, at, len);
    r->body_len += len;
    if (!mg_chunk_data(&r->k, at, len, r->end)) /* as proxy.c on_req_body */
        return HPE_USER;
    r->left -= len < r->left ? len : r->left;
    if (r->left == 0) {
        size_t after = r->base + (size_t)(at - r->piece) + len;
        if (after + 2 <= r->payload_len && memcmp(r->payload + after, "\r\n", 2) != 0)
            r->crlf_missing = true;
    }
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    run_of(p)->done = true;
    return HPE_PAUSED; /* as proxy.c: the next message waits */
}

static const llhttp_settings_t body_settings = {
    .on_chunk_header = on_chunk_header,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static enum outcome run_body(struct body_run *r, bool response, const uint8_t *payload, size_t len,
                             const struct split *s, size_t *done_at)
{
    static const char req_head[] =
        "POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    static const char resp_head[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    memset(r, 0, sizeof *r);
    r->payload = payload;
    r->payload_len = len;
    llhttp_init(&r->parser, response ? HTTP_RESPONSE : HTTP_REQUEST, &body_settings);
    r->parser.data = r;
    const char *head = response ? resp_head : req_head;
    size_t head_len = response ? sizeof resp_head - 1 : sizeof req_head - 1;
    r->piece = head;
    r->end = head + head_len;
    if (llhttp_execute(&r->parser, head, head_len) != HPE_OK)
        abort();
    for (unsigned i = 0; i < s->n; i++) {
        size_t n = s->at[i + 1] - s->at[i];
        char *piece = malloc(n ? n : 1);
        if (!piece)
            abort();
        memcpy(piece, payload + s->at[i], n);
        r->piece = piece;
        r->end = piece + n;
        r->base = s->at[i];
        /* As proxy.c forward_request_body / parse_response. */
        llhttp_errno_t e = mg_chunk_crlf_ok(&r->k, piece, r->end)
                               ? llhttp_execute(&r->parser, piece, n)
                               : HPE_INVALID_CHUNK_SIZE;
        size_t pos = e == HPE_PAUSED ? (size_t)(llhttp_get_error_pos(&r->parser) - piece) : 0;
        free(piece);
        if (e == HPE_PAUSED) {
            *done_at = s->at[i] + pos;
            return O_DONE;
        }
        if (e != HPE_OK)
            return O_ERROR;
    }
    return O_MORE;
}

static void check_body(bool response, const uint8_t *payload, size_t len, const struct split *s,
                       const uint8_t *input, size_t input_len)
{
    static struct body_run one, many;
    struct split whole = {.at = {0, len}, .n = 1};
    size_t at1 = 0, at2 = 0;
    enum outcome o1 = run_body(&one, response, payload, len, &whole, &at1);
    enum outcome o2 = run_body(&many, response, payload, len, s, &at2);
    if (o1 != o2 || (o1 == O_DONE && at1 != at2)) {
        fprintf(stderr, "whole: outcome %d at %zu; split in %u: outcome %d at %zu\n", o1, at1, s->n,
                o2, at2);
        fz_fail("the chunked body's outcome depends on how it is split", input, input_len);
    }
    if (o1 == O_DONE &&
        (one.body_len != many.body_len ||
         memcmp(one.body, many.body,
                one.body_len < sizeof one.body ? one.body_len : sizeof one.body) != 0))
        fz_fail("the chunked body's data depends on how it is split", input, input_len);
    if (o1 != O_ERROR && (one.crlf_missing || many.crlf_missing))
        fz_fail("a chunk not followed by CRLF was accepted", input, input_len);
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

static void check_head(const uint8_t *payload, size_t len, const struct split *s, size_t limit,
                       const uint8_t *input, size_t input_len)
{
    struct split whole = {.at = {0, len}, .n = 1};
    size_t at1 = 0, at2 = 0;
    enum mg_headscan_result r1 = scan(payload, &whole, limit, &at1);
    enum mg_headscan_result r2 = scan(payload, s, limit, &at2);
    bool same = r1 == r2 && (r1 == MG_HEADSCAN_TOO_LARGE || r1 == MG_HEADSCAN_MORE || at1 == at2);
    if (!same) {
        fprintf(stderr, "whole: %s at %zu; split in %u: %s at %zu\n", mg_headscan_result_text(r1),
                at1, s->n, mg_headscan_result_text(r2), at2);
        fz_fail("the head scan's verdict depends on how the head is split", input, input_len);
    }
    if (r1 != MG_HEADSCAN_DONE)
        return;
    if (at1 > limit)
        fz_fail("head scan accepted a head over its limit", input, input_len);
    const char *broken = head_rule_broken(payload, at1);
    if (broken) {
        fprintf(stderr, "accepted head: %s\n", broken);
        fz_fail("the head scan accepted a head that breaks its rules", input, input_len);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    bool response = data[0] & 1;
    size_t limit = 64 * (1 + (size_t)data[1]);
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

    check_body(response, payload, len, &s, data, size);
    check_head(payload, len, &s, limit, data, size);
    fz_check_no_sanitizer_report();
    return 0;
}
