/*
 * Runaway-plugin guard: source instrumentation plus a watchdog thread.
 *
 * Instrumentation. A small Lua lexer copies the plugin source and inserts
 * MG_GUARD_CHECK after every `do` (while/for bodies; plain blocks are checked
 * harmlessly), every `repeat`, every function's parameter list (which also
 * covers recursion and tail calls) and before every `goto` (the only other way
 * to loop). Strings, long strings, comments and numbers are copied untouched;
 * nothing inserted contains a newline, so error line numbers stay true.
 * The check counts down a chunk-level counter and, every 1000 checks, reads
 * the stop byte in a function call (guard.h says why the read must sit on a
 * slow path: a load in the loop body itself gets hoisted by the JIT).
 * Measured by tests/unit/test_lua_bench.c: ~1 ns per check compiled, ~5 ns
 * interpreted.
 *
 * Watchdog. One thread for the process wakes every tick (a quarter of the
 * smallest limit, 2..50 ms) and looks at each registered VM's guard word. A
 * VM that is in a call that started more than its limit ago gets its stop
 * byte set, by CAS on the exact word it read, so a call that ended meanwhile
 * is never stopped by mistake. The worker's hot path pays two plain atomic
 * stores per call and no syscall.
 *
 * Ownership: guards are embedded in their VMs; the list links them under
 * wd.lock, and a VM unregisters (under that lock) before it is freed.
 */
#include "lua/guard.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "lua/vm.h" /* the default limits */

/* ------------------------------------------------------------ instrumentation */

struct outbuf {
    char *p;
    size_t len, cap;
};

