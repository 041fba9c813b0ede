/*
 * The store interface shared by both backends: argument checks (so a bad call
 * fails synchronously and never calls back), cancellation, closing, and the
 * deferred-delivery queue that lets the memory store answer on the next loop
 * iteration instead of inside the call (store.h rule 2).
 *
 * Invariant: req->op != NULL exactly while the operation of req is pending, and
 * then req->op->req == req. Every transition (deliver, cancel, close) breaks both
 * links before anything else, so a late event finds op->req == NULL and cannot
 * reach the caller's memory.
 *
 * Ownership: ops belong to their backend; the base only queues them. The store
 * struct is freed by vt->destroy after its last uv handle has closed.
 * Threads: all of it runs on the store's loop thread.
 */
#include "idempotency/store_base.h"

#include <errno.h>
#include <string.h>

#include "core/log.h"
#include "idempotency/key.h"
#include "idempotency/record.h"

static void on_idle(uv_idle_t *h);

void mg_idem__client_init(struct mg_idem_client *s, const struct mg_idem_client_vt *vt,
                          uv_loop_t *loop)
{
    s->vt = vt;
    s->loop = loop;
    s->seq = 0;
    s->handles = 0;
    s->closing = false;
    TAILQ_INIT(&s->deferred);
    MG_ASSERT(uv_idle_init(loop, &s->idle) == 0);
    mg_idem__handle_opened(s, (uv_handle_t *)&s->idle);
}

void mg_idem__handle_opened(struct mg_idem_client *s, uv_handle_t *h)
{
    h->data = s;
    s->handles++;
}

static void on_handle_closed(uv_handle_t *h)
{
    struct mg_idem_client *s = h->data;

    MG_ASSERT(s->handles > 0);
    if (--s->handles == 0)
        s->vt->destroy(s);
}

void mg_idem__close_handle(uv_handle_t *h)
{
    uv_close(h, on_handle_closed);
}

void mg_idem__op_attach(struct mg_idem_op *op, struct mg_idem_client *s, struct mg_idem_req *req,
                        enum mg_idem_op_kind kind)
{
    op->store = s;
    op->req = req;
    op->kind = kind;
    op->result = MG_IDEM_ERROR;
    op->retry_after_ms = 0;
    op->record = NULL;
    op->seq = 0;
    op->queued = false;
    if (req != NULL)
        req->op = op;
}

void mg_idem__defer(struct mg_idem_op *op)
{
    struct mg_idem_client *s = op->store;

    MG_ASSERT(!op->queued);
    op->seq = ++s->seq;
    op->queued = true;
    TAILQ_INSERT_TAIL(&s->deferred, op, link);
    uv_idle_start(&s->idle, on_idle); /* idempotent; makes the next poll non-blocking */
}

void mg_idem__unqueue(struct mg_idem_op *op)
{
    if (!op->queued)
        return;
    TAILQ_REMOVE(&op->store->deferred, op, link);
    op->queued = false;
}

void mg_idem__deliver(struct mg_idem_op *op)
{
    struct mg_idem_req *req = op->req;

    if (req == NULL) {
        mg_idem_record_unref(op->record);
        op->record = NULL;
        return;
    }
    op->req = NULL;
    req->op = NULL;
    req->result = op->result;
    req->retry_after_ms = op->retry_after_ms;
    req->record = op->record;
    op->record = NULL;
    req->cb(req);
}

/* Delivers the ops queued before this iteration began; ops that callbacks queue
 * now wait for the next iteration, so a callback that keeps starting memory
 * operations cannot starve the loop. */
static void on_idle(uv_idle_t *h)
{
    struct mg_idem_client *s = h->data;
    uint64_t last = s->seq;
    struct mg_idem_op *op;

    while (!s->closing && (op = TAILQ_FIRST(&s->deferred)) != NULL && op->seq <= last) {
        mg_idem__unqueue(op);
        mg_idem__deliver(op);
        s->vt->op_free(op);
    }
    if (!s->closing && TAILQ_EMPTY(&s->deferred))
        uv_idle_stop(&s->idle);
}

enum mg_idem_result mg_idem__classify(enum mg_idem_record_state state, const uint8_t *stored_fp,
                                      const uint8_t *fp)
{
    if (memcmp(stored_fp, fp, MG_IDEM_FP_LEN) != 0)
        return MG_IDEM_MISMATCH;
    switch (state) {
    case MG_IDEM_REC_IN_FLIGHT:
        return MG_IDEM_IN_FLIGHT;
    case MG_IDEM_REC_DONE:
        return MG_IDEM_DONE;
    case MG_IDEM_REC_TOO_BIG:
        return MG_IDEM_TOO_BIG;
    }
    return MG_IDEM_ERROR;
}

