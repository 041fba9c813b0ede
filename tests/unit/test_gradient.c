/* tests for gateway/resilience/gradient.c: the first sample sets 5 x min_limit,
 * latency growing past 1.5x the baseline shrinks the limit down to min_limit,
 * a flat latency grows it up to max_limit, it moves once per window and settles
 * against a knee, and an idle upstream (less than half the limit in use) leaves
 * it alone. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "resilience/gradient.h"

static const struct mg_adaptive_conf conf = {
    .enabled = true, .min_limit = 4, .max_limit = 100, .smoothing = 0.5};

/* Feeds `windows` windows of 10 samples of `rtt_us`, 10 ms apart (a window
 * closes after 100 ms), with `in_use` slots held (-1: the published limit). */
static void feed(struct mg_gradient *g, _Atomic uint32_t *limit, uint64_t *now, int windows,
                 uint64_t rtt_us, int in_use)
{
    for (int i = 0; i < windows * 10; i++) {
        *now += 10000;
        mg_gradient_sample(g, limit, &conf, rtt_us, in_use < 0 ? *limit : (uint32_t)in_use, *now);
    }
}

static void shrinks_under_rising_latency(void **state)
{
    struct mg_gradient g;
    _Atomic uint32_t limit = 0;
    uint64_t now = 1000000;
    (void)state;
    memset(&g, 0, sizeof g);
    mg_gradient_sample(&g, &limit, &conf, 1000, 0, now);
    assert_int_equal(limit, 20);
    feed(&g, &limit, &now, 1, 10000, 20);
    assert_true(limit < 20); /* one window at 10x the baseline: one step down */
    assert_true(limit > 4);
    feed(&g, &limit, &now, 60, 10000, 20);
    assert_int_equal(limit, 4); /* kept at 10x: down to min_limit */
}

/* Within a window the limit holds still, whatever the samples say. */
static void moves_once_per_window(void **state)
{
    struct mg_gradient g;
    _Atomic uint32_t limit = 0;
    uint64_t now = 1000000;
    (void)state;
    memset(&g, 0, sizeof g);
    mg_gradient_sample(&g, &limit, &conf, 1000, 0, now);
    for (int i = 0; i < 9; i++) {
        now += 10000;
        mg_gradient_sample(&g, &limit, &conf, 50000, 20, now);
        assert_int_equal(limit, 20);
    }
    /* 200 samples in 5 ms: many, but the window is not 100 ms long yet */
    for (int i = 0; i < 200; i++)
        mg_gradient_sample(&g, &limit, &conf, 50000, 20, now + 5000);
    assert_int_equal(limit, 20);
    now += 100000;
    mg_gradient_sample(&g, &limit, &conf, 50000, 20, now);
    assert_true(limit < 20);
}

static void grows_while_latency_is_flat(void **state)
{
    struct mg_gradient g;
    _Atomic uint32_t limit = 0;
    uint64_t now = 1000000;
    (void)state;
    memset(&g, 0, sizeof g);
    mg_gradient_sample(&g, &limit, &conf, 1000, 0, now);
    feed(&g, &limit, &now, 100, 1000, -1);
    assert_int_equal(limit, 100);
}

/* Latency that grows in proportion past a knee of 30 in flight: the limit
 * settles (the 1.5 tolerance and the sqrt headroom put the fixed point above
 * the knee) instead of swinging between min_limit and max_limit. */
static void settles_against_a_knee(void **state)
{
    struct mg_gradient g;
    _Atomic uint32_t limit = 0;
    uint64_t now = 1000000;
    (void)state;
    memset(&g, 0, sizeof g);
    mg_gradient_sample(&g, &limit, &conf, 1000, 0, now);
    uint32_t lo = 100, hi = 0, step = 0, prev = limit;
    for (int w = 0; w < 200; w++) {
        uint64_t rtt = limit <= 30 ? 1000 : 1000 * limit / 30;
        feed(&g, &limit, &now, 1, rtt, -1);
        if (w >= 50) {
            lo = limit < lo ? limit : lo;
            hi = limit > hi ? limit : hi;
            uint32_t d = limit > prev ? limit - prev : prev - limit;
            step = d > step ? d : step;
        }
        prev = limit;
    }
    /* near 1.5 x the knee plus headroom, creeping up only as the baseline
     * drifts; never a swing */
    assert_true(lo >= 40);
    assert_true(hi <= 80);
    assert_true(step <= 2);
}

static void idle_leaves_it_alone(void **state)
{
    struct mg_gradient g;
    _Atomic uint32_t limit = 0;
    uint64_t now = 1000000;
    (void)state;
    memset(&g, 0, sizeof g);
    mg_gradient_sample(&g, &limit, &conf, 1000, 0, now);
    feed(&g, &limit, &now, 5, 10000, 9); /* 9 < 20 / 2 */
    assert_int_equal(limit, 20);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(shrinks_under_rising_latency), cmocka_unit_test(moves_once_per_window),
        cmocka_unit_test(grows_while_latency_is_flat),  cmocka_unit_test(settles_against_a_knee),
        cmocka_unit_test(idle_leaves_it_alone),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
