/*
 * Idempotency records: one blob in the format record.h lays out, plus a refcount.
 *
 * Invariant: the head fields always describe the bytes after them: the header
 * count and body length are rewritten on every add/append, so the blob is a
 * valid record at every step (mg_idem_record_blob() may be taken at any time)
 * and len <= max holds throughout (a record about to pass max becomes TOO_BIG).
 *
 * Ownership: the record owns its blob. Builders hold the first reference; stores
 * take their own. Sealed records are shared read-only between threads.
 */
#include "idempotency/record.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/log.h"
#include "idempotency/key.h"

#define OFF_STATE  4
#define OFF_OWNER  5
#define OFF_FP     37
#define OFF_STATUS 69
#define OFF_NHDR   71
#define OFF_BODY   75

static const char magic[4] = {'M', 'G', 'I', '1'};

struct mg_idem_record {
    atomic_uint refs;
    bool sealed;     /* immutable from now on */
    bool body_begun; /* a body byte was appended: no more headers */
    size_t max;      /* len never exceeds it */
    size_t len, cap; /* bytes used / allocated in blob */
    uint8_t *blob;
};

static void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint16_t get_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n);
    if (p == NULL)
        mg_fatal("out of memory (idempotency record)");
    return p;
}

static void write_head(uint8_t *b, char state, const char *owner, const uint8_t *fp,
                       uint16_t status)
{
    memcpy(b, magic, sizeof magic);
    b[OFF_STATE] = (uint8_t)state;
    if (owner != NULL)
        memcpy(b + OFF_OWNER, owner, MG_IDEM_OWNER_LEN);
    else
        memset(b + OFF_OWNER, '0', MG_IDEM_OWNER_LEN);
    memcpy(b + OFF_FP, fp, MG_IDEM_FP_LEN);
    put_u16(b + OFF_STATUS, status);
    put_u32(b + OFF_NHDR, 0);
    put_u32(b + OFF_BODY, 0);
}

static struct mg_idem_record *alloc_record(size_t cap, size_t max)
{
    struct mg_idem_record *r = calloc(1, sizeof *r);

    if (r == NULL)
        mg_fatal("out of memory (idempotency record)");
    atomic_init(&r->refs, 1);
    r->max = max;
    r->cap = cap;
    r->blob = xrealloc(NULL, cap);
    return r;
}

struct mg_idem_record *mg_idem_record_new(uint16_t status, const uint8_t fp[MG_IDEM_FP_LEN],
                                          size_t max)
{
    struct mg_idem_record *r;

    if (max < MG_IDEM_RECORD_HEAD)
        max = MG_IDEM_RECORD_HEAD;
    if (max > UINT32_MAX)
        max = UINT32_MAX; /* the body length field is a u32 */
    /* Start small: most responses are a few hundred bytes, and max may be 1m. */
    r = alloc_record(max < 1024 ? max : 1024, max);
    write_head(r->blob, MG_IDEM_REC_DONE, NULL, fp, status);
    r->len = MG_IDEM_RECORD_HEAD;
    return r;
}

/* Drops headers and body for good; the status and fingerprint stay. */
static void make_too_big(struct mg_idem_record *r)
{
    r->blob[OFF_STATE] = MG_IDEM_REC_TOO_BIG;
    put_u32(r->blob + OFF_NHDR, 0);
    put_u32(r->blob + OFF_BODY, 0);
    r->len = MG_IDEM_RECORD_HEAD;
    r->cap = MG_IDEM_RECORD_HEAD;
    r->blob = xrealloc(r->blob, r->cap);
}

/* Ensures room for n more bytes within max; turns the record TOO_BIG if not. */
static int reserve(struct mg_idem_record *r, size_t n)
{
    size_t need;

    if (r->blob[OFF_STATE] == MG_IDEM_REC_TOO_BIG)
        return -E2BIG;
    if (n > r->max - r->len) {
        make_too_big(r);
        return -E2BIG;
    }
    need = r->len + n;
    if (need > r->cap) {
        size_t cap = r->cap * 2 > need ? r->cap * 2 : need;

        r->cap = cap < r->max ? cap : r->max;
        r->blob = xrealloc(r->blob, r->cap);
    }
    return 0;
}

int mg_idem_record_add_header(struct mg_idem_record *r, const char *name, size_t name_len,
                              const char *value, size_t value_len)
{
    uint8_t *p;
    int rc;

    if (r->sealed || r->body_begun)
        return -EINVAL;
    /* Sums of three sizes each below max <= UINT32_MAX cannot overflow size_t. */
    if (name_len > r->max || value_len > r->max) {
        if (r->blob[OFF_STATE] != MG_IDEM_REC_TOO_BIG)
            make_too_big(r);
        return -E2BIG;
    }
    rc = reserve(r, 8 + name_len + value_len);
    if (rc < 0)
        return rc;
    p = r->blob + r->len;
    put_u32(p, (uint32_t)name_len);
    memcpy(p + 4, name, name_len);
    put_u32(p + 4 + name_len, (uint32_t)value_len);
    memcpy(p + 8 + name_len, value, value_len);
    r->len += 8 + name_len + value_len;
    put_u32(r->blob + OFF_NHDR, get_u32(r->blob + OFF_NHDR) + 1);
    return 0;
}

int mg_idem_record_append_body(struct mg_idem_record *r, const void *data, size_t len)
{
    int rc;

    if (r->sealed)
        return -EINVAL;
    r->body_begun = true;
    rc = reserve(r, len);
    if (rc < 0 || len == 0)
        return rc;
    memcpy(r->blob + r->len, data, len);
    r->len += len;
    put_u32(r->blob + OFF_BODY, get_u32(r->blob + OFF_BODY) + (uint32_t)len);
    return 0;
}

