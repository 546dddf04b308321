/*
 * candles.c: the candles in PostgreSQL. Connections
 * (store_init and friends), migrations, the candle window loader that
 * reads through the Redis cache, range loads for training, upserts, series
 * listing and counting, and the counters behind store_stats_get().
 *
 * It does not parse CSV, generate candles or compute features; the Redis
 * protocol lives in cache.c, which this file calls for windows.
 *
 * DESIGN
 * - One PGconn per thread, made on first use, with connect_timeout (3 s
 *   unless the URL says otherwise) and statement_timeout=5000 in the
 *   startup options. The URL is parsed once by PQconninfoParse, so URI and
 *   key=value forms are handled alike; the user's own `options` come after
 *   ours, so a statement_timeout in the URL wins.
 * - Statements live in one table (stmts[]) and are prepared lazily per
 *   connection; a bit per statement records which ones this connection has.
 *   Adding a query is one enum entry and one table row.
 * - Every operation is a callback run by db_run(). When a round trip finds
 *   the connection gone (libpq says CONNECTION_BAD, or SQLSTATE class 08,
 *   57P01-57P03, or 26000 "prepared statement does not exist"), the
 *   callback returns STORE__PG_LOST; db_run() then drops the
 *   connection, connects again (so the statements are re-prepared on first
 *   use) and runs the whole callback once more. A multi-statement
 *   transaction is therefore retried as a whole, never resumed half-way. A
 *   second failure is PD_EDB.
 * - After a failed connect, no thread tries again for RECONNECT_BACKOFF_NS
 *   (fail fast instead of every request paying connect_timeout while the
 *   database is unreachable).
 * - An outage is logged once when it starts (ERROR) and once when it ends
 *   (INFO), not per request; SQL errors (constraint violations, timeouts)
 *   are logged where they happen.
 * - Result classification, its log lines and one-line libpq messages are
 *   pg.c's (shared with jobs.c and ledger.c); the connections, back-off
 *   and outage accounting above are this file's own.
 * - The hot query (the window) binds the time and limit in binary and asks
 *   for binary results: timestamptz as int64 microseconds since 2000-01-01,
 *   float8 as IEEE 754 in network order, decoded here.
 * - Upserts send the candles as six binary arrays unnested by one prepared
 *   INSERT ... ON CONFLICT DO UPDATE per chunk of UPSERT_CHUNK rows, inside
 *   one transaction when there is more than one chunk. Unchanged rows are
 *   not rewritten (and so do not notify).
 *
 * THREADING: the configuration (cfg) is written only by store_init() and
 * store_shutdown(), before worker threads start and after they stop;
 * everything else reads it. Connections are thread-local (store__tls).
 * Counters and the outage flags are atomics.
 */
#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <libpq-fe.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "features/features.h"
#include "store/store.h"
#include "store/pg_internal.h"
#include "store/store_internal.h"
#include "util/util.h"

#define MOD "store"

/* OIDs of the types bound here (pg_type_d.h is a server header). */
enum {
    OID_INT8 = 20,
    OID_TEXT = 25,
    OID_FLOAT8 = 701,
    OID_FLOAT8_ARRAY = 1022,
    OID_TIMESTAMPTZ = 1184,
    OID_TIMESTAMPTZ_ARRAY = 1185,
};

#define PG_EPOCH_UNIX INT64_C(946684800) /* 2000-01-01T00:00:00Z */
#define RECONNECT_BACKOFF_NS UINT64_C(500000000)
#define UPSERT_CHUNK 10000
#define WINDOW_LIMIT_MAX 100000
#define MIGRATION_MAX_BYTES (4u << 20)
/* pg_advisory_lock key for migrations: "predictd" in ASCII. */
#define MIGRATION_LOCK_KEY "8102099357864584292"
/* Candle times accepted: 1970-01-01 .. 9999-12-31 (keeps microseconds in range). */
#define TIME_MIN INT64_C(0)
#define TIME_MAX INT64_C(253402300799)

store__counters store__ctr;

/* ---------------------------------------------------------------------------
 * Configuration (written before threads start, read-only afterwards).
 */
static struct {
    bool has_db;
    char **kw, **val; /* NULL-terminated, for PQconnectdbParams */
} cfg;

static atomic_uint cfg_gen;          /* bumped by every store_init/shutdown */
static atomic_bool no_db_logged;     /* "no database configured" said once */
static store__outage db_outage = {.mod = MOD,
                                  .what = "database unavailable",
                                  .back = "database available again",
                                  .level = UTIL_LOG_ERROR}; /* an outage is in progress (logged) */
static _Atomic uint64_t db_retry_at; /* util_mono_ns() before which no connect is tried */

static void cfg_free(void)
{
    for (size_t i = 0; cfg.kw && cfg.kw[i]; i++) {
        free(cfg.kw[i]);
        free(cfg.val[i]);
    }
    free(cfg.kw);
    free(cfg.val);
    cfg.kw = cfg.val = NULL;
    cfg.has_db = false;
}

/* Builds the connection parameters from a conninfo string or URI. */
static int cfg_build(const char *url)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(url, &err);
    if (!opts) {
        /* libpq's message may quote part of the URL, password included: not logged */
        LOG_ERROR(MOD, "database URL is malformed (not a libpq conninfo string or URI)");
        int rc = err ? PD_EINVAL : PD_ENOMEM;
        PQfreemem(err);
        return rc;
    }
    size_t nopt = 0;
    for (PQconninfoOption *o = opts; o->keyword; o++)
        nopt++;
    int rc = PD_ENOMEM;
    cfg.kw = calloc(nopt + 3, sizeof *cfg.kw);
    cfg.val = calloc(nopt + 3, sizeof *cfg.val);
    if (!cfg.kw || !cfg.val)
        goto fail;
    bool has_timeout = false, has_options = false, has_fallback = false;
    size_t k = 0;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val)
            continue;
        char *v;
        if (strcmp(o->keyword, "options") == 0) {
            /* Ours first: a later -c for the same setting overrides it. */
            size_t len = strlen(o->val) + 40;
            v = malloc(len);
            if (v)
                snprintf(v, len, "-c statement_timeout=5000 %s", o->val);
            has_options = true;
        } else {
            v = strdup(o->val);
            has_timeout |= strcmp(o->keyword, "connect_timeout") == 0 && *o->val;
            has_fallback |= strcmp(o->keyword, "fallback_application_name") == 0;
        }
        char *kw = strdup(o->keyword);
        if (!v || !kw) { /* cfg_free stops at the first empty slot: free both here */
            free(v);
            free(kw);
            goto fail;
        }
        cfg.kw[k] = kw;
        cfg.val[k++] = v;
    }
    const char *extra[][2] = {{"connect_timeout", has_timeout ? NULL : "3"},
                              {"options", has_options ? NULL : "-c statement_timeout=5000"},
                              {"fallback_application_name", has_fallback ? NULL : "predictd"}};
    for (size_t i = 0; i < 3; i++) {
        if (!extra[i][1])
            continue;
        char *kw = strdup(extra[i][0]), *v = strdup(extra[i][1]);
        if (!kw || !v) {
            free(kw);
            free(v);
            goto fail;
        }
        cfg.kw[k] = kw;
        cfg.val[k++] = v;
    }
    PQconninfoFree(opts);
    cfg.has_db = true;
    return 0;
