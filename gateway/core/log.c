/*
 * The error log. Formatting happens in a stack buffer; the single write(2) per
 * line is atomic for lines under PIPE_BUF, which keeps threads from interleaving.
 *
 * Level and format come from the config (`log:`) and change on reload; the
 * MOONGATE_LOG_LEVEL environment variable, when set, overrides the level (for
 * debugging a deployed file without editing it). Both are atomics: workers read
 * them while the main thread applies a reload.
 */
#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

_Atomic int mg_log_threshold = MG_LOG_INFO;
static _Atomic bool log_json;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

int mg_log_level_from_name(const char *name)
{
    for (int i = 0; i < 4; i++)
        if (name != NULL && strcmp(name, level_names[i]) == 0)
            return i;
    return -1;
}

void mg_log_configure(enum mg_log_level level, bool json)
{
    int env = mg_log_level_from_name(getenv("MOONGATE_LOG_LEVEL"));

    atomic_store_explicit(&mg_log_threshold, env >= 0 ? env : (int)level, memory_order_relaxed);
    atomic_store_explicit(&log_json, json, memory_order_relaxed);
}

/* JSON string body of `s` (quotes not included) into out[0..cap). */
static size_t json_escape(char *out, size_t cap, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = 0;

    for (; *s && n + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[n++] = '\\';
            out[n++] = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            n += (size_t)snprintf(out + n, cap - n, "\\u00%c%c", hex[c >> 4], hex[c & 15]);
        } else {
            out[n++] = (char)c;
        }
    }
    return n;
}

static void vlog(const char *level, const char *fmt, va_list ap)
{
    char line[2048], msg[1024], stamp[32];
    struct timeval tv;
    struct tm tm;
    size_t n;
    int m;

    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    n = strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(stamp + n, sizeof stamp - n, ".%03ldZ", (long)(tv.tv_usec / 1000));
    if (atomic_load_explicit(&log_json, memory_order_relaxed)) {
        vsnprintf(msg, sizeof msg, fmt, ap);
        n = (size_t)snprintf(line, sizeof line, "{\"time\":\"%s\",\"level\":\"%s\",\"msg\":\"",
                             stamp, level);
        n += json_escape(line + n, sizeof line - n - 3, msg);
        line[n++] = '"';
        line[n++] = '}';
    } else {
        n = (size_t)snprintf(line, sizeof line, "%s [%s] ", stamp, level);
        m = vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
        n += m < 0 ? 0 : (size_t)m;
        if (n > sizeof line - 2)
            n = sizeof line - 2;
    }
    line[n++] = '\n';
    ssize_t ignored = write(STDERR_FILENO, line, n);
    (void)ignored;
}

void mg_log(enum mg_log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(level_names[level], fmt, ap);
    va_end(ap);
}

void mg_fatal(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog("fatal", fmt, ap);
    va_end(ap);
    abort();
}
