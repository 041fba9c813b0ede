/*
 * Unit tests of gateway/obs/metrics.c: the exposition format (HELP/TYPE once per
 * family, escaping, cumulative buckets, +Inf == _count, exact _sum), counting
 * per worker and summing across shards (with real threads), the fixed label sets,
 * and counters surviving a reload for the series that still exist.
 *
 * check_exposition() is a small parser of the text format 0.0.4 that every
 * rendered document goes through, so each test also checks the syntax.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include "config/config.h"
#include "obs/metrics.h"
#include "obs/textbuf.h"

#define UPSTREAMS                                                                                  \
    "listen: [\"127.0.0.1:8080\"]\n"                                                               \
    "upstreams:\n"                                                                                 \
    "  orders:\n"                                                                                  \
    "    targets: [{address: \"127.0.0.1:9001\"}, {address: \"127.0.0.1:9002\", weight: 2}]\n"     \
    "  users:\n"                                                                                   \
    "    targets: [{address: \"127.0.0.1:9101\"}]\n"

static struct mg_config *load(const char *yaml)
{
    char err[512] = "";
    struct mg_config *cfg = mg_config_load_string(yaml, strlen(yaml), "m.yaml", err, sizeof(err));

    if (cfg == NULL)
        fail_msg("%s", err);
    return cfg;
}

/* A config with routes `a` (orders) and `b` (users, idempotency on). */
static struct mg_config *load_ab(void)
{
    return load(UPSTREAMS "routes:\n"
                          "  - {name: a, upstream: orders, match: {paths: [/a]}}\n"
                          "  - name: b\n"
                          "    upstream: users\n"
                          "    match: {paths: [/b], methods: [GET, POST]}\n"
                          "    idempotency: {}\n"
                          "    plugins: [{name: request_id}, {name: rate_limit}]\n");
}

/* ---------------------------------------------------------- exposition checker */

#define MAX_FAMILIES 64
#define MAX_SERIES   4096

struct family {
    char name[96];
    char type[16];
    int help, typed;
};

struct checker {
    struct family fam[MAX_FAMILIES];
    int nfam;
    char *series[MAX_SERIES]; /* name{labels} without le, for duplicates */
    int nseries;
    /* histogram state of the series being read */
    char hist_key[512];
    double last_bucket, inf;
    int saw_inf;
};

static struct family *find_family(struct checker *k, const char *name, size_t len)
{
    for (int i = 0; i < k->nfam; i++)
        if (strlen(k->fam[i].name) == len && memcmp(k->fam[i].name, name, len) == 0)
            return &k->fam[i];
    return NULL;
}

static int name_char(char c, int first)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
           (!first && c >= '0' && c <= '9');
}

static void check_meta(struct checker *k, const char *line)
{
    int help = strncmp(line, "# HELP ", 7) == 0;
    const char *name = line + 7, *end = name;
    struct family *f;

    if (!help && strncmp(line, "# TYPE ", 7) != 0)
        fail_msg("unexpected comment: %s", line);
    while (name_char(*end, end == name))
        end++;
    assert_true(end > name && *end == ' ');
    f = find_family(k, name, (size_t)(end - name));
    if (f == NULL) {
        assert_true(k->nfam < MAX_FAMILIES);
        f = &k->fam[k->nfam++];
        memcpy(f->name, name, (size_t)(end - name));
        f->name[end - name] = '\0';
    }
    if (help) {
        if (f->help++)
            fail_msg("second HELP for %s", f->name);
        assert_null(strchr(end, '\\') == NULL ? NULL : "backslash in HELP");
        return;
    }
    if (f->typed++)
        fail_msg("second TYPE for %s", f->name);
    snprintf(f->type, sizeof(f->type), "%s", end + 1);
    if (strcmp(f->type, "counter") && strcmp(f->type, "gauge") && strcmp(f->type, "histogram"))
        fail_msg("bad type %s", f->type);
}

/* Parses {k="v",...}; writes the label set without `le` into key; returns
 * the position after '}' and the le value (or NULL). */
static const char *parse_labels(const char *p, char *key, size_t keycap, char *le, size_t lecap)
{
    size_t kl = strlen(key);

    le[0] = '\0';
    assert_int_equal(*p, '{');
    p++;
    while (*p != '}') {
        const char *ln = p;
        char val[512];
        size_t vl = 0;
        while (name_char(*p, p == ln))
            p++;
        assert_true(p > ln);
        assert_int_equal(*p++, '=');
        assert_int_equal(*p++, '"');
        while (*p != '"') {
            assert_true(*p != '\0' && *p != '\n');
            if (*p == '\\') {
                p++;
                assert_true(*p == '\\' || *p == '"' || *p == 'n');
                val[vl++] = '\\';
            }
            val[vl++] = *p++;
            assert_true(vl < sizeof(val) - 2);
        }
        val[vl] = '\0';
        p++;
        if ((size_t)(p - ln) - vl == 0)
            fail_msg("empty label");
        if (p - ln >= 4 && strncmp(ln, "le=", 3) == 0) {
            assert_true(vl < lecap);
            memcpy(le, val, vl + 1);
        } else {
            kl += (size_t)snprintf(key + kl, keycap - kl, "%.*s%s,", (int)(strchr(ln, '=') - ln),
                                   ln, val);
            assert_true(kl < keycap);
        }
        if (*p == ',')
            p++;
        else
            assert_int_equal(*p, '}');
    }
    return p + 1;
}

