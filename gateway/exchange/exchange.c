/*
 * The exchange state machine: one request carried to an upstream target and its
 * response back, over whatever codec brought the request and whatever
 * connection carries each try.
 *
 * Reading top to bottom: the current try's end; the answers (fail, retry);
 * the bulkhead; the response; the end of an exchange; the steps, one per
 * state; advance(), which runs them; the events that wake it (timers, the
 * upstream connection, the codec's hooks).
 *
 * This file is the only code that assigns x->state. Helpers elsewhere (the
 * codecs, attempt.c, hedge.c, idem.c, plugins.c, reqid.c, route.c, slot.c,
 * upwait.c)
 * return verdicts or keep books; events from below
 * record what happened and call advance(). After a call that may close the
 * connection (down->close, a failed flush), x->closing says to stop.
 *
 * Ownership: the exchange's memory belongs to its codec (embedded in the
 * connection for HTTP/1); everything a request allocates comes from x->arena,
 * which is reset when the exchange ends. The exchange holds the runtime it
 * started on, one bulkhead slot at most, and at most one upstream connection
 * (through its attempt); reset() and close() give each of them back.
 */
#include "exchange/exchange.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "config/config-t.h"
#include "core/log.h"
#include "exchange/attempt.h"
#include "exchange/hedge.h"
#include "exchange/idem.h"
#include "exchange/plugins.h"
#include "exchange/propagate.h"
#include "exchange/record.h"
#include "exchange/reqid.h"
#include "exchange/route.h"
#include "exchange/slot.h"
#include "exchange/upwait.h"
#include "http/forwarded.h"
#include "obs/metrics.h"
#include "resilience/admission.h"
#include "resilience/breaker.h"
#include "resilience/registry.h"
#include "resilience/retry.h"
#include "upstream/h1client.h"
#include "upstream/pool.h"
#include "runtime.h"
#include "loopctx.h"

static const char *const state_names[] = {"idle",    "head",   "plugin",  "buffer",
                                          "lookup",  "queued", "connect", "backoff",
                                          "forward", "tunnel", "commit",  "finish"};
_Static_assert(sizeof state_names / sizeof state_names[0] == MG_X_FINISH + 1, "one name per state");

static const struct mg_upstream_ops *upstream_ops = &mg_h1client_ops;

static void advance(struct mg_exchange *x);
static void fail(struct mg_exchange *x, enum mg_error err, const char *why);
static const struct mg_upconn_ops upconn_ops;

const char *mg_exchange_state_name(enum mg_x_state s)
{
    return (unsigned)s <= MG_X_FINISH ? state_names[s] : "?";
}

void mg_exchange_set_upstream(const struct mg_upstream_ops *ops)
{
    upstream_ops = ops;
}

void mg_exchange_run(struct mg_exchange *x)
{
    advance(x);
}

static struct mg_metrics *metrics_of(struct mg_exchange *x)
{
    return x->rt ? x->rt->metrics : x->ctx->rt->metrics;
}

/* ---------------------------------------------- the current try's connection */

/* Ends the current try: its connection back to the pool when `reuse` and the
 * exchange completed cleanly, else closed; its outcome cancelled if unknown. */
static void detach(struct mg_exchange *x, bool reuse)
{
    if (x->hedge_timer || x->hedge)
        mg_hedge_cancel(x);
    if (x->att.up)
        x->upstream->release(&x->att, reuse);
    mg_attempt_close(x);
}

/* ------------------------------------------------------------ answers */

static void on_wait_timer(uv_timer_t *t);

static void start_backoff(struct mg_exchange *x)
{
    x->state = MG_X_BACKOFF;
    uv_timer_start(&x->wait, on_wait_timer, mg_attempt_backoff_ms(x), 0);
}

/* The exchange cannot go on. Before the response started (or while it is only
 * queued): answer with the JSON error; after: close the client connection,
 * never a truncated-but-complete-looking response (DESIGN.md section 4). */
