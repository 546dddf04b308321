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
                        const registry_version *v, size_t window, double atr)
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
    util_buf_puts(&b, ",\"probabilities\":{\"LONG\":");
    util_json_fixed(&b, p->probs[INFERENCE_LONG], 6);
    util_buf_puts(&b, ",\"SHORT\":");
    util_json_fixed(&b, p->probs[INFERENCE_SHORT], 6);
    util_buf_puts(&b, ",\"NO_TRADE\":");
    util_json_fixed(&b, p->probs[INFERENCE_NO_TRADE], 6);
    /* the live hit rate once enough of this version's trades resolved */
    bool live = p->live_resolved >= PREDICT_LIVE_MIN_RESOLVED;
    util_buf_puts(&b, "},\"model_accuracy\":");
    util_json_num(&b, live ? p->live_hit_rate : meta->test_accuracy);
    util_buf_puts(&b, live ? ",\"accuracy_source\":\"live\""
                           : ",\"accuracy_source\":\"backtest\"");
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
    util_buf_puts(&b, "}");
    util_buf_printf(&b, ",\"data\":{\"candles\":%zu,\"gaps\":%d}", window, p->gaps);
    util_buf_puts(&b, ",");
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
    bool stale = staleness > 2 * p->tf_seconds;
    bool expired = p->max_age_s > 0 && p->trained_at > 0 && now - p->trained_at > p->max_age_s;
    util_buf_append(b, p->fragment, p->fragment_len);
    util_buf_printf(b, "\"staleness_s\":%lld,\"stale\":%s,\"model_expired\":%s,\"warnings\":[",
                    (long long)staleness, stale ? "true" : "false", expired ? "true" : "false");
    const char *sep = "";
    if (p->gaps > 0) {
        util_buf_printf(b, "\"%d missing candles in the feature window\"", p->gaps);
        sep = ",";
    }
    if (stale) {
        util_buf_printf(b, "%s\"stale data: the last closed candle ended %lld s ago\"", sep,
                        (long long)staleness);
        sep = ",";
    }
    if (expired) {
        util_buf_printf(b, "%s\"model expired: trained %lld days ago\"", sep,
                        (long long)((now - p->trained_at) / 86400));
        sep = ",";
    }
    if (store_feed_demo())
        util_buf_printf(b, "%s\"%s\"", sep, PREDICT_DEMO_WARNING);
    util_buf_puts(b, "]}");
}

void predict_render_stream_message(util_buf *b, const predict_result *p, int64_t now)
{
    util_buf_puts(b, "{\"type\":\"prediction\",\"data\":");
    predict_render(b, p, now);
    util_buf_puts(b, "}");
}
