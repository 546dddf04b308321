/* Unit tests for feed_csv_parse: both layouts, header or not, ms/us/s
 * and RFC 3339 times, CRLF, blank lines, every rejected row with its exact
 * line number, and the real files in PREDICTD_SHARED_DATA. */
#include <stdint.h>

#include "features/features.h"
#include "feed/feed.h"
#include "tests/unit/unit.h"
#include "util/util.h"

static int parse(const char *text, features_candle **c, size_t *n, char *why)
{
    why[0] = '\0';
    return feed_csv_parse(text, strlen(text), c, n, why, 256);
}

/* Parses text that must fail; checks the code and the message. */
static void expect_fail(const char *text, const char *msg, int line)
{
    features_candle *c = (features_candle *)0x1;
    size_t n = 12345;
    char why[256];
    int rc = parse(text, &c, &n, why);
    if (rc != PD_EPARSE || strcmp(why, msg) != 0)
        UNIT_FAIL_("line %d: rc %d why \"%s\", want \"%s\"", line, rc, why, msg);
    if (c != (features_candle *)0x1 || n != 12345)
        UNIT_FAIL_("line %d: out-params written on failure", line);
}
#define EXPECT_FAIL(text, msg) expect_fail(text, msg, __LINE__)

TEST(simple_with_header_rfc3339)
{
    features_candle *c;
    size_t n;
    char why[256];
    CHECK_EQ_INT(parse("open_time,open,high,low,close,volume\n"
                       "2024-01-01T00:00:00Z,100,110,90,105,12.5\n"
                       "2024-01-01T01:00:00Z,105,106,104,104.5,0\n",
                       &c, &n, why),
                 0);
    CHECK_EQ_INT(n, 2);
    CHECK_EQ_INT(c[0].t, 1704067200);
    CHECK_EQ_INT(c[1].t, 1704070800);
    CHECK(c[0].open == 100 && c[0].high == 110 && c[0].low == 90 && c[0].close == 105);
    CHECK(c[0].volume == 12.5 && c[1].volume == 0);
    CHECK(c[1].close == 104.5);
    free(c);
}

TEST(simple_epoch_units_no_header)
{
    /* seconds, milliseconds, microseconds, no trailing newline */
    features_candle *c;
    size_t n;
    char why[256];
    CHECK_EQ_INT(parse("1704067200,1,2,0.5,1.5,3\n"
                       "1704067260000,1,2,0.5,1.5,3\n"
                       "1704067320000000,1,2,0.5,1.5,3",
                       &c, &n, why),
                 0);
    CHECK_EQ_INT(n, 3);
    CHECK_EQ_INT(c[0].t, 1704067200);
    CHECK_EQ_INT(c[1].t, 1704067260);
    CHECK_EQ_INT(c[2].t, 1704067320);
    free(c);
}

TEST(binance_ms_and_us)
{
    const char *ms = "1704067200000,42283.58,42554.57,42261.02,42475.23,1271.68108,"
                     "1704070799999,53957248.9,47134,682.57581,28957416.8,0\n"
                     "1704070800000,42475.23,42775.00,42431.65,42613.56,1196.37856,"
                     "1704074399999,50984693.1,44381,630.16313,26854717.6,0\n";
    const char *us = "1735689600000000,93576.00,93605.01,93535.23,93583.45,23.19093,"
                     "1735689659999999,2170432.1,3456,11.5,1076314.2,0\n"
                     "1735689660000000,93583.45,93620.00,93560.00,93600.10,10.5,"
                     "1735689719999999,982342.0,1200,5.25,491171.0,0\n";
    features_candle *c;
    size_t n;
    char why[256];
    CHECK_EQ_INT(parse(ms, &c, &n, why), 0);
    CHECK_EQ_INT(n, 2);
    CHECK_EQ_INT(c[0].t, 1704067200);
    CHECK_EQ_INT(c[1].t, 1704070800);
    CHECK(c[0].open == 42283.58 && c[0].high == 42554.57 && c[0].low == 42261.02);
    CHECK(c[0].close == 42475.23 && c[0].volume == 1271.68108);
    free(c);
    CHECK_EQ_INT(parse(us, &c, &n, why), 0);
    CHECK_EQ_INT(n, 2);
    CHECK_EQ_INT(c[0].t, 1735689600);
    CHECK_EQ_INT(c[1].t, 1735689660);
    CHECK(c[1].close == 93600.10);
    free(c);
}

