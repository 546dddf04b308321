/*
 * backtest.c: history replayed candle by candle through the serving path.
 *
 * For each closed candle i of the range, the prediction is computed by
 * predict__compute_window (the function predict_one runs on a cache miss:
 * the model's window, features, kernel, signal, tick and cost rules) at the
 * moment the candle closed, turned into the ledger row the inference loop
 * would record (predict_ledger_entry), and settled by predict_resolve, the
 * ledger's resolver, against the candles after it. Nothing here re-derives
 * a level or an outcome: the figures are the ledger's, as if the loop had
 * run over that history.
 *
 * Figures (of LONG/SHORT calls whose horizon completed): hit rates per
 * take-profit, stop-outs, expiries, average R, expectancy after the round
 * trip cost, the maximum drawdown of a one-unit-per-signal equity curve
 * (net, in R), and a calibration table of the calls' probabilities against
 * the share that reached TP1. The same for two baselines on the same
 * candles and levels: always the period's most frequent realised class
 * (when it is a direction), and persistence (the realised class of the
 * entry `horizon` candles earlier, the latest known at that candle).
 *
 * Does not: write anywhere (the caller stores the figures), or use the
 * caches. Runs on the calling thread; uses the store's connection of that
 * thread through store_load_range.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inference/inference.h"
#include "predict/predict_internal.h"

void predict_ledger_entry(const predict_result *p, store_ledger_entry *e)
{
    memset(e, 0, sizeof *e);
    snprintf(e->symbol, sizeof e->symbol, "%s", p->symbol);
    snprintf(e->timeframe, sizeof e->timeframe, "%s", p->timeframe);
    e->candle_time = p->candle_time;
    e->version = p->version;
    e->direction = p->direction;
    e->confidence = p->confidence;
    memcpy(e->probs, p->probs, sizeof e->probs);
    e->entry = p->has_levels ? p->entry : NAN;
    e->stop_loss = p->has_levels ? p->stop_loss : NAN;
    for (int k = 0; k < 3; k++)
        e->tp[k] = p->has_levels ? p->tp[k] : NAN;
    e->atr = p->has_levels ? p->atr : NAN;
    e->horizon = p->has_levels ? p->horizon : 0;
    e->created_at = p->prediction_time;
    e->stale_data = p->stale_data;
}

/* One settled call into a side's figures. */
static void side_add(predict_backtest_side *s, const store_ledger_entry *e,
                     const store_ledger_resolution *r, double cost_bps)
{
    if (r->outcome == STORE_OUTCOME_OPEN) {
        s->open++;
        return;
    }
    s->trades++;
    if (r->outcome >= STORE_OUTCOME_TP1 && r->outcome <= STORE_OUTCOME_TP3)
        for (int k = 0; k <= r->outcome - STORE_OUTCOME_TP1; k++)
            s->tp[k]++;
    else if (r->outcome == STORE_OUTCOME_SL)
        s->stops++;
    else if (r->outcome == STORE_OUTCOME_EXPIRED)
        s->expired++;
    double risk = fabs(e->entry - e->stop_loss);
    double cost_r = cost_bps > 0 && risk > 0 ? cost_bps / 1e4 * e->entry / risk : 0;
    double net = r->r_multiple - cost_r;
    s->sum_r += r->r_multiple;
    s->sum_net += net;
    s->net_wins += net > 0;
    s->equity += net;
    if (s->equity > s->peak)
        s->peak = s->equity;
    if (s->peak - s->equity > s->max_drawdown_r)
        s->max_drawdown_r = s->peak - s->equity;
}

/* e turned into a call of class cls on the same entry and risk (its levels
 * mirrored when they are for the other side). */
static store_ledger_entry as_call(const store_ledger_entry *e, int cls)
{
    store_ledger_entry c = *e;
    c.direction = cls;
    bool long_levels = e->stop_loss < e->entry;
    if (long_levels != (cls == STORE_LEDGER_LONG)) {
        c.stop_loss = 2 * e->entry - e->stop_loss;
        for (int k = 0; k < 3; k++)
            c.tp[k] = 2 * e->entry - e->tp[k];
    }
    return c;
}

static bool levels_ok(const store_ledger_entry *e)
{
    if (!(e->entry > 0 && e->stop_loss > 0 && e->horizon > 0))
        return false;
    for (int k = 0; k < 3; k++)
        if (!(e->tp[k] > 0))
            return false;
    return true;
}

/* The tick and cost rules of inference_signal_market on a row's levels
 * (for a row the model did not call, whose reason says nothing of them). */
static bool market_ok(const inference_policy *pol, const store_ledger_entry *e)
{
    double risk = fabs(e->entry - e->stop_loss);
    double cost = pol->cost_bps / 1e4 * e->entry;
    return !(cost > 0 && risk < pol->min_risk_costs * cost);
}

