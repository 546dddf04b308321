/* Unit tests of inference: every model kind built from hand-made Model
 * messages and checked against outputs computed by hand (or, for the larger
 * random shapes, by a naive reference written straight from the PyTorch /
 * scikit-learn formulas), class-order permutation, temperature, golden
 * cases, every validation failure with its reason, run-time input checks,
 * and the signal levels. The vectorised kernels are checked against libm
 * and the naive references once per kernel set this CPU runs (generic,
 * and AVX2+FMA where present). */
#include "tests/unit/unit.h"
#include "inference/inference.h"
#include "inference/inference_internal.h" /* white-box: kernel sets */
#include "util/util.h"

#include <stdbool.h>
#include <stdint.h>

/* ------------------------------------------------------------------------
 * Fixtures: a Model, Scaler and SignalPolicy with storage for small
 * bodies, valid by default; each test edits what it needs.
 */
#define NF_MAX 8

struct fix {
    Predictd__Model m;
    Predictd__Scaler s;
    Predictd__SignalPolicy p;
    char *features[NF_MAX];
    char *sfeatures[NF_MAX];
    char *classes[3];
    double mean[NF_MAX], scale[NF_MAX];
    double tp_r[3];
    double eta[2];
    Predictd__Dense dense[4];
    Predictd__Dense *dense_p[4];
    Predictd__TreeEnsemble ens;
    Predictd__Tree trees[4];
    Predictd__Tree *trees_p[4];
    uint32_t tree_class[4];
    double base_score[3];
    Predictd__SequenceNet seq;
    Predictd__Conv1d conv[3];
    Predictd__Conv1d *conv_p[3];
    Predictd__Lstm lstm;
    Predictd__GoldenCase golden[2];
    Predictd__GoldenCase *golden_p[2];
};

static char *feature_names[NF_MAX] = {"f0", "f1", "f2", "f3", "f4", "f5", "f6", "f7"};

/* A valid model header with nf features, identity scaler, standard policy
 * and no body (kind unset). */
static void fix_init(struct fix *f, size_t nf)
{
    memset(f, 0, sizeof *f);
    f->m = (Predictd__Model)PREDICTD__MODEL__INIT;
    f->s = (Predictd__Scaler)PREDICTD__SCALER__INIT;
    f->p = (Predictd__SignalPolicy)PREDICTD__SIGNAL_POLICY__INIT;
    f->m.format = 1;
    for (size_t i = 0; i < nf; i++) {
        f->features[i] = feature_names[i];
        f->sfeatures[i] = feature_names[i];
        f->mean[i] = 0;
        f->scale[i] = 1;
    }
    f->m.n_features = nf;
    f->m.features = f->features;
    f->m.window = 60;
    f->classes[0] = "LONG";
    f->classes[1] = "SHORT";
    f->classes[2] = "NO_TRADE";
    f->m.n_classes = 3;
    f->m.classes = f->classes;
    f->tp_r[0] = 1;
    f->tp_r[1] = 2;
    f->tp_r[2] = 3;
    f->eta[0] = 4;
    f->eta[1] = 6;
    f->p.sl_atr = 1.5;
    f->p.n_tp_r = 3;
    f->p.tp_r = f->tp_r;
    f->p.horizon = 24;
    f->p.min_confidence = 0.4;
    f->p.n_eta_candles = 2;
    f->p.eta_candles = f->eta;
    f->m.policy = &f->p;
    f->s.n_features = nf;
    f->s.features = f->sfeatures;
    f->s.n_mean = nf;
    f->s.mean = f->mean;
    f->s.n_scale = nf;
    f->s.scale = f->scale;
    for (int i = 0; i < 4; i++) {
        f->dense[i] = (Predictd__Dense)PREDICTD__DENSE__INIT;
        f->dense_p[i] = &f->dense[i];
        f->trees[i] = (Predictd__Tree)PREDICTD__TREE__INIT;
        f->trees_p[i] = &f->trees[i];
    }
    for (int i = 0; i < 3; i++) {
        f->conv[i] = (Predictd__Conv1d)PREDICTD__CONV1D__INIT;
        f->conv_p[i] = &f->conv[i];
    }
    for (int i = 0; i < 2; i++) {
        f->golden[i] = (Predictd__GoldenCase)PREDICTD__GOLDEN_CASE__INIT;
        f->golden_p[i] = &f->golden[i];
    }
    f->ens = (Predictd__TreeEnsemble)PREDICTD__TREE_ENSEMBLE__INIT;
    f->seq = (Predictd__SequenceNet)PREDICTD__SEQUENCE_NET__INIT;
    f->lstm = (Predictd__Lstm)PREDICTD__LSTM__INIT;
}

static void set_dense(Predictd__Dense *d, uint32_t in, uint32_t out, double *w, double *b, int act)
{
    d->in = in;
    d->out = out;
    d->n_weights = (size_t)in * out;
    d->weights = w;
    d->n_bias = out;
    d->bias = b;
    d->activation = act;
}

/* Softmax regression on 2 features:
 *   scaler mean (0.5, 1), scale (0.5, 2); W = [[1,0],[0,2],[-1,1]];
 *   b = [0, 0.5, 0]. For raw x = (1, 2): x' = (1, 0.5), logits
 *   (1, 1.5, -0.5). */
static double sm_w[6] = {1, 0, 0, 2, -1, 1};
static double sm_b[3] = {0, 0.5, 0};

static void fix_softmax(struct fix *f)
{
    fix_init(f, 2);
    f->mean[0] = 0.5;
    f->mean[1] = 1;
    f->scale[0] = 0.5;
    f->scale[1] = 2;
    f->m.kind = PREDICTD__MODEL_KIND__SOFTMAX;
    set_dense(&f->dense[0], 2, 3, sm_w, sm_b, PREDICTD__ACTIVATION__LINEAR);
    f->m.n_layers = 1;
    f->m.layers = f->dense_p;
}

/* Expected softmax of three logits (the definition, written out). */
static void ref_softmax3(double a, double b, double c, double out[3])
{
    double m = fmax(a, fmax(b, c));
    double ea = exp(a - m), eb = exp(b - m), ec = exp(c - m), s = ea + eb + ec;
    out[0] = ea / s;
    out[1] = eb / s;
    out[2] = ec / s;
}

/* Builds, runs one input, frees. Returns the build/run code. */
static int build_run(struct fix *f, const double *x, double probs[3])
{
    inference_model *m = NULL;
    char why[256];
    int rc = inference_model_build(&f->m, &f->s, &m, why, sizeof why);
    if (rc) {
        printf("  build failed: %s\n", why);
        return rc;
    }
    void *scratch = malloc(inference_scratch_size(m) + 8);
    rc = inference_run(m, x, probs, scratch);
    free(scratch);
    inference_model_free(m);
    return rc;
}

/* Expects the build to fail with PD_EVERIFY and a reason containing sub. */
#define CHECK_REJECT(f, sub)                                                                       \
    do {                                                                                           \
        inference_model *m_ = (inference_model *)0x1;                                              \
        char why_[256] = "";                                                                       \
        int rc_ = inference_model_build(&(f)->m, &(f)->s, &m_, why_, sizeof why_);                 \
        CHECK_EQ_INT(rc_, PD_EVERIFY);                                                             \
        CHECK(m_ == (inference_model *)0x1);                                                       \
        if (!strstr(why_, (sub)))                                                                  \
            UNIT_FAIL_("reason \"%s\" lacks \"%s\"", why_, (sub));                                 \
        if (rc_ == 0)                                                                              \
            inference_model_free(m_);                                                              \
    } while (0)

/* ------------------------------------------------------------------------
 * Softmax regression, class order, temperature.
 */
TEST(test_softmax_by_hand)
{
    struct fix f;
    fix_softmax(&f);
    double x[2] = {1, 2}, p[3], want[3];
    CHECK_EQ_INT(build_run(&f, x, p), 0);
    ref_softmax3(1, 1.5, -0.5, want);
    CHECK_NEAR(p[INFERENCE_LONG], want[0], 1e-15);
    CHECK_NEAR(p[INFERENCE_SHORT], want[1], 1e-15);
    CHECK_NEAR(p[INFERENCE_NO_TRADE], want[2], 1e-15);
    CHECK_NEAR(p[0] + p[1] + p[2], 1.0, 1e-15);

    inference_model *m = NULL;
    CHECK_EQ_INT(inference_model_build(&f.m, &f.s, &m, NULL, 0), 0);
    CHECK_EQ_INT(inference_n_features(m), 2);
    CHECK_EQ_INT(inference_steps(m), 1);
    CHECK(inference_scratch_size(m) >= 3 * sizeof(double));
    CHECK_EQ_INT(inference_model_kind(m), PREDICTD__MODEL_KIND__SOFTMAX);
    const inference_policy *pol = inference_model_policy(m);
    CHECK_EQ_INT(pol->atr_period, 14); /* 0 in the file */
    CHECK_NEAR(pol->sl_atr, 1.5, 0);
    CHECK_NEAR(pol->eta_candles[1], 6, 0);
    CHECK(isnan(pol->eta_candles_tp[0]));
    inference_model_free(m);
    inference_model_free(NULL);
}

TEST(test_class_order_permutation)
{
    struct fix f;
    fix_softmax(&f);
    /* The same logits now mean NO_TRADE, LONG, SHORT. */
    f.classes[0] = "NO_TRADE";
    f.classes[1] = "LONG";
    f.classes[2] = "SHORT";
    double x[2] = {1, 2}, p[3], want[3];
    CHECK_EQ_INT(build_run(&f, x, p), 0);
    ref_softmax3(1, 1.5, -0.5, want);
    CHECK_NEAR(p[INFERENCE_NO_TRADE], want[0], 1e-15);
    CHECK_NEAR(p[INFERENCE_LONG], want[1], 1e-15);
    CHECK_NEAR(p[INFERENCE_SHORT], want[2], 1e-15);
}

TEST(test_temperature)
{
    struct fix f;
    fix_softmax(&f);
    f.m.temperature = 2;
    double x[2] = {1, 2}, p[3], want[3];
    CHECK_EQ_INT(build_run(&f, x, p), 0);
    ref_softmax3(0.5, 0.75, -0.25, want);
    for (int c = 0; c < 3; c++)
        CHECK_NEAR(p[c], want[c], 1e-15);
    f.m.temperature = 0; /* means 1 */
    CHECK_EQ_INT(build_run(&f, x, p), 0);
    ref_softmax3(1, 1.5, -0.5, want);
    for (int c = 0; c < 3; c++)
        CHECK_NEAR(p[c], want[c], 1e-15);
}

TEST(test_run_rejects_bad_input)
{
    struct fix f;
    fix_softmax(&f);
    inference_model *m = NULL;
    CHECK_EQ_INT(inference_model_build(&f.m, &f.s, &m, NULL, 0), 0);
    void *scratch = malloc(inference_scratch_size(m));
    double p[3] = {-1, -1, -1};
    double x[2] = {NAN, 1};
    CHECK_EQ_INT(inference_run(m, x, p, scratch), PD_EINVAL);
    x[0] = 1;
    x[1] = INFINITY;
    CHECK_EQ_INT(inference_run(m, x, p, scratch), PD_EINVAL);
    x[1] = -INFINITY;
    CHECK_EQ_INT(inference_run(m, x, p, scratch), PD_EINVAL);
    CHECK(p[0] == -1 && p[1] == -1 && p[2] == -1); /* untouched on failure */
    /* Finite but so large that the logits overflow. */
    x[0] = 1e308;
    x[1] = -1e308;
    CHECK_EQ_INT(inference_run(m, x, p, scratch), PD_EINVAL);
    CHECK(p[0] == -1);
    CHECK_EQ_INT(inference_run(m, NULL, p, scratch), PD_EINVAL);
    x[0] = 1;
    x[1] = 2;
    CHECK_EQ_INT(inference_run(m, x, p, scratch), 0);
    free(scratch);
    inference_model_free(m);
}

