/*
 * bench_feed: the market-data path.
 *
 *   feed_agg_trades_per_s=...      the trades aggregator on one thread (one
 *                                  core): 5 million synthetic trades, 1 %
 *                                  duplicates and 1 % a few seconds late
 *   feed_trades_csv_parse ...      the trades CSV parser, the shared
 *                                  XRPETH file (PREDICTD_SHARED_DATA)
 *   rollup_import_14400 ...        14,400 1m base candles in one call
 *                                  (PostgreSQL derives 5m..1d) next to
 *                                  14,400 candles of a native 5m series
 *                                  (no roll-up): the roll-up's cost
 *   rollup_live_write ...          one base candle a call (what a feed does)
 *   e2e_base_to_published_<tf> ... with PREDICTD_BENCH_E2E_SYMBOL (bench/run
 *                                  starts serve with models for it): from
 *                                  the call writing a base candle to the
 *                                  PUBLISH of the prediction of each
 *                                  timeframe whose bucket it completes (the loop
 *                                  caches a prediction before it publishes
 *                                  it, so it is served by then)
 *
 * The database parts need PREDICTD_BENCH_DATABASE_URL (and for e2e
 * PREDICTD_BENCH_REDIS_URL); without them they print "skipped".
 */
#define _GNU_SOURCE
#include <hiredis/hiredis.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "features/features.h"
#include "feed/feed.h"
#include "store/store.h"
#include "util/util.h"

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int count_emit(const features_candle *c, bool correction, void *arg)
{
    (void)c;
    (void)correction;
    (*(size_t *)arg)++;
    return 0;
}

static void bench_agg(void)
{
    const size_t n = 5000000;
    feed_trade *t = malloc(n * sizeof *t);
    if (!t)
        return;
    uint64_t s = 12345;
    double px = 100;
    int64_t ms = 1570752000000LL;
    for (size_t i = 0; i < n; i++) {
        s = s * 6364136223846793005u + 1442695040888963407u;
        double u = (double)(s >> 11) / 9007199254740992.0;
        px *= 1 + (u - 0.5) * 1e-3;
        ms += (int64_t)(u * 200); /* ~10 trades a second */
        t[i] = (feed_trade){
            .t_ms = ms, .id = (int64_t)i, .side = (int)(s & 1), .price = px, .amount = u * 10};
        if (i > 10 && (s >> 40) % 100 == 0)
            t[i] = t[i - 3]; /* a duplicate */
        else if (i > 10 && (s >> 40) % 100 == 1)
            t[i].t_ms -= 5000; /* late by 5 s */
    }
    feed_agg *a;
    if (feed_agg_new(&a)) {
        free(t);
        return;
    }
    size_t emitted = 0;
    uint64_t t0 = util_mono_ns();
    for (size_t i = 0; i < n; i++)
        (void)feed_agg_push(a, &t[i], count_emit, &emitted);
    (void)feed_agg_finish(a, count_emit, &emitted);
    double sec = (double)(util_mono_ns() - t0) / 1e9;
    feed_agg_stats st;
    feed_agg_stats_get(a, &st);
    printf("feed_agg_trades_per_s=%.0f ns_per_trade=%.1f trades=%zu candles=%zu duplicates=%llu "
           "corrections=%llu\n",
           (double)n / sec, sec * 1e9 / (double)n, n, emitted, (unsigned long long)st.duplicates,
           (unsigned long long)st.corrections);
    feed_agg_free(a);
    free(t);
}

static void bench_csv(void)
{
    const char *dir = getenv("PREDICTD_SHARED_DATA");
    char path[1024];
    snprintf(path, sizeof path, "%s/XRPETH_trades_2019-10.csv", dir ? dir : "../shared/data");
    char *text;
    size_t len;
    if (util_read_file(path, 64u << 20, &text, &len) != 0) {
        printf("feed_trades_csv_parse skipped (no %s)\n", path);
        return;
    }
    double best = 1e9;
    size_t n = 0;
    for (int r = 0; r < 5; r++) {
        feed_trade *t;
        uint64_t t0 = util_mono_ns();
        if (feed_trades_csv_parse(text, len, &t, &n, NULL, 0) != 0)
            break;
        double sec = (double)(util_mono_ns() - t0) / 1e9;
        best = sec < best ? sec : best;
        free(t);
    }
    printf("feed_trades_csv_parse rows=%zu ms=%.2f rows_per_s=%.0f\n", n, best * 1e3,
           (double)n / best);
    free(text);
}

