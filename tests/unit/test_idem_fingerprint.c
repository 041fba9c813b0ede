/* tests for gateway/idempotency/fingerprint.c: the framing is injective (no two
 * requests collide by concatenation), the body may arrive in any chunking, the
 * digest is exactly the framing fingerprint.h documents (recomputed here with
 * EVP independently), and storage keys are namespaced by route and scope. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "idempotency/fingerprint.h"

#define S(str) ((struct mg_idem_slice){(str), sizeof(str) - 1})

struct req {
    struct mg_idem_slice method, target;
    struct mg_idem_slice scope[3];
    size_t nscope;
    const char *body;
    size_t body_len;
};

static void fp_of(const struct req *r, uint8_t out[MG_IDEM_FP_LEN])
{
    struct mg_idem_fp fp;

    assert_int_equal(mg_idem_fp_init(&fp, r->method, r->target, r->scope, r->nscope), 0);
    assert_int_equal(mg_idem_fp_update_body(&fp, r->body, r->body_len), 0);
    assert_int_equal(mg_idem_fp_final(&fp, out), 0);
    assert_null(fp.md);
}

static void assert_differ(const struct req *a, const struct req *b)
{
    uint8_t x[MG_IDEM_FP_LEN], y[MG_IDEM_FP_LEN];

    fp_of(a, x);
    fp_of(b, y);
    assert_memory_not_equal(x, y, MG_IDEM_FP_LEN);
}

static void assert_same(const struct req *a, const struct req *b)
{
    uint8_t x[MG_IDEM_FP_LEN], y[MG_IDEM_FP_LEN];

    fp_of(a, x);
    fp_of(b, y);
    assert_memory_equal(x, y, MG_IDEM_FP_LEN);
}

static void same_request_same_fingerprint(void **state)
{
    struct req a = {S("POST"), S("/orders?x=1"), {S("Bearer t")}, 1, "{\"n\":1}", 7};
    struct req b = a;

    assert_same(&a, &b);
}

static void every_field_counts(void **state)
{
    struct req base = {S("POST"), S("/orders"), {S("t1")}, 1, "body", 4};
    struct req r;

    r = base, r.method = S("PUT");
    assert_differ(&base, &r);
    r = base, r.target = S("/orders?x=1");
    assert_differ(&base, &r);
    r = base, r.scope[0] = S("t2");
    assert_differ(&base, &r);
    r = base, r.body = "bodz";
    assert_differ(&base, &r);
    r = base, r.body_len = 3;
    assert_differ(&base, &r);
}

static void no_collisions_by_concatenation(void **state)
{
    /* method | target */
    struct req a = {S("POST"), S("/ab"), {{0}}, 0, "", 0};
    struct req b = {S("POST/"), S("ab"), {{0}}, 0, "", 0};
    assert_differ(&a, &b);
    /* target | body */
    struct req c = {S("POST"), S("/a"), {{0}}, 0, "b", 1};
    struct req d = {S("POST"), S("/ab"), {{0}}, 0, "", 0};
    assert_differ(&c, &d);
    /* scope value | scope value */
    struct req e = {S("POST"), S("/"), {S("ab"), S("")}, 2, "", 0};
    struct req f = {S("POST"), S("/"), {S("a"), S("b")}, 2, "", 0};
    assert_differ(&e, &f);
    /* scope | body */
    struct req g = {S("POST"), S("/"), {S("x")}, 1, "", 0};
    struct req h = {S("POST"), S("/"), {S("")}, 1, "x", 1};
    assert_differ(&g, &h);
    /* number of scope values */
    struct req i = {S("POST"), S("/"), {{0}}, 0, "", 0};
    struct req j = {S("POST"), S("/"), {S("")}, 1, "", 0};
    assert_differ(&i, &j);
    /* a body that mimics the framing of a longer target */
    struct req k = {S("POST"), S("/a"), {{0}}, 0, "\0\0\0\0\0\0\0\0", 8};
    struct req l = {S("POST"), S("/a\0\0\0\0\0\0\0\0"), {{0}}, 0, "", 0};
    assert_differ(&k, &l);
}

static void absent_scope_header_counts_as_empty(void **state)
{
    struct req a = {S("POST"), S("/"), {{NULL, 0}}, 1, "", 0};
    struct req b = {S("POST"), S("/"), {S("")}, 1, "", 0};

    assert_same(&a, &b);
}

static void body_chunking_does_not_matter(void **state)
{
    char body[1000];
    uint8_t whole[MG_IDEM_FP_LEN], pieces[MG_IDEM_FP_LEN];
    struct mg_idem_fp fp;
    struct req r = {S("PATCH"), S("/x"), {S("tenant")}, 1, body, sizeof body};

    for (size_t i = 0; i < sizeof body; i++)
        body[i] = (char)(i * 7);
    fp_of(&r, whole);

    for (size_t step = 1; step <= 257; step += 64) {
        assert_int_equal(mg_idem_fp_init(&fp, r.method, r.target, r.scope, 1), 0);
        for (size_t at = 0; at < sizeof body; at += step) {
            size_t n = sizeof body - at < step ? sizeof body - at : step;

            assert_int_equal(mg_idem_fp_update_body(&fp, body + at, n), 0);
            assert_int_equal(mg_idem_fp_update_body(&fp, body, 0), 0); /* empty chunks */
        }
        assert_int_equal(mg_idem_fp_final(&fp, pieces), 0);
        assert_memory_equal(whole, pieces, MG_IDEM_FP_LEN);
    }
}

