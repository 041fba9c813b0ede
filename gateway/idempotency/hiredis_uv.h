/*
 * hiredis 0.14's libuv adapter, mended (see hiredis_uv.c): every async hiredis
 * context of the idempotency store (the Redis connection, the Sentinel queries
 * and the Sentinel subscription) is attached to its worker loop through here.
 */
#ifndef MG_IDEM_HIREDIS_UV_H
#define MG_IDEM_HIREDIS_UV_H

#include <hiredis/async.h>
#include <uv.h>

/* redisLibuvAttach(ac, loop), then re-points the adapter's read/write hooks at
 * a poll callback that reports socket errors to hiredis. Returns 0, or -1 when
 * the context cannot be watched (the caller frees it; nothing was called). The
 * adapter owns its poll handle and frees it when hiredis frees the context. */
int mg_hiredis_attach(redisAsyncContext *ac, uv_loop_t *loop);

/* Whether `host` is a numeric IPv4 or IPv6 address: hiredis resolves any other
 * name with a blocking getaddrinfo(), which a worker loop must never run. */
int mg_hiredis_numeric_host(const char *host);

#endif