static void fail(struct mg_exchange *x, enum mg_error err, const char *why)
{
    const char *target = x->att.target ? x->att.target->conf->address.text : "-";
    if (err == MG_ERR_UPSTREAM_UNAVAILABLE || err == MG_ERR_UPSTREAM_TIMEOUT)
        mg_warn("%s: %s (target %s, request_id %s)", mg_error_name(err), why, target,
                x->request_id);
    else
        mg_debug("%s: %s", mg_error_name(err), why);
    detach(x, false);
    x->error = err;
    mg_metrics_error(metrics_of(x), (unsigned)x->ctx->id, x->route ? (int)x->route->index : -1,
                     err);
    if (x->resp_started && !x->down->unsend(x)) {
        mg_xidem_release(x);
        x->down->close(x);
        return;
    }
    x->resp_started = false;
    if (!x->req_done || !x->req_keepalive || x->ctx->draining)
        x->close_after = true;
    mg_deadline_set(&x->deadline, 0);
    if (!x->request_id[0])
        mg_xreqid_generate(x);
    x->down->send_error(x, err);
    x->sent_status = mg_error_status(err);
    x->resp_done = true;
    x->state = mg_xidem_settle(x) ? MG_X_COMMIT : MG_X_FINISH;
}

/* A hedge in flight when the current try failed is waited for rather than a
 * new try started: it is already on its way (if it fails too, the retry
 * policy applies to it as to any try). */
static bool hedge_takes_over(struct mg_exchange *x)
{
    if (!x->hedge || !mg_hedge_take_over(x))
        return false;
    x->state = x->att.ready ? MG_X_FORWARD : MG_X_CONNECT;
    return true;
}

/* A try failed before its response could be used: retry when allowed, else
 * answer with `err`. `kind` is a MG_RETRY_ON_* bit; `reached`: the request may
 * have reached the upstream. */
static void try_failed(struct mg_exchange *x, unsigned kind, bool reached, enum mg_error err,
                       const char *why)
{
    mg_attempt_report(x, true, mg_attempt_outcome_of(kind));
    mg_warn("%s: %s (target %s, try %u, request_id %s)", mg_error_name(err), why,
            x->att.target ? x->att.target->conf->address.text : "-", x->attempts, x->request_id);
    if (hedge_takes_over(x))
        return;
    if (mg_attempt_may_retry(x, kind, reached)) {
        mg_metrics_retry(metrics_of(x), (unsigned)x->ctx->id, x->ups->index);
        detach(x, false);
        start_backoff(x);
        return;
    }
    fail(x, err, why);
}

/* ------------------------------------------------------------ bulkhead */

/* A queued exchange got its slot (at a loop boundary, from mg_admission_drain). */
static void on_slot_granted(struct mg_waiter *wt)
{
    struct mg_exchange *x =
        (struct mg_exchange *)((char *)wt - offsetof(struct mg_exchange, waiter));
    uv_timer_stop(&x->wait);
    x->slot_held = true;
    x->state = MG_X_CONNECT;
    advance(x);
}

/* A higher-priority request took this one's place in the queue: answered
 * from the wait timer (on_wait_timer's queue timeout path), not from inside
 * the other exchange's admission. */
static void on_slot_shed(struct mg_waiter *wt)
{
    struct mg_exchange *x =
        (struct mg_exchange *)((char *)wt - offsetof(struct mg_exchange, waiter));
    uv_timer_start(&x->wait, on_wait_timer, 0, 0);
}

/* A slot held, the queue joined (QUEUED), or failed with bulkhead_full. */
static void admit(struct mg_exchange *x)
{
    switch (mg_xslot_enter(x)) {
    case MG_ADMIT_ACQUIRED:
        break;
    case MG_ADMIT_QUEUED:
        x->state = MG_X_QUEUED;
        uv_timer_start(&x->wait, on_wait_timer, x->ups->bulkhead.queue_timeout_ms, 0);
        break;
    default:
        x->retry_after_s = 1;
        fail(x, MG_ERR_BULKHEAD_FULL, "concurrency limit and queue full");
        break;
    }
}

/* ------------------------------------------------------------ the response */

/* A final response head is in x: retry on its status, run the response phase,
 * send the head on. MG_NEXT: its body follows; MG_AGAIN: the state changed (a
 * retry waits, a tunnel starts, or the exchange failed). */
