/*
 * The shared idempotency store (routes[].idempotency.store: redis): one async
 * hiredis connection per worker loop (redisAsyncConnect + redisLibuvAttach),
 * shared by every gateway instance that points at the same Redis.
 *
 * Data: one string value per key, the record blob of record.h, with PX ttl.
 *   begin:    EVALSHA: SET key <in-flight blob> NX PX lock_ttl; if that did not
 *             set it, GET + PTTL in the same script (one round trip, atomic)
 *   complete: EVALSHA: if the value is our in-flight lock (state byte 'I' and
 *             owner token equal), SET key <record> PX ttl
 *   release:  EVALSHA: if the value is our in-flight lock, DEL key
 * EVALSHA with the SHA-1 computed locally, so nothing waits for SCRIPT LOAD;
 * the scripts are also loaded on every connect, and a NOSCRIPT answer (a
 * restarted or flushed Redis) re-sends that one command as EVAL.
 *
 * Connection: AUTH (redis.password) and SELECT (redis.db) are pipelined right
 * after connect, before any operation, so ordering alone guarantees they apply.
 * When the connection fails or drops, every operation waiting on it ends with
 * MG_IDEM_ERROR, operations started while it is down end with MG_IDEM_ERROR on
 * the next loop iteration (no waiting), and a reconnect is attempted after an
 * exponential backoff (50 ms doubling to 2 s, randomised to 50-100% of the step
 * so workers do not reconnect in lockstep); the step resets once a handshake
 * succeeds. A handshake command that fails or times out (wrong password, bad
 * db) drops the connection and backs off the same way.
 *
 * Timeouts: every operation ends within redis.timeout: when it passes, the
 * callback gets MG_IDEM_ERROR exactly once and the reply, if it ever comes, is
 * counted as late and ignored (a late STARTED is released at once, so a timed-out
 * begin does not hold the key for lock_ttl). All operations of a store share one
 * timeout, so their deadlines are in send order: one uv timer on the earliest
 * deadline serves them all (instead of a timer per command to init and close).
 * A connection that stays silent with commands outstanding for 4 x timeout (at
 * least 2 s) is assumed dead (a stopped server, a half-open TCP connection) and
 * replaced.
 *
 * hiredis writes with write(2): the process must ignore SIGPIPE (main.c does),
 * or a write to a connection Redis has closed would kill it.
 *
 * Sentinel (redis.sentinel, sentinel.h): the master's address comes from the
 * sentinels, asked again at the start and before every reconnect, and each
 * connection must answer ROLE "master" (pipelined after AUTH/SELECT) before it
 * is ready. A +switch-master message moves the store to the new master at
 * once: the old connection is dropped (its operations end with ERROR) and the
 * new one is made without the backoff. A -READONLY reply (the master was
 * demoted under us) ends that operation with ERROR and drops the connection,
 * so the next one asks the sentinels. -LOADING and other error replies end
 * their operation with ERROR. No operation is ever re-sent to another server:
 * one that reached the old master may have run there.
 *
 * min_replicas_ack (> 0): a complete() that stored its record sends WAIT
 * <n> <rest of its deadline less a fifth> and ends when WAIT answers, so the
 * response reaches the client once n replicas hold the record (or the time is
 * up: still OK, counted in wait_short). Redis replication stays asynchronous:
 * this narrows the window in which a failover can lose a record, it does not
 * close it (a failover may promote a replica that did not acknowledge).
 *
 * Process-wide state for /status and /metrics goes to redis_state.h.
 *
 * Nothing here blocks the loop: the address is numeric (resolved when the
 * config was loaded, or checked numeric when a sentinel names it), so
 * hiredis's connect does not wait on DNS.
 */
#ifndef MG_IDEM_STORE_REDIS_H
#define MG_IDEM_STORE_REDIS_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "config/config-t.h"
#include "idempotency/store.h"

#define MG_IDEM_REDIS_BACKOFF_MIN_MS 50
#define MG_IDEM_REDIS_BACKOFF_MAX_MS 2000
#define MG_IDEM_REDIS_STALL_MIN_MS   2000

struct mg_idem_redis_stats {
    bool ready;            /* connected and the handshake answered */
    uint64_t commands;     /* commands sent */
    uint64_t timeouts;     /* operations ended by their deadline */
    uint64_t late_replies; /* replies that came after their operation had ended */
    uint64_t connects;     /* connection attempts */
    uint64_t disconnects;  /* connections lost or dropped */
    uint64_t errors;       /* MG_IDEM_ERROR results delivered to callers */
    uint64_t failovers;    /* handshakes on a master address other than the previous one */
    uint64_t role_refused; /* sentinel mode: connections dropped because ROLE was not master */
    uint64_t readonly;     /* sentinel mode: connections dropped on a READONLY reply */
    uint64_t wait_short;   /* completions not confirmed by min_replicas_ack replicas */
    uint64_t ready_at;     /* loop time of the last successful handshake, 0 before any */
    char master[INET6_ADDRSTRLEN + 8]; /* "host:port" of that handshake */
};

/* A per-loop store that connects at once (asynchronously) to conf->address
 * (AF_INET or AF_INET6), or to the master conf->sentinel names when
 * conf->sentinel.enabled, with AUTH/SELECT from conf, and the per-operation
 * timeout conf->timeout_ms (at least 1 ms). conf is copied. Aborts on OOM;
 * connection problems are never an error here (see the reconnect rules above).
 * Use only from loop's thread; close with mg_idem_client_close(). */
struct mg_idem_client *mg_idem_redis_open(uv_loop_t *loop, const struct mg_redis_conf *conf);

/* Whether the connection is up and its handshake answered. */
bool mg_idem_redis_ready(const struct mg_idem_client *s);

void mg_idem_redis_stats(const struct mg_idem_client *s, struct mg_idem_redis_stats *out);

#endif
