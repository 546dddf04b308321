/* Unit tests of the indicator kernels (features/indicators.c): every kernel
 * against TA-Lib's own numbers (tests/golden/talib_golden.h, generated from
 * TA-Lib compiled to WebAssembly) to 1e-9 relative error, predictd's
 * documented deviations from TA-Lib, hand-checked tiny cases, the period,
 * length and input rules, and every kernel over the real candles in
 * PREDICTD_SHARED_DATA (zero-range candles, gaps, tiny volumes). */
#include "features/features.h"
#include "tests/golden/shared_candles.h"
#include "tests/golden/talib_golden.h"
#include "tests/unit/unit.h"
#include "util/util.h"

#include <stdbool.h>
#include <stdint.h>

#define GOLDEN_TOL 1e-9

/* |a - b| <= 1e-9 * |b| (+1e-12 for values at 0); NaN matches NaN. */
static bool close_enough(double a, double b)
{
    if (isnan(a) || isnan(b))
        return isnan(a) && isnan(b);
    return fabs(a - b) <= GOLDEN_TOL * fabs(b) + 1e-12;
}

#define SERIES_FLAT 1
#define SERIES_RISING 2

/* Runs the kernel a golden case names; outputs o[0..2] of length s->n. */
static int run_case(const golden_case *gc, const golden_series *s, double *o[3])
{
    const char *fn = gc->fn;
    const int *p = gc->ip;
    size_t n = s->n;
    const double *h = s->high, *l = s->low, *c = s->close, *v = s->volume;
    if (!strcmp(fn, "sma"))
        return features_sma(c, n, p[0], o[0]);
    if (!strcmp(fn, "ema"))
        return features_ema(c, n, p[0], o[0]);
    if (!strcmp(fn, "wma"))
        return features_wma(c, n, p[0], o[0]);
    if (!strcmp(fn, "rsi"))
        return features_rsi(c, n, p[0], o[0]);
    if (!strcmp(fn, "macd"))
        return features_macd(c, n, p[0], p[1], p[2], o[0], o[1], o[2]);
    if (!strcmp(fn, "trange"))
        return features_trange(h, l, c, n, o[0]);
    if (!strcmp(fn, "atr"))
        return features_atr(h, l, c, n, p[0], o[0]);
    if (!strcmp(fn, "natr"))
        return features_natr(h, l, c, n, p[0], o[0]);
    if (!strcmp(fn, "bbands"))
        return features_bbands(c, n, p[0], gc->dp, o[0], o[1], o[2]);
    if (!strcmp(fn, "stddev"))
        return features_stddev(c, n, p[0], gc->dp, o[0]);
    if (!strcmp(fn, "roc"))
        return features_roc(c, n, p[0], o[0]);
    if (!strcmp(fn, "ret"))
        return features_ret(c, n, p[0], o[0]);
    if (!strcmp(fn, "logret"))
        return features_logret(c, n, p[0], o[0]);
    if (!strcmp(fn, "volatility"))
        return features_volatility(c, n, p[0], o[0]);
    if (!strcmp(fn, "zscore"))
        return features_zscore(c, n, p[0], o[0]);
    if (!strcmp(fn, "adx"))
        return features_adx(h, l, c, n, p[0], o[0]);
    if (!strcmp(fn, "plus_di"))
        return features_plus_di(h, l, c, n, p[0], o[0]);
    if (!strcmp(fn, "minus_di"))
        return features_minus_di(h, l, c, n, p[0], o[0]);
    if (!strcmp(fn, "stoch"))
        return features_stoch(h, l, c, n, p[0], p[1], p[2], o[0], o[1]);
    if (!strcmp(fn, "stochrsi"))
        return features_stochrsi(c, n, p[0], p[1], p[2], o[0], o[1]);
    if (!strcmp(fn, "cci"))
        return features_cci(h, l, c, n, p[0], o[0]);
    if (!strcmp(fn, "willr"))
        return features_willr(h, l, c, n, p[0], o[0]);
    if (!strcmp(fn, "mfi"))
        return features_mfi(h, l, c, v, n, p[0], o[0]);
    if (!strcmp(fn, "obv"))
        return features_obv(c, v, n, o[0]);
    if (!strcmp(fn, "volume_ratio"))
        return features_volume_ratio(v, n, p[0], o[0]);
    return -1000;
}

/*
 * What predictd returns where TA-Lib says `talib`: TA-Lib's value except for
 * the deviations documented in features/indicators.c. *deviates is set when
 * one applied (counted, so the test proves they were exercised).
 */
static double predictd_value(const golden_case *gc, double talib, bool *deviates)
{
    const char *fn = gc->fn;
    *deviates = false;
    /* DI of period 1: TA-Lib forgets the *100 there. */
    if ((!strcmp(fn, "plus_di") || !strcmp(fn, "minus_di")) && gc->ip[0] == 1) {
        *deviates = talib != 0;
        return 100 * talib;
    }
    bool zero_range =
        gc->series == SERIES_FLAT || (gc->series == SERIES_RISING && !strcmp(fn, "stochrsi"));
    if (!zero_range)
        return talib;
    /* 0/0 on a flat window (or an RSI stuck at 100): TA-Lib says 0,
     * predictd the neutral middle. */
    if (!strcmp(fn, "rsi") || !strcmp(fn, "stoch") || !strcmp(fn, "stochrsi") ||
        !strcmp(fn, "mfi")) {
        *deviates = true;
        return talib == 0 ? 50.0 : NAN; /* NAN: TA-Lib did not say 0 */
    }
    if (!strcmp(fn, "willr")) {
        *deviates = true;
        return talib == 0 ? -50.0 : NAN;
    }
    if (!strcmp(fn, "zscore")) {
        *deviates = true;
        return isnan(talib) ? 0.0 : NAN; /* TA-Lib composition: 0/0 */
    }
    return talib;
}

