/*
 * Shared dictionaries (see dict.h): a chained hash table plus an LRU list per
 * dictionary, under its mutex; a registry of dictionaries by name under
 * another.
 *
 * Invariants: `used` is the sum of charge() over the entries; used <= budget
 * after every write; an expired entry is removed when met (not counted as an
 * eviction).
 */
#include "shared/dict.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"

struct entry {
    struct entry *hnext;         /* bucket chain */
    struct entry *lprev, *lnext; /* LRU: head is the most recently used */
    uint32_t hash, klen, vlen;
    uint8_t type;
    double num;          /* a bucket's tokens */
    double at;           /* a bucket's last refill, monotonic ms */
    uint64_t expires_ms; /* 0: never */
    char data[];         /* key, then a string value */
};

struct mg_shdict {
    pthread_mutex_t mu;
    char *name;
    uint64_t budget, used, evictions;
    struct entry **buckets;
    size_t nbuckets, n;
    struct entry *lru_head, *lru_tail;
    /* under reg_mu */
    int refs;
    bool registered;
    struct mg_shdict *next;
};

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static struct mg_shdict *registry;

uint64_t mg_shdict_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ------------------------------------------------------------ registry */

static void unregister(struct mg_shdict *d)
{
    for (struct mg_shdict **p = &registry; *p; p = &(*p)->next) {
        if (*p == d) {
            *p = d->next;
            break;
        }
    }
    d->registered = false;
}

static void dict_free(struct mg_shdict *d)
{
    for (size_t i = 0; i < d->nbuckets; i++) {
        for (struct entry *e = d->buckets[i], *nx; e; e = nx) {
            nx = e->hnext;
            free(e);
        }
    }
    free(d->buckets);
    free(d->name);
    pthread_mutex_destroy(&d->mu);
    free(d);
}

struct mg_shdict *mg_shdict_acquire(const char *name, uint64_t bytes)
{
    pthread_mutex_lock(&reg_mu);
    struct mg_shdict *d = registry;
    while (d && strcmp(d->name, name) != 0)
        d = d->next;
    if (d && d->budget == bytes) {
        d->refs++;
        pthread_mutex_unlock(&reg_mu);
        return d;
    }
    if (d) /* resized: a new one takes the name; the old one lives while used */
        unregister(d);
    d = calloc(1, sizeof *d);
    if (!d || !(d->name = strdup(name)) || !(d->buckets = calloc(64, sizeof *d->buckets)))
        mg_fatal("out of memory (shared dict)");
    pthread_mutex_init(&d->mu, NULL);
    d->nbuckets = 64;
    d->budget = bytes;
    d->refs = 1;
    d->registered = true;
    d->next = registry;
    registry = d;
    pthread_mutex_unlock(&reg_mu);
    return d;
}

void mg_shdict_release(struct mg_shdict *d)
{
    if (!d)
        return;
    pthread_mutex_lock(&reg_mu);
    bool last = --d->refs == 0;
    if (last && d->registered)
        unregister(d);
    pthread_mutex_unlock(&reg_mu);
    if (last)
        dict_free(d);
}

/* ------------------------------------------------------------ table */

static uint32_t hash_of(const char *k, size_t n)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)k[i]) * 16777619u;
    return h;
}

static uint64_t charge(const struct entry *e)
{
    return sizeof *e + e->klen + e->vlen;
}

static void lru_unlink(struct mg_shdict *d, struct entry *e)
{
    if (e->lprev)
        e->lprev->lnext = e->lnext;
    else
        d->lru_head = e->lnext;
    if (e->lnext)
        e->lnext->lprev = e->lprev;
    else
        d->lru_tail = e->lprev;
    e->lprev = e->lnext = NULL;
}

static void lru_push(struct mg_shdict *d, struct entry *e)
{
    e->lprev = NULL;
    e->lnext = d->lru_head;
    if (d->lru_head)
        d->lru_head->lprev = e;
    d->lru_head = e;
    if (!d->lru_tail)
        d->lru_tail = e;
}

static void remove_entry(struct mg_shdict *d, struct entry *e)
{
    struct entry **p = &d->buckets[e->hash & (d->nbuckets - 1)];
    while (*p != e)
        p = &(*p)->hnext;
    *p = e->hnext;
    lru_unlink(d, e);
    d->used -= charge(e);
    d->n--;
    free(e);
}

static bool expired(const struct entry *e, uint64_t now)
{
    return e->expires_ms && now >= e->expires_ms;
}

