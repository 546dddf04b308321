/*
 * test_faults_db: allocation failures injected for real into the
 * database-backed paths (store/ candles, windows, migrations and the
 * ledger; predict/ pipeline over PostgreSQL and Redis), and database
 * failures arranged for real between calls (the backend terminated from a
 * second connection, a table locked past a statement_timeout).
 *
 * The loop and wrappers are fault_wrap.h's (as test_faults): the Nth
 * allocation of predictd's own code fails, for every N, once alone and
 * once with every later one; allocations inside libpq and hiredis are not
 * wrapped (shared libraries), so this is predictd's handling of its own
 * allocations between real queries. Every faulted run must return the
 * documented code (PD_ENOMEM, or one the function documents), leave
 * nothing half-written in PostgreSQL (row counts and contents checked
 * from a second connection, whose work is not under the loop) and no
 * entry in Redis that serves anything but the reference answer (a fresh
 * service reads them back after each run), and must not leak or crash.
 * Caching is an optimisation: a run that loses only a cache write may
 * still succeed (FAULT_TOLERATE) and must then give the reference answer.
 *
 * Needs PREDICTD_TEST_DATABASE_URL and PREDICTD_TEST_REDIS_URL (tests/run
 * gives a fresh database to this file); skipped without them. No timing
 * assertions: the timeouts below only bound how long a blocked query
 * waits.
 */
#define _GNU_SOURCE
#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "features/features.h"
#include "feed/feed.h"
#include "inference/inference.h"
#include "predict/predict.h"
#include "predict/predict_internal.h"
#include "registry/registry.h"
#include "store/store.h"
#include "training/training.h"
#include "unit.h"
#include "fixtures.h"
#include "util/util.h"
#include "fault_wrap.h"
#include "model_fixture.h"

#define TF "15m"
#define TFS 900
#define T0 1700000100 /* aligned to 15 minutes */
#define NCANDLES 200

/* ------------------------------------------------------------------------
 * Fixtures: candles in PostgreSQL, models in a temporary repository, a
 * second connection for checks behind the store's back, and Redis.
 */
static char base_dir[512], models_dir[600];
static PGconn *admin;
static redisContext *redis;
static int64_t now_s; /* a few seconds after the last candle closed */

static features_candle *wave(size_t n, int64_t t0, double level)
{
    features_candle *c = calloc(n, sizeof *c);
    double prev = level;
    for (size_t i = 0; c && i < n; i++) {
        double close =
            round((level + 3.0 * sin(0.37 * (double)i) + 0.01 * (double)i) * 100) / 100;
        c[i].t = t0 + (int64_t)i * TFS;
        c[i].open = prev;
        c[i].close = close;
        c[i].high = round((fmax(prev, close) + 0.4 + 0.2 * cos((double)i)) * 100) / 100;
        c[i].low = round((fmin(prev, close) - 0.5) * 100) / 100;
        c[i].volume = 10 + (double)(i % 7);
        prev = close;
    }
    return c;
}

/* Redis from PREDICTD_TEST_REDIS_URL (redis://[user@]host:port[/db]). */
static redisContext *redis_open(void)
{
    const char *url = unit_redis_url();
    if (!url || strncmp(url, "redis://", 8) != 0)
        return NULL;
    const char *h = url + 8, *at = strchr(h, '@');
    if (at)
        h = at + 1;
    char host[128] = "";
    int port = 0;
    if (sscanf(h, "%127[^:/]:%d", host, &port) != 2)
        return NULL;
    redisContext *c = redisConnect(host, port);
    if (!c || c->err) {
        if (c)
            redisFree(c);
        return NULL;
    }
    return c;
}

static void redis_flush(void)
{
    redisReply *r = redisCommand(redis, "FLUSHALL");
    if (r)
        freeReplyObject(r);
}

/* The store over the test database, migrated, with candles for BTCUSDT,
 * ETHUSDT (200 each), SHORTUSDT (10: fewer than a window) and NOMODELUSD
 * (200, no model); models (the fixture's softmax, window 100) for the
 * first three. false (printed) when something is missing. */
static bool db_setup(fx *f)
{
    if (!unit_db_url() || !unit_redis_url())
        return false;
    if (store_init(unit_db_url(), unit_redis_url(), true) != 0 ||
        store_migrate(unit_migrations_dir()) != 0) {
        printf("  store_init/migrate failed\n");
        return false;
    }
    admin = unit_db_admin();
    redis = redis_open();
    if (!admin || !redis) {
        printf("  no admin connection or Redis\n");
        return false;
    }
    features_candle *c = wave(NCANDLES, T0, 100), *d = wave(NCANDLES, T0, 2000);
    bool ok = c && d && store_upsert_candles("BTCUSDT", TF, c, NCANDLES) == 0 &&
              store_upsert_candles("ETHUSDT", TF, d, NCANDLES) == 0 &&
              store_upsert_candles("SHORTUSDT", TF, c + NCANDLES - 10, 10) == 0 &&
              store_upsert_candles("NOMODELUSD", TF, c, NCANDLES) == 0;
    now_s = T0 + (NCANDLES - 1) * TFS + TFS + 5;
    free(c);
    free(d);
    if (!ok) {
        printf("  seeding candles failed\n");
        return false;
    }
    if (!unit_tmpdir(base_dir, sizeof base_dir, "pd-faults-db"))
        return false;
    snprintf(models_dir, sizeof models_dir, "%s/models", base_dir);
    fx_init(f, 1, "test_faults_db");
    f->pol.min_confidence = 0.3;
    const char *syms[] = {"BTCUSDT", "ETHUSDT", "SHORTUSDT"};
    for (int i = 0; i < 3; i++) {
        uint32_t ver = 0;
        if (registry_publish(models_dir, syms[i], TF, &f->m, &f->s, &ver) != 0) {
            printf("  publish %s failed\n", syms[i]);
            return false;
        }
    }
    /* the database is the file's: rows of the tests before go */
    unit_sql_ok(admin, "DELETE FROM predictions");
    redis_flush();
    return true;
}

static void db_teardown(void)
{
    if (admin)
        PQfinish(admin);
    admin = NULL;
    if (redis)
        redisFree(redis);
    redis = NULL;
    store_shutdown();
    if (base_dir[0])
        util_rmtree(base_dir);
    base_dir[0] = '\0';
}

static registry *open_registry(void)
{
    registry *r = NULL;
    if (registry_new(models_dir, &r) != 0 || registry_scan(r, NULL, NULL) != 0) {
        registry_free(r);
        return NULL;
    }
    return r;
}

/* ------------------------------------------------------------------------
 * The store: connecting, migrations, candles in and out.
 */
static int op_store_init(void *ctx)
{
    const char *url = ctx;
    int rc = store_init(url, unit_redis_url(), true);
    if (rc == 0) {
        bool held = fault_hold();
        int64_t n = -1;
        CHECK_EQ_INT(store_count_candles("BTCUSDT", TF, &n), 0);
        CHECK_EQ_INT(n, NCANDLES);
        fault_resume(held);
    }
    store_shutdown();
    return rc;
}

/* Writes 50 candles of a new series: on failure none may be there, on
 * success all 50, which are then removed again (not under the loop). */
static int op_upsert(void *ctx)
{
    const features_candle *c = ctx;
    int rc = store_upsert_candles("NEWUSDT", TF, c, 50);
    bool held = fault_hold();
    long long n =
        unit_sql_int(admin, "SELECT count(*) FROM candles WHERE symbol = 'NEWUSDT'");
    if (rc == 0) {
        CHECK_EQ_INT(n, 50);
        char sql[256];
        snprintf(sql, sizeof sql, "SELECT count(*) FROM candles WHERE symbol = 'NEWUSDT'"
                 " AND open_time = to_timestamp(%lld) AND close = %.17g AND volume = %.17g",
                 (long long)c[49].t, c[49].close, c[49].volume);
        CHECK_EQ_INT(unit_sql_int(admin, sql), 1);
        unit_sql_ok(admin, "DELETE FROM candles WHERE symbol = 'NEWUSDT'");
        unit_sql_ok(admin, "DELETE FROM candle_series WHERE symbol = 'NEWUSDT'");
        store_cache_drop_window("NEWUSDT", TF);
    } else {
        CHECK_EQ_INT(n, 0);
    }
    fault_resume(held);
    return rc;
}

typedef struct load_ctx {
    features_candle *ref;
    size_t nref;
} load_ctx;

static bool same_candles(const features_candle *a, const features_candle *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (a[i].t != b[i].t || a[i].open != b[i].open || a[i].high != b[i].high ||
            a[i].low != b[i].low || a[i].close != b[i].close || a[i].volume != b[i].volume)
            return false;
    return true;
}

static int op_range(void *ctx)
{
    load_ctx *l = ctx;
    features_candle *c = NULL;
    size_t n = 0;
    int rc = store_load_range("BTCUSDT", TF, T0 + 10 * TFS, 0, now_s, &c, &n);
    if (rc == 0) {
        CHECK_EQ_INT(n, NCANDLES - 10);
        CHECK(n == l->nref - 10 && same_candles(c, l->ref + 10, n));
    } else {
        CHECK(c == NULL);
    }
    free(c);
    return rc;
}

/* Four windows at once (one symbol invalid, one unknown); flush: Redis
 * emptied first (every window from PostgreSQL, then stored in Redis),
 * else read from Redis where the run before stored them. */
typedef struct windows_ctx {
    bool flush;
    features_candle *ref[2];
} windows_ctx;

static int op_windows(void *ctx)
{
    windows_ctx *w = ctx;
    if (w->flush) {
        bool held = fault_hold();
        redis_flush();
        fault_resume(held);
    }
    const char *syms[] = {"BTCUSDT", "bad!", "ETHUSDT", "NOSUCHUSD", "SHORTUSDT"};
    features_candle *outs[5] = {0};
    size_t ns[5] = {0};
    int rcs[5] = {0};
    store_window_info info[5];
    int rc = store_load_windows(syms, 5, TF, now_s, 100, outs, ns, info, rcs);
    bool held = fault_hold();
    bool enomem = false;
    const int want[5] = {0, PD_ESYMBOL, 0, PD_EUNKNOWNSYM, 0};
    const size_t wantn[5] = {100, 0, 100, 0, 10};
    for (int i = 0; rc == 0 && i < 5; i++) {
        if (rcs[i] == PD_ENOMEM) {
            enomem = true;
            CHECK(outs[i] == NULL);
            continue;
        }
        if (rcs[i] != want[i]) {
            UNIT_FAIL_("window %s: %s, want %s", syms[i], util_strerror(rcs[i]),
                       util_strerror(want[i]));
            continue;
        }
        if (rcs[i])
            continue;
        CHECK_EQ_INT(ns[i], wantn[i]);
        CHECK_EQ_INT(info[i].last_open, T0 + (NCANDLES - 1) * TFS);
        CHECK_EQ_INT(info[i].gaps, 0);
        const features_candle *ref = i == 2 ? w->ref[1] : w->ref[0];
        CHECK(ns[i] == wantn[i] && same_candles(outs[i], ref + NCANDLES - ns[i], ns[i]));
    }
    for (int i = 0; i < 5; i++)
        free(outs[i]);
    /* what Redis holds now serves the same windows */
    if (rc == 0 || rc == PD_ENOMEM) {
        features_candle *c = NULL;
        size_t n = 0;
        store_window_info in;
        CHECK_EQ_INT(store_load_window("ETHUSDT", TF, now_s, 100, &c, &n, &in), 0);
        CHECK(n == 100 && same_candles(c, w->ref[1] + NCANDLES - 100, 100));
        free(c);
    }
    fault_resume(held);
    return rc ? rc : enomem ? PD_ENOMEM : 0;
}

