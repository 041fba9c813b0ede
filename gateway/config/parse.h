/*
 * Private to gateway/config/: the table-driven YAML reader shared by load.c (the
 * engine: snapshot memory, errors, key paths, generic kinds) and fields.c (the
 * tables of DESIGN section 3 and the few parsers that need more than a kind).
 *
 * A section is a NULL-terminated array of struct mg_conf_field rows
 * {key, kind, offsetof(...), default, ...}; the default is written in the syntax
 * of the file ("1s", "16k", "502 503 504") and parsed by the same code as the
 * file, so a default can never disagree with what a user could write.
 */
#ifndef MG_CONFIG_PARSE_H
#define MG_CONFIG_PARSE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <yaml.h>

#include "config/config-t.h"

#define MG_CONF_PATH_MAX 256

#define MG_CONF_MAX_FILES 128 /* the main file and everything it includes */

/* Nodes of included files are appended to the main document (include.c); each
 * file owns the node indices from `first` up to the next file's. */
struct mg_conf_file {
    int first;        /* 1-based index of its first node */
    const char *name; /* as shown in errors; snapshot memory */
};

/* State of one load; lives on the stack of mg_config_load_string. */
struct mg_conf_ld {
    struct mg_config *cfg; /* the snapshot being built; owns every allocation */
    yaml_document_t *doc;
    const char *name; /* file name as shown in errors */
    char *err;        /* caller's buffer; the first error wins */
    size_t errlen;
    bool failed;
    size_t nvalues; /* generic values built so far (alias-bomb guard) */
    size_t pathlen;
    char path[MG_CONF_PATH_MAX]; /* key path of the node being read */
    struct mg_conf_file files[MG_CONF_MAX_FILES];
    size_t nfiles;
};

enum mg_conf_kind {
    MG_K_DURATION, /* uint64_t ms; .lo = minimum */
    MG_K_SIZE,     /* uint64_t bytes */
    MG_K_UINT,     /* uint32_t in .lo...hi (hi 0: UINT32_MAX) */
    MG_K_DOUBLE,   /* double in .lo...hi */
    MG_K_BOOL,     /* bool */
    MG_K_STRING,   /* char *, non-empty; MG_CF_NULLABLE: plain null -> NULL */
    MG_K_ENUM,     /* int index into .sub (NULL-terminated const char *[]) */
    MG_K_ADDRESS,  /* struct mg_address */
    MG_K_STRLIST,  /* char ** at off, size_t count at off2 */
    MG_K_ADDRLIST, /* struct mg_address * at off, size_t count at off2 */
    MG_K_STATUSES, /* uint16_t * at off, size_t count at off2; 100..599 */
    MG_K_METHODS,  /* uint64_t mask of 1 << llhttp_method_t */
    MG_K_SECTION,  /* a mapping read with the table .sub into base + off */
    MG_K_CUSTOM,   /* .fn parses the node (NULL when absent) into base + off */
};

enum {
    MG_CF_REQUIRED = 1u << 0, /* absent -> error instead of the default */
    MG_CF_NULLABLE = 1u << 1, /* MG_K_STRING: `null` stores NULL */
    MG_CF_NONEMPTY = 1u << 2, /* lists: at least one item */
    MG_CF_ENABLE = 1u << 3,   /* MG_K_SECTION: present -> bool at section + off2 */
};

struct mg_conf_ld;
/* Custom parser (MG_K_CUSTOM, node NULL when the key is absent) or validator run
 * after the generic parse (node NULL when the default was applied). `dst` is the
 * field itself (base + off). Returns 0 or -1 after mg_conf_fail. */
typedef int mg_conf_fn(struct mg_conf_ld *ld, yaml_node_t *node, void *dst);

struct mg_conf_field {
    const char *key;
    enum mg_conf_kind kind;
    size_t off;
    const char *def; /* default in file syntax; lists: space-separated; NULL: none */
    unsigned flags;  /* MG_CF_* */
    size_t off2;     /* list count, or the section's `enabled` flag */
    double lo, hi;   /* numeric range (see the kinds) */
    const void *sub; /* MG_K_SECTION: fields; MG_K_ENUM: names */
    mg_conf_fn *fn;  /* MG_K_CUSTOM: the parser; others: a validator, or NULL */
};

/* A row: {key, kind, offsetof, default, options...}; all designated so rows
 * can name only the options they use. */
// clang-format off
#define ROW(k, kd, o, ...) {.key = k, .kind = kd, .off = o, .def = __VA_ARGS__}
#define END {.key = NULL}
// clang-format on

/* Snapshot memory: zeroed, owned by ld->cfg, aborts on OOM. */
void *mg_conf_alloc(struct mg_conf_ld *ld, size_t size);
char *mg_conf_strdup(struct mg_conf_ld *ld, const char *s);

/* Reports an error at `at` (NULL: line 1, col 1) for the current key path and
 * returns -1. Only the first error of a load is kept. */
