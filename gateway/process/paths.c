/* Lua file locations (see paths.h), resolved once. */
#include "process/paths.h"

#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

static char lua_dir[PATH_MAX];
static char plugin_dir[PATH_MAX];
static uv_once_t once = UV_ONCE_INIT;

static bool is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Sets both dirs from a share dir holding lua/ and plugins/, if it has them. */
static bool use_share(const char *share)
{
    char lua[PATH_MAX];
    if (snprintf(lua, sizeof lua, "%s/lua", share) >= (int)sizeof lua || !is_dir(lua))
        return false;
    snprintf(lua_dir, sizeof lua_dir, "%s", lua);
    snprintf(plugin_dir, sizeof plugin_dir, "%s/plugins", share);
    return true;
}

static void resolve(void)
{
    const char *home = getenv("MOONGATE_HOME");
    if (home && *home) {
        /* Taken as given, so a wrong value shows in the errors that follow. */
        snprintf(lua_dir, sizeof lua_dir, "%s/lua", home);
        snprintf(plugin_dir, sizeof plugin_dir, "%s/plugins", home);
        return;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[n > 0 ? n : 0] = '\0';
    size_t blen = strlen(MG_BUILD_DIR);
    if (n > 0 && strncmp(exe, MG_BUILD_DIR, blen) == 0 && exe[blen] == '/') {
        /* The build tree's binary or unit tests: the source tree's files. */
        snprintf(lua_dir, sizeof lua_dir, "%s", MG_LUA_DIR);
        snprintf(plugin_dir, sizeof plugin_dir, "%s", MG_PLUGIN_DIR);
        return;
    }
    char *slash = n > 0 ? strrchr(exe, '/') : NULL;
    if (slash) {
        char share[PATH_MAX + 32];
        *slash = '\0';
        snprintf(share, sizeof share, "%s/../share/moongate", exe);
        if (use_share(share))
            return;
    }
    /* The compiled-in prefix, even if missing: the errors then name it. */
    snprintf(lua_dir, sizeof lua_dir, "%s/lua", MG_SHARE_DIR);
    snprintf(plugin_dir, sizeof plugin_dir, "%s/plugins", MG_SHARE_DIR);
}

const char *mg_paths_lua(void)
{
    uv_once(&once, resolve);
    return lua_dir;
}

const char *mg_paths_plugins(void)
{
    uv_once(&once, resolve);
    return plugin_dir;
}
