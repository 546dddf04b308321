/*
 * pg.c: the libpq plumbing of the store (see pg_internal.h):
 * one-line messages, connecting with connect_timeout and
 * statement_timeout, the one classification of a statement's result
 * (ok / connection lost / rejected / failed) with its log line, and the
 * dedicated mutex-guarded connection behind jobs.c's and ledger.c's
 * handles.
 *
 * It knows no table and no statement. candles.c's per-thread connections,
 * back-off and outage accounting stay in candles.c; the LISTEN connection's
 * lifetime stays in ledger.c (LISTEN must be issued again after a
 * reconnect, which only its owner knows to do).
 *
 * THREADING: the functions touch only their arguments, except a link,
 * whose connection its mutex guards.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/pg_internal.h"
#include "store/store_internal.h"
#include "util/util.h"

const char *store__pg_one_line(const char *msg, char *buf, size_t len)
{
    if (!msg || !*msg)
        msg = "unknown error";
    size_t i = 0;
    for (; msg[i] && i + 1 < len; i++)
        buf[i] = msg[i] == '\n' || msg[i] == '\r' ? ' ' : msg[i];
    while (i > 0 && buf[i - 1] == ' ')
        i--;
    buf[i] = '\0';
    return buf;
}

int store__pg_url_check(const char *mod, const char *url)
{
    if (!url || !*url)
        return PD_EINVAL;
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(url, &err);
    if (!opts) {
        /* never echo the URL or libpq's message about it: it may hold a password */
        LOG_ERROR(mod, "database URL is malformed");
        PQfreemem(err);
        return PD_EINVAL;
    }
    PQconninfoFree(opts);
    return 0;
}

/* arg: the log module. */
static void notice_to_log(void *arg, const char *msg)
{
    const char *mod = arg;
    char buf[256];
    LOG_DEBUG(mod, "server notice: %s", store__pg_one_line(msg, buf, sizeof buf));
}

PGconn *store__pg_connect_params(const char *mod, const char *const *kw, const char *const *val,
                                    int expand_dbname, char *why, size_t whylen)
{
    PGconn *c = PQconnectdbParams(kw, val, expand_dbname);
    if (!c || PQstatus(c) != CONNECTION_OK) {
        store__pg_one_line(c ? PQerrorMessage(c) : "out of memory", why, whylen);
        PQfinish(c);
        return NULL;
    }
    PQsetNoticeProcessor(c, notice_to_log, (void *)mod);
    return c;
}

PGconn *store__pg_connect(const char *mod, const char *url, const char *app,
                             enum store__pg_keepalive ka)
{
    /* Ours first: with expand_dbname, the settings of the URL (dbname, last)
     * override them. */
    const char *kw[9] = {"connect_timeout", "options", "fallback_application_name"};
    const char *val[9] = {"3", "-c statement_timeout=5000", app};
    size_t k = 3;
    if (ka != STORE__PG_KEEPALIVE_DEFAULT) {
        const char *const ka_kw[] = {"keepalives", "keepalives_idle", "keepalives_interval",
                                     "keepalives_count"};
        const char *const ka_val[] = {ka == STORE__PG_KEEPALIVE_OFF ? "0" : "1", "10", "5", "3"};
        for (size_t i = 0; i < 4; i++, k++) {
            kw[k] = ka_kw[i];
            val[k] = ka_val[i];
        }
    }
    kw[k] = "dbname";
    val[k] = url;
    char why[256];
    PGconn *c = store__pg_connect_params(mod, kw, val, 1, why, sizeof why);
    if (!c)
        LOG_WARN(mod, "%s: cannot connect to the database: %s", app, why);
    return c;
}

/* Is this failure the connection's rather than the statement's? */
static bool conn_lost(PGconn *c, const PGresult *r)
{
    if (!r || PQstatus(c) != CONNECTION_OK)
        return true;
    const char *s = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    if (!s)
        return false;
    return strncmp(s, "08", 2) == 0 || strcmp(s, "57P01") == 0 || strcmp(s, "57P02") == 0 ||
           strcmp(s, "57P03") == 0 || strcmp(s, "26000") == 0;
}

