/* tests for gateway/idempotency/record.c and store_memory.c (with store.c):
 * records (round trip through the blob, the size bound and the TOO_BIG marker,
 * refusal of malformed blobs), then the memory store on a real uv loop: begin /
 * complete / replay / mismatch / in flight / release, the compare-and-set lost
 * after lock expiry, ttl expiry and sweeps, the byte budget and its eviction
 * order, the callback contract of store.h (never before the call returns,
 * exactly once, cancel, close), and worker threads sharing one table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "idempotency/key.h"
#include "idempotency/record.h"
#include "idempotency/store_memory.h"

/* ---- records ---- */

static const uint8_t FP1[MG_IDEM_FP_LEN] = {1, 2, 3};
static const uint8_t FP2[MG_IDEM_FP_LEN] = {9, 9, 9};

static struct mg_idem_record *sample_record(uint16_t status, const uint8_t *fp, size_t max)
{
    struct mg_idem_record *r = mg_idem_record_new(status, fp, max);

    assert_int_equal(mg_idem_record_add_header(r, "Content-Type", 12, "application/json", 16), 0);
    assert_int_equal(mg_idem_record_add_header(r, "X-Empty", 7, "", 0), 0);
    assert_int_equal(mg_idem_record_append_body(r, "{\"id\":", 6), 0);
    assert_int_equal(mg_idem_record_append_body(r, "42}", 3), 0);
    return r;
}

static void assert_sample(const struct mg_idem_record *r, uint16_t status)
{
    const char *n, *v;
    size_t nl, vl, cursor = 0, blen;
    const uint8_t *body;

    assert_int_equal(mg_idem_record_state(r), MG_IDEM_REC_DONE);
    assert_int_equal(mg_idem_record_status(r), status);
    assert_int_equal(mg_idem_record_header_count(r), 2);
    assert_true(mg_idem_record_next_header(r, &cursor, &n, &nl, &v, &vl));
    assert_memory_equal(n, "Content-Type", nl);
    assert_memory_equal(v, "application/json", vl);
    assert_true(mg_idem_record_next_header(r, &cursor, &n, &nl, &v, &vl));
    assert_int_equal(nl, 7);
    assert_int_equal(vl, 0);
    assert_false(mg_idem_record_next_header(r, &cursor, &n, &nl, &v, &vl));
    body = mg_idem_record_body(r, &blen);
    assert_int_equal(blen, 9);
    assert_memory_equal(body, "{\"id\":42}", 9);
}

static void record_round_trip(void **state)
{
    struct mg_idem_record *r = sample_record(201, FP1, 4096), *copy;
    const uint8_t *blob;
    size_t len;

    assert_sample(r, 201);
    blob = mg_idem_record_blob(r, &len);
    assert_int_equal(len, MG_IDEM_RECORD_HEAD + 8 + 12 + 16 + 8 + 7 + 9);
    copy = mg_idem_record_decode(blob, len);
    assert_non_null(copy);
    assert_sample(copy, 201);
    assert_memory_equal(mg_idem_record_fingerprint(copy), FP1, MG_IDEM_FP_LEN);
    /* a decoded record is sealed */
    assert_int_equal(mg_idem_record_append_body(copy, "x", 1), -EINVAL);
    mg_idem_record_unref(copy);
    mg_idem_record_unref(r);
}

static void record_headers_only_before_body(void **state)
{
    struct mg_idem_record *r = mg_idem_record_new(200, FP1, 1000);

    assert_int_equal(mg_idem_record_append_body(r, "", 0), 0);
    assert_int_equal(mg_idem_record_add_header(r, "A", 1, "b", 1), -EINVAL);
    mg_idem_record_seal(r);
    assert_int_equal(mg_idem_record_append_body(r, "x", 1), -EINVAL);
    mg_idem_record_unref(r);
}

static void record_size_bound_makes_too_big(void **state)
{
    size_t max = MG_IDEM_RECORD_HEAD + 8 + 2 + 10;
    struct mg_idem_record *r = mg_idem_record_new(201, FP1, max);
    const uint8_t *blob;
    size_t len, blen;
    char body[11] = "0123456789";

    assert_int_equal(mg_idem_record_add_header(r, "A", 1, "b", 1), 0);
    assert_int_equal(mg_idem_record_append_body(r, body, 10), 0); /* exactly max */
    mg_idem_record_blob(r, &len);
    assert_int_equal(len, max);
    assert_int_equal(mg_idem_record_state(r), MG_IDEM_REC_DONE);
    assert_int_equal(mg_idem_record_append_body(r, "x", 1), -E2BIG); /* one byte more */
    assert_int_equal(mg_idem_record_state(r), MG_IDEM_REC_TOO_BIG);
    assert_int_equal(mg_idem_record_status(r), 201);
    assert_int_equal(mg_idem_record_header_count(r), 0);
    mg_idem_record_body(r, &blen);
    assert_int_equal(blen, 0);
    assert_int_equal(mg_idem_record_append_body(r, "x", 1), -E2BIG); /* stays too big */
    blob = mg_idem_record_blob(r, &len);
    assert_int_equal(len, MG_IDEM_RECORD_HEAD);
    struct mg_idem_record *copy = mg_idem_record_decode(blob, len);
    assert_non_null(copy);
    assert_int_equal(mg_idem_record_state(copy), MG_IDEM_REC_TOO_BIG);
    assert_int_equal(mg_idem_record_status(copy), 201);
    mg_idem_record_unref(copy);
    mg_idem_record_unref(r);

    r = mg_idem_record_new(200, FP1, MG_IDEM_RECORD_HEAD + 5);
    assert_int_equal(mg_idem_record_add_header(r, "Long", 4, "value", 5), -E2BIG);
    assert_int_equal(mg_idem_record_state(r), MG_IDEM_REC_TOO_BIG);
    mg_idem_record_unref(r);
}

