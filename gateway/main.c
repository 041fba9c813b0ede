/*
 * moongate's command line (DESIGN.md section 2) and process lifecycle.
 *
 * The main thread loads the configuration, takes the pid file's lock, starts
 * one worker thread per `workers`, and then only handles signals on its own
 * small loop: SIGTERM/SIGINT make /ready fail, wait `shutdown_delay`, then drain
 * the workers (a second one stops them at once); SIGHUP reloads the file. It
 * owns the configuration snapshot and frees it after every worker ended.
 * Process concerns (pid file, fd limit, systemd, file paths) live in process/.
 */
#include <errno.h>
#include <hiredis/hiredis.h>
#include <llhttp.h>
#include <luajit.h>
#include <openssl/crypto.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>
#include <yaml.h>

#include "config/config.h"
#include "core/log.h"
#include "discovery/resolver.h"
#include "idempotency/store_memory.h"
#include "lua/metrics_hook.h"
#include "lua/spec.h"
#include "lua/vm.h"
#include "obs/accesslog.h"
#include "obs/admin.h"
#include "obs/metrics.h"
#include "registry_hooks.h"
#include "exchange/exchange.h"
#include "tls/context.h"
#include "process/notify.h"
#include "process/pidfile.h"
#include "process/probe.h"
#include "process/rlimit.h"
#include "process/upgrade.h"
#include "process/watch.h"
#include "resilience/registry.h"
#include "worker.h"

struct mg_main {
    uv_loop_t *loop;
    const char *conf_path;
    struct mg_config *cfg;
    struct mg_metrics *metrics; /* the current generation */
    struct mg_accesslog *accesslog;
    struct mg_idem_memtable *idem_table; /* the embedded idempotency store */
    struct mg_admin *admin;
    struct mg_discovery *discovery; /* follows DNS names for cfg, or NULL */
    struct mg_worker *workers;
    size_t nworkers;
    uv_async_t worker_done;
    atomic_int workers_running;
    int stop_signals;
    uv_signal_t sig_term, sig_int, sig_hup, sig_usr1, sig_usr2;
    struct mg_upgrade *upgrade; /* SIGUSR2: a new binary is starting */
    uv_timer_t delay_timer;     /* shutdown_delay: serving with /ready failing */
    struct mg_pidfile pidfile;
    char pid_path[4096];
    unsigned long reload_seq; /* for -s reload: which verdict is new */
    struct mg_watch *watch;   /* watch_config: true */
    uv_timer_t ticket_timer;  /* rotates the TLS session-ticket keys */
};

/* TLS session-ticket keys rotate every 12 h; the previous one still decrypts,
 * so a ticket lives between 12 and 24 h. */
#define MG_TICKET_ROTATION_MS (12ull * 3600 * 1000)

static void on_ticket_timer(uv_timer_t *t)
{
    (void)t;
    mg_tls_tickets_rotate();
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: moongate -c FILE                run in the foreground, logs to stderr\n"
            "       moongate -t -c FILE             validate FILE (YAML and plugins) and exit\n"
            "       moongate -s reload -c FILE      reload the running instance (found through\n"
            "                                       pid_file); exits 1 with the error if it\n"
            "                                       rejects the file\n"
            "       moongate -s stop -c FILE        drain and stop the running instance\n"
            "       moongate -s upgrade -c FILE     start the binary now at this path on the\n"
            "                                       inherited listeners, then drain the old one\n"
            "       moongate -V                     print versions\n"
            "       moongate -h | --help            this help\n"
            "\n"
            "signals: SIGHUP reload, SIGTERM/SIGINT graceful stop (a second one stops at\n"
            "once), SIGUSR1 reopen the access log, SIGUSR2 binary upgrade\n"
            "environment: MOONGATE_HOME (dir with lua/ and plugins/), MOONGATE_LOG_LEVEL\n"
            "(debug|info|warn|error)\n"
            "exit status: 0 ok, 1 error (bad config, already running, bind failure,\n"
            "rejected reload), 2 bad usage\n"
            "see moongate(8)\n");
}

