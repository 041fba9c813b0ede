/*
 * gw.crypto, gw.base64 and the signature checks of gw.jwt, over libcrypto
 * (DESIGN.md 10.4). Lua C functions in a table (package.loaded
 * ["moongate.native"].crypto); lua/moongate/gw.lua checks arguments and wraps
 * them. They run on the VM's thread inside the runner's protected calls; bad
 * input answers nil, message (only out-of-memory raises).
 *
 * Keys: a parsed public key is a full userdata holding an EVP_PKEY *, freed
 * by its __gc; gw.jwt caches them per key string, so a PEM is parsed once per
 * VM, not per request.
 */
/* The one-shot SHA-2 functions (deprecated, not removed, in OpenSSL 3) let an
 * HMAC key keep its padded inner and outer states as plain structs: a verify
 * then costs the message's blocks plus one, with no EVP fetch or allocation
 * (OpenSSL 3's HMAC() cost ~25k instructions per JWT, most of it set-up). */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <lauxlib.h>
#include <lua.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "lua/ctx_ext.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define B64_SIMD 1 /* mg_lua_b64url_decode's SSSE3 loop, chosen at run time */
#endif

#define PKEY_MT "moongate.pkey"
#define HKEY_MT "moongate.hmac_key"

/* An HMAC secret with its SHA-256/384/512 states after the ipad and opad
 * blocks (RFC 2104), made once per key by hmac_key(). */
struct hkey {
    SHA256_CTX i256, o256;
    SHA512_CTX i384, o384, i512, o512;
};

static const EVP_MD *md_of(const char *name)
{
    if (strcmp(name, "sha256") == 0)
        return EVP_sha256();
    if (strcmp(name, "sha384") == 0)
        return EVP_sha384();
    if (strcmp(name, "sha512") == 0)
        return EVP_sha512();
    if (strcmp(name, "sha1") == 0)
        return EVP_sha1();
    return NULL;
}

static int fail(lua_State *L, const char *msg)
{
    lua_pushnil(L);
    lua_pushstring(L, msg);
    return 2;
}

/* The newest OpenSSL reason, for messages; clears the queue. */
static const char *ssl_reason(void)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    ERR_clear_error();
    return r ? r : "invalid key";
}

/* digest(alg, data) -> raw bytes */
static int l_digest(lua_State *L)
{
    const EVP_MD *md = md_of(luaL_checkstring(L, 1));
    size_t n;
    const char *d = luaL_checklstring(L, 2, &n);
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int olen = 0;
    if (!md)
        return fail(L, "unknown digest (sha1, sha256, sha384 or sha512)");
    if (!EVP_Digest(d, n, out, &olen, md, NULL))
        return fail(L, ssl_reason());
    lua_pushlstring(L, (const char *)out, olen);
    return 1;
}

/* hmac(alg, key, data) -> raw bytes */
static int l_hmac(lua_State *L)
{
    const EVP_MD *md = md_of(luaL_checkstring(L, 1));
    size_t klen, n;
    const char *k = luaL_checklstring(L, 2, &klen);
    const char *d = luaL_checklstring(L, 3, &n);
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int olen = 0;
    if (!md)
        return fail(L, "unknown digest (sha1, sha256, sha384 or sha512)");
    if (!HMAC(md, k, (int)klen, (const unsigned char *)d, n, out, &olen))
        return fail(L, ssl_reason());
    lua_pushlstring(L, (const char *)out, olen);
    return 1;
}

static int l_random_bytes(lua_State *L)
{
    lua_Integer n = luaL_checkinteger(L, 1);
    unsigned char buf[1024];
    if (n < 0 || n > (lua_Integer)sizeof(buf))
        return fail(L, "n must be 0..1024");
    if (n && RAND_bytes(buf, (int)n) != 1)
        return fail(L, ssl_reason());
    lua_pushlstring(L, (const char *)buf, (size_t)n);
    return 1;
}

/* Constant time in the length of the inputs (different lengths: false at once,
 * the length is not the secret). */
