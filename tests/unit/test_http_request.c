/* tests for gateway/http/request.c: Host syntax, absolute-form targets, request ids,
 * safe paths and the form the router matches them in. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "http/request.h"

#define S(lit) ((struct mg_slice){(lit), sizeof(lit) - 1})

static void host_accepts_names_ports_and_ipv6(void **state)
{
    assert_true(mg_http_host_valid(S("api.example.com")));
    assert_true(mg_http_host_valid(S("api.example.com:8080")));
    assert_true(mg_http_host_valid(S("[::1]:80")));
    assert_true(mg_http_host_valid(S("")));
}

static void host_rejects_spaces_slashes_and_userinfo(void **state)
{
    assert_false(mg_http_host_valid(S("a b")));
    assert_false(mg_http_host_valid(S("a/b")));
    assert_false(mg_http_host_valid(S("user@host")));
    assert_false(mg_http_host_valid(S("a\tb")));
    assert_false(mg_http_host_valid(S("h\xc3\xa9")));
}

static void absolute_form_is_rewritten_to_origin_form(void **state)
{
    struct mg_slice url = S("http://gw.test/abs/path?q=1"), auth = {NULL, 0};
    assert_int_equal(mg_http_absolute_form(&url, &auth), 0);
    assert_int_equal(auth.len, 7);
    assert_memory_equal(auth.p, "gw.test", 7);
    assert_int_equal(url.len, strlen("/abs/path?q=1"));
    assert_memory_equal(url.p, "/abs/path?q=1", url.len);
}

static void absolute_form_without_path_becomes_slash(void **state)
{
    struct mg_slice url = S("HTTPS://h:8443"), auth = {NULL, 0};
    assert_int_equal(mg_http_absolute_form(&url, &auth), 0);
    assert_int_equal(url.len, 1);
    assert_memory_equal(url.p, "/", 1);
    assert_int_equal(auth.len, 6);
}

static void origin_form_is_left_alone(void **state)
{
    struct mg_slice url = S("/x?y"), auth = {NULL, 0};
    assert_int_equal(mg_http_absolute_form(&url, &auth), 0);
    assert_null(auth.p);
    assert_int_equal(url.len, 4);
}

static void malformed_absolute_forms_are_rejected(void **state)
{
    const char *bad[] = {"http:///x", "http://user@h/x", "http://h?q", "http://a b/x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct mg_slice url = {bad[i], strlen(bad[i])}, auth = {NULL, 0};
        assert_int_equal(mg_http_absolute_form(&url, &auth), -1);
    }
}

static void request_ids_are_visible_ascii_without_quotes(void **state)
{
    assert_true(mg_http_request_id_valid(S("req-1.2_3"), 200));
    assert_false(mg_http_request_id_valid(S(""), 200));
    assert_false(mg_http_request_id_valid(S("a b"), 200));
    assert_false(mg_http_request_id_valid(S("a\"b"), 200));
    assert_false(mg_http_request_id_valid(S("a\\b"), 200));
    assert_false(mg_http_request_id_valid(S("abcd"), 3));
}

static void paths_with_dot_segments_or_nul_are_unsafe(void **state)
{
    static const char *const ok[] = {
        "/",        "/a/b",   "/a..b/",   "/.well-known/x", "/a/...",  "/%2e%2ea",
        "/a%2fb",   "//a",    "/a/.b",    "/a;..",          "/x/..a",  "/x/a..;/b",
        "/x%2f..a", "/x/%5c", "/x/...;/", "/a%2",           "/a%2f.x", "/x/.%2e%2e"};
    static const char *const bad[] = {"/..", "/../admin", "/a/./b", "/a/.", "/%2e%2e/", "/%2E./x",
                                      "/.%2e", "/a/%2e", "/a%00b", "/%00", "/public/../admin",
                                      /* ended the way upstreams end a segment */
                                      "/x/..;/admin", "/x/.;/admin", "/x/..;jsessionid=1/admin",
                                      "/x/..%2fadmin", "/x/..%2Fadmin", "/x/%2e%2e%2fadmin",
                                      "/x/..%5cadmin", "/x/..%5Cadmin", "/x/..;",
                                      /* started that way */
                                      "/x%2f..%2fadmin", "/x%5c..", "/x%2F.",
                                      /* a raw backslash is not a URI character */
                                      "/x/..\\admin", "/a\\b", "\\"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        assert_true(mg_http_path_safe((struct mg_slice){ok[i], strlen(ok[i])}));
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_false(mg_http_path_safe((struct mg_slice){bad[i], strlen(bad[i])}));
}

