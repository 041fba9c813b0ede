/*
 * Asynchronous DNS on a libuv loop, with c-ares (Debian's libc-ares, 1.18).
 *
 * One c-ares channel per struct mg_dns; its sockets are watched with uv_poll
 * handles (ARES_OPT_SOCK_STATE_CB tells which) and its retransmissions and
 * timeouts are driven by one uv_timer armed from ares_timeout(). Nothing
 * blocks: a lookup's callback runs on the loop when the answer (or the
 * timeout) arrives. c-ares parses every answer; this file parses nothing.
 *
 * Callbacks are called exactly once per lookup, also when the resolver is
 * closed with lookups in flight (status ARES_EDESTRUCTION, from inside
 * mg_dns_close).
 */
#ifndef MG_DISCOVERY_DNS_H
#define MG_DISCOVERY_DNS_H

#include <ares.h>
#include <stddef.h>
#include <uv.h>

#include "config/config-t.h"

struct mg_dns;

/* The addresses of a name (A and/or AAAA as `family` says) with their TTLs;
 * `ai` is NULL unless status is ARES_SUCCESS, and the callee frees it with
 * ares_freeaddrinfo. */
typedef void mg_dns_addr_cb(void *arg, int status, struct ares_addrinfo *ai);
/* The SRV records of a name; `srv` (freed by the callee with ares_free_data)
 * is NULL unless status is ARES_SUCCESS. c-ares 1.18's SRV parser gives no
 * TTL: callers take the TTLs of the targets' addresses. */
typedef void mg_dns_srv_cb(void *arg, int status, struct ares_srv_reply *srv);

/* A resolver on `loop` configured by `rc` (servers or /etc/resolv.conf,
 * timeout). Returns NULL with a message in err. */
struct mg_dns *mg_dns_open(uv_loop_t *loop, const struct mg_resolver_conf *rc, char *err,
                           size_t errlen);
/* Cancels what is in flight (callbacks run now, ARES_EDESTRUCTION) and closes
 * the handles; the memory goes when the loop has run their close callbacks,
 * after which `on_closed(data)` runs (may be NULL). */
void mg_dns_close(struct mg_dns *dns, void (*on_closed)(void *data), void *data);

void mg_dns_lookup(struct mg_dns *dns, const char *name, enum mg_family family, mg_dns_addr_cb *cb,
                   void *arg);
void mg_dns_srv(struct mg_dns *dns, const char *name, mg_dns_srv_cb *cb, void *arg);

#endif
