/*
 * The admin listener (DESIGN.md section 7) on `admin.listen`:
 *   GET /metrics   Prometheus text format 0.0.4
 *   GET /status    JSON: config version and load time, routes, upstreams and
 *                  their targets with breaker state, in-flight, ewma, health
 *   GET /healthz   200 "ok\n" (liveness)
 *   GET /ready     200 "ready\n" while serving; 503 before the workers serve and
 *                  from the moment a drain (or shutdown_delay) begins (readiness)
 *   GET / and /dashboard   the live dashboard page (obs/dashboard.h)
 *   GET /status/live[?since=N]   its JSON: history points after N (obs/live.h)
 * HEAD is answered like GET without a body; other methods on these paths get
 * 405 (with Allow), unknown paths 404, both as JSON {"error":...,"status":...}.
 * A query string is ignored. Keep-alive and pipelining are supported (one
 * response at a time per connection); heads over 8 KiB get 431, bodies over
 * 8 KiB 413, parse errors 400, all with the connection closed; at most 64
 * connections, each closed after 30 s without activity.
 *
 * It runs on its own thread with its own uv loop, so a scrape (which sums
 * every worker's shards and may take a few milliseconds on a big config)
 * never delays a request; workers are never blocked by it.
 *
 * Threads: mg_admin_start, mg_admin_publish and mg_admin_stop from the main
 * thread (publish may be called from any thread). The hooks run on the admin
 * thread (see struct mg_obs_hooks).
 */
#ifndef MG_ADMIN_H
#define MG_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "config/config-t.h"
#include "obs/metrics-t.h"

struct mg_accesslog;
struct mg_admin;
struct mg_textbuf;

/* What the admin thread serves from. */
struct mg_admin_source {
    struct mg_config *cfg;          /* current snapshot; the admin takes its own reference */
    struct mg_metrics *metrics;     /* its generation, or NULL; the admin takes a reference */
    struct mg_obs_hooks hooks;      /* copied; all NULL = defaults (closed, 0, unknown) */
    struct mg_accesslog *accesslog; /* or NULL; adds moongate_access_log_* series; must
                                       outlive the admin */
};

/* Binds `addr` (port 0 picks a free port, see mg_admin_local_address), starts
 * the admin thread and returns the handle, owned by the caller. On failure
 * returns NULL with one line in `err` ("admin.listen 127.0.0.1:9901: address
 * already in use") and leaves no thread, handle or reference behind. */
struct mg_admin *mg_admin_start(const struct mg_address *addr, const struct mg_admin_source *src,
                                char *err, size_t errlen);

/* After a reload: serve from this snapshot and generation from now on. Takes
 * its own references and drops the previous ones (after any render that uses
 * them). metrics may be NULL. */
void mg_admin_publish(struct mg_admin *a, struct mg_config *cfg, struct mg_metrics *metrics);

/* The bound address (to learn the port chosen for port 0). Returns 0 or a
 * negative UV_E* code. */
int mg_admin_local_address(struct mg_admin *a, struct sockaddr_storage *out);

/* Readiness for GET /ready (false until first set). Any thread; NULL ignored. */
void mg_admin_set_ready(struct mg_admin *a, bool ready);

/* Records a failed reload and its one-line error for the dashboard (a
 * successful one is recorded by mg_admin_publish). Any thread; NULL ignored. */
void mg_admin_reload_failed(struct mg_admin *a, const char *error);

/* Closes the listener and every admin connection, joins the thread, and frees
 * everything (dropping the references). NULL is ignored. */
void mg_admin_stop(struct mg_admin *a);

/* The /status document for cfg (exposed for tests and `moongate -t` style
 * tools). Appends to `out`. */
void mg_admin_render_status(const struct mg_config *cfg, const struct mg_obs_hooks *hooks,
                            struct mg_textbuf *out);

#endif
