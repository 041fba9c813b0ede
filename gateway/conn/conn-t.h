/*
 * A client connection: its transport, read buffer, write queue and timer, for
 * whichever downstream codec speaks on it (conn/h1server.c today). Types only;
 * conn.h has the functions.
 */
#ifndef MG_CONN_T_H
#define MG_CONN_T_H

#include <stdbool.h>
#include <stdint.h>

#include "core/deadline.h"
#include "net/tcp.h"
#include "net/wq.h"

struct mg_conn;
struct mg_loopctx;

/* What the connection tells its codec (set at accept). */
struct mg_conn_ops {
    void (*on_read)(struct mg_conn *c);                /* bytes in c->in, or c->eof set */
    void (*on_written)(struct mg_conn *c, int status); /* a queued write completed */
    void (*on_unpinned)(struct mg_conn *c);            /* no write points into c->in now */
    void (*on_timer)(struct mg_conn *c);               /* c->timer fired */
    /* The connection is closing: the codec lets go of its exchanges; each one
     * still open counts in c->handles_open until the codec calls
     * mg_conn_handle_closed for it. */
    void (*on_close)(struct mg_conn *c);
    void (*on_free)(struct mg_conn *c); /* everything is closed: free the memory */
    bool (*idle)(struct mg_conn *c);    /* between requests (a drain may close it) */
    /* Optional: drain_timeout ran out; answer what waits for an upstream (the
     * connection is closed shortly after anyway). */
    void (*on_drain_timeout)(struct mg_conn *c);
};

struct mg_config;
struct mg_metrics;
struct mg_listen_conf;

struct mg_conn {
    struct mg_tcp tcp;              /* the socket */
    struct mg_transport *tr;        /* what is spoken over it: &tcp.t, or a TLS stream */
    struct mg_config *tls_config;   /* held while a TLS stream may use its contexts */
    struct mg_metrics *tls_metrics; /* held until the handshake is counted (a reload may
                                       come first: the listener index is this one's) */
    int tls_listener;               /* index in tls_metrics' listeners, or -1 */
    uint64_t tls_start_ns;          /* accept, for the handshake's duration */
    struct mg_rbuf in;              /* what the client sent */
    struct mg_wq out;               /* what goes to the client */
    struct mg_deadline timer;       /* the codec's: keep-alive, header and body timeouts */
    struct mg_loopctx *ctx;         /* the loop's (its owner hears of the close) */
    struct mg_conn *next, *prev;    /* the loop's connections */
    const struct mg_conn_ops *ops;
    /* Codec selection (h2 on listeners with http2): the accepting codec's ops
     * while another codec took the connection over (mg_conn_take_over), which
     * then still hear on_close and on_free, after the new codec's; and the
     * taking codec's state. NULL: no other codec. */
    const struct mg_conn_ops *first_ops;
    void *codec;
    unsigned handles_open; /* transport + timer + the codec's open exchanges */
    bool reading, closing, eof;
    bool counted; /* in the connections gauge */
    bool active;  /* ... as active (an exchange under way), else idle */
    char client_ip[64];
    /* The listener's settings (in tls_config, held when set): NULL unless the
     * listener has TLS or a PROXY header. */
    const struct mg_listen_conf *lc;
    /* The PROXY header is awaited (listen proxy_protocol): the bytes are
     * net/proxyproto.c's, the codec hears of none until it is read; then
     * client_ip is the header's source. */
    bool proxy_wait;
    bool secure; /* a TLS listener's (its stream may start after the PROXY header) */
};

#endif
