/*
 * lock.c: a PostgreSQL session advisory lock held on a dedicated
 * connection, so that one process among several on one database does a
 * thing (the replicas' leader, a single market-data ingester). Also the
 * one-off NOTIFY sender (store_notifier) the replicas use to tell each
 * other that a series changed.
 *
 * It does not decide what the lock guards, nor retry on its own: the owner
 * calls store_lock_try() periodically (every second or so), which takes
 * the lock when it is free and, while it is held, checks that the
 * connection holding it still lives.
 *
 * DESIGN
 * - A session advisory lock lives as long as the backend that took it.
 *   When the holding process dies, its socket closes, the backend ends and
 *   PostgreSQL releases the lock at once; a standby's next
 *   store_lock_try() gets it. No lease, no clock.
 * - The session sets the server-side TCP keepalives (10 s idle, 5 s
 *   interval, 3 probes) as well as the client's, so a holder cut off by
 *   the network releases the lock within about 25 s instead of the
 *   server's default two hours; the holder finds out as soon as its own
 *   check fails and stops acting.
 * - Releasing closes the connection: no unlock statement can be lost and
 *   leave the lock held by a live session.
 * - The key is 64 bits (pg_try_advisory_lock(bigint)); store_lock_key()
 *   derives one from a name, so two users agree on it by name alone.
 *
 * THREADING: a store_lock belongs to one thread at a time (its owner).
 * A store_notifier is thread-safe (its link's mutex).
 */
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/pg_internal.h"
#include "store/store.h"
#include "util/util.h"

#define MOD "lock"

struct store_lock {
    char *url;
    char name[48];
    int64_t key;
    PGconn *pg; /* NULL when not connected */
    bool held;
    bool down; /* the database was unreachable at the last try (logged once) */
};

int64_t store_lock_key(const char *name)
{
    /* FNV-1a 64 over the name: stable across builds and processes */
    uint64_t h = UINT64_C(14695981039346656037);
    for (const unsigned char *p = (const unsigned char *)(name ? name : ""); *p; p++) {
        h ^= *p;
        h *= UINT64_C(1099511628211);
    }
    return (int64_t)h;
}

int store_lock_open(const char *database_url, const char *name, int64_t key, store_lock **out)
{
    if (!name || !*name || !out)
        return PD_EINVAL;
    int rc = store__pg_url_check(MOD, database_url);
    if (rc)
        return rc;
    store_lock *l = calloc(1, sizeof *l);
    if (!l || !(l->url = strdup(database_url))) {
        free(l);
        return PD_ENOMEM;
    }
    snprintf(l->name, sizeof l->name, "%s", name);
    l->key = key;
    *out = l;
    return 0;
}

static void drop(store_lock *l)
{
    PQfinish(l->pg);
    l->pg = NULL;
    l->held = false;
}

static int connect_lock(store_lock *l)
{
    PGconn *c = store__pg_connect(MOD, l->url, "predictd-lock", STORE__PG_KEEPALIVE_PROBE);
    if (!c)
        return PD_EDB;
    PGresult *r = PQexec(c, "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; "
                            "SET tcp_keepalives_count = 3");
    int rc = store__pg_check(MOD, c, r, PGRES_COMMAND_OK, "lock session keepalives", 0);
    PQclear(r);
    if (rc) {
        PQfinish(c);
        return PD_EDB;
    }
    l->pg = c;
    return 0;
}

/* pg_try_advisory_lock on the current connection: 0 and *taken,
 * STORE__PG_LOST or PD_EDB. */
static int try_take(store_lock *l, bool *taken)
{
    char key[24];
    snprintf(key, sizeof key, "%" PRId64, l->key);
    const char *vals[] = {key};
    PGresult *r = NULL;
    int rc =
        store__pg_exec(MOD, l->pg, "try advisory lock", "SELECT pg_try_advisory_lock($1::bigint)",
                       1, vals, PGRES_TUPLES_OK, 0, &r);
    if (rc)
        return rc;
    *taken = PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    return 0;
}

/* Is the holding session still there? 0 yes, STORE__PG_LOST or PD_EDB. */
static int check_held(store_lock *l)
{
    PGresult *r = PQexec(l->pg, "SELECT 1");
    int rc = store__pg_check(MOD, l->pg, r, PGRES_TUPLES_OK, "advisory lock check", 0);
    PQclear(r);
    return rc;
}

int store_lock_try(store_lock *l)
{
    if (!l)
        return PD_EINVAL;
    if (l->held) {
        if (check_held(l) == 0)
            return 1;
        LOG_WARN(MOD, "%s: lost the connection holding the lock; no longer held", l->name);
        drop(l);
        /* fall through: try to take it again on a new connection */
    }
    for (int attempt = 0; attempt < 2; attempt++) {
        if (!l->pg || PQstatus(l->pg) != CONNECTION_OK) {
            drop(l);
            if (connect_lock(l) != 0) {
                if (!l->down)
                    LOG_WARN(MOD, "%s: the database is unreachable; the lock is not held", l->name);
                l->down = true;
                return PD_EDB;
            }
        }
        bool taken = false;
        int rc = try_take(l, &taken);
        if (rc == STORE__PG_LOST) {
            drop(l);
            continue;
        }
        if (rc < 0) {
            drop(l);
            return rc;
        }
        if (l->down)
            LOG_INFO(MOD, "%s: the database is reachable again", l->name);
        l->down = false;
        l->held = taken;
        return taken ? 1 : 0;
    }
    return PD_EDB;
}

bool store_lock_held(const store_lock *l)
{
    return l && l->held;
}

void store_lock_release(store_lock *l)
{
    if (l)
        drop(l);
}

void store_lock_close(store_lock *l)
{
    if (!l)
        return;
    drop(l);
    free(l->url);
    free(l);
}

/* ---------------------------------------------------------------------------
 * NOTIFY.
 */
struct store_notifier {
    store__pg_link link;
};

int store_notifier_open(const char *database_url, store_notifier **out)
{
    if (!out)
        return PD_EINVAL;
    store_notifier *n = calloc(1, sizeof *n);
    if (!n)
        return PD_ENOMEM;
    int rc = store__pg_link_init(&n->link, database_url, MOD, "predictd-notify",
                                 STORE__PG_KEEPALIVE_DEFAULT);
    if (rc) {
        free(n);
        return rc;
    }
    *out = n;
    return 0;
}

struct notify_arg {
    const char *channel, *payload;
};

static int op_notify(PGconn *c, void *arg)
{
    const struct notify_arg *a = arg;
    const char *vals[] = {a->channel, a->payload};
    return store__pg_exec(MOD, c, "NOTIFY", "SELECT pg_notify($1, $2)", 2, vals, PGRES_TUPLES_OK, 0,
                          NULL);
}

int store_notifier_send(store_notifier *n, const char *channel, const char *payload)
{
    if (!n || !channel || !*channel || !payload || strlen(payload) >= 8000)
        return PD_EINVAL;
    struct notify_arg a = {channel, payload};
    return store__pg_link_run(&n->link, op_notify, &a);
}

void store_notifier_close(store_notifier *n)
{
    if (!n)
        return;
    store__pg_link_cleanup(&n->link);
    free(n);
}
