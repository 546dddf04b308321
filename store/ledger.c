/*
 * ledger.c: the prediction ledger (the predictions table) and the
 * ledger's SQL: record, settle, figures, history. (LISTEN and PUBLISH, the
 * inference loop's other wires, are notify.c.)
 *
 * It does not decide when to predict or what to publish (predict/loop.c
 * does) and does not render JSON (api/ does).
 *
 * DESIGN
 * - The rules that settle a row are not here: store_ledger_settle takes
 *   the resolver as a function (predict_resolve, on the one triple barrier
 *   of inference/barrier.c), so this file stays SQL only.
 * - store_ledger_settle loads a series' open rows, the closed candles
 *   they span (one range query) and the latest closed candle's time, runs
 *   the resolver on each row and writes the settled ones in one
 *   transaction. Rows are updated only while still open (outcome IS NULL),
 *   so two resolvers (replicas) never overwrite each other.
 * - Writes are idempotent: INSERT ... ON CONFLICT DO NOTHING on the
 *   primary key (symbol, timeframe, candle_time, model_version).
 * - Performance figures are SQL aggregates (count ... FILTER, sums); the
 *   rolling window is the N most recent resolved rows of each version.
 * - A statement whose rows map one to one onto an array (open series,
 *   live figures, history, the candles to resolve) is a struct listing:
 *   its SQL, parameters and a row decoder, run by list_exec(), which owns
 *   the allocation and the clean-up.
 * - Times cross as Unix seconds (to_timestamp($n) in, extract(epoch) out),
 *   doubles as text with 17 significant digits (exact round trip); NULL is
 *   NaN.
 * - Every handle has its own connection (a store__pg_link, pg.c, as
 *   jobs.c's), made on first use and again once when a statement finds it
 *   lost; a second failure is PD_EDB. Every statement's result goes
 *   through store__pg_check(), as the store's and the jobs' do. 
 *
 * THREADING: a store_ledger's mutex serialises use of its connection.
 */
#include <inttypes.h>
#include <libpq-fe.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "features/features.h"
#include "store/store.h"
#include "store/pg_internal.h"
#include "util/util.h"

#define MOD "ledger"
#define SETTLE_ROWS_MAX 2000
#define SETTLE_CANDLES_MAX 200000
#define HISTORY_LIMIT_MAX 1000
#define WINDOW_MAX 100000

/* ---------------------------------------------------------------------------
 * Names.
 */
static const char *const outcome_names[] = {"OPEN", "TP1", "TP2", "TP3", "SL", "EXPIRED", "NONE"};
static const char *const class_names[] = {"LONG", "SHORT", "NO_TRADE"};

const char *store_ledger_outcome_name(int outcome)
{
    if (outcome < STORE_OUTCOME_OPEN || outcome > STORE_OUTCOME_NONE)
        return "OPEN";
    return outcome_names[outcome];
}

const char *store_ledger_class_name(int cls)
{
    if (cls < STORE_LEDGER_LONG || cls > STORE_LEDGER_NO_TRADE)
        return "UNKNOWN";
    return class_names[cls];
}

static int outcome_parse(const char *s)
{
    for (int i = STORE_OUTCOME_TP1; i <= STORE_OUTCOME_NONE; i++)
        if (strcmp(s, outcome_names[i]) == 0)
            return i;
    return -1;
}

static int class_parse(const char *s)
{
    for (int i = 0; i < 3; i++)
        if (strcmp(s, class_names[i]) == 0)
            return i;
    return -1;
}

/* ---------------------------------------------------------------------------
 * Connections.
 */
struct store_ledger {
    store__pg_link link; /* its own connection, as every handle */
};

int store_ledger_open(const char *database_url, store_ledger **out)
{
    if (!out)
        return PD_EINVAL;
    store_ledger *db = calloc(1, sizeof *db);
    if (!db)
        return PD_ENOMEM;
    int rc = store__pg_link_init(&db->link, database_url, MOD, "predictd-ledger",
                                    STORE__PG_KEEPALIVE_OFF);
    if (rc) {
        free(db);
        return rc;
    }
    *out = db;
    return 0;
}

void store_ledger_close(store_ledger *db)
{
    if (!db)
        return;
    store__pg_link_cleanup(&db->link);
    free(db);
}

/* Runs op on the handle's connection under its lock; when op finds the
 * connection lost (STORE__PG_LOST), connects again and runs it once
 * more. */
static int run(store_ledger *db, store__pg_op op, void *arg)
{
    if (!db)
        return PD_EDB;
    return store__pg_link_run(&db->link, op, arg);
}

/* One statement; on 0 *out holds the result when out is given. 0,
 * STORE__PG_LOST, PD_EINVAL (the data broke a CHECK: classes 22, 23) or
 * PD_EDB. */
static int exec1(PGconn *c, const char *what, const char *sql, int n, const char *const *vals,
                 ExecStatusType want, PGresult **out)
{
    return store__pg_exec(MOD, c, what, sql, n, vals, want, 0, out);
}

/* ---------------------------------------------------------------------------
 * Value helpers.
 */
