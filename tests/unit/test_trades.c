/* Unit tests for the trades aggregator (feed_agg_*) and the trades CSV
 * parser: minutes, flat minutes, duplicates, out-of-order trades and the
 * corrections they cause, the clock, bad rows with their line, and the
 * shared XRPETH trades against the shared XRPETH 1m candles, value for
 * value (PREDICTD_SHARED_DATA). */
#include <stdint.h>

#include "features/features.h"
#include "feed/feed.h"
#include "tests/unit/unit.h"
#include "util/util.h"

/* What the aggregator emitted, in order. */
typedef struct got {
    features_candle c[64];
    bool corr[64];
    size_t n;
} got;

static int collect(const features_candle *c, bool correction, void *arg)
{
    got *g = arg;
    if (g->n < 64) {
        g->c[g->n] = *c;
        g->corr[g->n] = correction;
    }
    g->n++;
    return 0;
}

#define T0 1570752000000LL /* 2019-10-11T00:00:00Z, ms */
#define MIN 60000LL

static feed_trade tr(int64_t ms, int64_t id, double px, double amt)
{
    return (feed_trade){.t_ms = ms, .id = id, .side = FEED_SIDE_BUY, .price = px, .amount = amt};
}

static void push(feed_agg *a, feed_trade t, got *g)
{
    CHECK_EQ_INT(feed_agg_push(a, &t, collect, g), 0);
}

#define CHECK_CANDLE(k, t_, o, h, l, c_, v)                                                        \
    do {                                                                                           \
        CHECK_EQ_INT((k).t, (t_));                                                                 \
        CHECK((k).open == (o) && (k).high == (h) && (k).low == (l) && (k).close == (c_));          \
        CHECK_NEAR((k).volume, (v), 1e-12);                                                        \
    } while (0)

TEST(minutes_and_flat_gaps)
{
    feed_agg *a;
    got g = {0};
    CHECK_EQ_INT(feed_agg_new(&a), 0);
    push(a, tr(T0 + 1000, 1, 10, 1), &g);
    push(a, tr(T0 + 2000, 2, 12, 2), &g);
    push(a, tr(T0 + 3000, 3, 9, 3), &g);
    push(a, tr(T0 + 59999, 4, 11, 4), &g);
    CHECK_EQ_INT(g.n, 0); /* the minute is open */
    /* a trade three minutes on closes minute 0 and two flat minutes */
    push(a, tr(T0 + 3 * MIN + 5, 5, 20, 1), &g);
    CHECK_EQ_INT(g.n, 3);
    CHECK_CANDLE(g.c[0], T0 / 1000, 10, 12, 9, 11, 10);
    CHECK_CANDLE(g.c[1], T0 / 1000 + 60, 11, 11, 11, 11, 0);
    CHECK_CANDLE(g.c[2], T0 / 1000 + 120, 11, 11, 11, 11, 0);
    CHECK(!g.corr[0] && !g.corr[1] && !g.corr[2]);
    CHECK_EQ_INT(feed_agg_finish(a, collect, &g), 0);
    CHECK_EQ_INT(g.n, 4);
    CHECK_CANDLE(g.c[3], T0 / 1000 + 180, 20, 20, 20, 20, 1);
    feed_agg_stats st;
    feed_agg_stats_get(a, &st);
    CHECK_EQ_INT(st.trades, 5);
    CHECK_EQ_INT(st.emitted, 4);
    feed_agg_free(a);
}

TEST(duplicates_are_ignored)
{
    feed_agg *a;
    got g = {0};
    CHECK_EQ_INT(feed_agg_new(&a), 0);
    push(a, tr(T0 + 1000, 7, 10, 1), &g);
    push(a, tr(T0 + 1000, 7, 10, 1), &g);   /* same trade again */
    push(a, tr(T0 + 9000, 7, 99, 100), &g); /* same id, other values: still the same trade */
    push(a, tr(T0 + MIN, 8, 11, 1), &g);
    push(a, tr(T0 + 2000, 7, 10, 1), &g); /* duplicate of an emitted minute: no correction */
    CHECK_EQ_INT(g.n, 1);
    CHECK_CANDLE(g.c[0], T0 / 1000, 10, 10, 10, 10, 1);
    feed_agg_stats st;
    feed_agg_stats_get(a, &st);
    CHECK_EQ_INT(st.duplicates, 3);
    CHECK_EQ_INT(st.corrections, 0);
    feed_agg_free(a);
}