static void out_put(struct outbuf *o, const char *s, size_t n)
{
    if (o->len + n + 1 > o->cap) {
        size_t cap = o->cap ? o->cap : 256;
        while (cap < o->len + n + 1)
            cap *= 2;
        o->p = realloc(o->p, cap);
        if (!o->p)
            mg_fatal("out of memory instrumenting a plugin");
        o->cap = cap;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
    o->p[o->len] = '\0';
}

static bool is_ident(unsigned char c)
{
    return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c >= 0x80;
}

/* Length of "[==[" at s (the level is the number of '='), or 0 if none. */
static size_t long_open(const char *s, const char *end, size_t *level)
{
    const char *p = s + 1;
    if (*s != '[')
        return 0;
    while (p < end && *p == '=')
        p++;
    if (p >= end || *p != '[')
        return 0;
    *level = (size_t)(p - s - 1);
    return (size_t)(p - s + 1);
}

/* Skips a long bracket body after its opener; returns the end or NULL. */
static const char *skip_long(const char *p, const char *end, size_t level)
{
    for (; p < end; p++) {
        if (*p != ']')
            continue;
        const char *q = p + 1;
        while (q < end && *q == '=')
            q++;
        if (q < end && *q == ']' && (size_t)(q - p - 1) == level)
            return q + 1;
    }
    return NULL;
}

/* Skips a quoted string after its opening quote; NULL if unfinished. */
static const char *skip_quoted(const char *p, const char *end, char quote)
{
    while (p < end) {
        char c = *p++;
        if (c == quote)
            return p;
        if (c == '\n' || c == '\r')
            return NULL;
        if (c != '\\' || p >= end)
            continue;
        c = *p++;
        if (c == 'z') { /* \z skips the following white space, newlines included */
            while (p < end && (*p == ' ' || (*p >= '\t' && *p <= '\r')))
                p++;
        } else if ((c == '\n' || c == '\r') && p < end && (*p == '\n' || *p == '\r') && *p != c) {
            p++; /* an escaped CRLF or LFCR counts as one newline */
        }
    }
    return NULL;
}

static const char *skip_number(const char *p, const char *end)
{
    bool hex = end - p > 1 && p[0] == '0' && (p[1] == 'x' || p[1] == 'X');
    while (p < end) {
        char c = *p;
        char e = hex ? 'p' : 'e';
        if ((c == e || c == e - 32) && p + 1 < end && (p[1] == '+' || p[1] == '-')) {
            p += 2;
            continue;
        }
        if (!is_ident((unsigned char)c) && c != '.')
            break;
        p++;
    }
    return p;
}

enum fn_state { FN_NONE, FN_WANT_OPEN, FN_WANT_CLOSE };

static bool word_is(const char *s, size_t n, const char *kw)
{
    return strlen(kw) == n && memcmp(s, kw, n) == 0;
}

char *mg_lua_guard_source(const char *src, size_t len, size_t *outlen)
{
    static const char check[] = MG_GUARD_CHECK;
    const char *p = src, *end = src + len;
    struct outbuf o = {0};
    enum fn_state fn = FN_NONE;

    out_put(&o, MG_GUARD_PROLOGUE, sizeof(MG_GUARD_PROLOGUE) - 1);
    if (p < end && *p == '#') { /* a shebang line: luaL_loadbuffer would not skip it */
        out_put(&o, "--", 2);
        p++;
    }
    while (p < end) {
        const char *start = p;
        size_t level;
        unsigned char c = (unsigned char)*p;
        if (c == '-' && p + 1 < end && p[1] == '-') {
            size_t open = long_open(p + 2, end, &level);
            if (open) {
                p = skip_long(p + 2 + open, end, level);
            } else {
                p = memchr(p, '\n', (size_t)(end - p));
                p = p ? p : end;
            }
        } else if (c == '"' || c == '\'') {
            p = skip_quoted(p + 1, end, (char)c);
        } else if (c == '[' && long_open(p, end, &level)) {
            p = skip_long(p + long_open(p, end, &level), end, level);
        } else if ((c >= '0' && c <= '9') ||
                   (c == '.' && p + 1 < end && p[1] >= '0' && p[1] <= '9')) {
            p = skip_number(p, end);
        } else if (is_ident(c)) {
            while (p < end && is_ident((unsigned char)*p))
                p++;
            size_t n = (size_t)(p - start);
            if (word_is(start, n, "goto"))
                out_put(&o, check, sizeof(check) - 1);
            out_put(&o, start, n);
            if (word_is(start, n, "do") || word_is(start, n, "repeat"))
                out_put(&o, check, sizeof(check) - 1);
            else if (word_is(start, n, "function"))
                fn = FN_WANT_OPEN;
            continue;
        } else {
            p++;
            if (c == '(' && fn == FN_WANT_OPEN) {
                fn = FN_WANT_CLOSE;
            } else if (c == ')' && fn == FN_WANT_CLOSE) {
                out_put(&o, start, 1);
                out_put(&o, check, sizeof(check) - 1);
                fn = FN_NONE;
                continue;
            }
        }
        if (!p) {
            free(o.p);
            return NULL;
        }
        out_put(&o, start, (size_t)(p - start));
    }
    *outlen = o.len;
    return o.p;
}

/* ------------------------------------------------------------------- clocks */

uint64_t mg_lua_clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---------------------------------------------------------------- watchdog */

static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond; /* CLOCK_MONOTONIC; wakes the thread to stop */
    pthread_once_t once;
    struct mg_lua_guard *list;
    pthread_t thread;
    bool running, stopping;
    _Atomic uint32_t phase_ms, init_ms;
} wd = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .once = PTHREAD_ONCE_INIT,
    .phase_ms = MG_LUA_PHASE_LIMIT_MS,
    .init_ms = MG_LUA_INIT_LIMIT_MS,
};

static void wd_init_cond(void)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&wd.cond, &attr);
    pthread_condattr_destroy(&attr);
}

static uint32_t wd_tick_ms(void)
{
    uint32_t lo = atomic_load(&wd.phase_ms);
    uint32_t init = atomic_load(&wd.init_ms);
    uint32_t tick = (init < lo ? init : lo) / 4;
    return tick < 2 ? 2 : tick > 50 ? 50 : tick;
}

/* Sets the stop byte of a guard whose call overran. Under wd.lock. */
static void wd_check(struct mg_lua_guard *g, uint64_t now_ms)
{
    uint32_t w = atomic_load_explicit(&g->word, memory_order_acquire);
    if (!(w & MG_GUARD_IN_CALL) || (w & MG_GUARD_STOP))
        return;
    /* Read after the word: at least as new as the call the word names. */
    uint64_t start = atomic_load_explicit(&g->start_ms, memory_order_relaxed);
    uint32_t limit = atomic_load_explicit(&g->limit_ms, memory_order_relaxed);
    if (now_ms < start || now_ms - start < limit)
        return;
    atomic_compare_exchange_strong(&g->word, &w, w | 1u);
}

