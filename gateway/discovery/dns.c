/*
 * c-ares on libuv (see dns.h). The channel tells which sockets it wants
 * watched through its socket-state callback; each gets a uv_poll handle, kept
 * in a short list (a channel uses a few sockets: one UDP socket per server,
 * TCP on truncation). Every event ends with the timer re-armed from
 * ares_timeout(), which is how c-ares retransmits and times queries out.
 *
 * Ownership: struct mg_dns owns its polls and its timer; it is freed when the
 * last of them has closed after mg_dns_close.
 */
#include "discovery/dns.h"

#include <arpa/nameser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

struct dns_poll {
    uv_poll_t h;
    struct mg_dns *dns;
    ares_socket_t fd;
    struct dns_poll *next;
};

struct mg_dns {
    uv_loop_t *loop;
    ares_channel ch;
    uv_timer_t timer;
    struct dns_poll *polls;
    unsigned open_handles; /* polls + timer not yet closed */
    bool closing;
    void (*on_closed)(void *data);
    void *closed_data;
};

static void maybe_free(struct mg_dns *dns)
{
    if (!dns->closing || dns->open_handles > 0)
        return;
    void (*cb)(void *) = dns->on_closed;
    void *data = dns->closed_data;
    free(dns);
    if (cb)
        cb(data);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct mg_dns *dns = h->data;
    if (h->type == UV_POLL)
        free(h); /* the dns_poll (h is its first member) */
    dns->open_handles--;
    maybe_free(dns);
}

static void on_timer(uv_timer_t *t);

static void rearm(struct mg_dns *dns)
{
    struct timeval tv, *tvp;
    if (dns->closing)
        return;
    tvp = ares_timeout(dns->ch, NULL, &tv);
    if (tvp == NULL) {
        uv_timer_stop(&dns->timer);
        return;
    }
    uint64_t ms = (uint64_t)tvp->tv_sec * 1000 + (uint64_t)(tvp->tv_usec + 999) / 1000;
    uv_timer_start(&dns->timer, on_timer, ms, 0);
}

static void on_timer(uv_timer_t *t)
{
    struct mg_dns *dns = t->data;
    ares_process_fd(dns->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    rearm(dns);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct dns_poll *p = (struct dns_poll *)h;
    struct mg_dns *dns = p->dns;
    /* An error on the socket: let c-ares read it and see the failure. */
    ares_socket_t r = (status < 0 || (events & UV_READABLE)) ? p->fd : ARES_SOCKET_BAD;
    ares_socket_t w = (status == 0 && (events & UV_WRITABLE)) ? p->fd : ARES_SOCKET_BAD;
    ares_process_fd(dns->ch, r, w);
    rearm(dns);
}

static void close_poll(struct dns_poll *p)
{
    uv_poll_stop(&p->h);
    uv_close((uv_handle_t *)&p->h, on_handle_closed);
}

/* c-ares: start, change or stop watching `fd` (it closes the socket right
 * after a (0, 0) call, so the handle stops now). */
static void on_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    struct mg_dns *dns = data;
    struct dns_poll **pp = &dns->polls, *p;
    while (*pp && (*pp)->fd != fd)
        pp = &(*pp)->next;
    p = *pp;
    if (!readable && !writable) {
        if (p) {
            *pp = p->next;
            close_poll(p);
        }
        return;
    }
    if (!p) {
        p = calloc(1, sizeof *p);
        if (!p)
            mg_fatal("out of memory (dns poll)");
        if (uv_poll_init_socket(dns->loop, &p->h, fd) != 0) {
            mg_warn("dns: cannot watch socket %d", (int)fd);
            free(p);
            return;
        }
        p->h.data = dns;
        p->dns = dns;
        p->fd = fd;
        p->next = dns->polls;
        dns->polls = p;
        dns->open_handles++;
    }
    uv_poll_start(&p->h, (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0), on_poll);
}

