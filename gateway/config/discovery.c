/*
 * The configuration of service discovery (DESIGN.md section 10.5): the
 * top-level `resolver` section, `upstreams.X.discovery`, and target addresses
 * that are host names. A name is not resolved here: the snapshot keeps it
 * (mg_target_conf.host, address.addrlen 0) and discovery/ turns it into every
 * address DNS gives, with the records' TTLs, off the workers' loops. IP
 * literals are parsed as before.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "config/parse.h"

#define RSV(m) offsetof(struct mg_resolver_conf, m)
#define DSC(m) offsetof(struct mg_discovery_conf, m)

static const char *const family_names[] = {"any", "ipv4", "ipv6", NULL};
static const char *const discovery_types[] = {"none", "srv", NULL};

static bool is_hostname(const char *h)
{
    if (*h == '\0' || strlen(h) > 253 || *h == '.' || *h == '-')
        return false;
    for (; *h; h++)
        if (!isalnum((unsigned char)*h) && *h != '-' && *h != '.' && *h != '_')
            return false;
    return true;
}

/* True when `host` is written as an address (or is malformed as one), so the
 * generic parser handles it and reports its errors. */
static bool looks_literal(const char *host)
{
    struct in_addr a;
    return host[0] == '\0' || strcmp(host, "*") == 0 || strchr(host, ':') != NULL ||
           inet_pton(AF_INET, host, &a) == 1 || strspn(host, "0123456789.") == strlen(host);
}

/* "ip:port", "[v6]:port" (parsed into *a), or "name:port" (kept as a name in
 * *host and *port, a->addrlen 0). */
static int name_or_address(struct mg_conf_ld *ld, yaml_node_t *n, const char *text,
                           struct mg_address *a, char **host_out, uint16_t *port_out)
{
    const char *colon = strrchr(text, ':');
    char host[256];
    uint64_t port;

    if (text[0] == '[' || colon == NULL || (size_t)(colon - text) >= sizeof host)
        return mg_conf_address(ld, n, text, a);
    memcpy(host, text, (size_t)(colon - text));
    host[colon - text] = '\0';
    if (looks_literal(host))
        return mg_conf_address(ld, n, text, a);
    if (!is_hostname(host))
        return mg_conf_fail(ld, n, "invalid address '%.100s': invalid host '%.100s'", text, host);
    if (mg_conf_parse_uint(colon + 1, &port) < 0 || port < 1 || port > 65535)
        return mg_conf_fail(ld, n, "invalid address '%.100s': port must be 1..65535", text);
    a->text = mg_conf_strdup(ld, text);
    *host_out = mg_conf_strdup(ld, host);
    *port_out = (uint16_t)port;
    return 0;
}

/* targets[].address: "ip:port", "[v6]:port", or "name:port" (kept as a name). */
int mg_conf_target_address(struct mg_conf_ld *ld, yaml_node_t *n, void *dst)
{
    struct mg_target_conf *t = dst;
    const char *text;

    if (n == NULL)
        return mg_conf_fail(ld, n, "missing address");
    if (mg_conf_scalar(ld, n, "\"host:port\"", &text) < 0)
        return -1;
    return name_or_address(ld, n, text, &t->address, &t->host, &t->port);
}

/* redis.address: the same forms; default 127.0.0.1:6379. */
int mg_conf_redis_address(struct mg_conf_ld *ld, yaml_node_t *n, void *dst)
{
    struct mg_redis_conf *r = dst;
    const char *text = "127.0.0.1:6379";

    if (n != NULL && mg_conf_scalar(ld, n, "\"host:port\"", &text) < 0)
        return -1;
    return name_or_address(ld, n, text, &r->address, &r->host, &r->port);
}

