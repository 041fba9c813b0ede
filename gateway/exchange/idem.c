/*
 * The Idempotency-Key phase of an exchange: see idem.h for the states and
 * idempotency/store.h for the protocol with the stores.
 */
#include "exchange/idem.h"

#include <string.h>

#include "config/config-t.h"
#include "core/log.h"
#include "idempotency/fingerprint.h"
#include "idempotency/record.h"
#include "idempotency/store.h"
#include "exchange/exchange.h"
#include "lua/edits.h"
#include "obs/metrics.h"
#include "loopctx.h"

/* Retry-After of a 409 idempotency_conflict, in seconds. */
#define MG_IDEM_RETRY_AFTER_S 1

static const struct mg_idempotency_conf *conf_of(const struct mg_exchange *x)
{
    return &x->route->idempotency;
}

static void count(struct mg_exchange *x, enum mg_idem_metric what)
{
    mg_metrics_idempotency(x->rt->metrics, (unsigned)x->ctx->id, (int)x->route->index, what);
}

/* The store failed us: on_store_error decides. Returns the error to answer with,
 * or MG_ERR_NONE to forward without deduplication. */
static enum mg_error store_failed(struct mg_exchange *x, const char *why)
{
    mg_warn("idempotency store: %s (route %s, request_id %s)", why, x->route->name, x->request_id);
    count(x, MG_IDEM_RESULT_STORE_ERROR);
    mg_idem_fp_dispose(&x->idem.fp);
    x->idem.store = NULL;
    if (conf_of(x)->on_store_error == MG_IDEM_PASS)
        return MG_ERR_NONE;
    x->retry_after_s = 1;
    return MG_ERR_IDEMPOTENCY_STORE_UNAVAILABLE;
}

/* The value of request header `name`, its repeats joined with ", " (RFC 9110
 * section 5.3); {NULL, 0} when absent. */
static struct mg_idem_slice header_values(struct mg_exchange *x, const char *name)
{
    struct mg_slice want = {name, strlen(name)};
    struct mg_idem_slice v = {NULL, 0};
    for (uint32_t i = 0; i < x->req_hdrs.n; i++) {
        const struct mg_header *f = &x->req_hdrs.v[i];
        if (!mg_slice_ieq(f->name, want))
            continue;
        if (!v.p) {
            v = (struct mg_idem_slice){f->value.p, f->value.len};
            continue;
        }
        char *joined = mg_arena_alloc(&x->arena, v.len + 2 + f->value.len);
        memcpy(joined, v.p, v.len);
        memcpy(joined + v.len, ", ", 2);
        memcpy(joined + v.len + 2, f->value.p, f->value.len);
        v = (struct mg_idem_slice){joined, v.len + 2 + f->value.len};
    }
    return v;
}

/* Parses the key header. Returns MG_ERR_NONE with key set (len 0: no key). */
static enum mg_error read_key(struct mg_exchange *x, char key[MG_IDEM_KEY_MAX + 1], size_t *len)
{
    const struct mg_idempotency_conf *ic = conf_of(x);
    struct mg_slice name = {ic->header, strlen(ic->header)};
    int at = mg_headers_find(&x->req_hdrs, name);
    *len = 0;
    if (at < 0)
        return ic->required ? MG_ERR_IDEMPOTENCY_KEY_MISSING : MG_ERR_NONE;
    for (uint32_t i = (uint32_t)at + 1; i < x->req_hdrs.n; i++)
        if (mg_slice_ieq(x->req_hdrs.v[i].name, name))
            return MG_ERR_IDEMPOTENCY_KEY_INVALID; /* two keys: which one is meant? */
    struct mg_slice v = x->req_hdrs.v[at].value;
    if (mg_idem_key_parse(v.p, v.len, key, len) < 0)
        return MG_ERR_IDEMPOTENCY_KEY_INVALID;
    return MG_ERR_NONE;
}

