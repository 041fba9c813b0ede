/*
 * PROXY protocol headers (see proxyproto.h). Version 1 is one line
 * "PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n" or "PROXY UNKNOWN ...\r\n";
 * version 2 is a 12-byte signature, a version/command byte, a family byte, a
 * 16-bit length, the addresses and type-length-value records (TLVs).
 *
 * What is checked: every byte of the signature as it arrives; in v1, single
 * spaces, addresses in the family named (inet_pton's strict forms), ports as
 * decimal 0..65535 without leading zeros, printable bytes, the CRLF within
 * 107 bytes; in v2, the version (2), the command (LOCAL or PROXY), the family
 * (a stream one for PROXY), a length that holds the addresses, TLVs that tile
 * the rest exactly, and the CRC32c TLV when one is present. TLV contents are
 * otherwise ignored. LOCAL (a balancer's own health check) and UNKNOWN carry
 * no client address: the connection keeps its own.
 */
#include "net/proxyproto.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>

static const char v1_sig[] = "PROXY ";
static const unsigned char v2_sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                         0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};

enum { V2_FIXED = 16, V2_LEN_INET = 12, V2_LEN_INET6 = 36, V2_LEN_UNIX = 216 };
enum { TLV_CRC32C = 0x03 };

/* ------------------------------------------------------------ version 1 */

/* A port: 1 to 5 digits, no leading zero, at most 65535. */
static bool v1_port(const char *p, size_t n, unsigned *out)
{
    if (n == 0 || n > 5 || (n > 1 && p[0] == '0'))
        return false;
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        v = v * 10 + (unsigned)(p[i] - '0');
    }
    if (v > 65535)
        return false;
    *out = v;
    return true;
}

static bool v1_addr(int family, const char *p, size_t n, unsigned port, struct sockaddr_storage *ss)
{
    char text[INET6_ADDRSTRLEN];
    if (n == 0 || n >= sizeof text)
        return false;
    memcpy(text, p, n);
    text[n] = '\0';
    memset(ss, 0, sizeof *ss);
    if (family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)ss;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        return inet_pton(AF_INET, text, &a->sin_addr) == 1;
    }
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
    a->sin6_family = AF_INET6;
    a->sin6_port = htons((uint16_t)port);
    return inet_pton(AF_INET6, text, &a->sin6_addr) == 1;
}

/* Splits `p[0..n)` at single spaces into at most `max` words; false when a
 * word is empty (two spaces, a leading or trailing one) or there are more. */
static bool v1_words(const char *p, size_t n, const char **w, size_t *wl, size_t max, size_t *count)
{
    size_t k = 0, start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && p[i] != ' ')
            continue;
        if (i == start || k == max)
            return false;
        w[k] = p + start;
        wl[k++] = i - start;
        start = i + 1;
    }
    *count = k;
    return true;
}

/* The line after "PROXY ", without its CRLF. */
static enum mg_proxy_verdict v1_line(const char *p, size_t n, struct mg_proxy_header *h)
{
    if (n >= 7 && memcmp(p, "UNKNOWN", 7) == 0 && (n == 7 || p[7] == ' ')) {
        h->has_addr = false; /* the rest is to be ignored, says the specification */
        return MG_PROXY_OK;
    }
    const char *w[5];
    size_t wl[5], count;
    if (!v1_words(p, n, w, wl, 5, &count) || count != 5 || wl[0] != 4)
        return MG_PROXY_INVALID;
    int family;
    if (memcmp(w[0], "TCP4", 4) == 0)
        family = AF_INET;
    else if (memcmp(w[0], "TCP6", 4) == 0)
        family = AF_INET6;
    else
        return MG_PROXY_INVALID;
    unsigned sport, dport;
    if (!v1_port(w[3], wl[3], &sport) || !v1_port(w[4], wl[4], &dport) ||
        !v1_addr(family, w[1], wl[1], sport, &h->src) ||
        !v1_addr(family, w[2], wl[2], dport, &h->dst))
        return MG_PROXY_INVALID;
    h->has_addr = true;
    return MG_PROXY_OK;
}

static enum mg_proxy_verdict parse_v1(const char *p, size_t n, struct mg_proxy_header *h)
{
    size_t sig = sizeof v1_sig - 1;
    if (memcmp(p, v1_sig, n < sig ? n : sig) != 0)
        return MG_PROXY_INVALID;
    size_t limit = n < MG_PROXY_V1_MAX ? n : MG_PROXY_V1_MAX;
    for (size_t i = sig; i < limit; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '\r') {
            if (i + 1 == n)
                return MG_PROXY_MORE;
            if (p[i + 1] != '\n' || i + 2 > MG_PROXY_V1_MAX)
                return MG_PROXY_INVALID;
            h->version = 1;
            h->len = i + 2;
            struct mg_proxy_header tmp = *h;
            enum mg_proxy_verdict v = v1_line(p + sig, i - sig, &tmp);
            if (v == MG_PROXY_OK)
                *h = tmp;
            return v;
        }
        if (c < 0x20 || c > 0x7e)
            return MG_PROXY_INVALID;
    }
    return n >= MG_PROXY_V1_MAX ? MG_PROXY_INVALID : MG_PROXY_MORE;
}

/* ------------------------------------------------------------ version 2 */

/* CRC-32C (Castagnoli, reflected 0x82F63B78), bitwise: a header is checked
 * once per connection, and only when it carries the TLV. */
static uint32_t crc32c(uint32_t crc, const unsigned char *p, size_t n)
{
    crc = ~crc;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
    }
    return ~crc;
}

