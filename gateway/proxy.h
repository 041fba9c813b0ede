/*
 * The proxy: client connections and the exchange state machine that carries one
 * request to an upstream target and its response back.
 */
#ifndef MG_PROXY_H
#define MG_PROXY_H

#include <sys/types.h>
#include <uv.h>

struct mg_worker;
struct mg_upconn;
struct mg_conn;

struct mg_accesslog;
/* Where exchanges log (process-wide; set before the workers start). */
void mg_proxy_set_accesslog(struct mg_accesslog *l);

/* Takes an accepted client connection (already initialised on w->loop). */
void mg_proxy_accept(struct mg_worker *w, uv_stream_t *server);
/* Drain: close idle keep-alive connections now, busy ones after their exchange. */
void mg_proxy_drain(struct mg_worker *w);
/* Stop now: close every client connection. */
void mg_proxy_close_all(struct mg_worker *w);

/* Hands bulkhead slots granted to this worker to its queued exchanges (called
 * from the worker's wakeup callback, at a loop boundary). */
void mg_proxy_drain_waiters(struct mg_worker *w);

/* Frees the worker's cached write requests (at worker exit). */
void mg_proxy_free_worker_cache(struct mg_worker *w);

/* Events from upstream.c for a leased connection (u->owner != NULL). */
void mg_proxy_on_upstream_connect(struct mg_upconn *u, int status);
void mg_proxy_on_upstream_read(struct mg_upconn *u, ssize_t nread);
void mg_proxy_on_upstream_timeout(struct mg_upconn *u);
/* The upstream connection is closed (after close callbacks); owner is told. */
void mg_proxy_on_upstream_unpinned(struct mg_upconn *u);

#endif
