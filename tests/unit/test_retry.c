/* tests for gateway/resilience/retry.c: full-jitter backoff bounds and growth
 * with fixed random values, the retry conditions, method safety, and the retry
 * budget (ratio, floor per second, sliding window, concurrent spenders). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <llhttp.h>
#include <pthread.h>

#include "resilience/retry.h"

static uint16_t on_statuses[] = {502, 503, 504};

/* The defaults of DESIGN.md section 3. */
static struct mg_retry_conf defaults(void)
{
    struct mg_retry_conf c = {
        .max_retries = 2,
        .on_mask = MG_RETRY_ON_CONNECT_FAILURE | MG_RETRY_ON_RESET | MG_RETRY_ON_TIMEOUT,
        .on_statuses = on_statuses,
        .n_on_statuses = 3,
        .backoff_base_ms = 25,
        .backoff_max_ms = 250,
        .budget_ratio = 0.2,
        .budget_min_per_second = 10,
    };
    return c;
}

/* ---- backoff ---- */

static void backoff_zero_random_is_zero(void **state)
{
    struct mg_retry_conf c = defaults();
    for (unsigned n = 0; n < 12; n++)
        assert_int_equal(mg_retry_backoff_ms(&c, n, 0), 0);
}

static void backoff_cap_doubles_then_stops_at_max(void **state)
{
    struct mg_retry_conf c = defaults();
    const uint64_t caps[] = {25, 50, 100, 200, 250, 250, 250};

    for (unsigned n = 0; n < sizeof caps / sizeof caps[0]; n++) {
        /* random == cap reaches the cap (inclusive), cap + 1 wraps to 0. */
        assert_int_equal(mg_retry_backoff_ms(&c, n, caps[n]), caps[n]);
        assert_int_equal(mg_retry_backoff_ms(&c, n, caps[n] + 1), 0);
        assert_int_equal(mg_retry_backoff_ms(&c, n, caps[n] / 2), caps[n] / 2);
    }
}

static void backoff_stays_within_bounds(void **state)
{
    struct mg_retry_conf c = defaults();
    const uint64_t randoms[] = {1, 7, 24, 25, 26, 251, 1000003, UINT32_MAX, UINT64_MAX};

    for (unsigned n = 0; n < 10; n++) {
        uint64_t cap = n < 4 ? 25ull << n : 250;
        for (size_t i = 0; i < sizeof randoms / sizeof randoms[0]; i++)
            assert_true(mg_retry_backoff_ms(&c, n, randoms[i]) <= cap);
    }
}

static void backoff_is_overflow_safe(void **state)
{
    struct mg_retry_conf c = defaults();
    const unsigned huge[] = {31, 32, 62, 63, 64, 65, 1000, UINT32_MAX};

    for (size_t i = 0; i < sizeof huge / sizeof huge[0]; i++)
        assert_int_equal(mg_retry_backoff_ms(&c, huge[i], 250), 250);
    c.backoff_base_ms = UINT64_MAX / 3;
    c.backoff_max_ms = UINT64_MAX;
    assert_int_equal(mg_retry_backoff_ms(&c, 0, UINT64_MAX / 3), UINT64_MAX / 3);
    /* cap 2 * base; UINT64_MAX is exactly 3 * base */
    assert_int_equal(mg_retry_backoff_ms(&c, 1, UINT64_MAX - 5), UINT64_MAX / 3 - 6);
    assert_int_equal(mg_retry_backoff_ms(&c, 2, UINT64_MAX - 5), UINT64_MAX - 5);
    assert_int_equal(mg_retry_backoff_ms(&c, 64, UINT64_MAX), UINT64_MAX);
}

