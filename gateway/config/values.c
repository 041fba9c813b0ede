/*
 * Scalar parsers of the configuration: durations, sizes, addresses, numbers,
 * booleans and status codes (methods: http/method.c).
 *
 * Invariant: every parser consumes its whole input or fails; there is no
 * leading/trailing whitespace, sign or base prefix, and arithmetic overflow is an
 * error, never a wrap. They allocate nothing (getaddrinfo results are freed
 * before returning), so they are also safe for the rest of the code to call.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config/config.h"
#include "config/parse.h"

/* Reads the decimal digits at *s (at least one), advancing *s. */
static int digits(const char **s, uint64_t *out)
{
    const char *p = *s;
    uint64_t v = 0;

    if (!isdigit((unsigned char)*p))
        return -1;
    for (; isdigit((unsigned char)*p); p++) {
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *s = p;
    *out = v;
    return 0;
}

static int scale(uint64_t v, uint64_t mult, uint64_t *out)
{
    if (mult != 0 && v > UINT64_MAX / mult)
        return -1;
    *out = v * mult;
    return 0;
}

int mg_conf_parse_uint(const char *s, uint64_t *out)
{
    if (digits(&s, out) < 0 || *s != '\0')
        return -1;
    return 0;
}

int mg_parse_duration_ms(const char *s, uint64_t *out_ms)
{
    static const struct {
        const char *unit;
        uint64_t ms;
    } units[] = {{"ms", 1}, {"s", 1000}, {"m", 60 * 1000}, {"h", 60 * 60 * 1000}};
    uint64_t v;

    if (s == NULL || digits(&s, &v) < 0)
        return -1;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(s, units[i].unit) == 0)
            return scale(v, units[i].ms, out_ms);
    }
    return -1; /* a bare number is ambiguous (s? ms?), so it is refused */
}

int mg_parse_size(const char *s, uint64_t *out_bytes)
{
    uint64_t v, mult = 1;

    if (s == NULL || digits(&s, &v) < 0)
        return -1;
    if (*s != '\0') {
        switch (tolower((unsigned char)*s)) {
        case 'k':
            mult = 1ull << 10;
            break;
        case 'm':
            mult = 1ull << 20;
            break;
        case 'g':
            mult = 1ull << 30;
            break;
        default:
            return -1;
        }
        if (s[1] != '\0')
            return -1;
    }
    return scale(v, mult, out_bytes);
}

int mg_conf_parse_double(const char *s, double *out)
{
    char *end;

    /* strtod also takes hex, "inf", "nan" and leading blanks: not config syntax. */
    if (s == NULL || !(isdigit((unsigned char)s[0]) || (s[0] == '.' && s[1] != '\0')))
        return -1;
    for (const char *p = s; *p; p++) {
        if (!isdigit((unsigned char)*p) && *p != '.' && *p != 'e' && *p != 'E' && *p != '-' &&
            *p != '+')
            return -1;
    }
    errno = 0;
    *out = strtod(s, &end);
    if (*end != '\0' || errno == ERANGE || !isfinite(*out))
        return -1;
    return 0;
}

int mg_conf_parse_bool(const char *s, bool *out)
{
    /* YAML 1.2 core schema; yes/no/on/off (YAML 1.1) are refused on purpose:
     * they are the classic source of "Norway problem" surprises. */
    if (strcmp(s, "true") == 0 || strcmp(s, "True") == 0 || strcmp(s, "TRUE") == 0) {
        *out = true;
        return 0;
    }
    if (strcmp(s, "false") == 0 || strcmp(s, "False") == 0 || strcmp(s, "FALSE") == 0) {
        *out = false;
        return 0;
    }
    return -1;
}

int mg_conf_status(const char *s)
{
    uint64_t v;

    if (mg_conf_parse_uint(s, &v) < 0 || v < 100 || v > 599)
        return -1;
    return (int)v;
}

