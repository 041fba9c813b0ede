/*
 * What a file says before the tables read it (DESIGN section 10.8):
 *   - `${VAR}` and `${VAR:-default}` in scalar values come from the environment
 *     (`$${` stands for a literal `${`); an unset variable without a default is
 *     an error at the scalar's FILE:LINE:COL, never a silent empty string;
 *   - a root `include:` (a pattern or a list of them, globs, relative to the
 *     including file) appends the nodes of each matched file to the main
 *     document and merges its root into the main root: root maps are merged key
 *     by key (upstreams from two files), root lists are concatenated (routes),
 *     anything else defined twice is an error naming both places.
 *
 * Why at the libyaml document level: the field tables then read one document
 * as if it were one file, and each node keeps its own marks; ld->files records
 * which node indices came from which file so errors name the right one.
 * Blocking (reads files): runs only where the whole load may block.
 */
#include <errno.h>
#include <glob.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/parse.h"

#define MAX_INCLUDE_DEPTH 8
#define MAX_INCLUDE_SIZE  (16u << 20)

static void oom(void)
{
    fputs("moongate: out of memory while loading the configuration\n", stderr);
    abort();
}

/* ---- variables ---- */

static bool var_start(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}

static bool var_char(char c)
{
    return var_start(c) || (c >= '0' && c <= '9');
}

struct buf {
    char *p;
    size_t len, cap;
};

static void put(struct buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->len + n + 1) * 2;
        char *p = realloc(b->p, cap);
        if (p == NULL)
            oom();
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

/* Expands one `${...}` starting at s (which points at '$'); returns the length
 * consumed, or 0 after an error. */
static size_t expand_one(struct mg_conf_ld *ld, yaml_node_t *at, const char *s, struct buf *out)
{
    const char *name = s + 2, *end = name, *def = NULL, *close, *val;
    size_t deflen = 0;
    char var[128];

    while (var_char(*end))
        end++;
    if (!var_start(*name) || (size_t)(end - name) >= sizeof(var))
        return mg_conf_fail(ld, at,
                            "invalid variable reference '%.40s' (expected ${NAME} or "
                            "${NAME:-default}; write $${ for a literal ${)",
                            s),
               0;
    if (end[0] == ':' && end[1] == '-') {
        def = end + 2;
        close = strchr(def, '}');
        deflen = close ? (size_t)(close - def) : 0;
    } else {
        close = *end == '}' ? end : NULL;
    }
    if (close == NULL)
        return mg_conf_fail(ld, at, "unterminated variable reference '%.40s' (missing '}')", s), 0;
    snprintf(var, sizeof(var), "%.*s", (int)(end - name), name);
    val = getenv(var);
    if (def != NULL && (val == NULL || val[0] == '\0'))
        put(out, def, deflen);
    else if (val != NULL)
        put(out, val, strlen(val));
    else
        return mg_conf_fail(ld, at,
                            "environment variable '%s' is not set (write ${%s:-default} to give "
                            "a default)",
                            var, var),
               0;
    return (size_t)(close - s) + 1;
}

/* Substitutes the variables of scalar `n` in place (the node's value is
 * libyaml's malloc'd buffer, so it is replaced the same way). */
static int expand_scalar(struct mg_conf_ld *ld, yaml_node_t *n)
{
    const char *s = (const char *)n->data.scalar.value;
    struct buf out = {0};

    if (strstr(s, "${") == NULL)
        return 0;
    put(&out, "", 0);
    while (*s) {
        const char *dollar = strchr(s, '$');
        size_t used;
        if (dollar == NULL) {
            put(&out, s, strlen(s));
            break;
        }
        put(&out, s, (size_t)(dollar - s));
        if (dollar[1] == '$' && dollar[2] == '{') {
            put(&out, "${", 2);
            s = dollar + 3;
        } else if (dollar[1] == '{') {
            if ((used = expand_one(ld, n, dollar, &out)) == 0) {
                free(out.p);
                return -1;
            }
            s = dollar + used;
        } else {
            put(&out, "$", 1);
            s = dollar + 1;
        }
    }
    free(n->data.scalar.value);
    n->data.scalar.value = (yaml_char_t *)out.p;
    n->data.scalar.length = out.len;
    return 0;
}

