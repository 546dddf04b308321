/*
 * The ledger's documented refusals (store/store.h), each function and each
 * argument: a bad entry, series, window, page size, time range or cursor is
 * refused with its code before any I/O. The handle points at a port where
 * nothing listens, so a check that let the call through would answer
 * PD_EDB instead of the code the contract names; the last test shows that
 * difference with well-formed arguments.
 */
#include <math.h>

#include "predict/predict.h"
#include "store/store.h"
#include "tests/unit/unit.h"
#include "util/util.h"

static const char *const DOWN = "postgresql://postgres@127.0.0.1:1/none?connect_timeout=2";

static store_ledger_entry good_entry(void)
{
    store_ledger_entry e = {.symbol = "CONTRACTUSDT",
                            .timeframe = "1h",
                            .candle_time = 1717999200,
                            .version = 1,
                            .direction = STORE_LEDGER_LONG,
                            .confidence = 0.6,
                            .probs = {0.6, 0.1, 0.3},
                            .entry = 100,
                            .stop_loss = 98,
                            .tp = {102, 104, 106},
                            .atr = 1.5,
                            .horizon = 4};
    return e;
}

static store_ledger *down_ledger(void)
{
    store_ledger *db = NULL;
    if (store_ledger_open(DOWN, &db) != 0)
        return NULL;
    return db;
}

TEST(record_refuses_bad_entries)
{
    store_ledger *db = down_ledger();
    CHECK(db != NULL);
    bool ins = false;
    CHECK_EQ_INT(store_ledger_record(db, NULL, &ins), PD_EINVAL);
    store_ledger_entry e = good_entry();
    e.version = 0;
    CHECK_EQ_INT(store_ledger_record(db, &e, &ins), PD_EINVAL);
    e = good_entry();
    e.direction = STORE_LEDGER_NO_TRADE + 1;
    CHECK_EQ_INT(store_ledger_record(db, &e, &ins), PD_EINVAL);
    e.direction = -1;
    CHECK_EQ_INT(store_ledger_record(db, &e, &ins), PD_EINVAL);
    e = good_entry();
    e.candle_time = -60;
    CHECK_EQ_INT(store_ledger_record(db, &e, &ins), PD_EINVAL);
    e = good_entry();
    snprintf(e.symbol, sizeof e.symbol, "btc-usdt");
    CHECK_EQ_INT(store_ledger_record(db, &e, &ins), PD_ESYMBOL);
    e = good_entry();
    snprintf(e.timeframe, sizeof e.timeframe, "2h");
    CHECK_EQ_INT(store_ledger_record(db, &e, &ins), PD_ETIMEFRAME);
    store_ledger_close(db);
}

TEST(record_many_checks_every_entry_before_writing_any)
{
    store_ledger *db = down_ledger();
    CHECK(db != NULL);
    store_ledger_entry e[3] = {good_entry(), good_entry(), good_entry()};
    bool ins[3];
    CHECK_EQ_INT(store_ledger_record_many(db, NULL, 3, ins), PD_EINVAL);
    CHECK_EQ_INT(store_ledger_record_many(db, e, 3, NULL), PD_EINVAL);
    /* nothing to write: no I/O, no error */
    CHECK_EQ_INT(store_ledger_record_many(db, NULL, 0, NULL), 0);
    e[2].version = 0; /* the last one is bad: the first two are not written either */
    CHECK_EQ_INT(store_ledger_record_many(db, e, 3, ins), PD_EINVAL);
    e[2] = good_entry();
    snprintf(e[1].timeframe, sizeof e[1].timeframe, "7m");
    CHECK_EQ_INT(store_ledger_record_many(db, e, 3, ins), PD_ETIMEFRAME);
    store_ledger_close(db);
}

