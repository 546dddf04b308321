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
    s.model_choice = best;
    s.no_trade_reason = best == INFERENCE_NO_TRADE ? INFERENCE_NT_MODEL : INFERENCE_NT_NONE;
    if (probs[best] < policy->min_confidence && best != INFERENCE_NO_TRADE) {
        s.direction = INFERENCE_NO_TRADE;
        s.no_trade_reason = INFERENCE_NT_MIN_CONFIDENCE;
    }
    /* the probability of the class the model chose, also when a rule
     * turned the answer into NO_TRADE: never p(NO_TRADE) standing in for it */
    s.confidence = probs[best];

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
    s.tick = 0;
    *out = s;
    return 0;
}

const char *inference_no_trade_reason_name(int reason)
{
    switch (reason) {
    case INFERENCE_NT_MODEL: return "model";
    case INFERENCE_NT_MIN_CONFIDENCE: return "below_min_confidence";
    case INFERENCE_NT_STALE: return "stale_data";
    case INFERENCE_NT_TICK: return "levels_under_tick";
    case INFERENCE_NT_BASELINE: return "below_baseline";
    case INFERENCE_NT_COST: return "cost";
    default: return NULL;
    }
}

static double to_tick(double v, double tick)
{
    double r = round(v / tick) * tick;
    return r > 0 ? r : tick;
}

double inference_cost_r(const inference_policy *policy, double entry, double risk)
{
    if (!(risk > 0) || !(policy->cost_bps > 0))
        return 0;
    return policy->cost_bps / 1e4 * entry / risk;
}

void inference_signal_market(const inference_policy *policy, double tick, inference_signal *s)
{
    if (isfinite(tick) && tick > 0) {
        s->tick = tick;
        s->entry = to_tick(s->entry, tick);
        s->stop_loss = to_tick(s->stop_loss, tick);
        for (int k = 0; k < INFERENCE_NTP; k++)
            s->tp[k] = to_tick(s->tp[k], tick);
        /* rounding may not reorder the levels: keep them monotone away from entry */
        double sign = s->levels_for == INFERENCE_LONG ? 1.0 : -1.0;
        for (int k = 1; k < INFERENCE_NTP; k++)
            if (sign * (s->tp[k] - s->tp[k - 1]) < 0)
                s->tp[k] = s->tp[k - 1];
        /* ticks between levels, with a little slack for the division */
        double stop_ticks = fabs(s->entry - s->stop_loss) / tick + 1e-9;
        double tp_ticks = fabs(s->tp[0] - s->entry) / tick + 1e-9;
        bool under = stop_ticks < INFERENCE_MIN_TICKS || tp_ticks < INFERENCE_MIN_TICKS ||
                     sign * (s->entry - s->stop_loss) <= 0 || sign * (s->tp[0] - s->entry) <= 0;
        if (under && s->direction != INFERENCE_NO_TRADE) {
            s->direction = INFERENCE_NO_TRADE;
            s->no_trade_reason = INFERENCE_NT_TICK;
        }
    }
    double risk = fabs(s->entry - s->stop_loss);
    double cost = policy->cost_bps > 0 ? policy->cost_bps / 1e4 * s->entry : 0;
    double floor_costs = policy->min_risk_costs > 0 ? policy->min_risk_costs : 0;
    if (s->direction != INFERENCE_NO_TRADE && cost > 0 && risk < floor_costs * cost) {
        s->direction = INFERENCE_NO_TRADE;
        s->no_trade_reason = INFERENCE_NT_COST;
    }
}
