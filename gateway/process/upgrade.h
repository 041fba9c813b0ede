/*
 * Binary upgrade (DESIGN.md 10.6, SIGUSR2 / `moongate -s upgrade`), as nginx
 * and HAProxy do it: the running gateway starts the binary now at its path,
 * handing it the listening sockets (the same sockets, so nothing queued in the
 * kernel is lost), the locked pid file and a pipe. The new process takes the
 * sockets whose address its config still has, serves, writes its pid into the
 * pid file and says "ready" on the pipe; then the old one drains and exits.
 * If the new process exits or stays silent, the old one carries on.
 *
 * Environment of the new process: MOONGATE_UPGRADE_FDS (listening fds, comma
 * separated), MOONGATE_UPGRADE_PIDFD, MOONGATE_UPGRADE_READYFD.
 */
#ifndef MG_UPGRADE_H
#define MG_UPGRADE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <uv.h>

#include "config/config-t.h"

/* ---- in the new process ---- */

/* Reads (and removes) the environment above. Main thread, first thing. */
void mg_upgrade_inherit(void);
/* Whether this process was started by an upgrade. */
bool mg_upgrade_inherited(void);
/* The inherited pid-file fd (its lock is held), or -1. */
int mg_upgrade_pidfile_fd(void);
/* An inherited listening fd bound to `a`, taken out of the pool; or -1. */
int mg_upgrade_take_listener(const struct mg_address *a);
/* Closes the inherited listeners nobody took (addresses dropped by the new
 * config; surplus ones of kept addresses go to mg_workers_adopt_inherited
 * first). Before the workers run. */
void mg_upgrade_close_unused(void);
/* Tells the old process that this one serves. */
void mg_upgrade_report_ready(void);

/* ---- in the old process ---- */

struct mg_upgrade;
/* Called once: with the new pid (ok) or an error message (failed). */
typedef void (*mg_upgrade_cb)(void *arg, pid_t pid, const char *error);

/* Starts `exe` with `argv` and the fds. Returns NULL with err set when the
 * process cannot be started. The handle is freed after `done` ran and
 * mg_upgrade_free. */
struct mg_upgrade *mg_upgrade_start(uv_loop_t *loop, const char *exe, char *const *argv,
                                    const int *listen_fds, size_t nfds, int pidfile_fd,
                                    unsigned timeout_ms, mg_upgrade_cb done, void *arg, char *err,
                                    size_t errlen);
/* Closes the handles (the new process, if started, keeps running). NULL ignored. */
void mg_upgrade_free(struct mg_upgrade *u);

#endif
