/* tests for gateway/resilience/breaker.c: tripping on consecutive failures and
 * on the failure rate, open_for doubling and its cap, half-open probes, and the
 * side-effect-free availability check. Time is passed in, so every test is exact. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <pthread.h>

#include "resilience/breaker.h"

static uint16_t failure_statuses[] = {502, 503, 504};

/* The defaults of DESIGN.md section 3. */
static struct mg_breaker_conf defaults(void)
{
    struct mg_breaker_conf c = {
        .consecutive_failures = 5,
        .failure_rate = 0.5,
        .window_ms = 10000,
        .min_requests = 20,
        .open_for_ms = 10000,
        .max_open_for_ms = 300000,
        .half_open_requests = 1,
        .failure_statuses = failure_statuses,
        .n_failure_statuses = 3,
    };
    return c;
}

/* Admits and reports one request; asserts it was admitted as a non-probe. */
static void run(struct mg_breaker *b, const struct mg_breaker_conf *c, uint64_t now, bool fail)
{
    uint32_t probe = 99;
    assert_true(mg_breaker_acquire(b, c, now, &probe));
    assert_int_equal(probe, 0);
    mg_breaker_report(b, c, now, fail, probe);
}

/* Trips a fresh breaker at `now` through consecutive failures. */
static void trip_at(struct mg_breaker *b, const struct mg_breaker_conf *c, uint64_t now)
{
    for (uint32_t i = 0; i < c->consecutive_failures; i++)
        run(b, c, now, true);
    assert_int_equal(mg_breaker_state(b, now), MG_CIRCUIT_OPEN);
}

/* Admits one probe at `now` and reports it. */
static void probe_once(struct mg_breaker *b, const struct mg_breaker_conf *c, uint64_t now,
                       bool fail)
{
    uint32_t probe = 0;
    assert_true(mg_breaker_acquire(b, c, now, &probe));
    assert_int_not_equal(probe, 0);
    mg_breaker_report(b, c, now, fail, probe);
}

/* Each change is reported to exactly one caller, for its log line. */
static void changes_reported_once(void **state)
{
    struct mg_breaker b;
    struct mg_breaker_conf c = defaults();
    uint32_t probe = 0, p2 = 0;
    bool half = true;

    (void)state;
    c.consecutive_failures = 2;
    c.half_open_requests = 2;
    mg_breaker_init(&b);
    assert_true(mg_breaker_acquire_ex(&b, &c, 0, &probe, &half));
    assert_false(half);
    assert_int_equal(mg_breaker_report(&b, &c, 0, true, probe), MG_BREAKER_UNCHANGED);
    assert_int_equal(mg_breaker_report(&b, &c, 0, true, 0), MG_BREAKER_OPENED);
    assert_int_equal(mg_breaker_report(&b, &c, 0, true, 0), MG_BREAKER_UNCHANGED); /* late */
    assert_false(mg_breaker_acquire_ex(&b, &c, 1, &probe, &half));
    assert_false(half);
    /* open_for elapsed: the first probe half-opens it, the second does not */
    assert_true(mg_breaker_acquire_ex(&b, &c, 10000, &probe, &half));
    assert_true(half);
    assert_true(mg_breaker_acquire_ex(&b, &c, 10000, &p2, &half));
    assert_false(half);
    assert_int_equal(mg_breaker_report(&b, &c, 10000, false, probe), MG_BREAKER_UNCHANGED);
    assert_int_equal(mg_breaker_report(&b, &c, 10000, false, p2), MG_BREAKER_CLOSED);
    /* a failed probe reopens: reported as opened */
    run(&b, &c, 10001, true);
    run(&b, &c, 10001, true);
    assert_true(mg_breaker_acquire_ex(&b, &c, 40000, &probe, &half));
    assert_true(half);
    assert_int_equal(mg_breaker_report(&b, &c, 40000, true, probe), MG_BREAKER_OPENED);
}

static void starts_closed_and_available(void **state)
{
    struct mg_breaker_conf c = defaults();
    struct mg_breaker b;
    uint32_t probe = 7;

    mg_breaker_init(&b);
    assert_int_equal(mg_breaker_state(&b, 0), MG_CIRCUIT_CLOSED);
    assert_true(mg_breaker_available(&b, &c, 0));
    assert_true(mg_breaker_acquire(&b, &c, 0, &probe));
    assert_int_equal(probe, 0);
    assert_int_equal(mg_breaker_retry_after_ms(&b, &c, 0), 0);
    assert_int_equal(mg_breaker_failures(&b), 0);
}

