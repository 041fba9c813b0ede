/*
 * Unit tests of gateway/obs/accesslog.c: the exact line (field set and order,
 * nulls, number formats), JSON escaping of hostile bytes (control characters,
 * invalid UTF-8), destinations (file, stderr, off, retarget), rotation by
 * rename + reopen, concurrent workers, and bounded memory with counted drops
 * when the reader cannot keep up (a FIFO nobody reads).
 *
 * Every line read back goes through json_check(), a strict little JSON
 * validator (RFC 8259 grammar, UTF-8 validity), so escaping bugs cannot hide.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>
#include <valgrind/valgrind.h>

#include "obs/accesslog.h"
#include "obs/textbuf.h"

/* Under valgrind the many-line tests take minutes (threads run one at a time,
 * and the readers poll): a tenth of the lines still fills the ring and
 * interleaves the writers. Native and ASan runs keep the full count. */
static int scaled(int n)
{
    return RUNNING_ON_VALGRIND ? n / 10 : n;
}

/* ------------------------------------------------------------ JSON checker */

struct js {
    const unsigned char *p, *end;
};

static int js_value(struct js *s, int depth);

static void js_ws(struct js *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

static int js_string(struct js *s)
{
    if (s->p >= s->end || *s->p != '"')
        return -1;
    for (s->p++; s->p < s->end; s->p++) {
        unsigned char c = *s->p;
        if (c == '"') {
            s->p++;
            return 0;
        }
        if (c < 0x20)
            return -1;
        if (c == '\\') {
            s->p++;
            if (s->p >= s->end)
                return -1;
            if (*s->p == 'u') {
                for (int i = 1; i <= 4; i++)
                    if (s->p + i >= s->end || !strchr("0123456789abcdefABCDEF", s->p[i]) ||
                        s->p[i] == 0)
                        return -1;
                s->p += 4;
            } else if (!strchr("\"\\/bfnrt", *s->p) || *s->p == 0) {
                return -1;
            }
        } else if (c >= 0x80) {
            int len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 ? 2 : 0;
            if (len == 0 || c > 0xf4 || s->p + len > s->end)
                return -1;
            for (int i = 1; i < len; i++)
                if ((s->p[i] & 0xc0) != 0x80)
                    return -1;
            s->p += len - 1;
        }
    }
    return -1;
}

static int js_number(struct js *s)
{
    const unsigned char *st = s->p;

    if (s->p < s->end && *s->p == '-')
        s->p++;
    if (s->p < s->end && *s->p == '0')
        s->p++;
    else if (s->p < s->end && *s->p >= '1' && *s->p <= '9')
        while (s->p < s->end && *s->p >= '0' && *s->p <= '9')
            s->p++;
    else
        return -1;
    if (s->p < s->end && *s->p == '.') {
        s->p++;
        if (s->p >= s->end || *s->p < '0' || *s->p > '9')
            return -1;
        while (s->p < s->end && *s->p >= '0' && *s->p <= '9')
            s->p++;
    }
    return s->p > st ? 0 : -1;
}

static int js_lit(struct js *s, const char *lit)
{
    size_t n = strlen(lit);

    if ((size_t)(s->end - s->p) < n || memcmp(s->p, lit, n) != 0)
        return -1;
    s->p += n;
    return 0;
}

static int js_container(struct js *s, int depth, char close, int object)
{
    s->p++;
    js_ws(s);
    if (s->p < s->end && *s->p == close) {
        s->p++;
        return 0;
    }
    for (;;) {
        js_ws(s);
        if (object) {
            if (js_string(s) < 0)
                return -1;
            js_ws(s);
            if (s->p >= s->end || *s->p++ != ':')
                return -1;
        }
        if (js_value(s, depth + 1) < 0)
            return -1;
        js_ws(s);
        if (s->p >= s->end)
            return -1;
        if (*s->p == close) {
            s->p++;
            return 0;
        }
        if (*s->p++ != ',')
            return -1;
    }
}

static int js_value(struct js *s, int depth)
{
    if (depth > 32)
        return -1;
    js_ws(s);
    if (s->p >= s->end)
        return -1;
    switch (*s->p) {
    case '{':
        return js_container(s, depth, '}', 1);
    case '[':
        return js_container(s, depth, ']', 0);
    case '"':
        return js_string(s);
    case 't':
        return js_lit(s, "true");
    case 'f':
        return js_lit(s, "false");
    case 'n':
        return js_lit(s, "null");
    default:
        return js_number(s);
    }
}

/* 0 when [p, p+n) is exactly one JSON object. */
static int json_check(const char *p, size_t n)
{
    struct js s = {(const unsigned char *)p, (const unsigned char *)p + n};

    js_ws(&s);
    if (s.p >= s.end || *s.p != '{' || js_value(&s, 0) < 0)
        return -1;
    js_ws(&s);
    return s.p == s.end ? 0 : -1;
}

/* ------------------------------------------------------------ helpers */

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    struct mg_textbuf b = MG_TEXTBUF_INIT;
    char chunk[4096];
    size_t n;

    assert_non_null(f);
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        mg_textbuf_append(&b, chunk, n);
    fclose(f);
    return mg_textbuf_take(&b, len);
}

