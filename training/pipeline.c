/*
 * pipeline: one training run end to end.
 *
 *   load     each symbol's closed candles in [from, to) (PostgreSQL)
 *   samples  dataset.c: features + triple-barrier labels per candle
 *   split    per series, in time order: train | gap | validation | gap |
 *            test (the most recent test_frac). A gap drops every earlier
 *            sample whose label horizon reaches the next slice's first
 *            sample candle, so no label peeks across a boundary. Pooled
 *            series are split one by one and the slices concatenated.
 *   scale    mean and population standard deviation of the train slice
 *   fit      fit.c on the train slice, early stopping and temperature on
 *            validation
 *   measure  the model is built with inference_model_build from the very
 *            message that will be written, and its test-slice
 *            probabilities come from inference_run: the metrics and golden
 *            cases are what the server will reproduce
 *   promote  with promote_if_better, the version now serving the series
 *            (its own, else _default's) runs on the same test samples with
 *            its own features and window; the new version is published
 *            only if its multiclass log-loss there is strictly lower
 *   publish  registry_publish: the next version, atomically
 *
 * Labels for the promotion comparison are the new policy's: that is the
 * promise the new version would make. Threading: runs on the caller's
 * thread; the store uses that thread's connection.
 */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "training/internal.h"
#include "store/store.h"

#ifndef PREDICTD_VERSION
#define PREDICTD_VERSION "dev"
#endif

#define MIN_TRAIN 30
#define MIN_VAL 10
#define MIN_TEST 10

typedef struct run {
    const training_params *p;
    const training_ctx *ctx;
    training_result *res;
    const features_candle *const *series;
    const size_t *lens;
    size_t n_series;
    features_set *fs;
    training_dataset ds;
    size_t *train, *val, *test;
    size_t n_train, n_val, n_test;
    double *mean, *scale, *xs;
    training__net net;
    double *test_probs; /* n_test x 3, from inference_run */
    inference_model *built;
    Predictd__Model *model; /* packed-and-unpacked: what is published */
    Predictd__Scaler *scaler;
} run;

static void progress(const run *r, double f, const char *stage)
{
    if (r->ctx && r->ctx->progress)
        r->ctx->progress(r->ctx->progress_ud, f, stage);
}

static bool canceled(const run *r)
{
    return r->ctx && r->ctx->cancel && atomic_load(r->ctx->cancel);
}

static void dataset_progress(void *ud, double f, const char *stage)
{
    progress(ud, 0.02 + 0.33 * f, stage);
}

static void fit_progress(void *ud, double f, const char *stage)
{
    progress(ud, f, stage);
}

static int say(run *r, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int say(run *r, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->res->message, sizeof r->res->message, fmt, ap);
    va_end(ap);
    return rc;
}

/* Per series: rows [a, b) in time order. Picks the slices by counts, then
 * purges by candle index. */
static int split(run *r)
{
    const training_dataset *ds = &r->ds;
    size_t h = r->p->policy.horizon;
    size_t cap = ds->n ? ds->n : 1;
    r->train = malloc(cap * sizeof(size_t));
    r->val = malloc(cap * sizeof(size_t));
    r->test = malloc(cap * sizeof(size_t));
    if (!r->train || !r->val || !r->test)
        return PD_ENOMEM;
    size_t a = 0;
    while (a < ds->n) {
        size_t b = a;
        while (b < ds->n && ds->series[b] == ds->series[a])
            b++;
        size_t n = b - a;
        size_t nt = (size_t)ceil(r->p->test_frac * (double)n);
        size_t nv = (size_t)ceil(r->p->val_frac * (double)n);
        if (nt + nv + 2 < n) {
            size_t test0 = b - nt;
            /* validation: the nv rows before test0 whose horizon ends before
             * the first test sample candle */
            size_t vend = test0;
            while (vend > a && ds->index[vend - 1] + h >= ds->index[test0])
                vend--;
            size_t val0 = vend >= a + nv ? vend - nv : a;
            size_t tend = val0;
            while (tend > a && ds->index[tend - 1] + h >= ds->index[val0])
                tend--;
            for (size_t k = a; k < tend; k++)
                r->train[r->n_train++] = k;
            for (size_t k = val0; k < vend; k++)
                r->val[r->n_val++] = k;
            for (size_t k = test0; k < b; k++)
                r->test[r->n_test++] = k;
        }
        a = b;
    }
    if (r->n_train < MIN_TRAIN || r->n_val < MIN_VAL || r->n_test < MIN_TEST)
        return say(r, PD_ENODATA,
                   "too few samples: %zu train, %zu validation, %zu test (need %d, %d, %d); "
                   "load more candles or shorten the window/horizon",
                   r->n_train, r->n_val, r->n_test, MIN_TRAIN, MIN_VAL, MIN_TEST);
    return 0;
}