TEST(series_arguments_are_checked_everywhere)
{
    store_ledger *db = down_ledger();
    CHECK(db != NULL);
    size_t n = 9, settled = 9;
    CHECK_EQ_INT(store_ledger_settle(db, "CONTRACTUSDT", "1h", 0, NULL, &settled), PD_EINVAL);
    CHECK_EQ_INT(store_ledger_settle(db, "bad symbol", "1h", 0, predict_resolve, &settled),
                 PD_ESYMBOL);
    CHECK_EQ_INT(store_ledger_settle(db, "CONTRACTUSDT", "1y", 0, predict_resolve, &settled),
                 PD_ETIMEFRAME);
    CHECK_EQ_INT(settled, 9); /* untouched */

    store_ledger_live *l = NULL;
    CHECK_EQ_INT(store_ledger_live_stats(db, "CONTRACTUSDT", NULL, &l, &n), PD_EINVAL);
    CHECK_EQ_INT(store_ledger_live_stats(db, NULL, "1h", &l, &n), PD_EINVAL);
    CHECK_EQ_INT(store_ledger_live_stats(db, NULL, NULL, NULL, &n), PD_EINVAL);
    CHECK_EQ_INT(store_ledger_live_stats(db, NULL, NULL, &l, NULL), PD_EINVAL);
    CHECK_EQ_INT(store_ledger_live_stats(db, "x", "1h", &l, &n), PD_ESYMBOL);
    CHECK_EQ_INT(store_ledger_live_stats(db, "CONTRACTUSDT", "3m", &l, &n), PD_ETIMEFRAME);

    store_ledger_perf *pf = NULL;
    CHECK_EQ_INT(store_ledger_performance(db, "CONTRACTUSDT", "1h", 0, &pf, &n), PD_EINVAL);
    CHECK_EQ_INT(store_ledger_performance(db, "CONTRACTUSDT", "1h", 100001, &pf, &n), PD_EINVAL);
    CHECK_EQ_INT(store_ledger_performance(db, "CONTRACTUSDT", "1h", 50, NULL, &n), PD_EINVAL);
    CHECK_EQ_INT(store_ledger_performance(db, "CONTRACTUSDT", "1h", 50, &pf, NULL), PD_EINVAL);
    CHECK_EQ_INT(store_ledger_performance(db, NULL, "1h", 50, &pf, &n), PD_ESYMBOL);
    CHECK_EQ_INT(store_ledger_performance(db, "CONTRACTUSDT", NULL, 50, &pf, &n), PD_ETIMEFRAME);

    CHECK_EQ_INT(store_ledger_backtest_save(db, "CONTRACTUSDT", "1h", 0, 0, 0, 10, "{}"),
                 PD_EINVAL);
    CHECK_EQ_INT(store_ledger_backtest_save(db, "CONTRACTUSDT", "1h", 1, 0, 0, 10, NULL),
                 PD_EINVAL);
    CHECK_EQ_INT(store_ledger_backtest_save(db, "CONTRACTUSDT", "1h", 1, 0, 0, NAN, "{}"),
                 PD_EINVAL);
    CHECK_EQ_INT(store_ledger_backtest_save(db, "contract", "1h", 1, 0, 0, 10, "{}"), PD_ESYMBOL);
    store_ledger_backtest *b = NULL;
    CHECK_EQ_INT(store_ledger_backtests(db, "CONTRACTUSDT", "1h", NULL, &n), PD_EINVAL);
    CHECK_EQ_INT(store_ledger_backtests(db, "CONTRACTUSDT", "1h", &b, NULL), PD_EINVAL);
    CHECK_EQ_INT(store_ledger_backtests(db, "CONTRACTUSDT", "9h", &b, &n), PD_ETIMEFRAME);
    store_ledger_close(db);
}

