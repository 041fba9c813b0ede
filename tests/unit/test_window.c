/* tests for gateway/resilience/window.c: the lock-free sliding window under the
 * breaker and the retry budget: expiry, workers with lagging clocks, saturation,
 * wrap-around of bucket numbers, and the bounded spend. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "resilience/window.h"

static void sums_what_was_added(void **state)
{
    struct mg_window w;
    struct mg_window_count n;

    mg_window_init(&w);
    mg_window_add(&w, 100, 0, 1, 0);
    mg_window_add(&w, 100, 150, 2, 1);
    mg_window_add(&w, 100, 999, 3, 2);
    n = mg_window_sum(&w, 100, 999);
    assert_int_equal(n.a, 6);
    assert_int_equal(n.b, 3);
}

static void buckets_leave_after_ten_widths(void **state)
{
    struct mg_window w;

    mg_window_init(&w);
    mg_window_add(&w, 100, 50, 1, 1);   /* bucket 0 */
    mg_window_add(&w, 100, 250, 10, 0); /* bucket 2 */
    assert_int_equal(mg_window_sum(&w, 100, 999).a, 11);
    assert_int_equal(mg_window_sum(&w, 100, 1000).a, 10); /* bucket 0 is 10 back */
    assert_int_equal(mg_window_sum(&w, 100, 1000).b, 0);
    assert_int_equal(mg_window_sum(&w, 100, 1200).a, 0);
    mg_window_add(&w, 100, 1050, 5, 0); /* reuses bucket 0's slot */
    assert_int_equal(mg_window_sum(&w, 100, 1050).a, 15);
}

static void lagging_clock_does_not_wipe_newer_bucket(void **state)
{
    struct mg_window w;

    mg_window_init(&w);
    mg_window_add(&w, 10, 105, 4, 0); /* a worker at bucket 10 */
    mg_window_add(&w, 10, 5, 1, 0);   /* one a whole window behind, same slot */
    assert_int_equal(mg_window_sum(&w, 10, 105).a, 5);
    mg_window_add(&w, 10, 95, 2, 0); /* slightly behind: its own bucket 9 */
    assert_int_equal(mg_window_sum(&w, 10, 105).a, 7);
    assert_int_equal(mg_window_sum(&w, 10, 95).a, 7); /* the laggard counts bucket 10 too */
}

static void counters_saturate_without_spilling(void **state)
{
    struct mg_window w;
    struct mg_window_count n;

    mg_window_init(&w);
    mg_window_add(&w, 1000, 0, MG_WINDOW_COUNT_MAX - 1, 7);
    mg_window_add(&w, 1000, 0, 5, 0);
    n = mg_window_sum(&w, 1000, 0);
    assert_int_equal(n.a, MG_WINDOW_COUNT_MAX);
    assert_int_equal(n.b, 7);
    mg_window_add(&w, 1000, 0, 0, UINT32_MAX);
    n = mg_window_sum(&w, 1000, 0);
    assert_int_equal(n.a, MG_WINDOW_COUNT_MAX);
    assert_int_equal(n.b, MG_WINDOW_COUNT_MAX);
}

static void bucket_numbers_wrap_around(void **state)
{
    struct mg_window w;
    const uint64_t wrap = 1u << 20; /* stamps are bucket numbers modulo 2^20 */

    mg_window_init(&w);
    mg_window_add(&w, 1, wrap - 3, 1, 0);
    mg_window_add(&w, 1, wrap + 2, 1, 0);
    assert_int_equal(mg_window_sum(&w, 1, wrap + 2).a, 2);
    assert_int_equal(mg_window_sum(&w, 1, wrap + 7).a, 1);
    assert_int_equal(mg_window_sum(&w, 1, wrap + 12).a, 0);
}

