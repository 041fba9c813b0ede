/*
 * The `forwarded` section (DESIGN.md section 10.8): the proxies whose
 * X-Forwarded-For is believed (address blocks, parsed here into the snapshot
 * so matching a request costs no parsing), and what the gateway sends
 * upstream. Each bad block is reported at its own list item.
 */
#include <string.h>

#include "config/parse.h"
#include "net/cidr.h"

_Static_assert(sizeof(enum mg_xff_mode) == sizeof(int), "MG_K_ENUM stores an int");

#define FWD(m) offsetof(struct mg_forwarded_conf, m)

static int parse_trusted(struct mg_conf_ld *ld, yaml_node_t *n, void *dst)
{
    struct mg_forwarded_conf *f = dst;
    size_t cnt = 0;
    if (n && mg_conf_seq(ld, n, &cnt) < 0)
        return -1;
    f->trusted_proxies = cnt ? mg_conf_alloc(ld, cnt * sizeof *f->trusted_proxies) : NULL;
    f->ntrusted_proxies = cnt;
    for (size_t i = 0; i < cnt; i++) {
        yaml_node_t *item = mg_conf_seq_item(ld, n, i);
        size_t at = mg_conf_push_index(ld, i);
        const char *s, *why;
        if (mg_conf_scalar(ld, item, "an address block like \"10.0.0.0/8\"", &s) < 0)
            return -1;
        if (!mg_cidr_parse(s, &f->trusted_proxies[i], &why))
            return mg_conf_fail(ld, item, "invalid address block '%.64s': %s", s, why);
        mg_conf_pop(ld, at);
    }
    return 0;
}

static const char *const xff_names[] = {"append", "replace", "off", NULL};

const struct mg_conf_field mg_conf_forwarded_fields[] = {
    ROW("trusted_proxies", MG_K_CUSTOM, 0, NULL, .fn = parse_trusted),
    ROW("x_forwarded_for", MG_K_ENUM, FWD(x_forwarded_for), "append", .sub = xff_names),
    ROW("forwarded_header", MG_K_BOOL, FWD(forwarded_header), "false"),
    END,
};
