/*
 * Bulkhead admission (see admission.h). The counters decide (bulkhead.c); this
 * file keeps each worker's FIFO of waiters in step with them and publishes the
 * age of each worker's oldest waiter, so a grant goes to the oldest waiter in
 * the process.
 */
#include "resilience/admission.h"

#include <stddef.h>

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
