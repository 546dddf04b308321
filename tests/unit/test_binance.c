/*
 * test_binance.c: the Binance message parsers and URL rules of feed/, and
 * the store's leader locks and exchange symbols against the real
 * PostgreSQL of tests/run (skipped without it). The connector itself runs
 * against the stand-in exchange in tests/integration/test_exchange.py.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "feed/feed.h"
#include "feed/net_internal.h"
#include "store/store.h"
#include "unit.h"
#include "util/util.h"

TEST(urls_parse_and_refuse)
{
    feed__url u;
    char why[128];
    CHECK_EQ_INT(feed__url_parse("wss://stream.binance.com:9443", &u, why, sizeof why), 0);
    CHECK(u.tls);
    CHECK_EQ_STR(u.host, "stream.binance.com");
    CHECK_EQ_INT(u.port, 9443);
    CHECK_EQ_STR(u.path, "/");
    CHECK_EQ_INT(feed__url_parse("http://127.0.0.1:8080/x?y=1", &u, why, sizeof why), 0);
    CHECK(!u.tls);
    CHECK_EQ_INT(u.port, 8080);
    CHECK_EQ_STR(u.path, "/x?y=1");
    CHECK_EQ_INT(feed__url_parse("https://api.binance.com", &u, why, sizeof why), 0);
    CHECK_EQ_INT(u.port, 443);
    CHECK_EQ_INT(feed__url_parse("ftp://x", &u, why, sizeof why), PD_EINVAL);
    CHECK_EQ_INT(feed__url_parse("ws://", &u, why, sizeof why), PD_EINVAL);
    CHECK_EQ_INT(feed__url_parse("ws://h:0", &u, why, sizeof why), PD_EINVAL);
    CHECK_EQ_INT(feed__url_parse("ws://h:99999", &u, why, sizeof why), PD_EINVAL);
    CHECK_EQ_INT(feed__url_parse("ws://h:12ab", &u, why, sizeof why), PD_EINVAL);
    CHECK_EQ_INT(feed__url_parse(NULL, &u, why, sizeof why), PD_EINVAL);
}

TEST(connector_arguments_checked)
{
    feed_connector *c = NULL;
    char why[256];
    feed_binance_config cfg = {0};
    CHECK_EQ_INT(feed_binance_open(&cfg, "BTCUSDT,ETHUSDT", &c, why, sizeof why), 0);
    CHECK(c && !strcmp(c->name, "binance") && c->metrics && c->status);
    feed_connector_status st;
    c->status(c, &st);
    CHECK_EQ_INT(st.state, FEED_STATE_CONNECTING);
    feed_connector_free(c); /* never started: stop is a no-op */
    c = NULL;
    CHECK_EQ_INT(feed_binance_open(&cfg, "btcusdt", &c, why, sizeof why), PD_ESYMBOL);
    CHECK_EQ_INT(feed_binance_open(&cfg, "", &c, why, sizeof why), PD_EINVAL);
    CHECK_EQ_INT(feed_binance_open(&cfg, "BTCUSDT,,ETHUSDT", &c, why, sizeof why), PD_EINVAL);
    CHECK_EQ_INT(feed_binance_open(&cfg, "BTCUSDT,BTCUSDT", &c, why, sizeof why), PD_EINVAL);
    cfg.ws_url = "https://stream.binance.com";
    CHECK_EQ_INT(feed_binance_open(&cfg, "BTCUSDT", &c, why, sizeof why), PD_EINVAL);
    CHECK(strstr(why, "PREDICTD_BINANCE_WS_URL") != NULL);
    cfg.ws_url = NULL;
    cfg.rest_url = "wss://api.binance.com";
    CHECK_EQ_INT(feed_binance_open(&cfg, "BTCUSDT", &c, why, sizeof why), PD_EINVAL);
    CHECK(strstr(why, "PREDICTD_BINANCE_REST_URL") != NULL);
    CHECK(c == NULL);
}