TEST(golden_talib)
{
    size_t ncases = sizeof golden_cases / sizeof golden_cases[0];
    size_t compared = 0, deviations = 0;
    double worst = 0; /* largest relative error against TA-Lib */
    for (size_t k = 0; k < ncases; k++) {
        const golden_case *gc = &golden_cases[k];
        const golden_series *s = &golden_series_list[gc->series];
        double buf[3][200];
        double *o[3] = {buf[0], buf[1], buf[2]};
        int rc = run_case(gc, s, o);
        if (rc != 0) {
            UNIT_FAIL_("%s(%d,%d,%d) on %s: rc %d", gc->fn, gc->ip[0], gc->ip[1], gc->ip[2],
                       s->name, rc);
            continue;
        }
        for (int j = 0; j < gc->nout; j++) {
            int bad = 0;
            for (size_t i = 0; i < s->n && bad < 3; i++) {
                bool dev = false;
                double want = i < gc->beg ? NAN : predictd_value(gc, gc->out[j][i - gc->beg], &dev);
                deviations += dev;
                if (isfinite(want) && fabs(want) > 1e-6 &&
                    fabs(o[j][i] - want) / fabs(want) > worst)
                    worst = fabs(o[j][i] - want) / fabs(want);
                if (!close_enough(o[j][i], want)) {
                    UNIT_FAIL_("%s(%d,%d,%d,%g) on %s: out %d [%zu] = %.17g, TA-Lib %.17g", gc->fn,
                               gc->ip[0], gc->ip[1], gc->ip[2], gc->dp, s->name, j, i, o[j][i],
                               i < gc->beg ? NAN : gc->out[j][i - gc->beg]);
                    bad++;
                }
                compared++;
            }
        }
    }
    printf("  %zu cases, %zu values compared, %zu documented deviations, worst relative "
           "error %.2g\n",
           ncases, compared, deviations, worst);
    CHECK(compared > 8000);
    CHECK(deviations > 100);
}

/* Every kernel of the golden set was exercised on every series. */
TEST(golden_covers_every_kernel)
{
    static const char *const fns[] = {
        "sma",    "ema",    "wma",     "rsi",         "macd",  "trange",   "atr",
        "natr",   "bbands", "stddev",  "roc",         "ret",   "logret",   "volatility",
        "zscore", "adx",    "plus_di", "minus_di",    "stoch", "stochrsi", "cci",
        "willr",  "mfi",    "obv",     "volume_ratio"};
    size_t ncases = sizeof golden_cases / sizeof golden_cases[0];
    for (size_t f = 0; f < sizeof fns / sizeof fns[0]; f++)
        for (int s = 0; s < 3; s++) {
            bool found = false;
            for (size_t k = 0; k < ncases; k++)
                found |= !strcmp(golden_cases[k].fn, fns[f]) && golden_cases[k].series == s;
            if (!found)
                UNIT_FAIL_("no golden case for %s on series %d", fns[f], s);
        }
}

/* ------------------------------------------------------------------------ */

TEST(hand_checked_small_cases)
{
    const double x[] = {1, 2, 3, 4, 5};
    double o[5];
    CHECK_EQ_INT(features_sma(x, 5, 3, o), 0);
    CHECK(isnan(o[0]) && isnan(o[1]));
    CHECK(o[2] == 2 && o[3] == 3 && o[4] == 4);
    CHECK_EQ_INT(features_sma(x, 5, 5, o), 0);
    CHECK(o[4] == 3 && isnan(o[3]));

    /* EMA(3): seed (1+2+3)/3 = 2, k = 0.5 */
    CHECK_EQ_INT(features_ema(x, 5, 3, o), 0);
    CHECK(isnan(o[1]) && o[2] == 2 && o[3] == 3 && o[4] == 4);

    /* WMA(3) at 2: (1*1 + 2*2 + 3*3) / 6 */
    CHECK_EQ_INT(features_wma(x, 5, 3, o), 0);
    CHECK_NEAR(o[2], 14.0 / 6.0, 1e-15);
    CHECK_NEAR(o[4], (3 + 8 + 15) / 6.0, 1e-15);

    /* ROC, ret, logret */
    CHECK_EQ_INT(features_roc(x, 5, 1, o), 0);
    CHECK(isnan(o[0]) && o[1] == 100);
    CHECK_NEAR(o[3], 100.0 / 3, 1e-13);
    CHECK_EQ_INT(features_ret(x, 5, 2, o), 0);
    CHECK(isnan(o[1]) && o[2] == 2 && o[4] == 5.0 / 3 - 1);
    CHECK_EQ_INT(features_logret(x, 5, 1, o), 0);
    CHECK_NEAR(o[1], log(2), 1e-15);

    /* RSI(3) on 1,2,3,2: gains 1,1 and loss 1 over 3 changes */
    const double r[] = {1, 2, 3, 2, 1};
    CHECK_EQ_INT(features_rsi(r, 5, 3, o), 0);
    CHECK(isnan(o[2]));
    CHECK_NEAR(o[3], 100.0 * 2 / 3, 1e-12);
    /* then Wilder: gain = (2/3*2 + 0)/3, loss = (1/3*2 + 1)/3 */
    CHECK_NEAR(o[4], 100.0 * (4.0 / 9) / (4.0 / 9 + 5.0 / 9), 1e-12);

    /* OBV starts with the first volume (TA-Lib) */
    const double oc[] = {1, 2, 3, 2, 2}, ov[] = {10, 20, 30, 40, 50};
    CHECK_EQ_INT(features_obv(oc, ov, 5, o), 0);
    CHECK(o[0] == 10 && o[1] == 30 && o[2] == 60 && o[3] == 20 && o[4] == 20);

    /* volatility of a constant-growth series is exactly 0 */
    const double g[] = {1, 2, 4, 8, 16};
    CHECK_EQ_INT(features_volatility(g, 5, 3, o), 0);
    CHECK(isnan(o[2]) && o[3] == 0 && o[4] == 0);

    /* zscore(3) of 1,2,3: (3-2)/sqrt(2/3) */
    CHECK_EQ_INT(features_zscore(x, 5, 3, o), 0);
    CHECK_NEAR(o[2], 1 / sqrt(2.0 / 3), 1e-12);

    /* volume_ratio: volume / mean */
    CHECK_EQ_INT(features_volume_ratio(x, 5, 2, o), 0);
    CHECK(isnan(o[0]) && o[1] == 2 / 1.5 && o[4] == 5 / 4.5);
}