static int scale_rows(run *r)
{
    size_t d = r->ds.d, n = r->ds.n;
    r->mean = calloc(d, sizeof(double));
    r->scale = calloc(d, sizeof(double));
    r->xs = malloc(n * d * sizeof(double));
    if (!r->mean || !r->scale || !r->xs)
        return PD_ENOMEM;
    for (size_t j = 0; j < d; j++) {
        double s = 0;
        for (size_t k = 0; k < r->n_train; k++)
            s += r->ds.x[r->train[k] * d + j];
        double m = s / (double)r->n_train, v = 0;
        for (size_t k = 0; k < r->n_train; k++) {
            double e = r->ds.x[r->train[k] * d + j] - m;
            v += e * e;
        }
        double sd = sqrt(v / (double)r->n_train);
        r->mean[j] = m;
        r->scale[j] = isfinite(sd) && sd > 1e-12 * (fabs(m) > 1 ? fabs(m) : 1) ? sd : 1.0;
    }
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < d; j++)
            r->xs[i * d + j] = (r->ds.x[i * d + j] - r->mean[j]) / r->scale[j];
    return 0;
}

static void data_range(run *r)
{
    int64_t from = INT64_MAX, to = INT64_MIN;
    size_t w = r->p->window, h = r->p->policy.horizon;
    for (size_t k = 0; k < r->ds.n; k++) {
        const features_candle *c = r->series[r->ds.series[k]];
        size_t i = r->ds.index[k];
        if (c[i + 1 - w].t < from)
            from = c[i + 1 - w].t;
        if (c[i + h].t > to)
            to = c[i + h].t;
    }
    r->res->data_from = from == INT64_MAX ? 0 : from;
    r->res->data_to = to == INT64_MIN ? 0 : to;
}

/* Runs the built model over the test slice (raw features, as serving). */
static int test_probabilities(run *r)
{
    size_t d = r->ds.d;
    r->test_probs = malloc(r->n_test * INFERENCE_NCLASS * sizeof(double));
    size_t ss = inference_scratch_size(r->built);
    double *scratch = malloc(ss ? ss : sizeof(double));
    if (!r->test_probs || !scratch) {
        free(scratch);
        return PD_ENOMEM;
    }
    int rc = 0;
    for (size_t k = 0; k < r->n_test && rc == 0; k++)
        rc = inference_run(r->built, r->ds.x + r->test[k] * d, r->test_probs + k * INFERENCE_NCLASS,
                           scratch);
    free(scratch);
    return rc;
}

/* The series' serving version: the target's own, else what serves it by
 * fallback (_default). Returns 0 with *v (a reference) or *v NULL when
 * nothing serves; *tmp receives a private registry to free after release. */
static int serving_version(run *r, const char *target, registry_version **v, registry **tmp)
{
    *v = NULL;
    *tmp = NULL;
    registry *reg = r->ctx ? r->ctx->reg : NULL;
    if (!reg) {
        if (!r->ctx || !r->ctx->models_dir)
            return PD_EINVAL;
        int rc = registry_new(r->ctx->models_dir, tmp);
        if (rc != 0)
            return rc;
        reg = *tmp;
        rc = registry_scan(reg, target, r->p->timeframe);
        if (rc == 0 && strcmp(target, REGISTRY_DEFAULT_SYMBOL) != 0)
            rc = registry_scan(reg, REGISTRY_DEFAULT_SYMBOL, r->p->timeframe);
        if (rc != 0 && rc != PD_ENOTFOUND) {
            LOG_WARN("training", "scanning %s for the serving version failed: %s",
                     r->ctx->models_dir, util_strerror(rc));
            return rc;
        }
    }
    int rc = registry_acquire(reg, target, r->p->timeframe, NULL, v);
    if (rc == PD_ENOMODEL || rc == PD_ENOTFOUND || rc == PD_EUNKNOWNSYM) {
        *v = NULL;
        return 0;
    }
    /* A version is there but not loaded: never "nothing serves" (that
     * would publish without the comparison). After our own synchronous
     * scan, not ready means its load ran out of memory. */
    if (rc == PD_ENOTREADY && *tmp)
        rc = PD_ENOMEM;
    return rc;
}