/* Substitutes in the scalars of nodes first..last (1-based) that are not
 * mapping keys: keys name options and are never secrets. */
static int expand_vars(struct mg_conf_ld *ld, yaml_document_t *doc, int first, int last)
{
    size_t cnt = (size_t)(last - first + 1);
    bool *is_key = calloc(cnt ? cnt : 1, sizeof(*is_key));
    int rc = 0;

    if (is_key == NULL)
        oom();
    for (int i = first; i <= last; i++) {
        yaml_node_t *n = yaml_document_get_node(doc, i);
        if (n->type != YAML_MAPPING_NODE)
            continue;
        for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++)
            if (p->key >= first && p->key <= last)
                is_key[p->key - first] = true;
    }
    for (int i = first; i <= last && rc == 0; i++) {
        yaml_node_t *n = yaml_document_get_node(doc, i);
        if (n->type == YAML_SCALAR_NODE && !is_key[i - first])
            rc = expand_scalar(ld, n);
    }
    free(is_key);
    return rc;
}

/* ---- appending a document's nodes ---- */

/* Moves every node of `src` to the end of `dst` (node references shifted) and
 * leaves `src` empty; returns the new index of src's root (0: empty file). */
static int append_nodes(yaml_document_t *dst, yaml_document_t *src)
{
    size_t have = (size_t)(dst->nodes.top - dst->nodes.start);
    size_t add = (size_t)(src->nodes.top - src->nodes.start);
    int off = (int)have;
    yaml_node_t *nodes;

    if (add == 0)
        return 0;
    if (have + add > (size_t)(dst->nodes.end - dst->nodes.start)) {
        /* libyaml allocates its stacks with malloc and frees them with free. */
        nodes = realloc(dst->nodes.start, (have + add) * sizeof(*nodes));
        if (nodes == NULL)
            oom();
        dst->nodes.start = nodes;
        dst->nodes.top = nodes + have;
        dst->nodes.end = nodes + have + add;
    }
    memcpy(dst->nodes.top, src->nodes.start, add * sizeof(*nodes));
    for (yaml_node_t *n = dst->nodes.top; n < dst->nodes.top + add; n++) {
        if (n->type == YAML_SEQUENCE_NODE) {
            for (yaml_node_item_t *it = n->data.sequence.items.start;
                 it < n->data.sequence.items.top; it++)
                *it += off;
        } else if (n->type == YAML_MAPPING_NODE) {
            for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top;
                 p++) {
                p->key += off;
                p->value += off;
            }
        }
    }
    dst->nodes.top += add;
    src->nodes.top = src->nodes.start; /* ownership moved: delete frees only the array */
    return off + 1;
}

/* ---- merging roots ---- */

