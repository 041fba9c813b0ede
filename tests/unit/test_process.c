/* tests for gateway/process/: the pid file lock and its verdict file, the
 * default pid file path, the fd limit, and where the Lua files are found. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cmocka.h>

#include "process/paths.h"
#include "process/pidfile.h"
#include "process/rlimit.h"

static char dir[64];
static char path[128];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/mg-test-process-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/moongate.pid", dir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char p[160];
    snprintf(p, sizeof p, "%s.reload", path);
    unlink(p);
    unlink(path);
    rmdir(dir);
    return 0;
}

static void read_text(const char *p, char *buf, size_t cap)
{
    FILE *f = fopen(p, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = '\0';
    fclose(f);
}

static void test_lock_refuses_second_and_names_pid(void **state)
{
    (void)state;
    struct mg_pidfile a, b;
    pid_t running;
    char err[256], text[32], want[64];
    assert_int_equal(mg_pidfile_acquire(&a, path, &running, err, sizeof err), 0);
    /* Locked but empty until the gateway serves. */
    assert_int_equal(mg_pidfile_running(path, err, sizeof err), 0);
    assert_non_null(strstr(err, "bad pid file"));
    assert_int_equal(mg_pidfile_acquire(&b, path, &running, err, sizeof err), -1);
    assert_non_null(strstr(err, "still starting"));
    mg_pidfile_write(&a, getpid());
    read_text(path, text, sizeof text);
    snprintf(want, sizeof want, "%ld\n", (long)getpid());
    assert_string_equal(text, want);
    /* flock locks belong to the open file: a second open conflicts even here. */
    assert_int_equal(mg_pidfile_acquire(&b, path, &running, err, sizeof err), -1);
    assert_int_equal(running, getpid());
    snprintf(want, sizeof want, "already running as pid %ld", (long)getpid());
    assert_non_null(strstr(err, want));
    assert_int_equal(mg_pidfile_running(path, err, sizeof err), getpid());
    mg_pidfile_release(&a);
    assert_int_equal(access(path, F_OK), -1); /* ours: removed */
}

static void test_release_keeps_a_file_holding_another_pid(void **state)
{
    (void)state;
    struct mg_pidfile a;
    pid_t running;
    char err[256], text[32];
    assert_int_equal(mg_pidfile_acquire(&a, path, &running, err, sizeof err), 0);
    mg_pidfile_write(&a, 424242); /* an upgrade handed it over */
    mg_pidfile_release(&a);
    read_text(path, text, sizeof text);
    assert_string_equal(text, "424242\n");
    /* Nobody holds the lock now: stale. */
    assert_int_equal(mg_pidfile_running(path, err, sizeof err), 0);
    assert_non_null(strstr(err, "stale"));
    /* A stale file is taken over. */
    assert_int_equal(mg_pidfile_acquire(&a, path, &running, err, sizeof err), 0);
    mg_pidfile_release(&a);
    assert_int_equal(access(path, F_OK), -1);
}

static void test_reload_status_round_trip(void **state)
{
    (void)state;
    char line[256], want[128];
    mg_reload_status_read(path, line, sizeof line);
    assert_string_equal(line, "");
    mg_reload_status_write(path, 7, false, "config reload failed: f.yaml:3:4: bad");
    mg_reload_status_read(path, line, sizeof line);
    snprintf(want, sizeof want, "%ld 7 error config reload failed: f.yaml:3:4: bad\n",
             (long)getpid());
    assert_string_equal(line, want);
}

static void test_default_pid_path(void **state)
{
    (void)state;
    char buf[256];
    assert_string_equal(mg_pidfile_path("/x/y.pid", buf, sizeof buf), "/x/y.pid");
    const char *p = mg_pidfile_path(NULL, buf, sizeof buf);
    if (geteuid() == 0) {
        assert_string_equal(p, "/run/moongate.pid");
        return;
    }
    setenv("XDG_RUNTIME_DIR", "/run/user/1000", 1);
    assert_string_equal(mg_pidfile_path(NULL, buf, sizeof buf), "/run/user/1000/moongate.pid");
    unsetenv("XDG_RUNTIME_DIR");
    char want[64];
    snprintf(want, sizeof want, "/tmp/moongate-%ld.pid", (long)getuid());
    assert_string_equal(mg_pidfile_path(NULL, buf, sizeof buf), want);
}

static void test_rlimit_raised_to_hard(void **state)
{
    (void)state;
    struct rlimit rl;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_max > 64 && rl.rlim_max != RLIM_INFINITY) {
        rl.rlim_cur = 64;
        assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
    }
    uint64_t got = mg_rlimit_raise(10);
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
    assert_true(rl.rlim_cur == rl.rlim_max);
    assert_true(got == (rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : (uint64_t)rl.rlim_cur));
}

/* A binary inside the build dir (this test) uses the source tree's files. */
static void test_paths_in_build_tree(void **state)
{
    (void)state;
    assert_string_equal(mg_paths_lua(), MG_LUA_DIR);
    assert_string_equal(mg_paths_plugins(), MG_PLUGIN_DIR);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_lock_refuses_second_and_names_pid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_release_keeps_a_file_holding_another_pid, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_reload_status_round_trip, setup, teardown),
        cmocka_unit_test(test_default_pid_path),
        cmocka_unit_test(test_rlimit_raised_to_hard),
        cmocka_unit_test(test_paths_in_build_tree),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