TEST(store_candles_under_allocation_failures)
{
    fx *f = malloc(sizeof *f);
    if (!db_setup(f))
        UNIT_SKIP("no database, Redis or repository");
    /* connection parameters: a plain URL, and one with options of its own
     * (ours go first) and every parameter given */
    char url2[1024];
    snprintf(url2, sizeof url2, "%s%cconnect_timeout=4&application_name=faults"
             "&options=-c%%20work_mem%%3D8MB",
             unit_db_url(), strchr(unit_db_url(), '?') ? '&' : '?');
    CHECK(fault_loop("store_init", op_store_init, (void *)unit_db_url(), 0, NULL, 0, 0, 1) > 0);
    CHECK(fault_loop("store_init (options)", op_store_init, url2, 0, NULL, 0, 0, 1) > 0);
    CHECK_EQ_INT(store_init(unit_db_url(), unit_redis_url(), true), 0);

    features_candle *c = wave(50, T0 + 50 * TFS, 100);
    CHECK(fault_loop("store_upsert_candles", op_upsert, c, 0, NULL, 0, 0, 1) > 0);
    free(c);

    load_ctx l = {.ref = wave(NCANDLES, T0, 100), .nref = NCANDLES};
    CHECK(fault_loop("store_load_range", op_range, &l, 0, NULL, 0, 0, 1) > 0);
    windows_ctx w = {.flush = true, .ref = {l.ref, wave(NCANDLES, T0, 2000)}};
    CHECK(fault_loop("store_load_windows (Redis empty)", op_windows, &w, 0, NULL, 0,
                     FAULT_TOLERATE, 1) > 0);
    w.flush = false;
    CHECK(fault_loop("store_load_windows (from Redis)", op_windows, &w, 0, NULL, 0,
                     FAULT_TOLERATE, 1) > 0);
    free(w.ref[1]);
    free(l.ref);
    free(f);
    db_teardown();
}

/* The candle readers' refusals of bad arguments: each its own code, no
 * query made, nothing returned. */
TEST(candle_readers_refuse_bad_arguments)
{
    fx *f = malloc(sizeof *f);
    if (!db_setup(f))
        UNIT_SKIP("no database, Redis or repository");
    features_candle *c = NULL;
    size_t n = 7;
    const int64_t far = INT64_C(253402300800); /* past year 9999 */
    CHECK_EQ_INT(store_load_range(NULL, TF, 0, 0, now_s, &c, &n), PD_ESYMBOL);
    CHECK_EQ_INT(store_load_range("bad!", TF, 0, 0, now_s, &c, &n), PD_ESYMBOL);
    CHECK_EQ_INT(store_load_range("BTCUSDT", "2h", 0, 0, now_s, &c, &n), PD_ETIMEFRAME);
    CHECK_EQ_INT(store_load_range("BTCUSDT", TF, 0, 0, now_s, NULL, &n), PD_EINVAL);
    CHECK_EQ_INT(store_load_range("BTCUSDT", TF, 0, 0, now_s, &c, NULL), PD_EINVAL);
    CHECK_EQ_INT(store_load_range("BTCUSDT", TF, -1, 0, now_s, &c, &n), PD_EINVAL);
    CHECK_EQ_INT(store_load_range("BTCUSDT", TF, 0, -1, now_s, &c, &n), PD_EINVAL);
    CHECK_EQ_INT(store_load_range("BTCUSDT", TF, far, 0, now_s, &c, &n), PD_EINVAL);
    CHECK_EQ_INT(store_load_range("BTCUSDT", TF, 0, far, now_s, &c, &n), PD_EINVAL);
    CHECK_EQ_INT(store_load_range("BTCUSDT", TF, 0, 0, -1, &c, &n), PD_EINVAL);
    CHECK_EQ_INT(store_load_range("BTCUSDT", TF, 0, 0, far, &c, &n), PD_EINVAL);
    CHECK(c == NULL && n == 7);
    /* a range: [from, to) of closed candles; to past the last closed one
     * stops at it */
    CHECK_EQ_INT(store_load_range("BTCUSDT", TF, T0 + 10 * TFS, T0 + 20 * TFS, now_s, &c, &n), 0);
    CHECK_EQ_INT(n, 10);
    if (c && n == 10)
        CHECK_EQ_INT(c[0].t, T0 + 10 * TFS);
    free(c);
    c = NULL;
    CHECK_EQ_INT(store_load_range("BTCUSDT", TF, 0, now_s + 100 * TFS, now_s, &c, &n), 0);
    CHECK_EQ_INT(n, NCANDLES);
    free(c);
    c = NULL;
    CHECK_EQ_INT(store_load_range("NOSUCHUSD", TF, 0, 0, now_s, &c, &n), 0);
    CHECK(c == NULL && n == 0);

    const char *syms[2] = {"BTCUSDT", "ETHUSDT"};
    features_candle *outs[2] = {0};
    size_t ns[2];
    int rcs[2];
    CHECK_EQ_INT(store_load_windows(syms, 2, "2h", now_s, 100, outs, ns, NULL, rcs),
                 PD_ETIMEFRAME);
    CHECK_EQ_INT(store_load_windows(syms, 0, TF, now_s, 100, outs, ns, NULL, rcs), 0);
    CHECK_EQ_INT(store_load_windows(NULL, 2, TF, now_s, 100, outs, ns, NULL, rcs), PD_EINVAL);
    CHECK_EQ_INT(store_load_windows(syms, 2, TF, now_s, 100, NULL, ns, NULL, rcs), PD_EINVAL);
    CHECK_EQ_INT(store_load_windows(syms, 2, TF, now_s, 100, outs, NULL, NULL, rcs), PD_EINVAL);
    CHECK_EQ_INT(store_load_windows(syms, 2, TF, now_s, 100, outs, ns, NULL, NULL), PD_EINVAL);
    CHECK_EQ_INT(store_load_windows(syms, 2, TF, now_s, 0, outs, ns, NULL, rcs), PD_EINVAL);
    CHECK_EQ_INT(store_load_windows(syms, 2, TF, now_s, 100001, outs, ns, NULL, rcs),
                 PD_ETOOBIG);
    CHECK(outs[0] == NULL && outs[1] == NULL);
    free(f);
    db_teardown();
}

/* A migration directory: the real migrations (linked) and one more that
 * creates a table and fills it; under a fault it is applied whole (table,
 * rows and its schema_migrations row) or not at all. */
static char mig_dir[700];

static int op_migrate(void *ctx)
{
    (void)ctx;
    int rc = store_migrate(mig_dir);
    bool held = fault_hold();
    long long rec = unit_sql_int(admin, "SELECT count(*) FROM schema_migrations"
                                        " WHERE name = '900_faults.sql'");
    long long tab = unit_sql_int(admin, "SELECT count(*) FROM pg_tables"
                                        " WHERE tablename = 'faults_t'");
    if (rc == 0) {
        CHECK_EQ_INT(rec, 1);
        CHECK_EQ_INT(tab, 1);
        CHECK_EQ_INT(unit_sql_int(admin, "SELECT sum(x) FROM faults_t"), 6);
        unit_sql_ok(admin, "DROP TABLE faults_t");
        unit_sql_ok(admin, "DELETE FROM schema_migrations WHERE name = '900_faults.sql'");
    } else {
        CHECK_EQ_INT(rec, 0);
        CHECK_EQ_INT(tab, 0);
    }
    fault_resume(held);
    return rc;
}

TEST(migrations_under_allocation_failures)
{
    fx *f = malloc(sizeof *f);
    if (!db_setup(f))
        UNIT_SKIP("no database, Redis or repository");
    snprintf(mig_dir, sizeof mig_dir, "%s/db", base_dir);
    CHECK(mkdir(mig_dir, 0755) == 0);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "ln -s %s/*.sql %s/", unit_migrations_dir(), mig_dir);
    CHECK(system(cmd) == 0);
    char p[800];
    snprintf(p, sizeof p, "%s/900_faults.sql", mig_dir);
    FILE *fp = fopen(p, "w");
    if (fp) {
        fputs("CREATE TABLE faults_t (x integer);\nINSERT INTO faults_t VALUES (1), (2), (3);\n",
              fp);
        fclose(fp);
    }
    CHECK(fault_loop("store_migrate (one new)", op_migrate, NULL, 0, NULL, 0, 0, 1) > 0);
    free(f);
    db_teardown();
}

/* Migrations an operator can get wrong: one whose SQL fails is rolled
 * back whole (its table, its rows, its schema_migrations row) with
 * PD_EDB, the ones before it stay applied; a missing directory, a file
 * where the directory should be, and a migration that cannot be read are
 * refused with their codes, nothing applied. */
static bool write_text(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    if (!fp)
        return false;
    bool ok = fputs(text, fp) >= 0;
    return fclose(fp) == 0 && ok;
}