static void *wd_main(void *arg)
{
    pthread_mutex_lock(&wd.lock);
    while (!wd.stopping) {
        struct timespec ts;
        uint64_t tick = wd_tick_ms();
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += (long)(tick * 1000000u);
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        int rc = pthread_cond_timedwait(&wd.cond, &wd.lock, &ts);
        if (rc != 0 && rc != ETIMEDOUT)
            mg_fatal("lua watchdog: pthread_cond_timedwait: %s", strerror(rc));
        uint64_t now_ms = mg_lua_clock_ns() / 1000000u;
        for (struct mg_lua_guard *g = wd.list; g; g = g->next)
            wd_check(g, now_ms);
    }
    pthread_mutex_unlock(&wd.lock);
    return arg;
}

static void wd_start_locked(void)
{
    int rc = pthread_create(&wd.thread, NULL, wd_main, NULL);
    if (rc != 0)
        mg_fatal("lua watchdog: pthread_create: %s", strerror(rc));
    wd.running = true;
}

void mg_lua_guard_register(struct mg_lua_guard *g)
{
    pthread_once(&wd.once, wd_init_cond);
    pthread_mutex_lock(&wd.lock);
    g->next = wd.list;
    wd.list = g;
    if (!wd.running)
        wd_start_locked();
    pthread_mutex_unlock(&wd.lock);
}

void mg_lua_guard_unregister(struct mg_lua_guard *g)
{
    pthread_mutex_lock(&wd.lock);
    for (struct mg_lua_guard **pp = &wd.list; *pp; pp = &(*pp)->next) {
        if (*pp == g) {
            *pp = g->next;
            break;
        }
    }
    /* The last VM stops the thread (and joins it, so nothing is left running
     * at exit). Whoever sets `stopping` joins; a VM registered meanwhile finds
     * `running` still set, so the joiner restarts the thread for it. */
    if (wd.list || !wd.running || wd.stopping) {
        pthread_mutex_unlock(&wd.lock);
        return;
    }
    wd.stopping = true;
    pthread_cond_signal(&wd.cond);
    pthread_mutex_unlock(&wd.lock);
    pthread_join(wd.thread, NULL);
    pthread_mutex_lock(&wd.lock);
    wd.running = false;
    wd.stopping = false;
    if (wd.list)
        wd_start_locked();
    pthread_mutex_unlock(&wd.lock);
}

void mg_lua_guard_enter(struct mg_lua_guard *g, uint64_t now_ms, uint32_t limit_ms)
{
    g->seq++;
    atomic_store_explicit(&g->start_ms, now_ms, memory_order_relaxed);
    atomic_store_explicit(&g->limit_ms, limit_ms, memory_order_relaxed);
    atomic_store_explicit(&g->word, g->seq << MG_GUARD_SEQ_SHIFT | MG_GUARD_IN_CALL,
                          memory_order_release);
}

void mg_lua_guard_leave(struct mg_lua_guard *g)
{
    /* Keeps the stop byte so mg_lua_guard_stopped() can still tell why the
     * call failed; the next enter() clears it. No check runs outside a call. */
    uint32_t w = atomic_load_explicit(&g->word, memory_order_relaxed);
    atomic_store_explicit(&g->word, (g->seq << MG_GUARD_SEQ_SHIFT) | (w & MG_GUARD_STOP),
                          memory_order_relaxed);
}

bool mg_lua_guard_stopped(const struct mg_lua_guard *g)
{
    return (atomic_load_explicit(&g->word, memory_order_relaxed) & MG_GUARD_STOP) != 0;
}

const uint8_t *mg_lua_guard_stop(const struct mg_lua_guard *g)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return (const uint8_t *)&g->word + sizeof(uint32_t) - 1;
#else
    return (const uint8_t *)&g->word;
#endif
}

uint32_t mg_lua_guard_phase_limit(void)
{
    return atomic_load_explicit(&wd.phase_ms, memory_order_relaxed);
}

uint32_t mg_lua_guard_init_limit(void)
{
    return atomic_load_explicit(&wd.init_ms, memory_order_relaxed);
}

void mg_lua_guard_set_limits(uint32_t phase_ms, uint32_t init_ms)
{
    if (phase_ms)
        atomic_store(&wd.phase_ms, phase_ms);
    if (init_ms)
        atomic_store(&wd.init_ms, init_ms);
}