enum mg_error mg_xidem_start(struct mg_exchange *x, bool *buffer)
{
    const struct mg_idempotency_conf *ic = conf_of(x);
    *buffer = false;
    if (!ic->enabled || !(ic->methods_mask >> x->method & 1) || x->req_upgrade)
        return MG_ERR_NONE;
    char key[MG_IDEM_KEY_MAX + 1];
    size_t key_len;
    enum mg_error err = read_key(x, key, &key_len);
    if (err) {
        count(x, err == MG_ERR_IDEMPOTENCY_KEY_MISSING ? MG_IDEM_RESULT_KEY_MISSING
                                                       : MG_IDEM_RESULT_KEY_INVALID);
        return err;
    }
    if (key_len == 0)
        return MG_ERR_NONE; /* optional and absent: an ordinary request */
    x->idem.keyed = true;
    if (x->req_content_length > ic->max_body)
        return MG_ERR_BODY_TOO_LARGE;

    x->idem.store = ic->store == MG_IDEM_STORE_REDIS ? x->rt->idem_redis : x->ctx->idem_memory;
    if (!x->idem.store)
        return store_failed(x, "no store open");
    struct mg_idem_slice *scope = mg_arena_alloc(&x->arena, (ic->nscope + 1) * sizeof *scope);
    for (size_t i = 0; i < ic->nscope; i++) {
        const char *header = mg_idem_scope_header(ic->scope[i]);
        scope[i] = header ? header_values(x, header) : (struct mg_idem_slice){NULL, 0};
    }
    x->idem.skey = mg_arena_alloc(&x->arena, MG_IDEM_STORAGE_KEY_MAX);
    int n = mg_idem_storage_key(x->idem.skey, MG_IDEM_STORAGE_KEY_MAX, x->route->name,
                                strlen(x->route->name), scope, ic->nscope, key, key_len);
    if (n < 0)
        return store_failed(x, "cannot build the storage key");
    x->idem.skey_len = (size_t)n;
    const char *method = llhttp_method_name((llhttp_method_t)x->method);
    struct mg_idem_slice m = {method, strlen(method)}, target = {x->url.p, x->url.len};
    if (mg_idem_fp_init(&x->idem.fp, m, target, scope, ic->nscope) < 0)
        return store_failed(x, "cannot hash the request");
    /* The whole body is kept: it is hashed now and sent (or resent) later. A
     * known length gets its buffer at once (no copies while it grows). */
    x->body_copy_ok = true;
    if (x->req_content_length > 0) {
        x->body_copy = mg_arena_alloc(&x->arena, x->req_content_length);
        x->body_copy_cap = x->req_content_length;
    }
    *buffer = true;
    if (x->req_expect_continue && !x->req_done && x->http_minor >= 1) {
        /* The key cannot be looked up without the body's hash: ask for it now. */
        x->down->send_continue(x);
        x->continue_sent = true;
    }
    return MG_ERR_NONE;
}

