/*
 * The plain TCP transport (see transport.h) over a libuv TCP handle.
 */
#ifndef MG_NET_TCP_H
#define MG_NET_TCP_H

#include <uv.h>

#include "net/transport.h"

struct mg_tcp {
    struct mg_transport t; /* first: a transport pointer is a struct mg_tcp pointer */
    uv_tcp_t h;
};

/* Initialises the handle on `loop` for `owner`. Returns 0 or a UV_E*. */
int mg_tcp_init(uv_loop_t *loop, struct mg_tcp *s, void *owner);
/* Adopts `fd`, a connection the listener accepted, into s (initialised) with
 * TCP_NODELAY. On failure the fd is closed. */
int mg_tcp_accept(int fd, struct mg_tcp *s);
/* Starts connecting s to `addr`; `cb` runs once (UV_ECANCELED when closed first). */
int mg_tcp_connect(struct mg_tcp *s, uv_connect_t *req, const struct sockaddr *addr,
                   uv_connect_cb cb);

#endif