TEST(broken_migrations_change_nothing)
{
    fx *f = malloc(sizeof *f);
    if (!db_setup(f))
        UNIT_SKIP("no database, Redis or repository");
    snprintf(mig_dir, sizeof mig_dir, "%s/db", base_dir);
    CHECK(mkdir(mig_dir, 0755) == 0);
    char cmd[2048], p[800];
    snprintf(cmd, sizeof cmd, "ln -s %s/*.sql %s/", unit_migrations_dir(), mig_dir);
    CHECK(system(cmd) == 0);
    snprintf(p, sizeof p, "%s/900_good.sql", mig_dir);
    CHECK(write_text(p, "CREATE TABLE good_t (x integer);\n"));
    snprintf(p, sizeof p, "%s/901_bad.sql", mig_dir);
    CHECK(write_text(p, "CREATE TABLE bad_t (x integer);\nINSERT INTO bad_t VALUES (1);\n"
                        "INSERT INTO no_such_table VALUES (1);\n"));
    long long before = unit_sql_int(admin, "SELECT count(*) FROM schema_migrations");
    CHECK_EQ_INT(store_migrate(mig_dir), PD_EDB);
    CHECK_EQ_INT(unit_sql_int(admin, "SELECT count(*) FROM schema_migrations"), before + 1);
    CHECK_EQ_INT(unit_sql_int(admin, "SELECT count(*) FROM pg_tables WHERE tablename = 'good_t'"),
                 1);
    CHECK_EQ_INT(unit_sql_int(admin, "SELECT count(*) FROM pg_tables WHERE tablename = 'bad_t'"),
                 0);
    /* a migration breaking a constraint is a database problem too */
    CHECK(write_text(p, "CREATE TABLE bad_t (x integer CHECK (x > 0));\n"
                        "INSERT INTO bad_t VALUES (-1);\n"));
    CHECK_EQ_INT(store_migrate(mig_dir), PD_EDB);
    CHECK_EQ_INT(unit_sql_int(admin, "SELECT count(*) FROM pg_tables WHERE tablename = 'bad_t'"),
                 0);
    /* unreadable: a directory where the file should be */
    CHECK(unlink(p) == 0);
    CHECK(mkdir(p, 0755) == 0);
    CHECK(store_migrate(mig_dir) < 0);
    CHECK_EQ_INT(unit_sql_int(admin, "SELECT count(*) FROM schema_migrations"), before + 1);
    /* no directory, or a file instead of one */
    snprintf(p, sizeof p, "%s/none", base_dir);
    CHECK_EQ_INT(store_migrate(p), PD_ENOTFOUND);
    snprintf(p, sizeof p, "%s/900_good.sql", mig_dir);
    CHECK_EQ_INT(store_migrate(p), PD_EIO);
    CHECK_EQ_INT(store_migrate(NULL), PD_EINVAL);
    /* the lock and timeout of the failed runs were given back: a good
     * migration still applies at once */
    snprintf(p, sizeof p, "%s/901_bad.sql", mig_dir);
    CHECK(rmdir(p) == 0);
    CHECK(write_text(p, "CREATE TABLE fixed_t (x integer);\n"));
    CHECK_EQ_INT(store_migrate(mig_dir), 0);
    CHECK_EQ_INT(unit_sql_int(admin, "SELECT count(*) FROM schema_migrations"), before + 2);
    CHECK_EQ_INT(unit_sql_int(admin, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"),
                 0);
    unit_sql_ok(admin, "DROP TABLE good_t");
    unit_sql_ok(admin, "DROP TABLE fixed_t");
    unit_sql_ok(admin, "DELETE FROM schema_migrations WHERE name IN ('900_good.sql', '901_bad.sql')");
    free(f);
    db_teardown();
}

/* ------------------------------------------------------------------------
 * The prediction pipeline over the database and Redis.
 */
#define NSYM 6
static const char *const psyms[NSYM] = {"BTCUSDT", "ETHUSDT", "SHORTUSDT",
                                        "NOMODELUSD", "bad!", "NOSUCHUSD"};

typedef struct many_ctx {
    registry *reg;
    bool flush;   /* Redis emptied before each run */
    bool refresh; /* predict_refresh_many, else predict_many */
    bool have_ref;
    int ref_rc[NSYM];
    char *ref_frag[NSYM];
} many_ctx;

/* One unfaulted predict_many on a fresh service must give the reference:
 * whatever a faulted run left in Redis serves the right answers. */
static void check_served(many_ctx *m)
{
    predict_service *svc = NULL;
    predict_options opt = {.cache = true};
    CHECK_EQ_INT(predict_service_new(&opt, m->reg, &svc), 0);
    if (!svc)
        return;
    predict_result *outs[NSYM] = {0};
    int rcs[NSYM] = {0};
    char whys[NSYM][256];
    CHECK_EQ_INT(predict_many(svc, psyms, NSYM, TF, NULL, now_s, outs, rcs, whys), 0);
    for (int i = 0; i < NSYM; i++) {
        CHECK_EQ_INT(rcs[i], m->ref_rc[i]);
        if (rcs[i] == 0 && outs[i] && m->ref_frag[i])
            CHECK_EQ_STR(outs[i]->fragment, m->ref_frag[i]);
        predict_result_release(outs[i]);
    }
    predict_service_free(svc);
}

static int op_many(void *ctx)
{
    many_ctx *m = ctx;
    bool held = fault_hold();
    if (m->flush)
        redis_flush();
    fault_resume(held);
    predict_service *svc = NULL;
    predict_options opt = {.cache = true};
    int rc = predict_service_new(&opt, m->reg, &svc);
    if (rc)
        return rc;
    predict_result *outs[NSYM] = {0};
    int rcs[NSYM] = {0};
    char whys[NSYM][256];
    rc = m->refresh ? predict_refresh_many(svc, psyms, NSYM, TF, now_s, outs, rcs, whys)
                    : predict_many(svc, psyms, NSYM, TF, NULL, now_s, outs, rcs, whys);
    held = fault_hold();
    bool enomem = false;
    for (int i = 0; rc == 0 && i < NSYM; i++) {
        if (!m->have_ref) {
            m->ref_rc[i] = rcs[i];
            m->ref_frag[i] = rcs[i] == 0 && outs[i] ? strdup(outs[i]->fragment) : NULL;
        } else if (rcs[i] == PD_ENOMEM) {
            enomem = true;
            CHECK(outs[i] == NULL);
        } else if (rcs[i] != m->ref_rc[i]) {
            UNIT_FAIL_("%s: %s (%s), want %s", psyms[i], util_strerror(rcs[i]), whys[i],
                       util_strerror(m->ref_rc[i]));
        } else if (rcs[i] == 0) {
            CHECK(outs[i] && m->ref_frag[i] && strcmp(outs[i]->fragment, m->ref_frag[i]) == 0);
        }
        predict_result_release(outs[i]);
    }
    if (rc == 0 && !m->have_ref) {
        m->have_ref = true;
        /* the reference: answers for the two series with a model and a
         * window, a code for each of the others */
        CHECK_EQ_INT(m->ref_rc[0], 0);
        CHECK_EQ_INT(m->ref_rc[1], 0);
        CHECK_EQ_INT(m->ref_rc[2], PD_ENODATA);
        CHECK_EQ_INT(m->ref_rc[3], PD_ENOMODEL);
        CHECK_EQ_INT(m->ref_rc[4], PD_ESYMBOL);
        CHECK_EQ_INT(m->ref_rc[5], PD_EUNKNOWNSYM);
    }
    predict_service_free(svc);
    if (m->have_ref)
        check_served(m);
    fault_resume(held);
    return rc ? rc : enomem ? PD_ENOMEM : 0;
}

static void many_free(many_ctx *m)
{
    for (int i = 0; i < NSYM; i++)
        free(m->ref_frag[i]);
    memset(m->ref_frag, 0, sizeof m->ref_frag);
    m->have_ref = false;
}

TEST(prediction_pipeline_under_allocation_failures)
{
    fx *f = malloc(sizeof *f);
    if (!db_setup(f))
        UNIT_SKIP("no database, Redis or repository");
    many_ctx m = {.reg = open_registry(), .flush = true};
    CHECK(m.reg != NULL);
    if (m.reg) {
        CHECK(fault_loop("predict_many (Redis empty)", op_many, &m, 0, NULL, 0, FAULT_TOLERATE,
                         1) > 0);
        m.flush = false;
        CHECK(fault_loop("predict_many (answers in Redis)", op_many, &m, 0, NULL, 0,
                         FAULT_TOLERATE, 1) > 0);
        m.refresh = true;
        m.flush = true;
        CHECK(fault_loop("predict_refresh_many", op_many, &m, 0, NULL, 0, FAULT_TOLERATE, 1) >
              0);
    }
    many_free(&m);
    registry_free(m.reg);
    free(f);
    db_teardown();
}

/* Versions 1..6 of one series served one after the other (each pinned in
 * turn, as an operator rolling through versions would) through one
 * service: the process cache keeps at most PREDICT_CACHE_PER_SERIES
 * entries of the series, evicting those with the oldest answers, and
 * asking again for the serving one is a hit on the same object. */
typedef struct versions_ctx {
    registry *reg;
    char *ref[6];
} versions_ctx;

static int pin(registry *reg, uint32_t k)
{
    bool held = fault_hold();
    int rc = registry_pin(reg, "BTCUSDT", TF, k);
    fault_resume(held);
    return rc;
}

static int op_versions(void *ctx)
{
    versions_ctx *v = ctx;
    bool held = fault_hold();
    redis_flush();
    fault_resume(held);
    predict_service *svc = NULL;
    predict_options opt = {.cache = true};
    int rc = predict_service_new(&opt, v->reg, &svc);
    if (rc)
        return rc;
    predict_result *last = NULL;
    for (uint32_t k = 1; k <= 6 && rc == 0; k++) {
        CHECK_EQ_INT(pin(v->reg, k), 0);
        predict_result *p = NULL;
        char why[256] = "";
        rc = predict_one(svc, "BTCUSDT", TF, NULL, now_s + k, &p, why, sizeof why);
        held = fault_hold();
        if (rc == 0) {
            CHECK_EQ_INT(p->version, k);
            if (!v->ref[k - 1])
                v->ref[k - 1] = strdup(p->fragment);
            else
                CHECK_EQ_STR(p->fragment, v->ref[k - 1]);
            predict_result_release(last);
            last = p;
        }
        fault_resume(held);
    }
    if (rc == 0) {
        predict_result *p = NULL;
        char why[256] = "";
        rc = predict_one(svc, "BTCUSDT", TF, NULL, now_s + 60, &p, why, sizeof why);
        held = fault_hold();
        if (rc == 0) {
            CHECK_EQ_STR(p->fragment, v->ref[5]);
            /* the cached object, unless caching it is what failed */
            CHECK(p == last || fault_fired_yet());
            predict_result_release(p);
        }
        fault_resume(held);
    }
    predict_result_release(last);
    predict_service_free(svc);
    held = fault_hold();
    CHECK_EQ_INT(registry_unpin(v->reg, "BTCUSDT", TF), 0);
    fault_resume(held);
    return rc;
}

TEST(process_cache_eviction_under_allocation_failures)
{
    fx *f = malloc(sizeof *f);
    if (!db_setup(f))
        UNIT_SKIP("no database, Redis or repository");
    for (int k = 2; k <= 6; k++) {
        uint32_t ver = 0;
        f->meta.trained_at = 1700000000 + k; /* a different version */
        CHECK_EQ_INT(registry_publish(models_dir, "BTCUSDT", TF, &f->m, &f->s, &ver), 0);
        CHECK_EQ_INT(ver, (uint32_t)k);
    }
    versions_ctx v = {.reg = open_registry()};
    CHECK(v.reg != NULL);
    if (v.reg) {
        /* unfaulted: the serving one asked again is the cached object;
         * the first, evicted, is computed anew when it serves again */
        predict_service *svc = NULL;
        predict_options opt = {.cache = true};
        CHECK_EQ_INT(predict_service_new(&opt, v.reg, &svc), 0);
        predict_result *p[7] = {0};
        char why[256];
        for (uint32_t k = 1; k <= 6; k++) {
            CHECK_EQ_INT(pin(v.reg, k), 0);
            CHECK_EQ_INT(predict_one(svc, "BTCUSDT", TF, NULL, now_s + k, &p[k - 1], why,
                                     sizeof why),
                         0);
        }
        CHECK_EQ_INT(predict_one(svc, "BTCUSDT", TF, NULL, now_s + 60, &p[6], why, sizeof why),
                     0);
        CHECK(p[6] != NULL && p[6] == p[5]);
        CHECK_EQ_INT(pin(v.reg, 1), 0);
        redis_flush(); /* else the replicas' copy in Redis answers */
        predict_result *again = NULL;
        CHECK_EQ_INT(predict_one(svc, "BTCUSDT", TF, NULL, now_s + 60, &again, why, sizeof why),
                     0);
        CHECK(again != NULL && again != p[0]);
        if (again && p[0]) {
            CHECK_EQ_INT(again->version, 1);
            CHECK_EQ_INT(again->prediction_time, now_s + 60);
            CHECK_EQ_INT(again->direction, p[0]->direction);
            CHECK_NEAR(again->entry, p[0]->entry, 0);
        }
        predict_result_release(again);
        for (int k = 0; k < 7; k++)
            predict_result_release(p[k]);
        predict_service_free(svc);
        CHECK(fault_loop("predict_one over 6 versions", op_versions, &v, 0, NULL, 0,
                         FAULT_TOLERATE, 1) > 0);
    }
    for (int k = 0; k < 6; k++)
        free(v.ref[k]);
    registry_free(v.reg);
    free(f);
    db_teardown();
}

/* ------------------------------------------------------------------------
 * The ledger: recording, settling, history.
 */
#define NLEDGER 5

static store_ledger_entry ledger_entry(int i)
{
    store_ledger_entry e = {.symbol = "BTCUSDT",
                            .timeframe = TF,
                            .candle_time = T0 + (int64_t)(100 + 10 * i) * TFS,
                            .version = 1,
                            .direction = i == 4 ? STORE_LEDGER_NO_TRADE
                                         : i % 2  ? STORE_LEDGER_SHORT
                                                  : STORE_LEDGER_LONG,
                            .confidence = 0.6,
                            .probs = {0.6, 0.1, 0.3},
                            .entry = 100,
                            .stop_loss = i % 2 ? 103 : 97,
                            .tp = {i % 2 ? 99 : 101, i % 2 ? 98.5 : 101.5, i % 2 ? 98 : 102},
                            .atr = 2,
                            .horizon = 12};
    if (i == 4) {
        e.probs[0] = 0.2, e.probs[2] = 0.7, e.confidence = 0.7;
        e.entry = e.stop_loss = e.atr = NAN;
        e.tp[0] = e.tp[1] = e.tp[2] = NAN;
    }
    return e;
}

static const char *const ledger_digest_sql =
    "SELECT count(*) || ':' || coalesce(string_agg(concat_ws(',', extract(epoch FROM"
    " candle_time), direction, outcome, realised, hit_time_s, r_multiple, mfe, mae), ';'"
    " ORDER BY candle_time), '') FROM predictions WHERE symbol = 'BTCUSDT'";

typedef struct ledger_ctx {
    store_ledger *db;
    store_ledger_entry e[NLEDGER];
    char settled[4096]; /* the digest after settling (reference) */
    size_t nsettled;
} ledger_ctx;

static int op_record(void *ctx)
{
    ledger_ctx *l = ctx;
    bool ins[NLEDGER] = {0};
    int rc = store_ledger_record_many(l->db, l->e, NLEDGER, ins);
    bool held = fault_hold();
    long long n = unit_sql_int(admin, "SELECT count(*) FROM predictions");
    if (rc == 0) {
        CHECK_EQ_INT(n, NLEDGER);
        for (int i = 0; i < NLEDGER; i++)
            CHECK(ins[i]);
        unit_sql_ok(admin, "DELETE FROM predictions");
    } else {
        CHECK_EQ_INT(n, 0);
    }
    fault_resume(held);
    return rc;
}

static int op_settle(void *ctx)
{
    ledger_ctx *l = ctx;
    bool held = fault_hold();
    /* every row open again (as recorded) */
    unit_sql_ok(admin, "UPDATE predictions SET outcome = NULL, realised = NULL,"
                       " resolved_at = NULL, hit_time_s = NULL, r_multiple = NULL, mfe = NULL,"
                       " mae = NULL");
    char open[4096];
    snprintf(open, sizeof open, "%s", unit_sql_text(admin, ledger_digest_sql));
    fault_resume(held);
    size_t settled = 0;
    int rc = store_ledger_settle(l->db, "BTCUSDT", TF, now_s, predict_resolve, &settled);
    held = fault_hold();
    const char *now_digest = unit_sql_text(admin, ledger_digest_sql);
    if (rc == 0) {
        if (!l->settled[0]) {
            snprintf(l->settled, sizeof l->settled, "%s", now_digest);
            l->nsettled = settled;
        } else {
            CHECK_EQ_STR(now_digest, l->settled);
            CHECK_EQ_INT(settled, l->nsettled);
        }
    } else {
        CHECK_EQ_STR(now_digest, open); /* nothing settled half-way */
    }
    fault_resume(held);
    return rc;
}

typedef struct history_ctx {
    store_ledger *db;
    size_t n;
    char ref[2048];
} history_ctx;

static void history_digest(const store_ledger_row *r, size_t n, char *out, size_t len)
{
    size_t k = 0;
    out[0] = '\0';
    for (size_t i = 0; i < n && k < len; i++)
        k += (size_t)snprintf(out + k, len - k, "%lld %d %d %d %.6g %.6g;",
                              (long long)r[i].e.candle_time, r[i].e.direction, r[i].r.outcome,
                              r[i].r.realised, r[i].r.r_multiple, r[i].r.mfe);
}

static int op_history(void *ctx)
{
    history_ctx *h = ctx;
    store_ledger_query q = {.symbol = "BTCUSDT", .timeframe = TF, .limit = 3};
    store_ledger_row *rows = NULL, *rows2 = NULL;
    size_t n = 0, n2 = 0;
    bool more = false, more2 = true;
    int rc = store_ledger_history(h->db, &q, &rows, &n, &more);
    if (rc == 0 && n == 3) { /* the next page, after the last row */
        store_ledger_cursor a = {.candle_time = rows[2].e.candle_time, .version = 1};
        snprintf(a.symbol, sizeof a.symbol, "BTCUSDT");
        snprintf(a.timeframe, sizeof a.timeframe, TF);
        q.after = &a;
        rc = store_ledger_history(h->db, &q, &rows2, &n2, &more2);
    }
    bool held = fault_hold();
    if (rc == 0) {
        CHECK_EQ_INT(n, 3);
        CHECK(more);
        CHECK_EQ_INT(n2, NLEDGER - 3);
        CHECK(!more2);
        char d[2048], d2[1024];
        history_digest(rows, n, d, sizeof d);
        history_digest(rows2, n2, d2, sizeof d2);
        strncat(d, d2, sizeof d - strlen(d) - 1);
        if (!h->ref[0])
            snprintf(h->ref, sizeof h->ref, "%s", d);
        else
            CHECK_EQ_STR(d, h->ref);
    }
    fault_resume(held);
    free(rows);
    free(rows2);
    return rc;
}

TEST(ledger_under_allocation_failures)
{
    fx *f = malloc(sizeof *f);
    if (!db_setup(f))
        UNIT_SKIP("no database, Redis or repository");
    ledger_ctx l = {0};
    for (int i = 0; i < NLEDGER; i++)
        l.e[i] = ledger_entry(i);
    CHECK_EQ_INT(store_ledger_open(unit_db_url(), &l.db), 0);
    if (l.db) {
        CHECK(fault_loop("store_ledger_record_many", op_record, &l, 0, NULL, 0, 0, 1) > 0);
        bool ins[NLEDGER];
        CHECK_EQ_INT(store_ledger_record_many(l.db, l.e, NLEDGER, ins), 0);
        CHECK(fault_loop("store_ledger_settle", op_settle, &l, 0, NULL, 0, 0, 1) > 0);
        /* the reference settled the four trades; the NO_TRADE row has no
         * levels and is left open */
        CHECK_EQ_INT(l.nsettled, NLEDGER - 1);
        CHECK_EQ_INT(unit_sql_int(admin, "SELECT count(*) FROM predictions"
                                         " WHERE outcome IS NULL AND direction = 'NO_TRADE'"),
                     1);
        history_ctx h = {.db = l.db};
        CHECK(fault_loop("store_ledger_history", op_history, &h, 0, NULL, 0, 0, 1) > 0);
        printf("  history: %s\n", h.ref);
    }
    store_ledger_close(l.db);
    free(f);
    db_teardown();
}

/* ------------------------------------------------------------------------
 * The inference loop: started over the database, it catches up (predicts
 * every series with a serving model, records the predictions in the
 * ledger as the leader, publishes them, hands them to the stream
 * clients). Under a fault in its start, start fails with PD_ENOMEM and
 * leaves nothing behind; under a fault in its thread it must recover by
 * itself (retrying) and the ledger must end up with exactly the reference
 * rows, never a half-written one.
 */
static const char *const loop_digest_sql =
    "SELECT count(*) || ':' || coalesce(string_agg(concat_ws(',', symbol, timeframe,"
    " extract(epoch FROM candle_time), model_version, direction, round(confidence::numeric, 9),"
    " stale_data), ';' ORDER BY symbol), '') FROM predictions";

typedef struct loop_ctx {
    registry *reg;
    char ref[1024];
    atomic_int delivered;
    long wait_ms; /* how long a faulted run may take to recover */
} loop_ctx;

static void loop_deliver(void *arg, const char *symbol, const char *tf, const char *msg,
                         size_t len)
{
    (void)symbol, (void)tf, (void)msg, (void)len;
    loop_ctx *c = arg;
    atomic_fetch_add(&c->delivered, 1);
}

static int op_loop(void *ctx)
{
    loop_ctx *c = ctx;
    bool held = fault_hold();
    unit_sql_ok(admin, "DELETE FROM predictions");
    redis_flush();
    predict_service *svc = NULL;
    predict_options popt = {.cache = true};
    CHECK_EQ_INT(predict_service_new(&popt, c->reg, &svc), 0);
    atomic_store(&c->delivered, 0);
    fault_resume(held);
    if (!svc)
        return PD_EINVAL;
    predict_loop_options opt = {.database_url = unit_db_url(),
                                .redis_url = unit_redis_url(),
                                .deliver = loop_deliver,
                                .deliver_arg = c};
    predict_loop *l = NULL;
    int rc = predict_loop_start(svc, &opt, &l);
    if (rc) {
        held = fault_hold();
        CHECK(l == NULL);
        CHECK_EQ_INT(unit_sql_int(admin, "SELECT count(*) FROM predictions"), 0);
        predict_service_free(svc);
        fault_resume(held);
        return rc;
    }
    /* the rows the reference run wrote (two series predict), waited for
     * with a bound; a persistent fault is lifted once it has struck */
    bool done = false, lifted = false;
    for (long ms = 0; ms < c->wait_ms && !done; ms += 20) {
        if (!lifted && fault_fired_yet() && atomic_load(&fault_persist) && ms > 300) {
            (void)fault_hold(); /* memory is back */
            lifted = true;
        }
        done = unit_sql_int(admin, "SELECT count(*) FROM predictions") == 2 &&
               atomic_load(&c->delivered) >= 2;
        if (!done)
            usleep(20000);
    }
    held = fault_hold(); /* the stop and the checks are not under test */
    predict_loop_state st;
    predict_loop_status(l, &st);
    predict_loop_stop(l);
    const char *d = unit_sql_text(admin, loop_digest_sql);
    if (!c->ref[0]) {
        snprintf(c->ref, sizeof c->ref, "%s", d);
        printf("  loop reference: %s\n", c->ref);
    } else if (!done || strcmp(d, c->ref) != 0) {
        UNIT_FAIL_("the loop did not recover: ledger \"%s\", want \"%s\" (state %s, last error "
                   "\"%s\", %d delivered)",
                   d, c->ref, st.state, st.last_error, atomic_load(&c->delivered));
    }
    predict_service_free(svc);
    (void)held; /* stays held: fault_pass disarms */
    return 0;
}

TEST(inference_loop_under_allocation_failures)
{
    fx *f = malloc(sizeof *f);
    if (!db_setup(f))
        UNIT_SKIP("no database, Redis or repository");
    loop_ctx c = {.reg = open_registry(), .wait_ms = 5000};
    CHECK(c.reg != NULL);
    if (c.reg) {
        const char *s = getenv("FAULT_LOOP_STEP");
        long step = s && atol(s) > 0 ? atol(s) : 1;
        CHECK(fault_loop("predict_loop catch-up", op_loop, &c, 0, NULL, 0, FAULT_TOLERATE,
                         step) > 0);
        CHECK(strncmp(c.ref, "2:BTCUSDT,15m,", 14) == 0);
    }
    registry_free(c.reg);
    free(f);
    db_teardown();
}

/* A series already being trained and a full queue, held still for the
 * test: the queued rows are locked by a second session (the workers'
 * claim skips locked rows, the count does not), and rows are added only
 * while no worker runs. Each submit is refused with PD_EBUSY and its
 * reason, nothing is queued. */
TEST(training_jobs_refuse_a_busy_series_and_a_full_queue)
{
    fx *f = malloc(sizeof *f);
    if (!db_setup(f))
        UNIT_SKIP("no database, Redis or repository");
    unit_sql_ok(admin, "DELETE FROM training_jobs");
    PGconn *holder = unit_db_admin();
    training_jobs *j = NULL;
    training_jobs_config cfg = {.models_dir = models_dir, .database_url = unit_db_url()};
    training_params p;
    training_params_default(&p);
    p.n_symbols = 1;
    snprintf(p.timeframe, sizeof p.timeframe, TF);
    int64_t id = 0;
    char why[200] = "";
    if (!holder)
        goto out;
    CHECK(unit_sql_ok(admin, "INSERT INTO training_jobs (symbol, timeframe, state, params)"
                             " SELECT 'Q' || g || 'USDT', '15m', 'queued', '{}'::jsonb"
                             " FROM generate_series(1, 15) g"));
    CHECK(unit_sql_ok(admin, "INSERT INTO training_jobs (symbol, timeframe, state, params,"
                             " started_at, heartbeat_at, worker) VALUES ('BUSYUSDT', '15m',"
                             " 'running', '{}'::jsonb, now(), now(), 'elsewhere:1')"));
    CHECK(unit_sql_ok(holder, "BEGIN"));
    CHECK(unit_sql_ok(holder, "SELECT id FROM training_jobs WHERE state = 'queued' FOR UPDATE"));
    CHECK_EQ_INT(training_jobs_start(&cfg, &j), 0);
    if (!j)
        goto out;
    /* 15 waiting, BUSYUSDT running on another replica */
    snprintf(p.symbols[0], sizeof p.symbols[0], "BUSYUSDT");
    CHECK_EQ_INT(training_jobs_submit(j, &p, &id, why, sizeof why), PD_EBUSY);
    CHECK(strstr(why, "already queued or running") != NULL);
    training_jobs_stats st;
    training_jobs_stats_get(j, &st);
    CHECK_EQ_INT(st.queued, 15);
    CHECK(!st.running);
    training_jobs_stop(j);
    j = NULL;

    /* 16 waiting: full, whatever the series */
    CHECK(unit_sql_ok(holder, "ROLLBACK"));
    CHECK(unit_sql_ok(admin, "INSERT INTO training_jobs (symbol, timeframe, state, params)"
                             " VALUES ('Q16USDT', '15m', 'queued', '{}'::jsonb)"));
    CHECK(unit_sql_ok(holder, "BEGIN"));
    CHECK(unit_sql_ok(holder, "SELECT id FROM training_jobs WHERE state = 'queued' FOR UPDATE"));
    CHECK_EQ_INT(training_jobs_start(&cfg, &j), 0);
    if (!j)
        goto out;
    snprintf(p.symbols[0], sizeof p.symbols[0], "NEWUSDT");
    why[0] = '\0';
    CHECK_EQ_INT(training_jobs_submit(j, &p, &id, why, sizeof why), PD_EBUSY);
    CHECK(strstr(why, "queue is full") != NULL);
    CHECK_EQ_INT(unit_sql_int(admin, "SELECT count(*) FROM training_jobs"), 17);
    CHECK_EQ_INT(unit_sql_int(admin, "SELECT count(*) FROM training_jobs WHERE state = 'queued'"),
                 16);
    /* ids that cannot exist, and no handle */
    CHECK_EQ_INT(training_jobs_cancel(j, 0), PD_ENOTFOUND);
    training_job_info info;
    CHECK_EQ_INT(training_jobs_get(j, -1, &info), PD_ENOTFOUND);
    CHECK_EQ_INT(training_jobs_submit(NULL, &p, &id, why, sizeof why), PD_EINVAL);
out:
    if (holder) {
        unit_sql_ok(holder, "ROLLBACK");
        PQfinish(holder);
    }
    training_jobs_stop(j);
    unit_sql_ok(admin, "DELETE FROM training_jobs");
    free(f);
    db_teardown();
}

/* ------------------------------------------------------------------------
 * Training from the database with promotion against the serving registry
 * (the server's way: ctx.reg given): candles read from PostgreSQL, the new
 * model compared with the serving one on the test slice, published only
 * when better. Under a fault: PD_ENOMEM (or the run completes the same
 * way as the reference), and the series directory holds version 2 only
 * after a successful publish.
 */
typedef struct train_ctx {
    registry *reg;
    int64_t now;
    bool have_ref;
    training_result ref;
} train_ctx;

static int op_train_db(void *ctx)
{
    train_ctx *t = ctx;
    training_params p;
    training_params_default(&p);
    snprintf(p.symbols[0], sizeof p.symbols[0], "TRNUSDT");
    p.n_symbols = 1;
    snprintf(p.timeframe, sizeof p.timeframe, TF);
    p.now = t->now;
    p.epochs = 3;
    p.seed = 12;
    p.force = true;
    p.promote_if_better = true;
    training_ctx tc = {.models_dir = models_dir, .reg = t->reg};
    training_result *r = calloc(1, sizeof *r);
    if (!r)
        return PD_ENOMEM;
    int rc = training_run(&p, &tc, r);
    bool held = fault_hold();
    char v2[800];
    snprintf(v2, sizeof v2, "%s/TRNUSDT/15m/2", models_dir);
    struct stat st;
    bool has_v2 = stat(v2, &st) == 0;
    if (rc == 0) {
        if (!t->have_ref) {
            t->ref = *r;
            t->have_ref = true;
            printf("  promotion from the database: %s\n", r->message);
        }
        CHECK_EQ_INT(r->outcome, t->ref.outcome);
        CHECK_EQ_INT(r->old_version, 1);
        CHECK_EQ_INT(r->compared, t->ref.compared);
        CHECK_NEAR(r->old_log_loss, t->ref.old_log_loss, 0);
        CHECK_NEAR(r->new_log_loss, t->ref.new_log_loss, 0);
        CHECK_EQ_INT(has_v2, r->outcome == TRAINING_PUBLISHED);
    } else {
        CHECK(!has_v2);
    }
    if (has_v2) { /* back to version 1 serving */
        util_rmtree(v2);
        CHECK_EQ_INT(registry_scan(t->reg, "TRNUSDT", TF), 0);
    }
    fault_resume(held);
    free(r);
    return rc;
}

TEST(training_from_the_database_under_allocation_failures)
{
    fx *f = malloc(sizeof *f);
    if (!db_setup(f))
        UNIT_SKIP("no database, Redis or repository");
    train_ctx t = {.now = 1700000000 + 1200 * TFS};
    features_candle *c = NULL;
    CHECK_EQ_INT(feed_seed_series("TRNUSDT", TF, t.now, 1200, 5, &c), 0);
    CHECK(c && store_upsert_candles("TRNUSDT", TF, c, 1200) == 0);
    free(c);
    uint32_t ver = 0;
    CHECK_EQ_INT(registry_publish(models_dir, "TRNUSDT", TF, &f->m, &f->s, &ver), 0);
    t.reg = open_registry();
    CHECK(t.reg != NULL);
    if (t.reg)
        CHECK(fault_loop("training_run (database, serving registry)", op_train_db, &t, 0, NULL, 0,
                         FAULT_TOLERATE, 1) > 0);
    registry_free(t.reg);
    free(f);
    db_teardown();
}

/* ------------------------------------------------------------------------
 * Redis refusing commands, dropping connections, hung: the cache is a
 * miss (PD_ECACHE from its own functions) and the answers are the
 * database's, the same as the reference.
 */
static bool redis_admin(const char *cmd)
{
    redisReply *r = redisCommand(redis, cmd);
    bool ok = r && r->type != REDIS_REPLY_ERROR;
    if (!ok)
        printf("  redis %s: %s\n", cmd, r ? r->str : redis->errstr);
    if (r)
        freeReplyObject(r);
    return ok;
}

/* The publisher's code once its back-off is over (bounded wait). */
static int publish_when_back(store_pub *pub)
{
    int rc = PD_ECACHE;
    for (int i = 0; i < 60 && rc == PD_ECACHE; i++) {
        rc = store_pub_publish(pub, "faults_ch", "x", 1, NULL);
        if (rc == PD_ECACHE)
            usleep(50000);
    }
    return rc;
}

TEST(redis_refusing_dropping_or_hung_is_a_miss)
{
    fx *f = malloc(sizeof *f);
    if (!db_setup(f))
        UNIT_SKIP("no database, Redis or repository");
    many_ctx m = {.reg = open_registry(), .flush = true};
    store_pub *pub = NULL;
    CHECK_EQ_INT(store_pub_open(unit_redis_url(), &pub), 0);
    if (!m.reg || !pub || op_many(&m) != 0 || !m.have_ref) {
        UNIT_FAIL_("no reference");
        goto out;
    }
    const char *key = "predictd:faults:k";
    const char *keys[2] = {key, "predictd:faults:k2"}, *vals[2] = {"v1", "v2"};
    size_t lens[2] = {2, 2};
    int64_t ttls[2] = {60, 60};
    const char *syms[2] = {"BTCUSDT", "ETHUSDT"}, *msgs[2] = {"a", "b"};
    char *got = NULL;
    size_t glen = 0;
    store_stats s0, s1;
    store_stats_get(&s0);

    /* every command the cache and the publisher send, refused */
    CHECK(redis_admin("ACL SETUSER default -get -set -getrange -del -publish"));
    check_served(&m); /* windows and answers missed in Redis, read from PostgreSQL */
    m.refresh = true;
    m.flush = false;
    CHECK_EQ_INT(op_many(&m), 0); /* refresh: every cache write refused */
    CHECK_EQ_INT(store_cache_set(key, "v", 1, 60), PD_ECACHE);
    CHECK_EQ_INT(store_cache_get(key, &got, &glen), PD_ECACHE);
    CHECK_EQ_INT(store_cache_set_many(keys, vals, lens, ttls, 2), PD_ECACHE);
    CHECK_EQ_INT(store_cache_drop_windows(syms, 2, TF), PD_ECACHE);
    CHECK_EQ_INT(store_cache_drop_window("BTCUSDT", TF), PD_ECACHE);
    CHECK_EQ_INT(store_pub_publish(pub, "faults_ch", "x", 1, NULL), PD_ECACHE);
    /* in its back-off the publisher does not try */
    CHECK_EQ_INT(store_pub_publish_many(pub, "faults_ch", msgs, lens, 2), PD_ECACHE);
    store_stats_get(&s1);
    CHECK(s1.redis_errors > s0.redis_errors);
    CHECK(redis_admin("ACL SETUSER default +@all"));

    /* accepted again: the same connection works */
    CHECK_EQ_INT(store_cache_set(key, "v", 1, 60), 0);
    CHECK_EQ_INT(store_cache_get(key, &got, &glen), 0);
    if (got)
        CHECK_EQ_STR(got, "v");
    free(got);
    got = NULL;
    CHECK_EQ_INT(store_cache_set_many(keys, vals, lens, ttls, 2), 0);
    CHECK_EQ_INT(store_cache_drop_windows(syms, 2, TF), 0);
    CHECK_EQ_INT(publish_when_back(pub), 0);
    CHECK_EQ_INT(store_pub_publish_many(pub, "faults_ch", msgs, lens, 2), 0);

    /* the publisher's pipeline refused half-way: an error reply among them */
    CHECK(redis_admin("ACL SETUSER default -publish"));
    CHECK_EQ_INT(store_pub_publish_many(pub, "faults_ch", msgs, lens, 2), PD_ECACHE);
    CHECK(redis_admin("ACL SETUSER default +@all"));
    CHECK_EQ_INT(publish_when_back(pub), 0);

    /* every connection but the test's dropped */
    CHECK(redis_admin("CLIENT KILL TYPE normal SKIPME yes"));
    CHECK_EQ_INT(store_cache_get(key, &got, &glen), PD_ECACHE);
    CHECK_EQ_INT(store_cache_get(key, &got, &glen), 0); /* connected again */
    free(got);
    got = NULL;
    CHECK_EQ_INT(store_pub_publish(pub, "faults_ch", "x", 1, NULL), PD_ECACHE);
    CHECK_EQ_INT(publish_when_back(pub), 0);
    CHECK(redis_admin("CLIENT KILL TYPE normal SKIPME yes"));
    CHECK_EQ_INT(store_pub_publish_many(pub, "faults_ch", msgs, lens, 2), PD_ECACHE);
    /* back after its back-off, through the pipeline (an empty message too) */
    const char *msgs2[2] = {NULL, "b"};
    size_t lens2[2] = {0, 1};
    int prc = PD_ECACHE;
    for (int i = 0; i < 60 && prc == PD_ECACHE; i++) {
        prc = store_pub_publish_many(pub, "faults_ch", msgs2, lens2, 2);
        if (prc == PD_ECACHE)
            usleep(50000);
    }
    CHECK_EQ_INT(prc, 0);
    CHECK_EQ_INT(store_pub_publish_many(pub, "faults_ch", msgs2, lens2, 0), 0);
    CHECK_EQ_INT(store_pub_publish_many(pub, "faults_ch", NULL, lens2, 2), PD_EINVAL);
    CHECK_EQ_INT(store_pub_publish(pub, "faults_ch", NULL, 3, NULL), PD_EINVAL);
    /* (each failure closed the store's connection: one success opens it
     * again before the next kill) */
    CHECK(redis_admin("CLIENT KILL TYPE normal SKIPME yes"));
    CHECK_EQ_INT(store_cache_set_many(keys, vals, lens, ttls, 2), PD_ECACHE);
    CHECK_EQ_INT(store_cache_set(key, "v", 1, 60), 0);
    CHECK(redis_admin("CLIENT KILL TYPE normal SKIPME yes"));
    CHECK_EQ_INT(store_cache_drop_windows(syms, 2, TF), PD_ECACHE);
    CHECK_EQ_INT(store_cache_set(key, "v", 1, 60), 0);
    CHECK(redis_admin("CLIENT KILL TYPE normal SKIPME yes"));
    m.refresh = false;
    check_served(&m); /* through a dead connection, then none */

    /* hung: every command waits past the store's 200 ms timeout */
    CHECK(redis_admin("CLIENT PAUSE 1500 ALL"));
    check_served(&m);
    CHECK_EQ_INT(store_cache_set(key, "v", 1, 60), PD_ECACHE);
    usleep(1600000); /* the pause ends by itself */
    for (int i = 0; i < 60 && store_cache_set(key, "v", 1, 60) != 0; i++)
        usleep(50000); /* the reconnect back-off */
    CHECK_EQ_INT(store_cache_set(key, "w", 1, 60), 0);
    CHECK_EQ_INT(store_cache_get(key, &got, &glen), 0);
    if (got)
        CHECK_EQ_STR(got, "w");
    free(got);
out:
    store_pub_close(pub);
    many_free(&m);
    registry_free(m.reg);
    free(f);
    db_teardown();
}

/* ------------------------------------------------------------------------
 * The other handles: training jobs, exchange symbols, leader locks,
 * NOTIFY, LISTEN, PUBLISH.
 */
static long long job_count(const char *where)
{
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM training_jobs WHERE symbol = 'JOBUSDT'%s%s",
             where ? " AND " : "", where ? where : "");
    return unit_sql_int(admin, sql);
}

