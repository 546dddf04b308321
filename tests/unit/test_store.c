/*
 * Unit tests for store/candles.c and store/cache.c against the real
 * PostgreSQL and Redis that tests/run starts (PREDICTD_TEST_DATABASE_URL, a
 * fresh database for this file, and PREDICTD_TEST_REDIS_URL). Without them
 * every test skips.
 *
 * The outage test stops and restarts the shared PostgreSQL through
 * server/services.sh (PREDICTD_ROOT, PREDICTD_TEST_SERVICES_DIR) and always
 * starts it again, since later test files need it.
 */
#include <arpa/inet.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/socket.h>
#include <unistd.h>

#include "features/features.h"
#include "feed/feed.h"
#include "store/store.h"
#include "tests/unit/unit.h"
#include "util/util.h"

#define DB_ENV "PREDICTD_TEST_DATABASE_URL"
#define REDIS_ENV "PREDICTD_TEST_REDIS_URL"

/* A fixed "now" (2024-06-10T06:13:20Z, inside an open 1h candle) keeps the
 * tests independent of the clock. */
static const int64_t NOW = 1717999999 + 1;

static const char *db_url(void)
{
    return getenv(DB_ENV);
}

static const char *redis_url(void)
{
    return getenv(REDIS_ENV);
}

static const char *migrations_dir(void)
{
    static char dir[1024];
    const char *root = getenv("PREDICTD_ROOT");
    snprintf(dir, sizeof dir, "%s/db", root && *root ? root : ".");
    return dir;
}