int mg_conf_fail(struct mg_conf_ld *ld, const yaml_node_t *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Same at an explicit position of file `name`. */
int mg_conf_fail_in(struct mg_conf_ld *ld, const char *name, size_t line, size_t col,
                    const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* The file node `n` was read from (the main file when n is NULL). */
const char *mg_conf_file_of(const struct mg_conf_ld *ld, const yaml_node_t *n);
/* Reads a whole regular file of at most `max` bytes into a malloc'd,
 * NUL-terminated buffer; NULL with the reason in `why` otherwise. */
char *mg_conf_read_file(const char *path, size_t max, size_t *len, char *why, size_t whylen);
/* Reports a libyaml parser error as a config error in file `name`. */
void mg_conf_syntax_error(struct mg_conf_ld *ld, const yaml_parser_t *p, const char *name,
                          const char *text, size_t len);

/* include.c: run on each freshly parsed document before the tables read it:
 * substitutes ${VAR} / ${VAR:-default} in the scalar values of the file, then
 * appends the files named by a root `include:` to `doc` and merges their roots
 * into its root. Returns 0 or -1 after mg_conf_fail. */
int mg_conf_expand(struct mg_conf_ld *ld, yaml_document_t *doc);
/* Key path: push a ".key" or "[i]" segment; pop back to the returned length. */
size_t mg_conf_push_key(struct mg_conf_ld *ld, const char *key);
size_t mg_conf_push_index(struct mg_conf_ld *ld, size_t i);
void mg_conf_pop(struct mg_conf_ld *ld, size_t len);

/* Node helpers. */
yaml_node_t *mg_conf_node(struct mg_conf_ld *ld, int index);
yaml_node_t *mg_conf_child(struct mg_conf_ld *ld, yaml_node_t *map, const char *key);
bool mg_conf_is_null(const yaml_node_t *n);
/* The text of a scalar node, or -1 after an error naming `what` it should be. */
int mg_conf_scalar(struct mg_conf_ld *ld, yaml_node_t *n, const char *what, const char **out);
/* Checks that `n` is a mapping (null counts as an empty one: returns 0 with
 * *npairs = 0) whose keys are unique scalars. */
int mg_conf_map(struct mg_conf_ld *ld, yaml_node_t *n, size_t *npairs);
/* Checks that `n` is a sequence (null: empty). */
int mg_conf_seq(struct mg_conf_ld *ld, yaml_node_t *n, size_t *nitems);
yaml_node_t *mg_conf_seq_item(struct mg_conf_ld *ld, yaml_node_t *seq, size_t i);
yaml_node_t *mg_conf_pair_key(struct mg_conf_ld *ld, yaml_node_t *map, size_t i);
yaml_node_t *mg_conf_pair_value(struct mg_conf_ld *ld, yaml_node_t *map, size_t i);

/* Reads mapping `node` (NULL or null: every default) into `base` with `fields`. */
int mg_conf_section(struct mg_conf_ld *ld, yaml_node_t *node, const struct mg_conf_field *fields,
                    void *base);
/* Copies any YAML node into a generic value tree. */
int mg_conf_value(struct mg_conf_ld *ld, yaml_node_t *node, struct mg_conf_value *out);
int mg_conf_address(struct mg_conf_ld *ld, yaml_node_t *node, const char *text,
                    struct mg_address *out);

/* fields.c: lexically normalizes an absolute path in place
 * ("/a/./b/../c" -> "/a/c"). */
void mg_conf_normalize(char *path);

/* fields.c: `p` made absolute against the config file's directory (not the
 * cwd) and normalized, in snapshot memory; NULL after an error at `at`. */
char *mg_conf_resolve_path(struct mg_conf_ld *ld, yaml_node_t *at, const char *p);

/* tls.c: `listen` (a custom row of the root table: "host:port" items or
 * mappings with options and `tls`, whose contexts are built as they are read),
 * and `upstreams.X.tls` (a section with its check; its context is built by
 * mg_conf_upstream_tls_build once the whole upstream `map` was read). */
int mg_conf_listen(struct mg_conf_ld *ld, yaml_node_t *n, void *cfg);
/* shared_dicts.c: the top-level shared_dicts map. */
int mg_conf_shared_dicts(struct mg_conf_ld *ld, yaml_node_t *n, void *dst);
extern const struct mg_conf_field mg_conf_upstream_tls_fields[];
int mg_conf_check_upstream_tls(struct mg_conf_ld *ld, yaml_node_t *n, void *tls);
int mg_conf_upstream_tls_build(struct mg_conf_ld *ld, yaml_node_t *map,
                               struct mg_upstream_tls_conf *tls);

/* forwarded.c: the `forwarded` section (DESIGN section 10.8). */
extern const struct mg_conf_field mg_conf_forwarded_fields[];
/* secret.c: a custom row reading a secret file into the char * at `dst`
 * (`password_file` writes `password`). */
int mg_conf_secret_file(struct mg_conf_ld *ld, yaml_node_t *n, void *dst);
/* discovery.c: targets[].address (a host name is kept, not resolved), the
 * `resolver` section, upstreams.X.discovery, and the check that an upstream
 * has targets or discovery (which also sets its `dynamic` flag). */
int mg_conf_target_address(struct mg_conf_ld *ld, yaml_node_t *n, void *target);
int mg_conf_redis_address(struct mg_conf_ld *ld, yaml_node_t *n, void *redis);
extern const struct mg_conf_field mg_conf_resolver_fields[];
int mg_conf_check_resolver(struct mg_conf_ld *ld, yaml_node_t *n, void *resolver);
int mg_conf_discovery(struct mg_conf_ld *ld, yaml_node_t *n, void *discovery);
int mg_conf_check_upstream_targets(struct mg_conf_ld *ld, yaml_node_t *map,
                                   struct mg_upstream_conf *up);
/* http2.c: the top-level `http2` section (DESIGN.md section 10.2). */
extern const struct mg_conf_field mg_conf_http2_fields[];

/* fields.c: the top-level table. Its row order is the parse order, so sections
 * that others refer to (redis, upstreams) come before their users (routes). */
extern const struct mg_conf_field mg_conf_root_fields[];

/* values.c: scalar parsers with a reason for the error message. */
int mg_conf_parse_address(const char *s, struct sockaddr_storage *out, socklen_t *outlen, char *why,
                          size_t whylen);
int mg_conf_parse_uint(const char *s, uint64_t *out);
int mg_conf_parse_double(const char *s, double *out);
int mg_conf_parse_bool(const char *s, bool *out);
int mg_conf_status(const char *s);    /* 100..599, or -1 */

#endif
