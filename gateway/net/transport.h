/*
 * A byte stream under a connection, client or upstream: the one interface the
 * layers above use to read, write and close, so that a second implementation
 * (TLS) slots in under the same connection code. The plain TCP one is tcp.c.
 *
 * Reads are delivered into the owner's buffer: the transport asks for room
 * (on_alloc) and reports what arrived (on_read: n > 0 bytes, or a negative
 * UV_E*, UV_EOF included). Writes are uv_write_t requests so that a write queue
 * (net/wq.h) can batch and keep them; a write's callback runs exactly once
 * unless write() fails synchronously. close() cancels pending writes (their
 * callbacks see UV_ECANCELED) and calls on_closed once, later: the owner frees
 * its memory there, never in the frame that asked for the close.
 */
#ifndef MG_NET_TRANSPORT_H
#define MG_NET_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

struct mg_transport;

struct mg_transport_ops {
    int (*read_start)(struct mg_transport *t);
    void (*read_stop)(struct mg_transport *t);
    /* Writes what the socket takes now: bytes written (0 when it would block),
     * or a negative UV_E*. No request, no callback. */
    int (*try_write)(struct mg_transport *t, const uv_buf_t *bufs, unsigned n);
    int (*write)(struct mg_transport *t, uv_write_t *req, const uv_buf_t *bufs, unsigned n,
                 uv_write_cb cb);
    /* Bytes accepted by write() and not yet handed to the kernel. */
    size_t (*queued)(const struct mg_transport *t);
    void (*close)(struct mg_transport *t);
    /* The peer's address as text ("" when unknown). */
    void (*peer_ip)(struct mg_transport *t, char *out, size_t len);
};

struct mg_transport {
    const struct mg_transport_ops *ops;
    void *owner;
    void (*on_alloc)(struct mg_transport *t, uv_buf_t *buf);
    void (*on_read)(struct mg_transport *t, ssize_t nread);
    void (*on_closed)(struct mg_transport *t);
};

static inline int mg_transport_read_start(struct mg_transport *t)
{
    return t->ops->read_start(t);
}

static inline void mg_transport_read_stop(struct mg_transport *t)
{
    t->ops->read_stop(t);
}

static inline void mg_transport_close(struct mg_transport *t)
{
    t->ops->close(t);
}

#endif
