/*
 * Shared dictionaries (DESIGN.md section 10.3): process-wide key-value tables
 * every worker's plugins reach through gw.shared_dict(NAME). Values are
 * strings, numbers or booleans, with an optional TTL; a byte budget bounds
 * keys, values and per-entry overhead, and the least recently used entries go
 * (counted as evictions) when a write needs room.
 *
 * Threads: any. Each dictionary has its own mutex, held only for one
 * operation on the table (never across a callback, never while waiting).
 * The registry maps names to dictionaries: acquiring a name with the size it
 * has keeps its contents (so a reload that keeps `NAME: SIZE` keeps them);
 * another size makes a new, empty one for that name.
 *
 * Time: callers pass a monotonic now in ms (mg_shdict_now_ms() in production),
 * so TTLs are testable.
 */
#ifndef MG_SHARED_DICT_H
#define MG_SHARED_DICT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct mg_shdict;

enum mg_shdict_type {
    MG_SHD_NIL,
    MG_SHD_STR,
    MG_SHD_NUM,
    MG_SHD_BOOL,
    MG_SHD_BUCKET, /* mg_shdict_take's state (reads as absent) */
};

enum mg_shdict_rc {
    MG_SHD_OK = 0,
    MG_SHD_NOT_FOUND = 1,
    MG_SHD_NO_MEMORY = -1,  /* the entry alone is larger than the budget */
    MG_SHD_EXISTS = -2,     /* add: the key is there (and not expired) */
    MG_SHD_NOT_NUMBER = -3, /* incr on a value that is not a number */
};

/* A value in or out. Strings: `str`/`len` (out: copied into the caller's
 * buffer, `len` is the full length even when it did not fit). */
struct mg_shdict_val {
    enum mg_shdict_type type;
    double num; /* MG_SHD_NUM; MG_SHD_BOOL: 0 or 1 */
    const char *str;
    size_t len;
};

/* The dictionary `name` with budget `bytes` (a reference), created or kept. */
struct mg_shdict *mg_shdict_acquire(const char *name, uint64_t bytes);
void mg_shdict_release(struct mg_shdict *d);

uint64_t mg_shdict_now_ms(void);

/* get: MG_SHD_OK with *out (strings copied into buf, up to cap bytes; retry
 * with a larger buffer when out->len > cap), or MG_SHD_NOT_FOUND. */
int mg_shdict_get(struct mg_shdict *d, const char *key, size_t klen, uint64_t now_ms,
                  struct mg_shdict_val *out, char *buf, size_t cap);
/* set (val->type NIL deletes), add (only when absent). ttl_ms 0: no expiry. */
int mg_shdict_set(struct mg_shdict *d, const char *key, size_t klen,
                  const struct mg_shdict_val *val, uint64_t ttl_ms, uint64_t now_ms);
int mg_shdict_add(struct mg_shdict *d, const char *key, size_t klen,
                  const struct mg_shdict_val *val, uint64_t ttl_ms, uint64_t now_ms);
/* incr: adds `by`; an absent key starts at *init (then gets ttl_ms) or is
 * MG_SHD_NOT_FOUND when init is NULL. *out: the new value. */
int mg_shdict_incr(struct mg_shdict *d, const char *key, size_t klen, double by, const double *init,
                   uint64_t ttl_ms, uint64_t now_ms, double *out);
int mg_shdict_delete(struct mg_shdict *d, const char *key, size_t klen);
/* Remaining ms in *ttl_ms (0: no expiry), or MG_SHD_NOT_FOUND. */
int mg_shdict_ttl(struct mg_shdict *d, const char *key, size_t klen, uint64_t now_ms,
                  uint64_t *ttl_ms);

/* A token bucket taken atomically (dict:take, the rate_limit plugin's shared
 * policy): the bucket of `key` holds up to `burst` tokens and refills at
 * rate_per_ms; one token is taken when there is one. A new key starts full;
 * an idle bucket expires once it would be full again. MG_SHD_NOT_NUMBER when
 * the key holds another value; MG_SHD_NO_MEMORY when it cannot be stored. */
struct mg_shdict_take {
    bool allowed;
    double tokens;   /* left after this take */
    double retry_ms; /* until the next token (0 when one is left) */
    double full_ms;  /* until the bucket is full again */
};
int mg_shdict_take(struct mg_shdict *d, const char *key, size_t klen, double rate_per_ms,
                   double burst, uint64_t now_ms, struct mg_shdict_take *out);

struct mg_shdict_stats {
    uint64_t entries, bytes, budget, evictions;
};
struct mg_shdict_stats mg_shdict_stats(struct mg_shdict *d);

#endif