static void check_sample(struct checker *k, const char *line)
{
    const char *p = line, *suffix = NULL;
    char key[1024], le[32];
    struct family *f;
    double v;
    char *end;

    while (name_char(*p, p == line))
        p++;
    assert_true(p > line);
    f = find_family(k, line, (size_t)(p - line));
    if (f == NULL) {
        static const char *const sfx[] = {"_bucket", "_sum", "_count"};
        for (int i = 0; i < 3 && f == NULL; i++) {
            size_t n = strlen(sfx[i]);
            if ((size_t)(p - line) > n && memcmp(p - n, sfx[i], n) == 0 &&
                (f = find_family(k, line, (size_t)(p - line) - n)) != NULL)
                suffix = sfx[i];
        }
        if (f == NULL || strcmp(f->type, "histogram") != 0)
            fail_msg("sample before its TYPE: %s", line);
    }
    assert_true(f->typed && f->help);
    snprintf(key, sizeof(key), "%.*s|", (int)(p - line), line);
    if (*p == '{')
        p = parse_labels(p, key, sizeof(key), le, sizeof(le));
    else
        le[0] = '\0';
    assert_int_equal(*p++, ' ');
    v = strtod(p, &end);
    assert_true(end > p && *end == '\0');

    /* duplicates */
    char full[1100];
    snprintf(full, sizeof(full), "%s%s", key, le);
    for (int i = 0; i < k->nseries; i++)
        if (strcmp(k->series[i], full) == 0)
            fail_msg("duplicate series %s", line);
    assert_true(k->nseries < MAX_SERIES);
    k->series[k->nseries++] = strdup(full);

    if (suffix == NULL)
        return;
    /* histograms: buckets non-decreasing, last le="+Inf" equal to _count */
    char hk[512];
    snprintf(hk, sizeof(hk), "%s", strchr(key, '|') + 1);
    if (strcmp(suffix, "_bucket") == 0) {
        assert_true(le[0] != '\0');
        if (strcmp(hk, k->hist_key) != 0) {
            snprintf(k->hist_key, sizeof(k->hist_key), "%s", hk);
            k->last_bucket = 0;
            k->saw_inf = 0;
        }
        assert_false(k->saw_inf);
        if (v < k->last_bucket)
            fail_msg("buckets not cumulative: %s", line);
        k->last_bucket = v;
        if (strcmp(le, "+Inf") == 0) {
            k->saw_inf = 1;
            k->inf = v;
        }
    } else if (strcmp(suffix, "_count") == 0) {
        assert_string_equal(hk, k->hist_key);
        assert_true(k->saw_inf);
        if (v != k->inf)
            fail_msg("+Inf %g != _count %g: %s", k->inf, v, line);
    } else {
        assert_string_equal(hk, k->hist_key);
        assert_true(v >= 0);
    }
}

/* Checks the whole document; returns the number of sample lines. */
static int check_exposition(const char *text)
{
    struct checker *k = calloc(1, sizeof(*k));
    const char *p = text;
    int samples = 0;

    assert_non_null(k);
    assert_true(*text != '\0');
    assert_int_equal(text[strlen(text) - 1], '\n');
    while (*p) {
        const char *nl = strchr(p, '\n');
        char line[2048];
        assert_non_null(nl);
        assert_true((size_t)(nl - p) < sizeof(line));
        memcpy(line, p, (size_t)(nl - p));
        line[nl - p] = '\0';
        assert_true(line[0] != '\0');
        if (line[0] == '#')
            check_meta(k, line);
        else {
            check_sample(k, line);
            samples++;
        }
        p = nl + 1;
    }
    for (int i = 0; i < k->nfam; i++)
        assert_true(k->fam[i].help == 1 && k->fam[i].typed == 1);
    for (int i = 0; i < k->nseries; i++)
        free(k->series[i]);
    free(k);
    return samples;
}

/* ---------------------------------------------------------- helpers */

static char *render(struct mg_metrics *m, const struct mg_obs_hooks *hooks)
{
    struct mg_textbuf b = MG_TEXTBUF_INIT;

    mg_metrics_render(m, hooks, &b);
    check_exposition(b.p);
    return mg_textbuf_take(&b, NULL);
}

/* The value of the sample `series` (exact name and labels), or -1 if absent. */
static double value(const char *text, const char *series)
{
    size_t n = strlen(series);

    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (strncmp(p, series, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    return -1;
}

static const char *sample_text(const char *text, const char *series, char *out, size_t cap)
{
    size_t n = strlen(series);

    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, series, n) == 0 && p[n] == ' ') {
            snprintf(out, cap, "%.*s", (int)strcspn(p + n + 1, "\n"), p + n + 1);
            return out;
        }
    }
    return NULL;
}

static int occurrences(const char *text, const char *needle)
{
    int n = 0;

    for (const char *p = text; (p = strstr(p, needle)) != NULL; p++)
        n++;
    return n;
}

#define MS(x) ((uint64_t)(x)*1000000u)

/* ---------------------------------------------------------- tests */

