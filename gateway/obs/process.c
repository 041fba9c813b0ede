/*
 * The process_* families every Prometheus exporter has (the names and meanings
 * of client_golang's process collector) and moongate_build_info, read from
 * /proc at scrape time on the admin thread: the request path pays nothing for
 * them. A value /proc does not give (another kernel, a sandbox) is left out
 * rather than reported as 0.
 */
#include "obs/process.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#ifndef MG_VERSION
#define MG_VERSION "dev"
#endif

static void family(struct mg_textbuf *b, const char *name, const char *type, const char *help)
{
    mg_textbuf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* utime + stime (clock ticks) and start time (ticks after boot) of
 * /proc/self/stat; fields counted after the ')' ending the command name,
 * which may itself hold spaces and parentheses. */
static int read_stat(double *cpu_s, double *start_ticks, long *rss_pages)
{
    char buf[1024], *p;
    unsigned long long ut, st, start;
    long rss;
    FILE *f = fopen("/proc/self/stat", "r");
    size_t n;

    if (f == NULL)
        return -1;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    if ((p = strrchr(buf, ')')) == NULL)
        return -1;
    /* state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
     * utime stime cutime cstime priority nice threads itreal starttime vsize rss */
    if (sscanf(p + 2,
               "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d %*d "
               "%llu %*u %ld",
               &ut, &st, &start, &rss) != 4)
        return -1;
    long hz = sysconf(_SC_CLK_TCK);
    if (hz <= 0)
        return -1;
    *cpu_s = (double)(ut + st) / (double)hz;
    *start_ticks = (double)start / (double)hz;
    *rss_pages = rss;
    return 0;
}

/* Boot time, seconds since the epoch (btime of /proc/stat). */
static int boot_time(double *out)
{
    char line[256];
    FILE *f = fopen("/proc/stat", "r");
    int rc = -1;

    if (f == NULL)
        return -1;
    while (fgets(line, sizeof(line), f) != NULL) {
        unsigned long long bt;
        if (sscanf(line, "btime %llu", &bt) == 1) {
            *out = (double)bt;
            rc = 0;
            break;
        }
    }
    fclose(f);
    return rc;
}

static long open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    long n = 0;

    if (d == NULL)
        return -1;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* the directory stream's own descriptor */
}

void mg_process_metrics_render(struct mg_textbuf *b)
{
    double cpu, start, btime;
    long rss, fds = open_fds();
    struct rlimit rl;

    family(b, "moongate_build_info", "gauge", "Always 1; the version is in the label.");
    mg_textbuf_puts(b, "moongate_build_info{version=\"");
    mg_textbuf_prom_label(b, MG_VERSION);
    mg_textbuf_puts(b, "\"} 1\n");
    if (read_stat(&cpu, &start, &rss) == 0) {
        family(b, "process_cpu_seconds_total", "counter",
               "Total user and system CPU time spent in seconds.");
        mg_textbuf_printf(b, "process_cpu_seconds_total %.2f\n", cpu);
        family(b, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
        mg_textbuf_printf(b, "process_resident_memory_bytes %lld\n",
                          (long long)rss * (long long)sysconf(_SC_PAGESIZE));
        if (boot_time(&btime) == 0) {
            family(b, "process_start_time_seconds", "gauge",
                   "Start time of the process since unix epoch in seconds.");
            mg_textbuf_printf(b, "process_start_time_seconds %.2f\n", btime + start);
        }
    }
    if (fds >= 0) {
        family(b, "process_open_fds", "gauge", "Number of open file descriptors.");
        mg_textbuf_printf(b, "process_open_fds %ld\n", fds);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        family(b, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
        mg_textbuf_printf(b, "process_max_fds %llu\n", (unsigned long long)rl.rlim_cur);
    }
}
