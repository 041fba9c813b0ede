/*
 * Leveled error log: one line per event on stderr,
 *   2026-11-28T00:00:00.123Z [error] message
 * or, with `log: {format: json}`,
 *   {"time":"2026-11-28T00:00:00.123Z","level":"error","msg":"message"}
 * Lines are formatted into a stack buffer and written with one write(2) so lines
 * from several threads never interleave.
 */
#ifndef MG_LOG_H
#define MG_LOG_H

#include <stdatomic.h>
#include <stdbool.h>

enum mg_log_level { MG_LOG_DEBUG, MG_LOG_INFO, MG_LOG_WARN, MG_LOG_ERROR };

/* An enum mg_log_level; atomic because a reload changes it under the workers. */
extern _Atomic int mg_log_threshold;

/* "debug".."error" -> enum mg_log_level, or -1 (NULL too). */
int mg_log_level_from_name(const char *name);
/* Applies the config's `log:` section (MOONGATE_LOG_LEVEL, when set to a
 * level name, still wins over `level`). Any thread. */
void mg_log_configure(enum mg_log_level level, bool json);

void mg_log(enum mg_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define MG_LOG(level, ...)                                                                         \
    do {                                                                                           \
        if ((int)(level) >= atomic_load_explicit(&mg_log_threshold, memory_order_relaxed))         \
            mg_log((level), __VA_ARGS__);                                                          \
    } while (0)
#define mg_debug(...) MG_LOG(MG_LOG_DEBUG, __VA_ARGS__)
#define mg_info(...)  MG_LOG(MG_LOG_INFO, __VA_ARGS__)
#define mg_warn(...)  MG_LOG(MG_LOG_WARN, __VA_ARGS__)
#define mg_error(...) MG_LOG(MG_LOG_ERROR, __VA_ARGS__)

/* Kept in release builds (like HAProxy's BUG_ON): an invariant broken here would
 * otherwise corrupt memory later, far from the cause. */
#define MG_ASSERT(cond)                                                                            \
    do {                                                                                           \
        if (!(cond))                                                                               \
            mg_fatal("assertion failed: %s (%s:%d)", #cond, __FILE__, __LINE__);                   \
    } while (0)

_Noreturn void mg_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
