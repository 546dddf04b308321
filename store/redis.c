/*
 * redis.c: the redis:// URL parser and the connect sequence that cache.c
 * and ledger.c share (see redis_internal.h), so PREDICTD_REDIS_URL means
 * the same host, credentials and database to the cache and to the
 * publisher.
 *
 * It does not log, retry, back off or keep contexts: those are the
 * callers' (their outage rules differ), so every failure is returned with
 * its reason.
 *
 * THREADING: no state; every function touches only its arguments.
 */
#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "store/redis_internal.h"
#include "util/util.h"

#define DEFAULT_PORT 6379
#define DB_MAX 1000000

/* 1 to 5 decimal digits naming a port in 1..65535. */
static int parse_port(const char *s, size_t len, int *out)
{
    if (len == 0 || len > 5)
        return PD_EINVAL;
    int v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return PD_EINVAL;
        v = v * 10 + (s[i] - '0');
    }
    if (v < 1 || v > 65535)
        return PD_EINVAL;
    *out = v;
    return 0;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* A %-decoded copy of s[0..n) in *out: 0, PD_EINVAL for a malformed escape
 * or an encoded NUL, PD_ENOMEM. */
static int dup_decoded(const char *s, size_t n, char **out)
{
    char *d = malloc(n + 1);
    if (!d)
        return PD_ENOMEM;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            int a = n - i >= 3 ? hexval(s[i + 1]) : -1, b = n - i >= 3 ? hexval(s[i + 2]) : -1;
            if (a < 0 || b < 0 || (a == 0 && b == 0)) {
                free(d);
                return PD_EINVAL;
            }
            d[o++] = (char)(a << 4 | b);
            i += 2;
        } else {
            d[o++] = s[i];
        }
    }
    d[o] = '\0';
    *out = d;
    return 0;
}

void store__redis_url_cleanup(store__redis_url *u)
{
    if (!u)
        return;
    free(u->user);
    free(u->password);
    memset(u, 0, sizeof *u);
}

/* unix://[[user]:password@]/path[?db=N], after the credentials. */
static int parse_unix(const char *p, store__redis_url *u)
{
    size_t plen = strcspn(p, "?#");
    if (p[0] != '/' || plen >= 108 || p[plen] == '#') /* 108: sun_path */
        return PD_EINVAL;
    memcpy(u->host, p, plen);
    u->host[plen] = '\0';
    u->unix_socket = 1;
    u->port = 0;
    const char *q = p + plen;
    if (*q == '?') {
        if (strncmp(q, "?db=", 4) != 0)
            return PD_EINVAL;
        char *dend;
        long db = strtol(q + 4, &dend, 10);
        if (*dend || dend == q + 4 || q[4] == '-' || db < 0 || db > DB_MAX)
            return PD_EINVAL;
        u->db = (int)db;
    }
    return 0;
}

/* redis://[[user]:password@]host[:port][/db]; host may be [v6];
 * unix://[[user]:password@]/path[?db=N]. */
int store__redis_url_parse(const char *url, store__redis_url *out)
{
    store__redis_url u = {.port = DEFAULT_PORT};
    int rc = PD_EINVAL;
    bool unix_socket = url && strncmp(url, "unix://", 7) == 0;
    if (!url || (!unix_socket && strncmp(url, "redis://", 8) != 0))
        goto fail; /* rediss:// too: no TLS in this hiredis */
    const char *p = url + (unix_socket ? 7 : 8);
    const char *end = unix_socket ? p + strcspn(p, "/") : p + strcspn(p, "/?#");
    const char *at = memchr(p, '@', (size_t)(end - p));
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (!colon)
            goto fail; /* redis://user@host: no password given */
        if (colon > p && (rc = dup_decoded(p, (size_t)(colon - p), &u.user)))
            goto fail;
        if ((rc = dup_decoded(colon + 1, (size_t)(at - colon - 1), &u.password)))
            goto fail;
        rc = PD_EINVAL;
        p = at + 1;
    } else if (unix_socket && end != p) {
        goto fail; /* unix://host/...: a socket has no host */
    }
    if (unix_socket) {
        if ((rc = parse_unix(end, &u)))
            goto fail;
        *out = u;
        return 0;
    }
    const char *host = p, *hend, *port = NULL;
    if (*p == '[') {
        host = p + 1;
        hend = memchr(host, ']', (size_t)(end - host));
        if (!hend)
            goto fail;
        if (hend + 1 < end) {
            if (hend[1] != ':')
                goto fail;
            port = hend + 2;
        }
    } else {
        hend = memchr(host, ':', (size_t)(end - host));
        if (hend)
            port = hend + 1;
        else
            hend = end;
    }
    size_t hlen = (size_t)(hend - host);
    if (hlen == 0 || hlen >= sizeof u.host)
        goto fail;
    memcpy(u.host, host, hlen);
    u.host[hlen] = '\0';
    if (port && parse_port(port, (size_t)(end - port), &u.port))
        goto fail;
    if (*end == '/' && end[1]) {
        char *dend;
        long db = strtol(end + 1, &dend, 10);
        if (*dend || dend == end + 1 || db < 0 || db > DB_MAX)
            goto fail;
        u.db = (int)db;
    } else if (*end && strcmp(end, "/") != 0) {
        goto fail;
    }
    *out = u;
    return 0;
fail:
    store__redis_url_cleanup(&u);
    return rc;
}

/* Checks the answer to a setup command (AUTH, SELECT) and frees it. */
static int setup_reply(redisReply *r, const char *what, char *why, size_t whylen)
{
    int ok = r && r->type == REDIS_REPLY_STATUS;
    if (!ok)
        snprintf(why, whylen, "%s: %s", what,
                 r && r->type == REDIS_REPLY_ERROR ? r->str : "no reply");
    if (r)
        freeReplyObject(r);
    return ok ? 0 : PD_ECACHE;
}

int store__redis_connect(const store__redis_url *u, long timeout_us, redisContext **out,
                            char *why, size_t whylen)
{
    struct timeval tv = {timeout_us / 1000000, timeout_us % 1000000};
    redisContext *c = u->unix_socket ? redisConnectUnixWithTimeout(u->host, tv)
                                     : redisConnectWithTimeout(u->host, u->port, tv);
    if (!c || c->err) {
        snprintf(why, whylen, "%s", c ? c->errstr : "out of memory");
        goto fail;
    }
    if (redisSetTimeout(c, tv) != REDIS_OK) {
        snprintf(why, whylen, "cannot set the socket timeout");
        goto fail;
    }
    if (u->password) {
        redisReply *r = u->user ? redisCommand(c, "AUTH %s %s", u->user, u->password)
                                : redisCommand(c, "AUTH %s", u->password);
        if (setup_reply(r, "AUTH", why, whylen))
            goto fail;
    }
    if (u->db && setup_reply(redisCommand(c, "SELECT %d", u->db), "SELECT", why, whylen))
        goto fail;
    *out = c;
    return 0;
fail:
    if (c)
        redisFree(c);
    return PD_ECACHE;
}
