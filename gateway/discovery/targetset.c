/*
 * Target sets (see targetset.h). Sets are small (tens of addresses), so the
 * searches are linear: clarity over asymptotics, and they run only when DNS
 * answers, never per request.
 */
#include "discovery/targetset.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

#define MG_RETRY_CAP_MS 30000

uint64_t mg_tset_clamp_ttl_ms(uint32_t ttl_s, uint64_t min_ms, uint64_t max_ms)
{
    uint64_t ms = (uint64_t)ttl_s * 1000;
    if (ms < min_ms)
        ms = min_ms;
    if (ms > max_ms)
        ms = max_ms;
    return ms;
}

uint64_t mg_tset_retry_ms(unsigned failures, uint64_t min_ms, uint64_t max_ms)
{
    unsigned shift = failures > 1 ? failures - 1 : 0;
    uint64_t cap = max_ms < MG_RETRY_CAP_MS ? max_ms : MG_RETRY_CAP_MS;
    if (cap < min_ms)
        cap = min_ms;
    if (shift > 16)
        shift = 16;
    uint64_t ms = min_ms << shift;
    return ms > cap ? cap : ms;
}

bool mg_tset_has(const struct mg_tset *s, const char *text)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->v[i].text, text) == 0)
            return true;
    return false;
}

bool mg_tset_add(struct mg_tset *s, const struct sockaddr *sa, uint16_t port, uint32_t weight,
                 const char *host)
{
    struct mg_tset_entry e = {.weight = weight ? weight : 1};
    snprintf(e.host, sizeof e.host, "%s", host ? host : "");
    char ip[INET6_ADDRSTRLEN];
    if (sa->sa_family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&e.addr;
        *in = *(const struct sockaddr_in *)sa;
        in->sin_port = htons(port);
        e.addrlen = sizeof *in;
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof ip);
        snprintf(e.text, sizeof e.text, "%s:%u", ip, (unsigned)port);
    } else if (sa->sa_family == AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&e.addr;
        *in6 = *(const struct sockaddr_in6 *)sa;
        in6->sin6_port = htons(port);
        e.addrlen = sizeof *in6;
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof ip);
        snprintf(e.text, sizeof e.text, "[%s]:%u", ip, (unsigned)port);
    } else {
        return false;
    }
    if (mg_tset_has(s, e.text))
        return true;
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 8;
        s->v = realloc(s->v, s->cap * sizeof *s->v);
        if (!s->v)
            mg_fatal("out of memory (target set)");
    }
    s->v[s->n++] = e;
    return true;
}

static int by_text(const void *a, const void *b)
{
    return strcmp(((const struct mg_tset_entry *)a)->text, ((const struct mg_tset_entry *)b)->text);
}

void mg_tset_sort(struct mg_tset *s)
{
    if (s->n > 1)
        qsort(s->v, s->n, sizeof *s->v, by_text);
}

bool mg_tset_equal(const struct mg_tset *a, const struct mg_tset *b)
{
    if (a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++)
        if (a->v[i].weight != b->v[i].weight || strcmp(a->v[i].text, b->v[i].text) != 0)
            return false;
    return true;
}

void mg_tset_diff(const struct mg_tset *from, const struct mg_tset *to, size_t *added,
                  size_t *removed)
{
    *added = *removed = 0;
    for (size_t i = 0; i < to->n; i++)
        *added += !mg_tset_has(from, to->v[i].text);
    for (size_t i = 0; i < from->n; i++)
        *removed += !mg_tset_has(to, from->v[i].text);
}

void mg_tset_move(struct mg_tset *to, struct mg_tset *from)
{
    free(to->v);
    *to = *from;
    *from = (struct mg_tset){0};
}

void mg_tset_clear(struct mg_tset *s)
{
    free(s->v);
    *s = (struct mg_tset){0};
}
