/*
 * Retry policy (DESIGN.md section 5): which failures are retried, whether a
 * request is safe to send again, how long to back off, and the per-upstream
 * budget that keeps retries from multiplying the load on a failing upstream.
 *
 * Pure functions except the budget, which is shared by all workers through
 * atomics. Time and randomness come from the caller (uv_now of the worker's loop
 * and the worker's PRNG), so nothing here reads a clock or keeps hidden state.
 *
 * Caller protocol, per exchange:
 *   first try:  mg_retry_budget_record_request(budget, now) once;
 *   on failure: retry only if retries_done < max_retries, the outcome is
 *               listed (mg_retry_on() for connect_failure/reset/timeout,
 *               mg_retry_should_retry_status() for statuses), mg_retry_safe()
 *               holds, nothing was sent to the client, the body is still held,
 *               and finally mg_retry_budget_try_spend() (last, since it spends);
 *   then:       arm a uv timer for mg_retry_backoff_ms(c, retries_done, random)
 *               (never past the route deadline) and try again, preferring a
 *               target not yet tried.
 */
#ifndef MG_RETRY_H
#define MG_RETRY_H

#include <stdbool.h>
#include <stdint.h>

#include "config/config-t.h"
#include "resilience/retry-t.h"

/* Full-jitter backoff before retry number retry_index (0 for the first retry):
 * a value in [0, min(max, base * 2^retry_index)], inclusive, picked by `random`
 * (any uniformly distributed 64-bit value; the modulo bias is below 2^-32 for
 * any cap under 2^32 ms). Never overflows, whatever retry_index is. */
uint64_t mg_retry_backoff_ms(const struct mg_retry_conf *c, unsigned retry_index, uint64_t random);

/* Whether retry.on lists the failure `bit` (an MG_RETRY_ON_* value). */
bool mg_retry_on(const struct mg_retry_conf *c, unsigned bit);

/* Whether retry.on lists the upstream response status. */
bool mg_retry_should_retry_status(const struct mg_retry_conf *c, int status);

/* Whether the method (an llhttp_method_t) is idempotent per RFC 9110 9.2.2:
 * GET, HEAD, OPTIONS, PUT, DELETE, TRACE. */
bool mg_retry_method_idempotent(int llhttp_method);

/* Whether a request may be sent again (DESIGN.md section 5): its method is
 * idempotent, or no byte of it can have reached the upstream (connect failure),
 * or its route dedups by Idempotency-Key and it carries one. The caller still
 * checks that nothing went to the client and that the body is at hand. */
bool mg_retry_safe(int llhttp_method, bool reached_upstream, bool has_idempotency_key);

/* Empties the budget. Call before it is shared. */
void mg_retry_budget_init(struct mg_retry_budget *b);

/* Counts one request to the upstream: its first try only, never a retry, so the
 * ratio is retries per client request. */
void mg_retry_budget_record_request(struct mg_retry_budget *b, uint64_t now_ms);

/* Spends one retry if, counting it, retries over the last 10 s stay within
 * budget_ratio * requests + budget_min_per_second * 10. Returns whether the
 * retry may go ahead. Concurrent spenders cannot overdraw it: the check and the
 * spend are one CAS on the current bucket. */
bool mg_retry_budget_try_spend(struct mg_retry_budget *b, const struct mg_retry_conf *c,
                               uint64_t now_ms);

/* Requests and retries counted over the last 10 s (for /status and tests). */
void mg_retry_budget_counts(const struct mg_retry_budget *b, uint64_t now_ms, uint64_t *requests,
                            uint64_t *retries);

#endif