static void put_u64(EVP_MD_CTX *md, uint64_t v)
{
    unsigned char b[8];

    for (int i = 7; i >= 0; i--, v >>= 8)
        b[i] = (unsigned char)v;
    EVP_DigestUpdate(md, b, 8);
}

static void digest_is_the_documented_framing(void **state)
{
    struct req r = {S("POST"), S("/o?a=b"), {S("k1"), S("")}, 2, "hello", 5};
    uint8_t got[MG_IDEM_FP_LEN], want[MG_IDEM_FP_LEN];
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned n;

    fp_of(&r, got);
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    EVP_DigestUpdate(md, "mg-idem-fp\x01", 11);
    put_u64(md, 4), EVP_DigestUpdate(md, "POST", 4);
    put_u64(md, 6), EVP_DigestUpdate(md, "/o?a=b", 6);
    put_u64(md, 2);
    put_u64(md, 2), EVP_DigestUpdate(md, "k1", 2);
    put_u64(md, 0);
    EVP_DigestUpdate(md, "hello", 5);
    put_u64(md, 5);
    EVP_DigestFinal_ex(md, want, &n);
    EVP_MD_CTX_free(md);
    assert_memory_equal(got, want, MG_IDEM_FP_LEN);
}

static void dispose_without_final(void **state)
{
    struct mg_idem_fp fp = {0};

    mg_idem_fp_dispose(&fp); /* zeroed: a no-op */
    assert_int_equal(mg_idem_fp_init(&fp, S("POST"), S("/"), NULL, 0), 0);
    assert_int_equal(mg_idem_fp_update_body(&fp, "abc", 3), 0);
    mg_idem_fp_dispose(&fp); /* valgrind checks the context is freed */
    mg_idem_fp_dispose(&fp);
    assert_null(fp.md);
}

static void storage_key_layout(void **state)
{
    struct mg_idem_slice scope[] = {S("Bearer abc")};
    uint8_t h[MG_IDEM_FP_LEN];
    char key[MG_IDEM_STORAGE_KEY_MAX], want[200];
    int n;

    n = mg_idem_storage_key(key, sizeof key, "orders-api", 10, scope, 1, "k-1", 3);
    assert_int_equal(mg_idem_scope_hash(scope, 1, h), 0);
    strcpy(want, "mg:idem:orders-api:");
    for (int i = 0; i < MG_IDEM_FP_LEN; i++)
        sprintf(want + strlen(want), "%02x", h[i]);
    strcat(want, ":k-1");
    assert_int_equal(n, (int)strlen(want));
    assert_string_equal(key, want);
}

static void storage_keys_separate_tenants_and_routes(void **state)
{
    struct mg_idem_slice t1[] = {S("Bearer alice")}, t2[] = {S("Bearer bob")};
    char a[MG_IDEM_STORAGE_KEY_MAX], b[MG_IDEM_STORAGE_KEY_MAX];

    mg_idem_storage_key(a, sizeof a, "r", 1, t1, 1, "k", 1);
    mg_idem_storage_key(b, sizeof b, "r", 1, t2, 1, "k", 1);
    assert_string_not_equal(a, b);
    mg_idem_storage_key(b, sizeof b, "r2", 2, t1, 1, "k", 1);
    assert_string_not_equal(a, b);
    mg_idem_storage_key(b, sizeof b, "r", 1, t1, 1, "k", 1);
    assert_string_equal(a, b);
}

static void route_names_are_escaped(void **state)
{
    char k[MG_IDEM_STORAGE_KEY_MAX];

    assert_true(mg_idem_storage_key(k, sizeof k, "a:b%c d", 7, NULL, 0, "K", 1) > 0);
    assert_memory_equal(k, "mg:idem:a%3Ab%25c%20d:", 22);
    /* so route "x" with key "H:k" never meets route "x:H" with key "k" */
    assert_ptr_equal(strchr(k + 8, ':'), k + 8 + 13);
}

static void storage_key_too_long(void **state)
{
    char k[100];
    char route[40];

    memset(route, 'r', sizeof route);
    assert_int_equal(mg_idem_storage_key(k, sizeof k, route, sizeof route, NULL, 0, "K", 1),
                     -ENAMETOOLONG);
    /* the check is on the worst case (every route byte escaped): 8 + 3*5 + 1 + 64 + 1 + 1 + NUL */
    assert_int_equal(mg_idem_storage_key(k, 91, route, 5, NULL, 0, "K", 1), 8 + 5 + 1 + 64 + 1 + 1);
    assert_int_equal(mg_idem_storage_key(k, 90, route, 5, NULL, 0, "K", 1), -ENAMETOOLONG);
}

static void scope_header_names(void **state)
{
    assert_string_equal(mg_idem_scope_header("header:Authorization"), "Authorization");
    assert_null(mg_idem_scope_header("cookie:x"));
    assert_null(mg_idem_scope_header(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(same_request_same_fingerprint),
        cmocka_unit_test(every_field_counts),
        cmocka_unit_test(no_collisions_by_concatenation),
        cmocka_unit_test(absent_scope_header_counts_as_empty),
        cmocka_unit_test(body_chunking_does_not_matter),
        cmocka_unit_test(digest_is_the_documented_framing),
        cmocka_unit_test(dispose_without_final),
        cmocka_unit_test(storage_key_layout),
        cmocka_unit_test(storage_keys_separate_tenants_and_routes),
        cmocka_unit_test(route_names_are_escaped),
        cmocka_unit_test(storage_key_too_long),
        cmocka_unit_test(scope_header_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
