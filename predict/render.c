/*
 * render.c: a prediction's JSON.
 *
 * DESIGN: predictions are written with util_buf's JSON writer rather than
 * jansson: the object is fixed in shape, rendered once per candle into a
 * fragment, and a cached answer only appends a short time-dependent tail,
 * so serving one costs a memcpy and a few numbers.
 */
#include <math.h>
#include <string.h>

#include "predict/predict_internal.h"
#include "inference/inference.h"
#include "store/store.h"

/* Every answer of the demo says where its data comes from. */
#define PREDICT_DEMO_WARNING                                                                       \
    "demo data: real 2018 candles replayed with shifted dates (PREDICTD_FEED=demo), not a live "   \
    "market"

static const char *kind_name(int kind)
{
    switch (kind) {
    case PREDICTD__MODEL_KIND__SOFTMAX: return "softmax";
    case PREDICTD__MODEL_KIND__MLP: return "mlp";
    case PREDICTD__MODEL_KIND__TREES: return "trees";
    case PREDICTD__MODEL_KIND__SEQUENCE: return "sequence";
    default: return "unknown";
    }
}

static void time_field(util_buf *b, const char *key, int64_t t)
{
    char ts[32];
    util_buf_puts(b, ",");
    util_json_key(b, key);
    util_json_str(b, util_rfc3339(t, ts));
}