int predict_backtest_run(predict_service *svc, const predict_backtest_options *o,
                         predict_backtest *out, char *why, size_t whylen)
{
    memset(out, 0, sizeof *out);
    out->majority_class = -1;
    int64_t tfs = util_tf_seconds(o->tf);
    if (!util_symbol_valid(o->symbol))
        return PD_ESYMBOL;
    if (!tfs)
        return PD_ETIMEFRAME;
    registry_selector sel = {.version = o->version};
    registry_version *v = NULL;
    int rc = registry_acquire(svc->reg, o->symbol, o->tf, o->version ? &sel : NULL, &v);
    if (rc == PD_ENOMODEL && o->version) {
        /* a version the registry does not keep loaded (an old one): from disk */
        rc = registry_open_version(svc->reg, o->symbol, o->tf, o->version, &v, why, whylen);
        if (rc)
            return rc;
    } else if (rc) {
        if (o->version)
            snprintf(why, whylen, "no model version %u for %s %s", o->version, o->symbol, o->tf);
        else /* version 0 is "the serving one", not a number to print */
            snprintf(why, whylen, "no verified model for %s %s", o->symbol, o->tf);
        return rc;
    }
    const inference_policy *pol = inference_model_policy(registry_version_model(v));
    size_t need = registry_version_candles(v);
    out->version = registry_version_number(v);
    out->cost_bps = isfinite(o->cost_bps) ? o->cost_bps : pol->cost_bps;
    out->horizon = pol->horizon;

    features_candle *c = NULL;
    size_t n = 0;
    int64_t now = o->now ? o->now : util_now();
    rc = store_load_range(o->symbol, o->tf, 0, o->to, now, &c, &n);
    if (rc) {
        snprintf(why, whylen, "loading %s %s: %s", o->symbol, o->tf, util_strerror(rc));
        goto out;
    }
    size_t first = need ? need - 1 : 0;
    while (first < n && o->from && c[first].t < o->from)
        first++;
    if (first >= n) {
        rc = PD_ENODATA;
        snprintf(why, whylen, "%s %s has no closed candle in the range with %zu before it",
                 o->symbol, o->tf, need - 1);
        goto out;
    }
    out->rows = calloc(n - first, sizeof *out->rows);
    if (!out->rows) {
        rc = PD_ENOMEM;
        goto out;
    }
    out->from = c[first].t;
    out->to = c[n - 1].t;
    int64_t last_open = c[n - 1].t;
    uint64_t realised[3] = {0};
    for (size_t i = first; i < n; i++) {
        predict_result *p = NULL;
        char w[256] = "";
        out->candles++;
        /* the moment the loop would compute it: when candle i closed */
        int prc = predict__compute_window(svc, v, o->symbol, o->tf, c[i].t + tfs,
                                          c + (i + 1 - need), need, &p, w, sizeof w);
        if (prc == PD_ENOMEM) {
            rc = prc;
            goto out;
        }
        if (prc) {
            out->failed++;
            continue;
        }
        predict_backtest_row *row = &out->rows[out->n_rows++];
        predict_ledger_entry(p, &row->e);
        row->no_trade_reason = p->direction == INFERENCE_NO_TRADE ? p->no_trade_reason : 0;
        row->index = i;
        predict_result_release(p);
        out->predictions++;
        if (row->no_trade_reason > 0 && row->no_trade_reason < 8)
            out->no_trade[row->no_trade_reason]++;
        if (predict_resolve(&row->e, tfs, c + i + 1, n - i - 1, last_open, &row->r) != 0) {
            row->r.outcome = STORE_OUTCOME_OPEN;
            row->r.realised = -1;
        }
        if (row->r.realised >= 0)
            realised[row->r.realised]++;
        if (row->e.direction == STORE_LEDGER_NO_TRADE)
            continue;
        side_add(&out->model, &row->e, &row->r, out->cost_bps);
        if (row->r.outcome != STORE_OUTCOME_OPEN) {
            int bin = (int)floor(row->e.confidence * 10) - 4;
            bin = bin < 0 ? 0 : bin > 4 ? 4 : bin;
            out->cal[bin].n++;
            out->cal[bin].sum_p += row->e.confidence;
            out->cal[bin].hits +=
                row->r.outcome >= STORE_OUTCOME_TP1 && row->r.outcome <= STORE_OUTCOME_TP3;
        }
    }

    /* the baselines, on the same entries and levels */
    int maj = 0;
    for (int k = 1; k < 3; k++)
        if (realised[k] > realised[maj])
            maj = k;
    out->majority_class = realised[maj] ? maj : -1;
    for (size_t k = 0; k < out->n_rows; k++) {
        const predict_backtest_row *row = &out->rows[k];
        /* the market's rules bind the baselines too: no call on levels
         * under the tick or a risk under the cost floor */
        if (!levels_ok(&row->e) || row->no_trade_reason == INFERENCE_NT_TICK ||
            row->no_trade_reason == INFERENCE_NT_COST || !market_ok(pol, &row->e))
            continue;
        size_t i = row->index;
        store_ledger_resolution r;
        if (out->majority_class == STORE_LEDGER_LONG || out->majority_class == STORE_LEDGER_SHORT) {
            store_ledger_entry e = as_call(&row->e, out->majority_class);
            if (predict_resolve(&e, tfs, c + i + 1, n - i - 1, last_open, &r) == 0)
                side_add(&out->majority, &e, &r, out->cost_bps);
        }
        /* persistence: the realised class of the row `horizon` candles back */
        if (k >= out->horizon && out->rows[k - out->horizon].index + out->horizon == i) {
            int last = out->rows[k - out->horizon].r.realised;
            if (last == STORE_LEDGER_LONG || last == STORE_LEDGER_SHORT) {
                store_ledger_entry e = as_call(&row->e, last);
                if (predict_resolve(&e, tfs, c + i + 1, n - i - 1, last_open, &r) == 0)
                    side_add(&out->persistence, &e, &r, out->cost_bps);
            }
        }
    }
    rc = 0;
out:
    if (rc)
        predict_backtest_cleanup(out);
    free(c);
    registry_release(v);
    return rc;
}

