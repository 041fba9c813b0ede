/* Binary upgrade (see upgrade.h). */
#include "process/upgrade.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"

#define MG_UPGRADE_MAX_FDS 1024

/* ---------------------------------------------------------- new process */

static int pool[MG_UPGRADE_MAX_FDS];
static size_t npool;
static int pid_fd = -1, ready_fd = -1;
static bool inherited;

static int env_fd(const char *name)
{
    const char *v = getenv(name);
    int fd = v ? atoi(v) : -1;
    unsetenv(name);
    if (fd > 2)
        fcntl(fd, F_SETFD, FD_CLOEXEC);
    return fd > 2 ? fd : -1;
}

void mg_upgrade_inherit(void)
{
    const char *fds = getenv("MOONGATE_UPGRADE_FDS");
    if (!fds)
        return;
    inherited = true;
    for (const char *p = fds; *p && npool < MG_UPGRADE_MAX_FDS;) {
        char *end;
        long fd = strtol(p, &end, 10);
        if (end == p)
            break;
        if (fd > 2) {
            fcntl((int)fd, F_SETFD, FD_CLOEXEC);
            pool[npool++] = (int)fd;
        }
        p = *end == ',' ? end + 1 : end;
    }
    unsetenv("MOONGATE_UPGRADE_FDS");
    pid_fd = env_fd("MOONGATE_UPGRADE_PIDFD");
    ready_fd = env_fd("MOONGATE_UPGRADE_READYFD");
}

bool mg_upgrade_inherited(void)
{
    return inherited;
}

int mg_upgrade_pidfile_fd(void)
{
    return pid_fd;
}

int mg_upgrade_take_listener(const struct mg_address *a)
{
    for (size_t i = 0; i < npool; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        if (getsockname(pool[i], (struct sockaddr *)&ss, &len) != 0 || len != a->addrlen ||
            memcmp(&ss, &a->addr, len) != 0)
            continue;
        int fd = pool[i];
        pool[i] = pool[--npool];
        return fd;
    }
    return -1;
}

void mg_upgrade_close_unused(void)
{
    for (size_t i = 0; i < npool; i++)
        close(pool[i]);
    npool = 0;
}

void mg_upgrade_report_ready(void)
{
    if (ready_fd < 0)
        return;
    if (write(ready_fd, "ready\n", 6) != 6)
        mg_warn("upgrade: cannot tell the old process: %s", strerror(errno));
    close(ready_fd);
    ready_fd = -1;
}

/* ---------------------------------------------------------- old process */

struct mg_upgrade {
    uv_process_t proc;
    uv_pipe_t pipe; /* the read end of the ready pipe */
    uv_timer_t timer;
    int handles_open;
    bool reported, exited;
    mg_upgrade_cb done;
    void *arg;
    char buf[16];
    size_t len;
};

static void report(struct mg_upgrade *u, const char *error)
{
    if (u->reported)
        return;
    u->reported = true;
    uv_timer_stop(&u->timer);
    if (error && !u->exited)
        uv_process_kill(&u->proc, SIGKILL); /* it never served: nothing to drain */
    u->done(u->arg, error ? 0 : u->proc.pid, error);
}

static void on_exit_cb(uv_process_t *p, int64_t status, int signum)
{
    struct mg_upgrade *u = p->data;
    u->exited = true;
    char msg[128];
    snprintf(msg, sizeof msg, "the new process exited (status %lld, signal %d) before it served",
             (long long)status, signum);
    report(u, msg);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    struct mg_upgrade *u = h->data;
    *b = uv_buf_init(u->buf + u->len, (unsigned)(sizeof u->buf - 1 - u->len));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct mg_upgrade *u = s->data;
    if (n > 0)
        u->len += (size_t)n;
    u->buf[u->len] = '\0';
    if (strstr(u->buf, "ready")) {
        uv_read_stop(s);
        report(u, NULL);
    } else if (n < 0 || u->len == sizeof u->buf - 1) {
        uv_read_stop(s);
        /* EOF without "ready": the exit callback tells why, if it exited. */
    }
}

static void on_timeout(uv_timer_t *t)
{
    report(t->data, "the new process did not report ready in time");
}