struct mg_dns *mg_dns_open(uv_loop_t *loop, const struct mg_resolver_conf *rc, char *err,
                           size_t errlen)
{
    static bool library_ready; /* main thread only, as every mg_dns_open */
    if (!library_ready && ares_library_init(ARES_LIB_INIT_ALL) == ARES_SUCCESS)
        library_ready = true;
    struct mg_dns *dns = calloc(1, sizeof *dns);
    if (!dns)
        mg_fatal("out of memory (dns)");
    dns->loop = loop;
    struct ares_options o = {.sock_state_cb = on_sock_state,
                             .sock_state_cb_data = dns,
                             .timeout = (int)(rc->timeout_ms > 1 ? rc->timeout_ms / 2 : 1),
                             .tries = 2};
    /* Two tries of timeout/2 each: one lookup gives up after about `timeout`. */
    int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES;
    int rc2 = ares_init_options(&dns->ch, &o, mask);
    if (rc2 == ARES_SUCCESS && rc->nservers > 0) {
        char csv[1024] = "";
        size_t len = 0;
        for (size_t i = 0; i < rc->nservers && len < sizeof csv; i++)
            len +=
                (size_t)snprintf(csv + len, sizeof csv - len, "%s%s", i ? "," : "", rc->servers[i]);
        rc2 = ares_set_servers_ports_csv(dns->ch, csv);
        if (rc2 != ARES_SUCCESS)
            ares_destroy(dns->ch);
    }
    if (rc2 != ARES_SUCCESS) {
        snprintf(err, errlen, "dns resolver: %s", ares_strerror(rc2));
        free(dns);
        return NULL;
    }
    uv_timer_init(loop, &dns->timer);
    dns->timer.data = dns;
    dns->open_handles = 1;
    return dns;
}

void mg_dns_close(struct mg_dns *dns, void (*on_closed)(void *data), void *data)
{
    if (!dns)
        return;
    dns->on_closed = on_closed;
    dns->closed_data = data;
    /* Before `closing`: the callbacks of cancelled lookups run in here and
     * may still close polls through on_sock_state. */
    ares_destroy(dns->ch);
    dns->closing = true;
    while (dns->polls) {
        struct dns_poll *p = dns->polls;
        dns->polls = p->next;
        close_poll(p);
    }
    uv_timer_stop(&dns->timer);
    uv_close((uv_handle_t *)&dns->timer, on_handle_closed);
}

struct addr_query {
    mg_dns_addr_cb *cb;
    void *arg;
};

static void on_addr_answer(void *arg, int status, int timeouts, struct ares_addrinfo *ai)
{
    struct addr_query q = *(struct addr_query *)arg;
    (void)timeouts;
    free(arg);
    if (status != ARES_SUCCESS && ai) {
        ares_freeaddrinfo(ai);
        ai = NULL;
    }
    q.cb(q.arg, status, ai);
}

void mg_dns_lookup(struct mg_dns *dns, const char *name, enum mg_family family, mg_dns_addr_cb *cb,
                   void *arg)
{
    struct addr_query *q = malloc(sizeof *q);
    if (!q)
        mg_fatal("out of memory (dns query)");
    *q = (struct addr_query){cb, arg};
    struct ares_addrinfo_hints hints = {
        .ai_family = family == MG_FAMILY_IPV4   ? AF_INET
                     : family == MG_FAMILY_IPV6 ? AF_INET6
                                                : AF_UNSPEC,
        .ai_socktype = SOCK_STREAM,
    };
    ares_getaddrinfo(dns->ch, name, NULL, &hints, on_addr_answer, q);
    rearm(dns);
}

struct srv_query {
    mg_dns_srv_cb *cb;
    void *arg;
};

static void on_srv_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    struct srv_query q = *(struct srv_query *)arg;
    struct ares_srv_reply *srv = NULL;
    (void)timeouts;
    free(arg);
    if (status == ARES_SUCCESS)
        status = ares_parse_srv_reply(abuf, alen, &srv);
    if (status != ARES_SUCCESS && srv) {
        ares_free_data(srv);
        srv = NULL;
    }
    q.cb(q.arg, status, srv);
}

void mg_dns_srv(struct mg_dns *dns, const char *name, mg_dns_srv_cb *cb, void *arg)
{
    struct srv_query *q = malloc(sizeof *q);
    if (!q)
        mg_fatal("out of memory (srv query)");
    *q = (struct srv_query){cb, arg};
    ares_query(dns->ch, name, ns_c_in, ns_t_srv, on_srv_answer, q);
    rearm(dns);
}
