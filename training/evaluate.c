/*
 * evaluate: test-slice metrics of a model's probabilities and of the
 * always-majority-class baseline, in the names TrainingMeta.metrics and the
 * CLI use:
 *
 *   accuracy, precision_{long,short,no_trade}, recall_{...}, brier, log_loss
 *   calls, hit_rate_calls       LONG/SHORT calls the API would make (most
 *                               probable class, probability >= min_confidence)
 *                               and the share whose label is that side
 *   calls_long, hit_rate_long, calls_short, hit_rate_short
 *   baseline_accuracy           always the test slice's most frequent class:
 *                               the no-information rate, the strictest
 *                               constant predictor (it knows the test
 *                               slice's majority; the train slice's may
 *                               differ and would make a weaker baseline)
 *   baseline_class              that class (0 LONG, 1 SHORT, 2 NO_TRADE)
 *   baseline_log_loss, baseline_brier   the train slice's class frequencies
 *                               as probabilities (a predictor that cannot
 *                               peek)
 *   baseline_calls, baseline_hit_rate_calls   only when the majority is a
 *                               direction (for NO_TRADE the baseline calls
 *                               nothing: n/a, so absent)
 *   test_share_{long,short,no_trade}    label frequencies on the test slice
 *
 * A ratio without a denominator (precision of a class never predicted) is
 * left out rather than stored as NaN. Pure.
 */
#include <math.h>
#include <string.h>

#include "training/internal.h"

static const char *const cls_suffix[INFERENCE_NCLASS] = {"long", "short", "no_trade"};

void training__metric_add(training_result *res, const char *name, double value)
{
    if (!isfinite(value))
        return;
    for (size_t i = 0; i < res->n_metrics; i++)
        if (strcmp(res->metrics[i].name, name) == 0) {
            res->metrics[i].value = value;
            return;
        }
    if (res->n_metrics >= TRAINING_MAX_METRICS)
        return;
    training_metric *m = &res->metrics[res->n_metrics++];
    snprintf(m->name, sizeof m->name, "%s", name);
    m->value = value;
}

double training_result_metric(const training_result *r, const char *name)
{
    for (size_t i = 0; i < r->n_metrics; i++)
        if (strcmp(r->metrics[i].name, name) == 0)
            return r->metrics[i].value;
    return NAN;
}

double training__log_loss(const double *probs, const training_label *y, const size_t *idx, size_t n)
{
    if (n == 0)
        return NAN;
    double s = 0;
    for (size_t k = 0; k < n; k++) {
        double q = probs[k * INFERENCE_NCLASS + y[idx[k]].cls];
        s -= log(q > 1e-15 ? q : 1e-15);
    }
    return s / (double)n;
}

static int argmax3(const double *p)
{
    int c = 0;
    for (int k = 1; k < INFERENCE_NCLASS; k++)
        if (p[k] > p[c])
            c = k;
    return c;
}

void training__evaluate(const training__eval_in *in, training_result *res)
{
    size_t n = in->n;
    if (n == 0)
        return;
    size_t tp[INFERENCE_NCLASS] = {0}, pred[INFERENCE_NCLASS] = {0}, lab[INFERENCE_NCLASS] = {0};
    size_t correct = 0, calls[2] = {0}, hits[2] = {0};
    double brier = 0, bbrier = 0, bll = 0;
    for (size_t k = 0; k < n; k++) {
        const double *p = in->probs + k * INFERENCE_NCLASS;
        int y = in->y[in->idx[k]].cls;
        int c = argmax3(p);
        lab[y]++;
        pred[c]++;
        if (c == y) {
            correct++;
            tp[c]++;
        }
        if (c != INFERENCE_NO_TRADE && p[c] >= in->min_confidence) {
            calls[c]++;
            if (c == y)
                hits[c]++;
        }
        for (int j = 0; j < INFERENCE_NCLASS; j++) {
            double t = j == y ? 1.0 : 0.0;
            brier += (p[j] - t) * (p[j] - t);
            bbrier += (in->prior[j] - t) * (in->prior[j] - t);
        }
        double q = in->prior[y];
        bll -= log(q > 1e-15 ? q : 1e-15);
    }
    double dn = (double)n;
    char name[32];
    res->test_accuracy = (double)correct / dn;
    training__metric_add(res, "accuracy", res->test_accuracy);
    for (int c = 0; c < INFERENCE_NCLASS; c++) {
        snprintf(name, sizeof name, "precision_%s", cls_suffix[c]);
        if (pred[c])
            training__metric_add(res, name, (double)tp[c] / (double)pred[c]);
        snprintf(name, sizeof name, "recall_%s", cls_suffix[c]);
        if (lab[c])
            training__metric_add(res, name, (double)tp[c] / (double)lab[c]);
    }
    training__metric_add(res, "brier", brier / dn);
    training__metric_add(res, "log_loss", training__log_loss(in->probs, in->y, in->idx, n));
    size_t all_calls = calls[0] + calls[1], all_hits = hits[0] + hits[1];
    training__metric_add(res, "calls", (double)all_calls);
    if (all_calls)
        training__metric_add(res, "hit_rate_calls", (double)all_hits / (double)all_calls);
    for (int c = 0; c < 2; c++) {
        snprintf(name, sizeof name, "calls_%s", cls_suffix[c]);
        training__metric_add(res, name, (double)calls[c]);
        snprintf(name, sizeof name, "hit_rate_%s", cls_suffix[c]);
        if (calls[c])
            training__metric_add(res, name, (double)hits[c] / (double)calls[c]);
    }
    int majority = 0;
    for (int c = 1; c < INFERENCE_NCLASS; c++)
        if (lab[c] > lab[majority])
            majority = c;
    res->baseline_accuracy = (double)lab[majority] / dn;
    training__metric_add(res, "baseline_accuracy", res->baseline_accuracy);
    training__metric_add(res, "baseline_class", majority);
    training__metric_add(res, "baseline_log_loss", bll / dn);
    training__metric_add(res, "baseline_brier", bbrier / dn);
    if (majority != INFERENCE_NO_TRADE) {
        training__metric_add(res, "baseline_calls", dn);
        training__metric_add(res, "baseline_hit_rate_calls", res->baseline_accuracy);
    }
    for (int c = 0; c < INFERENCE_NCLASS; c++) {
        snprintf(name, sizeof name, "test_share_%s", cls_suffix[c]);
        training__metric_add(res, name, (double)lab[c] / dn);
    }
}
