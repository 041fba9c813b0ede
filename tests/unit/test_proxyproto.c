/* tests for gateway/net/proxyproto.c: PROXY v1 and v2 headers, valid ones,
 * every prefix of them (need more), and the ways they can be wrong. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "net/proxyproto.h"

static const unsigned char sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                      0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};

static enum mg_proxy_verdict parse(const void *p, size_t n, struct mg_proxy_header *h)
{
    memset(h, 0, sizeof *h);
    return mg_proxy_parse(p, n, h);
}

static const char *src_text(const struct mg_proxy_header *h)
{
    static char out[64];
    mg_proxy_addr_text(&h->src, out, sizeof out);
    return out;
}

/* Every strict prefix of a valid header needs more; the whole one is OK. */
static void assert_prefixes_need_more(const void *p, size_t n)
{
    struct mg_proxy_header h;
    for (size_t i = 0; i < n; i++)
        assert_int_equal(parse(p, i, &h), MG_PROXY_MORE);
}

static size_t v2(unsigned char *b, unsigned char vc, unsigned char fam, const void *addr,
                 size_t alen, const void *tlvs, size_t tlen)
{
    memcpy(b, sig, 12);
    b[12] = vc;
    b[13] = fam;
    size_t len = alen + tlen;
    b[14] = (unsigned char)(len >> 8);
    b[15] = (unsigned char)len;
    if (alen)
        memcpy(b + 16, addr, alen);
    if (tlen)
        memcpy(b + 16 + alen, tlvs, tlen);
    return 16 + len;
}

static const unsigned char inet4[12] = {192, 0, 2, 7, 10, 0, 0, 1, 0x30, 0x39, 0x01, 0xbb};

static void v1_tcp4_with_request_after(void **state)
{
    const char *s = "PROXY TCP4 192.0.2.7 10.0.0.1 12345 443\r\nGET / HTTP/1.1\r\n";
    struct mg_proxy_header h;
    assert_int_equal(parse(s, strlen(s), &h), MG_PROXY_OK);
    assert_int_equal(h.version, 1);
    assert_true(h.has_addr);
    assert_int_equal(h.len, strlen("PROXY TCP4 192.0.2.7 10.0.0.1 12345 443\r\n"));
    assert_string_equal(src_text(&h), "192.0.2.7");
    assert_prefixes_need_more(s, h.len);
}

static void v1_tcp6(void **state)
{
    const char *s = "PROXY TCP6 2001:db8::1 2001:db8::2 65535 0\r\n";
    struct mg_proxy_header h;
    assert_int_equal(parse(s, strlen(s), &h), MG_PROXY_OK);
    assert_string_equal(src_text(&h), "2001:db8::1");
    assert_int_equal(h.len, strlen(s));
}

static void v1_unknown_keeps_own_address(void **state)
{
    struct mg_proxy_header h;
    const char *a = "PROXY UNKNOWN\r\n", *b = "PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n";
    assert_int_equal(parse(a, strlen(a), &h), MG_PROXY_OK);
    assert_false(h.has_addr);
    assert_int_equal(parse(b, strlen(b), &h), MG_PROXY_OK);
    assert_false(h.has_addr);
    assert_int_equal(h.len, strlen(b));
}

static void v1_invalid(void **state)
{
    static const char *const bad[] = {
        "PROXY TCP4 192.0.2.7 10.0.0.1 12345 443\n",     /* LF alone */
        "PROXY TCP4 192.0.2.7 10.0.0.1 12345 443\rX",    /* CR without LF */
        "PROXY TCP4  192.0.2.7 10.0.0.1 12345 443\r\n",  /* two spaces */
        "PROXY TCP4 192.0.2.7 10.0.0.1 12345 443 \r\n",  /* trailing space */
        "PROXY TCP4 192.0.2.7 10.0.0.1 12345\r\n",       /* a port missing */
        "PROXY TCP4 192.0.2.7 10.0.0.1 12345 443 1\r\n", /* one word too many */
        "PROXY TCP4 2001:db8::1 10.0.0.1 1 2\r\n",       /* family mismatch */
        "PROXY TCP6 192.0.2.7 10.0.0.1 1 2\r\n",         /* family mismatch */
        "PROXY TCP4 192.0.2.07 10.0.0.1 1 2\r\n",        /* leading zero */
        "PROXY TCP4 192.0.2 10.0.0.1 1 2\r\n",           /* short IPv4 */
        "PROXY TCP4 192.0.2.7 10.0.0.1 65536 2\r\n",     /* port too large */
        "PROXY TCP4 192.0.2.7 10.0.0.1 080 2\r\n",       /* leading zero in a port */
        "PROXY TCP4 192.0.2.7 10.0.0.1 -1 2\r\n",        /* sign */
        "PROXY UDP4 192.0.2.7 10.0.0.1 1 2\r\n",         /* not TCP */
        "PROXY tcp4 192.0.2.7 10.0.0.1 1 2\r\n",         /* case */
        "PROXY UNKNOWNX\r\n",
        "PROXY \r\n",
        "PROXY TCP4 192.0.2.7\t10.0.0.1 1 2\r\n", /* control byte */
        "proxy TCP4 192.0.2.7 10.0.0.1 1 2\r\n",
        "GET / HTTP/1.1\r\n",
        "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", /* a TLS ClientHello */
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        struct mg_proxy_header h;
        enum mg_proxy_verdict v = parse(bad[i], strlen(bad[i]), &h);
        if (v != MG_PROXY_INVALID)
            fail_msg("accepted #%zu: %s", i, bad[i]);
    }
}

