/*
 * net_internal.h: the exchange connectors' two wires, shared by the files of
 * feed/ and by no other module: a WebSocket client (ws.c, RFC 6455 over a
 * TCP socket, TLS through OpenSSL for wss://) and a REST client (rest.c,
 * libcurl, with the request-weight and Retry-After rules exchanges use).
 * Names carry a double underscore: exported for the module, not public.
 *
 * Threading: a feed__ws or a feed__rest belongs to one thread at a time.
 * Nothing here keeps global state except OpenSSL's and libcurl's one-time
 * initialisation (feed__net_global_init, idempotent and thread-safe).
 */
#ifndef PREDICTD_FEED_NET_INTERNAL_H
#define PREDICTD_FEED_NET_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/util.h"

/* libcurl's and OpenSSL's global set-up, once per process (pthread_once).
 * 0 or PD_EINTERNAL. */
int feed__net_global_init(void);

/* A parsed ws://, wss://, http:// or https:// URL. */
typedef struct feed__url {
    bool tls;
    char host[256];
    int port;
    char path[1024]; /* starts with '/'; includes the query */
} feed__url;

/* Parses url. 0, or PD_EINVAL with the reason in why (a scheme other than
 * the four above, no host, a bad port, too long). */
int feed__url_parse(const char *url, feed__url *out, char *why, size_t whylen);

/* ===========================================================================
 * WebSocket client (ws.c).
 */
enum {
    FEED__WS_TEXT = 1,
    FEED__WS_BINARY = 2,
    FEED__WS_CLOSE = 8,
    FEED__WS_PING = 9,
    FEED__WS_PONG = 10
};

typedef struct feed__ws feed__ws;

typedef struct feed__ws_stats {
    uint64_t pings; /* ping frames received (each answered with a pong) */
    uint64_t pongs; /* pong frames received */
} feed__ws_stats;

/*
 * Connects to url (ws:// or wss://; wss verifies the server's certificate
 * against the system's store and its name) and completes the opening
 * handshake (checks the 101 status and Sec-WebSocket-Accept). timeout_ms
 * bounds the TCP connect, the TLS handshake and the HTTP upgrade. Returns
 * 0 and a connection in *out (free with feed__ws_close), PD_EINVAL (bad
 * URL) or PD_EIO, with a one-line reason in why.
 */
int feed__ws_connect(const char *url, int timeout_ms, feed__ws **out, char *why, size_t whylen);

/*
 * Waits up to timeout_ms for the next data message. Control frames are
 * handled here: a ping is answered with a pong carrying its payload, a pong
 * is counted, a close is answered and ends the connection. Returns 1 with
 * the message in *msg / *len (a text or binary message, fragments joined;
 * owned by w, valid until the next call; NUL-terminated), 0 on timeout,
 * or PD_EIO when the connection ended or broke (reason in why), PD_ETOOBIG
 * for a message over 4 MiB (the connection is then unusable).
 */
int feed__ws_read(feed__ws *w, int timeout_ms, const char **msg, size_t *len, char *why,
                  size_t whylen);

/* Sends one masked frame (opcode FEED__WS_*). 0 or PD_EIO. */
int feed__ws_send(feed__ws *w, int opcode, const void *data, size_t len);

void feed__ws_stats_get(const feed__ws *w, feed__ws_stats *out);

/* Sends a close frame (best effort), shuts the connection and frees w.
 * NULL is a no-op. */
void feed__ws_close(feed__ws *w);

/* ===========================================================================
 * REST client (rest.c).
 *
 * GET requests against one base URL. The client paces itself by the
 * request weight the server reports (the X-MBX-USED-WEIGHT-1M header):
 * past 90 % of the per-minute limit it waits for the next minute. A 429 or
 * 418 answer is waited out for its Retry-After seconds (60 when absent)
 * and the request is sent again; so are network errors and 5xx answers,
 * with exponential back-off and jitter (1 s doubling up to 30 s). Every
 * wait returns early when *stop becomes true (PD_ECANCELED).
 */
typedef struct feed__rest feed__rest;

typedef struct feed__rest_stats {
    uint64_t requests;     /* HTTP requests sent */
    uint64_t rate_limited; /* 429 and 418 answers */
    uint64_t errors;       /* network errors and 5xx answers */
    int64_t used_weight;   /* the last X-MBX-USED-WEIGHT-1M, -1: never seen */
} feed__rest_stats;

/* base: "https://api.binance.com" (no trailing path). stop may be NULL
 * (never cancelled). max_attempts: tries per request before giving up
 * (>= 1). 0, PD_EINVAL (bad URL, why filled), PD_ENOMEM. */
int feed__rest_new(const char *base, const atomic_bool *stop, int max_attempts, feed__rest **out,
                   char *why, size_t whylen);
void feed__rest_free(feed__rest *r);

/* Sets the per-minute weight limit (from exchangeInfo's rateLimits;
 * default 6000). */
void feed__rest_set_weight_limit(feed__rest *r, int64_t limit);

/*
 * GET base + path_query. On a 2xx answer returns 0 with the body in *body
 * (appended; the caller owns the buffer). A 4xx other than 429/418 is not
 * retried: PD_EINVAL (400), PD_ENOTFOUND (404), PD_EIO (others), with the
 * server's message (Binance's {"code","msg"} when present) in why.
 * PD_ERATE when a Retry-After longer than max_wait_s was asked for (why
 * says how long), PD_EIO after max_attempts failures, PD_ECANCELED when
 * stopped, PD_ETOOBIG for a body over 16 MiB.
 */
int feed__rest_get(feed__rest *r, const char *path_query, util_buf *body, char *why, size_t whylen);

void feed__rest_stats_get(const feed__rest *r, feed__rest_stats *out);

/* Longest Retry-After feed__rest_get waits out before PD_ERATE. */
#define FEED__REST_MAX_WAIT_S 600

/* Sleeps ms milliseconds in slices of at most 100 ms, returning early
 * (true) when *stop becomes true. stop may be NULL. */
bool feed__sleep_ms(int64_t ms, const atomic_bool *stop);

/* ===========================================================================
 * Binance message formats (binance.c), exported for the unit tests and
 * for `predictd fetch`.
 */
#include "features/features.h"

struct feed_trade;

/* Parses a klines body ([[openTime, "o", "h", "l", "c", "v", closeTime,
 * ...], ...]) keeping the candles closed at now_ms. *out malloc'd (also
 * when *n is 0). PD_EPARSE (why says which row), PD_ENOMEM. */
int feed__binance_parse_klines(const char *body, size_t len, int64_t now_ms, features_candle **out,
                               size_t *n, char *why, size_t whylen);

/* Parses one combined-stream message {"stream":"btcusdt@trade","data":{"e":
 * "trade","T":...,"t":...,"p":"...","q":"...","m":bool}}. 0 with the trade
 * and the stream name; PD_EPARSE with the reason (stream filled when the
 * envelope was readable). */
int feed__binance_parse_trade(const char *msg, size_t len, char *stream, size_t streamlen,
                              struct feed_trade *out, char *why, size_t whylen);

/* A page of closed candles, oldest first; non-zero stops the walk. */
typedef int (*feed__binance_page_fn)(const features_candle *c, size_t n, void *arg);

/* Walks GET /api/v3/klines over [from_ms, to_ms) in pages of 1000,
 * keeping candles closed at now_ms. 0, or the first error (REST's, a
 * parse error, or page's). */
int feed__binance_klines_range(feed__rest *r, const char *symbol, int64_t from_ms, int64_t to_ms,
                               int64_t now_ms, feed__binance_page_fn page, void *arg, char *why,
                               size_t whylen);

#endif