/* The live entry of key, or NULL (an expired one is removed). */
static struct entry *find(struct mg_shdict *d, const char *key, size_t klen, uint32_t h,
                          uint64_t now)
{
    for (struct entry *e = d->buckets[h & (d->nbuckets - 1)]; e; e = e->hnext) {
        if (e->hash == h && e->klen == klen && memcmp(e->data, key, klen) == 0) {
            if (expired(e, now)) {
                remove_entry(d, e);
                return NULL;
            }
            return e;
        }
    }
    return NULL;
}

static void grow(struct mg_shdict *d)
{
    size_t nb = d->nbuckets * 2;
    struct entry **b = calloc(nb, sizeof *b);
    if (!b)
        return; /* longer chains, still correct */
    for (size_t i = 0; i < d->nbuckets; i++) {
        for (struct entry *e = d->buckets[i], *nx; e; e = nx) {
            nx = e->hnext;
            e->hnext = b[e->hash & (nb - 1)];
            b[e->hash & (nb - 1)] = e;
        }
    }
    free(d->buckets);
    d->buckets = b;
    d->nbuckets = nb;
}

/* Makes room for `need` bytes: least recently used first. */
static void make_room(struct mg_shdict *d, uint64_t need, uint64_t now)
{
    while (d->used + need > d->budget && d->lru_tail) {
        struct entry *e = d->lru_tail;
        if (!expired(e, now))
            d->evictions++;
        remove_entry(d, e);
    }
}

static int insert(struct mg_shdict *d, const char *key, size_t klen, uint32_t h,
                  const struct mg_shdict_val *v, uint64_t ttl_ms, uint64_t now)
{
    size_t vlen = v->type == MG_SHD_STR ? v->len : 0;
    uint64_t need = sizeof(struct entry) + klen + vlen;
    if (need > d->budget || klen > UINT32_MAX || vlen > UINT32_MAX)
        return MG_SHD_NO_MEMORY;
    make_room(d, need, now);
    struct entry *e = malloc(sizeof *e + klen + vlen);
    if (!e)
        return MG_SHD_NO_MEMORY;
    e->hash = h;
    e->klen = (uint32_t)klen;
    e->vlen = (uint32_t)vlen;
    e->type = (uint8_t)v->type;
    e->num = v->type == MG_SHD_BOOL ? (v->num != 0) : v->num;
    e->at = 0;
    e->expires_ms = ttl_ms ? now + ttl_ms : 0;
    memcpy(e->data, key, klen);
    if (vlen)
        memcpy(e->data + klen, v->str, vlen);
    if (d->n >= d->nbuckets)
        grow(d);
    struct entry **b = &d->buckets[h & (d->nbuckets - 1)];
    e->hnext = *b;
    *b = e;
    lru_push(d, e);
    d->used += need;
    d->n++;
    return MG_SHD_OK;
}

/* ------------------------------------------------------------ operations */

int mg_shdict_get(struct mg_shdict *d, const char *key, size_t klen, uint64_t now_ms,
                  struct mg_shdict_val *out, char *buf, size_t cap)
{
    uint32_t h = hash_of(key, klen);
    pthread_mutex_lock(&d->mu);
    struct entry *e = find(d, key, klen, h, now_ms);
    if (!e) {
        pthread_mutex_unlock(&d->mu);
        out->type = MG_SHD_NIL;
        return MG_SHD_NOT_FOUND;
    }
    lru_unlink(d, e);
    lru_push(d, e);
    out->type = (enum mg_shdict_type)e->type;
    out->num = e->num;
    out->len = e->vlen;
    out->str = buf;
    if (e->vlen && cap)
        memcpy(buf, e->data + e->klen, e->vlen < cap ? e->vlen : cap);
    pthread_mutex_unlock(&d->mu);
    return MG_SHD_OK;
}

static int store(struct mg_shdict *d, const char *key, size_t klen, const struct mg_shdict_val *val,
                 uint64_t ttl_ms, uint64_t now_ms, bool add)
{
    uint32_t h = hash_of(key, klen);
    pthread_mutex_lock(&d->mu);
    struct entry *e = find(d, key, klen, h, now_ms);
    int rc = MG_SHD_OK;
    if (e && add) {
        rc = MG_SHD_EXISTS;
    } else {
        if (e)
            remove_entry(d, e);
        if (val->type != MG_SHD_NIL)
            rc = insert(d, key, klen, h, val, ttl_ms, now_ms);
    }
    pthread_mutex_unlock(&d->mu);
    return rc;
}