static void v1_garbage_refused_at_first_wrong_byte(void **state)
{
    struct mg_proxy_header h;
    assert_int_equal(parse("PROXZ", 5, &h), MG_PROXY_INVALID);
    assert_int_equal(parse("G", 1, &h), MG_PROXY_INVALID);
    assert_int_equal(parse("PROXY TCP4 1.2.3.4\n", 19, &h), MG_PROXY_INVALID);
}

static void v1_line_longer_than_107_refused(void **state)
{
    char s[200] = "PROXY UNKNOWN ";
    size_t n = strlen(s);
    while (n < 150)
        s[n++] = 'a';
    struct mg_proxy_header h;
    assert_int_equal(parse(s, 106, &h), MG_PROXY_MORE);
    assert_int_equal(parse(s, 107, &h), MG_PROXY_INVALID);
    /* exactly 107 bytes with the CRLF is the longest allowed */
    s[105] = '\r';
    s[106] = '\n';
    assert_int_equal(parse(s, 107, &h), MG_PROXY_OK);
    assert_int_equal(h.len, 107);
    s[105] = 'a';
    s[106] = '\r';
    s[107] = '\n';
    assert_int_equal(parse(s, 108, &h), MG_PROXY_INVALID);
}

static void v2_tcp4(void **state)
{
    unsigned char b[64];
    size_t n = v2(b, 0x21, 0x11, inet4, sizeof inet4, NULL, 0);
    b[n] = 0x16; /* a ClientHello's first byte follows */
    struct mg_proxy_header h;
    assert_int_equal(parse(b, n + 1, &h), MG_PROXY_OK);
    assert_int_equal(h.version, 2);
    assert_int_equal(h.len, 28);
    assert_true(h.has_addr);
    assert_string_equal(src_text(&h), "192.0.2.7");
    assert_prefixes_need_more(b, n);
}

static void v2_tcp6_with_tlvs(void **state)
{
    unsigned char addr[36] = {0x20, 0x01, 0x0d, 0xb8, [15] = 0x05};
    /* ALPN "h2", AUTHORITY "a.example", an SSL TLV with a sub-TLV, NOOP */
    static const unsigned char tlvs[] = {0x01, 0,    2,   'h', '2', 0x02, 0, 9, 'a',  '.', 'e', 'x',
                                         'a',  'm',  'p', 'l', 'e', 0x20, 0, 9, 0x01, 0,   0,   0,
                                         0,    0x21, 0,   1,   'x', 0x04, 0, 0};
    unsigned char b[128];
    size_t n = v2(b, 0x21, 0x21, addr, sizeof addr, tlvs, sizeof tlvs);
    struct mg_proxy_header h;
    assert_int_equal(parse(b, n, &h), MG_PROXY_OK);
    assert_int_equal(h.len, n);
    assert_string_equal(src_text(&h), "2001:db8::5");
    assert_prefixes_need_more(b, n);
}

static void v2_local_skips_everything(void **state)
{
    unsigned char b[64];
    /* LOCAL with UNSPEC and some bytes that are no valid TLVs: ignored */
    static const unsigned char junk[5] = {9, 9, 9, 9, 9};
    size_t n = v2(b, 0x20, 0x00, junk, sizeof junk, NULL, 0);
    struct mg_proxy_header h;
    assert_int_equal(parse(b, n, &h), MG_PROXY_OK);
    assert_false(h.has_addr);
    assert_int_equal(h.len, n);
}

static void v2_unspec_and_unix_keep_own_address(void **state)
{
    unsigned char b[300], unix_addr[216] = {0};
    size_t n = v2(b, 0x21, 0x00, NULL, 0, NULL, 0);
    struct mg_proxy_header h;
    assert_int_equal(parse(b, n, &h), MG_PROXY_OK);
    assert_false(h.has_addr);
    n = v2(b, 0x21, 0x31, unix_addr, sizeof unix_addr, NULL, 0);
    assert_int_equal(parse(b, n, &h), MG_PROXY_OK);
    assert_false(h.has_addr);
}

static void put_crc(unsigned char *b, size_t n, size_t at, uint32_t crc)
{
    (void)n;
    b[at] = (unsigned char)(crc >> 24);
    b[at + 1] = (unsigned char)(crc >> 16);
    b[at + 2] = (unsigned char)(crc >> 8);
    b[at + 3] = (unsigned char)crc;
}

