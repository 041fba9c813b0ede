/*
 * fuzz_config: the configuration loader on arbitrary YAML text, through the
 * in-memory entry point mg_config_load_string() that mg_config_load() uses
 * after reading the file.
 *
 * Checked: an error is one NUL-terminated line shaped "fuzz.yaml:LINE:COL: ..."
 * (LINE, COL >= 1, a message after them); nothing leaks either way (LeakSanitizer,
 * per input); a snapshot that loads can be routed against, survives a ref/unref
 * pair, and renders as Prometheus text whose every line is a comment, a
 * moongate_ or a process_ sample (a config name can never inject a line).
 * An input may `include:` files of the machine; an error in one names it.
 *
 * Host names in addresses are resolved with getaddrinfo(); this target replaces
 * it so that only numeric hosts and "localhost" resolve and nothing leaves the
 * machine or waits on DNS.
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "harness.h"
#include "obs/metrics.h"
#include "obs/textbuf.h"
#include "resilience/registry.h"
#include "router.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* --------------------------------------------------------- no DNS in a fuzzer */

/* One block per result, as glibc allocates it, so either freeaddrinfo() works. */
static struct addrinfo *ai_new(int family)
{
    struct addrinfo *ai = calloc(1, sizeof *ai + sizeof(struct sockaddr_in6));
    if (!ai)
        abort();
    ai->ai_family = family;
    ai->ai_socktype = SOCK_STREAM;
    ai->ai_addr = (struct sockaddr *)(ai + 1);
    if (family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)ai->ai_addr;
        a->sin_family = AF_INET;
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        ai->ai_addrlen = sizeof *a;
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ai->ai_addr;
        a->sin6_family = AF_INET6;
        a->sin6_addr = in6addr_loopback;
        ai->ai_addrlen = sizeof *a;
    }
    return ai;
}

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                struct addrinfo **res)
{
    (void)service;
    int family = hints ? hints->ai_family : AF_UNSPEC;
    *res = NULL;
    if (!node)
        return EAI_NONAME;
    if (strcmp(node, "localhost") == 0) {
        *res = ai_new(family == AF_INET6 ? AF_INET6 : AF_INET);
        return 0;
    }
    struct in_addr a4;
    struct in6_addr a6;
    char host[256];
    snprintf(host, sizeof host, "%s", node);
    char *scope = strchr(host, '%');
    if (scope)
        *scope = '\0';
    if (family != AF_INET6 && inet_pton(AF_INET, host, &a4) == 1) {
        *res = ai_new(AF_INET);
        ((struct sockaddr_in *)(*res)->ai_addr)->sin_addr = a4;
        return 0;
    }
    if (family != AF_INET && inet_pton(AF_INET6, host, &a6) == 1) {
        *res = ai_new(AF_INET6);
        ((struct sockaddr_in6 *)(*res)->ai_addr)->sin6_addr = a6;
        return 0;
    }
    return EAI_NONAME;
}

void freeaddrinfo(struct addrinfo *ai)
{
    while (ai) {
        struct addrinfo *next = ai->ai_next;
        free(ai->ai_canonname);
        free(ai);
        ai = next;
    }
}

/* ------------------------------------------------------------ checks */

static const char name[] = "fuzz.yaml";

static void check_error(const char *err, size_t cap, const uint8_t *data, size_t size)
{
    if (!memchr(err, '\0', cap))
        fz_fail("config error not NUL-terminated", data, size);
    const char *p = err;
    char *q;
    if (strncmp(p, name, sizeof name - 1) == 0 && p[sizeof name - 1] == ':') {
        p += sizeof name;
    } else {
        /* An error inside a file the input included (`include:` of some file
         * of the machine) names that file: skip to its ":LINE:COL: ". */
        const char *c = p;
        while ((c = strchr(c, ':')) != NULL && !(c[1] >= '1' && c[1] <= '9'))
            c++;
        if (c == NULL || c == p)
            goto bad;
        p = c + 1;
    }
    unsigned long line = strtoul(p, &q, 10);
    if (q == p || *q != ':' || line < 1)
        goto bad;
    p = q + 1;
    unsigned long col = strtoul(p, &q, 10);
    if (q == p || *q != ':' || col < 1 || q[1] != ' ' || q[2] == '\0')
        goto bad;
    if (strchr(err, '\n'))
        goto bad;
    return;
bad:
    fprintf(stderr, "config error: %s\n", err);
    fz_fail("config error is not one \"FILE:LINE:COL: message\" line", data, size);
}

static void check_metrics(struct mg_config *cfg, const uint8_t *data, size_t size)
{
    struct mg_metrics *m = mg_metrics_new(cfg, 1);
    struct mg_obs_hooks hooks = {0};
    struct mg_textbuf out = MG_TEXTBUF_INIT;
    mg_metrics_request_done(m, 0, cfg->nroutes ? 0 : -1, 200, 1000);
    mg_metrics_render(m, &hooks, &out);
    for (const char *l = out.p; l && *l;) {
        if (strncmp(l, "# ", 2) != 0 && strncmp(l, "moongate_", 9) != 0 &&
            strncmp(l, "process_", 8) != 0) {
            fprintf(stderr, "metrics line: %.200s\n", l);
            fz_fail("a config name broke the Prometheus exposition", data, size);
        }
        const char *nl = strchr(l, '\n');
        l = nl ? nl + 1 : NULL;
    }
    free(out.p);
    mg_metrics_unref(m);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    mg_registry_init(1);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[1024];
    memset(err, 'x', sizeof err); /* so a missing terminator shows */
    struct mg_config *cfg = mg_config_load_string((const char *)data, size, name, err, sizeof err);
    if (!cfg) {
        check_error(err, sizeof err, data, size);
    } else {
        static const char *const paths[] = {"/", "/orders", "/orders/1", "/a/b?c", ""};
        for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
            size_t prefix = 0;
            const struct mg_route_conf *r =
                mg_router_match(cfg->router, "api.example.com:80", 18, paths[i], strlen(paths[i]),
                                1 /* GET */, &prefix);
            if (r && prefix > strlen(paths[i]))
                fz_fail("route prefix longer than the path", data, size);
        }
        mg_config_ref(cfg);
        mg_config_unref(cfg);
        check_metrics(cfg, data, size);
        mg_config_unref(cfg);
    }
    fz_check_no_sanitizer_report();
    return 0;
}
