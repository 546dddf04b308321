/*
 * notify.c: the inference loop's two wires to the outside. LISTEN on a
 * PostgreSQL channel (the candles' NOTIFY), and PUBLISH of new predictions
 * to Redis.
 *
 * DESIGN
 * - A listener owns one connection (pg.c's connect with TCP keepalives, so
 *   a silently dead peer is noticed). Its owner polls the socket and
 *   consumes; after a loss it connects again, and since LISTEN does not
 *   survive a reconnect store_listen_connect issues it anew.
 * - The publisher parses and connects as the cache does (one parser and
 *   one connect sequence, redis.c) but keeps its own connection: PUBLISH
 *   comes from the loop's thread only, and a failure is logged once per
 *   outage, with reconnects at most once a second.
 *
 * THREADING: a listener or a publisher is used by one thread at a time
 * (its owner).
 */
#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/pg_internal.h"
#include "store/redis_internal.h"
#include "store/store.h"
#include "util/util.h"

#define MOD "notify"
#define PUB_TIMEOUT_US 200000
#define PUB_BACKOFF_NS UINT64_C(1000000000)

/* ---------------------------------------------------------------------------
 * LISTEN.
 */
struct store_listener {
    char *url;
    char channel[64];
    PGconn *pg; /* NULL when not connected */
};

static bool channel_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 63 || !((s[0] >= 'a' && s[0] <= 'z') || s[0] == '_'))
        return false;
    return strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_") == n;
}

int store_listen_open(const char *database_url, const char *channel, store_listener **out)
{
    if (!out || !channel_ok(channel))
        return PD_EINVAL;
    int rc = store__pg_url_check(MOD, database_url);
    if (rc)
        return rc;
    store_listener *l = calloc(1, sizeof *l);
    if (!l || !(l->url = strdup(database_url))) {
        free(l);
        return PD_ENOMEM;
    }
    snprintf(l->channel, sizeof l->channel, "%s", channel);
    *out = l;
    return 0;
}

static void listen_drop(store_listener *l)
{
    PQfinish(l->pg);
    l->pg = NULL;
}

int store_listen_connect(store_listener *l)
{
    if (!l)
        return PD_EINVAL;
    listen_drop(l);
    PGconn *c = store__pg_connect(MOD, l->url, "predictd-listen", STORE__PG_KEEPALIVE_PROBE);
    if (!c)
        return PD_EDB;
    char sql[96];
    snprintf(sql, sizeof sql, "LISTEN %s", l->channel); /* channel_ok: a plain identifier */
    PGresult *r = PQexec(c, sql);
    int rc = store__pg_check(MOD, c, r, PGRES_COMMAND_OK, "LISTEN", 0);
    PQclear(r);
    if (rc) {
        PQfinish(c);
        return PD_EDB;
    }
    l->pg = c;
    return 0;
}

int store_listen_socket(const store_listener *l)
{
    return l && l->pg ? PQsocket(l->pg) : -1;
}

int store_listen_consume(store_listener *l, store_notify_fn fn, void *arg)
{
    if (!l || !fn)
        return PD_EINVAL;
    if (!l->pg)
        return PD_EDB;
    int ok = PQconsumeInput(l->pg);
    int count = 0;
    PGnotify *nt;
    while ((nt = PQnotifies(l->pg)) != NULL) {
        fn(nt->extra ? nt->extra : "", arg);
        PQfreemem(nt);
        count++;
    }
    if (!ok || PQstatus(l->pg) != CONNECTION_OK) {
        char buf[256];
        LOG_WARN(MOD, "LISTEN connection lost: %s",
                 store__pg_one_line(PQerrorMessage(l->pg), buf, sizeof buf));
        listen_drop(l);
        return PD_EDB;
    }
    return count;
}

void store_listen_close(store_listener *l)
{
    if (!l)
        return;
    listen_drop(l);
    free(l->url);
    free(l);
}

/* ---------------------------------------------------------------------------
 * PUBLISH.
 */
