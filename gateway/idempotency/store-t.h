/*
 * Types of the idempotency store interface (store.h): the results an operation
 * can have and the request handle the caller embeds (like a uv_req_t).
 */
#ifndef MG_IDEM_STORE_T_H
#define MG_IDEM_STORE_T_H

#include <stdint.h>

#include "idempotency/record-t.h"

struct mg_idem_client; /* one per worker loop; store.h */
struct mg_idem_op;     /* a store's private state for one pending operation */
struct mg_idem_req;

/* Results. begin() ends with one of the first five or ERROR; complete() and
 * release() with OK, LOST or ERROR. The proxy's answer is given per value. */
enum mg_idem_result {
    MG_IDEM_STARTED,   /* begin: no record; our in-flight lock is set until lock_ttl:
                          forward, then complete() or release() */
    MG_IDEM_IN_FLIGHT, /* begin: another request holds the lock, same fingerprint:
                          409 idempotency_conflict, Retry-After from retry_after_ms */
    MG_IDEM_DONE,      /* begin: completed, same fingerprint; record = the response:
                          replay it with Idempotent-Replayed: true */
    MG_IDEM_TOO_BIG,   /* begin: completed, same fingerprint, but the response was too
                          big to keep; record = a marker holding the status: answer
                          the error record.h suggests, never forward again */
    MG_IDEM_MISMATCH,  /* begin: a record (in flight or completed) with a different
                          fingerprint: 422 idempotency_mismatch */
    MG_IDEM_OK,        /* complete/release: applied */
    MG_IDEM_LOST,      /* complete/release: the lock is not ours any more (expired,
                          released, or taken by a later begin); nothing was changed */
    MG_IDEM_ERROR,     /* any: store unreachable, timed out, full, or a bad answer:
                          on_store_error decides (503 idempotency_store_unavailable) */
};

typedef void (*mg_idem_cb)(struct mg_idem_req *req);

/* One operation's handle, owned by the caller (embed it in the exchange). It must
 * stay valid from the call that starts an operation until the callback has run or
 * mg_idem_cancel() has returned. One operation per req at a time. */
struct mg_idem_req {
    void *data; /* the caller's; never touched by the store */

    /* Results, valid inside the callback (and after it, until the req is reused). */
    enum mg_idem_result result;
    uint64_t retry_after_ms;       /* IN_FLIGHT: remaining lock ttl, >= 1 */
    struct mg_idem_record *record; /* DONE and TOO_BIG: one reference the caller owns
                                      and drops with mg_idem_record_unref(); else NULL */

    /* Private to the store. */
    mg_idem_cb cb;
    struct mg_idem_op *op; /* non-NULL while the operation is pending */
};

#endif
