/*
 * The downstream HTTP/1.x codec: one client connection, one exchange at a time,
 * pipelined requests answered in order. It is the only code that knows HTTP/1
 * framing towards clients: it reads and checks request heads, decodes request
 * bodies (http/body.c), and writes responses (http/writer.c), choosing their
 * framing. It drives its exchange through the hooks it is given and serves it
 * through a struct mg_downstream_ops; HTTP/2 will be a second codec beside it,
 * with many exchanges per connection.
 */
#ifndef MG_CONN_H1SERVER_H
#define MG_CONN_H1SERVER_H

#include <uv.h>

#include "exchange/exchange-t.h"

struct mg_loopctx;

struct mg_listen_conf;

/* Takes `fd`, a connection accepted on a listener configured as `lc` (TLS or
 * plain), on ctx's loop and serves HTTP/1.x on it, its exchanges driven through
 * `hooks`. Returns the connection (another codec may take it over before its
 * first read: conn.h), or NULL when it was refused. */
struct mg_conn *mg_h1s_accept(struct mg_loopctx *ctx, int fd, const struct mg_listen_conf *lc,
                              const struct mg_exchange_hooks *hooks);

#endif
