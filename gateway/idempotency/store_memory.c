/*
 * The embedded store: a process-wide hash table of keys behind one mutex, with
 * an expiry min-heap and a completion-ordered list for eviction.
 *
 * Invariants (under t->mu): every entry is in the hash and in the heap at
 * heap[e->heap_idx]; it is in the `done` list iff its state is DONE or TOO_BIG;
 * t->bytes is the sum of the entries' cost and never exceeds t->budget.
 *
 * Ownership: the table owns its entries and one reference to each stored record.
 * A per-loop store owns its pending ops (each holding a copy of its key, so a
 * cancelled STARTED begin can release its lock). store_memory.h has the policy.
 */
#include "idempotency/store_memory.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <time.h>

#include "core/log.h"
#include "idempotency/key.h"
#include "idempotency/record.h"
#include "idempotency/store_base.h"

#define uthash_fatal(msg) mg_fatal("out of memory (%s)", msg)
#include <uthash.h>

struct entry {
    UT_hash_handle hh;
    TAILQ_ENTRY(entry) done_link; /* in t->done while DONE or TOO_BIG */
    struct mg_idem_record *rec;   /* DONE / TOO_BIG: the table's reference */
    uint64_t expires_ms;
    size_t heap_idx;
    size_t cost; /* counted in t->bytes */
    enum mg_idem_record_state state;
    char owner[MG_IDEM_OWNER_LEN]; /* IN_FLIGHT */
    uint8_t fp[MG_IDEM_FP_LEN];
    size_t key_len;
    char key[];
};

struct mg_idem_memtable {
    pthread_mutex_t mu;
    struct entry *map;   /* uthash head */
    struct entry **heap; /* min-heap on expires_ms */
    size_t nheap, heap_cap;
    TAILQ_HEAD(, entry) done; /* completed entries, oldest completion first */
    size_t bytes, budget, in_flight;
    uint64_t expired, evicted, refused, shrunk;
    uint64_t (*now_ms)(void *ud);
    void *now_ud;
};

/* ---- clock ---- */

