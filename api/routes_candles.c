/*
 * routes_candles.c: GET /api/candles/{symbol}?timeframe=&limit= — the last
 * `limit` closed candles of a series (default 200, at most 1000), oldest
 * first, for charts:
 *
 *   {"status":"success","timestamp":..,"symbol":..,"timeframe":..,
 *    "count":N,"last_close":..,"next_close":..,
 *    "columns":["time","open","high","low","close","volume"],
 *    "candles":[["2026-12-04T22:45:00Z",o,h,l,c,v],...]}
 *
 * Rows are arrays, not objects, to keep a few hundred candles small; time is
 * the candle's open time (RFC 3339). Only closed candles are returned (the
 * ones features would use), read through store_load_window, so Redis
 * serves them when it has the window.
 *
 * Caching. The rendered body (without its timestamp) is kept in a small
 * process cache keyed "SYMBOL|TF|LIMIT" while no newer candle can have
 * closed (now < next_close), like the prediction cache, and the reply
 * carries Cache-Control max-age up to then (private when a read key is
 * set, so shared caches do not keep keyed answers). Once the next candle is
 * due, nothing caches the answer (no-cache): a candle arriving late must
 * show at once, and this route has no other way to hear of it. A series
 * whose feed stopped thus reads the store on every request (Redis' window,
 * else one indexed query); the prediction routes are not affected.
 *
 * It does not compute anything from the candles and never returns the
 * candle in progress.
 *
 * Threading: handlers run on the HTTP pool; the cache's table is guarded by
 * its rwlock (entries are replaced whole under the write lock and copied out
 * under the read lock).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/http_internal.h"
#include "features/features.h"

#define LIMIT_DEFAULT 200
#define LIMIT_MAX 1000
#define CACHE_SLOTS 256 /* series x limits kept; a colliding key replaces the slot */
#define MAX_AGE_MAX 300 /* Cache-Control max-age ceiling, seconds */

struct slot {
    char key[48]; /* "SYMBOL|TF|LIMIT", "" when empty */
    char *body;   /* owned: the answer after "timestamp":"..." */
    size_t len;
    int64_t next_close; /* when a newer candle can first have closed */
    int64_t fetched_at; /* for debugging: when it was loaded */
};

struct api_candles_cache {
    pthread_rwlock_t lock; /* guards slots */
    struct slot slots[CACHE_SLOTS];
};

int api_candles_cache_new(struct api_candles_cache **out)
{
    struct api_candles_cache *c = calloc(1, sizeof *c);
    if (!c)
        return PD_ENOMEM;
    pthread_rwlock_init(&c->lock, NULL);
    *out = c;
    return 0;
}

void api_candles_cache_free(struct api_candles_cache *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < CACHE_SLOTS; i++)
        free(c->slots[i].body);
    pthread_rwlock_destroy(&c->lock);
    free(c);
}

static size_t slot_of(const char *key)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const char *p = key; *p; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    return h % CACHE_SLOTS;
}

static bool fresh(const struct slot *s, int64_t now)
{
    return now < s->next_close;
}

/* Copies a fresh entry's body into b; false on a miss. */
static bool cache_get(struct api_candles_cache *c, const char *key, int64_t now, util_buf *b,
                      int64_t *next_close)
{
    bool hit = false;
    pthread_rwlock_rdlock(&c->lock);
    const struct slot *s = &c->slots[slot_of(key)];
    if (s->body && strcmp(s->key, key) == 0 && fresh(s, now)) {
        util_buf_append(b, s->body, s->len);
        *next_close = s->next_close;
        hit = true;
    }
    pthread_rwlock_unlock(&c->lock);
    return hit;
}

/* Stores a copy of body (failures only cost the next request a load). */
static void cache_put(struct api_candles_cache *c, const char *key, const char *body, size_t len,
                      int64_t next_close, int64_t now)
{
    char *copy = malloc(len);
    if (!copy)
        return;
    memcpy(copy, body, len);
    pthread_rwlock_wrlock(&c->lock);
    struct slot *s = &c->slots[slot_of(key)];
    char *old = s->body;
    snprintf(s->key, sizeof s->key, "%s", key);
    s->body = copy;
    s->len = len;
    s->next_close = next_close;
    s->fetched_at = now;
    pthread_rwlock_unlock(&c->lock);
    free(old);
}

