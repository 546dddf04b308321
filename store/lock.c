/*
 * lock.c: leader election across processes that share one database, with
 * PostgreSQL session advisory locks. A process that holds the lock of a
 * key is the one that does the key's job (ingesting the market feed,
 * running a loop); the others stand by and retry, and take over when the
 * holder's session ends (its process died, or its connection broke: the
 * server releases a session lock when the session ends).
 *
 * DESIGN
 * - A handle owns one dedicated connection, never shared and never
 *   silently replaced: a new connection does not hold the old one's lock,
 *   so after a loss the holder must be told (store_lock_check answers
 *   "not held") and stop its job before trying again. This is why it does
 *   not use pg.c's self-healing link.
 * - TCP keepalives (probe after 10 s idle) so a holder cut off from the
 *   server notices; the server's side notices the same way and frees the
 *   lock for a standby.
 * - It knows nothing of what the lock protects.
 *
 * THREADING: a handle belongs to one thread at a time (its owner).
 */
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
    int64_t key;
    PGconn *pg; /* NULL when not connected */
    bool held;  /* pg's session holds the lock */
};

int store_lock_open(const char *database_url, int64_t key, store_lock **out)
{
    if (!out)
        return PD_EINVAL;
    int rc = store__pg_url_check(MOD, database_url);
    if (rc)
        return rc;
    store_lock *l = calloc(1, sizeof *l);
    if (!l || !(l->url = strdup(database_url))) {
        free(l);
        return PD_ENOMEM;
    }
    l->key = key;
    *out = l;
    return 0;
}

static void lock_drop(store_lock *l)
{
    PQfinish(l->pg);
    l->pg = NULL;
    l->held = false;
}

/* One boolean statement on the handle's connection. 0 with *v, PD_EDB (the
 * connection is dropped). */
static int query_bool(store_lock *l, const char *what, const char *sql, bool *v)
{
    char key[24];
    snprintf(key, sizeof key, "%lld", (long long)l->key);
    const char *vals[1] = {key};
    PGresult *r = NULL;
    int rc = store__pg_exec(MOD, l->pg, what, sql, strchr(sql, '$') ? 1 : 0, vals, PGRES_TUPLES_OK,
                            0, &r);
    if (rc != 0) {
        if (rc == STORE__PG_LOST)
            LOG_WARN(MOD, "%s: the connection was lost", what);
        PQclear(r);
        lock_drop(l);
        return PD_EDB;
    }
    *v = PQntuples(r) == 1 && PQgetvalue(r, 0, 0)[0] == 't';
    PQclear(r);
    return 0;
}

int store_lock_try(store_lock *l, bool *held)
{
    if (!l || !held)
        return PD_EINVAL;
    if (l->held) {
        int rc = store_lock_check(l, held);
        return rc;
    }
    if (!l->pg || PQstatus(l->pg) != CONNECTION_OK) {
        lock_drop(l);
        l->pg = store__pg_connect(MOD, l->url, "predictd-lock", STORE__PG_KEEPALIVE_PROBE);
        if (!l->pg)
            return PD_EDB;
    }
    bool got = false;
    int rc = query_bool(l, "advisory lock", "SELECT pg_try_advisory_lock($1::bigint)", &got);
    if (rc)
        return rc;
    l->held = got;
    *held = got;
    return 0;
}

int store_lock_check(store_lock *l, bool *held)
{
    if (!l || !held)
        return PD_EINVAL;
    if (!l->held || !l->pg) {
        *held = false;
        return 0;
    }
    /* pg_locks of this very session: a connection that answers but lost its
     * session (a pooler in between) would not show it */
    bool still = false;
    int rc = query_bool(l, "advisory lock check",
                        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' "
                        "AND pid = pg_backend_pid() AND granted AND objsubid = 1 AND "
                        "((classid::bigint << 32) | objid::bigint) = $1::bigint)",
                        &still);
    if (rc) {
        *held = false;
        return rc;
    }
    if (!still) {
        LOG_WARN(MOD, "advisory lock %lld is no longer held by this session", (long long)l->key);
        lock_drop(l);
    }
    *held = still;
    return 0;
}

void store_lock_release(store_lock *l)
{
    if (!l || !l->pg)
        return;
    if (l->held) {
        bool ok = false;
        (void)query_bool(l, "advisory unlock", "SELECT pg_advisory_unlock($1::bigint)", &ok);
    }
    lock_drop(l);
}

void store_lock_close(store_lock *l)
{
    if (!l)
        return;
    store_lock_release(l);
    free(l->url);
    free(l);
}