fail:
    PQconninfoFree(opts);
    cfg_free();
    return rc;
}

/* ---------------------------------------------------------------------------
 * Thread-local connections.
 */
static pthread_key_t tls_key;
static pthread_once_t tls_once = PTHREAD_ONCE_INIT;
static bool tls_key_ok;
static _Thread_local store__tls *tls_cur;

static void tls_close(store__tls *t)
{
    if (t->pg) {
        PQfinish(t->pg);
        t->pg = NULL;
    }
    t->prepared = 0;
    store__cache_close(t);
}

static void tls_destroy(void *p)
{
    store__tls *t = p;
    if (!t)
        return;
    tls_close(t);
    free(t);
    if (tls_cur == t)
        tls_cur = NULL;
}

static void tls_key_make(void)
{
    tls_key_ok = pthread_key_create(&tls_key, tls_destroy) == 0;
}

store__tls *store__tls_get(void)
{
    unsigned gen = atomic_load_explicit(&cfg_gen, memory_order_relaxed);
    store__tls *t = tls_cur;
    if (t) {
        if (t->gen != gen) {
            tls_close(t);
            t->gen = gen;
        }
        return t;
    }
    pthread_once(&tls_once, tls_key_make);
    t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->gen = gen;
    /* Without the key the slot is still usable; it just is not freed at
     * thread exit unless the thread calls store_thread_cleanup(). */
    if (tls_key_ok)
        pthread_setspecific(tls_key, t);
    tls_cur = t;
    return t;
}

static void tls_release_current(void)
{
    store__tls *t = tls_cur;
    if (!t)
        return;
    if (tls_key_ok)
        pthread_setspecific(tls_key, NULL);
    tls_destroy(t);
}

/* ---------------------------------------------------------------------------
 * Statements. To add one: an enum entry and a row; stmt_id < 64.
 */
enum stmt_id {
    ST_WINDOW,
    ST_SERIES_EXISTS,
    ST_RANGE,
    ST_SYMBOLS,
    ST_COUNT_SERIES,
    ST_COUNT_ALL,
    ST_UPSERT,
    ST_SERIES_KIND,
    ST_SYMBOL_TICKS,
    ST_COUNT_
};

static const struct stmt_def {
    const char *name;
    const char *sql;
    int nparams;
    Oid types[8];
} stmts[ST_COUNT_] = {
    [ST_WINDOW] = {"pd_window",
                   "SELECT open_time, open, high, low, close, volume FROM candles"
                   " WHERE symbol = $1 AND timeframe = $2 AND open_time <= $3"
                   " ORDER BY open_time DESC LIMIT $4",
                   4,
                   {OID_TEXT, OID_TEXT, OID_TIMESTAMPTZ, OID_INT8}},
    [ST_SERIES_EXISTS] = {"pd_series_exists",
                          "SELECT 1 FROM candles WHERE symbol = $1 AND timeframe = $2 LIMIT 1",
                          2,
                          {OID_TEXT, OID_TEXT}},
    [ST_RANGE] = {"pd_range",
                  "SELECT open_time, open, high, low, close, volume FROM candles"
                  " WHERE symbol = $1 AND timeframe = $2 AND open_time >= $3 AND open_time < $4"
                  " ORDER BY open_time",
                  4,
                  {OID_TEXT, OID_TEXT, OID_TIMESTAMPTZ, OID_TIMESTAMPTZ}},
    /* A loose index scan over the primary key: one probe per symbol rather
     * than a scan of every candle. */
    [ST_SYMBOLS] = {"pd_symbols",
                    "WITH RECURSIVE s(symbol) AS ("
                    " (SELECT symbol FROM candles WHERE timeframe = $1 ORDER BY symbol LIMIT 1)"
                    " UNION ALL"
                    " SELECT (SELECT c.symbol FROM candles c WHERE c.timeframe = $1"
                    "         AND c.symbol > s.symbol ORDER BY c.symbol LIMIT 1)"
                    " FROM s WHERE s.symbol IS NOT NULL)"
                    " SELECT symbol FROM s WHERE symbol IS NOT NULL",
                    1,
                    {OID_TEXT}},
    [ST_COUNT_SERIES] = {"pd_count_series",
                         "SELECT count(*) FROM candles WHERE symbol = $1 AND timeframe = $2",
                         2,
                         {OID_TEXT, OID_TEXT}},
    [ST_COUNT_ALL] = {"pd_count_all", "SELECT count(*) FROM candles", 0, {0}},
    [ST_UPSERT] = {"pd_upsert",
                   "INSERT INTO candles (symbol, timeframe, open_time, open, high, low, close,"
                   " volume) SELECT $1, $2, u.t, u.o, u.h, u.l, u.c, u.v"
                   " FROM unnest($3::timestamptz[], $4::float8[], $5::float8[], $6::float8[],"
                   " $7::float8[], $8::float8[]) AS u(t, o, h, l, c, v)"
                   " ON CONFLICT (symbol, timeframe, open_time) DO UPDATE SET"
                   " open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low,"
                   " close = EXCLUDED.close, volume = EXCLUDED.volume"
                   " WHERE (candles.open, candles.high, candles.low, candles.close,"
                   " candles.volume) IS DISTINCT FROM (EXCLUDED.open, EXCLUDED.high,"
                   " EXCLUDED.low, EXCLUDED.close, EXCLUDED.volume)",
                   8,
                   {OID_TEXT, OID_TEXT, OID_TIMESTAMPTZ_ARRAY, OID_FLOAT8_ARRAY, OID_FLOAT8_ARRAY,
                    OID_FLOAT8_ARRAY, OID_FLOAT8_ARRAY, OID_FLOAT8_ARRAY}},
    [ST_SERIES_KIND] = {"pd_series_kind",
                        "SELECT kind FROM candle_series WHERE symbol = $1 AND timeframe = $2",
                        2,
                        {OID_TEXT, OID_TEXT}},
    /* per symbol, the newest word of any venue listing it (one feed: one
     * venue), sorted by symbol */
    [ST_SYMBOL_TICKS] = {"pd_symbol_ticks",
                         "SELECT DISTINCT ON (symbol) symbol, tick_size FROM exchange_symbols"
                         " ORDER BY symbol, updated_at DESC LIMIT 100000",
                         0,
                         {0}},
};