static const char *dbl_or_null(double v, char *buf, size_t len)
{
    if (!isfinite(v))
        return NULL;
    snprintf(buf, len, "%.17g", v);
    return buf;
}

static double get_dbl(const PGresult *r, int row, int col)
{
    if (PQgetisnull(r, row, col))
        return NAN;
    return strtod(PQgetvalue(r, row, col), NULL);
}

static int64_t get_i64(const PGresult *r, int row, int col)
{
    if (PQgetisnull(r, row, col))
        return 0;
    return strtoll(PQgetvalue(r, row, col), NULL, 10);
}

static uint64_t get_u64(const PGresult *r, int row, int col)
{
    if (PQgetisnull(r, row, col))
        return 0;
    return strtoull(PQgetvalue(r, row, col), NULL, 10);
}

static double clamp01(double v)
{
    return v < 0 ? 0 : v > 1 ? 1 : v;
}

static int check_series(const char *symbol, const char *tf)
{
    if (!symbol || !util_symbol_valid(symbol))
        return PD_ESYMBOL;
    return tf && util_tf_seconds(tf) ? 0 : PD_ETIMEFRAME;
}

/* The entry columns, in the order decode_entry reads them. */
#define ENTRY_COLUMNS                                                                              \
    "symbol, timeframe, floor(extract(epoch FROM candle_time))::bigint, model_version, "           \
    "direction, confidence, p_long, p_short, p_no_trade, entry, stop_loss, tp1, tp2, tp3, atr, "   \
    "coalesce(horizon_candles, 0), floor(extract(epoch FROM created_at))::bigint, stale_data"
#define ENTRY_NCOLS 18

static int decode_entry(const PGresult *r, int i, store_ledger_entry *e)
{
    memset(e, 0, sizeof *e);
    snprintf(e->symbol, sizeof e->symbol, "%s", PQgetvalue(r, i, 0));
    snprintf(e->timeframe, sizeof e->timeframe, "%s", PQgetvalue(r, i, 1));
    e->candle_time = get_i64(r, i, 2);
    e->version = (uint32_t)get_u64(r, i, 3);
    e->direction = class_parse(PQgetvalue(r, i, 4));
    e->confidence = get_dbl(r, i, 5);
    for (int k = 0; k < 3; k++)
        e->probs[k] = get_dbl(r, i, 6 + k);
    e->entry = get_dbl(r, i, 9);
    e->stop_loss = get_dbl(r, i, 10);
    for (int k = 0; k < 3; k++)
        e->tp[k] = get_dbl(r, i, 11 + k);
    e->atr = get_dbl(r, i, 14);
    e->horizon = (uint32_t)get_u64(r, i, 15);
    e->created_at = get_i64(r, i, 16);
    e->stale_data = PQgetvalue(r, i, 17)[0] == 't';
    if (e->direction < 0) {
        /* the schema forbids it: a newer version's row, or a hand edit */
        LOG_ERROR(MOD, "%s %s at %" PRId64 " v%u: direction '%s' is not one this version reads",
                  e->symbol, e->timeframe, e->candle_time, e->version, PQgetvalue(r, i, 4));
        return PD_EDB;
    }
    return 0;
}

/* ---------------------------------------------------------------------------
 * Listings: statements whose rows decode one to one into an array.
 */

/* Decodes row i of r into elem (zeroed); 0 or PD_EDB for a row it cannot
 * read. */
typedef int (*row_fn)(const PGresult *r, int i, void *elem);

struct listing {
    const char *what, *sql;
    int nvals;
    const char *const *vals;
    size_t size; /* bytes per element */
    size_t max;  /* rows decoded at most; 0: all */
    row_fn decode;
    /* the result, replaced by each successful run */
    void *v; /* calloc'd; NULL when there are no rows */
    size_t n;
    bool more; /* rows beyond max matched */
};

/* Runs the listing's statement on c. 0 (l->v, n, more replaced), or an
 * error of exec1, of the decoder, or PD_ENOMEM (l left as it was). */
static int list_exec(PGconn *c, struct listing *l)
{
    PGresult *r = NULL;
    int rc = exec1(c, l->what, l->sql, l->nvals, l->vals, PGRES_TUPLES_OK, &r);
    if (rc)
        return rc;
    size_t rows = (size_t)PQntuples(r);
    bool more = l->max && rows > l->max;
    if (more)
        rows = l->max;
    unsigned char *v = rows ? calloc(rows, l->size) : NULL;
    if (rows && !v)
        rc = PD_ENOMEM;
    for (size_t i = 0; i < rows && rc == 0; i++)
        rc = l->decode(r, (int)i, v + i * l->size);
    PQclear(r);
    if (rc) {
        free(v);
        return rc;
    }
    free(l->v);
    l->v = v;
    l->n = rows;
    l->more = more;
    return 0;
}

static int op_list(PGconn *c, void *arg)
{
    return list_exec(c, arg);
}

/* Runs a listing on the handle's connection (reconnecting once). On 0 the
 * caller owns l->v; on failure there is nothing to free. */
