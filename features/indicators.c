/*
 * indicators: the technical-indicator kernels of features.h, pure functions
 * over arrays that reproduce TA-Lib's default (non-MetaStock, no unstable
 * period) results, checked against TA-Lib itself in tests/golden/.
 *
 * What each kernel computes (lookback L = first defined output index):
 *   SMA, WMA        L = n-1. WMA weights 1..n, newest heaviest.
 *   EMA             L = n-1, k = 2/(n+1), seeded with the SMA of the first n
 *                   inputs.
 *   RSI             L = n. Wilder: average gain and loss seeded with the
 *                   simple means of the first n changes, then
 *                   avg = (avg*(n-1) + x)/n; RSI = 100*gain/(gain+loss).
 *   MACD            L = (slow-1)+(signal-1). Slow EMA seeded on inputs
 *                   0..slow-1; the fast EMA's seed window ENDS where the
 *                   slow one's does (inputs slow-fast..slow-1), so both first
 *                   exist at slow-1, not the fast EMA a standalone EMA would
 *                   give. Signal = EMA(signal) of the MACD line seeded with
 *                   its SMA; hist = macd - signal. fast > slow are swapped.
 *   TRANGE          L = 1: max(high, prev close) - min(low, prev close).
 *   ATR             L = n: mean of TR[1..n], then Wilder smoothing.
 *   NATR            ATR / close * 100.
 *   BBANDS          L = n-1: SMA -+ nbdev * population stddev.
 *   STDDEV          L = n-1: population stddev * nbdev.
 *   ROC             L = n: (x/x[-n] - 1) * 100.
 *   +DI, -DI        L = n: Wilder sums of +DM/-DM and TR (n-1 raw values,
 *                   then x - x/n + new), DI = 100 * DM / TR.
 *   ADX             L = 2n-1: first ADX = mean of the n DX values from index
 *                   n on, then Wilder smoothing.
 *   STOCH           L = (fastk-1)+(slowk-1)+(slowd-1): fast %K over fastk
 *                   candles, slow %K = SMA(slowk) of it, %D = SMA(slowd) of
 *                   slow %K. Both outputs start at L.
 *   STOCHRSI        L = period+(fastk-1)+(fastd-1): STOCHF over RSI(period);
 *                   outputs fast %K and fast %D (SMA).
 *   CCI             L = n-1: (tp - SMA(tp)) / (0.015 * mean deviation),
 *                   tp = (h+l+c)/3.
 *   WILLR           L = n-1: -100 * (highest high - close) / range.
 *   MFI             L = n: 100 * positive / (positive + negative) money flow
 *                   (tp * volume; an unchanged tp counts for neither).
 *   OBV             L = 0: out[0] = volume[0], then +/- volume by the sign of
 *                   the close's change.
 * Not in TA-Lib (composed the way tests/golden/gen_talib.mjs composes them):
 *   ret x/x[-n] - 1 (L = n), logret ln(x/x[-n]) (L = n), volatility:
 *   population stddev of the last n one-candle log returns (L = n), zscore
 *   (x - SMA)/stddev (L = n-1), volume_ratio volume/SMA(volume) (L = n-1).
 *
 * Where predictd deliberately differs from TA-Lib (each is tested):
 *   - 0/0 gets a neutral value instead of TA-Lib's 0: RSI 50 when the window
 *     has neither gains nor losses (a flat market is neither overbought nor
 *     oversold; TA-Lib says 0, "maximally oversold"); STOCH/STOCHRSI %K 50
 *     and WILLR -50 on a zero-range window (the close sits at the middle of
 *     a zero-width range); MFI 50 when no money flowed (TA-Lib says 0
 *     whenever the flow sum is below 1.0, a threshold in price*volume units
 *     that turns every MFI of a coin priced 0.0016 into 0). zscore is 0 and
 *     volume_ratio 1 when their denominators are 0.
 *   - TA-Lib treats |x| < 1e-8 (1e-14 in newer releases) as zero in RSI, DI,
 *     ADX, NATR and STDDEV. That absolute tolerance depends on the price
 *     scale; predictd tests exact zero instead and makes window statistics
 *     exactly 0 on a flat window by computing them on values shifted by the
 *     window's first element (two-pass), where TA-Lib's E[x^2]-E[x]^2 can
 *     leave rounding residue. Results agree to ~1e-12 elsewhere.
 *   - NATR with period 1: TA-Lib returns the raw TRANGE (not divided by the
 *     close); predictd returns TRANGE/close*100 like every other period.
 *   - +DI/-DI with period 1: TA-Lib returns DM/TR as a fraction; predictd
 *     returns 100*DM/TR like every other period.
 *   - MACD with signal period 1: TA-Lib's lookback rejects an EMA of period
 *     1, so its MACD outputs start one index early and are misaligned;
 *     predictd keeps the definition (signal = MACD line, hist 0).
 *   - %K and WILLR are computed as 100*(c-ll)/(hh-ll) and -100*(hh-c)/(hh-ll)
 *     rather than TA-Lib's (c-ll)/((hh-ll)/100), so they never leave 0..100
 *     (-100..0) by a rounding.
 *   - Window sums (SMA, CCI, MFI, ...) are recomputed for each output instead
 *     of TA-Lib's running sums, so a value depends only on its own window
 *     (no drift), at O(n*period) cost; outputs differ from TA-Lib's only in
 *     the last bits.
 *   - ROC and NATR keep TA-Lib's 0 for a zero denominator; ret, logret and
 *     volatility have no such value and refuse zero inputs (PD_EINVAL).
 *
 * Arguments: NULL arrays, a period out of TA-Lib's range (most 2..100000;
 * 1.. for ATR, NATR, ROC, +DI/-DI, the MACD signal and stochastic smoothing;
 * 2.. for predictd's own kernels but ret/logret 1..) or a NaN, infinite or
 * negative input give PD_EINVAL; n <= L gives PD_ENODATA. Nothing is written
 * on failure. Output arrays must not overlap the inputs; every output array
 * of a multi-output kernel is required.
 *
 * Threading: no state; every function is thread-safe.
 */
