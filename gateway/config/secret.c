/*
 * `password_file:` / `token_file:` (DESIGN section 10.8): a secret read from a
 * file at load time, so it need not be written in the YAML in clear (Docker and
 * Kubernetes secrets are mounted as files). One trailing newline is stripped,
 * as `echo secret > file` writes one. The row's offset is the secret itself
 * (`password`, `token`), which must come before it in the table: giving both
 * is an error rather than a guess about which one wins.
 */
#include <stdlib.h>
#include <string.h>

#include "config/parse.h"

#define MAX_SECRET_SIZE 65536

int mg_conf_secret_file(struct mg_conf_ld *ld, yaml_node_t *n, void *dst)
{
    char **secret = dst, why[200];
    const char *path;
    char *abs, *text;
    size_t len = 0;

    if (n == NULL)
        return 0;
    if (*secret != NULL)
        return mg_conf_fail(ld, n, "give the secret inline or in a file, not both");
    if (mg_conf_scalar(ld, n, "a file name", &path) < 0 ||
        (abs = mg_conf_resolve_path(ld, n, path)) == NULL)
        return -1;
    if ((text = mg_conf_read_file(abs, MAX_SECRET_SIZE, &len, why, sizeof(why))) == NULL)
        return mg_conf_fail(ld, n, "cannot read '%.200s': %s", abs, why);
    if (len > 0 && text[len - 1] == '\n')
        text[--len] = '\0';
    if (len > 0 && text[len - 1] == '\r')
        text[--len] = '\0';
    if (len == 0 || memchr(text, '\0', len) != NULL || memchr(text, '\n', len) != NULL) {
        free(text);
        return mg_conf_fail(ld, n, "'%.200s' must hold one non-empty line", abs);
    }
    *secret = mg_conf_strdup(ld, text);
    /* The plaintext copy dies here; the snapshot keeps the only one. */
    memset(text, 0, len);
    free(text);
    return 0;
}
