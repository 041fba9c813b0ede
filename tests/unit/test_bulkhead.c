/* tests for gateway/resilience/bulkhead.c: the limits, the hand-over of released
 * slots to waiters (no barging), leaving with and without a grant, picking the
 * worker with the oldest waiter, the wake-up protocol of bulkhead.h played by two
 * simulated workers, and threads hammering one bulkhead. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <pthread.h>
#include <sched.h>

#include "resilience/bulkhead.h"

static struct mg_bulkhead_conf limits(uint32_t max_concurrent, uint32_t max_queue)
{
    struct mg_bulkhead_conf c = {
        .max_concurrent = max_concurrent,
        .max_queue = max_queue,
        .queue_timeout_ms = 1000,
    };
    return c;
}

static void assert_counts(const struct mg_bulkhead *b, uint32_t in_use, uint32_t queued,
                          uint32_t granted)
{
    assert_int_equal(mg_bulkhead_in_use(b), in_use);
    assert_int_equal(mg_bulkhead_queued(b), queued);
    assert_int_equal(mg_bulkhead_granted(b), granted);
}

static void try_acquire_stops_at_max_concurrent(void **state)
{
    struct mg_bulkhead_conf c = limits(3, 5);
    struct mg_bulkhead b;

    mg_bulkhead_init(&b, 1);
    for (int i = 0; i < 3; i++)
        assert_true(mg_bulkhead_try_acquire(&b, &c));
    assert_false(mg_bulkhead_try_acquire(&b, &c));
    assert_counts(&b, 3, 0, 0); /* try_acquire never queues */
    assert_false(mg_bulkhead_release(&b, &c));
    assert_true(mg_bulkhead_try_acquire(&b, &c));
    for (int i = 0; i < 3; i++)
        assert_false(mg_bulkhead_release(&b, &c));
    assert_counts(&b, 0, 0, 0);
    mg_bulkhead_destroy(&b);
}

static void enter_acquires_then_queues_then_refuses(void **state)
{
    struct mg_bulkhead_conf c = limits(2, 2);
    struct mg_bulkhead b;

    mg_bulkhead_init(&b, 1);
    assert_int_equal(mg_bulkhead_enter(&b, &c), MG_BULKHEAD_ACQUIRED);
    assert_int_equal(mg_bulkhead_enter(&b, &c), MG_BULKHEAD_ACQUIRED);
    assert_int_equal(mg_bulkhead_enter(&b, &c), MG_BULKHEAD_QUEUED);
    assert_int_equal(mg_bulkhead_enter(&b, &c), MG_BULKHEAD_QUEUED);
    assert_int_equal(mg_bulkhead_enter(&b, &c), MG_BULKHEAD_FULL);
    assert_counts(&b, 2, 2, 0);
    mg_bulkhead_destroy(&b);
}

static void zero_queue_refuses_at_once(void **state)
{
    struct mg_bulkhead_conf c = limits(1, 0);
    struct mg_bulkhead b;

    mg_bulkhead_init(&b, 1);
    assert_int_equal(mg_bulkhead_enter(&b, &c), MG_BULKHEAD_ACQUIRED);
    assert_int_equal(mg_bulkhead_enter(&b, &c), MG_BULKHEAD_FULL);
    assert_counts(&b, 1, 0, 0);
    mg_bulkhead_destroy(&b);
}

static void release_hands_slot_to_waiter_not_newcomer(void **state)
{
    struct mg_bulkhead_conf c = limits(1, 5);
    struct mg_bulkhead b;

    mg_bulkhead_init(&b, 1);
    assert_int_equal(mg_bulkhead_enter(&b, &c), MG_BULKHEAD_ACQUIRED);
    assert_int_equal(mg_bulkhead_enter(&b, &c), MG_BULKHEAD_QUEUED);
    assert_true(mg_bulkhead_release(&b, &c)); /* handed over: kick a waiter */
    assert_counts(&b, 1, 1, 1);
    /* The slot is the waiter's: a newcomer queues behind it. */
    assert_false(mg_bulkhead_try_acquire(&b, &c));
    assert_int_equal(mg_bulkhead_enter(&b, &c), MG_BULKHEAD_QUEUED);
    assert_true(mg_bulkhead_claim(&b));
    assert_counts(&b, 1, 1, 0);
    assert_false(mg_bulkhead_claim(&b)); /* one grant, one claim */
    mg_bulkhead_destroy(&b);
}

