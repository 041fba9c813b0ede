/*
 * The schema that TLS brings (DESIGN.md section 10.1): `listen` entries, each a
 * "host:port" or a mapping {address, http2, proxy_protocol, tls}, and
 * `upstreams.X.tls`. Once a listener's `tls` (or an enabled upstream `tls`) is
 * read, its OpenSSL context is built here through tls/context.h, so a missing
 * or bad certificate fails the load like any other bad value: with the
 * file:line:col of what names it, the key path and the context module's reason.
 *
 * Ownership: a context is stored in the snapshot (mg_tls_conf.ctx,
 * mg_upstream_tls_conf.ctx) as soon as it is built, and free_snapshot (load.c)
 * frees it, after a failed load too. That walk is safe on a half-built snapshot
 * because every array here is zeroed, and its count set, before its items are
 * read: an entry holds a built context or NULL.
 */
#include <ctype.h>
#include <string.h>
#include <sys/stat.h>

#include "config/config.h"
#include "config/parse.h"
#include "tls/context.h"

#define REASON_MAX 512

/* ---- validators ---- */

/* A file named in the config: relative to the config file's directory. One
 * that exists but is no regular file (/dev/zero, a FIFO, a directory) is
 * refused here: OpenSSL's PEM reader would block or spin on it at load. A
 * missing one is left to the context module, whose reason names it. */
static int resolve(struct mg_conf_ld *ld, yaml_node_t *n, void *dst)
{
    char **path = dst;
    struct stat st;

    if ((*path = mg_conf_resolve_path(ld, n, *path)) == NULL)
        return -1;
    if (stat(*path, &st) == 0 && !S_ISREG(st.st_mode))
        return mg_conf_fail(ld, n, "'%.200s' is not a regular file", *path);
    return 0;
}

static int resolve_ca(struct mg_conf_ld *ld, yaml_node_t *n, void *dst)
{
    /* "system" is the default store; a CA file of that name is "./system". */
    if (strcmp(*(char **)dst, "system") == 0)
        return 0;
    return resolve(ld, n, dst);
}

/* SNI carries a DNS name (RFC 6066 section 3): no port, no wildcard, no blank. */
static int check_sni(struct mg_conf_ld *ld, yaml_node_t *n, void *dst)
{
    const char *s = *(char **)dst;

    for (const char *p = s; *p; p++) {
        if (!isalnum((unsigned char)*p) && *p != '.' && *p != '-' && *p != '_')
            return mg_conf_fail(ld, n, "invalid sni '%.64s' (expected a host name)", s);
    }
    return 0;
}

/* protocols: a set of names; default [TLSv1.2, TLSv1.3]. */
static int parse_protocols(struct mg_conf_ld *ld, yaml_node_t *n, void *dst)
{
    unsigned *mask = dst;
    size_t cnt;

    *mask = MG_TLS_V12 | MG_TLS_V13;
    if (n == NULL)
        return 0;
    if (mg_conf_seq(ld, n, &cnt) < 0)
        return -1;
    if (cnt == 0)
        return mg_conf_fail(ld, n, "needs at least one item");
    *mask = 0;
    for (size_t i = 0; i < cnt; i++) {
        yaml_node_t *item = mg_conf_seq_item(ld, n, i);
        size_t at = mg_conf_push_index(ld, i);
        const char *s;
        if (mg_conf_scalar(ld, item, "a protocol name", &s) < 0)
            return -1;
        if (strcmp(s, "TLSv1.2") == 0)
            *mask |= MG_TLS_V12;
        else if (strcmp(s, "TLSv1.3") == 0)
            *mask |= MG_TLS_V13;
        else
            return mg_conf_fail(ld, item, "invalid protocol '%.64s' (expected TLSv1.2 or TLSv1.3)",
                                s);
        mg_conf_pop(ld, at);
    }
    return 0;
}

/* upstreams.X.tls: a client certificate is a pair. `dst` is the section. */
int mg_conf_check_upstream_tls(struct mg_conf_ld *ld, yaml_node_t *n, void *dst)
{
    const struct mg_upstream_tls_conf *t = dst;
    const char *has = t->cert ? "cert" : "key", *lacks = t->cert ? "key" : "cert";
    size_t len;

    if ((t->cert == NULL) == (t->key == NULL))
        return 0;
    len = mg_conf_push_key(ld, has);
    mg_conf_fail(ld, mg_conf_child(ld, n, has), "'%s' needs '%s' (give both or neither)", has,
                 lacks);
    mg_conf_pop(ld, len);
    return -1;
}

/* ---- tables ---- */