static void test_families_once_and_valid(void **state)
{
    struct mg_config *cfg = load_ab();
    struct mg_metrics *m = mg_metrics_new(cfg, 2);
    char *t;
    static const char *const families[] = {
        "moongate_requests_total",     "moongate_request_duration_seconds",
        "moongate_requests_in_flight", "moongate_errors_total",
        "moongate_idempotency_total",  "moongate_upstream_requests_total",
        "moongate_retries_total",      "moongate_bulkhead_in_use",
        "moongate_bulkhead_queued",    "moongate_bulkhead_rejected_total",
        "moongate_connections",        "moongate_config_reloads_total",
    };

    (void)state;
    mg_metrics_request_done(m, 0, 0, 200, MS(3));
    mg_metrics_request_done(m, 1, 1, 201, MS(7));
    t = render(m, NULL);
    for (size_t i = 0; i < sizeof(families) / sizeof(families[0]); i++) {
        char help[128], type[128];
        snprintf(help, sizeof(help), "# HELP %s ", families[i]);
        snprintf(type, sizeof(type), "# TYPE %s ", families[i]);
        assert_int_equal(occurrences(t, help), 1);
        assert_int_equal(occurrences(t, type), 1);
    }
    assert_non_null(strstr(t, "# TYPE moongate_requests_total counter\n"));
    assert_non_null(strstr(t, "# TYPE moongate_request_duration_seconds histogram\n"));
    assert_non_null(strstr(t, "# TYPE moongate_requests_in_flight gauge\n"));
    /* no hook: no circuit_state; no registered plugin: no plugin families */
    assert_null(strstr(t, "moongate_circuit_state"));
    assert_null(strstr(t, "moongate_plugin_"));
    free(t);
    mg_metrics_unref(m);
    mg_config_unref(cfg);
}

static void test_requests_by_route_and_code(void **state)
{
    struct mg_config *cfg = load_ab();
    struct mg_metrics *m = mg_metrics_new(cfg, 1);
    char *t;

    (void)state;
    mg_metrics_request_done(m, 0, 0, 200, MS(1));
    mg_metrics_request_done(m, 0, 0, 200, MS(1));
    mg_metrics_request_done(m, 0, 0, 503, MS(1));
    mg_metrics_request_done(m, 0, 1, 100, MS(1));
    mg_metrics_request_done(m, 0, 1, 599, MS(1));
    mg_metrics_request_done(m, 0, -1, 404, MS(1));
    mg_metrics_request_done(m, 0, -1, 700, MS(1)); /* nonsense from a broken upstream */
    mg_metrics_request_done(m, 0, -1, 0, MS(1));
    t = render(m, NULL);
    assert_true(value(t, "moongate_requests_total{route=\"a\",code=\"200\"}") == 2);
    assert_true(value(t, "moongate_requests_total{route=\"a\",code=\"503\"}") == 1);
    assert_true(value(t, "moongate_requests_total{route=\"b\",code=\"100\"}") == 1);
    assert_true(value(t, "moongate_requests_total{route=\"b\",code=\"599\"}") == 1);
    assert_true(value(t, "moongate_requests_total{route=\"\",code=\"404\"}") == 1);
    assert_true(value(t, "moongate_requests_total{route=\"\",code=\"other\"}") == 2);
    /* codes never seen are not rendered */
    assert_true(value(t, "moongate_requests_total{route=\"a\",code=\"404\"}") == -1);
    assert_int_equal(occurrences(t, "\nmoongate_requests_total{"), 6);
    assert_true(value(t, "moongate_request_duration_seconds_count{route=\"a\"}") == 3);
    assert_true(value(t, "moongate_request_duration_seconds_count{route=\"\"}") == 3);
    free(t);
    mg_metrics_unref(m);
    mg_config_unref(cfg);
}

/* metrics.duration_buckets: the bounds of every histogram, the upstream
 * response histogram included. */
static void test_configured_buckets(void **state)
{
    struct mg_config *cfg = load(UPSTREAMS "metrics: {duration_buckets: [0.0001, 0.1, 10]}\n"
                                           "routes:\n  - {name: a, upstream: orders}\n");
    struct mg_metrics *m = mg_metrics_new(cfg, 1);
    const uint64_t *ns;
    char *t;

    (void)state;
    assert_int_equal(mg_metrics_bounds(&ns), 3);
    assert_int_equal(ns[0], 100000);
    mg_metrics_request_done(m, 0, 0, 200, MS(50));
    mg_metrics_upstream_response(m, 0, 0, MS(20000));
    t = render(m, NULL);
    assert_true(value(t, "moongate_request_duration_seconds_bucket{route=\"a\",le=\"0.0001\"}") ==
                0);
    assert_true(value(t, "moongate_request_duration_seconds_bucket{route=\"a\",le=\"0.1\"}") == 1);
    assert_true(value(t, "moongate_request_duration_seconds_bucket{route=\"a\",le=\"10\"}") == 1);
    assert_true(value(t, "moongate_request_duration_seconds_bucket{route=\"a\",le=\"1\"}") == -1);
    assert_int_equal(occurrences(t, "\nmoongate_request_duration_seconds_bucket{route=\"a\""), 4);
    assert_true(value(t, "moongate_upstream_response_duration_seconds_bucket{upstream=\"orders\","
                         "le=\"10\"}") == 0);
    assert_true(value(t, "moongate_upstream_response_duration_seconds_bucket{upstream=\"orders\","
                         "le=\"+Inf\"}") == 1);
    assert_true(
        value(t, "moongate_upstream_response_duration_seconds_count{upstream=\"orders\"}") == 1);
    free(t);
    mg_metrics_unref(m);
    mg_config_unref(cfg);
}