void predict_backtest_cleanup(predict_backtest *b)
{
    if (!b)
        return;
    free(b->rows);
    b->rows = NULL;
    b->n_rows = 0;
}

static void ratio(util_buf *b, const char *key, double num, uint64_t den)
{
    util_buf_printf(b, ",\"%s\":", key);
    util_json_num(b, den ? num / (double)den : NAN);
}

static void side_json(util_buf *b, const char *name, const predict_backtest_side *s)
{
    util_buf_printf(b, ",\"%s\":{\"calls\":%llu,\"open\":%llu", name, (unsigned long long)s->trades,
                    (unsigned long long)s->open);
    ratio(b, "hit_rate_tp1", (double)s->tp[0], s->trades);
    ratio(b, "hit_rate_tp2", (double)s->tp[1], s->trades);
    ratio(b, "hit_rate_tp3", (double)s->tp[2], s->trades);
    ratio(b, "stop_outs", (double)s->stops, s->trades);
    ratio(b, "expiries", (double)s->expired, s->trades);
    ratio(b, "avg_r", s->sum_r, s->trades);
    ratio(b, "expectancy_r", s->sum_net, s->trades);
    ratio(b, "hit_rate_net", (double)s->net_wins, s->trades);
    util_buf_puts(b, ",\"max_drawdown_r\":");
    util_json_num(b, s->max_drawdown_r);
    util_buf_puts(b, "}");
}

void predict_backtest_json(const predict_backtest *bt, util_buf *b)
{
    char t1[32], t2[32];
    util_buf_printf(b, "{\"version\":%u,\"from\":\"%s\",\"to\":\"%s\",\"cost_bps\":", bt->version,
                    util_rfc3339(bt->from, t1), util_rfc3339(bt->to, t2));
    util_json_num(b, bt->cost_bps);
    util_buf_printf(b, ",\"horizon\":%u,\"candles\":%llu,\"predictions\":%llu,\"failed\":%llu",
                    bt->horizon, (unsigned long long)bt->candles,
                    (unsigned long long)bt->predictions, (unsigned long long)bt->failed);
    util_buf_puts(b, ",\"no_trade\":{");
    const char *sep = "";
    for (int k = 1; k < 8; k++) {
        const char *name = inference_no_trade_reason_name(k);
        if (!name)
            continue;
        util_buf_printf(b, "%s\"%s\":%llu", sep, name, (unsigned long long)bt->no_trade[k]);
        sep = ",";
    }
    util_buf_puts(b, "}");
    side_json(b, "model", &bt->model);
    util_buf_puts(b, ",\"majority_class\":");
    if (bt->majority_class >= 0)
        util_json_str(b, inference_class_name((enum inference_class)bt->majority_class));
    else
        util_buf_puts(b, "null");
    side_json(b, "majority", &bt->majority);
    side_json(b, "persistence", &bt->persistence);
    util_buf_puts(b, ",\"calibration\":[");
    for (int k = 0; k < 5; k++) {
        util_buf_printf(b, "%s{\"bin\":\"%s%.1f\",\"calls\":%llu", k ? "," : "", k == 4 ? ">=" : "",
                        0.4 + 0.1 * k, (unsigned long long)bt->cal[k].n);
        ratio(b, "mean_probability", bt->cal[k].sum_p, bt->cal[k].n);
        ratio(b, "tp1_rate", (double)bt->cal[k].hits, bt->cal[k].n);
        util_buf_puts(b, "}");
    }
    util_buf_puts(b, "]}");
}