int store__pg_check(const char *mod, PGconn *c, const PGresult *r, ExecStatusType want,
                       const char *what, unsigned flags)
{
    if (r && PQresultStatus(r) == want)
        return 0;
    if (conn_lost(c, r))
        return STORE__PG_LOST;
    char buf[512];
    const char *msg = PQresultErrorMessage(r);
    if (!msg || !*msg)
        msg = PQresStatus(PQresultStatus(r)); /* no error: the wrong kind of result */
    store__pg_one_line(msg, buf, sizeof buf);
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    if ((flags & STORE__PG_UNIQUE_BUSY) && state && strcmp(state, "23505") == 0) {
        LOG_INFO(mod, "%s: %s", what, buf);
        return PD_EBUSY;
    }
    if (state && (strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0)) {
        LOG_WARN(mod, "%s: rejected by the database: %s", what, buf);
        return PD_EINVAL;
    }
    LOG_ERROR(mod, "%s failed: %s", what, buf);
    return PD_EDB;
}

int store__pg_exec(const char *mod, PGconn *c, const char *what, const char *sql, int n,
                      const char *const *vals, ExecStatusType want, unsigned flags, PGresult **out)
{
    PGresult *r = STORE__TIMED(DB, PQexecParams(c, sql, n, NULL, vals, NULL, NULL, 0));
    int rc = store__pg_check(mod, c, r, want, what, flags);
    if (rc == 0 && out)
        *out = r;
    else
        PQclear(r);
    return rc;
}

int store__pg_link_init(store__pg_link *l, const char *url, const char *mod, const char *app,
                           enum store__pg_keepalive ka)
{
    int rc = store__pg_url_check(mod, url);
    if (rc)
        return rc;
    memset(l, 0, sizeof *l);
    l->url = strdup(url);
    if (!l->url || pthread_mutex_init(&l->lock, NULL) != 0) {
        free(l->url);
        l->url = NULL;
        return PD_ENOMEM;
    }
    l->mod = mod;
    l->app = app;
    l->ka = ka;
    return 0;
}

void store__pg_link_cleanup(store__pg_link *l)
{
    PQfinish(l->pg);
    l->pg = NULL;
    pthread_mutex_destroy(&l->lock);
    free(l->url);
    l->url = NULL;
}

int store__pg_link_run(store__pg_link *l, store__pg_op op, void *arg)
{
    pthread_mutex_lock(&l->lock);
    int rc = PD_EDB;
    for (int attempt = 0; attempt < 2; attempt++) {
        if (!l->pg || PQstatus(l->pg) != CONNECTION_OK) {
            PQfinish(l->pg);
            l->pg = store__pg_connect(l->mod, l->url, l->app, l->ka);
            if (!l->pg) {
                rc = PD_EDB;
                break;
            }
        }
        rc = op(l->pg, arg);
        if (rc != STORE__PG_LOST)
            break;
        PQfinish(l->pg);
        l->pg = NULL;
        rc = PD_EDB;
    }
    pthread_mutex_unlock(&l->lock);
    return rc;
}

/* ---------------------------------------------------------------------------
 * Outage bookkeeping.
 */
void store__outage_fail(store__outage *o, const char *why)
{
    if (!atomic_exchange(&o->down, true)) {
        if (util_log_enabled(o->level))
            util_log_write(o->level, o->mod, "%s: %s", o->what, why);
    }
    else
        LOG_DEBUG(o->mod, "still: %s: %s", o->what, why);
}

void store__outage_ok(store__outage *o)
{
    if (atomic_load_explicit(&o->down, memory_order_relaxed) && atomic_exchange(&o->down, false))
        LOG_INFO(o->mod, "%s", o->back);
}