TEST(out_of_order_within_the_open_minute)
{
    feed_agg *a;
    got g = {0};
    CHECK_EQ_INT(feed_agg_new(&a), 0);
    push(a, tr(T0 + 30000, 3, 12, 1), &g);
    push(a, tr(T0 + 10000, 1, 10, 1), &g); /* earlier: the open */
    push(a, tr(T0 + 50000, 5, 14, 1), &g); /* later: the close */
    push(a, tr(T0 + 20000, 2, 8, 1), &g);
    push(a, tr(T0 + 50000, 4, 13, 1), &g); /* same ms, lower id: not the close */
    CHECK_EQ_INT(feed_agg_finish(a, collect, &g), 0);
    CHECK_EQ_INT(g.n, 1);
    CHECK_CANDLE(g.c[0], T0 / 1000, 10, 14, 8, 14, 5);
    feed_agg_free(a);
}

TEST(late_trade_corrects_the_emitted_candle_and_the_flat_ones_after_it)
{
    feed_agg *a;
    got g = {0};
    CHECK_EQ_INT(feed_agg_new(&a), 0);
    push(a, tr(T0 + 1000, 1, 10, 1), &g);
    push(a, tr(T0 + 3 * MIN, 9, 20, 1), &g); /* emits 0 (10), 1 and 2 flat at 10 */
    CHECK_EQ_INT(g.n, 3);
    /* a late trade of minute 0, after its last one: a new close */
    push(a, tr(T0 + 50000, 2, 15, 2), &g);
    CHECK_EQ_INT(g.n, 6);
    CHECK_CANDLE(g.c[3], T0 / 1000, 10, 15, 10, 15, 3);
    CHECK_CANDLE(g.c[4], T0 / 1000 + 60, 15, 15, 15, 15, 0);
    CHECK_CANDLE(g.c[5], T0 / 1000 + 120, 15, 15, 15, 15, 0);
    CHECK(g.corr[3] && g.corr[4] && g.corr[5]);
    /* a late trade in the flat minute 1: it becomes a real candle, and
     * minute 2 follows its close */
    push(a, tr(T0 + MIN + 10, 3, 16, 1), &g);
    CHECK_EQ_INT(g.n, 8);
    CHECK_CANDLE(g.c[6], T0 / 1000 + 60, 16, 16, 16, 16, 1);
    CHECK_CANDLE(g.c[7], T0 / 1000 + 120, 16, 16, 16, 16, 0);
    /* a late trade that does not move the close corrects one candle */
    push(a, tr(T0 + 5000, 4, 11, 1), &g);
    CHECK_EQ_INT(g.n, 9);
    CHECK_CANDLE(g.c[8], T0 / 1000, 10, 15, 10, 15, 4);
    feed_agg_stats st;
    feed_agg_stats_get(a, &st);
    CHECK_EQ_INT(st.corrections, 6);
    feed_agg_free(a);
}

TEST(too_late_is_dropped_and_counted)
{
    feed_agg *a;
    got g = {0};
    CHECK_EQ_INT(feed_agg_new(&a), 0);
    push(a, tr(T0, 1, 10, 1), &g);
    push(a, tr(T0 + (FEED_AGG_KEEP_MINUTES + 5) * MIN, 2, 11, 1), &g);
    size_t before = g.n;
    push(a, tr(T0 + 1, 3, 12, 1), &g); /* minute 0 is no longer kept */
    CHECK_EQ_INT(g.n, before);
    feed_agg_stats st;
    feed_agg_stats_get(a, &st);
    CHECK_EQ_INT(st.too_late, 1);
    feed_agg_free(a);
}

