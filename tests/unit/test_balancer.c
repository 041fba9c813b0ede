/* tests for gateway/upstream/balancer.c: smooth weighted round robin over available targets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "upstream/balancer.h"
#include "resilience/breaker.h"

#define MAXT 100

struct fixture {
    struct mg_breaker_conf bc;
    struct mg_upstream_conf uc;
    struct mg_target_conf tc[MAXT];
    struct mg_target_stats st[MAXT];
    struct mg_target_rt t[MAXT];
    struct mg_upstream_rt u;
};

static const struct mg_tried none;

static struct mg_tried tried_of(const int *idx, size_t n)
{
    struct mg_tried t = {0};
    for (size_t i = 0; i < n; i++)
        mg_tried_add(&t, (size_t)idx[i]);
    return t;
}

static void setup(struct fixture *f, const uint32_t *weights, size_t n)
{
    memset(f, 0, sizeof *f);
    f->bc = (struct mg_breaker_conf){.consecutive_failures = 2,
                                     .window_ms = 10000,
                                     .min_requests = 100,
                                     .open_for_ms = 1000,
                                     .max_open_for_ms = 2000,
                                     .half_open_requests = 1};
    f->uc.breaker = f->bc;
    f->uc.targets = f->tc;
    f->uc.ntargets = n;
    for (size_t i = 0; i < n; i++) {
        f->tc[i].weight = weights[i];
        mg_breaker_init(&f->st[i].breaker);
        f->t[i] = (struct mg_target_rt){.conf = &f->tc[i], .stats = &f->st[i]};
    }
    f->u = (struct mg_upstream_rt){.conf = &f->uc, .targets = f->t};
}

static void weights_5_1_1_give_the_smooth_order(void **state)
{
    struct fixture f;
    setup(&f, (uint32_t[]){5, 1, 1}, 3);
    char order[8] = {0};
    for (int i = 0; i < 7; i++)
        order[i] = (char)('a' + mg_balancer_pick(&f.u, &none, 0));
    assert_string_equal(order, "aabacaa");
}

static void tried_targets_are_avoided_while_others_remain(void **state)
{
    struct fixture f;
    setup(&f, (uint32_t[]){1, 1, 1}, 3);
    struct mg_tried two = tried_of((int[]){0, 1}, 2), three = tried_of((int[]){0, 1, 2}, 3);
    for (int i = 0; i < 10; i++)
        assert_int_equal(mg_balancer_pick(&f.u, &two, 0), 2);
    int all_tried = mg_balancer_pick(&f.u, &three, 0);
    assert_true(all_tried >= 0 && all_tried < 3);
}

static void unhealthy_and_open_targets_are_skipped(void **state)
{
    struct fixture f;
    setup(&f, (uint32_t[]){1, 1, 1}, 3);
    atomic_store(&f.st[0].unhealthy, 1);
    uint32_t probe = 0;
    for (int i = 0; i < 2; i++) {
        assert_true(mg_breaker_acquire(&f.st[1].breaker, &f.bc, 0, &probe));
        mg_breaker_report(&f.st[1].breaker, &f.bc, 0, true, probe);
    }
    for (int i = 0; i < 6; i++)
        assert_int_equal(mg_balancer_pick(&f.u, &none, 1), 2);
    atomic_store(&f.st[2].unhealthy, 1);
    assert_int_equal(mg_balancer_pick(&f.u, &none, 1), -1);
}

/* No silent cap: every one of 100 targets is offered (it was 64). */
static void any_number_of_targets_is_served(void **state)
{
    static struct fixture f;
    uint32_t w[MAXT];
    for (size_t i = 0; i < MAXT; i++)
        w[i] = 1;
    setup(&f, w, MAXT);
    int seen[MAXT] = {0};
    for (int i = 0; i < MAXT; i++)
        seen[mg_balancer_pick(&f.u, &none, 0)]++;
    for (int i = 0; i < MAXT; i++)
        assert_int_equal(seen[i], 1);
    struct mg_tried tried = tried_of((int[]){99, 70, 65}, 3);
    for (int i = 0; i < 3 * MAXT; i++) {
        int k = mg_balancer_pick(&f.u, &tried, 0);
        assert_true(k != 99 && k != 70 && k != 65);
    }
    for (int i = 0; i < MAXT - 1; i++)
        atomic_store(&f.st[i].unhealthy, 1);
    assert_int_equal(mg_balancer_pick(&f.u, &none, 0), 99);
    assert_int_equal(mg_balancer_pick(&f.u, &tried, 0), 99); /* tried, but the only one */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(weights_5_1_1_give_the_smooth_order),
        cmocka_unit_test(tried_targets_are_avoided_while_others_remain),
        cmocka_unit_test(any_number_of_targets_is_served),
        cmocka_unit_test(unhealthy_and_open_targets_are_skipped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