/*
 * Promotion rule: new and serving version on the new test slice; *better
 * is true when the new log-loss is strictly lower (or nothing serves).
 */
static int compare_with_serving(run *r, bool *better)
{
    training_result *res = r->res;
    registry_version *v = NULL;
    registry *tmp = NULL;
    double *input = NULL, *scratch = NULL;
    int rc = serving_version(r, res->target, &v, &tmp);
    if (rc != 0) {
        say(r, rc, "promotion: could not read the serving version: %s", util_strerror(rc));
        goto done;
    }
    if (!v) {
        *better = true;
        goto done;
    }
    const inference_model *old = registry_version_model(v);
    const features_set *ofs = registry_version_features(v);
    size_t steps = inference_steps(old), od = inference_n_features(old);
    size_t need = registry_version_candles(v);
    size_t ow = need - steps + 1;
    res->old_version = registry_version_number(v);
    input = malloc(steps * od * sizeof(double));
    size_t ss = inference_scratch_size(old);
    scratch = malloc(ss ? ss : sizeof(double));
    if (!input || !scratch) {
        rc = PD_ENOMEM;
        goto done;
    }
    double ll_new = 0, ll_old = 0;
    size_t compared = 0;
    for (size_t k = 0; k < r->n_test; k++) {
        size_t row = r->test[k];
        const features_candle *c = r->series[r->ds.series[row]];
        size_t i = r->ds.index[row];
        if (i + 1 < need)
            continue;
        bool ok = true;
        for (size_t s = 0; s < steps && ok; s++) {
            size_t end = i - (steps - 1 - s);
            ok = features_compute(ofs, &c[end + 1 - ow], ow, input + s * od) == 0;
        }
        double po[INFERENCE_NCLASS];
        if (!ok || inference_run(old, input, po, scratch) != 0)
            continue;
        int y = r->ds.y[row].cls;
        double qn = r->test_probs[k * INFERENCE_NCLASS + y], qo = po[y];
        ll_new -= log(qn > 1e-15 ? qn : 1e-15);
        ll_old -= log(qo > 1e-15 ? qo : 1e-15);
        compared++;
    }
    res->compared = compared;
    const char *owner = registry_version_owner(v);
    bool fallback = owner && strcmp(owner, res->target) != 0;
    snprintf(res->old_series, sizeof res->old_series, "%s", owner ? owner : res->target);
    if (compared == 0) {
        *better = false;
        say(r, 0,
            "not promoted: the serving version %s%s%" PRIu32
            " could not be evaluated on any test sample (its window needs %zu candles)",
            fallback ? owner : "", fallback ? " v" : "v", res->old_version, need);
        goto done;
    }
    res->new_log_loss = ll_new / (double)compared;
    res->old_log_loss = ll_old / (double)compared;
    *better = res->new_log_loss < res->old_log_loss;
    say(r, 0, "%s: log-loss %.5f vs %.5f of the serving %s%s%" PRIu32 " on %zu test samples",
        *better ? "promoted" : "not promoted (not better)", res->new_log_loss, res->old_log_loss,
        fallback ? owner : "", fallback ? " v" : "v", res->old_version, compared);
done:
    free(input);
    free(scratch);
    registry_release(v);
    registry_free(tmp);
    return rc;
}

static void add_info_metrics(run *r, const training__fit_out *fo)
{
    training_result *res = r->res;
    training__metric_add(res, "temperature", fo->temperature);
    training__metric_add(res, "epochs_run", fo->epochs_run);
    training__metric_add(res, "best_epoch", fo->best_epoch);
    training__metric_add(res, "val_log_loss", fo->val_nll);
    training__metric_add(res, "train_samples", (double)r->n_train);
    training__metric_add(res, "val_samples", (double)r->n_val);
    training__metric_add(res, "test_samples", (double)r->n_test);
}