TEST(advance_closes_minutes_by_the_clock)
{
    feed_agg *a;
    got g = {0};
    CHECK_EQ_INT(feed_agg_new(&a), 0);
    CHECK_EQ_INT(feed_agg_advance(a, T0 + 10 * MIN, collect, &g), 0); /* nothing seen yet */
    CHECK_EQ_INT(g.n, 0);
    push(a, tr(T0 + 1000, 1, 10, 1), &g);
    CHECK_EQ_INT(feed_agg_advance(a, T0 + 59999, collect, &g), 0);
    CHECK_EQ_INT(g.n, 0);
    CHECK_EQ_INT(feed_agg_advance(a, T0 + 2 * MIN, collect, &g), 0);
    CHECK_EQ_INT(g.n, 2); /* minute 0, and minute 1 flat */
    CHECK_CANDLE(g.c[1], T0 / 1000 + 60, 10, 10, 10, 10, 0);
    CHECK_EQ_INT(feed_agg_advance(a, T0 + 2 * MIN, collect, &g), 0); /* idempotent */
    CHECK_EQ_INT(g.n, 2);
    /* a trade of minute 1, now emitted as flat: a correction */
    push(a, tr(T0 + MIN + 1, 2, 12, 1), &g);
    CHECK_EQ_INT(g.n, 3);
    CHECK(g.corr[2]);
    CHECK_CANDLE(g.c[2], T0 / 1000 + 60, 12, 12, 12, 12, 1);
    feed_agg_free(a);
}

TEST(a_jump_beyond_the_longest_gap_starts_afresh)
{
    feed_agg *a;
    got g = {0};
    CHECK_EQ_INT(feed_agg_new(&a), 0);
    push(a, tr(T0, 1, 10, 1), &g);
    push(a, tr(T0 + 2 * MIN, 2, 11, 1), &g); /* minute 0 and a flat minute 1 */
    CHECK_EQ_INT(g.n, 2);
    int64_t far = T0 + (FEED_AGG_MAX_GAP_MINUTES + 10) * MIN;
    push(a, tr(far, 3, 12, 1), &g); /* closes minute 2, fills nothing across */
    CHECK_EQ_INT(g.n, 3);
    CHECK_CANDLE(g.c[2], T0 / 1000 + 120, 11, 11, 11, 11, 1);
    CHECK_EQ_INT(feed_agg_finish(a, collect, &g), 0);
    CHECK_EQ_INT(g.n, 4);
    CHECK_CANDLE(g.c[3], far / 1000, 12, 12, 12, 12, 1);
    /* the clock fills at most the longest gap of flat minutes */
    size_t before = g.n;
    got *big = calloc(1, sizeof *big);
    CHECK_EQ_INT(feed_agg_advance(a, far + 100LL * FEED_AGG_MAX_GAP_MINUTES * MIN, collect, big),
                 0);
    CHECK_EQ_INT(big->n, FEED_AGG_MAX_GAP_MINUTES);
    CHECK_EQ_INT(g.n, before);
    free(big);
    feed_agg_free(a);
}

TEST(bad_trades_are_refused)
{
    feed_agg *a;
    got g = {0};
    CHECK_EQ_INT(feed_agg_new(&a), 0);
    feed_trade t = tr(T0, 1, 0, 1);
    CHECK_EQ_INT(feed_agg_push(a, &t, collect, &g), PD_EINVAL);
    t = tr(T0, 1, NAN, 1);
    CHECK_EQ_INT(feed_agg_push(a, &t, collect, &g), PD_EINVAL);
    t = tr(T0, 1, 1, -1);
    CHECK_EQ_INT(feed_agg_push(a, &t, collect, &g), PD_EINVAL);
    t = tr(-5, 1, 1, 1);
    CHECK_EQ_INT(feed_agg_push(a, &t, collect, &g), PD_EINVAL);
    CHECK_EQ_INT(feed_agg_push(NULL, &t, collect, &g), PD_EINVAL);
    feed_agg_stats st;
    feed_agg_stats_get(a, &st);
    CHECK_EQ_INT(st.trades, 0);
    feed_agg_free(a);
    feed_agg_free(NULL);
}