static void targets_with_whitespace_or_controls_are_invalid(void **state)
{
    assert_true(mg_http_target_valid((struct mg_slice){"/a?b=%20", 8}));
    assert_false(mg_http_target_valid((struct mg_slice){"/\xc3\xa9", 3})); /* ASCII only */
    assert_false(mg_http_target_valid((struct mg_slice){"/a?q=\x80", 6}));
    assert_true(mg_http_target_valid(S("/%C3%A9")));
    assert_false(mg_http_target_valid((struct mg_slice){"/a\tb", 4}));
    assert_false(mg_http_target_valid((struct mg_slice){"/\x0c", 2}));
    assert_false(mg_http_target_valid((struct mg_slice){"/a b", 4}));
    assert_false(mg_http_target_valid((struct mg_slice){"/\x7f", 2}));
    assert_false(mg_http_target_valid(S("/admin#x")));
    assert_false(mg_http_target_valid(S("/x?a=b#/admin")));
    assert_true(mg_http_target_valid(S("/a%23b")));
}

static void route_form_decodes_unreserved_escapes_only(void **state)
{
    static const char *const cases[][2] = {
        {"/admin", "/admin"},
        {"/%61dmin", "/admin"},
        {"/%61%64%6D%69%6e/users", "/admin/users"},
        {"/%2d%2E%5f%7E%30%5A", "/-._~0Z"},
        {"/a%2fb%5c%3a", "/a%2Fb%5C%3A"},
        {"/%zz%4", "/%zz%4"},
        {"/%", "/%"},
        {"/\xc3\xa9%C3%A9", "/\xc3\xa9%C3%A9"},
    };
    char out[64];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct mg_slice in = {cases[i][0], strlen(cases[i][0])};
        size_t n = mg_http_path_route_form(in, out);
        assert_true(n <= in.len);
        out[n] = '\0';
        assert_string_equal(out, cases[i][1]);
    }
    char same[] = "/%61b%2f";
    same[mg_http_path_route_form(S("/%61b%2f"), same)] = '\0';
    assert_string_equal(same, "/ab%2F"); /* in place */
}

static void raw_len_maps_a_route_form_prefix_back(void **state)
{
    assert_int_equal(mg_http_path_raw_len(S("/%61dmin/users"), 6), 8);
    assert_int_equal(mg_http_path_raw_len(S("/%61dmin/users"), 7), 9);
    assert_int_equal(mg_http_path_raw_len(S("/adm%69n"), 6), 8);
    assert_int_equal(mg_http_path_raw_len(S("/a%2fb"), 4), 4); /* %2F kept: byte for byte */
    assert_int_equal(mg_http_path_raw_len(S("/abc"), 1), 1);
    assert_int_equal(mg_http_path_raw_len(S("/abc"), 0), 0);
    assert_int_equal(mg_http_path_raw_len(S("/a"), 9), 2);
}

static void path_faults_name_the_rule_broken(void **state)
{
    assert_int_equal(mg_http_path_fault(S("/static/a.css"), true), MG_TARGET_OK);
    assert_int_equal(mg_http_path_fault(S("/a/b?x=/../y"), false), MG_TARGET_OK);
    assert_int_equal(mg_http_path_fault(S("/a?x"), true), MG_TARGET_QUERY);
    assert_int_equal(mg_http_path_fault(S(""), true), MG_TARGET_NOT_ORIGIN);
    assert_int_equal(mg_http_path_fault(S("a/b"), true), MG_TARGET_NOT_ORIGIN);
    assert_int_equal(mg_http_path_fault(S("/a b"), true), MG_TARGET_CONTROL);
    assert_int_equal(mg_http_path_fault(S("/caf\xc3\xa9"), true), MG_TARGET_NON_ASCII);
    assert_int_equal(mg_http_path_fault(S("/a#b"), true), MG_TARGET_FRAGMENT);
    static const char *const unsafe[] = {
        "/static/../admin", "/x/..;/admin", "/x/%2e%2e/admin", "/x/..%2fadmin", "/x/..%5Cadmin",
        "/x/..\\admin",     "/x\\y",        "/a/%00",          "/a/."};
    for (size_t i = 0; i < sizeof unsafe / sizeof unsafe[0]; i++)
        assert_int_equal(mg_http_path_fault((struct mg_slice){unsafe[i], strlen(unsafe[i])}, true),
                         MG_TARGET_UNSAFE_PATH);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(host_accepts_names_ports_and_ipv6),
        cmocka_unit_test(host_rejects_spaces_slashes_and_userinfo),
        cmocka_unit_test(absolute_form_is_rewritten_to_origin_form),
        cmocka_unit_test(absolute_form_without_path_becomes_slash),
        cmocka_unit_test(origin_form_is_left_alone),
        cmocka_unit_test(malformed_absolute_forms_are_rejected),
        cmocka_unit_test(request_ids_are_visible_ascii_without_quotes),
        cmocka_unit_test(paths_with_dot_segments_or_nul_are_unsafe),
        cmocka_unit_test(targets_with_whitespace_or_controls_are_invalid),
        cmocka_unit_test(route_form_decodes_unreserved_escapes_only),
        cmocka_unit_test(raw_len_maps_a_route_form_prefix_back),
        cmocka_unit_test(path_faults_name_the_rule_broken),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