static void print_versions(void)
{
    printf("moongate %s\n", MG_VERSION);
    printf("libuv %s\n", uv_version_string());
    printf("llhttp %d.%d.%d\n", LLHTTP_VERSION_MAJOR, LLHTTP_VERSION_MINOR, LLHTTP_VERSION_PATCH);
    printf("%s\n", LUAJIT_VERSION);
    printf("hiredis %d.%d.%d\n", HIREDIS_MAJOR, HIREDIS_MINOR, HIREDIS_PATCH);
    printf("libyaml %s\n", yaml_get_version_string());
    printf("%s\n", OpenSSL_version(OPENSSL_VERSION));
}

/* How long `-s reload` waits for the verdict (plugins' init may be slow). */
#define MG_RELOAD_WAIT_MS 60000

/* After SIGHUP: waits until PIDFILE.reload changes from `before`, then reports. */
static int await_reload_verdict(const char *pid_path, pid_t pid, const char *before)
{
    char line[2048];
    for (int waited = 0; waited < MG_RELOAD_WAIT_MS; waited += 20) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL); /* a CLI process, not an event loop */
        mg_reload_status_read(pid_path, line, sizeof line);
        if (!line[0] || strcmp(line, before) == 0)
            continue;
        long who;
        unsigned long seq;
        int off = 0;
        char verdict[8];
        if (sscanf(line, "%ld %lu %7s %n", &who, &seq, verdict, &off) < 3 || who != (long)pid)
            continue;
        line[strcspn(line, "\n")] = '\0';
        if (strcmp(verdict, "ok") == 0) {
            printf("%s\n", line + off);
            return 0;
        }
        fprintf(stderr, "%s\n", line + off);
        return 1;
    }
    fprintf(stderr, "moongate: no reload verdict from pid %ld after %d s\n", (long)pid,
            MG_RELOAD_WAIT_MS / 1000);
    return 1;
}

static int signal_running(const char *conf_path, const char *what)
{
    int sig = strcmp(what, "reload") == 0    ? SIGHUP
              : strcmp(what, "stop") == 0    ? SIGTERM
              : strcmp(what, "upgrade") == 0 ? SIGUSR2
                                             : 0;
    if (!sig) {
        fprintf(stderr, "moongate: -s takes reload, stop or upgrade, not '%s'\n", what);
        return 2;
    }
    char err[1024], pbuf[4096];
    struct mg_config *cfg = mg_config_load(conf_path, err, sizeof err);
    if (!cfg) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    const char *pid_path = mg_pidfile_path(cfg->pid_file, pbuf, sizeof pbuf);
    int rc = 1;
    pid_t pid = mg_pidfile_running(pid_path, err, sizeof err);
    char before[2048];
    mg_reload_status_read(pid_path, before, sizeof before);
    if (!pid)
        fprintf(stderr, "moongate: %s\n", err);
    else if (kill(pid, sig) != 0)
        fprintf(stderr, "moongate: cannot signal %ld: %s\n", (long)pid, strerror(errno));
    else
        rc = sig != SIGTERM ? await_reload_verdict(pid_path, pid, before) : 0;
    mg_config_unref(cfg);
    return rc;
}

static void set_ready(struct mg_main *m, bool ready)
{
    mg_admin_set_ready(m->admin, ready);
}

static void start_drain(struct mg_main *m, bool immediate)
{
    for (size_t i = 0; i < m->nworkers; i++)
        mg_worker_request_stop(&m->workers[i], immediate);
}

static void on_delay_over(uv_timer_t *t)
{
    struct mg_main *m = t->data;
    mg_info("shutdown delay over: draining");
    start_drain(m, false);
}

/* The first signal fails /ready at once; serving goes on for shutdown_delay so
 * load balancers take the instance out before its listeners close. */