static void record_decode_refuses_malformed(void **state)
{
    struct mg_idem_record *r = sample_record(200, FP1, 4096);
    uint8_t buf[512], lock[MG_IDEM_RECORD_HEAD];
    size_t len;
    const uint8_t *blob = mg_idem_record_blob(r, &len);

    memcpy(buf, blob, len);
    for (size_t cut = 0; cut < len; cut++)
        assert_null(mg_idem_record_decode(buf, cut)); /* every truncation */
    buf[len] = 'x';
    assert_null(mg_idem_record_decode(buf, len + 1)); /* trailing byte */
    buf[0] = 'X';
    assert_null(mg_idem_record_decode(buf, len)); /* magic */
    buf[0] = 'M';
    buf[4] = 'Z';
    assert_null(mg_idem_record_decode(buf, len)); /* state */
    buf[4] = 'D';
    buf[MG_IDEM_RECORD_HEAD + 3] = 0xff; /* first header name length past the end */
    assert_null(mg_idem_record_decode(buf, len));
    assert_null(mg_idem_record_decode(NULL, 0));

    mg_idem_record_inflight_blob(lock, FP1, "0123456789abcdef0123456789abcdef");
    struct mg_idem_record *l = mg_idem_record_decode(lock, sizeof lock);
    assert_non_null(l);
    assert_int_equal(mg_idem_record_state(l), MG_IDEM_REC_IN_FLIGHT);
    assert_memory_equal(mg_idem_record_owner(l), "0123456789abcdef0123456789abcdef", 32);
    mg_idem_record_unref(l);
    lock[5] = 'Z'; /* not a token */
    assert_null(mg_idem_record_decode(lock, sizeof lock));
    mg_idem_record_unref(r);
}

static void record_header_filter(void **state)
{
    assert_false(mg_idem_record_keeps_header("Transfer-Encoding", 17));
    assert_false(mg_idem_record_keeps_header("connection", 10));
    assert_false(mg_idem_record_keeps_header("Content-Length", 14));
    assert_false(mg_idem_record_keeps_header("X-Request-Id", 12));
    assert_true(mg_idem_record_keeps_header("Content-Type", 12));
    assert_true(mg_idem_record_keeps_header("Location", 8));
    assert_true(mg_idem_record_keeps_header("TE-X", 4));
}

/* ---- the memory store ---- */

#define OWNER_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define OWNER_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

struct fixture {
    uv_loop_t loop;
    struct mg_idem_memtable *t;
    struct mg_idem_client *c;
    uint64_t now; /* the table's clock */
};

struct call {
    struct mg_idem_req req;
    int calls;
    enum mg_idem_result result;
    uint64_t retry_after_ms;
    struct mg_idem_record *record;
};

static uint64_t fake_now(void *ud)
{
    return ((struct fixture *)ud)->now;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);

    assert_int_equal(uv_loop_init(&f->loop), 0);
    f->t = mg_idem_memtable_new(1 << 20);
    f->now = 1000000;
    mg_idem_memtable_set_clock(f->t, fake_now, f);
    f->c = mg_idem_memory_open(f->t, &f->loop);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    mg_idem_client_close(f->c);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&f->loop), 0); /* no handle left behind */
    mg_idem_memtable_free(f->t);
    free(f);
    return 0;
}

static void on_done(struct mg_idem_req *req)
{
    struct call *c = req->data;

    c->calls++;
    c->result = req->result;
    c->retry_after_ms = req->retry_after_ms;
    mg_idem_record_unref(c->record);
    c->record = req->record;
}

static void call_init(struct call *c)
{
    memset(c, 0, sizeof *c);
    c->req.data = c;
}

static void call_done(struct call *c)
{
    mg_idem_record_unref(c->record);
    c->record = NULL;
}