static void test_histogram_buckets_cumulative_and_sum_exact(void **state)
{
    struct mg_config *cfg = load_ab();
    struct mg_metrics *m = mg_metrics_new(cfg, 3);
    char *t, buf[64];

    (void)state;
    mg_metrics_request_done(m, 0, 0, 200, MS(1));                 /* le 0.001 (inclusive) */
    mg_metrics_request_done(m, 1, 0, 200, MS(1) + 1);             /* le 0.0025 */
    mg_metrics_request_done(m, 2, 0, 200, mg_metrics_ns(0.0025)); /* le 0.0025 */
    mg_metrics_request_done(m, 0, 0, 200, mg_metrics_ns(0.3));    /* le 0.5 */
    mg_metrics_request_done(m, 1, 0, 200, mg_metrics_ns(30.0));   /* le 30 */
    mg_metrics_request_done(m, 2, 0, 200, mg_metrics_ns(31.5));   /* +Inf only */
    t = render(m, NULL);
#define B(le) value(t, "moongate_request_duration_seconds_bucket{route=\"a\",le=\"" le "\"}")
    assert_true(B("0.001") == 1);
    assert_true(B("0.0025") == 3);
    assert_true(B("0.005") == 3);
    assert_true(B("0.25") == 3);
    assert_true(B("0.5") == 4);
    assert_true(B("10") == 4);
    assert_true(B("30") == 5);
    assert_true(B("+Inf") == 6);
#undef B
    assert_true(value(t, "moongate_request_duration_seconds_count{route=\"a\"}") == 6);
    /* 0.001 + 0.001000001 + 0.0025 + 0.3 + 30 + 31.5 */
    assert_string_equal(
        sample_text(t, "moongate_request_duration_seconds_sum{route=\"a\"}", buf, sizeof(buf)),
        "61.804500001");
    /* all 15 buckets, in order */
    const char *p = strstr(t, "moongate_request_duration_seconds_bucket{route=\"a\",le=\"0.001\"}");
    static const char *const les[] = {"0.001", "0.0025", "0.005", "0.01", "0.025",
                                      "0.05",  "0.1",    "0.25",  "0.5",  "1",
                                      "2.5",   "5",      "10",    "30",   "+Inf"};
    for (size_t i = 0; i < 15; i++) {
        char want[128];
        snprintf(want, sizeof(want),
                 "moongate_request_duration_seconds_bucket{route=\"a\",le=\"%s\"}", les[i]);
        assert_non_null(p);
        assert_memory_equal(p, want, strlen(want));
        p = strchr(p, '\n') + 1;
    }
    assert_memory_equal(p, "moongate_request_duration_seconds_sum{route=\"a\"}", 48);
    /* an empty histogram renders zeros, still consistent */
    assert_true(value(t, "moongate_request_duration_seconds_bucket{route=\"b\",le=\"+Inf\"}") == 0);
    assert_string_equal(
        sample_text(t, "moongate_request_duration_seconds_sum{route=\"b\"}", buf, sizeof(buf)),
        "0");
    free(t);
    mg_metrics_unref(m);
    mg_config_unref(cfg);
}

static void test_seconds_conversion(void **state)
{
    (void)state;
    assert_true(mg_metrics_ns(0.001) == 1000000u);
    assert_true(mg_metrics_ns(0.0025) == 2500000u);
    assert_true(mg_metrics_ns(-1) == 0);
    assert_true(mg_metrics_ns(0.0 / 0.0) == 0);
    assert_true(mg_metrics_ns(1e300) > mg_metrics_ns(1e9));
}

struct hammer {
    struct mg_metrics *m;
    unsigned worker;
    int n;
};

static void hammer_thread(void *arg)
{
    struct hammer *h = arg;

    for (int i = 0; i < h->n; i++) {
        mg_metrics_in_flight(h->m, h->worker, 0, +1);
        mg_metrics_request_done(h->m, h->worker, 0, 200, MS(2));
        mg_metrics_upstream_outcome(h->m, h->worker, 0, 1, MG_OUTCOME_SUCCESS);
        mg_metrics_conn(h->m, h->worker, MG_CONN_SIDE_CLIENT, MG_CONN_STATE_ACTIVE, +1);
        mg_metrics_conn(h->m, h->worker, MG_CONN_SIDE_CLIENT, MG_CONN_STATE_ACTIVE, -1);
        mg_metrics_in_flight(h->m, h->worker, 0, -1);
    }
}

static void test_shards_sum_across_worker_threads(void **state)
{
    enum { W = 4, N = 100000 };
    struct mg_config *cfg = load_ab();
    struct mg_metrics *m = mg_metrics_new(cfg, W);
    struct hammer h[W];
    uv_thread_t th[W];
    char *t;

    (void)state;
    for (unsigned w = 0; w < W; w++) {
        h[w] = (struct hammer){m, w, N};
        assert_int_equal(uv_thread_create(&th[w], hammer_thread, &h[w]), 0);
    }
    for (int i = 0; i < 20; i++) { /* scrapes while workers count */
        t = render(m, NULL);
        double c = value(t, "moongate_requests_total{route=\"a\",code=\"200\"}");
        assert_true(c <= (double)W * N);
        free(t);
    }
    for (unsigned w = 0; w < W; w++)
        uv_thread_join(&th[w]);
    t = render(m, NULL);
    assert_true(value(t, "moongate_requests_total{route=\"a\",code=\"200\"}") == (double)W * N);
    assert_true(value(t, "moongate_request_duration_seconds_bucket{route=\"a\",le=\"0.0025\"}") ==
                (double)W * N);
    assert_true(value(t, "moongate_requests_in_flight{route=\"a\"}") == 0);
    assert_true(value(t, "moongate_upstream_requests_total{upstream=\"orders\",target=\"127.0.0."
                         "1:9002\",outcome=\"success\"}") == (double)W * N);
    assert_true(value(t, "moongate_connections{side=\"client\",state=\"active\"}") == 0);
    char buf[64];
    assert_string_equal(
        sample_text(t, "moongate_request_duration_seconds_sum{route=\"a\"}", buf, sizeof(buf)),
        "800"); /* 400000 x 2 ms */
    free(t);
    mg_metrics_unref(m);
    mg_config_unref(cfg);
}

