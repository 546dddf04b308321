/* Unit tests of util: time parsing and formatting, timeframes, symbols,
 * SHA-256 against FIPS vectors, JSON escaping, atomic file writes. */
#include "tests/unit/unit.h"
#include "tests/unit/fixtures.h"
#include "util/util.h"

#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

TEST(test_time_parse)
{
    int64_t t = 0;
    CHECK_EQ_INT(util_parse_time("1970-01-01T00:00:00Z", &t), 0);
    CHECK_EQ_INT(t, 0);
    CHECK_EQ_INT(util_parse_time("2017-11-04T23:02:00Z", &t), 0);
    CHECK_EQ_INT(t, 1509836520);
    CHECK_EQ_INT(util_parse_time("2017-11-04 23:02:00.123+01:00", &t), 0);
    CHECK_EQ_INT(t, 1509836520 - 3600);
    CHECK_EQ_INT(util_parse_time("2024-02-29", &t), 0);
    CHECK_EQ_INT(t, 1709164800);
    CHECK_EQ_INT(util_parse_time("2024-13-01", &t), PD_EINVAL);
    CHECK_EQ_INT(util_parse_time("2024-01-01T00:00:00Zjunk", &t), PD_EINVAL);
    CHECK_EQ_INT(util_parse_time("", &t), PD_EINVAL);
    char buf[32];
    CHECK_EQ_STR(util_rfc3339(1509836520, buf), "2017-11-04T23:02:00Z");
}

TEST(test_timeframes)
{
    CHECK_EQ_INT(util_tf_seconds("15m"), 900);
    CHECK_EQ_INT(util_tf_seconds("1d"), 86400);
    CHECK_EQ_INT(util_tf_seconds("2h"), 0);
    CHECK_EQ_INT(util_tf_seconds(NULL), 0);
    /* at 10:07, the last closed 15m candle opened at 09:45 */
    CHECK_EQ_INT(util_tf_last_closed_open(36420, 900), 35100);
    /* exactly at a boundary the candle that just closed counts */
    CHECK_EQ_INT(util_tf_last_closed_open(36000, 900), 35100);
}

TEST(test_symbols)
{
    CHECK(util_symbol_valid("BTCUSDT"));
    CHECK(util_symbol_valid("A1"));
    CHECK(!util_symbol_valid("A"));
    CHECK(!util_symbol_valid("btcusdt"));
    CHECK(!util_symbol_valid("../etc"));
    CHECK(!util_symbol_valid("ABCDEFGHIJKLMNOPQRSTU")); /* 21 */
    CHECK(util_symbol_valid("ABCDEFGHIJKLMNOPQRST"));   /* 20 */
    CHECK(!util_symbol_valid(""));
    CHECK(!util_symbol_valid(NULL));
}

TEST(test_sha256)
{
    char hex[65];
    util_sha256_hex("", 0, hex);
    CHECK_EQ_STR(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    util_sha256_hex("abc", 3, hex);
    CHECK_EQ_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    util_sha256_hex(m, strlen(m), hex);
    CHECK_EQ_STR(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    /* a million 'a' through many updates of odd sizes */
    util_sha256 s;
    util_sha256_init(&s);
    char chunk[997];
    memset(chunk, 'a', sizeof chunk);
    size_t left = 1000000;
    while (left) {
        size_t k = left < sizeof chunk ? left : sizeof chunk;
        util_sha256_update(&s, chunk, k);
        left -= k;
    }
    uint8_t d[32];
    util_sha256_final(&s, d);
    char got[65];
    for (int i = 0; i < 32; i++)
        snprintf(got + 2 * i, 3, "%02x", d[i]);
    /* FIPS 180-2 test vector: all 32 bytes */
    CHECK_EQ_STR(got, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(test_json_writer)
{
    util_buf b;
    util_buf_init(&b);
    util_json_str(&b, "a\"b\\c\nd\x01");
    util_buf_puts(&b, ",");
    util_json_num(&b, 1.0 / 0.0);
    util_buf_puts(&b, ",");
    util_json_num(&b, 42);
    util_buf_puts(&b, ",");
    util_json_fixed(&b, 0.123456, 3);
    CHECK(util_buf_ok(&b));
    CHECK_EQ_STR(b.data, "\"a\\\"b\\\\c\\nd\\u0001\",null,42,0.123");
    util_buf_reset(&b);
    for (int i = 0; i < 10000; i++)
        util_buf_printf(&b, "%d,", i);
    CHECK(b.len > 40000);
    char *s = util_buf_steal(&b);
    CHECK(s && strncmp(s, "0,1,2,", 6) == 0);
    free(s);
    util_buf_cleanup(&b);
}

TEST(test_files)
{
    char dir[160];
    CHECK(unit_tmpdir(dir, sizeof dir, "predictd-util") != NULL);
    char path[256];
    snprintf(path, sizeof path, "%s/f.txt", dir);
    CHECK_EQ_INT(util_write_file_atomic(path, "hello", 5, 0600), 0);
    char *data = NULL;
    size_t n = 0;
    CHECK_EQ_INT(util_read_file(path, 100, &data, &n), 0);
    CHECK_EQ_INT(n, 5);
    CHECK_EQ_STR(data, "hello");
    free(data);
    CHECK_EQ_INT(util_read_file(path, 4, &data, &n), PD_ETOOBIG);
    CHECK_EQ_INT(util_read_file("/nonexistent/x", 4, &data, &n), PD_ENOTFOUND);
    CHECK_EQ_INT(util_rmtree(dir), 0);
    CHECK(access(dir, F_OK) != 0);
}

TEST(test_errors)
{
    CHECK_EQ_STR(util_err_code(PD_EDB), "data_unavailable");
    CHECK_EQ_STR(util_err_code(PD_EUNKNOWNSYM), "unknown_symbol");
    CHECK_EQ_STR(util_err_code(-999), "internal_error");
    CHECK(strlen(util_strerror(PD_ENOMODEL)) > 0);
}

int main(void)
{
    RUN(test_time_parse);
    RUN(test_timeframes);
    RUN(test_symbols);
    RUN(test_sha256);
    RUN(test_json_writer);
    RUN(test_files);
    RUN(test_errors);
    return unit_report();
}
