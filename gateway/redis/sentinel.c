/*
 * Sentinel discovery: one query state machine and one subscription, both on
 * hiredis async contexts attached to the owner's loop (sentinel.h).
 *
 * Invariants:
 *   - s->qac / s->sac is the live query / subscription context or NULL. A
 *     context we give up on is cleared from s before it is freed, and every
 *     hiredis callback first checks that its context is still the live one,
 *     so the NULL replies hiredis delivers while freeing a context (now, or
 *     right after the callback we are in) are ignored.
 *   - A context is never freed from its own connect callback (hiredis goes on
 *     using it after the callback returns); a failed connect is only forgotten.
 *   - `querying` is true from mg_sentinel_query until the one on_master or
 *     on_unknown call; qtimer is armed exactly while a sentinel is being asked
 *     (or, at 0 ms, to move on without recursing).
 *
 * Ownership: the struct owns its copies of the config, both contexts (the
 * libuv adapter owns its poll handles) and two timers. It is freed in the
 * close callback of the last timer, which runs after any hiredis callback that
 * was on the stack when mg_sentinel_close was called has returned, and after
 * hiredis has finished freeing the contexts.
 */
#include "redis/sentinel.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "core/log.h"
#include "redis/hiredis_uv.h"

#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 2000

struct saddr {
    char host[INET6_ADDRSTRLEN];
    int port;
};

struct mg_sentinel {
    uv_loop_t *loop;
    const struct mg_sentinel_ops *ops;
    void *ud;
    char *master;   /* owned copy */
    char *password; /* owned copy, or NULL */
    struct saddr *addrs;
    size_t naddrs;
    uint64_t timeout_ms;
    uint64_t rng; /* xorshift state: start sentinel, backoff jitter */

    /* query */
    redisAsyncContext *qac;
    bool querying;
    size_t qidx;   /* the sentinel being asked */
    size_t qtried; /* sentinels asked in this query */
    size_t prefer; /* where the next query starts: the last one that answered */
    uv_timer_t qtimer;

    /* subscription */
    redisAsyncContext *sac;
    size_t sidx; /* the sentinel subscribed to (or being tried) */
    uint64_t sbackoff_ms;
    bool subscribed;
    uv_timer_t stimer; /* confirmation deadline, or the backoff before the next try */

    unsigned handles; /* timers not yet closed */
    bool closing;
    bool warned; /* one warning until a subscription is confirmed */
    struct mg_sentinel_stats stats;
};

static void subscribe(struct mg_sentinel *s);

static uint64_t next_random(struct mg_sentinel *s)
{
    s->rng ^= s->rng << 13;
    s->rng ^= s->rng >> 7;
    s->rng ^= s->rng << 17;
    return s->rng;
}

/* Connects to sentinel i and attaches the context; NULL if that failed at once
 * (the context is freed then; no callback ran). */
static redisAsyncContext *connect_sentinel(struct mg_sentinel *s, size_t i,
                                           redisDisconnectCallback *on_disconnect,
                                           redisConnectCallback *on_connect)
{
    redisAsyncContext *ac = redisAsyncConnect(s->addrs[i].host, s->addrs[i].port);

    if (ac == NULL)
        mg_fatal("out of memory (redisAsyncConnect)");
    if (ac->err || mg_hiredis_attach(ac, s->loop) < 0) {
        redisAsyncFree(ac); /* no callbacks set yet: nothing runs */
        return NULL;
    }
    ac->data = s;
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    /* Connect callback last: setting it arms the write watcher through the adapter. */
    redisAsyncSetConnectCallback(ac, on_connect);
    if (s->password != NULL) {
        const char *argv[] = {"AUTH", s->password};
        size_t len[] = {4, strlen(s->password)};

        /* No callback: a refused AUTH shows in the reply to the command that
         * follows it (NOAUTH), which is handled there. */
        redisAsyncCommandArgv(ac, NULL, NULL, 2, argv, len);
    }
    return ac;
}

/* ---- query ---- */

static void ask(struct mg_sentinel *s);

static void on_qtimer(uv_timer_t *t)
{
    struct mg_sentinel *s = t->data;
    redisAsyncContext *ac = s->qac;

    /* No answer in time (or a connect that failed at once): the next one. */
    s->qac = NULL;
    if (ac != NULL)
        redisAsyncFree(ac);
    ask(s);
}

