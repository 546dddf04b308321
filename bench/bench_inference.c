/*
 * bench_inference: times inference_run on deterministic random models of
 * the four shapes the service runs, one line each:
 *
 *   inference_softmax_14_3 median_ns=... min_ns=... cycles=... batches=21 runs=...
 *
 * Each figure is the median over 21 batches of the mean time per call in a
 * batch; a batch is sized to take about 20 ms, so the whole run stays
 * under a few seconds. cycles is the median of user-mode CPU cycles per
 * call (Linux perf counter; omitted where perf_event_open is not
 * allowed): unlike wall time it does not grow when other processes share
 * the cores, so it is the figure to compare on a busy machine. Inputs cycle through 64 random raw
 * feature vectors so tree branches are not all predicted. Single-threaded, one model at a time,
 * scratch allocated once (as the server does per thread).
 *
 * Usage: bench_inference [--generic] [filter]
 *   filter     runs only models whose name contains it
 *   --generic  uses the generic kernels even where AVX2+FMA is available
 *              (the figures of an older or non-x86 CPU's code path)
 */
#include "inference/inference.h"
#include "inference/inference_internal.h" /* to force the generic kernels */
#include "util/util.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef __linux__
#include <linux/perf_event.h>
#include <sys/syscall.h>
#endif

#define BATCHES 21
#define NINPUTS 64
#define NF 14

static uint64_t rng = 0x9e3779b97f4a7c15ull;

/* Uniform in [-1, 1), deterministic. */
static double rnd(void)
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng >> 11) / (double)(1ull << 53) * 2 - 1;
}

static double *rnd_array(size_t n, double amp)
{
    double *v = malloc(n * sizeof *v);
    if (!v) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++)
        v[i] = rnd() * amp;
    return v;
}

/* Everything a model message points to, freed in one place. */
struct holder {
    void *p[4096];
    size_t n;
};

static void *keep(struct holder *h, void *p)
{
    if (h->n < sizeof h->p / sizeof h->p[0])
        h->p[h->n++] = p;
    return p;
}

static void holder_free(struct holder *h)
{
    while (h->n)
        free(h->p[--h->n]);
}

static char *feature_names[NF] = {"rsi:14",        "macd",           "macd_signal", "macd_hist",
                                  "natr:14",       "ema_dist:12",    "ema_dist:26", "bb_pctb:20:2",
                                  "bb_width:20:2", "ret:1",          "ret:5",       "vol:20",
                                  "zscore:60",     "volume_ratio:20"};
static char *class_names[3] = {"LONG", "SHORT", "NO_TRADE"};
static double tp_r[3] = {1, 2, 3};
static double mean[NF], scale[NF];

static void base_model(Predictd__Model *m, Predictd__Scaler *s, Predictd__SignalPolicy *p)
{
    *m = (Predictd__Model)PREDICTD__MODEL__INIT;
    *s = (Predictd__Scaler)PREDICTD__SCALER__INIT;
    *p = (Predictd__SignalPolicy)PREDICTD__SIGNAL_POLICY__INIT;
    for (int i = 0; i < NF; i++) {
        mean[i] = rnd() * 0.1;
        scale[i] = 0.5 + 0.5 * fabs(rnd());
    }
    m->format = 1;
    m->n_features = NF;
    m->features = feature_names;
    m->window = 100;
    m->n_classes = 3;
    m->classes = class_names;
    p->sl_atr = 1.5;
    p->n_tp_r = 3;
    p->tp_r = tp_r;
    p->horizon = 24;
    p->min_confidence = 0.4;
    m->policy = p;
    s->n_mean = s->n_scale = NF;
    s->mean = mean;
    s->scale = scale;
}

static Predictd__Dense *dense(struct holder *h, uint32_t in, uint32_t out, int act)
{
    Predictd__Dense *d = keep(h, malloc(sizeof *d));
    *d = (Predictd__Dense)PREDICTD__DENSE__INIT;
    d->in = in;
    d->out = out;
    d->n_weights = (size_t)in * out;
    d->weights = keep(h, rnd_array(d->n_weights, 1.0 / sqrt(in)));
    d->n_bias = out;
    d->bias = keep(h, rnd_array(out, 0.1));
    d->activation = act;
    return d;
}

static void make_mlp(struct holder *h, Predictd__Model *m, const uint32_t *widths, size_t n)
{
    Predictd__Dense **layers = keep(h, malloc(n * sizeof *layers));
    for (size_t i = 0; i < n; i++)
        layers[i] = dense(h, widths[i], widths[i + 1],
                          i + 1 < n ? PREDICTD__ACTIVATION__RELU : PREDICTD__ACTIVATION__LINEAR);
    m->kind = n == 1 ? PREDICTD__MODEL_KIND__SOFTMAX : PREDICTD__MODEL_KIND__MLP;
    m->n_layers = n;
    m->layers = layers;
}

