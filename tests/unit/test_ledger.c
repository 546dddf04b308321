/*
 * Unit tests for features/ledger.c.
 *
 * The resolver (predict_resolve) on hand-built candles: target
 * first, stop first, stop and target in one candle, TP3, expiry with and
 * without a take-profit, an incomplete horizon, gaps, the SHORT mirror,
 * NO_TRADE rows and their realised class (including a tie), and the
 * argument checks.
 *
 * Then the SQL side against the real PostgreSQL of tests/run
 * (PREDICTD_TEST_DATABASE_URL; skipped without it): idempotent recording,
 * settling written to the table, figures equal to the table's rows, history
 * pages, LISTEN with a lost connection, and PUBLISH to the real Redis.
 */
#include <hiredis/hiredis.h>
#include <arpa/inet.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/socket.h>
#include <unistd.h>

#include "features/features.h"
#include "predict/predict.h"
#include "training/training.h"
#include "store/store.h"
#include "tests/unit/unit.h"
#include "tests/unit/fixtures.h"
#include "util/util.h"

#define DB_ENV UNIT_DB_ENV
#define REDIS_ENV UNIT_REDIS_ENV

/* 2024-06-10T06:00:00Z: aligned to every timeframe up to 1h. */
static const int64_t T0 = 1717999200;
static const int64_t TF = 60;

/* A LONG entry at 100, stop 98 (R = 2), targets 102, 104, 106. */
static store_ledger_entry long_entry(uint32_t horizon)
{
    store_ledger_entry e = {.symbol = "TESTUSDT",
                               .timeframe = "1m",
                               .candle_time = T0,
                               .version = 1,
                               .direction = STORE_LEDGER_LONG,
                               .confidence = 0.6,
                               .probs = {0.6, 0.1, 0.3},
                               .entry = 100,
                               .stop_loss = 98,
                               .tp = {102, 104, 106},
                               .atr = 4.0 / 3.0,
                               .horizon = horizon};
    return e;
}

/* Its mirror: SHORT at 100, stop 102, targets 98, 96, 94. */
static store_ledger_entry short_entry(uint32_t horizon)
{
    store_ledger_entry e = long_entry(horizon);
    e.direction = STORE_LEDGER_SHORT;
    e.probs[0] = 0.1;
    e.probs[1] = 0.6;
    e.stop_loss = 102;
    e.tp[0] = 98;
    e.tp[1] = 96;
    e.tp[2] = 94;
    return e;
}

/* Candle j after T0 with the given range; open and close mid-range. */
static features_candle at(int j, double high, double low, double close)
{
    return (features_candle){.t = T0 + j * TF,
                             .open = (high + low) / 2,
                             .high = high,
                             .low = low,
                             .close = close,
                             .volume = 1};
}

/* Resolves with the horizon complete (the series has a candle past it). */
static store_ledger_resolution resolve(const store_ledger_entry *e, const features_candle *c,
                                          size_t n)
{
    store_ledger_resolution r;
    memset(&r, 0xA5, sizeof r);
    int rc = predict_resolve(e, TF, c, n, T0 + 1000 * TF, &r);
    if (rc != 0)
        printf("  resolve returned %d\n", rc);
    return r;
}

TEST(long_target_first)
{
    store_ledger_entry e = long_entry(5);
    features_candle c[] = {at(1, 101, 99.5, 100.5), at(2, 102.5, 100, 102), at(3, 104.1, 101, 104),
                           at(4, 103, 97.9, 98.5), at(5, 101, 99, 100)};
    store_ledger_resolution r = resolve(&e, c, 5);
    CHECK_EQ_INT(r.outcome, STORE_OUTCOME_TP2);
    CHECK_EQ_STR(store_ledger_outcome_name(r.outcome), "TP2");
    CHECK_NEAR(r.r_multiple, 2.0, 1e-12);
    CHECK_NEAR(r.hit_time_s, 3.0 * TF, 1e-12); /* TP2 first touched by candle 3 */
    CHECK_EQ_INT(r.candles, 4);                /* the stop in candle 4 ended it */
    CHECK_NEAR(r.mfe, (104.1 - 100) / 2, 1e-12);
    CHECK_NEAR(r.mae, (100 - 97.9) / 2, 1e-12);
    CHECK_EQ_INT(r.realised, STORE_LEDGER_LONG); /* long TP1 at candle 2 */
}

TEST(long_stop_first)
{
    store_ledger_entry e = long_entry(5);
    features_candle c[] = {at(1, 100.5, 97.5, 98), at(2, 106.5, 98, 106)};
    store_ledger_resolution r = resolve(&e, c, 2);
    CHECK_EQ_INT(r.outcome, STORE_OUTCOME_SL);
    CHECK_NEAR(r.r_multiple, -1.0, 1e-12);
    CHECK_NEAR(r.hit_time_s, 1.0 * TF, 1e-12);
    CHECK_EQ_INT(r.candles, 1);
    CHECK_NEAR(r.mae, 1.25, 1e-12);
    CHECK_NEAR(r.mfe, 0.25, 1e-12); /* the later rally does not count */
    /* the short side reached its TP1 (98) without touching its stop */
    CHECK_EQ_INT(r.realised, STORE_LEDGER_SHORT);
}

/* A level touched exactly (high == target, low == stop) counts as reached:
 * the barrier rule of the training labels is "touches", not "crosses". */
TEST(exact_touches_of_a_level_count)
{
    store_ledger_entry e = long_entry(2);
    features_candle tp[] = {at(1, 102, 99.5, 101), at(2, 101, 99, 100)};
    store_ledger_resolution r = resolve(&e, tp, 2);
    CHECK_EQ_INT(r.outcome, STORE_OUTCOME_TP1);
    CHECK_NEAR(r.r_multiple, 1.0, 1e-12);
    CHECK_NEAR(r.hit_time_s, 1.0 * TF, 1e-12);

    features_candle sl[] = {at(1, 101, 98, 99), at(2, 101, 99, 100)};
    r = resolve(&e, sl, 2);
    CHECK_EQ_INT(r.outcome, STORE_OUTCOME_SL);
    CHECK_NEAR(r.r_multiple, -1.0, 1e-12);

    store_ledger_entry s = short_entry(2);
    features_candle stp[] = {at(1, 101, 98, 99), at(2, 101, 99, 100)};
    r = resolve(&s, stp, 2);
    CHECK_EQ_INT(r.outcome, STORE_OUTCOME_TP1);
    features_candle ssl[] = {at(1, 102, 99, 101), at(2, 101, 99, 100)};
    r = resolve(&s, ssl, 2);
    CHECK_EQ_INT(r.outcome, STORE_OUTCOME_SL);

    /* a hair short of the target is not a touch */
    features_candle near[] = {at(1, nextafter(102, 0), 99.5, 101), at(2, 101, 99, 100)};
    r = resolve(&e, near, 2);
    CHECK(r.outcome != STORE_OUTCOME_TP1);
}

TEST(stop_and_target_in_one_candle_is_the_stop)
{
    store_ledger_entry e = long_entry(5);
    features_candle c[] = {at(1, 106.5, 97.5, 101)};
    store_ledger_resolution r = resolve(&e, c, 1);
    CHECK_EQ_INT(r.outcome, STORE_OUTCOME_SL);
    CHECK_NEAR(r.r_multiple, -1.0, 1e-12);
    CHECK_NEAR(r.hit_time_s, 1.0 * TF, 1e-12);
    /* both sides touched their stops in that candle: neither won */
    CHECK_EQ_INT(r.realised, STORE_LEDGER_NO_TRADE);
}

TEST(target_then_stop_in_a_later_candle_keeps_the_target)
{
    store_ledger_entry e = long_entry(5);
    features_candle c[] = {at(1, 102.2, 99, 102), at(2, 104.5, 97, 97.5)};
    store_ledger_resolution r = resolve(&e, c, 2);
    /* TP1 at candle 1; candle 2 reached TP2 and the stop: the stop wins that
     * candle, so the outcome stays TP1 */
    CHECK_EQ_INT(r.outcome, STORE_OUTCOME_TP1);
    CHECK_NEAR(r.r_multiple, 1.0, 1e-12);
    CHECK_NEAR(r.hit_time_s, 1.0 * TF, 1e-12);
    CHECK_EQ_INT(r.candles, 2);
    CHECK_EQ_INT(r.realised, STORE_LEDGER_LONG);
}