TEST(hand_checked_ranges)
{
    const double h[] = {10, 11, 12, 11.5, 13}, l[] = {9, 10, 10.5, 10, 11};
    const double c[] = {9.5, 10.5, 11, 10.2, 12.5};
    double o[5], o2[5];
    /* TR at 1: max(1, |11-9.5|, |10-9.5|) = 1.5 */
    CHECK_EQ_INT(features_trange(h, l, c, 5, o), 0);
    CHECK(isnan(o[0]) && o[1] == 1.5 && o[2] == 1.5);
    CHECK_NEAR(o[3], 1.5, 1e-15); /* max(1.5, |11.5-11|, |10-11|) */
    CHECK_NEAR(o[4], 2.8, 1e-15); /* max(2, |13-10.2|, |11-10.2|) */
    /* ATR(1) is the true range; ATR(2) at 2 = mean(TR1, TR2) */
    CHECK_EQ_INT(features_atr(h, l, c, 5, 1, o2), 0);
    for (int i = 1; i < 5; i++)
        CHECK(o2[i] == o[i]);
    CHECK_EQ_INT(features_atr(h, l, c, 5, 2, o2), 0);
    CHECK(isnan(o2[1]) && o2[2] == 1.5);
    CHECK_NEAR(o2[3], (1.5 * 1 + o[3]) / 2, 1e-15);
    /* NATR(1) = TR / close * 100: TA-Lib returns the raw TRANGE here
     * (documented deviation). */
    CHECK_EQ_INT(features_natr(h, l, c, 5, 1, o2), 0);
    CHECK_NEAR(o2[1], 1.5 / 10.5 * 100, 1e-13);
    /* WILLR(2) at 1: highest 11, lowest 9, close 10.5 -> -100*(0.5/2) */
    CHECK_EQ_INT(features_willr(h, l, c, 5, 2, o), 0);
    CHECK(isnan(o[0]));
    CHECK_NEAR(o[1], -25, 1e-13);
    /* STOCH(2,1,1) %K at 1: (10.5 - 9) / 2 * 100 */
    CHECK_EQ_INT(features_stoch(h, l, c, 5, 2, 1, 1, o, o2), 0);
    CHECK_NEAR(o[1], 75, 1e-13);
    CHECK(o2[1] == o[1]);
    /* +DI(1) at 1: +DM 1 (11-10 > 9-10), TR 1.5 -> 66.67 (TA-Lib: 0.667) */
    CHECK_EQ_INT(features_plus_di(h, l, c, 5, 1, o), 0);
    CHECK_NEAR(o[1], 100.0 / 1.5, 1e-12);
    CHECK_EQ_INT(features_minus_di(h, l, c, 5, 1, o), 0);
    CHECK(o[1] == 0);
    CHECK_NEAR(o[3], 100 * 0.5 / 1.5, 1e-12); /* -DM 10.5-10 = 0.5 > +DM < 0 */
}

TEST(macd_fast_slow_swapped_like_talib)
{
    const golden_series *s = &golden_series_list[0];
    double a[3][200], b[3][200];
    CHECK_EQ_INT(features_macd(s->close, s->n, 12, 26, 9, a[0], a[1], a[2]), 0);
    CHECK_EQ_INT(features_macd(s->close, s->n, 26, 12, 9, b[0], b[1], b[2]), 0);
    for (size_t i = 0; i < s->n; i++)
        for (int j = 0; j < 3; j++)
            CHECK(close_enough(a[j][i], b[j][i]));
    /* The fast EMA is not a standalone EMA(12): its seed ends at 25. */
    double e12[200], e26[200];
    CHECK_EQ_INT(features_ema(s->close, s->n, 12, e12), 0);
    CHECK_EQ_INT(features_ema(s->close, s->n, 26, e26), 0);
    CHECK(fabs(a[0][40] - (e12[40] - e26[40])) > 1e-6);
}