static void claim_without_grant_fails(void **state)
{
    struct mg_bulkhead_conf c = limits(1, 5);
    struct mg_bulkhead b;

    mg_bulkhead_init(&b, 1);
    assert_false(mg_bulkhead_claim(&b));
    assert_int_equal(mg_bulkhead_enter(&b, &c), MG_BULKHEAD_ACQUIRED);
    assert_int_equal(mg_bulkhead_enter(&b, &c), MG_BULKHEAD_QUEUED);
    assert_false(mg_bulkhead_claim(&b));
    assert_counts(&b, 1, 1, 0);
    mg_bulkhead_destroy(&b);
}

static void leaving_without_grant_only_unqueues(void **state)
{
    struct mg_bulkhead_conf c = limits(1, 5);
    struct mg_bulkhead b;

    mg_bulkhead_init(&b, 1);
    assert_int_equal(mg_bulkhead_enter(&b, &c), MG_BULKHEAD_ACQUIRED);
    assert_int_equal(mg_bulkhead_enter(&b, &c), MG_BULKHEAD_QUEUED);
    mg_bulkhead_leave(&b);
    assert_counts(&b, 1, 0, 0);
    assert_false(mg_bulkhead_release(&b, &c)); /* nobody waits: freed */
    assert_counts(&b, 0, 0, 0);
    mg_bulkhead_destroy(&b);
}

static void leaving_with_pending_grant_frees_the_slot(void **state)
{
    struct mg_bulkhead_conf c = limits(1, 5);
    struct mg_bulkhead b;

    mg_bulkhead_init(&b, 1);
    assert_int_equal(mg_bulkhead_enter(&b, &c), MG_BULKHEAD_ACQUIRED);
    assert_int_equal(mg_bulkhead_enter(&b, &c), MG_BULKHEAD_QUEUED);
    assert_true(mg_bulkhead_release(&b, &c));
    mg_bulkhead_leave(&b); /* the only waiter: the grant was its own */
    assert_counts(&b, 0, 0, 0);
    assert_int_equal(mg_bulkhead_enter(&b, &c), MG_BULKHEAD_ACQUIRED);
    mg_bulkhead_destroy(&b);
}

static void leaving_keeps_grant_for_remaining_waiter(void **state)
{
    struct mg_bulkhead_conf c = limits(1, 5);
    struct mg_bulkhead b;

    mg_bulkhead_init(&b, 1);
    assert_int_equal(mg_bulkhead_enter(&b, &c), MG_BULKHEAD_ACQUIRED);
    assert_int_equal(mg_bulkhead_enter(&b, &c), MG_BULKHEAD_QUEUED);
    assert_int_equal(mg_bulkhead_enter(&b, &c), MG_BULKHEAD_QUEUED);
    assert_true(mg_bulkhead_release(&b, &c));
    mg_bulkhead_leave(&b); /* one waiter had no grant yet: that one leaves */
    assert_counts(&b, 1, 1, 1);
    assert_true(mg_bulkhead_claim(&b));
    assert_counts(&b, 1, 0, 0);
    mg_bulkhead_destroy(&b);
}

static void lowered_limit_frees_slots_before_handing_over(void **state)
{
    struct mg_bulkhead_conf wide = limits(3, 5), narrow = limits(1, 5);
    struct mg_bulkhead b;

    mg_bulkhead_init(&b, 1);
    for (int i = 0; i < 3; i++)
        assert_int_equal(mg_bulkhead_enter(&b, &wide), MG_BULKHEAD_ACQUIRED);
    assert_int_equal(mg_bulkhead_enter(&b, &wide), MG_BULKHEAD_QUEUED);
    assert_false(mg_bulkhead_release(&b, &narrow)); /* 3 > 1: freed */
    assert_false(mg_bulkhead_release(&b, &narrow)); /* 2 > 1: freed */
    assert_true(mg_bulkhead_release(&b, &narrow));  /* 1: the waiter's turn */
    assert_counts(&b, 1, 1, 1);
    mg_bulkhead_destroy(&b);
}

