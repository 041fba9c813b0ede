/*
 * Growable text buffer and escapers (see textbuf.h).
 *
 * Invariant: after any append, p[len] == '\0', so a buffer can be handed to
 * code that wants a C string. Growth doubles the capacity; the escapers reserve
 * their worst case once (6 output bytes per input byte for JSON, 2 for labels)
 * and then write without further checks.
 */
#include "obs/textbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"

void mg_textbuf_reserve(struct mg_textbuf *b, size_t n)
{
    size_t need = b->len + n + 1;

    if (need <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (p == NULL)
        mg_fatal("out of memory (text buffer of %zu bytes)", cap);
    b->p = p;
    b->cap = cap;
}

void mg_textbuf_append(struct mg_textbuf *b, const char *s, size_t n)
{
    mg_textbuf_reserve(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void mg_textbuf_puts(struct mg_textbuf *b, const char *s)
{
    mg_textbuf_append(b, s, strlen(s));
}

void mg_textbuf_putc(struct mg_textbuf *b, char c)
{
    mg_textbuf_reserve(b, 1);
    b->p[b->len++] = c;
    b->p[b->len] = '\0';
}

void mg_textbuf_printf(struct mg_textbuf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    mg_textbuf_reserve(b, 64);
    va_start(ap, fmt);
    n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0)
        mg_fatal("vsnprintf failed");
    if ((size_t)n >= b->cap - b->len) {
        mg_textbuf_reserve(b, (size_t)n);
        va_start(ap, fmt);
        vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
    }
    b->len += (size_t)n;
}

char *mg_fmt_u64(char *o, uint64_t v)
{
    char tmp[MG_FMT_U64_MAX];
    size_t i = sizeof(tmp);

    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    memcpy(o, tmp + i, sizeof(tmp) - i);
    return o + (sizeof(tmp) - i);
}

void mg_textbuf_u64(struct mg_textbuf *b, uint64_t v)
{
    mg_textbuf_reserve(b, MG_FMT_U64_MAX);
    b->len = (size_t)(mg_fmt_u64(b->p + b->len, v) - b->p);
    b->p[b->len] = '\0';
}

void mg_textbuf_i64(struct mg_textbuf *b, int64_t v)
{
    if (v < 0) {
        mg_textbuf_putc(b, '-');
        mg_textbuf_u64(b, (uint64_t)0 - (uint64_t)v);
    } else {
        mg_textbuf_u64(b, (uint64_t)v);
    }
}

char *mg_fmt_seconds(char *o, uint64_t ns, unsigned maxfrac)
{
    uint32_t frac = (uint32_t)(ns % 1000000000u);
    char digits[9];
    unsigned n;

    if (maxfrac > 9)
        maxfrac = 9;
    o = mg_fmt_u64(o, ns / 1000000000u);
    for (int i = 8; i >= 0; i--) {
        digits[i] = (char)('0' + frac % 10);
        frac /= 10;
    }
    for (n = maxfrac; n > 0 && digits[n - 1] == '0'; n--)
        ;
    if (n == 0)
        return o;
    *o++ = '.';
    memcpy(o, digits, n);
    return o + n;
}

void mg_textbuf_seconds(struct mg_textbuf *b, uint64_t ns, unsigned maxfrac)
{
    mg_textbuf_reserve(b, MG_FMT_SECONDS_MAX);
    b->len = (size_t)(mg_fmt_seconds(b->p + b->len, ns, maxfrac) - b->p);
    b->p[b->len] = '\0';
}

/* Length of the valid UTF-8 sequence at s (RFC 3629 table), or 0 if s[0] does
 * not start one within n bytes. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    unsigned char lo = 0x80, hi = 0xbf;
    size_t len;

    if (c >= 0xc2 && c <= 0xdf)
        len = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0)
            lo = 0xa0; /* overlong */
        else if (c == 0xed)
            hi = 0x9f; /* surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0)
            lo = 0x90; /* overlong */
        else if (c == 0xf4)
            hi = 0x8f; /* > U+10FFFF */
    } else
        return 0;
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return len;
}

/* The bytes a JSON string can hold as they are: printable ASCII but '"', '\\'. */
static inline int json_plain(unsigned char c)
{
    return (unsigned char)(c - 0x20) < 0x5f && c != '"' && c != '\\';
}

char *mg_fmt_json_str(char *o, const char *str, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)str;

    *o++ = '"';
    for (size_t i = 0; i < n;) {
        size_t run = i;
        while (run < n && json_plain(s[run]))
            run++;
        if (run > i) { /* the common case: a run of plain ASCII */
            memcpy(o, s + i, run - i);
            o += run - i;
            i = run;
            if (i == n)
                break;
        }
        unsigned char c = s[i];
        if (c == '"' || c == '\\') {
            *o++ = '\\';
            *o++ = (char)c;
            i++;
            continue;
        }
        if (c >= 0x80) {
            size_t len = utf8_seq(s + i, n - i);
            if (len) {
                memcpy(o, s + i, len);
                o += len;
                i += len;
                continue;
            }
        }
        /* control character, DEL, or a byte outside valid UTF-8 */
        memcpy(o, "\\u00", 4);
        o[4] = hex[c >> 4];
        o[5] = hex[c & 15];
        o += 6;
        i++;
    }
    *o++ = '"';
    return o;
}

void mg_textbuf_json_str(struct mg_textbuf *b, const char *s, size_t n)
{
    mg_textbuf_reserve(b, 6 * n + 2);
    b->len = (size_t)(mg_fmt_json_str(b->p + b->len, s, n) - b->p);
    b->p[b->len] = '\0';
}

void mg_textbuf_prom_label(struct mg_textbuf *b, const char *s)
{
    size_t n = strlen(s);
    char *o;

    mg_textbuf_reserve(b, 2 * n);
    o = b->p + b->len;
    for (; *s; s++) {
        switch (*s) {
        case '\\':
            *o++ = '\\';
            *o++ = '\\';
            break;
        case '"':
            *o++ = '\\';
            *o++ = '"';
            break;
        case '\n':
            *o++ = '\\';
            *o++ = 'n';
            break;
        default:
            *o++ = *s;
        }
    }
    *o = '\0';
    b->len = (size_t)(o - b->p);
}

void mg_textbuf_rfc3339_ms(struct mg_textbuf *b, int64_t unix_ms)
{
    int64_t sec = unix_ms >= 0 ? unix_ms / 1000 : (unix_ms - 999) / 1000;
    int ms = (int)(unix_ms - sec * 1000);
    time_t t = (time_t)sec;
    struct tm tm;

    if (gmtime_r(&t, &tm) == NULL)
        memset(&tm, 0, sizeof(tm));
    mg_textbuf_printf(b, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                      tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
}

void mg_textbuf_reset(struct mg_textbuf *b)
{
    b->len = 0;
    if (b->p)
        b->p[0] = '\0';
}

char *mg_textbuf_take(struct mg_textbuf *b, size_t *len)
{
    char *p;

    mg_textbuf_reserve(b, 0);
    b->p[b->len] = '\0';
    p = b->p;
    if (len)
        *len = b->len;
    b->p = NULL;
    b->len = b->cap = 0;
    return p;
}

void mg_textbuf_free(struct mg_textbuf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}
