/*
 * Retry policy: backoff with full jitter, the retry conditions, method safety and
 * the per-upstream retry budget.
 *
 * The backoff is AWS's "full jitter" (random between 0 and the exponential cap):
 * it spreads the retries of many clients failing at once better than a fixed or
 * "equal jitter" delay. The budget is Finagle's idea (a share of requests plus a
 * floor per second, over a sliding window), on the lock-free window of window.h.
 *
 * Invariant: over any 10 s window, retries spent <= ratio * requests counted +
 * min_per_second * 10, across all workers.
 *
 * Ownership: the budget struct belongs to the caller; nothing here allocates.
 */
#include "resilience/retry.h"

#include <llhttp.h>

#include "resilience/window.h"

/* min(max, base * 2^n) without overflow; max below base still lets base through,
 * since the loader orders them and a zero max must not make retries instant. */
static uint64_t backoff_cap(const struct mg_retry_conf *c, unsigned n)
{
    uint64_t base = c->backoff_base_ms;
    uint64_t max = c->backoff_max_ms > base ? c->backoff_max_ms : base;

    if (n >= 64 || base > (max >> n))
        return max;
    return base << n;
}

uint64_t mg_retry_backoff_ms(const struct mg_retry_conf *c, unsigned retry_index, uint64_t random)
{
    uint64_t cap = backoff_cap(c, retry_index);

    if (cap == UINT64_MAX)
        return random;
    return random % (cap + 1);
}

bool mg_retry_on(const struct mg_retry_conf *c, unsigned bit)
{
    return (c->on_mask & bit) != 0;
}

bool mg_retry_should_retry_status(const struct mg_retry_conf *c, int status)
{
    for (size_t i = 0; i < c->n_on_statuses; i++)
        if (c->on_statuses[i] == status)
            return true;
    return false;
}

bool mg_retry_method_idempotent(int llhttp_method)
{
    switch (llhttp_method) {
    case HTTP_GET:
    case HTTP_HEAD:
    case HTTP_OPTIONS:
    case HTTP_PUT:
    case HTTP_DELETE:
    case HTTP_TRACE:
        return true;
    default:
        return false;
    }
}

bool mg_retry_safe(int llhttp_method, bool reached_upstream, bool has_idempotency_key)
{
    return mg_retry_method_idempotent(llhttp_method) || !reached_upstream || has_idempotency_key;
}

void mg_retry_budget_init(struct mg_retry_budget *b)
{
    mg_window_init(&b->window);
}

void mg_retry_budget_record_request(struct mg_retry_budget *b, uint64_t now_ms)
{
    mg_window_add(&b->window, MG_RETRY_BUDGET_BUCKET_MS, now_ms, 1, 0);
}

bool mg_retry_budget_try_spend(struct mg_retry_budget *b, const struct mg_retry_conf *c,
                               uint64_t now_ms)
{
    uint64_t floor = (uint64_t)c->budget_min_per_second * (MG_RETRY_BUDGET_WINDOW_MS / 1000);

    return mg_window_spend(&b->window, MG_RETRY_BUDGET_BUCKET_MS, now_ms, floor, c->budget_ratio);
}

void mg_retry_budget_counts(const struct mg_retry_budget *b, uint64_t now_ms, uint64_t *requests,
                            uint64_t *retries)
{
    struct mg_window_count n = mg_window_sum(&b->window, MG_RETRY_BUDGET_BUCKET_MS, now_ms);

    *requests = n.a;
    *retries = n.b;
}