TEST(tp3_ends_the_trade)
{
    store_ledger_entry e = long_entry(5);
    features_candle c[] = {at(1, 106.5, 99.5, 106), at(2, 110, 90, 95)};
    store_ledger_resolution r = resolve(&e, c, 2);
    CHECK_EQ_INT(r.outcome, STORE_OUTCOME_TP3);
    CHECK_NEAR(r.r_multiple, 3.0, 1e-12);
    CHECK_NEAR(r.hit_time_s, 1.0 * TF, 1e-12);
    CHECK_EQ_INT(r.candles, 1);
    CHECK_NEAR(r.mfe, 3.25, 1e-12);
    CHECK_EQ_INT(r.realised, STORE_LEDGER_LONG);
}

TEST(expiry_marks_to_market)
{
    store_ledger_entry e = long_entry(3);
    features_candle c[] = {at(1, 101, 99, 100.4), at(2, 101.5, 99.2, 100.9),
                           at(3, 101.8, 99.6, 101.1), at(4, 120, 80, 90)};
    store_ledger_resolution r = resolve(&e, c, 4);
    CHECK_EQ_INT(r.outcome, STORE_OUTCOME_EXPIRED);
    CHECK_NEAR(r.r_multiple, (101.1 - 100) / 2, 1e-12); /* last close in the horizon */
    CHECK(isnan(r.hit_time_s));
    CHECK_EQ_INT(r.candles, 3);
    CHECK_NEAR(r.mfe, 0.9, 1e-12);
    CHECK_NEAR(r.mae, 0.5, 1e-12);
    CHECK_EQ_INT(r.realised, STORE_LEDGER_NO_TRADE);
}

TEST(target_then_expiry_keeps_the_target)
{
    store_ledger_entry e = long_entry(3);
    features_candle c[] = {at(1, 102.5, 99, 102), at(2, 103, 101, 102.5), at(3, 103, 100, 100.5)};
    store_ledger_resolution r = resolve(&e, c, 3);
    CHECK_EQ_INT(r.outcome, STORE_OUTCOME_TP1);
    CHECK_NEAR(r.r_multiple, 1.0, 1e-12);
    CHECK_NEAR(r.hit_time_s, 1.0 * TF, 1e-12);
    CHECK_EQ_INT(r.candles, 3);
}

TEST(incomplete_horizon_stays_open)
{
    store_ledger_entry e = long_entry(3);
    features_candle c[] = {at(1, 102.5, 99, 102), at(2, 103, 101, 102.5)};
    store_ledger_resolution r;
    /* the series' latest closed candle is candle 2: candle 3 may still come */
    CHECK_EQ_INT(predict_resolve(&e, TF, c, 2, T0 + 2 * TF, &r), 0);
    CHECK_EQ_INT(r.outcome, STORE_OUTCOME_OPEN);
    CHECK_EQ_INT(r.realised, -1);
    CHECK(isnan(r.r_multiple));
    /* a stop decides without waiting for the horizon */
    features_candle d[] = {at(1, 100.5, 97.9, 98)};
    CHECK_EQ_INT(predict_resolve(&e, TF, d, 1, T0 + TF, &r), 0);
    CHECK_EQ_INT(r.outcome, STORE_OUTCOME_SL);
    CHECK_EQ_INT(r.realised, STORE_LEDGER_SHORT);
    /* nothing after the entry yet */
    CHECK_EQ_INT(predict_resolve(&e, TF, NULL, 0, T0, &r), 0);
    CHECK_EQ_INT(r.outcome, STORE_OUTCOME_OPEN);
}

TEST(gaps_and_foreign_candles)
{
    store_ledger_entry e = long_entry(4);
    /* Candles 1 and 3 are missing. The horizon counts stored candles, as
     * the training labels do: candles 2, 4, 5 and 6 are j = 1..4; one
     * before the entry and one past the fourth are ignored. */
    features_candle c[] = {at(-1, 200, 1, 100),     at(0, 200, 1, 100),
                           at(2, 101, 99, 100.6),   at(4, 101.2, 99.4, 100.8),
                           at(5, 101, 99.5, 100.4), at(6, 101.5, 99.6, 101),
                           at(7, 200, 1, 50)};
    store_ledger_resolution r = resolve(&e, c, 7);
    CHECK_EQ_INT(r.outcome, STORE_OUTCOME_EXPIRED);
    CHECK_NEAR(r.r_multiple, 0.5, 1e-12);
    CHECK_EQ_INT(r.candles, 4);
    /* four timeframes of clock time have passed, but only two candles: open */
    CHECK_EQ_INT(predict_resolve(&e, TF, c, 4, T0 + 9 * TF, &r), 0);
    CHECK_EQ_INT(r.outcome, STORE_OUTCOME_OPEN);
    /* a target in the fourth stored candle (six timeframes after the
     * entry) still counts; hit_time_s is the clock time it took */
    features_candle d[] = {at(0, 100, 100, 100), at(2, 101, 99, 100.5), at(4, 101, 99, 100.5),
                           at(5, 101, 99, 100.5), at(6, 104.5, 99.5, 104)};
    CHECK_EQ_INT(predict_resolve(&e, TF, d + 1, 4, T0 + 9 * TF, &r), 0);
    CHECK_EQ_INT(r.outcome, STORE_OUTCOME_TP2);
    CHECK_EQ_INT(r.realised, STORE_LEDGER_LONG);
    CHECK_NEAR(r.hit_time_s, 6.0 * TF, 1e-12);
    /* the training label of the same stored candles says the same */
    inference_policy pol;
    training_policy_default(&pol);
    pol.horizon = 4;
    training_label lab;
    CHECK_EQ_INT(training_label_at(d, 5, 0, 4.0 / 3.0, &pol, &lab), 0);
    CHECK_EQ_INT(lab.cls, r.realised);
    CHECK_EQ_INT(lab.eta, 4);
    /* without candles the horizon never completes */
    CHECK_EQ_INT(predict_resolve(&e, TF, NULL, 0, T0 + 9 * TF, &r), 0);
    CHECK_EQ_INT(r.outcome, STORE_OUTCOME_OPEN);
}

TEST(short_mirror)
{
    store_ledger_entry e = short_entry(5);
    features_candle c[] = {at(1, 100.5, 97.9, 98), at(2, 102.1, 97, 101)};
    store_ledger_resolution r = resolve(&e, c, 2);
    CHECK_EQ_INT(r.outcome, STORE_OUTCOME_TP1);
    CHECK_NEAR(r.r_multiple, 1.0, 1e-12);
    CHECK_NEAR(r.hit_time_s, 1.0 * TF, 1e-12);
    CHECK_EQ_INT(r.candles, 2);
    CHECK_NEAR(r.mfe, 1.5, 1e-12);
    CHECK_NEAR(r.mae, 1.05, 1e-12);
    CHECK_EQ_INT(r.realised, STORE_LEDGER_SHORT);

    features_candle s[] = {at(1, 102.5, 99, 102)};
    r = resolve(&e, s, 1);
    CHECK_EQ_INT(r.outcome, STORE_OUTCOME_SL);
    CHECK_NEAR(r.r_multiple, -1.0, 1e-12);
    CHECK_EQ_INT(r.realised, STORE_LEDGER_LONG);

    features_candle t[] = {at(1, 100.2, 93.9, 94)};
    r = resolve(&e, t, 1);
    CHECK_EQ_INT(r.outcome, STORE_OUTCOME_TP3);
    CHECK_NEAR(r.r_multiple, 3.0, 1e-12);

    features_candle x[] = {at(1, 100.8, 99.4, 99.4), at(2, 100.9, 99.1, 99.2),
                           at(3, 100.1, 99.3, 99.5), at(4, 100.2, 99.6, 99.9),
                           at(5, 100.6, 99.5, 100.6)};
    r = resolve(&e, x, 5);
    CHECK_EQ_INT(r.outcome, STORE_OUTCOME_EXPIRED);
    CHECK_NEAR(r.r_multiple, -0.3, 1e-12); /* short: (entry - close) / R */
}

TEST(no_trade_rows_get_a_realised_class)
{
    store_ledger_entry e = long_entry(5);
    e.direction = STORE_LEDGER_NO_TRADE;
    e.probs[0] = 0.35;
    e.probs[1] = 0.2;
    e.probs[2] = 0.45;
    features_candle c[] = {at(1, 101, 99, 100), at(2, 102.5, 99.5, 102)};
    store_ledger_resolution r = resolve(&e, c, 2);
    CHECK_EQ_INT(r.outcome, STORE_OUTCOME_NONE);
    CHECK_EQ_INT(r.realised, STORE_LEDGER_LONG);
    CHECK_EQ_INT(r.candles, 2);
    CHECK(isnan(r.r_multiple) && isnan(r.mfe) && isnan(r.mae) && isnan(r.hit_time_s));

    /* with TP1 at half the risk both sides can win in one candle: a tie */
    e.tp[0] = 101;
    features_candle t[] = {at(1, 101.5, 98.5, 100)};
    r = resolve(&e, t, 1);
    CHECK_EQ_INT(r.outcome, STORE_OUTCOME_NONE);
    CHECK_EQ_INT(r.realised, STORE_LEDGER_NO_TRADE);

    /* open until the class is known */
    features_candle q[] = {at(1, 100.5, 99.5, 100)};
    CHECK_EQ_INT(predict_resolve(&e, TF, q, 1, T0 + TF, &r), 0);
    CHECK_EQ_INT(r.outcome, STORE_OUTCOME_OPEN);
}