#include "features/features.h"
#include "features/features_internal.h"
#include "util/util.h"

#include <math.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Argument helpers                                                          */

bool features__nonneg_finite(const double *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]) || x[i] < 0)
            return false;
    return true;
}

static bool positive_finite(const double *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]) || x[i] <= 0)
            return false;
    return true;
}

static bool period_ok(int p, int min)
{
    return p >= min && p <= FEATURES_MAX_PERIOD;
}

/* Fills out[0 .. min(L, n)) with NaN. */
static void nan_prefix(double *out, size_t n, size_t lookback)
{
    size_t m = lookback < n ? lookback : n;
    for (size_t i = 0; i < m; i++)
        out[i] = NAN;
}

/*
 * The common checks of a one-input kernel: pointers, period, values, length.
 * Returns 0 when the kernel may run.
 */
static int check1(const double *in, size_t n, const double *out, int period, int min_period,
                  size_t lookback)
{
    if (!in || !out || !period_ok(period, min_period))
        return PD_EINVAL;
    if (!features__nonneg_finite(in, n))
        return PD_EINVAL;
    return n > lookback ? 0 : PD_ENODATA;
}

static int check_hlc(const double *high, const double *low, const double *close, size_t n,
                     const double *out, int period, int min_period, size_t lookback)
{
    if (!high || !low || !close || !out || !period_ok(period, min_period))
        return PD_EINVAL;
    if (!features__nonneg_finite(high, n) || !features__nonneg_finite(low, n) ||
        !features__nonneg_finite(close, n))
        return PD_EINVAL;
    return n > lookback ? 0 : PD_ENODATA;
}

/* ------------------------------------------------------------------------ */
/* Shared arithmetic                                                         */

double features__mean_at(const double *a, size_t i, int period)
{
    double sum = 0.0;
    for (size_t j = i + 1 - (size_t)period; j <= i; j++)
        sum += a[j];
    return sum / period;
}

double features__wma_at(const double *in, size_t i, int period)
{
    size_t first = i + 1 - (size_t)period;
    double sum = 0.0;
    for (int w = 1; w <= period; w++)
        sum += in[first + (size_t)w - 1] * w;
    int divider = (period * (period + 1)) >> 1;
    return sum / divider;
}

void features__stddev_at(const double *in, size_t i, int period, double *mean, double *sd)
{
    size_t first = i + 1 - (size_t)period;
    double x0 = in[first], sum = 0.0, sumd = 0.0;
    for (size_t j = first; j <= i; j++) {
        sum += in[j];
        sumd += in[j] - x0;
    }
    double md = sumd / period, var = 0.0;
    for (size_t j = first; j <= i; j++) {
        double d = (in[j] - x0) - md;
        var += d * d;
    }
    *mean = sum / period;
    *sd = sqrt(var / period);
}