/* A separate libpq connection for checks behind the module's back. */
static PGconn *admin(void)
{
    PGconn *c = PQconnectdb(db_url());
    if (PQstatus(c) != CONNECTION_OK) {
        printf("  admin connection: %s", PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    return c;
}

static long long sql_int(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    long long v = -1;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
        v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    else
        printf("  %s: %s", sql, PQresultErrorMessage(r));
    PQclear(r);
    return v;
}

static bool sql_ok(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok)
        printf("  %s: %s", sql, PQresultErrorMessage(r));
    PQclear(r);
    return ok;
}

/* Back to the normal configuration: test database, Redis, cache on/off. */
static int init_normal(bool cache)
{
    return store_init(db_url(), redis_url(), cache);
}

/* n candles of a series ending with the last closed candle at NOW, with
 * awkward doubles so a lossy decode would show. */
static features_candle *make_candles(const char *tf, size_t n, int64_t end_open, double base)
{
    int64_t tfs = util_tf_seconds(tf);
    features_candle *c = malloc(n * sizeof *c);
    for (size_t i = 0; i < n; i++) {
        double o = base + 0.1 * (double)i + 1.0 / 3.0;
        c[i] = (features_candle){.t = end_open - (int64_t)(n - 1 - i) * tfs,
                                 .open = o,
                                 .high = o * 1.0123456789012345,
                                 .low = o / 1.0098765432109876,
                                 .close = o + 0.05 + 1e-13,
                                 .volume = (double)i * 0.7 + 1e-9};
    }
    return c;
}

static bool same_candles(const features_candle *a, const features_candle *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (a[i].t != b[i].t || a[i].open != b[i].open || a[i].high != b[i].high ||
            a[i].low != b[i].low || a[i].close != b[i].close || a[i].volume != b[i].volume)
            return false;
    return true;
}

static int64_t last_closed(const char *tf, int64_t now)
{
    return util_tf_last_closed_open(now, util_tf_seconds(tf));
}

/* ------------------------------------------------------------------------ */

TEST(migrate_is_idempotent)
{
    UNIT_NEED_ENV(DB_ENV);
    CHECK_EQ_INT(init_normal(false), 0);
    CHECK_EQ_INT(store_migrate(migrations_dir()), 0);
    CHECK_EQ_INT(store_migrate(migrations_dir()), 0);
    CHECK_EQ_INT(store_migrate("/nonexistent/dir"), PD_ENOTFOUND);
    PGconn *c = admin();
    CHECK(c != NULL);
    if (!c)
        return;
    /* every file of db/ once (the count follows the directory) */
    char cmd0[1200];
    snprintf(cmd0, sizeof cmd0, "ls %s/*.sql | wc -l", migrations_dir());
    FILE *ls = popen(cmd0, "r");
    long nfiles = -1;
    if (ls) {
        if (fscanf(ls, "%ld", &nfiles) != 1)
            nfiles = -1;
        pclose(ls);
    }
    CHECK(nfiles >= 3);
    CHECK_EQ_INT(sql_int(c, "SELECT count(*) FROM schema_migrations"), nfiles);
    CHECK_EQ_INT(sql_int(c, "SELECT count(*) FROM information_schema.tables WHERE table_name IN "
                            "('candles', 'predictions', 'training_jobs', 'schema_migrations')"),
                 4);
    /* a new file is applied once, in its own transaction; a broken one is
     * rolled back and not recorded */
    char tmpl[] = "/tmp/store-migr-XXXXXX";
    char *dir = mkdtemp(tmpl);
    CHECK(dir != NULL);
    char path[256], cmd[512];
    snprintf(cmd, sizeof cmd, "cp %s/*.sql %s/", migrations_dir(), dir);
    CHECK_EQ_INT(system(cmd), 0);
    snprintf(path, sizeof path, "%s/900_test.sql", dir);
    CHECK_EQ_INT(util_write_file_atomic(path, "CREATE TABLE t900 (x int);", 26, 0644), 0);
    snprintf(path, sizeof path, "%s/901_broken.sql", dir);
    const char *broken = "CREATE TABLE t901 (x int); SELECT nonsense FROM nowhere;";
    CHECK_EQ_INT(util_write_file_atomic(path, broken, strlen(broken), 0644), 0);
    CHECK_EQ_INT(store_migrate(dir), PD_EDB);
    CHECK_EQ_INT(sql_int(c, "SELECT count(*) FROM schema_migrations"), nfiles + 1);
    CHECK_EQ_INT(sql_int(c, "SELECT count(*) FROM information_schema.tables WHERE table_name IN "
                            "('t900', 't901')"),
                 1);
    unlink(path);
    CHECK_EQ_INT(store_migrate(dir), 0);
    CHECK_EQ_INT(sql_int(c, "SELECT count(*) FROM schema_migrations"), nfiles + 1);
    CHECK(sql_ok(c, "DROP TABLE t900"));
    CHECK(sql_ok(c, "DELETE FROM schema_migrations WHERE name = '900_test.sql'"));
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK_EQ_INT(system(cmd), 0);
    PQfinish(c);
}

TEST(upsert_and_reload_exact)
{
    UNIT_NEED_ENV(DB_ENV);
    CHECK_EQ_INT(init_normal(false), 0);
    const char *tf = "1h";
    size_t n = 500;
    features_candle *in = make_candles(tf, n, last_closed(tf, NOW), 61234.5);
    CHECK_EQ_INT(store_upsert_candles("EXACTUSDT", tf, in, n), 0);
    features_candle *out = NULL;
    size_t got = 0;
    store_window_info info;
    CHECK_EQ_INT(store_load_window("EXACTUSDT", tf, NOW, 300, &out, &got, &info), 0);
    CHECK_EQ_INT(got, 300);
    if (got == 300)
        CHECK(same_candles(out, in + 200, 300));
    CHECK_EQ_INT(info.last_open, in[n - 1].t);
    CHECK_EQ_INT(info.last_close, in[n - 1].t + 3600);
    CHECK_EQ_INT(info.gaps, 0);
    CHECK(!info.from_cache);
    free(out);
    /* more than there is: everything, oldest first */
    CHECK_EQ_INT(store_load_window("EXACTUSDT", tf, NOW, 5000, &out, &got, NULL), 0);
    CHECK_EQ_INT(got, n);
    if (got == n)
        CHECK(same_candles(out, in, n));
    free(out);
    /* range loads for training: [from, to) */
    CHECK_EQ_INT(store_load_range("EXACTUSDT", tf, in[10].t, in[20].t, NOW, &out, &got), 0);
    CHECK_EQ_INT(got, 10);
    if (got == 10)
        CHECK(same_candles(out, in + 10, 10));
    free(out);
    CHECK_EQ_INT(store_load_range("EXACTUSDT", tf, 0, 0, NOW, &out, &got), 0);
    CHECK_EQ_INT(got, n);
    free(out);
    CHECK_EQ_INT(store_load_range("EXACTUSDT", tf, 0, 0, in[99].t + 3600, &out, &got), 0);
    CHECK_EQ_INT(got, 100); /* closed at that "now": the first 100 */
    free(out);
    out = (features_candle *)0x1;
    got = 77;
    CHECK_EQ_INT(store_load_range("NOSUCH", tf, 0, 0, NOW, &out, &got), 0);
    CHECK_EQ_INT(got, 0);
    CHECK(out == NULL);
    free(in);
}

TEST(closed_candle_rule)
{
    UNIT_NEED_ENV(DB_ENV);
    CHECK_EQ_INT(init_normal(false), 0);
    const char *tf = "15m";
    int64_t last = last_closed(tf, NOW);
    /* 10 closed candles plus the one in progress (closes after NOW) */
    features_candle *in = make_candles(tf, 11, last + 900, 100);
    CHECK_EQ_INT(store_upsert_candles("CLOSEDUSDT", tf, in, 11), 0);
    features_candle *out;
    size_t n;
    store_window_info info;
    CHECK_EQ_INT(store_load_window("CLOSEDUSDT", tf, NOW, 50, &out, &n, &info), 0);
    CHECK_EQ_INT(n, 10);
    CHECK_EQ_INT(info.last_open, last);
    CHECK_EQ_INT(out[n - 1].t, last);
    free(out);
    /* exactly at its close time the candle counts as closed */
    CHECK_EQ_INT(store_load_window("CLOSEDUSDT", tf, last + 1800, 50, &out, &n, &info), 0);
    CHECK_EQ_INT(n, 11);
    CHECK_EQ_INT(info.last_close, last + 1800);
    free(out);
    CHECK_EQ_INT(store_load_window("CLOSEDUSDT", tf, last + 1799, 50, &out, &n, &info), 0);
    CHECK_EQ_INT(n, 10);
    free(out);
    /* a series whose only candle is still open has no data yet */
    CHECK_EQ_INT(store_upsert_candles("OPENONLY", tf, in + 10, 1), 0);
    out = NULL;
    CHECK_EQ_INT(store_load_window("OPENONLY", tf, NOW, 50, &out, &n, &info), PD_ENODATA);
    CHECK(out == NULL);
    free(in);
}

TEST(gaps_counted)
{
    UNIT_NEED_ENV(DB_ENV);
    CHECK_EQ_INT(init_normal(false), 0);
    const char *tf = "1m";
    features_candle *in = make_candles(tf, 100, last_closed(tf, NOW), 5);
    /* drop candles 10 (one gap), 50..52 (three) and 98 (one) */
    features_candle keep[100];
    size_t k = 0;
    for (size_t i = 0; i < 100; i++)
        if (i != 10 && !(i >= 50 && i <= 52) && i != 98)
            keep[k++] = in[i];
    CHECK_EQ_INT(store_upsert_candles("GAPUSDT", tf, keep, k), 0);
    features_candle *out;
    size_t n;
    store_window_info info;
    CHECK_EQ_INT(store_load_window("GAPUSDT", tf, NOW, 200, &out, &n, &info), 0);
    CHECK_EQ_INT(n, 95);
    CHECK_EQ_INT(info.gaps, 5);
    free(out);
    /* only the gaps inside the returned window count */
    CHECK_EQ_INT(store_load_window("GAPUSDT", tf, NOW, 45, &out, &n, &info), 0);
    CHECK_EQ_INT(n, 45);
    CHECK_EQ_INT(info.gaps, 1);
    free(out);
    free(in);
}

TEST(upsert_idempotent_and_updates)
{
    UNIT_NEED_ENV(DB_ENV);
    CHECK_EQ_INT(init_normal(false), 0);
    const char *tf = "4h";
    features_candle *in = make_candles(tf, 200, last_closed(tf, NOW), 3000);
    CHECK_EQ_INT(store_upsert_candles("IDEMUSDT", tf, in, 200), 0);
    CHECK_EQ_INT(store_upsert_candles("IDEMUSDT", tf, in, 200), 0);
    int64_t count = -1;
    CHECK_EQ_INT(store_count_candles("IDEMUSDT", tf, &count), 0);
    CHECK_EQ_INT(count, 200);
    /* a revised candle replaces the old values; unsorted input is fine */
    features_candle rev[2] = {in[199], in[0]};
    rev[0].close = rev[0].open * 1.01;
    rev[0].high = rev[0].close * 1.02;
    rev[1].volume = 42;
    CHECK_EQ_INT(store_upsert_candles("IDEMUSDT", tf, rev, 2), 0);
    CHECK_EQ_INT(store_count_candles("IDEMUSDT", tf, &count), 0);
    CHECK_EQ_INT(count, 200);
    features_candle *out;
    size_t n;
    CHECK_EQ_INT(store_load_window("IDEMUSDT", tf, NOW, 200, &out, &n, NULL), 0);
    CHECK_EQ_INT(n, 200);
    CHECK(out[199].close == rev[0].close && out[199].high == rev[0].high);
    CHECK(out[0].volume == 42);
    free(out);
    CHECK_EQ_INT(store_count_candles(NULL, NULL, &count), 0);
    CHECK(count >= 200);
    CHECK_EQ_INT(store_count_candles("IDEMUSDT", NULL, &count), PD_ETIMEFRAME);
    CHECK_EQ_INT(store_upsert_candles("IDEMUSDT", tf, in, 0), 0);
    free(in);
}

TEST(bad_batches_write_nothing)
{
    UNIT_NEED_ENV(DB_ENV);
    CHECK_EQ_INT(init_normal(false), 0);
    const char *tf = "1m";
    size_t n = 25000; /* three chunks: one transaction */
    features_candle *in = make_candles(tf, n, last_closed(tf, NOW), 10);
    int64_t count = -1;
    /* rejected before sending: a NaN, high < low, misaligned, duplicate */
    features_candle saved = in[n - 1];
    in[n - 1].close = NAN;
    CHECK_EQ_INT(store_upsert_candles("BADUSDT", tf, in, n), PD_EINVAL);
    in[n - 1] = saved;
    in[777].high = in[777].low / 2;
    CHECK_EQ_INT(store_upsert_candles("BADUSDT", tf, in, n), PD_EINVAL);
    in[777] = in[776];
    CHECK_EQ_INT(store_upsert_candles("BADUSDT", tf, in, n), PD_EINVAL); /* duplicate */
    in[777].t = in[776].t + 90;
    CHECK_EQ_INT(store_upsert_candles("BADUSDT", tf, in, n), PD_EINVAL); /* misaligned */
    in[777] = saved;
    in[777].t = in[776].t + 60;
    in[777].volume = -1;
    CHECK_EQ_INT(store_upsert_candles("BADUSDT", tf, in, n), PD_EINVAL);
    in[777].volume = 1;
    CHECK_EQ_INT(store_upsert_candles("bad", tf, in, n), PD_ESYMBOL);
    CHECK_EQ_INT(store_upsert_candles("BADUSDT", "2m", in, n), PD_ETIMEFRAME);
    CHECK_EQ_INT(store_count_candles("BADUSDT", tf, &count), 0);
    CHECK_EQ_INT(count, 0);

    /* rejected by the database in the last chunk, after two chunks went
     * in: the transaction takes them back */
    PGconn *c = admin();
    CHECK(c != NULL);
    if (!c) {
        free(in);
        return;
    }
    CHECK(sql_ok(c, "CREATE FUNCTION test_reject() RETURNS trigger LANGUAGE plpgsql AS $$"
                    " BEGIN IF NEW.volume = 4242.25 THEN RAISE EXCEPTION 'test rejects it'"
                    " USING ERRCODE = 'check_violation'; END IF; RETURN NEW; END $$"));
    CHECK(sql_ok(c, "CREATE TRIGGER test_reject BEFORE INSERT ON candles FOR EACH ROW"
                    " EXECUTE FUNCTION test_reject()"));
    in[n - 2].volume = 4242.25;
    CHECK_EQ_INT(store_upsert_candles("BADUSDT", tf, in, n), PD_EINVAL);
    CHECK_EQ_INT(store_count_candles("BADUSDT", tf, &count), 0);
    CHECK_EQ_INT(count, 0);
    CHECK_EQ_INT(sql_int(c, "SELECT count(*) FROM candles WHERE symbol = 'BADUSDT'"), 0);
    CHECK(sql_ok(c, "DROP TRIGGER test_reject ON candles"));
    CHECK(sql_ok(c, "DROP FUNCTION test_reject()"));
    /* the connection is still good, and the fixed batch goes in whole */
    in[n - 2].volume = 1;
    CHECK_EQ_INT(store_upsert_candles("BADUSDT", tf, in, n), 0);
    CHECK_EQ_INT(store_count_candles("BADUSDT", tf, &count), 0);
    CHECK_EQ_INT(count, (int64_t)n);
    PQfinish(c);
    free(in);
}

TEST(big_upsert)
{
    UNIT_NEED_ENV(DB_ENV);
    CHECK_EQ_INT(init_normal(false), 0);
    features_candle *c;
    size_t n = 50000;
    CHECK_EQ_INT(feed_seed_series("BIGUSDT", "1m", NOW, n, 9, &c), 0);
    uint64_t t0 = util_mono_ns();
    CHECK_EQ_INT(store_upsert_candles("BIGUSDT", "1m", c, n), 0);
    printf("  50000 candles upserted in %.0f ms\n", (double)(util_mono_ns() - t0) / 1e6);
    int64_t count;
    CHECK_EQ_INT(store_count_candles("BIGUSDT", "1m", &count), 0);
    CHECK_EQ_INT(count, (int64_t)n);
    features_candle *out;
    size_t got;
    CHECK_EQ_INT(store_load_range("BIGUSDT", "1m", 0, 0, NOW, &out, &got), 0);
    CHECK_EQ_INT(got, n);
    if (got == n)
        CHECK(same_candles(out, c, n));
    free(out);
    free(c);
}

TEST(unknown_series_and_bad_arguments)
{
    UNIT_NEED_ENV(DB_ENV);
    CHECK_EQ_INT(init_normal(false), 0);
    features_candle *out = (features_candle *)0x1;
    size_t n = 99;
    store_window_info info = {.gaps = 77};
    CHECK_EQ_INT(store_load_window("NOPEUSDT", "1h", NOW, 10, &out, &n, &info), PD_EUNKNOWNSYM);
    CHECK(out == (features_candle *)0x1 && n == 99 && info.gaps == 77);
    CHECK_EQ_INT(store_load_window("nope", "1h", NOW, 10, &out, &n, &info), PD_ESYMBOL);
    CHECK_EQ_INT(store_load_window("NOPEUSDT", "7m", NOW, 10, &out, &n, &info), PD_ETIMEFRAME);
    CHECK_EQ_INT(store_load_window("NOPEUSDT", "1h", NOW, 0, &out, &n, &info), PD_EINVAL);
    CHECK_EQ_INT(store_load_window("NOPEUSDT", "1h", NOW, 1000000, &out, &n, &info), PD_ETOOBIG);
    CHECK_EQ_INT(store_load_window("NOPEUSDT", "1h", NOW, 10, NULL, &n, &info), PD_EINVAL);
    CHECK(out == (features_candle *)0x1 && n == 99);
}

TEST(list_symbols)
{
    UNIT_NEED_ENV(DB_ENV);
    CHECK_EQ_INT(init_normal(false), 0);
    const char *syms[] = {"ZECUSDT", "AAAUSDT", "MMMUSDT"};
    features_candle *c = make_candles("5m", 3, last_closed("5m", NOW), 1);
    for (size_t i = 0; i < 3; i++)
        CHECK_EQ_INT(store_upsert_candles(syms[i], "5m", c, 3), 0);
    CHECK_EQ_INT(store_upsert_candles("ONLY1D", "1d", c, 1), PD_EINVAL); /* misaligned for 1d */
    free(c);
    /* Other tests' 1m candles have derived 5m and 1d series too: the list
     * holds these three, in order, among sorted others. */
    char **v;
    size_t n;
    CHECK_EQ_INT(store_list_symbols("5m", &v, &n), 0);
    size_t found = 0;
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            CHECK(strcmp(v[i - 1], v[i]) < 0);
        if (found < 3 && !strcmp(v[i], (const char *[]){"AAAUSDT", "MMMUSDT", "ZECUSDT"}[found]))
            found++;
    }
    CHECK_EQ_INT(found, 3);
    store_strv_free(v, n);
    CHECK_EQ_INT(store_list_symbols("1d", &v, &n), 0);
    for (size_t i = 0; i < n; i++)
        CHECK(strcmp(v[i], "ONLY1D") != 0);
    store_strv_free(v, n);
    CHECK_EQ_INT(store_list_symbols("3d", &v, &n), PD_ETIMEFRAME);
    store_strv_free(NULL, 0);
}