static int response_head(struct mg_exchange *x)
{
    const struct mg_upstream_conf *uc = x->ups;
    struct mg_attempt *a = &x->att;
    mg_target_observe_latency(a->target->stats, uv_hrtime() - a->start_ns, uv_now(&x->ctx->loop));
    mg_attempt_note_head(x);
    bool failure = mg_breaker_is_failure_status(&uc->breaker, x->status);
    enum mg_upstream_outcome outcome = failure ? MG_OUTCOME_FAILURE : MG_OUTCOME_SUCCESS;
    bool retryable = mg_retry_should_retry_status(&uc->retry, x->status);
    if (retryable && x->hedge && x->hedge->open) {
        mg_attempt_report(x, failure, outcome);
        mg_warn("upstream answered %d (target %s, try %u, request_id %s): waiting for the hedge",
                x->status, a->target->conf->address.text, x->attempts, x->request_id);
        if (hedge_takes_over(x))
            return MG_AGAIN;
    }
    if (x->hedge_timer || x->hedge)
        mg_hedge_settle(x);
    if (retryable && mg_attempt_may_retry(x, 0, true)) {
        mg_attempt_report(x, failure, outcome);
        mg_metrics_retry(metrics_of(x), (unsigned)x->ctx->id, uc->index);
        mg_warn("upstream answered %d (target %s, try %u, request_id %s): retrying", x->status,
                a->target->conf->address.text, x->attempts, x->request_id);
        detach(x, false); /* swallowed with its body unread: not reusable */
        start_backoff(x);
        return MG_AGAIN;
    }
    mg_attempt_report(x, failure, outcome);
    bool switching = x->status == 101 && x->req_upgrade && x->resp_upgrade;
    if (x->status == 101 && (!switching || !x->req_done)) {
        try_failed(x, MG_RETRY_ON_RESET, true, MG_ERR_UPSTREAM_UNAVAILABLE,
                   "101 without an upgrade request, or before its body ended");
        return MG_AGAIN;
    }
    if (mg_xplug_active(x, MG_LUA_RESPONSE) && mg_xplug_response(x) != 0) {
        fail(x, MG_ERR_PLUGIN_ERROR, "response phase");
        return MG_AGAIN;
    }
    mg_headers_mark_hop_by_hop(&x->resp_hdrs);
    x->filtering = !switching && mg_xplug_filtering(x);
    x->down->send_head(x, switching);
    x->resp_started = true;
    x->sent_status = x->status;
    if (switching) {
        x->state = MG_X_TUNNEL; /* bytes that came with the 101 stay in the read buffer */
        return MG_AGAIN;
    }
    mg_xidem_response_head(x);
    return MG_NEXT;
}

/* P.body_filter: a piece of the response body (eof: the end, no data). A
 * failing filter fails the exchange: 500 plugin_error while nothing was sent
 * yet, else the connection closes (the client sees the response incomplete
 * rather than silently altered). */
static int filter_body(struct mg_exchange *x, struct mg_slice *d, struct mg_rbuf **pin, bool eof)
{
    struct mg_slice in = eof ? (struct mg_slice){NULL, 0} : *d;
    if (mg_xplug_body_filter(x, &in, eof) < 0) {
        x->filtering = false;
        mg_attempt_report(x, false, MG_OUTCOME_SUCCESS); /* the upstream did its part */
        fail(x, MG_ERR_PLUGIN_ERROR, "body filter");
        return -1;
    }
    if (in.p != d->p || eof)
        *pin = NULL; /* arena memory, or nothing */
    *d = in;
    return 0;
}

/* Reads what the upstream sent, as far as it goes. */
static void read_response(struct mg_exchange *x)
{
    struct mg_attempt *a = &x->att;
    if (x->hedge_head) { /* a hedge's head won the race: already parsed */
        x->hedge_head = false;
        if (response_head(x) != MG_NEXT)
            return;
    }
    while (!x->resp_done && x->state == MG_X_FORWARD) {
        struct mg_slice d;
        struct mg_rbuf *pin = NULL;
        switch (x->upstream->read(a, &d, &pin)) {
        case MG_RESP_MORE:
            return;
        case MG_RESP_INTERIM:
            /* RFC 9110 section 15.2: forwarded (103 Early Hints...), but 100:
             * the gateway answers Expect itself and never sends it upstream. */
            if (x->status != 100 && x->down->send_interim)
                x->down->send_interim(x);
            break;
        case MG_RESP_HEAD:
            if (response_head(x) != MG_NEXT)
                return;
            break;
        case MG_RESP_DATA:
            if (x->filtering && filter_body(x, &d, &pin, false) < 0)
                return;
            mg_xidem_response_body(x, d.p, d.len);
            if (d.len)
                x->down->send_body(x, d, pin);
            break;
        case MG_RESP_END:
            if (x->filtering && filter_body(x, &d, &pin, true) < 0)
                return;
            if (x->filtering && d.len)
                x->down->send_body(x, d, pin);
            x->down->send_end(x);
            x->resp_done = true;
            break;
        default:
            try_failed(x, MG_RETRY_ON_RESET, true, MG_ERR_UPSTREAM_UNAVAILABLE, d.p);
            return;
        }
    }
}

/* ------------------------------------------------------------ the request body */

