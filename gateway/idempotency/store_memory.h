/*
 * The embedded idempotency store (routes[].idempotency.store: memory).
 *
 * One struct mg_idem_memtable per process holds every key for all workers;
 * each worker opens a per-loop struct mg_idem_client on it (store.h rules apply:
 * the result is decided under the table lock at call time and delivered on the
 * loop's next iteration).
 *
 * Expiry: an entry lives until its ttl (lock_ttl for in-flight locks, ttl for
 * completed records). Expired entries are removed lazily when a call touches
 * them, when room is needed, and by mg_idem_memtable_sweep(), which the proxy
 * calls from a timer (say every second, from one worker) to return memory.
 *
 * Budget: the table's bytes (entries, keys, records, a per-entry allowance for
 * the hash and heap slots; see mg_idem_memtable_cost) never exceed `budget`.
 * When a lock or record needs room: first expired entries go (earliest expiry
 * first), then completed records, oldest completion first. In-flight locks are
 * never evicted (that would let a second request through while the first one
 * runs): when only locks are left, begin() answers MG_IDEM_ERROR (and the route's
 * on_store_error applies) and the refusal is counted. A completed response that
 * cannot fit even then is kept as a TOO_BIG marker, which takes no more room than
 * the lock it replaces, so complete() never fails for lack of room and the key
 * stays deduplicated.
 *
 * Records handed out by begin() are references: eviction never frees a record
 * that a replay is still sending.
 *
 * Threads: the table is safe from any thread (one mutex: each critical section
 * is a hash lookup and a few pointer updates, far below the cost of the request
 * around it; stripes would split the global byte budget and the eviction order).
 */
#ifndef MG_IDEM_STORE_MEMORY_H
#define MG_IDEM_STORE_MEMORY_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "idempotency/store.h"

/* Suggested budget; DESIGN.md has no config key for it yet. */
#define MG_IDEM_MEMORY_BUDGET_DEFAULT ((size_t)64 << 20)

struct mg_idem_memtable;

struct mg_idem_memstats {
    size_t bytes; /* accounted bytes in use, <= budget */
    size_t budget;
    size_t entries;   /* keys held, locks included */
    size_t in_flight; /* of which in-flight locks */
    uint64_t expired; /* entries removed because their ttl passed */
    uint64_t evicted; /* completed records removed early for room */
    uint64_t refused; /* begin() answered ERROR for lack of room */
    uint64_t shrunk;  /* completed responses kept as TOO_BIG for lack of room */
};

/* An empty table. Aborts on OOM. */
struct mg_idem_memtable *mg_idem_memtable_new(size_t budget);
/* Frees the table and every entry. Only after every store opened on it is
 * closed (and its loop has run the close); records still referenced by callers
 * stay valid until they drop their references. */
void mg_idem_memtable_free(struct mg_idem_memtable *t);

/* Removes up to max expired entries (bounded, so one call never holds the lock
 * for long). Returns how many were removed. Any thread. */
size_t mg_idem_memtable_sweep(struct mg_idem_memtable *t, size_t max);

/* A reload changed the budget. Shrinking evicts completed records at once;
 * in-flight locks are never evicted, so bytes may stay over a smaller budget
 * until they end (new locks are refused meanwhile). Any thread. */
void mg_idem_memtable_set_budget(struct mg_idem_memtable *t, size_t budget);
void mg_idem_memtable_stats(struct mg_idem_memtable *t, struct mg_idem_memstats *out);

/* What an entry with a key of key_len bytes and a record blob of blob_len bytes
 * counts against the budget (a lock counts as a MG_IDEM_RECORD_HEAD blob). */
size_t mg_idem_memtable_cost(size_t key_len, size_t blob_len);

/* Replaces the clock (monotonic milliseconds; default CLOCK_MONOTONIC) for
 * tests. Set it before the table is shared. */
void mg_idem_memtable_set_clock(struct mg_idem_memtable *t, uint64_t (*now_ms)(void *ud), void *ud);

/* A per-loop store on t, used only from loop's thread. Aborts on OOM. Close it
 * with mg_idem_client_close() before the loop ends. */
struct mg_idem_client *mg_idem_memory_open(struct mg_idem_memtable *t, uv_loop_t *loop);

#endif
