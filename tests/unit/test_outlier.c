/* tests for gateway/resilience/outlier.c: the first call starts the clock, an
 * error-rate or latency outlier is ejected for a doubling time, never more than
 * max_ejection_percent at once, too few requests never eject, and a busy
 * upstream is judged before the interval ends. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "resilience/outlier.h"

static const struct mg_outlier_conf conf = {
    .enabled = true,
    .interval_ms = 100,
    .error_factor = 2.0,
    .latency_factor = 3.0,
    .base_ejection_ms = 1000,
    .max_ejection_percent = 50,
    .min_requests = 10,
};

static struct mg_target_stats st[4];
static struct mg_target_stats *const ts[4] = {&st[0], &st[1], &st[2], &st[3]};
static struct mg_outlier_clock clk;

static int setup(void **state)
{
    (void)state;
    memset(st, 0, sizeof st);
    memset(&clk, 0, sizeof clk);
    return 0;
}

static void traffic(size_t k, unsigned requests, unsigned errors, uint64_t latency_us)
{
    for (unsigned i = 0; i < requests; i++)
        mg_outlier_record(&clk, &st[k], i < errors, latency_us);
}

static void error_outlier_ejected_for_a_doubling_time(void **state)
{
    (void)state;
    assert_int_equal(mg_outlier_maybe_eval(&clk, ts, 4, &conf, 1000, NULL), 0); /* clock starts */
    assert_int_equal(mg_outlier_maybe_eval(&clk, ts, 4, &conf, 1050, NULL), 0); /* not due */
    for (size_t k = 0; k < 4; k++)
        traffic(k, 30, k == 2 ? 10 : 1, 1000);
    assert_int_equal(mg_outlier_maybe_eval(&clk, ts, 4, &conf, 1100, NULL), 1);
    assert_int_equal(st[2].out_until, 2100);
    for (size_t k = 0; k < 4; k++)
        traffic(k, 30, k == 2 ? 10 : 0, 1000);
    assert_int_equal(mg_outlier_maybe_eval(&clk, ts, 4, &conf, 2200, NULL), 1);
    assert_int_equal(st[2].out_until, 4200); /* doubled */
    for (size_t k = 0; k < 4; k++)
        traffic(k, 30, 0, 1000);
    assert_int_equal(mg_outlier_maybe_eval(&clk, ts, 4, &conf, 4300, NULL), 0);
    assert_int_equal(st[2].outlier.ejections, 0); /* normal again */
}

static void latency_outlier_and_the_limit(void **state)
{
    (void)state;
    mg_outlier_maybe_eval(&clk, ts, 4, &conf, 1000, NULL);
    traffic(0, 20, 0, 10000);
    traffic(1, 20, 0, 10000);
    traffic(2, 20, 0, 10000);
    traffic(3, 20, 0, 1000);
    /* 0..2 are slow only against 3 alone: each compared with the other three,
     * none is 3x their mean; 3 is fast, not an outlier */
    assert_int_equal(mg_outlier_maybe_eval(&clk, ts, 4, &conf, 1100, NULL), 0);
    traffic(0, 20, 0, 50000);
    traffic(1, 20, 0, 50000);
    traffic(2, 20, 0, 1000);
    traffic(3, 20, 0, 1000);
    /* two slow ones: each against {the other slow, 2 fast}, 50 ms vs 17 ms, not 3x */
    assert_int_equal(mg_outlier_maybe_eval(&clk, ts, 4, &conf, 1200, NULL), 0);
    traffic(0, 20, 0, 50000);
    for (size_t k = 1; k < 4; k++)
        traffic(k, 20, 0, 1000);
    assert_int_equal(mg_outlier_maybe_eval(&clk, ts, 4, &conf, 1300, NULL), 1);
    assert_int_equal(st[0].out_until, 2300);
}