TEST(binance_with_header_crlf_blank_lines)
{
    const char *text =
        "\xEF\xBB\xBFopen_time,open,high,low,close,volume,close_time,quote_volume,count,"
        "taker_buy_volume,taker_buy_quote_volume,ignore\r\n"
        "\r\n"
        "1704067260000,2,3,1,2.5,10,1704067319999,25,7,5,12.5,0\r\n"
        "   \r\n"
        "1704067200000,1,2,0.5,1.5,3,1704067259999,4.5,3,1,1.5,0\r\n"
        "\r\n";
    features_candle *c;
    size_t n;
    char why[256];
    CHECK_EQ_INT(parse(text, &c, &n, why), 0);
    CHECK_EQ_INT(n, 2);
    /* sorted by time although the file is not */
    CHECK_EQ_INT(c[0].t, 1704067200);
    CHECK_EQ_INT(c[1].t, 1704067260);
    CHECK(c[0].close == 1.5 && c[1].close == 2.5);
    free(c);
}

TEST(quoted_and_spaced_fields)
{
    features_candle *c;
    size_t n;
    char why[256];
    CHECK_EQ_INT(parse("\"open_time\",\"open\",\"high\",\"low\",\"close\",\"volume\"\n"
                       "\"2024-01-01 00:00:00+00:00\", 1 ,\"2\",0.5, 1.5 ,3\n",
                       &c, &n, why),
                 0);
    CHECK_EQ_INT(n, 1);
    CHECK_EQ_INT(c[0].t, 1704067200);
    CHECK(c[0].open == 1 && c[0].high == 2);
    free(c);
}

TEST(bad_rows_have_line_numbers)
{
    const char *h = "open_time,open,high,low,close,volume\n";
    char buf[512];
    snprintf(buf, sizeof buf,
             "%s2024-01-01T00:00:00Z,1,2,0.5,1.5,3\n2024-01-01T00:01:00Z,abc,2,0.5,1.5,3\n", h);
    EXPECT_FAIL(buf, "line 3: open is not a number ('abc')");
    snprintf(buf, sizeof buf, "%s\n\n2024-01-01T00:00:00Z,1,2,0.5,nan,3\n", h);
    EXPECT_FAIL(buf, "line 4: close is not finite ('nan')");
    snprintf(buf, sizeof buf, "%s2024-01-01T00:00:00Z,1,2,0.5,1.5,-3\n", h);
    EXPECT_FAIL(buf, "line 2: volume is negative (-3)");
    snprintf(buf, sizeof buf, "%s2024-01-01T00:00:00Z,-1,2,0.5,1.5,3\n", h);
    EXPECT_FAIL(buf, "line 2: open must be positive (-1)");
    snprintf(buf, sizeof buf, "%s2024-01-01T00:00:00Z,1,2,0,1.5,3\n", h);
    EXPECT_FAIL(buf, "line 2: low must be positive (0)");
    snprintf(buf, sizeof buf, "%s2024-01-01T00:00:00Z,1,0.5,2,1.5,3\n", h);
    EXPECT_FAIL(buf, "line 2: high (0.5) is below low (2)");
    snprintf(buf, sizeof buf, "%s2024-01-01T00:00:00Z,1,2,0.5,1.5\n", h);
    EXPECT_FAIL(buf, "line 2: expected 6 columns, got 5");
    snprintf(buf, sizeof buf,
             "%s2024-01-01T00:00:00Z,1,2,0.5,1.5,3\r\n2024-01-01T00:01:00Z,1,2,0.5,1.5,3,7\r\n", h);
    EXPECT_FAIL(buf, "line 3: expected 6 columns, got 7");
    EXPECT_FAIL("1704067200,1,2,0.5,1.5,3,4\n", "line 1: expected 6 or 12 columns, got 7");
    EXPECT_FAIL("a,b,c\n", "line 1: header has 3 columns, expected 6 or 12");
    snprintf(buf, sizeof buf,
             "%s2024-01-01T00:02:00Z,1,2,0.5,1.5,3\n2024-01-01T00:00:00Z,1,2,0.5,1.5,3\n"
             "2024-01-01T00:01:00Z,1,2,0.5,1.5,3\n2024-01-01T00:00:00Z,1,2,0.5,1.5,3\n",
             h);
    EXPECT_FAIL(buf, "line 5: duplicate open time 2024-01-01T00:00:00Z (also on line 3)");
    /* the same instant written in two units is a duplicate too */
    EXPECT_FAIL("1704067200,1,2,0.5,1.5,3\n1704067200000,1,2,0.5,1.5,3\n",
                "line 2: duplicate open time 2024-01-01T00:00:00Z (also on line 1)");
    snprintf(buf, sizeof buf, "%s2024-13-01T00:00:00Z,1,2,0.5,1.5,3\n", h);
    EXPECT_FAIL(
        buf, "line 2: open_time is neither a date-time nor epoch digits ('2024-13-01T00:00:00Z')");
    snprintf(buf, sizeof buf, "%s,1,2,0.5,1.5,3\n", h);
    EXPECT_FAIL(buf, "line 2: open_time is empty");
    EXPECT_FAIL("123456789012345678,1,2,0.5,1.5,3\n",
                "line 1: open_time is out of range ('123456789012345678')");
    EXPECT_FAIL(h, "no candle rows");
    EXPECT_FAIL("", "no candle rows");
    EXPECT_FAIL("\r\n\n  \n", "no candle rows");
    /* Binance rows: only the first six columns are checked */
    EXPECT_FAIL(
        "1704067200000,1,2,0.5,1.5,3,1,2,3,4,5,0\n1704067260000,1,2,0.5,1.5,x,1,2,3,4,5,0\n",
        "line 2: volume is not a number ('x')");
}

