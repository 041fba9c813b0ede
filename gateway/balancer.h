/*
 * The C balancer: smooth weighted round robin (nginx's), over the targets that
 * are available (breaker not open, health checks passing). The Lua balancer
 * plugins (routes[].balancer) replace this choice for routes that name one.
 */
#ifndef MG_BALANCER_H
#define MG_BALANCER_H

#include <stdbool.h>
#include <stdint.h>

#include "worker.h"

/* Is target t offered to balancers now? Reads process-wide atomics only. */
bool mg_balancer_available(const struct mg_target_rt *t, const struct mg_breaker_conf *bc,
                           uint64_t now_ms);

/* Picks a target of u: among available ones not in `tried` (bit i = target i)
 * when there are any, else among all available ones (a retry may go back to a
 * target rather than fail). Returns its index, or -1 when none is available.
 * Updates u's round-robin state (worker-local, no locks). */
int mg_balancer_pick(struct mg_upstream_rt *u, uint64_t tried, uint64_t now_ms);

#endif