static int list_run(store_ledger *db, struct listing *l)
{
    int rc = run(db, op_list, l);
    if (rc) {
        free(l->v);
        l->v = NULL;
    }
    return rc;
}

/* ---------------------------------------------------------------------------
 * Recording. One statement for one row or many: a multi-row INSERT whose
 * RETURNING says which rows this call wrote (the others existed: the first
 * recording wins).
 */
#define RECORD_NCOLS 18
#define RECORD_CHUNK 1000 /* rows per statement: 18,000 parameters of 65,535 */

/* The text of one entry's RECORD_NCOLS parameters. */
struct record_vals {
    char t[24], v[16], conf[32], p[3][32], lv[6][32], hz[16], ca[24];
    const char *vals[RECORD_NCOLS];
};

static void record_vals_of(const store_ledger_entry *e, struct record_vals *rv)
{
    snprintf(rv->t, sizeof rv->t, "%" PRId64, e->candle_time);
    snprintf(rv->v, sizeof rv->v, "%" PRIu32, e->version);
    snprintf(rv->conf, sizeof rv->conf, "%.17g", clamp01(e->confidence));
    for (int k = 0; k < 3; k++)
        snprintf(rv->p[k], sizeof rv->p[k], "%.17g", clamp01(e->probs[k]));
    double levels[6] = {e->entry, e->stop_loss, e->tp[0], e->tp[1], e->tp[2], e->atr};
    const char *lvals[6];
    for (int k = 0; k < 6; k++)
        lvals[k] = dbl_or_null(levels[k], rv->lv[k], sizeof rv->lv[k]);
    snprintf(rv->hz, sizeof rv->hz, "%" PRIu32, e->horizon);
    snprintf(rv->ca, sizeof rv->ca, "%" PRId64, e->created_at);
    const char *vals[RECORD_NCOLS] = {e->symbol, e->timeframe, rv->t, rv->v,
                                      class_names[e->direction], rv->conf, rv->p[0], rv->p[1],
                                      rv->p[2], lvals[0], lvals[1], lvals[2], lvals[3], lvals[4],
                                      lvals[5], e->horizon ? rv->hz : NULL,
                                      e->created_at ? rv->ca : NULL,
                                      e->stale_data ? "true" : "false"};
    memcpy(rv->vals, vals, sizeof vals);
}

/* Appends one row's VALUES tuple, its parameters numbered from base + 1. */
static void record_row_sql(util_buf *b, int base)
{
    util_buf_printf(b,
                    "($%d, $%d, to_timestamp($%d::bigint), $%d::integer, $%d, $%d::float8,"
                    " $%d::float8, $%d::float8, $%d::float8, $%d::float8, $%d::float8,"
                    " $%d::float8, $%d::float8, $%d::float8, $%d::float8, $%d::integer,"
                    " coalesce(to_timestamp($%d::bigint), now()), $%d::boolean)",
                    base + 1, base + 2, base + 3, base + 4, base + 5, base + 6, base + 7,
                    base + 8, base + 9, base + 10, base + 11, base + 12, base + 13, base + 14,
                    base + 15, base + 16, base + 17, base + 18);
}

struct record_q {
    const store_ledger_entry *e; /* n entries, already checked */
    size_t n;
    bool *inserted; /* n flags, written on success */
};

static int op_record(PGconn *c, void *arg)
{
    struct record_q *q = arg;
    struct record_vals *rv = calloc(q->n, sizeof *rv);
    const char **vals = calloc(q->n * RECORD_NCOLS, sizeof *vals);
    util_buf sql;
    util_buf_init(&sql);
    int rc = PD_ENOMEM;
    if (!rv || !vals)
        goto out;
    util_buf_puts(&sql, "INSERT INTO predictions (symbol, timeframe, candle_time, model_version,"
                        " direction, confidence, p_long, p_short, p_no_trade, entry, stop_loss,"
                        " tp1, tp2, tp3, atr, horizon_candles, created_at, stale_data) VALUES ");
    for (size_t i = 0; i < q->n; i++) {
        record_vals_of(&q->e[i], &rv[i]);
        memcpy(&vals[i * RECORD_NCOLS], rv[i].vals, sizeof rv[i].vals);
        if (i)
            util_buf_puts(&sql, ",");
        record_row_sql(&sql, (int)(i * RECORD_NCOLS));
    }
    util_buf_puts(&sql, " ON CONFLICT (symbol, timeframe, candle_time, model_version) DO NOTHING"
                        " RETURNING symbol, timeframe,"
                        " floor(extract(epoch FROM candle_time))::bigint, model_version");
    if (!util_buf_ok(&sql))
        goto out;
    PGresult *r = NULL;
    rc = exec1(c, q->n == 1 ? "record a prediction" : "record predictions", sql.data,
               (int)(q->n * RECORD_NCOLS), vals, PGRES_TUPLES_OK, &r);
    if (rc)
        goto out;
    memset(q->inserted, 0, q->n * sizeof *q->inserted);
    for (int row = 0; row < PQntuples(r); row++) {
        int64_t t = get_i64(r, row, 2);
        uint32_t v = (uint32_t)get_u64(r, row, 3);
        for (size_t i = 0; i < q->n; i++)
            if (!q->inserted[i] && q->e[i].candle_time == t && q->e[i].version == v &&
                strcmp(q->e[i].symbol, PQgetvalue(r, row, 0)) == 0 &&
                strcmp(q->e[i].timeframe, PQgetvalue(r, row, 1)) == 0) {
                q->inserted[i] = true;
                break;
            }
    }
    PQclear(r);
out:
    util_buf_cleanup(&sql);
    free(vals);
    free(rv);
    return rc;
}

