/*
 * YAML -> immutable, refcounted configuration snapshot (DESIGN section 3).
 *
 * This file is the engine: it owns the snapshot's memory, the libyaml document,
 * the error line "FILE:LINE:COL: key.path: message" and the generic readers that
 * walk the field tables of fields.c (convention 9 of STYLE.md).
 *
 * Ownership: every byte a snapshot points to is one block of a private list
 * (cfg->mem), the router (cfg->router) or a TLS context (listen[].tls->ctx,
 * upstreams[].tls.ctx); mg_config_unref dropping the last reference frees them
 * all, and a failed load frees them before returning. Nothing in a snapshot
 * points into the libyaml document, which dies with the load.
 * Invariant: a snapshot is never modified after mg_config_load* returns it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "config/config.h"
#include "config/parse.h"
#include "http/method.h"
#include "router.h"
#include "tls/context.h"

#define MAX_FILE_SIZE (16u << 20) /* a config file larger than this is a mistake */
#define MAX_VALUES    100000      /* generic values per load: bounds alias bombs */
#define MAX_DEPTH     64          /* nesting of generic values (self-aliases) */

struct mg_conf_blk {
    struct mg_conf_blk *next;
    max_align_t data[]; /* the allocation, aligned for any type */
};

static atomic_uint_fast64_t versions; /* process-wide, so reloads compare */

static void oom(void)
{
    fputs("moongate: out of memory while loading the configuration\n", stderr);
    abort(); /* STYLE convention 7: small allocations abort on OOM */
}

void *mg_conf_alloc(struct mg_conf_ld *ld, size_t size)
{
    struct mg_conf_blk *b = calloc(1, sizeof(*b) + size);

    if (b == NULL)
        oom();
    b->next = ld->cfg->mem;
    ld->cfg->mem = b;
    return b->data;
}

char *mg_conf_strdup(struct mg_conf_ld *ld, const char *s)
{
    size_t n = strlen(s) + 1;

    return memcpy(mg_conf_alloc(ld, n), s, n);
}

/* The TLS contexts (config/tls.c) are the snapshot's only objects outside its
 * blocks besides the router. On a failed load the arrays may be partly read:
 * they are zeroed and counted before their items, so an entry's context is
 * built or NULL (and mg_tls_ctx_free ignores NULL). */
static void free_tls(struct mg_config *cfg)
{
    for (size_t i = 0; cfg->listen != NULL && i < cfg->nlisten; i++) {
        if (cfg->listen[i].tls != NULL)
            mg_tls_ctx_free(cfg->listen[i].tls->ctx);
    }
    for (size_t i = 0; cfg->upstreams != NULL && i < cfg->nupstreams; i++)
        mg_tls_ctx_free(cfg->upstreams[i].tls.ctx);
}

static void free_snapshot(struct mg_config *cfg)
{
    struct mg_conf_blk *b = cfg->mem, *next;

    free_tls(cfg);
    mg_router_free(cfg->router);
    for (; b != NULL; b = next) {
        next = b->next;
        free(b);
    }
    free(cfg);
}

/* ---- errors and key paths ---- */

static void vfail_at(struct mg_conf_ld *ld, const char *name, size_t line, size_t col,
                     const char *fmt, va_list ap)
{
    size_t n;
    int w;

    if (ld->failed || ld->errlen == 0)
        goto done;
    w = snprintf(ld->err, ld->errlen, "%s:%zu:%zu: ", name, line, col);
    n = w < 0 ? 0 : (size_t)w;
    if (n < ld->errlen && ld->pathlen > 0) {
        w = snprintf(ld->err + n, ld->errlen - n, "%s: ", ld->path);
        n += w < 0 ? 0 : (size_t)w;
    }
    if (n < ld->errlen)
        vsnprintf(ld->err + n, ld->errlen - n, fmt, ap);
    /* One line whatever the file holds: key paths and quoted values come from it,
     * and a newline there would split the error (and the reload log line) in two
     * (found by tests/fuzz/fuzz_config). */
    for (char *c = ld->err; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f)
            *c = '?';
done:
    ld->failed = true;
}

