/* tests for gateway/core/arena.c: bump allocation, the block kept across resets,
 * big one-off allocations, cleanups, and the per-worker block cache that lets an
 * idle connection hold no block. Under MG_ARENA_DEBUG (ASan builds) every
 * allocation is its own malloc and the cache is never used. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/arena.h"

static void allocations_are_aligned_and_distinct(void **state)
{
    (void)state;
    struct mg_arena a;
    mg_arena_init(&a, NULL);
    char *p = mg_arena_alloc(&a, 3), *q = mg_arena_alloc(&a, 17), *r = mg_arena_calloc(&a, 40);
    assert_int_equal((uintptr_t)p % 16, 0);
    assert_int_equal((uintptr_t)q % 16, 0);
    assert_int_equal((uintptr_t)r % 16, 0);
    assert_true(q >= p + 3 || q + 17 <= p);
    for (int i = 0; i < 40; i++)
        assert_int_equal(r[i], 0);
    memset(p, 1, 3);
    memset(q, 2, 17);
    assert_string_equal(mg_arena_strndup(&a, "hello, world", 5), "hello");
    mg_arena_destroy(&a);
}

static void big_allocation_keeps_the_current_block(void **state)
{
    (void)state;
    struct mg_arena a;
    mg_arena_init(&a, NULL);
    char *small = mg_arena_alloc(&a, 64);
    char *big = mg_arena_alloc(&a, 3 * MG_ARENA_BLOCK_SIZE);
    memset(big, 7, 3 * MG_ARENA_BLOCK_SIZE);
    char *next = mg_arena_alloc(&a, 64);
#ifndef MG_ARENA_DEBUG
    assert_ptr_equal(next, small + 64); /* still bumping in the first block */
#endif
    (void)small;
    (void)next;
    mg_arena_destroy(&a);
}

static int cleanups_run;

static void count_cleanup(void *data)
{
    cleanups_run += *(int *)data;
}

static void cleanups_run_last_first_at_reset(void **state)
{
    (void)state;
    struct mg_arena a;
    static int one = 1, ten = 10;
    mg_arena_init(&a, NULL);
    cleanups_run = 0;
    mg_arena_defer(&a, count_cleanup, &one);
    mg_arena_defer(&a, count_cleanup, &ten);
    mg_arena_reset(&a);
    assert_int_equal(cleanups_run, 11);
    mg_arena_reset(&a);
    assert_int_equal(cleanups_run, 11); /* once only */
    mg_arena_destroy(&a);
}

static void reset_keeps_one_block_for_the_next_request(void **state)
{
    (void)state;
    struct mg_arena a;
    mg_arena_init(&a, NULL);
    char *first = mg_arena_alloc(&a, 100);
    for (int i = 0; i < 4; i++)
        mg_arena_alloc(&a, MG_ARENA_BLOCK_SIZE / 8); /* spills into a second block */
    mg_arena_reset(&a);
    char *again = mg_arena_alloc(&a, 100);
#ifndef MG_ARENA_DEBUG
    assert_ptr_equal(again, first);
#endif
    (void)first;
    (void)again;
    mg_arena_destroy(&a);
}

static void shed_gives_the_block_to_the_cache_and_back(void **state)
{
    (void)state;
    struct mg_arena_cache cache = {.max = 2};
    struct mg_arena a, b;
    mg_arena_init(&a, &cache);
    mg_arena_init(&b, &cache);
    char *pa = mg_arena_alloc(&a, 100);
    mg_arena_reset(&a);
    mg_arena_shed(&a); /* an idle connection holds no block */
#ifndef MG_ARENA_DEBUG
    assert_int_equal(cache.n, 1);
    char *pb = mg_arena_alloc(&b, 100); /* another exchange reuses it */
    assert_ptr_equal(pb, pa);
    assert_int_equal(cache.n, 0);
#else
    assert_int_equal(cache.n, 0);
    mg_arena_alloc(&b, 100);
#endif
    (void)pa;
    mg_arena_alloc(&a, 100); /* a's next request takes a fresh block */
    mg_arena_destroy(&a);
    mg_arena_destroy(&b);
#ifndef MG_ARENA_DEBUG
    assert_int_equal(cache.n, 2);
#endif
    mg_arena_cache_clear(&cache);
    assert_int_equal(cache.n, 0);
    assert_null(cache.free);
}

static void cache_holds_at_most_max_blocks(void **state)
{
    (void)state;
    struct mg_arena_cache cache = {.max = 1};
    struct mg_arena a[3];
    for (int i = 0; i < 3; i++) {
        mg_arena_init(&a[i], &cache);
        mg_arena_alloc(&a[i], 10);
    }
    for (int i = 0; i < 3; i++)
        mg_arena_destroy(&a[i]);
#ifndef MG_ARENA_DEBUG
    assert_int_equal(cache.n, 1); /* the others were freed (valgrind checks) */
#endif
    mg_arena_cache_clear(&cache);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(allocations_are_aligned_and_distinct),
        cmocka_unit_test(big_allocation_keeps_the_current_block),
        cmocka_unit_test(cleanups_run_last_first_at_reset),
        cmocka_unit_test(reset_keeps_one_block_for_the_next_request),
        cmocka_unit_test(shed_gives_the_block_to_the_cache_and_back),
        cmocka_unit_test(cache_holds_at_most_max_blocks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
