/*
 * signal.c: from probabilities to a trading signal (direction, confidence,
 * entry, stop-loss, three take-profits, ETA) under a model's SignalPolicy,
 * and the class names. No model maths here and no I/O; every function is
 * pure and thread-safe.
 *
 * DESIGN: the levels follow the rule the training labels were built with
 * (proto SignalPolicy), so the stop and take-profits are the barriers the
 * model learnt. A level that would be a non-positive price is an error,
 * never clamped: a made-up level is worse than none.
 */
#include "inference/inference.h"

#include <math.h>
#include <string.h>

#include "util/util.h"

static const char *const class_names[INFERENCE_NCLASS] = {"LONG", "SHORT", "NO_TRADE"};

const char *inference_class_name(enum inference_class c)
{
    if ((int)c < 0 || (int)c >= INFERENCE_NCLASS)
        return "UNKNOWN";
    return class_names[c];
}

int inference_class_parse(const char *s)
{
    if (!s)
        return -1;
    for (int c = 0; c < INFERENCE_NCLASS; c++)
        if (strcmp(s, class_names[c]) == 0)
            return c;
    return -1;
}

int inference_signal_make(const inference_policy *policy, const double probs[INFERENCE_NCLASS],
                          double entry, double atr, inference_signal *out)
{
    if (!policy || !probs || !out)
        return PD_EINVAL;
    if (!(isfinite(entry) && entry > 0) || !(isfinite(atr) && atr > 0))
        return PD_EINVAL;
    for (int c = 0; c < INFERENCE_NCLASS; c++)
        if (!isfinite(probs[c]))
            return PD_EINVAL;

    inference_signal s;
    int best = 0;
    for (int c = 1; c < INFERENCE_NCLASS; c++)
        if (probs[c] > probs[best])
            best = c;
    s.direction = best;
    if (probs[best] < policy->min_confidence)
        s.direction = INFERENCE_NO_TRADE;
    s.confidence = probs[s.direction];

    s.levels_for =
        probs[INFERENCE_LONG] >= probs[INFERENCE_SHORT] ? INFERENCE_LONG : INFERENCE_SHORT;
    const double sign = s.levels_for == INFERENCE_LONG ? 1.0 : -1.0;
    s.entry = entry;
    s.stop_loss = entry - sign * policy->sl_atr * atr;
    const double risk = sign * (entry - s.stop_loss);
    for (int k = 0; k < INFERENCE_NTP; k++)
        s.tp[k] = entry + sign * policy->tp_r[k] * risk;
    if (!(isfinite(s.stop_loss) && s.stop_loss > 0))
        return PD_EINVAL;
    for (int k = 0; k < INFERENCE_NTP; k++)
        if (!(isfinite(s.tp[k]) && s.tp[k] > 0))
            return PD_EINVAL;
    s.eta_candles = policy->eta_candles[s.levels_for];
    *out = s;
    return 0;
}