#define CRT(m) offsetof(struct mg_tls_cert_conf, m)
#define TLS(m) offsetof(struct mg_tls_conf, m)
#define LST(m) offsetof(struct mg_listen_conf, m)
#define UTL(m) offsetof(struct mg_upstream_tls_conf, m)

static const struct mg_conf_field cert_fields[] = {
    ROW("cert", MG_K_STRING, CRT(cert), NULL, .flags = MG_CF_REQUIRED, .fn = resolve),
    ROW("key", MG_K_STRING, CRT(key), NULL, .flags = MG_CF_REQUIRED, .fn = resolve),
    END,
};

static int parse_certificates(struct mg_conf_ld *ld, yaml_node_t *n, void *dst);

static const struct mg_conf_field tls_fields[] = {
    ROW("certificates", MG_K_CUSTOM, 0, NULL, .flags = MG_CF_REQUIRED, .fn = parse_certificates),
    ROW("protocols", MG_K_CUSTOM, TLS(protocols), NULL, .fn = parse_protocols), /* both */
    ROW("ciphers", MG_K_STRING, TLS(ciphers), "intermediate"), /* or an OpenSSL cipher string */
    ROW("session_tickets", MG_K_BOOL, TLS(session_tickets), "true"),
    ROW("session_cache", MG_K_SIZE, TLS(session_cache), "10m"), /* bytes; 0 = off */
    ROW("handshake_timeout", MG_K_DURATION, TLS(handshake_timeout_ms), "10s", .lo = 1),
    ROW("client_ca", MG_K_STRING, TLS(client_ca), NULL, .flags = MG_CF_NULLABLE, .fn = resolve),
    END,
};

static int parse_tls(struct mg_conf_ld *ld, yaml_node_t *n, void *dst);

static const struct mg_conf_field listen_fields[] = {
    ROW("address", MG_K_ADDRESS, LST(address), NULL, .flags = MG_CF_REQUIRED),
    ROW("http2", MG_K_BOOL, LST(http2), "false"),
    ROW("proxy_protocol", MG_K_BOOL, LST(proxy_protocol), "false"),
    ROW("tls", MG_K_CUSTOM, LST(tls), NULL, .fn = parse_tls), /* absent or null: plain TCP */
    END,
};

const struct mg_conf_field mg_conf_upstream_tls_fields[] = {
    ROW("enabled", MG_K_BOOL, UTL(enabled), "false"),
    ROW("sni", MG_K_STRING, UTL(sni), NULL, .flags = MG_CF_NULLABLE, .fn = check_sni),
    ROW("verify", MG_K_BOOL, UTL(verify), "true"),
    ROW("ca", MG_K_STRING, UTL(ca), "system", .fn = resolve_ca), /* system | a CA file */
    ROW("cert", MG_K_STRING, UTL(cert), NULL, .flags = MG_CF_NULLABLE, .fn = resolve),
    ROW("key", MG_K_STRING, UTL(key), NULL, .flags = MG_CF_NULLABLE, .fn = resolve),
    END,
};

static int parse_certificates(struct mg_conf_ld *ld, yaml_node_t *n, void *dst)
{
    struct mg_tls_conf *t = dst;
    size_t cnt;

    if (mg_conf_seq(ld, n, &cnt) < 0)
        return -1;
    if (cnt == 0)
        return mg_conf_fail(ld, n, "needs at least one certificate");
    t->certs = mg_conf_alloc(ld, cnt * sizeof(*t->certs));
    t->ncerts = cnt;
    for (size_t i = 0; i < cnt; i++) {
        yaml_node_t *item = mg_conf_seq_item(ld, n, i);
        size_t at = mg_conf_push_index(ld, i);
        if (item->type != YAML_MAPPING_NODE)
            return mg_conf_fail(ld, item, "expected a mapping like {cert: FILE, key: FILE}");
        if (mg_conf_section(ld, item, cert_fields, &t->certs[i]) < 0)
            return -1;
        mg_conf_pop(ld, at);
    }
    return 0;
}

static int parse_tls(struct mg_conf_ld *ld, yaml_node_t *n, void *dst)
{
    struct mg_tls_conf **t = dst;

    *t = NULL;
    if (n == NULL || mg_conf_is_null(n))
        return 0;
    *t = mg_conf_alloc(ld, sizeof(**t));
    return mg_conf_section(ld, n, tls_fields, *t);
}

/* ---- contexts: build, and point a failure at what caused it ---- */

/* Something the context module's reason may name, and where the file says it.
 * Its reasons read "SUBJECT: why" (tls/context.c), the subject being a file's
 * absolute path or a key's name ("ciphers \"...\"", "protocols"). */
