/*
 * config.c: the configuration table and its loader. See config.h.
 *
 * DESIGN: one table drives defaults, environment names, flags, bounds and
 * --help, so adding an option is one line. The struct is written once in
 * main() before any thread starts and only read afterwards.
 */
#define _GNU_SOURCE
#include "server/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/util.h"

enum opt_type { OPT_STR, OPT_INT, OPT_BOOL };

struct opt {
    const char *flag; /* without the leading "--" */
    const char *env;
    enum opt_type type;
    const char *def; /* NULL: unset */
    long min, max;
    size_t offset;
    const char *help;
};

#define OFF(f) offsetof(server_config, f)
static const struct opt opts[] = {
    {"listen", "PREDICTD_LISTEN", OPT_STR, "127.0.0.1:8080", 0, 0, OFF(listen),
     "address:port of the API (port 0: any free port, named in the log)"},
    {"database-url", "PREDICTD_DATABASE_URL", OPT_STR, NULL, 0, 0, OFF(database_url),
     "libpq connection string or URI"},
    {"redis-url", "PREDICTD_REDIS_URL", OPT_STR, NULL, 0, 0, OFF(redis_url),
     "redis://host:port/db (none: no Redis)"},
    {"models-dir", "PREDICTD_MODELS_DIR", OPT_STR, "./models", 0, 0, OFF(models_dir),
     "the model repository"},
    {"threads", "PREDICTD_THREADS", OPT_INT, "0", 0, 256, OFF(threads),
     "HTTP worker threads (0: cores x 2)"},
    {"api-key", "PREDICTD_API_KEY", OPT_STR, NULL, 0, 0, OFF(api_key), "admin API key"},
    {"api-key-file", "PREDICTD_API_KEY_FILE", OPT_STR, "./.predictd_key", 0, 0, OFF(api_key_file),
     "admin key file: readable by predictd, by no one else but its group, writable only "
     "by its owner (0600, 0400, 0640, 0440)"},
    {"read-key", "PREDICTD_READ_KEY", OPT_STR, NULL, 0, 0, OFF(read_key),
     "optional key required on prediction routes"},
    {"log-format", "PREDICTD_LOG_FORMAT", OPT_STR, NULL, 0, 0, OFF(log_format),
     "text or json (default: text on a tty, else json)"},
    {"log-level", "PREDICTD_LOG_LEVEL", OPT_STR, "info", 0, 0, OFF(log_level),
     "debug, info, warn or error"},
    {"feed", "PREDICTD_FEED", OPT_STR, NULL, 0, 0, OFF(feed),
     "market-data feed: demo[:FILES] (replay of data/demo), binance:SYMBOLS, ..."},
    {"cors-origins", "PREDICTD_CORS_ORIGINS", OPT_STR, NULL, 0, 0, OFF(cors_origins),
     "comma-separated allowed origins"},
    {"reload-interval", "PREDICTD_RELOAD_INTERVAL", OPT_INT, "15", 0, 86400, OFF(reload_interval),
     "seconds between repository scans; 0 = on demand only"},
    {"rate-limit", "PREDICTD_RATE_LIMIT", OPT_INT, "0", 0, 1000000, OFF(rate_limit),
     "requests/s per client address (burst 2x); 0 = off"},
    {"rate-burst", "PREDICTD_RATE_BURST", OPT_INT, "0", 0, 10000000, OFF(rate_burst),
     "requests a client may send at once; 0 = twice the rate"},
    {"cache", "PREDICTD_CACHE", OPT_BOOL, "on", 0, 0, OFF(cache),
     "off computes every request from the database"},
    {"retrain-interval", "PREDICTD_RETRAIN_INTERVAL", OPT_INT, "0", 0, 100000000,
     OFF(retrain_interval), "seconds between scheduled retraining; 0 = off"},
    {"drain-timeout", "PREDICTD_DRAIN_TIMEOUT", OPT_INT, "10", 0, 3600, OFF(drain_timeout),
     "seconds SIGTERM waits for in-flight requests"},
    {"max-connections", "PREDICTD_MAX_CONNECTIONS", OPT_INT, "1024", 1, 100000,
     OFF(max_connections), "concurrent HTTP connections"},
    {"per-ip-connections", "PREDICTD_PER_IP_CONNECTIONS", OPT_INT, "64", 0, 100000,
     OFF(per_ip_connections),
     "connections one client address may hold (0 = no cap; raise it behind a gateway)"},
    {"idle-timeout", "PREDICTD_IDLE_TIMEOUT", OPT_INT, "30", 1, 3600, OFF(idle_timeout),
     "seconds before an idle connection is closed"},
    {"header-timeout", "PREDICTD_HEADER_TIMEOUT", OPT_INT, "10", 1, 3600, OFF(header_timeout),
     "seconds a client has to send a request line and its headers, however it trickles them"},
    {"stale-after", "PREDICTD_STALE_AFTER", OPT_INT, "2", 1, 100000, OFF(stale_after),
     "timeframes after a window's last candle closed past which its answer is NO_TRADE "
     "(stale_data) and its ledger row does not count toward live accuracy"},
    {"stream-max", "PREDICTD_STREAM_MAX", OPT_INT, "64", 0, 10000, OFF(stream_max),
     "concurrent WebSocket and SSE clients"},
    {"access-log", "PREDICTD_ACCESS_LOG", OPT_BOOL, "off", 0, 0, OFF(access_log),
     "log one line per request"},
    {"reuse-port", "PREDICTD_REUSE_PORT", OPT_BOOL, "off", 0, 0, OFF(reuse_port),
     "on: a second process may share the port (restarts); off: a taken port fails the start"},
    {"migrations-dir", "PREDICTD_MIGRATIONS_DIR", OPT_STR, "./db", 0, 0, OFF(migrations_dir),
     "SQL migrations applied by `migrate`"},
    {"trusted-proxies", "PREDICTD_TRUSTED_PROXIES", OPT_STR, NULL, 0, 0, OFF(trusted_proxies),
     "IPv4 addresses/CIDRs whose X-Forwarded-For names the client (logs, rate limit)"},
    {"web-dir", "PREDICTD_WEB_DIR", OPT_STR, "./web", 0, 0, OFF(web_dir),
     "directory of the dashboard page served at /"},
    {"binance-ws-url", "PREDICTD_BINANCE_WS_URL", OPT_STR, "wss://stream.binance.com:9443", 0, 0,
     OFF(binance_ws_url), "Binance stream base URL (testnet: wss://stream.testnet.binance.vision)"},
    {"binance-rest-url", "PREDICTD_BINANCE_REST_URL", OPT_STR, "https://api.binance.com", 0, 0,
     OFF(binance_rest_url), "Binance REST base URL (testnet: https://testnet.binance.vision)"},
    {"binance-renew", "PREDICTD_BINANCE_RENEW", OPT_INT, "84600", 5, 86000, OFF(binance_renew),
     "seconds before a stream connection is renewed (Binance ends them at 24 h)"},
};
#define NOPTS (sizeof opts / sizeof opts[0])