void features__bbands_at(const double *in, size_t i, int period, double nbdev, double out3[3])
{
    double mean, sd;
    features__stddev_at(in, i, period, &mean, &sd);
    double w = sd * nbdev;
    out3[0] = mean + w;
    out3[1] = mean;
    out3[2] = mean - w;
}

double features__zscore_at(const double *in, size_t i, int period)
{
    size_t first = i + 1 - (size_t)period;
    double x0 = in[first], sumd = 0.0;
    for (size_t j = first; j <= i; j++)
        sumd += in[j] - x0;
    double md = sumd / period, var = 0.0;
    for (size_t j = first; j <= i; j++) {
        double d = (in[j] - x0) - md;
        var += d * d;
    }
    double sd = sqrt(var / period);
    /* A flat window has no spread: the last value is at its mean. */
    return sd == 0.0 ? 0.0 : ((in[i] - x0) - md) / sd;
}

double features__roc_at(const double *in, size_t i, int period)
{
    double prev = in[i - (size_t)period];
    return prev != 0.0 ? ((in[i] / prev) - 1.0) * 100.0 : 0.0; /* TA-Lib's 0 */
}

double features__ret_at(const double *in, size_t i, int period)
{
    return (in[i] / in[i - (size_t)period]) - 1.0;
}

double features__logret_at(const double *in, size_t i, int period)
{
    return log(in[i] / in[i - (size_t)period]);
}

double features__volatility_at(const double *in, size_t i, int period)
{
    /* One pass over the returns shifted by the first one: exact 0 for
     * constant returns, and no cancellation against the returns' level. */
    size_t first = i + 1 - (size_t)period;
    double r0 = log(in[first] / in[first - 1]), s = 0.0, s2 = 0.0;
    for (size_t j = first + 1; j <= i; j++) {
        double d = log(in[j] / in[j - 1]) - r0;
        s += d;
        s2 += d * d;
    }
    double m = s / period, var = s2 / period - m * m;
    return var > 0.0 ? sqrt(var) : 0.0;
}

double features__volume_ratio_at(const double *volume, size_t i, int period)
{
    double avg = features__mean_at(volume, i, period);
    /* No volume in the window: the last candle traded exactly the average. */
    return avg != 0.0 ? volume[i] / avg : 1.0;
}

/* TA-Lib's TRUE_RANGE with yesterday's close yc. */
static inline double true_range(double h, double l, double yc)
{
    double r = h - l, t = fabs(h - yc);
    if (t > r)
        r = t;
    t = fabs(l - yc);
    if (t > r)
        r = t;
    return r;
}

double features__trange_at(const double *high, const double *low, const double *close, size_t i)
{
    return true_range(high[i], low[i], close[i - 1]);
}

static void high_low(const double *high, const double *low, size_t i, int period, double *hh,
                     double *ll)
{
    size_t first = i + 1 - (size_t)period;
    double h = high[first], l = low[first];
    for (size_t j = first + 1; j <= i; j++) {
        if (high[j] > h)
            h = high[j];
        if (low[j] < l)
            l = low[j];
    }
    *hh = h;
    *ll = l;
}

double features__fastk_at(const double *high, const double *low, const double *close, size_t i,
                          int fastk)
{
    double hh, ll;
    high_low(high, low, i, fastk, &hh, &ll);
    if (hh - ll == 0.0)
        return 50.0; /* zero range: the middle (TA-Lib: 0) */
    return 100.0 * ((close[i] - ll) / (hh - ll));
}

double features__willr_at(const double *high, const double *low, const double *close, size_t i,
                          int period)
{
    double hh, ll;
    high_low(high, low, i, period, &hh, &ll);
    if (hh - ll == 0.0)
        return -50.0; /* zero range: the middle (TA-Lib: 0) */
    return -100.0 * ((hh - close[i]) / (hh - ll));
}

double features__cci_at(const double *high, const double *low, const double *close, size_t i,
                        int period)
{
    size_t first = i + 1 - (size_t)period;
    double tp0 = (high[first] + low[first] + close[first]) / 3.0, sumd = 0.0;
    for (size_t j = first; j <= i; j++)
        sumd += (high[j] + low[j] + close[j]) / 3.0 - tp0;
    double md = sumd / period, dev = 0.0;
    for (size_t j = first; j <= i; j++)
        dev += fabs(((high[j] + low[j] + close[j]) / 3.0 - tp0) - md);
    double num = ((high[i] + low[i] + close[i]) / 3.0 - tp0) - md;
    if (num == 0.0 || dev == 0.0)
        return 0.0; /* TA-Lib's value: the last price is at the mean */
    return num / (0.015 * (dev / period));
}