/* resolver.servers: `system` or a list of "ip:port" (port 53 when absent). */
static int parse_servers(struct mg_conf_ld *ld, yaml_node_t *n, void *dst)
{
    struct mg_resolver_conf *r = dst;
    size_t cnt;

    if (n == NULL)
        return 0;
    if (n->type == YAML_SCALAR_NODE && strcmp((const char *)n->data.scalar.value, "system") == 0)
        return 0;
    if (n->type != YAML_SEQUENCE_NODE)
        return mg_conf_fail(ld, n, "expected `system` or a list of \"ip:port\"");
    if (mg_conf_seq(ld, n, &cnt) < 0)
        return -1;
    if (cnt == 0)
        return mg_conf_fail(ld, n, "needs at least one server (or `system`)");
    r->servers = mg_conf_alloc(ld, cnt * sizeof(*r->servers));
    r->nservers = cnt;
    for (size_t i = 0; i < cnt; i++) {
        yaml_node_t *item = mg_conf_seq_item(ld, n, i);
        size_t at = mg_conf_push_index(ld, i);
        const char *s;
        char buf[300];
        struct sockaddr_storage ss;
        socklen_t len;
        char why[160];
        struct in_addr a4;
        if (mg_conf_scalar(ld, item, "\"ip:port\"", &s) < 0)
            return -1;
        /* A bare IPv4 address means port 53, as in resolv.conf. */
        if (inet_pton(AF_INET, s, &a4) == 1 && strlen(s) < 200) {
            snprintf(buf, sizeof buf, "%s:53", s);
            s = buf;
        }
        const char *colon = strrchr(s, ':');
        char ip[64];
        size_t hl = colon ? (size_t)(colon - s) : 0;
        bool v4 = colon && hl < sizeof ip &&
                  (memcpy(ip, s, hl), ip[hl] = '\0', inet_pton(AF_INET, ip, &a4) == 1);
        if (s[0] != '[' && !v4)
            return mg_conf_fail(ld, item, "invalid DNS server '%.100s': expected \"ip:port\"", s);
        if (mg_conf_parse_address(s, &ss, &len, why, sizeof why) < 0)
            return mg_conf_fail(ld, item, "invalid DNS server '%.100s': %s", s, why);
        r->servers[i] = mg_conf_strdup(ld, s);
        mg_conf_pop(ld, at);
    }
    return 0;
}

static int check_ttls(struct mg_conf_ld *ld, yaml_node_t *n, void *dst)
{
    const struct mg_resolver_conf *r = dst;

    if (r->max_ttl_ms >= r->min_ttl_ms)
        return 0;
    return mg_conf_fail(ld, n, "max_ttl (%llums) must not be less than min_ttl (%llums)",
                        (unsigned long long)r->max_ttl_ms, (unsigned long long)r->min_ttl_ms);
}

const struct mg_conf_field mg_conf_resolver_fields[] = {
    ROW("servers", MG_K_CUSTOM, 0, NULL, .fn = parse_servers), /* default system */
    ROW("min_ttl", MG_K_DURATION, RSV(min_ttl_ms), "1s", .lo = 1),
    ROW("max_ttl", MG_K_DURATION, RSV(max_ttl_ms), "5m", .lo = 1),
    ROW("timeout", MG_K_DURATION, RSV(timeout_ms), "2s", .lo = 1),
    ROW("family", MG_K_ENUM, RSV(family), "any", .sub = family_names),
    END,
};

int mg_conf_check_resolver(struct mg_conf_ld *ld, yaml_node_t *n, void *dst)
{
    return check_ttls(ld, n, dst);
}

static const struct mg_conf_field discovery_fields[] = {
    ROW("type", MG_K_ENUM, DSC(type), "srv", .sub = discovery_types),
    ROW("name", MG_K_STRING, DSC(name), NULL, .flags = MG_CF_REQUIRED),
    ROW("required", MG_K_BOOL, DSC(required), "false"),
    END,
};

/* Custom because the section is optional while `name` is required. */
int mg_conf_discovery(struct mg_conf_ld *ld, yaml_node_t *n, void *dst)
{
    struct mg_discovery_conf *d = dst;

    if (n == NULL)
        return 0;
    if (mg_conf_section(ld, n, discovery_fields, d) < 0)
        return -1;
    if (d->type != MG_DISCOVERY_SRV)
        return mg_conf_fail(ld, mg_conf_child(ld, n, "type"), "type must be srv");
    if (!is_hostname(d->name))
        return mg_conf_fail(ld, mg_conf_child(ld, n, "name"), "invalid DNS name '%.100s'", d->name);
    return 0;
}

int mg_conf_check_upstream_targets(struct mg_conf_ld *ld, yaml_node_t *map,
                                   struct mg_upstream_conf *up)
{
    if (up->ntargets == 0 && up->discovery.type == MG_DISCOVERY_NONE)
        return mg_conf_fail(ld, map, "needs targets or discovery");
    up->dynamic = up->discovery.type != MG_DISCOVERY_NONE;
    for (size_t i = 0; i < up->ntargets; i++)
        up->dynamic |= up->targets[i].host != NULL;
    return 0;
}