/* The emit callback's error stops the push and comes back. */
static int refuse(const features_candle *c, bool correction, void *arg)
{
    (void)c;
    (void)correction;
    (void)arg;
    return PD_EDB;
}

TEST(emit_error_is_returned)
{
    feed_agg *a;
    CHECK_EQ_INT(feed_agg_new(&a), 0);
    feed_trade t = tr(T0, 1, 1, 1);
    CHECK_EQ_INT(feed_agg_push(a, &t, refuse, NULL), 0);
    t = tr(T0 + MIN, 2, 1, 1);
    CHECK_EQ_INT(feed_agg_push(a, &t, refuse, NULL), PD_EDB);
    feed_agg_free(a);
}

/* A writer that fails from its (after + 1)-th candle on. */
typedef struct failing {
    int calls, after;
} failing;

static int fail_after(const features_candle *c, bool correction, void *arg)
{
    (void)c;
    (void)correction;
    failing *f = arg;
    return f->calls++ >= f->after ? PD_EDB : 0;
}

/* Whatever path emits a candle (a correction, the flat minutes re-priced
 * after it, minutes added before the first, a jump, the clock, the end),
 * the writer's error comes back to the caller. */
TEST(emit_errors_come_back_from_every_path)
{
    feed_agg *a;
    failing f = {.after = 1000};
    feed_trade t;
#define PUSH(ms, id, px, want)                                                                     \
    do {                                                                                           \
        t = tr(ms, id, px, 1);                                                                     \
        CHECK_EQ_INT(feed_agg_push(a, &t, fail_after, &f), want);                                  \
    } while (0)
    /* a late trade correcting an emitted minute */
    CHECK_EQ_INT(feed_agg_new(&a), 0);
    PUSH(T0, 1, 1, 0);
    PUSH(T0 + MIN, 2, 1, 0);
    f = (failing){.after = 0};
    PUSH(T0 + 30000, 3, 2, PD_EDB);
    feed_agg_free(a);
    /* the correction is written, the flat minute after it is not */
    CHECK_EQ_INT(feed_agg_new(&a), 0);
    f = (failing){.after = 1000};
    PUSH(T0, 1, 1, 0);
    PUSH(T0 + 3 * MIN, 2, 1, 0); /* minutes 0, 1 and 2 (flat) out */
    f = (failing){.after = 1};
    PUSH(T0 + 50000, 3, 5, PD_EDB);
    CHECK_EQ_INT(f.calls, 2);
    feed_agg_free(a);
    /* a trade before the first minute, after minutes went out */
    CHECK_EQ_INT(feed_agg_new(&a), 0);
    f = (failing){.after = 1000};
    PUSH(T0 + 5 * MIN, 1, 1, 0);
    CHECK_EQ_INT(feed_agg_advance(a, T0 + 7 * MIN, fail_after, &f), 0);
    f = (failing){.after = 0};
    PUSH(T0 + 2 * MIN, 2, 1, PD_EDB);
    feed_agg_free(a);
    /* a jump past the longest gap closes the open minute */
    CHECK_EQ_INT(feed_agg_new(&a), 0);
    f = (failing){.after = 1000};
    PUSH(T0, 1, 1, 0);
    f = (failing){.after = 0};
    PUSH(T0 + (FEED_AGG_MAX_GAP_MINUTES + 10) * MIN, 2, 1, PD_EDB);
    feed_agg_free(a);
    /* the clock and the end */
    CHECK_EQ_INT(feed_agg_new(&a), 0);
    CHECK_EQ_INT(feed_agg_advance(a, T0, fail_after, &f), 0); /* nothing yet */
    CHECK_EQ_INT(feed_agg_finish(a, fail_after, &f), 0);
    f = (failing){.after = 1000};
    PUSH(T0, 1, 1, 0);
    f = (failing){.after = 0};
    CHECK_EQ_INT(feed_agg_advance(a, T0 + 2 * MIN, fail_after, &f), PD_EDB);
    CHECK_EQ_INT(feed_agg_advance(a, -1, fail_after, &f), 0);
    feed_agg_free(a);
    CHECK_EQ_INT(feed_agg_new(&a), 0);
    f = (failing){.after = 1000};
    PUSH(T0, 1, 1, 0);
    f = (failing){.after = 0};
    CHECK_EQ_INT(feed_agg_finish(a, fail_after, &f), PD_EDB);
    CHECK_EQ_INT(feed_agg_advance(NULL, 0, fail_after, &f), PD_EINVAL);
    CHECK_EQ_INT(feed_agg_finish(NULL, fail_after, &f), PD_EINVAL);
    feed_agg_free(a);
#undef PUSH
}

