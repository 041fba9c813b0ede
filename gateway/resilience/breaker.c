/*
 * Circuit breaker: the state machine of breaker.h on two atomic words.
 *
 * `state` = {open:1 | epoch:14 | trips:5 | open_until_ms:44}. Whether the breaker
 * is open or half-open is not stored: it is open while now < open_until and
 * half-open after, so the passage of time needs no writer and
 * mg_breaker_available() can stay read-only. `epoch` counts trips (modulo 2^14)
 * and names a half-open episode; `trips` counts trips since the breaker last
 * closed and sets the doubling. Every transition is one CAS from the word the
 * caller decided on, so when workers race, exactly one trip, reopen or close
 * wins and the others' reports become no-ops.
 *
 * `probes` = {epoch:16 | admitted:24 | succeeded:24} for the half-open episode
 * named by epoch. A probe word of an older epoch reads as "nothing admitted yet",
 * so a new episode needs no reset. A probe ticket is epoch + 1 (never 0).
 *
 * Invariant: succeeded <= admitted <= half_open_requests for the word's epoch,
 * and the breaker closes only on the report that makes succeeded reach
 * half_open_requests.
 *
 * Ownership: the struct is the caller's; nothing here allocates.
 */
#include "resilience/breaker.h"

#include "resilience/window.h"

#define OPEN_BIT    (1ull << 63)
#define EPOCH_SHIFT 49
#define EPOCH_MASK  ((1u << 14) - 1)
#define TRIPS_SHIFT 44
#define TRIPS_MAX   31u /* 2^30 * open_for: max_open_for caps long before */
#define UNTIL_MAX   ((1ull << 44) - 1)

#define P_EPOCH_MASK 0xffffu
#define P_ADM_SHIFT  16
#define P_SUCC_SHIFT 40
#define P_COUNT_MAX  ((1u << 24) - 1)

struct view {
    bool open;
    uint32_t epoch;
    uint32_t trips;
    uint64_t until;
};

static struct view unpack(uint64_t s)
{
    struct view v = {
        .open = (s & OPEN_BIT) != 0,
        .epoch = (uint32_t)(s >> EPOCH_SHIFT) & EPOCH_MASK,
        .trips = (uint32_t)(s >> TRIPS_SHIFT) & TRIPS_MAX,
        .until = s & UNTIL_MAX,
    };
    return v;
}

static uint64_t pack(struct view v)
{
    return (v.open ? OPEN_BIT : 0) | (uint64_t)(v.epoch & EPOCH_MASK) << EPOCH_SHIFT |
           (uint64_t)v.trips << TRIPS_SHIFT | v.until;
}

static uint32_t p_epoch(uint64_t p)
{
    return (uint32_t)(p & P_EPOCH_MASK);
}

static uint32_t p_admitted(uint64_t p)
{
    return (uint32_t)(p >> P_ADM_SHIFT) & P_COUNT_MAX;
}

static uint32_t p_succeeded(uint64_t p)
{
    return (uint32_t)(p >> P_SUCC_SHIFT) & P_COUNT_MAX;
}

static uint64_t p_pack(uint32_t epoch, uint32_t admitted, uint32_t succeeded)
{
    return (uint64_t)succeeded << P_SUCC_SHIFT | (uint64_t)admitted << P_ADM_SHIFT | epoch;
}

static uint32_t probe_limit(const struct mg_breaker_conf *c)
{
    /* The loader requires >= 1; 0 would leave a half-open breaker stuck. */
    if (c->half_open_requests == 0)
        return 1;
    return c->half_open_requests < P_COUNT_MAX ? c->half_open_requests : P_COUNT_MAX;
}

/* Admitted probes of `epoch` according to probe word p (0 if p is older). */
static uint32_t admitted_in(uint64_t p, uint32_t epoch)
{
    return p_epoch(p) == epoch ? p_admitted(p) : 0;
}

static uint64_t window_width(const struct mg_breaker_conf *c)
{
    uint64_t w = c->window_ms / MG_WINDOW_BUCKETS;
    return w ? w : 1;
}

/* open_for * 2^(trips-1), capped, without overflow. */
static uint64_t open_duration(const struct mg_breaker_conf *c, uint32_t trips)
{
    uint64_t base = c->open_for_ms;
    uint64_t cap = c->max_open_for_ms > base ? c->max_open_for_ms : base;
    unsigned shift = trips > 0 ? trips - 1 : 0;

    if (base > (cap >> shift))
        return cap;
    return base << shift;
}