TEST(misaligned_row_is_named_by_its_line)
{
    /* the first rows are on 15m boundaries, line 4 is not */
    const char *text = "open_time,open,high,low,close,volume\n"
                       "2024-01-01T00:00:00Z,1,2,0.5,1.5,3\n"
                       "2024-01-01T00:15:00Z,1,2,0.5,1.5,3\n"
                       "2024-01-01T00:31:00Z,1,2,0.5,1.5,3\n"
                       "2024-01-01T00:45:00Z,1,2,0.5,1.5,3\n";
    features_candle *c = NULL;
    size_t n = 0;
    char why[256] = "";
    CHECK_EQ_INT(feed_csv_parse_for(text, strlen(text), "15m", &c, &n, why, sizeof why),
                 PD_EPARSE);
    CHECK_EQ_STR(why, "line 4: open time 2024-01-01T00:31:00Z is not on a 15m candle boundary "
                      "(wrong --timeframe?)");
    CHECK(c == NULL);
    /* the same rows are fine for 1m, and without a timeframe */
    CHECK_EQ_INT(feed_csv_parse_for(text, strlen(text), "1m", &c, &n, why, sizeof why), 0);
    CHECK_EQ_INT((int)n, 4);
    free(c);
    c = NULL;
    CHECK_EQ_INT(feed_csv_parse_for(text, strlen(text), NULL, &c, &n, why, sizeof why), 0);
    free(c);
    c = NULL;
    CHECK_EQ_INT(feed_csv_parse_for(text, strlen(text), "7m", &c, &n, why, sizeof why), PD_EINVAL);
}

/* Fields past the parser's limits: more than 16 columns, a field longer
 * than 64 characters, an empty number, a quoted empty field. Each is an
 * error naming the line, never a crash or a silent truncation. */
TEST(limits_of_fields_and_columns)
{
    char buf[1024];
    /* (a first row of 20 columns is reported as "got 17": the count stops
     * at the limit; the message is not asserted here) */
    features_candle *c = NULL;
    size_t n = 0;
    char why[128] = "";
    const char *wide = "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20\n";
    CHECK_EQ_INT(feed_csv_parse(wide, strlen(wide), &c, &n, why, sizeof why), PD_EPARSE);
    CHECK(strncmp(why, "line 1: expected 6 or 12 columns", 32) == 0);
    EXPECT_FAIL("1704067200,1,2,0.5,1.5,3\n1704067260,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17\n",
                "line 2: expected 6 columns, got more than 16");
    snprintf(buf, sizeof buf, "1704067200,1.%0100d,2,0.5,1.5,3\n", 0);
    EXPECT_FAIL(buf, "line 1: open is too long");
    snprintf(buf, sizeof buf, "%0100d,1,2,0.5,1.5,3\n", 1);
    EXPECT_FAIL(buf, "line 1: open_time is too long");
    EXPECT_FAIL("1704067200,,2,0.5,1.5,3\n", "line 1: open is empty");
    EXPECT_FAIL("1704067200,\"\",2,0.5,1.5,3\n", "line 1: open is empty");
    EXPECT_FAIL("1704067200,\t \t,2,0.5,1.5,3\n", "line 1: open is empty");
    EXPECT_FAIL("1704067200,1x,2,0.5,1.5,3\n", "line 1: open is not a number ('1x')");
    /* tabs and quotes around a good number are accepted */
    const char *ok = "1704067200,\t\"1.5\"\t,2, 0.5 ,1.5,3\n";
    CHECK_EQ_INT(feed_csv_parse(ok, strlen(ok), &c, &n, why, sizeof why), 0);
    CHECK_EQ_INT(n, 1);
    if (n == 1)
        CHECK_NEAR(c[0].open, 1.5, 0);
    free(c);
}