double features__mfi_at(const double *high, const double *low, const double *close,
                        const double *volume, size_t i, int period)
{
    size_t first = i + 1 - (size_t)period;
    double prev = (high[first - 1] + low[first - 1] + close[first - 1]) / 3.0;
    double pos = 0.0, neg = 0.0;
    for (size_t j = first; j <= i; j++) {
        double tp = (high[j] + low[j] + close[j]) / 3.0, d = tp - prev;
        prev = tp;
        double mf = tp * volume[j];
        if (d < 0.0)
            neg += mf;
        else if (d > 0.0)
            pos += mf;
    }
    double sum = pos + neg;
    return sum != 0.0 ? 100.0 * (pos / sum) : 50.0; /* no flow: neutral */
}

double features__obv_slope_at(const double *close, const double *volume, size_t i, int period)
{
    double net = 0.0, tot = 0.0;
    for (size_t j = i + 1 - (size_t)period; j <= i; j++) {
        if (close[j] > close[j - 1])
            net += volume[j];
        else if (close[j] < close[j - 1])
            net -= volume[j];
        tot += volume[j];
    }
    return tot != 0.0 ? net / tot : 0.0;
}

/* ------------------------------------------------------------------------ */
/* Recursive kernels                                                         */

double features__ema_run(const double *in, size_t n, int period, double *out)
{
    double k = 2.0 / ((double)(period + 1)), sum = 0.0;
    size_t p = (size_t)period;
    for (size_t i = 0; i < p; i++)
        sum += in[i];
    double prev = sum / period;
    if (out)
        out[p - 1] = prev;
    for (size_t i = p; i < n; i++) {
        prev = ((in[i] - prev) * k) + prev;
        if (out)
            out[i] = prev;
    }
    return prev;
}

static inline double rsi_value(double gain, double loss)
{
    double s = gain + loss;
    return s != 0.0 ? 100.0 * (gain / s) : 50.0; /* flat: neutral (TA-Lib: 0) */
}

double features__rsi_run(const double *in, size_t n, int period, double *out)
{
    size_t p = (size_t)period;
    double gain = 0.0, loss = 0.0, prev = in[0];
    for (size_t i = 1; i <= p; i++) {
        double d = in[i] - prev;
        prev = in[i];
        if (d < 0.0)
            loss -= d;
        else
            gain += d;
    }
    loss /= period;
    gain /= period;
    if (out)
        out[p] = rsi_value(gain, loss);
    for (size_t i = p + 1; i < n; i++) {
        double d = in[i] - prev;
        prev = in[i];
        /* Branch-free form of TA-Lib's "if (d < 0) loss -= d; else gain += d":
         * adding an exact 0 leaves the other sum bit-identical. */
        double up = d > 0.0 ? d : 0.0, down = d < 0.0 ? -d : 0.0;
        loss *= (double)(period - 1);
        gain *= (double)(period - 1);
        loss += down;
        gain += up;
        loss /= period;
        gain /= period;
        if (out) /* only the last value otherwise: no division per step */
            out[i] = rsi_value(gain, loss);
    }
    return rsi_value(gain, loss);
}

void features__macd_run(const double *in, size_t n, int fast, int slow, int signal, double *macd,
                        double *sig, double *hist, double last[3])
{
    double ks = 2.0 / ((double)(slow + 1)), kf = 2.0 / ((double)(fast + 1));
    double kg = 2.0 / ((double)(signal + 1));
    size_t s = (size_t)slow, f = (size_t)fast, g = (size_t)signal;
    double ss = 0.0, sf = 0.0;
    for (size_t i = 0; i < s; i++)
        ss += in[i];
    for (size_t i = s - f; i < s; i++)
        sf += in[i];
    double es = ss / slow, ef = sf / fast;
    size_t first = s - 1, lb = first + g - 1;
    double acc = 0.0, sg = 0.0, m = 0.0;
    for (size_t i = first; i < n; i++) {
        if (i > first) {
            es = ((in[i] - es) * ks) + es;
            ef = ((in[i] - ef) * kf) + ef;
        }
        m = ef - es;
        if (i < lb) {
            acc += m;
            continue;
        }
        if (i == lb) {
            acc += m;
            sg = acc / signal;
        } else {
            sg = ((m - sg) * kg) + sg;
        }
        if (macd) {
            macd[i] = m;
            sig[i] = sg;
            hist[i] = m - sg;
        }
    }
    last[0] = m;
    last[1] = sg;
    last[2] = m - sg;
}