static int l_equal(lua_State *L)
{
    size_t an, bn;
    const char *a = luaL_checklstring(L, 1, &an);
    const char *b = luaL_checklstring(L, 2, &bn);
    lua_pushboolean(L, an == bn && CRYPTO_memcmp(a, b, an) == 0);
    return 1;
}

/* ------------------------------------------------------------------ base64 */

static const char b64_std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char b64_url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* b64encode(s, url): url = the URL alphabet without padding (RFC 4648 5). */
static int l_b64encode(lua_State *L)
{
    size_t n;
    const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &n);
    bool url = lua_toboolean(L, 2);
    const char *a = url ? b64_url : b64_std;
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
        char q[4] = {a[v >> 18], a[(v >> 12) & 63], a[(v >> 6) & 63], a[v & 63]};
        luaL_addlstring(&b, q, 4);
    }
    if (n - i) {
        uint32_t v = (uint32_t)s[i] << 16 | (n - i == 2 ? (uint32_t)s[i + 1] << 8 : 0);
        char q[4] = {a[v >> 18], a[(v >> 12) & 63], n - i == 2 ? a[(v >> 6) & 63] : '=', '='};
        luaL_addlstring(&b, q, url ? (n - i == 2 ? 3 : 2) : 4);
    }
    luaL_pushresult(&b);
    return 1;
}

/* Decoding tables, built once per process (255: not in the alphabet). */
static unsigned char b64_rev[2][256];
static pthread_once_t b64_once = PTHREAD_ONCE_INIT;

/* The URL alphabet's values already shifted to their place in a quad's 24
 * bits (bit 31: not in the alphabet): a quad is four loads and three ORs
 * (JWT segments are most of a token's decoding). */
static uint32_t b64url_q[4][256];

#ifdef B64_SIMD
static bool b64_ssse3; /* set with the tables, read after their pthread_once */
#endif

static void b64_tables(void)
{
#ifdef B64_SIMD
    __builtin_cpu_init();
    b64_ssse3 = __builtin_cpu_supports("ssse3");
#endif
    memset(b64_rev, 255, sizeof(b64_rev));
    for (int i = 0; i < 64; i++) {
        b64_rev[0][(unsigned char)b64_std[i]] = (unsigned char)i;
        b64_rev[1][(unsigned char)b64_url[i]] = (unsigned char)i;
    }
    for (int c = 0; c < 256; c++)
        for (int k = 0; k < 4; k++)
            b64url_q[k][c] =
                b64_rev[1][c] == 255 ? 0x80000000u : (uint32_t)b64_rev[1][c] << (18 - 6 * k);
}

/* Decodes n characters (no padding) into out; returns the byte count or -1.
 * Unused trailing bits must be zero (one encoding per byte string). */
static long b64_decode(const unsigned char *s, size_t n, bool url, unsigned char *out)
{
    const unsigned char *t = b64_rev[url];
    size_t o = 0, i = 0;
    for (; i + 4 <= n; i += 4) {
        unsigned a = t[s[i]], b = t[s[i + 1]], c = t[s[i + 2]], d = t[s[i + 3]];
        if ((a | b | c | d) & 0x80)
            return -1;
        uint32_t v = a << 18 | b << 12 | c << 6 | d;
        out[o++] = (unsigned char)(v >> 16);
        out[o++] = (unsigned char)(v >> 8);
        out[o++] = (unsigned char)v;
    }
    size_t r = n - i;
    if (r == 1)
        return -1;
    if (r) {
        unsigned a = t[s[i]], b = t[s[i + 1]], c = r == 3 ? t[s[i + 2]] : 0;
        if ((a | b | c) & 0x80)
            return -1;
        uint32_t v = a << 18 | b << 12 | c << 6;
        if (r == 2 ? (v & 0xffff) : (v & 0xff))
            return -1;
        out[o++] = (unsigned char)(v >> 16);
        if (r == 3)
            out[o++] = (unsigned char)(v >> 8);
    }
    return (long)o;
}