static void test_gauges_across_shards(void **state)
{
    struct mg_config *cfg = load_ab();
    struct mg_metrics *m = mg_metrics_new(cfg, 3);
    char *t;

    (void)state;
    /* a shard may go negative on its own; the sum is what counts */
    mg_metrics_in_flight(m, 0, 1, +1);
    mg_metrics_in_flight(m, 1, 1, -1);
    mg_metrics_in_flight(m, 2, 1, +1);
    mg_metrics_in_flight(m, 2, -1, +1);
    mg_metrics_conn(m, 0, MG_CONN_SIDE_UPSTREAM, MG_CONN_STATE_ACTIVE, +1);
    mg_metrics_conn_move(m, 1, MG_CONN_SIDE_UPSTREAM, MG_CONN_STATE_ACTIVE, MG_CONN_STATE_IDLE);
    mg_metrics_conn(m, 2, MG_CONN_SIDE_CLIENT, MG_CONN_STATE_IDLE, +3);
    mg_metrics_bulkhead(m, 0, 1, +2, +1);
    mg_metrics_bulkhead(m, 1, 1, -1, -1);
    mg_metrics_bulkhead_rejected(m, 2, 1);
    mg_metrics_retry(m, 0, 0);
    mg_metrics_retry(m, 2, 0);
    t = render(m, NULL);
    assert_true(value(t, "moongate_requests_in_flight{route=\"b\"}") == 1);
    assert_true(value(t, "moongate_requests_in_flight{route=\"\"}") == 1);
    assert_true(value(t, "moongate_requests_in_flight{route=\"a\"}") == 0);
    assert_true(value(t, "moongate_connections{side=\"upstream\",state=\"active\"}") == 0);
    assert_true(value(t, "moongate_connections{side=\"upstream\",state=\"idle\"}") == 1);
    assert_true(value(t, "moongate_connections{side=\"client\",state=\"idle\"}") == 3);
    assert_true(value(t, "moongate_bulkhead_in_use{upstream=\"users\"}") == 1);
    assert_true(value(t, "moongate_bulkhead_queued{upstream=\"users\"}") == 0);
    assert_true(value(t, "moongate_bulkhead_rejected_total{upstream=\"users\"}") == 1);
    assert_true(value(t, "moongate_bulkhead_in_use{upstream=\"orders\"}") == 0);
    assert_true(value(t, "moongate_retries_total{upstream=\"orders\"}") == 2);
    assert_true(value(t, "moongate_retries_total{upstream=\"users\"}") == 0);
    /* a negative gauge renders as a negative number */
    mg_metrics_in_flight(m, 0, 0, -2);
    free(t);
    t = render(m, NULL);
    assert_true(value(t, "moongate_requests_in_flight{route=\"a\"}") == -2);
    free(t);
    mg_metrics_unref(m);
    mg_config_unref(cfg);
}

static void test_upstream_outcomes_fixed_set(void **state)
{
    struct mg_config *cfg = load_ab();
    struct mg_metrics *m = mg_metrics_new(cfg, 1);
    char *t;

    (void)state;
    mg_metrics_upstream_outcome(m, 0, 0, 0, MG_OUTCOME_SUCCESS);
    mg_metrics_upstream_outcome(m, 0, 0, 0, MG_OUTCOME_TIMEOUT);
    mg_metrics_upstream_outcome(m, 0, 0, 1, MG_OUTCOME_CONNECT_FAILURE);
    mg_metrics_upstream_outcome(m, 0, 0, 1, MG_OUTCOME_CONNECT_FAILURE);
    mg_metrics_upstream_outcome(m, 0, 1, 0, MG_OUTCOME_RESET);
    mg_metrics_upstream_outcome(m, 0, 1, 0, MG_OUTCOME_FAILURE);
    t = render(m, NULL);
#define U(u, tg, o)                                                                                \
    value(t, "moongate_upstream_requests_total{upstream=\"" u "\",target=\"" tg "\",outcome=\"" o  \
             "\"}")
    assert_true(U("orders", "127.0.0.1:9001", "success") == 1);
    assert_true(U("orders", "127.0.0.1:9001", "timeout") == 1);
    assert_true(U("orders", "127.0.0.1:9001", "reset") == 0);
    assert_true(U("orders", "127.0.0.1:9002", "connect_failure") == 2);
    assert_true(U("users", "127.0.0.1:9101", "reset") == 1);
    assert_true(U("users", "127.0.0.1:9101", "failure") == 1);
#undef U
    /* every (target, outcome) pair is present: 3 targets x 5 outcomes */
    assert_int_equal(occurrences(t, "\nmoongate_upstream_requests_total{"), 15);
    assert_string_equal(mg_metrics_outcome_name(MG_OUTCOME_CONNECT_FAILURE), "connect_failure");
    free(t);
    mg_metrics_unref(m);
    mg_config_unref(cfg);
}

