/*
 * Types of the per-upstream bulkhead (DESIGN.md section 5): a process-wide limit
 * on requests in flight plus a bounded count of waiters, shared by all workers
 * through atomics. The waiting exchanges themselves sit in per-worker lists owned
 * by the proxy; bulkhead.h describes how the two cooperate.
 *
 * Ownership: whoever owns the upstream's process-wide state embeds the struct,
 * calls mg_bulkhead_init() once the worker count is known and
 * mg_bulkhead_destroy() after every worker has stopped.
 */
#ifndef MG_BULKHEAD_T_H
#define MG_BULKHEAD_T_H

#include <stdatomic.h>
#include <stdint.h>

/* One worker's published wait state. Padded to a cache line so workers marking
 * themselves do not invalidate each other's lines. */
struct mg_bulkhead_mark {
    _Atomic uint64_t oldest; /* 0: no local waiter; else 1 + its head's enqueue time */
    char pad[64 - sizeof(uint64_t)];
};

struct mg_bulkhead {
    _Atomic uint64_t word;  /* packed {granted:21 | queued:21 | in_use:21}: bulkhead.c */
    _Atomic uint32_t limit; /* bulkhead.adaptive's current limit; 0 = not yet set */
    unsigned nworkers;
    struct mg_bulkhead_mark *marks; /* nworkers entries, 64-byte aligned, owned */
};

/* What mg_bulkhead_enter() decided. */
enum mg_bulkhead_admit {
    MG_BULKHEAD_ACQUIRED, /* a slot is held: proceed, release it later */
    MG_BULKHEAD_QUEUED,   /* counted as a waiter: wait for claim, or leave */
    MG_BULKHEAD_FULL,     /* no slot and the queue is full: 503 bulkhead_full */
};

#endif
