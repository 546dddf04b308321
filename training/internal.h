/*
 * training internals shared by the module's files; not part of its public
 * contract (names use the training__ prefix). Everything here is pure
 * computation on caller-owned memory unless noted.
 */
#ifndef PREDICTD_TRAINING_INTERNAL_H
#define PREDICTD_TRAINING_INTERNAL_H

#include <stdio.h>

#include "training/training.h"

/* ---------------------------------------------------------------------------
 * Random draws over util_rng (never rand(): a seed gives the same model on
 * every libc).
 */
double training__rng_normal(util_rng *r); /* N(0, 1), Box-Muller */
void training__rng_shuffle(util_rng *r, size_t *v, size_t n);

/* ---------------------------------------------------------------------------
 * Dense networks: dim[0] inputs, hidden ReLU layers, 3 linear outputs.
 * Parameters live in one array: for layer l, W (dim[l+1] x dim[l],
 * row-major, proto Dense layout) at w_off[l], then b at b_off[l].
 */
typedef struct training__net {
    size_t n_layers;
    size_t dim[TRAINING_MAX_HIDDEN + 2];
    size_t w_off[TRAINING_MAX_HIDDEN + 1];
    size_t b_off[TRAINING_MAX_HIDDEN + 1];
    size_t n_params;
    double *p;
} training__net;

/* Shapes the net and initialises it: He-normal weights for ReLU layers,
 * Glorot-normal for the output, zero biases; a softmax (no hidden layer)
 * starts at zero (uniform probabilities). */
int training__net_init(training__net *net, size_t d_in, const uint32_t *hidden, size_t n_hidden,
                       util_rng *rng);
void training__net_cleanup(training__net *net);
/* Doubles of scratch training__net_logits needs. */
size_t training__net_scratch(const training__net *net);
/* Logits of one scaled input. */
void training__net_logits(const training__net *net, const double *x, double *scratch,
                          double logits[INFERENCE_NCLASS]);

/* ---------------------------------------------------------------------------
 * Fitting: Adam on class-weighted cross-entropy with L2 on weights,
 * shuffled mini-batches, the class weights' prior shift undone in the
 * output bias, early stopping on the validation NLL (the best epoch's
 * parameters are kept), then a temperature fitted on the validation NLL.
 */
typedef struct training__fit_opts {
    int32_t epochs;
    uint32_t batch;
    double lr, l2;
    uint32_t patience;
    uint64_t seed;
    const atomic_bool *cancel;
    training_progress_fn progress;
    void *ud;
    double p_from, p_to; /* progress range this fit reports into */
} training__fit_opts;

typedef struct training__fit_out {
    int epochs_run;
    int best_epoch;  /* 0: the initial parameters were best */
    double val_loss; /* validation NLL of the kept parameters at T = 1 */
    double temperature;
    double val_nll; /* validation NLL at that temperature */
} training__fit_out;

/* xs: scaled rows (n x net->dim[0]), indexed by train[] and val[]. Returns
 * 0, PD_ECANCELED or PD_ENOMEM; net holds the kept parameters. */
int training__fit(training__net *net, const double *xs, const training_label *y,
                  const size_t *train, size_t n_train, const size_t *val, size_t n_val,
                  const double cw[INFERENCE_NCLASS], const training__fit_opts *o,
                  training__fit_out *out);

/* The temperature in [0.05, 20] minimising the NLL of softmax(logits / T)
 * over n rows (golden-section search on 1/T, where the NLL is convex). */
double training__fit_temperature(const double *logits, const training_label *y, const size_t *idx,
                                 size_t n);

/* ---------------------------------------------------------------------------
 * Evaluation of probabilities (n x 3, enum inference_class order) against
 * labels. Appends metrics to res (see evaluate.c for the names).
 */
typedef struct training__eval_in {
    const double *probs;
    const training_label *y;
    const size_t *idx; /* rows of y evaluated, probs row k for idx[k] */
    size_t n;
    double min_confidence;
    double prior[INFERENCE_NCLASS]; /* train class frequencies */
} training__eval_in;

void training__evaluate(const training__eval_in *in, training_result *res);
/* Mean -ln p[label] (probabilities floored at 1e-15). */
double training__log_loss(const double *probs, const training_label *y, const size_t *idx,
                          size_t n);
void training__metric_add(training_result *res, const char *name, double value);

/* ---------------------------------------------------------------------------
 * Export: a model message assembled over the trainer's memory (the Dense
 * weights point into the net, the scaler into mean/scale, the features
 * into the set's names): valid while those live. Pack it to get
 * protobuf-c-owned copies.
 */
#define TRAINING_GOLDEN 8

typedef struct training__export {
    Predictd__Model model;
    Predictd__Dense dense[TRAINING_MAX_HIDDEN + 1];
    Predictd__Dense *dense_p[TRAINING_MAX_HIDDEN + 1];
    Predictd__SignalPolicy policy;
    double tp_r[INFERENCE_NTP], eta[2], eta_tp[INFERENCE_NTP];
    Predictd__TrainingMeta meta;
    Predictd__Metric metric[TRAINING_MAX_METRICS];
    Predictd__Metric *metric_p[TRAINING_MAX_METRICS];
    Predictd__GoldenCase golden[TRAINING_GOLDEN];
    Predictd__GoldenCase *golden_p[TRAINING_GOLDEN];
    char *features_p[TRAINING_MAX_FEATURES];
    char *classes_p[INFERENCE_NCLASS];
    char *symbols_p[TRAINING_MAX_SYMBOLS];
    Predictd__Scaler scaler;
} training__export;

void training__export_init(training__export *e, const training__net *net, int kind,
                           const features_set *fs, uint32_t window, double temperature,
                           const inference_policy *pol, const double eta_tp[INFERENCE_NTP],
                           const double *mean, const double *scale);
/* Points meta.metrics at res's metrics (res must outlive e's use). */
void training__export_metrics(training__export *e, const training_result *res);
/* n golden cases (at most TRAINING_GOLDEN): inputs n x d, probs n x 3. */
void training__export_golden(training__export *e, size_t n, const double *inputs,
                             const double *probs, size_t d);
/* Packs and unpacks model and scaler: new protobuf-c-owned messages. */
int training__export_pack(const training__export *e, Predictd__Model **model,
                          Predictd__Scaler **scaler);

/* ---------------------------------------------------------------------------
 * Labels and policies.
 */
int training__policy_check(const inference_policy *p, char *why, size_t whylen);
/* Median candles to TP1 per side (LONG, SHORT) and to each TP level among
 * the labelled trades of idx[0..n-1] that reached it; NaN when none. */
int training__eta_medians(const training_label *y, const size_t *idx, size_t n, double eta[2],
                          double eta_tp[INFERENCE_NTP]);

/* ---------------------------------------------------------------------------
 * Parameters.
 */
/* Resolves the params' feature specs (or the default set). */
int training__params_features(const training_params *p, features_set **out, char *why,
                              size_t whylen);
/* Epochs and learning rate after the kind's defaults. */
int32_t training__params_epochs(const training_params *p);
double training__params_lr(const training_params *p);

#endif
