/*
 * test_api_parsers.c: the pure parsers of the HTTP layer that test_wire.c
 * does not cover: the headers the dispatcher interprets (CORS origin lists,
 * X-Request-Id, Content-Length), the trusted proxy list and the client
 * address it yields from X-Forwarded-For, stream tokens (a known-answer
 * HMAC, expiry, tampering, malformed forms) and the admin routes' JSON
 * bodies (every refusal with its code and reason).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>

#include "api/bodies_internal.h"
#include "api/http_internal.h"
#include "unit.h"
#include "util/util.h"

TEST(origin_lists)
{
    CHECK(!api__origin_allowed(NULL, "https://a.example"));
    CHECK(!api__origin_allowed("https://a.example", NULL));
    CHECK(!api__origin_allowed("", "https://a.example"));
    CHECK(api__origin_allowed("https://a.example", "https://a.example"));
    CHECK(api__origin_allowed(" https://a.example , https://b.example ", "https://b.example"));
    CHECK(api__origin_allowed("https://a.example,https://b.example", "https://a.example"));
    /* exact match only: no prefix, no suffix, no case folding */
    CHECK(!api__origin_allowed("https://a.example", "https://a.example.evil"));
    CHECK(!api__origin_allowed("https://a.example.evil", "https://a.example"));
    CHECK(!api__origin_allowed("https://a.example", "HTTPS://A.EXAMPLE"));
    CHECK(!api__origin_allowed("https://a.example", ""));
    /* "*" as an item allows any origin; "*" inside an item does not */
    CHECK(api__origin_allowed("*", "https://anything.example"));
    CHECK(api__origin_allowed("https://a.example, * ", "null"));
    CHECK(!api__origin_allowed("https://*.example", "https://a.example"));
    CHECK(!api__origin_allowed("**", "https://a.example"));
    /* separators alone allow nothing */
    CHECK(!api__origin_allowed(" , ,, ", "https://a.example"));
}