/* The message survives the protobuf round trip the registry does. */
TEST(test_packed_roundtrip)
{
    struct fix f;
    fix_softmax(&f);
    size_t n = predictd__model__get_packed_size(&f.m);
    uint8_t *buf = malloc(n);
    predictd__model__pack(&f.m, buf);
    Predictd__Model *u = predictd__model__unpack(NULL, n, buf);
    CHECK(u != NULL);
    if (u) {
        inference_model *m = NULL;
        char why[256];
        CHECK_EQ_INT(inference_model_build(u, &f.s, &m, why, sizeof why), 0);
        double x[2] = {1, 2}, p[3], want[3];
        void *scratch = malloc(inference_scratch_size(m));
        CHECK_EQ_INT(inference_run(m, x, p, scratch), 0);
        ref_softmax3(1, 1.5, -0.5, want);
        CHECK_NEAR(p[0], want[0], 1e-15);
        free(scratch);
        inference_model_free(m);
        predictd__model__free_unpacked(u, NULL);
    }
    free(buf);
}

/* ------------------------------------------------------------------------
 * MLP: activations by hand, and random shapes against a naive reference.
 */

/* 1 feature -> [1 unit, act] -> 3 logits (h, 0, 0); returns h recovered
 * from the probabilities as log(p0 / p2). */
static double one_unit(int act, double x)
{
    static double w0[1] = {1}, b0[1] = {0}, w1[3] = {1, 0, 0}, b1[3] = {0, 0, 0};
    struct fix f;
    fix_init(&f, 1);
    f.m.kind = PREDICTD__MODEL_KIND__MLP;
    set_dense(&f.dense[0], 1, 1, w0, b0, act);
    set_dense(&f.dense[1], 1, 3, w1, b1, PREDICTD__ACTIVATION__LINEAR);
    f.m.n_layers = 2;
    f.m.layers = f.dense_p;
    double p[3];
    if (build_run(&f, &x, p) != 0)
        return NAN;
    return log(p[0] / p[2]);
}

TEST(test_mlp_activations)
{
    CHECK_NEAR(one_unit(PREDICTD__ACTIVATION__LINEAR, -0.7), -0.7, 1e-14);
    CHECK_NEAR(one_unit(PREDICTD__ACTIVATION__RELU, -2), 0, 1e-14);
    CHECK_NEAR(one_unit(PREDICTD__ACTIVATION__RELU, 1.25), 1.25, 1e-14);
    CHECK_NEAR(one_unit(PREDICTD__ACTIVATION__TANH, 0.5), 0.46211715726000974, 1e-14);
    CHECK_NEAR(one_unit(PREDICTD__ACTIVATION__SIGMOID, 0.5), 0.62245933120185459, 1e-14);
    /* GELU(x) = x Phi(x): Phi(1) = 0.8413447460685429 */
    CHECK_NEAR(one_unit(PREDICTD__ACTIVATION__GELU, 1), 0.8413447460685429, 1e-14);
    CHECK_NEAR(one_unit(PREDICTD__ACTIVATION__GELU, -1), -0.15865525393145707, 1e-14);
}

TEST(test_mlp_two_layers_by_hand)
{
    /* x' = (1, -1); layer0 W=[[1,2],[3,-1]] b=[0.5,-10] relu -> (0, 0);
     * make it less trivial: b=[0.5, 1] -> (1-2+0.5, 3+1+1) = (-0.5, 5)
     * relu -> (0, 5); layer1 W=[[1,0.1],[0,-0.2],[2,0]] b=[0,0,1]
     * -> (0.5, -1, 1). */
    static double w0[4] = {1, 2, 3, -1}, b0[2] = {0.5, 1};
    static double w1[6] = {1, 0.1, 0, -0.2, 2, 0}, b1[3] = {0, 0, 1};
    struct fix f;
    fix_init(&f, 2);
    f.m.kind = PREDICTD__MODEL_KIND__MLP;
    set_dense(&f.dense[0], 2, 2, w0, b0, PREDICTD__ACTIVATION__RELU);
    set_dense(&f.dense[1], 2, 3, w1, b1, PREDICTD__ACTIVATION__LINEAR);
    f.m.n_layers = 2;
    f.m.layers = f.dense_p;
    double x[2] = {1, -1}, p[3], want[3];
    CHECK_EQ_INT(build_run(&f, x, p), 0);
    ref_softmax3(0.5, -1, 1, want);
    for (int c = 0; c < 3; c++)
        CHECK_NEAR(p[c], want[c], 1e-15);
}

/* Deterministic pseudo-random numbers in [-1, 1). */
static uint64_t rng_state;
static double rnd(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng_state >> 11) / (double)(1ull << 53) * 2 - 1;
}
static double *rnd_array(size_t n, double amp)
{
    double *v = malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++)
        v[i] = rnd() * amp;
    return v;
}

static double ref_act(int act, double v)
{
    switch (act) {
    case PREDICTD__ACTIVATION__RELU:
        return v > 0 ? v : 0;
    case PREDICTD__ACTIVATION__TANH:
        return tanh(v);
    case PREDICTD__ACTIVATION__SIGMOID:
        return 1 / (1 + exp(-v));
    case PREDICTD__ACTIVATION__GELU:
        return 0.5 * v * (1 + erf(v / sqrt(2.0)));
    default:
        return v;
    }
}

/* y = act(W x + b), the textbook loop. */
static void ref_dense(const Predictd__Dense *d, const double *x, double *y)
{
    for (size_t o = 0; o < d->out; o++) {
        double s = d->bias[o];
        for (size_t i = 0; i < d->in; i++)
            s += d->weights[o * d->in + i] * x[i];
        y[o] = ref_act(d->activation, s);
    }
}

/* The kernel sets this CPU can run: generic always, AVX2 when present. */
static size_t kernel_sets(const struct inf_kernels *out[2])
{
    size_t n = 0;
    out[n++] = &inference__kernels_generic;
    if (inference__kernels_avx2())
        out[n++] = inference__kernels_avx2();
    return n;
}

TEST(test_kernels_elementwise_match_libm)
{
    const struct inf_kernels *ks[2];
    size_t nk = kernel_sets(ks);
    CHECK(inference__kernels_best() == ks[nk - 1]);
    CHECK_EQ_STR(inference_kernels_name(), ks[nk - 1]->name);
    enum { N = 20011 }; /* odd: exercises the tail */
    double *x = malloc(N * sizeof *x), *a = malloc(N * sizeof *a), *b = malloc(N * sizeof *b);
    double *c = malloc(N * sizeof *c);
    for (size_t i = 0; i < N; i++) {
        /* dense near 0, then out to +-800 (past the clamp) */
        double u = (double)i / (N - 1) * 2 - 1;
        x[i] = u * fabs(u) * fabs(u) * 800;
    }
    x[5] = 0;
    x[6] = -0.0;
    x[7] = 1e-300;
    x[8] = -3e-12;
    x[9] = 40;
    for (size_t s = 0; s < nk; s++) {
        double worst_sig = 0, worst_tanh = 0;
        memcpy(a, x, N * sizeof *a);
        memcpy(b, x, N * sizeof *b);
        memcpy(c, x, N * sizeof *c);
        ks[s]->sigmoid(a, N);
        ks[s]->tanh(b, N);
        ks[s]->relu(c, N);
        for (size_t i = 0; i < N; i++) {
            double ws = 1 / (1 + exp(-x[i])), wt = tanh(x[i]);
            /* Below x = -708 the kernels saturate at exp(-708) instead of
             * going subnormal: absolute error under 4e-308. */
            double es = ws < 1e-300 ? (fabs(a[i] - ws) < 4e-308 ? 0 : 1) : fabs(a[i] - ws) / ws;
            double et = wt == 0 ? fabs(b[i]) : fabs(b[i] - wt) / fabs(wt);
            if (es > worst_sig)
                worst_sig = es;
            if (et > worst_tanh)
                worst_tanh = et;
            if (c[i] != (x[i] < 0 ? 0.0 : x[i]))
                UNIT_FAIL_("%s relu(%g) = %g", ks[s]->name, x[i], c[i]);
        }
        /* a few ulp */
        if (!(worst_sig < 1e-15))
            UNIT_FAIL_("%s sigmoid relative error %g", ks[s]->name, worst_sig);
        if (!(worst_tanh < 1e-15))
            UNIT_FAIL_("%s tanh relative error %g", ks[s]->name, worst_tanh);
        CHECK(b[6] == 0 && signbit(b[6])); /* tanh(-0) = -0 */
        CHECK(b[7] == 1e-300);
        /* NaN and infinities */
        double v[5] = {NAN, INFINITY, -INFINITY, 1e308, -1e308};
        double w[5], r[5];
        memcpy(w, v, sizeof v);
        memcpy(r, v, sizeof v);
        ks[s]->sigmoid(w, 5);
        ks[s]->tanh(r, 5);
        CHECK(isnan(w[0]) && isnan(r[0]));
        CHECK(w[1] == 1 && w[3] == 1 && w[2] < 1e-300 && w[4] < 1e-300);
        CHECK(r[1] == 1 && r[2] == -1 && r[3] == 1 && r[4] == -1);
        memcpy(w, v, sizeof v);
        ks[s]->relu(w, 5);
        CHECK(isnan(w[0]) && w[1] == INFINITY && w[2] == 0 && w[4] == 0);
    }
    free(x);
    free(a);
    free(b);
    free(c);
}

TEST(test_mlp_random_shapes_match_reference)
{
    /* Widths chosen to hit full double panels, single panels and partial
     * panels: 37 = 16 + 16 + 5, 19 = 16 + 3, 8, 3. */
    const uint32_t widths[] = {5, 37, 19, 8, 3};
    const int acts[] = {PREDICTD__ACTIVATION__TANH, PREDICTD__ACTIVATION__GELU,
                        PREDICTD__ACTIVATION__RELU, PREDICTD__ACTIVATION__LINEAR};
    rng_state = 42;
    struct fix f;
    fix_init(&f, 5);
    for (int i = 0; i < 5; i++) {
        f.mean[i] = rnd();
        f.scale[i] = 0.5 + rnd() * 0.25;
    }
    f.m.kind = PREDICTD__MODEL_KIND__MLP;
    double *mem[8];
    for (int l = 0; l < 4; l++) {
        mem[2 * l] = rnd_array((size_t)widths[l] * widths[l + 1], 0.5);
        mem[2 * l + 1] = rnd_array(widths[l + 1], 0.5);
        set_dense(&f.dense[l], widths[l], widths[l + 1], mem[2 * l], mem[2 * l + 1], acts[l]);
    }
    f.m.n_layers = 4;
    f.m.layers = f.dense_p;
    inference_model *m = NULL;
    char why[256];
    CHECK_EQ_INT(inference_model_build(&f.m, &f.s, &m, why, sizeof why), 0);
    void *scratch = m ? malloc(inference_scratch_size(m)) : NULL;
    const struct inf_kernels *ks[2];
    size_t nk = kernel_sets(ks);
    for (int trial = 0; m && trial < 20 * (int)nk; trial++) {
        m->k = ks[(size_t)trial % nk];
        double x[5], a[64], b[64], p[3], want[3];
        for (int i = 0; i < 5; i++) {
            x[i] = rnd() * 3;
            a[i] = (x[i] - f.mean[i]) / f.scale[i];
        }
        ref_dense(&f.dense[0], a, b);
        ref_dense(&f.dense[1], b, a);
        ref_dense(&f.dense[2], a, b);
        ref_dense(&f.dense[3], b, a);
        ref_softmax3(a[0], a[1], a[2], want);
        CHECK_EQ_INT(inference_run(m, x, p, scratch), 0);
        for (int c = 0; c < 3; c++)
            CHECK_NEAR(p[c], want[c], 1e-13);
    }
    /* A non-finite value in any position (vector body or scalar tail of
     * the scaling kernel) is refused, with every kernel set. */
    for (size_t s = 0; m && s < nk; s++) {
        m->k = ks[s];
        const double bad[3] = {NAN, INFINITY, -INFINITY};
        for (int pos = 0; pos < 5; pos++)
            for (int b = 0; b < 3; b++) {
                double x[5] = {0.1, 0.2, 0.3, 0.4, 0.5}, p[3];
                x[pos] = bad[b];
                if (inference_run(m, x, p, scratch) != PD_EINVAL)
                    UNIT_FAIL_("%s: x[%d] = %g accepted", ks[s]->name, pos, bad[b]);
            }
    }
    free(scratch);
    inference_model_free(m);
    for (int i = 0; i < 8; i++)
        free(mem[i]);
}