/* n full binary trees of the given depth over raw features. */
static void make_trees(struct holder *h, Predictd__Model *m, size_t n, int depth)
{
    Predictd__TreeEnsemble *e = keep(h, malloc(sizeof *e));
    *e = (Predictd__TreeEnsemble)PREDICTD__TREE_ENSEMBLE__INIT;
    e->n_features = NF;
    e->n_classes = 3;
    e->n_trees = n;
    e->trees = keep(h, malloc(n * sizeof *e->trees));
    e->n_tree_class = n;
    e->tree_class = keep(h, malloc(n * sizeof *e->tree_class));
    e->n_base_score = 3;
    e->base_score = keep(h, rnd_array(3, 0.1));
    e->rule = PREDICTD__SPLIT_RULE__LESS;
    size_t nodes = ((size_t)1 << (depth + 1)) - 1, internal = ((size_t)1 << depth) - 1;
    for (size_t t = 0; t < n; t++) {
        Predictd__Tree *tr = keep(h, malloc(sizeof *tr));
        *tr = (Predictd__Tree)PREDICTD__TREE__INIT;
        tr->n_feature = tr->n_threshold = tr->n_left = tr->n_right = tr->n_value = nodes;
        tr->feature = keep(h, malloc(nodes * sizeof(int32_t)));
        tr->left = keep(h, malloc(nodes * sizeof(int32_t)));
        tr->right = keep(h, malloc(nodes * sizeof(int32_t)));
        tr->threshold = keep(h, rnd_array(nodes, 1.0));
        tr->value = keep(h, rnd_array(nodes, 0.1));
        for (size_t i = 0; i < nodes; i++) {
            bool leaf = i >= internal;
            tr->feature[i] = leaf ? -1 : (int32_t)((rnd() + 1) / 2 * NF);
            tr->left[i] = leaf ? -1 : (int32_t)(2 * i + 1);
            tr->right[i] = leaf ? -1 : (int32_t)(2 * i + 2);
        }
        e->trees[t] = tr;
        e->tree_class[t] = (uint32_t)(t % 3);
    }
    m->kind = PREDICTD__MODEL_KIND__TREES;
    m->trees = e;
}

/* steps x NF -> Conv1d NF->ch k3 p1 relu -> LSTM ch->hidden -> dense -> 3. */
static void make_sequence(struct holder *h, Predictd__Model *m, uint32_t steps, uint32_t ch,
                          uint32_t hidden)
{
    Predictd__SequenceNet *s = keep(h, malloc(sizeof *s));
    *s = (Predictd__SequenceNet)PREDICTD__SEQUENCE_NET__INIT;
    s->steps = steps;
    Predictd__Conv1d *c = keep(h, malloc(sizeof *c));
    *c = (Predictd__Conv1d)PREDICTD__CONV1D__INIT;
    c->in_channels = NF;
    c->out_channels = ch;
    c->kernel = 3;
    c->padding = 1;
    c->n_weights = (size_t)ch * NF * 3;
    c->weights = keep(h, rnd_array(c->n_weights, 1.0 / sqrt(NF * 3)));
    c->n_bias = ch;
    c->bias = keep(h, rnd_array(ch, 0.1));
    c->activation = PREDICTD__ACTIVATION__RELU;
    s->n_conv = 1;
    s->conv = keep(h, malloc(sizeof *s->conv));
    s->conv[0] = c;
    Predictd__Lstm *l = keep(h, malloc(sizeof *l));
    *l = (Predictd__Lstm)PREDICTD__LSTM__INIT;
    l->input_size = ch;
    l->hidden_size = hidden;
    l->n_weight_ih = 4 * (size_t)hidden * ch;
    l->weight_ih = keep(h, rnd_array(l->n_weight_ih, 1.0 / sqrt(hidden)));
    l->n_weight_hh = 4 * (size_t)hidden * hidden;
    l->weight_hh = keep(h, rnd_array(l->n_weight_hh, 1.0 / sqrt(hidden)));
    l->n_bias_ih = l->n_bias_hh = 4 * (size_t)hidden;
    l->bias_ih = keep(h, rnd_array(4 * (size_t)hidden, 0.1));
    l->bias_hh = keep(h, rnd_array(4 * (size_t)hidden, 0.1));
    s->lstm = l;
    s->n_head = 1;
    s->head = keep(h, malloc(sizeof *s->head));
    s->head[0] = dense(h, hidden, 3, PREDICTD__ACTIVATION__LINEAR);
    m->kind = PREDICTD__MODEL_KIND__SEQUENCE;
    m->sequence = s;
}

static int cycles_fd = -1;

