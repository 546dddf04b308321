/*
 * export: a trained net, its scaler and policy as proto Model and Scaler
 * messages (proto/model.proto), exactly what registry_publish writes.
 *
 * The message is first assembled over the trainer's own memory (the Dense
 * weights point into the net's parameter array), built with
 * inference_model_build to compute test probabilities and golden cases,
 * then packed and unpacked, so the caller gets ordinary protobuf-c-owned
 * messages (free with predictd__model__free_unpacked) whose bytes are what
 * the registry will read back.
 *
 * Not here: choosing the goldens' rows or metrics (pipeline.c). Pure.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "training/internal.h"

static const char *const class_names[INFERENCE_NCLASS] = {"LONG", "SHORT", "NO_TRADE"};

void training__export_init(training__export *e, const training__net *net, int kind,
                           const features_set *fs, uint32_t window, double temperature,
                           const inference_policy *pol, const double eta_tp[INFERENCE_NTP],
                           const double *mean, const double *scale)
{
    memset(e, 0, sizeof *e);
    size_t d = features_set_count(fs);
    for (size_t i = 0; i < d && i < TRAINING_MAX_FEATURES; i++)
        e->features_p[i] = (char *)features_set_name(fs, i);
    for (int c = 0; c < INFERENCE_NCLASS; c++)
        e->classes_p[c] = (char *)class_names[c];

    predictd__model__init(&e->model);
    e->model.format = 1;
    e->model.kind =
        kind == TRAINING_MLP ? PREDICTD__MODEL_KIND__MLP : PREDICTD__MODEL_KIND__SOFTMAX;
    e->model.n_features = d;
    e->model.features = e->features_p;
    e->model.window = window;
    e->model.n_classes = INFERENCE_NCLASS;
    e->model.classes = e->classes_p;
    e->model.temperature = temperature;
    for (size_t l = 0; l < net->n_layers; l++) {
        Predictd__Dense *D = &e->dense[l];
        predictd__dense__init(D);
        D->in = (uint32_t)net->dim[l];
        D->out = (uint32_t)net->dim[l + 1];
        D->n_weights = net->dim[l] * net->dim[l + 1];
        D->weights = net->p + net->w_off[l];
        D->n_bias = net->dim[l + 1];
        D->bias = net->p + net->b_off[l];
        D->activation =
            l + 1 == net->n_layers ? PREDICTD__ACTIVATION__LINEAR : PREDICTD__ACTIVATION__RELU;
        e->dense_p[l] = D;
    }
    e->model.n_layers = net->n_layers;
    e->model.layers = e->dense_p;

    predictd__signal_policy__init(&e->policy);
    e->policy.sl_atr = pol->sl_atr;
    memcpy(e->tp_r, pol->tp_r, sizeof e->tp_r);
    e->policy.n_tp_r = INFERENCE_NTP;
    e->policy.tp_r = e->tp_r;
    e->policy.horizon = pol->horizon;
    e->policy.min_confidence = pol->min_confidence;
    e->policy.atr_period = pol->atr_period;
    e->policy.max_age_s = pol->max_age_s;
    predictd__costs__init(&e->costs);
    e->costs.round_trip_bps = pol->cost_bps;
    e->costs.min_risk_costs = pol->min_risk_costs;
    e->policy.costs = &e->costs;
    /* ETA fields: NaN marks a side (or level) that never won in the train
     * slice; the fields are left out when nothing is known. */
    if (isfinite(pol->eta_candles[0]) || isfinite(pol->eta_candles[1])) {
        e->eta[0] = pol->eta_candles[0];
        e->eta[1] = pol->eta_candles[1];
        e->policy.n_eta_candles = 2;
        e->policy.eta_candles = e->eta;
    }
    if (eta_tp && (isfinite(eta_tp[0]) || isfinite(eta_tp[1]) || isfinite(eta_tp[2]))) {
        memcpy(e->eta_tp, eta_tp, sizeof e->eta_tp);
        e->policy.n_eta_candles_tp = INFERENCE_NTP;
        e->policy.eta_candles_tp = e->eta_tp;
    }
    e->model.policy = &e->policy;

    predictd__training_meta__init(&e->meta);
    e->model.meta = &e->meta;

    predictd__scaler__init(&e->scaler);
    e->scaler.n_features = d;
    e->scaler.features = e->features_p;
    e->scaler.n_mean = d;
    e->scaler.mean = (double *)mean;
    e->scaler.n_scale = d;
    e->scaler.scale = (double *)scale;
}

void training__export_metrics(training__export *e, const training_result *res)
{
    size_t n = res->n_metrics < TRAINING_MAX_METRICS ? res->n_metrics : TRAINING_MAX_METRICS;
    for (size_t i = 0; i < n; i++) {
        predictd__metric__init(&e->metric[i]);
        e->metric[i].name = (char *)res->metrics[i].name;
        e->metric[i].value = res->metrics[i].value;
        e->metric_p[i] = &e->metric[i];
    }
    e->meta.n_metrics = n;
    e->meta.metrics = e->metric_p;
}

void training__export_golden(training__export *e, size_t n, const double *inputs,
                             const double *probs, size_t d)
{
    if (n > TRAINING_GOLDEN)
        n = TRAINING_GOLDEN;
    for (size_t g = 0; g < n; g++) {
        predictd__golden_case__init(&e->golden[g]);
        e->golden[g].n_input = d;
        e->golden[g].input = (double *)inputs + g * d;
        e->golden[g].n_probabilities = INFERENCE_NCLASS;
        e->golden[g].probabilities = (double *)probs + g * INFERENCE_NCLASS;
        e->golden_p[g] = &e->golden[g];
    }
    e->model.n_golden = n;
    e->model.golden = e->golden_p;
}

int training__export_pack(const training__export *e, Predictd__Model **model,
                          Predictd__Scaler **scaler)
{
    int rc = PD_ENOMEM;
    size_t ml = predictd__model__get_packed_size(&e->model);
    size_t sl = predictd__scaler__get_packed_size(&e->scaler);
    uint8_t *mb = malloc(ml ? ml : 1), *sb = malloc(sl ? sl : 1);
    Predictd__Model *m = NULL;
    Predictd__Scaler *s = NULL;
    if (!mb || !sb)
        goto done;
    predictd__model__pack(&e->model, mb);
    predictd__scaler__pack(&e->scaler, sb);
    m = predictd__model__unpack(NULL, ml, mb);
    s = predictd__scaler__unpack(NULL, sl, sb);
    if (!m || !s) {
        if (m)
            predictd__model__free_unpacked(m, NULL);
        if (s)
            predictd__scaler__free_unpacked(s, NULL);
        goto done;
    }
    *model = m;
    *scaler = s;
    rc = 0;
done:
    free(mb);
    free(sb);
    return rc;
}