/* Runs one loop iteration, which delivers every queued result. */
static void tick(struct fixture *f)
{
    uv_run(&f->loop, UV_RUN_NOWAIT);
}

static enum mg_idem_result begin(struct fixture *f, struct call *c, const char *key,
                                 const uint8_t *fp, uint64_t lock_ttl, const char *owner)
{
    call_done(c);
    call_init(c);
    assert_int_equal(mg_idem_begin(f->c, &c->req, key, strlen(key), fp, lock_ttl, owner, on_done),
                     0);
    assert_int_equal(c->calls, 0); /* rule 2: never before the call returns */
    assert_true(mg_idem_pending(&c->req));
    tick(f);
    assert_int_equal(c->calls, 1);
    assert_false(mg_idem_pending(&c->req));
    return c->result;
}

static enum mg_idem_result complete(struct fixture *f, const char *key, const char *owner,
                                    struct mg_idem_record *rec, uint64_t ttl)
{
    struct call c;

    call_init(&c);
    assert_int_equal(mg_idem_complete(f->c, &c.req, key, strlen(key), owner, rec, ttl, on_done), 0);
    assert_int_equal(c.calls, 0);
    tick(f);
    assert_int_equal(c.calls, 1);
    assert_null(c.record);
    return c.result;
}

static enum mg_idem_result release(struct fixture *f, const char *key, const char *owner)
{
    struct call c;

    call_init(&c);
    assert_int_equal(mg_idem_release(f->c, &c.req, key, strlen(key), owner, on_done), 0);
    tick(f);
    assert_int_equal(c.calls, 1);
    return c.result;
}

static void complete_sample(struct fixture *f, const char *key, const char *owner, uint64_t ttl)
{
    struct mg_idem_record *rec = sample_record(201, FP1, 4096);

    assert_int_equal(complete(f, key, owner, rec, ttl), MG_IDEM_OK);
    mg_idem_record_unref(rec);
}

static void begin_complete_replay(void **state)
{
    struct fixture *f = *state;
    struct call c = {0};

    assert_int_equal(begin(f, &c, "k1", FP1, 60000, OWNER_A), MG_IDEM_STARTED);
    assert_null(c.record);
    complete_sample(f, "k1", OWNER_A, 3600000);
    assert_int_equal(begin(f, &c, "k1", FP1, 60000, OWNER_B), MG_IDEM_DONE);
    assert_non_null(c.record);
    assert_sample(c.record, 201);
    /* and again: a replay does not consume the record */
    assert_int_equal(begin(f, &c, "k1", FP1, 60000, OWNER_B), MG_IDEM_DONE);
    assert_sample(c.record, 201);
    call_done(&c);
}

static void different_fingerprint_is_mismatch(void **state)
{
    struct fixture *f = *state;
    struct call c = {0};

    assert_int_equal(begin(f, &c, "k1", FP1, 60000, OWNER_A), MG_IDEM_STARTED);
    assert_int_equal(begin(f, &c, "k1", FP2, 60000, OWNER_B), MG_IDEM_MISMATCH); /* in flight */
    complete_sample(f, "k1", OWNER_A, 3600000);
    assert_int_equal(begin(f, &c, "k1", FP2, 60000, OWNER_B), MG_IDEM_MISMATCH); /* done */
    assert_null(c.record);
    assert_int_equal(begin(f, &c, "k2", FP2, 60000, OWNER_B), MG_IDEM_STARTED); /* other key */
    call_done(&c);
}

static void second_begin_while_in_flight(void **state)
{
    struct fixture *f = *state;
    struct call c = {0};

    assert_int_equal(begin(f, &c, "k1", FP1, 60000, OWNER_A), MG_IDEM_STARTED);
    f->now += 15000;
    assert_int_equal(begin(f, &c, "k1", FP1, 60000, OWNER_B), MG_IDEM_IN_FLIGHT);
    assert_int_equal(c.retry_after_ms, 45000);
    call_done(&c);
}

static void release_lets_the_key_be_retried(void **state)
{
    struct fixture *f = *state;
    struct call c = {0};

    assert_int_equal(begin(f, &c, "k1", FP1, 60000, OWNER_A), MG_IDEM_STARTED);
    assert_int_equal(release(f, "k1", OWNER_B), MG_IDEM_LOST); /* not ours: kept */
    assert_int_equal(begin(f, &c, "k1", FP1, 60000, OWNER_B), MG_IDEM_IN_FLIGHT);
    assert_int_equal(release(f, "k1", OWNER_A), MG_IDEM_OK);
    assert_int_equal(release(f, "k1", OWNER_A), MG_IDEM_LOST); /* already gone */
    assert_int_equal(begin(f, &c, "k1", FP2, 60000, OWNER_B), MG_IDEM_STARTED);
    /* a completed record cannot be released */
    complete_sample(f, "k1", OWNER_B, 3600000);
    assert_int_equal(release(f, "k1", OWNER_B), MG_IDEM_LOST);
    assert_int_equal(begin(f, &c, "k1", FP1, 60000, OWNER_A), MG_IDEM_DONE);
    call_done(&c);
}