/* A job's life through its own handle: inserted, claimed, read, listed,
 * finished. Whatever step fails, the table must say what the steps before
 * it did and nothing more: no job after a failed insert, a claimed job
 * failing to reach its worker back in the queue, an unfinished update not
 * visible. */
static int op_jobs(void *ctx)
{
    (void)ctx;
    store_jobs_db *db = NULL;
    int rc = store_jobs_open(unit_db_url(), &db);
    if (rc)
        return rc;
    int64_t id = 0, created = 0;
    store_job_row row, got;
    memset(&row, 0, sizeof row);
    memset(&got, 0, sizeof got);
    store_job_row *rows = NULL;
    size_t n = 0;
    bool held;
    rc = store_jobs_insert_ex(db, "JOBUSDT", TF, "{\"epochs\": 3}", "{\"scheduled\": true}", &id,
                              &created);
    held = fault_hold();
    CHECK_EQ_INT(job_count(NULL), rc == 0 ? 1 : 0);
    fault_resume(held);
    if (rc)
        goto out;
    rc = store_jobs_claim(db, "faults-worker", &row);
    held = fault_hold();
    if (rc == 0) {
        CHECK_EQ_INT(row.id, id);
        CHECK_EQ_STR(row.state, "running");
        CHECK_EQ_STR(row.params, "{\"epochs\":3}");
        CHECK_EQ_STR(row.worker, "faults-worker");
        CHECK_EQ_INT(job_count("state = 'running' AND worker = 'faults-worker'"), 1);
    } else {
        CHECK_EQ_INT(job_count("state = 'queued' AND worker IS NULL"), 1);
    }
    fault_resume(held);
    if (rc)
        goto out;
    rc = store_jobs_get(db, id, &got);
    if (rc == 0) {
        CHECK_EQ_STR(got.metrics, "{\"scheduled\":true}");
        CHECK(got.error == NULL);
        store_job_row_cleanup(&got);
    }
    if (rc == 0)
        rc = store_jobs_list(db, 10, &rows, &n);
    if (rc == 0) {
        CHECK_EQ_INT(n, 1);
        if (n == 1)
            CHECK_EQ_INT(rows[0].id, id);
        store_job_rows_free(rows, n);
    }
    if (rc)
        goto out;
    snprintf(row.state, sizeof row.state, "succeeded");
    row.progress = 1;
    row.version = 7;
    row.finished_at = created + 1;
    free(row.error);
    row.error = NULL;
    rc = store_jobs_update(db, &row);
    held = fault_hold();
    CHECK_EQ_INT(job_count("state = 'succeeded' AND version = 7"), rc == 0 ? 1 : 0);
    fault_resume(held);
out:
    store_job_row_cleanup(&row);
    store_jobs_close(db);
    held = fault_hold();
    unit_sql_ok(admin, "DELETE FROM training_jobs WHERE symbol = 'JOBUSDT'");
    fault_resume(held);
    return rc;
}