TEST(invalid_entries_are_refused)
{
    store_ledger_resolution r = {.outcome = 42};
    features_candle c[] = {at(1, 101, 99, 100)};
    store_ledger_entry e = long_entry(5);
    CHECK_EQ_INT(predict_resolve(NULL, TF, c, 1, T0, &r), PD_EINVAL);
    CHECK_EQ_INT(predict_resolve(&e, TF, c, 1, T0, NULL), PD_EINVAL);
    CHECK_EQ_INT(predict_resolve(&e, 0, c, 1, T0, &r), PD_EINVAL);
    CHECK_EQ_INT(predict_resolve(&e, TF, NULL, 1, T0, &r), PD_EINVAL);
    e.horizon = 0;
    CHECK_EQ_INT(predict_resolve(&e, TF, c, 1, T0, &r), PD_EINVAL);
    e = long_entry(5);
    e.stop_loss = e.entry;
    CHECK_EQ_INT(predict_resolve(&e, TF, c, 1, T0, &r), PD_EINVAL);
    e = long_entry(5);
    e.tp[1] = 99; /* a LONG target below the entry */
    CHECK_EQ_INT(predict_resolve(&e, TF, c, 1, T0, &r), PD_EINVAL);
    e = long_entry(5);
    e.tp[2] = NAN;
    CHECK_EQ_INT(predict_resolve(&e, TF, c, 1, T0, &r), PD_EINVAL);
    e = long_entry(5);
    e.direction = STORE_LEDGER_SHORT; /* SHORT with LONG levels */
    CHECK_EQ_INT(predict_resolve(&e, TF, c, 1, T0, &r), PD_EINVAL);
    e.direction = 7;
    CHECK_EQ_INT(predict_resolve(&e, TF, c, 1, T0, &r), PD_EINVAL);
    CHECK_EQ_INT(r.outcome, 42); /* untouched */
    CHECK_EQ_STR(store_ledger_outcome_name(99), "OPEN");
    CHECK_EQ_STR(store_ledger_class_name(STORE_LEDGER_NO_TRADE), "NO_TRADE");
    CHECK_EQ_STR(store_ledger_class_name(-1), "UNKNOWN");
}

/* ---------------------------------------------------------------------------
 * Against PostgreSQL.
 */

/* Migrated database, empty ledger and candles of the test symbols. */
static bool setup_db(PGconn **out)
{
    if (store_init(unit_db_url(), NULL, false) != 0 || store_migrate(unit_migrations_dir()) != 0)
        return false;
    PGconn *c = unit_db_admin();
    if (!c)
        return false;
    if (!unit_sql_ok(c, "DELETE FROM predictions") ||
        !unit_sql_ok(c, "DELETE FROM candles WHERE symbol LIKE 'LDG%'")) {
        PQfinish(c);
        return false;
    }
    *out = c;
    return true;
}

static store_ledger_entry entry_for(const char *symbol, int64_t t, uint32_t version, int dir)
{
    store_ledger_entry e = dir == STORE_LEDGER_SHORT ? short_entry(3) : long_entry(3);
    snprintf(e.symbol, sizeof e.symbol, "%s", symbol);
    e.candle_time = t;
    e.version = version;
    if (dir == STORE_LEDGER_NO_TRADE) {
        e.direction = dir;
        e.probs[0] = 0.3;
        e.probs[1] = 0.2;
        e.probs[2] = 0.5;
        e.confidence = 0.5;
    }
    return e;
}

TEST(record_is_idempotent)
{
    UNIT_NEED_ENV(DB_ENV);
    PGconn *c = NULL;
    CHECK(setup_db(&c));
    if (!c)
        return;
    store_ledger *db = NULL;
    CHECK_EQ_INT(store_ledger_open(unit_db_url(), &db), 0);
    store_ledger_entry e = entry_for("LDGAUSDT", T0, 1, STORE_LEDGER_LONG);
    bool ins = false;
    CHECK_EQ_INT(store_ledger_record(db, &e, &ins), 0);
    CHECK(ins);
    e.confidence = 0.9; /* the first record wins */
    CHECK_EQ_INT(store_ledger_record(db, &e, &ins), 0);
    CHECK(!ins);
    CHECK_EQ_STR(unit_sql_text(c, "SELECT count(*) FROM predictions"), "1");
    CHECK_EQ_STR(unit_sql_text(c, "SELECT confidence FROM predictions"), "0.6");
    CHECK_EQ_STR(unit_sql_text(c, "SELECT extract(epoch FROM candle_time)::bigint FROM predictions"),
                 "1717999200");
    /* exact doubles round-trip */
    CHECK_EQ_STR(unit_sql_text(c, "SELECT atr = 4::float8 / 3 FROM predictions"), "t");
    /* another version of the same candle is another row */
    e.version = 2;
    CHECK_EQ_INT(store_ledger_record(db, &e, &ins), 0);
    CHECK(ins);
    /* NO_TRADE rows are recorded too */
    store_ledger_entry n = entry_for("LDGAUSDT", T0 + TF, 1, STORE_LEDGER_NO_TRADE);
    CHECK_EQ_INT(store_ledger_record(db, &n, NULL), 0);
    CHECK_EQ_STR(unit_sql_text(c, "SELECT direction FROM predictions WHERE candle_time ="
                             " to_timestamp(1717999260)"),
                 "NO_TRADE");
    /* bad entries */
    e.version = 0;
    CHECK_EQ_INT(store_ledger_record(db, &e, NULL), PD_EINVAL);
    e = entry_for("bad", T0, 1, STORE_LEDGER_LONG);
    CHECK_EQ_INT(store_ledger_record(db, &e, NULL), PD_ESYMBOL);
    e = entry_for("LDGAUSDT", T0, 1, STORE_LEDGER_LONG);
    snprintf(e.timeframe, sizeof e.timeframe, "2m");
    CHECK_EQ_INT(store_ledger_record(db, &e, NULL), PD_ETIMEFRAME);
    CHECK_EQ_INT(store_ledger_open("host=x bogus_option=1", &db), PD_EINVAL);
    store_ledger_close(db);
    store_ledger_close(NULL);
    PQfinish(c);
    store_shutdown();
}