TEST(klines_parse_keeps_closed_minutes)
{
    /* Binance's documented layout: strings for prices and volumes */
    const char *body =
        "[[1570752000000,\"0.00141342\",\"0.00141557\",\"0.00141266\",\"0.00141418\","
        "\"1482.0\",1570752059999,\"2.09\",12,\"700.0\",\"0.99\",\"0\"],"
        "[1570752060000,\"0.00141597\",\"0.00141658\",\"0.00141597\",\"0.00141658\","
        "\"522.0\",1570752119999,\"0.74\",3,\"0\",\"0\",\"0\"]]";
    features_candle *c = NULL;
    size_t n = 0;
    char why[128];
    /* at 00:01:30 the second minute is still open */
    CHECK_EQ_INT(
        feed__binance_parse_klines(body, strlen(body), 1570752090000, &c, &n, why, sizeof why), 0);
    CHECK_EQ_INT(n, 1);
    CHECK_EQ_INT(c[0].t, 1570752000);
    CHECK(c[0].open == 0.00141342 && c[0].high == 0.00141557 && c[0].low == 0.00141266 &&
          c[0].close == 0.00141418 && c[0].volume == 1482.0);
    free(c);
    CHECK_EQ_INT(
        feed__binance_parse_klines(body, strlen(body), 1570752120000, &c, &n, why, sizeof why), 0);
    CHECK_EQ_INT(n, 2);
    free(c);
    CHECK_EQ_INT(feed__binance_parse_klines("[]", 2, 1, &c, &n, why, sizeof why), 0);
    CHECK_EQ_INT(n, 0);
    free(c);
    static const char *bad[] = {
        "{\"code\":-1121}",                                         /* not an array */
        "[[1570752000000,\"0.1\"",                                  /* truncated */
        "[[1570752000000,\"x\",\"0.2\",\"0.1\",\"0.1\",\"1\"]]",    /* not a number */
        "[[1570752000001,\"0.1\",\"0.2\",\"0.1\",\"0.1\",\"1\"]]",  /* not on a minute */
        "[[1570752000000,\"0.1\",\"0.05\",\"0.1\",\"0.1\",\"1\"]]", /* high < open */
        "[[1570752000000,\"0.1\",\"0.2\",\"0.1\",\"0.1\",\"-1\"]]", /* negative volume */
        "[[1570752060000,\"0.1\",\"0.2\",\"0.1\",\"0.1\",\"1\"],"
        "[1570752000000,\"0.1\",\"0.2\",\"0.1\",\"0.1\",\"1\"]]", /* out of order */
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        c = NULL;
        int rc = feed__binance_parse_klines(bad[i], strlen(bad[i]), INT64_C(1) << 60, &c, &n, why,
                                            sizeof why);
        if (rc != PD_EPARSE)
            printf("  case %zu: rc %d\n", i, rc);
        CHECK_EQ_INT(rc, PD_EPARSE);
        CHECK(c == NULL);
    }
}