int mg_conf_fail_in(struct mg_conf_ld *ld, const char *name, size_t line, size_t col,
                    const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vfail_at(ld, name, line, col, fmt, ap);
    va_end(ap);
    return -1;
}

const char *mg_conf_file_of(const struct mg_conf_ld *ld, const yaml_node_t *n)
{
    const char *name = ld->name;
    int index;

    if (n == NULL || ld->doc == NULL || n < ld->doc->nodes.start || n >= ld->doc->nodes.top)
        return name;
    index = (int)(n - ld->doc->nodes.start) + 1;
    for (size_t i = 0; i < ld->nfiles && ld->files[i].first <= index; i++)
        name = ld->files[i].name;
    return name;
}

int mg_conf_fail(struct mg_conf_ld *ld, const yaml_node_t *at, const char *fmt, ...)
{
    va_list ap;
    size_t line = at ? at->start_mark.line + 1 : 1, col = at ? at->start_mark.column + 1 : 1;

    va_start(ap, fmt);
    vfail_at(ld, mg_conf_file_of(ld, at), line, col, fmt, ap);
    va_end(ap);
    return -1;
}

static size_t push(struct mg_conf_ld *ld, const char *fmt, const char *key, size_t i)
{
    size_t old = ld->pathlen;
    int w = key ? snprintf(ld->path + old, sizeof(ld->path) - old, fmt, key)
                : snprintf(ld->path + old, sizeof(ld->path) - old, fmt, i);

    if (w > 0)
        ld->pathlen += (size_t)w;
    if (ld->pathlen >= sizeof(ld->path))
        ld->pathlen = sizeof(ld->path) - 1; /* truncated, still NUL-terminated */
    return old;
}

size_t mg_conf_push_key(struct mg_conf_ld *ld, const char *key)
{
    return push(ld, ld->pathlen > 0 ? ".%s" : "%s", key, 0);
}

size_t mg_conf_push_index(struct mg_conf_ld *ld, size_t i)
{
    return push(ld, "[%zu]", NULL, i);
}

void mg_conf_pop(struct mg_conf_ld *ld, size_t len)
{
    ld->pathlen = len;
    ld->path[len] = '\0';
}

/* ---- nodes ---- */

yaml_node_t *mg_conf_node(struct mg_conf_ld *ld, int index)
{
    return yaml_document_get_node(ld->doc, index);
}