/* Signal period 1: the signal is the MACD line itself and the histogram 0.
 * (TA-Lib's MACD lookback rejects EMA period 1 and comes out one short, so
 * its outputs are misaligned there; predictd keeps the plain definition.) */
TEST(macd_signal_period_one)
{
    const golden_series *s = &golden_series_list[0];
    double m[200], sg[200], hi[200];
    CHECK_EQ_INT(features_macd(s->close, s->n, 3, 6, 1, m, sg, hi), 0);
    CHECK(isnan(m[4]) && isfinite(m[5]));
    for (size_t i = 5; i < s->n; i++)
        CHECK(fabs(sg[i] - m[i]) <= 1e-15 && fabs(hi[i]) <= 1e-15);
}

/* RSI's flat-window value is predictd's 50, not TA-Lib's 0. */
TEST(flat_window_neutral_values)
{
    double flat[30], vol[30], o[30], o2[30], o3[30];
    for (int i = 0; i < 30; i++) {
        flat[i] = 0.00161; /* a low-priced coin: exact zero tests only */
        vol[i] = 5;
    }
    CHECK_EQ_INT(features_rsi(flat, 30, 14, o), 0);
    CHECK(o[14] == 50 && o[29] == 50);
    CHECK_EQ_INT(features_stddev(flat, 30, 20, 2, o), 0);
    CHECK(o[19] == 0 && o[29] == 0);
    CHECK_EQ_INT(features_bbands(flat, 30, 20, 2, o, o2, o3), 0);
    CHECK(o[29] == o3[29]);
    CHECK_EQ_INT(features_zscore(flat, 30, 20, o), 0);
    CHECK(o[29] == 0);
    CHECK_EQ_INT(features_volatility(flat, 30, 20, o), 0);
    CHECK(o[29] == 0);
    CHECK_EQ_INT(features_willr(flat, flat, flat, 30, 14, o), 0);
    CHECK(o[29] == -50);
    CHECK_EQ_INT(features_stoch(flat, flat, flat, 30, 5, 3, 3, o, o2), 0);
    CHECK(o[29] == 50 && o2[29] == 50);
    CHECK_EQ_INT(features_stochrsi(flat, 30, 5, 5, 3, o, o2), 0);
    CHECK(o[29] == 50 && o2[29] == 50);
    CHECK_EQ_INT(features_mfi(flat, flat, flat, vol, 30, 14, o), 0);
    CHECK(o[29] == 50);
    CHECK_EQ_INT(features_cci(flat, flat, flat, 30, 14, o), 0);
    CHECK(o[29] == 0);
    CHECK_EQ_INT(features_adx(flat, flat, flat, 30, 5, o), 0);
    CHECK(o[29] == 0);
    CHECK_EQ_INT(features_plus_di(flat, flat, flat, 30, 5, o), 0);
    CHECK(o[29] == 0);
    CHECK_EQ_INT(features_natr(flat, flat, flat, 30, 14, o), 0);
    CHECK(o[29] == 0);
    /* no volume: MFI neutral, volume ratio 1 */
    double zero[30] = {0};
    CHECK_EQ_INT(features_mfi(flat, flat, flat, zero, 30, 14, o), 0);
    CHECK(o[29] == 50);
    CHECK_EQ_INT(features_volume_ratio(zero, 30, 20, o), 0);
    CHECK(o[29] == 1);
    /* ROC over a zero keeps TA-Lib's 0; ret refuses it */
    const double z[] = {0, 1, 2};
    CHECK_EQ_INT(features_roc(z, 3, 1, o), 0);
    CHECK(o[1] == 0 && o[2] == 100);
    CHECK_EQ_INT(features_ret(z, 3, 1, o), PD_EINVAL);
    CHECK_EQ_INT(features_logret(z, 3, 1, o), PD_EINVAL);
    CHECK_EQ_INT(features_volatility(z, 3, 2, o), PD_EINVAL);
}

/* ------------------------------------------------------------------------ */
/* Argument rules                                                            */

/* One kernel call with n inputs of a decent series: *lb receives the
 * lookback the kernel documents. Returns the kernel's rc. */
typedef int (*kernel_call)(size_t n, const double *h, const double *l, const double *c,
                           const double *v, double *o1, double *o2, double *o3);

#define K(name, call)                                                                              \
    static int name(size_t n, const double *h, const double *l, const double *c, const double *v,  \
                    double *o1, double *o2, double *o3)                                            \
    {                                                                                              \
        (void)h, (void)l, (void)c, (void)v, (void)o1, (void)o2, (void)o3;                          \
        return call;                                                                               \
    }