/* A piece of the request body, decoded: into the idempotency buffer, or on to
 * the upstream, and kept for a retry while small. -1 when it cannot be taken
 * (x->error says why). */
static int request_body_data(struct mg_exchange *x, struct mg_slice d, struct mg_rbuf *pin)
{
    x->req_body_bytes += d.len;
    if (x->state == MG_X_BUFFER)
        return x->plug_body ? mg_xplug_body_data(x, d.p, d.len) : mg_xidem_body(x, d.p, d.len);
    if (x->body_copy_ok && x->ups->retry.max_retries > 0)
        x->body_copy_ok = mg_arena_append(&x->arena, &x->body_copy, &x->body_copy_len,
                                          &x->body_copy_cap, d.p, d.len, MG_RETRY_BODY_MAX) == 0;
    x->upstream->send_body(&x->att, d, pin);
    return 0;
}

/* Passes on the request body bytes that arrived from the client. */
static void forward_request_body(struct mg_exchange *x)
{
    for (;;) {
        struct mg_slice d;
        struct mg_rbuf *pin = NULL;
        enum mg_body_result r = x->down->read_body(x, &d, &pin);
        if (r == MG_BODY_DATA && request_body_data(x, d, pin) == 0)
            continue;
        if (r == MG_BODY_DONE) {
            if (x->state == MG_X_FORWARD)
                x->upstream->send_end(&x->att);
            x->req_done = true; /* pipelined requests wait until this exchange ends */
        }
        if (r == MG_BODY_DONE || r == MG_BODY_MORE)
            return;
        if (r == MG_BODY_TOO_LARGE)
            x->error = MG_ERR_BODY_TOO_LARGE;
        x->close_after = true;
        fail(x, x->error == MG_ERR_BODY_TOO_LARGE ? MG_ERR_BODY_TOO_LARGE : MG_ERR_BAD_REQUEST,
             "request body refused");
        return;
    }
}

/* ------------------------------------------------------------ the end */

/* Gives back what the request held and zeroes its part of the exchange. */
static void reset(struct mg_exchange *x)
{
    mg_xslot_release(x);
    mg_xplug_abandon(x);
    mg_xidem_abandon(x);
    mg_xidem_free(x);
    if (x->rt)
        mg_runtime_release(x->ctx, x->rt);
    mg_arena_reset(&x->arena);
    size_t from = offsetof(struct mg_exchange, rt);
    memset((char *)x + from, 0, sizeof *x - from);
    x->state = MG_X_IDLE;
}

/* ------------------------------------------------------------ steps */

static int step_idle(struct mg_exchange *x)
{
    if (!x->down->has_request(x))
        return MG_AGAIN;
    x->rt = mg_runtime_hold(x->ctx);
    x->started_ns = uv_hrtime();
    x->state = MG_X_HEAD;
    return MG_NEXT;
}

/* P.body: the access phase needs the whole request body first (413 beyond
 * the plugins' limit). step_buffer reads it, then calls after_head(). */
static int buffer_for_plugins(struct mg_exchange *x)
{
    if (x->req_has_length && x->req_content_length > mg_xplug_body_max(x)) {
        x->close_after = true;
        fail(x, MG_ERR_BODY_TOO_LARGE, "request body over the plugins' P.body limit");
        return MG_NEXT;
    }
    x->plug_body = true;
    x->body_copy_ok = true;
    x->state = MG_X_BUFFER;
    if (x->req_expect_continue && !x->req_done && x->http_minor >= 1) {
        x->down->send_continue(x);
        x->continue_sent = true;
    }
    return MG_NEXT;
}

/* What the access phase decided; then the idempotency phase. */
static int after_access(struct mg_exchange *x, enum mg_lua_result r)
{
    if (r == MG_LUA_WAIT) {
        if (x->state != MG_X_PLUGIN) {
            x->state = MG_X_PLUGIN;
            mg_deadline_set(&x->deadline, x->route->timeout_ms);
        }
        return MG_AGAIN;
    }
    if (x->state == MG_X_PLUGIN)
        mg_deadline_set(&x->deadline, 0);
    if (r == MG_LUA_RESPONDED) {
        mg_xplug_send_respond(x);
        x->state = MG_X_FINISH;
        return MG_NEXT;
    }
    if (r == MG_LUA_ERROR) {
        fail(x, MG_ERR_PLUGIN_ERROR, "access phase");
        return MG_NEXT;
    }
    bool buffer;
    enum mg_error err = mg_xidem_start(x, &buffer);
    if (err)
        fail(x, err, "idempotency");
    else
        x->state = buffer ? MG_X_BUFFER : MG_X_CONNECT;
    return MG_NEXT;
}

