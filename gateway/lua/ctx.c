/*
 * The FFI functions behind `ctx`, `targets` and `gw` (lua/moongate/ctx.lua is
 * their Lua twin).
 *
 * Invariant: every function that touches a request first checks that a phase
 * runs (vm->cur) and that the caller names that request's slot, then that the
 * phase allows the operation; only then does it read or write vm->cur. Inputs
 * are validated here as well as in Lua (a header value with CR or LF would be
 * header injection), so the C side is safe whatever the Lua side does.
 *
 * Ownership: edits and the respond body are copied into the request's arena
 * (ctx->arena), within per-request budgets; nothing here mallocs.
 */
#include "lua/ctx.h"
#include "http/message.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "core/arena.h"
#include "core/log.h"
#include "lua/guard.h"
#include "lua/state-t.h"
#include "lua/vm.h"
#include "resilience/registry.h" /* MG_EWMA_TAU_MS */

static const struct mg_target_stats zero_stats;

const struct mg_ffi_api mg_ffi_api = {
    .size = sizeof(struct mg_ffi_api),
    .str_size = sizeof(struct mg_lua_str),
    .target_size = sizeof(struct mg_lua_target),
    .target_weight = offsetof(struct mg_lua_target, weight),
    .target_available = offsetof(struct mg_lua_target, available),
    .target_stats = offsetof(struct mg_lua_target, stats),
    .stats_active = offsetof(struct mg_target_stats, active),
    .stats_ewma_ns = offsetof(struct mg_target_stats, ewma_ns),
    .stats_failures = offsetof(struct mg_target_stats, failures),
    .stats_ewma_at_ms = offsetof(struct mg_target_stats, ewma_at_ms),
    .ewma_tau_ms = MG_EWMA_TAU_MS,
    .zero_stats = &zero_stats,
    .mg_ffi_ctx_str = mg_ffi_ctx_str,
    .mg_ffi_ctx_num = mg_ffi_ctx_num,
    .mg_ffi_req_header_get = mg_ffi_req_header_get,
    .mg_ffi_req_header_set = mg_ffi_req_header_set,
    .mg_ffi_resp_header_get = mg_ffi_resp_header_get,
    .mg_ffi_resp_header_set = mg_ffi_resp_header_set,
    .mg_ffi_respond = mg_ffi_respond,
    .mg_ffi_respond_header_add = mg_ffi_respond_header_add,
    .mg_ffi_plugin_enter = mg_ffi_plugin_enter,
    .mg_ffi_plugin_error = mg_ffi_plugin_error,
    .mg_ffi_log = mg_ffi_log,
    .mg_ffi_guard_message = mg_ffi_guard_message,
    .mg_ffi_now = mg_ffi_now,
    .mg_ffi_clock_ms = mg_ffi_clock_ms,
    .mg_ffi_hash = mg_ffi_hash,
    .mg_ffi_call_start_ns = mg_ffi_call_start_ns,
    .mg_ffi_target_ewma = mg_ffi_target_ewma,
    .mg_ffi_header_check = mg_ffi_header_check,
    .mg_ffi_header_put = mg_ffi_header_put,
};

/* Lua reads these fields as plain loads: they must be naturally aligned words
 * (relaxed atomic loads on every target we build for). */
_Static_assert(sizeof(_Atomic uint32_t) == 4 && sizeof(_Atomic uint64_t) == 8,
               "target stats fields read through the FFI");

#define PHASE_BIT(p) (1u << (p))

/* ------------------------------------------------------------------ helpers */

static struct mg_lua_ctx *current(struct mg_lua *vm, uint32_t slot)
{
    if (!vm || !vm->cur || vm->cur->slot != slot || slot == 0)
        return NULL;
    struct mg_lua_ctx *c = vm->cur;
    if (c->fill) { /* first look at the request: the proxy sets its inputs now */
        void (*fill)(struct mg_lua_ctx *, void *) = c->fill;
        c->fill = NULL;
        fill(c, c->fill_data);
    }
    return c;
}

