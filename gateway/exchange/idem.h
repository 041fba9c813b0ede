/*
 * The Idempotency-Key phase of an exchange (DESIGN.md sections 4 and 5): the
 * exchange's side of the store protocol in idempotency/store.h.
 *
 * An exchange on a route with an `idempotency` section whose method is listed
 * and which carries a valid key goes through two extra states (exchange-t.h):
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
 * Nothing here assigns the exchange's state: functions return verdicts, and the
 * store's answers reach the state machine as an event (mg_exchange_run).
 */
#ifndef MG_EXCHANGE_IDEM_H
#define MG_EXCHANGE_IDEM_H

#include <stdbool.h>
#include <stddef.h>

#include "exchange/exchange-t.h"

/* After routing and the access phase. Returns an error to answer with, or
 * MG_ERR_NONE with *buffer: true when the body must now be read whole (BUFFER),
 * false when dedup does not apply. */
enum mg_error mg_xidem_start(struct mg_exchange *x, bool *buffer);
/* A piece of the request body while in BUFFER. Returns -1 past max_body (x->error
 * is set to body_too_large). */
int mg_xidem_body(struct mg_exchange *x, const char *at, size_t len);
/* The body is complete: asks the store. MG_AGAIN: wait in LOOKUP for the answer
 * (mg_xidem_answered); MG_NEXT: no answer will come, *err says what to do
 * (MG_ERR_NONE: forward without dedup). */
int mg_xidem_lookup(struct mg_exchange *x, enum mg_error *err);

enum mg_xidem_verdict {
    MG_XIDEM_WAIT,    /* no answer yet */
    MG_XIDEM_FORWARD, /* forward (holding the lock, or without dedup) */
    MG_XIDEM_REPLAY,  /* answer with the stored response (mg_xidem_replay) */
    MG_XIDEM_FAIL,    /* answer with *err */
};
/* In LOOKUP: what the store's answer means. */
enum mg_xidem_verdict mg_xidem_answered(struct mg_exchange *x, enum mg_error *err);
/* The stored response to replay: its status, fields (Idempotent-Replayed
 * included) and body, valid until the exchange ends. */
int mg_xidem_replay(struct mg_exchange *x, struct mg_header **fields, uint32_t *n,
                    struct mg_slice *body);
/* Sends that stored response whole to the client (x->resp_done). */
void mg_xidem_send_replay(struct mg_exchange *x);

/* The response head went to the client: start recording it (x->status final). */
void mg_xidem_response_head(struct mg_exchange *x);
/* De-chunked response body bytes on their way to the client. */
void mg_xidem_response_body(struct mg_exchange *x, const char *at, size_t len);
/* The exchange's answer is queued (x->sent_status). When we hold the key,
 * completes it (status < 500 and the response was recorded in full) or
 * releases it, and returns true: the exchange waits in COMMIT until
 * mg_xidem_settled says so. */
bool mg_xidem_settle(struct mg_exchange *x);
/* In COMMIT: the store has answered. */
bool mg_xidem_settled(const struct mg_exchange *x);
/* The upstream failed after the response started (the client connection is about
 * to close): frees the key, as for any upstream failure. */
void mg_xidem_release(struct mg_exchange *x);
/* The client is gone or the exchange is being cut short: cancels a pending store
 * operation; a lock still held is released if the request never reached an
 * upstream, else left to expire after lock_ttl (it may have been executed, and
 * its response is lost with the client: a retry must not run it again). */
void mg_xidem_abandon(struct mg_exchange *x);
/* Drops the records (once no write points into a replayed body). */
void mg_xidem_free(struct mg_exchange *x);

#endif