_Static_assert(ST_COUNT_ <= 64, "prepared-statement bitmask holds 64 statements");

/* ---------------------------------------------------------------------------
 * Binary helpers.
 */
static void put_be32(char *p, uint32_t v)
{
    unsigned char *u = (unsigned char *)p;
    u[0] = (unsigned char)(v >> 24);
    u[1] = (unsigned char)(v >> 16);
    u[2] = (unsigned char)(v >> 8);
    u[3] = (unsigned char)v;
}

static void put_be64(char *p, uint64_t v)
{
    put_be32(p, (uint32_t)(v >> 32));
    put_be32(p + 4, (uint32_t)v);
}

static uint64_t get_be64(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | u[i];
    return v;
}

/* Unix seconds <-> PostgreSQL binary timestamptz (microseconds since 2000). */
static int64_t to_pg_us(int64_t t)
{
    return (t - PG_EPOCH_UNIX) * 1000000;
}

static int64_t from_pg_us(int64_t us)
{
    int64_t s = us / 1000000;
    if (us % 1000000 < 0)
        s--; /* floor */
    return s + PG_EPOCH_UNIX;
}

/* ---------------------------------------------------------------------------
 * Outage bookkeeping.
 */
static void db_went_down(const char *why)
{
    STORE__COUNT(db_errors);
    store__outage_fail(&db_outage, why);
}

static void db_came_up(void)
{
    store__outage_ok(&db_outage);
}

static void db_drop(store__tls *t)
{
    if (t->pg) {
        PQfinish(t->pg);
        t->pg = NULL;
    }
    t->prepared = 0;
}

static int db_connect(store__tls *t, bool replacing)
{
    uint64_t retry_at = atomic_load_explicit(&db_retry_at, memory_order_relaxed);
    if (retry_at && util_mono_ns() < retry_at) {
        STORE__COUNT(db_errors);
        return PD_EDB;
    }
    char why[256];
    PGconn *c = store__pg_connect_params(MOD, (const char *const *)cfg.kw,
                                            (const char *const *)cfg.val, 0, why, sizeof why);
    if (!c) {
        db_went_down(why);
        atomic_store(&db_retry_at, util_mono_ns() + RECONNECT_BACKOFF_NS);
        return PD_EDB;
    }
    if (retry_at)
        atomic_store(&db_retry_at, 0);
    t->pg = c;
    t->prepared = 0;
    if (replacing) {
        STORE__COUNT(db_reconnects);
        LOG_INFO(MOD, "reconnected to the database");
    }
    return 0;
}

/* Checks one result: 0, STORE__PG_LOST, PD_EINVAL (the data broke a
 * constraint or a data rule: SQLSTATE classes 22 and 23) or PD_EDB (logged);
 * the last two are counted as database errors. */
static int db_check(PGconn *c, const PGresult *r, ExecStatusType want, const char *what)
{
    int rc = store__pg_check(MOD, c, r, want, what, 0);
    if (rc < 0)
        STORE__COUNT(db_errors);
    return rc;
}

static int db_prepare(store__tls *t, enum stmt_id id)
{
    uint64_t bit = UINT64_C(1) << id;
    if (t->prepared & bit)
        return 0;
    const struct stmt_def *s = &stmts[id];
    PGresult *r = STORE__TIMED(DB, PQprepare(t->pg, s->name, s->sql, s->nparams, s->types));
    STORE__COUNT(db_queries);
    int rc = db_check(t->pg, r, PGRES_COMMAND_OK, s->name);
    PQclear(r);
    if (rc == 0)
        t->prepared |= bit;
    return rc;
}

/* Runs a prepared statement. On 0, *out is the result (PQclear it). */
static int db_exec(store__tls *t, enum stmt_id id, const char *const *vals, const int *lens,
                   const int *fmts, int binary_result, ExecStatusType want, PGresult **out)
{
    int rc = db_prepare(t, id);
    if (rc)
        return rc;
    PGresult *r = STORE__TIMED(DB, PQexecPrepared(t->pg, stmts[id].name, stmts[id].nparams, vals,
                                                  lens, fmts, binary_result));
    STORE__COUNT(db_queries);
    rc = db_check(t->pg, r, want, stmts[id].name);
    if (rc) {
        PQclear(r);
        return rc;
    }
    *out = r;
    return 0;
}

/* Runs a statement without parameters or rows (BEGIN, COMMIT, SET ...). */
static int db_simple(store__tls *t, const char *sql)
{
    PGresult *r = STORE__TIMED(DB, PQexec(t->pg, sql));
    STORE__COUNT(db_queries);
    int rc = db_check(t->pg, r, PGRES_COMMAND_OK, sql);
    PQclear(r);
    return rc;
}

/* Ends a failed transaction; a lost connection needs nothing. */
static void db_rollback(store__tls *t)
{
    if (t->pg && PQstatus(t->pg) == CONNECTION_OK && PQtransactionStatus(t->pg) != PQTRANS_IDLE)
        PQclear(PQexec(t->pg, "ROLLBACK"));
}

typedef int (*db_op)(store__tls *t, void *ctx);

/*
 * Runs op on the calling thread's connection, connecting first when there
 * is none. When op reports STORE__PG_LOST, drops the connection,
 * connects again and runs op once more. Returns op's result, or PD_EDB.
 */
