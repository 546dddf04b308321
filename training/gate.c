/*
 * gate: the baselines a model must beat, and the backtest of its test
 * window, before it may be published.
 *
 *   persistence   the last realised class: at sample candle i, the label of
 *                 the sample at i - horizon (the latest whose horizon has
 *                 ended). Its probabilities are the train slice's class
 *                 frequencies given that last class (a one-step transition
 *                 table, add-one smoothed); its calls are that class when it
 *                 is LONG or SHORT. Samples without one use the train prior
 *                 and call nothing.
 *   majority      the always-majority baseline of evaluate.c (log-loss from
 *                 the train prior, calls when the majority is a direction).
 *   beats         the model beats a baseline when its test log-loss is lower
 *                 and its hit rate of calls is higher (a baseline that calls
 *                 nothing is compared on log-loss alone; a model that calls
 *                 nothing does not beat one that calls). beats_baseline is
 *                 1 when it beats both, else 0.
 *   backtest      every test sample replayed as the server would answer it
 *                 (inference_signal_make, then the tick inferred from its
 *                 window and the cost floor: inference_signal_market), each
 *                 call walked through the triple barrier over the next
 *                 `horizon` candles as the ledger's resolver walks them:
 *                 bt_trades, bt_hit_rate (TP1 reached), bt_hit_rate_tp2/3,
 *                 bt_stop_rate, bt_expired_rate, bt_avg_r (gross),
 *                 bt_expectancy_r (after cost_bps per round trip),
 *                 bt_hit_rate_net (net R > 0), bt_max_drawdown_r (of a
 *                 one-unit-per-signal equity curve, net, in R); the same for
 *                 the baselines' calls under bt_majority_ and
 *                 bt_persistence_; and a calibration table of the calls
 *                 (cal_B_n, cal_B_p mean probability, cal_B_hit share that
 *                 reached TP1) for probability bins B = 40, 50, 60, 70, 80
 *                 (80 holds [0.8, 1]).
 *
 * Pure: no I/O; allocates one lookup table. Thread-safe.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "training/internal.h"

struct figures {
    size_t trades, tp[INFERENCE_NTP], stops, expired, net_wins;
    double sum_r, sum_net, equity, peak, max_dd;
};

static void fig_add(struct figures *f, const training__trade *t)
{
    f->trades++;
    for (int k = 0; k < t->tp_hit; k++)
        f->tp[k]++;
    if (t->outcome == TRAINING_TRADE_SL)
        f->stops++;
    else if (t->outcome == TRAINING_TRADE_EXPIRED)
        f->expired++;
    f->sum_r += t->r;
    f->sum_net += t->net_r;
    f->net_wins += t->net_r > 0;
    f->equity += t->net_r;
    if (f->equity > f->peak)
        f->peak = f->equity;
    if (f->peak - f->equity > f->max_dd)
        f->max_dd = f->peak - f->equity;
}

static void fig_metrics(const struct figures *f, const char *prefix, training_result *res)
{
    char name[32];
    double n = (double)f->trades;
#define PUT(suffix, value)                                                                         \
    do {                                                                                           \
        snprintf(name, sizeof name, "%s%s", prefix, suffix);                                       \
        training__metric_add(res, name, value);                                                    \
    } while (0)
    PUT("trades", n);
    if (f->trades) {
        PUT("hit_rate", (double)f->tp[0] / n);
        PUT("hit_rate_tp2", (double)f->tp[1] / n);
        PUT("hit_rate_tp3", (double)f->tp[2] / n);
        PUT("stop_rate", (double)f->stops / n);
        PUT("expired_rate", (double)f->expired / n);
        PUT("avg_r", f->sum_r / n);
        PUT("expectancy_r", f->sum_net / n);
        PUT("hit_rate_net", (double)f->net_wins / n);
        PUT("max_drawdown_r", f->max_dd);
    }
#undef PUT
}

int training__trade_walk(const features_candle *c, size_t n, size_t i, const inference_signal *s,
                         const inference_policy *pol, training__trade *out)
{
    uint32_t h = pol->horizon;
    if (i >= n || n - 1 - i < h)
        return PD_ENODATA;
    int dir = s->levels_for == INFERENCE_LONG ? 1 : -1;
    inference_barrier b;
    int rc = inference_barrier_init(&b, dir, s->entry, s->stop_loss, s->tp);
    if (rc)
        return rc;
    for (uint32_t j = 1; j <= h && !b.done; j++)
        inference_barrier_step(&b, c[i + j].high, c[i + j].low, c[i + j].close, j);
    training__trade t;
    memset(&t, 0, sizeof t);
    for (int k = 0; k < INFERENCE_NTP; k++)
        if (b.hit[k])
            t.tp_hit = k + 1;
    if (t.tp_hit) {
        t.outcome = TRAINING_TRADE_TP;
        t.r = fabs(s->tp[t.tp_hit - 1] - s->entry) / b.risk;
    } else if (b.stopped) {
        t.outcome = TRAINING_TRADE_SL;
        t.r = -1;
    } else {
        t.outcome = TRAINING_TRADE_EXPIRED;
        t.r = isnan(b.last_close) ? 0 : dir * (b.last_close - s->entry) / b.risk;
    }
    t.net_r = t.r - inference_cost_r(pol, s->entry, b.risk);
    *out = t;
    return 0;
}

int training__signal_at(const features_candle *c, size_t window, size_t i,
                        const inference_policy *pol, const double probs[INFERENCE_NCLASS],
                        inference_signal *out)
{
    if (i + 1 < window)
        return PD_EINVAL;
    const features_candle *w = c + (i + 1 - window);
    double atr;
    int rc = features_atr_last(w, window, (int)pol->atr_period, &atr);
    if (rc == 0)
        rc = inference_signal_make(pol, probs, c[i].close, atr, out);
    if (rc == 0)
        inference_signal_market(pol, features_price_tick(w, window), out);
    return rc;
}

/* One test sample's figures for a caller's probabilities (a model or a
 * baseline's one-hot call). */