static void long_idle_bucket_is_stale_not_ahead(void **state)
{
    struct mg_window w;
    const uint64_t later = 5 + 600000; /* same slot, over half the 2^20 stamps on */

    mg_window_init(&w);
    mg_window_add(&w, 1, 5, 7, 7);
    mg_window_add(&w, 1, later, 1, 0); /* must restart the bucket, not add to it */
    assert_int_equal(mg_window_sum(&w, 1, later).a, 1);
    assert_int_equal(mg_window_sum(&w, 1, later).b, 0);
}

static void zero_width_counts_as_one_ms(void **state)
{
    struct mg_window w;

    mg_window_init(&w);
    mg_window_add(&w, 0, 3, 1, 0);
    assert_int_equal(mg_window_sum(&w, 0, 12).a, 1);
    assert_int_equal(mg_window_sum(&w, 0, 13).a, 0);
}

static void spend_respects_base_plus_ratio(void **state)
{
    struct mg_window w;
    int spent = 0;

    mg_window_init(&w);
    mg_window_add(&w, 1000, 0, 10, 0);
    for (int i = 0; i < 100; i++)
        spent += mg_window_spend(&w, 1000, 500, 3, 0.5);
    assert_int_equal(spent, 8); /* 3 + 0.5 * 10 */
    assert_int_equal(mg_window_sum(&w, 1000, 500).b, 8);
    assert_false(mg_window_spend(&w, 1000, 500, 0, 0)); /* nothing allowed */
}

static void give_back_returns_a_spend(void **state)
{
    struct mg_window w;

    mg_window_init(&w);
    mg_window_add(&w, 1000, 0, 10, 0);
    for (int i = 0; i < 8; i++)
        assert_true(mg_window_spend(&w, 1000, 500, 3, 0.5));
    assert_false(mg_window_spend(&w, 1000, 500, 3, 0.5)); /* 3 + 0.5 * 10 spent */
    mg_window_give_back(&w, 1000, 500);
    assert_int_equal(mg_window_sum(&w, 1000, 500).b, 7);
    assert_true(mg_window_spend(&w, 1000, 500, 3, 0.5));
    assert_int_equal(mg_window_sum(&w, 1000, 900).a, 10); /* a is left alone */
}

static void give_back_never_goes_below_zero_nor_into_another_bucket(void **state)
{
    struct mg_window w;

    mg_window_init(&w);
    mg_window_give_back(&w, 1000, 500); /* nothing spent: nothing to give */
    assert_int_equal(mg_window_sum(&w, 1000, 500).b, 0);
    assert_true(mg_window_spend(&w, 1000, 500, 1, 0));
    mg_window_give_back(&w, 1000, 10500); /* same slot, ten widths later */
    assert_int_equal(mg_window_sum(&w, 1000, 900).b, 1);
    mg_window_give_back(&w, 1000, 1500); /* the next bucket: the spend stays */
    assert_int_equal(mg_window_sum(&w, 1000, 1500).b, 1);
}

static void clear_empties_every_bucket(void **state)
{
    struct mg_window w;

    mg_window_init(&w);
    for (uint64_t t = 0; t < 1000; t += 100)
        mg_window_add(&w, 100, t, 1, 1);
    assert_int_equal(mg_window_sum(&w, 100, 999).a, 10);
    mg_window_clear(&w);
    assert_int_equal(mg_window_sum(&w, 100, 999).a, 0);
    assert_int_equal(mg_window_sum(&w, 100, 999).b, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sums_what_was_added),
        cmocka_unit_test(buckets_leave_after_ten_widths),
        cmocka_unit_test(lagging_clock_does_not_wipe_newer_bucket),
        cmocka_unit_test(counters_saturate_without_spilling),
        cmocka_unit_test(bucket_numbers_wrap_around),
        cmocka_unit_test(long_idle_bucket_is_stale_not_ahead),
        cmocka_unit_test(zero_width_counts_as_one_ms),
        cmocka_unit_test(spend_respects_base_plus_ratio),
        cmocka_unit_test(give_back_returns_a_spend),
        cmocka_unit_test(give_back_never_goes_below_zero_nor_into_another_bucket),
        cmocka_unit_test(clear_empties_every_bucket),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