/* Number of lines; each must be a valid JSON object. */
static size_t check_lines(const char *text, size_t len)
{
    size_t n = 0;

    for (const char *p = text, *end = text + len; p < end;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        assert_non_null(nl);
        if (json_check(p, (size_t)(nl - p)) != 0)
            fail_msg("invalid JSON line: %.*s", (int)(nl - p), p);
        n++;
        p = nl + 1;
    }
    return n;
}

static char tmpdir[64];

static int setup(void **state)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/mg-accesslog-XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    return 0;
}

static int teardown(void **state)
{
    char cmd[128];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    assert_int_equal(system(cmd), 0);
    return 0;
}

static const char *tmp(const char *name)
{
    static char path[4][128];
    static int i;

    i = (i + 1) % 4;
    snprintf(path[i], sizeof(path[i]), "%s/%s", tmpdir, name);
    return path[i];
}

#define S(lit) ((struct mg_slice){(lit), sizeof(lit) - 1})

static struct mg_access_entry full_entry(void)
{
    return (struct mg_access_entry){
        .time_ms = 1790000000123,
        .request_id = S("3f2a9c"),
        .client_ip = S("10.0.0.7"),
        .method = S("POST"),
        .path = S("/orders?id=1"),
        .status = 201,
        .bytes_in = 123,
        .bytes_out = 4567,
        .route = "orders-api",
        .upstream = "127.0.0.1:9001",
        .attempts = 2,
        .duration_ns = 12345678,
        .upstream_duration_ns = 11000000,
        .error = MG_ERR_NONE,
        .host = S("api.example.org"),
        .user_agent = S("curl/7.88.1"),
        .upstream_status = 201,
        .protocol = "http/1.1",
    };
}

static char *write_and_read(const struct mg_access_entry *e, size_t *len)
{
    char err[256];
    const char *path = tmp("one.log");
    struct mg_accesslog *l;

    unlink(path);
    l = mg_accesslog_open(path, 1, err, sizeof(err));
    assert_non_null(l);
    assert_true(mg_accesslog_enabled(l));
    mg_accesslog_write(l, 0, e);
    mg_accesslog_close(l);
    return slurp(path, len);
}

/* ------------------------------------------------------------ tests */

static void test_line_fields_and_order(void **state)
{
    struct mg_access_entry e = full_entry();
    size_t len;
    char *t = write_and_read(&e, &len);

    /* DESIGN 10.8's default order. */
    assert_string_equal(t, "{\"time\":\"2026-09-21T14:13:20.123Z\",\"request_id\":\"3f2a9c\","
                           "\"client_ip\":\"10.0.0.7\",\"method\":\"POST\","
                           "\"host\":\"api.example.org\",\"path\":\"/orders?id=1\","
                           "\"status\":201,\"bytes_in\":123,\"bytes_out\":4567,"
                           "\"route\":\"orders-api\",\"upstream\":\"127.0.0.1:9001\","
                           "\"upstream_status\":201,\"attempts\":2,\"duration\":0.012345,"
                           "\"upstream_duration\":0.011,\"user_agent\":\"curl/7.88.1\","
                           "\"tls_protocol\":null,\"tls_cipher\":null,\"tls_client_subject\":null,"
                           "\"protocol\":\"http/1.1\","
                           "\"error\":null}\n");
    assert_int_equal(check_lines(t, len), 1);
    free(t);
}

/* A request on a TLS listener: its version, cipher and verified client
 * certificate. */