static void trips_after_consecutive_failures(void **state)
{
    struct mg_breaker_conf c = defaults();
    struct mg_breaker b;
    uint32_t probe;

    mg_breaker_init(&b);
    for (int i = 0; i < 4; i++)
        run(&b, &c, 1000, true);
    assert_int_equal(mg_breaker_state(&b, 1000), MG_CIRCUIT_CLOSED);
    assert_int_equal(mg_breaker_failures(&b), 4);
    run(&b, &c, 1000, true);
    assert_int_equal(mg_breaker_state(&b, 1000), MG_CIRCUIT_OPEN);
    assert_false(mg_breaker_available(&b, &c, 1000));
    assert_false(mg_breaker_acquire(&b, &c, 1000, &probe));
    assert_int_equal(mg_breaker_retry_after_ms(&b, &c, 1000), 10000);
    assert_int_equal(mg_breaker_retry_after_ms(&b, &c, 4000), 7000);
}

static void success_resets_consecutive_count(void **state)
{
    struct mg_breaker_conf c = defaults();
    struct mg_breaker b;

    mg_breaker_init(&b);
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 4; i++)
            run(&b, &c, 1000, true);
        run(&b, &c, 1000, false);
        assert_int_equal(mg_breaker_failures(&b), 0);
    }
    /* 12 failures of 15 requests, but under min_requests: still closed. */
    assert_int_equal(mg_breaker_state(&b, 1000), MG_CIRCUIT_CLOSED);
}

static void rate_trips_only_once_min_requests_seen(void **state)
{
    struct mg_breaker_conf c = defaults();
    struct mg_breaker b;

    c.consecutive_failures = 1000;
    mg_breaker_init(&b);
    for (int i = 0; i < 19; i++) /* 19 failures of 19: under min_requests */
        run(&b, &c, 1000, true);
    assert_int_equal(mg_breaker_state(&b, 1000), MG_CIRCUIT_CLOSED);
    run(&b, &c, 1000, true);
    assert_int_equal(mg_breaker_state(&b, 1000), MG_CIRCUIT_OPEN);
}

static void rate_trips_at_exactly_failure_rate(void **state)
{
    struct mg_breaker_conf c = defaults();
    struct mg_breaker b;

    c.consecutive_failures = 1000;
    mg_breaker_init(&b);
    for (int i = 0; i < 19; i++) /* S F S F ... S: 9 failures of 19 */
        run(&b, &c, 1000, i % 2 == 1);
    assert_int_equal(mg_breaker_state(&b, 1000), MG_CIRCUIT_CLOSED);
    run(&b, &c, 1000, true); /* 10 of 20 = failure_rate */
    assert_int_equal(mg_breaker_state(&b, 1000), MG_CIRCUIT_OPEN);
}

static void rate_below_threshold_does_not_trip(void **state)
{
    struct mg_breaker_conf c = defaults();
    struct mg_breaker b;

    c.consecutive_failures = 1000;
    mg_breaker_init(&b);
    for (int i = 0; i < 300; i++)
        run(&b, &c, 1000 + (uint64_t)i, i % 3 == 0); /* a third fail */
    assert_int_equal(mg_breaker_state(&b, 2000), MG_CIRCUIT_CLOSED);
}

static void rate_counts_only_the_window(void **state)
{
    struct mg_breaker_conf c = defaults();
    struct mg_breaker old_failures, recent_failures;

    c.consecutive_failures = 1000;
    c.min_requests = 10;
    mg_breaker_init(&old_failures);
    mg_breaker_init(&recent_failures);
    for (int i = 0; i < 9; i++) {
        run(&old_failures, &c, 500, true);
        run(&recent_failures, &c, 500, true);
    }
    /* 10.5 s later the bucket of t=500 (0..999) has left the 10 s window... */
    run(&old_failures, &c, 10500, true);
    assert_int_equal(mg_breaker_state(&old_failures, 10500), MG_CIRCUIT_CLOSED);
    /* ...9.5 s later it has not: 10 failures of 10 requests. */
    run(&recent_failures, &c, 9500, true);
    assert_int_equal(mg_breaker_state(&recent_failures, 9500), MG_CIRCUIT_OPEN);
}