TEST(settle_writes_outcomes)
{
    UNIT_NEED_ENV(DB_ENV);
    PGconn *c = NULL;
    CHECK(setup_db(&c));
    if (!c)
        return;
    store_ledger *db = NULL;
    CHECK_EQ_INT(store_ledger_open(unit_db_url(), &db), 0);
    /* candles 0..6 of LDGBUSDT 1m: a rally to 104.5 then a drop to 97 */
    features_candle k[] = {at(0, 100.5, 99.5, 100), at(1, 101, 99.5, 100.5), at(2, 102.5, 100, 102),
                           at(3, 104.5, 101, 104),  at(4, 104, 96.5, 97),    at(5, 98, 96, 97),
                           at(6, 98, 96, 97)};
    CHECK_EQ_INT(store_upsert_candles("LDGBUSDT", "1m", k, 7), 0);
    /* LONG at candle 0 (horizon 3): TP1 at 2, TP2 at 3 -> TP2 at the end */
    store_ledger_entry a = entry_for("LDGBUSDT", T0, 1, STORE_LEDGER_LONG);
    /* SHORT at candle 0: stopped at candle 2 */
    store_ledger_entry b = entry_for("LDGBUSDT", T0, 2, STORE_LEDGER_SHORT);
    /* NO_TRADE at candle 0 */
    store_ledger_entry n = entry_for("LDGBUSDT", T0, 3, STORE_LEDGER_NO_TRADE);
    /* LONG at candle 6: nothing after it yet */
    store_ledger_entry o = entry_for("LDGBUSDT", T0 + 6 * TF, 1, STORE_LEDGER_LONG);
    CHECK_EQ_INT(store_ledger_record(db, &a, NULL), 0);
    CHECK_EQ_INT(store_ledger_record(db, &b, NULL), 0);
    CHECK_EQ_INT(store_ledger_record(db, &n, NULL), 0);
    CHECK_EQ_INT(store_ledger_record(db, &o, NULL), 0);

    store_ledger_series *s = NULL;
    size_t ns = 0;
    CHECK_EQ_INT(store_ledger_open_series(db, &s, &ns), 0);
    CHECK_EQ_INT(ns, 1);
    if (ns == 1) {
        CHECK_EQ_STR(s[0].symbol, "LDGBUSDT");
        CHECK_EQ_STR(s[0].timeframe, "1m");
    }
    free(s);

    size_t settled = 99;
    int64_t now = util_now();
    CHECK_EQ_INT(store_ledger_settle(db, "LDGBUSDT", "1m", now, predict_resolve, &settled), 0);
    CHECK_EQ_INT(settled, 3);
    CHECK_EQ_STR(unit_sql_text(c, "SELECT outcome || ' ' || realised || ' ' || r_multiple || ' ' ||"
                             " hit_time_s || ' ' || mfe || ' ' || mae FROM predictions"
                             " WHERE model_version = 1 AND candle_time = to_timestamp(1717999200)"),
                 "TP2 LONG 2 180 2.25 0.25");
    CHECK_EQ_STR(unit_sql_text(c, "SELECT outcome || ' ' || realised || ' ' || r_multiple || ' ' ||"
                             " hit_time_s FROM predictions WHERE model_version = 2"),
                 "SL LONG -1 120");
    CHECK_EQ_STR(unit_sql_text(c, "SELECT outcome || ' ' || realised || ' ' ||"
                             " (r_multiple IS NULL) || ' ' || (resolved_at IS NOT NULL)"
                             " FROM predictions WHERE model_version = 3"),
                 "NONE LONG true true");
    CHECK_EQ_STR(unit_sql_text(c, "SELECT outcome IS NULL FROM predictions WHERE"
                             " candle_time = to_timestamp(1717999560)"),
                 "t");
    /* settled rows are not touched again */
    CHECK_EQ_INT(store_ledger_settle(db, "LDGBUSDT", "1m", now, predict_resolve, &settled), 0);
    CHECK_EQ_INT(settled, 0);
    /* the later row settles once a candle after it exists: a drop to its stop */
    features_candle more[] = {at(7, 97.5, 95.9, 96)};
    CHECK_EQ_INT(store_upsert_candles("LDGBUSDT", "1m", more, 1), 0);
    /* not while that candle is still open at `now` */
    CHECK_EQ_INT(store_ledger_settle(db, "LDGBUSDT", "1m", T0 + 7 * TF + 30, predict_resolve, &settled), 0);
    CHECK_EQ_INT(settled, 0);
    CHECK_EQ_INT(store_ledger_settle(db, "LDGBUSDT", "1m", now, predict_resolve, &settled), 0);
    CHECK_EQ_INT(settled, 1);
    CHECK_EQ_STR(unit_sql_text(c, "SELECT outcome || ' ' || realised FROM predictions WHERE"
                             " candle_time = to_timestamp(1717999560)"),
                 "SL SHORT");
    CHECK_EQ_INT(store_ledger_settle(db, "bad", "1m", now, predict_resolve, NULL), PD_ESYMBOL);
    CHECK_EQ_INT(store_ledger_settle(db, "LDGBUSDT", "7m", now, predict_resolve, NULL), PD_ETIMEFRAME);
    CHECK_EQ_INT(store_ledger_open_series(db, &s, &ns), 0);
    CHECK_EQ_INT(ns, 0);
    free(s);
    store_ledger_close(db);
    PQfinish(c);
    store_shutdown();
}

/* Rows with known outcomes written behind the ledger's back (outcome NULL:
 * an open row). */
static bool insert_row(PGconn *c, const char *symbol, int t_index, int version, const char *dir,
                       double pl, double ps, const char *outcome, const char *realised, double r)
{
    char sql[1024], res[256] = "", resv[256] = "";
    if (outcome) {
        snprintf(res, sizeof res, ", outcome, realised, resolved_at, r_multiple");
        if (strcmp(outcome, "NONE") == 0)
            snprintf(resv, sizeof resv, ", '%s', '%s', now(), NULL", outcome, realised);
        else
            snprintf(resv, sizeof resv, ", '%s', '%s', now(), %.17g", outcome, realised, r);
    }
    snprintf(sql, sizeof sql,
             "INSERT INTO predictions (symbol, timeframe, candle_time, model_version,"
             " direction, confidence, p_long, p_short, p_no_trade, entry, stop_loss, tp1,"
             " tp2, tp3, horizon_candles%s) VALUES ('%s', '1m', to_timestamp(%lld), %d, '%s',"
             " 0.5, %.17g, %.17g, %.17g, 100, 98, 102, 104, 106, 3%s)",
             res, symbol, (long long)(T0 + t_index * TF), version, dir, pl, ps, 1 - pl - ps, resv);
    return unit_sql_ok(c, sql);
}

TEST(performance_figures_match_rows)
{
    UNIT_NEED_ENV(DB_ENV);
    PGconn *c = NULL;
    CHECK(setup_db(&c));
    if (!c)
        return;
    /* version 1: 4 resolved LONG/SHORT (3 hits), 1 NO_TRADE resolved, 1 open */
    CHECK(insert_row(c, "LDGCUSDT", 0, 1, "LONG", 0.6, 0.1, "TP2", "LONG", 2));
    CHECK(insert_row(c, "LDGCUSDT", 1, 1, "LONG", 0.5, 0.2, "SL", "SHORT", -1));
    CHECK(insert_row(c, "LDGCUSDT", 2, 1, "SHORT", 0.2, 0.7, "TP1", "SHORT", 1));
    CHECK(insert_row(c, "LDGCUSDT", 3, 1, "SHORT", 0.1, 0.5, "TP3", "NO_TRADE", 3));
    CHECK(insert_row(c, "LDGCUSDT", 4, 1, "NO_TRADE", 0.2, 0.2, "NONE", "NO_TRADE", 0));
    CHECK(insert_row(c, "LDGCUSDT", 5, 1, "LONG", 0.6, 0.1, NULL, NULL, 0));
    /* version 2: one expired trade */
    CHECK(insert_row(c, "LDGCUSDT", 0, 2, "LONG", 0.55, 0.05, "EXPIRED", "NO_TRADE", -0.25));
    store_ledger *db = NULL;
    CHECK_EQ_INT(store_ledger_open(unit_db_url(), &db), 0);
    store_ledger_perf *p = NULL;
    size_t n = 0;
    CHECK_EQ_INT(store_ledger_performance(db, "LDGCUSDT", "1m", 2, &p, &n), 0);
    CHECK_EQ_INT(n, 2);
    if (n == 2) {
        const store_ledger_figures *f = &p[0].all;
        CHECK_EQ_INT(p[0].version, 1);
        CHECK_EQ_INT(f->predictions, 6);
        CHECK_EQ_INT(f->open, 1);
        CHECK_EQ_INT(f->resolved, 5);
        CHECK_EQ_INT(f->trades, 4);
        CHECK_EQ_INT(f->hits, 3);
        CHECK_EQ_INT(f->correct, 3); /* rows 0, 2, 4 */
        CHECK_NEAR(f->sum_r, 2 - 1 + 1 + 3, 1e-12);
        double brier = (0.4 * 0.4 + 0.1 * 0.1 + 0.3 * 0.3) + (0.5 * 0.5 + 0.8 * 0.8 + 0.3 * 0.3) +
                       (0.2 * 0.2 + 0.3 * 0.3 + 0.1 * 0.1) + (0.1 * 0.1 + 0.5 * 0.5 + 0.6 * 0.6) +
                       (0.2 * 0.2 + 0.2 * 0.2 + 0.4 * 0.4);
        CHECK_NEAR(f->sum_brier, brier, 1e-9);
        CHECK_EQ_INT(f->dir[STORE_LEDGER_LONG].predictions, 3);
        CHECK_EQ_INT(f->dir[STORE_LEDGER_LONG].resolved, 2);
        CHECK_EQ_INT(f->dir[STORE_LEDGER_LONG].hits, 1);
        CHECK_EQ_INT(f->dir[STORE_LEDGER_LONG].correct, 1);
        CHECK_EQ_INT(f->dir[STORE_LEDGER_SHORT].hits, 2);
        CHECK_EQ_INT(f->dir[STORE_LEDGER_SHORT].correct, 1);
        CHECK_EQ_INT(f->dir[STORE_LEDGER_NO_TRADE].correct, 1);
        CHECK_EQ_INT(f->first, T0);
        CHECK_EQ_INT(f->last, T0 + 5 * TF);
        /* the window: the 2 most recent resolved rows (3 and 4) */
        const store_ledger_figures *w = &p[0].window;
        CHECK_EQ_INT(w->predictions, 2);
        CHECK_EQ_INT(w->resolved, 2);
        CHECK_EQ_INT(w->open, 0);
        CHECK_EQ_INT(w->trades, 1);
        CHECK_EQ_INT(w->hits, 1);
        CHECK_EQ_INT(w->first, T0 + 3 * TF);
        CHECK_EQ_INT(p[1].version, 2);
        CHECK_EQ_INT(p[1].all.trades, 1);
        CHECK_EQ_INT(p[1].all.hits, 0);
        CHECK_NEAR(p[1].all.sum_r, -0.25, 1e-12);
    }
    free(p);
    store_ledger_live *lv = NULL;
    CHECK_EQ_INT(store_ledger_live_stats(db, NULL, NULL, &lv, &n), 0);
    CHECK_EQ_INT(n, 2);
    if (n == 2) {
        CHECK_EQ_INT(lv[0].version, 1);
        CHECK_EQ_INT(lv[0].trades, 4);
        CHECK_EQ_INT(lv[0].hits, 3);
    }
    free(lv);
    CHECK_EQ_INT(store_ledger_live_stats(db, "LDGCUSDT", "1m", &lv, &n), 0);
    CHECK_EQ_INT(n, 2);
    free(lv);
    CHECK_EQ_INT(store_ledger_live_stats(db, "LDGCUSDT", NULL, &lv, &n), PD_EINVAL);
    CHECK_EQ_INT(store_ledger_performance(db, "LDGCUSDT", "1m", 0, &p, &n), PD_EINVAL);
    CHECK_EQ_INT(store_ledger_performance(db, "NOPEUSDT", "1m", 10, &p, &n), 0);
    CHECK_EQ_INT(n, 0);
    free(p);
    store_ledger_close(db);
    PQfinish(c);
    store_shutdown();
}