TEST(bad_arguments)
{
    features_candle *c;
    size_t n;
    char why[8]; /* a short buffer is truncated, never overrun */
    CHECK_EQ_INT(feed_csv_parse(NULL, 3, &c, &n, why, sizeof why), PD_EINVAL);
    CHECK_EQ_INT(feed_csv_parse("x", 1, NULL, &n, why, sizeof why), PD_EINVAL);
    CHECK_EQ_INT(feed_csv_parse("1,2,3,4,5", 9, &c, &n, why, sizeof why), PD_EPARSE);
    CHECK_EQ_INT(strlen(why), 7);
    CHECK_EQ_INT(feed_csv_parse("1,2,3,4,5", 9, &c, &n, NULL, 0), PD_EPARSE);
    /* a buffer without a terminating NUL: the parser reads only len bytes */
    char raw[] = {'1', '7', '0', '4', '0', '6', '7', '2', '0', '0', ',',
                  '1', ',', '2', ',', '1', ',', '1', ',', '5', '9'};
    CHECK_EQ_INT(feed_csv_parse(raw, sizeof raw - 1, &c, &n, NULL, 0), 0);
    CHECK_EQ_INT(n, 1);
    CHECK(c[0].volume == 5);
    free(c);
}

static void real_file(const char *name, size_t rows, int64_t first, int64_t last)
{
    const char *dir = getenv("PREDICTD_SHARED_DATA");
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    char *text;
    size_t len;
    int rc = util_read_file(path, 64u << 20, &text, &len);
    CHECK_EQ_INT(rc, 0);
    if (rc)
        return;
    features_candle *c;
    size_t n;
    char why[256] = "";
    rc = feed_csv_parse(text, len, &c, &n, why, sizeof why);
    if (rc)
        UNIT_FAIL_("%s: %s", name, why);
    free(text);
    if (rc)
        return;
    CHECK_EQ_INT(n, rows);
    CHECK_EQ_INT(c[0].t, first);
    CHECK_EQ_INT(c[n - 1].t, last);
    for (size_t i = 1; i < n; i++)
        if (c[i].t <= c[i - 1].t) {
            UNIT_FAIL_("%s: not sorted at %zu", name, i);
            break;
        }
    free(c);
}

TEST(real_files_parse_fully)
{
    UNIT_NEED_ENV("PREDICTD_SHARED_DATA");
    int64_t a, b, c, d;
    CHECK_EQ_INT(util_parse_time("2011-08-18T00:00:00Z", &a), 0);
    CHECK_EQ_INT(util_parse_time("2025-09-24T00:00:00Z", &b), 0);
    real_file("BTCUSD_1d_bitstamp-coinbase.csv", 5152, a, b);
    CHECK_EQ_INT(util_parse_time("2017-11-04T23:02:00Z", &c), 0);
    CHECK_EQ_INT(util_parse_time("2017-11-14T22:59:00Z", &d), 0);
    real_file("UNITTEST-BTC_1m_freqtrade.csv", 13681, c, d);
}

int main(void)
{
    RUN(simple_with_header_rfc3339);
    RUN(simple_epoch_units_no_header);
    RUN(binance_ms_and_us);
    RUN(binance_with_header_crlf_blank_lines);
    RUN(quoted_and_spaced_fields);
    RUN(bad_rows_have_line_numbers);
    RUN(misaligned_row_is_named_by_its_line);
    RUN(bad_arguments);
    RUN(limits_of_fields_and_columns);
    RUN(real_files_parse_fully);
    return unit_report();
}