static void complete_is_lost_after_lock_expiry(void **state)
{
    struct fixture *f = *state;
    struct mg_idem_record *rec = sample_record(200, FP1, 4096);
    struct call c = {0};

    assert_int_equal(begin(f, &c, "k1", FP1, 100, OWNER_A), MG_IDEM_STARTED);
    f->now += 100; /* the lock lasts [t, t + 100) */
    assert_int_equal(complete(f, "k1", OWNER_A, rec, 3600000), MG_IDEM_LOST);
    assert_int_equal(begin(f, &c, "k1", FP1, 100, OWNER_B), MG_IDEM_STARTED);
    assert_int_equal(complete(f, "k1", OWNER_A, rec, 3600000), MG_IDEM_LOST); /* B's lock now */
    assert_int_equal(complete(f, "k1", OWNER_B, rec, 3600000), MG_IDEM_OK);
    assert_int_equal(complete(f, "k1", OWNER_B, rec, 3600000), MG_IDEM_LOST); /* done already */
    mg_idem_record_unref(rec);
    call_done(&c);
}

static void records_expire_after_ttl(void **state)
{
    struct fixture *f = *state;
    struct call c = {0};
    struct mg_idem_memstats st;

    assert_int_equal(begin(f, &c, "k1", FP1, 60000, OWNER_A), MG_IDEM_STARTED);
    complete_sample(f, "k1", OWNER_A, 1000);
    f->now += 999;
    assert_int_equal(begin(f, &c, "k1", FP1, 60000, OWNER_B), MG_IDEM_DONE);
    f->now += 1;
    assert_int_equal(begin(f, &c, "k1", FP1, 60000, OWNER_B), MG_IDEM_STARTED);
    mg_idem_memtable_stats(f->t, &st);
    assert_int_equal(st.expired, 1);
    assert_int_equal(st.entries, 1);
    call_done(&c);
}

static void sweep_removes_expired_entries_in_bounded_steps(void **state)
{
    struct fixture *f = *state;
    struct call c = {0};
    struct mg_idem_memstats st;
    char key[16];

    for (int i = 0; i < 10; i++) {
        snprintf(key, sizeof key, "k%d", i);
        assert_int_equal(begin(f, &c, key, FP1, (uint64_t)(i < 7 ? 100 : 100000), OWNER_A),
                         MG_IDEM_STARTED);
    }
    f->now += 100;
    assert_int_equal(mg_idem_memtable_sweep(f->t, 5), 5);
    assert_int_equal(mg_idem_memtable_sweep(f->t, 5), 2);
    assert_int_equal(mg_idem_memtable_sweep(f->t, 5), 0);
    mg_idem_memtable_stats(f->t, &st);
    assert_int_equal(st.entries, 3);
    assert_int_equal(st.in_flight, 3);
    assert_int_equal(st.bytes, 3 * mg_idem_memtable_cost(2, 0));
    call_done(&c);
}

/* A fixture whose budget holds exactly `entries` sample records under 2-byte keys. */
static void rebudget(struct fixture *f, size_t bytes)
{
    mg_idem_client_close(f->c);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    mg_idem_memtable_free(f->t);
    f->t = mg_idem_memtable_new(bytes);
    mg_idem_memtable_set_clock(f->t, fake_now, f);
    f->c = mg_idem_memory_open(f->t, &f->loop);
}

static size_t sample_cost(void)
{
    struct mg_idem_record *r = sample_record(201, FP1, 4096);
    size_t len;

    mg_idem_record_blob(r, &len);
    mg_idem_record_unref(r);
    return mg_idem_memtable_cost(2, len);
}

static void store_sample(struct fixture *f, const char *key, uint64_t ttl)
{
    struct call c = {0};

    assert_int_equal(begin(f, &c, key, FP1, 60000, OWNER_A), MG_IDEM_STARTED);
    complete_sample(f, key, OWNER_A, ttl);
    call_done(&c);
}

static void budget_evicts_oldest_completed_first(void **state)
{
    struct fixture *f = *state;
    struct call c = {0};
    struct mg_idem_memstats st;

    rebudget(f, 3 * sample_cost());
    store_sample(f, "k1", 100000);
    f->now += 1;
    store_sample(f, "k2", 100000);
    f->now += 1;
    store_sample(f, "k3", 100000);
    store_sample(f, "k4", 100000); /* needs room: k1 goes */
    mg_idem_memtable_stats(f->t, &st);
    assert_int_equal(st.evicted, 1);
    assert_true(st.bytes <= st.budget);
    assert_int_equal(begin(f, &c, "k2", FP1, 60000, OWNER_B), MG_IDEM_DONE);
    assert_int_equal(begin(f, &c, "k3", FP1, 60000, OWNER_B), MG_IDEM_DONE);
    assert_int_equal(begin(f, &c, "k4", FP1, 60000, OWNER_B), MG_IDEM_DONE);
    /* k1 is gone; its begin needs room and takes it from k2, the oldest now */
    assert_int_equal(begin(f, &c, "k1", FP1, 60000, OWNER_B), MG_IDEM_STARTED);
    mg_idem_memtable_stats(f->t, &st);
    assert_int_equal(st.evicted, 2);
    call_done(&c);
}