K(k_sma, features_sma(c, n, 10, o1))
K(k_ema, features_ema(c, n, 10, o1))
K(k_wma, features_wma(c, n, 10, o1))
K(k_rsi, features_rsi(c, n, 14, o1))
K(k_macd, features_macd(c, n, 12, 26, 9, o1, o2, o3))
K(k_trange, features_trange(h, l, c, n, o1))
K(k_atr, features_atr(h, l, c, n, 14, o1))
K(k_natr, features_natr(h, l, c, n, 14, o1))
K(k_bbands, features_bbands(c, n, 20, 2, o1, o2, o3))
K(k_stddev, features_stddev(c, n, 20, 1, o1))
K(k_roc, features_roc(c, n, 10, o1))
K(k_ret, features_ret(c, n, 5, o1))
K(k_logret, features_logret(c, n, 5, o1))
K(k_vol, features_volatility(c, n, 20, o1))
K(k_zscore, features_zscore(c, n, 60, o1))
K(k_adx, features_adx(h, l, c, n, 14, o1))
K(k_pdi, features_plus_di(h, l, c, n, 14, o1))
K(k_mdi, features_minus_di(h, l, c, n, 14, o1))
K(k_stoch, features_stoch(h, l, c, n, 14, 3, 3, o1, o2))
K(k_stochrsi, features_stochrsi(c, n, 14, 5, 3, o1, o2))
K(k_cci, features_cci(h, l, c, n, 20, o1))
K(k_willr, features_willr(h, l, c, n, 14, o1))
K(k_mfi, features_mfi(h, l, c, v, n, 14, o1))
K(k_obv, features_obv(c, v, n, o1))
K(k_vratio, features_volume_ratio(v, n, 20, o1))

static const struct {
    const char *name;
    size_t lookback;
    kernel_call call;
    bool uses_volume;
} kernels[] = {
    {"sma", 9, k_sma, false},
    {"ema", 9, k_ema, false},
    {"wma", 9, k_wma, false},
    {"rsi", 14, k_rsi, false},
    {"macd", 33, k_macd, false},
    {"trange", 1, k_trange, false},
    {"atr", 14, k_atr, false},
    {"natr", 14, k_natr, false},
    {"bbands", 19, k_bbands, false},
    {"stddev", 19, k_stddev, false},
    {"roc", 10, k_roc, false},
    {"ret", 5, k_ret, false},
    {"logret", 5, k_logret, false},
    {"volatility", 20, k_vol, false},
    {"zscore", 59, k_zscore, false},
    {"adx", 27, k_adx, false},
    {"plus_di", 14, k_pdi, false},
    {"minus_di", 14, k_mdi, false},
    {"stoch", 17, k_stoch, false},
    {"stochrsi", 20, k_stochrsi, false},
    {"cci", 19, k_cci, false},
    {"willr", 13, k_willr, false},
    {"mfi", 14, k_mfi, true},
    {"obv", 0, k_obv, true},
    {"volume_ratio", 19, k_vratio, true},
};
#define NKERNELS (sizeof kernels / sizeof kernels[0])

/* Outputs exist from the lookback on; one candle fewer is PD_ENODATA, and
 * nothing is written then. */
TEST(lookback_and_one_too_few)
{
    const golden_series *s = &golden_series_list[0];
    for (size_t k = 0; k < NKERNELS; k++) {
        size_t lb = kernels[k].lookback;
        double o[3][200];
        for (int j = 0; j < 3; j++)
            for (int i = 0; i < 200; i++)
                o[j][i] = 12345.0;
        int rc = kernels[k].call(lb, s->high, s->low, s->close, s->volume, o[0], o[1], o[2]);
        if (rc != PD_ENODATA)
            UNIT_FAIL_("%s with n = lookback %zu: rc %d", kernels[k].name, lb, rc);
        for (int j = 0; j < 3; j++)
            for (int i = 0; i < 200; i++)
                if (o[j][i] != 12345.0) {
                    UNIT_FAIL_("%s wrote output on PD_ENODATA", kernels[k].name);
                    j = 3;
                    break;
                }
        rc = kernels[k].call(lb + 1, s->high, s->low, s->close, s->volume, o[0], o[1], o[2]);
        if (rc != 0)
            UNIT_FAIL_("%s with n = lookback+1: rc %d", kernels[k].name, rc);
        for (size_t i = 0; i < lb; i++)
            if (!isnan(o[0][i]))
                UNIT_FAIL_("%s [%zu] before the lookback is %g", kernels[k].name, i, o[0][i]);
        if (!isfinite(o[0][lb]))
            UNIT_FAIL_("%s [%zu] at the lookback is %g", kernels[k].name, lb, o[0][lb]);
        if (o[0][lb + 1] != 12345.0)
            UNIT_FAIL_("%s wrote past n", kernels[k].name);
        /* n = 0 is no data, never a crash */
        if (kernels[k].call(0, s->high, s->low, s->close, s->volume, o[0], o[1], o[2]) !=
            PD_ENODATA)
            UNIT_FAIL_("%s n=0", kernels[k].name);
    }
}

/* NaN, infinite and negative inputs are PD_EINVAL, whatever their index,
 * and leave the outputs alone. */
