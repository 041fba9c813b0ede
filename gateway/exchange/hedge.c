/*
 * Hedged requests (see hedge.h).
 *
 * The delay runs on x->wait, which the exchange uses only while QUEUED or in
 * BACKOFF, never in FORWARD where a hedge is armed. The hedge leases its
 * connection with this file's upconn ops, so its events never reach the
 * exchange's handlers; when its head wins, the attempt is moved into x->att
 * (the connection's owner and ops re-pointed, the llhttp parser's data too)
 * and the first try's connection is closed. Its head is already parsed into x:
 * x->hedge_head tells the exchange to act on it before reading on.
 */
#include "exchange/hedge.h"

#include <string.h>

#include "config/config-t.h"
#include "core/log.h"
#include "exchange/attempt.h"
#include "exchange/exchange.h"
#include "obs/metrics.h"
#include "resilience/quantile.h"
#include "resilience/retry.h"
#include "resilience/window.h"
#include "runtime.h"
#include "upstream/balancer.h"
#include "upstream/pool.h"
#include "loopctx.h"

static const struct mg_upconn_ops hedge_ops;

/* The hedge budget counts in 1 s buckets over 10 s, as the retry budget does;
 * one hedge a second is always allowed so a quiet upstream still hedges. */
#define HEDGE_BUDGET_BUCKET_MS 1000
#define HEDGE_BUDGET_FLOOR     10 /* per window: 1/s */

static void count(struct mg_exchange *x, enum mg_hedge_result r)
{
    mg_metrics_hedge(x->rt->metrics, (unsigned)x->ctx->id, x->ups->index, r);
}

/* Ends the hedge attempt (its connection closed) and counts how it ended. */
static void drop(struct mg_exchange *x, enum mg_hedge_result r)
{
    struct mg_attempt *h = x->hedge;
    if (!h || !h->open)
        return;
    if (h->up)
        x->upstream->release(h, false);
    mg_attempt_close_on(h);
    count(x, r);
}

/* The hedge's own failure before its head: the first try goes on alone. */
static void hedge_failed(struct mg_exchange *x, enum mg_upstream_outcome o, const char *why)
{
    mg_attempt_report_on(x->hedge, true, o);
    mg_info("hedge to %s failed: %s (request_id %s)", x->hedge->target->conf->address.text, why,
            x->request_id);
    drop(x, MG_HEDGE_LOST);
}

static uint64_t delay_ms(struct mg_exchange *x)
{
    const struct mg_hedge_conf *hc = &x->ups->hedge;
    if (hc->after_ms)
        return hc->after_ms;
    uint32_t us = mg_quantile_us(&x->rt->ups[x->ups->index].latency);
    return us ? (us + 999) / 1000 : 0; /* 0: too few samples yet, no hedge */
}

/* hedge.budget: hedges over the last 10 s stay within budget % of the
 * upstream's requests (+ the floor). Without it `after: p95` alone sends more
 * than 5 % extra when the fast answers jitter past the quantile. */
static struct mg_window *hedge_window(struct mg_exchange *x)
{
    return &x->rt->ups[x->ups->index].stats->hedge_budget;
}

/* Whether a hedge may go now: no response yet, the whole request known and
 * repeatable, safe to send twice, and the hedge and retry budgets allow one
 * more. The hedge budget is spent first and given back if the retry budget
 * refuses, so no worker can spend a retry token on a hedge that is not sent. */
static bool may_hedge(struct mg_exchange *x)
{
    const struct mg_upstream_conf *uc = x->ups;
    if (x->state != MG_X_FORWARD || x->att.head_done || x->resp_started || !x->req_done ||
        x->req_upgrade || (x->req_body_bytes > 0 && !x->body_copy_ok) ||
        x->hedges >= uc->hedge.max || !mg_retry_safe(x->method, true, x->idem.keyed) ||
        !mg_balancer_fresh_exists(&x->rt->ups[uc->index], &x->tried, uv_now(&x->ctx->loop)))
        return false;
    uint64_t now = uv_now(&x->ctx->loop);
    if (!mg_window_spend(hedge_window(x), HEDGE_BUDGET_BUCKET_MS, now, HEDGE_BUDGET_FLOOR,
                         uc->hedge.budget / 100.0))
        return false;
    if (mg_retry_budget_try_spend(&x->rt->ups[uc->index].stats->budget, &uc->retry, now))
        return true;
    mg_window_give_back(hedge_window(x), HEDGE_BUDGET_BUCKET_MS, now);
    return false;
}

static void start_hedge(struct mg_exchange *x)
{
    struct mg_attempt *h = x->hedge;
    x->upstream->start(h);
    int rc = x->upstream->flush(h);
    if (rc < 0) {
        hedge_failed(x, MG_OUTCOME_RESET, uv_strerror(rc));
        return;
    }
    x->upstream->set_timeout(h, x->ups->read_timeout_ms);
}

static void on_hedge_timer(uv_timer_t *t)
{
    struct mg_exchange *x = t->data;
    x->hedge_timer = false;
    if (!may_hedge(x))
        return;
    if (!x->hedge)
        x->hedge = mg_arena_alloc(&x->arena, sizeof *x->hedge);
    if (!mg_attempt_open_other(x, x->hedge))
        return; /* lost a race to an opening breaker */
    struct mg_attempt *h = x->hedge;
    x->hedges++;
    h->events = &hedge_ops;
    bool ready = false;
    int rc = x->upstream->acquire(h, x->ups->connect_timeout_ms, &ready);
    if (rc) {
        hedge_failed(x, MG_OUTCOME_CONNECT_FAILURE, uv_strerror(rc));
        return;
    }
    h->ready = ready;
    if (ready)
        start_hedge(x);
}

