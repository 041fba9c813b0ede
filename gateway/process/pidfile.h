/*
 * The pid file (DESIGN.md 10.6): locked with flock for the life of the process,
 * so a second gateway on the same file refuses to start, and `-s` can tell a
 * running gateway from a stale file. Next to it, PIDFILE.reload holds the
 * verdict of the latest reload for `moongate -s reload` to report.
 */
#ifndef MG_PIDFILE_H
#define MG_PIDFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* `configured` (the config's pid_file) or the default: /run/moongate.pid as
 * root, else $XDG_RUNTIME_DIR/moongate.pid or /tmp/moongate-$UID.pid. */
const char *mg_pidfile_path(const char *configured, char *buf, size_t cap);

struct mg_pidfile {
    int fd;       /* holds the lock; -1 when none */
    bool adopted; /* handed over by an upgrading process: its pid may still be in it */
    char path[4096];
};

/* Opens and locks `path` and empties it (mg_pidfile_write puts our pid in once
 * the gateway serves). Returns 0; or -1 with one
 * line in err ("already running as pid 123 (pid file /run/moongate.pid)"),
 * *running set to that pid when another process holds the lock. */
int mg_pidfile_acquire(struct mg_pidfile *p, const char *path, pid_t *running, char *err,
                       size_t errlen);
/* Takes over `fd`, the locked pid file an upgrading process handed over. */
void mg_pidfile_adopt(struct mg_pidfile *p, const char *path, int fd);
/* Rewrites the file with `pid` (a binary upgrade hands the file over). */
void mg_pidfile_write(struct mg_pidfile *p, pid_t pid);
/* Removes the file if it still holds our pid, then drops the lock. */
void mg_pidfile_release(struct mg_pidfile *p);

/* For `-s`: the pid of the gateway holding `path`'s lock. Returns it, or 0 with
 * a message in err (missing file, bad content, or no process holds the lock). */
pid_t mg_pidfile_running(const char *path, char *err, size_t errlen);

/* The reload verdict file: "PID SEQ ok VERSION" or "PID SEQ error MESSAGE". */
void mg_reload_status_write(const char *pid_path, unsigned long seq, bool ok, const char *text);
/* Reads it into `line` (empty when missing). */
void mg_reload_status_read(const char *pid_path, char *line, size_t cap);

#endif