/* The head is in (and with P.body the body too): access, then idempotency. */
static int after_head(struct mg_exchange *x)
{
    if (mg_xplug_active(x, MG_LUA_ACCESS))
        return after_access(x, mg_xplug_access(x));
    return after_access(x, MG_LUA_OK);
}

static int step_head(struct mg_exchange *x)
{
    if (x->down->read_head(x) == MG_AGAIN)
        return MG_AGAIN;
    if (!x->error) {
        mg_xreqid_make(x);
        mg_forwarded_client(&x->req_hdrs, x->client_ip, x->rt->cfg->forwarded.trusted_proxies,
                            x->rt->cfg->forwarded.ntrusted_proxies, x->real_ip, sizeof x->real_ip);
        x->error = mg_xroute(x);
        x->body_copy_ok = true;
    }
    if (x->error) {
        fail(x, x->error, "request rejected");
        return MG_NEXT;
    }
    mg_metrics_in_flight(metrics_of(x), (unsigned)x->ctx->id, (int)x->route->index, 1);
    x->in_flight_counted = true;
    if (mg_xplug_body_max(x))
        return buffer_for_plugins(x);
    return after_head(x);
}

/* An access-phase plugin waits: the route deadline bounds the wait. */
static int step_plugin(struct mg_exchange *x)
{
    return after_access(x, mg_xplug_access_resume(x));
}

/* Idempotency: the body is read whole before the store is asked about the key. */
static int step_buffer(struct mg_exchange *x)
{
    if (!x->req_done) {
        forward_request_body(x);
        if (x->state != MG_X_BUFFER)
            return MG_NEXT;
    }
    if (!x->req_done)
        return MG_AGAIN;
    if (x->plug_body) {
        x->plug_body = false;
        return after_head(x);
    }
    enum mg_error err;
    x->state = MG_X_LOOKUP; /* the store's answer is awaited there */
    if (mg_xidem_lookup(x, &err) == MG_AGAIN)
        return MG_NEXT;
    if (err)
        fail(x, err, "store unavailable");
    else
        x->state = MG_X_CONNECT;
    return MG_NEXT;
}

static int step_lookup(struct mg_exchange *x)
{
    enum mg_error err = MG_ERR_NONE;
    switch (mg_xidem_answered(x, &err)) {
    case MG_XIDEM_WAIT:
        return MG_AGAIN;
    case MG_XIDEM_FORWARD:
        x->state = MG_X_CONNECT;
        break;
    case MG_XIDEM_REPLAY:
        mg_xidem_send_replay(x);
        x->state = MG_X_FINISH;
        break;
    default:
        fail(x, err, "idempotency");
        break;
    }
    return MG_NEXT;
}

/* The connection is usable: send the head and what is kept of the body. */
static void start_forwarding(struct mg_exchange *x)
{
    mg_xup_reset_response(x);
    x->idem.forwarded = true;
    x->upstream->start(&x->att);
    if (x->req_expect_continue && !x->req_done && x->http_minor >= 1 && !x->continue_sent) {
        x->down->send_continue(x);
        x->down->flush(x);
        x->continue_sent = true;
    }
}

static int step_connect(struct mg_exchange *x)
{
    struct mg_attempt *a = &x->att;
    if (!x->slot_held) {
        /* First pass: the deadline covers queueing, every try and every backoff. */
        mg_deadline_set(&x->deadline, mg_xprop_timeout_ms(x));
        mg_retry_budget_record_request(&x->rt->ups[x->ups->index].stats->budget,
                                       uv_now(&x->ctx->loop));
        admit(x);
        if (x->state != MG_X_CONNECT)
            return MG_NEXT;
    }
    if (!a->up) {
        enum mg_error err = mg_attempt_open(x);
        if (err) {
            fail(x, err,
                 err == MG_ERR_PLUGIN_ERROR       ? "balance phase"
                 : err == MG_ERR_BALANCER_REFUSED ? "the balancer refused"
                                                  : "no target available");
            return MG_NEXT;
        }
        a->events = &upconn_ops;
        bool ready = false;
        int rc =
            x->upstream->acquire(a, mg_attempt_timeout_ms(x, x->ups->connect_timeout_ms), &ready);
        if (rc) {
            try_failed(x, MG_RETRY_ON_CONNECT_FAILURE, false, MG_ERR_UPSTREAM_UNAVAILABLE,
                       uv_strerror(rc));
            return MG_NEXT;
        }
        a->ready = ready;
    }
    if (!a->ready)
        return MG_AGAIN;
    start_forwarding(x);
    x->state = MG_X_FORWARD;
    if (x->ups->hedge.enabled)
        mg_hedge_arm(x);
    return MG_NEXT;
}

