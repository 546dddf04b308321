/*
 * inference: the kernel. Builds a runnable model from an unpacked model
 * file (checking every shape and value), runs it on a feature vector or a
 * window of them, and turns probabilities into a signal with levels.
 *
 * Pure computation: no I/O, no locks, no allocation on the run path (the
 * caller passes scratch memory sized by inference_scratch_size()). A built
 * inference_model is immutable and safe to share between threads.
 */
#ifndef PREDICTD_INFERENCE_H
#define PREDICTD_INFERENCE_H

#include <stddef.h>
#include <stdint.h>

#include "proto/model.pb-c.h"

/* Output classes in the API's canonical order. */
enum inference_class { INFERENCE_LONG = 0, INFERENCE_SHORT = 1, INFERENCE_NO_TRADE = 2 };
#define INFERENCE_NCLASS 3
#define INFERENCE_NTP 3

typedef struct inference_model inference_model;

/* Signal policy as plain numbers (see SignalPolicy in proto/model.proto). */
typedef struct inference_policy {
    double sl_atr;
    double tp_r[INFERENCE_NTP];
    uint32_t horizon;
    double min_confidence;
    uint32_t atr_period;
    int64_t max_age_s;
    double eta_candles[2];  /* LONG, SHORT; NaN when unknown */
} inference_policy;

/*
 * Builds a model from an unpacked Model and Scaler. Checks: format, kind,
 * classes (a permutation of LONG/SHORT/NO_TRADE), layer shapes chained from
 * the feature count to 3 outputs, tree indices in range and acyclic, all
 * weights and scaler values finite, scale non-zero, policy sane. Does not
 * resolve feature names (the registry does, with the features module) and
 * does not run golden cases (inference_check_golden does).
 * On failure returns PD_EVERIFY and writes a one-line reason into why.
 * The messages are only read; the model copies what it needs.
 */
int inference_model_build(const Predictd__Model *msg, const Predictd__Scaler *scaler,
                          inference_model **out, char *why, size_t whylen);
void inference_model_free(inference_model *m); /* NULL is a no-op */

size_t inference_n_features(const inference_model *m);
/* Feature vectors one input holds: 1, or the sequence model's steps. */
size_t inference_steps(const inference_model *m);
/* Bytes of scratch inference_run needs for this model. */
size_t inference_scratch_size(const inference_model *m);
const inference_policy *inference_model_policy(const inference_model *m);
/* The model kind (PREDICTD__MODEL_KIND__SOFTMAX, ...). */
int inference_model_kind(const inference_model *m);

/*
 * Runs the model. input: steps x n_features raw (unscaled) feature values,
 * oldest step first. Writes probabilities in enum inference_class order
 * (whatever the file's class order). scratch: at least
 * inference_scratch_size() bytes, aligned for double, not shared between
 * concurrent calls. Returns 0, or PD_EINVAL when an input is not finite.
 */
int inference_run(const inference_model *m, const double *input, double probs[INFERENCE_NCLASS],
                  void *scratch);

/* Runs every golden case; 0 when each reproduces within tol, else
 * PD_EVERIFY with the first failing case in why. Allocates its own scratch. */
int inference_check_golden(const inference_model *m, const Predictd__Model *msg, double tol,
                           char *why, size_t whylen);

/* A directional call with its levels. */
typedef struct inference_signal {
    enum inference_class direction;     /* NO_TRADE when confidence is below min */
    enum inference_class levels_for;    /* LONG or SHORT: the side the levels are for */
    double confidence;                  /* probability of the chosen direction */
    double entry, stop_loss, tp[INFERENCE_NTP];
    double eta_candles;                 /* median candles to TP1, NaN if unknown */
} inference_signal;

/*
 * Turns probabilities into a signal: the most probable class, NO_TRADE when
 * its probability is below policy->min_confidence. Levels are always filled,
 * for the most probable directional side (levels_for), from entry (the last
 * close) and atr: see SignalPolicy. Returns PD_EINVAL when entry or atr is
 * not finite and positive.
 */
int inference_signal_make(const inference_policy *policy, const double probs[INFERENCE_NCLASS],
                          double entry, double atr, inference_signal *out);

/* "LONG", "SHORT", "NO_TRADE". */
const char *inference_class_name(enum inference_class c);
/* Parses a class name; -1 if unknown. */
int inference_class_parse(const char *s);

/* Numerically stable softmax of n logits divided by temperature, in place. */
void inference_softmax(double *v, size_t n, double temperature);

#endif
