/*
 * server config: the one configuration struct, filled from a table of
 * (flag, environment variable, default, bounds), validated at start-up and
 * read-only afterwards. Flags win over the environment, which wins over the
 * default. Secrets (the API keys) are never logged.
 */
#ifndef PREDICTD_SERVER_CONFIG_H
#define PREDICTD_SERVER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

typedef struct server_config {
    char *listen;         /* "127.0.0.1:8080" */
    char listen_host[64]; /* parsed from listen */
    int listen_port;
    char *database_url; /* NULL: none */
    char *redis_url;    /* NULL: no Redis */
    char *models_dir;
    int threads;
    char *api_key; /* admin key: PREDICTD_API_KEY, else read from api_key_file */
    char *api_key_file;
    char *read_key;       /* optional key for the prediction routes */
    char *log_format;     /* "text" | "json" */
    char *log_level;      /* "debug" | "info" | "warn" | "error" */
    char *cors_origins;   /* comma-separated, NULL: none */
    char *feed;           /* PREDICTD_FEED "name[:args]", NULL: no feed */
    int reload_interval;  /* seconds, 0 = on demand only */
    int rate_limit;       /* requests/s per client address, 0 = off */
    int rate_burst;       /* bucket size, 0 = twice rate_limit */
    bool cache;           /* PREDICTD_CACHE on|off */
    int retrain_interval; /* seconds, 0 = off */
    int drain_timeout;    /* seconds SIGTERM waits for in-flight requests */
    int max_connections;
    int per_ip_connections; /* 0: no per-address cap */
    int idle_timeout; /* seconds */
    int header_timeout; /* seconds for a request line and its headers */
    int stream_max;   /* concurrent WebSocket/SSE clients */
    int stale_after;  /* timeframes: older windows answer NO_TRADE stale_data */
    bool access_log;
    bool reuse_port; /* SO_REUSEPORT: another process may listen on the same port */
    char *migrations_dir;
    char *web_dir;         /* the dashboard page served at / */
    char *trusted_proxies; /* NULL: X-Forwarded-For is ignored */
    char *binance_ws_url;   /* PREDICTD_BINANCE_WS_URL */
    char *binance_rest_url; /* PREDICTD_BINANCE_REST_URL */
    int binance_renew;      /* PREDICTD_BINANCE_RENEW: seconds before a stream is renewed */
} server_config;

/*
 * Fills c from defaults, the environment and argv. Known flags
 * ("--name value" or "--name=value") are removed from argv; the rest
 * (the subcommand's own arguments) stay in order and *argc is updated.
 * Returns 0, or PD_EINVAL with a message in why (malformed value, out of
 * bounds, a flag without its value). Keys are not read here: see
 * server_config_load_keys. Call server_config_cleanup in every case.
 * Not thread-safe (reads the environment): call before threads start.
 */
int server_config_load(server_config *c, int *argc, char **argv, char *why, size_t whylen);

/*
 * Settles the admin key for the commands that use it (`serve`): the
 * PREDICTD_API_KEY value when set, else the content of api_key_file. A key
 * file that is missing leaves api_key NULL (admin routes disabled); one that
 * exists must be a regular file this process can read, that others may not
 * access at all and its group may not write (0600, 0400, 0640, 0440: a
 * Kubernetes Secret volume with fsGroup is root-owned 0440), else PD_EINVAL
 * with the reason in why (the key itself never appears in it). Keys (admin
 * and read) must be 16..4096 printable ASCII characters without spaces.
 */
int server_config_load_keys(server_config *c, char *why, size_t whylen);
void server_config_cleanup(server_config *c);
/* Prints the table of options (for --help) to out. */
void server_config_usage(FILE *out);

#endif