/* A reference CRC-32C, table-free, written independently of the parser's. */
static uint32_t ref_crc32c(const unsigned char *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    while (n--) {
        c ^= *p++;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    }
    return c ^ 0xffffffffu;
}

static void v2_crc32c_checked(void **state)
{
    static const unsigned char tlv[7] = {0x03, 0, 4, 0, 0, 0, 0};
    unsigned char b[64];
    size_t n = v2(b, 0x21, 0x11, inet4, sizeof inet4, tlv, sizeof tlv);
    size_t at = 16 + sizeof inet4 + 3;
    assert_int_equal(ref_crc32c((const unsigned char *)"123456789", 9), 0xE3069283u);
    put_crc(b, n, at, ref_crc32c(b, n));
    struct mg_proxy_header h;
    assert_int_equal(parse(b, n, &h), MG_PROXY_OK);
    b[at + 3] ^= 1;
    assert_int_equal(parse(b, n, &h), MG_PROXY_INVALID);
}

static void v2_invalid(void **state)
{
    unsigned char b[128];
    struct mg_proxy_header h;
    size_t n;
    /* version 1 in the binary form, unknown command */
    n = v2(b, 0x11, 0x11, inet4, sizeof inet4, NULL, 0);
    assert_int_equal(parse(b, n, &h), MG_PROXY_INVALID);
    assert_int_equal(parse(b, 13, &h), MG_PROXY_INVALID); /* seen at once */
    n = v2(b, 0x22, 0x11, inet4, sizeof inet4, NULL, 0);
    assert_int_equal(parse(b, n, &h), MG_PROXY_INVALID);
    /* datagram families and unknown ones */
    static const unsigned char fams[] = {0x12, 0x22, 0x32, 0x13, 0x41, 0x01, 0x10};
    for (size_t i = 0; i < sizeof fams; i++) {
        n = v2(b, 0x21, fams[i], inet4, sizeof inet4, NULL, 0);
        assert_int_equal(parse(b, n, &h), MG_PROXY_INVALID);
        assert_int_equal(parse(b, 14, &h), MG_PROXY_INVALID);
    }
    /* a length too short for the addresses */
    n = v2(b, 0x21, 0x11, inet4, 8, NULL, 0);
    assert_int_equal(parse(b, n, &h), MG_PROXY_INVALID);
    n = v2(b, 0x21, 0x21, inet4, 12, NULL, 0);
    assert_int_equal(parse(b, n, &h), MG_PROXY_INVALID);
    /* TLVs that overrun, or a dangling byte or two */
    static const unsigned char over[] = {0x01, 0, 5, 'a'};
    n = v2(b, 0x21, 0x11, inet4, sizeof inet4, over, sizeof over);
    assert_int_equal(parse(b, n, &h), MG_PROXY_INVALID);
    static const unsigned char dangling[] = {0x04, 0, 0, 0x04, 0};
    n = v2(b, 0x21, 0x11, inet4, sizeof inet4, dangling, sizeof dangling);
    assert_int_equal(parse(b, n, &h), MG_PROXY_INVALID);
    static const unsigned char crc_len[] = {0x03, 0, 2, 0, 0};
    n = v2(b, 0x21, 0x11, inet4, sizeof inet4, crc_len, sizeof crc_len);
    assert_int_equal(parse(b, n, &h), MG_PROXY_INVALID);
    /* a corrupted signature byte */
    n = v2(b, 0x21, 0x11, inet4, sizeof inet4, NULL, 0);
    b[7] = 'q';
    assert_int_equal(parse(b, 8, &h), MG_PROXY_INVALID);
}

static void v2_too_long_refused_before_it_arrives(void **state)
{
    unsigned char b[16];
    memcpy(b, sig, 12);
    b[12] = 0x21;
    b[13] = 0x11;
    b[14] = 0xff;
    b[15] = 0xff;
    struct mg_proxy_header h;
    assert_int_equal(parse(b, 16, &h), MG_PROXY_INVALID);
    size_t len = MG_PROXY_V2_MAX - 16;
    b[14] = (unsigned char)(len >> 8);
    b[15] = (unsigned char)len;
    assert_int_equal(parse(b, 16, &h), MG_PROXY_MORE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(v1_tcp4_with_request_after),
        cmocka_unit_test(v1_tcp6),
        cmocka_unit_test(v1_unknown_keeps_own_address),
        cmocka_unit_test(v1_invalid),
        cmocka_unit_test(v1_garbage_refused_at_first_wrong_byte),
        cmocka_unit_test(v1_line_longer_than_107_refused),
        cmocka_unit_test(v2_tcp4),
        cmocka_unit_test(v2_tcp6_with_tlvs),
        cmocka_unit_test(v2_local_skips_everything),
        cmocka_unit_test(v2_unspec_and_unix_keep_own_address),
        cmocka_unit_test(v2_crc32c_checked),
        cmocka_unit_test(v2_invalid),
        cmocka_unit_test(v2_too_long_refused_before_it_arrives),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