static void on_closed(uv_handle_t *h)
{
    struct mg_upgrade *u = h->data;
    if (--u->handles_open == 0)
        free(u);
}

struct mg_upgrade *mg_upgrade_start(uv_loop_t *loop, const char *exe, char *const *argv,
                                    const int *listen_fds, size_t nfds, int pidfile_fd,
                                    unsigned timeout_ms, mg_upgrade_cb done, void *arg, char *err,
                                    size_t errlen)
{
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) != 0) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        return NULL;
    }
    int maxfd = pfd[1] > pidfile_fd ? pfd[1] : pidfile_fd;
    for (size_t i = 0; i < nfds; i++)
        maxfd = listen_fds[i] > maxfd ? listen_fds[i] : maxfd;
    uv_stdio_container_t *stdio = calloc((size_t)maxfd + 1, sizeof *stdio);
    size_t envn = 0;
    extern char **environ;
    while (environ[envn])
        envn++;
    char **env = calloc(envn + 4, sizeof *env);
    size_t fdlen = nfds * 12 + 32;
    char *fds = malloc(fdlen), pidv[48], readyv[48];
    struct mg_upgrade *u = calloc(1, sizeof *u);
    if (!stdio || !env || !fds || !u)
        mg_fatal("out of memory (upgrade)");
    for (int i = 0; i < 3; i++)
        stdio[i] = (uv_stdio_container_t){.flags = UV_INHERIT_FD, .data.fd = i};
    size_t o = (size_t)snprintf(fds, fdlen, "MOONGATE_UPGRADE_FDS=");
    for (size_t i = 0; i < nfds; i++) {
        stdio[listen_fds[i]] =
            (uv_stdio_container_t){.flags = UV_INHERIT_FD, .data.fd = listen_fds[i]};
        o += (size_t)snprintf(fds + o, fdlen - o, "%s%d", i ? "," : "", listen_fds[i]);
    }
    stdio[pidfile_fd] = (uv_stdio_container_t){.flags = UV_INHERIT_FD, .data.fd = pidfile_fd};
    stdio[pfd[1]] = (uv_stdio_container_t){.flags = UV_INHERIT_FD, .data.fd = pfd[1]};
    snprintf(pidv, sizeof pidv, "MOONGATE_UPGRADE_PIDFD=%d", pidfile_fd);
    snprintf(readyv, sizeof readyv, "MOONGATE_UPGRADE_READYFD=%d", pfd[1]);
    size_t k = 0;
    for (size_t i = 0; i < envn; i++)
        if (strncmp(environ[i], "MOONGATE_UPGRADE_", 17) != 0)
            env[k++] = environ[i];
    env[k++] = fds;
    env[k++] = pidv;
    env[k++] = readyv;
    uv_process_options_t opts = {.exit_cb = on_exit_cb,
                                 .file = exe,
                                 .args = (char **)argv,
                                 .env = env,
                                 .stdio_count = maxfd + 1,
                                 .stdio = stdio};
    u->done = done;
    u->arg = arg;
    u->proc.data = u;
    int rc = uv_spawn(loop, &u->proc, &opts);
    close(pfd[1]);
    free(stdio);
    free(env);
    free(fds);
    if (rc) {
        snprintf(err, errlen, "cannot start %s: %s", exe, uv_strerror(rc));
        close(pfd[0]);
        u->handles_open = 1; /* a failed uv_spawn still needs its handle closed */
        uv_close((uv_handle_t *)&u->proc, on_closed);
        return NULL;
    }
    u->handles_open = 3;
    uv_pipe_init(loop, &u->pipe, 0);
    u->pipe.data = u;
    uv_pipe_open(&u->pipe, pfd[0]);
    uv_read_start((uv_stream_t *)&u->pipe, on_alloc, on_read);
    uv_timer_init(loop, &u->timer);
    u->timer.data = u;
    uv_timer_start(&u->timer, on_timeout, timeout_ms, 0);
    return u;
}

void mg_upgrade_free(struct mg_upgrade *u)
{
    if (!u)
        return;
    uv_close((uv_handle_t *)&u->proc, on_closed);
    uv_close((uv_handle_t *)&u->pipe, on_closed);
    uv_close((uv_handle_t *)&u->timer, on_closed);
}