static void zero_failure_rate_disables_rate_rule(void **state)
{
    struct mg_breaker_conf c = defaults();
    struct mg_breaker b;

    c.failure_rate = 0;
    c.min_requests = 1;
    mg_breaker_init(&b);
    for (int i = 0; i < 100; i++)
        run(&b, &c, 1000, i % 2 == 0);
    assert_int_equal(mg_breaker_state(&b, 1000), MG_CIRCUIT_CLOSED);
}

static void open_for_elapses_into_half_open(void **state)
{
    struct mg_breaker_conf c = defaults();
    struct mg_breaker b;

    mg_breaker_init(&b);
    trip_at(&b, &c, 1000);
    assert_int_equal(mg_breaker_state(&b, 10999), MG_CIRCUIT_OPEN);
    assert_false(mg_breaker_available(&b, &c, 10999));
    assert_int_equal(mg_breaker_retry_after_ms(&b, &c, 10999), 1);
    assert_int_equal(mg_breaker_state(&b, 11000), MG_CIRCUIT_HALF_OPEN);
    assert_true(mg_breaker_available(&b, &c, 11000));
    assert_int_equal(mg_breaker_retry_after_ms(&b, &c, 11000), 0);
}

static void half_open_admits_only_half_open_requests_probes(void **state)
{
    struct mg_breaker_conf c = defaults();
    struct mg_breaker b;
    uint32_t p1 = 0, p2 = 0, p3 = 0;

    c.half_open_requests = 2;
    mg_breaker_init(&b);
    trip_at(&b, &c, 0);
    assert_true(mg_breaker_acquire(&b, &c, 10000, &p1));
    assert_true(mg_breaker_available(&b, &c, 10000));
    assert_true(mg_breaker_acquire(&b, &c, 10001, &p2));
    assert_int_not_equal(p1, 0);
    assert_int_equal(p1, p2); /* both probe the same episode */
    assert_false(mg_breaker_available(&b, &c, 10002));
    assert_false(mg_breaker_acquire(&b, &c, 10002, &p3));
    assert_int_equal(p3, 0);
    assert_int_equal(mg_breaker_state(&b, 10002), MG_CIRCUIT_HALF_OPEN);
    assert_int_equal(mg_breaker_retry_after_ms(&b, &c, 10002), MG_BREAKER_PROBE_WAIT_MS);
}

static void all_probes_succeeding_closes(void **state)
{
    struct mg_breaker_conf c = defaults();
    struct mg_breaker b;
    uint32_t p1 = 0, p2 = 0;

    c.half_open_requests = 2;
    mg_breaker_init(&b);
    trip_at(&b, &c, 0);
    assert_true(mg_breaker_acquire(&b, &c, 10000, &p1));
    assert_true(mg_breaker_acquire(&b, &c, 10000, &p2));
    mg_breaker_report(&b, &c, 10100, false, p1);
    assert_int_equal(mg_breaker_state(&b, 10100), MG_CIRCUIT_HALF_OPEN);
    assert_false(mg_breaker_available(&b, &c, 10100)); /* both slots still taken */
    mg_breaker_report(&b, &c, 10200, false, p2);
    assert_int_equal(mg_breaker_state(&b, 10200), MG_CIRCUIT_CLOSED);
    run(&b, &c, 10300, false); /* closed again: ordinary requests, no probe ticket */
}

static void probe_failure_reopens(void **state)
{
    struct mg_breaker_conf c = defaults();
    struct mg_breaker b;
    uint32_t p1 = 0, p2 = 0;

    c.half_open_requests = 2;
    mg_breaker_init(&b);
    trip_at(&b, &c, 0);
    assert_true(mg_breaker_acquire(&b, &c, 10000, &p1));
    assert_true(mg_breaker_acquire(&b, &c, 10000, &p2));
    mg_breaker_report(&b, &c, 10050, false, p1);
    mg_breaker_report(&b, &c, 10100, true, p2); /* one success is not enough */
    assert_int_equal(mg_breaker_state(&b, 10100), MG_CIRCUIT_OPEN);
    assert_int_equal(mg_breaker_retry_after_ms(&b, &c, 10100), 20000);
}