#ifdef B64_SIMD
/* 16 URL-alphabet characters to 12 bytes with SSSE3 (every x86-64 CPU since
 * 2006; checked at run time), after Mula and Lemire's base64 decoder: a
 * character is valid when the bits its low nibble (lo_bad) and its high
 * nibble (hi_class) select have nothing in common; its value is the
 * character plus an offset chosen by the high nibble ('_' shares 0x5_ with
 * P-Z and is fixed up); pmaddubsw and pmaddwd join the 6-bit values and
 * pshufb puts the bytes in order. A chunk with any other character is left
 * to the scalar loop, which rejects it. A JWT's payload and signature are
 * most of a new token's decoding. */
__attribute__((target("ssse3"))) static size_t b64url_simd(const unsigned char *s, size_t n,
                                                           unsigned char *out, size_t *done)
{
    /* classes by high nibble: 1 '-' (0x2d), 2 digits, 4 A-O and a-o rows
     * (0x4_, 0x6_: low 1..15), 8 P-Z and '_' (low 0..10, 15), 16 p-z (low
     * 0..10), 32 no valid character */
    const __m128i hi_class =
        _mm_setr_epi8(32, 32, 1, 2, 4, 8, 4, 16, 32, 32, 32, 32, 32, 32, 32, 32);
    /* per low nibble, the classes in which it is not a valid character */
    const __m128i lo_bad = _mm_setr_epi8(0x25, 0x21, 0x21, 0x21, 0x21, 0x21, 0x21, 0x21, 0x21, 0x21,
                                         0x23, 0x3b, 0x3b, 0x3a, 0x3b, 0x33);
    const __m128i offset = _mm_setr_epi8(0, 0, 62 - '-', 52 - '0', -'A', -'A', 26 - 'a', 26 - 'a',
                                         0, 0, 0, 0, 0, 0, 0, 0);
    const __m128i nib = _mm_set1_epi8(0x0f), under = _mm_set1_epi8('_');
    const __m128i under_fix = _mm_set1_epi8(63 - '_' + 'A'); /* undoes -'A', adds '_'s own */
    const __m128i shuf = _mm_setr_epi8(2, 1, 0, 6, 5, 4, 10, 9, 8, 14, 13, 12, -1, -1, -1, -1);
    size_t i = 0, o = 0;
    for (; i + 16 <= n; i += 16, o += 12) {
        __m128i c = _mm_loadu_si128((const __m128i *)(s + i));
        __m128i hi = _mm_and_si128(_mm_srli_epi32(c, 4), nib), lo = _mm_and_si128(c, nib);
        __m128i bad = _mm_and_si128(_mm_shuffle_epi8(lo_bad, lo), _mm_shuffle_epi8(hi_class, hi));
        if (_mm_movemask_epi8(_mm_cmpeq_epi8(bad, _mm_setzero_si128())) != 0xffff)
            break;
        __m128i off = _mm_add_epi8(_mm_shuffle_epi8(offset, hi),
                                   _mm_and_si128(_mm_cmpeq_epi8(c, under), under_fix));
        __m128i v = _mm_add_epi8(c, off);
        v = _mm_maddubs_epi16(v, _mm_set1_epi32(0x01400140)); /* a << 6 | b per pair */
        v = _mm_madd_epi16(v, _mm_set1_epi32(0x00011000));    /* 24 bits per quad */
        v = _mm_shuffle_epi8(v, shuf);
        _mm_storel_epi64((__m128i *)(out + o), v);
        uint32_t last = (uint32_t)_mm_cvtsi128_si32(_mm_srli_si128(v, 8));
        memcpy(out + o + 8, &last, 4);
    }
    *done = i;
    return o;
}
#endif

