/*
 * training: predictd's own trainer. Candles in, a published model version
 * out: triple-barrier labels built with the model's signal policy, feature
 * vectors computed by the very function serving uses, a time-ordered
 * walk-forward split with purge gaps, softmax regression or an MLP fitted
 * in pure C (deterministic for a seed), temperature calibration, test
 * metrics against a majority baseline, golden cases, an optional promotion
 * gate against the version already serving, and background jobs for the
 * admin API.
 *
 *   labels     triple-barrier labels and candles-to-target (pure)
 *   dataset    samples: features + labels per candle, the split (pure)
 *   net, fit   the networks, Adam, early stopping, temperature (pure)
 *   evaluate   test metrics and the promotion comparison (pure)
 *   export     protobuf Model and Scaler messages, golden cases (pure)
 *   pipeline   load (PostgreSQL), train, compare, publish (I/O)
 *   params     parameters: defaults, a name/value setter, JSON
 *   jobs       one worker thread running queued jobs, persisted
 *
 * Threading: everything but jobs runs on the calling thread and shares no
 * mutable state, so independent runs may proceed on different threads (the
 * store uses the calling thread's own database connection). The jobs API is
 * thread-safe; see its section.
 */
#ifndef PREDICTD_TRAINING_H
#define PREDICTD_TRAINING_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "features/features.h"
#include "store/store.h"
#include "inference/inference.h"
#include "registry/registry.h"
#include "util/util.h"

/* Model kinds the trainer fits; the values are proto ModelKind's. */
enum training_kind { TRAINING_SOFTMAX = 1, TRAINING_MLP = 2 };

#define TRAINING_MAX_SYMBOLS 64
#define TRAINING_MAX_FEATURES 64
#define TRAINING_MAX_HIDDEN 4
#define TRAINING_MAX_METRICS 96
#define TRAINING_SPEC_LEN 48
#define TRAINING_NAME_LEN 32

/* ===========================================================================
 * Labels.
 *
 * Triple barrier with exactly the serving policy: for the sample candle i,
 * entry = close[i] and atr is ATR(policy.atr_period) over the sample's
 * feature window. LONG: stop = entry - sl_atr*atr, target k = entry +
 * tp_r[k]*(entry - stop); SHORT mirrors it. Candles i+1..i+horizon are
 * walked: a side wins when its TP1 is touched before its stop; a candle
 * touching both counts as the stop. The label is the winning side; NO_TRADE
 * when neither wins; when both win, the side whose TP1 came first, and
 * NO_TRADE when that was the same candle.
 */
typedef struct training_label {
    uint8_t cls;  /* enum inference_class */
    uint16_t eta; /* LONG/SHORT: candles from entry to TP1 (1..horizon); 0 for NO_TRADE */
    /* Winning side only: candles to TP k (k = 0..2) touched before that
     * side's stop within the horizon, 0 when not reached. eta_tp[0] == eta. */
    uint16_t eta_tp[INFERENCE_NTP];
} training_label;

/*
 * Labels the sample at candle i of c[0..n-1] with the given atr. Returns 0,
 * PD_ENODATA when the horizon runs past the data (i + horizon >= n), or
 * PD_EINVAL for a bad policy (sl_atr or tp_r not positive, tp_r not
 * ascending, horizon not 1..10000) or an atr/entry that is not finite and positive. Pure.
 */
int training_label_at(const features_candle *c, size_t n, size_t i, double atr,
                      const inference_policy *policy, training_label *out);

/* Writes predictd's default policy: sl_atr 1.5, tp_r {1,2,3}, horizon 16,
 * min_confidence 0.45, atr_period 14, max_age_s 30 days, eta unknown,
 * cost_bps 10, min_risk_costs 3. */
void training_policy_default(inference_policy *p);

/* ===========================================================================
 * Parameters: everything that decides what a run produces. A plain value
 * type (no pointers): copy it freely.
 */