/*
 * A fit that learned nothing must not become a model (with force it is
 * published flagged degenerate and beats_baseline 0, so it answers
 * NO_TRADE below_baseline): the initial weights
 * kept (best epoch 0 after training epochs; epochs 0 asks for the initial
 * weights on purpose and meets the baseline gate instead), a validation window of one class (the temperature
 * and early stopping saw no choice to make), or a temperature at the
 * bound of its search (certainty or indifference, not calibration).
 */
static int degenerate_why(run *r, const training__fit_out *fo);
static int degenerate(run *r, const training__fit_out *fo)
{
    int rc = degenerate_why(r, fo);
    if (rc == 0 || !r->p->force)
        return rc;
    /* force publishes it, flagged: it is gated as below its baselines */
    LOG_WARN("training", "%s/%s: %s; published anyway (force), answering NO_TRADE",
             r->res->target, r->p->timeframe, r->res->message);
    training__metric_add(r->res, "degenerate", 1);
    r->res->message[0] = '\0';
    return 0;
}

static int degenerate_why(run *r, const training__fit_out *fo)
{
    size_t seen[INFERENCE_NCLASS] = {0};
    for (size_t k = 0; k < r->n_val; k++)
        seen[r->ds.y[r->val[k]].cls]++;
    int classes = (seen[0] > 0) + (seen[1] > 0) + (seen[2] > 0);
    if (classes < 2)
        return say(r, PD_EINVAL,
                   "degenerate fit: the validation window holds one class (%zu samples, all %s); "
                   "widen the range or change the policy",
                   r->n_val,
                   inference_class_name(seen[0] ? INFERENCE_LONG
                                                : seen[1] ? INFERENCE_SHORT : INFERENCE_NO_TRADE));
    if (fo->best_epoch == 0 && fo->epochs_run > 0)
        return say(r, PD_EINVAL,
                   "degenerate fit: the best epoch was 0 (the initial weights beat every trained "
                   "epoch on validation): nothing was learned");
    if (fo->temperature <= 0.0501 || fo->temperature >= 19.99)
        return say(r, PD_EINVAL,
                   "degenerate fit: the calibration temperature %.4g is at the bound of its "
                   "search [0.05, 20]",
                   fo->temperature);
    return 0;
}

static void run_cleanup(run *r)
{
    features_set_free(r->fs);
    training_dataset_cleanup(&r->ds);
    free(r->train);
    free(r->val);
    free(r->test);
    free(r->mean);
    free(r->scale);
    free(r->xs);
    free(r->test_probs);
    training__net_cleanup(&r->net);
    inference_model_free(r->built);
    if (r->model)
        predictd__model__free_unpacked(r->model, NULL);
    if (r->scaler)
        predictd__scaler__free_unpacked(r->scaler, NULL);
}

static void result_init(training_result *res, const training_params *p)
{
    memset(res, 0, sizeof *res);
    res->outcome = TRAINING_NOT_PUBLISHED;
    res->test_accuracy = res->baseline_accuracy = NAN;
    res->new_log_loss = res->old_log_loss = NAN;
    res->temperature = NAN;
    snprintf(res->target, sizeof res->target, "%s", training_params_target(p));
}