int mg_idem_record_drop_content(struct mg_idem_record *r)
{
    if (r->sealed)
        return -EINVAL;
    if (r->blob[OFF_STATE] != MG_IDEM_REC_TOO_BIG)
        make_too_big(r);
    return 0;
}

void mg_idem_record_seal(struct mg_idem_record *r)
{
    r->sealed = true;
}

/* Walks the header table of b[0..len); returns the offset where the body starts,
 * or 0 if a length points past the end. */
static size_t skip_headers(const uint8_t *b, size_t len, uint32_t n)
{
    size_t at = MG_IDEM_RECORD_HEAD;

    for (uint32_t i = 0; i < n; i++) {
        for (int part = 0; part < 2; part++) {
            uint32_t l;

            if (len - at < 4)
                return 0;
            l = get_u32(b + at);
            at += 4;
            if (len - at < l)
                return 0;
            at += l;
        }
    }
    return at;
}

static bool well_formed(const uint8_t *b, size_t len)
{
    uint8_t state;
    uint32_t nhdr, body;
    size_t at;

    if (len < MG_IDEM_RECORD_HEAD || len > UINT32_MAX || memcmp(b, magic, sizeof magic) != 0)
        return false;
    state = b[OFF_STATE];
    nhdr = get_u32(b + OFF_NHDR);
    body = get_u32(b + OFF_BODY);
    if (state == MG_IDEM_REC_IN_FLIGHT)
        return nhdr == 0 && body == 0 && len == MG_IDEM_RECORD_HEAD &&
               mg_idem_owner_valid((const char *)b + OFF_OWNER);
    if (state == MG_IDEM_REC_TOO_BIG)
        return nhdr == 0 && body == 0 && len == MG_IDEM_RECORD_HEAD;
    if (state != MG_IDEM_REC_DONE)
        return false;
    at = skip_headers(b, len, nhdr);
    return at != 0 && len - at == body;
}

struct mg_idem_record *mg_idem_record_decode(const void *blob, size_t len)
{
    struct mg_idem_record *r;

    if (blob == NULL || !well_formed(blob, len))
        return NULL;
    r = alloc_record(len, len);
    memcpy(r->blob, blob, len);
    r->len = len;
    r->sealed = true;
    r->body_begun = true;
    return r;
}

void mg_idem_record_inflight_blob(uint8_t out[MG_IDEM_RECORD_HEAD],
                                  const uint8_t fp[MG_IDEM_FP_LEN], const char *owner)
{
    write_head(out, MG_IDEM_REC_IN_FLIGHT, owner, fp, 0);
}

struct mg_idem_record *mg_idem_record_ref(struct mg_idem_record *r)
{
    atomic_fetch_add_explicit(&r->refs, 1, memory_order_relaxed);
    return r;
}

void mg_idem_record_unref(struct mg_idem_record *r)
{
    if (r == NULL)
        return;
    /* acq_rel: the thread that frees must see every other thread's last reads. */
    if (atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel) != 1)
        return;
    free(r->blob);
    free(r);
}

enum mg_idem_record_state mg_idem_record_state(const struct mg_idem_record *r)
{
    return (enum mg_idem_record_state)r->blob[OFF_STATE];
}

uint16_t mg_idem_record_status(const struct mg_idem_record *r)
{
    return get_u16(r->blob + OFF_STATUS);
}

const uint8_t *mg_idem_record_fingerprint(const struct mg_idem_record *r)
{
    return r->blob + OFF_FP;
}

const char *mg_idem_record_owner(const struct mg_idem_record *r)
{
    return (const char *)r->blob + OFF_OWNER;
}

size_t mg_idem_record_header_count(const struct mg_idem_record *r)
{
    return get_u32(r->blob + OFF_NHDR);
}

bool mg_idem_record_next_header(const struct mg_idem_record *r, size_t *cursor, const char **name,
                                size_t *name_len, const char **value, size_t *value_len)
{
    size_t at = *cursor ? *cursor : MG_IDEM_RECORD_HEAD;
    size_t body = get_u32(r->blob + OFF_BODY);

    /* The headers end where the body starts; the invariant keeps both in sync. */
    if (at >= r->len - body)
        return false;
    *name_len = get_u32(r->blob + at);
    *name = (const char *)r->blob + at + 4;
    at += 4 + *name_len;
    *value_len = get_u32(r->blob + at);
    *value = (const char *)r->blob + at + 4;
    *cursor = at + 4 + *value_len;
    return true;
}

const uint8_t *mg_idem_record_body(const struct mg_idem_record *r, size_t *len)
{
    *len = get_u32(r->blob + OFF_BODY);
    return r->blob + r->len - *len;
}

const uint8_t *mg_idem_record_blob(const struct mg_idem_record *r, size_t *len)
{
    *len = r->len;
    return r->blob;
}

bool mg_idem_record_keeps_header(const char *name, size_t len)
{
    static const char *const dropped[] = {
        "connection",   "keep-alive",          "proxy-connection", "te",
        "trailer",      "transfer-encoding",   "upgrade",          "content-length",
        "x-request-id", "idempotent-replayed",
    };

    for (size_t i = 0; i < sizeof dropped / sizeof dropped[0]; i++)
        if (strlen(dropped[i]) == len && strncasecmp(dropped[i], name, len) == 0)
            return false;
    return true;
}