static uint64_t until_after(uint64_t now_ms, uint64_t duration)
{
    if (now_ms >= UNTIL_MAX || duration >= UNTIL_MAX - now_ms)
        return UNTIL_MAX;
    return now_ms + duration;
}

void mg_breaker_init(struct mg_breaker *b)
{
    atomic_init(&b->state, 0);
    atomic_init(&b->probes, 0);
    atomic_init(&b->consecutive, 0);
    mg_window_init(&b->window);
}

/* Opens the breaker from the word `seen` (closed, or half-open after a failed
 * probe). Only the thread whose CAS succeeds trips; the others' views are stale. */
static bool trip(struct mg_breaker *b, const struct mg_breaker_conf *c, uint64_t now_ms,
                 uint64_t seen)
{
    struct view v = unpack(seen);
    uint32_t trips = v.trips < TRIPS_MAX ? v.trips + 1 : TRIPS_MAX;
    struct view next = {
        .open = true,
        .epoch = (v.epoch + 1) & EPOCH_MASK,
        .trips = trips,
        .until = until_after(now_ms, open_duration(c, trips)),
    };

    if (!atomic_compare_exchange_strong(&b->state, &seen, pack(next)))
        return false;
    atomic_store_explicit(&b->consecutive, 0, memory_order_relaxed);
    return true;
}

static bool rate_exceeded(const struct mg_breaker *b, const struct mg_breaker_conf *c,
                          uint64_t now_ms)
{
    struct mg_window_count n;
    uint64_t min = c->min_requests ? c->min_requests : 1;

    if (c->failure_rate <= 0)
        return false;
    n = mg_window_sum(&b->window, window_width(c), now_ms);
    return n.a >= min && (double)n.b >= c->failure_rate * (double)n.a;
}

/* A closed breaker's report: count it, then check both tripping rules. */
static bool report_closed(struct mg_breaker *b, const struct mg_breaker_conf *c, uint64_t now_ms,
                          bool failure, uint64_t seen)
{
    uint32_t in_a_row;

    mg_window_add(&b->window, window_width(c), now_ms, 1, failure ? 1 : 0);
    if (!failure) {
        /* Read first: a healthy target's successes then never write the shared
         * line, which every worker reads on every request. */
        if (atomic_load_explicit(&b->consecutive, memory_order_relaxed) != 0)
            atomic_store_explicit(&b->consecutive, 0, memory_order_relaxed);
        return false;
    }
    in_a_row = atomic_fetch_add_explicit(&b->consecutive, 1, memory_order_relaxed) + 1;
    if ((c->consecutive_failures && in_a_row >= c->consecutive_failures) ||
        rate_exceeded(b, c, now_ms))
        return trip(b, c, now_ms, seen);
    return false;
}

/* A probe of the current episode succeeded: close once all of them have. */
static bool probe_succeeded(struct mg_breaker *b, const struct mg_breaker_conf *c, uint64_t seen,
                            uint32_t epoch)
{
    uint64_t p = atomic_load(&b->probes);
    uint64_t next;
    struct view closed = {.open = false, .epoch = epoch, .trips = 0, .until = 0};

    do {
        if (p_epoch(p) != epoch || p_succeeded(p) >= p_admitted(p))
            return false; /* not a probe of this episode: a misuse, ignored */
        next = p + ((uint64_t)1 << P_SUCC_SHIFT);
    } while (!atomic_compare_exchange_weak(&b->probes, &p, next));
    if (p_succeeded(next) < probe_limit(c))
        return false;
    if (!atomic_compare_exchange_strong(&b->state, &seen, pack(closed)))
        return false;
    /* Failures counted before the trip must not trip the fresh breaker. */
    mg_window_clear(&b->window);
    atomic_store_explicit(&b->consecutive, 0, memory_order_relaxed);
    return true;
}

bool mg_breaker_available(const struct mg_breaker *b, const struct mg_breaker_conf *c,
                          uint64_t now_ms)
{
    struct view v = unpack(atomic_load(&b->state));

    if (!v.open)
        return true;
    if (now_ms < v.until)
        return false;
    return admitted_in(atomic_load(&b->probes), v.epoch) < probe_limit(c);
}