static void too_few_requests_never_eject(void **state)
{
    (void)state;
    mg_outlier_maybe_eval(&clk, ts, 4, &conf, 1000, NULL);
    traffic(0, 9, 9, 1000);
    for (size_t k = 1; k < 4; k++)
        traffic(k, 30, 0, 1000);
    assert_int_equal(mg_outlier_maybe_eval(&clk, ts, 4, &conf, 1100, NULL), 0);
    assert_int_equal(st[0].out_until, 0);
}

static void max_percent_caps_ejections(void **state)
{
    (void)state;
    mg_outlier_maybe_eval(&clk, ts, 4, &conf, 1000, NULL);
    traffic(0, 30, 20, 1000);
    traffic(1, 30, 20, 1000);
    traffic(2, 30, 20, 1000);
    traffic(3, 30, 0, 1000);
    /* three stand out against the rest? each is compared with the other three
     * (2 bad, 1 good): 67 % vs 44 %, not 2x: none; the good one is no outlier */
    assert_int_equal(mg_outlier_maybe_eval(&clk, ts, 4, &conf, 1100, NULL), 0);
    traffic(0, 30, 30, 1000);
    traffic(1, 30, 30, 1000);
    traffic(2, 30, 0, 1000);
    traffic(3, 30, 0, 1000);
    /* 0 and 1: 100 % against 50 %... and 0 %: each compared with {other bad,
     * 2 good}: 100 % vs 33 %: both outliers; 50 % of 4 = 2 may go */
    assert_int_equal(mg_outlier_maybe_eval(&clk, ts, 4, &conf, 1200, NULL), 2);
}

static void busy_upstream_is_judged_early(void **state)
{
    (void)state;
    mg_outlier_maybe_eval(&clk, ts, 4, &conf, 1000, NULL);
    for (size_t k = 0; k < 4; k++)
        traffic(k, 9, k == 2 ? 9 : 0, 1000);
    /* 36 tries < 4 x min_requests: only the interval makes it due */
    assert_false(mg_outlier_due(&clk, 4, &conf, 1050));
    for (size_t k = 0; k < 4; k++)
        traffic(k, 1, k == 2 ? 1 : 0, 1000);
    /* 40 tries, but not a fifth of the interval yet (20 ms) */
    assert_false(mg_outlier_due(&clk, 4, &conf, 1019));
    assert_int_equal(mg_outlier_maybe_eval(&clk, ts, 4, &conf, 1019, NULL), 0);
    uint64_t which = 0;
    assert_int_equal(mg_outlier_maybe_eval(&clk, ts, 4, &conf, 1020, &which), 1);
    assert_int_equal(which, 1u << 2);
    assert_int_equal(st[2].out_until, 2020);
    assert_int_equal(clk.last_ms, 1020);
    assert_int_equal(clk.full_ms, 1100); /* an early one: the full one stays due */
    assert_int_equal(clk.samples, 0);
}

static void early_evaluations_never_judge_latency(void **state)
{
    (void)state;
    mg_outlier_maybe_eval(&clk, ts, 4, &conf, 1000, NULL);
    traffic(0, 20, 0, 50000); /* a one-off stall of target 0 */
    for (size_t k = 1; k < 4; k++)
        traffic(k, 20, 0, 1000);
    assert_int_equal(mg_outlier_maybe_eval(&clk, ts, 4, &conf, 1030, NULL), 0); /* early */
    for (size_t k = 0; k < 4; k++)
        traffic(k, 100, 0, 1000);
    /* the full evaluation sees the whole interval: 120 tries averaging 9 ms
     * against 1 ms is an outlier, as one 50 ms second alone would be too */
    assert_int_equal(mg_outlier_maybe_eval(&clk, ts, 4, &conf, 1100, NULL), 1);
    assert_int_equal(st[0].out_until, 2100);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(error_outlier_ejected_for_a_doubling_time, setup),
        cmocka_unit_test_setup(latency_outlier_and_the_limit, setup),
        cmocka_unit_test_setup(too_few_requests_never_eject, setup),
        cmocka_unit_test_setup(max_percent_caps_ejections, setup),
        cmocka_unit_test_setup(busy_upstream_is_judged_early, setup),
        cmocka_unit_test_setup(early_evaluations_never_judge_latency, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