static int set_value(server_config *c, const struct opt *o, const char *v, char *why, size_t whylen)
{
    char *base = (char *)c;
    switch (o->type) {
    case OPT_STR: {
        char **slot = (char **)(base + o->offset);
        free(*slot);
        *slot = (v && *v) ? strdup(v) : NULL;
        if (v && *v && !*slot)
            return PD_ENOMEM;
        return 0;
    }
    case OPT_INT: {
        char *end;
        errno = 0;
        long x = strtol(v, &end, 10);
        if (errno || end == v || *end || x < o->min || x > o->max) {
            snprintf(why, whylen, "--%s (%s): '%s' is not an integer in %ld..%ld", o->flag, o->env,
                     v, o->min, o->max);
            return PD_EINVAL;
        }
        *(int *)(base + o->offset) = (int)x;
        return 0;
    }
    case OPT_BOOL: {
        bool b;
        if (!strcmp(v, "on") || !strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "yes"))
            b = true;
        else if (!strcmp(v, "off") || !strcmp(v, "false") || !strcmp(v, "0") || !strcmp(v, "no"))
            b = false;
        else {
            snprintf(why, whylen, "--%s (%s): '%s' is not on or off", o->flag, o->env, v);
            return PD_EINVAL;
        }
        *(bool *)(base + o->offset) = b;
        return 0;
    }
    }
    return PD_EINTERNAL;
}