/* ------------------------------------------------------------------------
 * Trees.
 */

/* One stump on feature 0 at 0.5: left leaf +1, right leaf -1, class 0. */
static int32_t st_feature[3] = {0, -1, -1};
static double st_threshold[3] = {0.5, 0, 0};
static int32_t st_left[3] = {1, -1, -1};
static int32_t st_right[3] = {2, -1, -1};
static double st_value[3] = {0, 1, -1};

static void set_tree(Predictd__Tree *t, size_t n, int32_t *feature, double *threshold,
                     int32_t *left, int32_t *right, double *value)
{
    t->n_feature = t->n_threshold = t->n_left = t->n_right = t->n_value = n;
    t->feature = feature;
    t->threshold = threshold;
    t->left = left;
    t->right = right;
    t->value = value;
}

static void fix_stump(struct fix *f)
{
    fix_init(f, 2);
    f->m.kind = PREDICTD__MODEL_KIND__TREES;
    f->ens.n_features = 2;
    f->ens.n_classes = 3;
    set_tree(&f->trees[0], 3, st_feature, st_threshold, st_left, st_right, st_value);
    f->ens.n_trees = 1;
    f->ens.trees = f->trees_p;
    f->tree_class[0] = 0;
    f->ens.n_tree_class = 1;
    f->ens.tree_class = f->tree_class;
    f->ens.n_base_score = 3;
    f->ens.base_score = f->base_score;
    f->m.trees = &f->ens;
}

TEST(test_tree_rules_at_threshold)
{
    struct fix f;
    double p[3], want[3];
    double at[2] = {0.5, 7}, below[2] = {0.4999, 7}, above[2] = {0.5001, 7};

    fix_stump(&f);
    f.ens.rule = PREDICTD__SPLIT_RULE__LESS; /* XGBoost: 0.5 < 0.5 is false */
    CHECK_EQ_INT(build_run(&f, at, p), 0);
    ref_softmax3(-1, 0, 0, want);
    CHECK_NEAR(p[INFERENCE_LONG], want[0], 1e-15);
    CHECK_EQ_INT(build_run(&f, below, p), 0);
    ref_softmax3(1, 0, 0, want);
    CHECK_NEAR(p[INFERENCE_LONG], want[0], 1e-15);

    f.ens.rule = PREDICTD__SPLIT_RULE__LESS_EQUAL; /* scikit-learn: goes left */
    CHECK_EQ_INT(build_run(&f, at, p), 0);
    ref_softmax3(1, 0, 0, want);
    CHECK_NEAR(p[INFERENCE_LONG], want[0], 1e-15);
    CHECK_EQ_INT(build_run(&f, above, p), 0);
    ref_softmax3(-1, 0, 0, want);
    CHECK_NEAR(p[INFERENCE_LONG], want[0], 1e-15);

    /* Trees read raw features: the scaler may be absent... */
    f.ens.rule = PREDICTD__SPLIT_RULE__LESS;
    inference_model *m = NULL;
    CHECK_EQ_INT(inference_model_build(&f.m, NULL, &m, NULL, 0), 0);
    inference_model_free(m);
    /* ...and a scaler that would move x across the threshold is not
     * applied: (0.5001 - 10) / 1 would go left. */
    f.mean[0] = 10;
    CHECK_EQ_INT(build_run(&f, above, p), 0);
    ref_softmax3(-1, 0, 0, want);
    CHECK_NEAR(p[INFERENCE_LONG], want[0], 1e-15);
}

TEST(test_tree_scaled_input)
{
    struct fix f;
    double p[3], want[3], x[2] = {1.2, 0};
    fix_stump(&f);
    f.ens.scaled_input = 1;
    f.mean[0] = 1;
    f.scale[0] = 0.5; /* x' = 0.4 < 0.5: left */
    CHECK_EQ_INT(build_run(&f, x, p), 0);
    ref_softmax3(1, 0, 0, want);
    CHECK_NEAR(p[INFERENCE_LONG], want[0], 1e-15);
    inference_model *m = NULL;
    char why[256];
    CHECK_EQ_INT(inference_model_build(&f.m, NULL, &m, why, sizeof why), PD_EVERIFY);
    CHECK(strstr(why, "scaler: missing") != NULL);
}

TEST(test_tree_ensemble_classes_and_base)
{
    /* Tree 1, class 2, nodes numbered out of order (children before the
     * parent in the arrays, which is allowed): root 0 splits f1 <= -1 to
     * node 2 (leaf 0.25) or node 1 (split f0 <= 3: node 3 leaf 0.5,
     * node 4 leaf -0.5). Tree 0 is the stump (class 0), tree 2 a single
     * leaf for class 1. */
    static int32_t t1_feature[5] = {1, 0, -1, -1, -1};
    static double t1_threshold[5] = {-1, 3, 0, 0, 0};
    static int32_t t1_left[5] = {2, 3, 0, 0, 0};
    static int32_t t1_right[5] = {1, 4, 0, 0, 0};
    static double t1_value[5] = {0, 0, 0.25, 0.5, -0.5};
    static int32_t t2_feature[1] = {-1};
    static double t2_threshold[1] = {0}, t2_value[1] = {0.125};
    static int32_t t2_left[1] = {-1}, t2_right[1] = {-1};
    struct fix f;
    fix_stump(&f);
    f.ens.rule = PREDICTD__SPLIT_RULE__LESS_EQUAL;
    set_tree(&f.trees[1], 5, t1_feature, t1_threshold, t1_left, t1_right, t1_value);
    set_tree(&f.trees[2], 1, t2_feature, t2_threshold, t2_left, t2_right, t2_value);
    f.ens.n_trees = 3;
    f.tree_class[1] = 2;
    f.tree_class[2] = 1;
    f.ens.n_tree_class = 3;
    f.base_score[0] = 0.1;
    f.base_score[1] = -0.2;
    f.base_score[2] = 0.3;
    double p[3], want[3];
    double x1[2] = {0, -1}; /* stump left (+1); tree1 left -> 0.25 */
    CHECK_EQ_INT(build_run(&f, x1, p), 0);
    ref_softmax3(0.1 + 1, -0.2 + 0.125, 0.3 + 0.25, want);
    for (int c = 0; c < 3; c++)
        CHECK_NEAR(p[c], want[c], 1e-15);
    double x2[2] = {3, 0}; /* stump right (-1); tree1 right, f0 <= 3 -> 0.5 */
    CHECK_EQ_INT(build_run(&f, x2, p), 0);
    ref_softmax3(0.1 - 1, -0.2 + 0.125, 0.3 + 0.5, want);
    for (int c = 0; c < 3; c++)
        CHECK_NEAR(p[c], want[c], 1e-15);
    double x3[2] = {3.5, 0}; /* tree1 -> -0.5 */
    CHECK_EQ_INT(build_run(&f, x3, p), 0);
    ref_softmax3(0.1 - 1, -0.2 + 0.125, 0.3 - 0.5, want);
    for (int c = 0; c < 3; c++)
        CHECK_NEAR(p[c], want[c], 1e-15);
    /* default_left given explicitly is accepted. */
    static protobuf_c_boolean dl[5] = {0, 1, 1, 1, 1};
    f.trees[1].n_default_left = 5;
    f.trees[1].default_left = dl;
    CHECK_EQ_INT(build_run(&f, x3, p), 0);
}

/* Random trees for the ensemble test: up to 63 nodes, any shape. */
#define RT_MAX 63
struct rtree {
    int32_t feature[RT_MAX], left[RT_MAX], right[RT_MAX];
    double threshold[RT_MAX], value[RT_MAX];
    int n;
};

static int rtree_grow(struct rtree *t, int depth)
{
    int i = t->n++;
    bool leaf = depth == 0 || t->n + 2 > RT_MAX || rnd() < -0.6;
    t->feature[i] = leaf ? -1 : (int32_t)((rnd() + 1) / 2 * 3);
    t->threshold[i] = leaf ? -2 : rnd() / 4 * 4; /* multiples of 0.25: ties happen */
    t->threshold[i] = round(t->threshold[i] * 4) / 4;
    t->value[i] = rnd();
    t->left[i] = t->right[i] = -1;
    if (!leaf) {
        t->left[i] = rtree_grow(t, depth - 1);
        t->right[i] = rtree_grow(t, depth - 1);
    }
    return i;
}

/* Renumbers every node but the root at random, so children may come
 * before their parents in the arrays. */
static void rtree_shuffle(struct rtree *t)
{
    int perm[RT_MAX];
    for (int i = 0; i < t->n; i++)
        perm[i] = i;
    for (int i = t->n - 1; i > 1; i--) {
        int j = 1 + (int)((rnd() + 1) / 2 * i);
        if (j > i)
            j = i;
        int tmp = perm[i];
        perm[i] = perm[j];
        perm[j] = tmp;
    }
    struct rtree u = *t;
    for (int i = 0; i < t->n; i++) {
        int k = perm[i];
        u.feature[k] = t->feature[i];
        u.threshold[k] = t->threshold[i];
        u.value[k] = t->value[i];
        u.left[k] = t->left[i] < 0 ? -1 : perm[t->left[i]];
        u.right[k] = t->right[i] < 0 ? -1 : perm[t->right[i]];
    }
    *t = u;
}

/* The textbook walk over the file's arrays. */
static double rtree_eval(const struct rtree *t, const double *x, bool le)
{
    int i = 0;
    while (t->feature[i] >= 0) {
        double v = x[t->feature[i]];
        i = (le ? v <= t->threshold[i] : v < t->threshold[i]) ? t->left[i] : t->right[i];
    }
    return t->value[i];
}

TEST(test_tree_ensemble_random_matches_reference)
{
    /* 11 trees: two lockstep groups of 4 (with shallow and deep trees
     * mixed) and a tail of 3, one chain-like tree of depth 12. */
    enum { NT = 11 };
    static struct rtree rt[NT];
    rng_state = 99;
    struct fix f;
    fix_init(&f, 3);
    f.m.kind = PREDICTD__MODEL_KIND__TREES;
    Predictd__Tree trees[NT], *tp[NT];
    uint32_t tclass[NT];
    for (int t = 0; t < NT; t++) {
        memset(&rt[t], 0, sizeof rt[t]);
        rtree_grow(&rt[t], t == 5 ? 12 : 1 + t % 5);
        rtree_shuffle(&rt[t]);
        trees[t] = (Predictd__Tree)PREDICTD__TREE__INIT;
        set_tree(&trees[t], (size_t)rt[t].n, rt[t].feature, rt[t].threshold, rt[t].left,
                 rt[t].right, rt[t].value);
        tp[t] = &trees[t];
        tclass[t] = (uint32_t)(t * 7 % 3);
    }
    f.ens.n_features = 3;
    f.ens.n_classes = 3;
    f.ens.n_trees = NT;
    f.ens.trees = tp;
    f.ens.n_tree_class = NT;
    f.ens.tree_class = tclass;
    f.base_score[0] = 0.5;
    f.base_score[1] = -0.25;
    f.base_score[2] = 0.125;
    f.ens.n_base_score = 3;
    f.ens.base_score = f.base_score;
    f.m.trees = &f.ens;
    for (int rule = 0; rule < 2; rule++) {
        f.ens.rule = rule ? PREDICTD__SPLIT_RULE__LESS_EQUAL : PREDICTD__SPLIT_RULE__LESS;
        inference_model *m = NULL;
        char why[256];
        CHECK_EQ_INT(inference_model_build(&f.m, NULL, &m, why, sizeof why), 0);
        if (!m)
            continue;
        void *scratch = malloc(inference_scratch_size(m) + 8);
        for (int trial = 0; trial < 200; trial++) {
            double x[3], z[3] = {0.5, -0.25, 0.125}, p[3], want[3];
            for (int i = 0; i < 3; i++) /* on the 0.25 grid half the time: ties */
                x[i] = trial % 2 ? round(rnd() * 4) / 4 : rnd();
            for (int t = 0; t < NT; t++)
                z[tclass[t]] += rtree_eval(&rt[t], x, rule);
            ref_softmax3(z[0], z[1], z[2], want);
            CHECK_EQ_INT(inference_run(m, x, p, scratch), 0);
            for (int c = 0; c < 3; c++)
                CHECK_NEAR(p[c], want[c], 1e-15);
        }
        free(scratch);
        inference_model_free(m);
    }
}

