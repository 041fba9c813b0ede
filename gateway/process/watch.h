/*
 * watch_config (DESIGN.md 10.6): reload when the config file changes. The file
 * and its directory are both watched: editors replace files by rename, and a
 * Kubernetes ConfigMap volume swaps a `..data` symlink in the directory, which
 * the file's own watch never sees. Events are coalesced for a short moment and
 * a change is only reported when the file (followed through symlinks) has
 * another identity, size or mtime than at the last report.
 */
#ifndef MG_WATCH_H
#define MG_WATCH_H

#include <uv.h>

struct mg_watch;

/* Watches `path` on `loop` (the main thread's); on_change(arg) runs on it.
 * Returns NULL (after a warning) when the platform refuses the watch. */
struct mg_watch *mg_watch_start(uv_loop_t *loop, const char *path, void (*on_change)(void *),
                                void *arg);
/* Closes the handles; the memory goes in their close callbacks. NULL ignored. */
void mg_watch_stop(struct mg_watch *w);

#endif