static void huge_limits_are_clamped_to_the_field(void **state)
{
    struct mg_bulkhead_conf c = limits(UINT32_MAX, UINT32_MAX);
    struct mg_bulkhead b;
    uint32_t got = 0;

    mg_bulkhead_init(&b, 1);
    for (uint32_t i = 0; i < MG_BULKHEAD_LIMIT_MAX; i++)
        got += mg_bulkhead_try_acquire(&b, &c);
    assert_int_equal(got, MG_BULKHEAD_LIMIT_MAX);
    assert_false(mg_bulkhead_try_acquire(&b, &c));
    assert_counts(&b, MG_BULKHEAD_LIMIT_MAX, 0, 0); /* nothing spilled into queued */
    assert_int_equal(mg_bulkhead_enter(&b, &c), MG_BULKHEAD_QUEUED);
    assert_counts(&b, MG_BULKHEAD_LIMIT_MAX, 1, 0);
    mg_bulkhead_destroy(&b);
}

static void pick_waiter_prefers_the_oldest(void **state)
{
    struct mg_bulkhead b;

    mg_bulkhead_init(&b, 4);
    assert_int_equal(mg_bulkhead_pick_waiter(&b), -1);
    mg_bulkhead_mark_waiting(&b, 2, 50);
    mg_bulkhead_mark_waiting(&b, 3, 20);
    mg_bulkhead_mark_waiting(&b, 1, 20);
    assert_int_equal(mg_bulkhead_pick_waiter(&b), 1); /* tie: lowest id */
    mg_bulkhead_unmark(&b, 1);
    assert_int_equal(mg_bulkhead_pick_waiter(&b), 3);
    mg_bulkhead_mark_waiting(&b, 3, 60); /* its head moved on */
    assert_int_equal(mg_bulkhead_pick_waiter(&b), 2);
    mg_bulkhead_mark_waiting(&b, 0, 0); /* time 0 is a valid enqueue time */
    assert_int_equal(mg_bulkhead_pick_waiter(&b), 0);
    for (unsigned i = 0; i < 4; i++)
        mg_bulkhead_unmark(&b, i);
    assert_int_equal(mg_bulkhead_pick_waiter(&b), -1);
    mg_bulkhead_destroy(&b);
}

/* ---- the protocol of bulkhead.h, played by simulated workers ---- */

#define SIM_WORKERS 2
#define SIM_QUEUE   8

/* One worker's FIFO of waiting exchange ids, and whether it was sent a wakeup. */
struct sim_worker {
    int ids[SIM_QUEUE];
    uint64_t since[SIM_QUEUE];
    int n;
    bool woken;
};

struct sim {
    struct mg_bulkhead b;
    struct mg_bulkhead_conf c;
    struct sim_worker w[SIM_WORKERS];
    int started[16]; /* exchange ids in the order they got a slot */
    int nstarted;
};

static void sim_remark(struct sim *s, unsigned w)
{
    if (s->w[w].n == 0)
        mg_bulkhead_unmark(&s->b, w);
    else
        mg_bulkhead_mark_waiting(&s->b, w, s->w[w].since[0]);
}

static void sim_pop(struct sim_worker *sw)
{
    for (int i = 1; i < sw->n; i++) {
        sw->ids[i - 1] = sw->ids[i];
        sw->since[i - 1] = sw->since[i];
    }
    sw->n--;
}

static void sim_kick(struct sim *s)
{
    int v = mg_bulkhead_pick_waiter(&s->b);
    if (v >= 0)
        s->w[v].woken = true; /* uv_async_send, or a uv_check on the same worker */
}

static void sim_admit(struct sim *s, unsigned w, int id, uint64_t now)
{
    struct sim_worker *sw = &s->w[w];

    if (sw->n == 0)
        mg_bulkhead_mark_waiting(&s->b, w, now);
    switch (mg_bulkhead_enter(&s->b, &s->c)) {
    case MG_BULKHEAD_ACQUIRED:
        s->started[s->nstarted++] = id;
        sim_remark(s, w);
        break;
    case MG_BULKHEAD_QUEUED:
        sw->ids[sw->n] = id;
        sw->since[sw->n++] = now;
        break;
    case MG_BULKHEAD_FULL:
        sim_remark(s, w);
        fail_msg("queue unexpectedly full");
    }
}