/* limit= within [1, LIMIT_MAX], LIMIT_DEFAULT when absent. */
static bool limit_of(struct api_request *rq, size_t *out)
{
    const char *s = api_query(rq, "limit");
    if (!s) {
        *out = LIMIT_DEFAULT;
        return true;
    }
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (*s < '0' || *s > '9' || *end || v < 1 || v > LIMIT_MAX) {
        api_reply_errorf(rq, PD_EINVAL, "limit must be an integer in 1..%d", LIMIT_MAX);
        return false;
    }
    *out = (size_t)v;
    return true;
}

/* The body after the timestamp, from the loaded candles. */
static void render(util_buf *b, const char *symbol, const char *tf, int64_t tfs,
                   const features_candle *c, size_t n)
{
    util_buf_puts(b, ",\"symbol\":");
    util_json_str(b, symbol);
    util_buf_puts(b, ",\"timeframe\":");
    util_json_str(b, tf);
    util_buf_printf(b, ",\"count\":%zu,\"last_close\":", n);
    api_timestamp(b, c[n - 1].t + tfs);
    util_buf_puts(b, ",\"next_close\":");
    api_timestamp(b, c[n - 1].t + 2 * tfs);
    util_buf_puts(b, ",\"columns\":[\"time\",\"open\",\"high\",\"low\",\"close\",\"volume\"]"
                     ",\"candles\":[");
    for (size_t i = 0; i < n; i++) {
        util_buf_puts(b, i ? ",[" : "[");
        api_timestamp(b, c[i].t);
        const double v[5] = {c[i].open, c[i].high, c[i].low, c[i].close, c[i].volume};
        for (int k = 0; k < 5; k++) {
            util_buf_puts(b, ",");
            util_json_num(b, v[k]);
        }
        util_buf_puts(b, "]");
    }
    util_buf_puts(b, "]}");
}

void api_route_candles(struct api_request *rq)
{
    const char *symbol = api_query(rq, "symbol");
    const char *tf = api_query(rq, "timeframe");
    if (!util_symbol_valid(symbol)) {
        api_reply_error(rq, PD_ESYMBOL, "symbol must match ^[A-Z0-9]{2,20}$");
        return;
    }
    int64_t tfs = tf ? util_tf_seconds(tf) : 0;
    if (!tfs) {
        api_reply_errorf(rq, PD_ETIMEFRAME, "timeframe must be one of %s", util_tf_list());
        return;
    }
    size_t limit;
    if (!limit_of(rq, &limit))
        return;
    char key[48];
    snprintf(key, sizeof key, "%s|%s|%zu", symbol, tf, limit);

    util_buf body;
    util_buf_init(&body);
    int64_t next_close = 0;
    struct api_candles_cache *cache = rq->ctx->opt.cache ? rq->http->candles : NULL;
    if (!cache || !cache_get(cache, key, rq->now, &body, &next_close)) {
        features_candle *c = NULL;
        size_t n = 0;
        int rc = store_load_window(symbol, tf, rq->now, limit, &c, &n, NULL);
        if (rc == 0 && n == 0)
            rc = PD_EUNKNOWNSYM;
        if (rc) {
            free(c);
            util_buf_cleanup(&body);
            if (rc == PD_EUNKNOWNSYM)
                api_reply_errorf(rq, rc, "no candles for %s %s", symbol, tf);
            else if (rc == PD_ENODATA)
                api_reply_errorf(rq, rc, "no closed candle yet for %s %s", symbol, tf);
            else if (rc == PD_EDB)
                api_reply_error(rq, rc, "the candle database is unavailable");
            else
                api_reply_error(rq, rc, NULL);
            return;
        }
        render(&body, symbol, tf, tfs, c, n);
        next_close = c[n - 1].t + 2 * tfs;
        free(c);
        if (cache && util_buf_ok(&body) && rq->now < next_close)
            cache_put(cache, key, body.data, body.len, next_close, rq->now);
    }

    util_buf b;
    util_buf_init(&b);
    util_buf_puts(&b, "{\"status\":\"success\",\"timestamp\":");
    api_timestamp(&b, rq->now);
    util_buf_append(&b, body.data, body.len);
    if (!util_buf_ok(&body))
        b.oom = true;
    api_reply_json(rq, 200, &b);
    util_buf_cleanup(&b);
    util_buf_cleanup(&body);
    if (rq->status == 200) {
        int64_t age = next_close - rq->now;
        if (age > MAX_AGE_MAX)
            age = MAX_AGE_MAX;
        char cc[48];
        if (age > 0)
            snprintf(cc, sizeof cc, "%s, max-age=%" PRId64,
                     rq->ctx->opt.read_key ? "private" : "public", age);
        else
            snprintf(cc, sizeof cc, "no-cache"); /* the next candle is due */
        u_map_put(rq->resp->map_header, "Cache-Control", cc);
    }
}