/* Splits "host:port" / "[v6]:port" into a host (copied to `host`) and a port. */
static int split_hostport(const char *s, char *host, size_t hostcap, uint16_t *port, char *why,
                          size_t whylen)
{
    const char *colon, *h = s;
    size_t hlen;
    uint64_t p;

    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL || close[1] != ':') {
            snprintf(why, whylen, "expected [IPv6]:port");
            return -1;
        }
        h = s + 1;
        hlen = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL) {
            snprintf(why, whylen, "missing ':port'");
            return -1;
        }
        hlen = (size_t)(colon - s);
        if (memchr(s, ':', hlen) != NULL) {
            snprintf(why, whylen, "IPv6 addresses need brackets, e.g. [::1]:80");
            return -1;
        }
    }
    if (mg_conf_parse_uint(colon + 1, &p) < 0 || p < 1 || p > 65535) {
        snprintf(why, whylen, "port must be 1..65535");
        return -1;
    }
    if (hlen >= hostcap) {
        snprintf(why, whylen, "host name too long");
        return -1;
    }
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    *port = (uint16_t)p;
    return 0;
}

static bool is_hostname(const char *h)
{
    for (; *h; h++) {
        if (!isalnum((unsigned char)*h) && *h != '-' && *h != '.' && *h != '_')
            return false;
    }
    return true;
}

/* Host names and IPv6 literals (with an optional %scope) go through getaddrinfo;
 * the first result wins, as documented in config.h. */
static int resolve(const char *host, int family, int flags, struct sockaddr_storage *out,
                   socklen_t *outlen, char *why, size_t whylen)
{
    struct addrinfo hints = {.ai_family = family, .ai_socktype = SOCK_STREAM, .ai_flags = flags};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, NULL, &hints, &res);

    if (rc != 0 || res == NULL || res->ai_addrlen > sizeof(*out)) {
        if (flags & AI_NUMERICHOST)
            snprintf(why, whylen, "invalid IPv6 address '%s'", host);
        else
            snprintf(why, whylen, "cannot resolve '%s': %s", host,
                     rc != 0 ? gai_strerror(rc) : "no address");
        if (res != NULL)
            freeaddrinfo(res);
        return -1;
    }
    memcpy(out, res->ai_addr, res->ai_addrlen);
    *outlen = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

int mg_conf_parse_address(const char *s, struct sockaddr_storage *out, socklen_t *outlen, char *why,
                          size_t whylen)
{
    char host[256];
    uint16_t port;
    struct sockaddr_in *sin = (struct sockaddr_in *)out;

    memset(out, 0, sizeof(*out));
    if (split_hostport(s, host, sizeof(host), &port, why, whylen) < 0)
        return -1;
    if (s[0] == '[') {
        if (resolve(host, AF_INET6, AI_NUMERICHOST, out, outlen, why, whylen) < 0)
            return -1;
        ((struct sockaddr_in6 *)out)->sin6_port = htons(port);
        return 0;
    }
    sin->sin_family = AF_INET;
    sin->sin_port = htons(port);
    *outlen = sizeof(*sin);
    /* "*:80" and ":80" mean every IPv4 address, as in nginx's `listen 80`. */
    if (host[0] == '\0' || strcmp(host, "*") == 0) {
        sin->sin_addr.s_addr = htonl(INADDR_ANY);
        return 0;
    }
    if (inet_pton(AF_INET, host, &sin->sin_addr) == 1)
        return 0;
    /* getaddrinfo would take inet_aton's legacy forms ("10.1" = 10.0.0.1). */
    if (strspn(host, "0123456789.") == strlen(host)) {
        snprintf(why, whylen, "invalid IPv4 address '%s'", host);
        return -1;
    }
    if (!is_hostname(host)) {
        snprintf(why, whylen, "invalid host '%s'", host);
        return -1;
    }
    if (resolve(host, AF_UNSPEC, 0, out, outlen, why, whylen) < 0)
        return -1;
    if (out->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)out)->sin6_port = htons(port);
    else
        ((struct sockaddr_in *)out)->sin_port = htons(port);
    return 0;
}

int mg_parse_address(const char *s, struct sockaddr_storage *out, socklen_t *outlen)
{
    char why[128];

    if (s == NULL)
        return -1;
    return mg_conf_parse_address(s, out, outlen, why, sizeof(why));
}