/* 1m candles are the base: 5m..1d are derived in the database, and a
 * derived series refuses direct writes. */
TEST(base_candles_derive_every_timeframe)
{
    UNIT_NEED_ENV(DB_ENV);
    CHECK_EQ_INT(init_normal(false), 0);
    int64_t t0 = last_closed("1d", NOW) - 86400;
    features_candle c[10];
    for (int i = 0; i < 10; i++)
        c[i] = (features_candle){.t = t0 + 60 * i,
                                 .open = 10 + i,
                                 .high = 12 + i,
                                 .low = 9 + i,
                                 .close = 11 + i,
                                 .volume = 2};
    int kind = -1;
    CHECK_EQ_INT(store_series_kind("DERIVUSD", "5m", &kind), 0);
    CHECK_EQ_INT(kind, STORE_SERIES_NONE);
    CHECK_EQ_INT(store_upsert_base_candles("DERIVUSD", c, 10), 0);
    CHECK_EQ_INT(store_series_kind("DERIVUSD", "1m", &kind), 0);
    CHECK_EQ_INT(kind, STORE_SERIES_BASE);
    CHECK_EQ_INT(store_series_kind("DERIVUSD", "4h", &kind), 0);
    CHECK_EQ_INT(kind, STORE_SERIES_DERIVED);
    CHECK_EQ_STR(store_series_kind_name(kind), "derived");
    features_candle *out;
    size_t n;
    CHECK_EQ_INT(store_load_range("DERIVUSD", "5m", 0, 0, NOW, &out, &n), 0);
    CHECK_EQ_INT(n, 2);
    if (n == 2) {
        CHECK(out[0].open == 10 && out[0].high == 16 && out[0].low == 9 && out[0].close == 15);
        CHECK(out[0].volume == 10 && out[1].open == 15 && out[1].close == 20);
    }
    free(out);
    /* the day is forming: no 1d candle until a minute of the next day */
    CHECK_EQ_INT(store_load_range("DERIVUSD", "1d", 0, 0, NOW, &out, &n), 0);
    CHECK_EQ_INT(n, 0);
    free(out);
    features_candle next = {
        .t = t0 + 86400, .open = 30, .high = 30, .low = 30, .close = 30, .volume = 1};
    CHECK_EQ_INT(store_upsert_base_candles("DERIVUSD", &next, 1), 0);
    CHECK_EQ_INT(store_load_range("DERIVUSD", "1d", 0, 0, NOW, &out, &n), 0);
    CHECK_EQ_INT(n, 1);
    if (n == 1)
        CHECK(out[0].open == 10 && out[0].high == 21 && out[0].close == 20 && out[0].volume == 20);
    free(out);
    /* a derived series refuses a direct write */
    features_candle d = {.t = t0, .open = 1, .high = 1, .low = 1, .close = 1, .volume = 1};
    CHECK_EQ_INT(store_upsert_candles("DERIVUSD", "5m", &d, 1), PD_EINVAL);
    /* a correction of one minute corrects its closed buckets */
    c[3].high = 100;
    CHECK_EQ_INT(store_upsert_base_candles("DERIVUSD", &c[3], 1), 0);
    CHECK_EQ_INT(store_load_range("DERIVUSD", "1h", t0, t0 + 3600, NOW, &out, &n), 0);
    CHECK(n == 1 && out[0].high == 100);
    free(out);
    CHECK_EQ_INT(store_series_kind("bad", "5m", &kind), PD_ESYMBOL);
    CHECK_EQ_INT(store_series_kind("DERIVUSD", "7m", &kind), PD_ETIMEFRAME);
    CHECK_EQ_INT(store_series_kind("DERIVUSD", "5m", NULL), PD_EINVAL);
}