TEST(bad_inputs_rejected)
{
    const golden_series *s = &golden_series_list[0];
    size_t n = s->n;
    static const double bad[] = {NAN, INFINITY, -INFINITY, -1.0};
    for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++)
        for (int col = 0; col < 4; col++)
            for (size_t at = 0; at < n; at += 59) {
                double h[200], l[200], c[200], v[200];
                memcpy(h, s->high, n * sizeof *h);
                memcpy(l, s->low, n * sizeof *l);
                memcpy(c, s->close, n * sizeof *c);
                memcpy(v, s->volume, n * sizeof *v);
                double *cols[4] = {h, l, c, v};
                cols[col][at] = bad[b];
                for (size_t k = 0; k < NKERNELS; k++) {
                    /* kernels that do not read the spoiled column succeed */
                    bool reads =
                        col == 2 || (col == 3 && kernels[k].uses_volume) ||
                        (col < 2 && strcmp(kernels[k].name, "obv") &&
                         strcmp(kernels[k].name, "volume_ratio") &&
                         (!strcmp(kernels[k].name, "trange") || !strcmp(kernels[k].name, "atr") ||
                          !strcmp(kernels[k].name, "natr") || !strcmp(kernels[k].name, "adx") ||
                          !strcmp(kernels[k].name, "plus_di") ||
                          !strcmp(kernels[k].name, "minus_di") ||
                          !strcmp(kernels[k].name, "stoch") || !strcmp(kernels[k].name, "cci") ||
                          !strcmp(kernels[k].name, "willr") || !strcmp(kernels[k].name, "mfi")));
                    if (col == 2 && !strcmp(kernels[k].name, "volume_ratio"))
                        reads = false;
                    double o[3][200];
                    o[0][0] = 777;
                    int rc = kernels[k].call(n, h, l, c, v, o[0], o[1], o[2]);
                    if (reads && (rc != PD_EINVAL || o[0][0] != 777))
                        UNIT_FAIL_("%s with %g in column %d at %zu: rc %d", kernels[k].name, bad[b],
                                   col, at, rc);
                    if (!reads && rc != 0)
                        UNIT_FAIL_("%s failed on a column it does not read: rc %d", kernels[k].name,
                                   rc);
                }
            }
}

/* A missing input or output array, or a non-finite band width, is
 * PD_EINVAL for every kernel that takes it (never a crash), outputs left
 * alone. */
TEST(missing_arrays_rejected)
{
    const golden_series *s = &golden_series_list[0];
    const double *h = s->high, *l = s->low, *c = s->close, *v = s->volume;
    size_t n = s->n;
    double o[200], o2[200], o3[200];
    o[0] = o2[0] = o3[0] = 777;
    CHECK_EQ_INT(features_atr(NULL, l, c, n, 14, o), PD_EINVAL);
    CHECK_EQ_INT(features_atr(h, NULL, c, n, 14, o), PD_EINVAL);
    CHECK_EQ_INT(features_atr(h, l, NULL, n, 14, o), PD_EINVAL);
    CHECK_EQ_INT(features_atr(h, l, c, n, 14, NULL), PD_EINVAL);
    CHECK_EQ_INT(features_cci(h, l, NULL, n, 14, o), PD_EINVAL);
    CHECK_EQ_INT(features_willr(NULL, l, c, n, 14, o), PD_EINVAL);
    CHECK_EQ_INT(features_mfi(h, l, c, NULL, n, 14, o), PD_EINVAL);
    CHECK_EQ_INT(features_sma(NULL, n, 5, o), PD_EINVAL);
    CHECK_EQ_INT(features_rsi(c, n, 14, NULL), PD_EINVAL);
    CHECK_EQ_INT(features_macd(c, n, 12, 26, 9, NULL, o2, o3), PD_EINVAL);
    CHECK_EQ_INT(features_macd(c, n, 12, 26, 9, o, NULL, o3), PD_EINVAL);
    CHECK_EQ_INT(features_macd(c, n, 12, 26, 9, o, o2, NULL), PD_EINVAL);
    CHECK_EQ_INT(features_bbands(c, n, 20, 2, NULL, o2, o3), PD_EINVAL);
    CHECK_EQ_INT(features_bbands(c, n, 20, 2, o, NULL, o3), PD_EINVAL);
    CHECK_EQ_INT(features_bbands(c, n, 20, 2, o, o2, NULL), PD_EINVAL);
    CHECK_EQ_INT(features_bbands(c, n, 20, NAN, o, o2, o3), PD_EINVAL);
    CHECK_EQ_INT(features_bbands(c, n, 20, INFINITY, o, o2, o3), PD_EINVAL);
    CHECK_EQ_INT(features_stoch(h, l, c, n, 5, 3, 3, o, NULL), PD_EINVAL);
    CHECK_EQ_INT(features_stochrsi(c, n, 14, 5, 3, o, NULL), PD_EINVAL);
    CHECK_EQ_INT(features_stochrsi(c, n, 14, 5, 3, NULL, o2), PD_EINVAL);
    CHECK_EQ_INT(features_obv(c, NULL, n, o), PD_EINVAL);
    CHECK_EQ_INT(features_volume_ratio(NULL, n, 20, o), PD_EINVAL);
    CHECK(o[0] == 777 && o2[0] == 777 && o3[0] == 777);
    (void)v;
}

/* CCI when the last typical price is the window's mean but the window is
 * not flat: TA-Lib answers 0 (its numerator is 0), not NaN. */
TEST(cci_last_price_at_the_mean)
{
    const double p[3] = {1, 3, 2};
    double out[3];
    CHECK_EQ_INT(features_cci(p, p, p, 3, 3, out), 0);
    CHECK(isnan(out[0]) && isnan(out[1]));
    CHECK(out[2] == 0.0);
    /* and a last price above the mean is positive: (3 - 2) / (0.015 x 2/3) */
    const double q[3] = {1, 2, 3};
    CHECK_EQ_INT(features_cci(q, q, q, 3, 3, out), 0);
    CHECK_NEAR(out[2], 1.0 / (0.015 * (2.0 / 3.0)), 1e-9);
}

