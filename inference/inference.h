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

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/model.pb-c.h"

/* Output classes in the API's canonical order. */
enum inference_class { INFERENCE_LONG = 0, INFERENCE_SHORT = 1, INFERENCE_NO_TRADE = 2 };
#define INFERENCE_NCLASS 3
#define INFERENCE_NTP 3

/* Limits inference_model_build enforces so that a hostile or broken file
 * cannot make the server allocate absurdly: any one width (features,
 * layer in/out, channels, kernel, padding, hidden size, steps); the values
 * a built model stores, weights and biases with output rows padded to 8
 * and a tree node counting 4 (its size in doubles), so at most 400 MB; the
 * run scratch; and the feature window. */
#define INFERENCE_MAX_WIDTH 65536u
#define INFERENCE_MAX_PARAMS 50000000u
#define INFERENCE_MAX_SCRATCH_BYTES (64u << 20)
#define INFERENCE_MAX_WINDOW 100000u

typedef struct inference_model inference_model;

/* Signal policy as plain numbers (see SignalPolicy in proto/model.proto). */
typedef struct inference_policy {
    double sl_atr;
    double tp_r[INFERENCE_NTP];
    uint32_t horizon;
    double min_confidence;
    uint32_t atr_period;
    int64_t max_age_s;
    double eta_candles[2];                /* LONG, SHORT; NaN when unknown */
    double eta_candles_tp[INFERENCE_NTP]; /* per TP level; NaN when unknown */
} inference_policy;

/*
 * Builds a model from an unpacked Model and Scaler. Checks: format, kind,
 * classes (a permutation of LONG/SHORT/NO_TRADE), layer shapes chained from
 * the feature count to 3 outputs, tree indices in range and acyclic, all
 * weights and scaler values finite, scale non-zero, policy sane, the
 * INFERENCE_MAX_* limits. Does not resolve feature names (the registry does,
 * with the features module) and does not run golden cases
 * (inference_check_golden does).
 *
 * scaler may be NULL only for a tree ensemble with scaled_input false (the
 * one kind that never reads it); when given it is always checked: mean and
 * scale of n_features values, scale non-zero, and its features, when
 * listed, equal to the model's.
 *
 * Returns 0 and a new model in *out (free with inference_model_free); on a
 * bad file PD_EVERIFY with a one-line reason in why naming the field, e.g.
 * "layers[1]: weights has 100 values, expected 32x64=2048"; PD_ENOMEM;
 * PD_EINVAL when msg or out is NULL. why may be NULL. The messages are only
 * read (the model copies what it needs, as doubles) and may be freed after.
 *
 * Semantics, matching the libraries the importers read:
 * - Trees compare the double feature value with the double threshold
 *   (x < t or x <= t). scikit-learn and XGBoost compare float32 features;
 *   an importer reproduces that exactly by writing, per node, the double
 *   threshold at which the float32 rounding of x flips the comparison
 *   (tools/predictd_model.py does). default_left is checked but, since
 *   inference_run rejects NaN inputs, never decides a path.
 * - Conv1d is PyTorch's cross-correlation (no kernel flip), stride 1,
 *   dilation 1, zero padding on both ends. LSTM is torch.nn.LSTM with one
 *   layer, h0 = c0 = 0, gates i, f, g, o; its final hidden state feeds
 *   the head. Without an LSTM the last conv output step (or, without
 *   convs, the last scaled input step) does. GELU is the exact (erf) form.
 * - All arithmetic is in double; each sum runs in input order. On CPUs
 *   with AVX2+FMA the multiply-adds are fused and tanh/sigmoid come from
 *   vectorised code within a few ulp of libm, so results can differ from
 *   another machine's in the last bits (never near golden tolerances).
 */
int inference_model_build(const Predictd__Model *msg, const Predictd__Scaler *scaler,
                          inference_model **out, char *why, size_t whylen);
void inference_model_free(inference_model *m); /* NULL is a no-op */

size_t inference_n_features(const inference_model *m);
/* Feature vectors one input holds: 1, or the sequence model's steps. */
size_t inference_steps(const inference_model *m);
/* Bytes of scratch inference_run needs for this model. */
size_t inference_scratch_size(const inference_model *m);
/* The model's signal policy, borrowed from m: atr_period already defaulted
 * (14 when the file says 0), unknown ETAs NaN. */
const inference_policy *inference_model_policy(const inference_model *m);
/* The model kind (PREDICTD__MODEL_KIND__SOFTMAX, ...). */
int inference_model_kind(const inference_model *m);

/*
 * Runs the model. input: steps x n_features raw (unscaled) feature values,
 * oldest step first. Writes probabilities in enum inference_class order
 * (whatever the file's class order). scratch: at least
 * inference_scratch_size() bytes, aligned for double, not shared between
 * concurrent calls; its contents on entry do not matter.
 * Returns 0, or PD_EINVAL (probs untouched) when an input is not finite or
 * the logits overflow to a non-finite value (an input far outside the
 * range the model was trained on). Thread-safe; no allocation, no locks,
 * no I/O.
 */
int inference_run(const inference_model *m, const double *input, double probs[INFERENCE_NCLASS],
                  void *scratch);

/*
 * Runs every golden case of msg (the message m was built from): each input
 * must hold steps x n_features values and each probabilities list 3 values
 * in the FILE's class order (msg->classes), not enum inference_class
 * order. Returns 0 when every probability is within tol (absolute) of the
 * expected one, and also when there are no golden cases (whether that is
 * acceptable is the registry's call); else PD_EVERIFY with the first
 * failing case in why (why may be NULL); PD_ENOMEM; PD_EINVAL on NULL
 * arguments. Allocates and frees its own scratch. Thread-safe.
 */