static int db_run(db_op op, void *ctx)
{
    if (!cfg.has_db) {
        if (!atomic_exchange(&no_db_logged, true))
            LOG_ERROR(MOD, "no database configured (set PREDICTD_DATABASE_URL)");
        return PD_EDB;
    }
    store__tls *t = store__tls_get();
    if (!t)
        return PD_ENOMEM;
    int rc = PD_EDB;
    bool lost = false;
    for (int attempt = 0; attempt < 2; attempt++) {
        if (!t->pg || PQstatus(t->pg) != CONNECTION_OK) {
            db_drop(t);
            rc = db_connect(t, lost);
            if (rc)
                return rc;
        }
        rc = op(t, ctx);
        if (rc != STORE__PG_LOST)
            break;
        char buf[256];
        LOG_DEBUG(MOD, "connection lost: %s",
                  store__pg_one_line(PQerrorMessage(t->pg), buf, sizeof buf));
        db_drop(t);
        lost = true;
        rc = PD_EDB;
    }
    if (lost && rc == PD_EDB)
        db_went_down("connection lost and reconnecting did not help");
    else if (rc != PD_EDB)
        db_came_up();
    return rc;
}

/* ---------------------------------------------------------------------------
 * Connections (public).
 */
int store_init(const char *database_url, const char *redis_url, bool cache_on)
{
    tls_release_current();
    cfg_free();
    store__cache_unconfigure();
    unsigned gen = atomic_fetch_add(&cfg_gen, 1) + 1;
    atomic_store(&no_db_logged, false);
    atomic_store(&db_outage.down, false);
    atomic_store(&db_retry_at, 0);
    int rc = 0;
    if (database_url && *database_url) {
        rc = cfg_build(database_url);
        if (rc)
            return rc;
    }
    rc = store__cache_configure(redis_url, cache_on, gen);
    if (rc) {
        cfg_free();
        return rc;
    }
    return 0;
}

void store_shutdown(void)
{
    tls_release_current();
    cfg_free();
    store__cache_unconfigure();
    atomic_fetch_add(&cfg_gen, 1);
}

void store_thread_cleanup(void)
{
    tls_release_current();
}

void store_stats_get(store_stats *out)
{
    if (!out)
        return;
    out->redis_hits = atomic_load(&store__ctr.redis_hits);
    out->redis_misses = atomic_load(&store__ctr.redis_misses);
    out->redis_errors = atomic_load(&store__ctr.redis_errors);
    out->db_queries = atomic_load(&store__ctr.db_queries);
    out->db_errors = atomic_load(&store__ctr.db_errors);
    out->db_reconnects = atomic_load(&store__ctr.db_reconnects);
}

/* ---------------------------------------------------------------------------
 * Migrations.
 */
static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void strv_free(char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}

/* The *.sql files of dir (no dot files), sorted by name. */
static int list_migrations(const char *dir, char ***out, size_t *n)
{
    DIR *d = opendir(dir);
    if (!d) {
        LOG_ERROR(MOD, "migrations directory %s: %s", dir, strerror(errno));
        return errno == ENOENT ? PD_ENOTFOUND : PD_EIO;
    }
    char **v = NULL;
    size_t cnt = 0, cap = 0;
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (e->d_name[0] == '.' || len < 5 || strcmp(e->d_name + len - 4, ".sql") != 0)
            continue;
        if (cnt == cap) {
            cap = cap ? cap * 2 : 16;
            char **nv = realloc(v, cap * sizeof *v);
            if (!nv) {
                rc = PD_ENOMEM;
                break;
            }
            v = nv;
        }
        if (!(v[cnt] = strdup(e->d_name))) {
            rc = PD_ENOMEM;
            break;
        }
        cnt++;
    }
    closedir(d);
    if (rc) {
        strv_free(v, cnt);
        return rc;
    }
    if (cnt)
        qsort(v, cnt, sizeof *v, name_cmp);
    *out = v;
    *n = cnt;
    return 0;
}

struct migrate_ctx {
    const char *dir;
    char **files;
    size_t nfiles;
    int applied;
};

static int migrate_file(store__tls *t, struct migrate_ctx *m, const char *name)
{
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", m->dir, name) >= sizeof path)
        return PD_EINVAL;
    char *sql = NULL;
    size_t len = 0;
    int rc = util_read_file(path, MIGRATION_MAX_BYTES, &sql, &len);
    if (rc) {
        LOG_ERROR(MOD, "migration %s: cannot read: %s", name, util_strerror(rc));
        return rc;
    }
    if ((rc = db_simple(t, "BEGIN")))
        goto out;
    PGresult *r = PQexec(t->pg, sql);
    STORE__COUNT(db_queries);
    rc = db_check(t->pg, r,
                  PQresultStatus(r) == PGRES_TUPLES_OK ? PGRES_TUPLES_OK : PGRES_COMMAND_OK, name);
    PQclear(r);
    if (rc)
        goto out;
    const char *vals[1] = {name};
    r = PQexecParams(t->pg, "INSERT INTO schema_migrations (name) VALUES ($1)", 1, NULL, vals, NULL,
                     NULL, 0);
    STORE__COUNT(db_queries);
    rc = db_check(t->pg, r, PGRES_COMMAND_OK, "recording a migration");
    PQclear(r);
    if (rc)
        goto out;
    if ((rc = db_simple(t, "COMMIT")))
        goto out;
    LOG_INFO(MOD, "applied migration %s", name);
    m->applied++;
out:
    if (rc && rc != STORE__PG_LOST) {
        db_rollback(t);
        if (rc == PD_EINVAL)
            rc = PD_EDB; /* a migration that breaks a constraint is a database problem */
    }
    free(sql);
    return rc;
}

