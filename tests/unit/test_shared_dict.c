/* tests for gateway/shared/dict.c: values of each type, TTLs (time is passed
 * in), add/incr semantics, LRU eviction within the byte budget, the atomic
 * token bucket, the registry (same name and size: same contents; resized:
 * fresh), and concurrent incr from threads (no lost update). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "shared/dict.h"

#define K(s) s, strlen(s)

static struct mg_shdict_val str(const char *s)
{
    return (struct mg_shdict_val){.type = MG_SHD_STR, .str = s, .len = strlen(s)};
}

static struct mg_shdict_val num(double n)
{
    return (struct mg_shdict_val){.type = MG_SHD_NUM, .num = n};
}

static void values_and_types(void **state)
{
    (void)state;
    struct mg_shdict *d = mg_shdict_acquire("t_values", 64 * 1024);
    char buf[64];
    struct mg_shdict_val v;
    assert_int_equal(mg_shdict_get(d, K("a"), 0, &v, buf, sizeof buf), MG_SHD_NOT_FOUND);
    struct mg_shdict_val s = str("hello"), n = num(2.5);
    struct mg_shdict_val b = {.type = MG_SHD_BOOL, .num = 1};
    assert_int_equal(mg_shdict_set(d, K("a"), &s, 0, 0), MG_SHD_OK);
    assert_int_equal(mg_shdict_set(d, K("n"), &n, 0, 0), MG_SHD_OK);
    assert_int_equal(mg_shdict_set(d, K("b"), &b, 0, 0), MG_SHD_OK);
    assert_int_equal(mg_shdict_get(d, K("a"), 0, &v, buf, sizeof buf), MG_SHD_OK);
    assert_int_equal(v.type, MG_SHD_STR);
    assert_int_equal(v.len, 5);
    assert_memory_equal(buf, "hello", 5);
    assert_int_equal(mg_shdict_get(d, K("n"), 0, &v, buf, sizeof buf), MG_SHD_OK);
    assert_true(v.type == MG_SHD_NUM && v.num == 2.5);
    assert_int_equal(mg_shdict_get(d, K("b"), 0, &v, buf, sizeof buf), MG_SHD_OK);
    assert_true(v.type == MG_SHD_BOOL && v.num == 1);
    /* a too small buffer reports the full length */
    assert_int_equal(mg_shdict_get(d, K("a"), 0, &v, buf, 2), MG_SHD_OK);
    assert_int_equal(v.len, 5);
    /* set nil deletes; delete */
    struct mg_shdict_val nil = {.type = MG_SHD_NIL};
    assert_int_equal(mg_shdict_set(d, K("a"), &nil, 0, 0), MG_SHD_OK);
    assert_int_equal(mg_shdict_get(d, K("a"), 0, &v, buf, sizeof buf), MG_SHD_NOT_FOUND);
    assert_int_equal(mg_shdict_delete(d, K("n")), MG_SHD_OK);
    assert_int_equal(mg_shdict_delete(d, K("n")), MG_SHD_NOT_FOUND);
    assert_int_equal(mg_shdict_stats(d).entries, 1);
    mg_shdict_release(d);
}

static void ttl_add_incr(void **state)
{
    (void)state;
    struct mg_shdict *d = mg_shdict_acquire("t_ttl", 64 * 1024);
    char buf[16];
    struct mg_shdict_val v, s = str("x");
    uint64_t left;
    assert_int_equal(mg_shdict_set(d, K("k"), &s, 1000, 5000), MG_SHD_OK);
    assert_int_equal(mg_shdict_ttl(d, K("k"), 5400, &left), MG_SHD_OK);
    assert_int_equal(left, 600);
    assert_int_equal(mg_shdict_add(d, K("k"), &s, 0, 5999), MG_SHD_EXISTS);
    assert_int_equal(mg_shdict_get(d, K("k"), 6000, &v, buf, sizeof buf), MG_SHD_NOT_FOUND);
    assert_int_equal(mg_shdict_add(d, K("k"), &s, 0, 6000), MG_SHD_OK); /* expired: free */
    assert_int_equal(mg_shdict_ttl(d, K("k"), 9000, &left), MG_SHD_OK);
    assert_int_equal(left, 0); /* no expiry */

    double out = 0, init = 10;
    assert_int_equal(mg_shdict_incr(d, K("c"), 1, NULL, 0, 0, &out), MG_SHD_NOT_FOUND);
    assert_int_equal(mg_shdict_incr(d, K("c"), 2, &init, 100, 0, &out), MG_SHD_OK);
    assert_true(out == 12);
    assert_int_equal(mg_shdict_incr(d, K("c"), -5, &init, 100, 50, &out), MG_SHD_OK);
    assert_true(out == 7);
    /* incr keeps the TTL of the creation: a fixed window */
    assert_int_equal(mg_shdict_incr(d, K("c"), 1, &init, 100, 100, &out), MG_SHD_OK);
    assert_true(out == 11);
    assert_int_equal(mg_shdict_incr(d, K("k"), 1, &init, 0, 100, &out), MG_SHD_NOT_NUMBER);
    mg_shdict_release(d);
}