static void budget_evicts_expired_before_completed(void **state)
{
    struct fixture *f = *state;
    struct call c = {0};
    struct mg_idem_memstats st;

    rebudget(f, 3 * sample_cost());
    store_sample(f, "k1", 100000);
    store_sample(f, "k2", 10); /* newer, but expires soon */
    store_sample(f, "k3", 100000);
    f->now += 10;
    store_sample(f, "k4", 100000);
    mg_idem_memtable_stats(f->t, &st);
    assert_int_equal(st.expired, 1);
    assert_int_equal(st.evicted, 0);
    assert_int_equal(begin(f, &c, "k1", FP1, 60000, OWNER_B), MG_IDEM_DONE);
    call_done(&c);
}

static void in_flight_locks_are_never_evicted(void **state)
{
    struct fixture *f = *state;
    struct call c = {0};
    struct mg_idem_memstats st;

    rebudget(f, 2 * mg_idem_memtable_cost(2, 0));
    assert_int_equal(begin(f, &c, "k1", FP1, 60000, OWNER_A), MG_IDEM_STARTED);
    assert_int_equal(begin(f, &c, "k2", FP1, 60000, OWNER_A), MG_IDEM_STARTED);
    assert_int_equal(begin(f, &c, "k3", FP1, 60000, OWNER_A), MG_IDEM_ERROR); /* full */
    assert_int_equal(begin(f, &c, "k1", FP1, 60000, OWNER_B), MG_IDEM_IN_FLIGHT);
    mg_idem_memtable_stats(f->t, &st);
    assert_int_equal(st.refused, 1);
    assert_int_equal(st.in_flight, 2);
    /* a record too big for what is left is kept as a TOO_BIG marker instead */
    complete_sample(f, "k1", OWNER_A, 100000);
    mg_idem_memtable_stats(f->t, &st);
    assert_int_equal(st.shrunk, 1);
    assert_true(st.bytes <= st.budget);
    assert_int_equal(begin(f, &c, "k1", FP1, 60000, OWNER_B), MG_IDEM_TOO_BIG);
    assert_int_equal(mg_idem_record_status(c.record), 201);
    /* once a lock expires its room can be reused */
    f->now += 60000;
    assert_int_equal(begin(f, &c, "k3", FP1, 60000, OWNER_A), MG_IDEM_STARTED);
    call_done(&c);
}

/* A reload that shrinks idempotency_memory: completed records go at once, the
 * oldest first; in-flight locks stay, and new ones are refused while the table
 * is over the smaller budget. */
static void shrinking_the_budget_evicts_completed_records(void **state)
{
    struct fixture *f = *state;
    struct call c = {0}, lock = {0};
    struct mg_idem_memstats st;

    rebudget(f, 4 * sample_cost());
    store_sample(f, "k1", 100000);
    f->now += 1;
    store_sample(f, "k2", 100000);
    f->now += 1;
    store_sample(f, "k3", 100000);
    assert_int_equal(begin(f, &lock, "kl", FP1, 60000, OWNER_A), MG_IDEM_STARTED);
    mg_idem_memtable_set_budget(f->t, sample_cost() + mg_idem_memtable_cost(2, 0));
    mg_idem_memtable_stats(f->t, &st);
    assert_int_equal(st.evicted, 2); /* k1 and k2 */
    assert_true(st.bytes <= st.budget);
    assert_int_equal(st.in_flight, 1);
    assert_int_equal(begin(f, &c, "k3", FP1, 60000, OWNER_B), MG_IDEM_DONE);
    assert_int_equal(begin(f, &c, "kl", FP1, 60000, OWNER_B), MG_IDEM_IN_FLIGHT);
    mg_idem_memtable_set_budget(f->t, mg_idem_memtable_cost(2, 0) / 2); /* below one lock */
    mg_idem_memtable_stats(f->t, &st);
    assert_int_equal(st.entries, 1); /* the lock stays, k3 went */
    assert_int_equal(begin(f, &c, "k9", FP1, 60000, OWNER_A), MG_IDEM_ERROR);
    call_done(&c);
    call_done(&lock);
}

