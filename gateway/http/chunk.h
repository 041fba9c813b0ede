/*
 * Chunked-body framing checks that Debian's llhttp 8.1.0 skips: it does not look
 * at the two bytes after a chunk's data (fixed in later llhttp), so
 * "5\r\nhelloXX0\r\n\r\n" passes. The check runs beside llhttp, across reads.
 */
#ifndef MG_CHUNK_H
#define MG_CHUNK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct mg_chunk_check {
    uint64_t left;             /* data bytes left in the current chunk */
    uint8_t crlf;              /* bytes of the CRLF after it still to verify: 2, 1, 0 */
};

/* Verifies what is due of the CRLF in [p, end); false on any other byte. */
bool mg_chunk_crlf_ok(struct mg_chunk_check *k, const char *p, const char *end);
/* Accounts for `len` data bytes at `at` (llhttp's on_body), the chunk having
 * started with k->left = its size; at the chunk's end checks the CRLF that
 * follows within [at + len, end). False on a framing error. */
bool mg_chunk_data(struct mg_chunk_check *k, const char *at, size_t len, const char *end);

#endif
