/*
 * Client connections (see conn-t.h): accept with the process-wide connection
 * limit, reading with backpressure, writes, the codec's timer, close and free,
 * drain. A connection knows nothing of HTTP; its codec does.
 *
 * Memory: the codec allocates the struct (embedded in its own per-connection
 * state) and frees it in ops->on_free, which runs once the transport and the
 * timer are closed, every exchange the codec counted is closed, no upstream
 * write points into c->in and no write of c's own is in flight.
 */
#ifndef MG_CONN_H
#define MG_CONN_H

#include <stdbool.h>
#include <uv.h>

#include "conn/conn-t.h"

struct mg_listen_conf;

/* Takes `fd`, a connection accepted on a listener configured as `lc` (TLS or
 * plain), into c (zeroed memory the codec owns). Returns 0, or -1 when it was
 * refused (over client.max_connections, draining, fd unusable): c is then
 * closing and ops->on_free follows. The fd is owned from here on. c joins
 * ctx's connection list; once c is freed, ctx->ops->conn_closed hears of it. */
int mg_conn_accept(struct mg_conn *c, struct mg_loopctx *ctx, int fd,
                   const struct mg_listen_conf *lc, const struct mg_conn_ops *ops);
/* Whether the client speaks TLS on this connection. */
bool mg_conn_secure(const struct mg_conn *c);
/* Reads while `want` and the read buffer has room; pauses otherwise. */
void mg_conn_update_reading(struct mg_conn *c, bool want);
/* The read buffer has room for more (not full of pinned bytes). */
bool mg_conn_has_room(const struct mg_conn *c);
/* Sends what c->out assembled. true when it all went out at once. A failed
 * write closes the connection. */
bool mg_conn_flush(struct mg_conn *c);
/* The connection counts as active (an exchange under way) or idle. */
void mg_conn_set_active(struct mg_conn *c, bool active);
/* Gives the read buffer back while idle, so idle keep-alive connections stay
 * cheap (10k of them cost about 2 kB each). */
void mg_conn_shed(struct mg_conn *c);
void mg_conn_close(struct mg_conn *c);
/* A handle the codec counted in c->handles_open is closed. */
void mg_conn_handle_closed(struct mg_conn *c);

/* Codec selection on a listener that offers HTTP/2. */
enum mg_conn_proto {
    MG_CONN_PROTO_UNKNOWN, /* the first bytes do not tell yet */
    MG_CONN_PROTO_H1,
    MG_CONN_PROTO_H2,
};
/* What the client speaks: ALPN's choice on TLS (known at the first read),
 * else whether the read buffer starts with the HTTP/2 connection preface
 * (prior knowledge, RFC 9113 section 3.3). */
enum mg_conn_proto mg_conn_sniff(const struct mg_conn *c);
/* Another codec takes c over (`codec`: its state, found as c->codec): c->ops
 * become `ops`; the accepting codec's ops then only hear on_close and on_free
 * (after ops'), so the memory that holds c is freed by its owner, last. */
void mg_conn_take_over(struct mg_conn *c, const struct mg_conn_ops *ops, void *codec);
/* Gives c back to the accepting codec (the other one declined it). */
void mg_conn_give_back(struct mg_conn *c);

/* Drain. A keep-alive connection is closed only where the client cannot be
 * sending: after a response that said `Connection: close`, or once it has been
 * idle (nothing received since its last response) for MG_CONN_DRAIN_IDLE_MS.
 * A response whose head went out before the drain (without Connection: close)
 * is followed by that idle wait, not by a close: the client has every right to
 * send its next request at once (wrk sends it within a millisecond), and a close
 * then meets it (issue 20). Measured from the last response, or from the drain
 * for connections idle already; a client that sends within it is answered with
 * Connection: close. */
#define MG_CONN_DRAIN_IDLE_MS 250
void mg_conn_drain(struct mg_loopctx *ctx);
/* The keep-alive wait after a response: keepalive_ms, or the drain's idle wait
 * while draining (whichever is shorter). */
uint64_t mg_conn_keepalive_ms(const struct mg_conn *c, uint64_t keepalive_ms);
/* Bytes from the client wait in the socket, not yet read. libuv runs timers
 * before it polls: an idle timeout may fire with the next request already
 * there, and closing then would reset it instead of answering it. */
bool mg_conn_unread(const struct mg_conn *c);
/* drain_timeout ran out: each codec answers what still waits (see
 * mg_conn_ops.on_drain_timeout); mg_conn_close_all follows shortly. */
void mg_conn_drain_expired(struct mg_loopctx *ctx);
/* Stop now: close every client connection. */
void mg_conn_close_all(struct mg_loopctx *ctx);

#endif