static void test_tls_fields(void **state)
{
    struct mg_access_entry e = full_entry();
    e.tls_protocol = "TLSv1.3";
    e.tls_cipher = "TLS_AES_256_GCM_SHA384";
    e.tls_client_subject = "/O=Example/CN=client \"one\"";
    e.protocol = "h2";
    size_t len;
    char *t = write_and_read(&e, &len);

    assert_non_null(strstr(t, ",\"tls_protocol\":\"TLSv1.3\","
                              "\"tls_cipher\":\"TLS_AES_256_GCM_SHA384\","
                              "\"tls_client_subject\":\"/O=Example/CN=client \\\"one\\\"\","
                              "\"protocol\":\"h2\""));
    assert_int_equal(check_lines(t, len), 1);
    free(t);
}

/* access_log_fields: only the chosen fields, in the chosen order. */
static void test_chosen_fields(void **state)
{
    static const uint8_t fields[] = {MG_AF_STATUS, MG_AF_HOST, MG_AF_TLS_CIPHER,
                                     MG_AF_UPSTREAM_STATUS, MG_AF_USER_AGENT};
    struct mg_access_entry e = full_entry();
    size_t len;
    char *t;

    e.fields = fields;
    e.nfields = sizeof(fields);
    t = write_and_read(&e, &len);
    assert_string_equal(t, "{\"status\":201,\"host\":\"api.example.org\",\"tls_cipher\":null,"
                           "\"upstream_status\":201,\"user_agent\":\"curl/7.88.1\"}\n");
    assert_int_equal(check_lines(t, len), 1);
    free(t);
    assert_int_equal(mg_access_field_id("user_agent"), MG_AF_USER_AGENT);
    assert_int_equal(mg_access_field_id("tls"), MG_AF_TLS);
    assert_int_equal(mg_access_field_id("nope"), -1);
    assert_non_null(strstr(mg_access_field_names(), "upstream_status"));
    /* the hand-written list in error messages names every field, and each name
     * finds its own id */
    for (int f = 0; f < MG_AF__COUNT; f++) {
        assert_int_equal(mg_access_field_id(mg_access_field_name(f)), f);
        assert_non_null(strstr(mg_access_field_names(), mg_access_field_name(f)));
    }
}

static void test_nulls_and_error_names(void **state)
{
    struct mg_access_entry e = {
        .time_ms = 1000,
        .method = S("GET"),
        .path = S("/nowhere"),
        .client_ip = S("::1"),
        .status = 404,
        .duration_ns = 2000000000,
        .upstream_duration_ns = -1,
        .error = MG_ERR_NO_ROUTE,
    };
    size_t len;
    char *t = write_and_read(&e, &len);

    assert_string_equal(t, "{\"time\":\"1970-01-01T00:00:01.000Z\",\"request_id\":null,"
                           "\"client_ip\":\"::1\",\"method\":\"GET\",\"host\":null,"
                           "\"path\":\"/nowhere\",\"status\":404,\"bytes_in\":0,\"bytes_out\":0,"
                           "\"route\":null,\"upstream\":null,\"upstream_status\":null,"
                           "\"attempts\":0,\"duration\":2,\"upstream_duration\":null,"
                           "\"user_agent\":null,\"tls_protocol\":null,\"tls_cipher\":null,"
                           "\"tls_client_subject\":null,"
                           "\"protocol\":null,\"error\":\"no_route\"}\n");
    check_lines(t, len);
    free(t);

    e.error = MG_ERR_UPSTREAM_TIMEOUT;
    e.upstream_duration_ns = 0;
    t = write_and_read(&e, &len);
    assert_non_null(strstr(t, "\"upstream_duration\":0,"));
    assert_non_null(strstr(t, "\"error\":\"upstream_timeout\"}"));
    free(t);
}

static void test_time_defaults_to_now(void **state)
{
    struct mg_access_entry e = full_entry();
    size_t len;
    char *t;
    time_t now = time(NULL);
    struct tm tm;
    char year[16];

    e.time_ms = 0;
    t = write_and_read(&e, &len);
    gmtime_r(&now, &tm);
    snprintf(year, sizeof(year), "%04d-", tm.tm_year + 1900);
    assert_memory_equal(t, "{\"time\":\"", 9);
    assert_memory_equal(t + 9, year, 5);
    /* "YYYY-MM-DDTHH:MM:SS.mmmZ" */
    assert_int_equal(t[9 + 10], 'T');
    assert_int_equal(t[9 + 19], '.');
    assert_int_equal(t[9 + 23], 'Z');
    free(t);
}