static int check_entry(const store_ledger_entry *e)
{
    if (!e || e->version == 0 || e->direction < STORE_LEDGER_LONG ||
        e->direction > STORE_LEDGER_NO_TRADE || e->candle_time < 0)
        return PD_EINVAL;
    return check_series(e->symbol, e->timeframe);
}

int store_ledger_record_many(store_ledger *db, const store_ledger_entry *e, size_t n,
                             bool *inserted)
{
    if (n && (!e || !inserted))
        return PD_EINVAL;
    for (size_t i = 0; i < n; i++) {
        int rc = check_entry(&e[i]);
        if (rc)
            return rc;
    }
    for (size_t at = 0; at < n; at += RECORD_CHUNK) {
        struct record_q q = {.e = e + at,
                             .n = n - at < RECORD_CHUNK ? n - at : RECORD_CHUNK,
                             .inserted = inserted + at};
        int rc = run(db, op_record, &q);
        if (rc)
            return rc;
    }
    return 0;
}

int store_ledger_record(store_ledger *db, const store_ledger_entry *e, bool *inserted)
{
    bool ins = false;
    int rc = check_entry(e);
    if (rc == 0)
        rc = store_ledger_record_many(db, e, 1, &ins);
    if (rc == 0 && inserted)
        *inserted = ins;
    return rc;
}

/* ---------------------------------------------------------------------------
 * Resolving.
 */
static int decode_series(const PGresult *r, int i, void *elem)
{
    store_ledger_series *v = elem;
    snprintf(v->symbol, sizeof v->symbol, "%s", PQgetvalue(r, i, 0));
    snprintf(v->timeframe, sizeof v->timeframe, "%s", PQgetvalue(r, i, 1));
    return 0;
}

int store_ledger_open_series(store_ledger *db, store_ledger_series **out, size_t *n)
{
    if (!out || !n)
        return PD_EINVAL;
    struct listing l = {.what = "list series with open predictions",
                        .sql = "SELECT DISTINCT symbol, timeframe FROM predictions"
                               " WHERE outcome IS NULL ORDER BY 1, 2",
                        .size = sizeof **out,
                        .decode = decode_series};
    int rc = list_run(db, &l);
    if (rc)
        return rc;
    *out = l.v;
    *n = l.n;
    return 0;
}

struct settle_q {
    const char *symbol, *tf;
    int64_t tfs, now;
    store_ledger_resolve_fn resolve;
    size_t settled;
};

static int decode_candle(const PGresult *r, int i, void *elem)
{
    features_candle *v = elem;
    v->t = get_i64(r, i, 0);
    v->open = get_dbl(r, i, 1);
    v->high = get_dbl(r, i, 2);
    v->low = get_dbl(r, i, 3);
    v->close = get_dbl(r, i, 4);
    v->volume = get_dbl(r, i, 5);
    return 0;
}

/* Loads the candles with open time in (lo, hi], ascending. */
static int load_candles(PGconn *c, const char *symbol, const char *tf, int64_t lo, int64_t hi,
                        features_candle **out, size_t *n)
{
    char los[24], his[24], lim[24];
    snprintf(los, sizeof los, "%" PRId64, lo);
    snprintf(his, sizeof his, "%" PRId64, hi);
    snprintf(lim, sizeof lim, "%d", SETTLE_CANDLES_MAX);
    const char *vals[] = {symbol, tf, los, his, lim};
    struct listing l = {.what = "load candles to resolve",
                        .sql = "SELECT floor(extract(epoch FROM open_time))::bigint, open, high,"
                               " low, close, volume FROM candles WHERE symbol = $1"
                               " AND timeframe = $2 AND open_time > to_timestamp($3::bigint)"
                               " AND open_time <= to_timestamp($4::bigint) ORDER BY open_time"
                               " LIMIT $5::bigint",
                        .nvals = 5,
                        .vals = vals,
                        .size = sizeof **out,
                        .decode = decode_candle};
    int rc = list_exec(c, &l);
    if (rc)
        return rc;
    *out = l.v;
    *n = l.n;
    return 0;
}

