/*
 * The head pre-scanner (see headscan.h). A five-state machine: before the
 * start line, in the start line, at a line start, in a field name, in a field
 * value. CR handling is orthogonal: every CR must be followed by LF. Within a
 * state the bytes that change nothing are skipped eight bytes at a time.
 */
#include "http/headscan.h"

#include <stdbool.h>
#include <string.h>

enum {
    ST_PRELUDE, /* before the start line: empty lines allowed */
    ST_START_LINE,
    ST_LINE_START, /* first byte of a field line, or the final CRLF */
    ST_NAME,
    ST_VALUE,
};

void mg_headscan_init(struct mg_headscan *s, size_t limit)
{
    s->state = ST_PRELUDE;
    s->after_cr = 0;
    s->size = 0;
    s->limit = limit;
}

const char *mg_headscan_result_text(enum mg_headscan_result r)
{
    switch (r) {
    case MG_HEADSCAN_BARE_CR:
        return "bare CR in message head";
    case MG_HEADSCAN_BARE_LF:
        return "bare LF in message head";
    case MG_HEADSCAN_OBS_FOLD:
        return "obsolete line folding";
    case MG_HEADSCAN_SPACE_BEFORE_COLON:
        return "whitespace between field name and colon";
    case MG_HEADSCAN_EMPTY_NAME:
        return "empty field name";
    case MG_HEADSCAN_TOO_LARGE:
        return "message head too large";
    default:
        return "ok";
    }
}

/* Bytes that end a field name's fast scan: the colon, whitespace before it
 * (refused) and line ends (left to the line logic). */
static const bool name_stop[256] = {
    [':'] = true, [' '] = true, ['\t'] = true, ['\r'] = true, ['\n'] = true};

/* The first CR or LF in [p, end), or end. In a start line or a field value only
 * they matter. Looking for LF as well as CR is needed: llhttp 8.1.0 in strict
 * mode takes a bare LF as the end of a start line, and the field line after it
 * then skips this scan ("HTTP/1.1 200 OK\nX-Evil : 1\r\n" reached the client
 * with its space before the colon), and whether the LF was seen depended on
 * where a read ended (found by tests/fuzz/fuzz_response and fuzz_chunk). Eight
 * bytes at a time: heads are a few hundred bytes and this runs for every
 * request and every response (a memchr call per byte class cost more than the
 * bytes it skipped). */
static const unsigned char *find_line_end(const unsigned char *p, const unsigned char *end)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    while (end - p >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        uint64_t cr = v ^ (ones * '\r'), lf = v ^ (ones * '\n');
        /* The lowest flagged byte is exactly the first CR or LF: the zero-byte
         * test only misfires in bytes above a real match. */
        uint64_t m = (((cr - ones) & ~cr) | ((lf - ones) & ~lf)) & highs;
        if (m)
            return p + (__builtin_ctzll(m) >> 3);
        p += 8;
    }
#endif
    while (p < end && *p != '\r' && *p != '\n')
        p++;
    return p;
}

/* The first name_stop byte in [p, end), or end. Eight bytes at a time too: a
 * word flags its bytes below 0x21 (SP, HTAB, CR, LF, but also the other
 * controls, which are no stop: llhttp refuses them) and its colons; the
 * lowest flagged byte is exact, and one that is no stop is stepped over. */
static const unsigned char *find_name_stop(const unsigned char *p, const unsigned char *end)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    while (end - p >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        uint64_t colon = v ^ (ones * ':');
        uint64_t m = (((colon - ones) & ~colon) | ((v - ones * 0x21) & ~v)) & highs;
        if (!m) {
            p += 8;
            continue;
        }
        p += __builtin_ctzll(m) >> 3;
        if (name_stop[*p])
            return p;
        p++;
    }
#endif
    while (p < end && !name_stop[*p])
        p++;
    return p;
}

enum mg_headscan_result mg_headscan_feed(struct mg_headscan *s, const char *data, size_t len,
                                         size_t *consumed)
{
    const unsigned char *p = (const unsigned char *)data, *end = p + len;
    unsigned state = s->state;
    bool after_cr = s->after_cr;
    enum mg_headscan_result r = MG_HEADSCAN_MORE;
    while (p < end) {
        if (after_cr) {
            if (*p != '\n') {
                r = MG_HEADSCAN_BARE_CR;
                break;
            }
            after_cr = false;
            p++;
            if (state == ST_LINE_START) {
                r = MG_HEADSCAN_DONE;
                break;
            }
            if (state != ST_PRELUDE)
                state = ST_LINE_START;
            continue;
        }
        unsigned char c = *p;
        switch (state) {
        case ST_PRELUDE: /* empty lines, then the start line */
            if (c == '\r') {
                after_cr = true;
                p++;
                continue;
            }
            state = ST_START_LINE;
            /* fall through */
        case ST_START_LINE:
        case ST_VALUE: /* nothing but CR ends them */
            p = find_line_end(p, end);
            if (p == end)
                continue;
            if (*p == '\n') {
                r = MG_HEADSCAN_BARE_LF;
                goto out;
            }
            after_cr = true;
            p++;
            continue;
        case ST_LINE_START:
            if (c == '\r') {
                after_cr = true;
                p++;
                continue;
            }
            if (c == '\n') {
                r = MG_HEADSCAN_BARE_LF;
                goto out;
            }
            if (c == ' ' || c == '\t') {
                r = MG_HEADSCAN_OBS_FOLD;
                goto out;
            }
            if (c == ':') {
                r = MG_HEADSCAN_EMPTY_NAME;
                goto out;
            }
            state = ST_NAME;
            p++;
            /* fall through */
        default: /* ST_NAME */
            p = find_name_stop(p, end);
            if (p == end)
                continue;
            c = *p;
            if (c == ':') {
                state = ST_VALUE;
                p++;
            } else if (c == '\r') {
                after_cr = true;
                p++;
            } else if (c == '\n') {
                r = MG_HEADSCAN_BARE_LF;
                goto out;
            } else {
                r = MG_HEADSCAN_SPACE_BEFORE_COLON;
                goto out;
            }
            continue;
        }
    }
out:
    s->state = (uint8_t)state;
    s->after_cr = after_cr;
    size_t i = (size_t)(p - (const unsigned char *)data);
    s->size += i;
    if (s->size > s->limit)
        r = MG_HEADSCAN_TOO_LARGE;
    *consumed = i;
    return r;
}