TEST(history_checks_its_page_range_and_cursor)
{
    store_ledger *db = down_ledger();
    CHECK(db != NULL);
    store_ledger_row *rows = NULL;
    size_t n = 0;
    bool more = false;
    store_ledger_query q = {.limit = 10};
    CHECK_EQ_INT(store_ledger_history(db, NULL, &rows, &n, &more), PD_EINVAL);
    CHECK_EQ_INT(store_ledger_history(db, &q, NULL, &n, &more), PD_EINVAL);
    CHECK_EQ_INT(store_ledger_history(db, &q, &rows, NULL, &more), PD_EINVAL);
    q.limit = 0;
    CHECK_EQ_INT(store_ledger_history(db, &q, &rows, &n, &more), PD_EINVAL);
    q.limit = 1001;
    CHECK_EQ_INT(store_ledger_history(db, &q, &rows, &n, &more), PD_EINVAL);
    q.limit = 10;
    q.from = -1;
    CHECK_EQ_INT(store_ledger_history(db, &q, &rows, &n, &more), PD_EINVAL);
    q.from = 0;
    q.to = -1;
    CHECK_EQ_INT(store_ledger_history(db, &q, &rows, &n, &more), PD_EINVAL);
    q.to = 0;
    q.symbol = "not a symbol";
    CHECK_EQ_INT(store_ledger_history(db, &q, &rows, &n, &more), PD_ESYMBOL);
    q.symbol = NULL;
    q.timeframe = "15s";
    CHECK_EQ_INT(store_ledger_history(db, &q, &rows, &n, &more), PD_ETIMEFRAME);
    q.timeframe = NULL;
    store_ledger_cursor c = {
        .candle_time = 1717999200, .symbol = "CONTRACTUSDT", .timeframe = "1h", .version = 1};
    q.after = &c;
    c.version = 0;
    CHECK_EQ_INT(store_ledger_history(db, &q, &rows, &n, &more), PD_EINVAL);
    c.version = 1;
    c.candle_time = -1;
    CHECK_EQ_INT(store_ledger_history(db, &q, &rows, &n, &more), PD_EINVAL);
    c.candle_time = 1717999200;
    snprintf(c.symbol, sizeof c.symbol, "x");
    CHECK_EQ_INT(store_ledger_history(db, &q, &rows, &n, &more), PD_EINVAL);
    snprintf(c.symbol, sizeof c.symbol, "CONTRACTUSDT");
    snprintf(c.timeframe, sizeof c.timeframe, "2d");
    CHECK_EQ_INT(store_ledger_history(db, &q, &rows, &n, &more), PD_EINVAL);
    store_ledger_close(db);
}

TEST(well_formed_calls_reach_the_database_and_say_it_is_down)
{
    /* the control: the same handle with good arguments does try the
     * database, so the codes above came from the checks */
    store_ledger *db = down_ledger();
    CHECK(db != NULL);
    store_ledger_entry e = good_entry();
    bool ins = true;
    CHECK_EQ_INT(store_ledger_record(db, &e, &ins), PD_EDB);
    CHECK_EQ_INT(store_ledger_record_many(db, &e, 1, &ins), PD_EDB);
    store_ledger_row *rows = NULL;
    size_t n = 0;
    bool more = true;
    store_ledger_cursor c = {
        .candle_time = 1717999200, .symbol = "CONTRACTUSDT", .timeframe = "1h", .version = 1};
    store_ledger_query q = {.limit = 1000,
                            .symbol = "CONTRACTUSDT",
                            .timeframe = "1h",
                            .from = 1,
                            .to = 2000000000,
                            .after = &c};
    CHECK_EQ_INT(store_ledger_history(db, &q, &rows, &n, &more), PD_EDB);
    store_ledger_perf *pf = NULL;
    CHECK_EQ_INT(store_ledger_performance(db, "CONTRACTUSDT", "1h", 100000, &pf, &n), PD_EDB);
    store_ledger_live *l = NULL;
    CHECK_EQ_INT(store_ledger_live_stats(db, "CONTRACTUSDT", "1h", &l, &n), PD_EDB);
    size_t settled = 0;
    CHECK_EQ_INT(store_ledger_settle(db, "CONTRACTUSDT", "1h", 0, predict_resolve, &settled),
                 PD_EDB);
    store_ledger_close(db);
    CHECK_EQ_INT(store_ledger_open(DOWN, NULL), PD_EINVAL);
}