static int parse(const char *text, feed_trade **t, size_t *n, char *why)
{
    why[0] = 0;
    return feed_trades_csv_parse(text, strlen(text), t, n, why, 256);
}

static void expect_fail(const char *text, const char *msg, int line)
{
    feed_trade *t = (feed_trade *)0x1;
    size_t n = 12345;
    char why[256];
    int rc = parse(text, &t, &n, why);
    if (rc != PD_EPARSE || strcmp(why, msg) != 0)
        UNIT_FAIL_("line %d: rc %d why \"%s\", want \"%s\"", line, rc, why, msg);
    if (t != (feed_trade *)0x1 || n != 12345)
        UNIT_FAIL_("line %d: out-params written on failure", line);
}
#define EXPECT_FAIL(text, msg) expect_fail(text, msg, __LINE__)

TEST(csv_parses_and_recognises_the_header)
{
    const char *text = "\xEF\xBB\xBF"
                       "time,id,side,price,amount\r\n"
                       "2019-10-11T00:00:11.620Z,13519807,sell,0.00141342,23.0\r\n"
                       "\r\n"
                       "1570752012,13519808,BUY,\"0.5\",0\n"
                       "2019-10-11T00:00:13.5Z,9,buy,1,2";
    CHECK(feed_trades_csv_is(text, strlen(text)));
    CHECK(feed_trades_csv_is("\n  Time , ID, Side,Price,Amount\n", 33));
    CHECK(!feed_trades_csv_is("open_time,open,high,low,close,volume\n", 37));
    CHECK(!feed_trades_csv_is("time,id,side,price\n", 19));
    CHECK(!feed_trades_csv_is("", 0));
    feed_trade *t;
    size_t n;
    char why[256];
    CHECK_EQ_INT(parse(text, &t, &n, why), 0);
    CHECK_EQ_INT(n, 3);
    CHECK_EQ_INT(t[0].t_ms, 1570752011620LL);
    CHECK_EQ_INT(t[0].id, 13519807);
    CHECK_EQ_INT(t[0].side, FEED_SIDE_SELL);
    CHECK(t[0].price == 0.00141342 && t[0].amount == 23.0);
    CHECK_EQ_INT(t[1].t_ms, 1570752012000LL);
    CHECK_EQ_INT(t[1].side, FEED_SIDE_BUY);
    CHECK_EQ_INT(t[2].t_ms, 1570752013500LL);
    free(t);
}

