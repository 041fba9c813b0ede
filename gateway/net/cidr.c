/*
 * Address blocks (see cidr.h). Parsing goes through inet_pton, whose forms are
 * strict (no leading zeros or shortened IPv4, no zone indices); a block is
 * compared byte-wise over its prefix, so a match costs at most 16 byte
 * compares per block.
 */
#include "net/cidr.h"

#include <arpa/inet.h>
#include <string.h>

static const uint8_t v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

bool mg_ip_parse(const char *s, size_t n, struct mg_ip *out)
{
    char text[INET6_ADDRSTRLEN];
    if (n == 0 || n >= sizeof text)
        return false;
    memcpy(text, s, n);
    text[n] = '\0';
    if (inet_pton(AF_INET, text, out->b + 12) == 1) {
        memcpy(out->b, v4_mapped, sizeof v4_mapped);
        return true;
    }
    return inet_pton(AF_INET6, text, out->b) == 1;
}

void mg_ip_text(const struct mg_ip *ip, char *out, size_t len)
{
    bool v4 = memcmp(ip->b, v4_mapped, sizeof v4_mapped) == 0;
    if (!inet_ntop(v4 ? AF_INET : AF_INET6, v4 ? ip->b + 12 : ip->b, out, (socklen_t)len))
        out[0] = '\0';
}

/* Whether the bits of `ip` past `bits` are all zero. */
static bool host_bits_zero(const struct mg_ip *ip, unsigned bits)
{
    for (unsigned i = 0; i < 16; i++) {
        unsigned keep = bits >= 8 * (i + 1) ? 8 : bits > 8 * i ? bits - 8 * i : 0;
        uint8_t mask = (uint8_t)(keep ? 0xffu << (8 - keep) : 0);
        if (ip->b[i] & (uint8_t)~mask)
            return false;
    }
    return true;
}

bool mg_cidr_parse(const char *s, struct mg_cidr *out, const char **why)
{
    const char *slash = strchr(s, '/');
    size_t alen = slash ? (size_t)(slash - s) : strlen(s);
    *why = "not an IPv4 or IPv6 address";
    if (!mg_ip_parse(s, alen, &out->net))
        return false;
    bool v4 = memchr(s, ':', alen) == NULL;
    unsigned max = v4 ? 32 : 128, bits = max;
    if (slash) {
        const char *p = slash + 1;
        size_t n = strlen(p);
        *why = "the prefix length must be a number up to 32 (IPv4) or 128 (IPv6)";
        if (n == 0 || n > 3 || (n > 1 && p[0] == '0'))
            return false;
        bits = 0;
        for (size_t i = 0; i < n; i++) {
            if (p[i] < '0' || p[i] > '9')
                return false;
            bits = bits * 10 + (unsigned)(p[i] - '0');
        }
        if (bits > max)
            return false;
    }
    if (v4)
        bits += 96;
    *why = "host bits are set past the prefix length";
    if (!host_bits_zero(&out->net, bits))
        return false;
    out->bits = (uint8_t)bits;
    return true;
}

static bool in_block(const struct mg_cidr *c, const struct mg_ip *ip)
{
    unsigned whole = c->bits / 8, rest = c->bits % 8;
    if (memcmp(c->net.b, ip->b, whole) != 0)
        return false;
    if (!rest)
        return true;
    uint8_t mask = (uint8_t)(0xffu << (8 - rest));
    return (ip->b[whole] & mask) == c->net.b[whole];
}

bool mg_cidr_match(const struct mg_cidr *set, size_t n, const struct mg_ip *ip)
{
    for (size_t i = 0; i < n; i++)
        if (in_block(&set[i], ip))
            return true;
    return false;
}
