/* tests for gateway/resilience/gradient.c: the first sample sets 5 x min_limit,
 * latency growing past 1.5x the baseline shrinks the limit down to min_limit,
 * a flat latency grows it up to max_limit, and an idle upstream (less than half
 * the limit in use) leaves it alone. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "resilience/gradient.h"

static const struct mg_adaptive_conf conf = {
    .enabled = true, .min_limit = 4, .max_limit = 100, .smoothing = 0.5};

static void shrinks_under_rising_latency(void **state)
{
    struct mg_gradient g;
    _Atomic uint32_t limit = 0;
    (void)state;
    memset(&g, 0, sizeof g);
    mg_gradient_sample(&g, &limit, &conf, 1000, 0);
    assert_int_equal(limit, 20);
    for (int i = 0; i < 50; i++)
        mg_gradient_sample(&g, &limit, &conf, 10000, 20);
    assert_int_equal(limit, 4); /* 10x the baseline: down to min_limit */
}

static void grows_while_latency_is_flat(void **state)
{
    struct mg_gradient g;
    _Atomic uint32_t limit = 0;
    (void)state;
    memset(&g, 0, sizeof g);
    mg_gradient_sample(&g, &limit, &conf, 1000, 0);
    for (int i = 0; i < 200; i++)
        mg_gradient_sample(&g, &limit, &conf, 1000, limit);
    assert_int_equal(limit, 100);
}

static void idle_leaves_it_alone(void **state)
{
    struct mg_gradient g;
    _Atomic uint32_t limit = 0;
    (void)state;
    memset(&g, 0, sizeof g);
    mg_gradient_sample(&g, &limit, &conf, 1000, 0);
    for (int i = 0; i < 50; i++)
        mg_gradient_sample(&g, &limit, &conf, 10000, 9); /* 9 < 20 / 2 */
    assert_int_equal(limit, 20);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(shrinks_under_rising_latency),
        cmocka_unit_test(grows_while_latency_is_flat),
        cmocka_unit_test(idle_leaves_it_alone),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