static void too_big_response_is_not_executed_twice(void **state)
{
    struct fixture *f = *state;
    struct call c = {0};
    struct mg_idem_record *rec = mg_idem_record_new(201, FP1, 200);
    char big[300] = {0};

    assert_int_equal(begin(f, &c, "k1", FP1, 60000, OWNER_A), MG_IDEM_STARTED);
    assert_int_equal(mg_idem_record_append_body(rec, big, sizeof big), -E2BIG);
    assert_int_equal(complete(f, "k1", OWNER_A, rec, 100000), MG_IDEM_OK);
    mg_idem_record_unref(rec);
    assert_int_equal(begin(f, &c, "k1", FP1, 60000, OWNER_B), MG_IDEM_TOO_BIG);
    assert_int_equal(mg_idem_record_state(c.record), MG_IDEM_REC_TOO_BIG);
    assert_int_equal(mg_idem_record_status(c.record), 201);
    assert_int_equal(begin(f, &c, "k1", FP2, 60000, OWNER_B), MG_IDEM_MISMATCH);
    call_done(&c);
}

static void replayed_record_outlives_eviction(void **state)
{
    struct fixture *f = *state;
    struct call c = {0};

    rebudget(f, sample_cost());
    store_sample(f, "k1", 100000);
    assert_int_equal(begin(f, &c, "k1", FP1, 60000, OWNER_B), MG_IDEM_DONE);
    store_sample(f, "k2", 100000); /* evicts k1 while we hold its record */
    assert_sample(c.record, 201);
    call_done(&c);
}

static void synchronous_errors_never_call_back(void **state)
{
    struct fixture *f = *state;
    struct call c;
    struct mg_idem_record *rec = sample_record(200, FP1, 4096);
    struct mg_idem_record *lock;
    uint8_t blob[MG_IDEM_RECORD_HEAD];
    char longkey[MG_IDEM_STORE_KEY_MAX + 2];

    call_init(&c);
    memset(longkey, 'k', sizeof longkey);
    assert_int_equal(mg_idem_begin(f->c, &c.req, "", 0, FP1, 1, OWNER_A, on_done), -EINVAL);
    assert_int_equal(mg_idem_begin(f->c, &c.req, longkey, sizeof longkey, FP1, 1, OWNER_A, on_done),
                     -EINVAL);
    assert_int_equal(mg_idem_begin(f->c, &c.req, "k", 1, FP1, 1, "XYZ", on_done), -EINVAL);
    assert_int_equal(mg_idem_begin(f->c, &c.req, "k", 1, FP1, 0, OWNER_A, on_done), -EINVAL);
    assert_int_equal(mg_idem_begin(f->c, &c.req, "k", 1, FP1, 1, OWNER_A, NULL), -EINVAL);
    assert_int_equal(mg_idem_begin(f->c, NULL, "k", 1, FP1, 1, OWNER_A, on_done), -EINVAL);
    assert_int_equal(mg_idem_complete(f->c, &c.req, "k", 1, OWNER_A, NULL, 1, on_done), -EINVAL);
    assert_int_equal(mg_idem_complete(f->c, &c.req, "k", 1, OWNER_A, rec, 0, on_done), -EINVAL);
    mg_idem_record_inflight_blob(blob, FP1, OWNER_A);
    lock = mg_idem_record_decode(blob, sizeof blob);
    assert_int_equal(mg_idem_complete(f->c, &c.req, "k", 1, OWNER_A, lock, 1, on_done), -EINVAL);
    mg_idem_record_unref(lock);
    /* busy: one operation per req */
    assert_int_equal(mg_idem_begin(f->c, &c.req, "k", 1, FP1, 1000, OWNER_A, on_done), 0);
    assert_int_equal(mg_idem_release(f->c, &c.req, "k", 1, OWNER_A, on_done), -EBUSY);
    tick(f);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.result, MG_IDEM_STARTED);
    tick(f);
    assert_int_equal(c.calls, 1); /* exactly once */
    mg_idem_record_unref(rec);
}

static void cancel_prevents_callback_and_frees_the_lock(void **state)
{
    struct fixture *f = *state;
    struct call c, d = {0};

    call_init(&c);
    assert_int_equal(mg_idem_begin(f->c, &c.req, "k1", 2, FP1, 60000, OWNER_A, on_done), 0);
    mg_idem_cancel(&c.req);
    assert_false(mg_idem_pending(&c.req));
    mg_idem_cancel(&c.req); /* a no-op now */
    tick(f);
    tick(f);
    assert_int_equal(c.calls, 0);
    /* the cancelled STARTED lock was released, so the key is free */
    assert_int_equal(begin(f, &d, "k1", FP1, 60000, OWNER_B), MG_IDEM_STARTED);
    /* cancelling a begin that found a record only drops the reference */
    complete_sample(f, "k1", OWNER_B, 100000);
    call_init(&c);
    assert_int_equal(mg_idem_begin(f->c, &c.req, "k1", 2, FP1, 60000, OWNER_A, on_done), 0);
    mg_idem_cancel(&c.req);
    tick(f);
    assert_int_equal(c.calls, 0);
    assert_int_equal(begin(f, &d, "k1", FP1, 60000, OWNER_B), MG_IDEM_DONE);
    call_done(&d);
}