static int op_migrate(store__tls *t, void *ctx)
{
    struct migrate_ctx *m = ctx;
    m->applied = 0;
    /* A migration (and waiting for another replica's) may outlast the
     * request statement_timeout. */
    int rc = db_simple(t, "SET statement_timeout = 0");
    if (rc)
        return rc;
    PGresult *r = PQexec(t->pg, "SELECT pg_advisory_lock(" MIGRATION_LOCK_KEY ")");
    STORE__COUNT(db_queries);
    rc = db_check(t->pg, r, PGRES_TUPLES_OK, "taking the migration lock");
    PQclear(r);
    if (rc)
        return rc;
    rc = db_simple(t, "CREATE TABLE IF NOT EXISTS schema_migrations ("
                      " name text PRIMARY KEY,"
                      " applied_at timestamptz NOT NULL DEFAULT now())");
    if (rc)
        goto unlock;
    r = PQexec(t->pg, "SELECT name FROM schema_migrations");
    STORE__COUNT(db_queries);
    rc = db_check(t->pg, r, PGRES_TUPLES_OK, "reading schema_migrations");
    if (rc) {
        PQclear(r);
        goto unlock;
    }
    int ndone = PQntuples(r);
    for (size_t i = 0; i < m->nfiles && rc == 0; i++) {
        bool done = false;
        for (int j = 0; j < ndone && !done; j++)
            done = strcmp(PQgetvalue(r, j, 0), m->files[i]) == 0;
        if (!done)
            rc = migrate_file(t, m, m->files[i]);
    }
    PQclear(r);
unlock:
    if (rc != STORE__PG_LOST) {
        /* Session state outlives the call: give the lock and timeout back. */
        PQclear(PQexec(t->pg, "SELECT pg_advisory_unlock(" MIGRATION_LOCK_KEY ")"));
        PQclear(PQexec(t->pg, "RESET statement_timeout"));
    }
    return rc;
}

int store_migrate(const char *migrations_dir)
{
    if (!migrations_dir)
        return PD_EINVAL;
    struct migrate_ctx m = {.dir = migrations_dir};
    int rc = list_migrations(migrations_dir, &m.files, &m.nfiles);
    if (rc)
        return rc;
    rc = db_run(op_migrate, &m);
    if (rc == 0)
        LOG_INFO(MOD, "migrations: %d applied, %zu up to date", m.applied,
                 m.nfiles - (size_t)m.applied);
    strv_free(m.files, m.nfiles);
    return rc;
}

/* ---------------------------------------------------------------------------
 * Candle queries.
 */

/* Decodes (open_time, open, high, low, close, volume) binary rows. reverse:
 * rows arrive newest first and are stored oldest first. *out is NULL when
 * there are no rows. */
static int decode_candles(const PGresult *r, bool reverse, features_candle **out, size_t *n)
{
    int rows = PQntuples(r);
    if (PQnfields(r) != 6) {
        LOG_ERROR(MOD, "candle query returned %d columns", PQnfields(r));
        return PD_EDB;
    }
    for (int f = 0; f < 6; f++) {
        if (PQfformat(r, f) != 1 || PQftype(r, f) != (f == 0 ? OID_TIMESTAMPTZ : OID_FLOAT8)) {
            LOG_ERROR(MOD, "candle query column %d has an unexpected type", f);
            return PD_EDB;
        }
    }
    if (rows == 0) {
        *out = NULL;
        *n = 0;
        return 0;
    }
    features_candle *c = malloc((size_t)rows * sizeof *c);
    if (!c)
        return PD_ENOMEM;
    for (int i = 0; i < rows; i++) {
        features_candle *k = &c[reverse ? rows - 1 - i : i];
        double v[5];
        for (int f = 0; f < 6; f++) {
            if (PQgetisnull(r, i, f) || PQgetlength(r, i, f) != 8) {
                free(c);
                LOG_ERROR(MOD, "candle query row %d column %d is malformed", i, f);
                return PD_EDB;
            }
        }
        k->t = from_pg_us((int64_t)get_be64(PQgetvalue(r, i, 0)));
        for (int f = 0; f < 5; f++)
            v[f] = store__bits_dbl(get_be64(PQgetvalue(r, i, f + 1)));
        k->open = v[0];
        k->high = v[1];
        k->low = v[2];
        k->close = v[3];
        k->volume = v[4];
    }
    *out = c;
    *n = (size_t)rows;
    return 0;
}

struct window_q {
    const char *symbol, *tf;
    int64_t last_open;
    size_t limit;
    features_candle *out;
    size_t n;
};

static int op_window(store__tls *t, void *ctx)
{
    struct window_q *q = ctx;
    char tbuf[8], lbuf[8];
    put_be64(tbuf, (uint64_t)to_pg_us(q->last_open));
    put_be64(lbuf, (uint64_t)q->limit);
    const char *vals[4] = {q->symbol, q->tf, tbuf, lbuf};
    const int lens[4] = {0, 0, 8, 8}, fmts[4] = {0, 0, 1, 1};
    PGresult *r;
    int rc = db_exec(t, ST_WINDOW, vals, lens, fmts, 1, PGRES_TUPLES_OK, &r);
    if (rc)
        return rc;
    rc = decode_candles(r, true, &q->out, &q->n);
    PQclear(r);
    if (rc || q->n)
        return rc;
    /* Nothing closed: an unknown series, or one whose only candles are
     * still open. */
    rc = db_exec(t, ST_SERIES_EXISTS, vals, NULL, NULL, 0, PGRES_TUPLES_OK, &r);
    if (rc)
        return rc;
    rc = PQntuples(r) ? PD_ENODATA : PD_EUNKNOWNSYM;
    PQclear(r);
    return rc;
}

/* The last `limit` closed candles up to last_open, from the database. */
static int db_load_window(const char *symbol, const char *tf, int64_t last_open, size_t limit,
                          features_candle **out, size_t *n)
{
    struct window_q q = {.symbol = symbol, .tf = tf, .last_open = last_open, .limit = limit};
    int rc = db_run(op_window, &q);
    if (rc) {
        free(q.out);
        return rc;
    }
    *out = q.out;
    *n = q.n;
    return 0;
}

static int check_series(const char *symbol, const char *tf, int64_t *tfs)
{
    if (!symbol || !util_symbol_valid(symbol))
        return PD_ESYMBOL;
    *tfs = util_tf_seconds(tf);
    return *tfs ? 0 : PD_ETIMEFRAME;
}

static void window_info(const features_candle *c, size_t n, int64_t tfs, bool from_cache,
                        store_window_info *info)
{
    if (!info)
        return;
    int64_t gaps = 0;
    for (size_t i = 1; i < n; i++) {
        int64_t dt = c[i].t - c[i - 1].t;
        if (dt > tfs)
            gaps += dt / tfs - 1;
    }
    info->last_open = n ? c[n - 1].t : 0;
    info->last_close = n ? c[n - 1].t + tfs : 0;
    info->gaps = gaps > INT_MAX ? INT_MAX : (int)gaps;
    info->from_cache = from_cache;
}

/* Seconds a window ending with last_open stays current: until the candle
 * in progress closes, plus one. */
