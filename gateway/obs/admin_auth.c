/*
 * Bearer token check of the admin listener (see admin_auth.h).
 */
#include "obs/admin_auth.h"

#include <string.h>
#include <strings.h>

/* Constant-time in the contents: every byte of the longer input is visited
 * and differences are OR-ed, never branched on; only the lengths (not secret
 * beyond what a timing attacker learns from the token's length) shape the loop. */
static bool equal_ct(const char *a, size_t alen, const char *b, size_t blen)
{
    size_t n = alen > blen ? alen : blen;
    unsigned char diff = (unsigned char)(alen != blen);

    for (size_t i = 0; i < n; i++) {
        unsigned char x = i < alen ? (unsigned char)a[i] : 0;
        unsigned char y = i < blen ? (unsigned char)b[i] : 0;
        diff |= (unsigned char)(x ^ y);
    }
    return diff == 0;
}

bool mg_admin_auth_ok(const char *token, const char *authorization, size_t len)
{
    const char *p = authorization;

    if (token == NULL)
        return true;
    if (p == NULL || len < 7 || strncasecmp(p, "Bearer ", 7) != 0)
        return false;
    p += 7, len -= 7;
    while (len > 0 && (*p == ' ' || *p == '\t'))
        p++, len--;
    while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
        len--;
    return equal_ct(p, len, token, strlen(token));
}

bool mg_admin_auth_exempt(const char *path, size_t len)
{
    return (len == 8 && memcmp(path, "/healthz", 8) == 0) ||
           (len == 6 && memcmp(path, "/ready", 6) == 0);
}