/* Gives up on the sentinel being asked: on to the next one without recursion
 * (ask() may be reached from inside a hiredis callback of that context). */
static void move_on(struct mg_sentinel *s, bool free_it)
{
    redisAsyncContext *ac = s->qac;

    s->qac = NULL;
    if (free_it && ac != NULL)
        redisAsyncFree(ac); /* inside its callback: freed when the callback returns */
    uv_timer_start(&s->qtimer, on_qtimer, 0, 0);
}

static void on_qconnect(const redisAsyncContext *ac, int status)
{
    struct mg_sentinel *s = ac->data;

    if (status != REDIS_OK && ac == s->qac)
        move_on(s, false); /* hiredis frees it after this callback */
}

static void on_qdisconnect(const redisAsyncContext *ac, int status)
{
    struct mg_sentinel *s = ac->data;

    (void)status;
    if (ac == s->qac)
        move_on(s, false);
}

/* host and port from a get-master-addr-by-name reply, or -1. */
static int parse_addr(const redisReply *r, char host[INET6_ADDRSTRLEN], int *port)
{
    char *end;
    long p;

    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_STRING ||
        r->element[0]->len >= INET6_ADDRSTRLEN)
        return -1;
    memcpy(host, r->element[0]->str, (size_t)r->element[0]->len + 1);
    p = strtol(r->element[1]->str, &end, 10);
    if (*end != '\0' || p < 1 || p > 65535 || !mg_hiredis_numeric_host(host))
        return -1;
    *port = (int)p;
    return 0;
}

static void on_qreply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct mg_sentinel *s = privdata;
    const redisReply *r = reply;
    char host[INET6_ADDRSTRLEN];
    int port;

    if (ac != s->qac || s->closing)
        return; /* a context we gave up on, being freed */
    if (r == NULL) {
        move_on(s, false); /* the context is going away by itself */
        return;
    }
    if (parse_addr(r, host, &port) < 0) {
        /* nil: this sentinel does not know the name; an error: NOAUTH, ... */
        if (r->type == REDIS_REPLY_ERROR)
            mg_debug("idempotency: sentinel %s:%d answered %s", s->addrs[s->qidx].host,
                     s->addrs[s->qidx].port, r->str);
        else if (r->type == REDIS_REPLY_ARRAY)
            mg_warn("idempotency: sentinel %s:%d names master '%s' by a hostname; set "
                    "'sentinel resolve-hostnames no' (a worker loop cannot resolve names)",
                    s->addrs[s->qidx].host, s->addrs[s->qidx].port, s->master);
        move_on(s, true);
        return;
    }
    s->qac = NULL;
    redisAsyncFree(ac); /* deferred until this callback returns */
    uv_timer_stop(&s->qtimer);
    s->prefer = s->qidx;
    s->querying = false;
    s->stats.answers++;
    s->ops->on_master(s->ud, host, port); /* may close s: return at once */
}

/* Asks the next sentinel of this query, or ends it with on_unknown. Runs from
 * the query timer, so never inside mg_sentinel_query. */
static void ask(struct mg_sentinel *s)
{
    const char *argv[3] = {"SENTINEL", "get-master-addr-by-name", s->master};
    size_t len[3] = {8, 23, strlen(s->master)};

    if (s->closing)
        return;
    if (s->qtried == s->naddrs) {
        s->querying = false;
        s->ops->on_unknown(s->ud);
        return;
    }
    if (s->qtried > 0)
        s->qidx = (s->qidx + 1) % s->naddrs;
    s->qtried++;
    s->stats.asked++;
    s->qac = connect_sentinel(s, s->qidx, on_qdisconnect, on_qconnect);
    if (s->qac == NULL || redisAsyncCommandArgv(s->qac, on_qreply, s, 3, argv, len) != REDIS_OK) {
        move_on(s, true);
        return;
    }
    uv_timer_start(&s->qtimer, on_qtimer, s->timeout_ms, 0);
}

void mg_sentinel_query(struct mg_sentinel *s)
{
    if (s->closing || s->querying)
        return;
    s->querying = true;
    s->qtried = 0;
    s->qidx = s->prefer;
    s->stats.queries++;
    /* Through the timer: the answer must never come inside this call. */
    uv_timer_start(&s->qtimer, on_qtimer, 0, 0);
}

