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
    /* a query right after the host or the port */
    CHECK_EQ_INT(feed__url_parse("ws://h:81?streams=a", &u, why, sizeof why), 0);
    CHECK(u.port == 81 && !strcmp(u.path, "/?streams=a"));
    CHECK_EQ_INT(feed__url_parse("http://h?x=1", &u, why, sizeof why), 0);
    CHECK(u.port == 80 && !strcmp(u.path, "/?x=1"));
    CHECK_EQ_INT(feed__url_parse("ws://h:", &u, why, sizeof why), PD_EINVAL);
    CHECK_EQ_STR(why, "URL has a bad port");
    CHECK_EQ_INT(feed__url_parse("ws://h:99999999999999999999999", &u, why, sizeof why),
                 PD_EINVAL);
    CHECK_EQ_INT(feed__url_parse("ws://:80/", &u, why, sizeof why), PD_EINVAL);
    CHECK_EQ_STR(why, "URL has no host (or one too long)");
    char longhost[400];
    snprintf(longhost, sizeof longhost, "ws://%0300d/", 0);
    CHECK_EQ_INT(feed__url_parse(longhost, &u, why, sizeof why), PD_EINVAL);
    CHECK_EQ_STR(why, "URL has no host (or one too long)");
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

/* Every field of a klines row of the wrong type, missing or out of range
 * is refused with the row's index; numbers where Binance sends strings are
 * read; an empty body, an object and a row that is not an array too. */
