/*
 * moongate's command line (DESIGN.md section 2) and process lifecycle.
 *
 * The main thread loads the configuration, starts one worker thread per
 * `workers`, and then only handles signals on its own small loop: SIGTERM/SIGINT
 * drain the workers (a second one stops them at once), SIGHUP reloads the file. It owns the
 * configuration snapshot and frees it after every worker ended.
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
#include <unistd.h>
#include <uv.h>
#include <yaml.h>

#include "config/config.h"
#include "core/log.h"
#include "idempotency/store_memory.h"
#include "lua/metrics_hook.h"
#include "lua/spec.h"
#include "lua/vm.h"
#include "obs/accesslog.h"
#include "obs/admin.h"
#include "obs/metrics.h"
#include "obs/registry_hooks.h"
#include "exchange/exchange.h"
#include "tls/context.h"
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
    struct mg_worker *workers;
    size_t nworkers;
    uv_async_t worker_done;
    atomic_int workers_running;
    int stop_signals;
    uv_signal_t sig_term, sig_int, sig_hup, sig_usr1;
    uv_timer_t ticket_timer; /* rotates the TLS session-ticket keys */
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
    fprintf(f, "usage: moongate -c FILE        run in the foreground\n"
               "       moongate -t -c FILE     validate FILE and exit\n"
               "       moongate -s reload|stop -c FILE\n"
               "                               signal the running instance (pid_file)\n"
               "       moongate -V             print versions\n");
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

static int signal_running(const char *conf_path, const char *what)
{
    int sig = strcmp(what, "reload") == 0 ? SIGHUP : strcmp(what, "stop") == 0 ? SIGTERM : 0;
    if (!sig) {
        fprintf(stderr, "moongate: -s takes reload or stop, not '%s'\n", what);
        return 1;
    }
    char err[1024];
    struct mg_config *cfg = mg_config_load(conf_path, err, sizeof err);
    if (!cfg) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    int rc = 1;
    FILE *f = fopen(cfg->pid_file, "r");
    long pid = 0;
    if (!f)
        fprintf(stderr, "moongate: cannot read pid file %s: %s\n", cfg->pid_file, strerror(errno));
    else if (fscanf(f, "%ld", &pid) != 1 || pid <= 1)
        fprintf(stderr, "moongate: bad pid file %s\n", cfg->pid_file);
    else if (kill((pid_t)pid, sig) != 0)
        fprintf(stderr, "moongate: cannot signal %ld: %s\n", pid, strerror(errno));
    else
        rc = 0;
    if (f)
        fclose(f);
    mg_config_unref(cfg);
    return rc;
}

