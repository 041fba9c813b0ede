/*
 * The common upstream response head without llhttp: "HTTP/1.1 NNN reason",
 * token names, plain visible-ASCII values, at most one Content-Length and a
 * Connection of exactly keep-alive or close. Anything else (other versions,
 * 1xx and 6xx statuses, Transfer-Encoding, Upgrade, Proxy-Connection, obs-text,
 * empty values, whitespace llhttp would have to trim) is left to llhttp: this
 * only ever accepts heads llhttp accepts, and reads them as llhttp does
 * (tests/unit/test_resphead.c compares the two). The head was scanned by
 * http/headscan.c first (CRLF line ends, no obs-fold, no space before a colon).
 */
#ifndef MG_HTTP_RESPHEAD_H
#define MG_HTTP_RESPHEAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"
#include "http/message.h"

struct mg_resphead {
    int status;
    struct mg_slice reason;
    bool has_length;
    uint64_t length;
    bool close; /* Connection: close */
};

/* Parses head[0..len) (up to and including its empty line) into *out and the
 * fields into h (mg_fields_init'ed by the caller). Returns false, with h and
 * *out in any state, when llhttp must parse it instead. */
bool mg_resphead_parse(struct mg_arena *a, struct mg_headers *h, const char *head, size_t len,
                       struct mg_resphead *out);

#endif