/* ---- the public calls ---- */

static int check_common(struct mg_idem_client *s, struct mg_idem_req *req, mg_idem_cb cb,
                        const char *key, size_t key_len, const char *owner)
{
    if (s == NULL || key == NULL || key_len == 0 || key_len > MG_IDEM_STORE_KEY_MAX ||
        !mg_idem_owner_valid(owner))
        return -EINVAL;
    if (req != NULL && cb == NULL)
        return -EINVAL;
    if (req != NULL && req->op != NULL)
        return -EBUSY;
    if (s->closing)
        return -ECANCELED;
    return 0;
}

static int start(struct mg_idem_client *s, struct mg_idem_req *req, mg_idem_cb cb,
                 const struct mg_idem_args *a)
{
    if (req != NULL) {
        req->cb = cb;
        req->result = MG_IDEM_ERROR;
        req->retry_after_ms = 0;
        req->record = NULL;
    }
    return s->vt->start(s, req, a);
}

int mg_idem_begin(struct mg_idem_client *s, struct mg_idem_req *req, const char *key,
                  size_t key_len, const uint8_t fp[MG_IDEM_FP_LEN], uint64_t lock_ttl_ms,
                  const char *owner, mg_idem_cb cb)
{
    struct mg_idem_args a = {.kind = MG_IDEM_OP_BEGIN,
                             .key = key,
                             .key_len = key_len,
                             .fp = fp,
                             .owner = owner,
                             .ttl_ms = lock_ttl_ms};
    int rc = check_common(s, req, cb, key, key_len, owner);

    if (rc < 0)
        return rc;
    if (req == NULL || fp == NULL || lock_ttl_ms == 0)
        return -EINVAL;
    return start(s, req, cb, &a);
}

int mg_idem_complete(struct mg_idem_client *s, struct mg_idem_req *req, const char *key,
                     size_t key_len, const char *owner, struct mg_idem_record *rec, uint64_t ttl_ms,
                     mg_idem_cb cb)
{
    struct mg_idem_args a = {.kind = MG_IDEM_OP_COMPLETE,
                             .key = key,
                             .key_len = key_len,
                             .owner = owner,
                             .rec = rec,
                             .ttl_ms = ttl_ms};
    int rc = check_common(s, req, cb, key, key_len, owner);

    if (rc < 0)
        return rc;
    if (rec == NULL || ttl_ms == 0 || mg_idem_record_state(rec) == MG_IDEM_REC_IN_FLIGHT)
        return -EINVAL;
    mg_idem_record_seal(rec);
    return start(s, req, cb, &a);
}

int mg_idem_release(struct mg_idem_client *s, struct mg_idem_req *req, const char *key,
                    size_t key_len, const char *owner, mg_idem_cb cb)
{
    struct mg_idem_args a = {
        .kind = MG_IDEM_OP_RELEASE, .key = key, .key_len = key_len, .owner = owner};
    int rc = check_common(s, req, cb, key, key_len, owner);

    if (rc < 0)
        return rc;
    return start(s, req, cb, &a);
}

void mg_idem_cancel(struct mg_idem_req *req)
{
    struct mg_idem_op *op = req->op;

    if (op == NULL)
        return;
    req->op = NULL;
    op->req = NULL;
    op->store->vt->cancel(op);
}

void mg_idem_client_close(struct mg_idem_client *s)
{
    struct mg_idem_op *op;

    if (s == NULL || s->closing)
        return;
    s->closing = true;
    while ((op = TAILQ_FIRST(&s->deferred)) != NULL) {
        if (op->req != NULL) {
            op->req->op = NULL;
            op->req = NULL;
        }
        s->vt->cancel(op); /* unqueues it */
    }
    s->vt->close(s);
    mg_idem__close_handle((uv_handle_t *)&s->idle);
}

const char *mg_idem_result_name(enum mg_idem_result r)
{
    static const char *const names[] = {
        [MG_IDEM_STARTED] = "started", [MG_IDEM_IN_FLIGHT] = "in_flight", [MG_IDEM_DONE] = "done",
        [MG_IDEM_TOO_BIG] = "too_big", [MG_IDEM_MISMATCH] = "mismatch",   [MG_IDEM_OK] = "ok",
        [MG_IDEM_LOST] = "lost",       [MG_IDEM_ERROR] = "error",
    };

    if ((unsigned)r >= sizeof names / sizeof names[0])
        return "unknown";
    return names[r];
}