static void on_stop_signal(uv_signal_t *s, int signum)
{
    struct mg_main *m = s->data;
    bool immediate = ++m->stop_signals > 1;
    set_ready(m, false);
    mg_watch_stop(m->watch); /* no reloads while stopping */
    m->watch = NULL;
    if (!immediate)
        mg_notify_stopping();
    uint64_t delay = m->cfg->shutdown_delay_ms;
    if (!immediate && delay) {
        mg_info("%s: not ready; draining in %llu ms (shutdown_delay)", strsignal(signum),
                (unsigned long long)delay);
        uv_timer_start(&m->delay_timer, on_delay_over, delay, 0);
        return;
    }
    uv_timer_stop(&m->delay_timer);
    mg_info("%s: %s", strsignal(signum), immediate ? "stopping now" : "draining");
    start_drain(m, immediate);
}

/* Loads and validates a file completely: YAML, then every plugin's init(conf)
 * in a scratch VM. Blocking; main thread only. */
static struct mg_config *load_checked(const char *path, char *err, size_t errlen)
{
    struct mg_config *cfg = mg_config_load(path, err, errlen);
    if (cfg && mg_lua_check_config(cfg, err, errlen) != 0) {
        mg_config_unref(cfg);
        return NULL;
    }
    return cfg;
}

/* The file, validated, with its host names resolved (discovery/; blocks for up
 * to resolver.timeout, on the main thread). *disc receives the resolver to
 * start, or NULL. */
static struct mg_config *load_resolved(const char *path, struct mg_discovery *prev,
                                       struct mg_discovery **disc, char *err, size_t errlen)
{
    struct mg_config *base = load_checked(path, err, errlen);
    *disc = NULL;
    return base ? mg_discovery_load(base, prev, disc, err, errlen) : NULL;
}

/* One plugin VM for worker `id`, or NULL when no route needs one. Made here, on
 * the main thread, because loading plugins reads files. */
struct vm_pair {
    struct mg_lua *vm;
    struct mg_lua_metrics *hook;
};

static int make_vm(struct mg_config *cfg, struct mg_metrics *metrics, unsigned id,
                   struct vm_pair *out, char *err, size_t errlen)
{
    *out = (struct vm_pair){NULL, NULL};
    if (!mg_lua_needed(cfg))
        return 0;
    out->vm = mg_lua_new_counted(cfg, id, metrics, &out->hook, err, errlen);
    return out->vm ? 0 : -1;
}

static void free_vm(struct vm_pair *p)
{
    mg_lua_free(p->vm);
    mg_lua_metrics_free(p->hook);
}

/* Only with an `admin` section (DESIGN.md 10.6). Returns the handle or NULL
 * with the reason in err; *failed tells a failure from "not configured". */
static struct mg_admin *start_admin(struct mg_main *m, struct mg_config *cfg,
                                    struct mg_metrics *metrics, bool *failed, char *err,
                                    size_t errlen)
{
    *failed = false;
    if (!cfg->admin_enabled)
        return NULL;
    struct mg_admin_source src = {.cfg = cfg,
                                  .metrics = metrics,
                                  .hooks = mg_registry_obs_hooks(m->idem_table),
                                  .accesslog = m->accesslog};
    char why[512];
    struct mg_admin *a = mg_admin_start(&cfg->admin_listen, &src, why, sizeof why);
    if (!a) {
        snprintf(err, errlen, "%s: admin listener: %s", cfg->path, why);
        *failed = true;
    }
    return a;
}

static bool same_admin(const struct mg_config *a, const struct mg_config *b)
{
    const struct mg_address *x = &a->admin_listen, *y = &b->admin_listen;
    return a->admin_enabled == b->admin_enabled &&
           (!a->admin_enabled ||
            (x->addrlen == y->addrlen && memcmp(&x->addr, &y->addr, x->addrlen) == 0));
}