TEST(cache_hit_path)
{
    UNIT_NEED_ENV(DB_ENV);
    UNIT_NEED_ENV(REDIS_ENV);
    CHECK_EQ_INT(init_normal(true), 0);
    const char *tf = "1h";
    features_candle *in = make_candles(tf, 2000, last_closed(tf, NOW), 777);
    CHECK_EQ_INT(store_upsert_candles("CACHEUSDT", tf, in, 2000), 0);
    store_stats s0, s1;
    store_stats_get(&s0);
    features_candle *a, *b;
    size_t na, nb;
    store_window_info ia, ib;
    CHECK_EQ_INT(store_load_window("CACHEUSDT", tf, NOW, 300, &a, &na, &ia), 0);
    CHECK(!ia.from_cache);
    CHECK_EQ_INT(store_load_window("CACHEUSDT", tf, NOW, 300, &b, &nb, &ib), 0);
    CHECK(ib.from_cache);
    CHECK_EQ_INT(na, 300);
    CHECK_EQ_INT(nb, 300);
    if (na == 300 && nb == 300) {
        CHECK(same_candles(a, b, 300));
        CHECK(same_candles(b, in + 1700, 300));
    }
    CHECK(ia.last_open == ib.last_open && ia.last_close == ib.last_close && ia.gaps == ib.gaps);
    store_stats_get(&s1);
    CHECK_EQ_INT(s1.redis_hits - s0.redis_hits, 1);
    CHECK_EQ_INT(s1.redis_misses - s0.redis_misses, 1);
    free(a);
    free(b);
    /* a smaller window comes from the same entry; one beyond what is stored
     * goes to the database */
    CHECK_EQ_INT(store_load_window("CACHEUSDT", tf, NOW, 1024, &a, &na, &ia), 0);
    CHECK(ia.from_cache);
    CHECK_EQ_INT(na, 1024);
    free(a);
    CHECK_EQ_INT(store_load_window("CACHEUSDT", tf, NOW, 1500, &a, &na, &ia), 0);
    CHECK(!ia.from_cache);
    CHECK_EQ_INT(na, 1500);
    if (na == 1500)
        CHECK(same_candles(a, in + 500, 1500));
    free(a);
    /* an hour later a new candle is due: the entry no longer serves */
    CHECK_EQ_INT(store_load_window("CACHEUSDT", tf, NOW + 3600, 300, &a, &na, &ia), 0);
    CHECK(!ia.from_cache);
    CHECK_EQ_INT(ia.last_open, in[1999].t); /* the series lags: the last it has */
    free(a);
    /* an earlier "now" neither */
    CHECK_EQ_INT(store_load_window("CACHEUSDT", tf, NOW - 3600, 300, &a, &na, &ia), 0);
    CHECK(!ia.from_cache);
    CHECK_EQ_INT(ia.last_open, in[1998].t);
    free(a);
    /* (that one replaced the entry; the current window is stored again) */
    CHECK_EQ_INT(store_load_window("CACHEUSDT", tf, NOW, 300, &a, &na, &ia), 0);
    CHECK(!ia.from_cache);
    free(a);
    /* an upsert drops the entry, so revised candles show at once */
    CHECK_EQ_INT(store_load_window("CACHEUSDT", tf, NOW, 300, &a, &na, &ia), 0);
    CHECK(ia.from_cache);
    free(a);
    features_candle rev = in[1999];
    rev.volume = 99999;
    CHECK_EQ_INT(store_upsert_candles("CACHEUSDT", tf, &rev, 1), 0);
    CHECK_EQ_INT(store_load_window("CACHEUSDT", tf, NOW, 300, &a, &na, &ia), 0);
    CHECK(!ia.from_cache);
    CHECK(a[na - 1].volume == 99999);
    free(a);
    /* the stored entry expires when the candle in progress closes */
    char cmd[512];
    snprintf(cmd, sizeof cmd, "redis-cli -u '%s' TTL predictd:candles:CACHEUSDT:1h", redis_url());
    FILE *p = popen(cmd, "r");
    long ttl = -5;
    if (p) {
        if (fscanf(p, "%ld", &ttl) != 1)
            ttl = -5;
        pclose(p);
    }
    CHECK_EQ_INT(ttl, in[1999].t + 7200 - NOW + 1);
    /* a short series is stored whole and serves any limit */
    features_candle *few = make_candles(tf, 5, last_closed(tf, NOW), 1);
    CHECK_EQ_INT(store_upsert_candles("FEWUSDT", tf, few, 5), 0);
    CHECK_EQ_INT(store_load_window("FEWUSDT", tf, NOW, 300, &a, &na, &ia), 0);
    CHECK(!ia.from_cache);
    free(a);
    CHECK_EQ_INT(store_load_window("FEWUSDT", tf, NOW, 5000, &a, &na, &ia), 0);
    CHECK(ia.from_cache);
    CHECK_EQ_INT(na, 5);
    if (na == 5)
        CHECK(same_candles(a, few, 5));
    free(a);
    free(few);
    /* cache off: never from Redis */
    CHECK_EQ_INT(init_normal(false), 0);
    CHECK_EQ_INT(store_load_window("CACHEUSDT", tf, NOW, 300, &a, &na, &ia), 0);
    CHECK(!ia.from_cache);
    free(a);
    free(in);
}

