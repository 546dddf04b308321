/*
 * jobs.c: the SQL of the training_jobs table (db/003_training_jobs.sql):
 * insert a job when it is queued, claim the oldest queued one for a worker
 * (FOR UPDATE SKIP LOCKED, so two replicas never claim the same job), beat
 * the running job's heartbeat (reading its cancel request back), request a
 * cancel, update it on state changes and progress, read one or the most
 * recent, and mark failed the running jobs whose worker is gone (no
 * heartbeat for a while).
 *
 * It does not decide states or run anything (training/jobs.c does) and
 * does not touch candles.
 *
 * DESIGN
 * - Job records are low-rate (a handful of statements per job), written by
 *   the training worker and the admin API's threads. They go through one
 *   dedicated connection owned by a store_jobs_db handle and guarded by
 *   its mutex, instead of every HTTP thread's store connection: a job
 *   update never waits behind a window query, and the store's
 *   per-thread connections stay the candle path's alone.
 * - The connection is a store__pg_link (pg.c), the same kind the ledger
 *   holds: made on first use (connect_timeout 3 s unless the URL says
 *   otherwise, statement_timeout 5 s) and made again once when a statement
 *   finds it gone; a second failure is PD_EDB.
 * - The schema's states are queued, running, succeeded, failed, canceled,
 *   rejected; this file passes states through and lets a CHECK violation
 *   surface as PD_EINVAL.
 * - A unique violation of training_jobs_one_active (a job for the series is
 *   already queued or running) is PD_EBUSY.
 * - Times cross as Unix seconds: to_timestamp($n) in, extract(epoch) out;
 *   0 means NULL both ways.
 *
 * THREADING: every function may be called from any thread; the handle's
 * mutex serialises use of its connection.
 */
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "features/features.h"
#include "store/store.h"
#include "store/pg_internal.h"
#include "util/util.h"

#define MOD "jobs"

struct store_jobs_db {
    store__pg_link link;
};

int store_jobs_open(const char *database_url, store_jobs_db **out)
{
    store_jobs_db *db = calloc(1, sizeof *db);
    if (!db)
        return PD_ENOMEM;
    int rc = store__pg_link_init(&db->link, database_url, MOD, "predictd-jobs",
                                    STORE__PG_KEEPALIVE_DEFAULT);
    if (rc) {
        free(db);
        return rc;
    }
    *out = db;
    return 0;
}

void store_jobs_close(store_jobs_db *db)
{
    if (!db)
        return;
    store__pg_link_cleanup(&db->link);
    free(db);
}

struct stmt {
    const char *what, *sql;
    int n;
    const char *const *vals;
    ExecStatusType want;
    PGresult *res; /* on success */
};

static int op_stmt(PGconn *c, void *arg)
{
    struct stmt *s = arg;
    return store__pg_exec(MOD, c, s->what, s->sql, s->n, s->vals, s->want,
                             STORE__PG_UNIQUE_BUSY, &s->res);
}

/* Runs one parameterised statement (text format) on the handle's
 * connection, reconnecting once. 0, PD_EBUSY (unique violation), PD_EINVAL
 * (other 22/23 class errors: a CHECK) or PD_EDB. On 0 *out holds the
 * result (PQclear it) when out is given. */
static int exec(store_jobs_db *db, const char *what, const char *sql, int n,
                const char *const *vals, ExecStatusType want, PGresult **out)
{
    if (!db)
        return PD_EDB;
    struct stmt s = {.what = what, .sql = sql, .n = n, .vals = vals, .want = want};
    int rc = store__pg_link_run(&db->link, op_stmt, &s);
    if (rc == 0) {
        if (out)
            *out = s.res;
        else
            PQclear(s.res);
    }
    return rc;
}

static const char *i64_or_null(int64_t v, char *buf, size_t len)
{
    if (v == 0)
        return NULL;
    snprintf(buf, len, "%" PRId64, v);
    return buf;
}

int store_jobs_insert(store_jobs_db *db, const char *symbol, const char *tf,
                         const char *params_json, int64_t *id, int64_t *created_at)
{
    return store_jobs_insert_ex(db, symbol, tf, params_json, NULL, id, created_at);
}