static void test_json_escaping(void **state)
{
    static const char path[] = "/a\"b\\c\n\r\t\x01\x1f\x7f"
                               "\xc3\xa9"         /* é */
                               "\xe2\x82\xac"     /* € */
                               "\xf0\x9f\x98\x80" /* U+1F600 */
                               "\xff"             /* never valid */
                               "\xc3"             /* truncated 2-byte */
                               "Z"
                               "\xc0\xaf"         /* overlong '/' */
                               "\xed\xa0\x80"     /* surrogate U+D800 */
                               "\xf4\x90\x80\x80" /* > U+10FFFF */
                               "\xe2\x82";        /* truncated at the end */
    struct mg_access_entry e = full_entry();
    size_t len;
    char *t;

    e.path = (struct mg_slice){path, sizeof(path) - 1};
    e.request_id = (struct mg_slice){"id\0x", 4}; /* NUL inside a slice */
    e.method = S("G\"ET");
    t = write_and_read(&e, &len);
    assert_non_null(strstr(t, "\"request_id\":\"id\\u0000x\""));
    assert_non_null(strstr(t, "\"method\":\"G\\\"ET\""));
    assert_non_null(strstr(t, "\"path\":\"/a\\\"b\\\\c\\u000a\\u000d\\u0009\\u0001\\u001f\\u007f"
                              "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"
                              "\\u00ff\\u00c3Z\\u00c0\\u00af\\u00ed\\u00a0\\u0080"
                              "\\u00f4\\u0090\\u0080\\u0080\\u00e2\\u0082\""));
    assert_int_equal(check_lines(t, len), 1);
    free(t);
}

static void test_config_names_escaped(void **state)
{
    struct mg_access_entry e = full_entry();
    size_t len;
    char *t;

    e.route = "r\"o\\ute";
    e.upstream = "[::1]:80";
    t = write_and_read(&e, &len);
    assert_non_null(strstr(t, "\"route\":\"r\\\"o\\\\ute\",\"upstream\":\"[::1]:80\""));
    check_lines(t, len);
    free(t);
}

static void test_off_writes_nothing(void **state)
{
    char err[64];
    struct mg_accesslog *l = mg_accesslog_open("off", 2, err, sizeof(err));
    struct mg_access_entry e = full_entry();
    uint64_t lines, dropped;

    assert_non_null(l);
    assert_false(mg_accesslog_enabled(l));
    assert_false(mg_accesslog_enabled(NULL));
    mg_accesslog_write(l, 1, &e);
    mg_accesslog_write(NULL, 0, &e);
    mg_accesslog_flush(l);
    assert_int_equal(mg_accesslog_reopen(l), 0);
    mg_accesslog_stats(l, &lines, &dropped);
    assert_int_equal(lines, 0);
    assert_int_equal(dropped, 0);
    mg_accesslog_close(l);
    mg_accesslog_close(NULL);
}

static void test_open_error(void **state)
{
    char err[256] = "";

    assert_null(mg_accesslog_open("/nonexistent-dir/x/access.log", 1, err, sizeof(err)));
    assert_string_equal(err, "access_log: cannot open '/nonexistent-dir/x/access.log': No such "
                             "file or directory");
}

static void test_appends_to_existing_file(void **state)
{
    char err[64];
    const char *path = tmp("append.log");
    struct mg_access_entry e = full_entry();
    struct mg_accesslog *l;
    FILE *f = fopen(path, "w");
    size_t len;
    char *t;

    fputs("{\"old\":1}\n", f);
    fclose(f);
    l = mg_accesslog_open(path, 1, err, sizeof(err));
    mg_accesslog_write(l, 0, &e);
    mg_accesslog_close(l);
    t = slurp(path, &len);
    assert_memory_equal(t, "{\"old\":1}\n{\"time\":", 18);
    assert_int_equal(check_lines(t, len), 2);
    free(t);
}