/* ------------------------------------------------------------------------
 * Sequence models.
 */
static void fix_seq(struct fix *f, size_t nf, uint32_t steps)
{
    fix_init(f, nf);
    f->m.kind = PREDICTD__MODEL_KIND__SEQUENCE;
    f->seq.steps = steps;
    f->seq.conv = f->conv_p;
    f->seq.head = f->dense_p;
    f->m.sequence = &f->seq;
}

static void set_conv(Predictd__Conv1d *c, uint32_t in, uint32_t out, uint32_t k, uint32_t pad,
                     double *w, double *b, int act)
{
    c->in_channels = in;
    c->out_channels = out;
    c->kernel = k;
    c->padding = pad;
    c->n_weights = (size_t)out * in * k;
    c->weights = w;
    c->n_bias = out;
    c->bias = b;
    c->activation = act;
}

/* Head 1 -> 3 with weights (s, 0, 0): log(p0/p2) = s * input. */
static double head_w[3] = {1, 0, 0}, head_b[3] = {0, 0, 0};

TEST(test_conv_padding_by_hand)
{
    /* 1 channel, 3 steps x' = (1, 2, 4). conv0 k=3 pad=1 w=(1,2,3) b=0.5:
     *   padded (0,1,2,4,0) -> (0+2+6, 1+4+12, 2+8+0) + 0.5
     *   = (8.5, 17.5, 10.5);
     * conv1 k=3 pad=0 w=(1, 0.1, 0.01) b=0 -> 8.5 + 1.75 + 0.105 = 10.355. */
    static double w0[3] = {1, 2, 3}, b0[1] = {0.5}, w1[3] = {1, 0.1, 0.01}, b1[1] = {0};
    struct fix f;
    fix_seq(&f, 1, 3);
    set_conv(&f.conv[0], 1, 1, 3, 1, w0, b0, PREDICTD__ACTIVATION__LINEAR);
    set_conv(&f.conv[1], 1, 1, 3, 0, w1, b1, PREDICTD__ACTIVATION__LINEAR);
    f.seq.n_conv = 2;
    set_dense(&f.dense[0], 1, 3, head_w, head_b, PREDICTD__ACTIVATION__LINEAR);
    f.seq.n_head = 1;
    double x[3] = {1, 2, 4}, p[3];
    CHECK_EQ_INT(build_run(&f, x, p), 0);
    CHECK_NEAR(log(p[0] / p[2]), 10.355, 1e-12);
    /* Only conv0: the head reads its last step, 10.5. */
    f.seq.n_conv = 1;
    CHECK_EQ_INT(build_run(&f, x, p), 0);
    CHECK_NEAR(log(p[0] / p[2]), 10.5, 1e-12);
    /* ReLU on conv0 with a negative bias: (8.5, 17.5, 10.5) - 11 -> last 0. */
    b0[0] = -10.5;
    f.conv[0].activation = PREDICTD__ACTIVATION__RELU;
    CHECK_EQ_INT(build_run(&f, x, p), 0);
    CHECK_NEAR(log(p[0] / p[2]), 0, 1e-12);
    b0[0] = 0.5;
}

TEST(test_conv_layout_out_in_kernel)
{
    /* 2 channels, 2 steps: step0 (1, 2), step1 (3, 4). conv 2->1 k=2 pad 0,
     * PyTorch weight[o][c][k]: c0 = (1, 10), c1 = (100, 1000):
     * 1*1 + 10*3 + 100*2 + 1000*4 = 4231. Head scales by 0.001. */
    static double w[4] = {1, 10, 100, 1000}, b[1] = {0}, hw[3] = {0.001, 0, 0};
    struct fix f;
    fix_seq(&f, 2, 2);
    set_conv(&f.conv[0], 2, 1, 2, 0, w, b, PREDICTD__ACTIVATION__LINEAR);
    f.seq.n_conv = 1;
    set_dense(&f.dense[0], 1, 3, hw, head_b, PREDICTD__ACTIVATION__LINEAR);
    f.seq.n_head = 1;
    double x[4] = {1, 2, 3, 4}, p[3];
    CHECK_EQ_INT(build_run(&f, x, p), 0);
    CHECK_NEAR(log(p[0] / p[2]), 4.231, 1e-12);
}

static double sigm(double v)
{
    return 1 / (1 + exp(-v));
}

TEST(test_lstm_hidden1_by_hand)
{
    /* input_size 1, hidden 1, gates i, f, g, o. */
    static double wih[4] = {0.5, -0.25, 1.0, 0.75}, whh[4] = {0.1, 0.2, -0.3, 0.4};
    static double bih[4] = {0.1, 0.2, 0.3, 0.4}, bhh[4] = {0.01, 0.02, 0.03, 0.04};
    struct fix f;
    fix_seq(&f, 1, 2);
    f.lstm.input_size = 1;
    f.lstm.hidden_size = 1;
    f.lstm.n_weight_ih = 4;
    f.lstm.weight_ih = wih;
    f.lstm.n_weight_hh = 4;
    f.lstm.weight_hh = whh;
    f.lstm.n_bias_ih = 4;
    f.lstm.bias_ih = bih;
    f.lstm.n_bias_hh = 4;
    f.lstm.bias_hh = bhh;
    f.seq.lstm = &f.lstm;
    set_dense(&f.dense[0], 1, 3, head_w, head_b, PREDICTD__ACTIVATION__LINEAR);
    f.seq.n_head = 1;
    double x[2] = {1, 0.5}, p[3];
    /* t = 1, h0 = c0 = 0 */
    double i1 = sigm(0.5 * 1 + 0.11), f1 = sigm(-0.25 * 1 + 0.22);
    double g1 = tanh(1.0 * 1 + 0.33), o1 = sigm(0.75 * 1 + 0.44);
    double c1 = f1 * 0 + i1 * g1, h1 = o1 * tanh(c1);
    /* t = 2 */
    double i2 = sigm(0.5 * 0.5 + 0.1 * h1 + 0.11), f2 = sigm(-0.25 * 0.5 + 0.2 * h1 + 0.22);
    double g2 = tanh(1.0 * 0.5 - 0.3 * h1 + 0.33), o2 = sigm(0.75 * 0.5 + 0.4 * h1 + 0.44);
    double c2 = f2 * c1 + i2 * g2, h2 = o2 * tanh(c2);
    CHECK_NEAR(h2, 0.4255018969337732, 1e-15); /* the same sums in Python */
    CHECK_EQ_INT(build_run(&f, x, p), 0);
    CHECK_NEAR(log(p[0] / p[2]), h2, 1e-14);
}

/* Conv1d (PyTorch semantics, written from the formula) over time-major
 * input len x cin -> lout x cout. */
static void ref_conv(const Predictd__Conv1d *c, const double *x, size_t len, double *y)
{
    size_t lout = len + 2 * c->padding - c->kernel + 1;
    for (size_t t = 0; t < lout; t++)
        for (size_t o = 0; o < c->out_channels; o++) {
            double s = c->bias[o];
            for (size_t i = 0; i < c->in_channels; i++)
                for (size_t k = 0; k < c->kernel; k++) {
                    long src = (long)t + (long)k - (long)c->padding;
                    if (src < 0 || src >= (long)len)
                        continue;
                    s += c->weights[(o * c->in_channels + i) * c->kernel + k] *
                         x[src * c->in_channels + i];
                }
            y[t * c->out_channels + o] = ref_act(c->activation, s);
        }
}

/* torch.nn.LSTM, one layer, returns h_T in h. */
static void ref_lstm(const Predictd__Lstm *l, const double *x, size_t len, double *h)
{
    size_t H = l->hidden_size, I = l->input_size;
    double c[64] = {0}, g[256], hn[64];
    for (size_t k = 0; k < H; k++)
        h[k] = 0;
    for (size_t t = 0; t < len; t++) {
        for (size_t r = 0; r < 4 * H; r++) {
            double s = l->bias_ih[r] + l->bias_hh[r];
            for (size_t i = 0; i < I; i++)
                s += l->weight_ih[r * I + i] * x[t * I + i];
            for (size_t j = 0; j < H; j++)
                s += l->weight_hh[r * H + j] * h[j];
            g[r] = s;
        }
        for (size_t k = 0; k < H; k++) {
            double ig = sigm(g[k]), fg = sigm(g[H + k]), gg = tanh(g[2 * H + k]),
                   og = sigm(g[3 * H + k]);
            c[k] = fg * c[k] + ig * gg;
            hn[k] = og * tanh(c[k]);
        }
        memcpy(h, hn, H * sizeof *h);
    }
}

TEST(test_sequence_random_matches_reference)
{
    /* 3 features x 7 steps -> conv 3->5 k3 p1 relu -> conv 5->4 k2 p0 tanh
     * (6 steps) -> LSTM 4->6 -> head 6->7 gelu -> 7->3. */
    rng_state = 7;
    struct fix f;
    fix_seq(&f, 3, 7);
    for (int i = 0; i < 3; i++) {
        f.mean[i] = rnd();
        f.scale[i] = 1 + rnd() * 0.5;
    }
    double *mem[16];
    int nm = 0;
    mem[nm++] = rnd_array(5 * 3 * 3, 0.5);
    mem[nm++] = rnd_array(5, 0.5);
    set_conv(&f.conv[0], 3, 5, 3, 1, mem[0], mem[1], PREDICTD__ACTIVATION__RELU);
    mem[nm++] = rnd_array(4 * 5 * 2, 0.5);
    mem[nm++] = rnd_array(4, 0.5);
    set_conv(&f.conv[1], 5, 4, 2, 0, mem[2], mem[3], PREDICTD__ACTIVATION__TANH);
    f.seq.n_conv = 2;
    f.lstm.input_size = 4;
    f.lstm.hidden_size = 6;
    f.lstm.n_weight_ih = 24 * 4;
    f.lstm.weight_ih = mem[nm++] = rnd_array(24 * 4, 0.5);
    f.lstm.n_weight_hh = 24 * 6;
    f.lstm.weight_hh = mem[nm++] = rnd_array(24 * 6, 0.5);
    f.lstm.n_bias_ih = f.lstm.n_bias_hh = 24;
    f.lstm.bias_ih = mem[nm++] = rnd_array(24, 0.5);
    f.lstm.bias_hh = mem[nm++] = rnd_array(24, 0.5);
    f.seq.lstm = &f.lstm;
    mem[nm++] = rnd_array(7 * 6, 0.5);
    mem[nm++] = rnd_array(7, 0.5);
    set_dense(&f.dense[0], 6, 7, mem[nm - 2], mem[nm - 1], PREDICTD__ACTIVATION__GELU);
    mem[nm++] = rnd_array(3 * 7, 1);
    mem[nm++] = rnd_array(3, 1);
    set_dense(&f.dense[1], 7, 3, mem[nm - 2], mem[nm - 1], PREDICTD__ACTIVATION__LINEAR);
    f.seq.n_head = 2;

    inference_model *m = NULL;
    char why[256];
    CHECK_EQ_INT(inference_model_build(&f.m, &f.s, &m, why, sizeof why), 0);
    CHECK_EQ_INT(m ? inference_steps(m) : 0, 7);
    void *scratch = m ? malloc(inference_scratch_size(m)) : NULL;
    const struct inf_kernels *ks[2];
    size_t nk = kernel_sets(ks);
    for (int trial = 0; m && trial < 10 * (int)nk; trial++) {
        m->k = ks[(size_t)trial % nk];
        double x[21], xs[21], c0[7 * 5], c1[6 * 4], h[6], d0[7], d1[3], p[3], want[3];
        for (int i = 0; i < 21; i++) {
            x[i] = rnd() * 2;
            xs[i] = (x[i] - f.mean[i % 3]) / f.scale[i % 3];
        }
        /* Dirty scratch must not matter (padding is re-zeroed each run). */
        memset(scratch, 0x7f, inference_scratch_size(m));
        ref_conv(&f.conv[0], xs, 7, c0);
        ref_conv(&f.conv[1], c0, 7, c1);
        ref_lstm(&f.lstm, c1, 6, h);
        ref_dense(&f.dense[0], h, d0);
        ref_dense(&f.dense[1], d0, d1);
        ref_softmax3(d1[0], d1[1], d1[2], want);
        CHECK_EQ_INT(inference_run(m, x, p, scratch), 0);
        for (int c = 0; c < 3; c++)
            CHECK_NEAR(p[c], want[c], 1e-13);
    }
    /* Without the LSTM the head reads the last conv step (4 channels). */
    free(scratch);
    inference_model_free(m);
    m = NULL;
    f.seq.lstm = NULL;
    mem[nm++] = rnd_array(7 * 4, 0.5);
    set_dense(&f.dense[0], 4, 7, mem[nm - 1], f.dense[0].bias, PREDICTD__ACTIVATION__SIGMOID);
    CHECK_EQ_INT(inference_model_build(&f.m, &f.s, &m, why, sizeof why), 0);
    scratch = m ? malloc(inference_scratch_size(m)) : NULL;
    if (m) {
        double x[21], xs[21], c0[7 * 5], c1[6 * 4], d0[7], d1[3], p[3], want[3];
        for (int i = 0; i < 21; i++) {
            x[i] = rnd() * 2;
            xs[i] = (x[i] - f.mean[i % 3]) / f.scale[i % 3];
        }
        ref_conv(&f.conv[0], xs, 7, c0);
        ref_conv(&f.conv[1], c0, 7, c1);
        ref_dense(&f.dense[0], c1 + 5 * 4, d0);
        ref_dense(&f.dense[1], d0, d1);
        ref_softmax3(d1[0], d1[1], d1[2], want);
        CHECK_EQ_INT(inference_run(m, x, p, scratch), 0);
        for (int c = 0; c < 3; c++)
            CHECK_NEAR(p[c], want[c], 1e-13);
        x[20] = NAN;
        CHECK_EQ_INT(inference_run(m, x, p, scratch), PD_EINVAL);
    }
    free(scratch);
    inference_model_free(m);
    for (int i = 0; i < nm; i++)
        free(mem[i]);
}