static int op_markets(void *ctx)
{
    (void)ctx;
    store_markets *h = NULL;
    int rc = store_markets_open(unit_db_url(), &h);
    if (rc)
        return rc;
    store_market m = {.venue = "binance", .symbol = "MKTUSDT", .status = "TRADING",
                      .tick_size = 0.01, .step_size = 0.001};
    rc = store_market_put(h, &m);
    store_market got;
    if (rc == 0)
        rc = store_market_get(h, "binance", "MKTUSDT", &got);
    bool held = fault_hold();
    long long n = unit_sql_int(admin, "SELECT count(*) FROM exchange_symbols"
                                      " WHERE symbol = 'MKTUSDT' AND tick_size = 0.01");
    if (rc == 0) {
        CHECK_EQ_STR(got.status, "TRADING");
        CHECK_NEAR(got.step_size, 0.001, 0);
        CHECK_EQ_INT(n, 1);
    }
    unit_sql_ok(admin, "DELETE FROM exchange_symbols WHERE symbol = 'MKTUSDT'");
    fault_resume(held);
    store_markets_close(h);
    return rc;
}

static int op_lock(void *ctx)
{
    (void)ctx;
    store_lock *l = NULL;
    int rc = store_lock_open(unit_db_url(), 4242, &l);
    if (rc)
        return rc;
    bool held_lock = false;
    rc = store_lock_try(l, &held_lock);
    if (rc == 0) {
        CHECK(held_lock);
        rc = store_lock_check(l, &held_lock);
        CHECK(rc != 0 || held_lock);
    }
    store_lock_close(l);
    bool held = fault_hold();
    CHECK_EQ_INT(unit_sql_int(admin, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                                     " AND objid = 4242"),
                 0);
    fault_resume(held);
    return rc;
}

