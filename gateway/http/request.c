/*
 * Request rules on top of llhttp (see request.h).
 */
#include "http/request.h"

#include <string.h>

bool mg_http_host_valid(struct mg_slice h)
{
    static const bool allowed[256] = {
        ['a' ... 'z'] = true, ['A' ... 'Z'] = true, ['0' ... '9'] = true, ['-'] = true,
        ['.'] = true,         ['_'] = true,         ['~'] = true,         ['%'] = true,
        ['!'] = true,         ['$'] = true,         ['&'] = true,         ['\''] = true,
        ['('] = true,         [')'] = true,         ['*'] = true,         ['+'] = true,
        [','] = true,         [';'] = true,         ['='] = true,         [':'] = true,
        ['['] = true,         [']'] = true,
    };
    for (size_t i = 0; i < h.len; i++)
        if (!allowed[(unsigned char)h.p[i]])
            return false;
    return true;
}

int mg_http_absolute_form(struct mg_slice *url, struct mg_slice *authority)
{
    static const struct mg_slice schemes[] = {MG_SLICE_LIT("http://"), MG_SLICE_LIT("https://")};
    for (size_t i = 0; i < 2; i++) {
        struct mg_slice s = schemes[i];
        if (url->len < s.len || !mg_slice_ieq((struct mg_slice){url->p, s.len}, s))
            continue;
        const char *auth = url->p + s.len, *end = url->p + url->len, *p = auth;
        while (p < end && *p != '/' && *p != '?')
            p++;
        struct mg_slice a = {auth, (size_t)(p - auth)};
        if (a.len == 0 || !mg_http_host_valid(a) || memchr(a.p, '@', a.len))
            return -1; /* no host, or userinfo (deprecated, a phishing vector) */
        if (p < end && *p != '/')
            return -1; /* "http://host?q": no path to give the origin */
        *authority = a;
        *url = p < end ? (struct mg_slice){p, (size_t)(end - p)} : MG_SLICE_LIT("/");
        return 0;
    }
    return 0;
}

bool mg_http_request_id_valid(struct mg_slice v, size_t max)
{
    if (v.len == 0 || v.len > max)
        return false;
    for (size_t i = 0; i < v.len; i++) {
        unsigned char ch = (unsigned char)v.p[i];
        if (ch <= 0x20 || ch >= 0x7f || ch == '"' || ch == '\\')
            return false;
    }
    return true;
}

/* Value of the hex digit c, or -1. */
static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* The byte "%XX" at p stands for, or -1 when p holds no "%XX". */
static int pct_at(const char *p, const char *end)
{
    if (end - p < 3 || p[0] != '%')
        return -1;
    int hi = hex_value((unsigned char)p[1]), lo = hex_value((unsigned char)p[2]);
    return hi < 0 || lo < 0 ? -1 : hi << 4 | lo;
}

/* RFC 3986 section 2.3: ALPHA DIGIT "-" "." "_" "~". */
static bool unreserved(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

/* Length of a '.' at p (literal, or "%2e"/"%2E"), or 0. */
static size_t dot_at(const char *p, const char *end)
{
    if (p < end && *p == '.')
        return 1;
    return pct_at(p, end) == '.' ? 3 : 0;
}

/* Length of what some upstream reads as a segment separator at p: '/', '\',
 * or "%2F"/"%5C" (servers that decode before they split, Windows), or 0. */
static size_t separator_at(const char *p, const char *end)
{
    if (*p == '/' || *p == '\\')
        return 1;
    int c = *p == '%' ? pct_at(p, end) : -1;
    return c == '/' || c == '\\' ? 3 : 0;
}

/* Does [p, end) start with "." or ".." (any spelling) ended the way one upstream or
 * another ends a segment: the end, a separator, or ';' (Tomcat, Jetty and Spring
 * drop "path parameters": "/x/..;/admin" is "/admin" there)? */
static bool dot_segment_at(const char *p, const char *end)
{
    size_t a = dot_at(p, end);
    if (a == 0)
        return false;
    p += a;
    p += dot_at(p, end);
    return p == end || *p == ';' || separator_at(p, end) != 0;
}

/* One pass, three compares for most bytes: every request goes through it. */
bool mg_http_path_safe(struct mg_slice path)
{
    const char *p = path.p, *end = path.p + path.len;
    while (p < end) {
        char c = *p++;
        if (c == '/') {
            if (p < end && (*p == '.' || *p == '%') && dot_segment_at(p, end))
                return false;
        } else if (c == '\\') {
            return false; /* not a URI character; a separator to Windows servers */
        } else if (c == '%') {
            int v = pct_at(p - 1, end);
            if (v == 0 || ((v == '/' || v == '\\') && dot_segment_at(p + 2, end)))
                return false; /* "%00", or "%2F.." */
        }
    }
    return true;
}

size_t mg_http_path_route_form(struct mg_slice path, char *out)
{
    static const char hex[] = "0123456789ABCDEF";
    const char *p = path.p, *end = path.p + path.len;
    char *o = out;
    while (p < end) {
        int c = *p == '%' ? pct_at(p, end) : -1;
        if (c < 0) {
            *o++ = *p++;
            continue;
        }
        if (unreserved(c)) {
            *o++ = (char)c;
        } else { /* RFC 3986 section 6.2.2.1: "%2f" and "%2F" are one octet */
            o[0] = '%';
            o[1] = hex[c >> 4];
            o[2] = hex[c & 15];
            o += 3;
        }
        p += 3;
    }
    return (size_t)(o - out);
}

size_t mg_http_path_raw_len(struct mg_slice path, size_t n)
{
    const char *p = path.p, *end = path.p + path.len;
    for (size_t w = 0; w < n && p < end; w++) {
        int c = *p == '%' ? pct_at(p, end) : -1;
        p += c >= 0 && unreserved(c) ? 3 : 1;
    }
    return (size_t)(p - path.p);
}

/* The first byte of url a request target may not hold, its verdict, or OK. */
static enum mg_http_target_fault bytes_fault(struct mg_slice url, bool path_only)
{
    for (size_t i = 0; i < url.len; i++) {
        unsigned char c = (unsigned char)url.p[i];
        if (c <= 0x20 || c == 0x7f)
            return MG_TARGET_CONTROL;
        if (c >= 0x80)
            return MG_TARGET_NON_ASCII;
        if (c == '#')
            return MG_TARGET_FRAGMENT;
        if (c == '?' && path_only)
            return MG_TARGET_QUERY;
    }
    return MG_TARGET_OK;
}

bool mg_http_target_valid(struct mg_slice url)
{
    return bytes_fault(url, false) == MG_TARGET_OK;
}

enum mg_http_target_fault mg_http_path_fault(struct mg_slice path, bool path_only)
{
    if (path.len == 0 || path.p[0] != '/')
        return MG_TARGET_NOT_ORIGIN;
    enum mg_http_target_fault f = bytes_fault(path, path_only);
    if (f != MG_TARGET_OK)
        return f;
    const char *q = memchr(path.p, '?', path.len);
    if (q)
        path.len = (size_t)(q - path.p);
    return mg_http_path_safe(path) ? MG_TARGET_OK : MG_TARGET_UNSAFE_PATH;
}