/* At reload, before anything is published: the new admin listener (if it moved)
 * and the new listen addresses must bind, or the reload fails. On success
 * *admin is what to switch to (the current one when unchanged). */
static int prepare_listeners(struct mg_main *m, struct mg_config *cfg, struct mg_metrics *metrics,
                             struct mg_admin **admin, char *err, size_t errlen)
{
    *admin = m->admin;
    if (mg_probe_new_listeners(m->cfg, cfg, err, errlen) != 0)
        return -1;
    if (same_admin(m->cfg, cfg))
        return 0;
    bool failed;
    *admin = start_admin(m, cfg, metrics, &failed, err, errlen);
    if (failed)
        return -1;
    mg_admin_set_ready(*admin, true);
    return 0;
}

static void on_usr1(uv_signal_t *s, int signum)
{
    struct mg_main *m = s->data;
    int rc = mg_accesslog_reopen(m->accesslog);
    if (rc)
        mg_error("access log reopen failed: %s", strerror(-rc));
    else
        mg_info("access log reopened");
}

/* Reload: the new file is parsed and validated here, on the main thread, never on
 * a worker's loop. Only a valid snapshot is published; each worker switches to it
 * between two events, and exchanges in flight finish on the one they started on. */
static void reload_rejected(struct mg_main *m, const char *err)
{
    mg_error("config reload failed: %s", err);
    mg_metrics_config_reload(m->metrics, false);
    mg_admin_reload_failed(m->admin, err); /* the dashboard shows the message */
    char text[1100];
    snprintf(text, sizeof text, "config reload failed: %s", err);
    mg_reload_status_write(m->pid_path, ++m->reload_seq, false, text);
    mg_notify_reloaded(m->cfg->version, err);
}

static void update_watch(struct mg_main *m);

/* Hands a valid snapshot to the workers and the admin thread, with plugin VMs
 * made for it here (they read files) and its new listen and admin addresses
 * bound. Takes the reference on cfg. Returns -1 with the reason in err when it
 * cannot (nothing changed then). A reload and a change of discovered targets
 * both come here. */
static int publish(struct mg_main *m, struct mg_config *cfg, char *err, size_t errlen)
{
    struct mg_metrics *metrics = mg_metrics_next(m->metrics, cfg);
    struct vm_pair *vms = calloc(m->nworkers ? m->nworkers : 1, sizeof *vms);
    if (!vms)
        mg_fatal("out of memory (plugin VMs)");
    for (size_t i = 0; cfg && i < m->nworkers; i++) {
        if (make_vm(cfg, metrics, (unsigned)i, &vms[i], err, errlen) != 0) {
            for (size_t j = 0; j < i; j++)
                free_vm(&vms[j]);
            mg_config_unref(cfg);
            cfg = NULL;
        }
    }
    if (cfg && strcmp(cfg->access_log, m->cfg->access_log) != 0 &&
        mg_accesslog_retarget(m->accesslog, cfg->access_log, err, errlen) != 0) {
        for (size_t j = 0; j < m->nworkers; j++)
            free_vm(&vms[j]);
        mg_config_unref(cfg);
        cfg = NULL;
    }
    struct mg_admin *admin = NULL;
    if (cfg && prepare_listeners(m, cfg, metrics, &admin, err, errlen) != 0) {
        for (size_t j = 0; j < m->nworkers; j++)
            free_vm(&vms[j]);
        mg_config_unref(cfg);
        cfg = NULL;
    }
    if (!cfg) {
        free(vms);
        mg_metrics_unref(metrics);
        return -1;
    }
    if (cfg->workers != m->cfg->workers)
        mg_warn("config reload: a new `workers` value takes effect at the next restart");
    mg_log_configure((enum mg_log_level)cfg->log.level, cfg->log.format == MG_LOG_FORMAT_JSON);
    if (cfg->shutdown_delay_ms != m->cfg->shutdown_delay_ms && m->stop_signals)
        mg_warn("config reload: shutdown_delay applies from the next stop");
    for (size_t i = 0; i < m->nworkers; i++)
        mg_worker_publish_config(&m->workers[i], cfg, metrics, vms[i].vm, vms[i].hook);
    free(vms);
    if (admin != m->admin) {
        mg_admin_stop(m->admin);
        m->admin = admin;
    } else if (m->admin) {
        mg_admin_publish(m->admin, cfg, metrics);
    }
    mg_metrics_unref(m->metrics);
    m->metrics = metrics;
    mg_config_unref(m->cfg);
    m->cfg = cfg;
    return 0;
}