static void fire_and_forget(void **state)
{
    struct fixture *f = *state;
    struct call c = {0};
    struct mg_idem_record *rec = sample_record(200, FP1, 4096);

    assert_int_equal(begin(f, &c, "k1", FP1, 60000, OWNER_A), MG_IDEM_STARTED);
    assert_int_equal(mg_idem_release(f->c, NULL, "k1", 2, OWNER_A, NULL), 0);
    assert_int_equal(begin(f, &c, "k1", FP1, 60000, OWNER_B), MG_IDEM_STARTED);
    assert_int_equal(mg_idem_complete(f->c, NULL, "k1", 2, OWNER_B, rec, 1000, NULL), 0);
    mg_idem_record_unref(rec);
    assert_int_equal(begin(f, &c, "k1", FP1, 60000, OWNER_A), MG_IDEM_DONE);
    call_done(&c);
}

/* The callback starts the next operation with the same req, and frees a
 * second req it owns: both allowed by rule 4. */
struct chain {
    struct fixture *f;
    struct mg_idem_req req;
    struct mg_idem_req *other;
    enum mg_idem_result results[3];
    int n;
};

static void on_chain(struct mg_idem_req *req)
{
    struct chain *ch = req->data;

    mg_idem_record_unref(req->record);
    ch->results[ch->n++] = req->result;
    if (ch->n == 1) {
        assert_int_equal(mg_idem_release(ch->f->c, req, "k1", 2, OWNER_A, on_chain), 0);
        mg_idem_cancel(ch->other);
        free(ch->other);
        ch->other = NULL;
    } else if (ch->n == 2) {
        assert_int_equal(mg_idem_begin(ch->f->c, req, "k1", 2, FP1, 1000, OWNER_B, on_chain), 0);
    }
}

static void callbacks_may_chain_and_free(void **state)
{
    struct fixture *f = *state;
    struct chain ch = {.f = f};

    ch.req.data = &ch;
    ch.other = calloc(1, sizeof *ch.other);
    ch.other->data = &ch;
    assert_int_equal(mg_idem_begin(f->c, &ch.req, "k1", 2, FP1, 1000, OWNER_A, on_chain), 0);
    assert_int_equal(mg_idem_begin(f->c, ch.other, "k9", 2, FP1, 1000, OWNER_A, on_chain), 0);
    tick(f); /* delivers the first; its callback cancels the second */
    tick(f);
    tick(f);
    assert_int_equal(ch.n, 3);
    assert_int_equal(ch.results[0], MG_IDEM_STARTED);
    assert_int_equal(ch.results[1], MG_IDEM_OK);
    assert_int_equal(ch.results[2], MG_IDEM_STARTED);
    assert_null(ch.other);
}

static void close_with_pending_ops_calls_nothing(void **state)
{
    struct fixture *f = *state;
    struct call a, b;
    struct mg_idem_memstats st;

    call_init(&a);
    call_init(&b);
    assert_int_equal(mg_idem_begin(f->c, &a.req, "k1", 2, FP1, 60000, OWNER_A, on_done), 0);
    assert_int_equal(mg_idem_begin(f->c, &b.req, "k1", 2, FP1, 60000, OWNER_B, on_done), 0);
    mg_idem_client_close(f->c);
    assert_false(mg_idem_pending(&a.req));
    assert_int_equal(mg_idem_begin(f->c, &b.req, "k2", 2, FP1, 1, OWNER_B, on_done), -ECANCELED);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(a.calls + b.calls, 0);
    mg_idem_memtable_stats(f->t, &st);
    assert_int_equal(st.entries, 0);            /* the STARTED lock was released on close */
    f->c = mg_idem_memory_open(f->t, &f->loop); /* for teardown */
}

/* ---- threads ---- */

#define NTHREADS 4
#define NKEYS    200

struct shared {
    struct mg_idem_memtable *t;
    atomic_int started[NKEYS];
    atomic_int done_or_busy;
};

struct worker {
    struct shared *sh;
    int id;
    uv_loop_t loop;
    struct mg_idem_client *c;
    struct mg_idem_req req;
    int key, outstanding;
    char owner[MG_IDEM_OWNER_LEN + 1];
};

static void worker_next(struct worker *w);