int mg_xidem_body(struct mg_exchange *x, const char *at, size_t len)
{
    if (mg_arena_append(&x->arena, &x->body_copy, &x->body_copy_len, &x->body_copy_cap, at, len,
                        conf_of(x)->max_body) < 0) {
        x->error = MG_ERR_BODY_TOO_LARGE;
        return -1;
    }
    if (mg_idem_fp_update_body(&x->idem.fp, at, len) < 0) {
        x->error = MG_ERR_BAD_REQUEST; /* OpenSSL refused: nothing sensible left to do */
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------ the answer */

int mg_xidem_replay(struct mg_exchange *x, struct mg_header **fields, uint32_t *n,
                    struct mg_slice *body)
{
    struct mg_idem_record *rec = x->idem.replay;
    size_t cursor = 0, nl, vl, count = 1, body_len;
    const char *name, *value;
    while (mg_idem_record_next_header(rec, &cursor, &name, &nl, &value, &vl))
        count++;
    struct mg_header *v = mg_arena_alloc(&x->arena, count * sizeof *v);
    uint32_t k = 0;
    cursor = 0;
    while (mg_idem_record_next_header(rec, &cursor, &name, &nl, &value, &vl))
        v[k++] = (struct mg_header){{name, nl}, {value, vl}, 0};
    v[k++] = (struct mg_header){MG_SLICE_LIT("Idempotent-Replayed"), MG_SLICE_LIT("true"), 0};
    const uint8_t *b = mg_idem_record_body(rec, &body_len);
    *fields = v;
    *n = k;
    *body = (struct mg_slice){(const char *)b, body_len};
    return mg_idem_record_status(rec);
}

/* The store's answer to begin(): kept for the state machine to act on. */
static void on_begin(struct mg_idem_req *req)
{
    struct mg_exchange *x = req->data;
    MG_ASSERT(x->state == MG_X_LOOKUP);
    x->idem.answered = true;
    x->idem.answer = req->record;
    req->record = NULL;
    mg_exchange_run(x);
}

enum mg_xidem_verdict mg_xidem_answered(struct mg_exchange *x, enum mg_error *err)
{
    if (!x->idem.answered)
        return MG_XIDEM_WAIT;
    x->idem.answered = false;
    struct mg_idem_record *rec = x->idem.answer;
    x->idem.answer = NULL;
    enum mg_xidem_verdict v = MG_XIDEM_FAIL;
    switch (x->idem.req.result) {
    case MG_IDEM_STARTED:
        count(x, MG_IDEM_RESULT_NEW);
        x->idem.owned = true;
        v = MG_XIDEM_FORWARD;
        break;
    case MG_IDEM_DONE:
        count(x, MG_IDEM_RESULT_REPLAYED);
        x->idem.replay = rec; /* held until the exchange ends: its body is sent by reference */
        return MG_XIDEM_REPLAY;
    case MG_IDEM_IN_FLIGHT:
        count(x, MG_IDEM_RESULT_CONFLICT);
        /* The lock's remaining ttl is only the worst case: the first request
         * usually ends far sooner, so the client is told to look again soon. */
        x->retry_after_s = MG_IDEM_RETRY_AFTER_S;
        *err = MG_ERR_IDEMPOTENCY_CONFLICT;
        break;
    case MG_IDEM_TOO_BIG:
        count(x, MG_IDEM_RESULT_REPLAY_UNAVAILABLE);
        x->idem.original_status = mg_idem_record_status(rec);
        *err = MG_ERR_IDEMPOTENCY_REPLAY_UNAVAILABLE;
        break;
    case MG_IDEM_MISMATCH:
        count(x, MG_IDEM_RESULT_MISMATCH);
        *err = MG_ERR_IDEMPOTENCY_MISMATCH;
        break;
    default:
        *err = store_failed(x, "begin failed");
        v = *err ? MG_XIDEM_FAIL : MG_XIDEM_FORWARD;
        break;
    }
    mg_idem_record_unref(rec);
    return v;
}

int mg_xidem_lookup(struct mg_exchange *x, enum mg_error *err)
{
    const struct mg_idempotency_conf *ic = conf_of(x);
    int rc = mg_idem_fp_final(&x->idem.fp, x->idem.fingerprint);
    if (rc == 0)
        rc = mg_idem_owner_new(x->idem.owner);
    if (rc == 0) {
        x->idem.req.data = x;
        rc = mg_idem_begin(x->idem.store, &x->idem.req, x->idem.skey, x->idem.skey_len,
                           x->idem.fingerprint, ic->lock_ttl_ms, x->idem.owner, on_begin);
    }
    if (rc == 0)
        return MG_AGAIN; /* on_begin answers */
    *err = store_failed(x, "begin refused");
    return MG_NEXT;
}

/* ------------------------------------------------------- the response */

void mg_xidem_response_head(struct mg_exchange *x)
{
    if (!x->idem.owned)
        return;
    struct mg_idem_record *rec =
        mg_idem_record_new((uint16_t)x->status, x->idem.fingerprint, MG_IDEM_RECORD_MAX_DEFAULT);
    const struct mg_lua_edit *edits = x->lua_ready ? x->lua.resp_edits : NULL;
    /* What the client got, minus what a replay sets itself (record.h). */
    for (uint32_t i = 0; i < x->resp_hdrs.n; i++) {
        const struct mg_header *f = &x->resp_hdrs.v[i];
        if ((f->flags & MG_HDR_HOP) || !mg_idem_record_keeps_header(f->name.p, f->name.len) ||
            (edits && mg_lua_edits_name(edits, f->name)))
            continue;
        mg_idem_record_add_header(rec, f->name.p, f->name.len, f->value.p, f->value.len);
    }
    for (const struct mg_lua_edit *e = edits; e; e = e->next)
        if (e->value.p && mg_idem_record_keeps_header(e->name.p, e->name.len))
            mg_idem_record_add_header(rec, e->name.p, e->name.len, e->value.p, e->value.len);
    x->idem.rec = rec;
}

void mg_xidem_response_body(struct mg_exchange *x, const char *at, size_t len)
{
    /* Past the bound the record turns into a marker by itself (record.h). */
    if (x->idem.rec)
        mg_idem_record_append_body(x->idem.rec, at, len);
}

static void on_settled(struct mg_idem_req *req)
{
    struct mg_exchange *x = req->data;
    MG_ASSERT(x->state == MG_X_COMMIT);
    if (req->result != MG_IDEM_OK)
        mg_warn("idempotency store: the key of request %s was not %s: %s", x->request_id,
                x->sent_status && x->sent_status < 500 ? "stored" : "released",
                mg_idem_result_name(req->result));
    x->idem.settled = true;
    mg_exchange_run(x);
}

bool mg_xidem_settled(const struct mg_exchange *x)
{
    return x->idem.settled;
}

bool mg_xidem_settle(struct mg_exchange *x)
{
    struct mg_x_idem *d = &x->idem;
    if (!d->owned)
        return false;
    d->owned = false;
    d->settled = false;
    d->req.data = x;
    int rc;
    if (d->rec && x->resp_done && x->sent_status >= 200 && x->sent_status < 500)
        rc = mg_idem_complete(d->store, &d->req, d->skey, d->skey_len, d->owner, d->rec,
                              conf_of(x)->ttl_ms, on_settled);
    else
        rc = mg_idem_release(d->store, &d->req, d->skey, d->skey_len, d->owner, on_settled);
    mg_idem_record_unref(d->rec);
    d->rec = NULL;
    if (rc < 0)
        mg_warn("idempotency store refused to settle request %s", x->request_id);
    return rc == 0;
}

void mg_xidem_release(struct mg_exchange *x)
{
    struct mg_x_idem *d = &x->idem;
    if (!d->owned)
        return;
    d->owned = false;
    mg_idem_release(d->store, NULL, d->skey, d->skey_len, d->owner, NULL);
}

void mg_xidem_abandon(struct mg_exchange *x)
{
    struct mg_x_idem *d = &x->idem;
    if (mg_idem_pending(&d->req))
        mg_idem_cancel(&d->req); /* a STARTED begin is released by the store */
    if (d->owned && !d->forwarded)
        mg_idem_release(d->store, NULL, d->skey, d->skey_len, d->owner, NULL);
    else if (d->owned)
        mg_info("idempotency: client of request %s left after it was forwarded; its key "
                "stays locked until lock_ttl",
                x->request_id);
    d->owned = false;
    mg_idem_fp_dispose(&d->fp);
}

void mg_xidem_free(struct mg_exchange *x)
{
    struct mg_x_idem *d = &x->idem;
    mg_idem_record_unref(d->answer);
    d->answer = NULL;
    mg_idem_record_unref(d->rec);
    d->rec = NULL;
    mg_idem_record_unref(d->replay);
    d->replay = NULL;
}

void mg_xidem_send_replay(struct mg_exchange *x)
{
    if (!x->req_keepalive || x->ctx->draining)
        x->close_after = true;
    struct mg_header *fields;
    uint32_t n;
    struct mg_slice body;
    int status = mg_xidem_replay(x, &fields, &n, &body);
    x->down->send_response(x, status, fields, n, body, true);
    x->sent_status = status;
    x->resp_started = true;
    x->resp_done = true;
}
