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

static char *dup_n(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

void store__redis_url_cleanup(store__redis_url *u)
{
    if (!u)
        return;
    free(u->user);
    free(u->password);
    memset(u, 0, sizeof *u);
}

/* redis://[[user]:password@]host[:port][/db]; host may be [v6]. */
int store__redis_url_parse(const char *url, store__redis_url *out)
{
    store__redis_url u = {.port = DEFAULT_PORT};
    int rc = PD_EINVAL;
    if (!url || strncmp(url, "redis://", 8) != 0)
        goto fail;
    const char *p = url + 8;
    const char *end = p + strcspn(p, "/?#");
    const char *at = memchr(p, '@', (size_t)(end - p));
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (!colon)
            goto fail; /* redis://user@host: no password given */
        rc = PD_ENOMEM;
        if (colon > p && !(u.user = dup_n(p, (size_t)(colon - p))))
            goto fail;
        if (!(u.password = dup_n(colon + 1, (size_t)(at - colon - 1))))
            goto fail;
        rc = PD_EINVAL;
        p = at + 1;
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
    redisContext *c = redisConnectWithTimeout(u->host, u->port, tv);
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