static void open_for_doubles_per_trip_up_to_max(void **state)
{
    struct mg_breaker_conf c = defaults();
    struct mg_breaker b;
    const uint64_t expected[] = {10000, 20000, 40000, 80000, 160000, 300000, 300000};
    uint64_t now = 0;

    mg_breaker_init(&b);
    trip_at(&b, &c, now);
    for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++) {
        uint64_t wait = mg_breaker_retry_after_ms(&b, &c, now);
        assert_int_equal(wait, expected[i]);
        now += wait;
        assert_int_equal(mg_breaker_state(&b, now), MG_CIRCUIT_HALF_OPEN);
        probe_once(&b, &c, now, true);
    }
}

static void doubling_is_overflow_safe(void **state)
{
    struct mg_breaker_conf c = defaults();
    struct mg_breaker b;
    uint64_t now = 0, prev = 0;

    c.open_for_ms = 1000;
    c.max_open_for_ms = UINT64_MAX;
    mg_breaker_init(&b);
    trip_at(&b, &c, now);
    for (int i = 0; i < 40; i++) {
        uint64_t wait = mg_breaker_retry_after_ms(&b, &c, now);
        uint64_t want = i < 30 ? 1000ull << i : 1000ull << 30; /* doubling stops at 2^30 */
        assert_int_equal(wait, want);
        assert_true(wait >= prev);
        prev = wait;
        now += wait;
        probe_once(&b, &c, now, true);
    }
}

static void closing_resets_doubling(void **state)
{
    struct mg_breaker_conf c = defaults();
    struct mg_breaker b;

    mg_breaker_init(&b);
    trip_at(&b, &c, 0);
    probe_once(&b, &c, 10000, true); /* reopened for 20 s */
    assert_int_equal(mg_breaker_retry_after_ms(&b, &c, 10000), 20000);
    probe_once(&b, &c, 30000, false); /* closed */
    assert_int_equal(mg_breaker_state(&b, 30000), MG_CIRCUIT_CLOSED);
    trip_at(&b, &c, 31000);
    assert_int_equal(mg_breaker_retry_after_ms(&b, &c, 31000), 10000);
}

static void closing_forgets_earlier_failures(void **state)
{
    struct mg_breaker_conf c = defaults();
    struct mg_breaker b;

    c.consecutive_failures = 1000;
    c.window_ms = 60000; /* longer than open_for: pre-trip buckets still live */
    c.min_requests = 4;
    c.open_for_ms = 1000;
    mg_breaker_init(&b);
    for (int i = 0; i < 4; i++)
        run(&b, &c, 0, true);
    assert_int_equal(mg_breaker_state(&b, 0), MG_CIRCUIT_OPEN);
    probe_once(&b, &c, 1000, false);
    assert_int_equal(mg_breaker_state(&b, 1000), MG_CIRCUIT_CLOSED);
    for (int i = 0; i < 3; i++) /* 3 failures of 3: under min_requests */
        run(&b, &c, 2000, true);
    assert_int_equal(mg_breaker_state(&b, 2000), MG_CIRCUIT_CLOSED);
}

static void availability_has_no_side_effects(void **state)
{
    struct mg_breaker_conf c = defaults();
    struct mg_breaker b;
    uint32_t probe = 0;

    c.consecutive_failures = 1;
    mg_breaker_init(&b);
    for (int i = 0; i < 1000; i++)
        assert_true(mg_breaker_available(&b, &c, 5));
    assert_int_equal(mg_breaker_failures(&b), 0);
    run(&b, &c, 5, true);
    for (int i = 0; i < 1000; i++)
        assert_false(mg_breaker_available(&b, &c, 10004));
    for (int i = 0; i < 1000; i++) /* half-open: asking reserves no probe slot */
        assert_true(mg_breaker_available(&b, &c, 10005));
    assert_int_equal(mg_breaker_state(&b, 10005), MG_CIRCUIT_HALF_OPEN);
    assert_true(mg_breaker_acquire(&b, &c, 10005, &probe));
    assert_false(mg_breaker_available(&b, &c, 10005));
}

static void late_reports_do_not_move_the_state(void **state)
{
    struct mg_breaker_conf c = defaults();
    struct mg_breaker b;
    uint32_t before_trip = 1, probe = 0;

    c.consecutive_failures = 1;
    mg_breaker_init(&b);
    assert_true(mg_breaker_acquire(&b, &c, 0, &before_trip)); /* in flight across the trip */
    run(&b, &c, 0, true);
    mg_breaker_report(&b, &c, 5000, false, before_trip); /* open: ignored */
    assert_int_equal(mg_breaker_state(&b, 5000), MG_CIRCUIT_OPEN);
    mg_breaker_report(&b, &c, 10000, false, before_trip); /* half-open: not a probe */
    mg_breaker_report(&b, &c, 10000, true, before_trip);
    assert_int_equal(mg_breaker_state(&b, 10000), MG_CIRCUIT_HALF_OPEN);
    assert_true(mg_breaker_acquire(&b, &c, 10000, &probe));
    mg_breaker_report(&b, &c, 10010, false, probe);
    assert_int_equal(mg_breaker_state(&b, 10010), MG_CIRCUIT_CLOSED);
}