long mg_lua_b64url_decode(const char *text, size_t n, unsigned char *out)
{
    const unsigned char *s = (const unsigned char *)text;
    size_t pad = 0;
    while (n && s[n - 1] == '=' && pad < 2) {
        n--;
        pad++;
    }
    if (n % 4 == 1 || (pad && (n + pad) % 4 != 0))
        return -1;
    pthread_once(&b64_once, b64_tables);
    size_t i = 0, o = 0;
#ifdef B64_SIMD
    if (n >= 16 && b64_ssse3)
        o = b64url_simd(s, n, out, &i);
#endif
    for (; i + 4 <= n; i += 4, o += 3) {
        uint32_t v = b64url_q[0][s[i]] | b64url_q[1][s[i + 1]] | b64url_q[2][s[i + 2]] |
                     b64url_q[3][s[i + 3]];
        if (v & 0x80000000u)
            return -1;
        out[o] = (unsigned char)(v >> 16);
        out[o + 1] = (unsigned char)(v >> 8);
        out[o + 2] = (unsigned char)v;
    }
    long tail = b64_decode(s + i, n - i, true, out + o); /* the last 0..3 characters */
    return tail < 0 ? -1 : (long)o + tail;
}

/* b64decode(s, url) -> bytes | nil, err. Strict: the alphabet asked for, no
 * whitespace; padding required for the standard alphabet, optional for url;
 * unused trailing bits must be zero. */
static int l_b64decode(lua_State *L)
{
    size_t n;
    const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &n);
    bool url = lua_toboolean(L, 2);
    /* Optional range [i, j] (1-based, like string.sub with positive bounds):
     * JWT segments decode in place, without a substring per segment. */
    if (!lua_isnoneornil(L, 3)) {
        lua_Integer i = luaL_checkinteger(L, 3), j = luaL_checkinteger(L, 4);
        if (i < 1)
            i = 1;
        if (j > (lua_Integer)n)
            j = (lua_Integer)n;
        s += i - 1;
        n = j >= i ? (size_t)(j - i + 1) : 0;
    }
    size_t pad = 0;
    while (n && s[n - 1] == '=' && pad < 2) {
        n--;
        pad++;
    }
    if ((!url && (n + pad) % 4 != 0) || n % 4 == 1 || (pad && (n + pad) % 4 != 0))
        return fail(L, "invalid base64 length");
    unsigned char small[1024];
    size_t cap = n / 4 * 3 + 3;
    unsigned char *out = cap <= sizeof(small) ? small : lua_newuserdata(L, cap);
    long got = b64_decode(s, n, url, out);
    if (got < 0)
        return fail(L, "invalid base64 character or trailing bits");
    lua_pushlstring(L, (const char *)out, (size_t)got);
    return 1;
}

/* -------------------------------------------------------------------- keys */

static EVP_PKEY **pkey_new(lua_State *L)
{
    EVP_PKEY **u = lua_newuserdata(L, sizeof(*u));
    *u = NULL;
    luaL_getmetatable(L, PKEY_MT);
    lua_setmetatable(L, -2);
    return u;
}

static int pkey_gc(lua_State *L)
{
    EVP_PKEY **u = luaL_checkudata(L, 1, PKEY_MT);
    EVP_PKEY_free(*u);
    *u = NULL;
    return 0;
}

/* pkey_pem(pem) -> key, type ("RSA", "EC", "ED25519") | nil, err. A public
 * key or a certificate's key. */
static int l_pkey_pem(lua_State *L)
{
    size_t n;
    const char *pem = luaL_checklstring(L, 1, &n);
    EVP_PKEY **u = pkey_new(L);
    BIO *bio = BIO_new_mem_buf(pem, (int)n);
    if (!bio)
        return fail(L, "out of memory");
    *u = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
    if (!*u) {
        ERR_clear_error();
        (void)BIO_reset(bio);
        X509 *cert = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        if (cert) {
            *u = X509_get_pubkey(cert);
            X509_free(cert);
        }
    }
    BIO_free(bio);
    if (!*u)
        return fail(L, ssl_reason());
    int id = EVP_PKEY_get_base_id(*u);
    lua_pushstring(L, id == EVP_PKEY_RSA       ? "RSA"
                      : id == EVP_PKEY_EC      ? "EC"
                      : id == EVP_PKEY_ED25519 ? "ED25519"
                                               : "?");
    return 2;
}

/* From OSSL_PARAMs built by `fill`; 0 or -1 with the OpenSSL queue set. */
static EVP_PKEY *from_params(const char *type, OSSL_PARAM *params)
{
    EVP_PKEY *k = NULL;
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    if (c && EVP_PKEY_fromdata_init(c) == 1)
        EVP_PKEY_fromdata(c, &k, EVP_PKEY_PUBLIC_KEY, params);
    EVP_PKEY_CTX_free(c);
    return k;
}