static void sim_release(struct sim *s)
{
    if (mg_bulkhead_release(&s->b, &s->c))
        sim_kick(s);
}

/* A worker's wakeup callback: claim for the local head while grants last. */
static void sim_drain(struct sim *s, unsigned w)
{
    struct sim_worker *sw = &s->w[w];

    sw->woken = false;
    while (sw->n > 0 && mg_bulkhead_claim(&s->b)) {
        s->started[s->nstarted++] = sw->ids[0];
        sim_pop(sw);
    }
    sim_remark(s, w);
    if (sw->n == 0 && mg_bulkhead_granted(&s->b) > 0)
        sim_kick(s);
}

/* Runs wakeups until none is pending, as the loops would. */
static void sim_run(struct sim *s)
{
    for (bool again = true; again;) {
        again = false;
        for (unsigned w = 0; w < SIM_WORKERS; w++)
            if (s->w[w].woken) {
                sim_drain(s, w);
                again = true;
            }
    }
}

static void sim_init(struct sim *s, uint32_t max_concurrent)
{
    *s = (struct sim){.c = limits(max_concurrent, SIM_QUEUE)};
    mg_bulkhead_init(&s->b, SIM_WORKERS);
}

static void handover_is_fifo_across_workers(void **state)
{
    struct sim s;

    sim_init(&s, 1);
    sim_admit(&s, 1, 100, 0); /* holds the slot */
    sim_admit(&s, 0, 1, 1);
    sim_admit(&s, 1, 2, 2);
    sim_admit(&s, 0, 3, 3);
    assert_counts(&s.b, 1, 3, 0);
    for (int i = 0; i < 3; i++) { /* each slot is released on worker 1 */
        sim_release(&s);
        sim_run(&s);
    }
    assert_int_equal(s.nstarted, 4);
    assert_int_equal(s.started[0], 100);
    assert_int_equal(s.started[1], 1); /* oldest first, whichever worker it is on */
    assert_int_equal(s.started[2], 2);
    assert_int_equal(s.started[3], 3);
    sim_release(&s);
    assert_counts(&s.b, 0, 0, 0);
    assert_int_equal(mg_bulkhead_pick_waiter(&s.b), -1);
    mg_bulkhead_destroy(&s.b);
}

static void grant_of_a_departed_waiter_is_passed_on(void **state)
{
    struct sim s;

    sim_init(&s, 1);
    sim_admit(&s, 1, 100, 0);
    sim_admit(&s, 0, 1, 1);
    sim_admit(&s, 1, 2, 2);
    sim_release(&s); /* grant, and worker 0 (oldest waiter) is woken */
    assert_true(s.w[0].woken);
    /* Before worker 0 runs, its waiter's client goes away. */
    mg_bulkhead_leave(&s.b);
    sim_pop(&s.w[0]);
    sim_remark(&s, 0);
    sim_run(&s); /* worker 0 finds nobody, passes the kick to worker 1 */
    assert_int_equal(s.nstarted, 2);
    assert_int_equal(s.started[1], 2);
    assert_counts(&s.b, 1, 0, 0);
    sim_release(&s);
    assert_counts(&s.b, 0, 0, 0);
    mg_bulkhead_destroy(&s.b);
}

static void waiter_timing_out_takes_a_pending_grant(void **state)
{
    struct sim s;

    sim_init(&s, 1);
    sim_admit(&s, 0, 100, 0);
    sim_admit(&s, 1, 1, 1);
    sim_release(&s); /* worker 1 is kicked, but its queue_timeout fires first */
    assert_true(mg_bulkhead_claim(&s.b));
    assert_counts(&s.b, 1, 0, 0);
    mg_bulkhead_destroy(&s.b);
}

/* ---- threads hammering one bulkhead ---- */

#define THREADS 6
#define ROUNDS  20000

struct hammer {
    struct mg_bulkhead *b;
    const struct mg_bulkhead_conf *c;
    pthread_barrier_t *start;
    _Atomic int *held;     /* slots held right now, counted by the holders */
    _Atomic int *max_held; /* the most ever held at once */
    int ran, claimed, rejected, gave_up;
    bool over_limit;
};

