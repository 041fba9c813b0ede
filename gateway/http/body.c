/*
 * Body framing decoder (see body.h). The chunked grammar is a byte-level state
 * machine over the framing only: chunk data is handed back in one span per call,
 * never looked at. Every state names the grammar position it waits in; a byte
 * the grammar does not allow there is an error at that byte.
 */
#include "http/body.h"

enum {
    S_SIZE_START,  /* first hex digit of a chunk size */
    S_SIZE,        /* more hex digits, ';', BWS or CR */
    S_SIZE_WS,     /* BWS after a size or value: only ';' or more BWS may follow */
    S_EXT_NAME0,   /* BWS, then the first byte of an extension name */
    S_EXT_NAME,    /* extension name */
    S_EXT_NAME_WS, /* BWS after a name: '=' or ';' */
    S_EXT_VAL0,    /* BWS, then a token or a quoted string */
    S_EXT_TOKEN,   /* token value */
    S_EXT_QUOTED,  /* inside a quoted string */
    S_EXT_QPAIR,   /* after a backslash in a quoted string */
    S_EXT_QEND,    /* after the closing quote */
    S_SIZE_LF,     /* CR of the size line seen */
    S_DATA,        /* chunk data: `left` bytes */
    S_DATA_CR,     /* CRLF after the data */
    S_DATA_LF,
    S_TRAILER0, /* start of a trailer line, or the final CRLF */
    S_TRAILER_NAME,
    S_TRAILER_VALUE,
    S_TRAILER_LF,
    S_END_LF, /* CR of the final CRLF seen */
};

static bool is_ws(unsigned char c)
{
    return c == ' ' || c == '\t';
}

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* qdtext and the second byte of a quoted-pair (RFC 9110 section 5.6.4), but '"'
 * and '\\' which the caller handles. */
