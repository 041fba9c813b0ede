/*
 * HTTP/1.1 message body framing (RFC 9112 sections 6 and 7), decoded by the
 * gateway itself on both sides, for every byte after the head.
 *
 * Why not llhttp: Debian's llhttp 8.1.0 in strict mode takes CR followed by any
 * byte as a line end in chunk-size lines, extensions, the last chunk and the
 * trailer section, does not look at the CRLF after chunk data, and refuses valid
 * forms (quoted-pairs in extension values, whitespace before ';'). llhttp parses
 * heads; this decoder owns bodies, so what is forwarded is framed by what the
 * gateway itself understood, byte for byte.
 *
 * Strict grammar: CRLF only (no bare CR or LF anywhere in the framing), chunk
 * sizes of at most 16 hex digits, extensions and trailer fields checked against
 * the RFC grammar and bounded in size. Extensions and trailers are consumed and
 * never forwarded. State survives any split of the input across reads. The
 * decoder allocates nothing.
 */
#ifndef MG_HTTP_BODY_H
#define MG_HTTP_BODY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http/message.h"

enum mg_body_kind {
    MG_BODY_NONE,    /* no body: done at once */
    MG_BODY_LENGTH,  /* exactly `length` bytes (Content-Length) */
    MG_BODY_CHUNKED, /* chunked transfer coding */
    MG_BODY_CLOSE,   /* until the connection closes (responses only) */
};

enum mg_body_result {
    MG_BODY_MORE,      /* all input consumed; the body goes on */
    MG_BODY_DATA,      /* *data is body bytes inside the input; call again with the rest */
    MG_BODY_DONE,      /* the message ended; *used bytes (of this call) belong to it */
    MG_BODY_ERROR,     /* framing error at input[*used]; mg_body_error() says which */
    MG_BODY_TOO_LARGE, /* the body (or a declared chunk size) passes `limit` */
};

/* Longest chunk-size line (size, extensions) and trailer section accepted. */
#define MG_BODY_MAX_LINE    4096
#define MG_BODY_MAX_TRAILER (64 * 1024)

struct mg_body {
    uint8_t kind;    /* enum mg_body_kind */
    uint8_t state;   /* chunked: where in the grammar (body.c) */
    uint8_t digits;  /* hex digits of the current chunk size */
    bool done;       /* DONE was returned */
    bool over;       /* the error is TOO_LARGE */
    uint64_t left;   /* LENGTH: bytes to come; CHUNKED: data left in the chunk */
    uint64_t total;  /* data bytes declared so far (chunk sizes, or the length) */
    uint64_t limit;  /* most data bytes allowed (UINT64_MAX: no limit) */
    uint32_t line;   /* bytes of the current size line or trailer section */
    const char *why; /* the error's text, or NULL */
};

/* `length` is the Content-Length for MG_BODY_LENGTH (0 makes it NONE). `limit`
 * bounds the body's data bytes: a length or a chunk size that would pass it is
 * MG_BODY_TOO_LARGE before any of its data is read. */
void mg_body_init(struct mg_body *b, enum mg_body_kind kind, uint64_t length, uint64_t limit);

/* Decodes p[0..len). Always sets *used to the bytes consumed (with DATA, up to
 * and including the data returned). DATA: *data points into p. MORE: *used ==
 * len. DONE: bytes after *used belong to the next message. A CLOSE body never
 * returns DONE: its end is the connection's (mg_body_eof). After DONE or an
 * error, further calls return the same result and consume nothing. */
enum mg_body_result mg_body_feed(struct mg_body *b, const char *p, size_t len, size_t *used,
                                 struct mg_slice *data);

/* The connection closed: true when that completes the body (CLOSE, or a body
 * already done), false when the body was cut short. */
bool mg_body_eof(struct mg_body *b);

/* Whether the decoder has reached the end of the message. */
static inline bool mg_body_done(const struct mg_body *b)
{
    return b->done;
}

/* Text of the last error, for logs. */
const char *mg_body_error(const struct mg_body *b);

#endif
