/*
 * consensus.c: one direction and strength from the answers of several
 * timeframes of a symbol, by the rule written in predict.h (accuracy-
 * weighted, probability-weighted votes of the fresh answers of models that
 * beat their baselines). Pure and thread-safe; no allocation.
 */
#include <math.h>

#include "inference/inference.h"
#include "predict/predict_internal.h"

void predict_consensus_of(const predict_result *const *ps, const char *const *tfs, size_t n,
                          int64_t now, predict_consensus *out)
{
    predict_consensus c = {.direction = INFERENCE_NO_TRADE};
    if (n > PREDICT_CONSENSUS_MAX)
        n = PREDICT_CONSENSUS_MAX;
    bool votes[PREDICT_CONSENSUS_MAX] = {false};
    double sum = 0, weights = 0;
    for (size_t i = 0; i < n; i++) {
        const predict_result *p = ps[i];
        bool stale = !p || now >= p->valid_until || p->stale_data;
        if (stale || p->no_trade_reason == INFERENCE_NT_BASELINE) {
            c.excluded[c.n_excluded++] = tfs[i];
            continue;
        }
        votes[i] = true;
        double w = isfinite(p->model_accuracy) ? p->model_accuracy : 0.5;
        double v = p->direction == INFERENCE_LONG    ? p->probs[INFERENCE_LONG]
                   : p->direction == INFERENCE_SHORT ? -p->probs[INFERENCE_SHORT]
                                                     : 0;
        sum += w * v;
        weights += w;
    }
    c.score = weights > 0 ? sum / weights : 0;
    c.strength = fabs(c.score);
    if (c.strength >= PREDICT_CONSENSUS_MIN_STRENGTH)
        c.direction = c.score > 0 ? INFERENCE_LONG : INFERENCE_SHORT;
    for (size_t i = 0; i < n; i++) {
        if (!votes[i])
            continue;
        int d = ps[i]->direction;
        if (d == c.direction)
            c.agree[c.n_agree++] = tfs[i];
        else if (d == INFERENCE_NO_TRADE)
            c.neutral[c.n_neutral++] = tfs[i];
        else
            c.disagree[c.n_disagree++] = tfs[i];
    }
    *out = c;
}

static void names(util_buf *b, const char *key, const char *const *v, size_t n)
{
    util_buf_printf(b, ",\"%s\":[", key);
    for (size_t i = 0; i < n; i++) {
        if (i)
            util_buf_puts(b, ",");
        util_json_str(b, v[i]);
    }
    util_buf_puts(b, "]");
}

void predict_consensus_json(const predict_consensus *c, util_buf *b)
{
    util_buf_puts(b, "{\"direction\":");
    util_json_str(b, inference_class_name((enum inference_class)c->direction));
    util_buf_puts(b, ",\"strength\":");
    util_json_fixed(b, c->strength, 6);
    util_buf_puts(b, ",\"score\":");
    util_json_fixed(b, c->score, 6);
    names(b, "agree", c->agree, c->n_agree);
    names(b, "disagree", c->disagree, c->n_disagree);
    names(b, "neutral", c->neutral, c->n_neutral);
    names(b, "excluded", c->excluded, c->n_excluded);
    util_buf_puts(b, "}");
}
