/*
 * Redis Sentinel discovery (redis.sentinel), for the idempotency store and the
 * plugins' gw.redis:
 * which address is the master now, and a push when it changes.
 *
 *   query:     asks the sentinels in turn, starting with the last one that
 *              answered, `SENTINEL get-master-addr-by-name <master>` (after
 *              AUTH when redis.sentinel.password is set) on a short-lived
 *              connection, each bounded by redis.timeout. The first address
 *              answered wins: on_master. When none answers: on_unknown. The
 *              caller checks the address with ROLE before trusting it (a
 *              sentinel can lag behind a failover).
 *   subscribe: one long-lived connection to one sentinel, SUBSCRIBE
 *              +switch-master, so a failover is followed as soon as a
 *              sentinel announces it (on_switch) instead of at the next error.
 *              When that connection fails, the next sentinel is tried after a
 *              backoff (50 ms doubling to 2 s, randomised). A subscription is a
 *              hint only: the store queries again after any connection error.
 *
 * Everything is hiredis async on the caller's loop: no call here blocks (a
 * sentinel that announces a hostname rather than an IP address is treated as
 * not answering, since connecting to a name would resolve it synchronously).
 *
 * Callback rules: an ops callback never runs inside the call that caused it
 * (mg_sentinel_open, mg_sentinel_query) nor after mg_sentinel_close; the
 * callee may call mg_sentinel_query or mg_sentinel_close from inside one.
 * Threads: use a sentinel only from its loop's thread.
 */
#ifndef MG_REDIS_SENTINEL_H
#define MG_REDIS_SENTINEL_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "config/config-t.h"

struct mg_sentinel;

struct mg_sentinel_ops {
    /* A query's answer: a numeric host and a port, valid during the call. */
    void (*on_master)(void *ud, const char *host, int port);
    /* A query's end when no sentinel gave an address (down, timed out, refused
     * AUTH, or did not know the master name). */
    void (*on_unknown)(void *ud);
    /* +switch-master for our master name: its new address. */
    void (*on_switch)(void *ud, const char *host, int port);
};

struct mg_sentinel_stats {
    uint64_t queries;  /* queries started */
    uint64_t answers;  /* queries that ended with on_master */
    uint64_t asked;    /* sentinels asked (one query may ask several) */
    uint64_t switches; /* +switch-master messages for our master */
    bool subscribed;   /* a subscription is confirmed now */
};

/* Copies conf (sentinel addresses must be AF_INET or AF_INET6) and starts the
 * subscription at once, from a randomly chosen sentinel so that workers spread
 * over them. timeout_ms (>= 1) bounds each sentinel's answer. ops and ud must
 * stay valid until mg_sentinel_close. Aborts on OOM. */
struct mg_sentinel *mg_sentinel_open(uv_loop_t *loop, const struct mg_sentinel_conf *conf,
                                     uint64_t timeout_ms, const struct mg_sentinel_ops *ops,
                                     void *ud);

/* Starts a query that ends in exactly one on_master or on_unknown, later. While
 * one runs, another call joins it (one answer serves both). */
void mg_sentinel_query(struct mg_sentinel *s);

/* Whether a query is running. */
bool mg_sentinel_querying(const struct mg_sentinel *s);

void mg_sentinel_stats(const struct mg_sentinel *s, struct mg_sentinel_stats *out);

/* Stops everything: no ops callback runs after this returns. The memory goes
 * once the loop has run the handle closes. NULL is a no-op. */
void mg_sentinel_close(struct mg_sentinel *s);

#endif