static void test_reopen_after_rename(void **state)
{
    char err[64];
    const char *path = tmp("rot.log"), *rotated = tmp("rot.log.1");
    struct mg_accesslog *l = mg_accesslog_open(path, 2, err, sizeof(err));
    struct mg_access_entry e = full_entry();
    size_t len;
    char *t;

    assert_non_null(l);
    e.request_id = S("before");
    mg_accesslog_write(l, 0, &e);
    mg_accesslog_write(l, 1, &e);
    mg_accesslog_flush(l);
    assert_int_equal(rename(path, rotated), 0);
    /* written after the rename, before SIGUSR1: still goes to the renamed file */
    e.request_id = S("between");
    mg_accesslog_write(l, 0, &e);
    assert_int_equal(mg_accesslog_reopen(l), 0);
    e.request_id = S("after");
    mg_accesslog_write(l, 1, &e);
    mg_accesslog_flush(l);

    t = slurp(rotated, &len);
    assert_int_equal(check_lines(t, len), 3);
    assert_int_equal(strstr(t, "\"after\"") == NULL, 1);
    assert_non_null(strstr(t, "\"between\""));
    free(t);
    t = slurp(path, &len);
    assert_int_equal(check_lines(t, len), 1);
    assert_non_null(strstr(t, "\"request_id\":\"after\""));
    free(t);
    mg_accesslog_close(l);
}

static void test_reopen_failure_keeps_old_file(void **state)
{
    char err[64];
    char dir[128];
    const char *path;
    struct mg_accesslog *l;
    struct mg_access_entry e = full_entry();
    size_t len;
    char *t;

    snprintf(dir, sizeof(dir), "%s/sub", tmpdir);
    assert_int_equal(mkdir(dir, 0700), 0);
    path = tmp("sub/a.log");
    l = mg_accesslog_open(path, 1, err, sizeof(err));
    assert_non_null(l);
    mg_accesslog_write(l, 0, &e);
    mg_accesslog_flush(l);
    /* the directory disappears: reopen fails, the open descriptor stays in use */
    assert_int_equal(rename(dir, tmp("sub2")), 0);
    assert_true(mg_accesslog_reopen(l) < 0);
    mg_accesslog_write(l, 0, &e);
    mg_accesslog_close(l);
    t = slurp(tmp("sub2/a.log"), &len);
    assert_int_equal(check_lines(t, len), 2);
    free(t);
}

static void test_retarget(void **state)
{
    char err[256];
    const char *a = tmp("a.log"), *b = tmp("b.log");
    struct mg_accesslog *l = mg_accesslog_open("off", 1, err, sizeof(err));
    struct mg_access_entry e = full_entry();
    size_t len;
    char *t;

    assert_non_null(l);
    assert_int_equal(mg_accesslog_retarget(l, a, err, sizeof(err)), 0);
    assert_true(mg_accesslog_enabled(l));
    e.request_id = S("to-a"); /* possibly queued before the writer swapped: still lands in a */
    mg_accesslog_write(l, 0, &e);
    mg_accesslog_flush(l);
    assert_int_equal(mg_accesslog_retarget(l, b, err, sizeof(err)), 0);
    e.request_id = S("to-b");
    mg_accesslog_write(l, 0, &e);
    assert_true(mg_accesslog_retarget(l, "/nonexistent-dir/c.log", err, sizeof(err)) < 0);
    assert_non_null(strstr(err, "cannot open"));
    mg_accesslog_flush(l);
    assert_int_equal(mg_accesslog_retarget(l, "off", err, sizeof(err)), 0);
    assert_false(mg_accesslog_enabled(l));
    mg_accesslog_write(l, 0, &e); /* dropped silently: off */
    mg_accesslog_close(l);

    t = slurp(a, &len);
    assert_int_equal(check_lines(t, len), 1);
    assert_non_null(strstr(t, "\"to-a\""));
    free(t);
    t = slurp(b, &len);
    assert_int_equal(check_lines(t, len), 1);
    assert_non_null(strstr(t, "\"to-b\""));
    free(t);
}