static void on_worker_done(struct mg_idem_req *req)
{
    struct worker *w = req->data;

    mg_idem_record_unref(req->record);
    w->outstanding = 0;
    if (req->result == MG_IDEM_STARTED) {
        struct mg_idem_record *rec = mg_idem_record_new(200, FP1, 1000);
        char key[16];

        atomic_fetch_add(&w->sh->started[w->key], 1);
        snprintf(key, sizeof key, "key%d", w->key);
        mg_idem_record_append_body(rec, key, strlen(key));
        assert_int_equal(
            mg_idem_complete(w->c, NULL, key, strlen(key), w->owner, rec, 1000000, NULL), 0);
        mg_idem_record_unref(rec);
    } else if (req->result == MG_IDEM_DONE || req->result == MG_IDEM_IN_FLIGHT) {
        atomic_fetch_add(&w->sh->done_or_busy, 1);
    } else {
        fail_msg("unexpected result %s", mg_idem_result_name(req->result));
    }
    w->key++;
    worker_next(w);
}

static void worker_next(struct worker *w)
{
    char key[16];

    if (w->key == NKEYS)
        return;
    snprintf(key, sizeof key, "key%d", w->key);
    assert_int_equal(mg_idem_owner_new(w->owner), 0);
    assert_int_equal(
        mg_idem_begin(w->c, &w->req, key, strlen(key), FP1, 1000000, w->owner, on_worker_done), 0);
    w->outstanding = 1;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;

    uv_loop_init(&w->loop);
    w->c = mg_idem_memory_open(w->sh->t, &w->loop);
    w->req.data = w;
    worker_next(w);
    uv_run(&w->loop, UV_RUN_DEFAULT); /* ends when the idle handle stops: all keys done */
    mg_idem_client_close(w->c);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    uv_loop_close(&w->loop);
    return NULL;
}

static void threads_share_one_table(void **state)
{
    struct shared *sh = calloc(1, sizeof *sh);
    struct worker w[NTHREADS];
    pthread_t th[NTHREADS];
    struct mg_idem_memstats st;

    sh->t = mg_idem_memtable_new(1 << 20);
    for (int i = 0; i < NTHREADS; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].sh = sh;
        w[i].id = i;
        pthread_create(&th[i], NULL, worker_main, &w[i]);
    }
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(th[i], NULL);
    for (int k = 0; k < NKEYS; k++)
        assert_int_equal(atomic_load(&sh->started[k]), 1); /* each key executed once */
    assert_int_equal(atomic_load(&sh->done_or_busy), (NTHREADS - 1) * NKEYS);
    mg_idem_memtable_stats(sh->t, &st);
    assert_int_equal(st.entries, NKEYS);
    assert_int_equal(st.in_flight, 0);
    assert_true(st.bytes <= st.budget);
    mg_idem_memtable_free(sh->t);

    /* again with a budget far too small: eviction under contention, bound kept */
    memset(sh, 0, sizeof *sh);
    sh->t = mg_idem_memtable_new(20 * mg_idem_memtable_cost(6, 200));
    for (int i = 0; i < NTHREADS; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].sh = sh;
        pthread_create(&th[i], NULL, worker_main, &w[i]);
    }
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(th[i], NULL);
    mg_idem_memtable_stats(sh->t, &st);
    assert_true(st.bytes <= st.budget);
    assert_true(st.evicted > 0);
    assert_int_equal(st.in_flight, 0);
    mg_idem_memtable_free(sh->t);
    free(sh);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(record_round_trip),
        cmocka_unit_test(record_headers_only_before_body),
        cmocka_unit_test(record_size_bound_makes_too_big),
        cmocka_unit_test(record_decode_refuses_malformed),
        cmocka_unit_test(record_header_filter),
        cmocka_unit_test_setup_teardown(begin_complete_replay, setup, teardown),
        cmocka_unit_test_setup_teardown(different_fingerprint_is_mismatch, setup, teardown),
        cmocka_unit_test_setup_teardown(second_begin_while_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(release_lets_the_key_be_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(complete_is_lost_after_lock_expiry, setup, teardown),
        cmocka_unit_test_setup_teardown(records_expire_after_ttl, setup, teardown),
        cmocka_unit_test_setup_teardown(sweep_removes_expired_entries_in_bounded_steps, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(budget_evicts_oldest_completed_first, setup, teardown),
        cmocka_unit_test_setup_teardown(budget_evicts_expired_before_completed, setup, teardown),
        cmocka_unit_test_setup_teardown(in_flight_locks_are_never_evicted, setup, teardown),
        cmocka_unit_test_setup_teardown(shrinking_the_budget_evicts_completed_records, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(too_big_response_is_not_executed_twice, setup, teardown),
        cmocka_unit_test_setup_teardown(replayed_record_outlives_eviction, setup, teardown),
        cmocka_unit_test_setup_teardown(synchronous_errors_never_call_back, setup, teardown),
        cmocka_unit_test_setup_teardown(cancel_prevents_callback_and_frees_the_lock, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(fire_and_forget, setup, teardown),
        cmocka_unit_test_setup_teardown(callbacks_may_chain_and_free, setup, teardown),
        cmocka_unit_test_setup_teardown(close_with_pending_ops_calls_nothing, setup, teardown),
        cmocka_unit_test(threads_share_one_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