bool mg_sentinel_querying(const struct mg_sentinel *s)
{
    return s->querying;
}

/* ---- subscription ---- */

static void on_stimer(uv_timer_t *t)
{
    struct mg_sentinel *s = t->data;
    redisAsyncContext *ac = s->sac;

    if (ac != NULL) {
        /* No confirmation within the timeout: this sentinel is of no use now. */
        s->sac = NULL;
        redisAsyncFree(ac);
        s->sidx = (s->sidx + 1) % s->naddrs;
    }
    subscribe(s);
}

/* The subscription is gone or never came: the next sentinel after a backoff. */
static void resubscribe_later(struct mg_sentinel *s, bool free_it, const char *why)
{
    redisAsyncContext *ac = s->sac;
    uint64_t step = s->sbackoff_ms;

    s->sac = NULL;
    if (free_it && ac != NULL)
        redisAsyncFree(ac);
    if (s->closing)
        return;
    if (!s->warned)
        mg_warn("idempotency: sentinel %s:%d: no +switch-master subscription (%s); trying the "
                "next sentinel",
                s->addrs[s->sidx].host, s->addrs[s->sidx].port, why);
    s->warned = true;
    s->subscribed = false;
    s->sidx = (s->sidx + 1) % s->naddrs;
    s->sbackoff_ms = step * 2 < BACKOFF_MAX_MS ? step * 2 : BACKOFF_MAX_MS;
    uv_timer_start(&s->stimer, on_stimer, step / 2 + next_random(s) % (step / 2 + 1), 0);
}

static void on_sconnect(const redisAsyncContext *ac, int status)
{
    struct mg_sentinel *s = ac->data;

    if (status != REDIS_OK && ac == s->sac)
        resubscribe_later(s, false, ac->errstr[0] ? ac->errstr : "connect failed");
}

static void on_sdisconnect(const redisAsyncContext *ac, int status)
{
    struct mg_sentinel *s = ac->data;

    (void)status;
    if (ac == s->sac)
        resubscribe_later(s, false, ac->errstr[0] ? ac->errstr : "disconnected");
}

/* "<master> <old-ip> <old-port> <new-ip> <new-port>" for our master: calls on_switch. */
static void switch_message(struct mg_sentinel *s, const char *msg)
{
    char name[256], oldip[INET6_ADDRSTRLEN], newip[INET6_ADDRSTRLEN];
    int oldport, newport;

    if (sscanf(msg, "%255s %45s %d %45s %d", name, oldip, &oldport, newip, &newport) != 5 ||
        strcmp(name, s->master) != 0)
        return;
    if (newport < 1 || newport > 65535 || !mg_hiredis_numeric_host(newip))
        return;
    s->stats.switches++;
    mg_info("idempotency: sentinel: master %s moved from %s:%d to %s:%d", name, oldip, oldport,
            newip, newport);
    s->ops->on_switch(s->ud, newip, newport); /* may close s: return at once */
}