/* ------------------------------------------------------------------------
 * Golden cases.
 */
TEST(test_golden)
{
    struct fix f;
    fix_softmax(&f);
    f.classes[0] = "SHORT"; /* file order: SHORT, NO_TRADE, LONG */
    f.classes[1] = "NO_TRADE";
    f.classes[2] = "LONG";
    double in0[2] = {1, 2}, in1[2] = {0.5, 1};
    double p0[3], p1[3];
    ref_softmax3(1, 1.5, -0.5, p0); /* already in file order */
    ref_softmax3(0, 0.5, 0, p1);    /* x' = (0, 0) */
    f.golden[0].n_input = 2;
    f.golden[0].input = in0;
    f.golden[0].n_probabilities = 3;
    f.golden[0].probabilities = p0;
    f.golden[1].n_input = 2;
    f.golden[1].input = in1;
    f.golden[1].n_probabilities = 3;
    f.golden[1].probabilities = p1;
    f.m.golden = f.golden_p;

    inference_model *m = NULL;
    char why[256];
    CHECK_EQ_INT(inference_model_build(&f.m, &f.s, &m, why, sizeof why), 0);
    f.m.n_golden = 0;
    CHECK_EQ_INT(inference_check_golden(m, &f.m, 1e-6, why, sizeof why), 0);
    f.m.n_golden = 2;
    CHECK_EQ_INT(inference_check_golden(m, &f.m, 1e-9, why, sizeof why), 0);

    p1[2] += 2e-6; /* file class 2 = LONG */
    CHECK_EQ_INT(inference_check_golden(m, &f.m, 1e-6, why, sizeof why), PD_EVERIFY);
    CHECK(strstr(why, "golden[1]: P(LONG)") != NULL);
    CHECK_EQ_INT(inference_check_golden(m, &f.m, 1e-5, why, sizeof why), 0);
    p1[2] -= 2e-6;

    f.golden[0].n_input = 1;
    CHECK_EQ_INT(inference_check_golden(m, &f.m, 1e-6, why, sizeof why), PD_EVERIFY);
    CHECK(strstr(why, "golden[0]: input has 1 values") != NULL);
    f.golden[0].n_input = 2;
    f.golden[0].n_probabilities = 2;
    CHECK_EQ_INT(inference_check_golden(m, &f.m, 1e-6, why, sizeof why), PD_EVERIFY);
    CHECK(strstr(why, "probabilities has 2") != NULL);
    f.golden[0].n_probabilities = 3;
    in0[1] = NAN;
    CHECK_EQ_INT(inference_check_golden(m, &f.m, 1e-6, why, sizeof why), PD_EVERIFY);
    CHECK(strstr(why, "rejects the input") != NULL);
    in0[1] = 2;
    CHECK_EQ_INT(inference_check_golden(m, &f.m, 1e-6, NULL, 0), 0);
    CHECK_EQ_INT(inference_check_golden(m, &f.m, -1, NULL, 0), PD_EINVAL);
    inference_model_free(m);
}

/* ------------------------------------------------------------------------
 * Validation: each broken file is refused with a telling reason.
 */
TEST(test_reject_header)
{
    struct fix f;
    fix_softmax(&f);
    f.m.format = 2;
    CHECK_REJECT(&f, "format is 2");
    fix_softmax(&f);
    f.m.kind = PREDICTD__MODEL_KIND__MODEL_KIND_UNSPECIFIED;
    CHECK_REJECT(&f, "kind is unset");
    fix_softmax(&f);
    f.m.kind = 9;
    CHECK_REJECT(&f, "kind 9 is unknown");
    fix_softmax(&f);
    f.m.n_layers = 0;
    CHECK_REJECT(&f, "kind SOFTMAX without its body: layers is missing");
    fix_softmax(&f);
    f.m.kind = PREDICTD__MODEL_KIND__TREES;
    CHECK_REJECT(&f, "kind TREES without its body: trees is missing");
    fix_softmax(&f);
    f.m.kind = PREDICTD__MODEL_KIND__SEQUENCE;
    CHECK_REJECT(&f, "sequence is missing");
    fix_stump(&f);
    f.m.sequence = &f.seq;
    CHECK_REJECT(&f, "kind TREES also has a sequence body");
    fix_softmax(&f);
    f.m.trees = &f.ens;
    CHECK_REJECT(&f, "kind SOFTMAX also has a trees body");
    fix_softmax(&f);
    set_dense(&f.dense[1], 3, 3, sm_w, sm_b, PREDICTD__ACTIVATION__LINEAR);
    f.m.n_layers = 2;
    CHECK_REJECT(&f, "SOFTMAX has 2 layers, expected exactly 1");

    fix_softmax(&f);
    f.m.n_classes = 2;
    CHECK_REJECT(&f, "classes: 2 names");
    fix_softmax(&f);
    f.classes[1] = "BUY";
    CHECK_REJECT(&f, "classes[1]: unknown class \"BUY\"");
    fix_softmax(&f);
    f.classes[2] = "long";
    CHECK_REJECT(&f, "unknown class \"long\"");
    fix_softmax(&f);
    f.classes[2] = "LONG";
    CHECK_REJECT(&f, "classes[2]: LONG appears twice");

    fix_softmax(&f);
    f.m.n_features = 0;
    CHECK_REJECT(&f, "features: empty");
    fix_softmax(&f);
    f.features[1] = "";
    CHECK_REJECT(&f, "features[1] is empty");
    fix_softmax(&f);
    f.m.window = 0;
    CHECK_REJECT(&f, "window is 0");
    fix_softmax(&f);
    f.m.window = INFERENCE_MAX_WINDOW + 1;
    CHECK_REJECT(&f, "window is 100001, over the limit");
    fix_softmax(&f);
    f.m.temperature = -1;
    CHECK_REJECT(&f, "temperature is -1");
    fix_softmax(&f);
    f.m.temperature = NAN;
    CHECK_REJECT(&f, "temperature is nan");

    inference_model *m = NULL;
    CHECK_EQ_INT(inference_model_build(NULL, NULL, &m, NULL, 0), PD_EINVAL);
}

TEST(test_reject_policy)
{
    struct fix f;
    fix_softmax(&f);
    f.m.policy = NULL;
    CHECK_REJECT(&f, "policy: missing");
    fix_softmax(&f);
    f.p.sl_atr = 0;
    CHECK_REJECT(&f, "policy: sl_atr is 0");
    fix_softmax(&f);
    f.p.sl_atr = INFINITY;
    CHECK_REJECT(&f, "sl_atr is inf");
    fix_softmax(&f);
    f.p.n_tp_r = 2;
    CHECK_REJECT(&f, "policy: tp_r has 2 values, expected 3");
    fix_softmax(&f);
    f.tp_r[1] = 0.5;
    CHECK_REJECT(&f, "tp_r is not ascending");
    fix_softmax(&f);
    f.tp_r[2] = 2;
    CHECK_REJECT(&f, "tp_r is not ascending");
    fix_softmax(&f);
    f.tp_r[0] = -1;
    CHECK_REJECT(&f, "tp_r[0] is -1");
    fix_softmax(&f);
    f.p.horizon = 0;
    CHECK_REJECT(&f, "horizon is 0");
    fix_softmax(&f);
    f.p.min_confidence = 1.5;
    CHECK_REJECT(&f, "min_confidence is 1.5");
    fix_softmax(&f);
    f.p.min_confidence = NAN;
    CHECK_REJECT(&f, "min_confidence is nan");
    fix_softmax(&f);
    f.p.n_eta_candles = 1;
    CHECK_REJECT(&f, "eta_candles has 1 values, expected 0 or 2");
    fix_softmax(&f);
    f.eta[1] = -3;
    CHECK_REJECT(&f, "eta_candles[1] is -3");
    fix_softmax(&f);
    f.p.max_age_s = -1;
    CHECK_REJECT(&f, "max_age_s is -1");
    fix_softmax(&f);
    f.p.atr_period = INFERENCE_MAX_WINDOW + 1;
    CHECK_REJECT(&f, "atr_period");
    /* the market's costs: a round trip in [0, 10000) bps, a floor >= 0 */
    Predictd__Costs costs;
    const double bad_bps[] = {NAN, INFINITY, -1, 10000};
    for (size_t i = 0; i < sizeof bad_bps / sizeof bad_bps[0]; i++) {
        fix_softmax(&f);
        predictd__costs__init(&costs);
        costs.round_trip_bps = bad_bps[i];
        f.p.costs = &costs;
        CHECK_REJECT(&f, "policy: costs.round_trip_bps is");
    }
    const double bad_floor[] = {NAN, -0.5, INFINITY};
    for (size_t i = 0; i < sizeof bad_floor / sizeof bad_floor[0]; i++) {
        fix_softmax(&f);
        predictd__costs__init(&costs);
        costs.round_trip_bps = 4;
        costs.min_risk_costs = bad_floor[i];
        f.p.costs = &costs;
        CHECK_REJECT(&f, "policy: costs.min_risk_costs is");
    }
    fix_softmax(&f);
    predictd__costs__init(&costs);
    costs.round_trip_bps = 0; /* free trading: allowed; floor 0 means the default */
    f.p.costs = &costs;
    inference_model *mc = NULL;
    CHECK_EQ_INT(inference_model_build(&f.m, &f.s, &mc, NULL, 0), 0);
    if (mc) {
        CHECK_NEAR(inference_model_policy(mc)->cost_bps, 0, 0);
        CHECK_NEAR(inference_model_policy(mc)->min_risk_costs, INFERENCE_DEFAULT_MIN_RISK_COSTS, 0);
        inference_model_free(mc);
    }
    costs.round_trip_bps = 9999.5;
    costs.min_risk_costs = 2.5;
    CHECK_EQ_INT(inference_model_build(&f.m, &f.s, &mc, NULL, 0), 0);
    if (mc) {
        CHECK_NEAR(inference_model_policy(mc)->cost_bps, 9999.5, 0);
        CHECK_NEAR(inference_model_policy(mc)->min_risk_costs, 2.5, 0);
        inference_model_free(mc);
    }

    /* Optional values: absent ETA is NaN, NaN in the file means unknown. */
    fix_softmax(&f);
    f.p.n_eta_candles = 0;
    f.p.atr_period = 21;
    inference_model *m = NULL;
    CHECK_EQ_INT(inference_model_build(&f.m, &f.s, &m, NULL, 0), 0);
    if (m) {
        CHECK(isnan(inference_model_policy(m)->eta_candles[0]));
        CHECK_EQ_INT(inference_model_policy(m)->atr_period, 21);
        inference_model_free(m);
    }
    fix_softmax(&f);
    f.eta[0] = NAN;
    CHECK_EQ_INT(inference_model_build(&f.m, &f.s, &m, NULL, 0), 0);
    inference_model_free(m);
}