static int64_t window_ttl(int64_t last_open, int64_t tfs, int64_t now)
{
    int64_t ttl = last_open + 2 * tfs - now + 1;
    return ttl < 1 ? 1 : ttl;
}

/* Keeps the last `limit` of *n candles (in place). */
static void keep_tail(features_candle *c, size_t *n, size_t limit)
{
    if (*n > limit) {
        memmove(c, c + (*n - limit), limit * sizeof *c);
        *n = limit;
    }
}

static int check_limit(size_t limit)
{
    if (limit == 0)
        return PD_EINVAL;
    return limit > WINDOW_LIMIT_MAX ? PD_ETOOBIG : 0;
}

int store_load_window(const char *symbol, const char *tf, int64_t now, size_t limit,
                         features_candle **out, size_t *n, store_window_info *info)
{
    int64_t tfs;
    int rc = check_series(symbol, tf, &tfs);
    if (rc)
        return rc;
    if (!out || !n)
        return PD_EINVAL;
    if ((rc = check_limit(limit)))
        return rc;
    int64_t last = util_tf_last_closed_open(now, tfs);
    features_candle *c = NULL;
    size_t cn = 0;
    bool use_cache = store__cache_enabled(), hit = false;
    if (use_cache) {
        rc = store__cache_window_get(symbol, tf, last, limit, &c, &cn);
        hit = rc == 0;
        use_cache = rc != PD_ECACHE;
    }
    if (!hit) {
        size_t want =
            use_cache && limit < STORE__WINDOW_CACHE_MIN ? STORE__WINDOW_CACHE_MIN : limit;
        rc = db_load_window(symbol, tf, last, want, &c, &cn);
        if (rc)
            return rc;
        /* Only a window that ends with the current last closed candle can
         * ever be a hit; a lagging series is not worth storing. */
        if (use_cache && cn <= STORE__WINDOW_CACHE_MAX && c[cn - 1].t == last)
            store__cache_window_put(symbol, tf, c, cn, cn < want, window_ttl(last, tfs, now));
        keep_tail(c, &cn, limit);
    }
    window_info(c, cn, tfs, hit, info);
    *out = c;
    *n = cn;
    return 0;
}

int store_load_windows(const char *const *symbols, size_t nsym, const char *tf, int64_t now,
                          size_t limit, features_candle **outs, size_t *ns,
                          store_window_info *infos, int *rcs)
{
    int64_t tfs = util_tf_seconds(tf);
    if (!tfs)
        return PD_ETIMEFRAME;
    if (nsym == 0)
        return 0;
    if (!symbols || !outs || !ns || !rcs)
        return PD_EINVAL;
    int rc = check_limit(limit);
    if (rc)
        return rc;
    int64_t last = util_tf_last_closed_open(now, tfs);
    /* Scratch: the valid symbols (NULL for invalid ones), the windows and
     * their sizes, and which of them to store. */
    const char **valid = calloc(nsym, sizeof *valid);
    features_candle **win = calloc(nsym, sizeof *win);
    features_candle **store = calloc(nsym, sizeof *store);
    size_t *wn = calloc(nsym, sizeof *wn);
    bool *complete = calloc(nsym, sizeof *complete);
    bool *hit = calloc(nsym, sizeof *hit);
    rc = PD_ENOMEM;
    if (!valid || !win || !store || !wn || !complete || !hit)
        goto out;
    for (size_t i = 0; i < nsym; i++) {
        bool ok = symbols[i] && util_symbol_valid(symbols[i]);
        valid[i] = ok ? symbols[i] : NULL;
        rcs[i] = ok ? PD_ENOTFOUND : PD_ESYMBOL;
    }
    bool use_cache = store__cache_enabled();
    if (use_cache)
        use_cache =
            store__cache_window_mget(valid, nsym, tf, last, limit, win, wn, rcs) != PD_ECACHE;
    bool any_store = false;
    for (size_t i = 0; i < nsym; i++) {
        if (!valid[i])
            continue;
        if (rcs[i] == 0) {
            hit[i] = true;
            continue;
        }
        size_t want =
            use_cache && limit < STORE__WINDOW_CACHE_MIN ? STORE__WINDOW_CACHE_MIN : limit;
        rcs[i] = db_load_window(valid[i], tf, last, want, &win[i], &wn[i]);
        if (rcs[i])
            continue;
        if (use_cache && wn[i] <= STORE__WINDOW_CACHE_MAX && win[i][wn[i] - 1].t == last) {
            store[i] = win[i];
            complete[i] = wn[i] < want;
            any_store = true;
        }
    }
    if (any_store)
        store__cache_window_mput(valid, nsym, tf, store, wn, complete,
                                    window_ttl(last, tfs, now));
    for (size_t i = 0; i < nsym; i++) {
        if (rcs[i])
            continue;
        keep_tail(win[i], &wn[i], limit);
        window_info(win[i], wn[i], tfs, hit[i], infos ? &infos[i] : NULL);
        outs[i] = win[i];
        ns[i] = wn[i];
    }
    rc = 0;
out:
    free(valid);
    free(win);
    free(store);
    free(wn);
    free(complete);
    free(hit);
    return rc;
}

struct range_q {
    const char *symbol, *tf;
    int64_t lo_us, hi_us;
    features_candle *out;
    size_t n;
};

static int op_range(store__tls *t, void *ctx)
{
    struct range_q *q = ctx;
    char lo[8], hi[8];
    put_be64(lo, (uint64_t)q->lo_us);
    put_be64(hi, (uint64_t)q->hi_us);
    const char *vals[4] = {q->symbol, q->tf, lo, hi};
    const int lens[4] = {0, 0, 8, 8}, fmts[4] = {0, 0, 1, 1};
    PGresult *r;
    int rc = db_exec(t, ST_RANGE, vals, lens, fmts, 1, PGRES_TUPLES_OK, &r);
    if (rc)
        return rc;
    rc = decode_candles(r, false, &q->out, &q->n);
    PQclear(r);
    return rc;
}