/* pkey_rsa(n, e): big-endian bytes (a JWK's n and e, decoded). */
static int l_pkey_rsa(lua_State *L)
{
    size_t nl, el;
    const unsigned char *n = (const unsigned char *)luaL_checklstring(L, 1, &nl);
    const unsigned char *e = (const unsigned char *)luaL_checklstring(L, 2, &el);
    EVP_PKEY **u = pkey_new(L);
    BIGNUM *bn = BN_bin2bn(n, (int)nl, NULL), *be = BN_bin2bn(e, (int)el, NULL);
    OSSL_PARAM_BLD *b = OSSL_PARAM_BLD_new();
    OSSL_PARAM *p = NULL;
    if (bn && be && b && OSSL_PARAM_BLD_push_BN(b, OSSL_PKEY_PARAM_RSA_N, bn) &&
        OSSL_PARAM_BLD_push_BN(b, OSSL_PKEY_PARAM_RSA_E, be))
        p = OSSL_PARAM_BLD_to_param(b);
    if (p)
        *u = from_params("RSA", p);
    OSSL_PARAM_free(p);
    OSSL_PARAM_BLD_free(b);
    BN_free(bn);
    BN_free(be);
    return *u ? 1 : fail(L, ssl_reason());
}

/* pkey_ec(crv, x, y): crv "P-256" or "P-384"; x, y big-endian coordinates. */
static int l_pkey_ec(lua_State *L)
{
    const char *crv = luaL_checkstring(L, 1);
    size_t xl, yl;
    const char *x = luaL_checklstring(L, 2, &xl);
    const char *y = luaL_checklstring(L, 3, &yl);
    const char *group = strcmp(crv, "P-256") == 0   ? "prime256v1"
                        : strcmp(crv, "P-384") == 0 ? "secp384r1"
                                                    : NULL;
    size_t clen = strcmp(crv, "P-256") == 0 ? 32 : 48;
    if (!group)
        return fail(L, "unsupported EC curve (P-256 or P-384)");
    if (xl != clen || yl != clen)
        return fail(L, "EC coordinates of the wrong length");
    unsigned char pt[1 + 2 * 48];
    pt[0] = 4; /* uncompressed point */
    memcpy(pt + 1, x, xl);
    memcpy(pt + 1 + xl, y, yl);
    EVP_PKEY **u = pkey_new(L);
    OSSL_PARAM p[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)group, 0),
        OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, pt, 1 + 2 * clen),
        OSSL_PARAM_construct_end(),
    };
    *u = from_params("EC", p);
    return *u ? 1 : fail(L, ssl_reason());
}

/* pkey_ed25519(x): the 32 raw public key bytes. */
static int l_pkey_ed25519(lua_State *L)
{
    size_t xl;
    const unsigned char *x = (const unsigned char *)luaL_checklstring(L, 1, &xl);
    EVP_PKEY **u = pkey_new(L);
    *u = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, x, xl);
    return *u ? 1 : fail(L, ssl_reason());
}

/* ---------------------------------------------------------------- HMAC keys */

static void pads(const unsigned char *key, size_t klen, size_t block, unsigned char *ipad,
                 unsigned char *opad)
{
    for (size_t i = 0; i < block; i++) {
        unsigned char k = i < klen ? key[i] : 0;
        ipad[i] = k ^ 0x36;
        opad[i] = k ^ 0x5c;
    }
}

