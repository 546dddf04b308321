/*
 * bench_features: times features_compute, the per-request feature step,
 * one line per case:
 *
 *   features_default_300 median_ns=... min_ns=... cycles=... batches=21 runs=...
 *
 * Cases: the default 14 features over a 300-candle window (the serving
 * target is at most 20 us on one core), the same over 1000 candles (the
 * recursive indicators are linear in the window), and the whole catalogue
 * (28 features) over 300 candles. Each figure is the median over 21
 * batches of the mean time per call in a batch; a batch is sized to take
 * about 20 ms, and a case never runs longer than about 2 s. cycles is the
 * median of user-mode CPU cycles per call (Linux perf counter, omitted where
 * perf_event_open is not allowed): it does not grow when other processes
 * share the cores. Windows slide over a deterministic random walk (64
 * different windows), as training's do; single-threaded, scratch warmed up
 * first (as a server thread's is after its first request).
 *
 * Usage: bench_features [filter]   (runs only cases whose name contains it)
 */
#include "features/features.h"
#include "util/util.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef __linux__
#include <linux/perf_event.h>
#include <sys/syscall.h>
#endif

#define BATCHES 21
#define NWINDOWS 64

static const char *const all_specs[] = {
    "rsi:14",
    "macd:12:26:9",
    "macd_signal:12:26:9",
    "macd_hist:12:26:9",
    "natr:14",
    "trange_pct",
    "ema_dist:12",
    "sma_dist:20",
    "wma_dist:10",
    "bb_pctb:20:2",
    "bb_width:20:2.5",
    "ret:1",
    "logret:3",
    "roc:10",
    "vol:20",
    "zscore:60",
    "volume_ratio:20",
    "adx:14",
    "plus_di:14",
    "minus_di:14",
    "stoch_k:14:3:3",
    "stoch_d:14:3:3",
    "stochrsi_k:14:5:3",
    "stochrsi_d:14:5:3",
    "cci:20",
    "willr:14",
    "mfi:14",
    "obv_slope:10",
};

static uint64_t rng = 0x9e3779b97f4a7c15ull;

/* Uniform in [0, 1), deterministic. */
static double rnd(void)
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng >> 11) / (double)(1ull << 53);
}

/* A random walk around 30000 with wicks and volume, 15-minute candles. */
static features_candle *make_series(size_t n)
{
    features_candle *c = malloc(n * sizeof *c);
    if (!c) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    double prev = 30000;
    for (size_t i = 0; i < n; i++) {
        double open = prev * (1 + (rnd() - 0.5) * 0.002);
        double close = open * (1 + (rnd() - 0.5) * 0.02);
        c[i].t = 1700000000 + (int64_t)i * 900;
        c[i].open = open;
        c[i].close = close;
        c[i].high = fmax(open, close) * (1 + rnd() * 0.005);
        c[i].low = fmin(open, close) * (1 - rnd() * 0.005);
        c[i].volume = 10 + rnd() * 500;
        prev = close;
    }
    return c;
}

static int cycles_fd = -1;

static void cycles_open(void)
{
#ifdef __linux__
    struct perf_event_attr a;
    memset(&a, 0, sizeof a);
    a.type = PERF_TYPE_HARDWARE;
    a.size = sizeof a;
    a.config = PERF_COUNT_HW_CPU_CYCLES;
    a.exclude_kernel = 1;
    a.exclude_hv = 1;
    cycles_fd = (int)syscall(SYS_perf_event_open, &a, 0, -1, -1, 0);
#endif
}

/* User-mode cycles of this thread so far; 0 without the counter. */
static uint64_t cycles_now(void)
{
    uint64_t v = 0;
    if (cycles_fd >= 0 && read(cycles_fd, &v, sizeof v) != (ssize_t)sizeof v)
        v = 0;
    return v;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static volatile double sink;

static int bench(const char *name, const char *const *specs, size_t nspecs, size_t window)
{
    features_set *s = NULL;
    char why[256];
    if (features_set_new(specs, nspecs, &s, why, sizeof why) != 0) {
        fprintf(stderr, "%s: %s\n", name, why);
        return 1;
    }
    features_candle *series = make_series(window + NWINDOWS);
    double out[64], acc = 0;

    /* Warm up (grows this thread's scratch once) and check every window. */
    for (size_t w = 0; w < NWINDOWS; w++)
        if (features_compute(s, series + w, window, out) != 0) {
            fprintf(stderr, "%s: features_compute failed\n", name);
            return 1;
        }

    /* Calibrate: runs per batch for about 20 ms, at most 200k. */
    size_t runs = 16;
    for (;;) {
        uint64_t t0 = util_mono_ns();
        for (size_t i = 0; i < runs; i++) {
            features_compute(s, series + i % NWINDOWS, window, out);
            acc += out[0];
        }
        uint64_t dt = util_mono_ns() - t0;
        if (dt >= 20000000 || runs >= 200000)
            break;
        runs = dt < 1000000 ? runs * 8 : (size_t)((double)runs * 2.2e7 / (double)dt);
        if (runs > 200000)
            runs = 200000;
    }
    double per_run[BATCHES], cyc[BATCHES];
    uint64_t start = util_mono_ns();
    int batches = 0;
    for (; batches < BATCHES; batches++) {
        if (batches >= 5 && util_mono_ns() - start > 2000000000ull)
            break; /* 2 s cap on a slow machine */
        uint64_t c0 = cycles_now();
        uint64_t t0 = util_mono_ns();
        for (size_t i = 0; i < runs; i++) {
            features_compute(s, series + i % NWINDOWS, window, out);
            acc += out[0];
        }
        per_run[batches] = (double)(util_mono_ns() - t0) / (double)runs;
        cyc[batches] = (double)(cycles_now() - c0) / (double)runs;
    }
    sink = acc;
    qsort(per_run, (size_t)batches, sizeof per_run[0], cmp_double);
    qsort(cyc, (size_t)batches, sizeof cyc[0], cmp_double);
    char cbuf[48] = "";
    if (cycles_fd >= 0)
        snprintf(cbuf, sizeof cbuf, " cycles=%.0f", cyc[batches / 2]);
    printf("%s median_ns=%.1f min_ns=%.1f%s batches=%d runs=%zu features=%zu window=%zu\n", name,
           per_run[batches / 2], per_run[0], cbuf, batches, runs, nspecs, window);
    fflush(stdout);
    free(series);
    features_set_free(s);
    return 0;
}

int main(int argc, char **argv)
{
    const char *filter = argc > 1 ? argv[1] : "";
    size_t nd;
    const char *const *def = features_default_specs(&nd);
    int bad = 0;
    cycles_open();
    if (strstr("features_default_300", filter))
        bad |= bench("features_default_300", def, nd, 300);
    if (strstr("features_default_1000", filter))
        bad |= bench("features_default_1000", def, nd, 1000);
    if (strstr("features_all_300", filter))
        bad |= bench("features_all_300", all_specs, sizeof all_specs / sizeof all_specs[0], 300);
    return bad;
}
