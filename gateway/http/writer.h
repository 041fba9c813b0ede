/*
 * The one writer for HTTP/1.1 response heads the gateway sends (STYLE point 19):
 * the reason-phrase table, the status line, field lines, and the gateway's own
 * tail of every head (Via, X-Request-Id, the framing field, Connection, the
 * empty line). Proxied, plugin-made, replayed, error and admin responses all
 * end with mg_http_put_tail, so those fields are decided and spelled in one place.
 *
 * Every function writes at `o`/`out`, which the caller sized (see the *_MAX
 * macros and mg_http_tail_max), and returns where it stopped. Nothing is
 * allocated, nothing is NUL-terminated, nothing uses printf: these run on the
 * hot path of every response. The functions keep no state, so any thread may
 * call them (the admin thread does).
 */
#ifndef MG_HTTP_WRITER_H
#define MG_HTTP_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http/message.h"

#define MG_HTTP_DEC_MAX 20 /* digits of UINT64_MAX */
#define MG_HTTP_HEX_MAX 16 /* digits of UINT64_MAX in hex */
/* The longest reason phrase in the table ("Request Header Fields Too Large"). */
#define MG_HTTP_REASON_MAX 31
/* "HTTP/1.1 NNN " + reason + CRLF, for a reason of `reason_len` bytes. */
#define MG_HTTP_STATUS_LINE_SIZE(reason_len) (13 + (size_t)(reason_len) + 2)
/* "Name: value" + CRLF. */
#define MG_HTTP_FIELD_SIZE(name_len, value_len) ((size_t)(name_len) + (size_t)(value_len) + 4)

/* The reason phrase for `status` (RFC 9110 section 15): a static string, never
 * NULL. Statuses outside the table get "OK" below 400 and "Error" from 400 on. */
const char *mg_http_reason(int status);

/* `v` in decimal at `out` (1 to MG_HTTP_DEC_MAX bytes); returns the count. */
size_t mg_http_put_dec(char *out, uint64_t v);

/* `v` in lower-case hex at `out`, left-padded with '0' to at least `min_digits`
 * (at most MG_HTTP_HEX_MAX; 0 acts as 1); returns the count (at most 16). */
size_t mg_http_put_hex(char *out, uint64_t v, int min_digits);

/* A chunk's size line for `len` bytes of data ("<hex>\r\n") at `out`; returns
 * its length (at most MG_HTTP_CHUNK_HEAD_MAX). */
#define MG_HTTP_CHUNK_HEAD_MAX (MG_HTTP_HEX_MAX + 2)
size_t mg_http_chunk_head(char *out, size_t len);

/* Whether an upstream's reason phrase may be passed on as received: RFC 9112
 * section 4 allows HTAB, SP, VCHAR and obs-text. Debian's llhttp 8.1 lets other
 * control bytes (NUL, DEL...) through in the status text; such a phrase is
 * replaced with the table's (mg_http_reason). */
bool mg_http_reason_ok(struct mg_slice reason);

/* "HTTP/1.1 NNN <reason>\r\n" at `o`; returns the end. `status` must be
 * 100..999. `reason` is written verbatim and may be empty (an upstream's
 * "HTTP/1.1 200 \r\n" stays that, with the space): proxied responses pass the
 * upstream's phrase on. Needs MG_HTTP_STATUS_LINE_SIZE(reason.len) bytes. */
char *mg_http_put_status_line(char *o, int status, struct mg_slice reason);

/* The status line with the table's phrase (mg_http_reason), for responses the
 * gateway makes itself. Needs MG_HTTP_STATUS_LINE_SIZE(MG_HTTP_REASON_MAX). */
char *mg_http_put_status(char *o, int status);

/* "<name>: <value>\r\n" at `o`, both copied verbatim; returns the end. The
 * caller vouches for them (validated or its own). Needs MG_HTTP_FIELD_SIZE. */
char *mg_http_put_field(char *o, struct mg_slice name, struct mg_slice value);

/* How the response body is delimited, as the tail announces it. */
enum mg_http_framing {
    MG_HTTP_FRAME_NONE,    /* no framing field: bodyless, or delimited by the close */
    MG_HTTP_FRAME_LENGTH,  /* "Content-Length: <length>" */
    MG_HTTP_FRAME_CHUNKED, /* "Transfer-Encoding: chunked" */
};

/* The Connection field the tail writes. */
enum mg_http_conn {
    MG_HTTP_CONN_NONE,       /* none: HTTP/1.1 persistence is the default */
    MG_HTTP_CONN_CLOSE,      /* "Connection: close" */
    MG_HTTP_CONN_KEEP_ALIVE, /* "Connection: keep-alive" (HTTP/1.0 clients) */
    MG_HTTP_CONN_UPGRADE,    /* "Connection: upgrade" + "Upgrade: <upgrade>" (101) */
};

/* What mg_http_put_tail writes, in this order. */
struct mg_http_tail {
    bool via;               /* "Via: 1.1 moongate" */
    const char *request_id; /* "X-Request-Id: <id>" (NUL-terminated), or NULL
                               when the message already carries one */
    enum mg_http_framing framing;
    uint64_t length; /* for MG_HTTP_FRAME_LENGTH */
    enum mg_http_conn conn;
    struct mg_slice upgrade; /* the protocol, for MG_HTTP_CONN_UPGRADE */
};

/* The Connection field for a response that is not a 101: "close" when the
 * connection closes after it, "keep-alive" when it persists for an HTTP/1.0
 * client (which would otherwise assume a close, RFC 9112 section 9.3), and none
 * for HTTP/1.1 (persistent by default). */
enum mg_http_conn mg_http_conn_for(bool close_after, unsigned http_minor);

/* The most bytes mg_http_put_tail(o, t) writes (an upper bound, exact but for
 * the length's digits). */
size_t mg_http_tail_max(const struct mg_http_tail *t);

/* Writes the gateway's own end of a response head at `o`: Via, X-Request-Id,
 * the framing field, Connection (or the upgrade pair) and the empty line, each
 * as `t` says. `o` needs mg_http_tail_max(t) bytes. Returns the end of the head;
 * the caller still owns `t` and the strings it points to. */
char *mg_http_put_tail(char *o, const struct mg_http_tail *t);

#endif
