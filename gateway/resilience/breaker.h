/*
 * Circuit breaker per target, shared by all workers without locks.
 *
 * Closed -> open after `consecutive_failures` failures in a row, or when at least
 * `min_requests` requests over the sliding `window` (10 buckets) had a failure
 * share >= `failure_rate` (0 turns the rate rule off). Open lasts `open_for`,
 * doubled on each trip that follows a failed half-open episode, up to
 * `max_open_for`. Once it has elapsed the breaker is half-open: up to
 * `half_open_requests` probes are admitted; when that many have succeeded it
 * closes (the doubling starts over); any probe failing reopens it at once.
 *
 * Time is the caller's monotonic milliseconds (uv_now of the worker's loop; all
 * loops derive it from CLOCK_MONOTONIC, so workers agree), below 2^44. Nothing
 * here reads a clock or allocates. Every function is safe to call from any worker
 * thread at any time after mg_breaker_init; the conf is the target's upstream's
 * breaker section and is only read.
 *
 * Caller protocol (per try of an exchange against a target):
 *   balancer:  skip targets for which mg_breaker_available() is false;
 *   before:    if (!mg_breaker_acquire(b, c, now, &probe)) pick another target,
 *              or answer 503 circuit_open with Retry-After from
 *              mg_breaker_retry_after_ms() when every target refuses;
 *   after:     exactly one of mg_breaker_report(b, c, now, failure, probe) when
 *              the try's outcome is known (connect failure, reset, timeout or
 *              mg_breaker_is_failure_status() are failures), or
 *              mg_breaker_cancel(b, probe) when it never got one (client gone,
 *              route deadline): a probe neither reported nor cancelled would hold
 *              its half-open slot forever.
 */
#ifndef MG_BREAKER_H
#define MG_BREAKER_H

#include <stdbool.h>
#include <stdint.h>

#include "config/config-t.h"
#include "resilience/breaker-t.h"

/* Retry-After hint while half-open with every probe slot taken: the probes'
 * verdict is due within a read timeout, and clients round up to seconds anyway. */
#define MG_BREAKER_PROBE_WAIT_MS 1000

/* Starts closed with empty counters. Call before the breaker is shared. */
void mg_breaker_init(struct mg_breaker *b);

/* Whether a request could be admitted now: closed, or half-open with a probe
 * slot free. No side effect (the balancer calls it for every candidate); the
 * answer may be stale by the time mg_breaker_acquire() runs. */
bool mg_breaker_available(const struct mg_breaker *b, const struct mg_breaker_conf *c,
                          uint64_t now_ms);

/* Admits a request or refuses it. When half-open, admitting reserves one probe
 * slot and sets *probe to a non-zero ticket naming this half-open episode;
 * otherwise *probe is 0. The caller keeps *probe and hands it back to
 * mg_breaker_report() or mg_breaker_cancel(). */
bool mg_breaker_acquire(struct mg_breaker *b, const struct mg_breaker_conf *c, uint64_t now_ms,
                        uint32_t *probe);
/* Same; *half_opened is set when this call admitted the first probe of an
 * episode, i.e. moved the breaker from open to half-open (exactly one caller
 * per episode sees it, for the log line of the change). */
bool mg_breaker_acquire_ex(struct mg_breaker *b, const struct mg_breaker_conf *c, uint64_t now_ms,
                           uint32_t *probe, bool *half_opened);

/* What a report changed; exactly one reporter sees each change. */
enum mg_breaker_change {
    MG_BREAKER_UNCHANGED,
    MG_BREAKER_OPENED, /* tripped: closed -> open, or a failed probe: half-open -> open */
    MG_BREAKER_CLOSED, /* the probes succeeded: half-open -> closed */
};

/* Records the outcome of an admitted request. While closed it feeds the counters
 * and may trip the breaker. While half-open only the probes of the current
 * episode count; the late outcome of a request admitted before a trip is ignored. */
enum mg_breaker_change mg_breaker_report(struct mg_breaker *b, const struct mg_breaker_conf *c,
                                         uint64_t now_ms, bool failure, uint32_t probe);

/* Gives back a probe slot whose request ended without an outcome. probe 0 (not a
 * probe) or a ticket of an earlier episode does nothing. */
void mg_breaker_cancel(struct mg_breaker *b, uint32_t probe);

/* The state for metrics and /status: closed 0, half-open 1, open 2. */
enum mg_circuit mg_breaker_state(const struct mg_breaker *b, uint64_t now_ms);

/* "closed", "half_open" or "open". */
const char *mg_breaker_state_name(enum mg_circuit s);

/* Milliseconds until the breaker may admit a request: 0 when available, the rest
 * of open_for when open, MG_BREAKER_PROBE_WAIT_MS when half-open and full. */
uint64_t mg_breaker_retry_after_ms(const struct mg_breaker *b, const struct mg_breaker_conf *c,
                                   uint64_t now_ms);

/* Failures in a row while closed (the balancer's `failures`). */
uint32_t mg_breaker_failures(const struct mg_breaker *b);

/* Whether an upstream response status counts as a failure (failure_statuses). */
bool mg_breaker_is_failure_status(const struct mg_breaker_conf *c, int status);

#endif