int store_jobs_insert_ex(store_jobs_db *db, const char *symbol, const char *tf,
                         const char *params_json, const char *metrics_json, int64_t *id,
                         int64_t *created_at)
{
    if (!symbol || !tf || !params_json || !id)
        return PD_EINVAL;
    const char *vals[] = {symbol, tf, params_json, metrics_json};
    PGresult *r = NULL;
    int rc = exec(db, "insert training job",
                  "INSERT INTO training_jobs (symbol, timeframe, state, params, metrics) "
                  "VALUES ($1, $2, 'queued', $3::jsonb, $4::jsonb) "
                  "RETURNING id, floor(extract(epoch FROM created_at))::bigint",
                  4, vals, PGRES_TUPLES_OK, &r);
    if (rc != 0)
        return rc;
    if (PQntuples(r) != 1) {
        PQclear(r);
        return PD_EDB;
    }
    *id = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    if (created_at)
        *created_at = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
    PQclear(r);
    return 0;
}

int store_jobs_update(store_jobs_db *db, const store_job_row *row)
{
    if (!row || row->id <= 0)
        return PD_EINVAL;
    char id[24], prog[40], ver[24], st[24], fin[24];
    const char *stage = row->stage[0] ? row->stage : NULL;
    snprintf(id, sizeof id, "%" PRId64, row->id);
    double p = row->progress < 0 ? 0 : row->progress > 1 ? 1 : row->progress;
    snprintf(prog, sizeof prog, "%.6f", p);
    const char *vals[] = {
        id,
        row->state,
        prog,
        row->metrics,
        row->error,
        row->version > 0 ? (snprintf(ver, sizeof ver, "%" PRId32, row->version), ver) : NULL,
        i64_or_null(row->started_at, st, sizeof st),
        i64_or_null(row->finished_at, fin, sizeof fin),
        stage,
    };
    PGresult *r = NULL;
    int rc = exec(db, "update training job",
                  "UPDATE training_jobs SET state = $2, progress = $3::double precision, "
                  "metrics = $4::jsonb, error = $5, version = $6::integer, "
                  "started_at = to_timestamp($7::bigint), finished_at = to_timestamp($8::bigint), "
                  "stage = $9 "
                  "WHERE id = $1::bigint",
                  9, vals, PGRES_COMMAND_OK, &r);
    if (rc != 0)
        return rc;
    bool found = strcmp(PQcmdTuples(r), "0") != 0;
    PQclear(r);
    return found ? 0 : PD_ENOTFOUND;
}

#define ROW_COLUMNS                                                                                \
    "id, symbol, timeframe, state, params::text, progress, metrics::text, error, "                 \
    "coalesce(version, 0), floor(extract(epoch FROM created_at))::bigint, "                        \
    "coalesce(floor(extract(epoch FROM started_at))::bigint, 0), "                                 \
    "coalesce(floor(extract(epoch FROM finished_at))::bigint, 0), "                                \
    "coalesce(stage, ''), coalesce(worker, ''), cancel_requested"

static char *dup_or_null(const PGresult *r, int row, int col)
{
    if (PQgetisnull(r, row, col))
        return NULL;
    return strdup(PQgetvalue(r, row, col));
}

/* jsonb prints ", " and ": "; drops the blanks outside strings so the text
 * reads as it was written (compact). In place. */
static void json_compact(char *s)
{
    if (!s)
        return;
    bool in_str = false, esc = false;
    char *w = s;
    for (const char *p = s; *p; p++) {
        if (in_str) {
            if (esc)
                esc = false;
            else if (*p == '\\')
                esc = true;
            else if (*p == '"')
                in_str = false;
        } else if (*p == '"') {
            in_str = true;
        } else if (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r') {
            continue;
        }
        *w++ = *p;
    }
    *w = '\0';
}

static int decode_row(const PGresult *r, int i, store_job_row *out)
{
    store_job_row j;
    memset(&j, 0, sizeof j);
    j.id = strtoll(PQgetvalue(r, i, 0), NULL, 10);
    snprintf(j.symbol, sizeof j.symbol, "%s", PQgetvalue(r, i, 1));
    snprintf(j.timeframe, sizeof j.timeframe, "%s", PQgetvalue(r, i, 2));
    snprintf(j.state, sizeof j.state, "%s", PQgetvalue(r, i, 3));
    j.params = dup_or_null(r, i, 4);
    json_compact(j.params);
    j.progress = strtod(PQgetvalue(r, i, 5), NULL);
    j.metrics = dup_or_null(r, i, 6);
    json_compact(j.metrics);
    j.error = dup_or_null(r, i, 7);
    j.version = (int32_t)strtol(PQgetvalue(r, i, 8), NULL, 10);
    j.created_at = strtoll(PQgetvalue(r, i, 9), NULL, 10);
    j.started_at = strtoll(PQgetvalue(r, i, 10), NULL, 10);
    j.finished_at = strtoll(PQgetvalue(r, i, 11), NULL, 10);
    snprintf(j.stage, sizeof j.stage, "%s", PQgetvalue(r, i, 12));
    snprintf(j.worker, sizeof j.worker, "%s", PQgetvalue(r, i, 13));
    j.cancel_requested = strcmp(PQgetvalue(r, i, 14), "t") == 0;
    if ((!j.params && !PQgetisnull(r, i, 4)) || (!j.metrics && !PQgetisnull(r, i, 6)) ||
        (!j.error && !PQgetisnull(r, i, 7))) {
        store_job_row_cleanup(&j);
        return PD_ENOMEM;
    }
    *out = j;
    return 0;
}