/* The header's CRC with the 4 bytes of the checksum at `at` taken as zero. */
static uint32_t v2_crc(const unsigned char *b, size_t total, size_t at)
{
    static const unsigned char zero[4];
    uint32_t crc = crc32c(0, b, at);
    crc = crc32c(crc, zero, 4);
    return crc32c(crc, b + at + 4, total - at - 4);
}

/* TLVs must tile b[from..total) exactly; a CRC32c one must match. */
static bool v2_tlvs(const unsigned char *b, size_t from, size_t total)
{
    size_t i = from;
    while (i < total) {
        if (total - i < 3)
            return false;
        size_t len = (size_t)b[i + 1] << 8 | b[i + 2];
        if (total - i - 3 < len)
            return false;
        if (b[i] == TLV_CRC32C) {
            if (len != 4)
                return false;
            uint32_t want = (uint32_t)b[i + 3] << 24 | (uint32_t)b[i + 4] << 16 |
                            (uint32_t)b[i + 5] << 8 | b[i + 6];
            if (v2_crc(b, total, i + 3) != want)
                return false;
        }
        i += 3 + len;
    }
    return true;
}

static void v2_inet(const unsigned char *a, struct mg_proxy_header *h)
{
    struct sockaddr_in *s = (struct sockaddr_in *)&h->src, *d = (struct sockaddr_in *)&h->dst;
    memset(&h->src, 0, sizeof h->src);
    memset(&h->dst, 0, sizeof h->dst);
    s->sin_family = d->sin_family = AF_INET;
    memcpy(&s->sin_addr, a, 4);
    memcpy(&d->sin_addr, a + 4, 4);
    memcpy(&s->sin_port, a + 8, 2); /* both in network order already */
    memcpy(&d->sin_port, a + 10, 2);
}

static void v2_inet6(const unsigned char *a, struct mg_proxy_header *h)
{
    struct sockaddr_in6 *s = (struct sockaddr_in6 *)&h->src, *d = (struct sockaddr_in6 *)&h->dst;
    memset(&h->src, 0, sizeof h->src);
    memset(&h->dst, 0, sizeof h->dst);
    s->sin6_family = d->sin6_family = AF_INET6;
    memcpy(&s->sin6_addr, a, 16);
    memcpy(&d->sin6_addr, a + 16, 16);
    memcpy(&s->sin6_port, a + 32, 2);
    memcpy(&d->sin6_port, a + 34, 2);
}

/* The family byte of a PROXY command: the length its addresses take, or -1
 * when it is not one a TCP listener can be told (datagrams, unknown values). */
static int v2_addr_len(unsigned char fam)
{
    switch (fam) {
    case 0x00: /* UNSPEC */
        return 0;
    case 0x11: /* TCP over IPv4 */
        return V2_LEN_INET;
    case 0x21: /* TCP over IPv6 */
        return V2_LEN_INET6;
    case 0x31: /* UNIX stream */
        return V2_LEN_UNIX;
    default:
        return -1;
    }
}

static enum mg_proxy_verdict parse_v2(const char *p, size_t n, struct mg_proxy_header *h)
{
    const unsigned char *b = (const unsigned char *)p;
    if (memcmp(b, v2_sig, n < sizeof v2_sig ? n : sizeof v2_sig) != 0)
        return MG_PROXY_INVALID;
    if (n <= 12)
        return MG_PROXY_MORE;
    unsigned version = b[12] >> 4, command = b[12] & 0x0f;
    if (version != 2 || command > 1)
        return MG_PROXY_INVALID;
    if (n <= 13)
        return MG_PROXY_MORE;
    int need = v2_addr_len(b[13]);
    if (command == 1 && need < 0)
        return MG_PROXY_INVALID;
    if (n < V2_FIXED)
        return MG_PROXY_MORE;
    size_t len = (size_t)b[14] << 8 | b[15], total = V2_FIXED + len;
    if (total > MG_PROXY_V2_MAX)
        return MG_PROXY_INVALID;
    if (n < total)
        return MG_PROXY_MORE;
    h->version = 2;
    h->len = total;
    if (command == 0) { /* LOCAL: the balancer's own connection; skip the rest */
        h->has_addr = false;
        return MG_PROXY_OK;
    }
    if (len < (size_t)need || !v2_tlvs(b, V2_FIXED + (size_t)need, total))
        return MG_PROXY_INVALID;
    h->has_addr = b[13] == 0x11 || b[13] == 0x21;
    if (b[13] == 0x11)
        v2_inet(b + V2_FIXED, h);
    else if (b[13] == 0x21)
        v2_inet6(b + V2_FIXED, h);
    return MG_PROXY_OK;
}

/* ------------------------------------------------------------ entry points */

enum mg_proxy_verdict mg_proxy_parse(const char *p, size_t n, struct mg_proxy_header *h)
{
    if (n == 0)
        return MG_PROXY_MORE;
    if (p[0] == v1_sig[0])
        return parse_v1(p, n, h);
    if ((unsigned char)p[0] == v2_sig[0])
        return parse_v2(p, n, h);
    return MG_PROXY_INVALID;
}

void mg_proxy_addr_text(const struct sockaddr_storage *ss, char *out, size_t len)
{
    out[0] = '\0';
    const void *a = NULL;
    if (ss->ss_family == AF_INET)
        a = &((const struct sockaddr_in *)ss)->sin_addr;
    else if (ss->ss_family == AF_INET6)
        a = &((const struct sockaddr_in6 *)ss)->sin6_addr;
    if (!a || !inet_ntop(ss->ss_family, a, out, (socklen_t)len))
        out[0] = '\0';
}