bool mg_conf_is_null(const yaml_node_t *n)
{
    const char *s;

    if (n == NULL || n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    s = (const char *)n->data.scalar.value;
    return s[0] == '\0' || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 ||
           strcmp(s, "Null") == 0 || strcmp(s, "NULL") == 0;
}

static const char *kind_name(const yaml_node_t *n)
{
    if (n->type == YAML_MAPPING_NODE)
        return "a mapping";
    if (n->type == YAML_SEQUENCE_NODE)
        return "a sequence";
    return mg_conf_is_null(n) ? "null" : "a scalar";
}

int mg_conf_scalar(struct mg_conf_ld *ld, yaml_node_t *n, const char *what, const char **out)
{
    if (n->type != YAML_SCALAR_NODE || mg_conf_is_null(n))
        return mg_conf_fail(ld, n, "expected %s, got %s", what, kind_name(n));
    /* "\0" escapes would silently cut C strings short. */
    if (strlen((const char *)n->data.scalar.value) != n->data.scalar.length)
        return mg_conf_fail(ld, n, "NUL character in value");
    *out = (const char *)n->data.scalar.value;
    return 0;
}

yaml_node_t *mg_conf_pair_key(struct mg_conf_ld *ld, yaml_node_t *map, size_t i)
{
    return mg_conf_node(ld, map->data.mapping.pairs.start[i].key);
}

yaml_node_t *mg_conf_pair_value(struct mg_conf_ld *ld, yaml_node_t *map, size_t i)
{
    return mg_conf_node(ld, map->data.mapping.pairs.start[i].value);
}

yaml_node_t *mg_conf_seq_item(struct mg_conf_ld *ld, yaml_node_t *seq, size_t i)
{
    return mg_conf_node(ld, seq->data.sequence.items.start[i]);
}

static size_t npairs_of(const yaml_node_t *map)
{
    return (size_t)(map->data.mapping.pairs.top - map->data.mapping.pairs.start);
}

yaml_node_t *mg_conf_child(struct mg_conf_ld *ld, yaml_node_t *map, const char *key)
{
    if (map == NULL || map->type != YAML_MAPPING_NODE)
        return NULL;
    for (size_t i = 0; i < npairs_of(map); i++) {
        yaml_node_t *k = mg_conf_pair_key(ld, map, i);
        if (k->type == YAML_SCALAR_NODE && strcmp((const char *)k->data.scalar.value, key) == 0)
            return mg_conf_pair_value(ld, map, i);
    }
    return NULL;
}

int mg_conf_map(struct mg_conf_ld *ld, yaml_node_t *n, size_t *npairs)
{
    *npairs = 0;
    if (n == NULL || mg_conf_is_null(n))
        return 0;
    if (n->type != YAML_MAPPING_NODE)
        return mg_conf_fail(ld, n, "expected a mapping, got %s", kind_name(n));
    for (size_t i = 0; i < npairs_of(n); i++) {
        yaml_node_t *k = mg_conf_pair_key(ld, n, i);
        const char *key;
        if (mg_conf_scalar(ld, k, "a scalar key", &key) < 0)
            return -1;
        /* libyaml keeps duplicates; the last one silently winning hides typos. */
        for (size_t j = 0; j < i; j++) {
            yaml_node_t *prev = mg_conf_pair_key(ld, n, j);
            if (strcmp((const char *)prev->data.scalar.value, key) == 0) {
                mg_conf_push_key(ld, key);
                return mg_conf_fail(ld, k, "duplicate key (first at line %zu)",
                                    prev->start_mark.line + 1);
            }
        }
    }
    *npairs = npairs_of(n);
    return 0;
}

int mg_conf_seq(struct mg_conf_ld *ld, yaml_node_t *n, size_t *nitems)
{
    *nitems = 0;
    if (n == NULL || mg_conf_is_null(n))
        return 0;
    if (n->type != YAML_SEQUENCE_NODE)
        return mg_conf_fail(ld, n, "expected a sequence, got %s", kind_name(n));
    *nitems = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    return 0;
}

/* ---- generic values (plugin `config:` tables) ---- */

static int value_at(struct mg_conf_ld *ld, yaml_node_t *n, struct mg_conf_value *out, int depth)
{
    size_t cnt, at;
    const char *s;

    if (++ld->nvalues > MAX_VALUES || depth > MAX_DEPTH)
        return mg_conf_fail(ld, n, "value too large or too deeply nested");
    out->line = (int)n->start_mark.line + 1;
    out->col = (int)n->start_mark.column + 1;
    if (mg_conf_is_null(n)) {
        out->kind = MG_VAL_NULL;
        return 0;
    }
    if (n->type == YAML_SCALAR_NODE) {
        if (mg_conf_scalar(ld, n, "a scalar", &s) < 0)
            return -1;
        out->kind = MG_VAL_SCALAR;
        out->scalar = mg_conf_strdup(ld, s);
        out->quoted = n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
        return 0;
    }
    if (n->type == YAML_SEQUENCE_NODE ? mg_conf_seq(ld, n, &cnt) : mg_conf_map(ld, n, &cnt))
        return -1;
    out->kind = n->type == YAML_SEQUENCE_NODE ? MG_VAL_SEQ : MG_VAL_MAP;
    out->n = cnt;
    out->items = mg_conf_alloc(ld, cnt * sizeof(*out->items));
    if (out->kind == MG_VAL_MAP)
        out->keys = mg_conf_alloc(ld, cnt * sizeof(*out->keys));
    for (size_t i = 0; i < cnt; i++) {
        yaml_node_t *item;
        if (out->kind == MG_VAL_MAP) {
            out->keys[i] =
                mg_conf_strdup(ld, (const char *)mg_conf_pair_key(ld, n, i)->data.scalar.value);
            at = mg_conf_push_key(ld, out->keys[i]);
            item = mg_conf_pair_value(ld, n, i);
        } else {
            at = mg_conf_push_index(ld, i);
            item = mg_conf_seq_item(ld, n, i);
        }
        if (value_at(ld, item, &out->items[i], depth + 1) < 0)
            return -1;
        mg_conf_pop(ld, at);
    }
    return 0;
}

int mg_conf_value(struct mg_conf_ld *ld, yaml_node_t *node, struct mg_conf_value *out)
{
    return value_at(ld, node, out, 0);
}

/* ---- generic kinds ---- */

int mg_conf_address(struct mg_conf_ld *ld, yaml_node_t *node, const char *text,
                    struct mg_address *out)
{
    char why[160];

    if (mg_conf_parse_address(text, &out->addr, &out->addrlen, why, sizeof(why)) < 0)
        return mg_conf_fail(ld, node, "invalid address '%.100s': %s", text, why);
    out->text = mg_conf_strdup(ld, text);
    return 0;
}

static int parse_uint(struct mg_conf_ld *ld, const struct mg_conf_field *f, yaml_node_t *n,
                      const char *s, uint32_t *dst)
{
    double hi = f->hi > 0 ? f->hi : (double)UINT32_MAX;
    uint64_t v;

    if (mg_conf_parse_uint(s, &v) < 0)
        return mg_conf_fail(ld, n, "invalid integer '%.64s' (expected %.0f..%.0f)", s, f->lo, hi);
    if ((double)v < f->lo || (double)v > hi)
        return mg_conf_fail(ld, n, "%.64s is out of range (expected %.0f..%.0f)", s, f->lo, hi);
    *dst = (uint32_t)v;
    return 0;
}

static int parse_double(struct mg_conf_ld *ld, const struct mg_conf_field *f, yaml_node_t *n,
                        const char *s, double *dst)
{
    double v;

    if (mg_conf_parse_double(s, &v) < 0)
        return mg_conf_fail(ld, n, "invalid number '%.64s' (expected %g..%g)", s, f->lo, f->hi);
    if (v < f->lo || v > f->hi)
        return mg_conf_fail(ld, n, "%.64s is out of range (expected %g..%g)", s, f->lo, f->hi);
    *dst = v;
    return 0;
}

static int parse_duration(struct mg_conf_ld *ld, const struct mg_conf_field *f, yaml_node_t *n,
                          const char *s, uint64_t *dst)
{
    if (mg_parse_duration_ms(s, dst) < 0)
        return mg_conf_fail(ld, n, "invalid duration '%.64s' (expected e.g. 250ms, 10s, 5m, 24h)",
                            s);
    if ((double)*dst < f->lo)
        return mg_conf_fail(ld, n, "duration must be at least %.0fms", f->lo);
    return 0;
}

static int parse_size(struct mg_conf_ld *ld, const struct mg_conf_field *f, yaml_node_t *n,
                      const char *s, uint64_t *dst)
{
    if (mg_parse_size(s, dst) < 0)
        return mg_conf_fail(ld, n, "invalid size '%.64s' (expected e.g. 512, 16k, 1m)", s);
    if ((double)*dst < f->lo)
        return mg_conf_fail(ld, n, "size must be at least %.0f", f->lo);
    return 0;
}

static void join_names(const char *const *names, size_t step, char *buf, size_t cap)
{
    size_t n = 0;

    buf[0] = '\0';
    for (const char *const *p = names; *p != NULL && n < cap;
         p = (const char *const *)((const char *)p + step)) {
        int w = snprintf(buf + n, cap - n, "%s%s", n ? ", " : "", *p);
        n += w < 0 ? 0 : (size_t)w;
    }
}

static int parse_enum(struct mg_conf_ld *ld, const struct mg_conf_field *f, yaml_node_t *n,
                      const char *s, int *dst)
{
    const char *const *names = f->sub;
    char list[200];

    for (int i = 0; names[i] != NULL; i++) {
        if (strcmp(s, names[i]) == 0) {
            *dst = i;
            return 0;
        }
    }
    join_names(names, sizeof(*names), list, sizeof(list));
    return mg_conf_fail(ld, n, "invalid value '%.64s' (expected one of: %s)", s, list);
}

/* One scalar of kind f->kind from text `s` (node `n`, NULL for a default). */
static int parse_scalar(struct mg_conf_ld *ld, const struct mg_conf_field *f, yaml_node_t *n,
                        const char *s, void *dst)
{
    switch (f->kind) {
    case MG_K_DURATION:
        return parse_duration(ld, f, n, s, dst);
    case MG_K_SIZE:
        return parse_size(ld, f, n, s, dst);
    case MG_K_UINT:
        return parse_uint(ld, f, n, s, dst);
    case MG_K_DOUBLE:
        return parse_double(ld, f, n, s, dst);
    case MG_K_BOOL:
        if (mg_conf_parse_bool(s, dst) < 0)
            return mg_conf_fail(ld, n, "invalid boolean '%.64s' (expected true or false)", s);
        return 0;
    case MG_K_STRING:
        if (s[0] == '\0')
            return mg_conf_fail(ld, n, "must not be empty");
        *(char **)dst = mg_conf_strdup(ld, s);
        return 0;
    case MG_K_ENUM:
        return parse_enum(ld, f, n, s, dst);
    case MG_K_ADDRESS:
        return mg_conf_address(ld, n, s, dst);
    default:
        abort(); /* not a scalar kind: a bug in a field table */
    }
}

static const char *what_of(enum mg_conf_kind k)
{
    switch (k) {
    case MG_K_DURATION:
        return "a duration";
    case MG_K_SIZE:
        return "a size";
    case MG_K_UINT:
        return "an integer";
    case MG_K_DOUBLE:
        return "a number";
    case MG_K_BOOL:
        return "a boolean";
    case MG_K_ADDRESS:
    case MG_K_ADDRLIST:
        return "an address";
    case MG_K_STATUSES:
        return "a status code";
    case MG_K_METHODS:
        return "an HTTP method";
    default:
        return "a string";
    }
}

/* ---- lists: the items come from a sequence node or a space-separated default ---- */

static size_t count_words(const char *s)
{
    size_t n = 0;

    for (; s && *s; s++) {
        if (*s != ' ' && (s[1] == ' ' || s[1] == '\0'))
            n++;
    }
    return n;
}

/* Copies word `i` of `s` into buf. */
static const char *word(const char *s, size_t i, char *buf, size_t cap)
{
    for (;;) {
        size_t len;
        s += strspn(s, " ");
        len = strcspn(s, " ");
        if (i-- == 0) {
            snprintf(buf, cap, "%.*s", (int)len, s);
            return buf;
        }
        s += len;
    }
}

static int list_item(struct mg_conf_ld *ld, const struct mg_conf_field *f, yaml_node_t *n,
                     const char *s, void *arr, size_t i, uint64_t *mask)
{
    int id;

    switch (f->kind) {
    case MG_K_STRLIST:
        if (s[0] == '\0')
            return mg_conf_fail(ld, n, "must not be empty");
        ((char **)arr)[i] = mg_conf_strdup(ld, s);
        return 0;
    case MG_K_ADDRLIST:
        for (size_t j = 0; j < i; j++) {
            if (strcmp(((struct mg_address *)arr)[j].text, s) == 0)
                return mg_conf_fail(ld, n, "duplicate address '%.100s'", s);
        }
        return mg_conf_address(ld, n, s, (struct mg_address *)arr + i);
    case MG_K_STATUSES:
        if ((id = mg_conf_status(s)) < 0)
            return mg_conf_fail(ld, n, "invalid status code '%.64s' (expected 100..599)", s);
        ((uint16_t *)arr)[i] = (uint16_t)id;
        return 0;
    case MG_K_METHODS:
        /* Case-sensitive like HTTP itself (RFC 9110 section 9.1): llhttp would
         * never deliver a "get" request, so a lowercase name is a mistake. */
        if ((id = mg_http_method(s, strlen(s))) < 0)
            return mg_conf_fail(ld, n, "unknown HTTP method '%.64s' (methods are upper case)", s);
        *mask |= 1ull << id;
        return 0;
    default:
        abort();
    }
}

static size_t item_size(enum mg_conf_kind k)
{
    return k == MG_K_STRLIST    ? sizeof(char *)
           : k == MG_K_ADDRLIST ? sizeof(struct mg_address)
           : k == MG_K_STATUSES ? sizeof(uint16_t)
                                : 0;
}

static int parse_list(struct mg_conf_ld *ld, const struct mg_conf_field *f, yaml_node_t *n,
                      void *base)
{
    size_t cnt = count_words(f->def);
    uint64_t mask = 0;
    void *arr;
    char buf[64];

    if (n != NULL && mg_conf_seq(ld, n, &cnt) < 0)
        return -1;
    if (cnt == 0 && (f->flags & MG_CF_NONEMPTY))
        return mg_conf_fail(ld, n, "needs at least one item");
    arr = cnt && item_size(f->kind) ? mg_conf_alloc(ld, cnt * item_size(f->kind)) : NULL;
    for (size_t i = 0; i < cnt; i++) {
        yaml_node_t *item = n ? mg_conf_seq_item(ld, n, i) : NULL;
        const char *s;
        size_t at = mg_conf_push_index(ld, i);
        if (item ? mg_conf_scalar(ld, item, what_of(f->kind), &s) < 0
                 : (s = word(f->def, i, buf, sizeof(buf)), 0))
            return -1;
        if (list_item(ld, f, item, s, arr, i, &mask) < 0)
            return -1;
        mg_conf_pop(ld, at);
    }
    if (f->kind == MG_K_METHODS) {
        *(uint64_t *)((char *)base + f->off) = mask;
    } else {
        *(void **)((char *)base + f->off) = arr;
        *(size_t *)((char *)base + f->off2) = cnt;
    }
    return 0;
}

/* ---- sections ---- */

static bool is_list(enum mg_conf_kind k)
{
    return k == MG_K_STRLIST || k == MG_K_ADDRLIST || k == MG_K_STATUSES || k == MG_K_METHODS;
}

/* Reads field `f` from node `n`, or applies its default when n is NULL. */
static int parse_field(struct mg_conf_ld *ld, const struct mg_conf_field *f, yaml_node_t *n,
                       void *base)
{
    void *dst = (char *)base + f->off;
    const char *s = f->def;
    int rc;

    if (f->kind == MG_K_CUSTOM)
        return f->fn(ld, n, dst);
    if (f->kind == MG_K_SECTION) {
        rc = mg_conf_section(ld, n, f->sub, dst);
        if (rc == 0 && n != NULL && (f->flags & MG_CF_ENABLE))
            *(bool *)((char *)dst + f->off2) = true;
    } else if (is_list(f->kind)) {
        rc = parse_list(ld, f, n, base);
    } else if (n != NULL && (f->flags & MG_CF_NULLABLE) && mg_conf_is_null(n)) {
        *(char **)dst = NULL;
        return 0;
    } else if (n == NULL && s == NULL) {
        return 0; /* no default: stays zero / NULL */
    } else {
        if (n != NULL && mg_conf_scalar(ld, n, what_of(f->kind), &s) < 0)
            return -1;
        rc = parse_scalar(ld, f, n, s, dst);
    }
    if (rc == 0 && n != NULL && f->fn != NULL)
        rc = f->fn(ld, n, dst);
    return rc;
}

static const struct mg_conf_field *find_field(const struct mg_conf_field *fields, const char *key)
{
    for (; fields->key != NULL; fields++) {
        if (strcmp(fields->key, key) == 0)
            return fields;
    }
    return NULL;
}

static int unknown_keys(struct mg_conf_ld *ld, yaml_node_t *node, size_t npairs,
                        const struct mg_conf_field *fields)
{
    char list[300];

    for (size_t i = 0; i < npairs; i++) {
        yaml_node_t *k = mg_conf_pair_key(ld, node, i);
        const char *key = (const char *)k->data.scalar.value;
        if (find_field(fields, key) == NULL) {
            join_names(&fields->key, sizeof(*fields), list, sizeof(list));
            mg_conf_push_key(ld, key);
            return mg_conf_fail(ld, k, "unknown key (expected one of: %s)", list);
        }
    }
    return 0;
}

int mg_conf_section(struct mg_conf_ld *ld, yaml_node_t *node, const struct mg_conf_field *fields,
                    void *base)
{
    size_t npairs;

    if (mg_conf_map(ld, node, &npairs) < 0 || unknown_keys(ld, node, npairs, fields) < 0)
        return -1;
    for (const struct mg_conf_field *f = fields; f->key != NULL; f++) {
        yaml_node_t *n = npairs ? mg_conf_child(ld, node, f->key) : NULL;
        size_t at = mg_conf_push_key(ld, f->key);
        if (n == NULL && (f->flags & MG_CF_REQUIRED))
            return mg_conf_fail(ld, node, "missing required key");
        if (parse_field(ld, f, n, base) < 0)
            return -1;
        mg_conf_pop(ld, at);
    }
    return 0;
}

/* ---- loading ---- */

void mg_conf_syntax_error(struct mg_conf_ld *ld, const yaml_parser_t *p, const char *name,
                          const char *text, size_t len)
{
    size_t line = p->problem_mark.line + 1, col = p->problem_mark.column + 1;

    if (p->error == YAML_MEMORY_ERROR)
        oom();
    if (p->error == YAML_READER_ERROR) {
        /* The reader runs ahead of the marks: place the error by its offset. */
        line = col = 1;
        for (size_t i = 0; i < p->problem_offset && i < len; i++, col++) {
            if (text[i] == '\n') {
                line++;
                col = 0;
            }
        }
    }
    if (p->context != NULL)
        mg_conf_fail_in(ld, name, line, col, "YAML syntax error: %s (%s at line %zu)", p->problem,
                        p->context, p->context_mark.line + 1);
    else
        mg_conf_fail_in(ld, name, line, col, "YAML syntax error: %s",
                        p->problem ? p->problem : "unknown problem");
}

/* Reads the document (and checks no second one follows) into ld->cfg. */
static int load_document(struct mg_conf_ld *ld, yaml_parser_t *parser, const char *text, size_t len)
{
    yaml_document_t doc, extra;
    yaml_node_t *root;
    int rc = -1;

    if (!yaml_parser_load(parser, &doc)) {
        mg_conf_syntax_error(ld, parser, ld->name, text, len);
        return -1;
    }
    ld->doc = &doc;
    rc = mg_conf_expand(ld, &doc);
    root = yaml_document_get_root_node(&doc); /* after expand: the nodes moved */
    if (rc == 0)
        rc = mg_conf_section(ld, root, mg_conf_root_fields, ld->cfg);
    if (rc == 0) {
        /* Parse the rest of the stream so a later syntax error is not ignored. */
        if (!yaml_parser_load(parser, &extra)) {
            mg_conf_syntax_error(ld, parser, ld->name, text, len);
            rc = -1;
        } else {
            if (yaml_document_get_root_node(&extra) != NULL)
                rc = mg_conf_fail_in(ld, ld->name, extra.start_mark.line + 1,
                                     extra.start_mark.column + 1,
                                     "only one YAML document is allowed");
            yaml_document_delete(&extra);
        }
    }
    ld->doc = NULL;
    yaml_document_delete(&doc);
    return rc;
}

struct mg_config *mg_config_load_string(const char *yaml, size_t len, const char *name, char *err,
                                        size_t errlen)
{
    struct mg_config *cfg = calloc(1, sizeof(*cfg));
    struct mg_conf_ld ld = {.cfg = cfg, .name = name ? name : "<string>"};
    yaml_parser_t parser;
    char scratch[1];
    int rc;

    ld.err = errlen ? err : scratch;
    ld.errlen = errlen ? errlen : sizeof(scratch);
    ld.err[0] = '\0';
    if (cfg == NULL || !yaml_parser_initialize(&parser))
        oom();
    atomic_init(&cfg->refs, 1);
    cfg->path = mg_conf_strdup(&ld, ld.name);
    if (yaml == NULL)
        yaml = "", len = 0; /* libyaml asserts on a NULL input */
    yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, len);
    rc = load_document(&ld, &parser, yaml, len);
    yaml_parser_delete(&parser);
    if (rc == 0 && (cfg->router = mg_router_build(cfg)) == NULL)
        oom();
    if (rc < 0) {
        free_snapshot(cfg);
        return NULL;
    }
    cfg->version = atomic_fetch_add(&versions, 1) + 1;
    cfg->loaded_at = time(NULL);
    return cfg;
}