static void test_stderr_destination(void **state)
{
    char err[64];
    int fds[2], saved = dup(STDERR_FILENO);
    struct mg_access_entry e = full_entry();
    struct mg_accesslog *l;
    char buf[4096];
    ssize_t n;

    assert_int_equal(pipe(fds), 0);
    assert_int_equal(dup2(fds[1], STDERR_FILENO), STDERR_FILENO);
    close(fds[1]);
    l = mg_accesslog_open("stderr", 1, err, sizeof(err));
    assert_non_null(l);
    mg_accesslog_write(l, 0, &e);
    assert_int_equal(mg_accesslog_reopen(l), 0); /* no-op */
    mg_accesslog_close(l);                       /* must not close fd 2 */
    assert_int_equal(fcntl(STDERR_FILENO, F_GETFD) >= 0, 1);
    dup2(saved, STDERR_FILENO);
    close(saved);
    n = read(fds[0], buf, sizeof(buf));
    close(fds[0]);
    assert_true(n > 0);
    assert_int_equal(check_lines(buf, (size_t)n), 1);
}

struct producer {
    struct mg_accesslog *l;
    unsigned worker;
    int n;
};

static void produce(void *arg)
{
    struct producer *p = arg;
    char id[32];
    struct mg_access_entry e = full_entry();

    for (int i = 0; i < p->n; i++) {
        snprintf(id, sizeof(id), "w%u-%d", p->worker, i);
        e.request_id = (struct mg_slice){id, strlen(id)};
        mg_accesslog_write(p->l, p->worker, &e);
        if (i % 100 == 99)
            usleep(1000); /* pace like real traffic, so the writer keeps up */
    }
}

/* Four workers write at once: every line arrives whole, none is lost without
 * being counted, and each worker's lines keep their order. */
static void test_concurrent_workers_whole_lines(void **state)
{
    enum { W = 4 };
    const int N = scaled(5000);
    char err[64];
    const char *path = tmp("many.log");
    struct mg_accesslog *l = mg_accesslog_open(path, W, err, sizeof(err));
    struct producer p[W];
    uv_thread_t th[W];
    uint64_t lines, dropped;
    int last[W];
    size_t len;
    char *t;

    assert_non_null(l);
    for (unsigned w = 0; w < W; w++) {
        p[w] = (struct producer){l, w, N};
        last[w] = -1;
        assert_int_equal(uv_thread_create(&th[w], produce, &p[w]), 0);
    }
    for (unsigned w = 0; w < W; w++)
        uv_thread_join(&th[w]);
    mg_accesslog_stats(l, &lines, &dropped);
    mg_accesslog_close(l);
    t = slurp(path, &len);
    assert_int_equal(lines + dropped, W * N);
    assert_int_equal(check_lines(t, len), lines);
    if (dropped)
        print_message("note: %llu lines dropped (slow machine)\n", (unsigned long long)dropped);
    for (const char *q = t; (q = strstr(q, "\"request_id\":\"w")) != NULL; q++) {
        unsigned w;
        int i;
        assert_int_equal(sscanf(q, "\"request_id\":\"w%u-%d\"", &w, &i), 2);
        assert_true(w < W && i > last[w]);
        last[w] = i;
    }
    free(t);
}

struct drain_ctx {
    int fd;
    struct mg_textbuf got;
};

static void drain_fifo(void *arg)
{
    struct drain_ctx *d = arg;
    char buf[65536];
    ssize_t n;

    while ((n = read(d->fd, buf, sizeof(buf))) != 0) {
        if (n < 0) {
            usleep(1000); /* EAGAIN: nothing yet */
            continue;
        }
        mg_textbuf_append(&d->got, buf, (size_t)n);
    }
}

/* The reader stalls: the ring fills, lines are dropped and counted, the worker
 * never blocks, memory stays bounded, and every line that arrives is whole. */
static void test_slow_reader_drops_and_counts(void **state)
{
    const int N = scaled(40000); /* still ~1.7 MB under valgrind: over the ring */
    char err[64];
    const char *path = tmp("fifo");
    struct drain_ctx d = {.got = MG_TEXTBUF_INIT};
    struct mg_access_entry e = full_entry();
    struct mg_accesslog *l;
    uv_thread_t th;
    uint64_t lines, dropped, t0;
    char pad[300];

    assert_int_equal(mkfifo(path, 0600), 0);
    d.fd = open(path, O_RDONLY | O_NONBLOCK); /* so the writer's open does not block */
    assert_true(d.fd >= 0);
    l = mg_accesslog_open(path, 1, err, sizeof(err));
    assert_non_null(l);
    memset(pad, 'x', sizeof(pad));
    e.path = (struct mg_slice){pad, sizeof(pad)};
    t0 = uv_hrtime();
    for (int i = 0; i < N; i++) /* ~17 MB against a 64 KiB pipe and a 1 MiB ring */
        mg_accesslog_write(l, 0, &e);
    /* the producer never waited on the stalled pipe */
    assert_true(uv_hrtime() - t0 < 2000000000u);
    mg_accesslog_stats(l, &lines, &dropped);
    assert_true(dropped > 0);
    assert_int_equal(lines + dropped, N);

    assert_int_equal(uv_thread_create(&th, drain_fifo, &d), 0);
    mg_accesslog_close(l); /* flushes what was queued, closes the FIFO: EOF */
    uv_thread_join(&th);
    close(d.fd);
    assert_int_equal(check_lines(d.got.p, d.got.len), lines);
    mg_textbuf_free(&d.got);
}

