/* Where a plugin's source is, and reading it (see pluginfile.h). */
#include "lua/pluginfile.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "core/log.h"
#include "process/paths.h"

static bool is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int mg_lua_find_plugin(const struct mg_config *cfg, const char *name, bool user_only, char *path,
                       size_t cap)
{
    for (size_t i = 0; i < cfg->nplugin_path; i++) {
        snprintf(path, cap, "%s/%s.lua", cfg->plugin_path[i], name);
        if (is_file(path))
            return 0;
    }
    if (user_only)
        return -1;
    snprintf(path, cap, "%s/%s.lua", mg_paths_plugins(), name);
    return is_file(path) ? 0 : -1;
}

void mg_lua_not_found_message(const struct mg_config *cfg, char *msg, size_t cap)
{
    size_t o = (size_t)snprintf(msg, cap, "not found (searched ");
    for (size_t i = 0; i < cfg->nplugin_path && o < cap; i++)
        o += (size_t)snprintf(msg + o, cap - o, "%s, ", cfg->plugin_path[i]);
    if (o < cap)
        snprintf(msg + o, cap - o, "%s)", mg_paths_plugins());
}

char *mg_lua_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t n = 0, cap = 0;
    if (!f)
        return NULL;
    for (;;) {
        if (n + 4096 > cap) {
            cap = cap ? cap * 2 : 8192;
            char *grown = realloc(buf, cap);
            if (!grown)
                mg_fatal("out of memory (lua runtime)");
            buf = grown;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
    }
    bool failed = ferror(f);
    fclose(f);
    if (failed) {
        free(buf);
        errno = EIO;
        return NULL;
    }
    *len = n;
    return buf;
}