void store_job_row_cleanup(store_job_row *row)
{
    if (!row)
        return;
    free(row->params);
    free(row->metrics);
    free(row->error);
    row->params = row->metrics = row->error = NULL;
}

int store_jobs_get(store_jobs_db *db, int64_t id, store_job_row *out)
{
    char ids[24];
    snprintf(ids, sizeof ids, "%" PRId64, id);
    const char *vals[] = {ids};
    PGresult *r = NULL;
    int rc = exec(db, "get training job",
                  "SELECT " ROW_COLUMNS " FROM training_jobs WHERE id = $1::bigint", 1, vals,
                  PGRES_TUPLES_OK, &r);
    if (rc != 0)
        return rc;
    if (PQntuples(r) == 0)
        rc = PD_ENOTFOUND;
    else
        rc = decode_row(r, 0, out);
    PQclear(r);
    return rc;
}

int store_jobs_list(store_jobs_db *db, size_t limit, store_job_row **out, size_t *n)
{
    char lim[24];
    snprintf(lim, sizeof lim, "%zu", limit ? limit : 50);
    const char *vals[] = {lim};
    PGresult *r = NULL;
    int rc = exec(db, "list training jobs",
                  "SELECT " ROW_COLUMNS
                  " FROM training_jobs ORDER BY created_at DESC, id DESC LIMIT $1::bigint",
                  1, vals, PGRES_TUPLES_OK, &r);
    if (rc != 0)
        return rc;
    size_t rows = (size_t)PQntuples(r);
    store_job_row *v = calloc(rows ? rows : 1, sizeof *v);
    if (!v) {
        PQclear(r);
        return PD_ENOMEM;
    }
    for (size_t i = 0; i < rows; i++) {
        if ((rc = decode_row(r, (int)i, &v[i])) != 0) {
            store_job_rows_free(v, i);
            PQclear(r);
            return rc;
        }
    }
    PQclear(r);
    *out = v;
    *n = rows;
    return 0;
}

void store_job_rows_free(store_job_row *rows, size_t n)
{
    if (!rows)
        return;
    for (size_t i = 0; i < n; i++)
        store_job_row_cleanup(&rows[i]);
    free(rows);
}

int store_jobs_claim(store_jobs_db *db, const char *worker, store_job_row *out)
{
    if (!worker || !*worker || !out)
        return PD_EINVAL;
    const char *vals[] = {worker};
    PGresult *r = NULL;
    /* SKIP LOCKED: a row another replica is claiming right now is passed
     * over, not waited for; the UPDATE then makes it 'running' for good */
    int rc = exec(db, "claim training job",
                  "UPDATE training_jobs SET state = 'running', started_at = now(), worker = $1, "
                  "heartbeat_at = now(), stage = 'load' "
                  "WHERE id = (SELECT id FROM training_jobs WHERE state = 'queued' "
                  "            ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED) "
                  "RETURNING " ROW_COLUMNS,
                  1, vals, PGRES_TUPLES_OK, &r);
    if (rc != 0)
        return rc;
    rc = PQntuples(r) == 1 ? decode_row(r, 0, out) : PD_ENOTFOUND;
    /* claimed but not handed over (out of memory): back in the queue, or
     * it would sit "running" without a worker until the orphan sweep
     * failed it */
    if (rc == PD_ENOMEM)
        (void)store_jobs_requeue(db, strtoll(PQgetvalue(r, 0, 0), NULL, 10), worker);
    PQclear(r);
    return rc;
}

