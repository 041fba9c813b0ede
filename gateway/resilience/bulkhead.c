/*
 * Bulkhead: the admission counters of bulkhead.h in one atomic word.
 *
 * word = {granted:21 | queued:21 | in_use:21}. Keeping the three in one word is
 * what makes "acquire or enqueue", "hand the slot over or free it" and "leave,
 * absorbing a grant if it was ours" single CAS steps, so the invariants listed in
 * bulkhead.h hold at every instant without a lock, whatever the interleaving.
 *
 * The marks are per-worker hints for waking the right worker; they never affect
 * the counters.
 *
 * Ownership: the struct is the caller's; the marks array is allocated by
 * mg_bulkhead_init() and freed by mg_bulkhead_destroy().
 */
#include "resilience/bulkhead.h"

#include <stdlib.h>

#include "core/log.h"

#define FIELD_BITS   21
#define FIELD_MASK   ((uint64_t)MG_BULKHEAD_LIMIT_MAX)
#define QUEUED_SHIFT FIELD_BITS
#define GRANT_SHIFT  (2 * FIELD_BITS)

#define ONE_IN_USE  ((uint64_t)1)
#define ONE_QUEUED  ((uint64_t)1 << QUEUED_SHIFT)
#define ONE_GRANTED ((uint64_t)1 << GRANT_SHIFT)

static uint32_t in_use_of(uint64_t w)
{
    return (uint32_t)(w & FIELD_MASK);
}

static uint32_t queued_of(uint64_t w)
{
    return (uint32_t)((w >> QUEUED_SHIFT) & FIELD_MASK);
}

static uint32_t granted_of(uint64_t w)
{
    return (uint32_t)((w >> GRANT_SHIFT) & FIELD_MASK);
}

static uint32_t clamp(uint32_t limit)
{
    return limit < MG_BULKHEAD_LIMIT_MAX ? limit : MG_BULKHEAD_LIMIT_MAX;
}

void mg_bulkhead_init(struct mg_bulkhead *b, unsigned nworkers)
{
    size_t n = nworkers ? nworkers : 1;

    atomic_init(&b->word, 0);
    b->nworkers = (unsigned)n;
    b->marks = aligned_alloc(64, n * sizeof *b->marks);
    if (!b->marks)
        mg_fatal("out of memory (bulkhead)");
    for (size_t i = 0; i < n; i++)
        atomic_init(&b->marks[i].oldest, 0);
}

void mg_bulkhead_destroy(struct mg_bulkhead *b)
{
    free(b->marks);
    b->marks = NULL;
    b->nworkers = 0;
}

/* Seq_cst on the word (the default): a releaser's handoff must be ordered after
 * a waiter's mark, which the waiter published before its enter. */
static bool swap_word(struct mg_bulkhead *b, uint64_t *seen, uint64_t next)
{
    return atomic_compare_exchange_weak(&b->word, seen, next);
}

/* max_concurrent, or the adaptive limiter's current limit (once it has one). */
static uint32_t limit_of(struct mg_bulkhead *b, const struct mg_bulkhead_conf *c)
{
    uint32_t l = c->adaptive.enabled ? atomic_load_explicit(&b->limit, memory_order_relaxed) : 0;
    return clamp(l ? l : c->max_concurrent);
}

enum mg_bulkhead_admit mg_bulkhead_enter(struct mg_bulkhead *b, const struct mg_bulkhead_conf *c)
{
    uint64_t w = atomic_load(&b->word);
    enum mg_bulkhead_admit r;
    uint64_t next;

    do {
        if (in_use_of(w) < limit_of(b, c)) {
            r = MG_BULKHEAD_ACQUIRED;
            next = w + ONE_IN_USE;
        } else if (queued_of(w) < clamp(c->max_queue)) {
            r = MG_BULKHEAD_QUEUED;
            next = w + ONE_QUEUED;
        } else {
            return MG_BULKHEAD_FULL;
        }
    } while (!swap_word(b, &w, next));
    return r;
}

bool mg_bulkhead_try_acquire(struct mg_bulkhead *b, const struct mg_bulkhead_conf *c)
{
    uint64_t w = atomic_load(&b->word);

    do {
        if (in_use_of(w) >= limit_of(b, c))
            return false;
    } while (!swap_word(b, &w, w + ONE_IN_USE));
    return true;
}

bool mg_bulkhead_release(struct mg_bulkhead *b, const struct mg_bulkhead_conf *c)
{
    uint64_t w = atomic_load(&b->word);
    bool handed;
    uint64_t next;

    do {
        MG_ASSERT(in_use_of(w) > 0); /* a release without a slot would free another's */
        /* Hand over only within the limit: after a reload lowered it, slots
         * are freed until in_use is back under it. */
        handed = queued_of(w) > granted_of(w) && in_use_of(w) <= limit_of(b, c);
        next = handed ? w + ONE_GRANTED : w - ONE_IN_USE;
    } while (!swap_word(b, &w, next));
    return handed;
}

bool mg_bulkhead_claim(struct mg_bulkhead *b)
{
    uint64_t w = atomic_load(&b->word);

    do {
        if (granted_of(w) == 0)
            return false;
    } while (!swap_word(b, &w, w - ONE_GRANTED - ONE_QUEUED));
    return true;
}

void mg_bulkhead_leave(struct mg_bulkhead *b)
{
    uint64_t w = atomic_load(&b->word);
    uint64_t next;

    do {
        MG_ASSERT(queued_of(w) > 0);
        if (queued_of(w) > granted_of(w))
            next = w - ONE_QUEUED;
        else /* every waiter left has a grant: take ours and free its slot */
            next = w - ONE_QUEUED - ONE_GRANTED - ONE_IN_USE;
    } while (!swap_word(b, &w, next));
}

void mg_bulkhead_mark_waiting(struct mg_bulkhead *b, unsigned worker, uint64_t oldest_since_ms)
{
    MG_ASSERT(worker < b->nworkers);
    /* +1 keeps 0 for "no waiter" even for a waiter enqueued at time 0. */
    atomic_store(&b->marks[worker].oldest,
                 oldest_since_ms < UINT64_MAX ? oldest_since_ms + 1 : UINT64_MAX);
}

void mg_bulkhead_unmark(struct mg_bulkhead *b, unsigned worker)
{
    MG_ASSERT(worker < b->nworkers);
    atomic_store(&b->marks[worker].oldest, 0);
}

int mg_bulkhead_pick_waiter(const struct mg_bulkhead *b)
{
    int best = -1;
    uint64_t best_since = UINT64_MAX;

    for (unsigned i = 0; i < b->nworkers; i++) {
        uint64_t since = atomic_load(&b->marks[i].oldest);
        if (since != 0 && (best < 0 || since < best_since)) {
            best = (int)i;
            best_since = since;
        }
    }
    return best;
}

uint32_t mg_bulkhead_in_use(const struct mg_bulkhead *b)
{
    return in_use_of(atomic_load(&b->word));
}

uint32_t mg_bulkhead_queued(const struct mg_bulkhead *b)
{
    return queued_of(atomic_load(&b->word));
}

uint32_t mg_bulkhead_granted(const struct mg_bulkhead *b)
{
    return granted_of(atomic_load(&b->word));
}