static uint64_t monotonic_ms(void *ud)
{
    struct timespec ts;

    (void)ud;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t deadline(uint64_t now, uint64_t ttl)
{
    return ttl > UINT64_MAX - now ? UINT64_MAX : now + ttl;
}

/* ---- expiry heap ---- */

static bool heap_less(struct mg_idem_memtable *t, size_t a, size_t b)
{
    return t->heap[a]->expires_ms < t->heap[b]->expires_ms;
}

static void heap_swap(struct mg_idem_memtable *t, size_t a, size_t b)
{
    struct entry *x = t->heap[a];

    t->heap[a] = t->heap[b];
    t->heap[b] = x;
    t->heap[a]->heap_idx = a;
    t->heap[b]->heap_idx = b;
}

static void heap_up(struct mg_idem_memtable *t, size_t i)
{
    while (i > 0 && heap_less(t, i, (i - 1) / 2)) {
        heap_swap(t, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static void heap_down(struct mg_idem_memtable *t, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;

        if (l < t->nheap && heap_less(t, l, m))
            m = l;
        if (r < t->nheap && heap_less(t, r, m))
            m = r;
        if (m == i)
            return;
        heap_swap(t, i, m);
        i = m;
    }
}

static void heap_push(struct mg_idem_memtable *t, struct entry *e)
{
    if (t->nheap == t->heap_cap) {
        t->heap_cap = t->heap_cap ? 2 * t->heap_cap : 64;
        t->heap = realloc(t->heap, t->heap_cap * sizeof *t->heap);
        if (t->heap == NULL)
            mg_fatal("out of memory (idempotency heap)");
    }
    e->heap_idx = t->nheap;
    t->heap[t->nheap++] = e;
    heap_up(t, e->heap_idx);
}

static void heap_remove(struct mg_idem_memtable *t, struct entry *e)
{
    size_t i = e->heap_idx;

    if (i != t->nheap - 1) {
        heap_swap(t, i, t->nheap - 1);
        t->nheap--;
        heap_down(t, i);
        heap_up(t, i);
    } else {
        t->nheap--;
    }
}

static void heap_fix(struct mg_idem_memtable *t, struct entry *e)
{
    heap_down(t, e->heap_idx);
    heap_up(t, e->heap_idx);
}

/* ---- entries (all under t->mu) ---- */

size_t mg_idem_memtable_cost(size_t key_len, size_t blob_len)
{
    /* Two pointers for the hash bucket and the heap slot the entry occupies. */
    if (blob_len < MG_IDEM_RECORD_HEAD)
        blob_len = MG_IDEM_RECORD_HEAD;
    return sizeof(struct entry) + key_len + blob_len + 2 * sizeof(void *);
}

static bool completed(const struct entry *e)
{
    return e->state != MG_IDEM_REC_IN_FLIGHT;
}

static void remove_entry(struct mg_idem_memtable *t, struct entry *e)
{
    HASH_DEL(t->map, e);
    heap_remove(t, e);
    if (completed(e))
        TAILQ_REMOVE(&t->done, e, done_link);
    else
        t->in_flight--;
    t->bytes -= e->cost;
    mg_idem_record_unref(e->rec);
    free(e);
}

/* The live entry for key, after removing it if it has expired. */
static struct entry *find_live(struct mg_idem_memtable *t, const char *key, size_t key_len,
                               uint64_t now)
{
    struct entry *e;

    HASH_FIND(hh, t->map, key, key_len, e);
    if (e != NULL && e->expires_ms <= now) {
        remove_entry(t, e);
        t->expired++;
        e = NULL;
    }
    return e;
}

/* Frees room for `need` more bytes: expired entries first, then the oldest
 * completed records. False when only in-flight locks are left in the way. */
static bool make_room(struct mg_idem_memtable *t, size_t need, uint64_t now)
{
    while (t->bytes + need > t->budget) {
        struct entry *victim = t->nheap ? t->heap[0] : NULL;

        if (victim != NULL && victim->expires_ms <= now) {
            t->expired++;
        } else if ((victim = TAILQ_FIRST(&t->done)) != NULL) {
            t->evicted++;
        } else {
            return false;
        }
        remove_entry(t, victim);
    }
    return true;
}

static void insert_lock(struct mg_idem_memtable *t, const struct mg_idem_args *a, size_t cost,
                        uint64_t now)
{
    struct entry *e = malloc(sizeof *e + a->key_len);

    if (e == NULL)
        mg_fatal("out of memory (idempotency entry)");
    memset(e, 0, sizeof *e);
    e->state = MG_IDEM_REC_IN_FLIGHT;
    memcpy(e->owner, a->owner, MG_IDEM_OWNER_LEN);
    memcpy(e->fp, a->fp, MG_IDEM_FP_LEN);
    e->expires_ms = deadline(now, a->ttl_ms);
    e->cost = cost;
    e->key_len = a->key_len;
    memcpy(e->key, a->key, a->key_len);
    HASH_ADD_KEYPTR(hh, t->map, e->key, e->key_len, e);
    heap_push(t, e);
    t->bytes += cost;
    t->in_flight++;
}

static void table_begin(struct mg_idem_memtable *t, const struct mg_idem_args *a,
                        struct mg_idem_op *out)
{
    uint64_t now = t->now_ms(t->now_ud);
    struct entry *e = find_live(t, a->key, a->key_len, now);
    size_t cost;

    if (e != NULL) {
        out->result = mg_idem__classify(e->state, e->fp, a->fp);
        if (out->result == MG_IDEM_IN_FLIGHT)
            out->retry_after_ms = e->expires_ms - now; /* > 0: e is live */
        else if (out->result == MG_IDEM_DONE || out->result == MG_IDEM_TOO_BIG)
            out->record = mg_idem_record_ref(e->rec);
        return;
    }
    cost = mg_idem_memtable_cost(a->key_len, 0);
    if (!make_room(t, cost, now)) {
        t->refused++;
        out->result = MG_IDEM_ERROR;
        return;
    }
    insert_lock(t, a, cost, now);
    out->result = MG_IDEM_STARTED;
}

static struct entry *find_lock(struct mg_idem_memtable *t, const char *key, size_t key_len,
                               const char *owner, uint64_t now)
{
    struct entry *e = find_live(t, key, key_len, now);

    if (e == NULL || e->state != MG_IDEM_REC_IN_FLIGHT ||
        memcmp(e->owner, owner, MG_IDEM_OWNER_LEN) != 0)
        return NULL;
    return e;
}

/* A TOO_BIG marker standing for rec, for when rec cannot fit the budget. */
static struct mg_idem_record *marker_for(struct mg_idem_record *rec)
{
    struct mg_idem_record *m = mg_idem_record_new(
        mg_idem_record_status(rec), mg_idem_record_fingerprint(rec), MG_IDEM_RECORD_HEAD);

    mg_idem_record_drop_content(m);
    mg_idem_record_seal(m);
    return m;
}

static enum mg_idem_result table_complete(struct mg_idem_memtable *t, const struct mg_idem_args *a)
{
    uint64_t now = t->now_ms(t->now_ud);
    struct entry *e = find_lock(t, a->key, a->key_len, a->owner, now);
    struct mg_idem_record *stored;
    size_t blob_len, cost;

    if (e == NULL)
        return MG_IDEM_LOST;
    mg_idem_record_blob(a->rec, &blob_len);
    cost = mg_idem_memtable_cost(a->key_len, blob_len);
    /* e is live and in flight, so make_room never picks it. */
    if (cost <= e->cost || make_room(t, cost - e->cost, now)) {
        stored = mg_idem_record_ref(a->rec);
    } else {
        stored = marker_for(a->rec); /* costs what the lock costs: always fits */
        cost = e->cost;
        t->shrunk++;
    }
    t->bytes = t->bytes - e->cost + cost;
    e->cost = cost;
    e->rec = stored;
    e->state = mg_idem_record_state(stored);
    /* The record's fingerprint is authoritative, as in Redis where the record
     * blob replaces the lock blob. */
    memcpy(e->fp, mg_idem_record_fingerprint(stored), MG_IDEM_FP_LEN);
    e->expires_ms = deadline(now, a->ttl_ms);
    heap_fix(t, e);
    TAILQ_INSERT_TAIL(&t->done, e, done_link);
    t->in_flight--;
    return MG_IDEM_OK;
}

static enum mg_idem_result table_release(struct mg_idem_memtable *t, const char *key,
                                         size_t key_len, const char *owner)
{
    uint64_t now = t->now_ms(t->now_ud);
    struct entry *e = find_lock(t, key, key_len, owner, now);

    if (e == NULL)
        return MG_IDEM_LOST;
    remove_entry(t, e);
    return MG_IDEM_OK;
}

/* ---- the table's public functions ---- */

struct mg_idem_memtable *mg_idem_memtable_new(size_t budget)
{
    struct mg_idem_memtable *t = calloc(1, sizeof *t);

    if (t == NULL)
        mg_fatal("out of memory (idempotency table)");
    MG_ASSERT(pthread_mutex_init(&t->mu, NULL) == 0);
    TAILQ_INIT(&t->done);
    t->budget = budget;
    t->now_ms = monotonic_ms;
    return t;
}

void mg_idem_memtable_free(struct mg_idem_memtable *t)
{
    struct entry *e, *tmp;

    if (t == NULL)
        return;
    HASH_ITER(hh, t->map, e, tmp)
    {
        HASH_DEL(t->map, e);
        mg_idem_record_unref(e->rec);
        free(e);
    }
    free(t->heap);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

size_t mg_idem_memtable_sweep(struct mg_idem_memtable *t, size_t max)
{
    size_t n = 0;

    pthread_mutex_lock(&t->mu);
    uint64_t now = t->now_ms(t->now_ud);
    while (n < max && t->nheap > 0 && t->heap[0]->expires_ms <= now) {
        remove_entry(t, t->heap[0]);
        t->expired++;
        n++;
    }
    pthread_mutex_unlock(&t->mu);
    return n;
}

void mg_idem_memtable_set_budget(struct mg_idem_memtable *t, size_t budget)
{
    pthread_mutex_lock(&t->mu);
    t->budget = budget;
    make_room(t, 0, t->now_ms(t->now_ud));
    pthread_mutex_unlock(&t->mu);
}

void mg_idem_memtable_stats(struct mg_idem_memtable *t, struct mg_idem_memstats *out)
{
    pthread_mutex_lock(&t->mu);
    out->bytes = t->bytes;
    out->budget = t->budget;
    out->entries = HASH_COUNT(t->map);
    out->in_flight = t->in_flight;
    out->expired = t->expired;
    out->evicted = t->evicted;
    out->refused = t->refused;
    out->shrunk = t->shrunk;
    pthread_mutex_unlock(&t->mu);
}

void mg_idem_memtable_set_clock(struct mg_idem_memtable *t, uint64_t (*now_ms)(void *ud), void *ud)
{
    t->now_ms = now_ms ? now_ms : monotonic_ms;
    t->now_ud = ud;
}

/* ---- the per-loop store ---- */

struct mem_store {
    struct mg_idem_client base;
    struct mg_idem_memtable *t;
};

struct mem_op {
    struct mg_idem_op base;
    char owner[MG_IDEM_OWNER_LEN]; /* begin: to release a cancelled STARTED lock */
    size_t key_len;
    char key[];
};

static struct mem_op *new_op(struct mg_idem_client *s, struct mg_idem_req *req,
                             const struct mg_idem_args *a)
{
    size_t key_len = a->kind == MG_IDEM_OP_BEGIN ? a->key_len : 0;
    struct mem_op *op = malloc(sizeof *op + key_len);

    if (op == NULL)
        mg_fatal("out of memory (idempotency op)");
    mg_idem__op_attach(&op->base, s, req, a->kind);
    memcpy(op->owner, a->owner, MG_IDEM_OWNER_LEN);
    op->key_len = key_len;
    memcpy(op->key, a->key, key_len);
    return op;
}

static int mem_start(struct mg_idem_client *s, struct mg_idem_req *req,
                     const struct mg_idem_args *a)
{
    struct mg_idem_memtable *t = ((struct mem_store *)s)->t;
    struct mg_idem_op tmp = {.result = MG_IDEM_ERROR};
    struct mem_op *op;

    pthread_mutex_lock(&t->mu);
    switch (a->kind) {
    case MG_IDEM_OP_BEGIN:
        table_begin(t, a, &tmp);
        break;
    case MG_IDEM_OP_COMPLETE:
        tmp.result = table_complete(t, a);
        break;
    case MG_IDEM_OP_RELEASE:
        tmp.result = table_release(t, a->key, a->key_len, a->owner);
        break;
    }
    pthread_mutex_unlock(&t->mu);
    if (req == NULL)
        return 0; /* fire and forget: applied, nothing to deliver */
    op = new_op(s, req, a);
    op->base.result = tmp.result;
    op->base.retry_after_ms = tmp.retry_after_ms;
    op->base.record = tmp.record;
    mg_idem__defer(&op->base);
    return 0;
}

static void mem_op_free(struct mg_idem_op *base)
{
    mg_idem_record_unref(base->record);
    free(base);
}

static void mem_cancel(struct mg_idem_op *base)
{
    struct mem_op *op = (struct mem_op *)base;
    struct mg_idem_memtable *t = ((struct mem_store *)base->store)->t;

    mg_idem__unqueue(base);
    if (base->kind == MG_IDEM_OP_BEGIN && base->result == MG_IDEM_STARTED) {
        pthread_mutex_lock(&t->mu);
        table_release(t, op->key, op->key_len, op->owner);
        pthread_mutex_unlock(&t->mu);
    }
    mem_op_free(base);
}

static void mem_close(struct mg_idem_client *s)
{
    (void)s; /* no handles beyond the base's idle handle */
}

static void mem_destroy(struct mg_idem_client *s)
{
    free(s);
}

static const struct mg_idem_client_vt mem_vt = {
    .start = mem_start,
    .cancel = mem_cancel,
    .op_free = mem_op_free,
    .close = mem_close,
    .destroy = mem_destroy,
};

struct mg_idem_client *mg_idem_memory_open(struct mg_idem_memtable *t, uv_loop_t *loop)
{
    struct mem_store *ms = calloc(1, sizeof *ms);

    if (ms == NULL)
        mg_fatal("out of memory (idempotency store)");
    ms->t = t;
    mg_idem__client_init(&ms->base, &mem_vt, loop);
    return &ms->base;
}