int training_run_candles(const training_params *p, const training_ctx *ctx,
                         const features_candle *const *series, const size_t *lens, size_t n_series,
                         training_result *res)
{
    run r;
    memset(&r, 0, sizeof r);
    r.p = p;
    r.ctx = ctx;
    r.res = res;
    r.series = series;
    r.lens = lens;
    r.n_series = n_series;
    result_init(res, p);
    int rc;
    char why[200];
    training__export *ex = NULL;

    if ((rc = training_params_validate(p, why, sizeof why)) != 0) {
        say(&r, rc, "%s", why);
        goto done;
    }
    if (n_series != p->n_symbols) {
        rc = say(&r, PD_EINVAL, "%zu series given for %zu symbols", n_series, p->n_symbols);
        goto done;
    }
    if (p->publish && (!ctx || !ctx->models_dir)) {
        rc = say(&r, PD_EINVAL, "no models directory to publish into");
        goto done;
    }
    if ((rc = training__params_features(p, &r.fs, why, sizeof why)) != 0) {
        say(&r, rc, "features: %s", why);
        goto done;
    }

    /* samples */
    progress(&r, 0.02, "features");
    rc = training_dataset_build(r.fs, p->window, &p->policy, series, lens, n_series,
                                ctx ? ctx->cancel : NULL, dataset_progress, &r, &r.ds);
    if (rc == PD_ENODATA) {
        say(&r, rc,
            "no sample: every series is shorter than window + horizon (%" PRIu32 " + %" PRIu32
            " candles)",
            p->window, p->policy.horizon);
        goto done;
    }
    if (rc != 0) {
        say(&r, rc, "building samples: %s", util_strerror(rc));
        goto done;
    }
    res->samples = r.ds.n;
    data_range(&r);
    if ((rc = split(&r)) != 0)
        goto done;
    res->train = r.n_train;
    res->val = r.n_val;
    res->test = r.n_test;
    if ((rc = scale_rows(&r)) != 0)
        goto done;

    /* fit */
    size_t count[INFERENCE_NCLASS] = {0};
    for (size_t k = 0; k < r.n_train; k++)
        count[r.ds.y[r.train[k]].cls]++;
    double cw[INFERENCE_NCLASS], prior[INFERENCE_NCLASS];
    for (int c = 0; c < INFERENCE_NCLASS; c++) {
        cw[c] = count[c] ? (double)r.n_train / (INFERENCE_NCLASS * (double)count[c]) : 0.0;
        prior[c] = (double)count[c] / (double)r.n_train;
    }
    util_rng rng;
    util_rng_seed(&rng, p->seed);
    rc = training__net_init(&r.net, r.ds.d, p->hidden, p->kind == TRAINING_MLP ? p->n_hidden : 0,
                            &rng);
    if (rc != 0)
        goto done;
    training__fit_opts fo = {
        .epochs = training__params_epochs(p),
        .batch = p->batch,
        .lr = training__params_lr(p),
        .l2 = p->l2,
        .patience = p->patience,
        .seed = p->seed,
        .cancel = ctx ? ctx->cancel : NULL,
        .progress = fit_progress,
        .ud = &r,
        .p_from = 0.35,
        .p_to = 0.92,
    };
    training__fit_out fout;
    progress(&r, 0.35, "fit");
    rc = training__fit(&r.net, r.xs, r.ds.y, r.train, r.n_train, r.val, r.n_val, cw, &fo, &fout);
    if (rc != 0) {
        say(&r, rc, "%s", rc == PD_ECANCELED ? "canceled" : util_strerror(rc));
        goto done;
    }
    res->epochs_run = fout.epochs_run;
    res->temperature = fout.temperature;
    add_info_metrics(&r, &fout);
    if ((rc = degenerate(&r, &fout)) != 0)
        goto done;
    if (canceled(&r)) {
        rc = say(&r, PD_ECANCELED, "canceled");
        goto done;
    }

    /* the model as it will be written */
    progress(&r, 0.93, "evaluate");
    inference_policy pol = p->policy;
    double eta_tp[INFERENCE_NTP];
    if ((rc = training__eta_medians(r.ds.y, r.train, r.n_train, pol.eta_candles, eta_tp)) != 0)
        goto done;
    ex = calloc(1, sizeof *ex);
    if (!ex) {
        rc = PD_ENOMEM;
        goto done;
    }
    training__export_init(ex, &r.net, p->kind, r.fs, p->window, fout.temperature, &pol, eta_tp,
                          r.mean, r.scale);
    rc = inference_model_build(&ex->model, &ex->scaler, &r.built, why, sizeof why);
    if (rc == PD_ENOMEM)
        goto done;
    if (rc != 0) {
        LOG_ERROR("training", "the trained model does not build: %s", why);
        say(&r, PD_EVERIFY, "the trained model does not build: %s", why);
        rc = PD_EVERIFY;
        goto done;
    }
    if ((rc = test_probabilities(&r)) != 0) {
        say(&r, rc, "running the model on the test slice: %s", util_strerror(rc));
        goto done;
    }
    training__eval_in ev = {
        .probs = r.test_probs,
        .y = r.ds.y,
        .idx = r.test,
        .n = r.n_test,
        .min_confidence = p->policy.min_confidence,
    };
    memcpy(ev.prior, prior, sizeof prior);
    training__evaluate(&ev, res);
    training__gate_in gi = {
        .ds = &r.ds,
        .series = series,
        .lens = lens,
        .n_series = n_series,
        .train = r.train,
        .n_train = r.n_train,
        .test = r.test,
        .n_test = r.n_test,
        .test_probs = r.test_probs,
        .pol = &p->policy,
        .window = p->window,
    };
    memcpy(gi.prior, prior, sizeof prior);
    if ((rc = training__gate(&gi, res)) != 0)
        goto done;
    if (training_result_metric(res, "degenerate") == 1)
        training__metric_add(res, "beats_baseline", 0);

    /* golden cases: evenly spaced test rows */
    size_t ng = r.n_test < TRAINING_GOLDEN ? r.n_test : TRAINING_GOLDEN;
    double gin[TRAINING_GOLDEN * TRAINING_MAX_FEATURES], gp[TRAINING_GOLDEN * INFERENCE_NCLASS];
    for (size_t g = 0; g < ng; g++) {
        size_t k = ng > 1 ? g * (r.n_test - 1) / (ng - 1) : 0;
        memcpy(gin + g * r.ds.d, r.ds.x + r.test[k] * r.ds.d, r.ds.d * sizeof(double));
        memcpy(gp + g * INFERENCE_NCLASS, r.test_probs + k * INFERENCE_NCLASS,
               INFERENCE_NCLASS * sizeof(double));
    }
    training__export_golden(ex, ng, gin, gp, r.ds.d);

    /* meta */
    ex->meta.trained_at = p->now ? p->now : util_now();
    ex->meta.symbol = res->target;
    for (size_t i = 0; i < p->n_symbols; i++)
        ex->symbols_p[i] = (char *)p->symbols[i];
    ex->meta.n_symbols = p->n_symbols;
    ex->meta.symbols = ex->symbols_p;
    ex->meta.timeframe = (char *)p->timeframe;
    ex->meta.data_from = res->data_from;
    ex->meta.data_to = res->data_to;
    ex->meta.train_samples = r.n_train;
    ex->meta.test_samples = r.n_test;
    ex->meta.test_accuracy = res->test_accuracy;
    ex->meta.baseline_accuracy = res->baseline_accuracy;
    ex->meta.trainer = (char *)"predictd-train " PREDICTD_VERSION;
    ex->meta.seed = p->seed;
    char notes[160];
    snprintf(notes, sizeof notes,
             "%s; triple barrier sl %.3g ATR, tp %.3g/%.3g/%.3g R, horizon %" PRIu32
             "; %zu validation samples",
             p->kind == TRAINING_MLP ? "mlp" : "softmax", p->policy.sl_atr, p->policy.tp_r[0],
             p->policy.tp_r[1], p->policy.tp_r[2], p->policy.horizon, r.n_val);
    ex->meta.notes = notes;
    training__export_metrics(ex, res);
    if ((rc = training__export_pack(ex, &r.model, &r.scaler)) != 0)
        goto done;

    /* What the registry will do: rebuild from the written bytes and
     * reproduce the golden cases. A failure here is a trainer bug. */
    {
        inference_model *check = NULL;
        rc = inference_model_build(r.model, r.scaler, &check, why, sizeof why);
        if (rc == 0)
            rc = inference_check_golden(check, r.model, 1e-9, why, sizeof why);
        inference_model_free(check);
        if (rc == PD_ENOMEM)
            goto done;
        if (rc != 0) {
            LOG_ERROR("training", "the packed model does not reproduce: %s", why);
            rc = say(&r, PD_EVERIFY, "the packed model does not reproduce: %s", why);
            goto done;
        }
    }

    if (!p->publish) {
        res->outcome = TRAINING_NOT_PUBLISHED;
        say(&r, 0, "trained; not published (publish off)");
        rc = 0;
        goto done;
    }
    if (training_result_metric(res, "beats_baseline") == 0 && !p->force) {
        res->outcome = TRAINING_BELOW_BASELINE;
        say(&r, 0,
            "below_baseline: not published: test log-loss %.4f against majority %.4f and "
            "persistence %.4f; hit rate of calls %.4f against majority %.4f and persistence "
            "%.4f (force publishes it, answering NO_TRADE)",
            training_result_metric(res, "log_loss"),
            training_result_metric(res, "baseline_log_loss"),
            training_result_metric(res, "persistence_log_loss"),
            training_result_metric(res, "hit_rate_calls"),
            training_result_metric(res, "baseline_hit_rate_calls"),
            training_result_metric(res, "persistence_hit_rate_calls"));
        LOG_INFO("training", "%s/%s %s", res->target, p->timeframe, res->message);
        rc = 0;
        goto done;
    }
    if (p->promote_if_better) {
        progress(&r, 0.96, "compare");
        bool better = false;
        if ((rc = compare_with_serving(&r, &better)) != 0)
            goto done;
        if (!better) {
            res->outcome = TRAINING_REJECTED;
            LOG_INFO("training", "%s/%s %s", res->target, p->timeframe, res->message);
            rc = 0;
            goto done;
        }
    }
    if (canceled(&r)) {
        rc = say(&r, PD_ECANCELED, "canceled");
        goto done;
    }
    progress(&r, 0.99, "publish");
    uint32_t version = 0;
    rc = registry_publish(ctx->models_dir, res->target, p->timeframe, r.model, r.scaler, &version);
    if (rc != 0) {
        say(&r, rc, "publishing into %s failed: %s", ctx->models_dir, util_strerror(rc));
        goto done;
    }
    res->version = version;
    res->outcome = TRAINING_PUBLISHED;
    if (res->old_version)
        snprintf(res->message + strlen(res->message), sizeof res->message - strlen(res->message),
                 "; published v%" PRIu32, version);
    else
        say(&r, 0, "published %s/%s v%" PRIu32, res->target, p->timeframe, version);
    LOG_INFO("training", "published %s/%s v%" PRIu32 ": test accuracy %.4f (baseline %.4f)",
             res->target, p->timeframe, version, res->test_accuracy, res->baseline_accuracy);
    if (ctx->reg) {
        int src = registry_scan(ctx->reg, res->target, p->timeframe);
        if (src != 0)
            LOG_WARN("training", "rescan of %s/%s after publishing failed: %s", res->target,
                     p->timeframe, util_strerror(src));
        registry_announce(ctx->reg, res->target, p->timeframe); /* the other replicas */
    }
    progress(&r, 1.0, "done");
    rc = 0;
done:
    if (rc != 0 && !res->message[0])
        say(&r, rc, "%s", util_strerror(rc));
    free(ex);
    run_cleanup(&r);
    return rc;
}