/* Discovery found other targets: the same file with them, published as a
 * reload would be (targets that stay keep their state; see discovery/). */
static void on_targets(struct mg_discovery *d, void *data)
{
    struct mg_main *m = data;
    char err[1024];
    if (publish(m, mg_discovery_snapshot(d), err, sizeof err) != 0) {
        mg_error("discovered targets not applied (retried within 5 s): %s", err);
        mg_discovery_retry_publish(d, 5000);
    }
}

static void follow(struct mg_main *m, struct mg_discovery *d)
{
    mg_discovery_free(m->discovery);
    m->discovery = d;
    if (d)
        mg_discovery_start(d, m->loop, on_targets, m);
}

/* Reload: the new file is parsed and validated here, on the main thread, never on
 * a worker's loop. Only a valid snapshot is published; each worker switches to it
 * between two events, and exchanges in flight finish on the one they started on. */
static void reload(struct mg_main *m)
{
    char err[1024];
    struct mg_discovery *disc;
    mg_notify_reloading();
    struct mg_config *cfg = load_resolved(m->conf_path, m->discovery, &disc, err, sizeof err);
    if (!cfg || publish(m, cfg, err, sizeof err) != 0) {
        mg_discovery_free(disc);
        reload_rejected(m, err);
        return;
    }
    follow(m, disc);
    mg_metrics_config_reload(m->metrics, true);
    mg_info("config reloaded from %s (version %llu)", m->conf_path,
            (unsigned long long)m->cfg->version);
    char ver[64];
    snprintf(ver, sizeof ver, "reloaded: version %llu", (unsigned long long)m->cfg->version);
    mg_reload_status_write(m->pid_path, ++m->reload_seq, true, ver);
    mg_notify_reloaded(m->cfg->version, NULL);
    update_watch(m);
}

static void on_file_changed(void *arg)
{
    reload(arg);
}

/* Follows watch_config of the snapshot in use. */
static void update_watch(struct mg_main *m)
{
    if (m->cfg->watch_config && !m->watch && !m->stop_signals)
        m->watch = mg_watch_start(m->loop, m->conf_path, on_file_changed, m);
    else if (!m->cfg->watch_config && m->watch) {
        mg_watch_stop(m->watch);
        m->watch = NULL;
    }
}

static void on_hup(uv_signal_t *s, int signum)
{
    reload(s->data);
}

static void on_worker_done(uv_async_t *a)
{
    struct mg_main *m = a->data;
    if (atomic_load(&m->workers_running) == 0)
        uv_stop(m->loop);
}

static struct mg_main *the_main;

static void worker_thread(void *arg)
{
    struct mg_worker *w = arg;
    mg_worker_run(w);
    atomic_fetch_sub(&the_main->workers_running, 1);
    uv_async_send(&the_main->worker_done);
}

/* ---- binary upgrade (process/upgrade.h) ---- */

/* How long the new binary may take to serve. */
#define MG_UPGRADE_WAIT_MS 30000

static char exe_path[4096]; /* the binary's path at start: the new one is there now */
static char **saved_argv;