static void backoff_with_zero_base_or_max_below_base(void **state)
{
    struct mg_retry_conf c = defaults();

    c.backoff_base_ms = 0;
    assert_int_equal(mg_retry_backoff_ms(&c, 3, 12345), 0);
    c.backoff_base_ms = 100;
    c.backoff_max_ms = 0; /* the loader forbids it; base still bounds the wait */
    assert_int_equal(mg_retry_backoff_ms(&c, 5, 100), 100);
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void backoff_spreads_over_the_whole_range(void **state)
{
    struct mg_retry_conf c = defaults();
    uint64_t seed = 42, sum = 0, lo = UINT64_MAX, hi = 0;
    const int samples = 20000;

    for (int i = 0; i < samples; i++) {
        uint64_t d = mg_retry_backoff_ms(&c, 2, splitmix(&seed)); /* cap 100 */
        sum += d;
        lo = d < lo ? d : lo;
        hi = d > hi ? d : hi;
    }
    assert_int_equal(lo, 0);
    assert_int_equal(hi, 100);
    assert_in_range(sum / samples, 48, 52); /* uniform on [0, 100]: mean 50 */
}

/* ---- conditions ---- */

static void retry_on_reads_the_failure_bits(void **state)
{
    struct mg_retry_conf c = defaults();

    assert_true(mg_retry_on(&c, MG_RETRY_ON_CONNECT_FAILURE));
    assert_true(mg_retry_on(&c, MG_RETRY_ON_RESET));
    assert_true(mg_retry_on(&c, MG_RETRY_ON_TIMEOUT));
    c.on_mask = MG_RETRY_ON_RESET;
    assert_false(mg_retry_on(&c, MG_RETRY_ON_CONNECT_FAILURE));
    assert_true(mg_retry_on(&c, MG_RETRY_ON_RESET));
    assert_false(mg_retry_on(&c, MG_RETRY_ON_TIMEOUT));
    c.on_mask = 0;
    assert_false(mg_retry_on(&c, MG_RETRY_ON_RESET));
}

static void retry_on_statuses_from_config(void **state)
{
    struct mg_retry_conf c = defaults();
    uint16_t only_429[] = {429};

    assert_true(mg_retry_should_retry_status(&c, 502));
    assert_true(mg_retry_should_retry_status(&c, 503));
    assert_true(mg_retry_should_retry_status(&c, 504));
    assert_false(mg_retry_should_retry_status(&c, 500));
    assert_false(mg_retry_should_retry_status(&c, 200));
    c.on_statuses = only_429;
    c.n_on_statuses = 1;
    assert_true(mg_retry_should_retry_status(&c, 429));
    assert_false(mg_retry_should_retry_status(&c, 502));
    c.n_on_statuses = 0;
    assert_false(mg_retry_should_retry_status(&c, 429));
}

static void idempotent_methods_are_the_rfc_ones(void **state)
{
    const int yes[] = {HTTP_GET, HTTP_HEAD, HTTP_OPTIONS, HTTP_PUT, HTTP_DELETE, HTTP_TRACE};
    const int no[] = {HTTP_POST, HTTP_PATCH, HTTP_CONNECT, HTTP_LOCK, HTTP_PURGE};

    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        assert_true(mg_retry_method_idempotent(yes[i]));
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        assert_false(mg_retry_method_idempotent(no[i]));
    assert_false(mg_retry_method_idempotent(-1));
}

static void safe_when_idempotent_unsent_or_keyed(void **state)
{
    assert_true(mg_retry_safe(HTTP_GET, true, false));
    assert_true(mg_retry_safe(HTTP_PUT, true, false));
    assert_false(mg_retry_safe(HTTP_POST, true, false));
    assert_true(mg_retry_safe(HTTP_POST, false, false)); /* connect failure */
    assert_true(mg_retry_safe(HTTP_POST, true, true));   /* Idempotency-Key route */
    assert_false(mg_retry_safe(HTTP_PATCH, true, false));
}

/* ---- budget ---- */

static int spend_all(struct mg_retry_budget *b, const struct mg_retry_conf *c, uint64_t now,
                     int tries)
{
    int spent = 0;
    for (int i = 0; i < tries; i++)
        spent += mg_retry_budget_try_spend(b, c, now);
    return spent;
}

static void budget_floor_is_min_per_second_times_window(void **state)
{
    struct mg_retry_conf c = defaults();
    struct mg_retry_budget b;

    c.budget_ratio = 0;
    mg_retry_budget_init(&b);
    assert_int_equal(spend_all(&b, &c, 500, 1000), 100); /* 10/s over 10 s */
    assert_false(mg_retry_budget_try_spend(&b, &c, 5000));
}

static void budget_grows_with_requests_by_ratio(void **state)
{
    struct mg_retry_conf c = defaults();
    struct mg_retry_budget b;
    uint64_t requests, retries;

    c.budget_min_per_second = 0;
    mg_retry_budget_init(&b);
    assert_false(mg_retry_budget_try_spend(&b, &c, 0)); /* no requests, no floor */
    for (int i = 0; i < 100; i++)
        mg_retry_budget_record_request(&b, 0);
    assert_int_equal(spend_all(&b, &c, 0, 1000), 20); /* 20% of 100 */
    for (int i = 0; i < 4; i++)
        mg_retry_budget_record_request(&b, 0);
    assert_false(mg_retry_budget_try_spend(&b, &c, 0)); /* 0.2 * 104 = 20.8 */
    mg_retry_budget_record_request(&b, 0);
    assert_true(mg_retry_budget_try_spend(&b, &c, 0)); /* 0.2 * 105 = 21 */
    mg_retry_budget_counts(&b, 0, &requests, &retries);
    assert_int_equal(requests, 105);
    assert_int_equal(retries, 21);
}

static void budget_ratio_is_not_lost_to_rounding(void **state)
{
    struct mg_retry_conf c = defaults();
    struct mg_retry_budget b;

    c.budget_ratio = 0.29; /* 0.29 * 100 is 28.999999999999996 in binary */
    c.budget_min_per_second = 0;
    mg_retry_budget_init(&b);
    for (int i = 0; i < 100; i++)
        mg_retry_budget_record_request(&b, 0);
    assert_int_equal(spend_all(&b, &c, 0, 100), 29);
}

static void budget_adds_ratio_and_floor(void **state)
{
    struct mg_retry_conf c = defaults(); /* 0.2 and 10/s */
    struct mg_retry_budget b;

    mg_retry_budget_init(&b);
    for (int i = 0; i < 1000; i++)
        mg_retry_budget_record_request(&b, 100 + (uint64_t)i);
    assert_int_equal(spend_all(&b, &c, 1200, 1000), 200 + 100);
}

static void failing_upstream_cannot_triple_its_load(void **state)
{
    struct mg_retry_conf c = defaults();
    struct mg_retry_budget b;
    uint64_t sent = 0, requests = 0;

    c.max_retries = 2; /* unbudgeted, each request could be sent 3 times */
    mg_retry_budget_init(&b);
    for (uint64_t now = 0; now < 60000; now += 10) { /* 100 requests/s, every try fails */
        mg_retry_budget_record_request(&b, now);
        requests++;
        sent++;
        for (uint32_t r = 0; r < c.max_retries && mg_retry_budget_try_spend(&b, &c, now); r++)
            sent++;
    }
    /* 20% + 10/s of 100/s: at most 1.3x the load, plus the first window's floor. */
    assert_true(sent <= requests * 13 / 10 + 100);
    assert_true(sent >= requests * 12 / 10);
}

static void budget_window_slides(void **state)
{
    struct mg_retry_conf c = defaults();
    struct mg_retry_budget b;
    uint64_t requests, retries;

    c.budget_ratio = 0;
    c.budget_min_per_second = 1; /* 10 per window */
    mg_retry_budget_init(&b);
    assert_int_equal(spend_all(&b, &c, 0, 5), 5);    /* bucket 0 */
    assert_int_equal(spend_all(&b, &c, 3500, 9), 5); /* bucket 3 */
    assert_false(mg_retry_budget_try_spend(&b, &c, 9999));
    assert_int_equal(spend_all(&b, &c, 10000, 9), 5); /* bucket 0 left the window */
    mg_retry_budget_counts(&b, 10000, &requests, &retries);
    assert_int_equal(retries, 10);
    assert_int_equal(spend_all(&b, &c, 12999, 9), 0);
    assert_int_equal(spend_all(&b, &c, 13000, 9), 5); /* bucket 3 left too */
    mg_retry_budget_counts(&b, 30000, &requests, &retries);
    assert_int_equal(retries, 0);
}

static void requests_expire_with_the_window(void **state)
{
    struct mg_retry_conf c = defaults();
    struct mg_retry_budget b;

    c.budget_min_per_second = 0;
    mg_retry_budget_init(&b);
    for (int i = 0; i < 50; i++)
        mg_retry_budget_record_request(&b, 0);
    assert_int_equal(spend_all(&b, &c, 9000, 100), 10);
    mg_retry_budget_record_request(&b, 10000); /* the 50 are gone: 0.2 * 1 */
    assert_false(mg_retry_budget_try_spend(&b, &c, 10000));
}

#define THREADS 4

struct spender {
    struct mg_retry_budget *b;
    const struct mg_retry_conf *c;
    pthread_barrier_t *start;
    int spent;
};

static void *spend_many(void *arg)
{
    struct spender *s = arg;
    pthread_barrier_wait(s->start);
    for (int i = 0; i < 5000; i++) {
        mg_retry_budget_record_request(s->b, 2000);
        s->spent += mg_retry_budget_try_spend(s->b, s->c, 2000);
    }
    return NULL;
}

static void concurrent_spenders_cannot_overdraw(void **state)
{
    struct mg_retry_conf c = defaults();
    struct mg_retry_budget b;
    struct spender s[THREADS];
    pthread_t t[THREADS];
    pthread_barrier_t start;
    uint64_t requests, retries;
    int total = 0;

    mg_retry_budget_init(&b);
    pthread_barrier_init(&start, NULL, THREADS);
    for (int i = 0; i < THREADS; i++) {
        s[i] = (struct spender){.b = &b, .c = &c, .start = &start};
        pthread_create(&t[i], NULL, spend_many, &s[i]);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        total += s[i].spent;
    }
    pthread_barrier_destroy(&start);
    mg_retry_budget_counts(&b, 2000, &requests, &retries);
    assert_int_equal(requests, THREADS * 5000);
    assert_int_equal(retries, (uint64_t)total);
    /* Never above 0.2 * 20000 + 100; at the end every spare retry was taken. */
    assert_int_equal(total, 4100);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(backoff_zero_random_is_zero),
        cmocka_unit_test(backoff_cap_doubles_then_stops_at_max),
        cmocka_unit_test(backoff_stays_within_bounds),
        cmocka_unit_test(backoff_is_overflow_safe),
        cmocka_unit_test(backoff_with_zero_base_or_max_below_base),
        cmocka_unit_test(backoff_spreads_over_the_whole_range),
        cmocka_unit_test(retry_on_reads_the_failure_bits),
        cmocka_unit_test(retry_on_statuses_from_config),
        cmocka_unit_test(idempotent_methods_are_the_rfc_ones),
        cmocka_unit_test(safe_when_idempotent_unsent_or_keyed),
        cmocka_unit_test(budget_floor_is_min_per_second_times_window),
        cmocka_unit_test(budget_grows_with_requests_by_ratio),
        cmocka_unit_test(budget_ratio_is_not_lost_to_rounding),
        cmocka_unit_test(budget_adds_ratio_and_floor),
        cmocka_unit_test(failing_upstream_cannot_triple_its_load),
        cmocka_unit_test(budget_window_slides),
        cmocka_unit_test(requests_expire_with_the_window),
        cmocka_unit_test(concurrent_spenders_cannot_overdraw),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