/* ATR, or NATR when normalize. NATR of a zero close is TA-Lib's 0
 * (features_compute refuses such candles before they get here). */
static inline double atr_value(double atr, double close, bool normalize)
{
    return !normalize ? atr : close != 0.0 ? (atr / close) * 100.0 : 0.0;
}

double features__atr_run(const double *high, const double *low, const double *close, size_t n,
                         int period, bool normalize, double *out)
{
    size_t p = (size_t)period;
    double sum = 0.0;
    for (size_t i = 1; i <= p; i++)
        sum += true_range(high[i], low[i], close[i - 1]);
    double atr = sum / period;
    if (out)
        out[p] = atr_value(atr, close[p], normalize);
    for (size_t i = p + 1; i < n; i++) {
        atr *= (double)(period - 1);
        atr += true_range(high[i], low[i], close[i - 1]);
        atr /= period;
        if (out)
            out[i] = atr_value(atr, close[i], normalize);
    }
    return atr_value(atr, close[n - 1], normalize);
}

/*
 * The directional movement state of TA-Lib's DI and ADX: Wilder sums of +DM,
 * -DM and TR. dm_step() advances it by candle i.
 */
typedef struct dm_state {
    double ph, pl, pc; /* previous high, low, close */
    double pdm, mdm, tr;
} dm_state;

static inline void dm_raw(dm_state *st, const double *h, const double *l, const double *c, size_t i,
                          bool smooth, int period)
{
    double diffp = h[i] - st->ph, diffm = st->pl - l[i];
    st->ph = h[i];
    st->pl = l[i];
    if (smooth) {
        st->mdm -= st->mdm / period;
        st->pdm -= st->pdm / period;
    }
    if (diffm > 0 && diffp < diffm)
        st->mdm += diffm;
    else if (diffp > 0 && diffp > diffm)
        st->pdm += diffp;
    double tr = true_range(st->ph, st->pl, st->pc);
    st->tr = smooth ? st->tr - st->tr / period + tr : st->tr + tr;
    st->pc = c[i];
}

/* Starts the state at candle 0 and adds the period-1 raw candles. */
static size_t dm_start(dm_state *st, const double *h, const double *l, const double *c, int period)
{
    memset(st, 0, sizeof *st);
    st->ph = h[0];
    st->pl = l[0];
    st->pc = c[0];
    size_t i = 1;
    for (int k = 0; k < period - 1; k++, i++)
        dm_raw(st, h, l, c, i, false, period);
    return i; /* the next candle */
}

void features__di_run(const double *high, const double *low, const double *close, size_t n,
                      int period, double *plus, double *minus, double last[2])
{
    dm_state st;
    size_t i = dm_start(&st, high, low, close, period);
    for (; i < n; i++) {
        dm_raw(&st, high, low, close, i, true, period);
        /* No true range at all: no directional movement either (TA-Lib). */
        double p = st.tr != 0.0 ? 100.0 * (st.pdm / st.tr) : 0.0;
        double m = st.tr != 0.0 ? 100.0 * (st.mdm / st.tr) : 0.0;
        if (plus)
            plus[i] = p;
        if (minus)
            minus[i] = m;
        last[0] = p;
        last[1] = m;
    }
}

/* DX of the state, or false when it is undefined (TA-Lib then skips it). */
static inline bool dm_dx(const dm_state *st, double *dx)
{
    if (st->tr == 0.0)
        return false;
    double m = 100.0 * (st->mdm / st->tr), p = 100.0 * (st->pdm / st->tr), s = m + p;
    if (s == 0.0)
        return false;
    *dx = 100.0 * (fabs(m - p) / s);
    return true;
}

double features__adx_run(const double *high, const double *low, const double *close, size_t n,
                         int period, double *out)
{
    dm_state st;
    size_t i = dm_start(&st, high, low, close, period);
    double sum = 0.0, dx;
    for (int k = 0; k < period; k++, i++) {
        dm_raw(&st, high, low, close, i, true, period);
        if (dm_dx(&st, &dx))
            sum += dx;
    }
    double adx = sum / period;
    if (out)
        out[i - 1] = adx;
    for (; i < n; i++) {
        dm_raw(&st, high, low, close, i, true, period);
        if (dm_dx(&st, &dx))
            adx = (adx * (period - 1) + dx) / period;
        if (out)
            out[i] = adx;
    }
    return adx;
}