static bool is_qdtext(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

/* field-value bytes (RFC 9110 section 5.5): no CTL but HTAB. */
static bool is_field_vchar(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

void mg_body_init(struct mg_body *b, enum mg_body_kind kind, uint64_t length, uint64_t limit)
{
    *b = (struct mg_body){.kind = (uint8_t)kind, .limit = limit};
    if (kind == MG_BODY_LENGTH) {
        b->left = b->total = length;
        if (length == 0)
            b->kind = MG_BODY_NONE;
    }
    b->done = b->kind == MG_BODY_NONE;
}

const char *mg_body_error(const struct mg_body *b)
{
    return b->why ? b->why : "malformed body";
}

bool mg_body_eof(struct mg_body *b)
{
    if (b->kind == MG_BODY_CLOSE && !b->why)
        b->done = true;
    return b->done;
}

static enum mg_body_result fail(struct mg_body *b, const char *why)
{
    b->why = why;
    return MG_BODY_ERROR;
}

/* A size digit, or the end of the digits: checks the limit once the size is known. */
static enum mg_body_result end_size(struct mg_body *b)
{
    if (b->left > b->limit - b->total) {
        b->why = "chunk size over the body limit";
        b->over = true;
        return MG_BODY_TOO_LARGE;
    }
    b->total += b->left;
    return MG_BODY_MORE;
}

/* One framing byte of a chunked body. MG_BODY_MORE: go on; MG_BODY_DONE: the
 * message ended with this byte; anything else: stop. */
static enum mg_body_result chunk_byte(struct mg_body *b, unsigned char c)
{
    int h;
    switch (b->state) {
    case S_SIZE_START:
        if ((h = hex_value(c)) < 0)
            return fail(b, "invalid chunk size");
        b->left = (uint64_t)h;
        b->digits = 1;
        b->state = S_SIZE;
        return MG_BODY_MORE;
    case S_SIZE:
        if ((h = hex_value(c)) >= 0) {
            if (++b->digits > 16)
                return fail(b, "chunk size too long");
            b->left = b->left << 4 | (uint64_t)h;
            return MG_BODY_MORE;
        }
        if (end_size(b) != MG_BODY_MORE)
            return MG_BODY_TOO_LARGE;
        if (c == '\r')
            b->state = S_SIZE_LF;
        else if (c == ';')
            b->state = S_EXT_NAME0;
        else if (is_ws(c))
            b->state = S_SIZE_WS;
        else
            return fail(b, "invalid chunk size");
        return MG_BODY_MORE;
    case S_SIZE_WS:
        if (c == ';')
            b->state = S_EXT_NAME0;
        else if (!is_ws(c))
            return fail(b, "invalid chunk extension");
        return MG_BODY_MORE;
    case S_EXT_NAME0:
        if (mg_http_tchar[c])
            b->state = S_EXT_NAME;
        else if (!is_ws(c))
            return fail(b, "invalid chunk extension name");
        return MG_BODY_MORE;
    case S_EXT_NAME:
        if (mg_http_tchar[c])
            return MG_BODY_MORE;
        if (c == '=')
            b->state = S_EXT_VAL0;
        else if (c == ';')
            b->state = S_EXT_NAME0;
        else if (c == '\r')
            b->state = S_SIZE_LF;
        else if (is_ws(c))
            b->state = S_EXT_NAME_WS;
        else
            return fail(b, "invalid chunk extension name");
        return MG_BODY_MORE;
    case S_EXT_NAME_WS:
        if (c == '=')
            b->state = S_EXT_VAL0;
        else if (c == ';')
            b->state = S_EXT_NAME0;
        else if (!is_ws(c))
            return fail(b, "invalid chunk extension");
        return MG_BODY_MORE;
    case S_EXT_VAL0:
        if (c == '"')
            b->state = S_EXT_QUOTED;
        else if (mg_http_tchar[c])
            b->state = S_EXT_TOKEN;
        else if (!is_ws(c))
            return fail(b, "invalid chunk extension value");
        return MG_BODY_MORE;
    case S_EXT_TOKEN:
        if (mg_http_tchar[c])
            return MG_BODY_MORE;
        if (c == ';')
            b->state = S_EXT_NAME0;
        else if (c == '\r')
            b->state = S_SIZE_LF;
        else if (is_ws(c))
            b->state = S_SIZE_WS;
        else
            return fail(b, "invalid chunk extension value");
        return MG_BODY_MORE;
    case S_EXT_QUOTED:
        if (c == '"')
            b->state = S_EXT_QEND;
        else if (c == '\\')
            b->state = S_EXT_QPAIR;
        else if (!is_qdtext(c))
            return fail(b, "invalid chunk extension quoted value");
        return MG_BODY_MORE;
    case S_EXT_QPAIR:
        if (!is_qdtext(c))
            return fail(b, "invalid chunk extension quoted value");
        b->state = S_EXT_QUOTED;
        return MG_BODY_MORE;
    case S_EXT_QEND:
        if (c == ';')
            b->state = S_EXT_NAME0;
        else if (c == '\r')
            b->state = S_SIZE_LF;
        else if (is_ws(c))
            b->state = S_SIZE_WS;
        else
            return fail(b, "invalid chunk extension");
        return MG_BODY_MORE;
    case S_SIZE_LF:
        if (c != '\n')
            return fail(b, "bare CR in chunk size line");
        b->line = 0;
        b->state = b->left ? S_DATA : S_TRAILER0;
        return MG_BODY_MORE;
    case S_DATA_CR:
        if (c != '\r')
            return fail(b, "missing CRLF after chunk data");
        b->state = S_DATA_LF;
        return MG_BODY_MORE;
    case S_DATA_LF:
        if (c != '\n')
            return fail(b, "missing CRLF after chunk data");
        b->line = 0;
        b->state = S_SIZE_START;
        return MG_BODY_MORE;
    case S_TRAILER0:
        if (c == '\r')
            b->state = S_END_LF;
        else if (mg_http_tchar[c])
            b->state = S_TRAILER_NAME;
        else
            return fail(b, "invalid trailer field");
        return MG_BODY_MORE;
    case S_TRAILER_NAME:
        if (c == ':')
            b->state = S_TRAILER_VALUE;
        else if (!mg_http_tchar[c])
            return fail(b, "invalid trailer field name");
        return MG_BODY_MORE;
    case S_TRAILER_VALUE:
        if (c == '\r')
            b->state = S_TRAILER_LF;
        else if (!is_field_vchar(c))
            return fail(b, "invalid trailer field value");
        return MG_BODY_MORE;
    case S_TRAILER_LF:
        if (c != '\n')
            return fail(b, "bare CR in trailer section");
        b->state = S_TRAILER0;
        return MG_BODY_MORE;
    case S_END_LF:
        if (c != '\n')
            return fail(b, "bare CR at the end of the trailer section");
        return MG_BODY_DONE;
    default:
        return fail(b, "invalid chunked body");
    }
}

/* Bounds the framing bytes: a size line's size and extensions (its CRLF not
 * counted), and the trailer section's field lines with their CRLFs (the final
 * CRLF not counted). */
static bool framing_bounded(struct mg_body *b, unsigned char c)
{
    if (b->state <= S_EXT_QEND)
        return c == '\r' || ++b->line <= MG_BODY_MAX_LINE;
    if (b->state >= S_TRAILER0 && b->state <= S_TRAILER_LF &&
        !(b->state == S_TRAILER0 && c == '\r'))
        return ++b->line <= MG_BODY_MAX_TRAILER;
    return true;
}

static enum mg_body_result feed_chunked(struct mg_body *b, const char *p, size_t len, size_t *used,
                                        struct mg_slice *data)
{
    size_t i = 0;
    while (i < len) {
        if (b->state == S_DATA) {
            size_t n = len - i < b->left ? len - i : (size_t)b->left;
            b->left -= n;
            if (b->left == 0)
                b->state = S_DATA_CR;
            *data = (struct mg_slice){p + i, n};
            *used = i + n;
            return MG_BODY_DATA;
        }
        if (!framing_bounded(b, (unsigned char)p[i])) {
            *used = i;
            return fail(b, b->state <= S_SIZE_LF ? "chunk size line too long"
                                                 : "trailer section too large");
        }
        enum mg_body_result r = chunk_byte(b, (unsigned char)p[i]);
        if (r == MG_BODY_DONE) {
            b->done = true;
            *used = i + 1;
            return r;
        }
        if (r != MG_BODY_MORE) {
            *used = i;
            return r;
        }
        i++;
    }
    *used = len;
    return MG_BODY_MORE;
}

enum mg_body_result mg_body_feed(struct mg_body *b, const char *p, size_t len, size_t *used,
                                 struct mg_slice *data)
{
    *used = 0;
    if (b->done)
        return MG_BODY_DONE;
    if (b->why)
        return b->over ? MG_BODY_TOO_LARGE : MG_BODY_ERROR;
    switch (b->kind) {
    case MG_BODY_LENGTH: {
        if (b->total > b->limit)
            return MG_BODY_TOO_LARGE;
        if (len == 0)
            return MG_BODY_MORE;
        size_t n = len < b->left ? len : (size_t)b->left;
        b->left -= n;
        b->done = b->left == 0; /* the next call says DONE */
        *data = (struct mg_slice){p, n};
        *used = n;
        return MG_BODY_DATA;
    }
    case MG_BODY_CLOSE:
        if (len == 0)
            return MG_BODY_MORE;
        *data = (struct mg_slice){p, len};
        *used = len;
        return MG_BODY_DATA;
    case MG_BODY_CHUNKED:
        return feed_chunked(b, p, len, used, data);
    default:
        b->done = true;
        return MG_BODY_DONE;
    }
}