struct store_pub {
    store__redis_url url;
    redisContext *c;   /* NULL until first use or after a failure */
    uint64_t retry_at; /* util_mono_ns() before which no connect is tried */
    bool down;         /* an outage is in progress (logged) */
};

int store_pub_open(const char *redis_url, store_pub **out)
{
    if (!redis_url || !out)
        return PD_EINVAL;
    store_pub *p = calloc(1, sizeof *p);
    if (!p)
        return PD_ENOMEM;
    int rc = store__redis_url_parse(redis_url, &p->url);
    if (rc) {
        if (rc == PD_EINVAL)
            LOG_ERROR(MOD, "Redis URL is malformed or unsupported (" STORE__REDIS_URL_FORMS ")");
        store_pub_close(p);
        return rc;
    }
    *out = p;
    return 0;
}

static void pub_down(store_pub *p, const char *why)
{
    if (!p->down)
        LOG_WARN(MOD, "Redis unavailable, predictions are not published: %s", why);
    p->down = true;
    if (p->c) {
        redisFree(p->c);
        p->c = NULL;
    }
    p->retry_at = util_mono_ns() + PUB_BACKOFF_NS;
}

static bool pub_connect(store_pub *p)
{
    if (p->c)
        return true;
    if (p->retry_at && util_mono_ns() < p->retry_at)
        return false;
    char why[160];
    if (store__redis_connect(&p->url, PUB_TIMEOUT_US, &p->c, why, sizeof why)) {
        pub_down(p, why);
        return false;
    }
    return true;
}

int store_pub_publish(store_pub *p, const char *channel, const char *msg, size_t len,
                         long long *receivers)
{
    if (!p || !channel || (!msg && len))
        return PD_EINVAL;
    if (!pub_connect(p))
        return PD_ECACHE;
    redisReply *r = redisCommand(p->c, "PUBLISH %s %b", channel, msg ? msg : "", len);
    if (!r || r->type != REDIS_REPLY_INTEGER) {
        pub_down(p, r && r->type == REDIS_REPLY_ERROR ? r->str
                    : p->c->errstr[0]                 ? p->c->errstr
                                                      : "no reply");
        if (r)
            freeReplyObject(r);
        return PD_ECACHE;
    }
    if (p->down) {
        LOG_INFO(MOD, "Redis available again: publishing predictions");
        p->down = false;
    }
    if (receivers)
        *receivers = r->integer;
    freeReplyObject(r);
    return 0;
}

void store_pub_close(store_pub *p)
{
    if (!p)
        return;
    if (p->c)
        redisFree(p->c);
    store__redis_url_cleanup(&p->url);
    free(p);
}

int store_pub_publish_many(store_pub *p, const char *channel, const char *const *msgs,
                           const size_t *lens, size_t n)
{
    if (!p || !channel || (n && (!msgs || !lens)))
        return PD_EINVAL;
    if (n == 0)
        return 0;
    if (!pub_connect(p))
        return PD_ECACHE;
    size_t sent = 0;
    for (; sent < n; sent++)
        if (redisAppendCommand(p->c, "PUBLISH %s %b", channel, msgs[sent] ? msgs[sent] : "",
                               lens[sent]) != REDIS_OK)
            break;
    const char *why = sent < n ? "cannot queue a command" : NULL;
    for (size_t i = 0; i < sent; i++) {
        redisReply *r = NULL;
        if (redisGetReply(p->c, (void **)&r) != REDIS_OK || !r) {
            why = p->c->errstr[0] ? p->c->errstr : "no reply";
            break; /* the connection is unusable: pub_down below drops it */
        }
        if (r->type != REDIS_REPLY_INTEGER && !why)
            why = r->type == REDIS_REPLY_ERROR ? "an error reply" : "an unexpected reply";
        freeReplyObject(r);
    }
    if (why) {
        pub_down(p, why);
        return PD_ECACHE;
    }
    if (p->down) {
        LOG_INFO(MOD, "Redis available again: publishing predictions");
        p->down = false;
    }
    return 0;
}