/* Index of the first candle with open time > t (binary search). */
static size_t first_after(const features_candle *c, size_t n, int64_t t)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c[mid].t <= t)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static int write_resolution(PGconn *c, const store_ledger_entry *e,
                            const store_ledger_resolution *res)
{
    char t[24], v[16], ht[32], rm[32], mf[32], ma[32];
    snprintf(t, sizeof t, "%" PRId64, e->candle_time);
    snprintf(v, sizeof v, "%" PRIu32, e->version);
    const char *vals[] = {e->symbol,
                          e->timeframe,
                          t,
                          v,
                          store_ledger_outcome_name(res->outcome),
                          class_names[res->realised],
                          dbl_or_null(res->hit_time_s, ht, sizeof ht),
                          dbl_or_null(res->r_multiple, rm, sizeof rm),
                          dbl_or_null(res->mfe, mf, sizeof mf),
                          dbl_or_null(res->mae, ma, sizeof ma)};
    return exec1(c, "settle a prediction",
                 "UPDATE predictions SET outcome = $5, realised = $6, resolved_at = now(),"
                 " hit_time_s = $7::float8, r_multiple = $8::float8, mfe = $9::float8,"
                 " mae = $10::float8 WHERE symbol = $1 AND timeframe = $2"
                 " AND candle_time = to_timestamp($3::bigint) AND model_version = $4::integer"
                 " AND outcome IS NULL",
                 10, vals, PGRES_COMMAND_OK, NULL);
}

static int op_settle(PGconn *c, void *arg)
{
    struct settle_q *q = arg;
    q->settled = 0;
    char lim[16];
    snprintf(lim, sizeof lim, "%d", SETTLE_ROWS_MAX);
    const char *vals[] = {q->symbol, q->tf, lim};
    PGresult *rows = NULL;
    int rc = exec1(c, "load open predictions",
                   "SELECT " ENTRY_COLUMNS " FROM predictions WHERE symbol = $1 AND timeframe = $2"
                   " AND outcome IS NULL AND entry IS NOT NULL AND stop_loss IS NOT NULL"
                   " AND horizon_candles > 0 ORDER BY candle_time LIMIT $3::bigint",
                   3, vals, PGRES_TUPLES_OK, &rows);
    if (rc)
        return rc;
    int nrows = PQntuples(rows);
    if (nrows == 0) {
        PQclear(rows);
        return 0;
    }
    store_ledger_entry *es = calloc((size_t)nrows, sizeof *es);
    features_candle *cs = NULL;
    size_t nc = 0;
    if (!es) {
        PQclear(rows);
        return PD_ENOMEM;
    }
    int64_t lo = INT64_MAX, hi = INT64_MIN;
    int usable = 0;
    for (int i = 0; i < nrows; i++) {
        if (decode_entry(rows, i, &es[usable]) != 0)
            continue;
        const store_ledger_entry *e = &es[usable++];
        int64_t end = e->candle_time + (int64_t)e->horizon * q->tfs;
        if (e->candle_time < lo)
            lo = e->candle_time;
        if (end > hi)
            hi = end;
    }
    PQclear(rows);

    /* the latest closed candle: it says whether a horizon is complete */
    char nows[24];
    snprintf(nows, sizeof nows, "%" PRId64, util_tf_last_closed_open(q->now, q->tfs));
    const char *lvals[] = {q->symbol, q->tf, nows};
    PGresult *r = NULL;
    int64_t last_closed = 0;
    if (usable) {
        rc = exec1(c, "find the latest closed candle",
                   "SELECT floor(extract(epoch FROM max(open_time)))::bigint FROM candles"
                   " WHERE symbol = $1 AND timeframe = $2"
                   " AND open_time <= to_timestamp($3::bigint)",
                   3, lvals, PGRES_TUPLES_OK, &r);
        if (rc)
            goto out;
        last_closed = PQntuples(r) == 1 ? get_i64(r, 0, 0) : 0;
        PQclear(r);
        /* the horizon counts candles: with a gap, the candles that close
         * it lie past its clock end, so read up to the latest closed one */
        hi = last_closed;
        if (last_closed > lo && (rc = load_candles(c, q->symbol, q->tf, lo, hi, &cs, &nc)))
            goto out;
    }

    bool in_tx = false;
    for (int i = 0; i < usable; i++) {
        const store_ledger_entry *e = &es[i];
        size_t from = first_after(cs, nc, e->candle_time);
        store_ledger_resolution res;
        if (q->resolve(e, q->tfs, cs + from, nc - from, last_closed, &res) != 0) {
            LOG_DEBUG(MOD, "%s %s %" PRId64 " v%u: levels cannot be resolved", e->symbol,
                      e->timeframe, e->candle_time, e->version);
            continue;
        }
        if (res.outcome == STORE_OUTCOME_OPEN)
            continue;
        if (!in_tx) {
            if ((rc = exec1(c, "BEGIN", "BEGIN", 0, NULL, PGRES_COMMAND_OK, NULL)))
                goto out;
            in_tx = true;
        }
        if ((rc = write_resolution(c, e, &res)))
            break;
        q->settled++;
    }
    if (in_tx) {
        if (rc == 0)
            rc = exec1(c, "COMMIT", "COMMIT", 0, NULL, PGRES_COMMAND_OK, NULL);
        if (rc && rc != STORE__PG_LOST && PQstatus(c) == CONNECTION_OK)
            PQclear(PQexec(c, "ROLLBACK"));
        if (rc)
            q->settled = 0;
    }
out:
    free(cs);
    free(es);
    return rc;
}

