/* tests for gateway/idempotency/key.c: bare (Stripe) and sf-string (IETF draft)
 * keys, the 255-byte bound on the unquoted key, visible ASCII only, the syntax
 * decisions documented in key.h, and owner tokens. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <string.h>

#include "idempotency/key.h"

static char out[MG_IDEM_KEY_MAX + 1];
static size_t outlen;

static int parse(const char *v)
{
    memset(out, 'X', sizeof out);
    return mg_idem_key_parse(v, strlen(v), out, &outlen);
}

static void assert_key(const char *v, const char *want)
{
    assert_int_equal(parse(v), 0);
    assert_int_equal(outlen, strlen(want));
    assert_string_equal(out, want);
}

static void assert_invalid(const char *v)
{
    if (parse(v) == 0)
        fail_msg("accepted %s", v);
}

static void bare_tokens_are_taken_as_is(void **state)
{
    assert_key("abc", "abc");
    assert_key("8e03978e-40d5-43e8-bc93-6894a57f9324", "8e03978e-40d5-43e8-bc93-6894a57f9324");
    assert_key("a\"b", "a\"b"); /* a DQUOTE not in first place is just a byte */
    assert_key("a\\b", "a\\b");
    assert_key("!~", "!~");
}

static void quoted_strings_are_unquoted(void **state)
{
    assert_key("\"abc\"", "abc");
    assert_key("\"8e03978e-40d5\"", "8e03978e-40d5");
    assert_key("\"a\\\"b\"", "a\"b");
    assert_key("\"a\\\\b\"", "a\\b");
    assert_key("\"\\\"\"", "\"");
}

static void bare_and_quoted_name_the_same_key(void **state)
{
    char a[MG_IDEM_KEY_MAX + 1], b[MG_IDEM_KEY_MAX + 1];
    size_t la, lb;

    assert_int_equal(mg_idem_key_parse("k-1", 3, a, &la), 0);
    assert_int_equal(mg_idem_key_parse("\"k-1\"", 5, b, &lb), 0);
    assert_int_equal(la, lb);
    assert_memory_equal(a, b, la);
}

static void surrounding_whitespace_is_trimmed(void **state)
{
    assert_key("  abc\t ", "abc");
    assert_key(" \"abc\" ", "abc");
}

static void empty_values_are_invalid(void **state)
{
    assert_invalid("");
    assert_invalid("   ");
    assert_invalid("\"\"");
    assert_int_equal(mg_idem_key_parse(NULL, 0, out, &outlen), -1);
}

static void length_bound_is_255_after_unquoting(void **state)
{
    char v[600];

    memset(v, 'a', 255);
    v[255] = '\0';
    assert_int_equal(parse(v), 0);
    assert_int_equal(outlen, 255);
    memset(v, 'a', 256);
    v[256] = '\0';
    assert_invalid(v);

    v[0] = '"';
    memset(v + 1, 'b', 255);
    v[256] = '"';
    v[257] = '\0';
    assert_int_equal(parse(v), 0);
    assert_int_equal(outlen, 255);
    v[0] = '"';
    memset(v + 1, 'b', 256);
    v[257] = '"';
    v[258] = '\0';
    assert_invalid(v);

    /* 255 escaped quotes: 512 bytes on the wire, a 255-byte key */
    v[0] = '"';
    for (int i = 0; i < 255; i++) {
        v[1 + 2 * i] = '\\';
        v[2 + 2 * i] = '"';
    }
    v[511] = '"';
    v[512] = '\0';
    assert_int_equal(parse(v), 0);
    assert_int_equal(outlen, 255);
}

static void control_characters_are_invalid(void **state)
{
    assert_invalid("a\tb");
    assert_invalid("a\rb");
    assert_invalid("a\x01");
    assert_invalid("a\x7f");
    assert_invalid("\"a\tb\"");
    assert_invalid("\"a\x1f\"");
    assert_invalid("\"a\x7f\"");
    assert_int_equal(mg_idem_key_parse("a\0b", 3, out, &outlen), -1);
    assert_int_equal(mg_idem_key_parse("\"a\0b\"", 5, out, &outlen), -1);
}

static void non_ascii_is_invalid(void **state)
{
    assert_invalid("caf\xc3\xa9");
    assert_invalid("\"caf\xc3\xa9\"");
    assert_invalid("\xff");
}

static void spaces_inside_are_invalid_both_ways(void **state)
{
    assert_invalid("a b");
    assert_invalid("\"a b\""); /* legal sf-string, but not visible ASCII: key.h */
}

static void malformed_sf_strings_are_invalid(void **state)
{
    assert_invalid("\"abc");       /* unterminated */
    assert_invalid("\"");          /* a lone DQUOTE */
    assert_invalid("\"abc\"x");    /* trailing bytes */
    assert_invalid("\"abc\";a=1"); /* parameters: rejected, see key.h */
    assert_invalid("\"a\\x\"");    /* only \" and \\ are escapes */
    assert_invalid("\"abc\\");     /* dangling backslash */
    assert_invalid("\"a\"\"b\"");
}

static void owner_tokens_are_128_bit_hex(void **state)
{
    char a[MG_IDEM_OWNER_LEN + 1], b[MG_IDEM_OWNER_LEN + 1];

    assert_int_equal(mg_idem_owner_new(a), 0);
    assert_int_equal(mg_idem_owner_new(b), 0);
    assert_int_equal(strlen(a), MG_IDEM_OWNER_LEN);
    assert_true(mg_idem_owner_valid(a));
    assert_true(mg_idem_owner_valid(b));
    assert_string_not_equal(a, b);
    assert_false(mg_idem_owner_valid("0123456789ABCDEF0123456789abcdef"));
    assert_false(mg_idem_owner_valid("0123"));
    assert_false(mg_idem_owner_valid(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bare_tokens_are_taken_as_is),
        cmocka_unit_test(quoted_strings_are_unquoted),
        cmocka_unit_test(bare_and_quoted_name_the_same_key),
        cmocka_unit_test(surrounding_whitespace_is_trimmed),
        cmocka_unit_test(empty_values_are_invalid),
        cmocka_unit_test(length_bound_is_255_after_unquoting),
        cmocka_unit_test(control_characters_are_invalid),
        cmocka_unit_test(non_ascii_is_invalid),
        cmocka_unit_test(spaces_inside_are_invalid_both_ways),
        cmocka_unit_test(malformed_sf_strings_are_invalid),
        cmocka_unit_test(owner_tokens_are_128_bit_hex),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
