/*
 * Idempotency-Key header values and owner tokens (DESIGN.md sections 4 and 5).
 *
 * A key arrives in one of two syntaxes, and both map onto one key space:
 *   - a bare token, as Stripe documents it:   Idempotency-Key: 8e03978e-40d5
 *   - an RFC 8941 sf-string, as the IETF draft draft-ietf-httpapi-idempotency-key-header
 *     specifies it:                            Idempotency-Key: "8e03978e-40d5"
 * A value whose first byte (after optional whitespace) is DQUOTE is parsed as an
 * sf-string and unquoted (the escapes \" and \\ become " and \); any other value
 * is taken byte for byte. The key is the resulting byte string.
 *
 * Valid keys are 1..255 bytes of visible ASCII (0x21-0x7E), checked on the
 * unquoted key (DESIGN section 4). Decisions where the two sources leave room:
 *   - SP inside an sf-string is legal RFC 8941 but rejected here: DESIGN section 4
 *     says "not visible ASCII -> 400", and a key with SP could not be sent as a bare
 *     token, so the two syntaxes would no longer name the same keys.
 *   - Parameters after the sf-string ("k";a=1) and anything else after the closing
 *     DQUOTE are rejected, not ignored: keys are opaque and no client is known to
 *     send parameters, so rejecting is the safer reading (a typo never silently
 *     becomes a different key).
 *   - Leading and trailing SP/HTAB are not part of the value (RFC 9110 section 5.5)
 *     and are trimmed; a bare value with inner SP is invalid.
 *   - A bare value that starts with DQUOTE but is not a well-formed sf-string
 *     ("abc, or "a\x") is invalid rather than taken literally.
 *
 * Thread safety: every function here is safe from any thread.
 */
#ifndef MG_IDEM_KEY_H
#define MG_IDEM_KEY_H

#include <stddef.h>

/* Longest valid key, in bytes after unquoting. */
#define MG_IDEM_KEY_MAX 255

/* Owner tokens: 128 random bits as lowercase hex, without a NUL in records. */
#define MG_IDEM_OWNER_LEN 32

/* Parses the header value v[0..len) (not NUL-terminated) into out, which must
 * hold MG_IDEM_KEY_MAX + 1 bytes; the key is NUL-terminated and its length goes
 * to *outlen. Returns 0, or -1 when the value is not a valid key (the proxy
 * answers 400 idempotency_key_invalid). out and *outlen are unspecified after -1. */
int mg_idem_key_parse(const char *v, size_t len, char *out, size_t *outlen);

/* A fresh owner token for one begin(): 16 bytes from the OpenSSL CSPRNG
 * (RAND_bytes, seeded from getrandom) as 32 lowercase hex digits plus a NUL.
 * Unpredictable, so a client cannot guess another request's token, and unique
 * with overwhelming probability across gateway instances sharing one Redis.
 * Returns 0, or -EIO if the CSPRNG failed (out is then unspecified). */
int mg_idem_owner_new(char out[MG_IDEM_OWNER_LEN + 1]);

/* Whether s[0..MG_IDEM_OWNER_LEN) looks like a token from mg_idem_owner_new(). */
int mg_idem_owner_valid(const char *s);

#endif