/* A key is 16..4096 printable ASCII characters, no spaces: what fits in an
 * X-API-Key header and can be compared exactly. */
static bool key_ok(const char *k)
{
    size_t n = strlen(k);
    if (n < 16 || n > 4096)
        return false;
    for (size_t i = 0; i < n; i++)
        if (k[i] <= 0x20 || k[i] >= 0x7f)
            return false;
    return true;
}

/* Reads the admin key from a file this process can read, that neither its
 * group nor others may write and that others may not read (0600, 0400, and
 * 0640 or 0440 for a key shared with a group: a Kubernetes Secret volume
 * with fsGroup is root-owned 0440). The file is opened first and its mode
 * checked on the open descriptor, so what is checked is what is read.
 * Symlinks are followed (Kubernetes mounts secrets through them); the
 * target is what must be private. */
static int read_key_file(server_config *c, char *why, size_t whylen)
{
    const char *path = c->api_key_file;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0; /* no file: admin routes stay disabled */
        if (errno == EACCES) {
            snprintf(why, whylen,
                     "key file %s: not readable by this process (uid %u, gid %u): give it to "
                     "that user (mode 0600) or its group (mode 0640 or 0440)",
                     path, (unsigned)geteuid(), (unsigned)getegid());
            return PD_EINVAL;
        }
        snprintf(why, whylen, "key file %s: %s", path, strerror(errno));
        return PD_EINVAL;
    }
    struct stat st;
    int rc = 0;
    char buf[4100];
    size_t n = 0;
    if (fstat(fd, &st) != 0) {
        snprintf(why, whylen, "key file %s: %s", path, strerror(errno));
        rc = PD_EINVAL;
    } else if (!S_ISREG(st.st_mode)) {
        snprintf(why, whylen, "key file %s is not a regular file", path);
        rc = PD_EINVAL;
    } else if (st.st_mode & (S_IWGRP | S_IRWXO)) {
        snprintf(why, whylen,
                 "key file %s is %s (mode %04o): refusing to start; run chmod 600 %s (or "
                 "chmod 640 when a group must read it)",
                 path, (st.st_mode & S_IRWXO) ? "accessible by others" : "writable by its group",
                 (unsigned)(st.st_mode & 07777), path);
        rc = PD_EINVAL;
    } else {
        for (;;) {
            ssize_t r = read(fd, buf + n, sizeof buf - 1 - n);
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0) {
                snprintf(why, whylen, "key file %s: %s", path, strerror(errno));
                rc = PD_EINVAL;
                break;
            }
            if (r == 0)
                break;
            n += (size_t)r;
            if (n == sizeof buf - 1) {
                snprintf(why, whylen, "key file %s: longer than 4096 characters", path);
                rc = PD_EINVAL;
                break;
            }
        }
    }
    close(fd);
    if (rc == 0) {
        while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
            n--;
        buf[n] = '\0';
        if (!key_ok(buf)) {
            snprintf(why, whylen,
                     "key file %s: the key must be 16 to 4096 printable characters without "
                     "spaces (`predictd keygen` writes one)",
                     path);
            rc = PD_EINVAL;
        } else if (!(c->api_key = strdup(buf))) {
            rc = PD_ENOMEM;
        }
    }
    explicit_bzero(buf, sizeof buf); /* no copy of the key left on the stack */
    return rc;
}

int server_config_load_keys(server_config *c, char *why, size_t whylen)
{
    int rc;
    if (c->api_key) {
        if (!key_ok(c->api_key)) {
            snprintf(why, whylen,
                     "PREDICTD_API_KEY: the key must be 16 to 4096 printable characters "
                     "without spaces");
            return PD_EINVAL;
        }
    } else if (c->api_key_file && (rc = read_key_file(c, why, whylen))) {
        return rc;
    }
    if (c->read_key && !key_ok(c->read_key)) {
        snprintf(why, whylen,
                 "PREDICTD_READ_KEY: the key must be 16 to 4096 printable characters without "
                 "spaces");
        return PD_EINVAL;
    }
    return 0;
}

