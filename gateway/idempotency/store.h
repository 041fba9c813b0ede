/*
 * The idempotency store interface: begin / complete / release on a key, with the
 * in-flight lock and compare-and-set of DESIGN.md section 5. Two implementations:
 * store_memory.h (one table for the process) and store_redis.h (one connection
 * per worker, shared by every gateway instance). A struct mg_idem_client is a
 * per-loop handle: each worker opens its own on its loop and uses it only there.
 *
 * Protocol for the proxy, per request on an idempotent route:
 *   key   = mg_idem_key_parse(header)           (400 on -1)
 *   skey  = mg_idem_storage_key(route, scope values, key)
 *   fp    = mg_idem_fp_init/update_body/final   (while buffering up to max_body)
 *   owner = mg_idem_owner_new()
 *   mg_idem_begin(s, &x->idem_req, skey, fp, lock_ttl, owner, on_idem)
 *     STARTED:   forward. On the response: rec = mg_idem_record_new(status, fp, max),
 *                headers, body as it streams; when the response is complete and
 *                its status < 500: mg_idem_complete(s, req|NULL, skey, owner, rec,
 *                ttl, cb); mg_idem_record_unref(rec). On 5xx, timeout, upstream
 *                failure, or the client gone before the response was complete:
 *                mg_idem_release(s, NULL, skey, owner, NULL).
 *     IN_FLIGHT: 409 idempotency_conflict, Retry-After = ceil(retry_after_ms / 1000)
 *     DONE:      replay req->record (record.h), then unref it
 *     TOO_BIG:   the error record.h proposes, then unref req->record
 *     MISMATCH:  422 idempotency_mismatch (checked before IN_FLIGHT: a different
 *                payload is a client bug that waiting would not fix)
 *     ERROR:     on_store_error: reject -> 503 idempotency_store_unavailable,
 *                pass -> forward without dedup (no complete/release then)
 *
 * CALLBACK CONTRACT (both stores):
 *  1. Exactly once. A call that returns 0 with a req starts an operation that ends
 *     in exactly one call of cb(req), unless mg_idem_cancel(req) is called first,
 *     after which cb never runs. A call that returns < 0 never calls cb and has
 *     changed nothing (-EINVAL bad arguments, -EBUSY req still pending, -ECANCELED
 *     store closing). Store failures (down, timeout, full) are not < 0 returns:
 *     they arrive as MG_IDEM_ERROR through cb, so the proxy has one error path.
 *  2. Never before the call returns. cb never runs inside the call that started
 *     the operation, nor inside mg_idem_cancel() or mg_idem_client_close(). It
 *     runs from the store's loop: the memory store decides at call time and
 *     delivers on the next loop iteration (a uv_idle handle); the Redis store
 *     when the reply, the timeout or the disconnect is processed. So advance()
 *     can start an operation, return MG_AGAIN and is re-entered only from the loop.
 *  3. Thread. cb runs on the loop the store was opened on; every call on a store
 *     must come from that loop's thread.
 *  4. Inside cb: req->op is NULL (mg_idem_pending() is false) and the results are
 *     set. cb may reuse or free req (the store never touches req after calling
 *     cb), start or cancel other operations, or close the store.
 *  5. Cancel (client gone): after mg_idem_cancel(req) returns, cb will not run and
 *     the store holds no pointer to req, so the exchange may be freed at once.
 *     The operation itself may still take effect (it was applied, or sent to
 *     Redis). A cancelled begin that turns out STARTED is released by the store
 *     with the owner token (the memory store at once; the Redis store when the
 *     reply arrives, if the connection lives), so an abandoned request does not
 *     hold its key for lock_ttl. Cancelling a req that is not pending is a no-op.
 *  6. Fire and forget: complete() and release() accept req == NULL (cb ignored):
 *     the operation runs and its result is dropped.
 *  7. Arguments are copied (key, owner, fingerprint) or referenced (the record:
 *     the store takes its own reference and seals it); the caller may free or
 *     reuse its buffers as soon as the call returns.
 *  8. Bounded: a Redis operation ends within redis.timeout (plus loop latency),
 *     with MG_IDEM_ERROR at worst, and a late reply is ignored. A memory
 *     operation never waits.
 *  9. Close: mg_idem_client_close() cancels every pending operation (rule 5, no
 *     callbacks) and frees the store once its loop has run its handle closes;
 *     the store must not be used after the call.
 */
#ifndef MG_IDEM_STORE_H
#define MG_IDEM_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "idempotency/fingerprint-t.h"
#include "idempotency/record-t.h"
#include "idempotency/store-t.h"

/* Longest storage key a store accepts (fingerprint.h's buffer size). */
#define MG_IDEM_STORE_KEY_MAX 1024

/* Looks key up and, if absent (or expired), creates the in-flight lock
 * {owner, fp} for lock_ttl_ms. owner: MG_IDEM_OWNER_LEN hex digits (a NUL after
 * them is not needed). See the results in store-t.h. */
int mg_idem_begin(struct mg_idem_client *s, struct mg_idem_req *req, const char *key,
                  size_t key_len, const uint8_t fp[MG_IDEM_FP_LEN], uint64_t lock_ttl_ms,
                  const char *owner, mg_idem_cb cb);

/* Compare-and-set: if key still holds our in-flight lock (owner matches, not
 * expired), replaces it with rec (DONE or TOO_BIG) for ttl_ms: OK; else LOST
 * and nothing changes. rec is sealed by the call. */
int mg_idem_complete(struct mg_idem_client *s, struct mg_idem_req *req, const char *key,
                     size_t key_len, const char *owner, struct mg_idem_record *rec, uint64_t ttl_ms,
                     mg_idem_cb cb);

/* Deletes key only if it still holds our in-flight lock: OK; else LOST. */
int mg_idem_release(struct mg_idem_client *s, struct mg_idem_req *req, const char *key,
                    size_t key_len, const char *owner, mg_idem_cb cb);

/* Abandons the pending operation of req (rule 5). */
void mg_idem_cancel(struct mg_idem_req *req);

static inline bool mg_idem_pending(const struct mg_idem_req *req)
{
    return req->op != NULL;
}

/* Rule 9. NULL is a no-op. */
void mg_idem_client_close(struct mg_idem_client *s);

/* "started", "in_flight", "done", "too_big", "mismatch", "ok", "lost", "error":
 * fixed strings, usable as the idempotency_total{result} metric label. */
const char *mg_idem_result_name(enum mg_idem_result r);

#endif
