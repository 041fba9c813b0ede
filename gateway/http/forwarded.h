/*
 * Forwarding headers (DESIGN.md section 10.8): who the client really is, and
 * the X-Forwarded-For / RFC 7239 Forwarded values sent upstream. Pure
 * functions over a request's fields; the connection's address (`peer`) is the
 * PROXY header's source when there was one, else the TCP peer.
 */
#ifndef MG_HTTP_FORWARDED_H
#define MG_HTTP_FORWARDED_H

#include <stdbool.h>
#include <stddef.h>

#include "http/message.h"
#include "net/cidr-t.h"

/* Text room for an address written by these functions. */
#define MG_FORWARDED_IP_MAX 48

/* The real client address: `peer` unless it is in `trusted`; then the
 * X-Forwarded-For entries (every field line, as one list) from the right,
 * the first that is not trusted; an entry that is no address stops the walk
 * at the trusted hop after it, and a list of trusted hops only gives its
 * leftmost one (as nginx's real_ip_recursive). Writes it into out (at least
 * MG_FORWARDED_IP_MAX bytes), or "" when it is `peer` itself. Fields flagged
 * hop-by-hop are not read. */
void mg_forwarded_client(const struct mg_headers *h, const char *peer,
                         const struct mg_cidr *trusted, size_t ntrusted, char *out, size_t len);

/* A field line named X-Forwarded-For / Forwarded (case-insensitive). */
bool mg_forwarded_is_xff(struct mg_slice name);
bool mg_forwarded_is_forwarded(struct mg_slice name);

/* Writes the values of the lines of `h` named as `is` says (hop-by-hop ones
 * skipped) joined by ", " (empty ones skipped): at most the head's bytes.
 * Returns the end; *any tells whether anything was written. */
char *mg_forwarded_put_list(char *o, const struct mg_headers *h, bool (*is)(struct mg_slice),
                            bool *any);

/* An RFC 7239 node for `ip`: IPv6 quoted in brackets ("[2001:db8::1]"), IPv4
 * as is, "unknown" when empty. Writes at most MG_FORWARDED_NODE_MAX bytes. */
#define MG_FORWARDED_NODE_MAX 72
char *mg_forwarded_put_node(char *o, const char *ip);

#endif