static int op_notify(void *ctx)
{
    (void)ctx;
    store_notifier *nt = NULL;
    store_listener *ls = NULL;
    store_pub *pub = NULL;
    int rc = store_notifier_open(unit_db_url(), &nt);
    if (rc == 0)
        rc = store_notifier_send(nt, "faults_ch", "hello");
    if (rc == 0)
        rc = store_listen_open(unit_db_url(), "faults_ch", &ls);
    if (rc == 0)
        rc = store_listen_connect(ls);
    if (rc == 0)
        rc = store_pub_open(unit_redis_url(), &pub);
    if (rc == 0)
        rc = store_pub_publish(pub, "faults_ch", "one", 3, NULL);
    if (rc == 0) {
        const char *msgs[2] = {"two", "three"};
        size_t lens[2] = {3, 5};
        rc = store_pub_publish_many(pub, "faults_ch", msgs, lens, 2);
    }
    store_pub_close(pub);
    store_listen_close(ls);
    store_notifier_close(nt);
    return rc;
}

TEST(store_handles_under_allocation_failures)
{
    fx *f = malloc(sizeof *f);
    if (!db_setup(f))
        UNIT_SKIP("no database, Redis or repository");
    CHECK(fault_loop("training job life", op_jobs, NULL, 0, NULL, 0, 0, 1) > 0);
    CHECK(fault_loop("exchange symbols", op_markets, NULL, 0, NULL, 0, 0, 1) > 0);
    CHECK(fault_loop("leader lock", op_lock, NULL, 0, NULL, 0, 0, 1) > 0);
    CHECK(fault_loop("notify, listen, publish", op_notify, NULL, 0, NULL, 0, 0, 1) > 0);

    /* the fields an exchange symbol is refused for */
    store_markets *h = NULL;
    CHECK_EQ_INT(store_markets_open(unit_db_url(), &h), 0);
    store_market ok = {.venue = "binance", .symbol = "MKTUSDT", .status = "TRADING",
                       .tick_size = 0.01, .step_size = 0};
    store_market bad[6] = {ok, ok, ok, ok, ok, ok};
    snprintf(bad[0].venue, sizeof bad[0].venue, "Bin ance");
    snprintf(bad[1].symbol, sizeof bad[1].symbol, "bad!");
    bad[2].status[0] = '\0';
    bad[3].tick_size = 0;
    bad[4].tick_size = INFINITY;
    bad[5].step_size = -1;
    for (int i = 0; i < 6; i++)
        CHECK_EQ_INT(store_market_put(h, &bad[i]), PD_EINVAL);
    CHECK_EQ_INT(store_market_put(NULL, &ok), PD_EINVAL);
    CHECK_EQ_INT(unit_sql_int(admin, "SELECT count(*) FROM exchange_symbols"), 0);
    CHECK_EQ_INT(store_market_put(h, &ok), 0);
    store_markets_close(h);
    free(f);
    db_teardown();
}

