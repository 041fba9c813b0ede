/*
 * Sliding-window counters in one atomic word per bucket.
 *
 * A bucket word is {stamp:20 | a:22 | b:22}, where stamp is the bucket number
 * (now_ms / width) modulo 2^20. The bucket for a time sits at slot number % 10.
 * A bucket is live when its stamp is within 10 of the current one, either way:
 * a worker whose uv_now lags another's must not wipe the newer bucket the other
 * one already rotated, so a bucket up to two windows "ahead" of the caller's
 * clock is added to as it is, and counted when within one.
 *
 * Invariant: a word is only ever replaced by CAS from the value it was read as,
 * so every add is counted exactly once unless it saturates or races a clear.
 *
 * Ownership: the window is embedded in its user's struct; nothing here allocates.
 */
#include "resilience/window.h"

#define STAMP_BITS  20
#define STAMP_MASK  ((1u << STAMP_BITS) - 1)
#define STAMP_SHIFT 44
#define A_SHIFT     22

static uint64_t pack(uint32_t stamp, uint64_t a, uint64_t b)
{
    return (uint64_t)stamp << STAMP_SHIFT | a << A_SHIFT | b;
}

static uint32_t stamp_of(uint64_t word)
{
    return (uint32_t)(word >> STAMP_SHIFT);
}

static uint64_t a_of(uint64_t word)
{
    return (word >> A_SHIFT) & MG_WINDOW_COUNT_MAX;
}

static uint64_t b_of(uint64_t word)
{
    return word & MG_WINDOW_COUNT_MAX;
}

static uint64_t number_of(uint64_t width_ms, uint64_t now_ms)
{
    return now_ms / (width_ms ? width_ms : 1);
}

/* How far `stamp` is from the current stamp, either direction, modulo 2^20. */
static uint32_t distance(uint32_t stamp, uint32_t cur)
{
    uint32_t behind = (cur - stamp) & STAMP_MASK;
    uint32_t ahead = (stamp - cur) & STAMP_MASK;
    return behind < ahead ? behind : ahead;
}

static bool is_live(uint64_t word, uint32_t cur)
{
    return distance(stamp_of(word), cur) < MG_WINDOW_BUCKETS;
}

static uint64_t sat_add(uint64_t x, uint32_t d)
{
    return x + d > MG_WINDOW_COUNT_MAX ? MG_WINDOW_COUNT_MAX : x + d;
}

/* Whether `stamp` is newer than `cur`: written by a worker whose clock runs up
 * to two windows ahead of this caller's. Anything further is taken for stale,
 * so a bucket left alone for days cannot pass for a newer one. */
static bool is_ahead(uint32_t stamp, uint32_t cur)
{
    uint32_t ahead = (stamp - cur) & STAMP_MASK;
    return ahead != 0 && ahead < 2 * MG_WINDOW_BUCKETS;
}

/* The word that `old`, the word in the slot of `cur`, becomes after adding
 * (da, db). A slot holds numbers 10 apart, so a stamp other than `cur` is either
 * a stale bucket (restart from zero) or, when this caller's clock lags by a whole
 * window, a newer one that must not be wiped (add to it as it is). An empty
 * word has nothing to keep, whatever its stamp. */
static uint64_t bumped(uint64_t old, uint32_t cur, uint32_t da, uint32_t db)
{
    uint32_t stamp = stamp_of(old);
    bool empty = a_of(old) == 0 && b_of(old) == 0;

    if (stamp != cur && (empty || !is_ahead(stamp, cur)))
        return pack(cur, sat_add(0, da), sat_add(0, db));
    return pack(stamp, sat_add(a_of(old), da), sat_add(b_of(old), db));
}

void mg_window_init(struct mg_window *w)
{
    for (int i = 0; i < MG_WINDOW_BUCKETS; i++)
        atomic_init(&w->buckets[i], 0);
}

void mg_window_clear(struct mg_window *w)
{
    for (int i = 0; i < MG_WINDOW_BUCKETS; i++)
        atomic_store_explicit(&w->buckets[i], 0, memory_order_relaxed);
}

static _Atomic uint64_t *slot_of(struct mg_window *w, uint64_t number)
{
    return &w->buckets[number % MG_WINDOW_BUCKETS];
}

void mg_window_add(struct mg_window *w, uint64_t width_ms, uint64_t now_ms, uint32_t da,
                   uint32_t db)
{
    uint64_t number = number_of(width_ms, now_ms);
    uint32_t cur = (uint32_t)(number & STAMP_MASK);
    _Atomic uint64_t *slot = slot_of(w, number);
    uint64_t old = atomic_load_explicit(slot, memory_order_relaxed);

    /* Relaxed: the counters publish no other memory; readers only need each word
     * to be consistent in itself, which one CAS per word guarantees. */
    while (!atomic_compare_exchange_weak_explicit(slot, &old, bumped(old, cur, da, db),
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
}

/* Sums the live buckets; *cur_word receives the word read from the slot of
 * now_ms, so a caller can CAS on exactly what it counted. */
static struct mg_window_count sum_at(const struct mg_window *w, uint64_t number, uint64_t *cur_word)
{
    struct mg_window_count n = {0, 0};
    uint32_t cur = (uint32_t)(number & STAMP_MASK);
    unsigned cur_slot = (unsigned)(number % MG_WINDOW_BUCKETS);

    for (unsigned i = 0; i < MG_WINDOW_BUCKETS; i++) {
        uint64_t word = atomic_load_explicit(&w->buckets[i], memory_order_relaxed);
        if (i == cur_slot)
            *cur_word = word;
        if (!is_live(word, cur))
            continue;
        n.a += a_of(word);
        n.b += b_of(word);
    }
    return n;
}

struct mg_window_count mg_window_sum(const struct mg_window *w, uint64_t width_ms, uint64_t now_ms)
{
    uint64_t ignored;
    return sum_at(w, number_of(width_ms, now_ms), &ignored);
}

bool mg_window_spend(struct mg_window *w, uint64_t width_ms, uint64_t now_ms, uint64_t base,
                     double ratio)
{
    uint64_t number = number_of(width_ms, now_ms);
    uint32_t cur = (uint32_t)(number & STAMP_MASK);
    _Atomic uint64_t *slot = slot_of(w, number);

    for (;;) {
        uint64_t old;
        struct mg_window_count n = sum_at(w, number, &old);
        /* The epsilon keeps 0.29 * 100 (28.999999999999996 in binary) at 29. */
        double allowed = (double)base + ratio * (double)n.a + 1e-9;
        uint64_t next = bumped(old, cur, 0, 1);

        if ((double)(n.b + 1) > allowed || next == old)
            return false; /* over the bound, or the bucket is saturated */
        if (atomic_compare_exchange_weak_explicit(slot, &old, next, memory_order_relaxed,
                                                  memory_order_relaxed))
            return true;
    }
}

void mg_window_give_back(struct mg_window *w, uint64_t width_ms, uint64_t now_ms)
{
    uint32_t cur = (uint32_t)(number_of(width_ms, now_ms) & STAMP_MASK);
    _Atomic uint64_t *slot = slot_of(w, number_of(width_ms, now_ms));
    uint64_t old = atomic_load_explicit(slot, memory_order_relaxed);

    while (stamp_of(old) == cur && b_of(old) > 0 &&
           !atomic_compare_exchange_weak_explicit(slot, &old, old - 1, memory_order_relaxed,
                                                  memory_order_relaxed))
        ;
}
