/*
 * Target sets: what one DNS name gave (addresses with their ports and
 * weights), and the pure operations discovery needs on them: TTL clamping,
 * canonical order, comparison and the difference between two sets. No I/O and
 * no loop, so tests/unit/test_discovery.c covers them directly.
 *
 * A set owns its entries array (malloc); entries are plain values.
 */
#ifndef MG_DISCOVERY_TARGETSET_H
#define MG_DISCOVERY_TARGETSET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define MG_TSET_TEXT 64 /* "[ffff:...:ffff]:65535" fits */

struct mg_tset_entry {
    struct sockaddr_storage addr; /* with the port */
    socklen_t addrlen;
    uint32_t weight;
    char text[MG_TSET_TEXT]; /* "1.2.3.4:80" or "[::1]:80": the target's name everywhere */
    char host[256];          /* the DNS name of the address (TLS SNI), or "" */
};

struct mg_tset {
    struct mg_tset_entry *v;
    size_t n, cap;
};

/* The re-resolution delay for a record TTL (seconds) within [min_ms, max_ms]. */
uint64_t mg_tset_clamp_ttl_ms(uint32_t ttl_s, uint64_t min_ms, uint64_t max_ms);
/* The delay before retry number `failures` (1 = the first) after failed
 * resolutions: min_ms doubling, never above max_ms nor 30 s. */
uint64_t mg_tset_retry_ms(unsigned failures, uint64_t min_ms, uint64_t max_ms);

/* Adds `sa` (port replaced by `port`) with `weight`, found as `host` (may be
 * NULL); an address already in the set keeps its first weight. Aborts on OOM.
 * Returns false for a family other than IPv4/IPv6 (ignored). */
bool mg_tset_add(struct mg_tset *s, const struct sockaddr *sa, uint16_t port, uint32_t weight,
                 const char *host);
/* Sorts by text: the order targets get whatever order DNS answered in. */
void mg_tset_sort(struct mg_tset *s);
/* Same entries (address and weight) in the same order: both sorted. */
bool mg_tset_equal(const struct mg_tset *a, const struct mg_tset *b);
/* How many entries of `to` are not in `from` (added) and the reverse
 * (removed), by address. */
void mg_tset_diff(const struct mg_tset *from, const struct mg_tset *to, size_t *added,
                  size_t *removed);
bool mg_tset_has(const struct mg_tset *s, const char *text);
/* Moves `from` into `to` (whose old entries are freed); `from` is left empty. */
void mg_tset_move(struct mg_tset *to, struct mg_tset *from);
void mg_tset_clear(struct mg_tset *s);

#endif
