/*
 * The live dashboard's data: GET /status/live on the admin listener (the page
 * itself is obs/dashboard.h's).
 *
 * The admin thread calls mg_live_sample() once a second. A sample sums the
 * per-worker metric shards (the same relaxed loads a /metrics scrape does) and
 * keeps, per route, the last MG_LIVE_POINTS seconds of requests/s, error
 * responses/s, p50 and p99 latency (over the 10 s ending at that second) and
 * in-flight, plus per-minute counts (errors by name, target failures, bulkhead
 * rejections, retries). The request path does no work for it.
 *
 * Memory is fixed when a config generation is first sampled: about 6 KiB per
 * route (3.6 KiB of points, 1.3 KiB of latency window, 1 KiB of per-minute
 * marks), 0.4 KiB per target and 0.2 KiB per upstream, plus 8 reload records
 * of at most 512 bytes; 100 routes and 200 targets take about 0.7 MiB. A
 * reload keeps the history of the routes, upstreams and targets whose names
 * stay, as the metrics do.
 *
 * Threads: mg_live_sample and mg_live_render on the admin thread only;
 * mg_live_reload from any thread (its journal has a lock).
 */
#ifndef MG_LIVE_H
#define MG_LIVE_H

#include <stdbool.h>
#include <stdint.h>

#include "config/config-t.h"
#include "obs/metrics-t.h"

struct mg_live;
struct mg_textbuf;

#define MG_LIVE_POINTS      180 /* one per second: 3 minutes of sparkline */
#define MG_LIVE_INTERVAL_MS 1000

/* A new, empty history; owned by the caller. Aborts on out-of-memory. */
struct mg_live *mg_live_new(void);
/* Frees it and drops the references it holds. NULL is ignored. */
void mg_live_free(struct mg_live *l);

/* Takes one sample of generation `m` (of config `cfg`) at `now_ms` (Unix
 * milliseconds). A generation other than the previous sample's is adopted:
 * the history takes references on m and cfg and drops the old ones. m may be
 * NULL (metrics off): nothing is sampled. */
void mg_live_sample(struct mg_live *l, struct mg_config *cfg, struct mg_metrics *m,
                    const struct mg_obs_hooks *hooks, int64_t now_ms);

/* Appends a reload to the journal (the last 8 are kept): ok with the version
 * now in use, or failed with the loader's one-line error (copied, truncated to
 * 511 bytes). Any thread. */
void mg_live_reload(struct mg_live *l, bool ok, uint64_t version, const char *error,
                    int64_t now_ms);

/* Appends the /status/live JSON document to `out`: the points after sequence
 * number `since` (all kept points for 0, or when `since` is too old) and the
 * current state of upstreams, targets, plugins and the process. `cfg` is the
 * snapshot in use (for its version and limits); hooks may be NULL. Admin
 * thread. */
void mg_live_render(struct mg_live *l, const struct mg_config *cfg,
                    const struct mg_obs_hooks *hooks, uint64_t since, int64_t now_ms,
                    struct mg_textbuf *out);

#endif
