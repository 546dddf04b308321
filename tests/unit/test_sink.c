/* Unit tests for the feed sink against the real PostgreSQL of tests/run
 * (PREDICTD_TEST_DATABASE_URL): trades through feed_sink_trade become the
 * same 1m base candles the aggregator makes (with their derived series),
 * duplicates change nothing, the clock closes quiet minutes, closed
 * candles through feed_sink_candles are written as they are, bad input is
 * refused with its code, and the feed's state reaches store_feed_status.
 * Also the connector table: unknown names and bad demo arguments. */
#include <stdint.h>

#include "features/features.h"
#include "feed/feed.h"
#include "store/store.h"
#include "tests/unit/unit.h"
#include "util/util.h"

#define DB_ENV "PREDICTD_TEST_DATABASE_URL"
#define T0 1570752000000LL /* 2019-10-11T00:00:00Z, ms */
#define MIN 60000LL

static int init(void)
{
    const char *root = getenv("PREDICTD_ROOT");
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/db", root && *root ? root : ".");
    int rc = store_init(getenv(DB_ENV), NULL, false);
    return rc ? rc : store_migrate(dir);
}

static feed_trade tr(int64_t ms, int64_t id, double px, double amt)
{
    return (feed_trade){.t_ms = ms, .id = id, .side = FEED_SIDE_SELL, .price = px, .amount = amt};
}

TEST(trades_become_base_candles_and_state_is_reported)
{
    UNIT_NEED_ENV(DB_ENV);
    CHECK_EQ_INT(init(), 0);
    feed_sink *s;
    CHECK_EQ_INT(feed_sink_new("testfeed", "unit test trades", &s), 0);
    store_feed_status st;
    CHECK_EQ_INT(store_feed_status_get(&st), 0);
    CHECK_EQ_STR(st.feed, "testfeed");
    CHECK_EQ_STR(st.state, "connecting");
    CHECK(!store_feed_demo());
    feed_sink_set_state(s, FEED_STATE_CONNECTED);
    /* minute 0: 10 12 9 11; minute 1 none (flat); minute 2: 20; then the
     * clock closes minute 2 and a flat minute 3 */
    feed_trade t[] = {tr(T0 + 1000, 1, 10, 1),
                      tr(T0 + 2000, 2, 12, 1),
                      tr(T0 + 3000, 3, 9, 1),
                      tr(T0 + 4000, 4, 11, 1),
                      tr(T0 + 2000, 2, 12, 1) /* duplicate */,
                      tr(T0 + 2 * MIN + 1, 5, 20, 2)};
    for (size_t i = 0; i < sizeof t / sizeof *t; i++)
        CHECK_EQ_INT(feed_sink_trade(s, "SINKUSD", &t[i]), 0);
    CHECK_EQ_INT(feed_sink_tick(s, T0 + 4 * MIN), 0);
    features_candle *c;
    size_t n;
    CHECK_EQ_INT(store_load_range("SINKUSD", "1m", 0, 0, T0 / 1000 + 86400, &c, &n), 0);
    CHECK_EQ_INT(n, 4);
    if (n == 4) {
        CHECK(c[0].open == 10 && c[0].high == 12 && c[0].low == 9 && c[0].close == 11 &&
              c[0].volume == 4);
        CHECK(c[1].open == 11 && c[1].close == 11 && c[1].volume == 0);
        CHECK(c[2].open == 20 && c[2].volume == 2);
        CHECK(c[3].open == 20 && c[3].volume == 0);
    }
    free(c);
    /* a late trade of minute 0 corrects it, and its closed 5m bucket is not
     * there yet (forming) */
    feed_trade late = tr(T0 + 59000, 6, 30, 1);
    CHECK_EQ_INT(feed_sink_trade(s, "SINKUSD", &late), 0);
    CHECK_EQ_INT(store_load_range("SINKUSD", "1m", 0, 0, T0 / 1000 + 86400, &c, &n), 0);
    CHECK(n == 4 && c[0].high == 30 && c[0].close == 30 && c[1].close == 30);
    free(c);
    feed_sink_stats ss;
    feed_sink_stats_get(s, &ss);
    CHECK_EQ_INT(ss.trades, 6);
    CHECK_EQ_INT(ss.duplicates, 1);
    CHECK(ss.corrections >= 2); /* minute 0 and the flat minute 1 after it */
    CHECK_EQ_INT(ss.write_errors, 0);
    CHECK_EQ_INT(ss.last_candle, T0 / 1000 + 180);
    CHECK_EQ_INT(store_feed_status_get(&st), 0);
    CHECK_EQ_STR(st.state, "connected");
    CHECK_EQ_INT(st.last_candle, T0 / 1000 + 180);
    CHECK_EQ_INT(st.trades, 6);
    /* closed 1m candles as they are: the first minute of the next 5m
     * bucket closes [0, 5) */
    features_candle k = {
        .t = T0 / 1000 + 300, .open = 5, .high = 6, .low = 4, .close = 5.5, .volume = 3};
    CHECK_EQ_INT(feed_sink_candles(s, "SINKUSD", &k, 1), 0);
    CHECK_EQ_INT(store_load_range("SINKUSD", "5m", 0, 0, T0 / 1000 + 86400, &c, &n), 0);
    CHECK_EQ_INT(n, 1);
    if (n == 1)
        CHECK(c[0].open == 10 && c[0].high == 30 && c[0].close == 20 && c[0].volume == 7);
    free(c);
    /* bad input */
    CHECK_EQ_INT(feed_sink_trade(s, "bad sym", &t[0]), PD_ESYMBOL);
    feed_trade bad = tr(T0, 99, -1, 1);
    CHECK_EQ_INT(feed_sink_trade(s, "SINKUSD", &bad), PD_EINVAL);
    features_candle mis = {.t = T0 / 1000 + 301, .open = 1, .high = 1, .low = 1, .close = 1};
    CHECK_EQ_INT(feed_sink_candles(s, "SINKUSD", &mis, 1), PD_EINVAL);
    CHECK_EQ_INT(feed_sink_candles(NULL, "SINKUSD", &k, 1), PD_EINVAL);
    feed_sink_free(s);
    CHECK_EQ_INT(store_feed_status_get(&st), PD_ENOTFOUND);
    feed_sink_free(NULL);
    store_shutdown();
}

