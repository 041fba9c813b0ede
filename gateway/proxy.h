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

/* Frees the worker's cached write requests (at worker exit). */
void mg_proxy_free_worker_cache(struct mg_worker *w);

#endif
