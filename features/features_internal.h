/*
 * features_internal.h: what indicators.c shares with catalogue.c and nothing
 * else includes. These are the single implementations of each indicator's
 * arithmetic: the public kernels (features_rsi(), ...) and the catalogue's
 * features_compute() both call them, so a feature equals, bit for bit, the
 * value the public kernel gives at the last input.
 *
 * Conventions: no argument checking here (callers validate periods, lengths
 * and inputs first); `n` is the number of inputs and must exceed the
 * function's lookback; an `out` array, where one is taken, may be NULL, and
 * when given receives values only at indices >= the lookback (the caller
 * fills the NaN prefix). Names carry a double underscore: exported from the
 * library for the module's own files, not part of the public contract.
 */
#ifndef PREDICTD_FEATURES_INTERNAL_H
#define PREDICTD_FEATURES_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

/* Largest period the kernels accept (TA-Lib accepts 100000; catalogue specs
 * are limited further, to 1000). */
#define FEATURES_MAX_PERIOD 100000

/* True when every x[i] is finite and >= 0. */
bool features__nonneg_finite(const double *x, size_t n);

/* ---- recursive kernels: one pass over all n inputs; return the last value */
double features__ema_run(const double *in, size_t n, int period, double *out);
double features__rsi_run(const double *in, size_t n, int period, double *out);
/* Returns the three values at the last input in last[0..2] (macd, signal,
 * hist). fast < slow (the public kernel swaps them as TA-Lib does). */
void features__macd_run(const double *in, size_t n, int fast, int slow, int signal, double *macd,
                        double *sig, double *hist, double last[3]);
/* normalize: NATR (ATR / close * 100) instead of ATR. */
double features__atr_run(const double *high, const double *low, const double *close, size_t n,
                         int period, bool normalize, double *out);
/* +DI and -DI at the last input in last[0], last[1]; plus and minus may
 * each be NULL. */
void features__di_run(const double *high, const double *low, const double *close, size_t n,
                      int period, double *plus, double *minus, double last[2]);
double features__adx_run(const double *high, const double *low, const double *close, size_t n,
                         int period, double *out);

/* ---- window kernels: the value at input i from in[i-period+1 .. i] (or the
 * inputs the function's lookback names); i >= lookback */
double features__wma_at(const double *in, size_t i, int period);
/* Population standard deviation of in[i-period+1 .. i] and its mean; exactly
 * 0 for a window of identical values. */
void features__stddev_at(const double *in, size_t i, int period, double *mean, double *sd);
/* Bollinger bands at i: out3 = upper, middle, lower. */
void features__bbands_at(const double *in, size_t i, int period, double nbdev, double out3[3]);
double features__zscore_at(const double *in, size_t i, int period);
double features__roc_at(const double *in, size_t i, int period);
double features__ret_at(const double *in, size_t i, int period);
double features__logret_at(const double *in, size_t i, int period);
double features__volatility_at(const double *in, size_t i, int period);
double features__volume_ratio_at(const double *volume, size_t i, int period);
double features__trange_at(const double *high, const double *low, const double *close, size_t i);
double features__cci_at(const double *high, const double *low, const double *close, size_t i,
                        int period);
double features__willr_at(const double *high, const double *low, const double *close, size_t i,
                          int period);
/* Fast %K of TA-Lib's STOCH/STOCHF: close[i] within [lowest low, highest
 * high] of the last fastk inputs, in percent; 50 for a zero range. */
double features__fastk_at(const double *high, const double *low, const double *close, size_t i,
                          int fastk);
double features__mfi_at(const double *high, const double *low, const double *close,
                        const double *volume, size_t i, int period);
/* Net signed volume over the last period candles (OBV[i] - OBV[i-period])
 * divided by their total volume, in [-1, 1]; 0 when no volume traded. */
double features__obv_slope_at(const double *close, const double *volume, size_t i, int period);

/* Mean of a[i-period+1 .. i], summed oldest first (TA-Lib's SMA order). */
double features__mean_at(const double *a, size_t i, int period);

/*
 * Stochastics at the last input only, in the catalogue's shape. tmp needs
 * slowk + 2*slowd - 1 doubles (stoch) or n + fastd doubles (stochrsi).
 * k_d receives %K and %D.
 */
void features__stoch_last(const double *high, const double *low, const double *close, size_t n,
                          int fastk, int slowk, int slowd, double *tmp, double k_d[2]);
void features__stochrsi_last(const double *in, size_t n, int period, int fastk, int fastd,
                             double *tmp, double k_d[2]);


#endif