int store_ledger_settle(store_ledger *db, const char *symbol, const char *tf, int64_t now,
                        store_ledger_resolve_fn resolve, size_t *settled)
{
    if (!resolve)
        return PD_EINVAL;
    int rc = check_series(symbol, tf);
    if (rc)
        return rc;
    struct settle_q q = {
        .symbol = symbol, .tf = tf, .tfs = util_tf_seconds(tf), .now = now, .resolve = resolve};
    rc = run(db, op_settle, &q);
    if (rc == 0 && settled)
        *settled = q.settled;
    return rc == PD_EINVAL ? PD_EDB : rc;
}

/* ---------------------------------------------------------------------------
 * Figures.
 */
static int decode_live(const PGresult *r, int i, void *elem)
{
    store_ledger_live *v = elem;
    snprintf(v->symbol, sizeof v->symbol, "%s", PQgetvalue(r, i, 0));
    snprintf(v->timeframe, sizeof v->timeframe, "%s", PQgetvalue(r, i, 1));
    v->version = (uint32_t)get_u64(r, i, 2);
    v->trades = get_u64(r, i, 3);
    v->hits = get_u64(r, i, 4);
    return 0;
}

int store_ledger_live_stats(store_ledger *db, const char *symbol, const char *tf,
                               store_ledger_live **out, size_t *n)
{
    if (!out || !n || (!symbol) != (!tf))
        return PD_EINVAL;
    if (symbol) {
        int rc = check_series(symbol, tf);
        if (rc)
            return rc;
    }
    const char *vals[] = {symbol, tf};
    struct listing l = {
        .what = "live figures",
        .sql = "SELECT symbol, timeframe, model_version,"
               " count(*) FILTER (WHERE direction <> 'NO_TRADE' AND outcome IS NOT NULL),"
               " count(*) FILTER (WHERE outcome IN ('TP1', 'TP2', 'TP3'))"
               " FROM predictions WHERE ($1::text IS NULL OR symbol = $1)"
               " AND ($2::text IS NULL OR timeframe = $2) AND NOT stale_data"
               " GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        .nvals = 2,
        .vals = vals,
        .size = sizeof **out,
        .decode = decode_live};
    int rc = list_run(db, &l);
    if (rc)
        return rc;
    *out = l.v;
    *n = l.n;
    return 0;
}

/* Per-direction columns of the performance query: count, resolved, hits,
 * correct, sum of r, for d in LONG, SHORT, NO_TRADE. */
#define DIR_COLUMNS(d)                                                                             \
    ", count(*) FILTER (WHERE d = '" d "')"                                                        \
    ", count(*) FILTER (WHERE d = '" d "' AND o IS NOT NULL)"                                      \
    ", count(*) FILTER (WHERE d = '" d "' AND o IN ('TP1', 'TP2', 'TP3'))"                         \
    ", count(*) FILTER (WHERE d = '" d "' AND rc = '" d "')"                                       \
    ", coalesce(sum(r) FILTER (WHERE d = '" d "' AND o IS NOT NULL), 0)"

static const char perf_sql[] =
    "WITH s AS ("
    " SELECT model_version AS v, direction AS d, outcome AS o, realised AS rc, r_multiple AS r,"
    " candle_time AS t,"
    " CASE WHEN outcome IS NULL THEN NULL ELSE"
    " (p_long - (realised = 'LONG')::int) ^ 2 + (p_short - (realised = 'SHORT')::int) ^ 2"
    " + (p_no_trade - (realised = 'NO_TRADE')::int) ^ 2 END AS brier,"
    " row_number() OVER (PARTITION BY model_version, outcome IS NULL"
    " ORDER BY candle_time DESC) AS rn"
    " FROM predictions WHERE symbol = $1 AND timeframe = $2 AND NOT stale_data),"
    " w AS (SELECT false AS win, * FROM s"
    " UNION ALL SELECT true, * FROM s WHERE o IS NOT NULL AND rn <= $3::bigint)"
    " SELECT v, win, count(*), count(*) FILTER (WHERE o IS NULL),"
    " count(*) FILTER (WHERE o IS NOT NULL), coalesce(sum(brier), 0),"
    " coalesce(floor(extract(epoch FROM min(t)))::bigint, 0),"
    " coalesce(floor(extract(epoch FROM max(t)))::bigint, 0)" DIR_COLUMNS("LONG")
        DIR_COLUMNS("SHORT") DIR_COLUMNS("NO_TRADE") " FROM w GROUP BY v, win ORDER BY v, win";

struct perf_q {
    const char *symbol, *tf;
    size_t window;
    store_ledger_perf *v;
    size_t n;
};