char *mg_conf_read_file(const char *path, size_t max, size_t *len, char *why, size_t whylen)
{
    FILE *fp = fopen(path, "rb");
    char *buf = NULL;
    struct stat st;

    if (fp == NULL || fstat(fileno(fp), &st) < 0) {
        snprintf(why, whylen, "cannot open: %s", strerror(errno));
        goto done;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(why, whylen, "not a regular file");
        goto done;
    }
    if ((uint64_t)st.st_size > max) {
        snprintf(why, whylen, "larger than %zu bytes", max);
        goto done;
    }
    if ((buf = malloc((size_t)st.st_size + 1)) == NULL)
        oom();
    *len = fread(buf, 1, (size_t)st.st_size, fp);
    if (ferror(fp)) {
        snprintf(why, whylen, "cannot read: %s", strerror(errno));
        free(buf);
        buf = NULL;
        goto done;
    }
    buf[*len] = '\0';
done:
    if (fp != NULL)
        fclose(fp);
    return buf;
}

struct mg_config *mg_config_load(const char *path, char *err, size_t errlen)
{
    struct mg_config *cfg;
    char why[200];
    size_t len = 0;
    char *buf = mg_conf_read_file(path, MAX_FILE_SIZE, &len, why, sizeof(why));

    if (buf == NULL) {
        snprintf(err, errlen, "%s: %s", path, why);
        return NULL;
    }
    cfg = mg_config_load_string(buf, len, path, err, errlen);
    free(buf);
    return cfg;
}

void mg_config_ref(struct mg_config *cfg)
{
    atomic_fetch_add_explicit(&cfg->refs, 1, memory_order_relaxed);
}

void mg_config_unref(struct mg_config *cfg)
{
    if (cfg == NULL)
        return;
    /* acq_rel: the freeing thread must see every write made under other refs. */
    if (atomic_fetch_sub_explicit(&cfg->refs, 1, memory_order_acq_rel) == 1) {
        if (cfg->release)
            cfg->release(cfg); /* derived by discovery/ */
        else
            free_snapshot(cfg);
    }
}