TEST(multi_symbol_windows)
{
    UNIT_NEED_ENV(DB_ENV);
    UNIT_NEED_ENV(REDIS_ENV);
    CHECK_EQ_INT(init_normal(true), 0);
    const char *tf = "15m";
    const char *syms[] = {"MULTIA", "bad!", "MULTIB", "MULTINONE", "MULTIC"};
    features_candle *in[3];
    for (int i = 0; i < 3; i++) {
        in[i] = make_candles(tf, 400, last_closed(tf, NOW), 10.0 * (i + 1));
        const char *s = i == 0 ? "MULTIA" : i == 1 ? "MULTIB" : "MULTIC";
        CHECK_EQ_INT(store_upsert_candles(s, tf, in[i], 400), 0);
    }
    for (int round = 0; round < 2; round++) {
        features_candle *outs[5] = {0};
        size_t ns[5] = {0};
        store_window_info infos[5];
        int rcs[5];
        CHECK_EQ_INT(store_load_windows(syms, 5, tf, NOW, 100, outs, ns, infos, rcs), 0);
        CHECK_EQ_INT(rcs[0], 0);
        CHECK_EQ_INT(rcs[1], PD_ESYMBOL);
        CHECK_EQ_INT(rcs[2], 0);
        CHECK_EQ_INT(rcs[3], PD_EUNKNOWNSYM);
        CHECK_EQ_INT(rcs[4], 0);
        CHECK(outs[1] == NULL && outs[3] == NULL);
        int k = 0;
        for (int i = 0; i < 5; i++) {
            if (rcs[i])
                continue;
            CHECK_EQ_INT(ns[i], 100);
            if (ns[i] == 100)
                CHECK(same_candles(outs[i], in[k] + 300, 100));
            CHECK(infos[i].from_cache == (round == 1));
            CHECK_EQ_INT(infos[i].last_open, last_closed(tf, NOW));
            free(outs[i]);
            k++;
        }
    }
    int rcs[1];
    features_candle *outs[1];
    size_t ns[1];
    CHECK_EQ_INT(store_load_windows(syms, 1, "9m", NOW, 100, outs, ns, NULL, rcs),
                 PD_ETIMEFRAME);
    CHECK_EQ_INT(store_load_windows(syms, 1, tf, NOW, 100, NULL, ns, NULL, rcs), PD_EINVAL);
    CHECK_EQ_INT(store_load_windows(syms, 0, tf, NOW, 100, NULL, NULL, NULL, NULL), 0);
    /* without Redis the same answers come from the database */
    CHECK_EQ_INT(init_normal(false), 0);
    features_candle *o5[5] = {0};
    size_t n5[5];
    int r5[5];
    CHECK_EQ_INT(store_load_windows(syms, 5, tf, NOW, 100, o5, n5, NULL, r5), 0);
    CHECK(r5[0] == 0 && r5[1] == PD_ESYMBOL && r5[2] == 0 && r5[3] == PD_EUNKNOWNSYM && r5[4] == 0);
    for (int i = 0; i < 5; i++)
        free(o5[i]);
    for (int i = 0; i < 3; i++)
        free(in[i]);
}

