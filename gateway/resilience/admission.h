/*
 * Bulkhead admission (DESIGN.md section 5) for the workers: one upstream's slots
 * are shared by the whole process (resilience/bulkhead.c, lock-free counters);
 * each worker keeps its own FIFO of typed waiters per upstream, and a released
 * slot that becomes a grant wakes the worker holding the oldest waiter, which
 * hands it over at its next loop boundary (mg_admission_drain). Only the worker
 * that owns a wait list touches it. Priorities (routes[].priority): a worker's
 * list is ordered critical, default, sheddable (FIFO within each), and a
 * request that finds the queue full takes the place of the last waiter of a
 * lower priority on its worker, which is shed (its on_shed is called).
 */
#ifndef MG_ADMISSION_H
#define MG_ADMISSION_H

#include <stdbool.h>
#include <stdint.h>

#include "config/config-t.h"
#include "resilience/registry-t.h"

enum mg_admit {
    MG_ADMIT_ACQUIRED, /* a slot is held: release it with mg_admission_release */
    MG_ADMIT_QUEUED,   /* wt is queued: the caller arms its queue timeout (possibly
                          in the place of a lower-priority waiter, now shed) */
    MG_ADMIT_REJECTED, /* no slot and the queue is full (counted in us->rejected) */
};

/* How admission wakes a worker (set once at start, before any worker runs):
 * the worker then calls mg_admission_drain at its loop boundary. */
void mg_admission_set_waker(void (*wake)(unsigned worker));

/* Asks for a slot of upstream `us` for a request on worker `worker`. */
enum mg_admit mg_admission_enter(struct mg_upstream_stats *us, const struct mg_bulkhead_conf *bc,
                                 unsigned worker, uint64_t now_ms, struct mg_waiter *wt);
/* The queued waiter's timeout fired: true when a grant was already on its way
 * (the slot is now held), false when it left without a slot (counted as
 * rejected). Either way wt is out of the queue. */
bool mg_admission_timeout(struct mg_upstream_stats *us, unsigned worker, struct mg_waiter *wt);
/* The queued waiter gives up (client gone, deadline): out of the queue, no slot. */
void mg_admission_leave(struct mg_upstream_stats *us, unsigned worker, struct mg_waiter *wt);
/* Gives back a held slot; a waiter anywhere in the process may get it. */
void mg_admission_release(struct mg_upstream_stats *us, const struct mg_bulkhead_conf *bc,
                          unsigned worker);
/* Hands the slots granted to `worker` to its waiters, oldest first, calling
 * each one's on_grant (which may run the exchange). */
void mg_admission_drain(unsigned worker);

#endif