TEST(period_rules_like_talib)
{
    const golden_series *s = &golden_series_list[0];
    const double *h = s->high, *l = s->low, *c = s->close, *v = s->volume;
    size_t n = s->n;
    double o[200], o2[200], o3[200];
    /* TA-Lib minimum 2 */
    CHECK_EQ_INT(features_sma(c, n, 1, o), PD_EINVAL);
    CHECK_EQ_INT(features_ema(c, n, 1, o), PD_EINVAL);
    CHECK_EQ_INT(features_wma(c, n, 1, o), PD_EINVAL);
    CHECK_EQ_INT(features_rsi(c, n, 1, o), PD_EINVAL);
    CHECK_EQ_INT(features_bbands(c, n, 1, 2, o, o2, o3), PD_EINVAL);
    CHECK_EQ_INT(features_stddev(c, n, 1, 1, o), PD_EINVAL);
    CHECK_EQ_INT(features_adx(h, l, c, n, 1, o), PD_EINVAL);
    CHECK_EQ_INT(features_cci(h, l, c, n, 1, o), PD_EINVAL);
    CHECK_EQ_INT(features_willr(h, l, c, n, 1, o), PD_EINVAL);
    CHECK_EQ_INT(features_mfi(h, l, c, v, n, 1, o), PD_EINVAL);
    CHECK_EQ_INT(features_stochrsi(c, n, 1, 5, 3, o, o2), PD_EINVAL);
    CHECK_EQ_INT(features_macd(c, n, 1, 26, 9, o, o2, o3), PD_EINVAL);
    CHECK_EQ_INT(features_macd(c, n, 12, 1, 9, o, o2, o3), PD_EINVAL);
    CHECK_EQ_INT(features_zscore(c, n, 1, o), PD_EINVAL);
    CHECK_EQ_INT(features_volatility(c, n, 1, o), PD_EINVAL);
    CHECK_EQ_INT(features_volume_ratio(v, n, 1, o), PD_EINVAL);
    /* TA-Lib minimum 1 */
    CHECK_EQ_INT(features_atr(h, l, c, n, 1, o), 0);
    CHECK_EQ_INT(features_natr(h, l, c, n, 1, o), 0);
    CHECK_EQ_INT(features_roc(c, n, 1, o), 0);
    CHECK_EQ_INT(features_plus_di(h, l, c, n, 1, o), 0);
    CHECK_EQ_INT(features_minus_di(h, l, c, n, 1, o), 0);
    CHECK_EQ_INT(features_macd(c, n, 12, 26, 1, o, o2, o3), 0);
    CHECK_EQ_INT(features_stoch(h, l, c, n, 1, 1, 1, o, o2), 0);
    CHECK_EQ_INT(features_stochrsi(c, n, 2, 1, 1, o, o2), 0);
    CHECK_EQ_INT(features_ret(c, n, 1, o), 0);
    CHECK_EQ_INT(features_logret(c, n, 1, o), 0);
    /* and never 0, negative or above 100000 */
    CHECK_EQ_INT(features_atr(h, l, c, n, 0, o), PD_EINVAL);
    CHECK_EQ_INT(features_roc(c, n, -3, o), PD_EINVAL);
    CHECK_EQ_INT(features_ret(c, n, 0, o), PD_EINVAL);
    CHECK_EQ_INT(features_macd(c, n, 12, 26, 0, o, o2, o3), PD_EINVAL);
    CHECK_EQ_INT(features_stoch(h, l, c, n, 0, 3, 3, o, o2), PD_EINVAL);
    CHECK_EQ_INT(features_stoch(h, l, c, n, 5, 0, 3, o, o2), PD_EINVAL);
    CHECK_EQ_INT(features_stoch(h, l, c, n, 5, 3, 0, o, o2), PD_EINVAL);
    CHECK_EQ_INT(features_stochrsi(c, n, 14, 0, 3, o, o2), PD_EINVAL);
    CHECK_EQ_INT(features_stochrsi(c, n, 14, 5, 0, o, o2), PD_EINVAL);
    CHECK_EQ_INT(features_sma(c, n, 100001, o), PD_EINVAL);
    CHECK_EQ_INT(features_sma(c, n, 100000, o), PD_ENODATA);
    CHECK_EQ_INT(features_adx(h, l, c, n, 100001, o), PD_EINVAL);
    /* non-finite multipliers */
    CHECK_EQ_INT(features_bbands(c, n, 20, NAN, o, o2, o3), PD_EINVAL);
    CHECK_EQ_INT(features_stddev(c, n, 20, INFINITY, o), PD_EINVAL);
    /* NULL arrays */
    CHECK_EQ_INT(features_sma(NULL, n, 5, o), PD_EINVAL);
    CHECK_EQ_INT(features_sma(c, n, 5, NULL), PD_EINVAL);
    CHECK_EQ_INT(features_macd(c, n, 12, 26, 9, o, NULL, o3), PD_EINVAL);
    CHECK_EQ_INT(features_bbands(c, n, 20, 2, o, o2, NULL), PD_EINVAL);
    CHECK_EQ_INT(features_stoch(h, l, c, n, 5, 3, 3, o, NULL), PD_EINVAL);
    CHECK_EQ_INT(features_stochrsi(c, n, 14, 5, 3, NULL, o2), PD_EINVAL);
    CHECK_EQ_INT(features_mfi(h, l, c, NULL, n, 14, o), PD_EINVAL);
    CHECK_EQ_INT(features_obv(c, NULL, n, o), PD_EINVAL);
    CHECK_EQ_INT(features_trange(h, NULL, c, n, o), PD_EINVAL);
}