TEST(history_pages)
{
    UNIT_NEED_ENV(DB_ENV);
    PGconn *c = NULL;
    CHECK(setup_db(&c));
    if (!c)
        return;
    store_ledger *db = NULL;
    CHECK_EQ_INT(store_ledger_open(unit_db_url(), &db), 0);
    for (int i = 0; i < 5; i++) {
        store_ledger_entry e = entry_for("LDGDUSDT", T0 + i * TF, 1, STORE_LEDGER_LONG);
        CHECK_EQ_INT(store_ledger_record(db, &e, NULL), 0);
    }
    store_ledger_entry e = entry_for("LDGEUSDT", T0 + 2 * TF, 1, STORE_LEDGER_SHORT);
    CHECK_EQ_INT(store_ledger_record(db, &e, NULL), 0);
    CHECK(unit_sql_ok(c, "UPDATE predictions SET outcome = 'SL', realised = 'LONG', resolved_at ="
                    " now(), r_multiple = -1, hit_time_s = 60 WHERE symbol = 'LDGEUSDT'"));

    /* one symbol, pages of 2: 4,3 / 2,1 / 0 */
    store_ledger_query q = {.symbol = "LDGDUSDT", .timeframe = "1m", .limit = 2};
    store_ledger_row *rows = NULL;
    size_t n = 0;
    bool more = false;
    int64_t seen[5];
    size_t total = 0;
    store_ledger_cursor cur;
    for (int page = 0; page < 4; page++) {
        CHECK_EQ_INT(store_ledger_history(db, &q, &rows, &n, &more), 0);
        for (size_t i = 0; i < n && total < 5; i++)
            seen[total++] = rows[i].e.candle_time;
        if (n) {
            cur.candle_time = rows[n - 1].e.candle_time;
            snprintf(cur.symbol, sizeof cur.symbol, "%s", rows[n - 1].e.symbol);
            snprintf(cur.timeframe, sizeof cur.timeframe, "%s", rows[n - 1].e.timeframe);
            cur.version = rows[n - 1].e.version;
        }
        free(rows);
        if (!more)
            break;
        q.after = &cur;
    }
    CHECK_EQ_INT(total, 5);
    for (size_t i = 0; i < total; i++)
        CHECK_EQ_INT(seen[i], T0 + (int64_t)(4 - i) * TF);

    /* every symbol, a time range, outcomes */
    store_ledger_query all = {.from = T0 + 2 * TF, .to = T0 + 3 * TF, .limit = 10};
    CHECK_EQ_INT(store_ledger_history(db, &all, &rows, &n, &more), 0);
    CHECK_EQ_INT(n, 2);
    CHECK(!more);
    if (n == 2) {
        CHECK_EQ_STR(rows[0].e.symbol, "LDGEUSDT"); /* same candle: symbol descending */
        CHECK_EQ_INT(rows[0].r.outcome, STORE_OUTCOME_SL);
        CHECK_EQ_INT(rows[0].r.realised, STORE_LEDGER_LONG);
        CHECK_NEAR(rows[0].r.r_multiple, -1, 1e-12);
        CHECK(rows[0].resolved_at > 0);
        CHECK_EQ_INT(rows[1].r.outcome, STORE_OUTCOME_OPEN);
        CHECK_EQ_INT(rows[1].r.realised, -1);
        CHECK(isnan(rows[1].r.r_multiple));
        CHECK_EQ_INT(rows[1].resolved_at, 0);
        CHECK_NEAR(rows[1].e.tp[2], 106, 0);
        CHECK_EQ_INT(rows[1].e.horizon, 3);
    }
    free(rows);
    store_ledger_query bad = {.limit = 0};
    CHECK_EQ_INT(store_ledger_history(db, &bad, &rows, &n, &more), PD_EINVAL);
    bad.limit = 1001;
    CHECK_EQ_INT(store_ledger_history(db, &bad, &rows, &n, &more), PD_EINVAL);
    bad.limit = 10;
    bad.symbol = "x";
    CHECK_EQ_INT(store_ledger_history(db, &bad, &rows, &n, &more), PD_ESYMBOL);
    store_ledger_close(db);
    PQfinish(c);
    store_shutdown();
}

/* Rows a newer version may write during a rolling upgrade, which this
 * version's CHECK constraints forbid (they are dropped for the test and
 * put back): an outcome it does not know reads as open (and an unknown
 * realised class as none), where a direction it does not know makes the
 * page fail with PD_EDB (logged with the row), never a row misread. */
TEST(rows_of_a_newer_version_read_as_open_or_fail_the_page)
{
    UNIT_NEED_ENV(DB_ENV);
    PGconn *c = NULL;
    CHECK(setup_db(&c));
    if (!c)
        return;
    store_ledger *db = NULL;
    CHECK_EQ_INT(store_ledger_open(unit_db_url(), &db), 0);
    CHECK(unit_sql_ok(c, "CREATE TEMP TABLE saved_checks AS SELECT conname, "
                         "pg_get_constraintdef(oid) AS def FROM pg_constraint "
                         "WHERE conrelid = 'predictions'::regclass AND contype = 'c'"));
    CHECK(unit_sql_int(c, "SELECT count(*) FROM saved_checks") >= 4);
    CHECK(unit_sql_ok(c, "DO $$ DECLARE k record; BEGIN FOR k IN SELECT conname FROM saved_checks "
                         "LOOP EXECUTE format('ALTER TABLE predictions DROP CONSTRAINT %I', "
                         "k.conname); END LOOP; END $$"));
    CHECK(insert_row(c, "LDGGUSDT", 1, 1, "LONG", 0.6, 0.2, "TP4", "FLAT", 2.5));
    CHECK(insert_row(c, "LDGHUSDT", 1, 1, "FLAT", 0.6, 0.2, NULL, NULL, 0));
    CHECK(insert_row(c, "LDGHUSDT", 2, 1, "LONG", 0.6, 0.2, NULL, NULL, 0));

    store_ledger_query q = {.symbol = "LDGGUSDT", .limit = 10};
    store_ledger_row *rows = NULL;
    size_t n = 0;
    bool more = false;
    CHECK_EQ_INT(store_ledger_history(db, &q, &rows, &n, &more), 0);
    CHECK_EQ_INT(n, 1);
    if (n == 1) {
        CHECK_EQ_INT(rows[0].e.direction, STORE_LEDGER_LONG);
        CHECK_EQ_INT(rows[0].r.outcome, STORE_OUTCOME_OPEN);
        CHECK_EQ_INT(rows[0].r.realised, -1);
    }
    free(rows);
    rows = NULL;
    q.symbol = "LDGHUSDT";
    CHECK_EQ_INT(store_ledger_history(db, &q, &rows, &n, &more), PD_EDB);
    CHECK(rows == NULL);
    q.from = T0 + 2 * TF; /* the page without that row reads */
    CHECK_EQ_INT(store_ledger_history(db, &q, &rows, &n, &more), 0);
    CHECK_EQ_INT(n, 1);
    free(rows);

    CHECK(unit_sql_ok(c, "DELETE FROM predictions WHERE symbol IN ('LDGGUSDT', 'LDGHUSDT')"));
    CHECK(unit_sql_ok(c, "DO $$ DECLARE k record; BEGIN FOR k IN SELECT * FROM saved_checks "
                         "LOOP EXECUTE format('ALTER TABLE predictions ADD CONSTRAINT %I %s', "
                         "k.conname, k.def); END LOOP; END $$"));
    CHECK_EQ_INT(unit_sql_int(c, "SELECT count(*) FROM pg_constraint WHERE conrelid = "
                                 "'predictions'::regclass AND contype = 'c'"),
                 unit_sql_int(c, "SELECT count(*) FROM saved_checks"));
    store_ledger_close(db);
    PQfinish(c);
    store_shutdown();
}