TEST(csv_bad_rows_name_their_line)
{
    const char *h = "time,id,side,price,amount\n";
    char buf[512];
#define ROW(r) (snprintf(buf, sizeof buf, "%s2019-10-11T00:00:01Z,1,buy,1,1\n%s\n", h, r), buf)
    EXPECT_FAIL(ROW("2019-10-11T00:00:02Z,2,buy,1"), "line 3: 4 fields, expected 5");
    EXPECT_FAIL(ROW("2019-10-11T00:00:02Z,2,buy,1,1,1"), "line 3: 6 fields, expected 5");
    EXPECT_FAIL(ROW("yesterday,2,buy,1,1"), "line 3: time \"yesterday\" is not RFC 3339 or epoch");
    EXPECT_FAIL(ROW("2019-10-11T00:00:02Z,x2,buy,1,1"), "line 3: id \"x2\" is not an integer");
    EXPECT_FAIL(ROW("2019-10-11T00:00:02Z,2,hold,1,1"), "line 3: side \"hold\" is not buy or sell");
    EXPECT_FAIL(ROW("2019-10-11T00:00:02Z,2,buy,-1,1"),
                "line 3: price \"-1\" is not a positive number");
    EXPECT_FAIL(ROW("2019-10-11T00:00:02Z,2,buy,nan,1"),
                "line 3: price \"nan\" is not a positive number");
    EXPECT_FAIL(ROW("2019-10-11T00:00:02Z,2,buy,1,abc"),
                "line 3: amount \"abc\" is not a number >= 0");
    EXPECT_FAIL("2019-10-11T00:00:02Z,2,buy,1,1\n",
                "line 1: expected the header time,id,side,price,amount");
    EXPECT_FAIL("\n\n", "line 1: empty file: expected the header time,id,side,price,amount");
    /* each field empty, out of range or of the wrong form */
    EXPECT_FAIL(ROW("1969-12-31T23:59:59Z,2,buy,1,1"),
                "line 3: time \"1969-12-31T23:59:59Z\" is not RFC 3339 or epoch");
    EXPECT_FAIL(ROW("100000000000000000,2,buy,1,1"),
                "line 3: time \"100000000000000000\" is not RFC 3339 or epoch");
    EXPECT_FAIL(ROW("1570752012x,2,buy,1,1"), "line 3: time \"1570752012x\" is not RFC 3339 or epoch");
    EXPECT_FAIL(ROW(",2,buy,1,1"), "line 3: time \"\" is not RFC 3339 or epoch");
    EXPECT_FAIL(ROW("2019-10-11T00:00:02Z,,buy,1,1"), "line 3: id \"\" is not an integer");
    EXPECT_FAIL(ROW("2019-10-11T00:00:02Z,2.5,buy,1,1"), "line 3: id \"2.5\" is not an integer");
    EXPECT_FAIL(ROW("2019-10-11T00:00:02Z,2,buy,,1"),
                "line 3: price \"\" is not a positive number");
    EXPECT_FAIL(ROW("2019-10-11T00:00:02Z,2,buy,0,1"),
                "line 3: price \"0\" is not a positive number");
    EXPECT_FAIL(ROW("2019-10-11T00:00:02Z,2,buy,inf,1"),
                "line 3: price \"inf\" is not a positive number");
    EXPECT_FAIL(ROW("2019-10-11T00:00:02Z,2,buy,1x,1"),
                "line 3: price \"1x\" is not a positive number");
    EXPECT_FAIL(ROW("2019-10-11T00:00:02Z,2,buy,1,"), "line 3: amount \"\" is not a number >= 0");
    EXPECT_FAIL(ROW("2019-10-11T00:00:02Z,2,buy,1,-0.5"),
                "line 3: amount \"-0.5\" is not a number >= 0");
    EXPECT_FAIL(ROW("2019-10-11T00:00:02Z,2,buy,1,inf"),
                "line 3: amount \"inf\" is not a number >= 0");
    EXPECT_FAIL(ROW("2019-10-11T00:00:02Z,2,buy,1,"
                    "1.000000000000000000000000000000000000000000000000000000000000000001"),
                "line 3: a field is longer than 63 bytes");
#undef ROW
}

/* Epoch times in seconds, milliseconds and microseconds (told apart by
 * magnitude), fractions of any length (milliseconds kept), fields padded
 * with blanks or quoted. */
TEST(csv_times_in_every_unit_and_padded_fields)
{
    const char *text = "time,id,side,price,amount\n"
                       "1570752012,1,buy,1,1\n"
                       "1570752012345,2,sell,1,1\n"
                       "1570752012345678,3,buy,1,1\n"
                       "1570752012.5,4,buy,1,1\n"
                       "2019-10-11T00:00:12.123456Z,5,buy,1,1\n"
                       "2019-10-11T00:00:12.1Z,6,buy,1,1\n"
                       " 2019-10-11T00:00:12Z ,\t7\t,\"Sell\", 2.5 ,\"0\"\n";
    feed_trade *t = NULL;
    size_t n = 0;
    char why[256];
    CHECK_EQ_INT(parse(text, &t, &n, why), 0);
    CHECK_EQ_INT(n, 7);
    if (n == 7) {
        CHECK_EQ_INT(t[0].t_ms, 1570752012000LL);
        CHECK_EQ_INT(t[1].t_ms, 1570752012345LL);
        CHECK_EQ_INT(t[2].t_ms, 1570752012345LL);
        CHECK_EQ_INT(t[3].t_ms, 1570752012500LL);
        CHECK_EQ_INT(t[4].t_ms, 1570752012123LL);
        CHECK_EQ_INT(t[5].t_ms, 1570752012100LL);
        CHECK_EQ_INT(t[6].t_ms, 1570752012000LL);
        CHECK_EQ_INT(t[6].id, 7);
        CHECK_EQ_INT(t[6].side, FEED_SIDE_SELL);
        CHECK(t[6].price == 2.5 && t[6].amount == 0);
    }
    free(t);
    CHECK_EQ_INT(feed_trades_csv_parse(NULL, 0, &t, &n, why, sizeof why), PD_EINVAL);
    CHECK(!feed_trades_csv_is(NULL, 0));
}