TEST(klines_rows_refused_field_by_field)
{
#define ROW(t, o, h, l, c, v) "[" t "," o "," h "," l "," c "," v ",0,\"0\",1,\"0\",\"0\",\"0\"]"
    features_candle *c = NULL;
    size_t n = 0;
    char why[128];
    /* numbers instead of strings are taken as they are */
    const char *num = "[" ROW("1570752000000", "0.5", "0.75", "0.25", "0.5", "3") "]";
    CHECK_EQ_INT(feed__binance_parse_klines(num, strlen(num), INT64_C(1) << 60, &c, &n, why,
                                            sizeof why),
                 0);
    CHECK_EQ_INT(n, 1);
    CHECK(n == 1 && c[0].open == 0.5 && c[0].high == 0.75 && c[0].low == 0.25 &&
          c[0].close == 0.5 && c[0].volume == 3);
    free(c);
    /* a flat minute without trades (volume 0, all prices equal) is valid */
    const char *flat = "[" ROW("1570752000000", "\"2\"", "\"2\"", "\"2\"", "\"2\"", "\"0\"") "]";
    CHECK_EQ_INT(feed__binance_parse_klines(flat, strlen(flat), INT64_C(1) << 60, &c, &n, why,
                                            sizeof why),
                 0);
    CHECK_EQ_INT(n, 1);
    free(c);
    static const struct {
        const char *body;
        const char *why;
    } bad[] = {
        {"", "klines: not a JSON array: "},
        {"{}", "klines: not a JSON array"},
        {"[5]", "klines: row 0 is malformed"},
        {"[[1570752000000,\"1\",\"1\",\"1\",\"1\"]]", "row 0"}, /* 5 fields */
        {"[" ROW("\"1570752000000\"", "\"1\"", "\"1\"", "\"1\"", "\"1\"", "\"1\"") "]",
         "row 0"}, /* open time a string */
        {"[" ROW("1570752000000.0", "\"1\"", "\"1\"", "\"1\"", "\"1\"", "\"1\"") "]",
         "row 0"}, /* open time a real */
        {"[" ROW("-60000", "\"1\"", "\"1\"", "\"1\"", "\"1\"", "\"1\"") "]", "row 0"},
        {"[" ROW("1570752000000", "null", "\"1\"", "\"1\"", "\"1\"", "\"1\"") "]", "row 0"},
        {"[" ROW("1570752000000", "true", "\"1\"", "\"1\"", "\"1\"", "\"1\"") "]", "row 0"},
        {"[" ROW("1570752000000", "\"\"", "\"1\"", "\"1\"", "\"1\"", "\"1\"") "]", "row 0"},
        {"[" ROW("1570752000000", "\"1x\"", "\"1\"", "\"1\"", "\"1\"", "\"1\"") "]", "row 0"},
        {"[" ROW("1570752000000", "\"1\"", "\"inf\"", "\"1\"", "\"1\"", "\"1\"") "]", "row 0"},
        {"[" ROW("1570752000000", "\"1\"", "\"1\"", "\"nan\"", "\"1\"", "\"1\"") "]", "row 0"},
        {"[" ROW("1570752000000", "\"1\"", "\"1\"", "\"1\"", "[]", "\"1\"") "]", "row 0"},
        {"[" ROW("1570752000000", "\"1\"", "\"1\"", "\"1\"", "\"1\"", "{}") "]", "row 0"},
        {"[" ROW("1570752000000", "\"0\"", "\"1\"", "\"0\"", "\"1\"", "\"1\"") "]",
         "row 0"}, /* open 0 */
        {"[" ROW("1570752000000", "\"1\"", "\"1\"", "\"-1\"", "\"1\"", "\"1\"") "]",
         "row 0"}, /* negative low */
        {"[" ROW("1570752000000", "\"1\"", "\"2\"", "\"1\"", "\"0\"", "\"1\"") "]",
         "row 0"}, /* close 0 */
        {"[" ROW("1570752000000", "\"1\"", "\"0.5\"", "\"0.4\"", "\"0.45\"", "\"1\"") "]",
         "row 0"}, /* high under open */
        {"[" ROW("1570752000000", "\"1\"", "\"2\"", "\"1\"", "\"3\"", "\"1\"") "]",
         "row 0"}, /* high under close */
        {"[" ROW("1570752000000", "\"1\"", "\"2\"", "\"1.5\"", "\"1.8\"", "\"1\"") "]",
         "row 0"}, /* low over open */
        {"[" ROW("1570752000000", "\"1.5\"", "\"2\"", "\"1.2\"", "\"1.1\"", "\"1\"") "]",
         "row 0"}, /* low over close */
        {"[" ROW("1570752000000", "\"1\"", "\"1\"", "\"1\"", "\"1\"", "\"1\"") ","
             ROW("1570752000000", "\"1\"", "\"1\"", "\"1\"", "\"1\"", "\"1\"") "]",
         "row 1"}, /* the same minute twice */
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        c = NULL;
        why[0] = '\0';
        int rc = feed__binance_parse_klines(bad[i].body, strlen(bad[i].body), INT64_C(1) << 60, &c,
                                            &n, why, sizeof why);
        if (rc != PD_EPARSE || c != NULL || !strstr(why, bad[i].why))
            UNIT_FAIL_("case %zu: rc %d, why \"%s\" (want \"%s\")", i, rc, why, bad[i].why);
    }
#undef ROW
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

/* Each field of a trade event missing or of the wrong type is refused;
 * m false is a buy by the taker. */
TEST(trade_fields_refused_one_by_one)
{
    feed_trade t;
    char stream[64], why[128];
    const char *buy = "{\"stream\":\"ethbtc@trade\",\"data\":{\"e\":\"trade\",\"t\":7,"
                      "\"p\":2.5,\"q\":\"0\",\"T\":0,\"m\":false}}";
    CHECK_EQ_INT(
        feed__binance_parse_trade(buy, strlen(buy), stream, sizeof stream, &t, why, sizeof why),
        0);
    CHECK_EQ_INT(t.side, FEED_SIDE_BUY);
    CHECK(t.price == 2.5 && t.amount == 0 && t.t_ms == 0 && t.id == 7);
    static const struct {
        const char *msg, *why;
    } bad[] = {
        {"{\"data\":{\"e\":\"trade\"}}", "not a combined-stream message"},
        {"{\"stream\":5,\"data\":{}}", "not a combined-stream message"},
        {"{\"stream\":\"x@trade\",\"data\":{\"t\":1}}", "not a trade event"},
        {"{\"stream\":\"x@trade\",\"data\":{\"e\":7}}", "not a trade event"},
        {"{\"stream\":\"x@trade\",\"data\":{\"e\":\"trade\",\"t\":\"1\",\"p\":\"1\",\"q\":\"1\","
         "\"T\":5,\"m\":true}}",
         "missing or bad fields"}, /* id a string */
        {"{\"stream\":\"x@trade\",\"data\":{\"e\":\"trade\",\"t\":1,\"p\":\"1\",\"q\":\"1\","
         "\"T\":5,\"m\":1}}",
         "missing or bad fields"}, /* m not a boolean */
        {"{\"stream\":\"x@trade\",\"data\":{\"e\":\"trade\",\"t\":1,\"q\":\"1\",\"T\":5,"
         "\"m\":true}}",
         "missing or bad fields"}, /* no price */
        {"{\"stream\":\"x@trade\",\"data\":{\"e\":\"trade\",\"t\":1,\"p\":\"0\",\"q\":\"1\","
         "\"T\":5,\"m\":true}}",
         "missing or bad fields"}, /* price 0 */
        {"{\"stream\":\"x@trade\",\"data\":{\"e\":\"trade\",\"t\":1,\"p\":\"1\",\"q\":\"-2\","
         "\"T\":5,\"m\":true}}",
         "missing or bad fields"}, /* negative quantity */
        {"{\"stream\":\"x@trade\",\"data\":{\"e\":\"trade\",\"t\":1,\"p\":\"1\",\"q\":\"x\","
         "\"T\":5,\"m\":true}}",
         "missing or bad fields"}, /* quantity not a number */
        {"{\"stream\":\"x@trade\",\"data\":{\"e\":\"trade\",\"t\":1,\"p\":\"1\",\"q\":\"1\","
         "\"T\":-1,\"m\":true}}",
         "missing or bad fields"}, /* time before 1970 */
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        why[0] = '\0';
        int rc = feed__binance_parse_trade(bad[i].msg, strlen(bad[i].msg), stream, sizeof stream,
                                           &t, why, sizeof why);
        if (rc != PD_EPARSE || !strstr(why, bad[i].why))
            UNIT_FAIL_("case %zu: rc %d, why \"%s\"", i, rc, why);
    }
}

/* The connector's configuration refused with the variable or the symbol
 * at fault: no configuration, URLs that do not parse, symbols too long or
 * too many; PREDICTD_FEED's table names what it knows. */
TEST(connector_configuration_refused_with_its_reason)
{
    feed_connector *c = NULL;
    char why[256] = "";
    feed_binance_config cfg = {0};
    CHECK_EQ_INT(feed_binance_open(NULL, "BTCUSDT", &c, why, sizeof why), PD_EINVAL);
    CHECK_EQ_STR(why, "binance: no configuration");
    CHECK_EQ_INT(feed_binance_open(&cfg, NULL, &c, why, sizeof why), PD_EINVAL);
    cfg.ws_url = "ws://stream.example:0";
    CHECK_EQ_INT(feed_binance_open(&cfg, "BTCUSDT", &c, why, sizeof why), PD_EINVAL);
    CHECK(strstr(why, "PREDICTD_BINANCE_WS_URL: ") != NULL && !strstr(why, "must start"));
    cfg.ws_url = NULL;
    cfg.rest_url = "http://";
    CHECK_EQ_INT(feed_binance_open(&cfg, "BTCUSDT", &c, why, sizeof why), PD_EINVAL);
    CHECK(strstr(why, "PREDICTD_BINANCE_REST_URL: ") != NULL && !strstr(why, "must start"));
    cfg.rest_url = NULL;
    CHECK_EQ_INT(feed_binance_open(&cfg, "ABCDEFGHIJKLMNOPQRSTUVWXYZ", &c, why, sizeof why),
                 PD_EINVAL);
    CHECK(strstr(why, "bad symbol list") != NULL);
    CHECK_EQ_INT(feed_binance_open(&cfg, "ABCDEFGHIJKLMNOPQRSTU", &c, why, sizeof why),
                 PD_ESYMBOL); /* 21 characters */
    CHECK(strstr(why, "is not a symbol") != NULL);
    util_buf list;
    util_buf_init(&list);
    for (int i = 0; i < 65; i++)
        util_buf_printf(&list, "%sS%02dUSDT", i ? "," : "", i);
    CHECK_EQ_INT(feed_binance_open(&cfg, list.data, &c, why, sizeof why), PD_EINVAL);
    /* the reason survives a long list (it was cut off after the list) */
    CHECK(strstr(why, "at most 64): 'S00USDT,S01USDT,") != NULL);
    CHECK(strstr(why, "...'") != NULL);
    list.len = strlen("S00USDT") * 64 + 63; /* the first 64: accepted */
    list.data[list.len] = '\0';
    CHECK_EQ_INT(feed_binance_open(&cfg, list.data, &c, why, sizeof why), 0);
    feed_connector_free(c);
    c = NULL;
    util_buf_cleanup(&list);
    /* digits stay as they are in the stream name; a trailing comma is no symbol */
    cfg.database_url = "postgresql://127.0.0.1:9/none";
    CHECK_EQ_INT(feed_binance_open(&cfg, "1INCHUSDT,", &c, why, sizeof why), 0);
    CHECK(c != NULL);
    feed_connector_free(c);
    c = NULL;
    /* the table: unknown names (long ones cut), a small buffer, a
     * constructor's refusal named with its feed */
    CHECK_EQ_INT(feed_connector_new(NULL, &c, why, sizeof why), PD_EINVAL);
    CHECK_EQ_INT(feed_connector_new("kraken:XBTUSD", &c, why, sizeof why), PD_EINVAL);
    CHECK_EQ_STR(why, "unknown feed 'kraken' (known: demo binance)");
    CHECK_EQ_INT(feed_connector_new("binancebinancebinancebinancebinancebinance", &c, why,
                                    sizeof why),
                 PD_EINVAL);
    CHECK_EQ_STR(why, "unknown feed 'binancebinancebinancebinancebina' (known: demo binance)");
    char small[24];
    CHECK_EQ_INT(feed_connector_new("kraken", &c, small, sizeof small), PD_EINVAL);
    CHECK_EQ_STR(small, "unknown feed 'kraken' (");
    CHECK_EQ_INT(feed_connector_new("kraken", &c, NULL, 0), PD_EINVAL);
    CHECK_EQ_INT(feed_connector_new("binance:btcusdt", &c, why, sizeof why), PD_ESYMBOL);
    CHECK(strstr(why, "feed 'binance': ") == why);
    CHECK_EQ_INT(feed_connector_new("binance", &c, why, sizeof why), PD_EINVAL); /* no symbols */
    CHECK(c == NULL);
    /* the environment: empty URLs mean Binance's own */
    setenv("PREDICTD_BINANCE_WS_URL", "", 1);
    setenv("PREDICTD_BINANCE_REST_URL", "", 1);
    setenv("PREDICTD_BINANCE_RENEW", "600", 1);
    CHECK_EQ_INT(feed_connector_new("binance:BTCUSDT", &c, why, sizeof why), 0);
    CHECK(c && !strcmp(c->name, "binance"));
    feed_connector_free(c);
    c = NULL;
    setenv("PREDICTD_BINANCE_WS_URL", "http://127.0.0.1:1", 1);
    CHECK_EQ_INT(feed_connector_new("binance:BTCUSDT", &c, why, sizeof why), PD_EINVAL);
    unsetenv("PREDICTD_BINANCE_WS_URL");
    unsetenv("PREDICTD_BINANCE_REST_URL");
    unsetenv("PREDICTD_BINANCE_RENEW");
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
    RUN(klines_rows_refused_field_by_field);
    RUN(trade_messages_parse_and_refuse);
    RUN(trade_fields_refused_one_by_one);
    RUN(connector_configuration_refused_with_its_reason);
    RUN(rest_down_fails_after_its_attempts);
    RUN(ws_connect_refused_is_an_error);
    RUN(leader_lock_has_one_holder);
    RUN(exchange_symbols_round_trip);
    return unit_report();
}