static features_candle *series(int64_t start, int64_t step, size_t n)
{
    features_candle *c = malloc(n * sizeof *c);
    double px = 50;
    for (size_t i = 0; c && i < n; i++) {
        px *= 1 + ((double)((i * 7919) % 101) - 50) * 1e-5;
        c[i] = (features_candle){.t = start + step * (int64_t)i,
                                 .open = px,
                                 .high = px * 1.001,
                                 .low = px * 0.999,
                                 .close = px,
                                 .volume = 1 + (double)(i % 17)};
    }
    return c;
}

static void bench_rollup(void)
{
    const size_t n = 14400; /* ten days of minutes */
    int64_t start = 1500000000 - 1500000000 % 86400;
    features_candle *c = series(start, 60, n), *d = series(start, 300, n);
    if (!c || !d)
        goto out;
    double ms_base = 0, ms_native = 0;
    uint64_t t0 = util_mono_ns();
    int rc = store_upsert_base_candles("BENCHROLL", c, n);
    ms_base = (double)(util_mono_ns() - t0) / 1e6;
    t0 = util_mono_ns();
    int rc2 = store_upsert_candles("BENCHNATIVE", "5m", d, n);
    ms_native = (double)(util_mono_ns() - t0) / 1e6;
    if (rc || rc2) {
        printf("rollup_import_14400 failed: %s / %s\n", util_strerror(rc), util_strerror(rc2));
        goto out;
    }
    printf("rollup_import_14400 base_1m_with_rollup_ms=%.0f native_5m_no_rollup_ms=%.0f "
           "ratio=%.2f\n",
           ms_base, ms_native, ms_base / ms_native);
    /* a re-import that changes nothing */
    t0 = util_mono_ns();
    rc = store_upsert_base_candles("BENCHROLL", c, n);
    printf("rollup_reimport_14400 ms=%.0f (unchanged rows: nothing rewritten)\n",
           (double)(util_mono_ns() - t0) / 1e6);
    /* live: one base candle a call, after the history */
    enum { LIVE = 200 };
    double lat[LIVE];
    features_candle *more = series(start + 60 * (int64_t)n, 60, LIVE);
    for (size_t i = 0; more && i < LIVE; i++) {
        t0 = util_mono_ns();
        rc = store_upsert_base_candles("BENCHROLL", &more[i], 1);
        lat[i] = (double)(util_mono_ns() - t0) / 1e3;
        if (rc)
            break;
    }
    if (more && rc == 0) {
        qsort(lat, LIVE, sizeof *lat, cmp_dbl);
        printf("rollup_live_write median_us=%.0f p90_us=%.0f (one 1m candle + 5 derived, one "
               "transaction)\n",
               lat[LIVE / 2], lat[LIVE * 9 / 10]);
    }
    free(more);
out:
    free(c);
    free(d);
}

/* Reads one PUBLISHed message within timeout_ms; its timeframe in tf. */
static bool next_message(redisContext *r, char tf[8], char sym[32])
{
    redisReply *rep = NULL;
    if (redisGetReply(r, (void **)&rep) != REDIS_OK || !rep)
        return false;
    bool ok = false;
    if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 3 &&
        rep->element[2]->type == REDIS_REPLY_STRING) {
        const char *m = rep->element[2]->str;
        const char *p = strstr(m, "\"timeframe\":\"");
        const char *q = strstr(m, "\"symbol\":\"");
        if (p && q && sscanf(p + 13, "%7[^\"]", tf) == 1 && sscanf(q + 10, "%31[^\"]", sym) == 1)
            ok = true;
    }
    freeReplyObject(rep);
    return ok;
}