static const char *scalar_of(yaml_node_t *n)
{
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

/* The pair of map `map` whose key is `key`, or NULL. */
static yaml_node_pair_t *find_pair(yaml_document_t *doc, int map, const char *key)
{
    yaml_node_t *m = yaml_document_get_node(doc, map);

    for (yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top; p++) {
        const char *k = scalar_of(yaml_document_get_node(doc, p->key));
        if (k != NULL && strcmp(k, key) == 0)
            return p;
    }
    return NULL;
}

static int duplicate(struct mg_conf_ld *ld, yaml_node_t *again, yaml_node_t *first)
{
    return mg_conf_fail(ld, again, "defined twice (first at %s:%zu:%zu)",
                        mg_conf_file_of(ld, first), first->start_mark.line + 1,
                        first->start_mark.column + 1);
}

/* Merges map `src` into map `dst`; at the root (depth 0) maps are merged one
 * level further and lists concatenated, deeper a key present in both is an
 * error. Pairs are read by index: appending may move the pair arrays. */
static int merge(struct mg_conf_ld *ld, yaml_document_t *doc, int dst, int src, int depth)
{
    size_t npairs = (size_t)(yaml_document_get_node(doc, src)->data.mapping.pairs.top -
                             yaml_document_get_node(doc, src)->data.mapping.pairs.start);

    for (size_t i = 0; i < npairs; i++) {
        yaml_node_pair_t sp = yaml_document_get_node(doc, src)->data.mapping.pairs.start[i];
        yaml_node_t *k = yaml_document_get_node(doc, sp.key);
        const char *key = scalar_of(k);
        yaml_node_pair_t *dp;
        yaml_node_t *dv, *sv;
        size_t at;
        int rc = 0;

        if (key == NULL)
            return mg_conf_fail(ld, k, "keys must be scalars");
        if (depth == 0 && strcmp(key, "include") == 0)
            continue; /* already followed */
        if ((dp = find_pair(doc, dst, key)) == NULL) {
            if (!yaml_document_append_mapping_pair(doc, dst, sp.key, sp.value))
                oom();
            continue;
        }
        at = mg_conf_push_key(ld, key);
        dv = yaml_document_get_node(doc, dp->value);
        sv = yaml_document_get_node(doc, sp.value);
        if (mg_conf_is_null(dv)) {
            dp->value = sp.value; /* `routes:` left empty in the main file */
        } else if (depth > 0 || mg_conf_is_null(sv)) {
            rc = depth > 0 ? duplicate(ld, k, yaml_document_get_node(doc, dp->key)) : 0;
        } else if (dv->type == YAML_MAPPING_NODE && sv->type == YAML_MAPPING_NODE) {
            rc = merge(ld, doc, dp->value, sp.value, depth + 1);
        } else if (dv->type == YAML_SEQUENCE_NODE && sv->type == YAML_SEQUENCE_NODE) {
            size_t nitems = (size_t)(sv->data.sequence.items.top - sv->data.sequence.items.start);
            int dvi = dp->value;
            for (size_t j = 0; j < nitems; j++) {
                yaml_node_item_t item =
                    yaml_document_get_node(doc, sp.value)->data.sequence.items.start[j];
                if (!yaml_document_append_sequence_item(doc, dvi, item))
                    oom();
            }
        } else {
            rc = duplicate(ld, k, yaml_document_get_node(doc, dp->key));
        }
        if (rc < 0)
            return -1;
        mg_conf_pop(ld, at);
    }
    return 0;
}

/* ---- following includes ---- */

static int include_tree(struct mg_conf_ld *ld, yaml_document_t *doc, int root, int first,
                        int depth);

/* Parses `path` and appends it to doc; returns its root index (0 for an empty
 * file) or -1. */
static int load_one(struct mg_conf_ld *ld, yaml_document_t *doc, yaml_node_t *at, const char *path,
                    int depth)
{
    yaml_parser_t parser;
    yaml_document_t inc;
    char why[200];
    size_t len = 0;
    char *text = mg_conf_read_file(path, MAX_INCLUDE_SIZE, &len, why, sizeof(why));
    const char *name;
    int root, first;

    if (text == NULL)
        return mg_conf_fail(ld, at, "include: cannot read '%s': %s", path, why);
    if (ld->nfiles >= MG_CONF_MAX_FILES) {
        free(text);
        return mg_conf_fail(ld, at, "include: more than %d included files", MG_CONF_MAX_FILES - 1);
    }
    name = mg_conf_strdup(ld, path);
    if (!yaml_parser_initialize(&parser))
        oom();
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &inc)) {
        mg_conf_syntax_error(ld, &parser, name, text, len);
        yaml_parser_delete(&parser);
        free(text);
        return -1;
    }
    yaml_parser_delete(&parser);
    free(text);
    first = (int)(doc->nodes.top - doc->nodes.start) + 1;
    ld->files[ld->nfiles++] = (struct mg_conf_file){.first = first, .name = name};
    root = append_nodes(doc, &inc);
    yaml_document_delete(&inc);
    if (root == 0)
        return 0;
    if (yaml_document_get_node(doc, root)->type != YAML_MAPPING_NODE &&
        !mg_conf_is_null(yaml_document_get_node(doc, root)))
        return mg_conf_fail(ld, yaml_document_get_node(doc, root),
                            "an included file must hold a mapping");
    if (include_tree(ld, doc, root, first, depth + 1) < 0)
        return -1;
    return root;
}

