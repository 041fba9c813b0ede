/*
 * Service discovery (DESIGN.md section 10.5): upstream targets that follow
 * DNS. One struct mg_discovery per config file snapshot ("base") follows every
 * DNS name the file names: each target written as a host name (all its A/AAAA
 * records, with the declared port and weight) and each upstream's SRV name
 * (ports and weights from the SRV records, then the A/AAAA of each SRV
 * target). It runs on the main thread's loop, never on a worker's: one
 * resolver for the process asks DNS once per name (not once per worker), and
 * what it finds reaches the workers as a derived config snapshot, through the
 * same publication a reload uses (mg_discovery_snapshot).
 *
 * Each name is asked again when its TTL runs out (clamped to resolver.min_ttl
 * .. max_ttl); a failed lookup keeps the last good set and is retried with a
 * doubling delay (min_ttl .. 30 s). Counts per upstream go to the registry
 * (moongate_discovery_resolutions_total, moongate_upstream_targets).
 */
#ifndef MG_DISCOVERY_RESOLVER_H
#define MG_DISCOVERY_RESOLVER_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "config/config-t.h"

struct mg_discovery;

/* Called on the loop when some name's set of addresses changed. */
typedef void mg_discovery_cb(struct mg_discovery *d, void *data);

/* True when some upstream of cfg has targets to follow in DNS. */
bool mg_discovery_needed(const struct mg_config *cfg);

/* Takes `base` (one reference moved in) and resolves every name once,
 * blocking the calling thread on a private loop for at most about
 * resolver.timeout (lookups run in parallel). Sets that `prev` (the resolver
 * of the previous snapshot, or NULL) already had for the same upstream and
 * name are kept where a lookup fails now. A name that does not resolve is a
 * warning (logged; its upstream answers 503 no_targets until it does), or,
 * under discovery.required, an error: NULL and one line in err.
 * When no upstream follows DNS, returns `base` itself and sets *out NULL.
 * Otherwise returns the derived snapshot (one reference for the caller) and
 * *out the resolver, not started yet (mg_discovery_start or _free). */
struct mg_config *mg_discovery_load(struct mg_config *base, struct mg_discovery *prev,
                                    struct mg_discovery **out, char *err, size_t errlen);

/* Follows the names on `loop` from now on; on_change runs on that loop after
 * a change (several answers at once make one call). */
void mg_discovery_start(struct mg_discovery *d, uv_loop_t *loop, mg_discovery_cb *on_change,
                        void *data);

/* Calls on_change again after delay_ms (the last change could not be applied,
 * e.g. a plugin file could not be read). */
void mg_discovery_retry_publish(struct mg_discovery *d, uint64_t delay_ms);

/* A new snapshot: the base with the current sets as targets (one reference
 * for the caller; it holds one on the base). */
struct mg_config *mg_discovery_snapshot(struct mg_discovery *d);

/* Stops (lookups in flight are cancelled) and frees once the loop has closed
 * its handles; d may be NULL. */
void mg_discovery_free(struct mg_discovery *d);

#endif