int store_load_range(const char *symbol, const char *tf, int64_t from, int64_t to, int64_t now,
                        features_candle **out, size_t *n)
{
    int64_t tfs;
    int rc = check_series(symbol, tf, &tfs);
    if (rc)
        return rc;
    if (!out || !n || from < 0 || to < 0 || from > TIME_MAX || to > TIME_MAX || now < TIME_MIN ||
        now > TIME_MAX)
        return PD_EINVAL;
    /* Closed candles only: open time <= the last closed open. */
    int64_t last = util_tf_last_closed_open(now, tfs);
    struct range_q q = {.symbol = symbol, .tf = tf};
    q.lo_us = from ? to_pg_us(from) : INT64_MIN; /* INT64_MIN is -infinity */
    q.hi_us = to_pg_us(last) + 1;
    if (to && to_pg_us(to) < q.hi_us)
        q.hi_us = to_pg_us(to);
    rc = db_run(op_range, &q);
    if (rc) {
        free(q.out);
        return rc;
    }
    *out = q.out;
    *n = q.n;
    return 0;
}

struct symbols_q {
    const char *tf;
    char **v;
    size_t n;
};

static int op_symbols(store__tls *t, void *ctx)
{
    struct symbols_q *q = ctx;
    const char *vals[1] = {q->tf};
    PGresult *r;
    int rc = db_exec(t, ST_SYMBOLS, vals, NULL, NULL, 0, PGRES_TUPLES_OK, &r);
    if (rc)
        return rc;
    size_t rows = (size_t)PQntuples(r);
    char **v = calloc(rows ? rows : 1, sizeof *v);
    rc = v ? 0 : PD_ENOMEM;
    for (size_t i = 0; i < rows && rc == 0; i++)
        if (!(v[i] = strdup(PQgetvalue(r, (int)i, 0))))
            rc = PD_ENOMEM;
    PQclear(r);
    if (rc) {
        strv_free(v, rows);
        return rc;
    }
    q->v = v;
    q->n = rows;
    return 0;
}

int store_list_symbols(const char *tf, char ***out, size_t *n)
{
    if (!util_tf_seconds(tf))
        return PD_ETIMEFRAME;
    if (!out || !n)
        return PD_EINVAL;
    struct symbols_q q = {.tf = tf};
    int rc = db_run(op_symbols, &q);
    if (rc)
        return rc;
    *out = q.v;
    *n = q.n;
    return 0;
}

void store_strv_free(char **v, size_t n)
{
    strv_free(v, n);
}

struct count_q {
    const char *symbol, *tf;
    int64_t count;
};

static int op_count(store__tls *t, void *ctx)
{
    struct count_q *q = ctx;
    const char *vals[2] = {q->symbol, q->tf};
    PGresult *r;
    int rc = db_exec(t, q->symbol ? ST_COUNT_SERIES : ST_COUNT_ALL, vals, NULL, NULL, 0,
                     PGRES_TUPLES_OK, &r);
    if (rc)
        return rc;
    q->count = PQntuples(r) == 1 ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : 0;
    PQclear(r);
    return 0;
}

int store_count_candles(const char *symbol, const char *tf, int64_t *count)
{
    if (!count)
        return PD_EINVAL;
    if (symbol || tf) {
        int64_t tfs;
        int rc = check_series(symbol, tf, &tfs);
        if (rc)
            return rc;
    }
    struct count_q q = {.symbol = symbol, .tf = tf};
    int rc = db_run(op_count, &q);
    if (rc)
        return rc;
    *count = q.count;
    return 0;
}

struct kind_q {
    const char *symbol, *tf;
    int kind;
};

static int op_kind(store__tls *t, void *ctx)
{
    struct kind_q *q = ctx;
    const char *vals[2] = {q->symbol, q->tf};
    PGresult *r;
    int rc = db_exec(t, ST_SERIES_KIND, vals, NULL, NULL, 0, PGRES_TUPLES_OK, &r);
    if (rc)
        return rc;
    q->kind = STORE_SERIES_NONE;
    if (PQntuples(r) == 1) {
        const char *k = PQgetvalue(r, 0, 0);
        q->kind = !strcmp(k, "base")      ? STORE_SERIES_BASE
                  : !strcmp(k, "derived") ? STORE_SERIES_DERIVED
                                          : STORE_SERIES_NATIVE;
    }
    PQclear(r);
    return 0;
}

int store_series_kind(const char *symbol, const char *tf, int *kind)
{
    int64_t tfs;
    int rc = check_series(symbol, tf, &tfs);
    if (rc)
        return rc;
    if (!kind)
        return PD_EINVAL;
    struct kind_q q = {.symbol = symbol, .tf = tf};
    if ((rc = db_run(op_kind, &q)))
        return rc;
    *kind = q.kind;
    return 0;
}

struct ticks_q {
    store_tick *v;
    size_t n;
};

static int op_ticks(store__tls *t, void *ctx)
{
    struct ticks_q *q = ctx;
    PGresult *r;
    int rc = db_exec(t, ST_SYMBOL_TICKS, NULL, NULL, NULL, 0, PGRES_TUPLES_OK, &r);
    if (rc)
        return rc;
    size_t rows = (size_t)PQntuples(r), n = 0;
    store_tick *v = malloc((rows ? rows : 1) * sizeof *v);
    if (!v) {
        PQclear(r);
        return PD_ENOMEM;
    }
    for (size_t i = 0; i < rows; i++) {
        const char *sym = PQgetvalue(r, (int)i, 0);
        char *end;
        double d = strtod(PQgetvalue(r, (int)i, 1), &end);
        if (*end != '\0' || !isfinite(d) || d <= 0 || strlen(sym) >= sizeof v[n].symbol)
            continue; /* the table's CHECKs make this unreachable; never trust a row */
        snprintf(v[n].symbol, sizeof v[n].symbol, "%s", sym);
        v[n++].tick = d;
    }
    PQclear(r);
    q->v = v;
    q->n = n;
    return 0;
}

int store_symbol_ticks(store_tick **out, size_t *n)
{
    if (!out || !n)
        return PD_EINVAL;
    struct ticks_q q = {0};
    int rc = db_run(op_ticks, &q);
    if (rc)
        return rc;
    *out = q.v;
    *n = q.n;
    return 0;
}

const char *store_series_kind_name(int kind)
{
    switch (kind) {
    case STORE_SERIES_BASE:
        return "base";
    case STORE_SERIES_DERIVED:
        return "derived";
    case STORE_SERIES_NATIVE:
        return "native";
    default:
        return "none";
    }
}

/* ---------------------------------------------------------------------------
 * Upsert.
 */
static int cmp_candle_time(const void *a, const void *b)
{
    int64_t x = ((const features_candle *)a)->t, y = ((const features_candle *)b)->t;
    return (x > y) - (x < y);
}

