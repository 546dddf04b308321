/*
 * cache.c: the Redis side of the store. Packed candle windows
 * (read through by candles.c's window loaders) and opaque rendered values
 * (store_cache_get/set) under keys prefixed "predictd:".
 *
 * Redis is a cache, never the source of truth: every failure here is
 * counted, logged once per outage, and reported as PD_ECACHE so callers go
 * to PostgreSQL instead. This file never talks SQL.
 *
 * DESIGN
 * - One redisContext per thread (in store__tls), connected on first use
 *   with a 200 ms connect timeout, then redisSetTimeout(200 ms) for every
 *   command. A NULL reply means the context is dead: it is freed and the
 *   next call connects again. After a failed connect no thread tries again
 *   for RECONNECT_BACKOFF_NS; calls meanwhile are bypassed (and counted as
 *   errors), so a dead Redis costs requests nothing. The URL form and the
 *   connect sequence (timeouts, AUTH, SELECT) are redis.c's, shared with
 *   ledger.c's publisher.
 * - An outage is logged once when it starts (WARN) and once when it ends
 *   (INFO).
 * - Windows: key predictd:candles:SYMBOL:TF holds one value,
 *       count x 48 bytes: i64 open time, open, high, low, close, volume
 *       trailer (24 bytes): "PDCW", u16 version (2), u16 flags (bit 0:
 *           complete: the whole closed history of the series), u32 count,
 *           u32 reserved, i64 last open time
 *   all little-endian. The description trails the candles so that one
 *   GETRANGE of the last 48 * limit + 24 bytes fetches exactly what a
 *   request needs (a 300-candle request reads 14 KB of a 1024-candle
 *   entry, not 49 KB). candles.c fetches max(limit, STORE__WINDOW_CACHE_MIN)
 *   candles on a miss and stores them (up to STORE__WINDOW_CACHE_MAX),
 *   with a TTL that ends one second after the candle in progress closes. A
 *   stored window serves a request only when its last candle is the
 *   request's last closed candle and it holds enough candles; otherwise it
 *   is a miss, so a hit is always what the database would have returned
 *   (upserts through this process also delete the key).
 *
 * THREADING: the settings (rcfg) are written by store_init() and
 * store_shutdown() only; contexts are per thread; counters and the
 * outage flag are atomics.
 */
#include <hiredis/hiredis.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "features/features.h"
#include "store/store.h"
#include "store/redis_internal.h"
#include "store/store_internal.h"
#include "util/util.h"

#define MOD "cache"
#define KEY_PREFIX "predictd:"
#define TIMEOUT_US 200000
#define RECONNECT_BACKOFF_NS UINT64_C(1000000000)
#define WIN_MAGIC "PDCW"
#define WIN_VERSION 2
#define WIN_TRAILER 24
#define WIN_CANDLE 48
#define WIN_COMPLETE 1u

static struct {
    bool configured; /* a URL was given */
    bool cache_on;
    store__redis_url url;
} rcfg;

static store__outage redis_outage = {.mod = MOD,
                                     .what = "Redis unavailable, serving from the database",
                                     .back = "Redis available again",
                                     .level = UTIL_LOG_WARN};
static _Atomic uint64_t redis_retry_at; /* util_mono_ns() before which no connect */

/* ---------------------------------------------------------------------------
 * Settings.
 */
void store__cache_unconfigure(void)
{
    store__redis_url_cleanup(&rcfg.url);
    memset(&rcfg, 0, sizeof rcfg);
}

/* The URL form is store__redis_url_parse()'s (redis.c). */
int store__cache_configure(const char *url, bool cache_on, unsigned gen)
{
    (void)gen;
    store__cache_unconfigure();
    atomic_store(&redis_outage.down, false);
    atomic_store(&redis_retry_at, 0);
    rcfg.cache_on = cache_on;
    if (!url || !*url)
        return 0;
    int rc = store__redis_url_parse(url, &rcfg.url);
    if (rc) {
        /* Never echo the URL: it may hold a password. */
        if (rc == PD_EINVAL)
            LOG_ERROR(MOD, "Redis URL is malformed or unsupported (" STORE__REDIS_URL_FORMS ")");
        store__cache_unconfigure();
        return rc;
    }
    rcfg.configured = true;
    return 0;
}