static void probe_of_an_earlier_episode_is_ignored(void **state)
{
    struct mg_breaker_conf c = defaults();
    struct mg_breaker b;
    uint32_t stale = 0, first = 0, current = 0;

    c.half_open_requests = 2;
    mg_breaker_init(&b);
    trip_at(&b, &c, 0);
    assert_true(mg_breaker_acquire(&b, &c, 10000, &stale));
    assert_true(mg_breaker_acquire(&b, &c, 10000, &first));
    mg_breaker_report(&b, &c, 10000, true, first); /* reopened until 30000 */
    assert_true(mg_breaker_acquire(&b, &c, 30000, &current));
    assert_int_not_equal(current, stale);
    mg_breaker_report(&b, &c, 30001, false, stale); /* neither counts nor closes */
    mg_breaker_report(&b, &c, 30001, true, stale);
    assert_int_equal(mg_breaker_state(&b, 30001), MG_CIRCUIT_HALF_OPEN);
    assert_true(mg_breaker_available(&b, &c, 30001)); /* one of two slots taken */
    mg_breaker_report(&b, &c, 30002, false, current);
    assert_int_equal(mg_breaker_state(&b, 30002), MG_CIRCUIT_HALF_OPEN);
    probe_once(&b, &c, 30003, false);
    assert_int_equal(mg_breaker_state(&b, 30003), MG_CIRCUIT_CLOSED);
}

static void cancel_gives_the_probe_slot_back(void **state)
{
    struct mg_breaker_conf c = defaults();
    struct mg_breaker b;
    uint32_t probe = 0;

    mg_breaker_init(&b);
    trip_at(&b, &c, 0);
    assert_true(mg_breaker_acquire(&b, &c, 10000, &probe));
    assert_false(mg_breaker_available(&b, &c, 10000));
    mg_breaker_cancel(&b, probe);
    assert_true(mg_breaker_available(&b, &c, 10000));
    mg_breaker_cancel(&b, probe); /* twice: nothing more to give back */
    mg_breaker_cancel(&b, 0);     /* not a probe */
    assert_true(mg_breaker_acquire(&b, &c, 10000, &probe));
    assert_false(mg_breaker_available(&b, &c, 10000));
    mg_breaker_report(&b, &c, 10001, false, probe);
    assert_int_equal(mg_breaker_state(&b, 10001), MG_CIRCUIT_CLOSED);
}

static void failure_statuses_come_from_config(void **state)
{
    struct mg_breaker_conf c = defaults();
    uint16_t only_500[] = {500};

    assert_true(mg_breaker_is_failure_status(&c, 502));
    assert_true(mg_breaker_is_failure_status(&c, 504));
    assert_false(mg_breaker_is_failure_status(&c, 500));
    assert_false(mg_breaker_is_failure_status(&c, 200));
    c.failure_statuses = only_500;
    c.n_failure_statuses = 1;
    assert_true(mg_breaker_is_failure_status(&c, 500));
    assert_false(mg_breaker_is_failure_status(&c, 503));
    c.n_failure_statuses = 0;
    assert_false(mg_breaker_is_failure_status(&c, 500));
}

static void states_have_metric_values_and_names(void **state)
{
    assert_int_equal(MG_CIRCUIT_CLOSED, 0);
    assert_int_equal(MG_CIRCUIT_HALF_OPEN, 1);
    assert_int_equal(MG_CIRCUIT_OPEN, 2);
    assert_string_equal(mg_breaker_state_name(MG_CIRCUIT_CLOSED), "closed");
    assert_string_equal(mg_breaker_state_name(MG_CIRCUIT_HALF_OPEN), "half_open");
    assert_string_equal(mg_breaker_state_name(MG_CIRCUIT_OPEN), "open");
}

/* ---- threads: several workers hitting one breaker at once ---- */

#define THREADS  4
#define BREAKERS 2000

