/*
 * stream_token.c: short-lived tokens that let a browser open the prediction
 * streams when a read key is set.
 *
 *   POST /api/stream-token   (X-API-Key: the read or admin key)
 *       {"token":"<expiry>.<hmac>","expires_in":60,"expires_at":...}
 *
 * EventSource cannot send headers, and the key itself must never travel in
 * a URL (URLs end up in proxy logs and browser history). A keyed request
 * gets a token instead, which the stream routes (flag API_ROUTE_TOKEN)
 * accept as ?token= until it expires: "<expiry unix seconds>.<hex
 * HMAC-SHA256(secret, expiry)>". The secret is random per process, so
 * tokens are stateless (no table, nothing to expire) and die with a
 * restart; the page then asks for a new one. A token only opens a stream:
 * a stream already open is not cut when its token expires. A token may be
 * used several times within its life (EventSource reconnects with the same
 * URL); its short life bounds what a leaked one is worth.
 *
 * It does not check keys (http.c's dispatcher does, before this handler
 * runs) and the access log never prints the query string, so a token is
 * not logged.
 *
 * Threading: the secret is written once by api_stream_token_init before the
 * daemon starts and only read after; everything else is on the stack.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "api/http_internal.h"

#define TOKEN_TTL_S 60

/* HMAC-SHA256 (RFC 2104) of msg under the 32-byte key. */
static void hmac_sha256(const uint8_t key[32], const char *msg, size_t n, uint8_t out[32])
{
    uint8_t pad[64], inner[32];
    util_sha256 s;
    memset(pad, 0x36, sizeof pad);
    for (int i = 0; i < 32; i++)
        pad[i] ^= key[i];
    util_sha256_init(&s);
    util_sha256_update(&s, pad, sizeof pad);
    util_sha256_update(&s, msg, n);
    util_sha256_final(&s, inner);
    memset(pad, 0x5c, sizeof pad);
    for (int i = 0; i < 32; i++)
        pad[i] ^= key[i];
    util_sha256_init(&s);
    util_sha256_update(&s, pad, sizeof pad);
    util_sha256_update(&s, inner, sizeof inner);
    util_sha256_final(&s, out);
}

/* "<expiry>.<64 hex>" into out (at least API_STREAM_TOKEN_MAX bytes). */
static void token_format(const struct api_http *h, int64_t expiry, char *out, size_t len)
{
    char msg[24];
    int n = snprintf(msg, sizeof msg, "%" PRId64, expiry);
    uint8_t mac[32];
    hmac_sha256(h->stream_secret, msg, (size_t)n, mac);
    int k = snprintf(out, len, "%s.", msg);
    for (int i = 0; i < 32 && (size_t)k + 2 < len; i++, k += 2)
        snprintf(out + k, len - (size_t)k, "%02x", mac[i]);
}

void api_stream_token_init(struct api_http *h)
{
    if (getrandom(h->stream_secret, sizeof h->stream_secret, 0) !=
        (ssize_t)sizeof h->stream_secret) {
        /* no kernel randomness: mix what differs per process and start */
        uint64_t x[4] = {util_mono_ns(), (uint64_t)getpid(), (uint64_t)util_now(),
                         (uint64_t)(uintptr_t)h};
        util_sha256 s;
        util_sha256_init(&s);
        util_sha256_update(&s, x, sizeof x);
        util_sha256_final(&s, h->stream_secret);
        LOG_WARN("http", "getrandom failed: stream tokens use a weaker secret");
    }
}

bool api_stream_token_valid(const struct api_http *h, const char *token, int64_t now)
{
    if (!token)
        return false;
    size_t len = strlen(token);
    if (len < 66 || len >= API_STREAM_TOKEN_MAX)
        return false;
    char *end;
    long long expiry = strtoll(token, &end, 10);
    if (end == token || *end != '.' || expiry < now || expiry > now + TOKEN_TTL_S)
        return false;
    char want[API_STREAM_TOKEN_MAX];
    token_format(h, (int64_t)expiry, want, sizeof want);
    if (strlen(want) != len)
        return false;
    volatile uint8_t diff = 0; /* no early exit: the time says nothing */
    for (size_t i = 0; i < len; i++)
        diff |= (uint8_t)(want[i] ^ token[i]);
    return diff == 0;
}

/* POST /api/stream-token */
void api_route_stream_token(struct api_request *rq)
{
    int64_t expiry = rq->now + TOKEN_TTL_S;
    char token[API_STREAM_TOKEN_MAX];
    token_format(rq->http, expiry, token, sizeof token);
    util_buf b;
    util_buf_init(&b);
    util_buf_puts(&b, "{\"status\":\"success\",\"timestamp\":");
    api_timestamp(&b, rq->now);
    util_buf_puts(&b, ",\"token\":");
    util_json_str(&b, token);
    util_buf_printf(&b, ",\"expires_in\":%d,\"expires_at\":", TOKEN_TTL_S);
    api_timestamp(&b, expiry);
    util_buf_puts(&b, "}");
    api_reply_json(rq, 200, &b);
    u_map_put(rq->resp->map_header, "Cache-Control", "no-store");
    util_buf_cleanup(&b);
    explicit_bzero(token, sizeof token);
}