int store_jobs_heartbeat(store_jobs_db *db, int64_t id, const char *worker, double progress,
                         const char *stage, bool *cancel)
{
    if (!worker || !cancel)
        return PD_EINVAL;
    char ids[24], prog[40];
    snprintf(ids, sizeof ids, "%" PRId64, id);
    snprintf(prog, sizeof prog, "%.6f", progress < 0 ? 0 : progress > 1 ? 1 : progress);
    const char *vals[] = {ids, worker, prog, stage && *stage ? stage : NULL};
    PGresult *r = NULL;
    int rc = exec(db, "training job heartbeat",
                  "UPDATE training_jobs SET heartbeat_at = now(), "
                  "progress = greatest(progress, $3::double precision), "
                  "stage = coalesce($4, stage) "
                  "WHERE id = $1::bigint AND worker = $2 AND state = 'running' "
                  "RETURNING cancel_requested",
                  4, vals, PGRES_TUPLES_OK, &r);
    if (rc != 0)
        return rc;
    if (PQntuples(r) == 1)
        *cancel = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    else
        rc = PD_ENOTFOUND;
    PQclear(r);
    return rc;
}

int store_jobs_cancel(store_jobs_db *db, int64_t id, bool *was_queued)
{
    char ids[24];
    snprintf(ids, sizeof ids, "%" PRId64, id);
    const char *vals[] = {ids};
    PGresult *r = NULL;
    /* a queued job ends here; a running one is asked, and its worker
     * (whichever replica runs it) stops at its next heartbeat */
    int rc = exec(db, "cancel training job",
                  "UPDATE training_jobs SET cancel_requested = true, "
                  "state = CASE WHEN state = 'queued' THEN 'canceled' ELSE state END, "
                  "error = CASE WHEN state = 'queued' THEN 'canceled' ELSE error END, "
                  "finished_at = CASE WHEN state = 'queued' THEN now() ELSE finished_at END "
                  "WHERE id = $1::bigint AND state IN ('queued', 'running') RETURNING state",
                  1, vals, PGRES_TUPLES_OK, &r);
    if (rc != 0)
        return rc;
    if (PQntuples(r) == 1) {
        if (was_queued)
            *was_queued = strcmp(PQgetvalue(r, 0, 0), "canceled") == 0;
        PQclear(r);
        return 0;
    }
    PQclear(r);
    store_job_row row;
    rc = store_jobs_get(db, id, &row);
    if (rc != 0)
        return rc;
    store_job_row_cleanup(&row);
    return PD_EINVAL; /* it exists and already finished */
}

int store_jobs_count_queued(store_jobs_db *db, size_t *count)
{
    PGresult *r = NULL;
    int rc = exec(db, "count queued training jobs",
                  "SELECT count(*) FROM training_jobs WHERE state = 'queued'", 0, NULL,
                  PGRES_TUPLES_OK, &r);
    if (rc != 0)
        return rc;
    *count = (size_t)strtoull(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return 0;
}

int store_jobs_fail_orphaned(store_jobs_db *db, int stale_s, const char *error, size_t *count)
{
    char secs[24];
    snprintf(secs, sizeof secs, "%d", stale_s);
    const char *vals[] = {error ? error : "interrupted", secs};
    PGresult *r = NULL;
    int rc = exec(db, "fail orphaned training jobs",
                  "UPDATE training_jobs SET state = 'failed', error = $1, finished_at = now(), "
                  "stage = NULL "
                  "WHERE state = 'running' AND (heartbeat_at IS NULL OR "
                  "heartbeat_at < now() - make_interval(secs => $2::integer))",
                  2, vals, PGRES_COMMAND_OK, &r);
    if (rc != 0)
        return rc;
    if (count)
        *count = (size_t)strtoull(PQcmdTuples(r), NULL, 10);
    PQclear(r);
    return 0;
}

int store_jobs_requeue(store_jobs_db *db, int64_t id, const char *worker)
{
    if (!worker)
        return PD_EINVAL;
    char ids[24];
    snprintf(ids, sizeof ids, "%" PRId64, id);
    const char *vals[] = {ids, worker};
    PGresult *r = NULL;
    int rc = exec(db, "requeue training job",
                  "UPDATE training_jobs SET state = 'queued', progress = 0, stage = NULL, "
                  "started_at = NULL, worker = NULL, heartbeat_at = NULL "
                  "WHERE id = $1::bigint AND worker = $2 AND state = 'running' "
                  "AND NOT cancel_requested",
                  2, vals, PGRES_COMMAND_OK, &r);
    if (rc != 0)
        return rc;
    bool found = strcmp(PQcmdTuples(r), "0") != 0;
    PQclear(r);
    return found ? 0 : PD_ENOTFOUND;
}