static void test_errors_use_error_map_names(void **state)
{
    struct mg_config *cfg = load_ab();
    struct mg_metrics *m = mg_metrics_new(cfg, 2);
    char *t;

    (void)state;
    mg_metrics_error(m, 0, -1, MG_ERR_NO_ROUTE);
    mg_metrics_error(m, 1, -1, MG_ERR_NO_ROUTE);
    mg_metrics_error(m, 0, 0, MG_ERR_UPSTREAM_TIMEOUT);
    mg_metrics_error(m, 1, 1, MG_ERR_IDEMPOTENCY_STORE_UNAVAILABLE);
    mg_metrics_error(m, 1, 1, MG_ERR_NONE);   /* ignored */
    mg_metrics_error(m, 1, 1, MG_ERR__COUNT); /* ignored */
    t = render(m, NULL);
    assert_true(value(t, "moongate_errors_total{route=\"\",error=\"no_route\"}") == 2);
    assert_true(value(t, "moongate_errors_total{route=\"a\",error=\"upstream_timeout\"}") == 1);
    assert_true(
        value(t, "moongate_errors_total{route=\"b\",error=\"idempotency_store_unavailable\"}") ==
        1);
    assert_int_equal(occurrences(t, "\nmoongate_errors_total{"), 3);
    free(t);
    mg_metrics_unref(m);
    mg_config_unref(cfg);
}

static void test_idempotency_only_for_enabled_routes(void **state)
{
    struct mg_config *cfg = load_ab();
    struct mg_metrics *m = mg_metrics_new(cfg, 1);
    char *t;

    (void)state;
    mg_metrics_idempotency(m, 0, 1, MG_IDEM_RESULT_NEW);
    mg_metrics_idempotency(m, 0, 1, MG_IDEM_RESULT_REPLAYED);
    mg_metrics_idempotency(m, 0, 1, MG_IDEM_RESULT_REPLAYED);
    t = render(m, NULL);
    assert_true(value(t, "moongate_idempotency_total{route=\"b\",result=\"new\"}") == 1);
    assert_true(value(t, "moongate_idempotency_total{route=\"b\",result=\"replayed\"}") == 2);
    assert_true(value(t, "moongate_idempotency_total{route=\"b\",result=\"store_error\"}") == 0);
    assert_null(strstr(t, "moongate_idempotency_total{route=\"a\""));
    assert_int_equal(occurrences(t, "\nmoongate_idempotency_total{"), MG_IDEM_RESULT__COUNT);
    free(t);
    mg_metrics_unref(m);
    mg_config_unref(cfg);
}

static void test_label_values_escaped(void **state)
{
    struct mg_config *cfg =
        load(UPSTREAMS "routes:\n"
                       "  - {name: \"we\\\"ird\\\\na\\nme\", upstream: orders}\n"
                       "  - {name: \"caf\\u00e9\", upstream: users, match: {paths: [/u]}}\n");
    struct mg_metrics *m = mg_metrics_new(cfg, 1);
    char *t;

    (void)state;
    assert_string_equal(cfg->routes[0].name, "we\"ird\\na\nme");
    mg_metrics_request_done(m, 0, 0, 200, MS(1));
    mg_metrics_request_done(m, 0, 1, 200, MS(1));
    t = render(m, NULL);
    assert_true(value(t, "moongate_requests_total{route=\"we\\\"ird\\\\na\\nme\",code=\"200\"}") ==
                1);
    assert_true(value(t, "moongate_requests_total{route=\"caf\xc3\xa9\",code=\"200\"}") == 1);
    free(t);
    mg_metrics_unref(m);
    mg_config_unref(cfg);
}

static void target_stats(void *ud, const struct mg_config *cfg, size_t u, size_t t,
                         struct mg_target_snapshot *out)
{
    int *calls = ud;

    (*calls)++;
    if (strcmp(cfg->upstreams[u].name, "orders") == 0 && t == 1)
        out->circuit = MG_CIRCUIT_OPEN;
    if (strcmp(cfg->upstreams[u].name, "users") == 0)
        out->circuit = MG_CIRCUIT_HALF_OPEN;
}

static void test_circuit_state_through_hook(void **state)
{
    struct mg_config *cfg = load_ab();
    struct mg_metrics *m = mg_metrics_new(cfg, 1);
    int calls = 0;
    struct mg_obs_hooks hooks = {.ud = &calls, .target_stats = target_stats};
    char *t;

    (void)state;
    t = render(m, &hooks);
    assert_int_equal(calls, 3);
    assert_non_null(strstr(t, "# TYPE moongate_circuit_state gauge\n"));
    assert_true(value(t, "moongate_circuit_state{upstream=\"orders\",target=\"127.0.0.1:9001\"}") ==
                0);
    assert_true(value(t, "moongate_circuit_state{upstream=\"orders\",target=\"127.0.0.1:9002\"}") ==
                2);
    assert_true(value(t, "moongate_circuit_state{upstream=\"users\",target=\"127.0.0.1:9101\"}") ==
                1);
    free(t);
    mg_metrics_unref(m);
    mg_config_unref(cfg);
}

static void upstream_stats(void *ud, const struct mg_config *cfg, size_t u,
                           struct mg_upstream_snapshot *out)
{
    if (strcmp(cfg->upstreams[u].name, "users") == 0)
        *out = (struct mg_upstream_snapshot){
            .bulkhead_in_use = 7, .bulkhead_queued = 2, .bulkhead_rejected = 11};
}

/* With an upstream hook, the bulkhead series come from it (the bulkhead's own
 * process-wide counters), not from the per-worker cells. */