typedef struct training_params {
    char symbols[TRAINING_MAX_SYMBOLS][TRAINING_NAME_LEN]; /* pooled when several */
    size_t n_symbols;
    /* series published: "" = the symbol when one, else "_default" */
    char target[TRAINING_NAME_LEN];
    char timeframe[8];
    int64_t from, to; /* candle open times, from <= t < to; 0 = unbounded */
    int64_t now;      /* 0 = wall clock: candles closed by then, and trained_at */
    int kind;         /* enum training_kind */
    uint32_t hidden[TRAINING_MAX_HIDDEN]; /* MLP hidden layer sizes */
    size_t n_hidden;
    int32_t epochs;       /* most epochs; < 0: the kind's default (softmax 200, mlp 60) */
    uint32_t batch;       /* mini-batch size (256) */
    double learning_rate; /* Adam step; <= 0: the kind's default (softmax 0.01, mlp 0.002) */
    double l2;            /* weight decay on weights (not biases), 1e-4 */
    uint32_t patience;    /* epochs without validation improvement before stopping (10) */
    char features[TRAINING_MAX_FEATURES][TRAINING_SPEC_LEN]; /* 0 of them: the default set */
    size_t n_features;
    uint32_t window;         /* candles per feature window (200) */
    inference_policy policy; /* barriers of the labels; eta fields are computed */
    double val_frac;         /* validation share of each series' samples (0.15) */
    double test_frac;        /* test share, the most recent (0.20) */
    uint64_t seed;           /* PRNG seed (42): same data + params + seed = same bytes */
    bool promote_if_better;  /* publish only if better than the version serving */
    bool force;              /* publish even when the model beats neither baseline */
    bool publish;            /* false: train and evaluate only (true) */
} training_params;

/* Defaults for everything; symbols and timeframe empty. */
void training_params_default(training_params *p);

/*
 * Sets one parameter from text, as the CLI flags and the admin API's JSON
 * spell them: symbols ("A,B"), target, timeframe, from, to (RFC 3339 or a
 * date), now, kind (softmax|mlp), hidden ("64,32"), epochs, batch,
 * learning_rate, l2, patience, features ("rsi:14,macd" or "default"),
 * window, sl_atr, tp_r ("1,2,3"), horizon, min_confidence, atr_period,
 * max_age_s, val_frac, test_frac, seed, promote_if_better, publish
 * (true|false|1|0). A '-' in name is read as '_'. Returns 0, or PD_EINVAL
 * with the reason in why (p unchanged) for an unknown name or a bad value.
 */
int training_params_set(training_params *p, const char *name, const char *value, char *why,
                        size_t whylen);

/* Checks the whole set (symbols, timeframe, ranges, feature specs resolve,
 * window >= the features' minimum, ...). 0, PD_EINVAL with why, or PD_ENOMEM. */
int training_params_validate(const training_params *p, char *why, size_t whylen);

/* The target series a run publishes to. */
const char *training_params_target(const training_params *p);

/* Appends p as a JSON object (the names of training_params_set). */
void training_params_json(const training_params *p, util_buf *b);
/* Reads such an object back (keys through training_params_set, nulls
 * skipped), over the defaults. 0, PD_ENOMEM, or PD_EINVAL with why (p
 * unchanged). */
int training_params_from_json(const char *json, training_params *p, char *why, size_t whylen);
/*
 * Sets each key of a JSON object (text, len bytes) over *p through
 * training_params_set: the one reader behind training_params_from_json and
 * the admin API's job bodies. "symbol" is read as "symbols"; a null value is
 * skipped when skip_null, else refused. Returns 0 (*p updated), PD_ENOMEM, PD_EPARSE
 * (not a JSON object, or no text), or PD_EINVAL: a value that is not a scalar or a list
 * of scalars (its key in bad_key, why untouched), or one training_params_set
 * refuses (why says why). *p is unchanged on error. Does not validate the
 * whole set (training_params_validate).
 */
int training_params_apply_json(const char *text, size_t len, bool skip_null, training_params *p,
                               char *bad_key, size_t keylen, char *why, size_t whylen);

/* ===========================================================================
 * Datasets: one row per labelled sample.
 */
typedef struct training_dataset {
    size_t n;               /* samples */
    size_t d;               /* features per sample */
    double *x;              /* n x d raw features, row-major */
    training_label *y;      /* label per sample */
    uint32_t *series;       /* the series (index into the input arrays) per sample */
    uint32_t *index;        /* the sample's candle index within its series */
    size_t dropped_invalid; /* samples skipped: a feature or the ATR was undefined */
} training_dataset;

/* Progress: fraction 0..1 of the whole run and a short stage name
 * ("features", "fit", ...). Called on the running thread. */
typedef void (*training_progress_fn)(void *ud, double fraction, const char *stage);

/*
 * Builds the samples of n_series series (each oldest first): every candle i
 * with window-1 <= i and i + horizon < len, whose features are
 * features_compute(fs, &c[i - window + 1], window) and whose label is
 * training_label_at with features_atr_last over the same window. Rows are
 * grouped by series, in time order. Returns 0, PD_ENODATA when no sample
 * remains, PD_EINVAL (window < features_set_min_window), PD_ECANCELED when
 * *cancel becomes true, PD_ENOMEM. The caller cleans *out up with
 * training_dataset_cleanup. progress (optional) gets fractions 0..1.
 */
int training_dataset_build(const features_set *fs, size_t window, const inference_policy *policy,
                           const features_candle *const *series, const size_t *lens,
                           size_t n_series, const atomic_bool *cancel,
                           training_progress_fn progress, void *ud, training_dataset *out);
