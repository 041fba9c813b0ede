/*
 * A byte-level pre-scan of HTTP/1.1 message heads, run before llhttp sees them.
 *
 * It finds where the head ends (the empty line) so the head can be copied into
 * the exchange's arena and parsed in one piece, and it rejects what Debian's
 * llhttp 8.1.0 accepts in strict mode but RFC 9112 forbids (DESIGN.md section 4):
 * a bare CR anywhere in the head, obs-fold (a line starting with SP/HTAB) and
 * whitespace between a field name and its colon, and a field line with an empty
 * name (": x", which llhttp 8.1.0 passes on as a field). Bare LF line ends, which
 * RFC 9112 lets a recipient accept, are refused too: strictness closes
 * smuggling gaps. It also enforces the head size limit. State survives across
 * reads, so the head may arrive in any pieces.
 */
#ifndef MG_HEADSCAN_H
#define MG_HEADSCAN_H

#include <stddef.h>
#include <stdint.h>

enum mg_headscan_result {
    MG_HEADSCAN_MORE = 0, /* all bytes consumed, the head goes on */
    MG_HEADSCAN_DONE,     /* the head ended; *consumed bytes belong to it */
    MG_HEADSCAN_BARE_CR,
    MG_HEADSCAN_BARE_LF,
    MG_HEADSCAN_OBS_FOLD,
    MG_HEADSCAN_SPACE_BEFORE_COLON,
    MG_HEADSCAN_EMPTY_NAME,
    MG_HEADSCAN_TOO_LARGE,
};

struct mg_headscan {
    uint8_t state;
    uint8_t after_cr; /* the previous byte was CR: LF must follow */
    size_t size;      /* bytes of the head so far */
    size_t limit;
};

void mg_headscan_init(struct mg_headscan *s, size_t limit);
/* Scans data[0..len). On DONE, *consumed is the number of bytes up to and
 * including the LF of the empty line; on MORE it is len; on an error it is the
 * position of the offending byte. Leading empty lines before the start line are
 * tolerated (RFC 9112 section 2.2) and counted in *consumed. */
enum mg_headscan_result mg_headscan_feed(struct mg_headscan *s, const char *data, size_t len,
                                         size_t *consumed);
const char *mg_headscan_result_text(enum mg_headscan_result r);

#endif