bool store__cache_enabled(void)
{
    return rcfg.configured && rcfg.cache_on;
}

/* ---------------------------------------------------------------------------
 * Connection.
 */
void store__cache_close(store__tls *t)
{
    if (t && t->redis) {
        redisFree(t->redis);
        t->redis = NULL;
    }
}

static void redis_went_down(const char *why)
{
    STORE__COUNT(redis_errors);
    store__outage_fail(&redis_outage, why);
}

static void redis_came_up(void)
{
    store__outage_ok(&redis_outage);
}

/* The context died (NULL reply or I/O error): forget it. */
static void redis_dead(store__tls *t)
{
    redis_went_down(t->redis && t->redis->errstr[0] ? t->redis->errstr : "connection lost");
    store__cache_close(t);
}

/* The calling thread's slot with a live context in t->redis, connecting
 * when needed; NULL when the cache is off (store__cache_enabled), or
 * Redis is down or in back-off (counted). */
static store__tls *redis_tls(void)
{
    if (!store__cache_enabled())
        return NULL;
    store__tls *t = store__tls_get();
    if (!t || t->redis)
        return t;
    uint64_t retry_at = atomic_load_explicit(&redis_retry_at, memory_order_relaxed);
    if (retry_at && util_mono_ns() < retry_at) {
        STORE__COUNT(redis_errors);
        return NULL;
    }
    char why[160];
    if (store__redis_connect(&rcfg.url, TIMEOUT_US, &t->redis, why, sizeof why)) {
        redis_went_down(why);
        atomic_store(&redis_retry_at, util_mono_ns() + RECONNECT_BACKOFF_NS);
        return NULL;
    }
    if (retry_at)
        atomic_store(&redis_retry_at, 0);
    return t;
}

/* Classifies a reply: NULL kills the context, an error reply is a failed
 * command (Redis loading, read-only replica, out of memory...). Returns 0
 * when the reply is usable. */
static int reply_check(store__tls *t, redisReply *r)
{
    if (!r) {
        redis_dead(t);
        return PD_ECACHE;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        redis_went_down(r->str);
        return PD_ECACHE;
    }
    redis_came_up();
    return 0;
}

/* reply_check() for a reply whose content does not matter; frees it. */
static int reply_done(store__tls *t, redisReply *r)
{
    int rc = reply_check(t, r);
    if (r)
        freeReplyObject(r);
    return rc;
}

/* Reads the replies of `sent` pipelined commands whose content does not
 * matter; returns rc, or the first failure among them. */
static int pipeline_drain(store__tls *t, size_t sent, int rc)
{
    for (size_t i = 0; i < sent; i++) {
        void *r = NULL;
        if (STORE__TIMED(REDIS, redisGetReply(t->redis, &r)) != REDIS_OK || !r) {
            redis_dead(t);
            return PD_ECACHE;
        }
        if (rc == 0)
            rc = reply_check(t, r);
        freeReplyObject(r);
    }
    return rc;
}

/* ---------------------------------------------------------------------------
 * Window encoding.
 */