TEST(trade_messages_parse_and_refuse)
{
    const char *m = "{\"stream\":\"btcusdt@trade\",\"data\":{\"e\":\"trade\",\"E\":1672515782136,"
                    "\"s\":\"BTCUSDT\",\"t\":12345,\"p\":\"0.001\",\"q\":\"100\","
                    "\"T\":1672515782136,\"m\":true,\"M\":true}}";
    feed_trade t;
    char stream[64], why[128];
    CHECK_EQ_INT(
        feed__binance_parse_trade(m, strlen(m), stream, sizeof stream, &t, why, sizeof why), 0);
    CHECK_EQ_STR(stream, "btcusdt@trade");
    CHECK_EQ_INT(t.id, 12345);
    CHECK_EQ_INT(t.t_ms, 1672515782136);
    CHECK_EQ_INT(t.side, FEED_SIDE_SELL); /* the buyer was the maker: the taker sold */
    CHECK(t.price == 0.001 && t.amount == 100);
    static const char *bad[] = {
        "{not json",
        "{\"e\":\"trade\"}", /* a raw stream message, not a combined one */
        "{\"stream\":\"btcusdt@kline_1m\",\"data\":{\"e\":\"kline\"}}",
        "{\"stream\":\"btcusdt@trade\",\"data\":{\"e\":\"trade\",\"t\":1,\"T\":\"x\","
        "\"p\":\"1\",\"q\":\"1\",\"m\":true}}",
        "{\"stream\":\"btcusdt@trade\",\"data\":{\"e\":\"trade\",\"t\":1,\"T\":5,"
        "\"p\":\"-1\",\"q\":\"1\",\"m\":true}}",
        "{\"stream\":\"btcusdt@trade\",\"data\":{\"e\":\"trade\",\"t\":1,\"T\":5,"
        "\"p\":\"1\",\"q\":\"1\"}}",
        "[]",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        CHECK_EQ_INT(feed__binance_parse_trade(bad[i], strlen(bad[i]), stream, sizeof stream, &t,
                                               why, sizeof why),
                     PD_EPARSE);
}

TEST(rest_down_fails_after_its_attempts)
{
    feed__rest *r = NULL;
    char why[256];
    /* port 9 (discard) on loopback: nothing listens */
    CHECK_EQ_INT(feed__rest_new("http://127.0.0.1:9", NULL, 1, &r, why, sizeof why), 0);
    util_buf b;
    util_buf_init(&b);
    CHECK_EQ_INT(feed__rest_get(r, "/api/v3/time", &b, why, sizeof why), PD_EIO);
    CHECK(why[0] != '\0');
    feed__rest_stats st;
    feed__rest_stats_get(r, &st);
    CHECK_EQ_INT(st.requests, 1);
    CHECK_EQ_INT(st.errors, 1);
    util_buf_cleanup(&b);
    feed__rest_free(r);
    CHECK_EQ_INT(feed__rest_new("ws://x", NULL, 1, &r, why, sizeof why), PD_EINVAL);
}

TEST(ws_connect_refused_is_an_error)
{
    feed__ws *w = NULL;
    char why[256];
    CHECK_EQ_INT(feed__ws_connect("ws://127.0.0.1:9/stream", 2000, &w, why, sizeof why), PD_EIO);
    CHECK(w == NULL && strstr(why, "cannot connect") != NULL);
    CHECK_EQ_INT(feed__ws_connect("http://127.0.0.1:9/", 2000, &w, why, sizeof why), PD_EINVAL);
}

static const char *db_url(void)
{
    return getenv("PREDICTD_TEST_DATABASE_URL");
}

TEST(leader_lock_has_one_holder)
{
    UNIT_NEED_ENV("PREDICTD_TEST_DATABASE_URL");
    store_lock *a = NULL, *b = NULL;
    CHECK_EQ_INT(store_lock_open(db_url(), INT64_C(424242), &a), 0);
    CHECK_EQ_INT(store_lock_open(db_url(), INT64_C(424242), &b), 0);
    bool ha = false, hb = true;
    CHECK_EQ_INT(store_lock_try(a, &ha), 0);
    CHECK(ha);
    CHECK_EQ_INT(store_lock_try(b, &hb), 0);
    CHECK(!hb);
    CHECK_EQ_INT(store_lock_check(a, &ha), 0);
    CHECK(ha);
    CHECK_EQ_INT(store_lock_try(a, &ha), 0); /* held: checked, still held */
    CHECK(ha);
    store_lock_release(a); /* the stand-by takes over */
    CHECK_EQ_INT(store_lock_try(b, &hb), 0);
    CHECK(hb);
    CHECK_EQ_INT(store_lock_try(a, &ha), 0);
    CHECK(!ha);
    store_lock_close(b); /* closing releases too */
    CHECK_EQ_INT(store_lock_try(a, &ha), 0);
    CHECK(ha);
    store_lock_close(a);
    store_lock_close(NULL);
    CHECK_EQ_INT(store_lock_open("host='unterminated", 1, &a), PD_EINVAL);
    /* an unreachable database: an error, not a lock */
    CHECK_EQ_INT(store_lock_open("postgresql://127.0.0.1:9/x?connect_timeout=2", 1, &a), 0);
    ha = true;
    CHECK_EQ_INT(store_lock_try(a, &ha), PD_EDB);
    store_lock_close(a);
}

TEST(exchange_symbols_round_trip)
{
    UNIT_NEED_ENV("PREDICTD_TEST_DATABASE_URL");
    const char *root = getenv("PREDICTD_ROOT");
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/db", root ? root : ".");
    CHECK_EQ_INT(store_init(db_url(), NULL, false), 0);
    CHECK_EQ_INT(store_migrate(dir), 0);
    store_markets *m = NULL;
    CHECK_EQ_INT(store_markets_open(db_url(), &m), 0);
    store_market in = {.venue = "binance",
                       .symbol = "BTCUSDT",
                       .status = "TRADING",
                       .tick_size = 0.01,
                       .step_size = 0.00001};
    CHECK_EQ_INT(store_market_put(m, &in), 0);
    in.tick_size = 0.1; /* a change replaces */
    CHECK_EQ_INT(store_market_put(m, &in), 0);
    store_market out;
    CHECK_EQ_INT(store_market_get(m, "binance", "BTCUSDT", &out), 0);
    CHECK_EQ_STR(out.status, "TRADING");
    CHECK(out.tick_size == 0.1 && out.step_size == 0.00001 && out.updated_at > 0);
    CHECK_EQ_INT(store_market_get(m, "binance", "ETHUSDT", &out), PD_ENOTFOUND);
    CHECK_EQ_INT(store_market_get(m, "binance", "eth", &out), PD_ESYMBOL);
    CHECK_EQ_INT(store_market_get(m, "Binance!", "ETHUSDT", &out), PD_EINVAL);
    in.tick_size = 0;
    CHECK_EQ_INT(store_market_put(m, &in), PD_EINVAL);
    in.tick_size = NAN;
    CHECK_EQ_INT(store_market_put(m, &in), PD_EINVAL);
    store_markets_close(m);
    store_shutdown();
}

int main(void)
{
    util_log_configure(UTIL_LOG_ERROR, false);
    RUN(urls_parse_and_refuse);
    RUN(connector_arguments_checked);
    RUN(klines_parse_keeps_closed_minutes);
    RUN(trade_messages_parse_and_refuse);
    RUN(rest_down_fails_after_its_attempts);
    RUN(ws_connect_refused_is_an_error);
    RUN(leader_lock_has_one_holder);
    RUN(exchange_symbols_round_trip);
    return unit_report();
}
