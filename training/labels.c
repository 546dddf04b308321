/*
 * labels: triple-barrier labels built with the serving SignalPolicy, and the
 * candles-to-target medians that become the policy's ETA fields.
 *
 * The barriers are exactly the levels inference_signal_make() returns for a
 * call at the sample candle (entry = close, risk = sl_atr * ATR), so a label
 * says "the trade the API would have shown reached TP1 before its stop
 * within the horizon". A candle that touches both a side's stop and its
 * target counts as the stop: inside one candle the order is unknown and the
 * pessimistic reading is the honest one.
 *
 * Deliberately not here: where the ATR comes from (the dataset computes it
 * over the feature window) and which samples exist (dataset). Pure and
 * thread-safe; nothing allocates but the median helper's scratch.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "training/internal.h"

void training_policy_default(inference_policy *p)
{
    memset(p, 0, sizeof *p);
    p->sl_atr = 1.5;
    p->tp_r[0] = 1;
    p->tp_r[1] = 2;
    p->tp_r[2] = 3;
    p->horizon = 16;
    p->min_confidence = 0.45;
    p->atr_period = 14;
    p->max_age_s = 30 * 86400;
    p->eta_candles[0] = NAN;
    p->eta_candles[1] = NAN;
}

int training__policy_check(const inference_policy *p, char *why, size_t whylen)
{
    const char *bad = NULL;
    if (!(isfinite(p->sl_atr) && p->sl_atr > 0))
        bad = "sl_atr must be a positive number";
    else if (!(isfinite(p->tp_r[0]) && p->tp_r[0] > 0))
        bad = "tp_r must be positive numbers";
    else if (!(isfinite(p->tp_r[1]) && p->tp_r[1] >= p->tp_r[0]) ||
             !(isfinite(p->tp_r[2]) && p->tp_r[2] >= p->tp_r[1]))
        bad = "tp_r must be three ascending positive numbers";
    else if (p->horizon < 1 || p->horizon > 10000)
        bad = "horizon must be 1..10000 candles";
    else if (!(p->min_confidence >= 0 && p->min_confidence <= 1))
        bad = "min_confidence must be in [0, 1]";
    else if (p->atr_period < 1 || p->atr_period > 1000)
        bad = "atr_period must be 1..1000";
    else if (p->max_age_s < 0)
        bad = "max_age_s must be >= 0";
    if (bad) {
        if (why && whylen)
            snprintf(why, whylen, "%s", bad);
        return PD_EINVAL;
    }
    return 0;
}

/* One side's walk: hit[k] = first candle offset (1..horizon) touching
 * target k before the stop, 0 when never. dir +1 for LONG, -1 for SHORT. */
static void walk_side(const features_candle *c, size_t i, uint32_t horizon, int dir, double stop,
                      const double target[INFERENCE_NTP], uint16_t hit[INFERENCE_NTP])
{
    memset(hit, 0, INFERENCE_NTP * sizeof hit[0]);
    for (uint32_t j = 1; j <= horizon; j++) {
        const features_candle *k = &c[i + j];
        bool stopped = dir > 0 ? k->low <= stop : k->high >= stop;
        if (stopped)
            return; /* a candle touching stop and target counts as the stop */
        for (int t = 0; t < INFERENCE_NTP; t++) {
            if (hit[t])
                continue;
            bool reached = dir > 0 ? k->high >= target[t] : k->low <= target[t];
            if (reached)
                hit[t] = (uint16_t)j;
        }
        if (hit[INFERENCE_NTP - 1])
            return;
    }
}

int training_label_at(const features_candle *c, size_t n, size_t i, double atr,
                      const inference_policy *policy, training_label *out)
{
    if (training__policy_check(policy, NULL, 0) != 0 || policy->horizon > 65535)
        return PD_EINVAL;
    if (i >= n || n - 1 - i < policy->horizon)
        return PD_ENODATA;
    double entry = c[i].close;
    if (!(isfinite(entry) && entry > 0 && isfinite(atr) && atr > 0))
        return PD_EINVAL;

    double risk = policy->sl_atr * atr;
    double long_t[INFERENCE_NTP], short_t[INFERENCE_NTP];
    for (int k = 0; k < INFERENCE_NTP; k++) {
        long_t[k] = entry + policy->tp_r[k] * risk;
        short_t[k] = entry - policy->tp_r[k] * risk;
    }
    uint16_t lh[INFERENCE_NTP], sh[INFERENCE_NTP];
    walk_side(c, i, policy->horizon, +1, entry - risk, long_t, lh);
    walk_side(c, i, policy->horizon, -1, entry + risk, short_t, sh);

    training_label l;
    memset(&l, 0, sizeof l);
    l.cls = INFERENCE_NO_TRADE;
    bool lw = lh[0] != 0, sw = sh[0] != 0;
    if (lw && (!sw || lh[0] < sh[0])) {
        l.cls = INFERENCE_LONG;
        memcpy(l.eta_tp, lh, sizeof lh);
    } else if (sw && (!lw || sh[0] < lh[0])) {
        l.cls = INFERENCE_SHORT;
        memcpy(l.eta_tp, sh, sizeof sh);
    }
    l.eta = l.eta_tp[0];
    *out = l;
    return 0;
}

static int cmp_u16(const void *a, const void *b)
{
    uint16_t x = *(const uint16_t *)a, y = *(const uint16_t *)b;
    return (x > y) - (x < y);
}

static double median_u16(uint16_t *v, size_t n)
{
    if (n == 0)
        return NAN;
    qsort(v, n, sizeof v[0], cmp_u16);
    return n % 2 ? v[n / 2] : 0.5 * ((double)v[n / 2 - 1] + (double)v[n / 2]);
}

int training__eta_medians(const training_label *y, const size_t *idx, size_t n, double eta[2],
                          double eta_tp[INFERENCE_NTP])
{
    uint16_t *buf = malloc((n ? n : 1) * sizeof *buf);
    if (!buf)
        return PD_ENOMEM;
    for (int side = 0; side < 2; side++) {
        size_t m = 0;
        for (size_t k = 0; k < n; k++)
            if (y[idx[k]].cls == side && y[idx[k]].eta)
                buf[m++] = y[idx[k]].eta;
        eta[side] = median_u16(buf, m);
    }
    for (int t = 0; t < INFERENCE_NTP; t++) {
        size_t m = 0;
        for (size_t k = 0; k < n; k++)
            if (y[idx[k]].cls != INFERENCE_NO_TRADE && y[idx[k]].eta_tp[t])
                buf[m++] = y[idx[k]].eta_tp[t];
        eta_tp[t] = median_u16(buf, m);
    }
    free(buf);
    return 0;
}