static void on_stop_signal(uv_signal_t *s, int signum)
{
    struct mg_main *m = s->data;
    bool immediate = ++m->stop_signals > 1;
    mg_info("%s: %s", strsignal(signum), immediate ? "stopping now" : "draining");
    for (size_t i = 0; i < m->nworkers; i++)
        mg_worker_request_stop(&m->workers[i], immediate);
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

static void start_admin(struct mg_main *m, struct mg_config *cfg)
{
    char err[512];
    struct mg_admin_source src = {.cfg = cfg,
                                  .metrics = m->metrics,
                                  .hooks = mg_registry_obs_hooks(m->idem_table),
                                  .accesslog = m->accesslog};
    m->admin = mg_admin_start(&cfg->admin_listen, &src, err, sizeof err);
    if (!m->admin)
        mg_error("admin listener on %s: %s", cfg->admin_listen.text, err);
}

static void restart_admin_if_moved(struct mg_main *m, struct mg_config *cfg)
{
    const struct mg_address *a = &m->cfg->admin_listen, *b = &cfg->admin_listen;
    if (m->admin && a->addrlen == b->addrlen && memcmp(&a->addr, &b->addr, a->addrlen) == 0)
        return;
    mg_admin_stop(m->admin);
    m->admin = NULL;
    start_admin(m, cfg);
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
static void on_hup(uv_signal_t *s, int signum)
{
    struct mg_main *m = s->data;
    char err[1024];
    struct mg_config *cfg = load_checked(m->conf_path, err, sizeof err);
    struct mg_metrics *metrics = cfg ? mg_metrics_next(m->metrics, cfg) : NULL;
    struct vm_pair *vms = cfg ? calloc(m->nworkers, sizeof *vms) : NULL;
    for (size_t i = 0; cfg && i < m->nworkers; i++) {
        if (!vms)
            mg_fatal("out of memory (plugin VMs)");
        if (make_vm(cfg, metrics, (unsigned)i, &vms[i], err, sizeof err) != 0) {
            for (size_t j = 0; j < i; j++)
                free_vm(&vms[j]);
            mg_config_unref(cfg);
            cfg = NULL;
        }
    }
    if (cfg && strcmp(cfg->access_log, m->cfg->access_log) != 0 &&
        mg_accesslog_retarget(m->accesslog, cfg->access_log, err, sizeof err) != 0) {
        for (size_t j = 0; j < m->nworkers; j++)
            free_vm(&vms[j]);
        mg_config_unref(cfg);
        cfg = NULL;
    }
    if (!cfg) {
        free(vms);
        if (metrics)
            mg_metrics_unref(metrics);
        mg_error("config reload failed: %s", err);
        mg_metrics_config_reload(m->metrics, false);
        mg_admin_reload_failed(m->admin, err); /* the dashboard shows the message */
        return;
    }
    if (cfg->workers != m->cfg->workers)
        mg_warn("config reload: a new `workers` value takes effect at the next restart");
    for (size_t i = 0; i < m->nworkers; i++)
        mg_worker_publish_config(&m->workers[i], cfg, metrics, vms[i].vm, vms[i].hook);
    free(vms);
    restart_admin_if_moved(m, cfg);
    if (m->admin)
        mg_admin_publish(m->admin, cfg, metrics);
    mg_metrics_config_reload(metrics, true);
    mg_metrics_unref(m->metrics);
    m->metrics = metrics;
    mg_config_unref(m->cfg);
    m->cfg = cfg;
    mg_info("config reloaded from %s (version %llu)", m->conf_path,
            (unsigned long long)cfg->version);
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

/* Written to a temporary name and renamed, so a reader never sees it empty. */
static void write_pid_file(const char *path)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.%ld.tmp", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    bool ok = f != NULL;
    if (f) {
        ok = fprintf(f, "%ld\n", (long)getpid()) >= 0;
        ok = fclose(f) == 0 && ok;
    }
    if (!ok || rename(tmp, path) != 0) {
        mg_warn("cannot write pid file %s: %s", path, strerror(errno));
        unlink(tmp);
    }
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

static int run(const char *conf_path)
{
    char err[1024];
    struct mg_main m = {.conf_path = conf_path};
    the_main = &m;
    m.cfg = load_checked(conf_path, err, sizeof err);
    if (!m.cfg) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    m.loop = uv_default_loop();
    uv_async_init(m.loop, &m.worker_done, on_worker_done);
    m.worker_done.data = &m;
    watch_signal(&m, &m.sig_term, on_stop_signal, SIGTERM);
    watch_signal(&m, &m.sig_int, on_stop_signal, SIGINT);
    watch_signal(&m, &m.sig_hup, on_hup, SIGHUP);
    watch_signal(&m, &m.sig_usr1, on_usr1, SIGUSR1);
    uv_timer_init(m.loop, &m.ticket_timer);
    uv_timer_start(&m.ticket_timer, on_ticket_timer, MG_TICKET_ROTATION_MS, MG_TICKET_ROTATION_MS);
    uv_unref((uv_handle_t *)&m.ticket_timer); /* never what keeps the loop alive */
    int rc = start_workers(&m);
    if (rc == 0) {
        start_admin(&m, m.cfg);
        write_pid_file(m.cfg->pid_file);
        for (size_t i = 0; i < m.cfg->nlisten; i++)
            mg_info("listening on %s (%zu workers)", m.cfg->listen[i].address.text, m.nworkers);
        uv_run(m.loop, UV_RUN_DEFAULT);
        for (size_t i = 0; i < m.nworkers; i++)
            uv_thread_join(&m.workers[i].thread);
        for (size_t i = 0; i < m.nworkers; i++)
            mg_worker_destroy(&m.workers[i]);
        mg_admin_stop(m.admin);
        unlink(m.cfg->pid_file);
        mg_info("stopped");
    }
    uv_close((uv_handle_t *)&m.worker_done, NULL);
    uv_close((uv_handle_t *)&m.sig_term, NULL);
    uv_close((uv_handle_t *)&m.sig_int, NULL);
    uv_close((uv_handle_t *)&m.sig_hup, NULL);
    uv_close((uv_handle_t *)&m.sig_usr1, NULL);
    uv_close((uv_handle_t *)&m.ticket_timer, NULL);
    uv_run(m.loop, UV_RUN_DEFAULT);
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
        struct mg_config *cfg = load_checked(conf_path, err, sizeof err);
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
