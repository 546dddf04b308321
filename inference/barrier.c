/*
 * barrier.c: the triple barrier, the one set of rules by which a call's
 * levels are judged against the candles that followed it. Training labels
 * and the ledger's resolver both walk candles through it (see
 * inference.h), so the class a model is trained on and the outcome the
 * ledger records cannot drift apart.
 *
 * It does not know time: the caller numbers the candles it feeds (the
 * labels by position, the resolver from open times) and decides when the
 * horizon is complete. Pure: no allocation, no I/O; thread-safe on
 * distinct barriers.
 */
#include <math.h>
#include <string.h>

#include "inference/inference.h"
#include "util/util.h"

static bool level_ok(double v)
{
    return isfinite(v) && v > 0;
}

/* Levels at or below zero are allowed (a price never reaches them): the
 * labels of a wide policy on a cheap asset make such short targets. */

int inference_barrier_init(inference_barrier *b, int dir, double entry, double stop,
                           const double tp[INFERENCE_NTP])
{
    if (!b || !tp || (dir != 1 && dir != -1) || !level_ok(entry) || !isfinite(stop))
        return PD_EINVAL;
    if (dir * (entry - stop) <= 0)
        return PD_EINVAL;
    double prev = entry;
    for (int k = 0; k < INFERENCE_NTP; k++) {
        if (!isfinite(tp[k]) || dir * (tp[k] - prev) < 0 || (k == 0 && tp[k] == entry))
            return PD_EINVAL;
        prev = tp[k];
    }
    inference_barrier nb;
    memset(&nb, 0, sizeof nb);
    nb.dir = dir;
    nb.entry = entry;
    nb.stop = stop;
    nb.risk = fabs(entry - stop);
    memcpy(nb.tp, tp, sizeof nb.tp);
    nb.last_close = NAN;
    *b = nb;
    return 0;
}

bool inference_barrier_step(inference_barrier *b, double high, double low, double close,
                            uint32_t j)
{
    if (b->done)
        return false;
    double fav = b->dir > 0 ? (high - b->entry) / b->risk : (b->entry - low) / b->risk;
    double adv = b->dir > 0 ? (b->entry - low) / b->risk : (high - b->entry) / b->risk;
    if (fav > b->mfe)
        b->mfe = fav;
    if (adv > b->mae)
        b->mae = adv;
    b->last = j;
    b->last_close = close;
    bool stopped = b->dir > 0 ? low <= b->stop : high >= b->stop;
    if (stopped) {
        b->stopped = j;
        b->done = true;
        return false;
    }
    bool won = false;
    for (int k = 0; k < INFERENCE_NTP; k++) {
        if (b->hit[k])
            continue;
        bool reached = b->dir > 0 ? high >= b->tp[k] : low <= b->tp[k];
        if (!reached)
            break; /* levels are ordered: a farther one needs this one */
        b->hit[k] = j;
        won |= k == 0;
    }
    if (b->hit[INFERENCE_NTP - 1])
        b->done = true;
    return won;
}

int inference_barrier_class(const inference_barrier *lng, const inference_barrier *sht,
                            uint32_t *j)
{
    uint32_t lw = lng->hit[0], sw = sht->hit[0];
    int cls = -1;
    uint32_t at = 0;
    if (lw && sw) {
        cls = lw < sw ? INFERENCE_LONG : sw < lw ? INFERENCE_SHORT : INFERENCE_NO_TRADE;
        at = lw < sw ? lw : sw;
    } else if (lw) {
        /* the short side may still win only at an earlier candle, which it did not */
        cls = INFERENCE_LONG;
        at = lw;
    } else if (sw) {
        cls = INFERENCE_SHORT;
        at = sw;
    } else if (lng->done && sht->done) {
        cls = INFERENCE_NO_TRADE;
        at = lng->stopped > sht->stopped ? lng->stopped : sht->stopped;
    }
    if (cls >= 0 && j)
        *j = at;
    return cls;
}
