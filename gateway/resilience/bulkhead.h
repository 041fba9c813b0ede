/*
 * Bulkhead per upstream: at most max_concurrent requests in flight in the whole
 * process, up to max_queue more waiting (each up to queue_timeout, timed by the
 * proxy), 503 bulkhead_full beyond. Lock-free; safe from any worker thread.
 *
 * Slots are handed over, not freed, while anyone waits: mg_bulkhead_release()
 * with waiters keeps the slot counted in in_use and adds a "grant" that any
 * waiter can claim. A newcomer therefore never takes a slot ahead of a waiter,
 * and a slot freed on worker A while the waiter sits on worker B is not lost:
 * the grant waits for B. Deciding "acquire or queue" is one CAS
 * (mg_bulkhead_enter), so a slot freed between a failed acquire and the enqueue
 * cannot strand a waiter (the race a separate try_acquire + enqueue would have).
 *
 * Invariants (one atomic word, so they hold at every instant):
 *   in_use <= max_concurrent, queued <= max_queue, granted <= queued,
 *   and queued > granted only while in_use >= max_concurrent.
 *
 * Protocol for the proxy. W is the current worker, X an exchange, `list` W's
 * FIFO of waiting exchanges for this upstream (per worker, no atomics):
 *
 *   admit X:    if list is empty: mg_bulkhead_mark_waiting(b, W, now)  (before
 *               enter, so a releaser that sees the queued count also sees the mark)
 *               switch (mg_bulkhead_enter(b, c)):
 *               ACQUIRED: unmark if list is still empty; proceed.
 *               FULL:     unmark if list is still empty; 503 bulkhead_full.
 *               QUEUED:   append X to list; arm its queue_timeout timer.
 *   X done:     if (mg_bulkhead_release(b, c)) kick();   (after the try, and once
 *               per slot held: an exchange that retries keeps its one slot)
 *   X timeout:  if (mg_bulkhead_claim(b)) proceed (a slot was waiting for it);
 *               else mg_bulkhead_leave(b), 503 bulkhead_full. Then remark.
 *   X gone:     (client closed while queued) mg_bulkhead_leave(b), then remark.
 *   remark:     list empty ? mg_bulkhead_unmark(b, W)
 *                          : mg_bulkhead_mark_waiting(b, W, head's enqueue time).
 *   kick():     v = mg_bulkhead_pick_waiter(b) (the worker with the oldest
 *               waiter, which makes the hand-over FIFO across workers);
 *               v == W: schedule drain() on W at a loop boundary (uv_check, as
 *                       STYLE 12 says; never inside advance());
 *               v >= 0: uv_async_send(&workers[v].wakeup); its callback calls
 *                       drain() for each upstream whose list is not empty.
 *   drain():    while list is not empty and mg_bulkhead_claim(b): pop the head,
 *               stop its timer, proceed with it; remark;
 *               if list is empty and mg_bulkhead_granted(b) > 0: kick() (the
 *               grant was meant for a waiter that left; pass it on).
 *
 * Each grant is followed by a kick; a kicked worker either claims or passes the
 * kick on, and marks are never stale-negative while a waiter is queued, so no
 * grant is left behind. A stale-positive mark only costs a spurious wakeup.
 * Marks and grants are advisory for fairness only; the limits hold regardless.
 */
#ifndef MG_BULKHEAD_H
#define MG_BULKHEAD_H

#include <stdbool.h>
#include <stdint.h>

#include "config/config-t.h"
#include "resilience/bulkhead-t.h"

/* Each counter saturates the field it is packed in: larger limits are clamped. */
#define MG_BULKHEAD_LIMIT_MAX ((1u << 21) - 1)

/* Empty bulkhead with one mark per worker (ids 0..nworkers-1). Aborts on OOM. */
void mg_bulkhead_init(struct mg_bulkhead *b, unsigned nworkers);
/* Frees the marks. Only once no worker can touch the bulkhead. */
void mg_bulkhead_destroy(struct mg_bulkhead *b);

/* Takes a slot if one is free, else counts a waiter if the queue has room, else
 * refuses: one atomic decision (see enum mg_bulkhead_admit). */
enum mg_bulkhead_admit mg_bulkhead_enter(struct mg_bulkhead *b, const struct mg_bulkhead_conf *c);

/* Takes a slot if one is free; never queues (for callers without a wait list). */
bool mg_bulkhead_try_acquire(struct mg_bulkhead *b, const struct mg_bulkhead_conf *c);

/* Gives back a held slot. Returns true when the slot was handed to the waiters
 * as a grant instead of being freed: the caller must then kick() (see above). */
bool mg_bulkhead_release(struct mg_bulkhead *b, const struct mg_bulkhead_conf *c);

/* A waiter takes a granted slot: true means it now holds a slot (release it
 * later) and is no longer counted as waiting; false means no grant is pending. */
bool mg_bulkhead_claim(struct mg_bulkhead *b);

/* A waiter gives up (queue timeout, client gone) without a slot. If every
 * remaining waiter already has a grant, one of those grants was meant for it:
 * the slot is freed. Must be called only by a waiter counted by enter(). */
void mg_bulkhead_leave(struct mg_bulkhead *b);

/* Publishes that worker `worker` has waiters, the oldest enqueued at
 * oldest_since_ms; unmark when it has none. */
void mg_bulkhead_mark_waiting(struct mg_bulkhead *b, unsigned worker, uint64_t oldest_since_ms);
void mg_bulkhead_unmark(struct mg_bulkhead *b, unsigned worker);

/* The marked worker with the oldest waiter (ties: lowest id), or -1. */
int mg_bulkhead_pick_waiter(const struct mg_bulkhead *b);

/* Slots held, including granted ones not yet claimed (metric bulkhead_in_use). */
uint32_t mg_bulkhead_in_use(const struct mg_bulkhead *b);
/* Waiters, including granted ones not yet claimed (metric bulkhead_queued). */
uint32_t mg_bulkhead_queued(const struct mg_bulkhead *b);
/* Slots handed over and not yet claimed. */
uint32_t mg_bulkhead_granted(const struct mg_bulkhead *b);

#endif