static void on_upgrade_done(void *arg, pid_t pid, const char *error)
{
    struct mg_main *m = arg;
    char text[1024];
    mg_upgrade_free(m->upgrade);
    m->upgrade = NULL;
    if (error) {
        mg_error("upgrade failed: %s", error);
        snprintf(text, sizeof text, "upgrade failed: %s", error);
        mg_reload_status_write(m->pid_path, ++m->reload_seq, false, text);
        bool failed;
        m->admin = start_admin(m, m->cfg, m->metrics, &failed, text, sizeof text);
        if (failed)
            mg_error("%s", text);
        set_ready(m, !m->stop_signals);
        return;
    }
    mg_info("upgrade: pid %ld serves on the same sockets; draining", (long)pid);
    mg_notify_mainpid(pid);
    snprintf(text, sizeof text, "upgraded to pid %ld", (long)pid);
    mg_reload_status_write(m->pid_path, ++m->reload_seq, true, text);
    if (m->stop_signals++)
        return; /* already draining */
    mg_watch_stop(m->watch);
    m->watch = NULL;
    start_drain(m, false);
}

static void on_usr2(uv_signal_t *s, int signum)
{
    struct mg_main *m = s->data;
    if (m->upgrade || m->stop_signals) {
        mg_warn("upgrade: ignored (%s)", m->upgrade ? "one is under way" : "stopping");
        return;
    }
    int fds[1024];
    size_t n = 0;
    for (size_t i = 0; i < m->nworkers; i++)
        n += mg_worker_listener_fds(&m->workers[i], fds + n, 1024 - n);
    mg_info("upgrade: starting %s with %zu listening sockets", exe_path, n);
    /* The admin port is not shared: the new process binds it. */
    mg_admin_stop(m->admin);
    m->admin = NULL;
    char err[512];
    m->upgrade = mg_upgrade_start(m->loop, exe_path, saved_argv, fds, n, m->pidfile.fd,
                                  MG_UPGRADE_WAIT_MS, on_upgrade_done, m, err, sizeof err);
    if (!m->upgrade)
        on_upgrade_done(m, 0, err);
}

static int start_workers(struct mg_main *m)
{
    size_t n = m->cfg->workers ? m->cfg->workers : (size_t)uv_available_parallelism();
    mg_registry_init((unsigned)n);
    char err[512];
    m->metrics = mg_metrics_new(m->cfg, (unsigned)n);
    m->accesslog = mg_accesslog_open(m->cfg->access_log, (unsigned)n, err, sizeof err);
    if (!m->accesslog) {
        mg_error("access log %s: %s", m->cfg->access_log, err);
        return -1;
    }
    mg_exchange_set_accesslog(m->accesslog);
    /* One embedded idempotency store for the process, whatever the routes say
     * now: a reload may add memory-store routes. It allocates nothing up front. */
    m->idem_table = mg_idem_memtable_new(m->cfg->idempotency_memory);
    mg_workers_set_idem_table(m->idem_table);
    m->workers = calloc(n, sizeof *m->workers);
    if (!m->workers)
        mg_fatal("out of memory (workers)");
    for (size_t i = 0; i < n; i++) {
        struct vm_pair vm;
        int rc = make_vm(m->cfg, m->metrics, (unsigned)i, &vm, err, sizeof err);
        bool initialised = rc == 0;
        if (initialised)
            rc = mg_worker_init(&m->workers[i], (int)i, m->cfg, m->metrics, vm.vm, vm.hook);
        else
            mg_error("%s", err);
        m->nworkers = initialised ? i + 1 : i; /* only initialised workers are unwound */
        if (rc != 0) {
            /* Unwind on this thread: each loop runs once to close what it opened. */
            for (size_t j = 0; j < m->nworkers; j++) {
                mg_worker_request_stop(&m->workers[j], true);
                mg_worker_run(&m->workers[j]);
                mg_worker_destroy(&m->workers[j]);
            }
            m->nworkers = 0;
            return -1;
        }
    }
    mg_workers_adopt_inherited(m->workers, n, m->cfg);
    mg_upgrade_close_unused(); /* inherited sockets the new config does not use */
    atomic_store(&m->workers_running, (int)n);
    mg_workers_register(m->workers, n);
    for (size_t i = 0; i < n; i++)
        if (uv_thread_create(&m->workers[i].thread, worker_thread, &m->workers[i]) != 0)
            mg_fatal("cannot start worker thread %zu", i);
    return 0;
}

