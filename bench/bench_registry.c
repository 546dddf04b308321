/*
 * bench_registry: how fast a published version starts serving, and what a
 * request pays to take and drop a reference.
 *
 *   registry_publish      write model.pb/scaler.pb/MANIFEST, fsync, rename
 *   registry_swap         registry_scan() of the series after a publish:
 *                         list, verify (hashes, unpack, build, golden cases),
 *                         swap, unload the old one. Target: <= 50 ms.
 *   registry_acquire_release   one acquire + release, one thread and four
 *
 * Two model sizes: the 14-feature softmax and an MLP 14-256-256-3 (about
 * 70k parameters, a 0.5 MB file). Medians over 30 publishes / batches; the
 * machine is shared, so compare medians, not single runs.
 */
#define _GNU_SOURCE
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "registry/registry.h"
#include "util/util.h"

#define NF 14
#define NG 3
#define MAXL 3

/* A dense model whose storage lives in the struct (do not copy it). */
typedef struct bmodel {
    Predictd__Model m;
    Predictd__Dense d[MAXL];
    Predictd__Dense *layers[MAXL];
    double *w[MAXL], *b[MAXL];
    Predictd__SignalPolicy pol;
    double tp[3];
    Predictd__TrainingMeta meta;
    Predictd__GoldenCase g[NG];
    Predictd__GoldenCase *gp[NG];
    double gin[NG][NF], gout[NG][3];
    char *feat[NF];
    char *cls[3];
    Predictd__Scaler s;
    double mean[NF], scale[NF];
    size_t nl;
} bmodel;

static int bmodel_init(bmodel *f, const unsigned *widths, size_t nl, unsigned seed)
{
    memset(f, 0, sizeof *f);
    size_t nspec = 0;
    const char *const *specs = features_default_specs(&nspec);
    if (nspec != NF)
        return -1;
    for (int i = 0; i < NF; i++) {
        f->feat[i] = (char *)specs[i];
        f->mean[i] = i == 0 ? 50 : 0;
        f->scale[i] = i == 0 ? 10 : 1;
    }
    f->cls[0] = "LONG";
    f->cls[1] = "SHORT";
    f->cls[2] = "NO_TRADE";
    f->nl = nl;
    unsigned in = NF;
    for (size_t l = 0; l < nl; l++) {
        unsigned out = widths[l];
        f->w[l] = malloc(sizeof(double) * in * out);
        f->b[l] = malloc(sizeof(double) * out);
        if (!f->w[l] || !f->b[l])
            return -1;
        for (size_t i = 0; i < (size_t)in * out; i++)
            f->w[l][i] = sin(0.37 * (double)i + seed) / sqrt(in);
        for (unsigned i = 0; i < out; i++)
            f->b[l][i] = 0.01 * cos(i + seed);
        predictd__dense__init(&f->d[l]);
        f->d[l].in = in;
        f->d[l].out = out;
        f->d[l].n_weights = (size_t)in * out;
        f->d[l].weights = f->w[l];
        f->d[l].n_bias = out;
        f->d[l].bias = f->b[l];
        f->d[l].activation = l + 1 < nl ? PREDICTD__ACTIVATION__RELU : PREDICTD__ACTIVATION__LINEAR;
        f->layers[l] = &f->d[l];
        in = out;
    }
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
    f->meta.symbol = "BTCUSDT";
    f->meta.timeframe = "15m";
    f->meta.trainer = "bench_registry";
    predictd__model__init(&f->m);
    f->m.format = 1;
    f->m.kind = nl == 1 ? PREDICTD__MODEL_KIND__SOFTMAX : PREDICTD__MODEL_KIND__MLP;
    f->m.n_features = NF;
    f->m.features = f->feat;
    f->m.window = 100;
    f->m.n_classes = 3;
    f->m.classes = f->cls;
    f->m.temperature = 1;
    f->m.n_layers = nl;
    f->m.layers = f->layers;
    f->m.policy = &f->pol;
    f->m.meta = &f->meta;
    predictd__scaler__init(&f->s);
    f->s.n_features = NF;
    f->s.features = f->feat;
    f->s.n_mean = f->s.n_scale = NF;
    f->s.mean = f->mean;
    f->s.scale = f->scale;
    for (int g = 0; g < NG; g++) {
        for (int i = 0; i < NF; i++)
            f->gin[g][i] = (i == 0 ? 50 : 0) + sin(1.3 * i + 2.1 * g + seed);
        predictd__golden_case__init(&f->g[g]);
        f->g[g].n_input = NF;
        f->g[g].input = f->gin[g];
        f->g[g].n_probabilities = 3;
        f->g[g].probabilities = f->gout[g];
        f->gp[g] = &f->g[g];
    }
    f->m.n_golden = NG;
    f->m.golden = f->gp;
    inference_model *im = NULL;
    char why[256];
    if (inference_model_build(&f->m, &f->s, &im, why, sizeof why) != 0) {
        fprintf(stderr, "bench model does not build: %s\n", why);
        return -1;
    }
    void *scratch = malloc(inference_scratch_size(im) + 8);
    int rc = 0;
    for (int g = 0; g < NG && !rc; g++)
        rc = inference_run(im, f->gin[g], f->gout[g], scratch);
    free(scratch);
    inference_model_free(im);
    return rc;
}

