/* tests for gateway/conn/h2mem.c, nghttp2's per-session allocator: the
 * malloc/calloc/realloc/free contract nghttp2 relies on (realloc keeps the
 * bytes, NULL and 0 cases, overflow refused), alignment, and the bound on
 * the blocks a session keeps. Under ASan nothing is kept (H2MEM_CACHE 0):
 * the tests that count kept blocks accept zero there. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "conn/h2mem.h"

static void *m_alloc(struct mg_h2mem *m, size_t n)
{
    return m->mem.malloc(n, m->mem.mem_user_data);
}

static void m_free(struct mg_h2mem *m, void *p)
{
    m->mem.free(p, m->mem.mem_user_data);
}

static void *m_realloc(struct mg_h2mem *m, void *p, size_t n)
{
    return m->mem.realloc(p, n, m->mem.mem_user_data);
}

static void *m_calloc(struct mg_h2mem *m, size_t n, size_t size)
{
    return m->mem.calloc(n, size, m->mem.mem_user_data);
}

static void blocks_are_aligned_and_hold_what_was_asked(void **state)
{
    (void)state;
    struct mg_h2mem m;
    mg_h2mem_init(&m);
    size_t sizes[] = {0, 1, 63, 64, 65, 1000, 1024, 1025, 70000};
    void *p[sizeof sizes / sizeof sizes[0]];
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        p[i] = m_alloc(&m, sizes[i]);
        assert_non_null(p[i]);
        assert_int_equal((uintptr_t)p[i] % _Alignof(max_align_t), 0);
        memset(p[i], (int)i, sizes[i]);
    }
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        for (size_t j = 0; j < sizes[i]; j++)
            assert_int_equal(((unsigned char *)p[i])[j], i);
        m_free(&m, p[i]);
    }
    m_free(&m, NULL);
    mg_h2mem_release(&m);
}

static void realloc_keeps_the_bytes_across_classes(void **state)
{
    (void)state;
    struct mg_h2mem m;
    mg_h2mem_init(&m);
    unsigned char *p = m_realloc(&m, NULL, 10); /* realloc(NULL) is malloc */
    assert_non_null(p);
    for (int i = 0; i < 10; i++)
        p[i] = (unsigned char)i;
    size_t steps[] = {60, 200, 900, 5000, 40, 3000};
    size_t kept = 10;
    for (size_t s = 0; s < sizeof steps / sizeof steps[0]; s++) {
        p = m_realloc(&m, p, steps[s]);
        assert_non_null(p);
        size_t n = kept < steps[s] ? kept : steps[s];
        for (size_t i = 0; i < n; i++)
            assert_int_equal(p[i], (unsigned char)i);
        for (size_t i = n; i < steps[s]; i++)
            p[i] = (unsigned char)i;
        kept = steps[s];
    }
    assert_null(m_realloc(&m, p, 0)); /* realloc to 0 frees */
    mg_h2mem_release(&m);
}

static void calloc_zeroes_and_sizes_that_overflow_are_refused(void **state)
{
    (void)state;
    struct mg_h2mem m;
    mg_h2mem_init(&m);
    unsigned char *p = m_alloc(&m, 100);
    memset(p, 0xff, 100);
    m_free(&m, p); /* a kept block comes back dirty: calloc must clear it */
    p = m_calloc(&m, 10, 10);
    assert_non_null(p);
    for (int i = 0; i < 100; i++)
        assert_int_equal(p[i], 0);
    m_free(&m, p);
    assert_null(m_calloc(&m, SIZE_MAX / 2, 3));
    assert_null(m_alloc(&m, SIZE_MAX));
    assert_null(m_alloc(&m, SIZE_MAX - 8));
    void *q = m_alloc(&m, 8);
    assert_null(m_realloc(&m, q, SIZE_MAX - 4)); /* q stays valid, as with realloc */
    m_free(&m, q);
    mg_h2mem_release(&m);
}

static void a_session_keeps_a_bounded_number_of_blocks(void **state)
{
    (void)state;
    struct mg_h2mem m;
    mg_h2mem_init(&m);
    void *p[3 * H2MEM_KEEP];
    for (int i = 0; i < 3 * H2MEM_KEEP; i++)
        p[i] = m_alloc(&m, 100);
    for (int i = 0; i < 3 * H2MEM_KEEP; i++)
        m_free(&m, p[i]);
    unsigned total = 0;
    for (int c = 0; c < H2MEM_CLASSES; c++) {
        assert_true(m.nfree[c] <= H2MEM_KEEP);
        total += m.nfree[c];
    }
    assert_true(total <= H2MEM_KEEP);
    /* a kept block is handed out again (without the cache: a new one) */
    void *again = m_alloc(&m, 120);
    assert_non_null(again);
    m_free(&m, again);
    mg_h2mem_release(&m);
    for (int c = 0; c < H2MEM_CLASSES; c++) {
        assert_int_equal(m.nfree[c], 0);
        assert_null(m.free[c]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(blocks_are_aligned_and_hold_what_was_asked),
        cmocka_unit_test(realloc_keeps_the_bytes_across_classes),
        cmocka_unit_test(calloc_zeroes_and_sizes_that_overflow_are_refused),
        cmocka_unit_test(a_session_keeps_a_bounded_number_of_blocks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