struct other_writer {
    int fd;
    int n;
};

static void write_other(void *arg)
{
    struct other_writer *o = arg;
    static const char line[] = "{\"error_log\":\"another writer on the same pipe\"}\n";

    for (int i = 0; i < o->n; i++) {
        assert_int_equal(write(o->fd, line, sizeof(line) - 1), (ssize_t)sizeof(line) - 1);
        if (i % 50 == 0)
            usleep(100);
    }
}

/* On a pipe (stderr), another thread writes lines too (the error log does, with
 * one write(2) per line). Access log batches are whole lines of at most
 * PIPE_BUF bytes, which the kernel writes atomically, so no line is ever cut
 * by a line of the other writer. */
static void test_pipe_shared_with_another_writer(void **state)
{
    const int N = scaled(20000), M = scaled(2000);
    char err[64];
    const char *path = tmp("fifo2");
    struct drain_ctx d = {.got = MG_TEXTBUF_INIT};
    struct mg_access_entry e = full_entry();
    struct other_writer o = {.n = M};
    struct mg_accesslog *l;
    uv_thread_t rd, wr;
    uint64_t lines, dropped;

    assert_int_equal(mkfifo(path, 0600), 0);
    d.fd = open(path, O_RDONLY | O_NONBLOCK);
    o.fd = open(path, O_WRONLY);
    assert_true(d.fd >= 0 && o.fd >= 0);
    l = mg_accesslog_open(path, 1, err, sizeof(err));
    assert_non_null(l);
    assert_int_equal(uv_thread_create(&rd, drain_fifo, &d), 0);
    assert_int_equal(uv_thread_create(&wr, write_other, &o), 0);
    for (int i = 0; i < N; i++) {
        mg_accesslog_write(l, 0, &e);
        if (i % 1000 == 999)
            usleep(2000);
    }
    uv_thread_join(&wr);
    close(o.fd);
    mg_accesslog_stats(l, &lines, &dropped);
    mg_accesslog_close(l);
    uv_thread_join(&rd);
    close(d.fd);
    assert_int_equal(lines + dropped, N);
    assert_int_equal(check_lines(d.got.p, d.got.len), lines + M);
    mg_textbuf_free(&d.got);
}

static void test_json_checker_rejects_bad_input(void **state)
{
    assert_int_equal(json_check("{\"a\":1}", 7), 0);
    assert_int_equal(json_check("{\"a\":\"\x01\"}", 9), -1);
    assert_int_equal(json_check("{\"a\":\"\xff\"}", 9), -1);
    assert_int_equal(json_check("{\"a\":1,}", 8), -1);
    assert_int_equal(json_check("{\"a\":\"\\x\"}", 10), -1);
    assert_int_equal(json_check("{\"a\":01}", 8), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_checker_rejects_bad_input),
        cmocka_unit_test_setup_teardown(test_line_fields_and_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nulls_and_error_names, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tls_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chosen_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_time_defaults_to_now, setup, teardown),
        cmocka_unit_test_setup_teardown(test_json_escaping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_names_escaped, setup, teardown),
        cmocka_unit_test(test_off_writes_nothing),
        cmocka_unit_test(test_open_error),
        cmocka_unit_test_setup_teardown(test_appends_to_existing_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_after_rename, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_failure_keeps_old_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retarget, setup, teardown),
        cmocka_unit_test(test_stderr_destination),
        cmocka_unit_test_setup_teardown(test_concurrent_workers_whole_lines, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slow_reader_drops_and_counts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pipe_shared_with_another_writer, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