int training_run(const training_params *p, const training_ctx *ctx, training_result *res)
{
    char why[200];
    int rc = training_params_validate(p, why, sizeof why);
    if (rc != 0) {
        result_init(res, p);
        snprintf(res->message, sizeof res->message, "%s", why);
        return rc;
    }
    features_candle *series[TRAINING_MAX_SYMBOLS] = {0};
    size_t lens[TRAINING_MAX_SYMBOLS] = {0};
    int64_t now = p->now ? p->now : util_now();
    for (size_t i = 0; i < p->n_symbols; i++) {
        if (ctx && ctx->progress)
            ctx->progress(ctx->progress_ud, 0.02 * (double)i / (double)p->n_symbols, "load");
        rc = store_load_range(p->symbols[i], p->timeframe, p->from, p->to, now, &series[i],
                                 &lens[i]);
        if (rc == 0 && lens[i] == 0)
            rc = PD_EUNKNOWNSYM;
        if (rc != 0) {
            result_init(res, p);
            snprintf(res->message, sizeof res->message, "loading %s/%s: %s", p->symbols[i],
                     p->timeframe,
                     rc == PD_EUNKNOWNSYM ? "no candles in that range" : util_strerror(rc));
            goto done;
        }
        if (ctx && ctx->cancel && atomic_load(ctx->cancel)) {
            result_init(res, p);
            snprintf(res->message, sizeof res->message, "canceled");
            rc = PD_ECANCELED;
            goto done;
        }
    }
    rc = training_run_candles(p, ctx, (const features_candle *const *)series, lens, p->n_symbols,
                              res);
done:
    for (size_t i = 0; i < p->n_symbols; i++)
        free(series[i]);
    return rc;
}
