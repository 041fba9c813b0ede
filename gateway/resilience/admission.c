/*
 * Bulkhead admission (see admission.h). The counters decide (bulkhead.c); this
 * file keeps each worker's FIFO of waiters in step with them and publishes the
 * age of each worker's oldest waiter, so a grant goes to the oldest waiter in
 * the process.
 */
#include "resilience/admission.h"

#include <stddef.h>

#include "core/log.h"
#include "resilience/bulkhead.h"
#include "resilience/registry.h"

static void (*waker)(unsigned worker);

void mg_admission_set_waker(void (*wake)(unsigned worker))
{
    waker = wake;
}

/* Publishes the age of this worker's oldest waiter (or that it has none). */
static void remark(struct mg_upstream_stats *us, unsigned worker)
{
    struct mg_waitlist *l = &us->waiting[worker];
    if (l->head)
        mg_bulkhead_mark_waiting(&us->bulkhead, worker, l->head->since);
    else
        mg_bulkhead_unmark(&us->bulkhead, worker);
}

/* A slot went to the waiters as a grant: wake the worker with the oldest one
 * (this one too: it drains at its next loop boundary, not inside a callback). */
static void kick(struct mg_upstream_stats *us)
{
    int v = mg_bulkhead_pick_waiter(&us->bulkhead);
    if (v >= 0 && waker)
        waker((unsigned)v);
}

static void unlink_waiter(struct mg_waitlist *l, struct mg_waiter *wt)
{
    struct mg_waiter **pp = &l->head, *prev = NULL;
    while (*pp && *pp != wt) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (!*pp)
        return;
    *pp = wt->next;
    if (l->tail == wt)
        l->tail = prev;
    wt->next = NULL;
}

#define SATURATION_LOG_MS 10000 /* a bulkhead flapping at its limit: one line per 10 s */

/* Logs a bulkhead's change between saturated (rejecting) and not, once per
 * change: only the thread whose exchange flips `saturated` writes; a "full"
 * line at most every SATURATION_LOG_MS per upstream, and an "again" line for
 * each "full" line written. */
static void saturation(struct mg_upstream_stats *us, const struct mg_bulkhead_conf *bc, bool full,
                       uint64_t now_ms)
{
    bool was = !full;
    uint64_t last = atomic_load_explicit(&us->saturation_logged_ms, memory_order_relaxed);
    uint64_t rejected = atomic_load_explicit(&us->rejected, memory_order_relaxed);

    if (atomic_load_explicit(&us->saturated, memory_order_relaxed) == full ||
        !atomic_compare_exchange_strong(&us->saturated, &was, full))
        return;
    if (full) {
        bool quiet = last != 0 && now_ms - last < SATURATION_LOG_MS;
        /* `rejected` already counts the rejection that starts it. */
        atomic_store_explicit(&us->saturated_since_rejected, rejected - 1, memory_order_relaxed);
        atomic_store_explicit(&us->full_logged, !quiet, memory_order_relaxed);
        if (quiet)
            return;
        atomic_store_explicit(&us->saturation_logged_ms, now_ms ? now_ms : 1, memory_order_relaxed);
    } else if (!atomic_load_explicit(&us->full_logged, memory_order_relaxed)) {
        return;
    }
    if (full)
        mg_warn("bulkhead full: upstream %s is rejecting requests (max_concurrent %u, "
                "max_queue %u)",
                us->name, bc->max_concurrent, bc->max_queue);
    else
        mg_info("bulkhead: upstream %s admits requests again (%llu rejected meanwhile)", us->name,
                (unsigned long long)(rejected - atomic_load_explicit(&us->saturated_since_rejected,
                                                                     memory_order_relaxed)));
}

/* Queues wt behind every waiter of its priority or a higher one (lower
 * number): FIFO within a priority, critical requests granted first. */