static void replay(const training__gate_in *in, size_t row, const double *probs, struct figures *f,
                   double *p_call, int *hit_tp1)
{
    const features_candle *c = in->series[in->ds->series[row]];
    size_t n = in->lens[in->ds->series[row]];
    size_t i = in->ds->index[row];
    inference_signal s;
    training__trade t;
    *hit_tp1 = -1;
    if (training__signal_at(c, in->window, i, in->pol, probs, &s) != 0 ||
        s.direction == INFERENCE_NO_TRADE)
        return;
    if (training__trade_walk(c, n, i, &s, in->pol, &t) != 0)
        return;
    fig_add(f, &t);
    if (p_call)
        *p_call = probs[s.direction];
    *hit_tp1 = t.tp_hit > 0;
}

int training__gate(const training__gate_in *in, training_result *res)
{
    const training_dataset *ds = in->ds;
    const size_t h = in->pol->horizon;
    /* the label of every sample, by series and candle index: 255 = none */
    size_t *base = calloc(in->n_series + 1, sizeof *base);
    if (!base)
        return PD_ENOMEM;
    for (size_t s = 0; s < in->n_series; s++)
        base[s + 1] = base[s] + in->lens[s];
    uint8_t *lab = malloc(base[in->n_series] ? base[in->n_series] : 1);
    if (!lab) {
        free(base);
        return PD_ENOMEM;
    }
    memset(lab, 255, base[in->n_series] ? base[in->n_series] : 1);
    for (size_t r = 0; r < ds->n; r++)
        lab[base[ds->series[r]] + ds->index[r]] = ds->y[r].cls;
#define LAST_REALISED(row)                                                                         \
    (ds->index[row] >= h ? lab[base[ds->series[row]] + ds->index[row] - h] : 255)

    /* persistence: transition table from the train slice */
    double trans[INFERENCE_NCLASS][INFERENCE_NCLASS];
    for (int a = 0; a < INFERENCE_NCLASS; a++)
        for (int b = 0; b < INFERENCE_NCLASS; b++)
            trans[a][b] = 1;
    for (size_t k = 0; k < in->n_train; k++) {
        size_t row = in->train[k];
        int last = LAST_REALISED(row);
        if (last < INFERENCE_NCLASS)
            trans[last][ds->y[row].cls] += 1;
    }
    for (int a = 0; a < INFERENCE_NCLASS; a++) {
        double sum = trans[a][0] + trans[a][1] + trans[a][2];
        for (int b = 0; b < INFERENCE_NCLASS; b++)
            trans[a][b] /= sum;
    }
    double pll = 0;
    size_t pcalls = 0, phits = 0;
    struct figures fm = {0}, fmaj = {0}, fper = {0};
    int majority = (int)training_result_metric(res, "baseline_class");
    bool maj_calls = majority == INFERENCE_LONG || majority == INFERENCE_SHORT;
    size_t cal_n[5] = {0}, cal_hit[5] = {0};
    double cal_p[5] = {0};
    for (size_t k = 0; k < in->n_test; k++) {
        size_t row = in->test[k];
        int y = ds->y[row].cls;
        int last = LAST_REALISED(row);
        const double *pp = last < INFERENCE_NCLASS ? trans[last] : in->prior;
        double q = pp[y];
        pll -= log(q > 1e-15 ? q : 1e-15);
        if (last == INFERENCE_LONG || last == INFERENCE_SHORT) {
            pcalls++;
            phits += y == last;
        }
        /* the backtest of the model and of both baselines on this sample */
        double p_call = NAN;
        int hit;
        replay(in, row, in->test_probs + k * INFERENCE_NCLASS, &fm, &p_call, &hit);
        if (hit >= 0) {
            int bin = (int)floor(p_call * 10) - 4;
            bin = bin < 0 ? 0 : bin > 4 ? 4 : bin;
            cal_n[bin]++;
            cal_p[bin] += p_call;
            cal_hit[bin] += (size_t)hit;
        }
        double onehot[INFERENCE_NCLASS] = {0};
        if (maj_calls) {
            onehot[majority] = 1;
            replay(in, row, onehot, &fmaj, NULL, &hit);
            onehot[majority] = 0;
        }
        if (last == INFERENCE_LONG || last == INFERENCE_SHORT) {
            onehot[last] = 1;
            replay(in, row, onehot, &fper, NULL, &hit);
        }
    }
#undef LAST_REALISED
    free(lab);
    free(base);

    double dn = in->n_test ? (double)in->n_test : 1;
    training__metric_add(res, "persistence_log_loss", pll / dn);
    training__metric_add(res, "persistence_calls", (double)pcalls);
    if (pcalls)
        training__metric_add(res, "persistence_hit_rate_calls", (double)phits / (double)pcalls);
    training__metric_add(res, "cost_bps", in->pol->cost_bps);
    fig_metrics(&fm, "bt_", res);
    fig_metrics(&fmaj, "bt_majority_", res);
    fig_metrics(&fper, "bt_persistence_", res);
    for (int b = 0; b < 5; b++) {
        char name[32];
        snprintf(name, sizeof name, "cal_%d_n", 40 + 10 * b);
        training__metric_add(res, name, (double)cal_n[b]);
        if (!cal_n[b])
            continue;
        snprintf(name, sizeof name, "cal_%d_p", 40 + 10 * b);
        training__metric_add(res, name, cal_p[b] / (double)cal_n[b]);
        snprintf(name, sizeof name, "cal_%d_hit", 40 + 10 * b);
        training__metric_add(res, name, (double)cal_hit[b] / (double)cal_n[b]);
    }

    /* the verdict */
    double ll = training_result_metric(res, "log_loss");
    double hr = training_result_metric(res, "hit_rate_calls");
    const char *bl[2][2] = {{"baseline_log_loss", "baseline_hit_rate_calls"},
                            {"persistence_log_loss", "persistence_hit_rate_calls"}};
    bool beats_all = true;
    for (int b = 0; b < 2; b++) {
        double bll = training_result_metric(res, bl[b][0]);
        double bhr = training_result_metric(res, bl[b][1]);
        bool beats = isfinite(ll) && isfinite(bll) && ll < bll;
        if (isfinite(bhr))
            beats = beats && isfinite(hr) && hr > bhr;
        training__metric_add(res, b ? "beats_persistence" : "beats_majority", beats);
        beats_all = beats_all && beats;
    }
    training__metric_add(res, "beats_baseline", beats_all);
    return 0;
}
