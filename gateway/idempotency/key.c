/*
 * Idempotency-Key parsing (bare token or RFC 8941 sf-string) and owner tokens.
 *
 * Invariant: a key accepted by mg_idem_key_parse() is 1..MG_IDEM_KEY_MAX bytes of
 * 0x21-0x7E, so it can be placed last in a storage key ("mg:idem:...:KEY") and
 * sent to Redis or logged without escaping. key.h lists the syntax decisions.
 *
 * Ownership: nothing is allocated; callers own every buffer.
 */
#include "idempotency/key.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include <openssl/rand.h>

static bool visible(unsigned char c)
{
    return c >= 0x21 && c <= 0x7e;
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* A bare (Stripe) key: the trimmed value itself. */
static int parse_bare(const char *v, size_t len, char *out, size_t *outlen)
{
    if (len > MG_IDEM_KEY_MAX)
        return -1;
    for (size_t i = 0; i < len; i++)
        if (!visible((unsigned char)v[i]))
            return -1;
    memcpy(out, v, len);
    out[len] = '\0';
    *outlen = len;
    return 0;
}

/* RFC 8941 section 4.2.5 "Parsing a String", with two extra refusals that key.h
 * explains: SP inside the string, and anything after the closing DQUOTE. */
static int parse_sf_string(const char *v, size_t len, char *out, size_t *outlen)
{
    size_t n = 0;

    for (size_t i = 1; i < len; i++) {
        unsigned char c = (unsigned char)v[i];

        if (c == '"') {
            if (i + 1 != len || n == 0)
                return -1;
            out[n] = '\0';
            *outlen = n;
            return 0;
        }
        if (c == '\\') {
            if (++i == len)
                return -1;
            c = (unsigned char)v[i];
            if (c != '"' && c != '\\')
                return -1; /* the only two escapes sf-string has */
        } else if (!visible(c)) {
            return -1; /* controls, DEL and non-ASCII are not sf-string; SP see key.h */
        }
        if (n == MG_IDEM_KEY_MAX)
            return -1;
        out[n++] = (char)c;
    }
    return -1; /* no closing DQUOTE */
}

int mg_idem_key_parse(const char *v, size_t len, char *out, size_t *outlen)
{
    if (v == NULL)
        return -1;
    while (len > 0 && is_ows(v[0])) {
        v++;
        len--;
    }
    while (len > 0 && is_ows(v[len - 1]))
        len--;
    if (len == 0)
        return -1;
    if (v[0] == '"')
        return parse_sf_string(v, len, out, outlen);
    return parse_bare(v, len, out, outlen);
}

int mg_idem_owner_new(char out[MG_IDEM_OWNER_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char raw[MG_IDEM_OWNER_LEN / 2];

    if (RAND_bytes(raw, (int)sizeof raw) != 1)
        return -EIO;
    for (size_t i = 0; i < sizeof raw; i++) {
        out[2 * i] = hex[raw[i] >> 4];
        out[2 * i + 1] = hex[raw[i] & 15];
    }
    out[MG_IDEM_OWNER_LEN] = '\0';
    return 0;
}

int mg_idem_owner_valid(const char *s)
{
    if (s == NULL)
        return 0;
    for (size_t i = 0; i < MG_IDEM_OWNER_LEN; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}