int inference_check_golden(const inference_model *m, const Predictd__Model *msg, double tol,
                           char *why, size_t whylen);

/* A directional call with its levels. */
typedef struct inference_signal {
    enum inference_class direction;  /* NO_TRADE when confidence is below min */
    enum inference_class levels_for; /* LONG or SHORT: the side the levels are for */
    double confidence;               /* probability of the chosen direction */
    double entry, stop_loss, tp[INFERENCE_NTP];
    double eta_candles; /* median candles to TP1, NaN if unknown */
} inference_signal;

/*
 * Turns probabilities (enum inference_class order) into a signal:
 * - direction: the most probable class (ties go to the earlier of LONG,
 *   SHORT, NO_TRADE); NO_TRADE when its probability is below
 *   policy->min_confidence. confidence is the probability of direction.
 * - levels_for: LONG when P(LONG) >= P(SHORT), else SHORT. Levels are
 *   always filled for that side, even when direction is NO_TRADE, from
 *   entry (the last close) and atr:
 *   LONG:  stop = entry - sl_atr * atr, risk = entry - stop,
 *          tp[k] = entry + tp_r[k] * risk;
 *   SHORT: stop = entry + sl_atr * atr, risk = stop - entry,
 *          tp[k] = entry - tp_r[k] * risk.
 * - eta_candles: policy->eta_candles for levels_for (NaN when unknown).
 * Returns 0 and fills *out; PD_EINVAL (out untouched) when an argument is
 * NULL, entry or atr is not finite and positive, a probability is not
 * finite, or a level would not be a positive price (the LONG stop or a
 * SHORT take-profit at or below zero: the ATR is too large for the entry
 * under this policy; no level is ever made up). Thread-safe.
 */
int inference_signal_make(const inference_policy *policy, const double probs[INFERENCE_NCLASS],
                          double entry, double atr, inference_signal *out);

/* ---------------------------------------------------------------------------
 * The triple barrier: what the market did after a call. The one
 * implementation behind the training labels (training/labels.c) and the
 * ledger's resolver (predict/resolver.c), so a label and a live outcome
 * apply the same rules to the same candles.
 *
 * A barrier is one side's trade: an entry, a stop and three take-profits
 * (ascending away from the entry). It is fed the candles after the entry
 * one at a time, each with its index j (1 = the first candle after the
 * entry; the caller decides how j is counted). Rules:
 * - a candle whose range reaches the stop ends the trade, even when it
 *   also reaches a target (inside one candle the order is unknown and the
 *   pessimistic reading is the honest one);
 * - else every take-profit the candle reaches is noted with its j (a
 *   farther level implies the nearer ones), and TP3 ends the trade;
 * - mfe/mae are the largest favourable and adverse excursions, in units
 *   of risk (|entry - stop|), over the candles fed while it was open.
 */
typedef struct inference_barrier {
    int dir;                      /* +1 LONG, -1 SHORT */
    double entry, stop, risk;     /* risk = |entry - stop| > 0 */
    double tp[INFERENCE_NTP];     /* take-profits, ascending away from entry */
    uint32_t hit[INFERENCE_NTP];  /* j of the first candle reaching tp[k] before the stop; 0: never */
    uint32_t stopped;             /* j of the candle that reached the stop; 0: not stopped */
    uint32_t last;                /* j of the last candle fed while open; 0: none */
    double last_close;            /* that candle's close; NaN: none */
    double mfe, mae;              /* >= 0, in units of risk */
    bool done;                    /* stopped or TP3 reached: later candles are ignored */
} inference_barrier;

/* Sets b up for one side. Returns 0, or PD_EINVAL (b untouched) when dir is
 * not +1/-1, the entry is not finite and positive, the stop or a
 * take-profit is not finite, the stop is not on the losing side of the
 * entry, or the take-profits are not ordered away from it (a level at or
 * below zero is allowed: no price reaches it). Thread-safe. */
int inference_barrier_init(inference_barrier *b, int dir, double entry, double stop,
                           const double tp[INFERENCE_NTP]);

/* Feeds one candle with index j (> the previous one fed). Returns true
 * when this candle reached TP1 before the stop (the side "wins" here). A
 * done barrier ignores the candle and returns false. Thread-safe on
 * distinct barriers. */
bool inference_barrier_step(inference_barrier *b, double high, double low, double close,
                            uint32_t j);

/* The realised class of a pair of barriers (LONG and SHORT, same entry and
 * risk): the side whose TP1 came first; NO_TRADE when both came in the same
 * candle, or both sides are done without a win. -1 while undecided (the
 * caller says NO_TRADE once the horizon is complete). *j (may be NULL) gets
 * the deciding candle's index. */
int inference_barrier_class(const inference_barrier *lng, const inference_barrier *sht,
                            uint32_t *j);

/* "LONG", "SHORT", "NO_TRADE"; "UNKNOWN" for any other value. Static. */
const char *inference_class_name(enum inference_class c);
/* Parses a class name (exact, case-sensitive); -1 if unknown or NULL. */
int inference_class_parse(const char *s);

/* The instruction set inference_run uses on this CPU: "avx2" (AVX2 with
 * FMA) or "generic" (SSE2/NEON-width vectors). For logs and build info. */
const char *inference_kernels_name(void);

/* Numerically stable softmax of n logits divided by temperature, in place:
 * v[i] = exp(v[i]/T - max) / sum. A temperature that is not a positive
 * finite number means 1. n == 0 is a no-op. */
void inference_softmax(double *v, size_t n, double temperature);

#endif
