/*
 * bench_store: times the candle store's request path against the real
 * PostgreSQL and Redis that bench/run starts (PREDICTD_BENCH_DATABASE_URL,
 * PREDICTD_BENCH_REDIS_URL; prints "skipped" and exits 0 without them).
 *
 *   store_upsert_5000 ms=...                      5000 1h candles, one call
 *   store_upsert_50000 ms=...                     50000 1m candles, one call
 *   store_pg_window_300 median_us=... p90_us=...  store_load_window of 300
 *                                                 candles, cache off (PG)
 *   store_redis_window_300 median_us=... p90_us=... the same, cache on (hits)
 *   store_redis_windows_8x300 median_us=...       store_load_windows, 8
 *                                                 symbols, all hits (pipelined)
 *
 * Each window figure is the median (and 90th percentile) of ITER timed
 * calls after WARMUP untimed ones, on one thread with its own connections,
 * as a server worker has. Targets: PG <= 1 ms, Redis <= 0.3 ms median.
 * Candles come from feed_seed_series; "now" is fixed at start so every
 * call asks for the same window.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "features/features.h"
#include "feed/feed.h"
#include "store/store.h"
#include "util/util.h"

#define ITER 500
#define WARMUP 50
#define WINDOW 300

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static void report(const char *name, uint64_t *ns, size_t n)
{
    qsort(ns, n, sizeof *ns, cmp_u64);
    printf("%s median_us=%.1f p90_us=%.1f min_us=%.1f iterations=%zu\n", name,
           (double)ns[n / 2] / 1e3, (double)ns[n * 9 / 10] / 1e3, (double)ns[0] / 1e3, n);
}

/* Times ITER window loads; returns -1 on any failure or an unexpected
 * source. */
static int time_window(const char *name, const char *symbol, int64_t now, bool want_cache)
{
    static uint64_t ns[ITER];
    for (int i = 0; i < WARMUP + ITER; i++) {
        features_candle *c;
        size_t n;
        store_window_info info;
        uint64_t t0 = util_mono_ns();
        int rc = store_load_window(symbol, "1h", now, WINDOW, &c, &n, &info);
        uint64_t dt = util_mono_ns() - t0;
        if (rc || n != WINDOW || (i > 0 && info.from_cache != want_cache)) {
            fprintf(stderr, "%s: rc %d (%s), n %zu, from_cache %d\n", name, rc, util_strerror(rc),
                    rc ? 0 : n, rc ? 0 : info.from_cache);
            if (!rc)
                free(c);
            return -1;
        }
        free(c);
        if (i >= WARMUP)
            ns[i - WARMUP] = dt;
    }
    report(name, ns, ITER);
    return 0;
}

static int time_windows(const char *name, const char *const *syms, size_t nsym, int64_t now)
{
    static uint64_t ns[ITER];
    for (int i = 0; i < WARMUP + ITER; i++) {
        features_candle *outs[16];
        size_t n[16];
        store_window_info info[16];
        int rcs[16];
        uint64_t t0 = util_mono_ns();
        int rc = store_load_windows(syms, nsym, "1h", now, WINDOW, outs, n, info, rcs);
        uint64_t dt = util_mono_ns() - t0;
        for (size_t k = 0; k < nsym && rc == 0; k++) {
            if (rcs[k] || (i > 0 && !info[k].from_cache))
                rc = rcs[k] ? rcs[k] : PD_ECACHE;
            if (!rcs[k])
                free(outs[k]);
        }
        if (rc) {
            fprintf(stderr, "%s: %s\n", name, util_strerror(rc));
            return -1;
        }
        if (i >= WARMUP)
            ns[i - WARMUP] = dt;
    }
    report(name, ns, ITER);
    return 0;
}

int main(void)
{
    const char *db = getenv("PREDICTD_BENCH_DATABASE_URL");
    const char *redis = getenv("PREDICTD_BENCH_REDIS_URL");
    if (!db || !*db) {
        puts("bench_store: skipped (PREDICTD_BENCH_DATABASE_URL is not set)");
        return 0;
    }
    util_log_configure(UTIL_LOG_WARN, false);
    const char *root = getenv("PREDICTD_ROOT");
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/db", root && *root ? root : ".");

    int rc = store_init(db, NULL, false);
    if (!rc)
        rc = store_migrate(dir);
    if (rc) {
        fprintf(stderr, "bench_store: init/migrate: %s\n", util_strerror(rc));
        return 1;
    }
    int64_t now = util_now();
    const char *syms[8] = {"BENCHA", "BENCHB", "BENCHC", "BENCHD",
                           "BENCHE", "BENCHF", "BENCHG", "BENCHH"};
    for (size_t s = 0; s < 8; s++) {
        features_candle *c;
        if ((rc = feed_seed_series(syms[s], "1h", now, 5000, 11 + s, &c)))
            break;
        uint64_t t0 = util_mono_ns();
        rc = store_upsert_candles(syms[s], "1h", c, 5000);
        if (s == 0 && !rc)
            printf("store_upsert_5000 ms=%.1f\n", (double)(util_mono_ns() - t0) / 1e6);
        free(c);
        if (rc)
            break;
    }
    features_candle *big;
    if (!rc && !(rc = feed_seed_series("BENCHBIG", "1m", now, 50000, 5, &big))) {
        uint64_t t0 = util_mono_ns();
        rc = store_upsert_candles("BENCHBIG", "1m", big, 50000);
        if (!rc)
            printf("store_upsert_50000 ms=%.1f\n", (double)(util_mono_ns() - t0) / 1e6);
        free(big);
    }
    if (rc) {
        fprintf(stderr, "bench_store: upsert: %s\n", util_strerror(rc));
        return 1;
    }

    int fails = time_window("store_pg_window_300", syms[0], now, false) != 0;
    if (redis && *redis) {
        if ((rc = store_init(db, redis, true))) {
            fprintf(stderr, "bench_store: redis init: %s\n", util_strerror(rc));
            return 1;
        }
        fails += time_window("store_redis_window_300", syms[0], now, true) != 0;
        fails += time_windows("store_redis_windows_8x300", syms, 8, now) != 0;
    } else {
        puts("store_redis_window_300 skipped (PREDICTD_BENCH_REDIS_URL is not set)");
    }
    store_stats st;
    store_stats_get(&st);
    printf("store_stats db_queries=%llu redis_hits=%llu redis_misses=%llu redis_errors=%llu\n",
           (unsigned long long)st.db_queries, (unsigned long long)st.redis_hits,
           (unsigned long long)st.redis_misses, (unsigned long long)st.redis_errors);
    store_shutdown();
    return fails ? 1 : 0;
}