void features__stoch_last(const double *high, const double *low, const double *close, size_t n,
                          int fastk, int slowk, int slowd, double *tmp, double k_d[2])
{
    size_t m = (size_t)(slowk + slowd - 1), base = n - m;
    double *fk = tmp, *sk = tmp + m;
    for (size_t j = 0; j < m; j++)
        fk[j] = features__fastk_at(high, low, close, base + j, fastk);
    for (size_t j = 0; j < (size_t)slowd; j++)
        sk[j] = features__mean_at(fk, (size_t)slowk - 1 + j, slowk);
    k_d[0] = sk[slowd - 1];
    k_d[1] = features__mean_at(sk, (size_t)slowd - 1, slowd);
}

void features__stochrsi_last(const double *in, size_t n, int period, int fastk, int fastd,
                             double *tmp, double k_d[2])
{
    double *rsi = tmp, *fk = tmp + n;
    features__rsi_run(in, n, period, rsi);
    size_t base = n - (size_t)fastd;
    for (size_t j = 0; j < (size_t)fastd; j++)
        fk[j] = features__fastk_at(rsi, rsi, rsi, base + j, fastk);
    k_d[0] = fk[fastd - 1];
    k_d[1] = features__mean_at(fk, (size_t)fastd - 1, fastd);
}

/* ------------------------------------------------------------------------ */
/* Public kernels                                                            */

int features_sma(const double *in, size_t n, int period, double *out)
{
    int rc = check1(in, n, out, period, 2, (size_t)period - 1);
    if (rc)
        return rc;
    nan_prefix(out, n, (size_t)period - 1);
    for (size_t i = (size_t)period - 1; i < n; i++)
        out[i] = features__mean_at(in, i, period);
    return 0;
}

int features_ema(const double *in, size_t n, int period, double *out)
{
    int rc = check1(in, n, out, period, 2, (size_t)period - 1);
    if (rc)
        return rc;
    nan_prefix(out, n, (size_t)period - 1);
    features__ema_run(in, n, period, out);
    return 0;
}

int features_wma(const double *in, size_t n, int period, double *out)
{
    int rc = check1(in, n, out, period, 2, (size_t)period - 1);
    if (rc)
        return rc;
    nan_prefix(out, n, (size_t)period - 1);
    for (size_t i = (size_t)period - 1; i < n; i++)
        out[i] = features__wma_at(in, i, period);
    return 0;
}

int features_rsi(const double *in, size_t n, int period, double *out)
{
    int rc = check1(in, n, out, period, 2, (size_t)period);
    if (rc)
        return rc;
    nan_prefix(out, n, (size_t)period);
    features__rsi_run(in, n, period, out);
    return 0;
}

int features_macd(const double *in, size_t n, int fast, int slow, int signal, double *macd,
                  double *macd_signal, double *macd_hist)
{
    if (!macd || !macd_signal || !macd_hist || !period_ok(fast, 2) || !period_ok(slow, 2) ||
        !period_ok(signal, 1))
        return PD_EINVAL;
    if (slow < fast) { /* TA-Lib swaps them */
        int t = slow;
        slow = fast;
        fast = t;
    }
    size_t lb = (size_t)(slow - 1) + (size_t)(signal - 1);
    int rc = check1(in, n, macd, 2, 2, lb);
    if (rc)
        return rc;
    nan_prefix(macd, n, lb);
    nan_prefix(macd_signal, n, lb);
    nan_prefix(macd_hist, n, lb);
    double last[3];
    features__macd_run(in, n, fast, slow, signal, macd, macd_signal, macd_hist, last);
    return 0;
}

int features_trange(const double *high, const double *low, const double *close, size_t n,
                    double *out)
{
    int rc = check_hlc(high, low, close, n, out, 1, 1, 1);
    if (rc)
        return rc;
    nan_prefix(out, n, 1);
    for (size_t i = 1; i < n; i++)
        out[i] = features__trange_at(high, low, close, i);
    return 0;
}

int features_atr(const double *high, const double *low, const double *close, size_t n, int period,
                 double *out)
{
    int rc = check_hlc(high, low, close, n, out, period, 1, (size_t)period);
    if (rc)
        return rc;
    nan_prefix(out, n, (size_t)period);
    features__atr_run(high, low, close, n, period, false, out);
    return 0;
}

int features_natr(const double *high, const double *low, const double *close, size_t n, int period,
                  double *out)
{
    int rc = check_hlc(high, low, close, n, out, period, 1, (size_t)period);
    if (rc)
        return rc;
    nan_prefix(out, n, (size_t)period);
    features__atr_run(high, low, close, n, period, true, out);
    return 0;
}