void training_dataset_cleanup(training_dataset *d);

/* ===========================================================================
 * Runs.
 */
typedef struct training_metric {
    char name[32];
    double value;
} training_metric;

typedef enum training_outcome {
    TRAINING_PUBLISHED,    /* a new version was written */
    TRAINING_REJECTED,     /* --promote-if-better kept the serving version */
    TRAINING_NOT_PUBLISHED, /* publish was off */
    TRAINING_BELOW_BASELINE /* beats neither baseline on the test window; not published
                               (publish with force) */
} training_outcome;

/* What one run did. Filled as far as the run got. */
typedef struct training_result {
    training_outcome outcome;
    uint32_t version; /* published version, 0 when none */
    char target[TRAINING_NAME_LEN];
    size_t samples, train, val, test;
    int64_t data_from, data_to; /* open times of the first and last candle used */
    double test_accuracy, baseline_accuracy;
    int epochs_run;
    double temperature;
    training_metric metrics[TRAINING_MAX_METRICS];
    size_t n_metrics;
    /* Promotion: the serving version compared with, 0 when none; the
     * log-losses of both on the compared test samples. */
    uint32_t old_version;
    char old_series[TRAINING_NAME_LEN]; /* where it serves from: the target or "_default" */
    double new_log_loss, old_log_loss;
    size_t compared;
    char message[256]; /* a one-line summary, or why it was rejected */
} training_result;

/* The value of a named metric in r, NaN when absent. */
double training_result_metric(const training_result *r, const char *name);

/* Where a run writes and how it reports. All fields optional but models_dir
 * when publishing. */
typedef struct training_ctx {
    const char *models_dir; /* the repository to publish into */
    registry *reg;          /* the serving registry (promotion, rescan after
                               publishing); NULL: a private one is made
                               over models_dir when promotion needs it */
    training_progress_fn progress;
    void *progress_ud;
    const atomic_bool *cancel; /* checked between samples, epochs and batches */
} training_ctx;

/*
 * Trains on candles in memory (series i is series[i][0..lens[i]-1], oldest
 * first, of p->symbols[i]) and, when p->publish, publishes (or with
 * p->promote_if_better maybe rejects) a version of training_params_target(p).
 * Returns 0 with *res filled (published, rejected or not published), or a
 * negative code: PD_EINVAL (bad params, why in res->message), PD_ENODATA
 * (too few samples), PD_ECANCELED, PD_EIO (publishing), PD_ENOMEM, PD_EVERIFY
 * (the model did not rebuild: a bug). res is written on success and on
 * failure (message says why).
 */
int training_run_candles(const training_params *p, const training_ctx *ctx,
                         const features_candle *const *series, const size_t *lens, size_t n_series,
                         training_result *res);

/*
 * Loads each symbol's candles (store_load_range, closed by p->now) and
 * runs training_run_candles. Needs store_init() with a database.
 * Additional errors: PD_EDB, PD_EUNKNOWNSYM (a symbol without candles).
 */
int training_run(const training_params *p, const training_ctx *ctx, training_result *res);

/* Prints res as a readable table (metrics, baseline, promotion) to f. */
void training_result_print(const training_result *res, FILE *f);

/* ===========================================================================
 * Background jobs (admin API).
 *
 * One worker thread runs one job at a time from a FIFO queue, at nice 10
 * and pinned to one CPU, so serving keeps the other cores. The queue is
 * the database's training_jobs table, shared by every replica on it: a
 * job queued through one replica is claimed by the first idle worker of
 * any (FOR UPDATE SKIP LOCKED), its running worker refreshes a heartbeat
 * with its progress and stage every second and stops when a cancel was
 * requested through any replica; reads come from the table, so every
 * replica answers alike. A running job without a heartbeat for 15 s lost
 * its worker and is marked failed ("interrupted") by any replica; a
 * restarting replica leaves live replicas' jobs alone. Jobs publish with the params' promote_if_better,
 * and rescan the registry's series after publishing.
 *
 * THREAD SAFETY: every function below may be called from any thread
 * concurrently (one mutex guards the running job; the worker holds it only
 * to copy and update state). Snapshots are copies owned by the caller.
 */
typedef enum training_job_state {
    TRAINING_JOB_QUEUED,
    TRAINING_JOB_RUNNING,
    TRAINING_JOB_SUCCEEDED, /* a version was published */
    TRAINING_JOB_FAILED,
    TRAINING_JOB_CANCELED,
    TRAINING_JOB_REJECTED, /* trained, but not better than the serving version */
    TRAINING_JOB_BELOW_BASELINE /* trained, beats neither baseline: not published */
} training_job_state;

/* "queued", "running", "succeeded", "failed", "canceled", "rejected",
 * "below_baseline". */