void mg_hedge_arm(struct mg_exchange *x)
{
    x->raced_ns = x->att.start_ns;
    if (x->attempts == 1) /* a request, for hedge.budget (retries are not) */
        mg_window_add(hedge_window(x), HEDGE_BUDGET_BUCKET_MS, uv_now(&x->ctx->loop), 1, 0);
    if (x->hedges >= x->ups->hedge.max || !mg_retry_safe(x->method, true, x->idem.keyed))
        return;
    uint64_t ms = delay_ms(x);
    if (!ms)
        return;
    x->hedge_timer = true;
    uv_timer_start(&x->wait, on_hedge_timer, ms, 0);
}

void mg_hedge_settle(struct mg_exchange *x)
{
    if (x->hedge_timer) {
        x->hedge_timer = false;
        uv_timer_stop(&x->wait);
    }
    drop(x, MG_HEDGE_LOST);
}

void mg_hedge_cancel(struct mg_exchange *x)
{
    if (x->hedge_timer) {
        x->hedge_timer = false;
        uv_timer_stop(&x->wait);
    }
    drop(x, MG_HEDGE_CANCELLED);
}

/* The hedge becomes the exchange's try, x->att: the first try's connection is
 * closed (mid-response or broken: never pooled) and the hedge's connection now
 * reports to the exchange's handlers. */
static void adopt(struct mg_exchange *x)
{
    struct mg_attempt *h = x->hedge;
    const struct mg_upconn_ops *ev = x->att.events;
    if (x->att.up)
        x->upstream->release(&x->att, false);
    mg_attempt_close(x);
    x->att = *h;
    h->open = false;
    h->up = NULL;
    struct mg_attempt *a = &x->att;
    a->events = ev;
    a->timer = MG_UPT_NONE; /* the exchange arms what it waits for */
    a->parser.data = a;
    a->up->owner = a;
    a->up->ops = ev;
}

/* The hedge's head came first: it becomes the exchange's try. */
static void won(struct mg_exchange *x)
{
    mg_info("hedge to %s won over %s (request_id %s)", x->hedge->target->conf->address.text,
            x->att.target->conf->address.text, x->request_id);
    adopt(x);
    x->hedge_head = true;
    count(x, MG_HEDGE_WON);
    mg_exchange_run(x);
}

bool mg_hedge_take_over(struct mg_exchange *x)
{
    struct mg_attempt *h = x->hedge;
    if (!h || !h->open || h->head_done || x->resp_started)
        return false;
    if (x->hedge_timer) {
        x->hedge_timer = false;
        uv_timer_stop(&x->wait);
    }
    mg_info("first try to %s failed: the hedge to %s takes over (request_id %s)",
            x->att.target->conf->address.text, h->target->conf->address.text, x->request_id);
    /* The hedge gathers its own head (a->head): nothing of the first try's
     * may be taken for part of it. */
    x->resp_headlen = 0;
    x->status = 0;
    adopt(x);
    count(x, MG_HEDGE_WON);
    return true;
}

static struct mg_exchange *hedge_owner(struct mg_upconn *u)
{
    return ((struct mg_attempt *)u->owner)->x;
}

static void on_connect(struct mg_upconn *u, int status)
{
    struct mg_exchange *x = hedge_owner(u);
    if (status < 0) {
        hedge_failed(x, MG_OUTCOME_CONNECT_FAILURE, uv_strerror(status));
        return;
    }
    x->upstream->set_timeout(x->hedge, 0);
    x->hedge->ready = true;
    start_hedge(x);
}

static void on_read(struct mg_upconn *u, ssize_t nread)
{
    struct mg_exchange *x = hedge_owner(u);
    struct mg_attempt *h = x->hedge;
    if (nread < 0) {
        h->closed = true;
        h->read_error = (int)nread;
        h->reusable = false;
    }
    for (;;) {
        struct mg_slice d;
        struct mg_rbuf *pin = NULL;
        switch (x->upstream->read(h, &d, &pin)) {
        case MG_RESP_MORE:
            return;
        case MG_RESP_INTERIM:
            break;
        case MG_RESP_HEAD:
            won(x);
            return;
        default:
            hedge_failed(x, MG_OUTCOME_RESET, "malformed or cut response");
            return;
        }
    }
}

static void on_timeout(struct mg_upconn *u)
{
    struct mg_exchange *x = hedge_owner(u);
    hedge_failed(x, x->hedge->ready ? MG_OUTCOME_TIMEOUT : MG_OUTCOME_CONNECT_FAILURE,
                 x->hedge->ready ? "read timeout" : "connect timeout");
}

static void on_unpinned(struct mg_upconn *u)
{
    (void)u; /* nothing of the hedge reaches the client before it wins */
}

static void on_written(struct mg_upconn *u, int status)
{
    struct mg_exchange *x = hedge_owner(u);
    if (status == UV_ECANCELED)
        return;
    if (status < 0) {
        hedge_failed(x, MG_OUTCOME_RESET, uv_strerror(status));
        return;
    }
    int rc = x->upstream->flush(x->hedge);
    if (rc < 0)
        hedge_failed(x, MG_OUTCOME_RESET, uv_strerror(rc));
}

static const struct mg_upconn_ops hedge_ops = {
    .on_connect = on_connect,
    .on_read = on_read,
    .on_timeout = on_timeout,
    .on_unpinned = on_unpinned,
    .on_written = on_written,
};