static void watch_signal(struct mg_main *m, uv_signal_t *s, uv_signal_cb cb, int signum)
{
    uv_signal_init(m->loop, s);
    s->data = m;
    uv_signal_start(s, cb, signum);
}

/* The listeners are up (mg_worker_init): what remains before serving. */
static int start_serving(struct mg_main *m)
{
    char err[1024];
    bool failed;
    m->admin = start_admin(m, m->cfg, m->metrics, &failed, err, sizeof err);
    if (failed) {
        mg_error("%s", err);
        return -1;
    }
    mg_reload_status_write(m->pid_path, 0, true, "started");
    for (size_t i = 0; i < m->cfg->nlisten; i++)
        mg_info("listening on %s (%zu workers)", m->cfg->listen[i].address.text, m->nworkers);
    set_ready(m, true);
    mg_notify_ready(m->cfg->version);
    update_watch(m);
    /* Last: a pid in the file means everything above is up (after an upgrade,
     * the pid file follows the new process from here on). */
    mg_pidfile_write(&m->pidfile, getpid());
    mg_upgrade_report_ready();
    return 0;
}

static void stop_workers_now(struct mg_main *m)
{
    start_drain(m, true);
    for (size_t i = 0; i < m->nworkers; i++)
        uv_thread_join(&m->workers[i].thread);
}

static int run(const char *conf_path)
{
    char err[1024];
    struct mg_main m = {.conf_path = conf_path, .pidfile = {.fd = -1}};
    the_main = &m;
    struct mg_discovery *disc;
    m.cfg = load_resolved(conf_path, NULL, &disc, err, sizeof err);
    if (!m.cfg) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    mg_log_configure((enum mg_log_level)m.cfg->log.level, m.cfg->log.format == MG_LOG_FORMAT_JSON);
    char pbuf[sizeof m.pid_path];
    snprintf(m.pid_path, sizeof m.pid_path, "%s",
             mg_pidfile_path(m.cfg->pid_file, pbuf, sizeof pbuf));
    pid_t running;
    if (mg_upgrade_inherited() && mg_upgrade_pidfile_fd() >= 0) {
        mg_pidfile_adopt(&m.pidfile, m.pid_path, mg_upgrade_pidfile_fd()); /* locked already */
    } else if (mg_pidfile_acquire(&m.pidfile, m.pid_path, &running, err, sizeof err) != 0) {
        fprintf(stderr, "moongate: %s\n", err);
        mg_discovery_free(disc);
        mg_config_unref(m.cfg);
        return 1;
    }
    mg_rlimit_raise(m.cfg->client.max_connections);
    signal(SIGPIPE, SIG_IGN);
    m.loop = uv_default_loop();
    uv_async_init(m.loop, &m.worker_done, on_worker_done);
    m.worker_done.data = &m;
    watch_signal(&m, &m.sig_term, on_stop_signal, SIGTERM);
    watch_signal(&m, &m.sig_int, on_stop_signal, SIGINT);
    watch_signal(&m, &m.sig_hup, on_hup, SIGHUP);
    watch_signal(&m, &m.sig_usr1, on_usr1, SIGUSR1);
    watch_signal(&m, &m.sig_usr2, on_usr2, SIGUSR2);
    uv_timer_init(m.loop, &m.ticket_timer);
    uv_timer_start(&m.ticket_timer, on_ticket_timer, MG_TICKET_ROTATION_MS, MG_TICKET_ROTATION_MS);
    uv_unref((uv_handle_t *)&m.ticket_timer); /* never what keeps the loop alive */
    uv_timer_init(m.loop, &m.delay_timer);
    m.delay_timer.data = &m;
    int rc = start_workers(&m);
    if (rc == 0)
        follow(&m, disc);
    else
        mg_discovery_free(disc);
    if (rc == 0 && start_serving(&m) != 0) {
        stop_workers_now(&m);
        rc = -1;
    } else if (rc == 0) {
        uv_run(m.loop, UV_RUN_DEFAULT);
        for (size_t i = 0; i < m.nworkers; i++)
            uv_thread_join(&m.workers[i].thread);
    }
    follow(&m, NULL); /* its handles close in the last run below */
    if (rc == 0 || m.nworkers) {
        for (size_t i = 0; i < m.nworkers; i++)
            mg_worker_destroy(&m.workers[i]);
        mg_admin_stop(m.admin);
        if (rc == 0)
            mg_info("stopped");
    }
    uv_close((uv_handle_t *)&m.worker_done, NULL);
    uv_close((uv_handle_t *)&m.sig_term, NULL);
    uv_close((uv_handle_t *)&m.sig_int, NULL);
    uv_close((uv_handle_t *)&m.sig_hup, NULL);
    uv_close((uv_handle_t *)&m.sig_usr1, NULL);
    uv_close((uv_handle_t *)&m.sig_usr2, NULL);
    mg_upgrade_free(m.upgrade);
    uv_close((uv_handle_t *)&m.ticket_timer, NULL);
    uv_close((uv_handle_t *)&m.delay_timer, NULL);
    mg_watch_stop(m.watch);
    uv_run(m.loop, UV_RUN_DEFAULT);
    mg_pidfile_release(&m.pidfile);
    uv_loop_close(m.loop);
    free(m.workers);
    mg_accesslog_close(m.accesslog);
    if (m.idem_table)
        mg_idem_memtable_free(m.idem_table);
    if (m.metrics)
        mg_metrics_unref(m.metrics);
    mg_registry_shutdown();
    mg_config_unref(m.cfg);
    return rc == 0 ? 0 : 1;
}