static void hold_slot(struct hammer *h)
{
    int now = atomic_fetch_add(h->held, 1) + 1;
    int seen = atomic_load(h->max_held);

    while (now > seen && !atomic_compare_exchange_weak(h->max_held, &seen, now))
        ;
    if (mg_bulkhead_in_use(h->b) > h->c->max_concurrent ||
        mg_bulkhead_queued(h->b) > h->c->max_queue)
        h->over_limit = true;
    for (volatile int spin = 0; spin < 50; spin++)
        ;
    if (h->ran % 8 == 0) /* let others find the bulkhead full now and then */
        sched_yield();
    h->ran++;
    atomic_fetch_sub(h->held, 1);
    (void)mg_bulkhead_release(h->b, h->c); /* waiters spin on claim: no kick needed */
}

/* A waiter spins on claim for a while, then gives up as a queue timeout would
 * (some at once, so leaving races with hand-overs too). */
static bool wait_for_grant(struct hammer *h, int patience)
{
    for (int spins = 0; spins < patience; spins++) {
        if (mg_bulkhead_claim(h->b))
            return true;
        sched_yield();
    }
    if (mg_bulkhead_claim(h->b))
        return true;
    mg_bulkhead_leave(h->b);
    return false;
}

static void *hammer_run(void *arg)
{
    struct hammer *h = arg;

    pthread_barrier_wait(h->start);
    for (int i = 0; i < ROUNDS; i++) {
        switch (mg_bulkhead_enter(h->b, h->c)) {
        case MG_BULKHEAD_ACQUIRED:
            hold_slot(h);
            break;
        case MG_BULKHEAD_QUEUED:
            if (wait_for_grant(h, i % 3 == 0 ? 1 : 200)) {
                h->claimed++;
                hold_slot(h);
            } else
                h->gave_up++;
            break;
        case MG_BULKHEAD_FULL:
            h->rejected++;
            sched_yield(); /* a rejection is instant: keep the threads in step */
            break;
        }
    }
    return NULL;
}

static void threads_never_exceed_limits_and_return_to_zero(void **state)
{
    struct mg_bulkhead_conf c = limits(2, 2);
    struct mg_bulkhead b;
    struct hammer h[THREADS];
    pthread_t t[THREADS];
    pthread_barrier_t start;
    _Atomic int held = 0, max_held = 0;
    int ran = 0, rejected = 0, gave_up = 0;

    mg_bulkhead_init(&b, THREADS);
    pthread_barrier_init(&start, NULL, THREADS);
    for (int i = 0; i < THREADS; i++) {
        h[i] = (struct hammer){
            .b = &b, .c = &c, .start = &start, .held = &held, .max_held = &max_held};
        pthread_create(&t[i], NULL, hammer_run, &h[i]);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        assert_false(h[i].over_limit);
        ran += h[i].ran;
        rejected += h[i].rejected;
        gave_up += h[i].gave_up;
    }
    pthread_barrier_destroy(&start);
    assert_int_equal(ran + rejected + gave_up, THREADS * ROUNDS);
    assert_true(ran > 0);
    assert_true(atomic_load(&max_held) <= 2);
    assert_int_equal(atomic_load(&held), 0);
    assert_counts(&b, 0, 0, 0);
    mg_bulkhead_destroy(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(try_acquire_stops_at_max_concurrent),
        cmocka_unit_test(enter_acquires_then_queues_then_refuses),
        cmocka_unit_test(zero_queue_refuses_at_once),
        cmocka_unit_test(release_hands_slot_to_waiter_not_newcomer),
        cmocka_unit_test(claim_without_grant_fails),
        cmocka_unit_test(leaving_without_grant_only_unqueues),
        cmocka_unit_test(leaving_with_pending_grant_frees_the_slot),
        cmocka_unit_test(leaving_keeps_grant_for_remaining_waiter),
        cmocka_unit_test(lowered_limit_frees_slots_before_handing_over),
        cmocka_unit_test(huge_limits_are_clamped_to_the_field),
        cmocka_unit_test(pick_waiter_prefers_the_oldest),
        cmocka_unit_test(handover_is_fifo_across_workers),
        cmocka_unit_test(grant_of_a_departed_waiter_is_passed_on),
        cmocka_unit_test(waiter_timing_out_takes_a_pending_grant),
        cmocka_unit_test(threads_never_exceed_limits_and_return_to_zero),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