TEST(test_reject_scaler)
{
    struct fix f;
    fix_softmax(&f);
    inference_model *m = (inference_model *)0x1;
    char why[256];
    CHECK_EQ_INT(inference_model_build(&f.m, NULL, &m, why, sizeof why), PD_EVERIFY);
    CHECK(strstr(why, "scaler: missing") != NULL);
    fix_softmax(&f);
    f.s.n_mean = 1;
    CHECK_REJECT(&f, "scaler: mean has 1 values, expected n_features=2");
    fix_softmax(&f);
    f.s.n_scale = 3;
    CHECK_REJECT(&f, "scaler: scale has 3 values");
    fix_softmax(&f);
    f.scale[1] = 0;
    CHECK_REJECT(&f, "scaler: scale[1] is 0 (feature \"f1\")");
    fix_softmax(&f);
    f.mean[0] = NAN;
    CHECK_REJECT(&f, "scaler: mean[0] is not finite");
    fix_softmax(&f);
    f.scale[0] = -INFINITY;
    CHECK_REJECT(&f, "scaler: scale[0] is not finite");
    fix_softmax(&f);
    f.sfeatures[1] = "rsi:14";
    CHECK_REJECT(&f, "scaler: features[1] is \"rsi:14\", the model's is \"f1\"");
    fix_softmax(&f);
    f.s.n_features = 1;
    CHECK_REJECT(&f, "scaler: lists 1 features, the model 2");
    /* A scaler without feature names is fine. */
    fix_softmax(&f);
    f.s.n_features = 0;
    CHECK_EQ_INT(inference_model_build(&f.m, &f.s, &m, NULL, 0), 0);
    inference_model_free(m);
    /* A bad scaler is refused even where it is not applied. */
    fix_stump(&f);
    f.scale[0] = 0;
    CHECK_REJECT(&f, "scale[0] is 0");
}

TEST(test_reject_layers)
{
    static double w_nan[6] = {1, 0, NAN, 2, -1, 1}, b_inf[3] = {0, INFINITY, 0};
    static double w4[8], b4[4], w43[12], b3[3];
    struct fix f;
    fix_softmax(&f);
    f.dense[0].n_weights = 5;
    CHECK_REJECT(&f, "layers[0]: weights has 5 values, expected 3x2=6");
    fix_softmax(&f);
    f.dense[0].n_bias = 2;
    CHECK_REJECT(&f, "layers[0]: bias has 2 values, expected out=3");
    fix_softmax(&f);
    f.dense[0].weights = w_nan;
    CHECK_REJECT(&f, "layers[0]: weights[2] is not finite (nan)");
    fix_softmax(&f);
    f.dense[0].bias = b_inf;
    CHECK_REJECT(&f, "layers[0]: bias[1] is not finite (inf)");
    fix_softmax(&f);
    f.dense[0].in = 3;
    f.dense[0].n_weights = 9;
    CHECK_REJECT(&f, "layers[0]: in is 3, expected 2 (n_features)");
    fix_softmax(&f);
    f.dense[0].activation = 9;
    CHECK_REJECT(&f, "layers[0]: unknown activation 9");
    fix_softmax(&f);
    f.dense[0].activation = PREDICTD__ACTIVATION__RELU;
    CHECK_REJECT(&f, "layers[0]: the last layer's activation is RELU, expected LINEAR");
    fix_softmax(&f);
    f.dense[0].out = 0;
    CHECK_REJECT(&f, "layers[0]: out is 0");

    /* MLP chain: 2 -> 4 -> (in 3) */
    fix_init(&f, 2);
    f.m.kind = PREDICTD__MODEL_KIND__MLP;
    set_dense(&f.dense[0], 2, 4, w4, b4, PREDICTD__ACTIVATION__TANH);
    set_dense(&f.dense[1], 3, 3, w43, b3, PREDICTD__ACTIVATION__LINEAR);
    f.m.n_layers = 2;
    f.m.layers = f.dense_p;
    CHECK_REJECT(&f, "layers[1]: in is 3, expected 4 (the out of layers[0])");
    set_dense(&f.dense[1], 4, 3, w43, b3, PREDICTD__ACTIVATION__LINEAR);
    inference_model *m = NULL;
    CHECK_EQ_INT(inference_model_build(&f.m, &f.s, &m, NULL, 0), 0);
    inference_model_free(m);
    set_dense(&f.dense[1], 4, 2, w43, b3, PREDICTD__ACTIVATION__LINEAR);
    CHECK_REJECT(&f, "layers[1]: out is 2, expected 3");
    f.dense_p[1] = NULL;
    CHECK_REJECT(&f, "layers[1]: missing");

    /* Sizes a hostile file could claim: caught before any allocation. */
    fix_softmax(&f);
    f.dense[0].in = 70000;
    CHECK_REJECT(&f, "layers[0]: in is 70000, over the limit of 65536");
    fix_init(&f, 2);
    f.m.kind = PREDICTD__MODEL_KIND__MLP;
    double *big_w = calloc(2 * 9000, sizeof(double)), *big_b = calloc(9000, sizeof(double));
    set_dense(&f.dense[0], 2, 9000, big_w, big_b, PREDICTD__ACTIVATION__TANH);
    set_dense(&f.dense[1], 9000, 9000, w4, b4, PREDICTD__ACTIVATION__TANH);
    f.dense[1].n_weights = 8; /* lies; the parameter count fails first */
    f.dense[1].n_bias = 4;
    f.m.n_layers = 2;
    f.m.layers = f.dense_p;
    CHECK_REJECT(&f, "layers[1]: the model has more than 50000000 parameters");
    free(big_w);
    free(big_b);
}

TEST(test_reject_trees)
{
    static int32_t cyc_left[3] = {1, 0, -1}, cyc_feature[3] = {0, 0, -1};
    static int32_t cyc_right[3] = {2, 2, -1};
    static int32_t self_left[3] = {0, -1, -1};
    static int32_t far_right[3] = {7, -1, -1};
    static int32_t neg_left[3] = {-1, -1, -1};
    static int32_t shared_left[3] = {1, -1, -1}, shared_right[3] = {1, -1, -1};
    static int32_t bad_feature[3] = {2, -1, -1};
    static double nan_thr[3] = {NAN, 0, 0}, nan_val[3] = {0, 1, NAN};
    struct fix f;

    fix_stump(&f);
    f.ens.n_features = 3;
    CHECK_REJECT(&f, "trees: n_features is 3, the model lists 2 features");
    fix_stump(&f);
    f.ens.n_classes = 2;
    CHECK_REJECT(&f, "trees: n_classes is 2, expected 3");
    fix_stump(&f);
    f.ens.n_trees = 0;
    f.ens.n_tree_class = 0;
    CHECK_REJECT(&f, "trees: no trees");
    fix_stump(&f);
    f.ens.n_tree_class = 2;
    CHECK_REJECT(&f, "tree_class has 2 values, expected one per tree (1)");
    fix_stump(&f);
    f.tree_class[0] = 3;
    CHECK_REJECT(&f, "tree_class[0] is 3, expected < 3");
    fix_stump(&f);
    f.ens.n_base_score = 2;
    CHECK_REJECT(&f, "base_score has 2 values, expected 3");
    fix_stump(&f);
    f.base_score[2] = NAN;
    CHECK_REJECT(&f, "trees: base_score[2] is not finite");
    fix_stump(&f);
    f.ens.rule = 5;
    CHECK_REJECT(&f, "unknown split rule 5");
    fix_stump(&f);
    f.trees[0].n_threshold = 2;
    CHECK_REJECT(&f, "trees.trees[0]: threshold has 2 values, expected nodes=3");
    fix_stump(&f);
    f.trees[0].n_value = 4;
    CHECK_REJECT(&f, "trees.trees[0]: value has 4 values");
    fix_stump(&f);
    f.trees[0].n_default_left = 1;
    CHECK_REJECT(&f, "default_left has 1 values, expected 0 or nodes=3");
    fix_stump(&f);
    f.trees[0].n_feature = f.trees[0].n_threshold = f.trees[0].n_left = f.trees[0].n_right =
        f.trees[0].n_value = 0;
    CHECK_REJECT(&f, "trees.trees[0]: no nodes");
    fix_stump(&f);
    f.trees[0].feature = cyc_feature;
    f.trees[0].left = cyc_left;
    f.trees[0].right = cyc_right;
    CHECK_REJECT(&f, "not a tree");
    fix_stump(&f);
    f.trees[0].left = self_left;
    CHECK_REJECT(&f, "trees.trees[0]: node 0 is reached twice (from node 0): not a tree");
    fix_stump(&f);
    f.trees[0].left = shared_left;
    f.trees[0].right = shared_right;
    CHECK_REJECT(&f, "node 1 is reached twice");
    fix_stump(&f);
    f.trees[0].right = far_right;
    CHECK_REJECT(&f, "trees.trees[0]: node 0: right child 7 out of range (the tree has 3 nodes)");
    fix_stump(&f);
    f.trees[0].left = neg_left;
    CHECK_REJECT(&f, "node 0: left child -1 out of range");
    fix_stump(&f);
    f.trees[0].feature = bad_feature;
    CHECK_REJECT(&f, "node 0 splits on feature 2, the model has 2 features");
    fix_stump(&f);
    f.trees[0].threshold = nan_thr;
    CHECK_REJECT(&f, "trees.trees[0]: threshold[0] is not finite");
    fix_stump(&f);
    f.trees[0].value = nan_val;
    CHECK_REJECT(&f, "trees.trees[0]: value[2] is not finite");
    fix_stump(&f);
    f.trees_p[0] = NULL;
    CHECK_REJECT(&f, "trees.trees[0]: missing");
}

