/*
 * The top-level `shared_dicts: {NAME: SIZE}` section (DESIGN.md section 10.3):
 * process-wide dictionaries plugins reach with gw.shared_dict(NAME), each with
 * a byte budget (at least 8k, at most 1g).
 */
#include <string.h>

#include "config/config.h"
#include "config/parse.h"

#define MIN_BYTES (8u * 1024)
#define MAX_BYTES (1024ull * 1024 * 1024)

int mg_conf_shared_dicts(struct mg_conf_ld *ld, yaml_node_t *n, void *dst)
{
    struct mg_shdicts_conf *sd = dst;
    size_t cnt;
    if (n == NULL || mg_conf_is_null(n))
        return 0;
    if (mg_conf_map(ld, n, &cnt) < 0)
        return -1;
    sd->v = mg_conf_alloc(ld, (cnt ? cnt : 1) * sizeof *sd->v);
    sd->n = cnt;
    for (size_t i = 0; i < cnt; i++) {
        yaml_node_t *key = mg_conf_pair_key(ld, n, i), *val = mg_conf_pair_value(ld, n, i);
        const char *name = (const char *)key->data.scalar.value;
        size_t at = mg_conf_push_key(ld, name);
        const char *s;
        uint64_t bytes;
        if (name[0] == '\0' || strlen(name) > 64)
            return mg_conf_fail(ld, key, "a dictionary name has 1 to 64 characters");
        if (mg_conf_scalar(ld, val, "a size like 10m", &s) < 0)
            return -1;
        if (mg_parse_size(s, &bytes) < 0 || bytes < MIN_BYTES || bytes > MAX_BYTES)
            return mg_conf_fail(ld, val, "invalid size '%.64s' (expected 8k..1g, like 10m)", s);
        sd->v[i].name = mg_conf_strdup(ld, name);
        sd->v[i].bytes = bytes;
        mg_conf_pop(ld, at);
    }
    return 0;
}
