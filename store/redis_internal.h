/*
 * redis_internal.h: the Redis plumbing that store/cache.c (one context
 * per thread, for windows and rendered values) and store/ledger.c (the
 * publisher's own context) share: the redis:// URL form of
 * PREDICTD_REDIS_URL and the connect sequence (timeouts, AUTH, SELECT).
 * Names carry a double underscore: exported for the module, not public.
 *
 * Nothing here logs or keeps state: each caller has its own outage
 * bookkeeping (cache.c: shared atomics and counters; ledger.c: per
 * publisher), so failures come back as a code and a one-line reason.
 */
#ifndef PREDICTD_FEATURES_REDIS_INTERNAL_H
#define PREDICTD_FEATURES_REDIS_INTERNAL_H

#include <stddef.h>

struct redisContext; /* hiredis' context */

/* A parsed redis://[[user]:password@]host[:port][/db] or
 * unix://[[user]:password@]/path/to/socket[?db=N] URL; user and password
 * are %-decoded. rediss:// (TLS) is refused: Debian's hiredis 0.14 has no
 * TLS. */
typedef struct store__redis_url {
    char host[256];        /* a name or an address; [v6] without the brackets; the
                            * socket's path when unix_socket */
    int unix_socket;       /* 1: host is a Unix socket path */
    int port;              /* 6379 unless the URL names one */
    int db;                /* 0 unless the URL names one */
    char *user, *password; /* malloc'd; NULL when absent */
} store__redis_url;

/* What a PD_EINVAL from store__redis_url_parse means, for the log, as a
 * printf format (never
 * echoes the URL, which may hold a password). */
#define STORE__REDIS_URL_FORMS                                                                     \
    "expected redis://[[user]:password@]host[:port][/db] or unix:///path[?db=N], with "            \
    "%%-escapes in user and password; rediss:// (TLS) needs a hiredis with TLS, which this "       \
    "build lacks"

/*
 * Parses url into *out (which the caller then owns: release it with
 * store__redis_url_cleanup()). Returns 0, PD_EINVAL for a malformed URL
 * (not logged: the caller says so, without echoing the URL, which may hold
 * a password) or PD_ENOMEM. *out is written only on success.
 */
int store__redis_url_parse(const char *url, store__redis_url *out);

/* Frees the strings of *u and zeroes it; NULL-safe and idempotent. */
void store__redis_url_cleanup(store__redis_url *u);

/*
 * Connects to u with a connect timeout of timeout_us microseconds, sets the
 * same timeout on every later command, then sends AUTH (when u has a
 * password) and SELECT (when u->db is not 0). Returns 0 with *out a new
 * context (the caller redisFree()s it), or PD_ECACHE with a one-line
 * reason in why (hiredis' error, or "AUTH: ..." / "SELECT: ..." with
 * Redis' answer); never logs. Thread-safe: touches only its arguments.
 */
int store__redis_connect(const store__redis_url *u, long timeout_us,
                            struct redisContext **out, char *why, size_t whylen);

#endif
