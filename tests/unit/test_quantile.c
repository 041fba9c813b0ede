/* tests for gateway/resilience/quantile.c: nothing until enough samples, the
 * quantile of the last MG_QUANTILE_RING samples, recomputed every
 * MG_QUANTILE_EVERY, and old samples forgotten. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "resilience/quantile.h"

static void nothing_before_enough_samples(void **state)
{
    struct mg_quantile q;
    (void)state;
    memset(&q, 0, sizeof q);
    for (uint32_t i = 0; i < MG_QUANTILE_RING / 4 - 1; i++)
        mg_quantile_add(&q, 1000, 950);
    assert_int_equal(mg_quantile_us(&q), 0);
}

static void p95_of_a_tail(void **state)
{
    struct mg_quantile q;
    (void)state;
    memset(&q, 0, sizeof q);
    /* 1..256 shuffled by a multiplier coprime with 256 */
    for (uint32_t i = 0; i < MG_QUANTILE_RING; i++)
        mg_quantile_add(&q, (i * 77) % MG_QUANTILE_RING + 1, 950);
    assert_int_equal(mg_quantile_us(&q), 244); /* k = 256 * 0.95 = 243 -> value 244 */
    memset(&q, 0, sizeof q);
    for (uint32_t i = 0; i < MG_QUANTILE_RING; i++)
        mg_quantile_add(&q, i % 50 == 0 ? 200000 : 1000, 950);
    assert_int_equal(mg_quantile_us(&q), 1000); /* 2 % slow: p95 is the fast ones */
}

static void old_samples_leave_the_ring(void **state)
{
    struct mg_quantile q;
    (void)state;
    memset(&q, 0, sizeof q);
    for (uint32_t i = 0; i < MG_QUANTILE_RING; i++)
        mg_quantile_add(&q, 5000, 500);
    for (uint32_t i = 0; i < MG_QUANTILE_RING; i++)
        mg_quantile_add(&q, 100, 500);
    assert_int_equal(mg_quantile_us(&q), 100);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(nothing_before_enough_samples),
        cmocka_unit_test(p95_of_a_tail),
        cmocka_unit_test(old_samples_leave_the_ring),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