struct suspect {
    const char *file;  /* a path from the config (absolute), or NULL */
    const char *lead;  /* else: a word a reason about this key starts with */
    yaml_node_t *node; /* its value in the file; NULL: not written (skipped) */
    const char *list;  /* "certificates" for a certificate's file, else NULL */
    size_t index;      /* in `list` */
    const char *key;   /* "cert", "key", "client_ca", "ca", "ciphers", ... */
};

static bool name_char(char c)
{
    return isalnum((unsigned char)c) || c == '_' || c == '-' || c == '.' || c == '/';
}

/* Where `reason` first names `file` as a whole word (a sentence's final '.'
 * ends it), or NULL. */
static const char *find_name(const char *reason, const char *file)
{
    size_t len = strlen(file);

    if (len == 0)
        return NULL;
    for (const char *p = reason; (p = strstr(p, file)) != NULL; p++) {
        const char *end = p + len;
        if (p > reason && name_char(p[-1]))
            continue;
        if (*end == '.' ? name_char(end[1]) : name_char(*end))
            continue;
        return p;
    }
    return NULL;
}

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');

    return slash ? slash + 1 : path;
}

/* The suspect the reason names first (its subject); else the only file whose
 * base name it names; else -1. */
static int find_suspect(const struct suspect *s, size_t n, const char *reason)
{
    const char *first = NULL, *p;
    int found = -1;

    for (size_t i = 0; i < n; i++) {
        size_t len = s[i].lead ? strlen(s[i].lead) : 0;
        if (s[i].node == NULL)
            continue;
        if (s[i].file)
            p = find_name(reason, s[i].file);
        else
            p = s[i].lead && strncmp(reason, s[i].lead, len) == 0 &&
                        (reason[len] == ' ' || reason[len] == ':')
                    ? reason
                    : NULL;
        if (p != NULL && (first == NULL || p < first)) {
            first = p;
            found = (int)i;
        }
    }
    if (found >= 0)
        return found;
    for (size_t i = 0; i < n; i++) {
        if (s[i].node == NULL || s[i].file == NULL || !find_name(reason, base_name(s[i].file)))
            continue;
        if (found >= 0 && strcmp(s[found].file, s[i].file) != 0)
            return -1; /* two files of that name: the `tls` key is the honest pointer */
        if (found < 0)
            found = (int)i;
    }
    return found;
}

/* The key node of `key` in mapping `map` (errors point at a section's key). */
static yaml_node_t *key_node(struct mg_conf_ld *ld, yaml_node_t *map, const char *key)
{
    size_t npairs = (size_t)(map->data.mapping.pairs.top - map->data.mapping.pairs.start);

    for (size_t i = 0; i < npairs; i++) {
        yaml_node_t *k = mg_conf_pair_key(ld, map, i);
        if (strcmp((const char *)k->data.scalar.value, key) == 0)
            return k;
    }
    return map;
}

/* Fails the load for a context that could not be built. The current key path
 * is the section's (".tls"): it is extended to the file the reason names. */
static int blame(struct mg_conf_ld *ld, yaml_node_t *tls_key, const struct suspect *s, size_t n,
                 const char *reason)
{
    int i = find_suspect(s, n, reason);
    size_t at = ld->pathlen;

    if (reason[0] == '\0')
        reason = "cannot build the TLS context";
    if (i < 0)
        return mg_conf_fail(ld, tls_key, "%s", reason);
    if (s[i].list) {
        mg_conf_push_key(ld, s[i].list);
        mg_conf_push_index(ld, s[i].index);
    }
    mg_conf_push_key(ld, s[i].key);
    mg_conf_fail(ld, s[i].node, "%s", reason);
    mg_conf_pop(ld, at);
    return -1;
}

/* Builds the server context of listener `l`, whose mapping is `item`. */
static int build_server(struct mg_conf_ld *ld, yaml_node_t *item, struct mg_tls_conf *t)
{
    yaml_node_t *tls = mg_conf_child(ld, item, "tls");
    yaml_node_t *certs = mg_conf_child(ld, tls, "certificates");
    struct suspect *s;
    char reason[REASON_MAX] = "";
    size_t n = 0, at;

    t->ctx = mg_tls_server_new(t, reason, sizeof(reason));
    if (t->ctx != NULL)
        return 0;
    s = mg_conf_alloc(ld, (2 * t->ncerts + 3) * sizeof(*s));
    for (size_t i = 0; i < t->ncerts; i++) {
        yaml_node_t *entry = mg_conf_seq_item(ld, certs, i);
        s[n++] = (struct suspect){t->certs[i].cert, NULL, mg_conf_child(ld, entry, "cert"),
                                  "certificates",   i,    "cert"};
        s[n++] = (struct suspect){t->certs[i].key, NULL, mg_conf_child(ld, entry, "key"),
                                  "certificates",  i,    "key"};
    }
    s[n++] = (struct suspect){t->client_ca, NULL, mg_conf_child(ld, tls, "client_ca"),
                              NULL,         0,    "client_ca"};
    s[n++] =
        (struct suspect){NULL, "ciphers", mg_conf_child(ld, tls, "ciphers"), NULL, 0, "ciphers"};
    s[n++] = (struct suspect){NULL, "protocols", mg_conf_child(ld, tls, "protocols"),
                              NULL, 0,           "protocols"};
    at = mg_conf_push_key(ld, "tls");
    blame(ld, key_node(ld, item, "tls"), s, n, reason);
    mg_conf_pop(ld, at);
    return -1;
}