int server_config_load(server_config *c, int *argc, char **argv, char *why, size_t whylen)
{
    memset(c, 0, sizeof *c);
    int rc;
    for (size_t i = 0; i < NOPTS; i++) {
        const char *v = getenv(opts[i].env);
        if (!v || !*v)
            v = opts[i].def;
        if (v && (rc = set_value(c, &opts[i], v, why, whylen)))
            return rc;
    }
    int out = 1;
    for (int i = 1; i < *argc; i++) {
        const char *a = argv[i];
        const struct opt *o = NULL;
        const char *val = NULL;
        if (strncmp(a, "--", 2) == 0) {
            for (size_t k = 0; k < NOPTS; k++) {
                size_t fl = strlen(opts[k].flag);
                if (strncmp(a + 2, opts[k].flag, fl) == 0 &&
                    (a[2 + fl] == '\0' || a[2 + fl] == '=')) {
                    o = &opts[k];
                    val = a[2 + fl] == '=' ? a + 3 + fl : NULL;
                    break;
                }
            }
        }
        if (!o) {
            argv[out++] = argv[i];
            continue;
        }
        if (!val) {
            if (i + 1 >= *argc) {
                snprintf(why, whylen, "--%s needs a value", o->flag);
                return PD_EINVAL;
            }
            val = argv[++i];
        }
        if ((rc = set_value(c, o, val, why, whylen)))
            return rc;
    }
    argv[out] = NULL;
    *argc = out;

    /* listen = host:port, [v6addr]:port or v6addr:port ("::" has colons); port 0
     * lets the kernel choose (the log says which) */
    const char *colon = strrchr(c->listen, ':');
    char *end;
    long port = colon ? strtol(colon + 1, &end, 10) : -1;
    if (!colon || colon == c->listen || end == colon + 1 || *end || port < 0 || port > 65535 ||
        (size_t)(colon - c->listen) >= sizeof c->listen_host) {
        snprintf(why, whylen, "--listen: '%s' is not host:port", c->listen);
        return PD_EINVAL;
    }
    const char *hs = c->listen, *he = colon;
    if (hs[0] == '[' && he[-1] == ']')
        hs++, he--;
    if (he <= hs) {
        snprintf(why, whylen, "--listen: '%s' is not host:port", c->listen);
        return PD_EINVAL;
    }
    memcpy(c->listen_host, hs, (size_t)(he - hs));
    c->listen_host[he - hs] = '\0';
    c->listen_port = (int)port;
    struct in_addr ia;
    struct in6_addr ia6;
    if (strcmp(c->listen_host, "localhost") != 0 && inet_pton(AF_INET, c->listen_host, &ia) != 1 &&
        inet_pton(AF_INET6, c->listen_host, &ia6) != 1) {
        snprintf(why, whylen, "--listen: '%s' is not an IPv4 or IPv6 address (or localhost)",
                 c->listen_host);
        return PD_EINVAL;
    }

    if (c->threads == 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        c->threads = (int)(cores > 0 ? cores * 2 : 4);
    }
    if (!c->log_format)
        c->log_format = strdup(isatty(STDERR_FILENO) ? "text" : "json");
    if (!c->log_format)
        return PD_ENOMEM;
    if (strcmp(c->log_format, "text") && strcmp(c->log_format, "json")) {
        snprintf(why, whylen, "--log-format: '%s' is not text or json", c->log_format);
        return PD_EINVAL;
    }
    if (strcmp(c->log_level, "debug") && strcmp(c->log_level, "info") &&
        strcmp(c->log_level, "warn") && strcmp(c->log_level, "error")) {
        snprintf(why, whylen, "--log-level: '%s' is not debug, info, warn or error", c->log_level);
        return PD_EINVAL;
    }
    return 0;
}

void server_config_cleanup(server_config *c)
{
    if (c->api_key)
        explicit_bzero(c->api_key, strlen(c->api_key));
    if (c->read_key)
        explicit_bzero(c->read_key, strlen(c->read_key));
    for (size_t i = 0; i < NOPTS; i++)
        if (opts[i].type == OPT_STR) {
            char **slot = (char **)((char *)c + opts[i].offset);
            free(*slot);
            *slot = NULL;
        }
}

void server_config_usage(FILE *out)
{
    fprintf(out, "\nOptions (flag / environment variable, default):\n");
    for (size_t i = 0; i < NOPTS; i++)
        fprintf(out, "  --%-18s %-26s %-16s %s\n", opts[i].flag, opts[i].env,
                opts[i].def ? opts[i].def : "(none)", opts[i].help);
}