static void put_le32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put_le64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get_le32(const unsigned char *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static uint64_t get_le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static void window_key(char *buf, size_t len, const char *symbol, const char *tf)
{
    snprintf(buf, len, KEY_PREFIX "candles:%s:%s", symbol, tf);
}

/* Packs a window: the candles, then the trailer; *out is malloc'd. */
static int window_encode(const features_candle *c, size_t n, bool complete, unsigned char **out,
                         size_t *len)
{
    size_t size = n * WIN_CANDLE + WIN_TRAILER;
    unsigned char *b = malloc(size), *p = b;
    if (!b)
        return PD_ENOMEM;
    for (size_t i = 0; i < n; i++, p += WIN_CANDLE) {
        put_le64(p, (uint64_t)c[i].t);
        put_le64(p + 8, store__dbl_bits(c[i].open));
        put_le64(p + 16, store__dbl_bits(c[i].high));
        put_le64(p + 24, store__dbl_bits(c[i].low));
        put_le64(p + 32, store__dbl_bits(c[i].close));
        put_le64(p + 40, store__dbl_bits(c[i].volume));
    }
    memcpy(p, WIN_MAGIC, 4);
    p[4] = WIN_VERSION;
    p[5] = 0;
    p[6] = complete ? WIN_COMPLETE : 0;
    p[7] = 0;
    put_le32(p + 8, (uint32_t)n);
    put_le32(p + 12, 0);
    put_le64(p + 16, (uint64_t)c[n - 1].t);
    *out = b;
    *len = size;
    return 0;
}

/* The GETRANGE that fetches the last `limit` candles and the trailer (the
 * whole value when it is shorter). */
static long long window_range_start(size_t limit)
{
    return -(long long)(limit * WIN_CANDLE + WIN_TRAILER);
}

/*
 * Unpacks the tail of a window value (b, len: the last candles and the
 * trailer, as window_range_start() fetched them) when it serves this
 * request: the last candle is last_open and there are `limit` candles, or
 * all of them (flag complete). PD_ENOTFOUND when it does not (stale, too
 * short, or not ours).
 */
static int window_decode(const unsigned char *b, size_t len, int64_t last_open, size_t limit,
                         features_candle **out, size_t *n)
{
    if (len < WIN_TRAILER + WIN_CANDLE || (len - WIN_TRAILER) % WIN_CANDLE != 0)
        return PD_ENOTFOUND;
    const unsigned char *tr = b + len - WIN_TRAILER;
    if (memcmp(tr, WIN_MAGIC, 4) != 0 || tr[4] != WIN_VERSION || tr[5] != 0)
        return PD_ENOTFOUND;
    size_t count = get_le32(tr + 8), have = (len - WIN_TRAILER) / WIN_CANDLE;
    bool complete = tr[6] & WIN_COMPLETE;
    if ((int64_t)get_le64(tr + 16) != last_open || count < have)
        return PD_ENOTFOUND;
    if (count < limit && !complete)
        return PD_ENOTFOUND;
    size_t k = count < limit ? count : limit;
    if (have < k || (int64_t)get_le64(tr - WIN_CANDLE) != last_open)
        return PD_ENOTFOUND;
    const unsigned char *p = tr - k * WIN_CANDLE;
    features_candle *c = malloc(k * sizeof *c);
    if (!c)
        return PD_ENOMEM;
    for (size_t i = 0; i < k; i++, p += WIN_CANDLE) {
        c[i].t = (int64_t)get_le64(p);
        c[i].open = store__bits_dbl(get_le64(p + 8));
        c[i].high = store__bits_dbl(get_le64(p + 16));
        c[i].low = store__bits_dbl(get_le64(p + 24));
        c[i].close = store__bits_dbl(get_le64(p + 32));
        c[i].volume = store__bits_dbl(get_le64(p + 40));
    }
    *out = c;
    *n = k;
    return 0;
}

/* Decodes a GET reply into a window result, counting hits and misses. */
static int window_from_reply(const redisReply *r, int64_t last_open, size_t limit,
                             features_candle **out, size_t *n)
{
    int rc = PD_ENOTFOUND;
    if (r->type == REDIS_REPLY_STRING)
        rc = window_decode((const unsigned char *)r->str, (size_t)r->len, last_open, limit, out, n);
    if (rc == 0)
        STORE__COUNT(redis_hits);
    else if (rc == PD_ENOTFOUND)
        STORE__COUNT(redis_misses);
    return rc;
}

/* ---------------------------------------------------------------------------
 * Window cache (for candles.c).
 */
int store__cache_window_get(const char *symbol, const char *tf, int64_t last_open, size_t limit,
                               features_candle **out, size_t *n)
{
    store__tls *t = redis_tls();
    if (!t)
        return PD_ECACHE;
    char key[64];
    window_key(key, sizeof key, symbol, tf);
    redisReply *r = STORE__TIMED(
        REDIS, redisCommand(t->redis, "GETRANGE %s %lld -1", key, window_range_start(limit)));
    int rc = reply_check(t, r);
    if (rc == 0)
        rc = window_from_reply(r, last_open, limit, out, n);
    if (r)
        freeReplyObject(r);
    return rc;
}

int store__cache_window_put(const char *symbol, const char *tf, const features_candle *c,
                               size_t n, bool complete, int64_t ttl_s)
{
    if (n == 0 || n > STORE__WINDOW_CACHE_MAX || ttl_s < 1)
        return PD_EINVAL;
    store__tls *t = redis_tls();
    if (!t)
        return PD_ECACHE;
    unsigned char *val;
    size_t len;
    int rc = window_encode(c, n, complete, &val, &len);
    if (rc)
        return rc;
    char key[64];
    window_key(key, sizeof key, symbol, tf);
    redisReply *r = STORE__TIMED(
        REDIS, redisCommand(t->redis, "SET %s %b EX %lld", key, val, len, (long long)ttl_s));
    free(val);
    return reply_done(t, r);
}

int store__cache_window_mget(const char *const *symbols, size_t nsym, const char *tf,
                                int64_t last_open, size_t limit, features_candle **outs, size_t *ns,
                                int *rcs)
{
    store__tls *t = redis_tls();
    if (!t)
        return PD_ECACHE;
    redisReply **replies = calloc(nsym ? nsym : 1, sizeof *replies);
    if (!replies)
        return PD_ENOMEM;
    int rc = 0;
    char key[64];
    for (size_t i = 0; i < nsym && rc == 0; i++) {
        if (!symbols[i])
            continue;
        window_key(key, sizeof key, symbols[i], tf);
        if (redisAppendCommand(t->redis, "GETRANGE %s %lld -1", key, window_range_start(limit)) !=
            REDIS_OK)
            rc = PD_ECACHE;
    }
    const char *err = NULL;
    for (size_t i = 0; i < nsym && rc == 0; i++) {
        if (!symbols[i])
            continue;
        void *r = NULL;
        if (STORE__TIMED(REDIS, redisGetReply(t->redis, &r)) != REDIS_OK || !r)
            rc = PD_ECACHE;
        else if ((replies[i] = r)->type == REDIS_REPLY_ERROR && !err)
            err = replies[i]->str;
    }
    if (rc) {
        redis_dead(t); /* a half-written or half-read pipeline: start afresh */
    } else if (err) {
        redis_went_down(err);
        rc = PD_ECACHE;
    } else {
        redis_came_up();
        for (size_t i = 0; i < nsym; i++) {
            if (!replies[i])
                continue;
            features_candle *w = NULL;
            size_t wn = 0;
            int r = window_from_reply(replies[i], last_open, limit, &w, &wn);
            rcs[i] = r;
            if (r == 0) {
                outs[i] = w;
                ns[i] = wn;
            }
        }
    }
    for (size_t i = 0; i < nsym; i++)
        if (replies[i])
            freeReplyObject(replies[i]);
    free(replies);
    return rc;
}

int store__cache_window_mput(const char *const *symbols, size_t nsym, const char *tf,
                                features_candle *const *c, const size_t *n, const bool *complete,
                                int64_t ttl_s)
{
    store__tls *t = redis_tls();
    if (!t)
        return PD_ECACHE;
    int rc = 0;
    size_t sent = 0;
    char key[64];
    for (size_t i = 0; i < nsym && rc == 0; i++) {
        if (!symbols[i] || !c[i] || n[i] == 0 || n[i] > STORE__WINDOW_CACHE_MAX)
            continue;
        unsigned char *val;
        size_t len;
        if ((rc = window_encode(c[i], n[i], complete[i], &val, &len)))
            break;
        window_key(key, sizeof key, symbols[i], tf);
        if (redisAppendCommand(t->redis, "SET %s %b EX %lld", key, val, len, (long long)ttl_s) !=
            REDIS_OK)
            rc = PD_ECACHE;
        else
            sent++;
        free(val);
    }
    return pipeline_drain(t, sent, rc);
}

int store__cache_window_del(const char *symbol, const char *tf)
{
    store__tls *t = redis_tls();
    if (!t)
        return PD_ECACHE;
    char key[64];
    window_key(key, sizeof key, symbol, tf);
    return reply_done(t, STORE__TIMED(REDIS, redisCommand(t->redis, "DEL %s", key)));
}

/* ---------------------------------------------------------------------------
 * Public: rendered values and window invalidation.
 */
static bool key_ok(const char *key)
{
    return key && strncmp(key, KEY_PREFIX, strlen(KEY_PREFIX)) == 0 &&
           strlen(key) > strlen(KEY_PREFIX) && strlen(key) <= 1024;
}

int store_cache_get(const char *key, char **out, size_t *len)
{
    if (!key_ok(key) || !out || !len)
        return PD_EINVAL;
    store__tls *t = redis_tls();
    if (!t)
        return PD_ECACHE;
    redisReply *r = STORE__TIMED(REDIS, redisCommand(t->redis, "GET %b", key, strlen(key)));
    int rc = reply_check(t, r);
    if (rc == 0) {
        if (r->type == REDIS_REPLY_STRING) {
            char *v = malloc((size_t)r->len + 1);
            if (!v) {
                rc = PD_ENOMEM;
            } else {
                memcpy(v, r->str, (size_t)r->len);
                v[r->len] = '\0';
                *out = v;
                *len = (size_t)r->len;
                STORE__COUNT(redis_hits);
            }
        } else {
            rc = PD_ENOTFOUND;
            STORE__COUNT(redis_misses);
        }
    }
    if (r)
        freeReplyObject(r);
    return rc;
}

int store_cache_set(const char *key, const char *val, size_t len, int64_t ttl_s)
{
    if (!key_ok(key) || (!val && len) || ttl_s < 1)
        return PD_EINVAL;
    store__tls *t = redis_tls();
    if (!t)
        return PD_ECACHE;
    return reply_done(
        t, STORE__TIMED(REDIS, redisCommand(t->redis, "SET %b %b EX %lld", key, strlen(key),
                                            val ? val : "", len, (long long)ttl_s)));
}

int store_cache_drop_window(const char *symbol, const char *tf)
{
    if (!symbol || !util_symbol_valid(symbol))
        return PD_ESYMBOL;
    if (!util_tf_seconds(tf))
        return PD_ETIMEFRAME;
    return store__cache_window_del(symbol, tf);
}

int store_cache_set_many(const char *const *keys, const char *const *vals, const size_t *lens,
                         const int64_t *ttls, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!key_ok(keys[i]) || (!vals[i] && lens[i]) || ttls[i] < 1)
            return PD_EINVAL;
    if (n == 0)
        return 0;
    store__tls *t = redis_tls();
    if (!t)
        return PD_ECACHE;
    int rc = 0;
    size_t sent = 0;
    for (size_t i = 0; i < n; i++) {
        if (redisAppendCommand(t->redis, "SET %b %b EX %lld", keys[i], strlen(keys[i]),
                               vals[i] ? vals[i] : "", lens[i], (long long)ttls[i]) != REDIS_OK) {
            rc = PD_ECACHE;
            break;
        }
        sent++;
    }
    return pipeline_drain(t, sent, rc);
}

int store_cache_drop_windows(const char *const *symbols, size_t n, const char *tf)
{
    if (!util_tf_seconds(tf))
        return PD_ETIMEFRAME;
    for (size_t i = 0; i < n; i++)
        if (!symbols[i] || !util_symbol_valid(symbols[i]))
            return PD_ESYMBOL;
    if (n == 0)
        return 0;
    store__tls *t = redis_tls();
    if (!t)
        return PD_ECACHE;
    int rc = 0;
    size_t sent = 0;
    char key[64];
    for (size_t i = 0; i < n; i++) {
        window_key(key, sizeof key, symbols[i], tf);
        if (redisAppendCommand(t->redis, "DEL %s", key) != REDIS_OK) {
            rc = PD_ECACHE;
            break;
        }
        sent++;
    }
    return pipeline_drain(t, sent, rc);
}
