/*
 * The plain TCP transport (see transport.h) on the socket itself: a libuv poll
 * handle for readiness, recv/send/sendmsg for the bytes.
 */
#ifndef MG_NET_TCP_H
#define MG_NET_TCP_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "net/transport.h"

struct mg_tcp_write;

struct mg_tcp {
    struct mg_transport t; /* first: a transport pointer is a struct mg_tcp pointer */
    uv_loop_t *loop;
    union {
        uv_poll_t poll; /* once there is a socket */
        uv_idle_t idle; /* closed in its place when there never was one */
    } h;
    int fd;     /* -1 before accept/connect and once closing */
    int events; /* what the poll handle watches now (UV_READABLE | UV_WRITABLE) */
    bool reading, read_interest, connecting, closing;
    int connect_status; /* an error connect() gave at once, reported later */
    uv_connect_t *connect_req;
    struct mg_tcp_write *wq_head, *wq_tail; /* writes the socket has not taken */
    size_t wq_bytes;
};

/* Initialises s on `loop` for `owner`; no socket yet. Returns 0. */
int mg_tcp_init(uv_loop_t *loop, struct mg_tcp *s, void *owner);
/* Adopts `fd`, a connection the listener accepted (non-blocking), into s
 * (initialised) with TCP_NODELAY. On failure the fd is closed. */
int mg_tcp_accept(int fd, struct mg_tcp *s);
/* Starts connecting s to `addr`; `cb` runs once, never from inside this call
 * (UV_ECANCELED when closed first). TCP_NODELAY is set once connected. */
int mg_tcp_connect(struct mg_tcp *s, uv_connect_t *req, const struct sockaddr *addr,
                   uv_connect_cb cb);
/* The socket, or -1. */
static inline int mg_tcp_fd(const struct mg_tcp *s)
{
    return s->fd;
}

#endif