TEST(connector_table)
{
    feed_connector *c = NULL;
    char why[256] = "";
    CHECK_EQ_INT(feed_connector_new("nosuch:ABC", &c, why, sizeof why), PD_EINVAL);
    CHECK(strstr(why, "unknown feed 'nosuch'") != NULL);
    CHECK(strstr(why, "demo") != NULL); /* the known ones are listed */
    CHECK_EQ_INT(feed_connector_new("demo:/nonexistent/XXBTC_1m.csv.gz", &c, why, sizeof why),
                 PD_ENOTFOUND);
    CHECK(c == NULL);
    char path[1024];
    const char *root = getenv("PREDICTD_ROOT");
    snprintf(path, sizeof path, "demo:%s/data/demo/ETHBTC_1m_2018-01.csv.gz",
             root && *root ? root : ".");
    CHECK_EQ_INT(feed_connector_new(path, &c, why, sizeof why), 0);
    if (c) {
        CHECK_EQ_STR(c->name, "demo-replay");
        CHECK(c->source && strstr(c->source, "data/demo"));
        feed_connector_free(c); /* never started: stop is a no-op */
    }
    feed_connector_free(NULL);
    CHECK_EQ_STR(feed_state_name(FEED_STATE_BACKFILLING), "backfilling");
    CHECK_EQ_STR(feed_state_name(99), "unknown");
}

/* While the database is away the sink keeps closed candles pending (a later
 * version of a minute replaces the earlier one) and counts the failed
 * writes; when it is back, the next call writes them all. */
