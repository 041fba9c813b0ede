/* Config file watch (see watch.h). Main thread: stat() on its own loop is fine. */
#include "process/watch.h"

#include <libgen.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/log.h"

/* Kubelet and editors make several changes per update: report once. */
#define MG_WATCH_SETTLE_MS 100

struct mg_watch {
    uv_fs_event_t dir_ev, file_ev;
    uv_timer_t settle;
    int handles_open;
    bool file_watched;
    struct stat seen;
    void (*on_change)(void *);
    void *arg;
    char path[PATH_MAX];
    char dir[PATH_MAX];
};

static bool same(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

static void on_event(uv_fs_event_t *h, const char *name, int events, int status);

/* The file's own watch follows the current target: re-armed after each change. */
static void watch_file(struct mg_watch *w)
{
    if (w->file_watched)
        uv_fs_event_stop(&w->file_ev);
    w->file_watched = uv_fs_event_start(&w->file_ev, on_event, w->path, 0) == 0;
}

static void on_settled(uv_timer_t *t)
{
    struct mg_watch *w = t->data;
    struct stat st;
    if (stat(w->path, &st) != 0)
        return; /* mid-swap or removed: the next event tells */
    watch_file(w);
    if (same(&st, &w->seen))
        return;
    w->seen = st;
    mg_info("%s changed: reloading (watch_config)", w->path);
    w->on_change(w->arg);
}

static void on_event(uv_fs_event_t *h, const char *name, int events, int status)
{
    struct mg_watch *w = h->data;
    uv_timer_start(&w->settle, on_settled, MG_WATCH_SETTLE_MS, 0);
}

struct mg_watch *mg_watch_start(uv_loop_t *loop, const char *path, void (*on_change)(void *),
                                void *arg)
{
    struct mg_watch *w = calloc(1, sizeof *w);
    if (!w)
        mg_fatal("out of memory (config watch)");
    snprintf(w->path, sizeof w->path, "%s", path);
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", path);
    snprintf(w->dir, sizeof w->dir, "%s", dirname(tmp));
    w->on_change = on_change;
    w->arg = arg;
    stat(w->path, &w->seen);
    uv_fs_event_init(loop, &w->dir_ev);
    uv_fs_event_init(loop, &w->file_ev);
    uv_timer_init(loop, &w->settle);
    w->dir_ev.data = w->file_ev.data = w->settle.data = w;
    w->handles_open = 3;
    int rc = uv_fs_event_start(&w->dir_ev, on_event, w->dir, 0);
    if (rc) {
        mg_warn("watch_config: cannot watch %s: %s", w->dir, uv_strerror(rc));
        mg_watch_stop(w);
        return NULL;
    }
    watch_file(w);
    return w;
}

static void on_closed(uv_handle_t *h)
{
    struct mg_watch *w = h->data;
    if (--w->handles_open == 0)
        free(w);
}

void mg_watch_stop(struct mg_watch *w)
{
    if (!w)
        return;
    uv_close((uv_handle_t *)&w->dir_ev, on_closed);
    uv_close((uv_handle_t *)&w->file_ev, on_closed);
    uv_close((uv_handle_t *)&w->settle, on_closed);
}