int predict__render_fragment(predict_result *p, const struct inference_signal *sig,
                             const registry_version *v, size_t window, double atr,
                             bool exchange_tick)
{
    const registry_meta *meta = registry_version_meta(v);
    const inference_model *m = registry_version_model(v);
    util_buf b;
    util_buf_init(&b);
    util_buf_puts(&b, "{\"symbol\":");
    util_json_str(&b, p->symbol);
    util_buf_puts(&b, ",\"timeframe\":");
    util_json_str(&b, p->timeframe);
    util_buf_puts(&b, ",\"direction\":");
    util_json_str(&b, inference_class_name((enum inference_class)p->direction));
    util_buf_puts(&b, ",\"confidence\":");
    util_json_fixed(&b, p->confidence, 6);
    util_buf_puts(&b, ",\"model_choice\":");
    util_json_str(&b, inference_class_name((enum inference_class)p->model_choice));
    util_buf_puts(&b, ",\"no_trade_reason\":");
    const char *reason = p->direction == INFERENCE_NO_TRADE
                             ? inference_no_trade_reason_name(p->no_trade_reason)
                             : NULL;
    if (reason)
        util_json_str(&b, reason);
    else
        util_buf_puts(&b, "null");
    util_buf_puts(&b, ",\"probabilities\":{\"LONG\":");
    util_json_fixed(&b, p->probs[INFERENCE_LONG], 6);
    util_buf_puts(&b, ",\"SHORT\":");
    util_json_fixed(&b, p->probs[INFERENCE_SHORT], 6);
    util_buf_puts(&b, ",\"NO_TRADE\":");
    util_json_fixed(&b, p->probs[INFERENCE_NO_TRADE], 6);
    /* One metric: the share of LONG/SHORT calls whose trade reached TP1
     * before its stop, after the live ledger once enough resolved, else on
     * the trainer's test window (same resolver rules). */
    bool live = p->live_resolved >= PREDICT_LIVE_MIN_RESOLVED;
    double backtest = registry_meta_metric(meta, "bt_hit_rate");
    util_buf_puts(&b, "},\"model_accuracy\":");
    util_json_num(&b, p->model_accuracy);
    util_buf_puts(&b, live                ? ",\"accuracy_source\":\"live\""
                      : isfinite(backtest) ? ",\"accuracy_source\":\"backtest\""
                                           : ",\"accuracy_source\":\"none\"");
    time_field(&b, "prediction_time", p->prediction_time);
    time_field(&b, "valid_until", p->valid_until);
    time_field(&b, "candle_time", p->candle_time);
    util_buf_puts(&b, ",\"entry\":");
    util_json_num(&b, sig->entry);
    util_buf_puts(&b, ",\"stop_loss\":");
    util_json_num(&b, sig->stop_loss);
    util_buf_puts(&b, ",\"take_profits\":[");
    for (int i = 0; i < INFERENCE_NTP; i++) {
        util_buf_printf(&b, "%s{\"level\":%d,\"price\":", i ? "," : "", i + 1);
        util_json_num(&b, sig->tp[i]);
        util_buf_puts(&b, "}");
    }
    util_buf_puts(&b, "],\"tp_eta_minutes\":");
    util_json_num(&b, isfinite(sig->eta_candles)
                          ? round(sig->eta_candles * (double)p->tf_seconds / 60.0)
                          : NAN);
    util_buf_puts(&b, ",\"levels_for\":");
    util_json_str(&b, inference_class_name(sig->levels_for));
    util_buf_puts(&b, ",\"atr\":");
    util_json_num(&b, atr);
    util_buf_printf(&b, ",\"model\":{\"version\":%u,\"label\":", p->version);
    const char *label = registry_version_label(v);
    if (label)
        util_json_str(&b, label);
    else
        util_buf_puts(&b, "null");
    util_buf_puts(&b, ",\"series\":");
    util_json_str(&b, registry_version_owner(v));
    util_buf_puts(&b, ",\"kind\":");
    util_json_str(&b, kind_name(inference_model_kind(m)));
    time_field(&b, "trained_at", meta->trained_at);
    util_buf_puts(&b, ",\"test_accuracy\":");
    util_json_num(&b, meta->test_accuracy);
    util_buf_puts(&b, ",\"baseline_accuracy\":");
    util_json_num(&b, meta->baseline_accuracy);
    predict__render_model_figures(&b, meta, inference_model_policy(m));
    util_buf_puts(&b, "}");
    util_buf_printf(&b, ",\"data\":{\"candles\":%zu,\"gaps\":%d}", window, p->gaps);
    util_buf_puts(&b, ",\"tick\":");
    util_json_num(&b, sig->tick > 0 ? sig->tick : NAN);
    util_buf_puts(&b, sig->tick > 0 ? (exchange_tick ? ",\"tick_source\":\"exchange\""
                                                      : ",\"tick_source\":\"candles\"")
                                    : ",\"tick_source\":null");
    /* warnings fixed at computation; predict_render appends the timely ones */
    util_buf_puts(&b, ",\"warnings\":[");
    int nw = 0;
    const inference_policy *pol = inference_model_policy(m);
    if (p->no_trade_reason == INFERENCE_NT_TICK && p->direction == INFERENCE_NO_TRADE)
        util_buf_printf(&b, "%s\"levels under the tick: stop %.10g and TP1 %.10g are not %d ticks of "
                        "%.10g from entry %.10g\"", nw++ ? "," : "", sig->stop_loss, sig->tp[0],
                        INFERENCE_MIN_TICKS, sig->tick, sig->entry);
    if (p->no_trade_reason == INFERENCE_NT_COST && p->direction == INFERENCE_NO_TRADE)
        util_buf_printf(&b, "%s\"cost: the risk %.10g is under %.3g round trips of %.3g bps "
                        "(%.10g)\"", nw++ ? "," : "", fabs(sig->entry - sig->stop_loss),
                        pol->min_risk_costs, pol->cost_bps, pol->cost_bps / 1e4 * sig->entry);
    if (registry_meta_metric(meta, "beats_baseline") == 0)
        util_buf_printf(&b,
                        "%s\"model below baseline: test log-loss %.4f against majority %.4f and "
                        "persistence %.4f; hit rate of calls %.4f against majority %.4f and "
                        "persistence %.4f\"",
                        nw++ ? "," : "", registry_meta_metric(meta, "log_loss"),
                        registry_meta_metric(meta, "baseline_log_loss"),
                        registry_meta_metric(meta, "persistence_log_loss"),
                        registry_meta_metric(meta, "hit_rate_calls"),
                        registry_meta_metric(meta, "baseline_hit_rate_calls"),
                        registry_meta_metric(meta, "persistence_hit_rate_calls"));
    p->n_warnings = nw;
    if (!util_buf_ok(&b)) {
        util_buf_cleanup(&b);
        return PD_ENOMEM;
    }
    p->fragment_len = b.len;
    p->fragment = util_buf_steal(&b);
    return 0;
}