TEST(resolver_refuses_levels_it_cannot_settle)
{
    features_candle c[2] = {
        {.t = 1717999200 + 3600, .open = 100, .high = 101, .low = 99, .close = 100, .volume = 1},
        {.t = 1717999200 + 7200, .open = 100, .high = 103, .low = 99, .close = 102, .volume = 1}};
    store_ledger_resolution r = {.outcome = 42};
    store_ledger_entry e = good_entry();
    /* each level must be a positive finite price */
    for (int i = 0; i < 5; i++) {
        e = good_entry();
        double *lv[5] = {&e.entry, &e.stop_loss, &e.tp[0], &e.tp[1], &e.tp[2]};
        *lv[i] = i % 2 ? -1 : INFINITY;
        CHECK_EQ_INT(predict_resolve(&e, 3600, c, 2, c[1].t, &r), PD_EINVAL);
    }
    /* LONG targets must rise from the entry */
    e = good_entry();
    e.tp[0] = 100;
    CHECK_EQ_INT(predict_resolve(&e, 3600, c, 2, c[1].t, &r), PD_EINVAL);
    e = good_entry();
    e.tp[2] = 103;
    CHECK_EQ_INT(predict_resolve(&e, 3600, c, 2, c[1].t, &r), PD_EINVAL);
    /* SHORT targets must fall from the entry */
    store_ledger_entry s = good_entry();
    s.direction = STORE_LEDGER_SHORT;
    s.stop_loss = 102;
    s.tp[0] = 98;
    s.tp[1] = 96;
    s.tp[2] = 94;
    CHECK_EQ_INT(predict_resolve(&s, 3600, c, 2, c[1].t, &r), 0); /* the control */
    e = s;
    e.tp[0] = 101;
    CHECK_EQ_INT(predict_resolve(&e, 3600, c, 2, c[1].t, &r), PD_EINVAL);
    e = s;
    e.tp[1] = 99;
    CHECK_EQ_INT(predict_resolve(&e, 3600, c, 2, c[1].t, &r), PD_EINVAL);
    e = s;
    e.tp[2] = 97;
    CHECK_EQ_INT(predict_resolve(&e, 3600, c, 2, c[1].t, &r), PD_EINVAL);
    /* a NO_TRADE row takes the side of its levels, either one */
    e = s;
    e.direction = STORE_LEDGER_NO_TRADE;
    CHECK_EQ_INT(predict_resolve(&e, 3600, c, 2, c[1].t, &r), 0);
    /* settled once its realised class is known: 103 reached the mirror
     * LONG's first target (102) before anything else */
    CHECK_EQ_INT(r.outcome, STORE_OUTCOME_NONE);
    CHECK_EQ_INT(r.realised, STORE_LEDGER_LONG);
    /* a candle not closed by last_closed_open is not counted */
    e = good_entry();
    e.horizon = 2;
    CHECK_EQ_INT(predict_resolve(&e, 3600, c, 2, c[0].t, &r), 0);
    CHECK_EQ_INT(r.outcome, STORE_OUTCOME_OPEN);
    CHECK_EQ_INT(predict_resolve(&e, 3600, c, 2, c[1].t, &r), 0);
    CHECK_EQ_INT(r.outcome, STORE_OUTCOME_TP1); /* 103 passes 102 in the second */
}

int main(void)
{
    util_log_configure(UTIL_LOG_ERROR, false);
    RUN(record_refuses_bad_entries);
    RUN(record_many_checks_every_entry_before_writing_any);
    RUN(series_arguments_are_checked_everywhere);
    RUN(history_checks_its_page_range_and_cursor);
    RUN(well_formed_calls_reach_the_database_and_say_it_is_down);
    RUN(resolver_refuses_levels_it_cannot_settle);
    return unit_report();
}