/* ------------------------------------------------------------------------
 * Training jobs over the shared table: started, a job submitted, read and
 * listed, the retrain schedule's pass, stopped. Only this thread's
 * allocations fail (the worker claims and fails jobs meanwhile: there are
 * no candles for JOBUSDT, and the retrains are canceled by the stop);
 * a failed submit queues nothing, a snapshot is whole or PD_ENOMEM, and the
 * retrain pass queues exactly the jobs it counts.
 */
typedef struct tjobs_ctx {
    registry *reg;
    char dir[700];
} tjobs_ctx;

static int op_training_jobs(void *ctx)
{
    tjobs_ctx *c = ctx;
    training_jobs_config cfg = {
        .models_dir = c->dir, .reg = c->reg, .database_url = unit_db_url()};
    training_jobs *j = NULL;
    int rc = training_jobs_start(&cfg, &j);
    if (rc) {
        CHECK(j == NULL);
        return rc;
    }
    training_params p;
    training_params_default(&p);
    snprintf(p.symbols[0], sizeof p.symbols[0], "JOBUSDT");
    p.n_symbols = 1;
    snprintf(p.timeframe, sizeof p.timeframe, TF);
    int64_t id = 0;
    char why[200] = "";
    rc = training_jobs_submit(j, &p, &id, why, sizeof why);
    bool held = fault_hold();
    CHECK_EQ_INT(job_count(NULL), rc == 0 ? 1 : 0);
    fault_resume(held);
    if (rc == 0) {
        training_job_info info;
        rc = training_jobs_get(j, id, &info);
        if (rc == 0) {
            CHECK_EQ_STR(info.symbol, "JOBUSDT");
            CHECK(strstr(info.params_json, "JOBUSDT") != NULL);
        }
    }
    if (rc == 0) {
        training_job_info *list = NULL;
        size_t n = 0;
        rc = training_jobs_list(j, 10, &list, &n);
        if (rc == 0) {
            CHECK(n >= 1 && list[0].id == id);
            free(list);
        }
    }
    if (rc == 0) {
        int queued = training_jobs_retrain_all(j);
        held = fault_hold();
        long long rows = unit_sql_int(admin, "SELECT count(*) FROM training_jobs"
                                             " WHERE metrics->>'scheduled' = 'true'");
        if (queued >= 0)
            CHECK_EQ_INT(rows, queued); /* what it says it queued, no more */
        else
            CHECK_EQ_INT(rows, 0);
        fault_resume(held);
        rc = queued < 0 ? queued : 0;
        if (rc == 0) { /* the snapshots say which jobs the schedule queued */
            training_job_info *list = NULL;
            size_t n = 0;
            rc = training_jobs_list(j, 20, &list, &n);
            if (rc == 0) {
                int sched = 0;
                for (size_t k = 0; k < n; k++)
                    sched += list[k].scheduled;
                CHECK_EQ_INT(sched, queued);
                free(list);
            }
        }
    }
    training_jobs_stop(j);
    held = fault_hold();
    unit_sql_ok(admin, "DELETE FROM training_jobs");
    fault_resume(held);
    return rc;
}

TEST(training_jobs_under_allocation_failures)
{
    fx *f = malloc(sizeof *f);
    if (!db_setup(f))
        UNIT_SKIP("no database, Redis or repository");
    tjobs_ctx c = {.reg = open_registry()};
    snprintf(c.dir, sizeof c.dir, "%s", models_dir);
    CHECK(c.reg != NULL);
    if (c.reg) {
        fault_own_thread = true;
        /* the retrain pass skips (and logs) a series it has no memory to
         * read, queues the others and says how many: tolerated, with the
         * count checked against the table */
        CHECK(fault_loop("training jobs", op_training_jobs, &c, 0, NULL, 0, FAULT_TOLERATE, 1) >
              0);
        fault_own_thread = false;
    }
    registry_free(c.reg);
    free(f);
    db_teardown();
}

/* ------------------------------------------------------------------------
 * Database failures between calls, for real.
 */

