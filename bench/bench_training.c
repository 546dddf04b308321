/*
 * Training speed on synthetic candles (feed_seed_series), pinned to one
 * CPU as the background worker is:
 *
 *   samples   features_compute + triple-barrier label for 50,000 windows of
 *             200 candles (the dataset build every run starts with)
 *   softmax   a whole softmax run on those 50,000 samples of the 14 default
 *             features (split, scale, Adam with early stopping, temperature,
 *             test metrics through the inference kernel, golden cases);
 *             target: under 10 s
 *   mlp       14-64-32-3, exactly 20 epochs (no early stop); target: under
 *             60 s
 *
 * Prints one line per figure. Nothing is published. Figures vary with the
 * machine and its load; the targets are what `make bench` should show.
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "training/training.h"
#include "feed/feed.h"

#define NOW INT64_C(1700000000)
#define SAMPLES 50000

static void pin_one_cpu(void)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0)
        return;
    int last = -1;
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &set))
            last = c;
    if (last < 0)
        return;
    CPU_ZERO(&set);
    CPU_SET(last, &set);
    if (sched_setaffinity(0, sizeof set, &set) == 0)
        printf("pinned to cpu %d\n", last);
}

static int run(const char *label, training_params *p, const features_candle *c, size_t n,
               double target_s)
{
    const features_candle *s[1] = {c};
    size_t l[1] = {n};
    training_result *r = calloc(1, sizeof *r);
    if (!r)
        return 1;
    double t0 = util_now_precise();
    int rc = training_run_candles(p, NULL, s, l, 1, r);
    double dt = util_now_precise() - t0;
    if (rc != 0) {
        printf("%s: failed: %s (%s)\n", label, util_strerror(rc), r->message);
        free(r);
        return 1;
    }
    printf("%-10s %6.2f s  (%zu samples: train %zu, val %zu, test %zu; %d epochs, %.1f ms/epoch "
           "incl. validation; test acc %.4f vs baseline %.4f)  target < %.0f s: %s\n",
           label, dt, r->samples, r->train, r->val, r->test, r->epochs_run,
           r->epochs_run ? 1000 * dt / r->epochs_run : 0.0, r->test_accuracy, r->baseline_accuracy,
           target_s, dt < target_s ? "ok" : "MISSED");
    free(r);
    return 0;
}

int main(void)
{
    util_log_configure(UTIL_LOG_WARN, false);
    pin_one_cpu();
    size_t n = SAMPLES + 199 + 16;
    features_candle *c = NULL;
    if (feed_seed_series("BTCUSDT", "15m", NOW, n, 1, &c) != 0) {
        printf("seed failed\n");
        return 1;
    }

    /* samples alone */
    size_t nd;
    const char *const *specs = features_default_specs(&nd);
    features_set *fs = NULL;
    if (features_set_new(specs, nd, &fs, NULL, 0) != 0)
        return 1;
    inference_policy pol;
    training_policy_default(&pol);
    const features_candle *s[1] = {c};
    size_t l[1] = {n};
    training_dataset ds;
    double t0 = util_now_precise();
    int rc = training_dataset_build(fs, 200, &pol, s, l, 1, NULL, NULL, NULL, &ds);
    double dt = util_now_precise() - t0;
    if (rc != 0) {
        printf("dataset failed: %s\n", util_strerror(rc));
        return 1;
    }
    printf(
        "samples    %6.2f s  (%zu windows of 200 candles, %.1f us each: features + ATR + label)\n",
        dt, ds.n, 1e6 * dt / (double)ds.n);
    training_dataset_cleanup(&ds);
    features_set_free(fs);

    training_params p;
    training_params_default(&p);
    training_params_set(&p, "symbols", "BTCUSDT", NULL, 0);
    training_params_set(&p, "timeframe", "15m", NULL, 0);
    p.now = NOW;
    p.publish = false;
    int bad = run("softmax", &p, c, n, 10);

    /* a fixed amount of softmax work: 100 epochs */
    training_params q = p;
    q.epochs = 100;
    q.patience = 100000;
    bad |= run("softmax100", &q, c, n, 10);

    training_params m = p;
    training_params_set(&m, "kind", "mlp", NULL, 0);
    training_params_set(&m, "hidden", "64,32", NULL, 0);
    m.epochs = 20;
    m.patience = 100000;
    bad |= run("mlp", &m, c, n, 60);
    free(c);
    return bad;
}