static void decode_figures(const PGresult *r, int i, store_ledger_figures *f)
{
    memset(f, 0, sizeof *f);
    f->predictions = get_u64(r, i, 2);
    f->open = get_u64(r, i, 3);
    f->resolved = get_u64(r, i, 4);
    f->sum_brier = get_dbl(r, i, 5);
    f->first = get_i64(r, i, 6);
    f->last = get_i64(r, i, 7);
    for (int d = 0; d < 3; d++) {
        int col = 8 + 5 * d;
        f->dir[d].predictions = get_u64(r, i, col);
        f->dir[d].resolved = get_u64(r, i, col + 1);
        f->dir[d].hits = get_u64(r, i, col + 2);
        f->dir[d].correct = get_u64(r, i, col + 3);
        f->dir[d].sum_r = get_dbl(r, i, col + 4);
        f->correct += f->dir[d].correct;
    }
    for (int d = STORE_LEDGER_LONG; d <= STORE_LEDGER_SHORT; d++) {
        f->trades += f->dir[d].resolved;
        f->hits += f->dir[d].hits;
        f->sum_r += f->dir[d].sum_r;
    }
}

static int op_perf(PGconn *c, void *arg)
{
    struct perf_q *q = arg;
    char win[24];
    snprintf(win, sizeof win, "%zu", q->window);
    const char *vals[] = {q->symbol, q->tf, win};
    PGresult *r = NULL;
    int rc = exec1(c, "performance figures", perf_sql, 3, vals, PGRES_TUPLES_OK, &r);
    if (rc)
        return rc;
    int rows = PQntuples(r);
    store_ledger_perf *v = rows ? calloc((size_t)rows, sizeof *v) : NULL;
    if (rows && !v) {
        PQclear(r);
        return PD_ENOMEM;
    }
    size_t n = 0;
    for (int i = 0; i < rows; i++) {
        uint32_t ver = (uint32_t)get_u64(r, i, 0);
        bool is_window = strcmp(PQgetvalue(r, i, 1), "t") == 0;
        if (n == 0 || v[n - 1].version != ver)
            v[n++].version = ver;
        decode_figures(r, i, is_window ? &v[n - 1].window : &v[n - 1].all);
    }
    PQclear(r);
    free(q->v);
    q->v = v;
    q->n = n;
    return 0;
}

int store_ledger_performance(store_ledger *db, const char *symbol, const char *tf,
                                size_t window, store_ledger_perf **out, size_t *n)
{
    int rc = check_series(symbol, tf);
    if (rc)
        return rc;
    if (!out || !n || window < 1 || window > WINDOW_MAX)
        return PD_EINVAL;
    struct perf_q q = {.symbol = symbol, .tf = tf, .window = window};
    rc = run(db, op_perf, &q);
    if (rc) {
        free(q.v);
        return rc == PD_EINVAL ? PD_EDB : rc;
    }
    *out = q.v;
    *n = q.n;
    return 0;
}

/* ---------------------------------------------------------------------------
 * History.
 */
static int decode_row(const PGresult *r, int row, void *elem)
{
    store_ledger_row *v = elem;
    int col = ENTRY_NCOLS;
    if (decode_entry(r, row, &v->e) != 0)
        return PD_EDB;
    store_ledger_resolution *res = &v->r;
    res->outcome =
        PQgetisnull(r, row, col) ? STORE_OUTCOME_OPEN : outcome_parse(PQgetvalue(r, row, col));
    res->realised = PQgetisnull(r, row, col + 1) ? -1 : class_parse(PQgetvalue(r, row, col + 1));
    if (res->outcome < 0)
        res->outcome = STORE_OUTCOME_OPEN;
    v->resolved_at = get_i64(r, row, col + 2);
    res->hit_time_s = get_dbl(r, row, col + 3);
    res->r_multiple = get_dbl(r, row, col + 4);
    res->mfe = get_dbl(r, row, col + 5);
    res->mae = get_dbl(r, row, col + 6);
    if (isfinite(res->hit_time_s) && v->e.timeframe[0])
        res->candles = (uint32_t)(res->hit_time_s / (double)util_tf_seconds(v->e.timeframe));
    return 0;
}

