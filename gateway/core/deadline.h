/*
 * A deadline that is cheap to move.
 *
 * Restarting a uv timer removes it from the loop's heap and inserts it again.
 * An exchange moves its deadlines several times per request (keep-alive, head,
 * body, upstream read, pool idle), nearly always to later times. Here the uv
 * timer stays armed at or before the due time; moving the deadline later or
 * clearing it only writes `due`, and an early expiry re-arms for the rest.
 * Only moving it earlier touches the heap. Steady state: no heap work per request.
 */
#ifndef MG_DEADLINE_H
#define MG_DEADLINE_H

#include <stdint.h>
#include <uv.h>

struct mg_deadline;
typedef void (*mg_deadline_cb)(struct mg_deadline *d);

struct mg_deadline {
    uv_timer_t timer; /* timer.data belongs to the owner */
    uint64_t due;     /* loop time (ms) when it is due; 0 = cleared */
    uint64_t armed;   /* loop time the uv timer fires; 0 = idle */
    mg_deadline_cb fire;
};

static inline void mg_deadline__expired(uv_timer_t *t)
{
    struct mg_deadline *d = (struct mg_deadline *)t; /* timer is the first member */
    d->armed = 0;
    if (!d->due)
        return;
    uint64_t now = uv_now(t->loop);
    if (now < d->due) {
        d->armed = d->due;
        uv_timer_start(t, mg_deadline__expired, d->due - now, 0);
        return;
    }
    d->due = 0;
    d->fire(d);
}

static inline void mg_deadline_init(uv_loop_t *loop, struct mg_deadline *d, mg_deadline_cb fire,
                                    void *data)
{
    uv_timer_init(loop, &d->timer);
    d->timer.data = data;
    d->due = d->armed = 0;
    d->fire = fire;
}

/* Due in `ms` from the loop's current time; 0 clears it. The callback may set it again. */
static inline void mg_deadline_set(struct mg_deadline *d, uint64_t ms)
{
    if (!ms) {
        d->due = 0;
        return;
    }
    d->due = uv_now(d->timer.loop) + ms;
    if (!d->armed || d->armed > d->due) {
        d->armed = d->due;
        uv_timer_start(&d->timer, mg_deadline__expired, ms, 0);
    }
}

static inline uv_handle_t *mg_deadline_handle(struct mg_deadline *d)
{
    return (uv_handle_t *)&d->timer;
}

#endif