/* The shared data: XRPETH trades aggregated give the XRPETH 1m candles. */
static char *slurp(const char *path, size_t *len)
{
    char *text = NULL;
    if (util_read_file(path, 64u << 20, &text, len) != 0)
        return NULL;
    return text;
}

typedef struct all {
    features_candle *c;
    size_t n, cap;
} all;

static int collect_all(const features_candle *c, bool correction, void *arg)
{
    all *o = arg;
    if (correction)
        return PD_EINTERNAL; /* the file is in order: no correction expected */
    if (o->n == o->cap) {
        o->cap = o->cap ? 2 * o->cap : 4096;
        o->c = realloc(o->c, o->cap * sizeof *o->c);
        if (!o->c)
            return PD_ENOMEM;
    }
    o->c[o->n++] = *c;
    return 0;
}

/* Keeps the last version of every minute, by its index from t0. */
static int collect_min(const features_candle *c, bool correction, void *arg)
{
    (void)correction;
    struct {
        features_candle *m;
        int64_t t0;
        size_t n;
    } *ctx = arg;
    int64_t i = (c->t - ctx->t0) / 60;
    if (i < 0 || (size_t)i >= ctx->n)
        return PD_EINTERNAL;
    ctx->m[i] = *c;
    return 0;
}

TEST(shared_xrpeth_trades_give_the_shared_candles)
{
    const char *dir = getenv("PREDICTD_SHARED_DATA");
    if (!dir || !*dir)
        UNIT_SKIP("PREDICTD_SHARED_DATA (../shared/data) absent");
    char p1[1024], p2[1024];
    snprintf(p1, sizeof p1, "%s/XRPETH_trades_2019-10.csv", dir);
    snprintf(p2, sizeof p2, "%s/XRPETH_1m_2019-10.csv", dir);
    size_t l1, l2;
    char *t1 = slurp(p1, &l1), *t2 = slurp(p2, &l2);
    if (!t1 || !t2) {
        free(t1);
        free(t2);
        UNIT_SKIP("XRPETH files absent");
    }
    feed_trade *tr_;
    size_t ntr;
    features_candle *want;
    size_t nwant;
    char why[256];
    CHECK_EQ_INT(feed_trades_csv_parse(t1, l1, &tr_, &ntr, why, sizeof why), 0);
    CHECK_EQ_INT(feed_csv_parse(t2, l2, &want, &nwant, why, sizeof why), 0);
    free(t1);
    free(t2);
    CHECK_EQ_INT(ntr, 12477);
    CHECK_EQ_INT(nwant, 3560);
    feed_agg *a;
    all o = {0};
    CHECK_EQ_INT(feed_agg_new(&a), 0);
    for (size_t i = 0; i < ntr; i++)
        CHECK_EQ_INT(feed_agg_push(a, &tr_[i], collect_all, &o), 0);
    CHECK_EQ_INT(feed_agg_finish(a, collect_all, &o), 0);
    CHECK_EQ_INT(o.n, nwant);
    size_t bad = 0, flat = 0;
    for (size_t i = 0; i < o.n && i < nwant; i++) {
        const features_candle *x = &o.c[i], *y = &want[i];
        /* prices are copied, never computed: equal bit for bit; the volume
         * is a sum, equal to the file's 17 significant digits */
        if (x->t != y->t || x->open != y->open || x->high != y->high || x->low != y->low ||
            x->close != y->close || fabs(x->volume - y->volume) > 1e-9 * fmax(1, y->volume)) {
            if (bad++ < 3)
                UNIT_FAIL_("minute %zu: got %lld %.17g %.17g %.17g %.17g %.17g, want %lld %.17g "
                           "%.17g %.17g %.17g %.17g",
                           i, (long long)x->t, x->open, x->high, x->low, x->close, x->volume,
                           (long long)y->t, y->open, y->high, y->low, y->close, y->volume);
        }
        flat += x->volume == 0;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(flat, 1091);
    feed_agg_free(a);
    /* The same trades again, shuffled within windows of 64 and every tenth
     * one sent twice: the same candles once the corrections are applied. */
    feed_trade *sh = malloc((ntr + ntr / 10 + 1) * sizeof *sh);
    size_t nsh = 0;
    uint64_t seed = 7;
    for (size_t w = 0; w < ntr; w += 64) {
        size_t k = ntr - w < 64 ? ntr - w : 64;
        feed_trade win[64];
        memcpy(win, tr_ + w, k * sizeof *win);
        for (size_t i = k; i > 1; i--) {
            seed = seed * 6364136223846793005u + 1442695040888963407u;
            size_t j = (size_t)(seed >> 33) % i;
            feed_trade x = win[i - 1];
            win[i - 1] = win[j];
            win[j] = x;
        }
        for (size_t i = 0; i < k; i++) {
            sh[nsh++] = win[i];
            if ((w + i) % 10 == 0)
                sh[nsh++] = win[i];
        }
    }
    features_candle *by_min = calloc(nwant, sizeof *by_min);
    CHECK_EQ_INT(feed_agg_new(&a), 0);
    struct {
        features_candle *m;
        int64_t t0;
        size_t n;
    } ctx = {by_min, want[0].t, nwant};
    o.n = 0;
    for (size_t i = 0; i < nsh; i++)
        CHECK_EQ_INT(feed_agg_push(a, &sh[i], collect_min, &ctx), 0);
    CHECK_EQ_INT(feed_agg_finish(a, collect_min, &ctx), 0);
    feed_agg_stats st;
    feed_agg_stats_get(a, &st);
    CHECK_EQ_INT(st.duplicates, nsh - ntr);
    CHECK(st.corrections > 0);
    bad = 0;
    for (size_t i = 0; i < nwant; i++) {
        const features_candle *x = &by_min[i], *y = &want[i];
        if (x->t != y->t || x->open != y->open || x->high != y->high || x->low != y->low ||
            x->close != y->close || fabs(x->volume - y->volume) > 1e-9 * fmax(1, y->volume))
            if (bad++ < 3)
                UNIT_FAIL_("shuffled, minute %zu: got %lld %.17g %.17g, want %lld %.17g %.17g", i,
                           (long long)x->t, x->open, x->close, (long long)y->t, y->open, y->close);
    }
    CHECK_EQ_INT(bad, 0);
    feed_agg_free(a);
    free(by_min);
    free(sh);
    free(o.c);
    free(tr_);
    free(want);
}

int main(void)
{
    RUN(minutes_and_flat_gaps);
    RUN(duplicates_are_ignored);
    RUN(out_of_order_within_the_open_minute);
    RUN(late_trade_corrects_the_emitted_candle_and_the_flat_ones_after_it);
    RUN(too_late_is_dropped_and_counted);
    RUN(advance_closes_minutes_by_the_clock);
    RUN(a_jump_beyond_the_longest_gap_starts_afresh);
    RUN(bad_trades_are_refused);
    RUN(emit_error_is_returned);
    RUN(emit_errors_come_back_from_every_path);
    RUN(csv_parses_and_recognises_the_header);
    RUN(csv_bad_rows_name_their_line);
    RUN(csv_times_in_every_unit_and_padded_fields);
    RUN(shared_xrpeth_trades_give_the_shared_candles);
    return unit_report();
}