TEST(generic_cache_values)
{
    UNIT_NEED_ENV(REDIS_ENV);
    CHECK_EQ_INT(store_init(NULL, redis_url(), true), 0);
    char *v = NULL;
    size_t len = 0;
    const char val[] = "{\"a\":1}\0binary";
    CHECK_EQ_INT(store_cache_set("predictd:pred:BTCUSDT:15m:v3", val, sizeof val, 60), 0);
    CHECK_EQ_INT(store_cache_get("predictd:pred:BTCUSDT:15m:v3", &v, &len), 0);
    CHECK_EQ_INT(len, sizeof val);
    CHECK(v && memcmp(v, val, sizeof val) == 0);
    free(v);
    CHECK_EQ_INT(store_cache_get("predictd:pred:none", &v, &len), PD_ENOTFOUND);
    CHECK_EQ_INT(store_cache_get("other:key", &v, &len), PD_EINVAL);
    CHECK_EQ_INT(store_cache_set("predictd:x", "a", 1, 0), PD_EINVAL);
    CHECK_EQ_INT(store_cache_set("predictd:x with space", "", 0, 5), 0);
    CHECK_EQ_INT(store_cache_get("predictd:x with space", &v, &len), 0);
    CHECK_EQ_INT(len, 0);
    free(v);
    CHECK_EQ_INT(store_cache_drop_window("BTCUSDT", "1h"), 0);
    CHECK_EQ_INT(store_cache_drop_window("btc", "1h"), PD_ESYMBOL);
    /* no database: store calls fail cleanly */
    int64_t count;
    CHECK_EQ_INT(store_count_candles(NULL, NULL, &count), PD_EDB);
    features_candle *out;
    size_t n;
    CHECK_EQ_INT(store_load_window("BTCUSDT", "1h", NOW, 10, &out, &n, NULL), PD_EDB);
    /* cache off or no Redis: PD_ECACHE */
    CHECK_EQ_INT(store_init(NULL, redis_url(), false), 0);
    CHECK_EQ_INT(store_cache_get("predictd:pred:BTCUSDT:15m:v3", &v, &len), PD_ECACHE);
    CHECK_EQ_INT(store_init(NULL, NULL, true), 0);
    CHECK_EQ_INT(store_cache_set("predictd:a", "b", 1, 5), PD_ECACHE);
    /* malformed URLs */
    CHECK_EQ_INT(store_init(NULL, "http://x:1/0", true), PD_EINVAL);
    CHECK_EQ_INT(store_init(NULL, "redis://:99999/0", true), PD_EINVAL);
    CHECK_EQ_INT(store_init(NULL, "redis://host:12/x", true), PD_EINVAL);
    CHECK_EQ_INT(store_init("host=x port=y bogus_option=1", NULL, true), PD_EINVAL);
    CHECK_EQ_INT(store_init(NULL, "redis://[::1]:6379/2", true), 0);
    CHECK_EQ_INT(store_init(NULL, "redis://user:secret@localhost", true), 0);
}

/* A port nothing listens on. */
static int closed_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) ||
        getsockname(s, (struct sockaddr *)&a, &len)) {
        if (s >= 0)
            close(s);
        return 1;
    }
    close(s);
    return ntohs(a.sin_port);
}

TEST(redis_down_served_from_db)
{
    UNIT_NEED_ENV(DB_ENV);
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/0", closed_port());
    CHECK_EQ_INT(store_init(db_url(), url, true), 0);
    features_candle *in = make_candles("1h", 50, last_closed("1h", NOW), 9);
    CHECK_EQ_INT(store_upsert_candles("NOREDIS", "1h", in, 50), 0);
    store_stats s0, s1;
    store_stats_get(&s0);
    for (int i = 0; i < 3; i++) {
        features_candle *out;
        size_t n;
        store_window_info info;
        CHECK_EQ_INT(store_load_window("NOREDIS", "1h", NOW, 20, &out, &n, &info), 0);
        CHECK_EQ_INT(n, 20);
        CHECK(!info.from_cache);
        if (n == 20)
            CHECK(same_candles(out, in + 30, 20));
        free(out);
    }
    char *v;
    size_t len;
    CHECK_EQ_INT(store_cache_get("predictd:x", &v, &len), PD_ECACHE);
    store_stats_get(&s1);
    CHECK(s1.redis_errors - s0.redis_errors >= 3);
    CHECK_EQ_INT(s1.redis_hits - s0.redis_hits, 0);
    free(in);
}

/* Counts the notifications with payload `extra` on a LISTENing connection,
 * waiting at most ms milliseconds or until `enough` have arrived. */
static int notifications(PGconn *c, const char *extra, int ms, int enough)
{
    int count = 0;
    uint64_t end = util_mono_ns() + (uint64_t)ms * 1000000u;
    for (;;) {
        PGnotify *nt;
        PQconsumeInput(c);
        while ((nt = PQnotifies(c))) {
            if (strcmp(nt->relname, "predictd_candles") == 0 && strcmp(nt->extra, extra) == 0)
                count++;
            PQfreemem(nt);
        }
        uint64_t now = util_mono_ns();
        if (now >= end || count >= enough)
            return count;
        struct pollfd pfd = {.fd = PQsocket(c), .events = POLLIN};
        poll(&pfd, 1, (int)((end - now) / 1000000u) + 1);
    }
}

