/*
 * test_wire.c: the pure wire parsers (api/url.c, api/ws.c): strict URL
 * checks and decoding, path patterns, UTF-8, WebSocket frame headers
 * (limits checked from the header alone, masking, reserved bits, control
 * frames), the server's frame header and the handshake's accept key.
 */
#include <stdint.h>
#include <string.h>

#include "api/wire_internal.h"
#include "unit.h"
#include "util/util.h"

TEST(url_check_is_strict)
{
    const char *why = NULL;
    static const char *const good[] = {"/api/predictions/BTCUSDT?timeframe=15m",
                                       "/a%20b?x=%C3%A9&y=%2F", "/", "/health?", "/x?a=b+c"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        CHECK_EQ_INT(api__url_check(good[i], strlen(good[i]), &why), 0);
    static const char *const bad[] = {"/api/predictions/BTCUSDT%g0XYZ",
                                      "/api/predictions/BTC%zzUSDT",
                                      "/x%",
                                      "/x%4",
                                      "/x%00",
                                      "/x?timeframe=15m%g0",
                                      "/x?a=%",
                                      "/x?symbol=%FF",
                                      "/x?s=%C0%AF",
                                      "/x?s=%ED%A0%80",
                                      "/x?s=%F4%90%80%80",
                                      "/%E2%82"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        why = NULL;
        CHECK_EQ_INT(api__url_check(bad[i], strlen(bad[i]), &why), PD_EINVAL);
        CHECK(why != NULL);
    }
    /* a raw NUL inside the given length */
    CHECK_EQ_INT(api__url_check("/a\0b", 4, &why), PD_EINVAL);
}

TEST(url_check_utf8_across_chunks)
{
    /* a long query whose multi-byte characters straddle the checker's
     * 256-byte chunks */
    char url[2048] = "/x?q=";
    for (int i = 0; i < 300; i++)
        strcat(url, "%C3%A9");
    const char *why = NULL;
    CHECK_EQ_INT(api__url_check(url, strlen(url), &why), 0);
    strcat(url, "%C3");
    CHECK_EQ_INT(api__url_check(url, strlen(url), &why), PD_EINVAL);
}

TEST(url_decode)
{
    char out[16];
    CHECK_EQ_INT(api__url_decode("BTC%55SDT", 9, out, sizeof out), 7);
    CHECK_EQ_STR(out, "BTCUSDT");
    CHECK_EQ_INT(api__url_decode("BTC%zz", 6, out, sizeof out), PD_EINVAL);
    CHECK_EQ_INT(api__url_decode("BTC%g0", 6, out, sizeof out), PD_EINVAL);
    CHECK_EQ_INT(api__url_decode("BTC%00", 6, out, sizeof out), PD_EINVAL);
    CHECK_EQ_INT(api__url_decode("BTC%5", 5, out, sizeof out), PD_EINVAL);
    CHECK_EQ_INT(api__url_decode("0123456789abcdef", 16, out, sizeof out), PD_ETOOBIG);
}

TEST(path_patterns)
{
    struct api_path_params pp;
    const char *p = "/api/models/BTCUSDT/15m/performance";
    CHECK_EQ_INT(api__path_match("/api/models/:symbol/:timeframe/performance", p, strlen(p), &pp),
                 1);
    CHECK_EQ_INT((int)pp.n, 2);
    CHECK(pp.name_len[0] == 6 && memcmp(pp.name[0], "symbol", 6) == 0);
    CHECK_EQ_STR(pp.value[0], "BTCUSDT");
    CHECK_EQ_STR(pp.value[1], "15m");
    CHECK_EQ_INT(api__path_match("/api/models/:symbol/:timeframe", p, strlen(p), NULL), 0);
    CHECK_EQ_INT(api__path_match("/health", "/health/", 8, NULL), 1);
    CHECK_EQ_INT(api__path_match("/health", "//health", 8, NULL), 1);
    CHECK_EQ_INT(api__path_match("/health", "/healthz", 8, NULL), 0);
    CHECK_EQ_INT(api__path_match("/", "/", 1, NULL), 1);
    CHECK_EQ_INT(api__path_match("/", "/x", 2, NULL), 0);
    p = "/api/predictions/BTC%55SDT";
    CHECK_EQ_INT(api__path_match("/api/predictions/:symbol", p, strlen(p), &pp), 1);
    CHECK_EQ_STR(pp.value[0], "BTCUSDT");
    p = "/api/predictions/BTC%zz";
    CHECK_EQ_INT(api__path_match("/api/predictions/:symbol", p, strlen(p), &pp), PD_EINVAL);
    /* a literal segment matches its decoded form */
    CHECK_EQ_INT(api__path_match("/api/predictions/stream", "/api/predictions/%73tream", 25, NULL),
                 1);
}

TEST(utf8)
{
    CHECK(api__utf8_valid("plain", 5));
    CHECK(api__utf8_valid("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9));
    CHECK(!api__utf8_valid("\xff", 1));
    CHECK(!api__utf8_valid("\xc0\xaf", 2));         /* overlong '/' */
    CHECK(!api__utf8_valid("\xed\xa0\x80", 3));     /* a surrogate */
    CHECK(!api__utf8_valid("\xf4\x90\x80\x80", 4)); /* above U+10FFFF */
    CHECK(!api__utf8_valid("\xe2\x82", 2));         /* cut short */
}

TEST(ws_frame_headers)
{
    struct api_ws_frame f;
    /* masked "Hello" (RFC 6455 5.7) */
    const uint8_t hello[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58};
    for (size_t n = 0; n < 6; n++)
        CHECK_EQ_INT(api__ws_frame_parse(hello, n, 8192, &f), 0);
    CHECK_EQ_INT(api__ws_frame_parse(hello, sizeof hello, 8192, &f), 1);
    CHECK(f.fin && f.opcode == API_WS_TEXT && f.len == 5 && f.header_len == 6);
    uint8_t payload[5];
    memcpy(payload, hello + 6, 5);
    api__ws_unmask(payload, 5, f.mask, 0);
    CHECK(memcmp(payload, "Hello", 5) == 0);

    /* 2^63-1 bytes declared: refused from the header, before the mask */
    uint8_t huge[10] = {0x81, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    CHECK_EQ_INT(api__ws_frame_parse(huge, sizeof huge, 8192, &f), -API_WS_CLOSE_TOO_BIG);
    huge[2] = 0xff; /* the top bit must be clear */
    CHECK_EQ_INT(api__ws_frame_parse(huge, sizeof huge, 8192, &f), -API_WS_CLOSE_PROTOCOL);
    uint8_t big16[8] = {0x81, 0xfe, 0x20, 0x01, 1, 2, 3, 4}; /* 8193 */
    CHECK_EQ_INT(api__ws_frame_parse(big16, sizeof big16, 8192, &f), -API_WS_CLOSE_TOO_BIG);
    uint8_t short16[8] = {0x81, 0xfe, 0x00, 0x05, 1, 2, 3, 4}; /* 5 in 16 bits */
    CHECK_EQ_INT(api__ws_frame_parse(short16, sizeof short16, 8192, &f), -API_WS_CLOSE_PROTOCOL);

    const uint8_t unmasked[] = {0x81, 0x05, 'H', 'e', 'l', 'l', 'o'};
    CHECK_EQ_INT(api__ws_frame_parse(unmasked, sizeof unmasked, 8192, &f), -API_WS_CLOSE_PROTOCOL);
    const uint8_t rsv[] = {0xc1, 0x80, 0, 0, 0, 0};
    CHECK_EQ_INT(api__ws_frame_parse(rsv, sizeof rsv, 8192, &f), -API_WS_CLOSE_PROTOCOL);
    const uint8_t opcode3[] = {0x83, 0x80, 0, 0, 0, 0};
    CHECK_EQ_INT(api__ws_frame_parse(opcode3, sizeof opcode3, 8192, &f), -API_WS_CLOSE_PROTOCOL);
    const uint8_t ping_frag[] = {0x09, 0x80, 0, 0, 0, 0};
    CHECK_EQ_INT(api__ws_frame_parse(ping_frag, sizeof ping_frag, 8192, &f),
                 -API_WS_CLOSE_PROTOCOL);
    const uint8_t ping_long[] = {0x89, 0xfe, 0x00, 0x7e};
    CHECK_EQ_INT(api__ws_frame_parse(ping_long, sizeof ping_long, 8192, &f),
                 -API_WS_CLOSE_PROTOCOL);
    const uint8_t close0[] = {0x88, 0x80, 1, 2, 3, 4};
    CHECK_EQ_INT(api__ws_frame_parse(close0, sizeof close0, 8192, &f), 1);
    CHECK(f.opcode == API_WS_CLOSE && f.len == 0);
}

TEST(ws_server_headers_and_accept)
{
    uint8_t h[10];
    CHECK_EQ_INT((int)api__ws_frame_header(h, API_WS_TEXT, 5), 2);
    CHECK(h[0] == 0x81 && h[1] == 5);
    CHECK_EQ_INT((int)api__ws_frame_header(h, API_WS_TEXT, 300), 4);
    CHECK(h[1] == 126 && h[2] == 1 && h[3] == 44);
    CHECK_EQ_INT((int)api__ws_frame_header(h, API_WS_BINARY, 70000), 10);
    CHECK(h[1] == 127 && h[7] == 1 && h[8] == 0x11 && h[9] == 0x70);
    char acc[29];
    CHECK_EQ_INT(api__ws_accept("dGhlIHNhbXBsZSBub25jZQ==", acc), 0); /* RFC 6455 1.3 */
    CHECK_EQ_STR(acc, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    CHECK_EQ_INT(api__ws_accept("short", acc), PD_EINVAL);
    CHECK_EQ_INT(api__ws_accept("dGhlIHNhbXBsZSBub25jZQ!=", acc), PD_EINVAL);
}

int main(void)
{
    RUN(url_check_is_strict);
    RUN(url_check_utf8_across_chunks);
    RUN(url_decode);
    RUN(path_patterns);
    RUN(utf8);
    RUN(ws_frame_headers);
    RUN(ws_server_headers_and_accept);
    return unit_report();
}