static int step_forward(struct mg_exchange *x)
{
    if (!x->req_done) {
        forward_request_body(x);
        if (x->state != MG_X_FORWARD)
            return MG_NEXT;
    }
    read_response(x);
    if (x->state != MG_X_FORWARD)
        return MG_NEXT;
    if (!x->resp_done)
        return MG_AGAIN;
    if (!x->req_done)
        x->close_after = true; /* the rest of the request body cannot be skipped reliably */
    if (mg_xidem_settle(x)) {
        /* The held end of the response may point into the upstream's read
         * buffer: the connection stays leased, silent, until FINISH. */
        x->upstream->set_reading(&x->att, false);
        x->upstream->set_timeout(&x->att, 0);
        x->state = MG_X_COMMIT;
        return MG_NEXT;
    }
    detach(x, true);
    x->state = MG_X_FINISH;
    return MG_NEXT;
}

static int step_commit(struct mg_exchange *x)
{
    if (!mg_xidem_settled(x))
        return MG_AGAIN;
    x->state = MG_X_FINISH;
    return MG_NEXT;
}

static int step_tunnel(struct mg_exchange *x)
{
    struct mg_attempt *a = &x->att;
    struct mg_rbuf *pin = NULL;
    x->upstream->set_timeout(a, 0);
    mg_deadline_set(&x->deadline, 0);
    if (!a->closed) {
        struct mg_slice d = x->down->read_raw(x, &pin);
        if (d.len)
            x->upstream->send_raw(a, d, pin);
    }
    struct mg_slice d = x->upstream->read_raw(a, &pin);
    if (d.len)
        x->down->send_raw(x, d, pin);
    /* Either side closing ends the tunnel, once what the other sent is delivered. */
    if ((x->down->eof(x) || a->closed) && x->down->drained(x) && x->upstream->drained(a) &&
        (x->down->unpinned(x) || a->closed))
        x->down->close(x);
    return MG_AGAIN;
}

static int step_finish(struct mg_exchange *x)
{
    if (!x->down->drained(x))
        return MG_AGAIN;
    mg_deadline_set(&x->deadline, 0);
    detach(x, true);
    mg_xrecord(x, x->sent_status);
    x->state = MG_X_IDLE; /* recorded: a close must not count it again */
    /* Draining closes only what announced it (close_after is set for every
     * response begun while draining). A head sent before the drain said
     * keep-alive: the client may be sending its next request right now, so
     * the connection waits for it (answered with Connection: close) or for
     * the drain's idle wait (mg_conn_keepalive_ms), never closes here. */
    if (x->close_after || x->down->eof(x)) {
        x->down->close(x);
        return MG_AGAIN;
    }
    reset(x);
    x->down->idle(x);
    return MG_NEXT;
}

/* After the client closed its side: requests already complete still get their
 * responses (a client may half-close after pipelining); a request cut short is
 * aborted, as nginx's 499. */
static bool client_gone_midway(struct mg_exchange *x)
{
    switch (x->state) {
    case MG_X_IDLE:
        return !x->down->has_request(x);
    case MG_X_HEAD:
        return true;
    case MG_X_PLUGIN:
    case MG_X_BUFFER:
    case MG_X_LOOKUP:
    case MG_X_QUEUED:
    case MG_X_CONNECT:
    case MG_X_BACKOFF:
    case MG_X_FORWARD:
        return !x->req_done;
    default:
        return false;
    }
}

static int step(struct mg_exchange *x)
{
    switch (x->state) {
    case MG_X_IDLE:
        return step_idle(x);
    case MG_X_HEAD:
        return step_head(x);
    case MG_X_PLUGIN:
        return step_plugin(x);
    case MG_X_BUFFER:
        return step_buffer(x);
    case MG_X_LOOKUP:
        return step_lookup(x);
    case MG_X_QUEUED:
    case MG_X_BACKOFF:
        MG_ASSERT(x->route != NULL && x->att.up == NULL);
        return MG_AGAIN; /* x->wait or a bulkhead grant moves it on */
    case MG_X_CONNECT:
        MG_ASSERT(x->route != NULL);
        return step_connect(x);
    case MG_X_FORWARD:
        MG_ASSERT(x->att.up != NULL && x->att.ready);
        return step_forward(x);
    case MG_X_TUNNEL:
        return step_tunnel(x);
    case MG_X_COMMIT:
        return step_commit(x);
    case MG_X_FINISH:
        MG_ASSERT(x->resp_done);
        return step_finish(x);
    }
    return MG_AGAIN;
}