int features_bbands(const double *in, size_t n, int period, double nbdev, double *upper,
                    double *middle, double *lower)
{
    if (!upper || !middle || !lower || !isfinite(nbdev))
        return PD_EINVAL;
    int rc = check1(in, n, upper, period, 2, (size_t)period - 1);
    if (rc)
        return rc;
    nan_prefix(upper, n, (size_t)period - 1);
    nan_prefix(middle, n, (size_t)period - 1);
    nan_prefix(lower, n, (size_t)period - 1);
    for (size_t i = (size_t)period - 1; i < n; i++) {
        double b[3];
        features__bbands_at(in, i, period, nbdev, b);
        upper[i] = b[0];
        middle[i] = b[1];
        lower[i] = b[2];
    }
    return 0;
}

int features_stddev(const double *in, size_t n, int period, double nbdev, double *out)
{
    if (!isfinite(nbdev))
        return PD_EINVAL;
    int rc = check1(in, n, out, period, 2, (size_t)period - 1);
    if (rc)
        return rc;
    nan_prefix(out, n, (size_t)period - 1);
    for (size_t i = (size_t)period - 1; i < n; i++) {
        double mean, sd;
        features__stddev_at(in, i, period, &mean, &sd);
        out[i] = sd * nbdev;
    }
    return 0;
}

int features_roc(const double *in, size_t n, int period, double *out)
{
    int rc = check1(in, n, out, period, 1, (size_t)period);
    if (rc)
        return rc;
    nan_prefix(out, n, (size_t)period);
    for (size_t i = (size_t)period; i < n; i++)
        out[i] = features__roc_at(in, i, period);
    return 0;
}

/* ret, logret and volatility divide by inputs: they must be > 0. */
static int check_positive(const double *in, size_t n, const double *out, int period, int min_period,
                          size_t lookback)
{
    int rc = check1(in, n, out, period, min_period, lookback);
    if (rc == PD_EINVAL)
        return rc;
    if (!positive_finite(in, n))
        return PD_EINVAL;
    return rc;
}

int features_ret(const double *in, size_t n, int period, double *out)
{
    int rc = check_positive(in, n, out, period, 1, (size_t)period);
    if (rc)
        return rc;
    nan_prefix(out, n, (size_t)period);
    for (size_t i = (size_t)period; i < n; i++)
        out[i] = features__ret_at(in, i, period);
    return 0;
}

int features_logret(const double *in, size_t n, int period, double *out)
{
    int rc = check_positive(in, n, out, period, 1, (size_t)period);
    if (rc)
        return rc;
    nan_prefix(out, n, (size_t)period);
    for (size_t i = (size_t)period; i < n; i++)
        out[i] = features__logret_at(in, i, period);
    return 0;
}

int features_volatility(const double *in, size_t n, int period, double *out)
{
    int rc = check_positive(in, n, out, period, 2, (size_t)period);
    if (rc)
        return rc;
    nan_prefix(out, n, (size_t)period);
    for (size_t i = (size_t)period; i < n; i++)
        out[i] = features__volatility_at(in, i, period);
    return 0;
}

int features_zscore(const double *in, size_t n, int period, double *out)
{
    int rc = check1(in, n, out, period, 2, (size_t)period - 1);
    if (rc)
        return rc;
    nan_prefix(out, n, (size_t)period - 1);
    for (size_t i = (size_t)period - 1; i < n; i++)
        out[i] = features__zscore_at(in, i, period);
    return 0;
}

int features_adx(const double *high, const double *low, const double *close, size_t n, int period,
                 double *out)
{
    size_t lb = 2 * (size_t)period - 1;
    int rc = check_hlc(high, low, close, n, out, period, 2, period >= 2 ? lb : 0);
    if (rc)
        return rc;
    nan_prefix(out, n, lb);
    features__adx_run(high, low, close, n, period, out);
    return 0;
}

static int di(const double *high, const double *low, const double *close, size_t n, int period,
              double *out, bool plus)
{
    int rc = check_hlc(high, low, close, n, out, period, 1, (size_t)period);
    if (rc)
        return rc;
    nan_prefix(out, n, (size_t)period);
    double last[2];
    features__di_run(high, low, close, n, period, plus ? out : NULL, plus ? NULL : out, last);
    return 0;
}

int features_plus_di(const double *high, const double *low, const double *close, size_t n,
                     int period, double *out)
{
    return di(high, low, close, n, period, out, true);
}

