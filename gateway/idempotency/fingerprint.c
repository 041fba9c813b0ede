/*
 * Fingerprints and storage keys: SHA-256 through OpenSSL 3 EVP (the SHA256_*
 * functions are deprecated there). fingerprint.h documents the framing.
 *
 * Invariant: every variable-length field before the body is preceded by its
 * length as a u64be, so the byte stream fed to SHA-256 decodes back to exactly
 * one (method, target, scope..., body) tuple.
 *
 * Ownership: struct mg_idem_fp owns its EVP_MD_CTX from init to final/dispose.
 * The SHA-256 EVP_MD is fetched once per process (explicit fetch: OpenSSL 3's
 * implicit fetch by EVP_sha256() looks the algorithm up on every init) and is
 * never freed, like OpenSSL's own default provider.
 */
#include "idempotency/fingerprint.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>

#include <openssl/evp.h>

#include "core/log.h"

static const char fp_tag[] = "mg-idem-fp\x01";
static const char scope_tag[] = "mg-idem-scope\x01";

static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;
static EVP_MD *sha256_md;

static void fetch_sha256(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

static const EVP_MD *sha256(void)
{
    pthread_once(&sha256_once, fetch_sha256);
    return sha256_md;
}

static int put_u64(EVP_MD_CTX *md, uint64_t v)
{
    unsigned char b[8];

    for (int i = 7; i >= 0; i--) {
        b[i] = (unsigned char)(v & 0xff);
        v >>= 8;
    }
    return EVP_DigestUpdate(md, b, sizeof b) == 1 ? 0 : -EIO;
}

static int put_field(EVP_MD_CTX *md, struct mg_idem_slice s)
{
    if (put_u64(md, s.len) < 0)
        return -EIO;
    if (s.len > 0 && EVP_DigestUpdate(md, s.p, s.len) != 1)
        return -EIO;
    return 0;
}

static int put_scope(EVP_MD_CTX *md, const struct mg_idem_slice *scope, size_t nscope)
{
    if (put_u64(md, nscope) < 0)
        return -EIO;
    for (size_t i = 0; i < nscope; i++)
        if (put_field(md, scope[i]) < 0)
            return -EIO;
    return 0;
}

static EVP_MD_CTX *md_start(const char *tag, size_t taglen)
{
    const EVP_MD *alg = sha256();
    EVP_MD_CTX *md;

    if (alg == NULL)
        return NULL;
    md = EVP_MD_CTX_new();
    if (md == NULL)
        mg_fatal("out of memory (EVP_MD_CTX)");
    if (EVP_DigestInit_ex(md, alg, NULL) != 1 || EVP_DigestUpdate(md, tag, taglen) != 1) {
        EVP_MD_CTX_free(md);
        return NULL;
    }
    return md;
}

int mg_idem_fp_init(struct mg_idem_fp *fp, struct mg_idem_slice method, struct mg_idem_slice target,
                    const struct mg_idem_slice *scope, size_t nscope)
{
    fp->body_len = 0;
    fp->md = md_start(fp_tag, sizeof fp_tag - 1);
    if (fp->md == NULL)
        return -EIO;
    if (put_field(fp->md, method) < 0 || put_field(fp->md, target) < 0 ||
        put_scope(fp->md, scope, nscope) < 0) {
        mg_idem_fp_dispose(fp);
        return -EIO;
    }
    return 0;
}

int mg_idem_fp_update_body(struct mg_idem_fp *fp, const void *data, size_t len)
{
    MG_ASSERT(fp->md != NULL);
    if (len == 0)
        return 0;
    if (EVP_DigestUpdate(fp->md, data, len) != 1)
        return -EIO;
    fp->body_len += len;
    return 0;
}

int mg_idem_fp_final(struct mg_idem_fp *fp, uint8_t out[MG_IDEM_FP_LEN])
{
    unsigned int n = 0;
    int rc = 0;

    MG_ASSERT(fp->md != NULL);
    if (put_u64(fp->md, fp->body_len) < 0 || EVP_DigestFinal_ex(fp->md, out, &n) != 1 ||
        n != MG_IDEM_FP_LEN)
        rc = -EIO;
    mg_idem_fp_dispose(fp);
    return rc;
}

void mg_idem_fp_dispose(struct mg_idem_fp *fp)
{
    EVP_MD_CTX_free(fp->md); /* NULL is fine */
    fp->md = NULL;
}

int mg_idem_scope_hash(const struct mg_idem_slice *scope, size_t nscope,
                       uint8_t out[MG_IDEM_FP_LEN])
{
    EVP_MD_CTX *md = md_start(scope_tag, sizeof scope_tag - 1);
    unsigned int n = 0;
    int rc = 0;

    if (md == NULL)
        return -EIO;
    if (put_scope(md, scope, nscope) < 0 || EVP_DigestFinal_ex(md, out, &n) != 1 ||
        n != MG_IDEM_FP_LEN)
        rc = -EIO;
    EVP_MD_CTX_free(md);
    return rc;
}

/* Appends one route-name byte, percent-encoded when it could be ambiguous. */
static size_t put_route_byte(char *out, size_t at, unsigned char c)
{
    static const char hex[] = "0123456789ABCDEF";

    if (c >= 0x21 && c <= 0x7e && c != '%' && c != ':') {
        out[at] = (char)c;
        return 1;
    }
    out[at] = '%';
    out[at + 1] = hex[c >> 4];
    out[at + 2] = hex[c & 15];
    return 3;
}

int mg_idem_storage_key(char *out, size_t cap, const char *route, size_t route_len,
                        const struct mg_idem_slice *scope, size_t nscope, const char *key,
                        size_t key_len)
{
    static const char prefix[] = "mg:idem:";
    static const char hex[] = "0123456789abcdef";
    uint8_t h[MG_IDEM_FP_LEN];
    size_t at = sizeof prefix - 1;

    /* Worst case: every route byte escaped. Checked first, so the writes below
     * need no bounds checks. */
    if (cap < at + 3 * route_len + 1 + 2 * MG_IDEM_FP_LEN + 1 + key_len + 1)
        return -ENAMETOOLONG;
    if (mg_idem_scope_hash(scope, nscope, h) < 0)
        return -EIO;
    memcpy(out, prefix, at);
    for (size_t i = 0; i < route_len; i++)
        at += put_route_byte(out, at, (unsigned char)route[i]);
    out[at++] = ':';
    for (size_t i = 0; i < MG_IDEM_FP_LEN; i++) {
        out[at++] = hex[h[i] >> 4];
        out[at++] = hex[h[i] & 15];
    }
    out[at++] = ':';
    memcpy(out + at, key, key_len);
    at += key_len;
    out[at] = '\0';
    return (int)at;
}

const char *mg_idem_scope_header(const char *entry)
{
    static const char prefix[] = "header:";

    if (entry == NULL || strncmp(entry, prefix, sizeof prefix - 1) != 0)
        return NULL;
    return entry + sizeof prefix - 1;
}