/* `pattern` relative to the directory of the file that holds `at`. */
static void resolve(struct mg_conf_ld *ld, yaml_node_t *at, const char *pattern, char *out,
                    size_t cap)
{
    const char *file = mg_conf_file_of(ld, at), *slash = strrchr(file, '/');

    if (pattern[0] == '/' || slash == NULL)
        snprintf(out, cap, "%s", pattern);
    else
        snprintf(out, cap, "%.*s/%s", (int)(slash - file), file, pattern);
    if (out[0] == '/')
        mg_conf_normalize(out); /* errors then name "/etc/x/inc/a.yaml", not "conf/../inc" */
}

/* Includes every file matching one pattern, in name order, into `root`. */
static int include_pattern(struct mg_conf_ld *ld, yaml_document_t *doc, int root, int item,
                           int depth)
{
    yaml_node_t *at = yaml_document_get_node(doc, item);
    const char *pattern = scalar_of(at);
    char path[PATH_MAX];
    glob_t g;
    int rc;

    if (pattern == NULL || pattern[0] == '\0')
        return mg_conf_fail(ld, at, "include: expected a file name or a glob pattern");
    if (depth >= MAX_INCLUDE_DEPTH)
        return mg_conf_fail(ld, at, "include: nested more than %d deep (a cycle?)",
                            MAX_INCLUDE_DEPTH);
    resolve(ld, at, pattern, path, sizeof(path));
    rc = glob(path, GLOB_ERR, NULL, &g);
    if (rc == GLOB_NOMATCH && strpbrk(pattern, "*?[") != NULL)
        return 0; /* an empty conf.d is fine */
    if (rc == GLOB_NOMATCH)
        return mg_conf_fail(ld, at, "include: no such file '%s'", path);
    if (rc != 0) {
        globfree(&g);
        return mg_conf_fail(ld, at, "include: cannot expand '%s': %s", path,
                            rc == GLOB_NOSPACE ? "out of memory" : "read error");
    }
    for (size_t i = 0; i < g.gl_pathc && rc == 0; i++) {
        int inc = load_one(ld, doc, yaml_document_get_node(doc, item), g.gl_pathv[i], depth);
        if (inc < 0)
            rc = -1;
        else if (inc > 0 && yaml_document_get_node(doc, inc)->type == YAML_MAPPING_NODE)
            rc = merge(ld, doc, root, inc, 0);
    }
    globfree(&g);
    return rc;
}

/* Substitutes the variables of the file whose nodes start at `first`, then
 * follows the `include:` of its root mapping `root`. */
static int include_tree(struct mg_conf_ld *ld, yaml_document_t *doc, int root, int first, int depth)
{
    int last = (int)(doc->nodes.top - doc->nodes.start);
    yaml_node_pair_t *p;
    yaml_node_t *v;
    int rc = 0;

    if (expand_vars(ld, doc, first, last) < 0)
        return -1;
    if (yaml_document_get_node(doc, root)->type != YAML_MAPPING_NODE ||
        (p = find_pair(doc, root, "include")) == NULL)
        return 0;
    v = yaml_document_get_node(doc, p->value);
    if (v->type == YAML_SCALAR_NODE && !mg_conf_is_null(v)) {
        rc = include_pattern(ld, doc, root, p->value, depth);
    } else if (v->type == YAML_SEQUENCE_NODE) {
        int seq = p->value;
        size_t n = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
        for (size_t i = 0; i < n && rc == 0; i++)
            rc = include_pattern(ld, doc, root,
                                 yaml_document_get_node(doc, seq)->data.sequence.items.start[i],
                                 depth);
    } else if (!mg_conf_is_null(v)) {
        rc = mg_conf_fail(ld, v, "include: expected a file name, a glob or a list of them");
    }
    return rc;
}

int mg_conf_expand(struct mg_conf_ld *ld, yaml_document_t *doc)
{
    yaml_node_t *root = yaml_document_get_root_node(doc);

    ld->files[0] = (struct mg_conf_file){.first = 1, .name = ld->name};
    ld->nfiles = 1;
    if (root == NULL)
        return 0;
    return include_tree(ld, doc, 1, 1, 0);
}