TEST(request_ids)
{
    CHECK(!api__request_id_ok(NULL));
    CHECK(!api__request_id_ok(""));
    CHECK(api__request_id_ok("a"));
    CHECK(api__request_id_ok("req-1_2.3:4"));
    char id[80];
    memset(id, 'x', sizeof id);
    id[63] = '\0';
    CHECK(api__request_id_ok(id)); /* 63 characters */
    id[63] = 'x';
    id[64] = '\0';
    CHECK(!api__request_id_ok(id)); /* 64 */
    /* anything that could forge a log line or a header is refused */
    static const char *const bad[] = {"a b", "a\nb", "a\rb", "a\"b", "a/b", "é", "a;b", "a,b"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK(!api__request_id_ok(bad[i]));
}

TEST(content_lengths)
{
    CHECK(!api__content_length_over("0", 65536));
    CHECK(!api__content_length_over("65536", 65536));
    CHECK(api__content_length_over("65537", 65536));
    CHECK(api__content_length_over("18446744073709551615", 65536));
    CHECK(api__content_length_over("18446744073709551616", 65536)); /* ERANGE */
    CHECK(api__content_length_over("99999999999999999999999999", 65536));
}

/* ------------------------------------------------------------------------
 * Trusted proxies and the client address.
 */
TEST(trusted_proxy_lists)
{
    struct api_cidr *v = (struct api_cidr *)1;
    size_t n = 99;
    char why[160] = "";
    CHECK_EQ_INT(api_trusted_proxies_parse(NULL, &v, &n, why, sizeof why), 0);
    CHECK(v == NULL && n == 0);
    CHECK_EQ_INT(api_trusted_proxies_parse("", &v, &n, why, sizeof why), 0);
    CHECK(v == NULL && n == 0);
    /* separators only: no entry */
    CHECK_EQ_INT(api_trusted_proxies_parse(" , ,", &v, &n, why, sizeof why), 0);
    CHECK_EQ_INT((int)n, 0);
    free(v);

    CHECK_EQ_INT(api_trusted_proxies_parse("10.1.2.3, 192.168.7.9/16 0.0.0.0/0,172.16.5.5/32", &v,
                                           &n, why, sizeof why),
                 0);
    CHECK_EQ_INT((int)n, 4);
    CHECK(v[0].mask == 0xffffffffu && v[0].net == inet_addr("10.1.2.3"));
    /* host bits are masked off */
    CHECK(v[1].mask == htonl(0xffff0000u) && v[1].net == inet_addr("192.168.0.0"));
    CHECK(v[2].mask == 0 && v[2].net == 0);
    CHECK(v[3].mask == 0xffffffffu && v[3].net == inet_addr("172.16.5.5"));
    free(v);

    static const char *const bad[] = {"10.0.0.1/33",
                                      "10.0.0.1/-1",
                                      "10.0.0.1/",
                                      "10.0.0.1/x",
                                      "10.0.0.1/8x",
                                      "10.0.0.1/ 8",
                                      "10.0.0",
                                      "::1",
                                      "fe80::/10",
                                      "host.example",
                                      "10.0.0.1/+8",
                                      "10.0.0.1,256.0.0.1",
                                      "123456789012345678901234567890123"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        why[0] = '\0';
        v = (struct api_cidr *)1;
        CHECK_EQ_INT(api_trusted_proxies_parse(bad[i], &v, &n, why, sizeof why), PD_EINVAL);
        CHECK(v == NULL && n == 0);
        CHECK(strstr(why, "PREDICTD_TRUSTED_PROXIES") != NULL);
        CHECK(strstr(why, "not an IPv4 address or CIDR") != NULL);
    }
    /* the reason quotes the entry, bounded */
    CHECK_EQ_INT(api_trusted_proxies_parse("10.0.0.1 bogus", &v, &n, why, sizeof why), PD_EINVAL);
    CHECK(strstr(why, "'bogus'") != NULL);

    /* at most 64 entries */
    char list[2048] = "";
    for (int i = 0; i < 64; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "10.0.%d.1,", i);
    CHECK_EQ_INT(api_trusted_proxies_parse(list, &v, &n, why, sizeof why), 0);
    CHECK_EQ_INT((int)n, 64);
    free(v);
    strcat(list, "10.9.9.9");
    CHECK_EQ_INT(api_trusted_proxies_parse(list, &v, &n, why, sizeof why), PD_EINVAL);
    CHECK(strstr(why, "more than 64 entries") != NULL);
    CHECK(v == NULL && n == 0);
}

/* The client address of a request from peer (an IPv4 or IPv6 literal) with
 * X-Forwarded-For xff (NULL: none), through the trusted list. */
static void client_of(const char *trusted_list, const char *peer, const char *xff, char *out,
                      size_t len)
{
    struct api_http h;
    memset(&h, 0, sizeof h);
    char why[160];
    if (api_trusted_proxies_parse(trusted_list, &h.trusted, &h.ntrusted, why, sizeof why) != 0) {
        snprintf(out, len, "(bad list)");
        return;
    }
    struct _u_request req;
    ulfius_init_request(&req);
    struct sockaddr_storage *ss = calloc(1, sizeof *ss);
    if (peer && strchr(peer, ':')) {
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
        a6->sin6_family = AF_INET6;
        inet_pton(AF_INET6, peer, &a6->sin6_addr);
    } else if (peer) {
        struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
        a4->sin_family = AF_INET;
        inet_pton(AF_INET, peer, &a4->sin_addr);
    } else {
        ss->ss_family = AF_UNIX;
    }
    req.client_address = (struct sockaddr *)ss;
    if (xff)
        u_map_put(req.map_header, "X-Forwarded-For", xff);
    api_client_address(&h, &req, out, len);
    ulfius_clean_request(&req); /* frees client_address */
    free(h.trusted);
}

TEST(client_addresses)
{
    char out[64];
    /* no trusted proxy: the peer, whatever it claims */
    client_of("", "203.0.113.7", "1.2.3.4", out, sizeof out);
    CHECK_EQ_STR(out, "203.0.113.7");
    /* an untrusted peer cannot pick its address */
    client_of("10.0.0.0/8", "203.0.113.7", "1.2.3.4", out, sizeof out);
    CHECK_EQ_STR(out, "203.0.113.7");
    /* a trusted peer without the header: the peer */
    client_of("10.0.0.0/8", "10.1.1.1", NULL, out, sizeof out);
    CHECK_EQ_STR(out, "10.1.1.1");
    /* a trusted peer names the client */
    client_of("10.0.0.0/8", "10.1.1.1", "198.51.100.4", out, sizeof out);
    CHECK_EQ_STR(out, "198.51.100.4");
    /* read from the right, trusted hops skipped, what the client itself
     * sent further left ignored */
    client_of("10.0.0.0/8", "10.1.1.1", "6.6.6.6, 198.51.100.4,\t10.2.2.2 , 10.3.3.3", out,
              sizeof out);
    CHECK_EQ_STR(out, "198.51.100.4");
    /* every hop trusted: the leftmost */
    client_of("10.0.0.0/8", "10.1.1.1", "10.9.9.9,10.2.2.2", out, sizeof out);
    CHECK_EQ_STR(out, "10.9.9.9");
    /* a hop that is not an address ends the walk at the hop after it */
    client_of("10.0.0.0/8", "10.1.1.1", "198.51.100.4, unknown, 10.2.2.2", out, sizeof out);
    CHECK_EQ_STR(out, "10.2.2.2");
    client_of("10.0.0.0/8", "10.1.1.1", "198.51.100.4, 2001:db8::1", out, sizeof out);
    CHECK_EQ_STR(out, "10.1.1.1");
    /* an empty hop, an overlong one, an empty header */
    client_of("10.0.0.0/8", "10.1.1.1", "198.51.100.4,,", out, sizeof out);
    CHECK_EQ_STR(out, "10.1.1.1");
    client_of("10.0.0.0/8", "10.1.1.1", "198.51.100.4, 100.100.100.100.100", out, sizeof out);
    CHECK_EQ_STR(out, "10.1.1.1");
    client_of("10.0.0.0/8", "10.1.1.1", "", out, sizeof out);
    CHECK_EQ_STR(out, "10.1.1.1");
    client_of("10.0.0.0/8", "10.1.1.1", "   ", out, sizeof out);
    CHECK_EQ_STR(out, "10.1.1.1");
    /* at most 32 hops are walked: a chain of 40 trusted hops stops at the
     * 32nd from the right */
    char chain[1024] = "198.51.100.4";
    for (int i = 40; i >= 1; i--)
        snprintf(chain + strlen(chain), sizeof chain - strlen(chain), ",10.0.0.%d", i);
    client_of("10.0.0.0/8", "10.1.1.1", chain, out, sizeof out);
    CHECK_EQ_STR(out, "10.0.0.32");
    /* an IPv6 peer is the client: proxies are IPv4 */
    client_of("0.0.0.0/0", "2001:db8::5", "198.51.100.4", out, sizeof out);
    CHECK_EQ_STR(out, "2001:db8::5");
    /* another family, or no address at all: "unknown" */
    client_of("", NULL, NULL, out, sizeof out);
    CHECK_EQ_STR(out, "unknown");
    struct api_http h;
    memset(&h, 0, sizeof h);
    struct _u_request req;
    ulfius_init_request(&req);
    free(req.client_address);
    req.client_address = NULL;
    api_client_address(&h, &req, out, sizeof out);
    CHECK_EQ_STR(out, "unknown");
    ulfius_clean_request(&req);
}

/* ------------------------------------------------------------------------
 * Stream tokens.
 */
/* A secret of 20 bytes 0x0b padded with zeros: HMAC pads short keys with
 * zeros, so this is RFC 4231's first key; the MAC below of "1700000060"
 * under it was computed independently (Python's hmac). */
static const char known_token[] =
    "1700000060.48e1061e38524762300ee9d89d9b7f6e7e01c556d2bff22b100c0e7b6ec72ee8";

static void known_secret(struct api_http *h)
{
    memset(h, 0, sizeof *h);
    memset(h->stream_secret, 0x0b, 20);
}

TEST(stream_tokens_known_answer)
{
    struct api_http h;
    known_secret(&h);
    CHECK(api_stream_token_valid(&h, known_token, 1700000000));  /* 60 s left */
    CHECK(api_stream_token_valid(&h, known_token, 1700000060));  /* its last second */
    CHECK(!api_stream_token_valid(&h, known_token, 1700000061)); /* expired */
    /* an expiry further than the tokens' life is forged, whatever its MAC */
    CHECK(!api_stream_token_valid(&h, known_token, 1699999999));
    CHECK(!api_stream_token_valid(&h, NULL, 1700000000));
}

TEST(stream_tokens_refuse_tampering)
{
    struct api_http h;
    known_secret(&h);
    char t[sizeof known_token];
    /* every single character changed is refused */
    for (size_t i = 0; i < sizeof known_token - 1; i++) {
        memcpy(t, known_token, sizeof t);
        if (t[i] == '.')
            t[i] = '0';
        else
            t[i] = t[i] == 'f' ? '0' : t[i] == '9' ? 'a' : (char)(t[i] + 1);
        if (api_stream_token_valid(&h, t, 1700000000)) {
            printf("  tampered at %zu accepted: %s\n", i, t);
            CHECK(0);
        }
    }
    /* upper-case hex is another string */
    memcpy(t, known_token, sizeof t);
    for (char *p = strchr(t, '.'); *p; p++)
        if (*p >= 'a' && *p <= 'f')
            *p = (char)(*p - 'a' + 'A');
    CHECK(!api_stream_token_valid(&h, t, 1700000000));
    /* another process's secret */
    struct api_http other;
    known_secret(&other);
    other.stream_secret[31] = 1;
    CHECK(!api_stream_token_valid(&other, known_token, 1700000000));
    /* malformed: too short, too long, no dot, no number, trailing bytes */
    CHECK(!api_stream_token_valid(&h, "", 1700000000));
    CHECK(!api_stream_token_valid(&h, "1700000060.48e1", 1700000000));
    char longer[200];
    snprintf(longer, sizeof longer, "%s%s", known_token, "00000000000000000000");
    CHECK(!api_stream_token_valid(&h, longer, 1700000000));
    snprintf(longer, sizeof longer, "%s0", known_token);
    CHECK(!api_stream_token_valid(&h, longer, 1700000000));
    /* at or past API_STREAM_TOKEN_MAX bytes: refused before any parsing */
    memset(longer, '1', API_STREAM_TOKEN_MAX);
    longer[API_STREAM_TOKEN_MAX] = '\0';
    CHECK(!api_stream_token_valid(&h, longer, 1700000000));
    snprintf(longer, sizeof longer, "01700000060.%s", strchr(known_token, '.') + 1);
    CHECK(!api_stream_token_valid(&h, longer, 1700000000)); /* another spelling of the expiry */
    snprintf(longer, sizeof longer, "1700000060x%s", strchr(known_token, '.') + 1);
    CHECK(!api_stream_token_valid(&h, longer, 1700000000));
    snprintf(longer, sizeof longer, "x%s", known_token + 1);
    CHECK(!api_stream_token_valid(&h, longer, 1700000000));
    memset(longer, 'a', 70);
    longer[70] = '\0';
    CHECK(!api_stream_token_valid(&h, longer, 1700000000));
}

TEST(stream_token_secret_is_random)
{
    struct api_http a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    api_stream_token_init(&a);
    api_stream_token_init(&b);
    static const uint8_t zero[32];
    CHECK(memcmp(a.stream_secret, zero, 32) != 0);
    CHECK(memcmp(a.stream_secret, b.stream_secret, 32) != 0);
    /* the known token is not valid under a random secret */
    CHECK(!api_stream_token_valid(&a, known_token, 1700000000));
}

/* ------------------------------------------------------------------------
 * Admin bodies.
 */
#define B(s) s, strlen(s)

TEST(reload_bodies)
{
    char sym[24] = "keep", tf[8] = "keep", why[256] = "";
    CHECK_EQ_INT(api__body_reload("", 0, sym, tf, why, sizeof why), 0);
    CHECK_EQ_STR(sym, "");
    CHECK_EQ_STR(tf, "");
    CHECK_EQ_INT(api__body_reload(B("{}"), sym, tf, why, sizeof why), 0);
    CHECK_EQ_INT(api__body_reload(B("{\"symbol\":\"ETHUSDT\",\"timeframe\":\"1h\"}"), sym, tf, why,
                                  sizeof why),
                 0);
    CHECK_EQ_STR(sym, "ETHUSDT");
    CHECK_EQ_STR(tf, "1h");
    CHECK_EQ_INT(api__body_reload(B("{\"symbol\":\"_default\",\"timeframe\":\"15m\"}"), sym, tf,
                                  why, sizeof why),
                 0);
    CHECK_EQ_STR(sym, "_default");

    /* not an object: parse errors, outputs untouched */
    static const char *const notobj[] = {"[]", "null", "\"x\"", "{", "{\"symbol\":}",
                                         "42", "{} {}"};
    for (size_t i = 0; i < sizeof notobj / sizeof notobj[0]; i++) {
        snprintf(sym, sizeof sym, "keep");
        why[0] = '\0';
        CHECK_EQ_INT(api__body_reload(B(notobj[i]), sym, tf, why, sizeof why), PD_EPARSE);
        CHECK(strncmp(why, "body must be a JSON object", 26) == 0);
        CHECK_EQ_STR(sym, "keep");
    }
    /* the JSON error is named when the text does not parse */
    CHECK_EQ_INT(api__body_reload(B("{"), sym, tf, why, sizeof why), PD_EPARSE);
    CHECK(strlen(why) > strlen("body must be a JSON object: "));
    CHECK_EQ_INT(api__body_reload(B("[1]"), sym, tf, why, sizeof why), PD_EPARSE);
    CHECK_EQ_STR(why, "body must be a JSON object");

    /* one without the other, bad values */
    CHECK_EQ_INT(api__body_reload(B("{\"symbol\":\"BTCUSDT\"}"), sym, tf, why, sizeof why),
                 PD_EINVAL);
    CHECK_EQ_STR(why, "give both symbol and timeframe, or neither");
    CHECK_EQ_INT(api__body_reload(B("{\"timeframe\":\"1h\"}"), sym, tf, why, sizeof why),
                 PD_EINVAL);
    CHECK_EQ_STR(why, "give both symbol and timeframe, or neither");
    /* a symbol that is not a string counts as absent */
    CHECK_EQ_INT(
        api__body_reload(B("{\"symbol\":5,\"timeframe\":\"1h\"}"), sym, tf, why, sizeof why),
        PD_EINVAL);
    CHECK_EQ_STR(why, "give both symbol and timeframe, or neither");
    static const char *const badval[] = {"{\"symbol\":\"btc usdt\",\"timeframe\":\"1h\"}",
                                         "{\"symbol\":\"\",\"timeframe\":\"1h\"}",
                                         "{\"symbol\":\"BTCUSDT\",\"timeframe\":\"7m\"}",
                                         "{\"symbol\":\"BTCUSDT\",\"timeframe\":\"\"}",
                                         "{\"symbol\":\"_DEFAULT\",\"timeframe\":\"1h\"}",
                                         "{\"symbol\":\"../etc\",\"timeframe\":\"1h\"}"};
    for (size_t i = 0; i < sizeof badval / sizeof badval[0]; i++) {
        snprintf(sym, sizeof sym, "keep");
        CHECK_EQ_INT(api__body_reload(B(badval[i]), sym, tf, why, sizeof why), PD_EINVAL);
        CHECK_EQ_STR(why, "invalid symbol or timeframe");
        CHECK_EQ_STR(sym, "keep");
    }
}

TEST(pin_bodies)
{
    uint32_t v = 77;
    char why[256];
    CHECK_EQ_INT(api__body_pin(B("{\"version\":3}"), &v, why, sizeof why), 0);
    CHECK_EQ_INT((int)v, 3);
    CHECK_EQ_INT(api__body_pin(B("{\"version\":2147483647}"), &v, why, sizeof why), 0);
    CHECK(v == 2147483647u);
    static const char *const bad[] = {"{}",
                                      "{\"version\":0}",
                                      "{\"version\":-1}",
                                      "{\"version\":2147483648}",
                                      "{\"version\":1.5}",
                                      "{\"version\":\"3\"}",
                                      "{\"version\":true}",
                                      "{\"version\":null}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        v = 77;
        CHECK_EQ_INT(api__body_pin(B(bad[i]), &v, why, sizeof why), PD_EINVAL);
        CHECK_EQ_STR(why, "body must be {\"version\": N} with N a positive integer");
        CHECK_EQ_INT((int)v, 77);
    }
    /* an empty body is {}: no version */
    CHECK_EQ_INT(api__body_pin("", 0, &v, why, sizeof why), PD_EINVAL);
    CHECK_EQ_INT(api__body_pin(B("[3]"), &v, why, sizeof why), PD_EPARSE);
    CHECK_EQ_INT(api__body_pin(B("version=3"), &v, why, sizeof why), PD_EPARSE);
}

TEST(label_bodies)
{
    char label[16] = "keep", why[256];
    uint32_t v = 77;
    int share = 77;
    CHECK_EQ_INT(api__body_label(B("{\"label\":\"canary\",\"version\":4,\"canary_share\":25}"),
                                 label, &v, &share, why, sizeof why),
                 0);
    CHECK_EQ_STR(label, "canary");
    CHECK_EQ_INT((int)v, 4);
    CHECK_EQ_INT(share, 25);
    /* version 0 removes the label; the share defaults to 0 */
    CHECK_EQ_INT(api__body_label(B("{\"label\":\"stable\",\"version\":0}"), label, &v, &share, why,
                                 sizeof why),
                 0);
    CHECK_EQ_STR(label, "stable");
    CHECK_EQ_INT((int)v, 0);
    CHECK_EQ_INT(share, 0);
    CHECK_EQ_INT(api__body_label(B("{\"label\":\"canary\",\"version\":1,\"canary_share\":100}"),
                                 label, &v, &share, why, sizeof why),
                 0);
    CHECK_EQ_INT(share, 100);

    static const char *const bad[] = {
        "{}",
        "{\"label\":\"stable\"}",             /* no version */
        "{\"label\":\"beta\",\"version\":1}", /* unknown label */
        "{\"label\":\"STABLE\",\"version\":1}",
        "{\"label\":1,\"version\":1}",
        "{\"label\":\"stable\",\"version\":-1}",
        "{\"label\":\"stable\",\"version\":2147483648}",
        "{\"label\":\"stable\",\"version\":\"1\"}",
        "{\"label\":\"canary\",\"version\":1,\"canary_share\":101}",
        "{\"label\":\"canary\",\"version\":1,\"canary_share\":-1}",
        "{\"label\":\"canary\",\"version\":1,\"canary_share\":\"50\"}", /* not an integer: 0 */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(label, sizeof label, "keep");
        v = 77;
        share = 77;
        int rc = api__body_label(B(bad[i]), label, &v, &share, why, sizeof why);
        if (i == sizeof bad / sizeof bad[0] - 1) {
            /* a share that is not an integer is absent (0), not refused */
            CHECK_EQ_INT(rc, 0);
            CHECK_EQ_INT(share, 0);
            continue;
        }
        if (rc != PD_EINVAL)
            printf("  %s gave %d\n", bad[i], rc);
        CHECK_EQ_INT(rc, PD_EINVAL);
        CHECK(strstr(why, "\"label\": \"stable\"|\"canary\"") != NULL);
        CHECK_EQ_STR(label, "keep");
        CHECK_EQ_INT((int)v, 77);
        CHECK_EQ_INT(share, 77);
    }
    CHECK_EQ_INT(api__body_label(B("\"stable\""), label, &v, &share, why, sizeof why), PD_EPARSE);
}

TEST(training_bodies)
{
    training_params p, keep;
    memset(&p, 0x5a, sizeof p);
    keep = p;
    char why[512];
    CHECK_EQ_INT(api__body_training(B("{\"symbols\":\"BTCUSDT\",\"timeframe\":\"15m\"}"), &p, why,
                                    sizeof why),
                 0);
    CHECK_EQ_INT((int)p.n_symbols, 1);
    CHECK_EQ_STR(p.symbols[0], "BTCUSDT");
    CHECK_EQ_STR(p.timeframe, "15m");
    CHECK(p.promote_if_better); /* the API's default */
    /* arrays, numbers, booleans; "symbol" is read as "symbols" */
    CHECK_EQ_INT(api__body_training(B("{\"symbol\":[\"BTCUSDT\",\"ETHUSDT\"],\"timeframe\":\"1h\","
                                      "\"epochs\":3,\"promote_if_better\":false,\"kind\":\"mlp\","
                                      "\"hidden\":[8,4]}"),
                                    &p, why, sizeof why),
                 0);
    CHECK_EQ_INT((int)p.n_symbols, 2);
    CHECK_EQ_INT(p.epochs, 3);
    CHECK(!p.promote_if_better);
    CHECK_EQ_INT((int)p.n_hidden, 2);

    /* not an object: the example in the reason */
    static const char *const notobj[] = {"", "[]", "nope", "{\"symbols\":"};
    for (size_t i = 0; i < sizeof notobj / sizeof notobj[0]; i++) {
        p = keep;
        CHECK_EQ_INT(api__body_training(B(notobj[i]), &p, why, sizeof why), PD_EPARSE);
        CHECK(strstr(why, "body must be a JSON object such as") != NULL);
        CHECK(memcmp(&p, &keep, sizeof p) == 0);
    }
    /* a value of the wrong shape names its key */
    p = keep;
    CHECK_EQ_INT(api__body_training(B("{\"symbols\":\"BTCUSDT\",\"timeframe\":{\"a\":1}}"), &p, why,
                                    sizeof why),
                 PD_EINVAL);
    CHECK_EQ_STR(why, "timeframe: expected a string, number, boolean or array");
    CHECK(memcmp(&p, &keep, sizeof p) == 0);
    CHECK_EQ_INT(api__body_training(B("{\"symbols\":[[\"BTCUSDT\"]],\"timeframe\":\"1h\"}"), &p,
                                    why, sizeof why),
                 PD_EINVAL);
    CHECK_EQ_STR(why, "symbols: expected a string, number, boolean or array");
    /* an unknown name, a bad value, a null (not skipped here) */
    CHECK_EQ_INT(api__body_training(B("{\"symbols\":\"BTCUSDT\",\"timeframe\":\"1h\","
                                      "\"colour\":\"red\"}"),
                                    &p, why, sizeof why),
                 PD_EINVAL);
    CHECK(strstr(why, "colour") != NULL);
    CHECK_EQ_INT(api__body_training(B("{\"symbols\":\"BTCUSDT\",\"timeframe\":\"1h\","
                                      "\"epochs\":\"many\"}"),
                                    &p, why, sizeof why),
                 PD_EINVAL);
    CHECK(strstr(why, "epochs") != NULL);
    CHECK_EQ_INT(
        api__body_training(B("{\"symbols\":\"BTCUSDT\",\"timeframe\":null}"), &p, why, sizeof why),
        PD_EINVAL);
    /* each value good, the whole set not: validation speaks */
    CHECK_EQ_INT(api__body_training(B("{\"timeframe\":\"1h\"}"), &p, why, sizeof why), PD_EINVAL);
    CHECK(why[0] != '\0');
    CHECK_EQ_INT(api__body_training(B("{\"symbols\":\"BTCUSDT\",\"timeframe\":\"7m\"}"), &p, why,
                                    sizeof why),
                 PD_EINVAL);
    CHECK(memcmp(&p, &keep, sizeof p) == 0);
}

int main(void)
{
    RUN(origin_lists);
    RUN(request_ids);
    RUN(content_lengths);
    RUN(trusted_proxy_lists);
    RUN(client_addresses);
    RUN(stream_tokens_known_answer);
    RUN(stream_tokens_refuse_tampering);
    RUN(stream_token_secret_is_random);
    RUN(reload_bodies);
    RUN(pin_bodies);
    RUN(label_bodies);
    RUN(training_bodies);
    return unit_report();
}