TEST(test_reject_sequence)
{
    static double w3[3] = {1, 2, 3}, b1[1] = {0}, w12[12], b4[4], w[64];
    struct fix f;
    fix_seq(&f, 1, 3);
    set_conv(&f.conv[0], 1, 1, 3, 1, w3, b1, PREDICTD__ACTIVATION__LINEAR);
    f.seq.n_conv = 1;
    set_dense(&f.dense[0], 1, 3, head_w, head_b, PREDICTD__ACTIVATION__LINEAR);
    f.seq.n_head = 1;
    inference_model *m = NULL;
    CHECK_EQ_INT(inference_model_build(&f.m, &f.s, &m, NULL, 0), 0);
    inference_model_free(m);

    f.seq.steps = 0;
    CHECK_REJECT(&f, "sequence: steps is 0");
    f.seq.steps = 3;
    f.conv[0].in_channels = 2;
    f.conv[0].n_weights = 6;
    CHECK_REJECT(&f, "sequence.conv[0]: in_channels is 2, expected 1");
    f.conv[0].in_channels = 1;
    f.conv[0].n_weights = 2;
    CHECK_REJECT(&f, "sequence.conv[0]: weights has 2 values, expected 1x1x3=3");
    f.conv[0].n_weights = 3;
    f.conv[0].n_bias = 2;
    CHECK_REJECT(&f, "sequence.conv[0]: bias has 2 values");
    f.conv[0].n_bias = 1;
    f.conv[0].padding = 0;
    f.seq.steps = 2;
    CHECK_REJECT(&f, "sequence.conv[0]: output length 0 < 1");
    f.seq.steps = 3;
    f.conv[0].padding = 1;
    f.conv[0].kernel = 0;
    CHECK_REJECT(&f, "sequence.conv[0]: kernel is 0");
    f.conv[0].kernel = 3;
    f.conv[0].activation = 7;
    CHECK_REJECT(&f, "sequence.conv[0]: unknown activation 7");
    f.conv[0].activation = 0;
    f.seq.n_head = 0;
    CHECK_REJECT(&f, "sequence.head: no layers");
    f.seq.n_head = 1;
    f.dense[0].in = 2;
    f.dense[0].n_weights = 6;
    CHECK_REJECT(&f, "sequence.head[0]: in is 2, expected 1 (the last conv's out_channels)");
    f.dense[0].in = 1;
    f.dense[0].n_weights = 3;

    /* LSTM 1 -> 1 needs 4 x 1 weights each way. */
    f.lstm.input_size = 2;
    f.lstm.hidden_size = 1;
    f.lstm.n_weight_ih = 8;
    f.lstm.weight_ih = w;
    f.lstm.n_weight_hh = 4;
    f.lstm.weight_hh = w;
    f.lstm.n_bias_ih = 4;
    f.lstm.bias_ih = w;
    f.lstm.n_bias_hh = 4;
    f.lstm.bias_hh = w;
    f.seq.lstm = &f.lstm;
    CHECK_REJECT(&f, "sequence.lstm: input_size is 2, expected 1");
    f.lstm.input_size = 1;
    f.lstm.n_weight_ih = 4;
    f.lstm.n_weight_hh = 3;
    CHECK_REJECT(&f, "sequence.lstm: weight_hh has 3 values, expected 4x1x1=4");
    f.lstm.n_weight_hh = 4;
    f.lstm.n_bias_hh = 1;
    CHECK_REJECT(&f, "sequence.lstm: bias_hh has 1 values");
    f.lstm.n_bias_hh = 4;
    w[2] = NAN;
    CHECK_REJECT(&f, "sequence.lstm: weight_ih[2] is not finite");
    w[2] = 0;
    f.lstm.hidden_size = 0;
    CHECK_REJECT(&f, "sequence.lstm: hidden_size is 0");
    f.lstm.hidden_size = 1;
    CHECK_EQ_INT(inference_model_build(&f.m, &f.s, &m, NULL, 0), 0);
    inference_model_free(m);
    f.lstm.hidden_size = 4;
    CHECK_REJECT(&f, "weight_ih has 4 values, expected 4x4x1=16");
    f.lstm.hidden_size = 1;

    /* Hostile shapes: a long sequence through a wide conv needs more
     * scratch than allowed (65536 steps x 4096 channels). */
    static double wide_w[4096], wide_b[4096];
    f.seq.lstm = NULL;
    f.seq.steps = 65536;
    set_conv(&f.conv[0], 1, 4096, 1, 0, wide_w, wide_b, PREDICTD__ACTIVATION__LINEAR);
    CHECK_REJECT(&f, "scratch");
    f.seq.steps = 70000;
    CHECK_REJECT(&f, "sequence: steps is 70000, over the limit");
    (void)w12;
    (void)b4;
}

/* The sequence shapes the first test leaves: a conv padding or output
 * length over the width limit, a non-finite conv weight, a non-finite LSTM
 * input bias (each array its own); a NULL or over-long feature list; a
 * refusal with no why buffer, and no out pointer (with a reason). */
TEST(test_reject_sequence_limits)
{
    static double w3[3] = {1, 2, 3}, b1[1] = {0};
    static double wih[4], whh[4], bih[4], bhh[4];
    struct fix f;
    fix_seq(&f, 1, 3);
    set_conv(&f.conv[0], 1, 1, 3, 1, w3, b1, PREDICTD__ACTIVATION__LINEAR);
    f.seq.n_conv = 1;
    set_dense(&f.dense[0], 1, 3, head_w, head_b, PREDICTD__ACTIVATION__LINEAR);
    f.seq.n_head = 1;
    inference_model *m = NULL;
    CHECK_EQ_INT(inference_model_build(&f.m, &f.s, &m, NULL, 0), 0);
    inference_model_free(m);

    f.conv[0].padding = INFERENCE_MAX_WIDTH + 1;
    CHECK_REJECT(&f, "sequence.conv[0]: padding is 65537, over the limit of 65536");
    f.conv[0].padding = INFERENCE_MAX_WIDTH / 2; /* 3 + 65536 - 3 + 1 */
    CHECK_REJECT(&f, "sequence.conv[0]: output length 65537, over the limit of 65536");
    f.conv[0].padding = 1;
    w3[1] = INFINITY;
    CHECK_REJECT(&f, "sequence.conv[0]: weights[1] is not finite (inf)");
    w3[1] = 2;
    b1[0] = NAN;
    CHECK_REJECT(&f, "sequence.conv[0]: bias[0] is not finite");
    b1[0] = 0;

    f.lstm.input_size = 1;
    f.lstm.hidden_size = 1;
    f.lstm.n_weight_ih = 4;
    f.lstm.weight_ih = wih;
    f.lstm.n_weight_hh = 4;
    f.lstm.weight_hh = whh;
    f.lstm.n_bias_ih = 4;
    f.lstm.bias_ih = bih;
    f.lstm.n_bias_hh = 4;
    f.lstm.bias_hh = bhh;
    f.seq.lstm = &f.lstm;
    CHECK_EQ_INT(inference_model_build(&f.m, &f.s, &m, NULL, 0), 0);
    inference_model_free(m);
    whh[3] = NAN;
    CHECK_REJECT(&f, "sequence.lstm: weight_hh[3] is not finite");
    whh[3] = 0;
    bih[1] = -INFINITY;
    CHECK_REJECT(&f, "sequence.lstm: bias_ih[1] is not finite (-inf)");
    bih[1] = 0;
    bhh[0] = NAN;
    CHECK_REJECT(&f, "sequence.lstm: bias_hh[0] is not finite");
    bhh[0] = 0;
    f.lstm.n_bias_ih = 3;
    CHECK_REJECT(&f, "sequence.lstm: bias_ih has 3 values");
    f.lstm.n_bias_ih = 4;
    CHECK_EQ_INT(inference_model_build(&f.m, &f.s, &m, NULL, 0), 0);
    inference_model_free(m);

    fix_softmax(&f);
    f.features[0] = NULL;
    CHECK_REJECT(&f, "features[0] is empty");
    fix_softmax(&f);
    f.m.n_features = INFERENCE_MAX_WIDTH + 1; /* refused before the list is read */
    CHECK_REJECT(&f, "features: 65537, over the limit of 65536");

    fix_softmax(&f);
    f.m.window = 0;
    m = (inference_model *)0x1;
    CHECK_EQ_INT(inference_model_build(&f.m, &f.s, &m, NULL, 0), PD_EVERIFY);
    CHECK(m == (inference_model *)0x1);
    char why[128] = "";
    CHECK_EQ_INT(inference_model_build(&f.m, &f.s, NULL, why, sizeof why), PD_EINVAL);
    CHECK(why[0] != '\0');
}

/* ------------------------------------------------------------------------
 * Signals, names, softmax.
 */
static inference_policy test_policy(void)
{
    inference_policy p = {0};
    p.sl_atr = 1.5;
    p.tp_r[0] = 1;
    p.tp_r[1] = 2;
    p.tp_r[2] = 3;
    p.horizon = 24;
    p.min_confidence = 0.5;
    p.atr_period = 14;
    p.eta_candles[0] = 4;
    p.eta_candles[1] = 6;
    return p;
}

TEST(test_signal_long_short)
{
    inference_policy pol = test_policy();
    inference_signal s;
    double pl[3] = {0.6, 0.3, 0.1};
    CHECK_EQ_INT(inference_signal_make(&pol, pl, 100, 2, &s), 0);
    CHECK_EQ_INT(s.direction, INFERENCE_LONG);
    CHECK_EQ_INT(s.levels_for, INFERENCE_LONG);
    CHECK_NEAR(s.confidence, 0.6, 0);
    CHECK_NEAR(s.entry, 100, 0);
    CHECK_NEAR(s.stop_loss, 97, 0);
    CHECK_NEAR(s.tp[0], 103, 0);
    CHECK_NEAR(s.tp[1], 106, 0);
    CHECK_NEAR(s.tp[2], 109, 0);
    CHECK_NEAR(s.eta_candles, 4, 0);

    double ps[3] = {0.2, 0.7, 0.1};
    CHECK_EQ_INT(inference_signal_make(&pol, ps, 100, 2, &s), 0);
    CHECK_EQ_INT(s.direction, INFERENCE_SHORT);
    CHECK_EQ_INT(s.levels_for, INFERENCE_SHORT);
    CHECK_NEAR(s.confidence, 0.7, 0);
    CHECK_NEAR(s.stop_loss, 103, 0);
    CHECK_NEAR(s.tp[0], 97, 0);
    CHECK_NEAR(s.tp[1], 94, 0);
    CHECK_NEAR(s.tp[2], 91, 0);
    CHECK_NEAR(s.eta_candles, 6, 0);
}

TEST(test_signal_no_trade)
{
    inference_policy pol = test_policy();
    inference_signal s;
    /* Below min_confidence: NO_TRADE, levels for the leaning side; the
     * confidence is the probability of the class the model chose (SHORT),
     * never p(NO_TRADE), and the reason is said. */
    double p1[3] = {0.35, 0.45, 0.2};
    CHECK_EQ_INT(inference_signal_make(&pol, p1, 50, 1, &s), 0);
    CHECK_EQ_INT(s.direction, INFERENCE_NO_TRADE);
    CHECK_EQ_INT(s.model_choice, INFERENCE_SHORT);
    CHECK_EQ_INT(s.no_trade_reason, INFERENCE_NT_MIN_CONFIDENCE);
    CHECK_EQ_INT(s.levels_for, INFERENCE_SHORT);
    CHECK_NEAR(s.confidence, 0.45, 0);
    CHECK(strcmp(inference_no_trade_reason_name(s.no_trade_reason), "below_min_confidence") == 0);
    CHECK_NEAR(s.stop_loss, 51.5, 0);
    CHECK_NEAR(s.tp[2], 45.5, 0);
    /* NO_TRADE the most probable. */
    double p2[3] = {0.2, 0.1, 0.7};
    CHECK_EQ_INT(inference_signal_make(&pol, p2, 50, 1, &s), 0);
    CHECK_EQ_INT(s.direction, INFERENCE_NO_TRADE);
    CHECK_EQ_INT(s.no_trade_reason, INFERENCE_NT_MODEL);
    CHECK_EQ_INT(s.levels_for, INFERENCE_LONG);
    CHECK_NEAR(s.confidence, 0.7, 0);
    CHECK_NEAR(s.stop_loss, 48.5, 0);
    /* Exactly min_confidence is enough; ties go to LONG. */
    double p3[3] = {0.5, 0.5, 0};
    CHECK_EQ_INT(inference_signal_make(&pol, p3, 50, 1, &s), 0);
    CHECK_EQ_INT(s.direction, INFERENCE_LONG);
    CHECK_EQ_INT(s.levels_for, INFERENCE_LONG);
    /* Unknown ETA stays NaN. */
    pol.eta_candles[0] = NAN;
    CHECK_EQ_INT(inference_signal_make(&pol, p3, 50, 1, &s), 0);
    CHECK(isnan(s.eta_candles));
}