static void test_bulkhead_through_hook(void **state)
{
    struct mg_config *cfg = load_ab();
    struct mg_metrics *m = mg_metrics_new(cfg, 1);
    struct mg_obs_hooks hooks = {.upstream_stats = upstream_stats};
    char *t;

    (void)state;
    mg_metrics_bulkhead(m, 0, 1, +1, 0); /* ignored when the hook is set */
    t = render(m, &hooks);
    assert_true(value(t, "moongate_bulkhead_in_use{upstream=\"users\"}") == 7);
    assert_true(value(t, "moongate_bulkhead_queued{upstream=\"users\"}") == 2);
    assert_true(value(t, "moongate_bulkhead_rejected_total{upstream=\"users\"}") == 11);
    assert_true(value(t, "moongate_bulkhead_in_use{upstream=\"orders\"}") == 0);
    assert_null(strstr(t, "moongate_circuit_state")); /* no target hook */
    free(t);
    t = render(m, NULL);
    assert_true(value(t, "moongate_bulkhead_in_use{upstream=\"users\"}") == 1);
    free(t);
    mg_metrics_unref(m);
    mg_config_unref(cfg);
}

static void test_plugins_appear_after_register(void **state)
{
    struct mg_config *cfg = load_ab();
    struct mg_metrics *m = mg_metrics_new(cfg, 2);
    int rid, rl, rr;
    char *t;

    (void)state;
    rid = mg_metrics_plugin_index(m, "request_id");
    rl = mg_metrics_plugin_index(m, "rate_limit");
    rr = mg_metrics_plugin_index(m, "round_robin"); /* the default balancer */
    assert_true(rid >= 0 && rl >= 0 && rr >= 0);
    assert_int_equal(mg_metrics_plugin_index(m, "nope"), -1);
    mg_metrics_plugin_done(m, 0, rid, MG_PLUGIN_PHASE_ACCESS, MS(1), false); /* not yet shown */
    t = render(m, NULL);
    assert_null(strstr(t, "moongate_plugin_"));
    free(t);

    mg_metrics_plugin_register(m, rid);
    mg_metrics_plugin_register(m, rl);
    mg_metrics_plugin_done(m, 1, rid, MG_PLUGIN_PHASE_ACCESS, MS(3), true);
    mg_metrics_plugin_done(m, 1, rid, MG_PLUGIN_PHASE_LOG, MS(100), false);
    mg_metrics_plugin_done(m, 1, -1, MG_PLUGIN_PHASE_LOG, MS(100), false);  /* ignored */
    mg_metrics_plugin_done(m, 1, rid, MG_PLUGIN_PHASE__COUNT, MS(1), true); /* ignored */
    t = render(m, NULL);
    assert_int_equal(occurrences(t, "# TYPE moongate_plugin_errors_total counter\n"), 1);
    assert_int_equal(occurrences(t, "# TYPE moongate_plugin_duration_seconds histogram\n"), 1);
    assert_true(value(t, "moongate_plugin_errors_total{plugin=\"request_id\",phase=\"access\"}") ==
                1);
    assert_true(value(t, "moongate_plugin_errors_total{plugin=\"request_id\",phase=\"log\"}") == 0);
    assert_true(value(t, "moongate_plugin_duration_seconds_count{plugin=\"request_id\",phase="
                         "\"access\"}") == 2);
    assert_true(value(t, "moongate_plugin_duration_seconds_bucket{plugin=\"request_id\",phase="
                         "\"log\",le=\"0.1\"}") == 1);
    /* registered but never ran: no series; never registered: none either */
    assert_null(strstr(t, "plugin=\"rate_limit\""));
    assert_null(strstr(t, "plugin=\"round_robin\""));
    assert_null(strstr(t, "phase=\"init\""));
    free(t);
    mg_metrics_unref(m);
    mg_config_unref(cfg);
}

