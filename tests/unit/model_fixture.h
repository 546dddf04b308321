/*
 * model_fixture.h: one softmax model + scaler as protobuf messages, for the
 * unit tests that publish and load real model files (test_registry,
 * test_faults): 14 default features, window 100, 3 golden cases whose
 * outputs come from inference_run on the built model itself. Those goldens
 * come from the code under test on purpose: the files using this test the
 * repository and its failure handling, not the maths (test_inference does,
 * against independent values).
 *
 * All storage is inside struct fx: do not copy one (the messages point into
 * it). Include after unit.h; everything is static.
 */
#ifndef PREDICTD_UNIT_MODEL_FIXTURE_H
#define PREDICTD_UNIT_MODEL_FIXTURE_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "features/features.h"
#include "proto/model.pb-c.h"
#include "inference/inference.h"

#define NF 14
#define NG 3

typedef struct fx {
    Predictd__Model m;
    Predictd__Dense d;
    Predictd__Dense *layers[1];
    Predictd__SignalPolicy pol;
    double tp[3];
    Predictd__TrainingMeta meta;
    Predictd__Metric metric; /* meta.metrics[0] when a test sets it */
    Predictd__Metric *metrics[1];
    Predictd__GoldenCase g[NG];
    Predictd__GoldenCase *gp[NG];
    double gin[NG][NF];
    double gout[NG][3];
    double w[3 * NF], b[3];
    char *feat[NF];
    char *cls[3];
    Predictd__Scaler s;
    double mean[NF], scale[NF];
} fx;

/* Fills f deterministically from seed and computes its golden outputs.
 * trainer goes into the training metadata. Policy and metadata (not the
 * weights) may be changed afterwards: the goldens do not depend on them. */
static void fx_init(fx *f, unsigned seed, const char *trainer)
{
    memset(f, 0, sizeof *f);
    size_t nspec = 0;
    const char *const *specs = features_default_specs(&nspec);
    if (nspec != NF) {
        printf("  features_default_specs returned %zu specs, want %d\n", nspec, NF);
        abort();
    }
    for (int i = 0; i < NF; i++)
        f->feat[i] = (char *)specs[i];
    f->cls[0] = "LONG";
    f->cls[1] = "SHORT";
    f->cls[2] = "NO_TRADE";
    for (int i = 0; i < 3 * NF; i++)
        f->w[i] = 0.3 * sin(0.7 * i + seed);
    for (int i = 0; i < 3; i++)
        f->b[i] = 0.1 * cos(i + seed);
    for (int i = 0; i < NF; i++) {
        f->mean[i] = i == 0 ? 50.0 : 0.01 * i; /* feature 0 is an RSI */
        f->scale[i] = i == 0 ? 10.0 : 1.0 + 0.1 * i;
    }
    predictd__dense__init(&f->d);
    f->d.in = NF;
    f->d.out = 3;
    f->d.n_weights = 3 * NF;
    f->d.weights = f->w;
    f->d.n_bias = 3;
    f->d.bias = f->b;
    f->d.activation = PREDICTD__ACTIVATION__LINEAR;
    f->layers[0] = &f->d;

    predictd__signal_policy__init(&f->pol);
    f->pol.sl_atr = 1.5;
    f->tp[0] = 1;
    f->tp[1] = 2;
    f->tp[2] = 3;
    f->pol.n_tp_r = 3;
    f->pol.tp_r = f->tp;
    f->pol.horizon = 12;
    f->pol.min_confidence = 0.4;
    f->pol.atr_period = 14;

    predictd__training_meta__init(&f->meta);
    f->meta.trained_at = 1700000000 + seed;
    f->meta.symbol = "BTCUSDT";
    f->meta.timeframe = "15m";
    f->meta.test_accuracy = 0.5;
    f->meta.trainer = (char *)trainer;
    predictd__metric__init(&f->metric);
    f->metrics[0] = &f->metric;

    predictd__model__init(&f->m);
    f->m.format = 1;
    f->m.kind = PREDICTD__MODEL_KIND__SOFTMAX;
    f->m.n_features = NF;
    f->m.features = f->feat;
    f->m.window = 100;
    f->m.n_classes = 3;
    f->m.classes = f->cls;
    f->m.temperature = 1;
    f->m.n_layers = 1;
    f->m.layers = f->layers;
    f->m.policy = &f->pol;
    f->m.meta = &f->meta;

    predictd__scaler__init(&f->s);
    f->s.n_features = NF;
    f->s.features = f->feat;
    f->s.n_mean = NF;
    f->s.mean = f->mean;
    f->s.n_scale = NF;
    f->s.scale = f->scale;

    for (int g = 0; g < NG; g++) {
        for (int i = 0; i < NF; i++)
            f->gin[g][i] = (i == 0 ? 50.0 : 0.0) + sin(1.3 * i + 2.1 * g + seed);
        predictd__golden_case__init(&f->g[g]);
        f->g[g].n_input = NF;
        f->g[g].input = f->gin[g];
        f->g[g].n_probabilities = 3;
        f->g[g].probabilities = f->gout[g];
        f->gp[g] = &f->g[g];
    }
    f->m.n_golden = NG;
    f->m.golden = f->gp;

    /* Golden outputs from the kernel itself, so they are consistent. */
    inference_model *im = NULL;
    char why[256];
    if (inference_model_build(&f->m, &f->s, &im, why, sizeof why) != 0) {
        printf("  fixture does not build: %s\n", why);
        abort();
    }
    void *scratch = malloc(inference_scratch_size(im) + 8);
    for (int g = 0; g < NG; g++)
        if (inference_run(im, f->gin[g], f->gout[g], scratch) != 0)
            abort();
    free(scratch);
    inference_model_free(im);
}

#endif