TEST(test_signal_invalid)
{
    inference_policy pol = test_policy();
    inference_signal s, keep;
    memset(&keep, 0xab, sizeof keep);
    s = keep;
    double pl[3] = {0.6, 0.3, 0.1}, ps[3] = {0.2, 0.7, 0.1};
    CHECK_EQ_INT(inference_signal_make(&pol, pl, 100, 0, &s), PD_EINVAL);
    CHECK_EQ_INT(inference_signal_make(&pol, pl, 100, -1, &s), PD_EINVAL);
    CHECK_EQ_INT(inference_signal_make(&pol, pl, 100, NAN, &s), PD_EINVAL);
    CHECK_EQ_INT(inference_signal_make(&pol, pl, 100, INFINITY, &s), PD_EINVAL);
    CHECK_EQ_INT(inference_signal_make(&pol, pl, 0, 1, &s), PD_EINVAL);
    CHECK_EQ_INT(inference_signal_make(&pol, pl, NAN, 1, &s), PD_EINVAL);
    double pn[3] = {NAN, 0.5, 0.5};
    CHECK_EQ_INT(inference_signal_make(&pol, pn, 100, 1, &s), PD_EINVAL);
    /* LONG stop at or below zero: 1 - 1.5 x 1 < 0. */
    CHECK_EQ_INT(inference_signal_make(&pol, pl, 1, 1, &s), PD_EINVAL);
    /* SHORT TP3 below zero: 10 - 3 x 4.5 < 0 (stop 14.5 is fine). */
    CHECK_EQ_INT(inference_signal_make(&pol, ps, 10, 3, &s), PD_EINVAL);
    CHECK(memcmp(&s, &keep, sizeof s) == 0);
    CHECK_EQ_INT(inference_signal_make(NULL, pl, 100, 1, &s), PD_EINVAL);
    CHECK_EQ_INT(inference_signal_make(&pol, pl, 100, 1, NULL), PD_EINVAL);
    /* The same SHORT with a smaller ATR is fine. */
    CHECK_EQ_INT(inference_signal_make(&pol, ps, 10, 1, &s), 0);
}

TEST(test_class_names_and_softmax)
{
    CHECK_EQ_STR(inference_class_name(INFERENCE_LONG), "LONG");
    CHECK_EQ_STR(inference_class_name(INFERENCE_SHORT), "SHORT");
    CHECK_EQ_STR(inference_class_name(INFERENCE_NO_TRADE), "NO_TRADE");
    CHECK_EQ_STR(inference_class_name((enum inference_class)7), "UNKNOWN");
    CHECK_EQ_INT(inference_class_parse("LONG"), INFERENCE_LONG);
    CHECK_EQ_INT(inference_class_parse("SHORT"), INFERENCE_SHORT);
    CHECK_EQ_INT(inference_class_parse("NO_TRADE"), INFERENCE_NO_TRADE);
    CHECK_EQ_INT(inference_class_parse("no_trade"), -1);
    CHECK_EQ_INT(inference_class_parse(""), -1);
    CHECK_EQ_INT(inference_class_parse(NULL), -1);

    /* Huge logits do not overflow. */
    double v[3] = {1000, 1001, 1002}, want[3];
    inference_softmax(v, 3, 0);
    ref_softmax3(0, 1, 2, want);
    for (int i = 0; i < 3; i++)
        CHECK_NEAR(v[i], want[i], 1e-15);
    double t[3] = {2, 4, -2};
    inference_softmax(t, 3, 2);
    ref_softmax3(1, 2, -1, want);
    for (int i = 0; i < 3; i++)
        CHECK_NEAR(t[i], want[i], 1e-15);
    double one[1] = {-5};
    inference_softmax(one, 1, 1);
    CHECK_NEAR(one[0], 1, 0);
    inference_softmax(NULL, 0, 1);
}

/* The one triple barrier (labels and the live resolver both use it). Bad
 * levels are refused with PD_EINVAL and the barrier left as it was: no
 * side, a side other than +-1, an entry not finite or not positive, a stop
 * not finite or not on the losing side (or at the entry), a take-profit
 * not finite, out of order, or TP1 at the entry. A short's targets at or
 * below zero are allowed. Fed candles, worked by hand: the stop wins a
 * candle that reaches both, a farther target implies the nearer ones, TP3
 * ends the trade, and the class is the side whose TP1 came first. */
TEST(test_barrier_levels_and_walk)
{
    inference_barrier b, before;
    memset(&b, 0x5a, sizeof b);
    before = b;
    const double up[3] = {110, 120, 130}, down[3] = {90, 80, 70};
    const double nan3[3] = {110, NAN, 130}, disorder[3] = {120, 110, 130};
    const double at_entry[3] = {100, 120, 130}, inf3[3] = {110, 120, INFINITY};
    struct {
        const char *what;
        int dir;
        double entry, stop;
        const double *tp;
    } bad[] = {
        {"no take-profits", 1, 100, 95, NULL},
        {"side 0", 0, 100, 95, up},
        {"side 2", 2, 100, 95, up},
        {"entry NaN", 1, NAN, 95, up},
        {"entry 0", 1, 0, -5, up},
        {"entry negative", -1, -100, -90, down},
        {"entry infinite", 1, INFINITY, 95, up},
        {"stop NaN", 1, 100, NAN, up},
        {"stop infinite", -1, 100, INFINITY, down},
        {"long stop above the entry", 1, 100, 105, up},
        {"short stop below the entry", -1, 100, 95, down},
        {"stop at the entry", 1, 100, 100, up},
        {"a take-profit NaN", 1, 100, 95, nan3},
        {"a take-profit infinite", 1, 100, 95, inf3},
        {"take-profits out of order", 1, 100, 95, disorder},
        {"long take-profits on the short side", 1, 100, 95, down},
        {"TP1 at the entry", 1, 100, 95, at_entry},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = inference_barrier_init(&b, bad[i].dir, bad[i].entry, bad[i].stop, bad[i].tp);
        if (rc != PD_EINVAL)
            printf("  %s: accepted\n", bad[i].what);
        CHECK_EQ_INT(rc, PD_EINVAL);
        CHECK(memcmp(&b, &before, sizeof b) == 0);
    }
    CHECK_EQ_INT(inference_barrier_init(NULL, 1, 100, 95, up), PD_EINVAL);
    /* a short's far targets below zero: allowed */
    const double below[3] = {50, 0, -50};
    CHECK_EQ_INT(inference_barrier_init(&b, -1, 100, 150, below), 0);
    CHECK_NEAR(b.risk, 50, 0);

    /* LONG 100, stop 95, targets 110/120/130; SHORT 100, stop 105, 90/80/70 */
    inference_barrier l, sh;
    CHECK_EQ_INT(inference_barrier_init(&l, 1, 100, 95, up), 0);
    CHECK_EQ_INT(inference_barrier_init(&sh, -1, 100, 105, down), 0);
    CHECK(isnan(l.last_close));
    CHECK_EQ_INT(inference_barrier_class(&l, &sh, NULL), -1);
    /* j1: 104/96 touches nothing */
    CHECK(!inference_barrier_step(&l, 104, 96, 101, 1));
    CHECK(!inference_barrier_step(&sh, 104, 96, 101, 1));
    CHECK_NEAR(l.mfe, 0.8, 1e-12);
    CHECK_NEAR(l.mae, 0.8, 1e-12);
    /* j2: 121/99: LONG reaches TP1 and TP2 at once; SHORT is stopped */
    CHECK(inference_barrier_step(&l, 121, 99, 120, 2));
    CHECK(!inference_barrier_step(&sh, 121, 99, 120, 2));
    CHECK_EQ_INT(l.hit[0], 2);
    CHECK_EQ_INT(l.hit[1], 2);
    CHECK_EQ_INT(l.hit[2], 0);
    CHECK(!l.done);
    CHECK_EQ_INT(sh.stopped, 2);
    CHECK(sh.done);
    uint32_t at = 0;
    CHECK_EQ_INT(inference_barrier_class(&l, &sh, &at), INFERENCE_LONG);
    CHECK_EQ_INT(at, 2);
    /* a done side ignores candles */
    CHECK(!inference_barrier_step(&sh, 200, 1, 100, 3));
    CHECK_EQ_INT(sh.last, 2);
    /* j3: 131 reaches TP3: done */
    CHECK(!inference_barrier_step(&l, 131, 119, 130, 3));
    CHECK_EQ_INT(l.hit[2], 3);
    CHECK(l.done);
    CHECK_NEAR(l.mfe, 6.2, 1e-12);
    CHECK_NEAR(l.last_close, 130, 0);

    /* one candle reaching the stop and TP1: stopped, not a win */
    CHECK_EQ_INT(inference_barrier_init(&l, 1, 100, 95, up), 0);
    CHECK(!inference_barrier_step(&l, 111, 94, 100, 1));
    CHECK_EQ_INT(l.stopped, 1);
    CHECK_EQ_INT(l.hit[0], 0);
    /* both TP1 in the same candle: NO_TRADE; both stopped: NO_TRADE at the later stop */
    inference_barrier a, c;
    CHECK_EQ_INT(inference_barrier_init(&a, 1, 100, 85, up), 0);
    CHECK_EQ_INT(inference_barrier_init(&c, -1, 100, 115, down), 0);
    CHECK(inference_barrier_step(&a, 111, 89, 100, 4));
    CHECK(inference_barrier_step(&c, 111, 89, 100, 4));
    CHECK_EQ_INT(inference_barrier_class(&a, &c, &at), INFERENCE_NO_TRADE);
    CHECK_EQ_INT(at, 4);
    CHECK_EQ_INT(inference_barrier_init(&a, 1, 100, 95, up), 0);
    CHECK_EQ_INT(inference_barrier_init(&c, -1, 100, 105, down), 0);
    CHECK(!inference_barrier_step(&a, 101, 94, 95, 1));
    CHECK_EQ_INT(inference_barrier_class(&a, &c, &at), -1);
    CHECK(!inference_barrier_step(&c, 106, 99, 105, 3));
    at = 0;
    CHECK_EQ_INT(inference_barrier_class(&a, &c, &at), INFERENCE_NO_TRADE);
    CHECK_EQ_INT(at, 3);
    /* SHORT first */
    CHECK_EQ_INT(inference_barrier_init(&a, 1, 100, 95, up), 0);
    CHECK_EQ_INT(inference_barrier_init(&c, -1, 100, 105, down), 0);
    CHECK(inference_barrier_step(&c, 101, 89, 90, 1));
    CHECK(!inference_barrier_step(&a, 101, 89, 90, 1));
    CHECK_EQ_INT(inference_barrier_class(&a, &c, &at), INFERENCE_SHORT);
    CHECK_EQ_INT(at, 1);
}

int main(void)
{
    RUN(test_softmax_by_hand);
    RUN(test_class_order_permutation);
    RUN(test_temperature);
    RUN(test_run_rejects_bad_input);
    RUN(test_packed_roundtrip);
    RUN(test_mlp_activations);
    RUN(test_mlp_two_layers_by_hand);
    RUN(test_kernels_elementwise_match_libm);
    RUN(test_mlp_random_shapes_match_reference);
    RUN(test_tree_rules_at_threshold);
    RUN(test_tree_scaled_input);
    RUN(test_tree_ensemble_classes_and_base);
    RUN(test_tree_ensemble_random_matches_reference);
    RUN(test_conv_padding_by_hand);
    RUN(test_conv_layout_out_in_kernel);
    RUN(test_lstm_hidden1_by_hand);
    RUN(test_sequence_random_matches_reference);
    RUN(test_golden);
    RUN(test_reject_header);
    RUN(test_reject_policy);
    RUN(test_reject_scaler);
    RUN(test_reject_layers);
    RUN(test_reject_trees);
    RUN(test_reject_sequence);
    RUN(test_reject_sequence_limits);
    RUN(test_signal_long_short);
    RUN(test_signal_no_trade);
    RUN(test_signal_invalid);
    RUN(test_class_names_and_softmax);
    RUN(test_barrier_levels_and_walk);
    return unit_report();
}
