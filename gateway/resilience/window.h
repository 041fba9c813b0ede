/*
 * Sliding-window pair of counters, lock-free, shared by threads (see window-t.h).
 *
 * Every function takes the bucket width and the current time from the caller, so
 * the same window can be read by workers whose clocks (uv_now) differ by a loop
 * iteration, and tests are deterministic. Callers must use one clock base for a
 * window (libuv's uv_now of any loop: all derive from CLOCK_MONOTONIC) and one
 * width for its whole life.
 *
 * Limits: each bucket counts up to MG_WINDOW_COUNT_MAX per counter and then
 * saturates; bucket numbers are kept modulo 2^20, so a bucket left untouched for
 * exactly a multiple of 2^20 widths (12 days with 1 s buckets) could be read as
 * live for one window.
 */
#ifndef MG_WINDOW_H
#define MG_WINDOW_H

#include <stdbool.h>
#include <stdint.h>

#include "resilience/window-t.h"

#define MG_WINDOW_COUNT_MAX ((1u << 22) - 1)

/* Zeroes a window before it is shared (not atomic with respect to other users). */
void mg_window_init(struct mg_window *w);
/* Empties a shared window. An add racing with the clear may be lost, which the
 * breaker accepts when it closes. */
void mg_window_clear(struct mg_window *w);
/* Adds da and db to the bucket of now_ms, rotating it first if it is stale. */
void mg_window_add(struct mg_window *w, uint64_t width_ms, uint64_t now_ms, uint32_t da,
                   uint32_t db);
/* Totals over the buckets that cover (now_ms - 10 widths, now_ms]. */
struct mg_window_count mg_window_sum(const struct mg_window *w, uint64_t width_ms, uint64_t now_ms);
/* Adds one to b in the bucket of now_ms only if, counting it, b over the window
 * stays within base + ratio * a. Returns whether it added. Exact against other
 * threads adding to the same bucket: the check and the add are one CAS on it. */
bool mg_window_spend(struct mg_window *w, uint64_t width_ms, uint64_t now_ms, uint64_t base,
                     double ratio);
/* Gives back one b that mg_window_spend added at the same now_ms, for a caller
 * whose second budget then refused: spending first and giving back leaves no
 * moment in which another thread can spend what the first one looked at. If
 * the bucket has rotated meanwhile, the spend stays (the window only errs on
 * the side of spending less). */
void mg_window_give_back(struct mg_window *w, uint64_t width_ms, uint64_t now_ms);

#endif