static void lru_eviction_within_budget(void **state)
{
    (void)state;
    struct mg_shdict *d = mg_shdict_acquire("t_lru", 8 * 1024);
    char key[32], buf[8];
    struct mg_shdict_val v, n = num(1);
    for (int i = 0; i < 1000; i++) {
        snprintf(key, sizeof key, "key%d", i);
        assert_int_equal(mg_shdict_set(d, K(key), &n, 0, 0), MG_SHD_OK);
        if (i == 10) /* touch key0: most recently used now */
            assert_int_equal(mg_shdict_get(d, K("key0"), 0, &v, buf, sizeof buf), MG_SHD_OK);
    }
    struct mg_shdict_stats st = mg_shdict_stats(d);
    assert_true(st.bytes <= st.budget);
    assert_true(st.entries > 20 && st.entries < 1000);
    assert_int_equal(st.evictions, 1000 - st.entries);
    assert_int_equal(mg_shdict_get(d, K("key999"), 0, &v, buf, sizeof buf), MG_SHD_OK);
    assert_int_equal(mg_shdict_get(d, K("key1"), 0, &v, buf, sizeof buf), MG_SHD_NOT_FOUND);
    /* one value larger than the whole budget */
    static char big[9000];
    memset(big, 'x', sizeof big);
    struct mg_shdict_val b = {.type = MG_SHD_STR, .str = big, .len = sizeof big};
    assert_int_equal(mg_shdict_set(d, K("big"), &b, 0, 0), MG_SHD_NO_MEMORY);
    mg_shdict_release(d);
}

static void token_bucket(void **state)
{
    (void)state;
    struct mg_shdict *d = mg_shdict_acquire("t_take", 64 * 1024);
    struct mg_shdict_take t;
    /* 10 per minute, burst 10: exactly 10 at once, then one every 6 s */
    double rate = 10.0 / 60000.0;
    for (int i = 0; i < 10; i++) {
        assert_int_equal(mg_shdict_take(d, K("ip"), rate, 10, 1000, &t), MG_SHD_OK);
        assert_true(t.allowed);
        assert_true(t.tokens == 9 - i);
    }
    assert_int_equal(mg_shdict_take(d, K("ip"), rate, 10, 1000, &t), MG_SHD_OK);
    assert_false(t.allowed);
    assert_true(t.retry_ms > 5999 && t.retry_ms < 6001);
    assert_int_equal(mg_shdict_take(d, K("ip"), rate, 10, 7001, &t), MG_SHD_OK);
    assert_true(t.allowed);
    /* get reports a bucket by its type (Lua reads it as absent); other values refuse take */
    struct mg_shdict_val v, s = str("x");
    char buf[8];
    assert_int_equal(mg_shdict_get(d, K("ip"), 7001, &v, buf, sizeof buf), MG_SHD_OK);
    assert_int_equal(v.type, MG_SHD_BUCKET);
    assert_int_equal(mg_shdict_set(d, K("s"), &s, 0, 0), MG_SHD_OK);
    assert_int_equal(mg_shdict_take(d, K("s"), rate, 10, 0, &t), MG_SHD_NOT_NUMBER);
    mg_shdict_release(d);
}

static void registry_keeps_same_size(void **state)
{
    (void)state;
    struct mg_shdict *a = mg_shdict_acquire("t_reg", 16 * 1024);
    struct mg_shdict_val n = num(7), v;
    char buf[8];
    assert_int_equal(mg_shdict_set(a, K("k"), &n, 0, 0), MG_SHD_OK);
    struct mg_shdict *b = mg_shdict_acquire("t_reg", 16 * 1024); /* reload, same size */
    assert_ptr_equal(a, b);
    mg_shdict_release(a); /* the old generation goes */
    assert_int_equal(mg_shdict_get(b, K("k"), 0, &v, buf, sizeof buf), MG_SHD_OK);
    struct mg_shdict *c = mg_shdict_acquire("t_reg", 32 * 1024); /* resized: fresh */
    assert_ptr_not_equal(b, c);
    assert_int_equal(mg_shdict_get(c, K("k"), 0, &v, buf, sizeof buf), MG_SHD_NOT_FOUND);
    assert_int_equal(mg_shdict_get(b, K("k"), 0, &v, buf, sizeof buf), MG_SHD_OK);
    mg_shdict_release(b);
    struct mg_shdict *e = mg_shdict_acquire("t_reg", 32 * 1024);
    assert_ptr_equal(c, e);
    mg_shdict_release(c);
    mg_shdict_release(e);
}

#define THREADS    4
#define PER_THREAD 20000

static void *incr_many(void *arg)
{
    struct mg_shdict *d = arg;
    double init = 0, out;
    for (int i = 0; i < PER_THREAD; i++)
        mg_shdict_incr(d, K("n"), 1, &init, 0, 0, &out);
    return NULL;
}

static void concurrent_incr_loses_nothing(void **state)
{
    (void)state;
    struct mg_shdict *d = mg_shdict_acquire("t_threads", 64 * 1024);
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, incr_many, d), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    struct mg_shdict_val v;
    char buf[8];
    assert_int_equal(mg_shdict_get(d, K("n"), 0, &v, buf, sizeof buf), MG_SHD_OK);
    assert_true(v.num == THREADS * PER_THREAD);
    mg_shdict_release(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(values_and_types),
        cmocka_unit_test(ttl_add_incr),
        cmocka_unit_test(lru_eviction_within_budget),
        cmocka_unit_test(token_bucket),
        cmocka_unit_test(registry_keeps_same_size),
        cmocka_unit_test(concurrent_incr_loses_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