int mg_conf_upstream_tls_build(struct mg_conf_ld *ld, yaml_node_t *map,
                               struct mg_upstream_tls_conf *t)
{
    yaml_node_t *tls = mg_conf_child(ld, map, "tls"), *ca;
    char reason[REASON_MAX] = "";
    struct suspect s[3];
    size_t at;

    if (!t->enabled)
        return 0;
    t->ctx = mg_tls_client_new(t, reason, sizeof(reason));
    if (t->ctx != NULL)
        return 0;
    ca = mg_conf_child(ld, tls, "ca");
    s[0] = (struct suspect){
        strcmp(t->ca, "system") ? t->ca : NULL, "system CA store", ca, NULL, 0, "ca"};
    s[1] = (struct suspect){t->cert, NULL, mg_conf_child(ld, tls, "cert"), NULL, 0, "cert"};
    s[2] = (struct suspect){t->key, NULL, mg_conf_child(ld, tls, "key"), NULL, 0, "key"};
    at = mg_conf_push_key(ld, "tls");
    blame(ld, key_node(ld, map, "tls"), s, 3, reason);
    mg_conf_pop(ld, at);
    return -1;
}

/* ---- listen ---- */

static bool same_address(const struct mg_address *a, const struct mg_address *b)
{
    return strcmp(a->text, b->text) == 0 ||
           (a->addrlen == b->addrlen && memcmp(&a->addr, &b->addr, a->addrlen) == 0);
}

/* Entry `i` of `ls`: "host:port", or a mapping read with listen_fields. */
static int parse_listener(struct mg_conf_ld *ld, yaml_node_t *item, struct mg_listen_conf *ls,
                          size_t i)
{
    struct mg_listen_conf *l = &ls[i];
    yaml_node_t *at = item;
    const char *s;

    if (item->type == YAML_MAPPING_NODE) {
        if (mg_conf_section(ld, item, listen_fields, l) < 0)
            return -1;
        at = mg_conf_child(ld, item, "address");
    } else if (mg_conf_scalar(ld, item, "an address or a mapping with address", &s) < 0 ||
               mg_conf_address(ld, item, s, &l->address) < 0) {
        return -1;
    }
    for (size_t j = 0; j < i; j++) {
        if (!same_address(&ls[j].address, &l->address))
            continue;
        if (at != item)
            mg_conf_push_key(ld, "address");
        if (strcmp(ls[j].address.text, l->address.text) == 0)
            return mg_conf_fail(ld, at, "duplicate address '%.100s'", l->address.text);
        return mg_conf_fail(ld, at, "duplicate address '%.100s' (listen[%zu] '%.100s' is the same)",
                            l->address.text, j, ls[j].address.text);
    }
    /* After the duplicate check: no context is built for an entry that fails. */
    if (l->tls)
        l->tls->http2 = l->http2; /* ALPN offers h2 only where it is served */
    return l->tls ? build_server(ld, item, l->tls) : 0;
}

int mg_conf_listen(struct mg_conf_ld *ld, yaml_node_t *n, void *dst)
{
    struct mg_config *cfg = dst;
    size_t cnt;

    if (mg_conf_seq(ld, n, &cnt) < 0)
        return -1;
    if (cnt == 0)
        return mg_conf_fail(ld, n, "needs at least one item");
    cfg->listen = mg_conf_alloc(ld, cnt * sizeof(*cfg->listen));
    cfg->nlisten = cnt;
    for (size_t i = 0; i < cnt; i++) {
        size_t at = mg_conf_push_index(ld, i);
        if (parse_listener(ld, mg_conf_seq_item(ld, n, i), cfg->listen, i) < 0)
            return -1;
        mg_conf_pop(ld, at);
    }
    return 0;
}