/* hmac_key(secret) -> key (for verify with HS256/384/512). */
static int l_hmac_key(lua_State *L)
{
    size_t klen;
    const unsigned char *key = (const unsigned char *)luaL_checklstring(L, 1, &klen);
    struct hkey *h = lua_newuserdata(L, sizeof(*h));
    luaL_getmetatable(L, HKEY_MT);
    lua_setmetatable(L, -2);
    unsigned char k[SHA512_DIGEST_LENGTH], ipad[128], opad[128];
    /* SHA-256: 64-byte blocks; a longer key is hashed first (RFC 2104). */
    const unsigned char *kk = key;
    size_t kl = klen;
    if (klen > 64) {
        SHA256(key, klen, k);
        kk = k;
        kl = SHA256_DIGEST_LENGTH;
    }
    pads(kk, kl, 64, ipad, opad);
    SHA256_Init(&h->i256);
    SHA256_Update(&h->i256, ipad, 64);
    SHA256_Init(&h->o256);
    SHA256_Update(&h->o256, opad, 64);
    /* SHA-384 and SHA-512: 128-byte blocks. */
    for (int v = 0; v < 2; v++) {
        SHA512_CTX *in = v ? &h->i512 : &h->i384, *out = v ? &h->o512 : &h->o384;
        kk = key;
        kl = klen;
        if (klen > 128) {
            if (v)
                SHA512(key, klen, k);
            else
                SHA384(key, klen, k);
            kk = k;
            kl = v ? SHA512_DIGEST_LENGTH : SHA384_DIGEST_LENGTH;
        }
        pads(kk, kl, 128, ipad, opad);
        if (v) {
            SHA512_Init(in);
            SHA512_Init(out);
        } else {
            SHA384_Init(in);
            SHA384_Init(out);
        }
        SHA512_Update(in, ipad, 128);
        SHA512_Update(out, opad, 128);
    }
    OPENSSL_cleanse(k, sizeof(k));
    OPENSSL_cleanse(ipad, sizeof(ipad));
    OPENSSL_cleanse(opad, sizeof(opad));
    return 1;
}

static int hkey_gc(lua_State *L)
{
    OPENSSL_cleanse(lua_touserdata(L, 1), sizeof(struct hkey));
    return 0;
}

static void put_be32(unsigned char *p, uint32_t v)
{
    v = __builtin_bswap32(v); /* x86: one instruction, a store */
    memcpy(p, &v, 4);
}

/* HMAC-SHA256 from the prepared states (RFC 2104), with the padding built
 * here: the message's whole blocks go to SHA256_Update in one call (OpenSSL
 * compresses several blocks per call faster: its AVX2 code does two at
 * once), then the last one or two blocks, then the outer block; no
 * buffering through the context and no SHA256_Final (its padding, byte
 * output and clean-up cost ~500 instructions per JWT around the four
 * compressions). Only the chaining value of the contexts is used. Nothing
 * secret is left on the stack: the copied key states are overwritten by the
 * first compression, and what remains is the inner digest and the MAC, as
 * after HMAC(). */
static void hmac256(const struct hkey *h, const unsigned char *d, size_t n, unsigned char *mac)
{
    SHA256_CTX c;
    unsigned char blk[128];
    c = h->i256;
    size_t whole = n & ~(size_t)63, r = n - whole;
    if (whole)
        SHA256_Update(&c, d, whole);
    size_t last = r < 56 ? 64 : 128; /* room for the 0x80 byte and the length */
    memcpy(blk, d + whole, r);
    blk[r] = 0x80;
    memset(blk + r + 1, 0, last - r - 1 - 8);
    uint64_t bits = ((uint64_t)n + 64) * 8; /* the ipad block counts */
    put_be32(blk + last - 8, (uint32_t)(bits >> 32));
    put_be32(blk + last - 4, (uint32_t)bits);
    SHA256_Update(&c, blk, last);
    for (int i = 0; i < 8; i++)
        put_be32(blk + 4 * i, c.h[i]);
    c = h->o256;
    blk[32] = 0x80;
    memset(blk + 33, 0, 64 - 33 - 4);
    put_be32(blk + 60, (64 + 32) * 8);
    SHA256_Update(&c, blk, 64);
    for (int i = 0; i < 8; i++)
        put_be32(mac + 4 * i, c.h[i]);
}

