/*
 * dataset: turns candle series into labelled samples.
 *
 * Sample candle i of a series gets the feature vector
 * features_compute(fs, &c[i - window + 1], window), the very call serving
 * makes on the window ending at its latest closed candle, so a served
 * vector equals the training row bit for bit. Its label is the triple
 * barrier of labels.c with ATR(atr_period) over the same window
 * (features_atr_last), i.e. the ATR serving would put into the levels.
 * Samples whose horizon runs past the data do not exist; samples whose
 * features or ATR are undefined (a flat window) are dropped and counted.
 *
 * Not here: splitting and scaling (pipeline.c, fit.c). Runs on the calling
 * thread; features_compute's scratch is thread-local.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "training/internal.h"

void training_dataset_cleanup(training_dataset *d)
{
    if (!d)
        return;
    free(d->x);
    free(d->y);
    free(d->series);
    free(d->index);
    memset(d, 0, sizeof *d);
}

int training_dataset_build(const features_set *fs, size_t window, const inference_policy *policy,
                           const features_candle *const *series, const size_t *lens,
                           size_t n_series, const atomic_bool *cancel,
                           training_progress_fn progress, void *ud, training_dataset *out)
{
    if (!fs || !policy || (n_series && (!series || !lens)))
        return PD_EINVAL;
    if (window < features_set_min_window(fs) || window <= policy->atr_period)
        return PD_EINVAL;
    if (training__policy_check(policy, NULL, 0) != 0)
        return PD_EINVAL;
    size_t d = features_set_count(fs);
    size_t h = policy->horizon;
    size_t cap = 0;
    for (size_t s = 0; s < n_series; s++)
        if (lens[s] >= window + h)
            cap += lens[s] - h - (window - 1);

    training_dataset ds;
    memset(&ds, 0, sizeof ds);
    ds.d = d;
    if (cap == 0)
        return PD_ENODATA;
    ds.x = malloc(cap * d * sizeof *ds.x);
    ds.y = malloc(cap * sizeof *ds.y);
    ds.series = malloc(cap * sizeof *ds.series);
    ds.index = malloc(cap * sizeof *ds.index);
    int rc = PD_ENOMEM;
    if (!ds.x || !ds.y || !ds.series || !ds.index)
        goto fail;

    size_t done = 0;
    for (size_t s = 0; s < n_series; s++) {
        const features_candle *c = series[s];
        size_t n = lens[s];
        if (n < window + h)
            continue;
        for (size_t i = window - 1; i + h < n; i++, done++) {
            if ((done & 1023) == 0) {
                if (cancel && atomic_load(cancel)) {
                    rc = PD_ECANCELED;
                    goto fail;
                }
                if (progress)
                    progress(ud, (double)done / (double)cap, "features");
            }
            const features_candle *w = &c[i - window + 1];
            double *row = ds.x + ds.n * d;
            int r = features_compute(fs, w, window, row);
            if (r == PD_EINVAL) {
                ds.dropped_invalid++;
                continue;
            }
            if (r != 0) {
                rc = r;
                goto fail;
            }
            double atr;
            r = features_atr_last(w, window, (int)policy->atr_period, &atr);
            training_label lab;
            if (r == 0)
                r = training_label_at(c, n, i, atr, policy, &lab);
            if (r == PD_EINVAL) {
                ds.dropped_invalid++;
                continue;
            }
            if (r != 0) {
                rc = r;
                goto fail;
            }
            ds.y[ds.n] = lab;
            ds.series[ds.n] = (uint32_t)s;
            ds.index[ds.n] = (uint32_t)i;
            ds.n++;
        }
    }
    if (progress)
        progress(ud, 1.0, "features");
    if (ds.n == 0) {
        rc = PD_ENODATA;
        goto fail;
    }
    *out = ds;
    return 0;
fail:
    training_dataset_cleanup(&ds);
    return rc;
}
