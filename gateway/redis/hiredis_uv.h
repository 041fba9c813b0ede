/*
 * hiredis's event hooks on a libuv loop (see hiredis_uv.c for why not
 * hiredis's own adapter): every async hiredis context (the idempotency store's
 * connection, the Sentinel queries and subscription, the plugins' gw.redis)
 * is attached to its worker loop through here.
 */
#ifndef MG_REDIS_HIREDIS_UV_H
#define MG_REDIS_HIREDIS_UV_H

#include <hiredis/async.h>
#include <uv.h>

/* What one reply may hold: the elements of all its arrays together, and the
 * bytes buffered while it is incomplete. Past either, the connection ends
 * with an error (hiredis 0.14 itself would allocate what a reply announces). */
#define MG_REDIS_MAX_REPLY_ELEMENTS (1 << 20)
#define MG_REDIS_MAX_REPLY_BYTES    (64 << 20)

/* Watches the context's socket on `loop`. Returns 0, or -1 when the context
 * cannot be watched (already attached, out of memory, or an fd libuv refuses;
 * the caller frees the context, nothing was called). The watcher is freed
 * after hiredis frees the context. */
int mg_hiredis_attach(redisAsyncContext *ac, uv_loop_t *loop);

/* Whether `host` is a numeric IPv4 or IPv6 address: hiredis resolves any other
 * name with a blocking getaddrinfo(), which a worker loop must never run. */
int mg_hiredis_numeric_host(const char *host);

#endif