/* HMAC with a prepared key; bits 256, 384 or 512. Returns the MAC length. */
static unsigned hkey_mac(const struct hkey *h, int bits, const unsigned char *d, size_t n,
                         unsigned char *mac)
{
    unsigned char inner[SHA512_DIGEST_LENGTH];
    if (bits == 256) {
        hmac256(h, d, n, mac);
        return SHA256_DIGEST_LENGTH;
    }
    SHA512_CTX c = bits == 384 ? h->i384 : h->i512;
    unsigned len = bits == 384 ? SHA384_DIGEST_LENGTH : SHA512_DIGEST_LENGTH;
    SHA512_Update(&c, d, n);
    if (bits == 384)
        SHA384_Final(inner, &c);
    else
        SHA512_Final(inner, &c);
    c = bits == 384 ? h->o384 : h->o512;
    SHA512_Update(&c, inner, len);
    if (bits == 384)
        SHA384_Final(mac, &c);
    else
        SHA512_Final(mac, &c);
    return len;
}

/* ------------------------------------------------------------------ verify */

struct jws_alg {
    const char *name;
    int kind; /* 'H' HMAC, 'R' RSA PKCS#1 v1.5, 'E' ECDSA, 'D' EdDSA */
    const char *md;
    int key_id;
    size_t ec_len; /* ECDSA: bytes of r and of s */
};

static const struct jws_alg algs[] = {
    {"HS256", 'H', "sha256", 0, 0},
    {"HS384", 'H', "sha384", 0, 0},
    {"HS512", 'H', "sha512", 0, 0},
    {"RS256", 'R', "sha256", EVP_PKEY_RSA, 0},
    {"RS384", 'R', "sha384", EVP_PKEY_RSA, 0},
    {"RS512", 'R', "sha512", EVP_PKEY_RSA, 0},
    {"ES256", 'E', "sha256", EVP_PKEY_EC, 32},
    {"ES384", 'E', "sha384", EVP_PKEY_EC, 48},
    {"EdDSA", 'D', NULL, EVP_PKEY_ED25519, 0},
};

/* JOSE's r || s (RFC 7518 3.4) as the DER ECDSA-Sig-Value OpenSSL checks.
 * Returns the DER length (0 on failure); *der is OPENSSL_malloc'ed. */
static int ecdsa_der(const unsigned char *sig, size_t half, unsigned char **der)
{
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig, (int)half, NULL), *s = BN_bin2bn(sig + half, (int)half, NULL);
    int n = 0;
    if (es && r && s && ECDSA_SIG_set0(es, r, s)) {
        r = s = NULL; /* owned by es now */
        n = i2d_ECDSA_SIG(es, der);
    }
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(es);
    return n > 0 ? n : 0;
}

static bool verify_pkey(const struct jws_alg *a, EVP_PKEY *k, const unsigned char *data, size_t n,
                        const unsigned char *sig, size_t slen)
{
    unsigned char *der = NULL;
    if (a->kind == 'E') {
        if (slen != 2 * a->ec_len || EVP_PKEY_get_bits(k) != (int)a->ec_len * 8)
            return false; /* also refuses a P-384 key for ES256 */
        int dl = ecdsa_der(sig, a->ec_len, &der);
        if (!dl)
            return false;
        sig = der;
        slen = (size_t)dl;
    }
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    bool ok = c && EVP_DigestVerifyInit(c, NULL, a->md ? md_of(a->md) : NULL, NULL, k) == 1 &&
              EVP_DigestVerify(c, sig, slen, data, n) == 1;
    EVP_MD_CTX_free(c);
    OPENSSL_free(der);
    ERR_clear_error();
    return ok;
}

static int refuse(lua_State *L, const char *why)
{
    lua_pushboolean(L, 0);
    lua_pushstring(L, why);
    return 2;
}

/* The userdata at index i if its metatable is `mt`, else NULL
 * (luaL_testudata is Lua 5.2). */
static void *udata(lua_State *L, int i, const char *mt)
{
    void *u = lua_touserdata(L, i);
    if (!u || !lua_getmetatable(L, i))
        return NULL;
    luaL_getmetatable(L, mt);
    bool same = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return same ? u : NULL;
}

const void *mg_lua_hkey_at(lua_State *L, int i)
{
    return udata(L, i, HKEY_MT);
}