static bool finite_pos(double v)
{
    return isfinite(v) && v > 0;
}

/* Checks every candle; logs the first bad one. */
static int validate_candles(const char *symbol, const char *tf, int64_t tfs,
                            const features_candle *c, size_t n, bool *sorted)
{
    *sorted = true;
    for (size_t i = 0; i < n; i++) {
        const features_candle *k = &c[i];
        const char *why = NULL;
        if (k->t < TIME_MIN || k->t > TIME_MAX)
            why = "open time out of range";
        else if (k->t % tfs != 0)
            why = "open time not aligned to the timeframe";
        else if (!finite_pos(k->open) || !finite_pos(k->high) || !finite_pos(k->low) ||
                 !finite_pos(k->close))
            why = "price not a positive finite number";
        else if (!(k->high >= k->low))
            why = "high below low";
        else if (!isfinite(k->volume) || k->volume < 0)
            why = "volume negative or not finite";
        else if (i > 0 && k->t == c[i - 1].t)
            why = "duplicate open time";
        if (why) {
            LOG_WARN(MOD, "upsert %s %s: candle %zu (t=%lld): %s", symbol, tf, i, (long long)k->t,
                     why);
            return PD_EINVAL;
        }
        if (i > 0 && k->t < c[i - 1].t)
            *sorted = false;
    }
    return 0;
}

/* The timeframes PostgreSQL derives from 1m (db/005_derived_series.sql). */
static const char *const derived_tfs[] = {"5m", "15m", "1h", "4h", "1d"};

struct upsert_q {
    const char *symbol, *tf;
    const features_candle *c;
    size_t n;
    char *buf; /* six binary arrays of up to UPSERT_CHUNK elements */
};

/* Writes a one-dimensional binary array header for n 8-byte elements. */
static char *array_header(char *p, uint32_t elem_oid, size_t n)
{
    put_be32(p, 1);                /* dimensions */
    put_be32(p + 4, 0);            /* has nulls */
    put_be32(p + 8, elem_oid);     /* element type */
    put_be32(p + 12, (uint32_t)n); /* length */
    put_be32(p + 16, 1);           /* lower bound */
    return p + 20;
}

#define ARRAY_BYTES(n) (20 + 12 * (n))

static int upsert_chunk(store__tls *t, struct upsert_q *q, const features_candle *c, size_t n)
{
    const char *vals[8] = {q->symbol, q->tf};
    int lens[8] = {0}, fmts[8] = {0, 0, 1, 1, 1, 1, 1, 1};
    char *p = q->buf;
    for (int a = 0; a < 6; a++) {
        vals[2 + a] = p;
        lens[2 + a] = (int)ARRAY_BYTES(n);
        p = array_header(p, a == 0 ? OID_TIMESTAMPTZ : OID_FLOAT8, n);
        for (size_t i = 0; i < n; i++) {
            uint64_t v;
            switch (a) {
            case 0:
                v = (uint64_t)to_pg_us(c[i].t);
                break;
            case 1:
                v = store__dbl_bits(c[i].open);
                break;
            case 2:
                v = store__dbl_bits(c[i].high);
                break;
            case 3:
                v = store__dbl_bits(c[i].low);
                break;
            case 4:
                v = store__dbl_bits(c[i].close);
                break;
            default:
                v = store__dbl_bits(c[i].volume);
                break;
            }
            put_be32(p, 8);
            put_be64(p + 4, v);
            p += 12;
        }
    }
    PGresult *r;
    int rc = db_exec(t, ST_UPSERT, vals, lens, fmts, 0, PGRES_COMMAND_OK, &r);
    if (rc == 0)
        PQclear(r);
    return rc;
}

static int op_upsert(store__tls *t, void *ctx)
{
    struct upsert_q *q = ctx;
    bool tx = q->n > UPSERT_CHUNK;
    int rc = tx ? db_simple(t, "BEGIN") : 0;
    for (size_t off = 0; off < q->n && rc == 0; off += UPSERT_CHUNK) {
        size_t k = q->n - off < UPSERT_CHUNK ? q->n - off : UPSERT_CHUNK;
        rc = upsert_chunk(t, q, q->c + off, k);
    }
    if (tx && rc == 0)
        rc = db_simple(t, "COMMIT");
    if (rc && rc != STORE__PG_LOST)
        db_rollback(t);
    return rc;
}

int store_upsert_candles(const char *symbol, const char *tf, const features_candle *c, size_t n)
{
    int64_t tfs;
    int rc = check_series(symbol, tf, &tfs);
    if (rc)
        return rc;
    if (n == 0)
        return 0;
    if (!c)
        return PD_EINVAL;
    bool sorted;
    if ((rc = validate_candles(symbol, tf, tfs, c, n, &sorted)))
        return rc;
    features_candle *copy = NULL;
    if (!sorted) {
        /* Sorted input only needs the neighbour check above; otherwise sort
         * a copy and look for duplicates again. */
        if (!(copy = malloc(n * sizeof *copy)))
            return PD_ENOMEM;
        memcpy(copy, c, n * sizeof *copy);
        qsort(copy, n, sizeof *copy, cmp_candle_time);
        if ((rc = validate_candles(symbol, tf, tfs, copy, n, &sorted))) {
            free(copy);
            return rc;
        }
        c = copy;
    }
    size_t chunk = n < UPSERT_CHUNK ? n : UPSERT_CHUNK;
    struct upsert_q q = {
        .symbol = symbol, .tf = tf, .c = c, .n = n, .buf = malloc(6 * ARRAY_BYTES(chunk))};
    if (!q.buf) {
        free(copy);
        return PD_ENOMEM;
    }
    rc = db_run(op_upsert, &q);
    free(q.buf);
    free(copy);
    /* The cached window may hold the old values of these candles (and, for
     * 1m, of the candles PostgreSQL derived from them). */
    if (rc == 0 && store__cache_enabled()) {
        store__cache_window_del(symbol, tf);
        if (!strcmp(tf, "1m"))
            for (size_t i = 0; i < sizeof derived_tfs / sizeof *derived_tfs; i++)
                store__cache_window_del(symbol, derived_tfs[i]);
    }
    return rc;
}

int store_upsert_base_candles(const char *symbol, const features_candle *c, size_t n)
{
    return store_upsert_candles(symbol, "1m", c, n);
}