static void on_smessage(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct mg_sentinel *s = privdata;
    const redisReply *r = reply;
    const redisReply *kind;

    if (ac != s->sac || s->closing)
        return;
    if (r == NULL) {
        resubscribe_later(s, false, ac->errstr[0] ? ac->errstr : "connection closed");
        return;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 3 ||
        r->element[0]->type != REDIS_REPLY_STRING) {
        resubscribe_later(s, true, r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
        return;
    }
    kind = r->element[0];
    if (strcmp(kind->str, "subscribe") == 0) {
        uv_timer_stop(&s->stimer);
        s->subscribed = true;
        s->warned = false;
        s->sbackoff_ms = BACKOFF_MIN_MS;
    } else if (strcmp(kind->str, "message") == 0 && r->element[2]->type == REDIS_REPLY_STRING) {
        switch_message(s, r->element[2]->str);
    }
}

static void subscribe(struct mg_sentinel *s)
{
    const char *argv[2] = {"SUBSCRIBE", "+switch-master"};
    size_t len[2] = {9, 14};

    if (s->closing || s->sac != NULL)
        return;
    s->sac = connect_sentinel(s, s->sidx, on_sdisconnect, on_sconnect);
    if (s->sac == NULL) {
        resubscribe_later(s, false, "cannot connect");
        return;
    }
    /* A dead peer is noticed by TCP keepalive; a live sentinel that stops
     * answering is not, which is why the subscription is only a hint. */
    redisEnableKeepAlive(&s->sac->c);
    if (redisAsyncCommandArgv(s->sac, on_smessage, s, 2, argv, len) != REDIS_OK) {
        resubscribe_later(s, true, "cannot send SUBSCRIBE");
        return;
    }
    uv_timer_start(&s->stimer, on_stimer, s->timeout_ms, 0);
}

/* ---- lifetime ---- */

static void on_timer_close(uv_handle_t *h)
{
    struct mg_sentinel *s = h->data;

    if (--s->handles > 0)
        return;
    free(s->addrs);
    free(s->master);
    free(s->password);
    free(s);
}

static char *xstrdup(const char *p)
{
    char *d = strdup(p);

    if (d == NULL)
        mg_fatal("out of memory (sentinel)");
    return d;
}

struct mg_sentinel *mg_sentinel_open(uv_loop_t *loop, const struct mg_sentinel_conf *conf,
                                     uint64_t timeout_ms, const struct mg_sentinel_ops *ops,
                                     void *ud)
{
    struct mg_sentinel *s = calloc(1, sizeof *s);

    MG_ASSERT(conf->naddresses > 0);
    if (s == NULL || (s->addrs = calloc(conf->naddresses, sizeof *s->addrs)) == NULL)
        mg_fatal("out of memory (sentinel)");
    s->loop = loop;
    s->ops = ops;
    s->ud = ud;
    s->master = xstrdup(conf->master);
    s->password = conf->password ? xstrdup(conf->password) : NULL;
    s->naddrs = conf->naddresses;
    for (size_t i = 0; i < s->naddrs; i++) {
        const struct sockaddr *sa = (const struct sockaddr *)&conf->addresses[i].addr;

        if (sa->sa_family == AF_INET6) {
            const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;

            inet_ntop(AF_INET6, &in6->sin6_addr, s->addrs[i].host, sizeof s->addrs[i].host);
            s->addrs[i].port = ntohs(in6->sin6_port);
        } else {
            const struct sockaddr_in *in = (const struct sockaddr_in *)sa;

            MG_ASSERT(sa->sa_family == AF_INET);
            inet_ntop(AF_INET, &in->sin_addr, s->addrs[i].host, sizeof s->addrs[i].host);
            s->addrs[i].port = ntohs(in->sin_port);
        }
    }
    s->timeout_ms = timeout_ms ? timeout_ms : 1;
    s->rng = (uint64_t)(uintptr_t)s ^ uv_hrtime() ^ 0x9e3779b97f4a7c15ull;
    s->sbackoff_ms = BACKOFF_MIN_MS;
    s->sidx = next_random(s) % s->naddrs;
    s->prefer = s->sidx;
    MG_ASSERT(uv_timer_init(loop, &s->qtimer) == 0);
    MG_ASSERT(uv_timer_init(loop, &s->stimer) == 0);
    s->qtimer.data = s->stimer.data = s;
    s->handles = 2;
    /* Through the timer, like a query: nothing may call back inside open. */
    uv_timer_start(&s->stimer, on_stimer, 0, 0);
    return s;
}

void mg_sentinel_stats(const struct mg_sentinel *s, struct mg_sentinel_stats *out)
{
    *out = s->stats;
    out->subscribed = s->subscribed;
}

void mg_sentinel_close(struct mg_sentinel *s)
{
    redisAsyncContext *q, *sub;

    if (s == NULL || s->closing)
        return;
    s->closing = true;
    q = s->qac;
    sub = s->sac;
    s->qac = s->sac = NULL;
    /* Their NULL replies find the contexts cleared and do nothing. */
    if (q != NULL)
        redisAsyncFree(q);
    if (sub != NULL)
        redisAsyncFree(sub);
    uv_timer_stop(&s->qtimer);
    uv_timer_stop(&s->stimer);
    uv_close((uv_handle_t *)&s->qtimer, on_timer_close);
    uv_close((uv_handle_t *)&s->stimer, on_timer_close);
}
