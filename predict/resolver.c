/*
 * resolver.c: what a recorded prediction's trade did, from the candles that
 * followed it. The rules are the triple barrier of inference/barrier.c (the
 * same walk the training labels take); this file only numbers the candles
 * (from their open times, so a gap skips an index), decides when the
 * horizon is complete, and turns the barriers' state into the ledger's
 * outcome, R multiple, time to hit and excursions.
 *
 * Pure and thread-safe: no allocation, no I/O. store_ledger_settle() calls
 * it for each open row (see predict.h for the rules).
 */
#include <math.h>

#include "inference/inference.h"
#include "predict/predict.h"
#include "util/util.h"

/* Which side the levels are for, or -1 when they are unusable. */
static int levels_side(const store_ledger_entry *e)
{
    double lv[5] = {e->entry, e->stop_loss, e->tp[0], e->tp[1], e->tp[2]};
    for (int i = 0; i < 5; i++)
        if (!(isfinite(lv[i]) && lv[i] > 0))
            return -1;
    if (e->stop_loss < e->entry) {
        if (!(e->tp[0] > e->entry && e->tp[1] >= e->tp[0] && e->tp[2] >= e->tp[1]))
            return -1;
        return STORE_LEDGER_LONG;
    }
    if (e->stop_loss > e->entry) {
        if (!(e->tp[0] < e->entry && e->tp[1] <= e->tp[0] && e->tp[2] <= e->tp[1]))
            return -1;
        return STORE_LEDGER_SHORT;
    }
    return -1;
}

_Static_assert((int)STORE_LEDGER_LONG == (int)INFERENCE_LONG &&
                   (int)STORE_LEDGER_SHORT == (int)INFERENCE_SHORT &&
                   (int)STORE_LEDGER_NO_TRADE == (int)INFERENCE_NO_TRADE,
               "the ledger's classes are enum inference_class");

int predict_resolve(const store_ledger_entry *e, int64_t tf_seconds, const features_candle *after,
                    size_t n, int64_t last_closed_open, store_ledger_resolution *out)
{
    if (!e || !out || (n && !after) || tf_seconds <= 0 || e->horizon == 0 ||
        e->direction < STORE_LEDGER_LONG || e->direction > STORE_LEDGER_NO_TRADE)
        return PD_EINVAL;
    int side = levels_side(e);
    if (side < 0 || (e->direction != STORE_LEDGER_NO_TRADE && side != e->direction))
        return PD_EINVAL;

    /* Both sides with the row's risk and take-profit multiples: the side of
     * the levels is the trade itself, the other its mirror. */
    const double risk = fabs(e->entry - e->stop_loss);
    double tp_r[3], up[3], down[3];
    for (int k = 0; k < 3; k++) {
        tp_r[k] = fabs(e->tp[k] - e->entry) / risk;
        up[k] = side == STORE_LEDGER_LONG ? e->tp[k] : e->entry + tp_r[k] * risk;
        down[k] = side == STORE_LEDGER_SHORT ? e->tp[k] : e->entry - tp_r[k] * risk;
    }
    double long_stop = side == STORE_LEDGER_LONG ? e->stop_loss : e->entry - risk;
    double short_stop = side == STORE_LEDGER_SHORT ? e->stop_loss : e->entry + risk;
    inference_barrier lb, sb;
    if (inference_barrier_init(&lb, +1, e->entry, long_stop, up) != 0 ||
        inference_barrier_init(&sb, -1, e->entry, short_stop, down) != 0)
        return PD_EINVAL;
    inference_barrier *tb = side == STORE_LEDGER_LONG ? &lb : &sb;

    const bool trading = e->direction != STORE_LEDGER_NO_TRADE;
    const int64_t end_open = e->candle_time + (int64_t)e->horizon * tf_seconds;
    const bool complete = last_closed_open >= end_open;

    int realised = -1;
    uint32_t class_candles = 0;
    for (size_t i = 0; i < n; i++) {
        const features_candle *k = &after[i];
        if (k->t <= e->candle_time)
            continue;
        if (k->t > end_open)
            break;
        if (tb->done && realised >= 0)
            break;
        uint32_t j = (uint32_t)((k->t - e->candle_time) / tf_seconds);
        inference_barrier_step(&lb, k->high, k->low, k->close, j);
        inference_barrier_step(&sb, k->high, k->low, k->close, j);
        if (realised < 0)
            realised = inference_barrier_class(&lb, &sb, &class_candles);
    }
    if (complete && realised < 0) {
        realised = STORE_LEDGER_NO_TRADE;
        class_candles = e->horizon;
    }

    /* The trade: the highest take-profit reached before it ended. */
    int tp_hit = 0;
    for (int k = 0; k < 3; k++)
        if (tb->hit[k])
            tp_hit = k + 1;
    bool trade_done = tb->done || complete;
    int outcome = STORE_OUTCOME_OPEN;
    double r = NAN, hit_time = NAN;
    uint32_t trade_candles = tb->done ? tb->last : e->horizon;
    if (tp_hit) {
        outcome = STORE_OUTCOME_TP1 + tp_hit - 1;
        r = tp_r[tp_hit - 1];
        hit_time = (double)tb->hit[tp_hit - 1] * (double)tf_seconds;
    } else if (tb->stopped) {
        outcome = STORE_OUTCOME_SL;
        r = -1;
        hit_time = (double)tb->stopped * (double)tf_seconds;
    } else {
        outcome = STORE_OUTCOME_EXPIRED;
        r = isnan(tb->last_close) ? 0 : (tb->dir * (tb->last_close - e->entry)) / risk;
    }

    store_ledger_resolution res = {.outcome = STORE_OUTCOME_OPEN,
                                   .realised = -1,
                                   .hit_time_s = NAN,
                                   .r_multiple = NAN,
                                   .mfe = NAN,
                                   .mae = NAN};
    if ((!trading || trade_done) && realised >= 0) {
        res.realised = realised;
        if (trading) {
            res.outcome = outcome;
            res.candles = trade_candles;
            res.hit_time_s = hit_time;
            res.r_multiple = r;
            res.mfe = tb->mfe;
            res.mae = tb->mae;
        } else {
            res.outcome = STORE_OUTCOME_NONE;
            res.candles = class_candles;
        }
    }
    *out = res;
    return 0;
}