static void insert_waiter(struct mg_waitlist *l, struct mg_waiter *wt)
{
    wt->next = NULL;
    if (!l->tail || l->tail->priority <= wt->priority) {
        if (l->tail)
            l->tail->next = wt;
        else
            l->head = wt;
        l->tail = wt;
        return;
    }
    struct mg_waiter **pp = &l->head;
    while ((*pp)->priority <= wt->priority)
        pp = &(*pp)->next;
    wt->next = *pp;
    *pp = wt;
}

/* The queue is full: the last-queued waiter of this worker with a lower
 * priority than wt (sheddable first, then default) gives wt its place. The
 * list is ordered by priority, so it is the last waiter of the lowest one. */
static struct mg_waiter *displace(struct mg_waitlist *l, const struct mg_waiter *wt)
{
    struct mg_waiter *victim = l->tail;
    if (!victim || victim->priority <= wt->priority)
        return NULL;
    unlink_waiter(l, victim);
    victim->shed = true;
    return victim;
}

enum mg_admit mg_admission_enter(struct mg_upstream_stats *us, const struct mg_bulkhead_conf *bc,
                                 unsigned worker, uint64_t now_ms, struct mg_waiter *wt)
{
    struct mg_waitlist *l = &us->waiting[worker];
    wt->shed = false;
    if (!l->head) /* published before enter(), so a release racing with us finds us */
        mg_bulkhead_mark_waiting(&us->bulkhead, worker, now_ms);
    switch (mg_bulkhead_enter(&us->bulkhead, bc)) {
    case MG_BULKHEAD_ACQUIRED:
        remark(us, worker);
        saturation(us, bc, false, now_ms);
        return MG_ADMIT_ACQUIRED;
    case MG_BULKHEAD_QUEUED:
        wt->since = now_ms;
        insert_waiter(l, wt);
        remark(us, worker);
        return MG_ADMIT_QUEUED;
    default: {
        /* The victim's place in the process-wide queue count passes to wt. */
        struct mg_waiter *victim = displace(l, wt);
        if (victim) {
            wt->since = now_ms;
            insert_waiter(l, wt);
            remark(us, worker);
            atomic_fetch_add_explicit(&us->rejected, 1, memory_order_relaxed);
            victim->on_shed(victim);
            return MG_ADMIT_QUEUED;
        }
        remark(us, worker);
        atomic_fetch_add_explicit(&us->rejected, 1, memory_order_relaxed);
        saturation(us, bc, true, now_ms);
        return MG_ADMIT_REJECTED;
    }
    }
}

bool mg_admission_timeout(struct mg_upstream_stats *us, unsigned worker, struct mg_waiter *wt)
{
    if (wt->shed)
        return false; /* already out of the queue and counted */
    unlink_waiter(&us->waiting[worker], wt);
    bool granted = mg_bulkhead_claim(&us->bulkhead);
    if (!granted) {
        mg_bulkhead_leave(&us->bulkhead);
        atomic_fetch_add_explicit(&us->rejected, 1, memory_order_relaxed);
    }
    remark(us, worker);
    return granted;
}

void mg_admission_leave(struct mg_upstream_stats *us, unsigned worker, struct mg_waiter *wt)
{
    if (wt->shed)
        return;
    unlink_waiter(&us->waiting[worker], wt);
    mg_bulkhead_leave(&us->bulkhead);
    remark(us, worker);
}

void mg_admission_release(struct mg_upstream_stats *us, const struct mg_bulkhead_conf *bc,
                          unsigned worker)
{
    (void)worker;
    if (mg_bulkhead_release(&us->bulkhead, bc))
        kick(us);
}

void mg_admission_drain(unsigned worker)
{
    for (struct mg_upstream_stats *us = mg_registry_upstreams(); us; us = us->next) {
        struct mg_waitlist *l = &us->waiting[worker];
        while (l->head && mg_bulkhead_claim(&us->bulkhead)) {
            struct mg_waiter *wt = l->head;
            l->head = wt->next;
            if (!l->head)
                l->tail = NULL;
            wt->next = NULL;
            wt->on_grant(wt);
        }
        remark(us, worker);
        if (!l->head && mg_bulkhead_granted(&us->bulkhead) > 0)
            kick(us); /* meant for a waiter that left: pass it on */
    }
}
