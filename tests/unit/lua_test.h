/*
 * Helpers shared by the Lua runtime tests (test_lua.c, test_lua_plugins.c):
 * a temporary plugin_path per test, configs built around it, request contexts
 * built the way the proxy builds them, and stderr capture to check the error
 * log. Header-only (static inline) so each test file stays one executable.
 */
#ifndef MG_TEST_LUA_H
#define MG_TEST_LUA_H

#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "config/config.h"
#include "core/arena.h"
#include "lua/guard.h"
#include "lua/vm.h"
#include "resilience/registry-t.h"

/* Config lines 1-5; a ROUTE starts on line 6 and its extra lines on line 8. */
#define T_HEAD                                                                                     \
    "listen: [\"127.0.0.1:8080\"]\n"                                                               \
    "plugin_path: [\"%s\"]\n"                                                                      \
    "upstreams:\n"                                                                                 \
    "  a: {targets: [{address: \"127.0.0.1:9001\"}]}\n"                                            \
    "routes:\n"
#define ROUTE(name, extra) "- name: " name "\n  upstream: a\n" extra

#define T_STR(s) ((struct mg_lua_str){(s), sizeof(s) - 1})

static char t_dir[256] __attribute__((unused));

static inline int t_setup(void **state)
{
    snprintf(t_dir, sizeof(t_dir), "/tmp/mg_lua_test_XXXXXX");
    assert_non_null(mkdtemp(t_dir));
    return 0;
}

static inline int t_rm(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static inline int t_teardown(void **state)
{
    nftw(t_dir, t_rm, 8, FTW_DEPTH | FTW_PHYS);
    return 0;
}

static inline void t_plugin(const char *name, const char *src)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s.lua", t_dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(src, f);
    fclose(f);
}

static inline struct mg_config *t_config(const char *routes)
{
    char yaml[16384], err[1024] = "";
    int n = snprintf(yaml, sizeof(yaml), T_HEAD, t_dir);
    snprintf(yaml + n, sizeof(yaml) - (size_t)n, "%s", routes);
    struct mg_config *cfg = mg_config_load_string(yaml, strlen(yaml), "t.yaml", err, sizeof(err));
    if (!cfg)
        fail_msg("config: %s\n%s", err, yaml);
    return cfg;
}

static inline struct mg_lua *t_vm(const struct mg_config *cfg)
{
    char err[1024] = "";
    struct mg_lua *vm = mg_lua_new(cfg, 0, NULL, err, sizeof(err));
    if (!vm)
        fail_msg("mg_lua_new: %s", err);
    return vm;
}

/* Both the check and a worker's VM fail with exactly `want`. */
static inline void t_check_error(const struct mg_config *cfg, const char *want)
{
    char err[1024] = "";
    assert_int_equal(mg_lua_check_config(cfg, err, sizeof(err)), -1);
    assert_string_equal(err, want);
    err[0] = '\0';
    assert_null(mg_lua_new(cfg, 1, NULL, err, sizeof(err)));
    assert_string_equal(err, want);
}

static inline void t_check_ok(const struct mg_config *cfg)
{
    char err[1024] = "";
    if (mg_lua_check_config(cfg, err, sizeof(err)) != 0)
        fail_msg("check: %s", err);
}

struct t_req {
    struct mg_arena arena;
    struct mg_lua_ctx ctx;
    struct mg_lua_header req[8], resp[8];
};

static inline struct mg_lua_str t_str(const char *s)
{
    return (struct mg_lua_str){s, s ? strlen(s) : 0};
}

static inline void t_req_init(struct t_req *r, const char *method, const char *path)
{
    memset(r, 0, sizeof(*r));
    mg_arena_init(&r->arena, NULL);
    mg_lua_ctx_init(&r->ctx, &r->arena);
    r->ctx.method = t_str(method);
    r->ctx.path = t_str(path);
    r->ctx.client_ip = T_STR("10.0.0.9");
    r->ctx.route = T_STR("orders");
    r->ctx.request_id = T_STR("rid-1");
    r->ctx.req_headers = r->req;
}