static void test_carry_over_across_reload(void **state)
{
    struct mg_config *c1 = load_ab();
    struct mg_config *c2 = load(UPSTREAMS "routes:\n"
                                          "  - {name: c, upstream: users, match: {paths: [/c]}}\n"
                                          "  - name: b\n"
                                          "    upstream: orders\n"
                                          "    match: {paths: [/b]}\n");
    struct mg_metrics *m1 = mg_metrics_new(c1, 2);
    struct mg_metrics *m2;
    char *t;

    (void)state;
    mg_metrics_request_done(m1, 0, 0, 200, MS(1)); /* a */
    mg_metrics_request_done(m1, 1, 1, 200, MS(1)); /* b */
    mg_metrics_request_done(m1, 1, 1, 200, MS(1));
    mg_metrics_upstream_outcome(m1, 0, 0, 1, MG_OUTCOME_SUCCESS); /* orders / 9002 */
    mg_metrics_in_flight(m1, 0, 1, +1);                           /* b, still running */
    mg_metrics_conn(m1, 0, MG_CONN_SIDE_CLIENT, MG_CONN_STATE_ACTIVE, +1);
    mg_metrics_config_reload(m1, false);

    m2 = mg_metrics_next(m1, c2);
    mg_metrics_config_reload(m2, true);
    /* b is route 1 in c2 too, c is 0; a is gone */
    mg_metrics_request_done(m2, 0, 1, 200, MS(1));
    mg_metrics_request_done(m2, 0, 0, 500, MS(1));
    /* an exchange that started on m1 finishes on m1 while m2 is current */
    mg_metrics_request_done(m1, 1, 1, 200, MS(1));
    mg_metrics_in_flight(m1, 0, 1, -1);
    mg_metrics_upstream_outcome(m2, 1, 0, 1, MG_OUTCOME_SUCCESS);
    mg_metrics_conn(m2, 1, MG_CONN_SIDE_CLIENT, MG_CONN_STATE_ACTIVE, -1);

    t = render(m2, NULL);
    assert_true(value(t, "moongate_requests_total{route=\"b\",code=\"200\"}") == 4);
    assert_true(value(t, "moongate_request_duration_seconds_count{route=\"b\"}") == 4);
    assert_true(value(t, "moongate_requests_total{route=\"c\",code=\"500\"}") == 1);
    assert_null(strstr(t, "route=\"a\""));
    assert_true(value(t, "moongate_requests_in_flight{route=\"b\"}") == 0);
    assert_true(value(t, "moongate_upstream_requests_total{upstream=\"orders\",target=\"127.0.0."
                         "1:9002\",outcome=\"success\"}") == 2);
    assert_true(value(t, "moongate_connections{side=\"client\",state=\"active\"}") == 0);
    assert_true(value(t, "moongate_config_reloads_total{result=\"success\"}") == 1);
    assert_true(value(t, "moongate_config_reloads_total{result=\"failure\"}") == 1);
    free(t);

    /* the old generation still renders its own view (a, b) */
    t = render(m1, NULL);
    assert_true(value(t, "moongate_requests_total{route=\"a\",code=\"200\"}") == 1);
    assert_true(value(t, "moongate_requests_total{route=\"b\",code=\"200\"}") == 4);
    free(t);

    mg_metrics_unref(m1); /* releases a */
    mg_config_unref(c1);
    t = render(m2, NULL);
    assert_true(value(t, "moongate_requests_total{route=\"b\",code=\"200\"}") == 4);
    free(t);

    /* a comes back in a third generation: it starts from zero */
    struct mg_config *c3 = load_ab();
    struct mg_metrics *m3 = mg_metrics_next(m2, c3);
    mg_metrics_unref(m2);
    mg_config_unref(c2);
    t = render(m3, NULL);
    assert_true(value(t, "moongate_requests_total{route=\"a\",code=\"200\"}") == -1);
    assert_true(value(t, "moongate_request_duration_seconds_count{route=\"a\"}") == 0);
    assert_true(value(t, "moongate_requests_total{route=\"b\",code=\"200\"}") == 4);
    assert_true(value(t, "moongate_config_reloads_total{result=\"success\"}") == 1);
    free(t);
    mg_metrics_unref(m3);
    mg_config_unref(c3);
}

static void test_refcount_keeps_generation(void **state)
{
    struct mg_config *cfg = load_ab();
    struct mg_metrics *m = mg_metrics_new(cfg, 1);
    char *t;

    (void)state;
    mg_metrics_ref(m);
    mg_config_unref(cfg); /* the generation holds its own reference */
    mg_metrics_unref(m);
    mg_metrics_request_done(m, 0, 0, 204, MS(1));
    t = render(m, NULL);
    assert_true(value(t, "moongate_requests_total{route=\"a\",code=\"204\"}") == 1);
    free(t);
    mg_metrics_unref(m);
    mg_metrics_unref(NULL);
    /* NULL generation counts nothing and does not crash */
    mg_metrics_request_done(NULL, 0, 0, 200, 1);
    mg_metrics_in_flight(NULL, 0, 0, 1);
    mg_metrics_conn(NULL, 0, MG_CONN_SIDE_CLIENT, MG_CONN_STATE_IDLE, 1);
    mg_metrics_config_reload(NULL, true);
}

static void test_textbuf_seconds_and_json(void **state)
{
    struct mg_textbuf b = MG_TEXTBUF_INIT;

    (void)state;
    mg_textbuf_seconds(&b, 0, 9);
    mg_textbuf_putc(&b, ' ');
    mg_textbuf_seconds(&b, 1500000, 9);
    mg_textbuf_putc(&b, ' ');
    mg_textbuf_seconds(&b, 2000000000, 9);
    mg_textbuf_putc(&b, ' ');
    mg_textbuf_seconds(&b, 1234567891, 6);
    mg_textbuf_putc(&b, ' ');
    mg_textbuf_seconds(&b, 999, 6);
    mg_textbuf_putc(&b, ' ');
    mg_textbuf_i64(&b, INT64_MIN);
    assert_string_equal(b.p, "0 0.0015 2 1.234567 0 -9223372036854775808");
    mg_textbuf_reset(&b);
    mg_textbuf_rfc3339_ms(&b, 1790000000123);
    assert_string_equal(b.p, "2026-09-21T14:13:20.123Z");
    mg_textbuf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_families_once_and_valid),
        cmocka_unit_test(test_requests_by_route_and_code),
        cmocka_unit_test(test_histogram_buckets_cumulative_and_sum_exact),
        cmocka_unit_test(test_configured_buckets),
        cmocka_unit_test(test_seconds_conversion),
        cmocka_unit_test(test_shards_sum_across_worker_threads),
        cmocka_unit_test(test_gauges_across_shards),
        cmocka_unit_test(test_upstream_outcomes_fixed_set),
        cmocka_unit_test(test_errors_use_error_map_names),
        cmocka_unit_test(test_idempotency_only_for_enabled_routes),
        cmocka_unit_test(test_label_values_escaped),
        cmocka_unit_test(test_circuit_state_through_hook),
        cmocka_unit_test(test_bulkhead_through_hook),
        cmocka_unit_test(test_plugins_appear_after_register),
        cmocka_unit_test(test_carry_over_across_reload),
        cmocka_unit_test(test_refcount_keeps_generation),
        cmocka_unit_test(test_textbuf_seconds_and_json),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
