/*
 * Address blocks (see cidr-t.h): parsing and membership, pure functions.
 */
#ifndef MG_NET_CIDR_H
#define MG_NET_CIDR_H

#include <stdbool.h>
#include <stddef.h>

#include "net/cidr-t.h"

/* Parses an address as text, `s[0..n)`: dotted IPv4 or IPv6 (inet_pton's
 * forms, no brackets, no zone). false when it is neither. */
bool mg_ip_parse(const char *s, size_t n, struct mg_ip *out);
/* Writes `ip` as text (IPv4-mapped ones as dotted IPv4) into out (at least
 * 46 bytes). */
void mg_ip_text(const struct mg_ip *ip, char *out, size_t len);
/* Parses "ADDR/LEN" or a bare ADDR (a single host). false with a reason in
 * `why` (static text) when it is no block or has host bits set. */
bool mg_cidr_parse(const char *s, struct mg_cidr *out, const char **why);
/* Whether ip lies in one of the n blocks of `set`. */
bool mg_cidr_match(const struct mg_cidr *set, size_t n, const struct mg_ip *ip);

#endif