static void cycles_open(void)
{
#ifdef __linux__
    struct perf_event_attr a;
    memset(&a, 0, sizeof a);
    a.type = PERF_TYPE_HARDWARE;
    a.size = sizeof a;
    a.config = PERF_COUNT_HW_CPU_CYCLES;
    a.exclude_kernel = 1;
    a.exclude_hv = 1;
    cycles_fd = (int)syscall(SYS_perf_event_open, &a, 0, -1, -1, 0);
#endif
}

/* User-mode cycles of this thread so far; 0 without the counter. */
static uint64_t cycles_now(void)
{
    uint64_t v = 0;
    if (cycles_fd >= 0 && read(cycles_fd, &v, sizeof v) != (ssize_t)sizeof v)
        v = 0;
    return v;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static volatile double sink;
static bool force_generic;

static int bench(const char *name, const Predictd__Model *msg, const Predictd__Scaler *scaler)
{
    inference_model *m = NULL;
    char why[256];
    int rc = inference_model_build(msg, scaler, &m, why, sizeof why);
    if (rc) {
        fprintf(stderr, "%s: build failed: %s\n", name, why);
        return 1;
    }
    if (force_generic)
        m->k = &inference__kernels_generic;
    size_t per = inference_steps(m) * inference_n_features(m);
    double *inputs = rnd_array(per * NINPUTS, 2.0);
    void *scratch = malloc(inference_scratch_size(m));
    double probs[3], acc = 0;

    /* Calibrate: runs per batch for about 20 ms. */
    size_t runs = 16;
    for (;;) {
        uint64_t t0 = util_mono_ns();
        for (size_t i = 0; i < runs; i++) {
            inference_run(m, inputs + (i % NINPUTS) * per, probs, scratch);
            acc += probs[0];
        }
        uint64_t dt = util_mono_ns() - t0;
        if (dt >= 20000000 || runs >= ((size_t)1 << 30))
            break;
        runs = dt < 1000000 ? runs * 8 : (size_t)((double)runs * 2.2e7 / (double)dt);
    }
    double per_run[BATCHES], cyc[BATCHES];
    for (int b = 0; b < BATCHES; b++) {
        uint64_t c0 = cycles_now();
        uint64_t t0 = util_mono_ns();
        for (size_t i = 0; i < runs; i++) {
            if (inference_run(m, inputs + (i % NINPUTS) * per, probs, scratch) != 0) {
                fprintf(stderr, "%s: run failed\n", name);
                return 1;
            }
            acc += probs[0];
        }
        per_run[b] = (double)(util_mono_ns() - t0) / (double)runs;
        cyc[b] = (double)(cycles_now() - c0) / (double)runs;
    }
    sink = acc;
    qsort(per_run, BATCHES, sizeof per_run[0], cmp_double);
    qsort(cyc, BATCHES, sizeof cyc[0], cmp_double);
    char cbuf[48] = "";
    if (cycles_fd >= 0)
        snprintf(cbuf, sizeof cbuf, " cycles=%.0f", cyc[BATCHES / 2]);
    printf("%s median_ns=%.1f min_ns=%.1f%s kernels=%s batches=%d runs=%zu scratch_bytes=%zu\n",
           name, per_run[BATCHES / 2], per_run[0], cbuf, m->k->name, BATCHES, runs,
           inference_scratch_size(m));
    fflush(stdout);
    free(scratch);
    free(inputs);
    inference_model_free(m);
    return 0;
}

int main(int argc, char **argv)
{
    const char *filter = "";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--generic") == 0)
            force_generic = true;
        else
            filter = argv[i];
    }
    int bad = 0;
    struct holder *h = calloc(1, sizeof *h);
    Predictd__Model msg;
    Predictd__Scaler scaler;
    Predictd__SignalPolicy policy;
    if (!h)
        return 1;
    cycles_open();

    if (strstr("inference_softmax_14_3", filter)) {
        static const uint32_t w[] = {NF, 3};
        base_model(&msg, &scaler, &policy);
        make_mlp(h, &msg, w, 1);
        bad |= bench("inference_softmax_14_3", &msg, &scaler);
        holder_free(h);
    }
    if (strstr("inference_mlp_14_64_32_3", filter)) {
        static const uint32_t w[] = {NF, 64, 32, 3};
        base_model(&msg, &scaler, &policy);
        make_mlp(h, &msg, w, 3);
        bad |= bench("inference_mlp_14_64_32_3", &msg, &scaler);
        holder_free(h);
    }
    if (strstr("inference_trees_200_depth4", filter)) {
        base_model(&msg, &scaler, &policy);
        make_trees(h, &msg, 200, 4);
        bad |= bench("inference_trees_200_depth4", &msg, &scaler);
        holder_free(h);
    }
    if (strstr("inference_conv32_lstm32_steps32", filter)) {
        base_model(&msg, &scaler, &policy);
        make_sequence(h, &msg, 32, 32, 32);
        bad |= bench("inference_conv32_lstm32_steps32", &msg, &scaler);
        holder_free(h);
    }
    free(h);
    return bad;
}
