/*
 * The part of the store interface that only the stores see: the per-loop base
 * struct, the backend vtable, the per-operation head and the deferred-delivery
 * queue that makes rule 2 of store.h ("never before the call returns") cheap to
 * keep. Not for the proxy: it includes store.h instead.
 *
 * Ownership: a backend allocates its store struct with struct mg_idem_client as
 * the first member, and its ops with struct mg_idem_op first. The base owns the
 * uv_idle handle and counts the backend's handles so that vt->destroy runs once,
 * after the last uv_close callback (STYLE 6: free only at safe points).
 */
#ifndef MG_IDEM_STORE_BASE_H
#define MG_IDEM_STORE_BASE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>
#include <uv.h>

#include "idempotency/store.h"

enum mg_idem_op_kind { MG_IDEM_OP_BEGIN, MG_IDEM_OP_COMPLETE, MG_IDEM_OP_RELEASE };

/* The validated arguments of one begin/complete/release call, borrowed. */
struct mg_idem_args {
    enum mg_idem_op_kind kind;
    const char *key;
    size_t key_len;
    const uint8_t *fp;          /* begin */
    const char *owner;          /* MG_IDEM_OWNER_LEN hex digits */
    struct mg_idem_record *rec; /* complete: sealed, DONE or TOO_BIG */
    uint64_t ttl_ms;            /* begin: lock ttl; complete: record ttl */
};

struct mg_idem_op {
    struct mg_idem_client *store;
    struct mg_idem_req *req; /* NULL: fire and forget, cancelled or delivered */
    enum mg_idem_op_kind kind;
    enum mg_idem_result result;    /* set before delivery */
    uint64_t retry_after_ms;       /* IN_FLIGHT */
    struct mg_idem_record *record; /* reference handed to req on delivery */
    uint64_t seq;                  /* deferral order, for one-batch-per-iteration */
    bool queued;                   /* in store->deferred */
    TAILQ_ENTRY(mg_idem_op) link;
};

TAILQ_HEAD(mg_idem_oplist, mg_idem_op);

struct mg_idem_client_vt {
    /* Starts a validated operation; req may be NULL (fire and forget). If req is
     * set, it must mg_idem__op_attach() an op and later deliver it exactly once.
     * Returns 0, or < 0 having changed nothing and attached nothing. */
    int (*start)(struct mg_idem_client *s, struct mg_idem_req *req, const struct mg_idem_args *a);
    /* op->req was just detached (cancel or close). Undo what can be undone (a
     * STARTED begin is released), unqueue the op if queued, free it unless
     * something else (a pending Redis reply) still references it. */
    void (*cancel)(struct mg_idem_op *op);
    /* Frees an op that the base delivered from the deferred queue. */
    void (*op_free)(struct mg_idem_op *op);
    /* Closing: every op is already detached. Stop the backend's work and uv_close
     * its handles with mg_idem__close_handle(). */
    void (*close)(struct mg_idem_client *s);
    /* Frees the backend struct; runs once, after the last handle has closed. */
    void (*destroy)(struct mg_idem_client *s);
};

struct mg_idem_client {
    const struct mg_idem_client_vt *vt;
    uv_loop_t *loop;
    uv_idle_t idle;                 /* runs while `deferred` is not empty */
    struct mg_idem_oplist deferred; /* ops whose result waits for the next iteration */
    uint64_t seq;                   /* last seq handed out */
    unsigned handles;               /* handles not yet closed, the idle one included */
    bool closing;
};

/* Sets up the base and its idle handle on loop. */
void mg_idem__client_init(struct mg_idem_client *s, const struct mg_idem_client_vt *vt,
                          uv_loop_t *loop);
/* Counts a backend handle (h->data becomes s) so destroy waits for its close. */
void mg_idem__handle_opened(struct mg_idem_client *s, uv_handle_t *h);
/* uv_close()s a counted handle; the last one to close destroys the store. */
void mg_idem__close_handle(uv_handle_t *h);

/* Initialises op's head and, when req is set, links op and req. */
void mg_idem__op_attach(struct mg_idem_op *op, struct mg_idem_client *s, struct mg_idem_req *req,
                        enum mg_idem_op_kind kind);
/* Queues op (result already set) for delivery on the next loop iteration. */
void mg_idem__defer(struct mg_idem_op *op);
/* Removes op from the deferred queue if it is there. */
void mg_idem__unqueue(struct mg_idem_op *op);
/* Hands op's results to its req and calls cb (once; op->req is NULL afterwards).
 * Without a req, drops the results. The op stays the caller's to free. */
void mg_idem__deliver(struct mg_idem_op *op);

/* What begin() answers when the key holds a record in `state` whose fingerprint
 * is stored_fp: MISMATCH, IN_FLIGHT, DONE or TOO_BIG. */
enum mg_idem_result mg_idem__classify(enum mg_idem_record_state state, const uint8_t *stored_fp,
                                      const uint8_t *fp);

#endif
