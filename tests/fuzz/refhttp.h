/*
 * Reference HTTP/1.1 request framing for the fuzz targets' invariants: a strict,
 * whole-buffer reading of RFC 9112 written independently of the gateway (no
 * llhttp, nothing from gateway/http/), simple rather than fast. fuzz_chunk checks
 * the gateway's body decoder (http/body.h) against ref_chunked(); fuzz_request
 * reads what the upstream received, and what the client sent, with these.
 *
 * Every parser works on the whole input it is given and answers for a prefix of
 * it: REF_DONE (a complete element ends at *end), REF_MORE (the input is a valid
 * beginning that more bytes could complete), REF_ERROR (the grammar is broken at
 * *end) or REF_LIMIT (a size bound of the options is passed at *end: no grammar
 * error was seen before it). Errors are found at the first byte that no
 * continuation could make valid.
 */
#ifndef MG_FUZZ_REFHTTP_H
#define MG_FUZZ_REFHTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum ref_result { REF_DONE, REF_MORE, REF_ERROR, REF_LIMIT };

const char *ref_result_text(enum ref_result r);

struct ref_buf {
    uint8_t *p;
    size_t len, cap;
};

void ref_buf_add(struct ref_buf *b, const uint8_t *p, size_t n);
void ref_buf_free(struct ref_buf *b);

/* RFC 9110 section 5.6.2 token characters. */
bool ref_tchar(uint8_t c);

/* ------------------------------------------------------------ chunked */

struct ref_chunked_opts {
    bool extensions;    /* chunk extensions allowed (else any byte after the size is an error) */
    bool trailers;      /* trailer fields allowed (else the last chunk's CRLF must end it) */
    size_t max_digits;  /* hex digits in one chunk size, leading zeros included */
    size_t max_line;    /* bytes of a chunk-size line before its CRLF (size and extensions) */
    size_t max_trailer; /* bytes of the trailer section: its field lines with their CRLFs */
    uint64_t limit;     /* the sum of the chunk sizes */
};

/* RFC 9112 section 7.1, strictly:
 *   chunked-body = *chunk last-chunk trailer-section CRLF
 *   chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
 *   chunk-size   = 1*HEXDIG          last-chunk = 1*("0") [ chunk-ext ] CRLF
 *   chunk-ext    = *( BWS ";" BWS token [ BWS "=" BWS ( token / quoted-string ) ] )
 *   trailer-section = *( field-line CRLF ),  field-line = token ":" OWS value OWS
 * with field values of SP, HTAB, VCHAR and obs-text only, and CR only in CRLF.
 * `data` receives the chunk data read (also when the body is cut short or
 * broken: what came before). */
enum ref_result ref_chunked(const uint8_t *p, size_t len, const struct ref_chunked_opts *o,
                            size_t *end, struct ref_buf *data, const char **why);

/* ------------------------------------------------------------ request heads */

#define REF_MAX_FIELDS 256

struct ref_field {
    const uint8_t *name, *value; /* value without leading/trailing OWS */
    size_t name_len, value_len;
};

struct ref_head {
    const uint8_t *method, *target;
    size_t method_len, target_len;
    int major, minor;
    struct ref_field f[REF_MAX_FIELDS];
    unsigned nf;
};

/* request-line CRLF *( field-line CRLF ) CRLF, with
 *   request-line = token SP 1*( %x21-7E / obs-text ) SP "HTTP/" DIGIT "." DIGIT
 *   field-line   = token ":" OWS *( SP / HTAB / VCHAR / obs-text ) (OWS trimmed)
 * No bare CR or LF, no obs-fold, no whitespace before the colon. `empty_lines`:
 * CRLFs before the request line are skipped (RFC 9112 section 2.2). `del_ok`:
 * DEL (0x7f) is taken in field values (a CTL, but harmless to framing).
 * More than REF_MAX_FIELDS fields is REF_LIMIT. */
enum ref_result ref_request_head(const uint8_t *p, size_t len, bool empty_lines, bool del_ok,
                                 struct ref_head *h, size_t *end, const char **why);

/* Known, reported: the gateway forwards a request-target with HTAB or FF in it
 * ("GET /a<HTAB>b HTTP/1.1", which llhttp 8.1.0 takes). When true,
 * ref_request_head takes HTAB and FF in a request-target, so that a fuzz run can
 * look past it (fuzz_request sets it from FZ_TOLERATE_TAB_TARGET=1). */
extern bool ref_target_tab_ok;

/* Fields named `name` (case-insensitive); *last: the last one's index. */
unsigned ref_field_count(const struct ref_head *h, const char *name, int *last);
/* Case-insensitive comparison of a slice with a NUL-terminated string. */
bool ref_ieq(const uint8_t *p, size_t n, const char *s);

/* ------------------------------------------------------------ request streams */

struct ref_req {
    uint8_t method[24]; /* truncated to 23 bytes, NUL-terminated */
    struct ref_buf body;
    size_t end; /* offset just after the message */
};

struct ref_reqs {
    struct ref_req *v;
    size_t n, cap;
};

void ref_reqs_clear(struct ref_reqs *r); /* keeps the array for reuse */

/* What the upstream received on one connection, read as a gateway must have
 * framed it: every message a well-formed HTTP/1.1 request head (no empty lines
 * before it) with exactly one Host, at most one Content-Length (digits only) and
 * no Transfer-Encoding, or one `Transfer-Encoding: chunked` and no
 * Content-Length; a chunked body without extensions or trailers. The last
 * message may be cut short; nothing else may follow. Parsing stops after a
 * CONNECT or Upgrade request (a tunnel follows). Complete messages go to `out`.
 * Returns NULL, or why the bytes are not that (*at: where). */
const char *ref_forwarded(const uint8_t *p, size_t len, struct ref_reqs *out, size_t *at);

enum ref_stream_end {
    REF_END_CLEAN,   /* the input ends where a message ends */
    REF_END_PARTIAL, /* the last message is a valid beginning, cut short */
    REF_END_BROKEN,  /* a message with a clean head has a body that breaks the grammar */
    REF_END_UNKNOWN, /* a message this reference does not frame (see ref_client) */
};

const char *ref_stream_end_text(enum ref_stream_end e);

/* What a client sent, read conservatively: the requests it frames are the
 * complete messages whose heads are clean (ref_request_head, empty lines
 * allowed), HTTP/1.0 or 1.1, not CONNECT, without an Upgrade field, and that
 * have a framing without ambiguity: no Transfer-Encoding and at most one
 * Content-Length of at most 18 digits, or (HTTP/1.1) one Transfer-Encoding whose
 * value is exactly "chunked" and no Content-Length; a chunked body is decoded
 * with extensions and trailers allowed and no size limit but 16 hex digits.
 * Anything else stops the reading with REF_END_UNKNOWN: `out` then holds the
 * messages before it. */
enum ref_stream_end ref_client(const uint8_t *p, size_t len, struct ref_reqs *out);

#endif