/* Runs steps until one must wait. */
static void run_steps(struct mg_exchange *x)
{
    while (!x->closing) {
        enum mg_x_state before = x->state;
        int rc = step(x);
        if (x->closing)
            return;
        if (x->state != before)
            mg_debug("exchange %p: %s -> %s", (void *)x, state_names[before],
                     state_names[x->state]);
        if (rc == MG_AGAIN)
            return;
    }
}

/* The state machine. Every event records what happened and calls this; it runs
 * steps until one must wait, then sends what they queued (a write that
 * completes at once may let a state move on, so the steps run again). */
static void advance(struct mg_exchange *x)
{
    for (;;) {
        run_steps(x);
        if (x->closing)
            return;
        bool again = false;
        if (x->att.up) {
            int rc = x->upstream->flush(&x->att);
            if (rc == 1)
                again = true;
            else if (rc < 0)
                try_failed(x, MG_RETRY_ON_RESET, true, MG_ERR_UPSTREAM_UNAVAILABLE,
                           uv_strerror(rc));
        }
        /* COMMIT holds the end of the response until the store has the record. */
        if (!x->closing && x->state != MG_X_COMMIT && x->down->flush(x))
            again = true;
        if (x->closing)
            return;
        if (!again)
            break;
    }
    if (x->down->eof(x) && client_gone_midway(x)) {
        x->down->close(x);
        return;
    }
    x->down->update_reading(x);
    mg_xup_update_reading(x);
}

/* ------------------------------------------------------------ timers */

static void on_wait_timer(uv_timer_t *t)
{
    struct mg_exchange *x = t->data;
    if (x->state == MG_X_BACKOFF) {
        x->state = MG_X_CONNECT;
    } else if (x->state == MG_X_QUEUED) {
        if (mg_xslot_timeout(x)) {
            x->state = MG_X_CONNECT; /* a grant was on its way to us */
        } else {
            x->retry_after_s = 1;
            fail(x, MG_ERR_BULKHEAD_FULL, "queue timeout");
        }
    }
    advance(x);
}

static void on_deadline(struct mg_deadline *d)
{
    struct mg_exchange *x = d->timer.data;
    if (x->state == MG_X_PLUGIN) { /* a plugin waited too long */
        mg_xplug_abandon(x);
        fail(x, MG_ERR_UPSTREAM_TIMEOUT, "route deadline exceeded in the access phase");
        advance(x);
        return;
    }
    if (x->state != MG_X_QUEUED && x->state != MG_X_BACKOFF && x->state != MG_X_CONNECT &&
        x->state != MG_X_FORWARD)
        return;
    mg_xslot_stop_waiting(x);
    mg_attempt_report(x, true, MG_OUTCOME_TIMEOUT);
    fail(x, MG_ERR_UPSTREAM_TIMEOUT, "route deadline exceeded");
    advance(x);
}

/* The codec's head or body timer fired. */
static void client_timeout(struct mg_exchange *x)
{
    switch (x->state) {
    case MG_X_HEAD:
        x->close_after = true;
        fail(x, MG_ERR_CLIENT_TIMEOUT, "request head timeout");
        break;
    case MG_X_PLUGIN:
    case MG_X_BUFFER:
    case MG_X_QUEUED:
    case MG_X_CONNECT:
    case MG_X_BACKOFF:
    case MG_X_FORWARD:
        if (x->req_done)
            return;
        if (x->state == MG_X_PLUGIN)
            mg_xplug_abandon(x);
        mg_xslot_stop_waiting(x);
        x->close_after = true;
        fail(x, MG_ERR_CLIENT_TIMEOUT, "request body timeout");
        break;
    default:
        return;
    }
    advance(x);
}

/* drain_timeout ran out while this exchange waits for its upstream: the client
 * gets a 504 with Connection: close rather than a connection cut with nothing. */
static void drain_timeout(struct mg_exchange *x)
{
    switch (x->state) {
    case MG_X_QUEUED:
    case MG_X_CONNECT:
    case MG_X_BACKOFF:
    case MG_X_FORWARD:
        if (x->resp_started)
            return; /* a response is under way: the final close cuts it */
        mg_xslot_stop_waiting(x);
        x->close_after = true;
        fail(x, MG_ERR_UPSTREAM_TIMEOUT, "drain timeout");
        break;
    default:
        return;
    }
    advance(x);
}