/* The i-th header of a view whose elements are `stride` bytes apart. */
static const struct mg_lua_header *hdr_at(const struct mg_lua_header *h, size_t stride, size_t i)
{
    return (const struct mg_lua_header *)((const char *)h +
                                          i * (stride ? stride : sizeof(struct mg_lua_header)));
}

static bool phase_in(const struct mg_lua *vm, unsigned mask)
{
    return (PHASE_BIT(vm->phase) & mask) != 0;
}

static unsigned char lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c + 32) : c;
}

static bool name_eq(const char *a, size_t alen, const char *b, size_t blen)
{
    if (alen != blen)
        return false;
    for (size_t i = 0; i < alen; i++)
        if (lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
            return false;
    return true;
}

static int check_name(const char *name, size_t nlen)
{
    if (!name || nlen == 0 || nlen > MG_LUA_HEADER_NAME_MAX)
        return MG_FFI_BAD_NAME;
    for (size_t i = 0; i < nlen; i++)
        if (!mg_http_tchar[(unsigned char)name[i]])
            return MG_FFI_BAD_NAME;
            /* Lengths kept beside the names: this runs on every header edit, and
             * most names differ from all of them in length alone. */
#define MANAGED(s)                                                                                 \
    {                                                                                              \
        s, sizeof(s) - 1                                                                           \
    }
    static const struct {
        const char *p;
        size_t len;
    } managed[] = {
        MANAGED("content-length"),
        MANAGED("transfer-encoding"),
        MANAGED("connection"),
        MANAGED("keep-alive"),
        MANAGED("te"),
        MANAGED("trailer"),
        MANAGED("upgrade"),
        MANAGED("proxy-connection"),
    };
#undef MANAGED
    for (size_t i = 0; i < sizeof(managed) / sizeof(managed[0]); i++)
        if (name_eq(name, nlen, managed[i].p, managed[i].len))
            return MG_FFI_FORBIDDEN;
    return MG_FFI_OK;
}

/* field-value: VCHAR, obs-text, SP and HTAB; any other control byte (CR and LF
 * above all: header injection) is refused. */
static int check_value(const char *value, size_t vlen)
{
    for (size_t i = 0; i < vlen; i++) {
        unsigned char c = (unsigned char)value[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return MG_FFI_BAD_VALUE;
    }
    return MG_FFI_OK;
}

/* A field value without its optional whitespace (RFC 9110 section 5.5: OWS
 * around the value is not part of it; RFC 9113 section 8.2.1 makes an h2 field
 * value that starts or ends with SP or HTAB malformed): trimmed on every set,
 * so h1 and h2 clients see the same value. */
static void trim_ows(const char **p, size_t *n)
{
    while (*n && ((*p)[0] == ' ' || (*p)[0] == '\t'))
        (*p)++, (*n)--;
    while (*n && ((*p)[*n - 1] == ' ' || (*p)[*n - 1] == '\t'))
        (*n)--;
}

static int budget(struct mg_lua_ctx *c, size_t n)
{
    if (n > MG_LUA_EDIT_BYTES_MAX || c->edit_bytes + n > MG_LUA_EDIT_BYTES_MAX)
        return MG_FFI_TOO_LARGE;
    c->edit_bytes += (uint32_t)n;
    return MG_FFI_OK;
}

static struct mg_lua_str copy_str(struct mg_lua_ctx *c, const char *p, size_t n)
{
    struct mg_lua_str s = {"", 0}; /* "" keeps an empty value distinct from NULL (absent) */
    if (n) {
        char *d = mg_arena_alloc(c->arena, n);
        memcpy(d, p, n);
        s.p = d;
        s.len = n;
    }
    return s;
}

/* The first edit of that name; *dropping: some edit of that name replaces the
 * original headers (a set or a removal, not an add). */
static const struct mg_lua_edit *find_edit(const struct mg_lua_edit *e, const char *name,
                                           size_t nlen, bool *dropping)
{
    const struct mg_lua_edit *first = NULL;
    *dropping = false;
    for (; e; e = e->next)
        if (name_eq(e->name.p, e->name.len, name, nlen)) {
            first = first ? first : e;
            *dropping |= !e->append;
        }
    return first;
}

/* Sets (value.p != NULL), removes, or with `append` adds a header in an edit
 * list. A set or removal takes the place of the first edit of that name (its
 * position and spelling kept) and unlinks the later ones. The value is already
 * the request's (or the VM's, see put_header); a new edit copies the name
 * unless `own_name` (a prepared header's, which outlives the request). */
static int apply_edit(struct mg_lua_ctx *c, struct mg_lua_edit **list, const char *name,
                      size_t nlen, struct mg_lua_str v, bool append, bool own_name)
{
    /* A request has one Host (RFC 9112 3.2); with two, the gateway and the
     * upstream could each believe another one: an add replaces it. */
    if (append && list == &c->req_edits && name_eq(name, nlen, "host", 4))
        append = false;
    struct mg_lua_edit *kept = NULL, **pp = list;
    while (*pp) {
        struct mg_lua_edit *e = *pp;
        if (!name_eq(e->name.p, e->name.len, name, nlen)) {
            pp = &e->next;
        } else if (append && !e->append && !e->value.p) {
            e->value = v; /* an add after a removal is a set */
            return MG_FFI_OK;
        } else if (!append && !kept) {
            kept = e;
            e->value = v;
            e->append = false;
            pp = &e->next;
        } else if (!append) {
            *pp = e->next; /* arena memory: nothing to free */
        } else {
            pp = &e->next;
        }
    }
    if (kept)
        return MG_FFI_OK;
    *pp = mg_arena_calloc(c->arena, sizeof(**pp));
    (*pp)->name = own_name ? (struct mg_lua_str){name, nlen} : copy_str(c, name, nlen);
    (*pp)->value = v;
    (*pp)->append = append;
    return MG_FFI_OK;
}

static int edit_list(struct mg_lua_ctx *c, struct mg_lua_edit **list, const char *name, size_t nlen,
                     const char *value, size_t vlen, bool append)
{
    int rc = check_name(name, nlen);
    if (rc == MG_FFI_OK && value)
        rc = check_value(value, vlen);
    if (rc == MG_FFI_OK)
        rc = budget(c, nlen + (value ? vlen : 0));
    if (rc != MG_FFI_OK)
        return rc;
    if (value)
        trim_ows(&value, &vlen);
    struct mg_lua_str v = value ? copy_str(c, value, vlen) : (struct mg_lua_str){NULL, 0};
    return apply_edit(c, list, name, nlen, v, append, false);
}

static int edit(struct mg_lua_ctx *c, struct mg_lua_edit **list, const char *name, size_t nlen,
                const char *value, size_t vlen)
{
    return edit_list(c, list, name, nlen, value, vlen, false);
}

/* Looks a header up: a set value (or NOT_FOUND after a removal), else the
 * first original, else the first added value. */
static int lookup(const struct mg_lua_edit *edits, const struct mg_lua_header *h, size_t n,
                  size_t stride, const char *name, size_t nlen, struct mg_lua_str *out)
{
    if (!name || !out)
        return MG_FFI_BAD_NAME;
    bool dropping;
    const struct mg_lua_edit *e = find_edit(edits, name, nlen, &dropping);
    if (e && dropping) {
        for (; e && !(name_eq(e->name.p, e->name.len, name, nlen) && e->value.p); e = e->next)
            ;
        if (e)
            *out = e->value;
        return e ? MG_FFI_OK : MG_FFI_NOT_FOUND;
    }
    for (size_t i = 0; i < n; i++) {
        const struct mg_lua_header *hi = hdr_at(h, stride, i);
        if (name_eq(hi->name.p, hi->name.len, name, nlen)) {
            *out = hi->value;
            if (!out->p)
                *out = (struct mg_lua_str){"", 0};
            return MG_FFI_OK;
        }
    }
    if (e)
        *out = e->value;
    return e ? MG_FFI_OK : MG_FFI_NOT_FOUND;
}

/* Every value of a header as lookup() sees them: the originals (unless an
 * edit replaced them), then the edits' values, in order. Writes at most `cap`
 * into out and returns the total in *total. */
static int lookup_all(const struct mg_lua_edit *edits, const struct mg_lua_header *h, size_t n,
                      size_t stride, const char *name, size_t nlen, struct mg_lua_str *out,
                      size_t cap, size_t *total)
{
    bool dropping;
    size_t k = 0;
    find_edit(edits, name, nlen, &dropping);
    for (size_t i = 0; i < n && !dropping; i++) {
        const struct mg_lua_header *hi = hdr_at(h, stride, i);
        if (name_eq(hi->name.p, hi->name.len, name, nlen)) {
            if (k < cap)
                out[k] = hi->value.p ? hi->value : (struct mg_lua_str){"", 0};
            k++;
        }
    }
    for (const struct mg_lua_edit *e = edits; e; e = e->next)
        if (e->value.p && name_eq(e->name.p, e->name.len, name, nlen)) {
            if (k < cap)
                out[k] = e->value;
            k++;
        }
    *total = k;
    return MG_FFI_OK;
}

/* ------------------------------------------- for ctx_ext.c (same invariants) */

int mg_lua_ext_headers(struct mg_lua *vm, uint32_t slot, bool resp, const char *name, size_t nlen,
                       struct mg_lua_str *out, size_t cap, size_t *total)
{
    struct mg_lua_ctx *c = current(vm, slot);
    if (!c)
        return MG_FFI_BAD_CONTEXT;
    if (!name || !total || (cap && !out))
        return MG_FFI_BAD_NAME;
    if (resp && !phase_in(vm, PHASE_BIT(MG_LUA_RESPONSE) | PHASE_BIT(MG_LUA_LOG)))
        return MG_FFI_BAD_PHASE;
    if (resp)
        return lookup_all(c->resp_edits, c->resp_headers, c->n_resp_headers, c->resp_header_stride,
                          name, nlen, out, cap, total);
    return lookup_all(c->req_edits, c->req_headers, c->n_req_headers, c->req_header_stride, name,
                      nlen, out, cap, total);
}

int mg_lua_ext_add_header(struct mg_lua *vm, uint32_t slot, bool resp, const char *name,
                          size_t nlen, const char *value, size_t vlen)
{
    struct mg_lua_ctx *c = current(vm, slot);
    if (!c)
        return MG_FFI_BAD_CONTEXT;
    if (!value)
        return MG_FFI_BAD_VALUE;
    unsigned allowed = PHASE_BIT(MG_LUA_ACCESS) | PHASE_BIT(MG_LUA_BALANCE) |
                       (resp ? PHASE_BIT(MG_LUA_RESPONSE) : 0);
    if (!phase_in(vm, allowed))
        return MG_FFI_BAD_PHASE;
    return edit_list(c, resp ? &c->resp_edits : &c->req_edits, name, nlen, value, vlen, true);
}

struct mg_lua_ctx *mg_lua_ext_current(struct mg_lua *vm, uint32_t slot, unsigned phase_mask)
{
    struct mg_lua_ctx *c = current(vm, slot);
    return c && phase_in(vm, phase_mask) ? c : NULL;
}

struct mg_lua_str mg_lua_ext_copy(struct mg_lua_ctx *c, const char *p, size_t n)
{
    return copy_str(c, p, n);
}

/* ------------------------------------------------------------ ctx functions */

int mg_ffi_ctx_str(struct mg_lua *vm, uint32_t slot, int field, struct mg_lua_str *out)
{
    struct mg_lua_ctx *c = current(vm, slot);
    if (!c || !out)
        return MG_FFI_BAD_CONTEXT;
    switch (field) {
    case MG_FFI_METHOD:
        *out = c->method;
        break;
    case MG_FFI_PATH: /* as ctx:set_path() left it */
        *out = c->new_path.p ? c->new_path : c->path;
        break;
    case MG_FFI_QUERY:
        *out = c->query_set ? c->new_query : c->query;
        break;
    case MG_FFI_CLIENT_IP:
        *out = c->client_ip;
        break;
    case MG_FFI_ROUTE:
        *out = c->route;
        break;
    case MG_FFI_REQUEST_ID:
        *out = c->request_id;
        break;
    case MG_FFI_TLS_PROTOCOL:
        *out = c->tls_protocol;
        break;
    case MG_FFI_TLS_CIPHER:
        *out = c->tls_cipher;
        break;
    case MG_FFI_TLS_SNI:
        *out = c->tls_sni;
        break;
    case MG_FFI_TLS_CLIENT_SUBJECT:
        *out = c->tls_client_subject;
        break;
    case MG_FFI_PROTOCOL:
        *out = c->protocol;
        break;
    case MG_FFI_UPSTREAM_ADDRESS:
        if (!phase_in(vm, PHASE_BIT(MG_LUA_RESPONSE) | PHASE_BIT(MG_LUA_LOG)))
            return MG_FFI_NOT_FOUND;
        *out = c->upstream_address;
        break;
    default:
        return MG_FFI_BAD_CONTEXT;
    }
    return out->p ? MG_FFI_OK : MG_FFI_NOT_FOUND;
}

int mg_ffi_ctx_num(struct mg_lua *vm, uint32_t slot, int field, double *out)
{
    struct mg_lua_ctx *c = current(vm, slot);
    if (!c || !out)
        return MG_FFI_BAD_CONTEXT;
    if (!phase_in(vm, PHASE_BIT(MG_LUA_RESPONSE) | PHASE_BIT(MG_LUA_LOG)))
        return MG_FFI_NOT_FOUND;
    if (field == MG_FFI_STATUS) {
        *out = c->status;
        return c->status > 0 ? MG_FFI_OK : MG_FFI_NOT_FOUND;
    }
    if (field == MG_FFI_LATENCY) {
        *out = c->latency;
        return c->latency >= 0 ? MG_FFI_OK : MG_FFI_NOT_FOUND;
    }
    return MG_FFI_BAD_CONTEXT;
}

int mg_ffi_req_header_get(struct mg_lua *vm, uint32_t slot, const char *name, size_t nlen,
                          struct mg_lua_str *out)
{
    struct mg_lua_ctx *c = current(vm, slot);
    if (!c)
        return MG_FFI_BAD_CONTEXT;
    return lookup(c->req_edits, c->req_headers, c->n_req_headers, c->req_header_stride, name, nlen,
                  out);
}

int mg_ffi_req_header_set(struct mg_lua *vm, uint32_t slot, const char *name, size_t nlen,
                          const char *value, size_t vlen)
{
    struct mg_lua_ctx *c = current(vm, slot);
    if (!c)
        return MG_FFI_BAD_CONTEXT;
    if (!phase_in(vm, PHASE_BIT(MG_LUA_ACCESS) | PHASE_BIT(MG_LUA_BALANCE)))
        return MG_FFI_BAD_PHASE;
    return edit(c, &c->req_edits, name, nlen, value, vlen);
}

int mg_ffi_resp_header_get(struct mg_lua *vm, uint32_t slot, const char *name, size_t nlen,
                           struct mg_lua_str *out)
{
    struct mg_lua_ctx *c = current(vm, slot);
    if (!c)
        return MG_FFI_BAD_CONTEXT;
    if (!phase_in(vm, PHASE_BIT(MG_LUA_RESPONSE) | PHASE_BIT(MG_LUA_LOG)))
        return MG_FFI_BAD_PHASE;
    return lookup(c->resp_edits, c->resp_headers, c->n_resp_headers, c->resp_header_stride, name,
                  nlen, out);
}

int mg_ffi_resp_header_set(struct mg_lua *vm, uint32_t slot, const char *name, size_t nlen,
                           const char *value, size_t vlen)
{
    struct mg_lua_ctx *c = current(vm, slot);
    if (!c)
        return MG_FFI_BAD_CONTEXT;
    if (!phase_in(vm, PHASE_BIT(MG_LUA_ACCESS) | PHASE_BIT(MG_LUA_BALANCE) |
                          PHASE_BIT(MG_LUA_RESPONSE)))
        return MG_FFI_BAD_PHASE;
    return edit(c, &c->resp_edits, name, nlen, value, vlen);
}

/* A prepared header (gw.header()): checked once by mg_ffi_header_check(), its
 * strings kept alive by the VM's Lua side for the VM's life (and so past every
 * request bound to it), so an edit points at them: no check, no copy. */
int mg_ffi_header_check(const char *name, size_t nlen, const char *value, size_t vlen)
{
    int rc = check_name(name, nlen);
    if (rc == MG_FFI_OK && (!value || vlen > MG_LUA_EDIT_BYTES_MAX))
        rc = value ? MG_FFI_TOO_LARGE : MG_FFI_BAD_VALUE;
    return rc == MG_FFI_OK ? check_value(value, vlen) : rc;
}

int mg_ffi_header_put(struct mg_lua *vm, uint32_t slot, int resp, int append, const char *name,
                      size_t nlen, const char *value, size_t vlen)
{
    struct mg_lua_ctx *c = current(vm, slot);
    if (!c)
        return MG_FFI_BAD_CONTEXT;
    unsigned allowed = PHASE_BIT(MG_LUA_ACCESS) | PHASE_BIT(MG_LUA_BALANCE) |
                       (resp ? PHASE_BIT(MG_LUA_RESPONSE) : 0);
    if (!phase_in(vm, allowed))
        return MG_FFI_BAD_PHASE;
    int rc = budget(c, nlen + vlen);
    if (rc != MG_FFI_OK)
        return rc;
    trim_ows(&value, &vlen); /* still inside the prepared string */
    struct mg_lua_str v = {vlen ? value : "", vlen};
    return apply_edit(c, resp ? &c->resp_edits : &c->req_edits, name, nlen, v, append != 0, true);
}

int mg_ffi_respond(struct mg_lua *vm, uint32_t slot, int status, const char *body, size_t blen)
{
    struct mg_lua_ctx *c = current(vm, slot);
    if (!c)
        return MG_FFI_BAD_CONTEXT;
    if (!phase_in(vm, PHASE_BIT(MG_LUA_ACCESS)))
        return MG_FFI_BAD_PHASE;
    if (status < 200 || status > 599)
        return MG_FFI_BAD_VALUE;
    if (body && blen > MG_LUA_RESPOND_BODY_MAX)
        return MG_FFI_TOO_LARGE;
    c->respond.status = status;
    c->respond.body = body ? copy_str(c, body, blen) : (struct mg_lua_str){NULL, 0};
    c->respond.headers = NULL;
    return MG_FFI_OK;
}

int mg_ffi_respond_header_add(struct mg_lua *vm, uint32_t slot, const char *name, size_t nlen,
                              const char *value, size_t vlen)
{
    struct mg_lua_ctx *c = current(vm, slot);
    if (!c)
        return MG_FFI_BAD_CONTEXT;
    if (!phase_in(vm, PHASE_BIT(MG_LUA_ACCESS)) || !c->respond.status)
        return MG_FFI_BAD_PHASE;
    if (!value)
        return MG_FFI_BAD_VALUE;
    int rc = check_name(name, nlen);
    if (rc == MG_FFI_OK)
        rc = check_value(value, vlen);
    if (rc == MG_FFI_OK)
        rc = budget(c, nlen + vlen);
    if (rc != MG_FFI_OK)
        return rc;
    trim_ows(&value, &vlen);
    struct mg_lua_edit **pp = &c->respond.headers;
    while (*pp) /* appended: repeated names (Set-Cookie) are allowed here */
        pp = &(*pp)->next;
    *pp = mg_arena_calloc(c->arena, sizeof(**pp));
    (*pp)->name = copy_str(c, name, nlen);
    (*pp)->value = copy_str(c, value, vlen);
    return MG_FFI_OK;
}

/* --------------------------------------------------------- runner functions */

int mg_ffi_plugin_enter(struct mg_lua *vm, int plugin)
{
    uint64_t now = mg_lua_clock_ns();
    if (!vm || plugin < -1 || plugin >= (int)vm->nplugins)
        return MG_FFI_BAD_CONTEXT;
    mg_lua_plugin_close(vm, now, false);
    vm->cur_plugin = plugin;
    vm->t_plugin = now;
    return MG_FFI_OK;
}

static const char *plugin_name(const struct mg_lua *vm, int plugin)
{
    if (plugin >= 0 && (size_t)plugin < vm->nplugins)
        return vm->plugins[plugin].name;
    return "(runtime)";
}

int mg_ffi_plugin_error(struct mg_lua *vm, int plugin, const char *msg, size_t len)
{
    if (!vm || !msg)
        return MG_FFI_BAD_CONTEXT;
    mg_error("plugin %s: %s: %.*s", plugin_name(vm, plugin), mg_lua_phase_name(vm->phase),
             (int)(len > 1500 ? 1500 : len), msg);
    if (plugin == vm->cur_plugin)
        vm->cur_failed = true;
    return MG_FFI_OK;
}

int mg_ffi_log(struct mg_lua *vm, int level, const char *msg, size_t len)
{
    if (!vm || !msg)
        return MG_FFI_BAD_CONTEXT;
    if (level < MG_LOG_DEBUG || level > MG_LOG_ERROR)
        return MG_FFI_BAD_VALUE;
    MG_LOG((enum mg_log_level)level, "plugin %s: %.*s", plugin_name(vm, vm->cur_plugin),
           (int)(len > 1800 ? 1800 : len), msg);
    return MG_FFI_OK;
}

int mg_ffi_guard_message(struct mg_lua *vm, char *buf, size_t cap)
{
    if (!vm || !buf || cap == 0)
        return MG_FFI_BAD_CONTEXT;
    uint32_t limit = vm->budget_ms;
    if (!limit)
        limit = atomic_load_explicit(&vm->guard.limit_ms, memory_order_relaxed);
    snprintf(buf, cap, "exceeded the %u ms time limit (runaway loop?)", (unsigned)limit);
    return MG_FFI_OK;
}

double mg_ffi_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)(ts.tv_nsec / 1000) * 1e-6;
}

