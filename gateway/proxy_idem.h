/*
 * The Idempotency-Key phase of an exchange (DESIGN.md sections 4 and 5): the
 * proxy's side of the store protocol in idempotency/store.h.
 *
 * An exchange on a route with an `idempotency` section whose method is listed
 * and which carries a valid key goes through two extra states (proxy-t.h):
 *   BUFFER  the body is read whole (up to max_body) into x->body_copy and hashed;
 *   LOOKUP  begin() asks the store about the key; its answer either lets the
 *           request on to CONNECT (we now own the key's in-flight lock), or ends
 *           the exchange: a replay of the stored response, 409, 422, or 503;
 * and, when the lock is ours, one at the end:
 *   COMMIT  the response is queued but its last bytes are held until the store
 *           has kept it (complete) or freed the key (release, for 5xx and
 *           failures), so a client never sees a whole response before a retry
 *           of it would meet the record.
 * The response is recorded while it streams to the client (never delaying it);
 * a response too big for a record is kept as a marker that refuses replays.
 */
#ifndef MG_PROXY_IDEM_H
#define MG_PROXY_IDEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/errors.h"
#include "idempotency/fingerprint-t.h"
#include "idempotency/key.h"
#include "idempotency/store-t.h"

struct mg_conn;
struct mg_idempotency_conf;
struct mg_idem_memtable;

/* Per-exchange state, zeroed with the exchange. */
struct mg_px_idem {
    struct mg_idem_client *store; /* NULL: this exchange is not deduplicated */
    bool keyed;                   /* a valid key on an idempotency route: retries are safe */
    bool owned;                   /* our in-flight lock holds the key: complete or release it */
    bool forwarded;               /* the request went to an upstream (it may have run) */
    struct mg_idem_req req;
    struct mg_idem_fp fp;
    uint8_t fingerprint[MG_IDEM_FP_LEN];
    char owner[MG_IDEM_OWNER_LEN + 1];
    char *skey; /* storage key, in the arena */
    size_t skey_len;
    struct mg_idem_record *rec;    /* the response being recorded */
    struct mg_idem_record *replay; /* the record being replayed: its body is being sent */
    uint16_t original_status;      /* for idempotency_replay_unavailable */
};

/* After routing and the access phase. Returns an error to answer with, or
 * MG_ERR_NONE: the exchange is now in BUFFER, or dedup does not apply to it. */
enum mg_error mg_px_idem_start(struct mg_conn *c);
/* A piece of the request body while in BUFFER. Returns -1 past max_body (x->error
 * is set to body_too_large). */
int mg_px_idem_body(struct mg_conn *c, const char *at, size_t len);
/* The body is complete: asks the store (state LOOKUP), or fails the exchange. */
void mg_px_idem_lookup(struct mg_conn *c);
/* The response head went to the client: start recording it (x->status final). */
void mg_px_idem_response_head(struct mg_conn *c);
/* De-chunked response body bytes on their way to the client. */
void mg_px_idem_response_body(struct mg_conn *c, const char *at, size_t len);
/* The exchange's answer is queued (x->sent_status). When we hold the key,
 * completes it (status < 500 and the response was recorded in full) or
 * releases it, and returns true: the exchange waits in COMMIT until the store
 * answers. */
bool mg_px_idem_settle(struct mg_conn *c);
/* The upstream failed after the response started (the client connection is about
 * to close): frees the key, as for any upstream failure. */
void mg_px_idem_release(struct mg_conn *c);
/* The client is gone or the exchange is being cut short: cancels a pending store
 * operation; a lock still held is released if the request never reached an
 * upstream, else left to expire after lock_ttl (it may have been executed, and
 * its response is lost with the client: a retry must not run it again). */
void mg_px_idem_abandon(struct mg_conn *c);
/* Drops the records (once no write points into a replayed body). */
void mg_px_idem_free(struct mg_conn *c);

#endif
