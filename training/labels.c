/*
 * labels: triple-barrier labels built with the serving SignalPolicy, and the
 * candles-to-target medians that become the policy's ETA fields.
 *
 * The barriers are exactly the levels inference_signal_make() returns for a
 * call at the sample candle (entry = close, risk = sl_atr * ATR), so a label
 * says "the trade the API would have shown reached TP1 before its stop
 * within the horizon". The walk itself is inference/barrier.c, the one the
 * ledger's resolver takes too (a candle that touches both a side's stop and
 * its target counts as the stop).
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

    /* Both sides' trades as inference_signal_make() would show them, walked
     * through the one triple barrier; the horizon counts candles. */
    double risk = policy->sl_atr * atr;
    double long_t[INFERENCE_NTP], short_t[INFERENCE_NTP];
    for (int k = 0; k < INFERENCE_NTP; k++) {
        long_t[k] = entry + policy->tp_r[k] * risk;
        short_t[k] = entry - policy->tp_r[k] * risk;
    }
    inference_barrier lb, sb;
    if (inference_barrier_init(&lb, +1, entry, entry - risk, long_t) != 0 ||
        inference_barrier_init(&sb, -1, entry, entry + risk, short_t) != 0)
        return PD_EINVAL; /* a level at or below zero: the ATR is too large for the entry */
    for (uint32_t j = 1; j <= policy->horizon && !(lb.done && sb.done); j++) {
        const features_candle *k = &c[i + j];
        inference_barrier_step(&lb, k->high, k->low, k->close, j);
        inference_barrier_step(&sb, k->high, k->low, k->close, j);
    }

    training_label l;
    memset(&l, 0, sizeof l);
    int cls = inference_barrier_class(&lb, &sb, NULL);
    l.cls = cls == INFERENCE_LONG || cls == INFERENCE_SHORT ? (uint8_t)cls : INFERENCE_NO_TRADE;
    if (l.cls != INFERENCE_NO_TRADE) {
        const inference_barrier *w = l.cls == INFERENCE_LONG ? &lb : &sb;
        for (int k = 0; k < INFERENCE_NTP; k++)
            l.eta_tp[k] = (uint16_t)w->hit[k];
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
