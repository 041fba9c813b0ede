/*
 * The downstream HTTP/2 codec (RFC 9113, on libnghttp2): many streams on one
 * client connection, each one an exchange served through the same struct
 * mg_downstream_ops as an HTTP/1 request, so routing, plugins, resilience,
 * idempotency, metrics and the access log apply unchanged. Upstreams stay
 * HTTP/1.1.
 *
 * It takes over a connection the HTTP/1 codec accepted on a listener with
 * `http2: true`, once the first bytes say h2 (ALPN on TLS, the connection
 * preface in plain text); otherwise it gives the connection back untouched.
 */
#ifndef MG_CONN_H2SERVER_H
#define MG_CONN_H2SERVER_H

#include "conn/conn-t.h"
#include "exchange/exchange-t.h"

/* Watches the first read of c (just accepted by the HTTP/1 codec) and serves
 * HTTP/2 on it when the client speaks it, its exchanges driven through `hooks`. */
void mg_h2s_offer(struct mg_conn *c, const struct mg_exchange_hooks *hooks);

#endif