unsigned mg_lua_hkey_mac(const void *hk, int bits, const unsigned char *d, size_t n,
                         unsigned char *mac)
{
    return hkey_mac(hk, bits, d, n, mac);
}

static EVP_PKEY *to_pkey(lua_State *L, int i)
{
    EVP_PKEY **u = udata(L, i, PKEY_MT);
    return u ? *u : NULL;
}

/* verify(alg, key, data, sig) -> true | false, reason. key: the secret (a
 * string, or faster a hmac_key()) for HS*, a key from pkey_* for the others (a mismatch is refused:
 * no alg confusion between an HMAC secret and a public key). */
static int l_verify(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    size_t n, slen;
    const unsigned char *data = (const unsigned char *)luaL_checklstring(L, 3, &n);
    const unsigned char *sig = (const unsigned char *)luaL_checklstring(L, 4, &slen);
    /* Optional range [i, j] of data (1-based): the JWS signing input is a
     * part of the header value the token came in (no substring per request). */
    if (!lua_isnoneornil(L, 5)) {
        lua_Integer i = luaL_checkinteger(L, 5), j = luaL_checkinteger(L, 6);
        if (i < 1 || j < i - 1 || (size_t)j > n)
            return refuse(L, "signed range out of bounds");
        data += i - 1;
        n = (size_t)(j - i + 1);
    }
    const struct jws_alg *a = NULL;
    for (size_t i = 0; i < sizeof(algs) / sizeof(algs[0]); i++)
        if (strcmp(algs[i].name, name) == 0)
            a = &algs[i];
    if (!a)
        return refuse(L, "unsupported alg");
    if (a->kind == 'H') {
        size_t klen;
        const char *key = lua_type(L, 2) == LUA_TSTRING ? lua_tolstring(L, 2, &klen) : NULL;
        const struct hkey *hk = udata(L, 2, HKEY_MT);
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned int mlen = 0;
        if (hk)
            mlen = hkey_mac(hk, atoi(a->md + 3), data, n, mac);
        else if (!key)
            return refuse(L, "an HMAC alg needs a secret key");
        else if (!HMAC(md_of(a->md), key, (int)klen, data, n, mac, &mlen))
            return refuse(L, ssl_reason());
        bool ok = mlen == slen && CRYPTO_memcmp(mac, sig, mlen) == 0;
        lua_pushboolean(L, ok);
        lua_pushstring(L, ok ? "" : "signature mismatch");
        return 2;
    }
    EVP_PKEY *k = to_pkey(L, 2);
    if (!k)
        return refuse(L, "a public key is needed for this alg");
    if (EVP_PKEY_get_base_id(k) != a->key_id)
        return refuse(L, "the key's type does not match the alg");
    bool ok = verify_pkey(a, k, data, n, sig, slen);
    lua_pushboolean(L, ok);
    lua_pushstring(L, ok ? "" : "signature mismatch");
    return 2;
}

void mg_lua_crypto_push(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"digest", l_digest},
        {"hmac", l_hmac},
        {"random_bytes", l_random_bytes},
        {"equal", l_equal},
        {"b64encode", l_b64encode},
        {"b64decode", l_b64decode},
        {"pkey_pem", l_pkey_pem},
        {"pkey_rsa", l_pkey_rsa},
        {"pkey_ec", l_pkey_ec},
        {"pkey_ed25519", l_pkey_ed25519},
        {"verify", l_verify},
        {"hmac_key", l_hmac_key},
        {NULL, NULL},
    };
    pthread_once(&b64_once, b64_tables);
    if (luaL_newmetatable(L, PKEY_MT)) {
        lua_pushcfunction(L, pkey_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushboolean(L, 0);
        lua_setfield(L, -2, "__metatable");
    }
    lua_pop(L, 1);
    if (luaL_newmetatable(L, HKEY_MT)) {
        lua_pushcfunction(L, hkey_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushboolean(L, 0);
        lua_setfield(L, -2, "__metatable");
    }
    lua_pop(L, 1);
    lua_newtable(L);
    luaL_register(L, NULL, fns);
}