static inline void t_req_header(struct t_req *r, const char *name, const char *value)
{
    assert_true(r->ctx.n_req_headers < 8);
    r->req[r->ctx.n_req_headers].name = t_str(name);
    r->req[r->ctx.n_req_headers].value = t_str(value);
    r->ctx.n_req_headers++;
}

/* What the proxy fills before the response phase. */
static inline void t_resp(struct t_req *r, int status, const char *name, const char *value)
{
    r->ctx.status = status;
    r->resp[0].name = t_str(name);
    r->resp[0].value = t_str(value);
    r->ctx.resp_headers = r->resp;
    r->ctx.n_resp_headers = 1;
    r->ctx.upstream_address = T_STR("127.0.0.1:9001");
    r->ctx.latency = 0.25;
}

static inline void t_req_done(struct mg_lua *vm, struct t_req *r)
{
    mg_lua_ctx_done(vm, &r->ctx);
    mg_arena_destroy(&r->arena);
}

static inline size_t t_edit_count(const struct mg_lua_edit *e)
{
    size_t n = 0;
    for (; e; e = e->next)
        n++;
    return n;
}

static inline void t_assert_str(struct mg_lua_str s, const char *want)
{
    if (!want) {
        assert_null(s.p);
        return;
    }
    assert_non_null(s.p);
    assert_int_equal(s.len, strlen(want));
    assert_memory_equal(s.p, want, s.len);
}

/* The edit for `name` exists with `value` (NULL: a removal). */
static inline void t_assert_edit(const struct mg_lua_edit *e, const char *name, const char *value)
{
    for (; e; e = e->next) {
        if (e->name.len == strlen(name) && strncasecmp(e->name.p, name, e->name.len) == 0) {
            t_assert_str(e->value, value);
            return;
        }
    }
    fail_msg("no edit for header %s", name);
}

static inline const char *t_edit_value(const struct mg_lua_edit *e, const char *name, char *buf,
                                       size_t cap)
{
    for (; e; e = e->next) {
        if (e->name.len == strlen(name) && strncasecmp(e->name.p, name, e->name.len) == 0) {
            if (!e->value.p)
                return NULL;
            snprintf(buf, cap, "%.*s", (int)e->value.len, e->value.p);
            return buf;
        }
    }
    return NULL;
}

static inline uint64_t t_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static inline unsigned t_plugin_id(const struct mg_lua *vm, const char *name)
{
    for (unsigned i = 0; i < mg_lua_nplugins(vm); i++)
        if (strcmp(mg_lua_plugin_name(vm, i), name) == 0)
            return i;
    fail_msg("no plugin %s", name);
    return 0;
}

/* stderr into a temporary file, to check the error log. */
static int t_saved_stderr __attribute__((unused)) = -1;
static char t_capture_path[300] __attribute__((unused));

static inline void t_capture_start(void)
{
    snprintf(t_capture_path, sizeof(t_capture_path), "%s/stderr.XXXXXX", t_dir);
    int fd = mkstemp(t_capture_path);
    assert_true(fd >= 0);
    fflush(stderr);
    t_saved_stderr = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    close(fd);
}

/* Returns what was written since t_capture_start (malloc'd) and restores stderr. */
static inline char *t_capture_end(void)
{
    fflush(stderr);
    dup2(t_saved_stderr, STDERR_FILENO);
    close(t_saved_stderr);
    FILE *f = fopen(t_capture_path, "r");
    assert_non_null(f);
    char *buf = calloc(1, 65536);
    size_t n = fread(buf, 1, 65535, f);
    buf[n] = '\0';
    fclose(f);
    unlink(t_capture_path);
    return buf;
}

static inline size_t t_count(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

#endif