struct hammer {
    struct mg_breaker *b; /* BREAKERS of them, or one */
    const struct mg_breaker_conf *c;
    pthread_barrier_t *start;
    unsigned char admitted[BREAKERS]; /* this thread's admissions per breaker */
};

/* Every thread walks the same array of half-open breakers, all starting on each
 * one together, so the race for its probe slots is run BREAKERS times. */
static void *acquire_many(void *arg)
{
    struct hammer *h = arg;
    for (int i = 0; i < BREAKERS; i++) {
        pthread_barrier_wait(h->start);
        for (int k = 0; k < 2; k++) {
            uint32_t probe = 0;
            h->admitted[i] += mg_breaker_acquire(&h->b[i], h->c, 10000, &probe);
        }
    }
    return NULL;
}

static void concurrent_probes_respect_the_limit(void **state)
{
    struct mg_breaker_conf c = defaults();
    static struct mg_breaker b[BREAKERS];
    static struct hammer h[THREADS];
    pthread_t t[THREADS];
    pthread_barrier_t start;

    c.half_open_requests = 3;
    for (int i = 0; i < BREAKERS; i++) {
        mg_breaker_init(&b[i]);
        trip_at(&b[i], &c, 0);
    }
    pthread_barrier_init(&start, NULL, THREADS);
    for (int i = 0; i < THREADS; i++) {
        h[i] = (struct hammer){.b = b, .c = &c, .start = &start};
        pthread_create(&t[i], NULL, acquire_many, &h[i]);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&start);
    for (int i = 0; i < BREAKERS; i++) { /* 8 tries on each, exactly 3 admitted */
        int total = 0;
        for (int k = 0; k < THREADS; k++)
            total += h[k].admitted[i];
        assert_int_equal(total, 3);
    }
}

static void *fail_many(void *arg)
{
    struct hammer *h = arg;
    pthread_barrier_wait(h->start);
    for (int i = 0; i < 10000; i++)
        mg_breaker_report(h->b, h->c, 1000, true, 0);
    return NULL;
}

static void concurrent_failures_trip_once(void **state)
{
    struct mg_breaker_conf c = defaults();
    struct mg_breaker b;
    static struct hammer h[THREADS];
    pthread_t t[THREADS];
    pthread_barrier_t start;

    mg_breaker_init(&b);
    pthread_barrier_init(&start, NULL, THREADS);
    for (int i = 0; i < THREADS; i++) {
        h[i] = (struct hammer){.b = &b, .c = &c, .start = &start};
        pthread_create(&t[i], NULL, fail_many, &h[i]);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&start);
    /* One trip, not one per racing reporter: open_for was not doubled. */
    assert_int_equal(mg_breaker_state(&b, 1000), MG_CIRCUIT_OPEN);
    assert_int_equal(mg_breaker_retry_after_ms(&b, &c, 1000), 10000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(starts_closed_and_available),
        cmocka_unit_test(changes_reported_once),
        cmocka_unit_test(trips_after_consecutive_failures),
        cmocka_unit_test(success_resets_consecutive_count),
        cmocka_unit_test(rate_trips_only_once_min_requests_seen),
        cmocka_unit_test(rate_trips_at_exactly_failure_rate),
        cmocka_unit_test(rate_below_threshold_does_not_trip),
        cmocka_unit_test(rate_counts_only_the_window),
        cmocka_unit_test(zero_failure_rate_disables_rate_rule),
        cmocka_unit_test(open_for_elapses_into_half_open),
        cmocka_unit_test(half_open_admits_only_half_open_requests_probes),
        cmocka_unit_test(all_probes_succeeding_closes),
        cmocka_unit_test(probe_failure_reopens),
        cmocka_unit_test(open_for_doubles_per_trip_up_to_max),
        cmocka_unit_test(doubling_is_overflow_safe),
        cmocka_unit_test(closing_resets_doubling),
        cmocka_unit_test(closing_forgets_earlier_failures),
        cmocka_unit_test(availability_has_no_side_effects),
        cmocka_unit_test(late_reports_do_not_move_the_state),
        cmocka_unit_test(probe_of_an_earlier_episode_is_ignored),
        cmocka_unit_test(cancel_gives_the_probe_slot_back),
        cmocka_unit_test(failure_statuses_come_from_config),
        cmocka_unit_test(states_have_metric_values_and_names),
        cmocka_unit_test(concurrent_probes_respect_the_limit),
        cmocka_unit_test(concurrent_failures_trip_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