const char *training_job_state_name(training_job_state s);
bool training_job_state_final(training_job_state s);

/* A snapshot of one job. */
typedef struct training_job_info {
    int64_t id;
    training_job_state state;
    char symbol[TRAINING_NAME_LEN]; /* the target series */
    char timeframe[8];
    double progress;                         /* 0..1 */
    char stage[24];                          /* what the running job does now */
    uint32_t version;                        /* published version, 0 when none */
    double test_accuracy, baseline_accuracy; /* NaN until known */
    training_metric metrics[TRAINING_MAX_METRICS];
    size_t n_metrics;
    char error[256];                             /* failed: the error; rejected: why */
    char params_json[4096];                      /* the parameters as JSON */
    int64_t created_at, started_at, finished_at; /* Unix seconds, 0 = not yet */
    bool scheduled;                              /* queued by the retrain schedule */
} training_job_info;

/* Appends j as a JSON object: id, state, symbol, timeframe, progress, stage,
 * version, metrics{}, error, params{}, created_at... (RFC 3339 or null). */
void training_job_json(const training_job_info *j, util_buf *b);

typedef struct training_jobs training_jobs;

typedef struct training_jobs_config {
    const char *models_dir;     /* required; copied */
    registry *reg;              /* optional: borrowed, must outlive the jobs */
    const char *database_url;   /* required: the training_jobs table is the queue and the
                                   history. Jobs use their own connection (store_jobs_open);
                                   training itself needs store_init() done */
    int64_t retrain_interval_s; /* PREDICTD_RETRAIN_INTERVAL; 0 = no schedule */
    int nice;                   /* worker niceness (10) */
    size_t keep;                /* jobs listed when no limit is given (50) */
    bool (*is_leader)(void *arg); /* optional: the schedule runs only while it says true
                                     (replicas: the leader's); called from the worker */
    void *leader_arg;
} training_jobs_config;

/*
 * Starts the worker thread (and the schedule when retrain_interval_s > 0),
 * marks failed the running jobs whose worker is gone (no heartbeat for
 * 15 s) and starts the heartbeat thread. Returns 0, PD_EINVAL (no
 * models_dir or database_url, a negative interval), PD_ENOMEM, or PD_EDB
 * when the table cannot be read.
 */
int training_jobs_start(const training_jobs_config *cfg, training_jobs **out);
/* Stops this process's running job, joins the threads and frees
 * everything. The queued jobs stay for the other replicas and the running
 * one goes back to the queue (unless a cancel was requested), to start over on whichever
 * replica claims it. NULL is a no-op. */
void training_jobs_stop(training_jobs *j);

/* Queues a job (params are validated and copied). Returns 0 and its id, or
 * PD_EINVAL (why filled), PD_EBUSY (why filled) when a job for the same
 * series is queued or running or the queue is full (16 waiting),
 * PD_ENOTREADY while stopping, PD_EDB when the record cannot be
 * written, or PD_ENOMEM (nothing queued). */
int training_jobs_submit(training_jobs *j, const training_params *p, int64_t *id, char *why,
                         size_t whylen);
/* A snapshot of job id, from the table. PD_ENOTFOUND when unknown, PD_EDB,
 * PD_ENOMEM. */
int training_jobs_get(training_jobs *j, int64_t id, training_job_info *out);
/* Recent jobs, newest first, at most limit (0: all kept). *out is malloc'd
 * (free() it), *n may be 0. PD_EDB, PD_ENOMEM. */
int training_jobs_list(training_jobs *j, size_t limit, training_job_info **out, size_t *n);
/* Cancels a queued job at once, or asks the running one to stop at its next
 * check (between batches; on another replica, after its next heartbeat).
 * Returns 0, PD_ENOTFOUND, PD_EINVAL when the job already finished, or
 * PD_EDB. */
int training_jobs_cancel(training_jobs *j, int64_t id);
/* A summary for /health/status and /metrics. Quick (one short lock). */
typedef struct training_jobs_stats {
    bool running;               /* a job runs now */
    size_t queued;              /* jobs waiting */
    uint64_t finished;          /* jobs that ended since start (any final state) */
    uint64_t failed;            /* of which failed */
    int64_t last_activity;      /* Unix seconds of the last start or end; 0: none yet */
    int64_t retrain_interval_s; /* the schedule; 0 = off */
    char last_error[256];       /* the last failed job's error; "" when none */
} training_jobs_stats;
void training_jobs_stats_get(training_jobs *j, training_jobs_stats *out);

/* Queues a retrain of every series with a serving version now (what the
 * schedule does each interval). Returns the number queued or a negative
 * code. Needs cfg.reg. */
int training_jobs_retrain_all(training_jobs *j);

#endif
