/*
 * Process-wide Redis connection state (redis_state.h). Invariant: ready <=
 * stores; `master` changes only in mg_redis_state_up, which is also the one
 * place a failover is counted. All fields are under `mu`.
 */
#include "idempotency/redis_state.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct mg_redis_state st;

void mg_redis_state_opened(bool sentinel, const char *master_name)
{
    pthread_mutex_lock(&mu);
    st.stores++;
    st.sentinel = sentinel;
    snprintf(st.master_name, sizeof st.master_name, "%s", sentinel ? master_name : "");
    pthread_mutex_unlock(&mu);
}

void mg_redis_state_closed(bool was_ready)
{
    pthread_mutex_lock(&mu);
    if (st.stores > 0)
        st.stores--;
    if (was_ready && st.ready > 0)
        st.ready--;
    pthread_mutex_unlock(&mu);
}

void mg_redis_state_up(const char *addr, uint64_t outage_ms)
{
    struct timespec now;

    clock_gettime(CLOCK_REALTIME, &now);
    pthread_mutex_lock(&mu);
    st.ready++;
    /* Only a discovered master can fail over; a fixed address changes only
     * with a reload, which is not a failover. */
    if (st.sentinel && st.master[0] != '\0' && strcmp(st.master, addr) != 0) {
        st.failovers++;
        st.last_failover_unix_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
        snprintf(st.last_failover_from, sizeof st.last_failover_from, "%s", st.master);
        snprintf(st.last_failover_to, sizeof st.last_failover_to, "%s", addr);
        st.last_failover_unavailable_ms = outage_ms;
    }
    snprintf(st.master, sizeof st.master, "%s", addr);
    pthread_mutex_unlock(&mu);
}

void mg_redis_state_down(void)
{
    pthread_mutex_lock(&mu);
    if (st.ready > 0)
        st.ready--;
    pthread_mutex_unlock(&mu);
}

void mg_redis_state_read(struct mg_redis_state *out)
{
    pthread_mutex_lock(&mu);
    *out = st;
    pthread_mutex_unlock(&mu);
}