TEST(notify_trigger)
{
    UNIT_NEED_ENV(DB_ENV);
    CHECK_EQ_INT(init_normal(false), 0);
    PGconn *c = admin();
    CHECK(c != NULL);
    if (!c)
        return;
    CHECK(sql_ok(c, "LISTEN predictd_candles"));
    features_candle *in;
    CHECK_EQ_INT(feed_seed_series("NOTIFYUSDT", "5m", NOW, 5000, 3, &in), 0);
    CHECK_EQ_INT(store_upsert_candles("NOTIFYUSDT", "5m", in, 5000), 0);
    /* one notification for 5000 rows: wait for it, then a while for more */
    CHECK_EQ_INT(notifications(c, "NOTIFYUSDT:5m", 5000, 1), 1);
    CHECK_EQ_INT(notifications(c, "NOTIFYUSDT:5m", 300, 1), 0);
    /* unchanged rows change nothing and notify nobody */
    CHECK_EQ_INT(store_upsert_candles("NOTIFYUSDT", "5m", in, 5000), 0);
    CHECK_EQ_INT(notifications(c, "NOTIFYUSDT:5m", 300, 1), 0);
    /* an update notifies; a multi-chunk upsert still notifies once */
    in[4999].volume += 1;
    CHECK_EQ_INT(store_upsert_candles("NOTIFYUSDT", "5m", in + 4990, 10), 0);
    CHECK_EQ_INT(notifications(c, "NOTIFYUSDT:5m", 5000, 1), 1);
    features_candle *big;
    CHECK_EQ_INT(feed_seed_series("NOTIFYUSDT", "1m", NOW, 25000, 3, &big), 0);
    CHECK_EQ_INT(store_upsert_candles("NOTIFYUSDT", "1m", big, 25000), 0);
    CHECK_EQ_INT(notifications(c, "NOTIFYUSDT:1m", 5000, 1), 1);
    CHECK_EQ_INT(notifications(c, "NOTIFYUSDT:1m", 300, 1), 0);
    free(big);
    PQfinish(c);
    free(in);
}

/* The statement_timeout, work_mem and application_name of the module's
 * own session, recorded by a test trigger during an upsert. */
static void module_session(char *timeout, char *work_mem, char *app)
{
    strcpy(timeout, "?");
    strcpy(work_mem, "?");
    strcpy(app, "?");
    PGconn *c = admin();
    if (!c)
        return;
    sql_ok(c, "CREATE TABLE session_seen (t text, w text, a text)");
    sql_ok(c, "CREATE OR REPLACE FUNCTION see_session() RETURNS trigger LANGUAGE plpgsql AS $$"
              " BEGIN INSERT INTO session_seen VALUES (current_setting('statement_timeout'),"
              " current_setting('work_mem'), current_setting('application_name'));"
              " RETURN NULL; END $$");
    sql_ok(c, "CREATE OR REPLACE TRIGGER see_session AFTER INSERT ON candles"
              " FOR EACH STATEMENT EXECUTE FUNCTION see_session()");
    features_candle one = {.t = last_closed("1d", NOW), 1, 1, 1, 1, 1};
    if (store_upsert_candles("SESSIONUSDT", "1d", &one, 1) == 0) {
        PGresult *r = PQexec(c, "SELECT t, w, a FROM session_seen");
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
            snprintf(timeout, 32, "%s", PQgetvalue(r, 0, 0));
            snprintf(work_mem, 32, "%s", PQgetvalue(r, 0, 1));
            snprintf(app, 32, "%s", PQgetvalue(r, 0, 2));
        }
        PQclear(r);
    }
    sql_ok(c, "DROP TRIGGER see_session ON candles");
    sql_ok(c, "DROP FUNCTION see_session()");
    sql_ok(c, "DROP TABLE session_seen");
    PQfinish(c);
}

TEST(session_settings)
{
    UNIT_NEED_ENV(DB_ENV);
    char t[32], w[32], a[32];
    /* the URI form: our statement_timeout, even right after a migration
     * (which lifts it for itself) on the same connection */
    CHECK_EQ_INT(init_normal(false), 0);
    CHECK_EQ_INT(store_migrate(migrations_dir()), 0);
    module_session(t, w, a);
    CHECK_EQ_STR(t, "5s");
    CHECK_EQ_STR(a, "predictd");

    /* the key=value form of the same database, with options and an
     * application name of its own: the user's settings win */
    char *err = NULL;
    PQconninfoOption *o = PQconninfoParse(db_url(), &err);
    CHECK(o != NULL);
    if (!o) {
        PQfreemem(err);
        return;
    }
    char kv[1024] = "options='-c statement_timeout=7s -c work_mem=7777kB' application_name=kvtest";
    for (PQconninfoOption *p = o; p->keyword; p++)
        if (p->val && *p->val && strcmp(p->keyword, "options") != 0) {
            size_t l = strlen(kv);
            snprintf(kv + l, sizeof kv - l, " %s='%s'", p->keyword, p->val);
        }
    PQconninfoFree(o);
    CHECK_EQ_INT(store_init(kv, NULL, true), 0);
    module_session(t, w, a);
    CHECK_EQ_STR(t, "7s");
    CHECK_EQ_STR(w, "7777kB");
    CHECK_EQ_STR(a, "kvtest");
    store_thread_cleanup();
}

static void *thread_loads(void *arg)
{
    int *ok = arg;
    for (int i = 0; i < 50; i++) {
        features_candle *out;
        size_t n;
        if (store_load_window("EXACTUSDT", "1h", NOW, 100, &out, &n, NULL) == 0 && n == 100)
            (*ok)++;
        else
            break;
        free(out);
    }
    store_thread_cleanup();
    return NULL;
}

static void *thread_loads_no_cleanup(void *arg)
{
    features_candle *out;
    size_t n;
    if (store_load_window("EXACTUSDT", "1h", NOW, 10, &out, &n, NULL) == 0) {
        free(out);
        (*(int *)arg)++;
    }
    return NULL; /* the thread-exit destructor closes the connection */
}

TEST(threads_have_own_connections)
{
    UNIT_NEED_ENV(DB_ENV);
    UNIT_NEED_ENV(REDIS_ENV);
    CHECK_EQ_INT(init_normal(true), 0);
    pthread_t th[4];
    int ok[4] = {0};
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, i == 3 ? thread_loads_no_cleanup : thread_loads, &ok[i]);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    CHECK_EQ_INT(ok[0] + ok[1] + ok[2], 150);
    CHECK_EQ_INT(ok[3], 1);
}

static int services(const char *what)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s/server/services.sh' %s '%s' --fast >/dev/null 2>&1",
             getenv("PREDICTD_ROOT"), what, getenv("PREDICTD_TEST_SERVICES_DIR"));
    return system(cmd);
}