int store_ledger_history(store_ledger *db, const store_ledger_query *q,
                            store_ledger_row **out, size_t *n, bool *more)
{
    if (!q || !out || !n || q->limit < 1 || q->limit > HISTORY_LIMIT_MAX || q->from < 0 ||
        q->to < 0)
        return PD_EINVAL;
    if (q->symbol && !util_symbol_valid(q->symbol))
        return PD_ESYMBOL;
    if (q->timeframe && !util_tf_seconds(q->timeframe))
        return PD_ETIMEFRAME;
    const store_ledger_cursor *a = q->after;
    if (a && (!util_symbol_valid(a->symbol) || !util_tf_seconds(a->timeframe) || a->version == 0 ||
              a->candle_time < 0))
        return PD_EINVAL;
    char from[24], to[24], lim[24], ct[24], cv[16];
    snprintf(from, sizeof from, "%" PRId64, q->from);
    snprintf(to, sizeof to, "%" PRId64, q->to);
    snprintf(lim, sizeof lim, "%zu", q->limit + 1); /* one more says whether a page follows */
    if (a) {
        snprintf(ct, sizeof ct, "%" PRId64, a->candle_time);
        snprintf(cv, sizeof cv, "%" PRIu32, a->version);
    }
    const char *vals[] = {q->symbol,
                          q->timeframe,
                          q->from ? from : NULL,
                          q->to ? to : NULL,
                          a ? ct : NULL,
                          a ? a->symbol : NULL,
                          a ? a->timeframe : NULL,
                          a ? cv : NULL,
                          lim};
    struct listing l = {
        .what = "ledger history",
        .sql = "SELECT " ENTRY_COLUMNS ", outcome, realised,"
               " coalesce(floor(extract(epoch FROM resolved_at))::bigint, 0), hit_time_s,"
               " r_multiple, mfe, mae FROM predictions"
               " WHERE ($1::text IS NULL OR symbol = $1)"
               " AND ($2::text IS NULL OR timeframe = $2)"
               " AND ($3::bigint IS NULL OR candle_time >= to_timestamp($3::bigint))"
               " AND ($4::bigint IS NULL OR candle_time < to_timestamp($4::bigint))"
               " AND ($5::bigint IS NULL OR (candle_time, symbol, timeframe, model_version)"
               " < (to_timestamp($5::bigint), $6::text, $7::text, $8::integer))"
               " ORDER BY candle_time DESC, symbol DESC, timeframe DESC, model_version DESC"
               " LIMIT $9::bigint",
        .nvals = 9,
        .vals = vals,
        .size = sizeof **out,
        .max = q->limit,
        .decode = decode_row};
    int rc = list_run(db, &l);
    if (rc)
        return rc == PD_EINVAL ? PD_EDB : rc;
    *out = l.v;
    *n = l.n;
    if (more)
        *more = l.more;
    return 0;
}

/* ---------------------------------------------------------------------------
 * Backtests: the figures `predictd backtest` computed, one row per run,
 * shown per version by /api/models/{symbol}/{timeframe}.
 */
struct backtest_q {
    const char *symbol, *tf, *json;
    uint32_t version;
    int64_t from, to;
    double cost_bps;
};

static int op_backtest_save(PGconn *c, void *arg)
{
    const struct backtest_q *q = arg;
    char v[16], f[24], t[24], cb[40];
    snprintf(v, sizeof v, "%" PRIu32, q->version);
    snprintf(f, sizeof f, "%" PRId64, q->from);
    snprintf(t, sizeof t, "%" PRId64, q->to);
    snprintf(cb, sizeof cb, "%.17g", q->cost_bps);
    const char *vals[] = {q->symbol, q->tf, v, f, t, cb, q->json};
    return exec1(c, "save a backtest",
                 "INSERT INTO backtests (symbol, timeframe, model_version, data_from, data_to,"
                 " cost_bps, figures) VALUES ($1, $2, $3::integer, to_timestamp($4::bigint),"
                 " to_timestamp($5::bigint), $6::float8, $7::jsonb)",
                 7, vals, PGRES_COMMAND_OK, NULL);
}

int store_ledger_backtest_save(store_ledger *db, const char *symbol, const char *tf,
                               uint32_t version, int64_t from, int64_t to, double cost_bps,
                               const char *figures_json)
{
    int rc = check_series(symbol, tf);
    if (rc)
        return rc;
    if (version == 0 || !figures_json || !isfinite(cost_bps))
        return PD_EINVAL;
    struct backtest_q q = {.symbol = symbol,
                           .tf = tf,
                           .json = figures_json,
                           .version = version,
                           .from = from,
                           .to = to,
                           .cost_bps = cost_bps};
    return run(db, op_backtest_save, &q);
}

static int decode_backtest(const PGresult *r, int i, void *elem)
{
    store_ledger_backtest *b = elem;
    b->version = (uint32_t)get_u64(r, i, 0);
    b->created_at = get_i64(r, i, 1);
    b->figures_json = strdup(PQgetvalue(r, i, 2));
    return b->figures_json ? 0 : PD_ENOMEM;
}

int store_ledger_backtests(store_ledger *db, const char *symbol, const char *tf,
                           store_ledger_backtest **out, size_t *n)
{
    int rc = check_series(symbol, tf);
    if (rc)
        return rc;
    if (!out || !n)
        return PD_EINVAL;
    const char *vals[] = {symbol, tf};
    struct listing l = {
        .what = "backtests",
        .sql = "SELECT DISTINCT ON (model_version) model_version,"
               " floor(extract(epoch FROM created_at))::bigint, figures::text FROM backtests"
               " WHERE symbol = $1 AND timeframe = $2"
               " ORDER BY model_version, created_at DESC, id DESC",
        .nvals = 2,
        .vals = vals,
        .size = sizeof **out,
        .decode = decode_backtest};
    rc = list_run(db, &l);
    if (rc)
        return rc;
    *out = l.v;
    *n = l.n;
    return 0;
}

void store_ledger_backtests_free(store_ledger_backtest *b, size_t n)
{
    for (size_t i = 0; b && i < n; i++)
        free(b[i].figures_json);
    free(b);
}
