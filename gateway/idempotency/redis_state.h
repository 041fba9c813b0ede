/*
 * The process-wide view of the shared Redis that /status and /metrics show:
 * which master the workers' stores are connected to, whether they all are, and
 * the failovers seen (DESIGN section 7; moongate_redis_up,
 * moongate_redis_failovers_total).
 *
 * Each worker's Redis store (store_redis.c) reports its own connection events
 * here; a failover is counted once per process, when the first store becomes
 * ready on a master address that differs from the previous one, however many
 * workers then follow it.
 *
 * Threads: every function may be called from any thread (one mutex, taken only
 * on connection events and scrapes, never per request).
 */
#ifndef MG_IDEM_REDIS_STATE_H
#define MG_IDEM_REDIS_STATE_H

#include <stdbool.h>
#include <stdint.h>

#define MG_REDIS_STATE_ADDR_MAX 64  /* "host:port", IPv6 included */
#define MG_REDIS_STATE_NAME_MAX 128 /* a sentinel master name, truncated beyond */

struct mg_redis_state {
    unsigned stores;                           /* Redis stores open (one per worker and runtime) */
    unsigned ready;                            /* of those, connected to a confirmed master */
    bool sentinel;                             /* the last store opened discovers its master */
    char master_name[MG_REDIS_STATE_NAME_MAX]; /* sentinel mode: redis.sentinel.master */
    char master[MG_REDIS_STATE_ADDR_MAX];      /* the master last connected to, "" before any */
    uint64_t failovers;                        /* master address changes since the start */
    int64_t last_failover_unix_ms;             /* 0: none yet */
    char last_failover_from[MG_REDIS_STATE_ADDR_MAX];
    char last_failover_to[MG_REDIS_STATE_ADDR_MAX];
    uint64_t last_failover_unavailable_ms; /* from the first store's loss of the old master
                                              to its handshake on the new one */
};

/* A store opened (sentinel mode names its master) / closed (was_ready: it
 * was counted in `ready`). */
void mg_redis_state_opened(bool sentinel, const char *master_name);
void mg_redis_state_closed(bool was_ready);

/* A store's handshake succeeded on `addr` ("host:port") after `outage_ms` of
 * being without a connection (0 at the first connect). */
void mg_redis_state_up(const char *addr, uint64_t outage_ms);
/* A ready store lost its connection. */
void mg_redis_state_down(void);

void mg_redis_state_read(struct mg_redis_state *out);

#endif