bool mg_breaker_acquire(struct mg_breaker *b, const struct mg_breaker_conf *c, uint64_t now_ms,
                        uint32_t *probe)
{
    bool half_opened;

    return mg_breaker_acquire_ex(b, c, now_ms, probe, &half_opened);
}

bool mg_breaker_acquire_ex(struct mg_breaker *b, const struct mg_breaker_conf *c, uint64_t now_ms,
                           uint32_t *probe, bool *half_opened)
{
    struct view v = unpack(atomic_load(&b->state));
    uint64_t p, next;

    *probe = 0;
    *half_opened = false;
    if (!v.open)
        return true;
    if (now_ms < v.until)
        return false;
    p = atomic_load(&b->probes);
    do {
        uint32_t admitted = admitted_in(p, v.epoch);
        if (admitted >= probe_limit(c))
            return false;
        next = p_epoch(p) == v.epoch ? p + ((uint64_t)1 << P_ADM_SHIFT) : p_pack(v.epoch, 1, 0);
    } while (!atomic_compare_exchange_weak(&b->probes, &p, next));
    *half_opened = p_epoch(p) != v.epoch; /* this CAS started the episode */
    /* If another probe reopened the breaker meanwhile, this one slipped through
     * for an episode that is over: its report will be ignored. One stray request
     * is cheaper than re-checking and unwinding here. */
    *probe = v.epoch + 1;
    return true;
}

enum mg_breaker_change mg_breaker_report(struct mg_breaker *b, const struct mg_breaker_conf *c,
                                         uint64_t now_ms, bool failure, uint32_t probe)
{
    uint64_t seen = atomic_load(&b->state);
    struct view v = unpack(seen);

    if (!v.open)
        return report_closed(b, c, now_ms, failure, seen) ? MG_BREAKER_OPENED
                                                          : MG_BREAKER_UNCHANGED;
    if (probe != v.epoch + 1)
        return MG_BREAKER_UNCHANGED; /* admitted before the trip, or an earlier episode's */
    if (failure)
        return trip(b, c, now_ms, seen) ? MG_BREAKER_OPENED : MG_BREAKER_UNCHANGED;
    return probe_succeeded(b, c, seen, v.epoch) ? MG_BREAKER_CLOSED : MG_BREAKER_UNCHANGED;
}

void mg_breaker_cancel(struct mg_breaker *b, uint32_t probe)
{
    uint64_t p = atomic_load(&b->probes);
    uint64_t next;

    if (probe == 0)
        return;
    do {
        if (p_epoch(p) != probe - 1 || p_admitted(p) <= p_succeeded(p))
            return;
        next = p - ((uint64_t)1 << P_ADM_SHIFT);
    } while (!atomic_compare_exchange_weak(&b->probes, &p, next));
}

enum mg_circuit mg_breaker_state(const struct mg_breaker *b, uint64_t now_ms)
{
    struct view v = unpack(atomic_load(&b->state));

    if (!v.open)
        return MG_CIRCUIT_CLOSED;
    return now_ms < v.until ? MG_CIRCUIT_OPEN : MG_CIRCUIT_HALF_OPEN;
}

const char *mg_breaker_state_name(enum mg_circuit s)
{
    switch (s) {
    case MG_CIRCUIT_CLOSED:
        return "closed";
    case MG_CIRCUIT_HALF_OPEN:
        return "half_open";
    case MG_CIRCUIT_OPEN:
        return "open";
    }
    return "?";
}

uint64_t mg_breaker_retry_after_ms(const struct mg_breaker *b, const struct mg_breaker_conf *c,
                                   uint64_t now_ms)
{
    struct view v = unpack(atomic_load(&b->state));

    if (!v.open)
        return 0;
    if (now_ms < v.until)
        return v.until - now_ms;
    return mg_breaker_available(b, c, now_ms) ? 0 : MG_BREAKER_PROBE_WAIT_MS;
}

uint32_t mg_breaker_failures(const struct mg_breaker *b)
{
    return atomic_load_explicit(&b->consecutive, memory_order_relaxed);
}

bool mg_breaker_is_failure_status(const struct mg_breaker_conf *c, int status)
{
    for (size_t i = 0; i < c->n_failure_statuses; i++)
        if (c->failure_statuses[i] == status)
            return true;
    return false;
}
