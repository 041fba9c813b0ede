/*
 * A growable text buffer and the escapers the observability code needs: JSON
 * strings (access log, /status) and Prometheus label values (/metrics).
 *
 * Ownership: the buffer owns `p` (malloc'd); mg_textbuf_free releases it, and
 * mg_textbuf_take hands it to the caller. Allocation failure aborts (STYLE
 * convention 7): every size appended here is bounded by config or fixed sets.
 * Threads: none of its own; a buffer is used by one thread at a time.
 */
#ifndef MG_TEXTBUF_H
#define MG_TEXTBUF_H

#include <stddef.h>
#include <stdint.h>

struct mg_textbuf {
    char *p;    /* NULL until the first append; always NUL-terminated after one */
    size_t len; /* bytes used, not counting the NUL */
    size_t cap; /* bytes allocated */
};

#define MG_TEXTBUF_INIT                                                                            \
    {                                                                                              \
        NULL, 0, 0                                                                                 \
    }

/* Makes room for `n` more bytes (plus the NUL) without changing len. */
void mg_textbuf_reserve(struct mg_textbuf *b, size_t n);
void mg_textbuf_append(struct mg_textbuf *b, const char *s, size_t n);
void mg_textbuf_puts(struct mg_textbuf *b, const char *s);
void mg_textbuf_putc(struct mg_textbuf *b, char c);
void mg_textbuf_printf(struct mg_textbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void mg_textbuf_u64(struct mg_textbuf *b, uint64_t v);
void mg_textbuf_i64(struct mg_textbuf *b, int64_t v);
/* Seconds from nanoseconds, exact decimal, trailing zeros trimmed: 1500000 ->
 * "0.0015", 2000000000 -> "2", 0 -> "0". With `maxfrac` < 9 the fraction is
 * truncated to that many digits first (6 gives microseconds). */
void mg_textbuf_seconds(struct mg_textbuf *b, uint64_t ns, unsigned maxfrac);
/* A JSON string with its quotes: '"' and '\\' escaped, control characters
 * (< 0x20, and 0x7f) as \u00XX, valid UTF-8 copied, and every byte that is not
 * part of a valid UTF-8 sequence (overlong, surrogate, > U+10FFFF, truncated)
 * as \u00XX, so the output is always valid JSON and valid UTF-8. */
void mg_textbuf_json_str(struct mg_textbuf *b, const char *s, size_t n);
/* A Prometheus label value without quotes: '\\', '"' and newline escaped as the
 * text exposition format 0.0.4 requires. */
void mg_textbuf_prom_label(struct mg_textbuf *b, const char *s);
/* "2026-11-28T00:00:00.123Z" (RFC 3339, UTC, milliseconds) from unix ms. */
void mg_textbuf_rfc3339_ms(struct mg_textbuf *b, int64_t unix_ms);
void mg_textbuf_reset(struct mg_textbuf *b);

/* Raw writers for hot paths that reserve once and then write without checks:
 * each writes at `o`, which must have room for the stated maximum, and returns
 * the end of what it wrote (no NUL). Same output as the functions above. */
#define MG_FMT_U64_MAX     20 /* digits of UINT64_MAX */
#define MG_FMT_SECONDS_MAX 30
char *mg_fmt_u64(char *o, uint64_t v);
char *mg_fmt_seconds(char *o, uint64_t ns, unsigned maxfrac);
char *mg_fmt_json_str(char *o, const char *s, size_t n); /* at most 6 * n + 2 bytes */
/* Returns the buffer (never NULL: "" when empty) and leaves `b` empty. */
char *mg_textbuf_take(struct mg_textbuf *b, size_t *len);
void mg_textbuf_free(struct mg_textbuf *b);

#endif
