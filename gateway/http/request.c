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

/* Length of a '.' at p (literal, or "%2e"/"%2E"), or 0. */
static size_t dot_at(const char *p, const char *end)
{
    if (p < end && *p == '.')
        return 1;
    if (end - p >= 3 && p[0] == '%' && p[1] == '2' && (p[2] == 'e' || p[2] == 'E'))
        return 3;
    return 0;
}

/* Is the segment [p, end) "." or ".." in any spelling? */
static bool dot_segment(const char *p, const char *end)
{
    size_t a = dot_at(p, end);
    if (a == 0)
        return false;
    if (p + a == end)
        return true;
    size_t b = dot_at(p + a, end);
    return b && p + a + b == end;
}

bool mg_http_path_safe(struct mg_slice path)
{
    const char *p = path.p, *end = path.p + path.len;
    while (p < end) {
        const char *seg = ++p; /* past the '/' */
        while (p < end && *p != '/') {
            if (*p == '%' && end - p >= 3 && p[1] == '0' && p[2] == '0')
                return false;
            p++;
        }
        if (dot_segment(seg, p))
            return false;
    }
    return true;
}

bool mg_http_target_valid(struct mg_slice url)
{
    for (size_t i = 0; i < url.len; i++) {
        unsigned char c = (unsigned char)url.p[i];
        if (c <= 0x20 || c == 0x7f)
            return false;
    }
    return true;
}
