/*
 * The tries of an exchange (DESIGN.md section 5): which target the next try
 * goes to (the route's Lua balancer first, then the C balancer, skipping open
 * breakers), the try's bookkeeping (the target's in-flight count, the breaker's
 * half-open ticket, the outcome reported once), and whether a failed try may be
 * repeated. Verdicts only: the state machine (exchange.c) acts on them.
 */
#ifndef MG_EXCHANGE_ATTEMPT_H
#define MG_EXCHANGE_ATTEMPT_H

#include <stdbool.h>
#include <stdint.h>

#include "exchange/exchange-t.h"
#include "obs/metrics-t.h"

/* Chooses the target of the next try and opens the attempt on it (counted in
 * the target's in-flight; x->attempts + 1). Returns MG_ERR_NONE, or
 * MG_ERR_CIRCUIT_OPEN (no target available; x->retry_after_s set) or
 * MG_ERR_PLUGIN_ERROR (the Lua balancer raised): no attempt is open then. */
enum mg_error mg_attempt_open(struct mg_exchange *x);
/* Opens attempt `a` (a hedge) on a target this exchange has not tried, skipping
 * open breakers: the route's Lua balancer first (the tried targets offered as
 * unavailable), then the C balancer. False when there is none, or when the Lua
 * balancer raised or refused. */
bool mg_attempt_open_other(struct mg_exchange *x, struct mg_attempt *a);
/* Tells the breaker and the metrics how the try went, once per try. */
void mg_attempt_report(struct mg_exchange *x, bool failure, enum mg_upstream_outcome outcome);
void mg_attempt_report_on(struct mg_attempt *a, bool failure, enum mg_upstream_outcome outcome);
/* The try is over: an outcome never reported is cancelled with the breaker. */
void mg_attempt_close(struct mg_exchange *x);
void mg_attempt_close_on(struct mg_attempt *a);
/* Whether a failed try may be repeated. `kind` is a MG_RETRY_ON_* bit, or 0 for
 * a status (checked by the caller); `reached`: the request may have reached
 * the upstream (not a connect failure). Spends from the retry budget, so ask
 * only when a retry would follow. */
bool mg_attempt_may_retry(struct mg_exchange *x, unsigned kind, bool reached);
/* The backoff before the next try (full jitter). */
uint64_t mg_attempt_backoff_ms(struct mg_exchange *x);
/* `ms` (a connect, send or read timeout of the current try; 0: none) cut to
 * what is left of timeouts.per_try, which runs from the try's start to its
 * response head; a->try_cut says which limit was armed. */
uint64_t mg_attempt_timeout_ms(struct mg_exchange *x, uint64_t ms);
/* A response head of the current try arrived: a 429 or 503 with Retry-After
 * takes the target out of rotation that long (honor_retry_after, capped). */
void mg_attempt_note_head(struct mg_exchange *x);
/* The outcome label of a failure kind (MG_RETRY_ON_*). */
enum mg_upstream_outcome mg_attempt_outcome_of(unsigned kind);

#endif