double mg_ffi_clock_ms(void)
{
    return (double)(mg_lua_clock_ns() / 1000000u);
}

uint32_t mg_ffi_hash(const char *p, size_t len, uint32_t seed)
{
    return XXH32(p ? p : "", p ? len : 0, seed);
}

const uint64_t *mg_ffi_call_start_ns(struct mg_lua *vm)
{
    return &vm->t_plugin;
}

/* exp(-x) for x > 0. Balancers read a target's ewma a few ms after its last
 * sample (x = age / 10 s, ~1e-4): there the series to x^4 is exact to 1e-11
 * relative and costs a fifth of exp(). */
static double decay(double x)
{
    if (x > 1.0 / 64)
        return exp(-x);
    return 1 - x * (1 - x * (0.5 - x * (1.0 / 6 - x * (1.0 / 24))));
}

double mg_ffi_target_ewma(const void *stats, uint64_t now_ns)
{
    double now_ms = (double)(now_ns / 1000000u); /* the clock of ewma_at_ms */
    const struct mg_target_stats *s = stats;
    uint64_t e = atomic_load_explicit(&s->ewma_ns, memory_order_relaxed);
    if (!e)
        return 0;
    double v = (double)e;
    double age = now_ms - (double)atomic_load_explicit(&s->ewma_at_ms, memory_order_relaxed);
    if (age > 0)
        v *= decay(age / MG_EWMA_TAU_MS);
    return v * 1e-9;
}
