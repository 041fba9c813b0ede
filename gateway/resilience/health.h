/*
 * Active health checks (DESIGN.md section 3, upstreams.*.health_check).
 *
 * For every target of every upstream whose health_check section is present, a
 * probe runs every `interval`: a TCP connection to the target (TLS when the
 * upstream has tls.enabled: its SNI, verification and client certificate, a
 * failed handshake being a failed probe), one request
 *   GET <path> HTTP/1.1\r\nHost: <address>\r\nUser-Agent: moongate-health\r\n
 *   Connection: close\r\n\r\n
 * and the response head, parsed with llhttp. A 2xx or 3xx head within `timeout`
 * (counted from the start of the connect) is a success; a connect error, a
 * timeout, a reset, an early close, a malformed head, a response head (interim
 * ones included) over 8 KiB or any other status is a failure. Interim 1xx heads
 * (103 Early Hints) are skipped; the body is never read.
 *
 * After `unhealthy_after` consecutive failures the target's registry flag
 * (struct mg_target_stats.unhealthy) becomes 1 and the balancers stop offering
 * it; after `healthy_after` consecutive successes while it is down, 0 again.
 * Each transition logs one line (warn "... is down: <reason>", info "... is up").
 * The flag lives in the process-wide registry, so a reload keeps a down target
 * down until a fresh checker has seen `healthy_after` successes.
 *
 * Threads: everything runs on the loop given to mg_health_start (worker 0's);
 * start, stop and the probe callback happen on that loop's thread. Workers only
 * read the atomic flag.
 */
#ifndef MG_HEALTH_H
#define MG_HEALTH_H

#include <stdbool.h>
#include <uv.h>

#include "config/config-t.h"

struct mg_health;

/* Called after each probe's result has been counted (and the flag possibly
 * flipped): `ok` is the outcome, `reason` says why ("status 200", "status 500",
 * "connect: connection refused", "timed out waiting for the response after
 * 1000ms", ...), valid only during the call. `up` and `target` point into the
 * checker's config snapshot. The callback may call mg_health_stop. For tests and
 * metrics. */
typedef void (*mg_health_probe_cb)(void *ud, const struct mg_upstream_conf *up,
                                   const struct mg_target_conf *target, bool ok,
                                   const char *reason);

/* Starts checking every target of every upstream of `cfg` with
 * health_check.enabled, on `loop`. Takes its own reference on `cfg` (the caller
 * keeps its own). The first probe of each target fires after a random delay in
 * [0, interval/10], so many targets do not connect at once.
 *
 * Also clears the flag of every target of an upstream without health_check: a
 * reload that removes the section must not leave a target down forever. (Start
 * the new checker after stopping the old one, or an old probe may set it again.)
 *
 * Returns the checker, owned by the caller and released with mg_health_stop, or
 * NULL when no upstream has health_check enabled (nothing to stop then). Needs
 * mg_registry_init first; aborts on OOM. Never blocks. */
struct mg_health *mg_health_start(uv_loop_t *loop, struct mg_config *cfg);

/* Sets (or clears, with cb NULL) the per-probe callback. */
void mg_health_on_probe(struct mg_health *h, mg_health_probe_cb cb, void *ud);

/* On the loop's thread: cancels every timer and in-flight probe (no flag changes
 * and no probe callback after it returns). The memory and the config reference
 * are released asynchronously, in the last close callback, so the caller must
 * keep running the loop until it drains (uv_run returns when nothing else is
 * active). h may be NULL. */
void mg_health_stop(struct mg_health *h);

#endif
