/*
 * features: candles in, feature vectors out. Pure computation: no I/O, no
 * locks, nothing to start or stop.
 *
 *   indicators   kernels over arrays, TA-Lib's default conventions
 *   catalogue    feature specs by name ("rsi:14"), resolved once per model,
 *                and the feature vector of a window of candles
 *
 * The candles themselves come from store/ (PostgreSQL, Redis) or feed/
 * (CSV files, synthetic series); this module only defines their type.
 *
 * Threading: every function is thread-safe. A features_set is immutable once
 * built and may be shared. features_compute keeps per-thread scratch.
 */
#ifndef PREDICTD_FEATURES_H
#define PREDICTD_FEATURES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One OHLCV candle; t is the open time in Unix seconds (UTC). */
typedef struct features_candle {
    int64_t t;
    double open, high, low, close, volume;
} features_candle;

/* ===========================================================================
 * Indicators. Each kernel reads n inputs and writes n outputs aligned with
 * them: out[i] is the value at input i, NaN where i < the kernel's lookback
 * (the number of leading inputs TA-Lib consumes before its first output).
 * They return 0, PD_EINVAL for a bad period or a NaN, infinite or negative
 * price/volume input, or PD_ENODATA when n <= lookback (no output at all).
 * Values follow TA-Lib's default (non-MetaStock) conventions; see
 * features/indicators.c for each one and where predictd deliberately differs.
 */
int features_sma(const double *in, size_t n, int period, double *out);
int features_ema(const double *in, size_t n, int period, double *out);
int features_wma(const double *in, size_t n, int period, double *out);
int features_rsi(const double *in, size_t n, int period, double *out);
int features_macd(const double *in, size_t n, int fast, int slow, int signal, double *macd,
                  double *macd_signal, double *macd_hist);
int features_trange(const double *high, const double *low, const double *close, size_t n,
                    double *out);
int features_atr(const double *high, const double *low, const double *close, size_t n, int period,
                 double *out);
int features_natr(const double *high, const double *low, const double *close, size_t n,
                  int period, double *out);
int features_bbands(const double *in, size_t n, int period, double nbdev, double *upper,
                    double *middle, double *lower);
int features_stddev(const double *in, size_t n, int period, double nbdev, double *out);
int features_roc(const double *in, size_t n, int period, double *out);
int features_ret(const double *in, size_t n, int period, double *out);    /* x/x[-p] - 1 */
int features_logret(const double *in, size_t n, int period, double *out); /* ln(x/x[-p]) */
/* Population standard deviation of the last `period` one-candle log returns. */
int features_volatility(const double *in, size_t n, int period, double *out);
int features_zscore(const double *in, size_t n, int period, double *out);
int features_adx(const double *high, const double *low, const double *close, size_t n, int period,
                 double *out);
int features_plus_di(const double *high, const double *low, const double *close, size_t n,
                     int period, double *out);
int features_minus_di(const double *high, const double *low, const double *close, size_t n,
                      int period, double *out);
int features_stoch(const double *high, const double *low, const double *close, size_t n,
                   int fastk, int slowk, int slowd, double *k, double *d);
int features_stochrsi(const double *in, size_t n, int period, int fastk, int fastd, double *k,
                      double *d);
int features_cci(const double *high, const double *low, const double *close, size_t n, int period,
                 double *out);
int features_willr(const double *high, const double *low, const double *close, size_t n,
                   int period, double *out);
int features_mfi(const double *high, const double *low, const double *close, const double *volume,
                 size_t n, int period, double *out);
int features_obv(const double *close, const double *volume, size_t n, double *out);
int features_volume_ratio(const double *volume, size_t n, int period, double *out);

/* ===========================================================================
 * Catalogue: feature specs by name and parameters ("rsi:14",
 * "bb_pctb:20:2"). A features_set is a resolved, ordered list of specs.
 */
typedef struct features_set features_set;

/* The default 14 specs of DESIGN.md, in order; static storage. */
const char *const *features_default_specs(size_t *n);

/*
 * Resolves specs. On an unknown name or a bad parameter returns PD_EINVAL
 * and writes the reason ("unknown feature 'foo:3'") into why. The caller
 * owns *out (features_set_free). The specs are copied.
 */
int features_set_new(const char *const *specs, size_t n, features_set **out, char *why,
                     size_t whylen);
void features_set_free(features_set *s); /* NULL is a no-op */
size_t features_set_count(const features_set *s);
const char *features_set_name(const features_set *s, size_t i);
/* The fewest candles a window needs for every feature to be defined. */
size_t features_set_min_window(const features_set *s);

/*
 * Computes one feature vector: the features of the last of the n candles,
 * using only those n candles (the window), so training and serving that
 * pass the same window get bit-identical vectors. out holds
 * features_set_count() values. Returns 0, PD_ENODATA when n is below
 * features_set_min_window(), PD_EINVAL when a candle is invalid (NaN,
 * negative, high < low), or PD_EINVAL when a feature comes out non-finite
 * (a zero-range window where a ratio has no value; the reason is logged).
 * Thread-safe; uses thread-local scratch, no allocation after the first call
 * with a given window size.
 */
int features_compute(const features_set *s, const features_candle *window, size_t n, double *out);

/* ATR(period) at the last of n candles (Wilder, TA-Lib), for signal levels. */
int features_atr_last(const features_candle *c, size_t n, int period, double *out);

#endif