/* ------------------------------------------------------------------------ */
/* Real candles                                                              */

static void check_real_series(const char *name, const features_candle *k, size_t n)
{
    double *col = malloc(4 * n * sizeof *col);
    double *o = malloc(3 * n * sizeof *o);
    if (!col || !o) {
        UNIT_FAIL_("out of memory");
        free(col);
        free(o);
        return;
    }
    double *h = col, *l = col + n, *c = col + 2 * n, *v = col + 3 * n;
    size_t zero_range = 0;
    for (size_t i = 0; i < n; i++) {
        h[i] = k[i].high;
        l[i] = k[i].low;
        c[i] = k[i].close;
        v[i] = k[i].volume;
        zero_range += h[i] == l[i];
    }
    printf("  %s: %zu candles, %zu zero-range\n", name, n, zero_range);
    for (size_t kk = 0; kk < NKERNELS; kk++) {
        int rc = kernels[kk].call(n, h, l, c, v, o, o + n, o + 2 * n);
        if (rc != 0) {
            UNIT_FAIL_("%s on %s: rc %d", kernels[kk].name, name, rc);
            continue;
        }
        size_t lb = kernels[kk].lookback, bad = 0;
        int nout = !strcmp(kernels[kk].name, "macd") || !strcmp(kernels[kk].name, "bbands") ? 3
                   : !strcmp(kernels[kk].name, "stoch") || !strcmp(kernels[kk].name, "stochrsi")
                       ? 2
                       : 1;
        for (int j = 0; j < nout; j++)
            for (size_t i = 0; i < n; i++) {
                double x = o[j * n + i];
                if (i < lb ? !isnan(x) : !isfinite(x))
                    bad++;
            }
        if (bad)
            UNIT_FAIL_("%s on %s: %zu values undefined after (or defined before) the lookback",
                       kernels[kk].name, name, bad);
    }
    /* bounded oscillators stay in their range on real data */
    CHECK_EQ_INT(features_rsi(c, n, 14, o), 0);
    CHECK_EQ_INT(features_willr(h, l, c, n, 14, o + n), 0);
    for (size_t i = 14; i < n; i++)
        if (!(o[i] >= 0 && o[i] <= 100) || !(o[n + i] >= -100 && o[n + i] <= 0)) {
            UNIT_FAIL_("rsi/willr out of range at %zu: %g %g", i, o[i], o[n + i]);
            break;
        }
    CHECK_EQ_INT(features_mfi(h, l, c, v, n, 14, o), 0);
    CHECK_EQ_INT(features_adx(h, l, c, n, 14, o + n), 0);
    for (size_t i = 27; i < n; i++)
        if (!(o[i] >= 0 && o[i] <= 100) || !(o[n + i] >= 0 && o[n + i] <= 100)) {
            UNIT_FAIL_("mfi/adx out of range at %zu: %g %g", i, o[i], o[n + i]);
            break;
        }
    CHECK_EQ_INT(features_bbands(c, n, 20, 2, o, o + n, o + 2 * n), 0);
    for (size_t i = 19; i < n; i++)
        if (!(o[2 * n + i] <= o[n + i] && o[n + i] <= o[i])) {
            UNIT_FAIL_("bands out of order at %zu", i);
            break;
        }
    CHECK_EQ_INT(features_stoch(h, l, c, n, 14, 3, 3, o, o + n), 0);
    for (size_t i = 17; i < n; i++)
        if (!(o[i] >= 0 && o[i] <= 100) || !(o[n + i] >= 0 && o[n + i] <= 100)) {
            UNIT_FAIL_("stoch out of range at %zu: %g %g", i, o[i], o[n + i]);
            break;
        }
    free(col);
    free(o);
}

TEST(real_candles_every_kernel)
{
    UNIT_NEED_ENV("PREDICTD_SHARED_DATA");
    const char *dir = getenv("PREDICTD_SHARED_DATA");
    for (size_t f = 0; f < SHARED_CANDLE_FILES; f++) {
        features_candle *k;
        size_t n;
        if (shared_candles_load(dir, shared_candle_files[f], &k, &n) != 0) {
            UNIT_FAIL_("cannot load %s", shared_candle_files[f]);
            continue;
        }
        check_real_series(shared_candle_files[f], k, n);
        free(k);
    }
}

int main(void)
{
    RUN(golden_talib);
    RUN(golden_covers_every_kernel);
    RUN(hand_checked_small_cases);
    RUN(hand_checked_ranges);
    RUN(macd_fast_slow_swapped_like_talib);
    RUN(macd_signal_period_one);
    RUN(flat_window_neutral_values);
    RUN(lookback_and_one_too_few);
    RUN(bad_inputs_rejected);
    RUN(period_rules_like_talib);
    RUN(missing_arrays_rejected);
    RUN(cci_last_price_at_the_mean);
    RUN(real_candles_every_kernel);
    return unit_report();
}