TEST(database_down_and_back)
{
    UNIT_NEED_ENV(DB_ENV);
    UNIT_NEED_ENV("PREDICTD_ROOT");
    UNIT_NEED_ENV("PREDICTD_TEST_SERVICES_DIR");
    CHECK_EQ_INT(init_normal(false), 0);
    features_candle *out;
    size_t n;
    store_stats s0, s1;
    /* a working connection with its statements prepared */
    CHECK_EQ_INT(store_load_window("EXACTUSDT", "1h", NOW, 10, &out, &n, NULL), 0);
    free(out);

    /* restart under the connection's feet: the next call reconnects,
     * prepares again, and succeeds */
    store_stats_get(&s0);
    CHECK_EQ_INT(services("pg-stop"), 0);
    CHECK_EQ_INT(services("pg-start"), 0);
    CHECK_EQ_INT(store_load_window("EXACTUSDT", "1h", NOW, 10, &out, &n, NULL), 0);
    CHECK_EQ_INT(n, 10);
    free(out);
    store_stats_get(&s1);
    CHECK_EQ_INT(s1.db_reconnects - s0.db_reconnects, 1);

    /* down: clean PD_EDB, no crash, for every kind of call */
    CHECK_EQ_INT(services("pg-stop"), 0);
    int rc = store_load_window("EXACTUSDT", "1h", NOW, 10, &out, &n, NULL);
    int rc2 = store_load_window("EXACTUSDT", "1h", NOW, 10, &out, &n, NULL);
    int64_t count;
    int rc3 = store_count_candles(NULL, NULL, &count);
    features_candle one = {.t = last_closed("1h", NOW), 1, 1, 1, 1, 1};
    int rc4 = store_upsert_candles("DOWNUSDT", "1h", &one, 1);
    store_stats_get(&s1);
    /* whatever happens above, PostgreSQL must come back for later tests */
    int started = services("pg-start");
    CHECK_EQ_INT(started, 0);
    CHECK_EQ_INT(rc, PD_EDB);
    CHECK_EQ_INT(rc2, PD_EDB);
    CHECK_EQ_INT(rc3, PD_EDB);
    CHECK_EQ_INT(rc4, PD_EDB);
    CHECK(s1.db_errors > s0.db_errors);

    /* back: the next calls succeed (after the short reconnect back-off) */
    rc = PD_EDB;
    for (int i = 0; i < 100 && rc == PD_EDB; i++) {
        rc = store_load_window("EXACTUSDT", "1h", NOW, 10, &out, &n, NULL);
        if (rc == PD_EDB)
            usleep(100000);
    }
    CHECK_EQ_INT(rc, 0);
    if (rc == 0) {
        CHECK_EQ_INT(n, 10);
        free(out);
    }
    CHECK_EQ_INT(store_upsert_candles("DOWNUSDT", "1h", &one, 1), 0);
}

TEST(redis_down_and_back)
{
    UNIT_NEED_ENV(DB_ENV);
    UNIT_NEED_ENV(REDIS_ENV);
    UNIT_NEED_ENV("PREDICTD_ROOT");
    UNIT_NEED_ENV("PREDICTD_TEST_SERVICES_DIR");
    CHECK_EQ_INT(init_normal(true), 0);
    features_candle *a;
    size_t n;
    store_window_info info;
    /* a live context with the window stored */
    CHECK_EQ_INT(store_load_window("EXACTUSDT", "1h", NOW, 100, &a, &n, &info), 0);
    free(a);
    CHECK_EQ_INT(store_load_window("EXACTUSDT", "1h", NOW, 100, &a, &n, &info), 0);
    CHECK(info.from_cache);
    free(a);
    store_stats s0, s1;
    store_stats_get(&s0);
    CHECK_EQ_INT(services("redis-stop"), 0);
    int rc = store_load_window("EXACTUSDT", "1h", NOW, 100, &a, &n, &info);
    bool from_cache = rc == 0 && info.from_cache;
    if (rc == 0)
        free(a);
    CHECK_EQ_INT(services("redis-start"), 0);
    CHECK_EQ_INT(rc, 0);
    CHECK(!from_cache);
    store_stats_get(&s1);
    CHECK(s1.redis_errors > s0.redis_errors);
    /* back (after the reconnect back-off): stored again, then served */
    from_cache = false;
    for (int i = 0; i < 100 && !from_cache; i++) {
        rc = store_load_window("EXACTUSDT", "1h", NOW, 100, &a, &n, &info);
        if (rc)
            break;
        from_cache = info.from_cache;
        free(a);
        if (!from_cache)
            usleep(50000);
    }
    CHECK_EQ_INT(rc, 0);
    CHECK(from_cache);
}

TEST(cache_serves_while_database_down)
{
    UNIT_NEED_ENV(DB_ENV);
    UNIT_NEED_ENV(REDIS_ENV);
    UNIT_NEED_ENV("PREDICTD_ROOT");
    UNIT_NEED_ENV("PREDICTD_TEST_SERVICES_DIR");
    CHECK_EQ_INT(init_normal(true), 0);
    features_candle *a, *b;
    size_t na, nb;
    store_window_info info;
    CHECK_EQ_INT(store_load_window("EXACTUSDT", "1h", NOW, 100, &a, &na, &info), 0);
    CHECK_EQ_INT(services("pg-stop"), 0);
    int rc = store_load_window("EXACTUSDT", "1h", NOW, 100, &b, &nb, &info);
    int rc2 = store_load_window("NOTCACHED", "1h", NOW, 100, &b, &nb, NULL);
    CHECK_EQ_INT(services("pg-start"), 0);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_INT(rc2, PD_EDB);
    if (rc == 0) {
        CHECK(info.from_cache);
        CHECK(nb == na && same_candles(a, b, na));
        free(b);
    }
    free(a);
}

int main(void)
{
    RUN(migrate_is_idempotent);
    RUN(upsert_and_reload_exact);
    RUN(closed_candle_rule);
    RUN(gaps_counted);
    RUN(upsert_idempotent_and_updates);
    RUN(bad_batches_write_nothing);
    RUN(big_upsert);
    RUN(unknown_series_and_bad_arguments);
    RUN(list_symbols);
    RUN(base_candles_derive_every_timeframe);
    RUN(cache_hit_path);
    RUN(multi_symbol_windows);
    RUN(generic_cache_values);
    RUN(redis_down_served_from_db);
    RUN(notify_trigger);
    RUN(session_settings);
    RUN(threads_have_own_connections);
    RUN(database_down_and_back);
    RUN(redis_down_and_back);
    RUN(cache_serves_while_database_down);
    store_shutdown();
    return unit_report();
}