static void bmodel_cleanup(bmodel *f)
{
    for (size_t l = 0; l < f->nl; l++) {
        free(f->w[l]);
        free(f->b[l]);
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

#define RUNS 30

static int bench_swap(const char *name, const unsigned *widths, size_t nl)
{
    char tmpl[] = "/tmp/pd-bench-reg-XXXXXX";
    char *base = mkdtemp(tmpl);
    if (!base)
        return 1;
    char models[256];
    snprintf(models, sizeof models, "%s/models", base);
    bmodel *f = malloc(sizeof *f);
    registry *r = NULL;
    int rc = 1;
    if (!f || bmodel_init(f, widths, nl, 1) != 0 || registry_new(models, &r) != 0)
        goto out;
    uint32_t v = 0;
    if (registry_publish(models, "BTCUSDT", "15m", &f->m, &f->s, &v) != 0 ||
        registry_scan(r, NULL, NULL) != 0)
        goto out;
    double pub[RUNS], swap[RUNS], load_ms[RUNS];
    for (int i = 0; i < RUNS; i++) {
        uint64_t t0 = util_mono_ns();
        if (registry_publish(models, "BTCUSDT", "15m", &f->m, &f->s, &v) != 0)
            goto out;
        uint64_t t1 = util_mono_ns();
        if (registry_scan(r, "BTCUSDT", "15m") != 0)
            goto out;
        uint64_t t2 = util_mono_ns();
        registry_version *cur = NULL;
        if (registry_acquire(r, "BTCUSDT", "15m", NULL, &cur) != 0 ||
            registry_version_number(cur) != v) {
            fprintf(stderr, "%s: v%u did not swap in\n", name, v);
            registry_release(cur);
            goto out;
        }
        registry_release(cur);
        pub[i] = (double)(t1 - t0) / 1e6;
        swap[i] = (double)(t2 - t1) / 1e6;
        registry_series_info *si = NULL;
        size_t n = 0;
        load_ms[i] = NAN;
        if (registry_list(r, &si, &n) == 0 && n == 1 && si[0].n_versions)
            load_ms[i] = si[0].versions[si[0].n_versions - 1].load_ms;
        registry_list_free(si, n);
    }
    char p[512];
    snprintf(p, sizeof p, "%s/BTCUSDT/15m/%u/model.pb", models, v);
    char *data = NULL;
    size_t bytes = 0;
    if (util_read_file(p, REGISTRY_MAX_FILE_BYTES, &data, &bytes) == 0)
        free(data);
    printf("registry_publish model=%s median_ms=%.3f file_bytes=%zu runs=%d\n", name,
           median(pub, RUNS), bytes, RUNS);
    double swap_med = median(swap, RUNS), swap_max = swap[RUNS - 1]; /* sorted now */
    double load_med = median(load_ms, RUNS);
    printf("registry_swap model=%s median_ms=%.3f verify_median_ms=%.3f max_ms=%.3f runs=%d "
           "target_ms=50\n",
           name, swap_med, load_med, swap_max, RUNS);
    rc = 0;
out:
    if (rc)
        fprintf(stderr, "registry_swap model=%s failed\n", name);
    registry_free(r);
    if (f)
        bmodel_cleanup(f);
    free(f);
    util_rmtree(base);
    return rc;
}

typedef struct spin {
    registry *r;
    atomic_bool *go, *stop;
    double ns_per_op;
} spin;

#define BATCH 200000

static void *spin_main(void *arg)
{
    spin *s = arg;
    while (!atomic_load(s->go)) {
    }
    uint64_t ops = 0, t0 = util_mono_ns();
    while (!atomic_load(s->stop)) {
        for (int i = 0; i < 1000; i++) {
            registry_version *v = NULL;
            if (registry_acquire(s->r, "BTCUSDT", "15m", NULL, &v) == 0)
                registry_release(v);
        }
        ops += 1000;
    }
    s->ns_per_op = (double)(util_mono_ns() - t0) / (double)ops;
    return NULL;
}

static int bench_acquire(void)
{
    char tmpl[] = "/tmp/pd-bench-reg-XXXXXX";
    char *base = mkdtemp(tmpl);
    if (!base)
        return 1;
    char models[256];
    snprintf(models, sizeof models, "%s/models", base);
    unsigned w[1] = {3};
    bmodel *f = malloc(sizeof *f);
    registry *r = NULL;
    int rc = 1;
    if (!f || bmodel_init(f, w, 1, 1) != 0 || registry_new(models, &r) != 0)
        goto out;
    uint32_t v = 0;
    /* A realistic lookup: 60 series (10 symbols x 6 timeframes). */
    const char *tfs[] = {"1m", "5m", "15m", "1h", "4h", "1d"};
    for (int s = 0; s < 10; s++)
        for (int t = 0; t < 6; t++) {
            char sym[16];
            snprintf(sym, sizeof sym, s == 0 ? "BTCUSDT" : "SYM%dUSDT", s);
            if (registry_publish(models, sym, tfs[t], &f->m, &f->s, &v) != 0)
                goto out;
        }
    if (registry_scan(r, NULL, NULL) != 0)
        goto out;
    double ns[RUNS];
    for (int b = 0; b < RUNS; b++) {
        uint64_t t0 = util_mono_ns();
        for (int i = 0; i < BATCH; i++) {
            registry_version *cur = NULL;
            if (registry_acquire(r, "BTCUSDT", "15m", NULL, &cur) != 0)
                goto out;
            registry_release(cur);
        }
        ns[b] = (double)(util_mono_ns() - t0) / BATCH;
    }
    printf("registry_acquire_release threads=1 median_ns=%.1f series=60 batches=%d x %d\n",
           median(ns, RUNS), RUNS, BATCH);

    /* Four threads hammering the same series (the lock and the refcount
     * cache line are shared: the worst case). */
    atomic_bool go, stop;
    atomic_init(&go, false);
    atomic_init(&stop, false);
    spin sp[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        sp[i] = (spin){r, &go, &stop, 0};
        pthread_create(&th[i], NULL, spin_main, &sp[i]);
    }
    atomic_store(&go, true);
    usleep(500 * 1000);
    atomic_store(&stop, true);
    double per[4];
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        per[i] = sp[i].ns_per_op;
    }
    printf("registry_acquire_release threads=4 median_ns=%.1f (per op per thread, %ld cores)\n",
           median(per, 4), sysconf(_SC_NPROCESSORS_ONLN));
    rc = 0;
out:
    if (rc)
        fprintf(stderr, "registry_acquire_release failed\n");
    registry_free(r);
    if (f)
        bmodel_cleanup(f);
    free(f);
    util_rmtree(base);
    return rc;
}

int main(void)
{
    util_log_configure(UTIL_LOG_ERROR, false);
    unsigned softmax[1] = {3};
    unsigned mlp[3] = {256, 256, 3};
    int rc = 0;
    rc |= bench_swap("softmax", softmax, 1);
    rc |= bench_swap("mlp_256x256", mlp, 3);
    rc |= bench_acquire();
    return rc;
}