/* ------------------------------------------- the try's upstream connection */

static struct mg_exchange *owner_of(struct mg_upconn *u)
{
    return ((struct mg_attempt *)u->owner)->x;
}

static void on_up_connect(struct mg_upconn *u, int status)
{
    struct mg_exchange *x = owner_of(u);
    if (status < 0) {
        try_failed(x, MG_RETRY_ON_CONNECT_FAILURE, false, MG_ERR_UPSTREAM_UNAVAILABLE,
                   uv_strerror(status));
    } else {
        x->upstream->set_timeout(&x->att, 0);
        x->att.ready = true;
    }
    advance(x);
}

static void on_up_read(struct mg_upconn *u, ssize_t nread)
{
    struct mg_exchange *x = owner_of(u);
    mg_xup_note_read(x, nread);
    advance(x);
}

static void on_up_timeout(struct mg_upconn *u)
{
    struct mg_exchange *x = owner_of(u);
    try_failed(x, MG_RETRY_ON_TIMEOUT, x->att.ready, MG_ERR_UPSTREAM_TIMEOUT,
               mg_xup_timeout_what(x));
    advance(x);
}

static void on_up_unpinned(struct mg_upconn *u)
{
    advance(owner_of(u));
}

static void on_up_written(struct mg_upconn *u, int status)
{
    struct mg_exchange *x = owner_of(u);
    if (status == UV_ECANCELED)
        return;
    if (status < 0)
        try_failed(x, MG_RETRY_ON_RESET, true, MG_ERR_UPSTREAM_UNAVAILABLE, uv_strerror(status));
    else
        mg_xup_sync_timer(x, true);
    advance(x);
}

static const struct mg_upconn_ops upconn_ops = {
    .on_connect = on_up_connect,
    .on_read = on_up_read,
    .on_timeout = on_up_timeout,
    .on_unpinned = on_up_unpinned,
    .on_written = on_up_written,
};

/* ------------------------------------------------------------ hooks */

static void on_handle_closed(uv_handle_t *h)
{
    struct mg_exchange *x = h->data;
    if (--x->handles_open == 0)
        x->on_closed(x);
}

static void hook_init(struct mg_exchange *x, struct mg_loopctx *ctx,
                      const struct mg_downstream_ops *down, const char *client_ip,
                      void (*on_closed)(struct mg_exchange *x))
{
    x->ctx = ctx;
    x->down = down;
    x->upstream = upstream_ops;
    x->client_ip = client_ip;
    x->on_closed = on_closed;
    mg_arena_init(&x->arena, &ctx->arena_cache);
    mg_deadline_init(&ctx->loop, &x->deadline, on_deadline, x);
    uv_timer_init(&ctx->loop, &x->wait);
    x->wait.data = x;
    x->handles_open = 2;
    x->waiter.on_grant = on_slot_granted;
    x->waiter.on_shed = on_slot_shed;
    x->state = MG_X_IDLE;
}

static void hook_event(struct mg_exchange *x, enum mg_exchange_event ev)
{
    if (x->closing)
        return;
    if (ev == MG_XEV_CLIENT_TIMEOUT)
        client_timeout(x);
    else if (ev == MG_XEV_DRAIN_TIMEOUT)
        drain_timeout(x);
    else
        advance(x);
}

static void hook_close(struct mg_exchange *x)
{
    if (x->closing)
        return;
    x->closing = true;
    mg_deadline_set(&x->deadline, 0);
    if (x->state == MG_X_QUEUED)
        mg_xslot_leave(x);
    mg_xplug_abandon(x);
    mg_xidem_abandon(x);
    if (x->state != MG_X_IDLE && x->rt)
        mg_xrecord(x, x->resp_done ? x->sent_status : 0);
    detach(x, false);
    mg_xslot_release(x);
    uv_close(mg_deadline_handle(&x->deadline), on_handle_closed);
    uv_close((uv_handle_t *)&x->wait, on_handle_closed);
}

static void hook_destroy(struct mg_exchange *x)
{
    mg_xidem_free(x);
    if (x->rt)
        mg_runtime_release(x->ctx, x->rt);
    x->rt = NULL;
    mg_arena_destroy(&x->arena);
}

const struct mg_exchange_hooks mg_exchange_hooks = {
    .init = hook_init,
    .event = hook_event,
    .close = hook_close,
    .destroy = hook_destroy,
};
