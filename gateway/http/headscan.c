/*
 * The head pre-scanner (see headscan.h). A five-state machine over bytes:
 * before the start line, in the start line, at a line start, in a field name,
 * in a field value. CR handling is orthogonal: every CR must be followed by LF.
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

/* In a start line or a field value only CR and LF matter: jump to the CR with
 * memchr (vectorised in glibc) instead of looking at every byte, then make sure
 * no LF hides in the bytes jumped over. That second look is needed: llhttp 8.1.0
 * in strict mode takes a bare LF as the end of a start line, and the field line
 * after it then skips this scan ("HTTP/1.1 200 OK\nX-Evil : 1\r\n" reached the
 * client with its space before the colon), and whether the LF was seen depended
 * on where a read ended (found by tests/fuzz/fuzz_response and fuzz_chunk).
 * Returns the index of the CR (or len); with *bare_lf set, the LF's. */
static size_t skip_to_cr(const char *data, size_t i, size_t len, bool *bare_lf)
{
    const char *cr = memchr(data + i, '\r', len - i);
    size_t end = cr ? (size_t)(cr - data) : len;
    const char *lf = memchr(data + i, '\n', end - i);
    if (lf) {
        *bare_lf = true;
        return (size_t)(lf - data); /* the offending byte */
    }
    return end;
}

enum mg_headscan_result mg_headscan_feed(struct mg_headscan *s, const char *data, size_t len,
                                         size_t *consumed)
{
    size_t i = 0;
    enum mg_headscan_result r = MG_HEADSCAN_MORE;
    while (i < len) {
        unsigned char c = (unsigned char)data[i];
        if (s->after_cr) {
            if (c != '\n') {
                r = MG_HEADSCAN_BARE_CR;
                goto out;
            }
            s->after_cr = 0;
            i++;
            if (s->state == ST_LINE_START) {
                r = MG_HEADSCAN_DONE;
                goto out;
            }
            s->state = s->state == ST_PRELUDE ? ST_PRELUDE : ST_LINE_START;
            continue;
        }
        if (c == '\r') {
            s->after_cr = 1;
            i++;
            continue;
        }
        if (c == '\n') {
            r = MG_HEADSCAN_BARE_LF;
            goto out;
        }
        switch (s->state) {
        case ST_PRELUDE:
            s->state = ST_START_LINE;
            break;
        case ST_LINE_START:
            if (c == ' ' || c == '\t') {
                r = MG_HEADSCAN_OBS_FOLD;
                goto out;
            }
            if (c == ':') {
                r = MG_HEADSCAN_EMPTY_NAME;
                goto out;
            }
            s->state = ST_NAME;
            i++;
            continue;
        case ST_NAME:
            if (c == ':')
                s->state = ST_VALUE;
            else if (c == ' ' || c == '\t') {
                r = MG_HEADSCAN_SPACE_BEFORE_COLON;
                goto out;
            }
            i++;
            continue;
        default:
            break;
        }
        /* ST_START_LINE or ST_VALUE: nothing but CR ends them. */
        bool bare_lf = false;
        i = skip_to_cr(data, i, len, &bare_lf);
        if (bare_lf) {
            r = MG_HEADSCAN_BARE_LF;
            goto out;
        }
    }
out:
    s->size += i;
    if (s->size > s->limit)
        r = MG_HEADSCAN_TOO_LARGE;
    *consumed = i;
    return r;
}