int features_minus_di(const double *high, const double *low, const double *close, size_t n,
                      int period, double *out)
{
    return di(high, low, close, n, period, out, false);
}

int features_stoch(const double *high, const double *low, const double *close, size_t n, int fastk,
                   int slowk, int slowd, double *k, double *d)
{
    if (!d || !period_ok(fastk, 1) || !period_ok(slowk, 1) || !period_ok(slowd, 1))
        return PD_EINVAL;
    size_t f0 = (size_t)fastk - 1, k0 = f0 + (size_t)slowk - 1, lb = k0 + (size_t)slowd - 1;
    int rc = check_hlc(high, low, close, n, k, fastk, 1, lb);
    if (rc)
        return rc;
    /* d holds fast %K first; k is computed from it; then d becomes %D. */
    for (size_t i = f0; i < n; i++)
        d[i] = features__fastk_at(high, low, close, i, fastk);
    for (size_t i = k0; i < n; i++)
        k[i] = features__mean_at(d, i, slowk);
    for (size_t i = lb; i < n; i++)
        d[i] = features__mean_at(k, i, slowd);
    nan_prefix(k, n, lb);
    nan_prefix(d, n, lb);
    return 0;
}

int features_stochrsi(const double *in, size_t n, int period, int fastk, int fastd, double *k,
                      double *d)
{
    if (!d || !period_ok(fastk, 1) || !period_ok(fastd, 1))
        return PD_EINVAL;
    size_t k0 = (size_t)period + (size_t)fastk - 1, lb = k0 + (size_t)fastd - 1;
    int rc = check1(in, n, k, period, 2, period >= 2 ? lb : 0);
    if (rc)
        return rc;
    /* d holds the RSI first; k is computed from it; then d becomes %D. */
    features__rsi_run(in, n, period, d);
    for (size_t i = k0; i < n; i++)
        k[i] = features__fastk_at(d, d, d, i, fastk);
    for (size_t i = lb; i < n; i++)
        d[i] = features__mean_at(k, i, fastd);
    nan_prefix(k, n, lb);
    nan_prefix(d, n, lb);
    return 0;
}

int features_cci(const double *high, const double *low, const double *close, size_t n, int period,
                 double *out)
{
    int rc = check_hlc(high, low, close, n, out, period, 2, (size_t)period - 1);
    if (rc)
        return rc;
    nan_prefix(out, n, (size_t)period - 1);
    for (size_t i = (size_t)period - 1; i < n; i++)
        out[i] = features__cci_at(high, low, close, i, period);
    return 0;
}

int features_willr(const double *high, const double *low, const double *close, size_t n, int period,
                   double *out)
{
    int rc = check_hlc(high, low, close, n, out, period, 2, (size_t)period - 1);
    if (rc)
        return rc;
    nan_prefix(out, n, (size_t)period - 1);
    for (size_t i = (size_t)period - 1; i < n; i++)
        out[i] = features__willr_at(high, low, close, i, period);
    return 0;
}

int features_mfi(const double *high, const double *low, const double *close, const double *volume,
                 size_t n, int period, double *out)
{
    if (!volume)
        return PD_EINVAL;
    int rc = check_hlc(high, low, close, n, out, period, 2, (size_t)period);
    if (rc == PD_EINVAL || !features__nonneg_finite(volume, n))
        return PD_EINVAL;
    if (rc)
        return rc;
    nan_prefix(out, n, (size_t)period);
    for (size_t i = (size_t)period; i < n; i++)
        out[i] = features__mfi_at(high, low, close, volume, i, period);
    return 0;
}

int features_obv(const double *close, const double *volume, size_t n, double *out)
{
    if (!volume)
        return PD_EINVAL;
    int rc = check1(close, n, out, 2, 2, 0);
    if (rc == PD_EINVAL || !features__nonneg_finite(volume, n))
        return PD_EINVAL;
    if (rc)
        return rc;
    double obv = volume[0];
    out[0] = obv;
    for (size_t i = 1; i < n; i++) {
        if (close[i] > close[i - 1])
            obv += volume[i];
        else if (close[i] < close[i - 1])
            obv -= volume[i];
        out[i] = obv;
    }
    return 0;
}

int features_volume_ratio(const double *volume, size_t n, int period, double *out)
{
    int rc = check1(volume, n, out, period, 2, (size_t)period - 1);
    if (rc)
        return rc;
    nan_prefix(out, n, (size_t)period - 1);
    for (size_t i = (size_t)period - 1; i < n; i++)
        out[i] = features__volume_ratio_at(volume, i, period);
    return 0;
}