TEST(candles_wait_for_the_database_and_are_written_when_it_returns)
{
    UNIT_NEED_ENV(DB_ENV);
    CHECK_EQ_INT(store_init(NULL, NULL, false), 0); /* no database: writes fail with PD_EDB */
    feed_sink *s;
    CHECK_EQ_INT(feed_sink_new("testfeed", "unit test, database away", &s), 0);
    char sym[24];
    snprintf(sym, sizeof sym, "AWAY%d", (int)getpid() % 100000);
    int64_t t0 = 1570838400; /* 2019-10-12T00:00Z */
    features_candle c[3] = {{t0, 1, 2, 0.5, 1.5, 10},
                            {t0 + 60, 1.5, 2.5, 1, 2, 20},
                            {t0 + 60, 1.5, 3, 1, 2.75, 30} /* minute 1 again, corrected */};
    CHECK_EQ_INT(feed_sink_candles(s, sym, c, 2), PD_EDB);
    CHECK_EQ_INT(feed_sink_candles(s, sym, &c[2], 1), PD_EDB);
    feed_trade t = tr(t0 * 1000 + 2 * MIN + 5, 1, 7, 1);
    /* aggregated; the pending minutes are tried again and still fail */
    CHECK_EQ_INT(feed_sink_trade(s, sym, &t), PD_EDB);
    CHECK_EQ_INT(feed_sink_tick(s, t0 * 1000 + 3 * MIN), PD_EDB);
    feed_sink_stats st;
    feed_sink_stats_get(s, &st);
    CHECK_EQ_INT(st.candles_written, 0);
    CHECK_EQ_INT(st.write_errors, 4);
    CHECK_EQ_INT(st.trades, 1);
    store_shutdown();
    CHECK_EQ_INT(init(), 0); /* the database is back */
    CHECK_EQ_INT(feed_sink_tick(s, t0 * 1000 + 3 * MIN), 0);
    feed_sink_stats_get(s, &st);
    CHECK_EQ_INT(st.candles_written, 3);
    CHECK_EQ_INT(st.last_candle, t0 + 120);
    features_candle *got = NULL;
    size_t n = 0;
    CHECK_EQ_INT(store_load_range(sym, "1m", 0, 0, t0 + 86400, &got, &n), 0);
    CHECK_EQ_INT(n, 3);
    if (n == 3) {
        CHECK(got[0].t == t0 && got[0].close == 1.5 && got[0].volume == 10);
        CHECK(got[1].t == t0 + 60 && got[1].high == 3 && got[1].close == 2.75 &&
              got[1].volume == 30); /* the corrected version */
        CHECK(got[2].t == t0 + 120 && got[2].open == 7 && got[2].volume == 1);
    }
    free(got);
    /* refusals */
    CHECK_EQ_INT(feed_sink_candles(s, "not a symbol", c, 1), PD_ESYMBOL);
    CHECK_EQ_INT(feed_sink_trade(s, "bad-sym", &t), PD_ESYMBOL);
    CHECK_EQ_INT(feed_sink_candles(s, sym, NULL, 1), PD_EINVAL);
    CHECK_EQ_INT(feed_sink_candles(s, sym, NULL, 0), 0);
    CHECK_EQ_INT(feed_sink_trade(NULL, sym, &t), PD_EINVAL);
    CHECK_EQ_INT(feed_sink_tick(NULL, 0), PD_EINVAL);
    feed_sink_set_state(NULL, FEED_STATE_DOWN);
    feed_sink_note_trades(NULL, 1, 1);
    feed_sink_free(s);
    feed_sink_free(NULL);
    feed_sink *bad = NULL;
    CHECK_EQ_INT(feed_sink_new("a-feed-name-longer-than-the-status-field-holds", "x", &bad),
                 PD_EINVAL);
    CHECK_EQ_INT(feed_sink_new(NULL, "x", &bad), PD_EINVAL);
    CHECK(bad == NULL);
    CHECK_EQ_STR(feed_state_name(99), "unknown");
}

/* While the database is away a symbol keeps FEED_SINK_PENDING_MAX minutes,
 * exactly: the next new minute is refused with PD_ETOOBIG, a correction of
 * a kept one is still taken (and waits with the others), and another
 * symbol has its own room. */
TEST(a_symbol_keeps_at_most_its_pending_limit_while_the_database_is_away)
{
    CHECK_EQ_INT(store_init(NULL, NULL, false), 0); /* no database: writes fail with PD_EDB */
    feed_sink *s;
    CHECK_EQ_INT(feed_sink_new("testfeed", "unit test, database away", &s), 0);
    enum { BATCH = 1000 };
    static features_candle c[BATCH];
    int64_t t0 = 1570838400;
    int rc = 0;
    for (int64_t k = 0; k < FEED_SINK_PENDING_MAX; k += BATCH) {
        for (int i = 0; i < BATCH; i++)
            c[i] = (features_candle){t0 + 60 * (k + i), 1, 2, 0.5, 1.5, 10};
        if ((rc = feed_sink_candles(s, "FULLUSDT", c, BATCH)) != PD_EDB)
            break;
    }
    CHECK_EQ_INT(rc, PD_EDB); /* all kept */
    features_candle next = {t0 + 60 * FEED_SINK_PENDING_MAX, 1, 2, 0.5, 1.5, 10};
    CHECK_EQ_INT(feed_sink_candles(s, "FULLUSDT", &next, 1), PD_ETOOBIG);
    features_candle fix = {t0 + 60 * 5, 1, 3, 0.5, 2.5, 11}; /* a kept minute, corrected */
    CHECK_EQ_INT(feed_sink_candles(s, "FULLUSDT", &fix, 1), PD_EDB);
    features_candle late = {t0 - 60, 1, 2, 0.5, 1.5, 10}; /* an older minute is new too */
    CHECK_EQ_INT(feed_sink_candles(s, "FULLUSDT", &late, 1), PD_ETOOBIG);
    CHECK_EQ_INT(feed_sink_candles(s, "ROOMUSDT", &next, 1), PD_EDB);
    feed_sink_free(s);
    store_shutdown();
}

int main(void)
{
    RUN(trades_become_base_candles_and_state_is_reported);
    RUN(connector_table);
    RUN(a_symbol_keeps_at_most_its_pending_limit_while_the_database_is_away);
    RUN(candles_wait_for_the_database_and_are_written_when_it_returns);
    return unit_report();
}
