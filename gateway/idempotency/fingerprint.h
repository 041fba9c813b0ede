/*
 * Request fingerprints and storage keys for Idempotency-Key deduplication.
 *
 * Fingerprint: SHA-256 over an injective encoding of (method, path+query, scope
 * values, body), so two different requests can only share a fingerprint through
 * a SHA-256 collision, never through concatenation ("POST" "/ab" vs "POST/" "ab",
 * or a scope value that absorbs the start of the body). The encoding, in order:
 *
 *   "mg-idem-fp" 0x01                      domain tag + version
 *   u64be len(method)  method
 *   u64be len(target)  target              path+query exactly as received
 *   u64be nscope, then per value: u64be len  value
 *   body bytes                             as they stream, any chunking
 *   u64be body length                      suffix (the fields before are self-delimiting,
 *                                          so the body is what lies between them and it)
 *
 * Scope values are taken in config order (routes[].idempotency.scope); an absent
 * header counts as an empty value, as the brief for the store specifies. When a
 * header occurs more than once the proxy passes the values joined with ", " (RFC
 * 9110 section 5.3), so reordering duplicates changes the fingerprint, as it may.
 *
 * Storage key: "mg:idem:" ROUTE ":" hex(SHA-256(scope values)) ":" KEY, where
 * ROUTE is the route name with '%', ':' and bytes outside 0x21-0x7E percent-
 * encoded (config route names are free text, and an unescaped ':' would let
 * route "a:<hash>:k" and route "a" share key strings). The scope hash uses the
 * same framing as above under the tag "mg-idem-scope" 0x01. Records of different
 * routes or different tenants (scope values, e.g. Authorization) therefore live
 * under different keys and can never be replayed across them. KEY is a key
 * accepted by mg_idem_key_parse() and comes last, so it needs no escaping.
 *
 * Thread safety: any thread; one struct mg_idem_fp is used by one thread at a time.
 */
#ifndef MG_IDEM_FINGERPRINT_H
#define MG_IDEM_FINGERPRINT_H

#include <stddef.h>
#include <stdint.h>

#include "idempotency/fingerprint-t.h"

/* Buffer size that holds every storage key of a route name up to 128 bytes. */
#define MG_IDEM_STORAGE_KEY_MAX 1024

/* Starts a fingerprint: hashes the tag, method, target and scope values (all
 * borrowed for the call only). Allocates the digest context (aborts on OOM).
 * Returns 0, or -EIO if OpenSSL refused (fp is then left disposed). */
int mg_idem_fp_init(struct mg_idem_fp *fp, struct mg_idem_slice method, struct mg_idem_slice target,
                    const struct mg_idem_slice *scope, size_t nscope);

/* Feeds body bytes; the result does not depend on how the body is chunked.
 * Returns 0 or -EIO. len 0 is allowed. */
int mg_idem_fp_update_body(struct mg_idem_fp *fp, const void *data, size_t len);

/* Writes the 32-byte fingerprint and disposes of the context. Returns 0 or -EIO. */
int mg_idem_fp_final(struct mg_idem_fp *fp, uint8_t out[MG_IDEM_FP_LEN]);

/* Frees the context when the exchange is abandoned before final. Idempotent,
 * and a no-op after final or on a zeroed struct. */
void mg_idem_fp_dispose(struct mg_idem_fp *fp);

/* SHA-256 of the framed scope values (see above). Returns 0 or -EIO. */
int mg_idem_scope_hash(const struct mg_idem_slice *scope, size_t nscope,
                       uint8_t out[MG_IDEM_FP_LEN]);

/* Writes the NUL-terminated storage key into out[0..cap). Returns its length
 * (without the NUL), -ENAMETOOLONG if cap is too small, or -EIO. route is the
 * route name, key a parsed key (mg_idem_key_parse). */
int mg_idem_storage_key(char *out, size_t cap, const char *route, size_t route_len,
                        const struct mg_idem_slice *scope, size_t nscope, const char *key,
                        size_t key_len);

/* The header name of a config scope entry "header:NAME", or NULL if the entry
 * has another form (config validation only lets "header:" through today). */
const char *mg_idem_scope_header(const char *entry);

#endif