static void bench_e2e(const char *symbol, const char *redis_url)
{
    char host[256] = "127.0.0.1";
    int port = 6379;
    if (sscanf(redis_url, "redis://%255[^:/]:%d", host, &port) < 1) {
        printf("e2e skipped: redis URL\n");
        return;
    }
    struct timeval tv = {5, 0};
    redisContext *r = redisConnectWithTimeout(host, port, tv);
    if (!r || r->err) {
        printf("e2e skipped: redis connect\n");
        redisFree(r);
        return;
    }
    redisSetTimeout(r, tv);
    redisReply *rep = redisCommand(r, "SUBSCRIBE predictd:predictions");
    freeReplyObject(rep);
    /* the series' last base candle: the next ones follow it */
    features_candle *c;
    size_t n;
    int64_t now = util_now();
    if (store_load_range(symbol, "1m", now - 7200, 0, now, &c, &n) != 0 || n == 0) {
        printf("e2e skipped: no 1m candles of %s\n", symbol);
        redisFree(r);
        return;
    }
    features_candle last = c[n - 1];
    free(c);
    static const char *const tfs[] = {"1m", "5m", "15m"};
    double lat[3][64];
    size_t nl[3] = {0};
    int64_t first_t = 0;
    bool lost = false;
    for (int k = 0; k < 40 && !lost; k++) {
        features_candle next = last;
        next.t += 60;
        next.open = last.close;
        next.close = last.close * (k % 2 ? 1.0005 : 0.9996);
        next.high = next.open > next.close ? next.open * 1.0002 : next.close * 1.0002;
        next.low = next.open < next.close ? next.open * 0.9998 : next.close * 0.9998;
        if (next.t + 60 > util_now())
            break; /* only closed minutes */
        /* the timeframes whose bucket this minute completes (its last one),
         * among buckets this run wrote from their start: a bucket the seed
         * left half-filled in the past was already served (and recorded)
         * as closed by its close time, so completing it only refreshes */
        if (!first_t)
            first_t = next.t;
        int64_t end = next.t + 60;
        bool want[3] = {true, end % 300 == 0 && end - 300 >= first_t,
                        end % 900 == 0 && end - 900 >= first_t};
        double t0 = util_now_precise();
        if (store_upsert_base_candles(symbol, &next, 1) != 0)
            break;
        bool seen[3] = {false, false, false};
        for (;;) {
            bool all = true;
            for (int i = 0; i < 3; i++)
                all &= !want[i] || seen[i];
            if (all)
                break;
            char tf[8], sym[32];
            if (!next_message(r, tf, sym)) {
                lost = true; /* 5 s without a message: the context is spent */
                printf("e2e: no message within 5 s after the write of minute %lld\n",
                       (long long)next.t);
                break;
            }
            double dt = (util_now_precise() - t0) * 1e3;
            for (int i = 0; i < 3; i++)
                if (want[i] && !seen[i] && !strcmp(tf, tfs[i]) && !strcmp(sym, symbol)) {
                    seen[i] = true;
                    lat[i][nl[i]++] = dt;
                }
        }
        last = next;
    }
    for (int i = 0; i < 3; i++) {
        if (!nl[i]) {
            printf("e2e_base_to_published_%s none seen\n", tfs[i]);
            continue;
        }
        qsort(lat[i], nl[i], sizeof **lat, cmp_dbl);
        printf("e2e_base_to_published_%s median_ms=%.1f max_ms=%.1f samples=%zu\n", tfs[i],
               lat[i][nl[i] / 2], lat[i][nl[i] - 1], nl[i]);
    }
    redisFree(r);
}

int main(void)
{
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(0, &one);
    (void)sched_setaffinity(0, sizeof one, &one); /* one core */
    const char *db = getenv("PREDICTD_BENCH_DATABASE_URL");
    const char *redis = getenv("PREDICTD_BENCH_REDIS_URL");
    const char *e2e = getenv("PREDICTD_BENCH_E2E_SYMBOL");
    if (!e2e || !*e2e) {
        bench_agg();
        bench_csv();
    }
    if (!db || !*db) {
        printf("rollup skipped (PREDICTD_BENCH_DATABASE_URL unset)\n");
        return 0;
    }
    util_log_configure(UTIL_LOG_WARN, false);
    if (store_init(db, NULL, false) != 0) {
        printf("rollup skipped (store_init failed)\n");
        return 0;
    }
    if (e2e && *e2e) {
        if (redis && *redis)
            bench_e2e(e2e, redis);
        else
            printf("e2e skipped (PREDICTD_BENCH_REDIS_URL unset)\n");
    } else {
        bench_rollup();
    }
    store_shutdown();
    return 0;
}