void predict_render(util_buf *b, const predict_result *p, int64_t now)
{
    int64_t staleness = now - p->candle_close;
    if (staleness < 0)
        staleness = 0;
    bool overdue = now >= p->valid_until;
    bool old_data = staleness > PREDICT_STALE_TFS * p->tf_seconds;
    bool stale = overdue || old_data || p->stale_data;
    bool expired = p->max_age_s > 0 && p->trained_at > 0 && now - p->trained_at > p->max_age_s;
    util_buf_append(b, p->fragment, p->fragment_len);
    const char *sep = p->n_warnings > 0 ? "," : "";
    if (p->gaps > 0) {
        util_buf_printf(b, "%s\"%d missing candles in the feature window\"", sep, p->gaps);
        sep = ",";
    }
    if (overdue) {
        char ts[32];
        util_buf_printf(b, "%s\"overdue: valid until %s; no newer candle has been predicted\"",
                        sep, util_rfc3339(p->valid_until, ts));
        sep = ",";
    }
    if (old_data || p->stale_data) {
        util_buf_printf(b, "%s\"stale data: the last closed candle ended %lld s ago\"", sep,
                        (long long)staleness);
        sep = ",";
    }
    if (expired) {
        util_buf_printf(b, "%s\"model expired: trained %lld days ago\"", sep,
                        (long long)((now - p->trained_at) / 86400));
        sep = ",";
    }
    if (store_feed_demo()) {
        util_buf_printf(b, "%s\"%s\"", sep, PREDICT_DEMO_WARNING);
        sep = ",";
    }
    util_buf_printf(b, "],\"staleness_s\":%lld,\"stale\":%s,\"model_expired\":%s}",
                    (long long)staleness, stale ? "true" : "false", expired ? "true" : "false");
}

/* The model's test-window figures: class accuracy and hit rate of calls as
 * separate fields, the baselines, the gate's verdict and the cost. */
void predict__render_model_figures(util_buf *b, const registry_meta *meta,
                                   const inference_policy *pol)
{
    static const char *const names[][2] = {
        {"class_accuracy", "accuracy"},
        {"hit_rate_calls", "hit_rate_calls"},
        {"calls", "calls"},
        {"log_loss", "log_loss"},
        {"backtest_hit_rate", "bt_hit_rate"},
        {"backtest_trades", "bt_trades"},
        {"backtest_expectancy_r", "bt_expectancy_r"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        util_buf_printf(b, ",\"%s\":", names[i][0]);
        util_json_num(b, registry_meta_metric(meta, names[i][1]));
    }
    util_buf_puts(b, ",\"baselines\":{\"majority\":{\"log_loss\":");
    util_json_num(b, registry_meta_metric(meta, "baseline_log_loss"));
    util_buf_puts(b, ",\"hit_rate_calls\":");
    util_json_num(b, registry_meta_metric(meta, "baseline_hit_rate_calls"));
    util_buf_puts(b, "},\"persistence\":{\"log_loss\":");
    util_json_num(b, registry_meta_metric(meta, "persistence_log_loss"));
    util_buf_puts(b, ",\"hit_rate_calls\":");
    util_json_num(b, registry_meta_metric(meta, "persistence_hit_rate_calls"));
    double beats = registry_meta_metric(meta, "beats_baseline");
    util_buf_printf(b, "}},\"beats_baseline\":%s",
                    isnan(beats) ? "null" : beats != 0 ? "true" : "false");
    util_buf_puts(b, ",\"cost_bps\":");
    util_json_num(b, pol ? pol->cost_bps : NAN);
}

void predict_render_stream_message(util_buf *b, const predict_result *p, int64_t now)
{
    util_buf_puts(b, "{\"type\":\"prediction\",\"data\":");
    predict_render(b, p, now);
    util_buf_puts(b, "}");
}