int mg_shdict_set(struct mg_shdict *d, const char *key, size_t klen,
                  const struct mg_shdict_val *val, uint64_t ttl_ms, uint64_t now_ms)
{
    return store(d, key, klen, val, ttl_ms, now_ms, false);
}

int mg_shdict_add(struct mg_shdict *d, const char *key, size_t klen,
                  const struct mg_shdict_val *val, uint64_t ttl_ms, uint64_t now_ms)
{
    return store(d, key, klen, val, ttl_ms, now_ms, true);
}

int mg_shdict_incr(struct mg_shdict *d, const char *key, size_t klen, double by, const double *init,
                   uint64_t ttl_ms, uint64_t now_ms, double *out)
{
    uint32_t h = hash_of(key, klen);
    int rc = MG_SHD_OK;
    pthread_mutex_lock(&d->mu);
    struct entry *e = find(d, key, klen, h, now_ms);
    if (e && e->type != MG_SHD_NUM) {
        rc = MG_SHD_NOT_NUMBER;
    } else if (e) {
        e->num += by;
        *out = e->num;
        lru_unlink(d, e);
        lru_push(d, e);
    } else if (!init) {
        rc = MG_SHD_NOT_FOUND;
    } else {
        struct mg_shdict_val v = {.type = MG_SHD_NUM, .num = *init + by};
        rc = insert(d, key, klen, h, &v, ttl_ms, now_ms);
        *out = v.num;
    }
    pthread_mutex_unlock(&d->mu);
    return rc;
}

int mg_shdict_delete(struct mg_shdict *d, const char *key, size_t klen)
{
    uint32_t h = hash_of(key, klen);
    pthread_mutex_lock(&d->mu);
    struct entry *e = find(d, key, klen, h, 0);
    if (e)
        remove_entry(d, e);
    pthread_mutex_unlock(&d->mu);
    return e ? MG_SHD_OK : MG_SHD_NOT_FOUND;
}

int mg_shdict_ttl(struct mg_shdict *d, const char *key, size_t klen, uint64_t now_ms,
                  uint64_t *ttl_ms)
{
    uint32_t h = hash_of(key, klen);
    pthread_mutex_lock(&d->mu);
    struct entry *e = find(d, key, klen, h, now_ms);
    if (e)
        *ttl_ms = e->expires_ms ? e->expires_ms - now_ms : 0;
    pthread_mutex_unlock(&d->mu);
    return e ? MG_SHD_OK : MG_SHD_NOT_FOUND;
}

int mg_shdict_take(struct mg_shdict *d, const char *key, size_t klen, double rate_per_ms,
                   double burst, uint64_t now_ms, struct mg_shdict_take *out)
{
    uint32_t h = hash_of(key, klen);
    int rc = MG_SHD_OK;
    /* Idle for this long, a bucket is full again: it may expire. */
    uint64_t idle_ms = (uint64_t)(burst / rate_per_ms) + 1000u;
    pthread_mutex_lock(&d->mu);
    struct entry *e = find(d, key, klen, h, now_ms);
    if (e && e->type != MG_SHD_BUCKET) {
        rc = MG_SHD_NOT_NUMBER;
    } else {
        if (!e) {
            struct mg_shdict_val v = {.type = MG_SHD_BUCKET, .num = burst};
            rc = insert(d, key, klen, h, &v, idle_ms, now_ms);
            if (rc == MG_SHD_OK) {
                e = find(d, key, klen, h, now_ms);
                e->at = (double)now_ms;
            }
        }
        if (e) {
            double tokens = e->num + ((double)now_ms - e->at) * rate_per_ms;
            if (tokens > burst)
                tokens = burst;
            out->allowed = tokens >= 1;
            if (out->allowed)
                tokens -= 1;
            e->num = tokens;
            e->at = (double)now_ms;
            e->expires_ms = now_ms + idle_ms;
            lru_unlink(d, e);
            lru_push(d, e);
            out->tokens = tokens;
            out->retry_ms = tokens >= 1 ? 0 : (1 - tokens) / rate_per_ms;
            out->full_ms = (burst - tokens) / rate_per_ms;
        }
    }
    pthread_mutex_unlock(&d->mu);
    return rc;
}

struct mg_shdict_stats mg_shdict_stats(struct mg_shdict *d)
{
    pthread_mutex_lock(&d->mu);
    struct mg_shdict_stats s = {d->n, d->used, d->budget, d->evictions};
    pthread_mutex_unlock(&d->mu);
    return s;
}