static void log_level_from_env(void)
{
    const char *lvl = getenv("MOONGATE_LOG_LEVEL");
    if (!lvl)
        return;
    static const char *const names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++)
        if (strcmp(lvl, names[i]) == 0)
            mg_log_threshold = (enum mg_log_level)i;
}

static int main2(int argc, char **argv);

int main(int argc, char **argv)
{
    saved_argv = argv;
    ssize_t n = readlink("/proc/self/exe", exe_path, sizeof exe_path - 1);
    exe_path[n > 0 ? n : 0] = '\0';
    mg_upgrade_inherit();
    /* Before any TLS context exists: -t builds them too. */
    mg_tls_tickets_init();
    int rc = main2(argc, argv);
    mg_tls_tickets_free();
    return rc;
}

static int main2(int argc, char **argv)
{
    log_level_from_env();
    if (argc == 3 && strcmp(argv[1], "test") == 0)
        return mg_lua_spec_main(argv[2]); /* moongate test SPEC.lua (DESIGN.md 10.4) */
    const char *conf_path = NULL, *signal_name = NULL;
    bool test_only = false;
    int opt;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        }
    while ((opt = getopt(argc, argv, "c:ts:Vh")) != -1) {
        switch (opt) {
        case 'c':
            conf_path = optarg;
            break;
        case 't':
            test_only = true;
            break;
        case 's':
            signal_name = optarg;
            break;
        case 'V':
            print_versions();
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!conf_path) {
        usage(stderr);
        return 2;
    }
    if (signal_name)
        return signal_running(conf_path, signal_name);
    if (test_only) {
        char err[1024];
        struct mg_discovery *disc;
        struct mg_config *cfg = load_resolved(conf_path, NULL, &disc, err, sizeof err);
        mg_discovery_free(disc);
        if (!cfg) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        printf("configuration ok\n");
        mg_config_unref(cfg);
        return 0;
    }
    return run(conf_path);
}