/* Terminates every backend of the test database but the admin one. */
static long long kill_backends(void)
{
    return unit_sql_int(admin, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                               " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                               " AND backend_type = 'client backend'");
}

TEST(a_terminated_backend_is_replaced)
{
    fx *f = malloc(sizeof *f);
    if (!db_setup(f))
        UNIT_SKIP("no database, Redis or repository");
    registry *reg = open_registry();
    predict_service *svc = NULL;
    predict_options opt = {.cache = false};
    CHECK_EQ_INT(predict_service_new(&opt, reg, &svc), 0);
    store_ledger *led = NULL;
    CHECK_EQ_INT(store_ledger_open(unit_db_url(), &led), 0);
    if (!svc || !led) {
        predict_service_free(svc);
        registry_free(reg);
        free(f);
        db_teardown();
        return;
    }
    predict_result *p = NULL, *q = NULL;
    char why[256] = "";
    CHECK_EQ_INT(predict_one(svc, "BTCUSDT", TF, NULL, now_s, &p, why, sizeof why), 0);
    store_ledger_entry e = ledger_entry(0);
    CHECK_EQ_INT(store_ledger_record(led, &e, NULL), 0);
    store_stats before, after;
    store_stats_get(&before);
    /* the store's and the ledger's connections die between two calls (the
     * windows cached in Redis gone, so the store must ask PostgreSQL) */
    CHECK(kill_backends() >= 2);
    redis_flush();
    CHECK_EQ_INT(predict_one(svc, "BTCUSDT", TF, NULL, now_s, &q, why, sizeof why), 0);
    if (p && q)
        CHECK_EQ_STR(q->fragment, p->fragment);
    store_stats_get(&after);
    CHECK(after.db_reconnects > before.db_reconnects);
    bool ins = true;
    e.candle_time += TFS;
    CHECK_EQ_INT(store_ledger_record(led, &e, &ins), 0);
    CHECK(ins);
    CHECK_EQ_INT(unit_sql_int(admin, "SELECT count(*) FROM predictions"), 2);
    /* and again in the middle of a batch of windows */
    CHECK(kill_backends() >= 2);
    features_candle *outs[2] = {0};
    size_t ns[2] = {0};
    int rcs[2] = {-1, -1};
    const char *syms[2] = {"BTCUSDT", "ETHUSDT"};
    redis_flush();
    CHECK_EQ_INT(store_load_windows(syms, 2, TF, now_s, 100, outs, ns, NULL, rcs), 0);
    CHECK_EQ_INT(rcs[0], 0);
    CHECK_EQ_INT(rcs[1], 0);
    CHECK_EQ_INT(ns[0], 100);
    free(outs[0]);
    free(outs[1]);
    predict_result_release(p);
    predict_result_release(q);
    store_ledger_close(led);
    predict_service_free(svc);
    registry_free(reg);
    free(f);
    db_teardown();
}

/* A table locked by another transaction past the statement_timeout of
 * the URL: the call fails with PD_EDB and writes nothing; the cached
 * answer is served (stale is shown by its staleness); once the lock goes,
 * everything works again. */
TEST(a_locked_table_times_out_and_recovers)
{
    fx *f = malloc(sizeof *f);
    if (!db_setup(f))
        UNIT_SKIP("no database, Redis or repository");
    char url[1024];
    snprintf(url, sizeof url, "%s%coptions=-c%%20statement_timeout%%3D300", unit_db_url(),
             strchr(unit_db_url(), '?') ? '&' : '?');
    CHECK_EQ_INT(store_init(url, unit_redis_url(), true), 0);
    registry *reg = open_registry();
    predict_service *svc = NULL;
    predict_options opt = {.cache = true};
    CHECK_EQ_INT(predict_service_new(&opt, reg, &svc), 0);
    store_ledger *led = NULL;
    CHECK_EQ_INT(store_ledger_open(url, &led), 0);
    PGconn *locker = unit_db_admin();
    if (!svc || !led || !locker) {
        if (locker)
            PQfinish(locker);
        store_ledger_close(led);
        predict_service_free(svc);
        registry_free(reg);
        free(f);
        db_teardown();
        return;
    }
    predict_result *p = NULL, *q = NULL;
    char why[256] = "";
    CHECK_EQ_INT(predict_one(svc, "BTCUSDT", TF, NULL, now_s, &p, why, sizeof why), 0);

    CHECK(unit_sql_ok(locker, "BEGIN"));
    CHECK(unit_sql_ok(locker, "LOCK TABLE candles, predictions IN ACCESS EXCLUSIVE MODE"));
    redis_flush();
    /* a new candle is due: the recheck fails, the cached answer stays */
    int64_t later = now_s + TFS;
    CHECK_EQ_INT(predict_one(svc, "BTCUSDT", TF, NULL, later, &q, why, sizeof why), 0);
    CHECK(q == p);
    predict_result_release(q);
    q = NULL;
    /* nothing cached: the code and the reason */
    why[0] = '\0';
    CHECK_EQ_INT(predict_one(svc, "ETHUSDT", TF, NULL, now_s, &q, why, sizeof why), PD_EDB);
    CHECK(strstr(why, "unavailable") != NULL);
    predict_result *outs[NSYM] = {0};
    int rcs[NSYM];
    char whys[NSYM][256];
    CHECK_EQ_INT(predict_refresh_many(svc, psyms, NSYM, TF, now_s, outs, rcs, whys), 0);
    CHECK_EQ_INT(rcs[0], PD_EDB);
    CHECK_EQ_INT(rcs[1], PD_EDB);
    CHECK(strstr(whys[1], "unavailable") != NULL);
    CHECK_EQ_INT(rcs[4], PD_ESYMBOL);
    for (int i = 0; i < NSYM; i++)
        predict_result_release(outs[i]);
    features_candle *c = wave(5, T0 + NCANDLES * TFS, 100), *r = NULL;
    size_t n = 0;
    CHECK_EQ_INT(store_upsert_candles("BTCUSDT", TF, c, 5), PD_EDB);
    CHECK_EQ_INT(store_load_range("BTCUSDT", TF, 0, 0, now_s, &r, &n), PD_EDB);
    CHECK(r == NULL);
    store_ledger_entry e = ledger_entry(1);
    CHECK_EQ_INT(store_ledger_record(led, &e, NULL), PD_EDB);
    size_t settled = 9;
    CHECK_EQ_INT(store_ledger_settle(led, "BTCUSDT", TF, now_s, predict_resolve, &settled),
                 PD_EDB);
    CHECK(unit_sql_ok(locker, "ROLLBACK"));

    /* nothing was written; everything works again */
    CHECK_EQ_INT(unit_sql_int(admin, "SELECT count(*) FROM predictions"), 0);
    CHECK_EQ_INT(unit_sql_int(admin, "SELECT count(*) FROM candles WHERE symbol = 'BTCUSDT'"),
                 NCANDLES);
    CHECK_EQ_INT(store_upsert_candles("BTCUSDT", TF, c, 5), 0);
    CHECK_EQ_INT(store_load_range("BTCUSDT", TF, 0, 0, later + TFS * 5, &r, &n), 0);
    CHECK_EQ_INT(n, NCANDLES + 5);
    free(r);
    CHECK_EQ_INT(store_ledger_record(led, &e, NULL), 0);
    CHECK_EQ_INT(predict_one(svc, "ETHUSDT", TF, NULL, now_s, &q, why, sizeof why), 0);
    predict_result_release(q);
    free(c);
    PQfinish(locker);
    predict_result_release(p);
    store_ledger_close(led);
    predict_service_free(svc);
    registry_free(reg);
    free(f);
    db_teardown();
}

/* Every handle with a connection of its own, its backend terminated
 * between two calls: the leader lock is lost (PD_EDB, not held) and taken
 * over by a standby; LISTEN reports the loss (PD_EDB) and listens again;
 * NOTIFY, the jobs and the exchange symbols reconnect by themselves. Then
 * their tables locked past a statement_timeout: PD_EDB, nothing written. */
static int notified;
static char notified_payload[64];

static void on_note(const char *payload, void *arg)
{
    (void)arg;
    notified++;
    snprintf(notified_payload, sizeof notified_payload, "%s", payload);
}

/* Notifications read from l within a bounded wait; the consume result. */
static int consume_within(store_listener *l, int want)
{
    int rc = 0;
    for (int i = 0; i < 100 && notified < want; i++) {
        struct pollfd pf = {.fd = store_listen_socket(l), .events = POLLIN};
        if (pf.fd < 0)
            return PD_EDB;
        if (poll(&pf, 1, 50) > 0) {
            rc = store_listen_consume(l, on_note, NULL);
            if (rc < 0)
                return rc;
        }
    }
    return rc;
}

TEST(every_handle_survives_its_backend_terminated)
{
    fx *f = malloc(sizeof *f);
    if (!db_setup(f))
        UNIT_SKIP("no database, Redis or repository");
    store_lock *l1 = NULL, *l2 = NULL;
    store_listener *ls = NULL;
    store_notifier *nt = NULL;
    store_jobs_db *jobs = NULL;
    store_markets *mk = NULL;
    CHECK_EQ_INT(store_lock_open(unit_db_url(), 4343, &l1), 0);
    CHECK_EQ_INT(store_lock_open(unit_db_url(), 4343, &l2), 0);
    CHECK_EQ_INT(store_listen_open(unit_db_url(), "faults_ch2", &ls), 0);
    CHECK_EQ_INT(store_notifier_open(unit_db_url(), &nt), 0);
    CHECK_EQ_INT(store_jobs_open(unit_db_url(), &jobs), 0);
    CHECK_EQ_INT(store_markets_open(unit_db_url(), &mk), 0);
    if (!l1 || !l2 || !ls || !nt || !jobs || !mk)
        goto out;
    bool held = false;
    CHECK_EQ_INT(store_lock_try(l1, &held), 0);
    CHECK(held);
    CHECK_EQ_INT(store_lock_try(l2, &held), 0);
    CHECK(!held); /* another session holds it */
    CHECK_EQ_INT(store_listen_connect(ls), 0);
    CHECK_EQ_INT(store_notifier_send(nt, "faults_ch2", "p1"), 0);
    CHECK_EQ_INT(consume_within(ls, 1), 1);
    CHECK_EQ_STR(notified_payload, "p1");
    int64_t id = 0, created = 0;
    CHECK_EQ_INT(store_jobs_insert(jobs, "JOBUSDT", TF, "{}", &id, &created), 0);
    store_market m = {.venue = "binance", .symbol = "MKTUSDT", .status = "TRADING",
                      .tick_size = 0.5};
    CHECK_EQ_INT(store_market_put(mk, &m), 0);

    CHECK(kill_backends() >= 6);
    held = true;
    CHECK_EQ_INT(store_lock_check(l1, &held), PD_EDB);
    CHECK(!held); /* gone with its session */
    /* the standby's own connection went too: it says so once (never
     * replaced behind its back), then connects and takes over */
    CHECK_EQ_INT(store_lock_try(l2, &held), PD_EDB);
    CHECK_EQ_INT(store_lock_try(l2, &held), 0);
    CHECK(held);
    CHECK_EQ_INT(store_lock_try(l1, &held), 0);
    CHECK(!held);
    CHECK_EQ_INT(consume_within(ls, 2), PD_EDB);
    CHECK_EQ_INT(store_listen_socket(ls), -1);
    CHECK_EQ_INT(store_listen_connect(ls), 0);
    CHECK_EQ_INT(store_notifier_send(nt, "faults_ch2", "p2"), 0); /* reconnected */
    CHECK_EQ_INT(consume_within(ls, 2), 1);
    CHECK_EQ_STR(notified_payload, "p2");
    store_job_row row;
    CHECK_EQ_INT(store_jobs_get(jobs, id, &row), 0);
    if (row.id == id)
        CHECK_EQ_STR(row.state, "queued");
    store_job_row_cleanup(&row);
    store_market got;
    CHECK_EQ_INT(store_market_get(mk, "binance", "MKTUSDT", &got), 0);
    CHECK_NEAR(got.tick_size, 0.5, 0);
    store_lock_close(l1);
    store_lock_close(l2);
    store_jobs_close(jobs);
    store_markets_close(mk);
    l1 = l2 = NULL;
    jobs = NULL;
    mk = NULL;

    /* locked tables past a statement_timeout of 300 ms */
    char url[1024];
    snprintf(url, sizeof url, "%s%coptions=-c%%20statement_timeout%%3D300", unit_db_url(),
             strchr(unit_db_url(), '?') ? '&' : '?');
    CHECK_EQ_INT(store_jobs_open(url, &jobs), 0);
    CHECK_EQ_INT(store_markets_open(url, &mk), 0);
    PGconn *locker = unit_db_admin();
    if (!jobs || !mk || !locker) {
        if (locker)
            PQfinish(locker);
        goto out;
    }
    CHECK(unit_sql_ok(locker, "BEGIN"));
    CHECK(unit_sql_ok(locker, "LOCK TABLE training_jobs, exchange_symbols IN ACCESS EXCLUSIVE MODE"));
    int64_t id2 = 0;
    CHECK_EQ_INT(store_jobs_insert(jobs, "JOB2USDT", TF, "{}", &id2, &created), PD_EDB);
    CHECK_EQ_INT(store_jobs_get(jobs, id, &row), PD_EDB);
    store_job_row *rows = NULL;
    size_t n = 0;
    CHECK_EQ_INT(store_jobs_list(jobs, 5, &rows, &n), PD_EDB);
    m.tick_size = 0.25;
    CHECK_EQ_INT(store_market_put(mk, &m), PD_EDB);
    CHECK_EQ_INT(store_market_get(mk, "binance", "MKTUSDT", &got), PD_EDB);
    CHECK(unit_sql_ok(locker, "ROLLBACK"));
    PQfinish(locker);
    CHECK_EQ_INT(unit_sql_int(admin, "SELECT count(*) FROM training_jobs WHERE symbol = 'JOB2USDT'"),
                 0);
    CHECK_EQ_INT(store_market_get(mk, "binance", "MKTUSDT", &got), 0);
    CHECK_NEAR(got.tick_size, 0.5, 0); /* the refused write did not land */
    CHECK_EQ_INT(store_jobs_list(jobs, 5, &rows, &n), 0);
    CHECK_EQ_INT(n, 1);
    store_job_rows_free(rows, n);
out:
    store_lock_close(l1);
    store_lock_close(l2);
    store_listen_close(ls);
    store_notifier_close(nt);
    store_jobs_close(jobs);
    store_markets_close(mk);
    unit_sql_ok(admin, "DELETE FROM training_jobs");
    free(f);
    db_teardown();
}

int main(int argc, char **argv)
{
    (void)argc;
    fault_main_init(argv);
    fault_track_own = true; /* libpq's and hiredis' buffers are theirs */
    RUN_ONLY(store_candles_under_allocation_failures);
    RUN_ONLY(candle_readers_refuse_bad_arguments);
    RUN_ONLY(migrations_under_allocation_failures);
    RUN_ONLY(broken_migrations_change_nothing);
    RUN_ONLY(prediction_pipeline_under_allocation_failures);
    RUN_ONLY(process_cache_eviction_under_allocation_failures);
    RUN_ONLY(ledger_under_allocation_failures);
    RUN_ONLY(store_handles_under_allocation_failures);
    RUN_ONLY(inference_loop_under_allocation_failures);
    RUN_ONLY(training_jobs_under_allocation_failures);
    RUN_ONLY(training_jobs_refuse_a_busy_series_and_a_full_queue);
    RUN_ONLY(training_from_the_database_under_allocation_failures);
    RUN_ONLY(redis_refusing_dropping_or_hung_is_a_miss);
    RUN_ONLY(a_terminated_backend_is_replaced);
    RUN_ONLY(a_locked_table_times_out_and_recovers);
    RUN_ONLY(every_handle_survives_its_backend_terminated);
    return unit_report();
}
