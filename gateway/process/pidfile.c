/* pid file and reload verdict (see pidfile.h). Blocking file I/O: main thread only. */
#include "process/pidfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

const char *mg_pidfile_path(const char *configured, char *buf, size_t cap)
{
    if (configured)
        return configured;
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    if (geteuid() == 0)
        snprintf(buf, cap, "/run/moongate.pid");
    else if (xdg && *xdg == '/')
        snprintf(buf, cap, "%s/moongate.pid", xdg);
    else
        snprintf(buf, cap, "/tmp/moongate-%ld.pid", (long)getuid());
    return buf;
}

static pid_t read_pid_fd(int fd)
{
    char buf[32];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    char *end;
    long pid = strtol(buf, &end, 10);
    return pid > 1 && (*end == '\n' || *end == '\0') ? (pid_t)pid : 0;
}

int mg_pidfile_acquire(struct mg_pidfile *p, const char *path, pid_t *running, char *err,
                       size_t errlen)
{
    *running = 0;
    p->fd = -1;
    snprintf(p->path, sizeof p->path, "%s", path);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open pid file %s: %s", path, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        *running = read_pid_fd(fd);
        if (e == EWOULDBLOCK && *running)
            snprintf(err, errlen, "already running as pid %ld (pid file %s is locked)",
                     (long)*running, path);
        else if (e == EWOULDBLOCK)
            snprintf(err, errlen, "already running, still starting (pid file %s is locked)", path);
        else
            snprintf(err, errlen, "cannot lock pid file %s: %s", path, strerror(e));
        close(fd);
        return -1;
    }
    p->fd = fd;
    p->adopted = false;
    /* Emptied now, our pid written once we serve (mg_pidfile_write): a pid in
     * the file means a gateway that answers. */
    if (ftruncate(fd, 0) != 0)
        fprintf(stderr, "moongate: cannot truncate pid file %s: %s\n", path, strerror(errno));
    return 0;
}

void mg_pidfile_adopt(struct mg_pidfile *p, const char *path, int fd)
{
    snprintf(p->path, sizeof p->path, "%s", path);
    p->fd = fd;
    p->adopted = true;
}

void mg_pidfile_write(struct mg_pidfile *p, pid_t pid)
{
    if (p->fd < 0)
        return;
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%ld\n", (long)pid);
    /* In place, not renamed: the lock is on this inode. */
    if (ftruncate(p->fd, 0) != 0 || pwrite(p->fd, buf, (size_t)n, 0) != n)
        fprintf(stderr, "moongate: cannot write pid file %s: %s\n", p->path, strerror(errno));
}

void mg_pidfile_release(struct mg_pidfile *p)
{
    if (p->fd < 0)
        return;
    pid_t holder = read_pid_fd(p->fd);
    if (holder == getpid() || (holder == 0 && !p->adopted)) {
        unlink(p->path);
        char status[4200];
        snprintf(status, sizeof status, "%s.reload", p->path);
        unlink(status);
    }
    close(p->fd);
    p->fd = -1;
}

pid_t mg_pidfile_running(const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "cannot read pid file %s: %s", path, strerror(errno));
        return 0;
    }
    pid_t pid = read_pid_fd(fd);
    if (!pid)
        snprintf(err, errlen, "bad pid file %s", path);
    else if (flock(fd, LOCK_SH | LOCK_NB) == 0) {
        /* Nobody holds the lock: the file is stale. */
        snprintf(err, errlen, "not running (pid file %s is stale: pid %ld)", path, (long)pid);
        pid = 0;
    }
    close(fd);
    return pid;
}

void mg_reload_status_write(const char *pid_path, unsigned long seq, bool ok, const char *text)
{
    char path[4200], tmp[4300];
    snprintf(path, sizeof path, "%s.reload", pid_path);
    snprintf(tmp, sizeof tmp, "%s.%ld.tmp", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f)
        return;
    bool good = fprintf(f, "%ld %lu %s %s\n", (long)getpid(), seq, ok ? "ok" : "error", text) > 0;
    good = fclose(f) == 0 && good;
    if (!good || rename(tmp, path) != 0)
        unlink(tmp);
}

void mg_reload_status_read(const char *pid_path, char *line, size_t cap)
{
    char path[4200];
    snprintf(path, sizeof path, "%s.reload", pid_path);
    line[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    if (!fgets(line, (int)cap, f))
        line[0] = '\0';
    fclose(f);
}
