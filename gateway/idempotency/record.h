/*
 * Stored responses for Idempotency-Key replay.
 *
 * A record is one contiguous blob, the same bytes in the memory store and as the
 * Redis string value (so the proxy builds it once and nobody re-encodes it):
 *
 *   off len
 *     0   4  magic "MGI1"
 *     4   1  state 'I' in flight | 'D' done | 'B' too big (enum mg_idem_record_state)
 *     5  32  owner token (hex) of the in-flight lock; "0"*32 in D/B records
 *    37  32  request fingerprint (fingerprint.h)
 *    69   2  status, u16be (0 in an in-flight lock)
 *    71   4  header count, u32be
 *    75   4  body length, u32be
 *    79      headers: per header u32be name length, name, u32be value length, value
 *            body
 *
 * The Redis scripts of store_redis.c read the state at byte 5 and the owner at
 * bytes 6..37 (Lua's 1-based string.sub), so those offsets are part of the format.
 *
 * Building (the proxy, while the upstream response streams to the client):
 *   rec = mg_idem_record_new(status, fp, max);      max bounds the whole blob
 *   mg_idem_record_add_header(rec, ...) for each end-to-end header
 *                                        (mg_idem_record_keeps_header() helps)
 *   mg_idem_record_append_body(rec, ...) for each body chunk, de-chunked
 *   mg_idem_complete(store, ..., rec, ...) seals it; then mg_idem_record_unref(rec).
 * The body is stored de-framed, so a replay sends it with Content-Length.
 *
 * Too big: when a header or body chunk would take the blob past `max`, the record
 * turns into a TOO_BIG marker at once (state 'B', status kept, headers and body
 * freed) and every later add/append returns -E2BIG and is ignored. The proxy keeps
 * streaming to the client and completes the key with the marker, so the key is
 * still deduplicated: a retry with the same key and fingerprint gets MG_IDEM_TOO_BIG
 * from begin() and must NOT be forwarded again (that would be a second execution).
 *
 *   Suggested answer to MG_IDEM_TOO_BIG: 409 with a new error code,
 *     XX(IDEMPOTENCY_REPLAY_UNAVAILABLE, 409, "idempotency_replay_unavailable")
 *   and the original status in the body:
 *     {"error":"idempotency_replay_unavailable","status":409,
 *      "original_status":201,"request_id":"..."}
 *   and no Retry-After. Why 409: the request conflicts with the key's state (it
 *   was already executed; its response cannot be reproduced), which is what 409
 *   means, and the draft already uses 409 for key-state conflicts. Not 422 (the
 *   payload matches), not 5xx (nothing failed, and clients retry 5xx), not 410
 *   (the target resource is not gone). The distinct code and the absent
 *   Retry-After tell a client apart from the in-flight 409: waiting will not
 *   help; it must use a new key to execute again, or look the result up.
 *
 * Lifetime: refcounted. A record is mutable only before it is sealed and only by
 * its builder; once sealed (by mg_idem_complete or mg_idem_record_decode) it is
 * immutable, and references may be shared across threads (the count is atomic).
 */
#ifndef MG_IDEM_RECORD_H
#define MG_IDEM_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "idempotency/fingerprint-t.h"
#include "idempotency/record-t.h"

/* A new DONE record with no headers and an empty body, refcount 1. max bounds the
 * blob length (clamped to MG_IDEM_RECORD_HEAD..UINT32_MAX); the proxy may pass
 * MG_IDEM_RECORD_MAX_DEFAULT. Aborts on OOM. */
struct mg_idem_record *mg_idem_record_new(uint16_t status, const uint8_t fp[MG_IDEM_FP_LEN],
                                          size_t max);

/* Appends one header (bytes copied). Only before the first body byte. Returns 0,
 * -E2BIG if the record is (now) too big, -EINVAL if sealed or after body bytes. */
int mg_idem_record_add_header(struct mg_idem_record *r, const char *name, size_t name_len,
                              const char *value, size_t value_len);

/* Appends body bytes (copied). Returns 0, -E2BIG if the record is (now) too big,
 * -EINVAL if sealed. */
int mg_idem_record_append_body(struct mg_idem_record *r, const void *data, size_t len);

/* Turns the record into a TOO_BIG marker now (status and fingerprint kept),
 * for responses the proxy decides not to keep whatever their size; the memory
 * store also uses it when a record cannot fit its budget. -EINVAL if sealed. */
int mg_idem_record_drop_content(struct mg_idem_record *r);

/* Makes the record immutable (idempotent). mg_idem_complete calls it. */
void mg_idem_record_seal(struct mg_idem_record *r);

/* A sealed copy of a blob read from a store, refcount 1, or NULL if the bytes are
 * not a well-formed record (every length is checked against len). */
struct mg_idem_record *mg_idem_record_decode(const void *blob, size_t len);

/* Writes the blob of an in-flight lock (MG_IDEM_RECORD_HEAD bytes). */
void mg_idem_record_inflight_blob(uint8_t out[MG_IDEM_RECORD_HEAD],
                                  const uint8_t fp[MG_IDEM_FP_LEN], const char *owner);

struct mg_idem_record *mg_idem_record_ref(struct mg_idem_record *r);
/* Drops one reference; frees at zero. NULL is a no-op. */
void mg_idem_record_unref(struct mg_idem_record *r);

enum mg_idem_record_state mg_idem_record_state(const struct mg_idem_record *r);
uint16_t mg_idem_record_status(const struct mg_idem_record *r);
const uint8_t *mg_idem_record_fingerprint(const struct mg_idem_record *r); /* 32 bytes */
const char *mg_idem_record_owner(const struct mg_idem_record *r);          /* 32 bytes, no NUL */
size_t mg_idem_record_header_count(const struct mg_idem_record *r);

/* Iterates over the headers: start with *cursor = 0; each call that returns true
 * sets the four outputs (pointers into the record, valid while a reference is
 * held) and advances *cursor; false at the end. */
bool mg_idem_record_next_header(const struct mg_idem_record *r, size_t *cursor, const char **name,
                                size_t *name_len, const char **value, size_t *value_len);

/* The body (pointer into the record) and its length. */
const uint8_t *mg_idem_record_body(const struct mg_idem_record *r, size_t *len);

/* The whole blob, for the Redis store; valid while a reference is held. */
const uint8_t *mg_idem_record_blob(const struct mg_idem_record *r, size_t *len);

/* Whether a response header belongs in a record: false for hop-by-hop headers
 * (RFC 9110 section 7.6.1's fixed list), Content-Length (the replay frames the
 * stored body itself), X-Request-Id (a replay carries the new request's id) and
 * Idempotent-Replayed. Case-insensitive. Headers named by the response's
 * Connection header are hop-by-hop too; the proxy drops those itself. */
bool mg_idem_record_keeps_header(const char *name, size_t len);

#endif