struct got {
    char payload[8][64];
    int n;
};

static void on_notify(const char *payload, void *arg)
{
    struct got *g = arg;
    if (g->n < 8)
        snprintf(g->payload[g->n++], sizeof g->payload[0], "%s", payload);
}

/* Waits up to 5 s for at least one notification. */
static int wait_notify(store_listener *l, struct got *g)
{
    for (int i = 0; i < 50 && g->n == 0; i++) {
        struct pollfd p = {.fd = store_listen_socket(l), .events = POLLIN};
        if (p.fd < 0)
            return PD_EDB;
        if (poll(&p, 1, 100) > 0) {
            int rc = store_listen_consume(l, on_notify, g);
            if (rc < 0)
                return rc;
        }
    }
    return g->n;
}

TEST(listen_receives_and_survives_a_lost_connection)
{
    UNIT_NEED_ENV(DB_ENV);
    PGconn *c = NULL;
    CHECK(setup_db(&c));
    if (!c)
        return;
    store_listener *l = NULL;
    CHECK_EQ_INT(store_listen_open(unit_db_url(), "Bad-Channel", &l), PD_EINVAL);
    CHECK_EQ_INT(store_listen_open(unit_db_url(), "predictd_candles", &l), 0);
    CHECK_EQ_INT(store_listen_socket(l), -1);
    struct got g = {0};
    CHECK_EQ_INT(store_listen_consume(l, on_notify, &g), PD_EDB); /* not connected */
    CHECK_EQ_INT(store_listen_connect(l), 0);
    CHECK(store_listen_socket(l) >= 0);
    features_candle k[] = {at(0, 101, 99, 100)};
    CHECK_EQ_INT(store_upsert_candles("LDGFUSDT", "1m", k, 1), 0);
    CHECK(wait_notify(l, &g) >= 1);
    CHECK_EQ_STR(g.payload[0], "LDGFUSDT:1m");

    /* the server ends the listener's session: the next consume says so */
    CHECK(unit_sql_ok(c, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = 'predictd-listen'"));
    g.n = 0;
    int rc = 0;
    for (int i = 0; i < 50 && rc >= 0; i++) {
        struct pollfd p = {.fd = store_listen_socket(l), .events = POLLIN};
        if (poll(&p, 1, 100) > 0)
            rc = store_listen_consume(l, on_notify, &g);
    }
    CHECK_EQ_INT(rc, PD_EDB);
    CHECK_EQ_INT(store_listen_socket(l), -1);
    /* connect again: LISTEN is issued anew */
    CHECK_EQ_INT(store_listen_connect(l), 0);
    features_candle k2[] = {at(1, 101, 99, 100)};
    CHECK_EQ_INT(store_upsert_candles("LDGFUSDT", "1m", k2, 1), 0);
    g.n = 0;
    CHECK(wait_notify(l, &g) >= 1);
    CHECK_EQ_STR(g.payload[0], "LDGFUSDT:1m");
    store_listen_close(l);
    store_listen_close(NULL);
    PQfinish(c);
    store_shutdown();
}

TEST(publish_reaches_a_subscriber)
{
    UNIT_NEED_ENV(REDIS_ENV);
    store_pub *p = NULL;
    CHECK_EQ_INT(store_pub_open("http://x:1/0", &p), PD_EINVAL);
    CHECK_EQ_INT(store_pub_open("redis://host:99999/0", &p), PD_EINVAL);
    CHECK_EQ_INT(store_pub_open(getenv(REDIS_ENV), &p), 0);
    /* a subscriber on its own connection */
    const char *url = getenv(REDIS_ENV) + 8;
    char host[128];
    int port = 6379;
    snprintf(host, sizeof host, "%.*s", (int)strcspn(url, ":/"), url);
    if (url[strcspn(url, ":/")] == ':')
        port = atoi(url + strcspn(url, ":/") + 1);
    redisContext *sub = redisConnect(host, port);
    CHECK(sub && !sub->err);
    if (!sub || sub->err) {
        redisFree(sub);
        store_pub_close(p);
        return;
    }
    redisReply *r = redisCommand(sub, "SUBSCRIBE predictd:test");
    freeReplyObject(r);
    long long receivers = -1;
    CHECK_EQ_INT(store_pub_publish(p, "predictd:test", "hello\0world", 11, &receivers), 0);
    CHECK_EQ_INT(receivers, 1);
    void *reply = NULL;
    CHECK_EQ_INT(redisGetReply(sub, &reply), REDIS_OK);
    r = reply;
    CHECK(r && r->type == REDIS_REPLY_ARRAY && r->elements == 3);
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 3) {
        CHECK_EQ_STR(r->element[1]->str, "predictd:test");
        CHECK_EQ_INT(r->element[2]->len, 11);
        CHECK(memcmp(r->element[2]->str, "hello\0world", 11) == 0);
    }
    freeReplyObject(r);
    redisFree(sub);
    store_pub_close(p);

    /* a dead Redis: PD_ECACHE, without waiting */
    CHECK_EQ_INT(store_pub_open("redis://127.0.0.1:1/0", &p), 0);
    CHECK_EQ_INT(store_pub_publish(p, "predictd:test", "x", 1, NULL), PD_ECACHE);
    CHECK_EQ_INT(store_pub_publish(p, "predictd:test", "x", 1, NULL), PD_ECACHE);
    store_pub_close(p);
    store_pub_close(NULL);
}

/* What `predictd backtest` stores and /api/models shows: the latest run of
 * each version, ascending by version; bad arguments refused before any SQL. */
TEST(backtests_keep_the_latest_run_per_version)
{
    UNIT_NEED_ENV(DB_ENV);
    PGconn *c = NULL;
    CHECK(setup_db(&c));
    if (!c)
        return;
    CHECK(unit_sql_ok(c, "DELETE FROM backtests"));
    store_ledger *db = NULL;
    CHECK_EQ_INT(store_ledger_open(unit_db_url(), &db), 0);
    CHECK_EQ_INT(store_ledger_backtest_save(db, "LDGCUSDT", "1h", 2, T0, T0 + 3600, 10,
                                            "{\"trades\":5,\"hit_tp1\":0.4}"),
                 0);
    CHECK_EQ_INT(
        store_ledger_backtest_save(db, "LDGCUSDT", "1h", 1, T0, T0 + 3600, 10, "{\"trades\":3}"),
        0);
    CHECK_EQ_INT(
        store_ledger_backtest_save(db, "LDGCUSDT", "1h", 1, T0, T0 + 7200, 12.5, "{\"trades\":4}"),
        0);
    /* another series is not listed with this one */
    CHECK_EQ_INT(store_ledger_backtest_save(db, "LDGCUSDT", "4h", 1, T0, T0 + 7200, 10, "{}"), 0);
    CHECK_EQ_STR(unit_sql_text(c, "SELECT count(*) FROM backtests WHERE symbol = 'LDGCUSDT'"), "4");
    CHECK_EQ_STR(unit_sql_text(c, "SELECT cost_bps FROM backtests WHERE figures->>'trades' = '4'"),
                 "12.5");

    store_ledger_backtest *b = NULL;
    size_t n = 0;
    CHECK_EQ_INT(store_ledger_backtests(db, "LDGCUSDT", "1h", &b, &n), 0);
    CHECK_EQ_INT(n, 2);
    if (n == 2) {
        CHECK_EQ_INT(b[0].version, 1);
        CHECK(strstr(b[0].figures_json, "\"trades\": 4") != NULL); /* the later run of v1 */
        CHECK_EQ_INT(b[1].version, 2);
        CHECK(strstr(b[1].figures_json, "\"hit_tp1\": 0.4") != NULL);
        CHECK(b[0].created_at > T0 && b[0].created_at <= util_now() + 5);
    }
    store_ledger_backtests_free(b, n);
    b = NULL;
    CHECK_EQ_INT(store_ledger_backtests(db, "LDGDUSDT", "1h", &b, &n), 0);
    CHECK_EQ_INT(n, 0);
    store_ledger_backtests_free(b, n);
    store_ledger_backtests_free(NULL, 0);

    CHECK_EQ_INT(store_ledger_backtest_save(db, "x", "1h", 1, 0, 0, 10, "{}"), PD_ESYMBOL);
    CHECK_EQ_INT(store_ledger_backtest_save(db, "LDGCUSDT", "2h", 1, 0, 0, 10, "{}"),
                 PD_ETIMEFRAME);
    CHECK_EQ_INT(store_ledger_backtest_save(db, "LDGCUSDT", "1h", 0, 0, 0, 10, "{}"), PD_EINVAL);
    CHECK_EQ_INT(store_ledger_backtest_save(db, "LDGCUSDT", "1h", 1, 0, 0, 10, NULL), PD_EINVAL);
    CHECK_EQ_INT(store_ledger_backtest_save(db, "LDGCUSDT", "1h", 1, 0, 0, NAN, "{}"), PD_EINVAL);
    /* text that is not JSON: the database refuses it, nothing stored */
    int rc = store_ledger_backtest_save(db, "LDGCUSDT", "1h", 3, 0, 0, 10, "{not json");
    CHECK(rc != 0);
    CHECK_EQ_STR(unit_sql_text(c, "SELECT count(*) FROM backtests WHERE model_version = 3"), "0");
    CHECK_EQ_INT(store_ledger_backtests(db, "x", "1h", &b, &n), PD_ESYMBOL);
    CHECK_EQ_INT(store_ledger_backtests(db, "LDGCUSDT", "1h", NULL, &n), PD_EINVAL);
    store_ledger_close(db);
    PQfinish(c);
    store_shutdown();
}

/* A resolver that cannot settle a row (levels it refuses) leaves the row
 * open and counts nothing; settling without a resolver is refused. */
static int refusing_resolver(const store_ledger_entry *e, int64_t tf_seconds,
                             const features_candle *after, size_t n, int64_t last_closed_open,
                             store_ledger_resolution *out)
{
    (void)e, (void)tf_seconds, (void)after, (void)n, (void)last_closed_open, (void)out;
    return PD_EINVAL;
}

TEST(settle_leaves_rows_it_cannot_resolve_open)
{
    UNIT_NEED_ENV(DB_ENV);
    PGconn *c = NULL;
    CHECK(setup_db(&c));
    if (!c)
        return;
    store_ledger *db = NULL;
    CHECK_EQ_INT(store_ledger_open(unit_db_url(), &db), 0);
    features_candle k[] = {at(0, 100.5, 99.5, 100), at(1, 103, 99.5, 102.5), at(2, 107, 101, 106),
                           at(3, 107, 105, 106), at(4, 107, 105, 106)};
    CHECK_EQ_INT(store_upsert_candles("LDGEUSDT", "1m", k, 5), 0);
    store_ledger_entry a = entry_for("LDGEUSDT", T0, 1, STORE_LEDGER_LONG);
    CHECK_EQ_INT(store_ledger_record(db, &a, NULL), 0);
    size_t settled = 99;
    int64_t now = util_now();
    CHECK_EQ_INT(store_ledger_settle(db, "LDGEUSDT", "1m", now, refusing_resolver, &settled), 0);
    CHECK_EQ_INT(settled, 0);
    CHECK_EQ_STR(unit_sql_text(c, "SELECT outcome IS NULL FROM predictions WHERE"
                                  " symbol = 'LDGEUSDT'"),
                 "t");
    CHECK_EQ_INT(store_ledger_settle(db, "LDGEUSDT", "1m", now, NULL, &settled), PD_EINVAL);
    /* the real resolver then settles it: TP3 (106) reached at candle 2 */
    CHECK_EQ_INT(store_ledger_settle(db, "LDGEUSDT", "1m", now, predict_resolve, &settled), 0);
    CHECK_EQ_INT(settled, 1);
    CHECK_EQ_STR(unit_sql_text(c, "SELECT outcome || ' ' || r_multiple FROM predictions WHERE"
                                  " symbol = 'LDGEUSDT'"),
                 "TP3 3");
    store_ledger_close(db);
    PQfinish(c);
    store_shutdown();
}

/* The database down: every ledger call says PD_EDB (a 503 upstream), none
 * hangs or crashes, and the handle works once a database is there. */
TEST(ledger_with_the_database_down)
{
    store_ledger *db = NULL;
    const char *down = "postgresql://postgres@127.0.0.1:1/none?connect_timeout=2";
    CHECK_EQ_INT(store_ledger_open(down, &db), 0);
    store_ledger_entry a = entry_for("LDGFUSDT", T0, 1, STORE_LEDGER_LONG);
    bool ins = true;
    CHECK_EQ_INT(store_ledger_record(db, &a, &ins), PD_EDB);
    size_t settled = 7, n = 0;
    CHECK_EQ_INT(store_ledger_settle(db, "LDGFUSDT", "1m", util_now(), predict_resolve, &settled),
                 PD_EDB);
    store_ledger_series *s = NULL;
    CHECK_EQ_INT(store_ledger_open_series(db, &s, &n), PD_EDB);
    store_ledger_backtest *b = NULL;
    CHECK_EQ_INT(store_ledger_backtests(db, "LDGFUSDT", "1m", &b, &n), PD_EDB);
    CHECK_EQ_INT(store_ledger_backtest_save(db, "LDGFUSDT", "1m", 1, 0, 0, 10, "{}"), PD_EDB);
    store_ledger_live *l = NULL;
    CHECK_EQ_INT(store_ledger_live_stats(db, NULL, NULL, &l, &n), PD_EDB);
    store_ledger_perf *pf = NULL;
    CHECK_EQ_INT(store_ledger_performance(db, "LDGFUSDT", "1m", 50, &pf, &n), PD_EDB);
    store_ledger_row *rows = NULL;
    bool more = true;
    store_ledger_query q = {.limit = 10};
    CHECK_EQ_INT(store_ledger_history(db, &q, &rows, &n, &more), PD_EDB);
    store_ledger_close(db);
    /* a URL libpq cannot parse is refused at open */
    db = NULL;
    CHECK_EQ_INT(store_ledger_open("postgresql://[::1", &db), PD_EINVAL);
    CHECK(db == NULL);
    store_ledger_close(db);
}

/* A Redis that misbehaves: it accepts connections on loopback and answers
 * every command with the reply set in `fake_reply` (one per command, also
 * when several arrive pipelined in one read). */
static const char *volatile fake_reply = "-ERR not today\r\n";
static int fake_listen_fd = -1;

static void *fake_redis_main(void *arg)
{
    (void)arg;
    for (;;) {
        int c = accept(fake_listen_fd, NULL, NULL);
        if (c < 0)
            return NULL;
        /* commands are counted by their "*3\r\n" header across reads (the
         * last 3 bytes of a read are kept in case a header is split) */
        char buf[8192 + 4];
        size_t keep = 0;
        ssize_t r;
        while ((r = read(c, buf + keep, sizeof buf - 1 - keep)) > 0) {
            size_t len = keep + (size_t)r;
            buf[len] = '\0';
            int commands = 0;
            char *q = buf, *last_end = buf;
            while ((q = strstr(q, "*3\r\n")) != NULL) {
                commands++;
                q += 4;
                last_end = q;
            }
            for (int i = 0; i < commands; i++)
                if (write(c, fake_reply, strlen(fake_reply)) < 0)
                    break;
            keep = len - (size_t)(last_end - buf) < 3 ? len - (size_t)(last_end - buf) : 3;
            memmove(buf, buf + len - keep, keep);
        }
        close(c);
    }
}

static int fake_redis_start(void)
{
    fake_listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (bind(fake_listen_fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        listen(fake_listen_fd, 4) != 0 ||
        getsockname(fake_listen_fd, (struct sockaddr *)&a, &al) != 0)
        return -1;
    pthread_t t;
    if (pthread_create(&t, NULL, fake_redis_main, NULL) != 0)
        return -1;
    pthread_detach(t);
    return ntohs(a.sin_port);
}

/* The publisher against a Redis that is not there, one that answers
 * errors, and the same one once it answers: PD_ECACHE while it cannot
 * publish (retrying no more than once a second), 0 and the receiver count
 * once it can. */
TEST(publisher_survives_a_redis_that_is_down_or_refuses)
{
    store_pub *p = NULL;
    CHECK_EQ_INT(store_pub_open("redis://127.0.0.1:1/0", &p), 0);
    long long rx = -1;
    CHECK_EQ_INT(store_pub_publish(p, "predictd:test", "x", 1, &rx), PD_ECACHE);
    CHECK_EQ_INT(store_pub_publish(p, "predictd:test", "x", 1, &rx), PD_ECACHE); /* backing off */
    const char *msgs[] = {"a", "b"};
    size_t lens[] = {1, 1};
    CHECK_EQ_INT(store_pub_publish_many(p, "predictd:test", msgs, lens, 2), PD_ECACHE);
    CHECK_EQ_INT(rx, -1);
    store_pub_close(p);

    int port = fake_redis_start();
    CHECK(port > 0);
    if (port <= 0)
        return;
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/0", port);
    CHECK_EQ_INT(store_pub_open(url, &p), 0);
    fake_reply = "-ERR not today\r\n";
    CHECK_EQ_INT(store_pub_publish(p, "predictd:test", "x", 1, &rx), PD_ECACHE);
    CHECK_EQ_INT(rx, -1);
    usleep(1100 * 1000); /* past the back-off: the next call connects again */
    CHECK_EQ_INT(store_pub_publish_many(p, "predictd:test", msgs, lens, 2), PD_ECACHE);
    usleep(1100 * 1000);
    fake_reply = ":3\r\n";
    CHECK_EQ_INT(store_pub_publish(p, "predictd:test", "x", 1, &rx), 0);
    CHECK_EQ_INT(rx, 3);
    CHECK_EQ_INT(store_pub_publish_many(p, "predictd:test", msgs, lens, 2), 0);
    CHECK_EQ_INT(store_pub_publish_many(p, "predictd:test", msgs, lens, 0), 0);
    CHECK_EQ_INT(store_pub_publish_many(p, "predictd:test", NULL, lens, 2), PD_EINVAL);
    CHECK_EQ_INT(store_pub_publish(p, NULL, "x", 1, &rx), PD_EINVAL);
    CHECK_EQ_INT(store_pub_publish(p, "predictd:test", NULL, 3, &rx), PD_EINVAL);
    /* a reply of the wrong type is not a success */
    fake_reply = "+OK\r\n";
    CHECK_EQ_INT(store_pub_publish(p, "predictd:test", "x", 1, &rx), PD_ECACHE);
    store_pub_close(p);
    store_pub_close(NULL);
}

/* LISTEN: channel names are checked, a database that is down is PD_EDB,
 * a listener never connected has no socket. */
TEST(listener_arguments_and_a_database_that_is_down)
{
    store_listener *l = NULL;
    const char *url = "postgresql://postgres@127.0.0.1:1/none?connect_timeout=2";
    CHECK_EQ_INT(store_listen_open(url, "Upper", &l), PD_EINVAL);
    CHECK_EQ_INT(store_listen_open(url, "1abc", &l), PD_EINVAL);
    CHECK_EQ_INT(store_listen_open(url, "", &l), PD_EINVAL);
    CHECK_EQ_INT(store_listen_open(url, NULL, &l), PD_EINVAL);
    char longname[70];
    memset(longname, 'a', 64);
    longname[64] = '\0';
    CHECK_EQ_INT(store_listen_open(url, longname, &l), PD_EINVAL);
    longname[63] = '\0';
    CHECK_EQ_INT(store_listen_open(url, longname, &l), 0);
    store_listen_close(l);
    l = NULL;
    CHECK_EQ_INT(store_listen_open("postgresql://[::1", "ok_name", &l), PD_EINVAL);
    CHECK(l == NULL);
    CHECK_EQ_INT(store_listen_open(url, "_ok", &l), 0);
    CHECK_EQ_INT(store_listen_socket(l), -1);
    CHECK_EQ_INT(store_listen_socket(NULL), -1);
    CHECK_EQ_INT(store_listen_connect(l), PD_EDB);
    CHECK_EQ_INT(store_listen_socket(l), -1);
    CHECK_EQ_INT(store_listen_connect(NULL), PD_EINVAL);
    store_listen_close(l);
    store_listen_close(NULL);
}

/* The database refuses the settlement write half-way (a trigger raising on
 * the second row's update, as a constraint or a disk error would): the
 * call fails with PD_EDB, the batch is rolled back, no row is half
 * settled, and a later settle (trigger gone) settles them all. */
TEST(settle_rolls_back_when_a_write_fails)
{
    UNIT_NEED_ENV(DB_ENV);
    PGconn *c = NULL;
    CHECK(setup_db(&c));
    if (!c)
        return;
    CHECK(unit_sql_ok(c, "CREATE OR REPLACE FUNCTION ldg_refuse() RETURNS trigger AS $$"
                         " BEGIN RAISE EXCEPTION 'refused by the test'; END $$ LANGUAGE plpgsql"));
    CHECK(unit_sql_ok(c, "DROP TRIGGER IF EXISTS ldg_refuse ON predictions"));
    CHECK(unit_sql_ok(c, "CREATE TRIGGER ldg_refuse BEFORE UPDATE ON predictions FOR EACH ROW"
                         " WHEN (NEW.model_version = 2 AND NEW.symbol = 'LDGGUSDT')"
                         " EXECUTE FUNCTION ldg_refuse()"));
    store_ledger *db = NULL;
    CHECK_EQ_INT(store_ledger_open(unit_db_url(), &db), 0);
    features_candle k[] = {at(0, 100.5, 99.5, 100), at(1, 103, 99.5, 102.5), at(2, 107, 101, 106),
                           at(3, 107, 105, 106), at(4, 107, 105, 106)};
    CHECK_EQ_INT(store_upsert_candles("LDGGUSDT", "1m", k, 5), 0);
    store_ledger_entry a = entry_for("LDGGUSDT", T0, 1, STORE_LEDGER_LONG);
    store_ledger_entry b = entry_for("LDGGUSDT", T0, 2, STORE_LEDGER_LONG);
    CHECK_EQ_INT(store_ledger_record(db, &a, NULL), 0);
    CHECK_EQ_INT(store_ledger_record(db, &b, NULL), 0);
    size_t settled = 99;
    int64_t now = util_now();
    int rc = store_ledger_settle(db, "LDGGUSDT", "1m", now, predict_resolve, &settled);
    CHECK_EQ_INT(rc, PD_EDB);
    CHECK_EQ_STR(unit_sql_text(c, "SELECT count(*) FROM predictions WHERE symbol = 'LDGGUSDT'"
                                  " AND outcome IS NOT NULL"),
                 "0");
    CHECK(unit_sql_ok(c, "DROP TRIGGER ldg_refuse ON predictions"));
    CHECK_EQ_INT(store_ledger_settle(db, "LDGGUSDT", "1m", now, predict_resolve, &settled), 0);
    CHECK_EQ_INT(settled, 2);
    CHECK_EQ_STR(unit_sql_text(c, "SELECT string_agg(outcome, ',' ORDER BY model_version)"
                                  " FROM predictions WHERE symbol = 'LDGGUSDT'"),
                 "TP3,TP3");
    store_ledger_close(db);
    PQfinish(c);
    store_shutdown();
}

int main(void)
{
    util_log_configure(UTIL_LOG_ERROR, false);
    RUN(long_target_first);
    RUN(long_stop_first);
    RUN(exact_touches_of_a_level_count);
    RUN(stop_and_target_in_one_candle_is_the_stop);
    RUN(target_then_stop_in_a_later_candle_keeps_the_target);
    RUN(tp3_ends_the_trade);
    RUN(expiry_marks_to_market);
    RUN(target_then_expiry_keeps_the_target);
    RUN(incomplete_horizon_stays_open);
    RUN(gaps_and_foreign_candles);
    RUN(short_mirror);
    RUN(no_trade_rows_get_a_realised_class);
    RUN(invalid_entries_are_refused);
    RUN(record_is_idempotent);
    RUN(settle_writes_outcomes);
    RUN(performance_figures_match_rows);
    RUN(history_pages);
    RUN(rows_of_a_newer_version_read_as_open_or_fail_the_page);
    RUN(listen_receives_and_survives_a_lost_connection);
    RUN(publish_reaches_a_subscriber);
    RUN(backtests_keep_the_latest_run_per_version);
    RUN(settle_leaves_rows_it_cannot_resolve_open);
    RUN(ledger_with_the_database_down);
    RUN(publisher_survives_a_redis_that_is_down_or_refuses);
    RUN(listener_arguments_and_a_database_that_is_down);
    RUN(settle_rolls_back_when_a_write_fails);
    return unit_report();
}
