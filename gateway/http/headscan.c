/*
 * The head pre-scanner (see headscan.h). A five-state machine over bytes:
 * before the start line, in the start line, at a line start, in a field name,
 * in a field value. CR handling is orthogonal: every CR must be followed by LF.
 */
#include "http/headscan.h"

enum {
    ST_PRELUDE,                /* before the start line: empty lines allowed */
    ST_START_LINE,
    ST_LINE_START,             /* first byte of a field line, or the final CRLF */
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
    case MG_HEADSCAN_TOO_LARGE:
        return "message head too large";
    default:
        return "ok";
    }
}

enum mg_headscan_result mg_headscan_feed(struct mg_headscan *s, const char *data, size_t len,
                                         size_t *consumed)
{
    size_t i = 0;
    enum mg_headscan_result r = MG_HEADSCAN_MORE;
    for (; i < len; i++) {
        unsigned char c = (unsigned char)data[i];
        if (s->after_cr) {
            if (c != '\n') {
                r = MG_HEADSCAN_BARE_CR;
                goto out;
            }
            s->after_cr = 0;
            if (s->state == ST_LINE_START) {
                i++;
                r = MG_HEADSCAN_DONE;
                goto out;
            }
            s->state = s->state == ST_PRELUDE ? ST_PRELUDE : ST_LINE_START;
            continue;
        }
        if (c == '\r') {
            s->after_cr = 1;
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
        case ST_START_LINE:
            break;
        case ST_LINE_START:
            if (c == ' ' || c == '\t') {
                r = MG_HEADSCAN_OBS_FOLD;
                goto out;
            }
            s->state = c == ':' ? ST_VALUE : ST_NAME;
            break;
        case ST_NAME:
            if (c == ':')
                s->state = ST_VALUE;
            else if (c == ' ' || c == '\t') {
                r = MG_HEADSCAN_SPACE_BEFORE_COLON;
                goto out;
            }
            break;
        case ST_VALUE:
            break;
        }
    }
out:
    s->size += i;
    if (s->size > s->limit)
        r = MG_HEADSCAN_TOO_LARGE;
    *consumed = i;
    return r;
}
