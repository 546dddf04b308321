/*
 * test_faults: allocation failures and I/O failures injected for real into
 * the pure and file-based modules (registry, inference, features, the
 * prediction computation, training, the CSV and trades parsers).
 *
 * The loop and the allocation wrappers are fault_wrap.h's (shared with
 * test_faults_db, which does the same for the database-backed paths): the
 * Nth allocation of an operation fails, for every N, once alone and once
 * with every one after it. Every faulted run must return the documented
 * error code (PD_ENOMEM, or a code the function documents for it), leave
 * no output behind and not crash; the run past the last allocation must
 * give the reference result; no run may leak. jansson is routed through
 * the same wrappers; the registry unpacks protobuf with an allocator of
 * its own that calls malloc, so those allocations count. Some operations
 * may do without an allocation (FAULT_TOLERATE: a change detector's hash,
 * an in-scan retry); their runs must then give the reference result.
 *
 * I/O failures: every model file truncated at every byte offset, files
 * that are directories or FIFOs (tests run as root, so chmod 000 would not
 * stop a read), a full and a read-only file system (a small tmpfs mounted
 * in a private mount namespace of the test's process; skipped where that
 * is not allowed). The CLI's write to /dev/full is in test_cli.py.
 *
 * No timing assertions. Allocation counts are printed, not asserted.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <jansson.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "features/features.h"
#include "feed/feed.h"
#include "feed/net_internal.h"
#include "inference/inference.h"
#include "predict/predict.h"
#include "predict/predict_internal.h"
#include "registry/registry.h"
#include "registry/registry_internal.h"
#include "server/commands.h"
#include "training/training.h"
#include "unit.h"
#include "fixtures.h"
#include "util/util.h"
#include "fault_wrap.h"

/* ------------------------------------------------------------------------
 * A model: a softmax over the 14 default features, window 100, with golden
 * cases computed by inference_run on the model itself (as test_registry
 * does: this file tests failure handling, not the maths).
 */
#include "model_fixture.h"

/* The fixture as this file uses it: a lower confidence floor (more calls)
 * and a backtest hit rate in its metadata. */
static void faults_fx_init(fx *f, unsigned seed)
{
    fx_init(f, seed, "test_faults");
    f->pol.min_confidence = 0.3;
    f->metric.name = "bt_hit_rate";
    f->metric.value = 0.6;
    f->meta.n_metrics = 1;
    f->meta.metrics = f->metrics;
}

/* ------------------------------------------------------------------------
 * Files.
 */
static char base_dir[512], models_dir[600], vdir[700];

/* A temporary directory with one published version models/BTCUSDT/15m/1;
 * false (printed) when it cannot be made. */
static bool repo_setup(fx *f)
{
    if (!unit_tmpdir(base_dir, sizeof base_dir, "pd-faults"))
        return false;
    snprintf(models_dir, sizeof models_dir, "%s/models", base_dir);
    faults_fx_init(f, 1);
    uint32_t ver = 0;
    int rc = registry_publish(models_dir, "BTCUSDT", "15m", &f->m, &f->s, &ver);
    if (rc != 0 || ver != 1) {
        printf("  publish: %s\n", util_strerror(rc));
        return false;
    }
    snprintf(vdir, sizeof vdir, "%s/BTCUSDT/15m/1", models_dir);
    return true;
}

static int write_file(const char *path, const void *data, size_t n)
{
    FILE *fp = fopen(path, "wb");
    if (!fp)
        return -1;
    size_t w = fwrite(data, 1, n, fp);
    return fclose(fp) == 0 && w == n ? 0 : -1;
}

/* Names of the entries of dir, sorted, joined with spaces ("" when none,
 * "?" when unreadable). */
static void listing(const char *dir, char *out, size_t n)
{
    char cmd[800];
    snprintf(cmd, sizeof cmd, "ls -A '%s' 2>/dev/null | sort | tr '\\n' ' '", dir);
    out[0] = '\0';
    FILE *p = popen(cmd, "r");
    if (!p) {
        snprintf(out, n, "?");
        return;
    }
    size_t k = fread(out, 1, n - 1, p);
    out[k] = '\0';
    pclose(p);
}

static const char *const vfiles[3] = {"model.pb", "scaler.pb", "MANIFEST"};

/* Writes a MANIFEST for the files of vdir as they are now. */
static void rewrite_manifest(void)
{
    char p[800], text[200], hex[2][65];
    for (int k = 0; k < 2; k++) {
        char *data = NULL;
        size_t n = 0;
        snprintf(p, sizeof p, "%s/%s", vdir, vfiles[k]);
        if (util_read_file(p, 1u << 24, &data, &n) != 0) {
            strcpy(hex[k], "unreadable");
            continue;
        }
        util_sha256_hex(data, n, hex[k]);
        free(data);
    }
    snprintf(text, sizeof text, "%s  model.pb\n%s  scaler.pb\n", hex[0], hex[1]);
    snprintf(p, sizeof p, "%s/MANIFEST", vdir);
    write_file(p, text, strlen(text));
}

/* ------------------------------------------------------------------------
 * Registry: verify, read, scan/acquire/list, publish.
 */
static int op_verify_dir(void *ctx)
{
    (void)ctx;
    char why[256] = "";
    int rc = registry_verify_dir(vdir, why, sizeof why);
    if (rc == PD_ENOMEM && !strstr(why, "memory"))
        UNIT_FAIL_("verify under a fault: why \"%s\" does not say memory", why);
    return rc;
}

static int op_read_model(void *ctx)
{
    fx *f = ctx;
    char path[800], why[256] = "";
    snprintf(path, sizeof path, "%s/model.pb", vdir);
    Predictd__Model *m = NULL;
    int rc = registry_read_model(path, &m, why, sizeof why);
    if (rc == 0) {
        CHECK_EQ_INT(m->n_features, NF);
        CHECK_EQ_INT(m->n_golden, NG);
        CHECK_NEAR(m->layers[0]->weights[5], f->w[5], 0);
        predictd__model__free_unpacked(m, NULL);
    }
    Predictd__Scaler *s = NULL;
    snprintf(path, sizeof path, "%s/scaler.pb", vdir);
    int rs = registry_read_scaler(path, &s, why, sizeof why);
    if (rs == 0) {
        CHECK_EQ_INT(s->n_mean, NF);
        predictd__scaler__free_unpacked(s, NULL);
    }
    return rc ? rc : rs;
}

TEST(registry_verify_and_read_under_allocation_failures)
{
    fx *f = malloc(sizeof *f);
    if (!repo_setup(f))
        UNIT_SKIP("no repository");
    CHECK(fault_loop("registry_verify_dir", op_verify_dir, NULL, 0, NULL, 0, 0, 1) > 10);
    CHECK(fault_loop("registry_read_model+scaler", op_read_model, f, 0, NULL, 0, 0, 1) > 2);
    free(f);
    util_rmtree(base_dir);
}

typedef struct scan_ctx {
    fx *f;
} scan_ctx;

/* A registry over the repository: scan, acquire, run the model, list,
 * free. Any failure must be PD_ENOMEM; the version either serves whole
 * (its probabilities the golden ones) or is absent. */
static int op_scan_acquire(void *ctx)
{
    scan_ctx *c = ctx;
    registry *r = NULL;
    int rc = registry_new(models_dir, &r);
    if (rc)
        return rc;
    rc = registry_scan(r, NULL, NULL);
    if (rc == 0) {
        registry_version *v = NULL;
        rc = registry_acquire(r, "BTCUSDT", "15m", NULL, &v);
        if (rc == 0) {
            const inference_model *m = registry_version_model(v);
            double probs[3];
            void *scratch = malloc(inference_scratch_size(m) + 8);
            if (!scratch) {
                rc = PD_ENOMEM;
            } else {
                CHECK_EQ_INT(inference_run(m, c->f->gin[0], probs, scratch), 0);
                for (int k = 0; k < 3; k++)
                    CHECK_NEAR(probs[k], c->f->gout[0][k], 1e-12);
                free(scratch);
            }
            CHECK_EQ_INT(registry_version_number(v), 1);
            CHECK_EQ_STR(registry_version_meta(v)->trainer, "test_faults");
            registry_release(v);
        } else if (rc == PD_ENOTREADY) {
            /* its load ran out of memory: not served half-made, not "no
             * model" either, retried on the next scan */
            rc = PD_ENOMEM;
        }
    }
    if (rc == 0) {
        registry_series_info *s = NULL;
        size_t n = 0;
        rc = registry_list(r, &s, &n);
        if (rc == 0) {
            CHECK_EQ_INT(n, 1);
            if (n == 1) {
                CHECK_EQ_STR(s[0].symbol, "BTCUSDT");
                CHECK_EQ_INT(s[0].n_versions, 1);
            }
            registry_list_free(s, n);
        }
    }
    registry_free(r);
    return rc;
}

TEST(registry_scan_acquire_list_under_allocation_failures)
{
    fx *f = malloc(sizeof *f);
    if (!repo_setup(f))
        UNIT_SKIP("no repository");
    scan_ctx c = {f};
    CHECK(fault_loop("registry scan/acquire/list", op_scan_acquire, &c, 0, NULL, 0, FAULT_TOLERATE,
                     1) > 10);
    free(f);
    util_rmtree(base_dir);
}

/* Publishes a new version; on failure nothing new may be visible in the
 * series directory (no version, no temporary left behind), on success
 * exactly version 2, which verifies, and is removed again. */
static int op_publish(void *ctx)
{
    fx *f = ctx;
    char sdir[800], before[512], after[512];
    snprintf(sdir, sizeof sdir, "%s/BTCUSDT/15m", models_dir);
    listing(sdir, before, sizeof before);
    uint32_t ver = 0;
    int rc = registry_publish(models_dir, "BTCUSDT", "15m", &f->m, &f->s, &ver);
    bool held = fault_hold(); /* the checks below are not under test */
    listing(sdir, after, sizeof after);
    if (rc == 0) {
        CHECK_EQ_INT(ver, 2);
        CHECK_EQ_STR(after, "1 2 ");
        char v2[900], why[256];
        snprintf(v2, sizeof v2, "%s/2", sdir);
        CHECK_EQ_INT(registry_verify_dir(v2, why, sizeof why), 0);
        util_rmtree(v2);
    } else {
        CHECK_EQ_STR(after, before);
    }
    fault_resume(held);
    return rc;
}

TEST(registry_publish_under_allocation_failures)
{
    fx *f = malloc(sizeof *f);
    if (!repo_setup(f))
        UNIT_SKIP("no repository");
    static const int also[] = {PD_EIO};
    CHECK(fault_loop("registry_publish", op_publish, f, 0, also, 1, 0, 1) > 0);
    free(f);
    util_rmtree(base_dir);
}

/* ------------------------------------------------------------------------
 * Inference and features, pure.
 */
static int op_model_build(void *ctx)
{
    fx *f = ctx;
    inference_model *im = NULL;
    char why[256];
    int rc = inference_model_build(&f->m, &f->s, &im, why, sizeof why);
    if (rc)
        return rc;
    rc = inference_check_golden(im, &f->m, 1e-9, why, sizeof why);
    inference_model_free(im);
    return rc;
}

/* Every indicator of the catalogue, some twice with other periods (shared
 * series), besides the default set. */
static const char *const all_specs[] = {
    "rsi:14",
    "macd:12:26:9",
    "macd_signal:12:26:9",
    "macd_hist:12:26:9",
    "natr:14",
    "trange_pct",
    "ema_dist:12",
    "sma_dist:20",
    "wma_dist:10",
    "bb_pctb:20:2",
    "bb_width:20:2.5",
    "ret:1",
    "logret:3",
    "roc:10",
    "vol:20",
    "zscore:30",
    "volume_ratio:20",
    "adx:14",
    "plus_di:14",
    "minus_di:14",
    "stoch_k:14:3:3",
    "stoch_d:14:3:3",
    "stochrsi_k:14:3:3",
    "stochrsi_d:14:3:3",
    "cci:20",
    "willr:14",
    "mfi:14",
    "obv_slope:10",
    "ema_dist:26",
    "rsi:7",
};
static bool features_all;

static int op_features(void *ctx)
{
    const features_candle *c = ctx;
    size_t n = 0;
    const char *const *specs = features_default_specs(&n);
    if (features_all) {
        specs = all_specs;
        n = sizeof all_specs / sizeof all_specs[0];
    }
    features_set *fs = NULL;
    char why[256];
    int rc = features_set_new(specs, n, &fs, why, sizeof why);
    if (rc)
        return rc;
    double out[64];
    rc = features_compute(fs, c, 200, out);
    if (rc == 0)
        for (size_t i = 0; i < n; i++)
            CHECK(isfinite(out[i]));
    features_set_free(fs);
    return rc;
}

static features_candle *wave(size_t n, int64_t t0, int64_t step)
{
    features_candle *c = calloc(n, sizeof *c);
    double prev = 100;
    for (size_t i = 0; c && i < n; i++) {
        double close = round((100.0 + 3.0 * sin(0.37 * (double)i) + 0.01 * (double)i) * 100) / 100;
        c[i].t = t0 + (int64_t)i * step;
        c[i].open = prev;
        c[i].close = close;
        c[i].high = round((fmax(prev, close) + 0.4 + 0.2 * cos((double)i)) * 100) / 100;
        c[i].low = round((fmin(prev, close) - 0.5) * 100) / 100;
        c[i].volume = 10 + (double)(i % 7);
        prev = close;
    }
    return c;
}

TEST(inference_and_features_under_allocation_failures)
{
    fx *f = malloc(sizeof *f);
    faults_fx_init(f, 2);
    CHECK(fault_loop("inference_model_build+check_golden", op_model_build, f, 0, NULL, 0, 0, 1) >
          0);
    features_candle *c = wave(200, 1700000100, 900);
    CHECK(fault_loop("features_set_new+compute", op_features, c, 0, NULL, 0, 0, 1) > 0);
    features_all = true;
    CHECK(fault_loop("features_set_new+compute (every indicator)", op_features, c, 0, NULL, 0, 0,
                     1) > 0);
    free(c);
    free(f);
}

/* The other model kinds: a tree ensemble (two trees, one per class with a
 * base score) and a sequence net (conv, LSTM, dense head), tiny, weights
 * made up; built and run, compared with the unfaulted run's output. */
typedef struct kinds_fx {
    Predictd__Model m;
    Predictd__Scaler s;
    Predictd__SignalPolicy pol;
    double tp[3];
    char *feat[2], *cls[3];
    double mean[2], scale[2];
    Predictd__TreeEnsemble ens;
    Predictd__Tree tree[2];
    Predictd__Tree *tree_p[2];
    uint32_t tree_class[2];
    double base[3];
    Predictd__SequenceNet seq;
    Predictd__Conv1d conv;
    Predictd__Conv1d *conv_p[1];
    Predictd__Lstm lstm;
    Predictd__Dense head;
    Predictd__Dense *head_p[1];
    double input[8];
    double ref[3];
    bool have_ref;
} kinds_fx;

static int32_t t_feature[3] = {0, -1, -1}, t_left[3] = {1, -1, -1}, t_right[3] = {2, -1, -1};
static double t_threshold[3] = {0.25, 0, 0}, t_value[3] = {0, 0.7, -0.4};
static double c_w[8] = {0.1, -0.2, 0.3, 0.05, -0.1, 0.2, 0.15, -0.05}, c_b[2] = {0.01, -0.02};
static double l_ih[16], l_hh[16], l_bih[8], l_bhh[8];
static double h_w[6] = {0.5, -0.3, 0.2, 0.4, -0.1, 0.1}, h_b[3] = {0.05, 0, -0.05};

static void kinds_init(kinds_fx *k, int kind)
{
    memset(k, 0, sizeof *k);
    predictd__model__init(&k->m);
    predictd__scaler__init(&k->s);
    predictd__signal_policy__init(&k->pol);
    k->feat[0] = "f0";
    k->feat[1] = "f1";
    k->cls[0] = "LONG";
    k->cls[1] = "SHORT";
    k->cls[2] = "NO_TRADE";
    k->m.format = 1;
    k->m.kind = kind;
    k->m.n_features = 2;
    k->m.features = k->feat;
    k->m.window = 60;
    k->m.n_classes = 3;
    k->m.classes = k->cls;
    k->tp[0] = 1, k->tp[1] = 2, k->tp[2] = 3;
    k->pol.sl_atr = 1.5;
    k->pol.n_tp_r = 3;
    k->pol.tp_r = k->tp;
    k->pol.horizon = 12;
    k->pol.min_confidence = 0.4;
    k->m.policy = &k->pol;
    k->mean[0] = k->mean[1] = 0;
    k->scale[0] = k->scale[1] = 1;
    k->s.n_features = 2;
    k->s.features = k->feat;
    k->s.n_mean = k->s.n_scale = 2;
    k->s.mean = k->mean;
    k->s.scale = k->scale;
    for (int i = 0; i < 8; i++)
        k->input[i] = 0.1 * (i + 1) * (i % 2 ? -1 : 1);
    if (kind == PREDICTD__MODEL_KIND__TREES) {
        predictd__tree_ensemble__init(&k->ens);
        for (int t = 0; t < 2; t++) {
            predictd__tree__init(&k->tree[t]);
            Predictd__Tree *tr = &k->tree[t];
            tr->n_feature = tr->n_threshold = tr->n_left = tr->n_right = tr->n_value = 3;
            tr->feature = t_feature;
            tr->threshold = t_threshold;
            tr->left = t_left;
            tr->right = t_right;
            tr->value = t_value;
            k->tree_p[t] = tr;
            k->tree_class[t] = (uint32_t)t;
        }
        k->ens.n_features = 2;
        k->ens.n_classes = 3;
        k->ens.n_trees = 2;
        k->ens.trees = k->tree_p;
        k->ens.n_tree_class = 2;
        k->ens.tree_class = k->tree_class;
        k->ens.n_base_score = 3;
        k->ens.base_score = k->base;
        k->m.trees = &k->ens;
    } else {
        for (int i = 0; i < 16; i++) {
            l_ih[i] = 0.05 * sin(i);
            l_hh[i] = 0.05 * cos(i);
        }
        for (int i = 0; i < 8; i++)
            l_bih[i] = l_bhh[i] = 0.01 * i;
        predictd__sequence_net__init(&k->seq);
        predictd__conv1d__init(&k->conv);
        k->conv.in_channels = 2;
        k->conv.out_channels = 2;
        k->conv.kernel = 2;
        k->conv.padding = 1;
        k->conv.n_weights = 8;
        k->conv.weights = c_w;
        k->conv.n_bias = 2;
        k->conv.bias = c_b;
        k->conv.activation = PREDICTD__ACTIVATION__RELU;
        k->conv_p[0] = &k->conv;
        predictd__lstm__init(&k->lstm);
        k->lstm.input_size = 2;
        k->lstm.hidden_size = 2;
        k->lstm.n_weight_ih = k->lstm.n_weight_hh = 16;
        k->lstm.weight_ih = l_ih;
        k->lstm.weight_hh = l_hh;
        k->lstm.n_bias_ih = k->lstm.n_bias_hh = 8;
        k->lstm.bias_ih = l_bih;
        k->lstm.bias_hh = l_bhh;
        predictd__dense__init(&k->head);
        k->head.in = 2;
        k->head.out = 3;
        k->head.n_weights = 6;
        k->head.weights = h_w;
        k->head.n_bias = 3;
        k->head.bias = h_b;
        k->head.activation = PREDICTD__ACTIVATION__LINEAR;
        k->head_p[0] = &k->head;
        k->seq.steps = 4;
        k->seq.n_conv = 1;
        k->seq.conv = k->conv_p;
        k->seq.lstm = &k->lstm;
        k->seq.n_head = 1;
        k->seq.head = k->head_p;
        k->m.sequence = &k->seq;
    }
}

static int op_kinds(void *ctx)
{
    kinds_fx *k = ctx;
    inference_model *im = NULL;
    char why[256] = "";
    int rc = inference_model_build(&k->m, &k->s, &im, why, sizeof why);
    if (rc) {
        CHECK(im == NULL);
        if (rc == PD_ENOMEM)
            CHECK(strstr(why, "memory") != NULL);
        return rc;
    }
    void *scratch = malloc(inference_scratch_size(im) + 8);
    double probs[3];
    if (!scratch) {
        rc = PD_ENOMEM;
    } else if ((rc = inference_run(im, k->input, probs, scratch)) == 0) {
        if (!k->have_ref) {
            memcpy(k->ref, probs, sizeof probs);
            k->have_ref = true;
        }
        for (int c = 0; c < 3; c++)
            CHECK_NEAR(probs[c], k->ref[c], 0);
    }
    free(scratch);
    inference_model_free(im);
    return rc;
}

TEST(tree_and_sequence_models_under_allocation_failures)
{
    kinds_fx *k = malloc(sizeof *k);
    kinds_init(k, PREDICTD__MODEL_KIND__TREES);
    CHECK(fault_loop("inference_model_build (trees)", op_kinds, k, 0, NULL, 0, 0, 1) > 0);
    printf("  trees: %.4f %.4f %.4f\n", k->ref[0], k->ref[1], k->ref[2]);
    kinds_init(k, PREDICTD__MODEL_KIND__SEQUENCE);
    CHECK(fault_loop("inference_model_build (sequence)", op_kinds, k, 0, NULL, 0, 0, 1) > 0);
    printf("  sequence: %.4f %.4f %.4f\n", k->ref[0], k->ref[1], k->ref[2]);
    free(k);
}

/* ------------------------------------------------------------------------
 * The prediction computation (no database): a service over the repository.
 */
typedef struct pred_ctx {
    predict_service *svc;
    registry *reg;
    features_candle *c;
    size_t n;
    int direction;
    double entry, stop, confidence;
} pred_ctx;

static int op_predict(void *ctx)
{
    pred_ctx *p = ctx;
    registry_version *v = NULL;
    int rc = registry_acquire(p->reg, "BTCUSDT", "15m", NULL, &v);
    if (rc)
        return rc;
    predict_result *res = NULL;
    char why[256] = "";
    int64_t now = p->c[p->n - 1].t + 900 + 5;
    rc = predict__compute_window(p->svc, v, "BTCUSDT", "15m", now, p->c, p->n, &res, why,
                                 sizeof why);
    registry_release(v);
    if (rc == 0) {
        if (p->direction < 0) { /* the reference run */
            p->direction = res->direction;
            p->entry = res->entry;
            p->stop = res->stop_loss;
            p->confidence = res->confidence;
        } else {
            CHECK_EQ_INT(res->direction, p->direction);
            CHECK_NEAR(res->entry, p->entry, 0);
            CHECK_NEAR(res->stop_loss, p->stop, 0);
            CHECK_NEAR(res->confidence, p->confidence, 0);
        }
        predict_result_release(res);
    } else {
        CHECK(res == NULL);
    }
    return rc;
}

TEST(prediction_computation_under_allocation_failures)
{
    fx *f = malloc(sizeof *f);
    if (!repo_setup(f))
        UNIT_SKIP("no repository");
    pred_ctx p = {.direction = -1, .n = 160};
    CHECK_EQ_INT(registry_new(models_dir, &p.reg), 0);
    CHECK_EQ_INT(registry_scan(p.reg, NULL, NULL), 0);
    predict_options opt = {.cache = false};
    CHECK_EQ_INT(predict_service_new(&opt, p.reg, &p.svc), 0);
    p.c = wave(p.n, 1700000100, 900);
    if (p.svc && p.c) {
        CHECK(fault_loop("predict__compute_window", op_predict, &p, 0, NULL, 0, 0, 1) > 0);
        printf("  direction %s, confidence %.3f\n", inference_class_name(p.direction),
               p.confidence);
    }
    free(p.c);
    predict_service_free(p.svc);
    registry_free(p.reg);
    free(f);
    util_rmtree(base_dir);
}

/* ------------------------------------------------------------------------
 * Parsers.
 */
typedef struct text_ctx {
    const char *text;
    size_t len, want_n;
    size_t candles; /* trades: what the unfaulted run emitted (0: not yet) */
} text_ctx;

static int op_csv(void *ctx)
{
    text_ctx *t = ctx;
    features_candle *c = NULL;
    size_t n = 0;
    char why[256] = "";
    int rc = feed_csv_parse(t->text, t->len, &c, &n, why, sizeof why);
    if (rc == 0) {
        CHECK_EQ_INT(n, t->want_n);
        CHECK_NEAR(c[n - 1].close, 101.5 + (double)(n - 1), 1e-9);
        free(c);
    } else {
        CHECK(c == NULL);
    }
    return rc;
}

static int agg_count(const features_candle *c, bool correction, void *arg)
{
    (void)c;
    (void)correction;
    (*(size_t *)arg)++;
    return 0;
}

static int op_trades(void *ctx)
{
    text_ctx *t = ctx;
    feed_trade *tr = NULL;
    size_t n = 0;
    char why[256] = "";
    int rc = feed_trades_csv_parse(t->text, t->len, &tr, &n, why, sizeof why);
    if (rc)
        return rc;
    CHECK_EQ_INT(n, t->want_n);
    feed_agg *a = NULL;
    rc = feed_agg_new(&a);
    size_t candles = 0;
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = feed_agg_push(a, &tr[i], agg_count, &candles);
    if (rc == 0)
        rc = feed_agg_finish(a, agg_count, &candles);
    if (rc == 0) {
        if (!t->candles)
            t->candles = candles;
        CHECK_EQ_INT(candles, t->candles);
    }
    feed_agg_free(a);
    free(tr);
    return rc;
}

TEST(csv_and_trades_under_allocation_failures)
{
    util_buf b;
    util_buf_init(&b);
    util_buf_puts(&b, "open_time,open,high,low,close,volume\n");
    size_t rows = 300; /* enough to make the parser grow its array */
    for (size_t i = 0; i < rows; i++)
        util_buf_printf(&b, "%lld,%.2f,%.2f,%.2f,%.2f,%.1f\n", 1700000100LL + (long long)i * 60,
                        100.0 + (double)i, 102.0 + (double)i, 99.0 + (double)i, 101.5 + (double)i,
                        10.0 + (double)(i % 5));
    text_ctx t = {b.data, b.len, rows, 0};
    CHECK(fault_loop("feed_csv_parse", op_csv, &t, 0, NULL, 0, 0, 1) > 0);
    util_buf_cleanup(&b);
    util_buf_init(&b);
    /* 700 trades over about 12 minutes (the aggregator's id table grows
     * past its first size), every 9th one a minute late (a correction of a
     * closed minute), every 100th one a repeat of the one before */
    util_buf_puts(&b, "time,id,side,price,amount\n");
    size_t trades = 700;
    for (size_t i = 0; i < trades; i++) {
        size_t id = i % 100 == 99 ? 1000 + i - 1 : 1000 + i;
        long long ms = 1700000040000LL + (long long)i * 1000 - (i % 9 == 8 ? 60000 : 0);
        util_buf_printf(&b, "%lld,%zu,%s,%.2f,%.3f\n", ms, id, i % 3 ? "buy" : "sell",
                        100.0 + (double)(i % 7) * 0.1, 0.5 + (double)(i % 4));
    }
    t = (text_ctx){b.data, b.len, trades, 0};
    CHECK(fault_loop("feed_trades_csv_parse+agg", op_trades, &t, 0, NULL, 0, 0, 1) > 0);
    util_buf_cleanup(&b);
}

/* ------------------------------------------------------------------------
 * The exchange connector's configuration and its message parsers (the
 * network side runs in test_binance_run and test_feed_wire).
 */
static int op_binance_open(void *ctx)
{
    (void)ctx;
    feed_binance_config cfg = {.ws_url = "ws://127.0.0.1:1",
                               .rest_url = "http://127.0.0.1:1",
                               .database_url = "postgresql://127.0.0.1:1/none"};
    feed_connector *c = NULL;
    char why[256] = "";
    int rc = feed_binance_open(&cfg, "BTCUSDT,ETHUSDT,1INCHUSDT", &c, why, sizeof why);
    if (rc) {
        CHECK(c == NULL);
        CHECK_EQ_STR(why, "binance: out of memory"); /* it was left empty */
        return rc;
    }
    CHECK(c && !strcmp(c->name, "binance"));
    feed_connector_free(c);
    /* the table's way in, with the variables unset */
    c = NULL;
    rc = feed_connector_new("binance:BTCUSDT", &c, why, sizeof why);
    if (rc == 0)
        feed_connector_free(c);
    else
        CHECK(c == NULL);
    return rc;
}

static int op_klines(void *ctx)
{
    const char *body = ctx;
    features_candle *c = NULL;
    size_t n = 0;
    char why[256] = "";
    int rc = feed__binance_parse_klines(body, strlen(body), INT64_C(1) << 60, &c, &n, why,
                                        sizeof why);
    if (rc) {
        CHECK(c == NULL);
        return rc;
    }
    CHECK_EQ_INT(n, 3);
    CHECK(n == 3 && c[2].t == 1570752120 && c[2].close == 0.3);
    free(c);
    return rc;
}

static int op_trade_msg(void *ctx)
{
    const char *msg = ctx;
    feed_trade t = {0};
    char stream[64] = "", why[128] = "";
    int rc = feed__binance_parse_trade(msg, strlen(msg), stream, sizeof stream, &t, why, sizeof why);
    if (rc == 0) {
        CHECK_EQ_STR(stream, "btcusdt@trade");
        CHECK(t.id == 42 && t.price == 37000.5 && t.side == FEED_SIDE_SELL);
    }
    return rc;
}

static int op_sink_new(void *ctx)
{
    (void)ctx;
    feed_sink *s = NULL;
    int rc = feed_sink_new("binance", "Binance spot trades", &s);
    if (rc == 0) {
        feed_sink_stats st;
        feed_sink_stats_get(s, &st);
        CHECK_EQ_INT(st.candles_written, 0);
        feed_sink_free(s);
    } else {
        CHECK(s == NULL);
    }
    return rc;
}

TEST(feed_connector_and_messages_under_allocation_failures)
{
    unsetenv("PREDICTD_BINANCE_WS_URL");
    unsetenv("PREDICTD_BINANCE_REST_URL");
    CHECK(fault_loop("feed_binance_open", op_binance_open, NULL, 0, NULL, 0, 0, 1) > 0);
    /* jansson's allocations fail too: the body then cannot be read, which
     * is PD_EPARSE with the reason (jansson's "out of memory") */
    static const int parse_too[] = {PD_EPARSE};
    static const char klines[] =
        "[[1570752000000,\"0.1\",\"0.2\",\"0.1\",\"0.1\",\"1\",1570752059999,\"0\",1,\"0\","
        "\"0\",\"0\"],[1570752060000,\"0.1\",\"0.2\",\"0.1\",\"0.2\",\"1\",1570752119999,\"0\",1,"
        "\"0\",\"0\",\"0\"],[1570752120000,\"0.2\",\"0.3\",\"0.2\",\"0.3\",\"2\",1570752179999,"
        "\"0\",1,\"0\",\"0\",\"0\"]]";
    CHECK(fault_loop("feed__binance_parse_klines", op_klines, (void *)klines, 0, parse_too, 1, 0,
                     1) > 0);
    static const char trade[] =
        "{\"stream\":\"btcusdt@trade\",\"data\":{\"e\":\"trade\",\"E\":1700000000124,"
        "\"s\":\"BTCUSDT\",\"t\":42,\"p\":\"37000.50\",\"q\":\"0.5\",\"T\":1700000000123,"
        "\"m\":true,\"M\":true}}";
    CHECK(fault_loop("feed__binance_parse_trade", op_trade_msg, (void *)trade, 0, parse_too, 1, 0,
                     1) > 0);
    CHECK(fault_loop("feed_sink_new", op_sink_new, NULL, 0, NULL, 0, 0, 1) > 0);
}

/* ------------------------------------------------------------------------
 * Training on candles in memory, published into a repository.
 */
typedef struct train_ctx {
    const features_candle *c;
    size_t n;
    int kind;
    bool have_ref;
    training_result ref;
} train_ctx;

static int op_train(void *ctx)
{
    train_ctx *t = ctx;
    training_params p;
    training_params_default(&p);
    snprintf(p.symbols[0], sizeof p.symbols[0], "BTCUSDT");
    p.n_symbols = 1;
    snprintf(p.timeframe, sizeof p.timeframe, "15m");
    p.now = t->c[t->n - 1].t + 900 + 1;
    p.kind = t->kind;
    p.epochs = 3;
    p.seed = 11;
    p.force = true; /* publish whatever the gate says: the run is under test */
    if (t->kind == TRAINING_MLP) {
        p.hidden[0] = 6;
        p.n_hidden = 1;
    }
    training_ctx tc = {.models_dir = models_dir};
    const features_candle *s[1] = {t->c};
    size_t l[1] = {t->n};
    training_result *r = calloc(1, sizeof *r);
    if (!r)
        return PD_ENOMEM;
    int rc = training_run_candles(&p, &tc, s, l, 1, r);
    bool held = fault_hold();
    char sdir[800], names[256];
    snprintf(sdir, sizeof sdir, "%s/BTCUSDT/15m", models_dir);
    listing(sdir, names, sizeof names);
    if (rc == 0) {
        CHECK_EQ_INT(r->outcome, TRAINING_PUBLISHED);
        CHECK_EQ_INT(r->version, 1);
        CHECK_EQ_STR(names, "1 ");
        char v1[900], why[256];
        snprintf(v1, sizeof v1, "%s/1", sdir);
        CHECK_EQ_INT(registry_verify_dir(v1, why, sizeof why), 0);
        if (!t->have_ref) {
            t->ref = *r;
            t->have_ref = true;
        } else { /* the same seed: the same model, whatever failed before */
            CHECK_EQ_INT(r->samples, t->ref.samples);
            CHECK_NEAR(r->test_accuracy, t->ref.test_accuracy, 0);
            CHECK_NEAR(training_result_metric(r, "log_loss"),
                       training_result_metric(&t->ref, "log_loss"), 0);
        }
    } else {
        CHECK_EQ_STR(names, ""); /* nothing published, no temporary left */
        CHECK(r->message[0] != '\0');
    }
    util_rmtree(sdir);
    fault_resume(held);
    free(r);
    return rc;
}

TEST(training_under_allocation_failures)
{
    if (!unit_tmpdir(base_dir, sizeof base_dir, "pd-faults"))
        UNIT_SKIP("no temporary directory");
    snprintf(models_dir, sizeof models_dir, "%s/models", base_dir);
    train_ctx t = {.n = 1200, .kind = TRAINING_SOFTMAX};
    features_candle *c = NULL;
    CHECK_EQ_INT(feed_seed_series("BTCUSDT", "15m", 1700000000, t.n, 5, &c), 0);
    t.c = c;
    if (c) {
        CHECK(fault_loop("training_run_candles (softmax)", op_train, &t, 0, NULL, 0, 0, 1) > 0);
        t.kind = TRAINING_MLP;
        t.have_ref = false;
        CHECK(fault_loop("training_run_candles (mlp)", op_train, &t, 0, NULL, 0, 0, 1) > 0);
    }
    free(c);
    util_rmtree(base_dir);
}

/* Promotion (--promote-if-better): a version serves; the new one is
 * compared with it on the test slice and published or rejected. Under a
 * fault the run fails with PD_ENOMEM, or decides exactly as unfaulted: an
 * allocation failure must never skip the comparison (a publish the gate
 * did not allow) or compare on fewer samples. */
typedef struct promo_ctx {
    const features_candle *c;
    size_t n;
    bool have_ref;
    training_result ref;
} promo_ctx;

static int op_promote(void *ctx)
{
    promo_ctx *t = ctx;
    training_params p;
    training_params_default(&p);
    snprintf(p.symbols[0], sizeof p.symbols[0], "BTCUSDT");
    p.n_symbols = 1;
    snprintf(p.timeframe, sizeof p.timeframe, "15m");
    p.now = t->c[t->n - 1].t + 900 + 1;
    p.epochs = 3;
    p.seed = 12;
    p.force = true;
    p.promote_if_better = true;
    training_ctx tc = {.models_dir = models_dir};
    const features_candle *s[1] = {t->c};
    size_t l[1] = {t->n};
    training_result *r = calloc(1, sizeof *r);
    if (!r)
        return PD_ENOMEM;
    int rc = training_run_candles(&p, &tc, s, l, 1, r);
    bool held = fault_hold();
    char sdir[800], v2[900], names[256];
    snprintf(sdir, sizeof sdir, "%s/BTCUSDT/15m", models_dir);
    listing(sdir, names, sizeof names);
    if (rc == 0) {
        if (!t->have_ref) {
            t->ref = *r;
            t->have_ref = true;
            printf("  promotion: %s\n", r->message);
        }
        CHECK_EQ_INT(r->outcome, t->ref.outcome);
        CHECK_EQ_INT(r->old_version, 1);
        CHECK_EQ_INT(r->compared, t->ref.compared);
        CHECK_NEAR(r->old_log_loss, t->ref.old_log_loss, 0);
        CHECK_NEAR(r->new_log_loss, t->ref.new_log_loss, 0);
        CHECK_EQ_STR(names, r->outcome == TRAINING_PUBLISHED ? "1 2 " : "1 ");
    } else {
        CHECK_EQ_STR(names, "1 ");
    }
    snprintf(v2, sizeof v2, "%s/2", sdir);
    util_rmtree(v2);
    fault_resume(held);
    free(r);
    return rc;
}

TEST(promotion_under_allocation_failures)
{
    fx *f = malloc(sizeof *f);
    if (!repo_setup(f)) /* v1: the softmax fixture over the default features */
        UNIT_SKIP("no repository");
    promo_ctx t = {.n = 1200};
    features_candle *c = NULL;
    CHECK_EQ_INT(feed_seed_series("BTCUSDT", "15m", 1700000000, t.n, 5, &c), 0);
    t.c = c;
    if (c)
        CHECK(fault_loop("training_run_candles (promotion)", op_promote, &t, 0, NULL, 0,
                         FAULT_TOLERATE, 1) > 0);
    free(c);
    free(f);
    util_rmtree(base_dir);
}

/* ------------------------------------------------------------------------
 * Policy changes (pin, labels): policy.json is built with jansson, which
 * allocates through the same wrappers.
 */
typedef struct policy_ctx {
    registry *r; /* made and freed by each run: the heap check sees it all */
    int what;    /* 0 pin v1, 1 label canary v1 at 30% */
} policy_ctx;

/* The version a fresh registry over the repository serves (0: none), and
 * for a selector with a client key, to see a label. */
static uint32_t fresh_serving(const char *label)
{
    registry *r = NULL;
    uint32_t v = 0;
    if (registry_new(models_dir, &r) == 0 && registry_scan(r, NULL, NULL) == 0) {
        registry_selector sel = {0};
        sel.label = label;
        registry_version *x = NULL;
        if (registry_acquire(r, "BTCUSDT", "15m", label ? &sel : NULL, &x) == 0)
            v = registry_version_number(x);
        registry_release(x);
    }
    registry_free(r);
    return v;
}

static int op_policy(void *ctx)
{
    policy_ctx *c = ctx;
    bool held = fault_hold(); /* the pin is under test, not the first scan */
    c->r = NULL;
    if (registry_new(models_dir, &c->r) != 0 || registry_scan(c->r, NULL, NULL) != 0) {
        UNIT_FAIL_("registry");
        registry_free(c->r);
        return -1000;
    }
    fault_resume(held);
    int rc = c->what == 0 ? registry_pin(c->r, "BTCUSDT", "15m", 1)
                          : registry_set_label(c->r, "BTCUSDT", "15m", "canary", 1, 30);
    held = fault_hold();
    char p[800];
    snprintf(p, sizeof p, "%s/BTCUSDT/15m/policy.json", models_dir);
    struct stat st;
    bool file = stat(p, &st) == 0;
    if (rc == 0) {
        /* in this registry, and on disk for any other */
        registry_version *v = NULL;
        CHECK_EQ_INT(registry_acquire(c->r, "BTCUSDT", "15m", NULL, &v), 0);
        if (v)
            CHECK_EQ_INT(registry_version_number(v), c->what == 0 ? 1 : 2);
        registry_release(v);
        CHECK(file);
        if (c->what == 0)
            CHECK_EQ_INT(fresh_serving(NULL), 1);
        else
            CHECK_EQ_INT(fresh_serving("canary"), 1);
        CHECK_EQ_INT(c->what == 0 ? registry_unpin(c->r, "BTCUSDT", "15m")
                                  : registry_set_label(c->r, "BTCUSDT", "15m", "canary", 0, 0),
                     0);
    } else {
        CHECK(!file); /* nothing written, or the old (empty) policy restored */
        CHECK_EQ_INT(fresh_serving(NULL), 2);
    }
    CHECK(stat(p, &st) != 0);
    registry_free(c->r);
    fault_resume(held);
    return rc;
}

TEST(pin_and_label_under_allocation_failures)
{
    fx *f = malloc(sizeof *f);
    if (!repo_setup(f))
        UNIT_SKIP("no repository");
    uint32_t ver = 0;
    CHECK_EQ_INT(registry_publish(models_dir, "BTCUSDT", "15m", &f->m, &f->s, &ver), 0);
    policy_ctx c = {NULL, 0};
    CHECK(fault_loop("registry_pin", op_policy, &c, 0, NULL, 0, FAULT_TOLERATE, 1) > 0);
    c.what = 1;
    CHECK(fault_loop("registry_set_label", op_policy, &c, 0, NULL, 0, FAULT_TOLERATE, 1) > 0);
    free(f);
    util_rmtree(base_dir);
}

/* A repository with more in it: BTCUSDT/15m v1 good and v2 broken (its
 * model.pb cut, MANIFEST matching), ETHUSDT/1h v1, _default/15m v1, and a
 * version directory that is a symbolic link (refused). A whole registry
 * over it: scan, what serves each series, the fallback, the listing, the
 * refusals. When loading BTCUSDT v1 runs out of memory the series has no
 * version serving and answers from _default/15m (the registry's fallback
 * for a series without a verified version) until the next scan loads it:
 * allowed, provided the listing says v1 failed for lack of memory. */
static int op_rich_scan(void *ctx)
{
    (void)ctx;
    registry *r = NULL;
    int rc = registry_new(models_dir, &r);
    if (rc)
        return rc;
    rc = registry_scan(r, NULL, NULL);
    const char *sym[3] = {"BTCUSDT", "ETHUSDT", "SOLUSDT"}, *tf[3] = {"15m", "1h", "15m"};
    bool fell_back = false;
    for (int i = 0; rc == 0 && i < 3; i++) {
        registry_version *v = NULL;
        rc = registry_acquire(r, sym[i], tf[i], NULL, &v);
        if (rc == PD_ENOTREADY)
            rc = PD_ENOMEM; /* its load ran out of memory: listed as failed, retried later */
        if (rc == 0) {
            CHECK_EQ_INT(registry_version_number(v), 1);
            if (i == 0)
                fell_back = strcmp(registry_version_owner(v), REGISTRY_DEFAULT_SYMBOL) == 0;
            if (!fell_back)
                CHECK_EQ_STR(registry_version_owner(v), i == 2 ? REGISTRY_DEFAULT_SYMBOL : sym[i]);
            registry_release(v);
        }
    }
    registry_series_info *si = NULL;
    size_t n = 0;
    if (rc == 0)
        rc = registry_list(r, &si, &n);
    if (rc == 0) {
        CHECK_EQ_INT(n, 3);
        for (size_t i = 0; i < n; i++)
            if (strcmp(si[i].symbol, "BTCUSDT") == 0) {
                CHECK_EQ_INT(si[i].n_versions, 2);
                if (si[i].n_versions == 2) {
                    CHECK_EQ_INT(si[i].versions[1].state, REGISTRY_FAILED);
                    CHECK(strstr(si[i].versions[1].reason, "model.pb") ||
                          strstr(si[i].versions[1].reason, "out of memory"));
                    if (fell_back) {
                        CHECK_EQ_INT(si[i].versions[0].state, REGISTRY_FAILED);
                        CHECK(strstr(si[i].versions[0].reason, "out of memory") != NULL);
                    }
                }
            }
        registry_list_free(si, n);
        registry_refused_info *ref = NULL;
        size_t nr = 0;
        rc = registry_refused(r, &ref, &nr);
        if (rc == 0) { /* a refusal is dropped, not the scan, when memory is short */
            CHECK(nr <= 1);
            if (nr == 1)
                CHECK(strstr(ref[0].path, "ETHUSDT/1h/7") != NULL);
        }
        free(ref);
        size_t serving = 0, failed = 0;
        registry_counts(r, &serving, &failed);
        if (rc == 0) {
            CHECK_EQ_INT(serving, fell_back ? 2 : 3);
            CHECK_EQ_INT(failed, fell_back ? 2 : 1);
        }
    }
    registry_free(r);
    return rc;
}

TEST(registry_over_a_mixed_repository_under_allocation_failures)
{
    fx *f = malloc(sizeof *f);
    if (!repo_setup(f))
        UNIT_SKIP("no repository");
    uint32_t ver = 0;
    CHECK_EQ_INT(registry_publish(models_dir, "BTCUSDT", "15m", &f->m, &f->s, &ver), 0);
    f->meta.timeframe = "1h";
    CHECK_EQ_INT(registry_publish(models_dir, "ETHUSDT", "1h", &f->m, &f->s, &ver), 0);
    f->meta.timeframe = "15m";
    CHECK_EQ_INT(registry_publish(models_dir, REGISTRY_DEFAULT_SYMBOL, "15m", &f->m, &f->s, &ver),
                 0);
    snprintf(vdir, sizeof vdir, "%s/BTCUSDT/15m/2", models_dir);
    char p[800], q[800];
    snprintf(p, sizeof p, "%s/model.pb", vdir);
    CHECK_EQ_INT(truncate(p, 300), 0);
    rewrite_manifest();
    snprintf(p, sizeof p, "%s/ETHUSDT/1h/1", models_dir);
    snprintf(q, sizeof q, "%s/ETHUSDT/1h/7", models_dir);
    CHECK_EQ_INT(symlink(p, q), 0);
    CHECK(fault_loop("registry over a mixed repository", op_rich_scan, NULL, 0, NULL, 0,
                     FAULT_TOLERATE, 1) > 0);
    free(f);
    util_rmtree(base_dir);
}

/* The prediction service itself, with and without its caches. */
static int op_service(void *ctx)
{
    predict_options opt = {.cache = *(bool *)ctx};
    predict_service *svc = NULL;
    int rc = predict_service_new(&opt, NULL, &svc);
    if (rc == 0) {
        predict_cache_stats st;
        predict_cache_stats_get(svc, &st);
        CHECK_EQ_INT(st.computed, 0);
        predict_service_free(svc);
    } else {
        CHECK(svc == NULL);
    }
    return rc;
}

TEST(service_under_allocation_failures)
{
    bool cache = false;
    CHECK(fault_loop("predict_service_new", op_service, &cache, 0, NULL, 0, 0, 1) > 0);
    cache = true;
    CHECK(fault_loop("predict_service_new (caches)", op_service, &cache, 0, NULL, 0, 0, 1) > 0);
}

/* Training parameters to and from JSON (jansson through the wrappers). */
static int op_params_json(void *ctx)
{
    (void)ctx;
    training_params p, back;
    training_params_default(&p);
    char why[256] = "";
    int rc = training_params_set(&p, "symbols", "BTCUSDT,ETHUSDT", why, sizeof why);
    if (rc == 0)
        rc = training_params_set(&p, "timeframe", "1h", why, sizeof why);
    if (rc == 0)
        rc = training_params_set(&p, "kind", "mlp", why, sizeof why);
    if (rc == 0)
        rc = training_params_set(&p, "hidden", "16,8", why, sizeof why);
    if (rc == 0)
        rc = training_params_set(&p, "features", "rsi:14,natr:14,ret:1", why, sizeof why);
    if (rc)
        return rc;
    util_buf b;
    util_buf_init(&b);
    training_params_json(&p, &b);
    if (!util_buf_ok(&b)) {
        util_buf_cleanup(&b);
        return PD_ENOMEM;
    }
    training_params_default(&back);
    rc = training_params_from_json(b.data, &back, why, sizeof why);
    util_buf_cleanup(&b);
    if (rc == 0) {
        CHECK_EQ_INT(back.n_symbols, 2);
        CHECK_EQ_INT(back.kind, TRAINING_MLP);
        CHECK_EQ_INT(back.n_hidden, 2);
        CHECK_EQ_INT(back.n_features, 3);
        rc = training_params_validate(&back, why, sizeof why);
    }
    return rc;
}

/* Our own allocations only: see fault_json. */
TEST(training_params_json_under_allocation_failures)
{
    atomic_store(&fault_json, false);
    CHECK(fault_loop("training params JSON", op_params_json, NULL, 0, NULL, 0, 0, 1) > 0);
}

/* ------------------------------------------------------------------------
 * I/O failures.
 */

/*
 * Every file of a version cut at every byte offset. With the MANIFEST as
 * published the cut file's hash no longer matches (model.pb, scaler.pb) or
 * the MANIFEST no longer lists both files: refused, PD_EVERIFY, the file
 * named in the reason. With a MANIFEST rewritten to match, the protobuf
 * decoder and the checks after it see every prefix: refused too, except a
 * prefix that is a whole message on its own (a cut between two fields),
 * which must then still be a complete, consistent model.
 */
TEST(every_truncation_of_a_version_is_refused)
{
    fx *f = malloc(sizeof *f);
    if (!repo_setup(f))
        UNIT_SKIP("no repository");
    char *orig[3] = {NULL, NULL, NULL};
    size_t len[3] = {0, 0, 0};
    char p[800], why[256];
    for (int k = 0; k < 3; k++) {
        snprintf(p, sizeof p, "%s/%s", vdir, vfiles[k]);
        CHECK_EQ_INT(util_read_file(p, 1u << 24, &orig[k], &len[k]), 0);
    }
    for (int k = 0; k < 3 && orig[2]; k++) {
        snprintf(p, sizeof p, "%s/%s", vdir, vfiles[k]);
        size_t refused = 0, refused_rehashed = 0, whole = 0, bad = 0;
        for (size_t cut = 0; cut < len[k]; cut++) {
            write_file(p, orig[k], cut);
            why[0] = '\0';
            int rc = registry_verify_dir(vdir, why, sizeof why);
            bool newline_only = k == 2 && cut == len[k] - 1; /* the last '\n' of MANIFEST */
            if (newline_only) {
                CHECK_EQ_INT(rc, 0);
            } else if (rc != PD_EVERIFY || !strstr(why, k == 2 ? "MANIFEST" : vfiles[k])) {
                if (bad++ < 3)
                    UNIT_FAIL_("%s cut at %zu of %zu: %s, \"%s\"", vfiles[k], cut, len[k],
                               util_strerror(rc), why);
            } else {
                refused++;
            }
            if (k == 2)
                continue;
            rewrite_manifest();
            why[0] = '\0';
            rc = registry_verify_dir(vdir, why, sizeof why);
            if (rc == PD_EVERIFY && why[0]) {
                refused_rehashed++;
            } else if (rc == 0 && k == 0) {
                /* a whole message: it must have everything a model needs */
                Predictd__Model *m = NULL;
                CHECK_EQ_INT(registry_read_model(p, &m, why, sizeof why), 0);
                if (m) {
                    CHECK(m->n_golden >= 1 && m->n_golden <= NG);
                    CHECK_EQ_INT(m->n_layers, 1);
                    CHECK_EQ_INT(m->n_features, NF);
                    predictd__model__free_unpacked(m, NULL);
                }
                whole++;
            } else if (bad++ < 3) {
                UNIT_FAIL_("%s cut at %zu of %zu, MANIFEST matching: %s, \"%s\"", vfiles[k], cut,
                           len[k], util_strerror(rc), why);
            }
            snprintf(p, sizeof p, "%s/MANIFEST", vdir);
            write_file(p, orig[2], len[2]);
            snprintf(p, sizeof p, "%s/%s", vdir, vfiles[k]);
        }
        write_file(p, orig[k], len[k]);
        printf("  %s (%zu bytes): %zu cuts refused; with a matching MANIFEST %zu refused, %zu "
               "whole messages\n",
               vfiles[k], len[k], refused, refused_rehashed, whole);
        CHECK_EQ_INT(bad, 0);
        CHECK_EQ_INT(registry_verify_dir(vdir, why, sizeof why), 0); /* restored */
    }
    for (int k = 0; k < 3; k++)
        free(orig[k]);
    free(f);
    util_rmtree(base_dir);
}

/* The same cuts seen by a serving registry: v1 good, v2 its model.pb cut
 * (MANIFEST matching): v1 keeps serving and v2 is listed FAILED with a
 * reason, at every offset. */
TEST(a_truncated_new_version_never_replaces_the_serving_one)
{
    fx *f = malloc(sizeof *f);
    if (!repo_setup(f))
        UNIT_SKIP("no repository");
    uint32_t ver = 0;
    CHECK_EQ_INT(registry_publish(models_dir, "BTCUSDT", "15m", &f->m, &f->s, &ver), 0);
    CHECK_EQ_INT(ver, 2);
    snprintf(vdir, sizeof vdir, "%s/BTCUSDT/15m/2", models_dir);
    char p[800];
    snprintf(p, sizeof p, "%s/model.pb", vdir);
    char *orig = NULL;
    size_t len = 0;
    CHECK_EQ_INT(util_read_file(p, 1u << 24, &orig, &len), 0);
    size_t failed = 0, bad = 0;
    for (size_t cut = 0; orig && cut < len; cut += 7) {
        write_file(p, orig, cut);
        rewrite_manifest();
        registry *r = NULL;
        if (registry_new(models_dir, &r) != 0 || registry_scan(r, NULL, NULL) != 0) {
            UNIT_FAIL_("registry at cut %zu", cut);
            registry_free(r);
            break;
        }
        registry_version *v = NULL;
        int rc = registry_acquire(r, "BTCUSDT", "15m", NULL, &v);
        uint32_t serving = rc == 0 ? registry_version_number(v) : 0;
        registry_release(v);
        registry_series_info *s = NULL;
        size_t n = 0;
        int state = -1;
        char reason[300] = "";
        if (registry_list(r, &s, &n) == 0 && n == 1)
            for (size_t i = 0; i < s[0].n_versions; i++)
                if (s[0].versions[i].version == 2) {
                    state = s[0].versions[i].state;
                    snprintf(reason, sizeof reason, "%s", s[0].versions[i].reason);
                }
        registry_list_free(s, n);
        registry_free(r);
        if (serving == 1 && state == REGISTRY_FAILED && reason[0])
            failed++;
        else if (!(serving == 2 && state == REGISTRY_AVAILABLE) && bad++ < 3)
            UNIT_FAIL_("cut at %zu: serving v%u, v2 %s \"%s\"", cut, serving,
                       state >= 0 ? registry_state_name(state) : "unlisted", reason);
    }
    printf("  model.pb (%zu bytes) cut every 7 bytes: %zu refused while v1 served\n", len, failed);
    CHECK(failed > len / 7 / 2);
    free(orig);
    free(f);
    util_rmtree(base_dir);
}

/* Files that are not regular files. Tests run as root, so a chmod 000 file
 * would still be read: a directory and a FIFO stand for the unreadable
 * file (the FIFO must not hang the reader). */
TEST(files_that_cannot_be_read_are_refused)
{
    fx *f = malloc(sizeof *f);
    if (!repo_setup(f))
        UNIT_SKIP("no repository");
    char p[800], q[800], why[256];
    for (int k = 0; k < 3; k++) {
        snprintf(p, sizeof p, "%s/%s", vdir, vfiles[k]);
        snprintf(q, sizeof q, "%s/%s.keep", base_dir, vfiles[k]);
        CHECK_EQ_INT(rename(p, q), 0);
        for (int kind = 0; kind < 2; kind++) {
            CHECK_EQ_INT(kind == 0 ? mkdir(p, 0755) : mkfifo(p, 0644), 0);
            why[0] = '\0';
            CHECK_EQ_INT(registry_verify_dir(vdir, why, sizeof why), PD_EVERIFY);
            CHECK(strstr(why, vfiles[k]) != NULL);
            CHECK(strstr(why, "not a readable regular file") != NULL);
            if (k < 2) {
                Predictd__Model *m = NULL;
                CHECK_EQ_INT(registry_read_model(p, &m, why, sizeof why), PD_EIO);
                CHECK(strstr(why, "unreadable") != NULL);
                CHECK(m == NULL);
            }
            printf("  %s as a %s: %s\n", vfiles[k], kind == 0 ? "directory" : "FIFO", why);
            kind == 0 ? rmdir(p) : unlink(p);
        }
        CHECK_EQ_INT(rename(q, p), 0);
    }
    CHECK_EQ_INT(registry_verify_dir(vdir, why, sizeof why), 0);
    /* the version directory itself a file, and absent */
    snprintf(p, sizeof p, "%s/model.pb", vdir);
    CHECK_EQ_INT(registry_verify_dir(p, why, sizeof why), PD_EVERIFY);
    CHECK(strstr(why, "not a readable directory") != NULL);
    snprintf(p, sizeof p, "%s/none", vdir);
    CHECK_EQ_INT(registry_verify_dir(p, why, sizeof why), PD_EVERIFY);
    Predictd__Model *m = NULL;
    snprintf(p, sizeof p, "%s/none/model.pb", vdir);
    CHECK_EQ_INT(registry_read_model(p, &m, why, sizeof why), PD_ENOTFOUND);
    free(f);
    util_rmtree(base_dir);
}

/* A small tmpfs at dir, private to this test's process (a mount namespace
 * of its own, so nothing outlives the test). opts: mount options. false
 * when this system does not allow it (not root, no namespaces). */
static bool private_tmpfs(const char *dir, const char *opts)
{
    static bool unshared;
    if (!unshared) {
        if (unshare(CLONE_NEWNS) != 0 && unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0)
            return false;
        if (mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
            return false;
        unshared = true;
    }
    umount2(dir, MNT_DETACH);
    return mount("pd-faults", dir, "tmpfs", 0, opts) == 0;
}

/* Fills the file system of dir but `spare` pages (a filler file there). */
static bool fill_but(const char *dir, size_t spare)
{
    char p[800];
    snprintf(p, sizeof p, "%s/filler", dir);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return false;
    static char page[4096];
    off_t size = 0;
    while (write(fd, page, sizeof page) == (ssize_t)sizeof page)
        size += (off_t)sizeof page;
    bool ok = errno == ENOSPC && ftruncate(fd, size - (off_t)(spare * sizeof page)) == 0;
    close(fd);
    return ok;
}

/*
 * Publishing into a file system that is full (ENOSPC on write, then on
 * creating an inode): for every amount of free space (pages of a tmpfs,
 * then inodes) until publishing succeeds, registry_publish returns
 * PD_EIO and leaves no version and no temporary behind; training publishes
 * the same way. The first amount that suffices gives a version that
 * verifies.
 */
TEST(publishing_on_a_full_file_system)
{
    fx *f = malloc(sizeof *f);
    faults_fx_init(f, 3);
    if (!unit_tmpdir(base_dir, sizeof base_dir, "pd-faults"))
        UNIT_SKIP("no temporary directory");
    snprintf(models_dir, sizeof models_dir, "%s/models", base_dir);
    mkdir(models_dir, 0755);
    if (!private_tmpfs(models_dir, "size=64k")) {
        util_rmtree(base_dir);
        UNIT_SKIP("cannot mount a private tmpfs here");
    }
    char sdir[800], names[256], why[256];
    snprintf(sdir, sizeof sdir, "%s/BTCUSDT/15m", models_dir);
    snprintf(vdir, sizeof vdir, "%s/BTCUSDT/15m/1", models_dir);
    size_t spare = 0, refused = 0;
    for (; spare < 16; spare++) {
        CHECK(private_tmpfs(models_dir, "size=64k"));
        CHECK(fill_but(models_dir, spare));
        uint32_t ver = 0;
        int rc = registry_publish(models_dir, "BTCUSDT", "15m", &f->m, &f->s, &ver);
        listing(sdir, names, sizeof names);
        if (rc == 0) {
            CHECK_EQ_INT(ver, 1);
            CHECK_EQ_STR(names, "1 ");
            CHECK_EQ_INT(registry_verify_dir(vdir, why, sizeof why), 0);
            break;
        }
        CHECK_EQ_INT(rc, PD_EIO);
        CHECK_EQ_STR(names, "");
        refused++;
    }
    printf("  %zu page(s) free: published; with fewer, %zu refusals with PD_EIO\n", spare, refused);
    CHECK(refused >= 1);
    CHECK(spare < 16);

    size_t inodes = 1;
    refused = 0;
    for (; inodes < 16; inodes++) {
        char opts[64];
        snprintf(opts, sizeof opts, "size=64k,nr_inodes=%zu", inodes);
        CHECK(private_tmpfs(models_dir, opts));
        uint32_t ver = 0;
        int rc = registry_publish(models_dir, "BTCUSDT", "15m", &f->m, &f->s, &ver);
        listing(sdir, names, sizeof names);
        if (rc == 0) {
            CHECK_EQ_STR(names, "1 ");
            CHECK_EQ_INT(registry_verify_dir(vdir, why, sizeof why), 0);
            break;
        }
        CHECK_EQ_INT(rc, PD_EIO);
        CHECK(strcmp(names, "") == 0);
        refused++;
    }
    printf("  %zu inodes: published; with fewer, %zu refusals with PD_EIO\n", inodes, refused);
    CHECK(refused >= 3);

    /* training: everything but the publishing works, which fails cleanly */
    CHECK(private_tmpfs(models_dir, "size=64k"));
    CHECK(fill_but(models_dir, 0));
    features_candle *c = NULL;
    CHECK_EQ_INT(feed_seed_series("BTCUSDT", "15m", 1700000000, 1200, 5, &c), 0);
    if (c) {
        training_params p;
        training_params_default(&p);
        snprintf(p.symbols[0], sizeof p.symbols[0], "BTCUSDT");
        p.n_symbols = 1;
        snprintf(p.timeframe, sizeof p.timeframe, "15m");
        p.now = c[1199].t + 901;
        p.epochs = 3;
        p.force = true;
        training_ctx tc = {.models_dir = models_dir};
        const features_candle *s[1] = {c};
        size_t l[1] = {1200};
        training_result *r = calloc(1, sizeof *r);
        CHECK_EQ_INT(training_run_candles(&p, &tc, s, l, 1, r), PD_EIO);
        CHECK_EQ_INT(r->version, 0);
        CHECK(r->message[0] != '\0');
        printf("  training on a full file system: %s\n", r->message);
        listing(sdir, names, sizeof names);
        CHECK_EQ_STR(names, "");
        free(r);
    }
    free(c);
    umount2(models_dir, MNT_DETACH);
    free(f);
    util_rmtree(base_dir);
}

/* Makes dir (and a file in it) look abandoned: modified two hours ago. */
static void make_old_temporary(const char *dir, int depth)
{
    char p[900];
    snprintf(p, sizeof p, "%s", dir);
    for (int d = 0; d <= depth; d++) {
        mkdir(p, 0755);
        char f[1000];
        snprintf(f, sizeof f, "%s/model.pb", p);
        write_file(f, "x", 1);
        if (d < depth)
            strncat(p, "/sub", sizeof p - strlen(p) - 1);
    }
    struct timespec old[2] = {{time(NULL) - 7200, 0}, {time(NULL) - 7200, 0}};
    utimensat(AT_FDCWD, dir, old, 0);
}

/*
 * A repository on a read-only file system (a volume mounted ro, EROFS on
 * every write): it serves, but publishing, training's publishing and a pin
 * fail with PD_EIO and change nothing, and an abandoned temporary that
 * cannot be removed stays where it is without failing the scan.
 */
TEST(a_read_only_repository_serves_and_refuses_writes)
{
    fx *f = malloc(sizeof *f);
    faults_fx_init(f, 4);
    if (!unit_tmpdir(base_dir, sizeof base_dir, "pd-faults"))
        UNIT_SKIP("no temporary directory");
    snprintf(models_dir, sizeof models_dir, "%s/models", base_dir);
    mkdir(models_dir, 0755);
    if (!private_tmpfs(models_dir, "size=256k")) {
        util_rmtree(base_dir);
        UNIT_SKIP("cannot mount a private tmpfs here");
    }
    uint32_t ver = 0;
    CHECK_EQ_INT(registry_publish(models_dir, "BTCUSDT", "15m", &f->m, &f->s, &ver), 0);
    char sdir[800], tmp[900], names[256], before[256];
    snprintf(sdir, sizeof sdir, "%s/BTCUSDT/15m", models_dir);
    snprintf(tmp, sizeof tmp, "%s/.tmp-1-00000000deadbeef", sdir);
    make_old_temporary(tmp, 0);
    CHECK_EQ_INT(mount(NULL, models_dir, NULL, MS_REMOUNT | MS_RDONLY, NULL), 0);
    listing(sdir, before, sizeof before);
    CHECK_EQ_STR(before, ".tmp-1-00000000deadbeef 1 ");

    CHECK_EQ_INT(registry_publish(models_dir, "BTCUSDT", "15m", &f->m, &f->s, &ver), PD_EIO);
    CHECK_EQ_INT(registry_publish(models_dir, "ETHUSDT", "15m", &f->m, &f->s, &ver), PD_EIO);
    registry *r = NULL;
    CHECK_EQ_INT(registry_new(models_dir, &r), 0);
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    registry_version *v = NULL;
    CHECK_EQ_INT(registry_acquire(r, "BTCUSDT", "15m", NULL, &v), 0);
    if (v)
        CHECK_EQ_INT(registry_version_number(v), 1);
    registry_release(v);
    CHECK_EQ_INT(registry_pin(r, "BTCUSDT", "15m", 1), PD_EIO);
    CHECK_EQ_INT(registry_set_label(r, "BTCUSDT", "15m", "stable", 1, 0), PD_EIO);
    registry_free(r);

    features_candle *c = NULL;
    CHECK_EQ_INT(feed_seed_series("BTCUSDT", "15m", 1700000000, 1200, 5, &c), 0);
    if (c) {
        training_params p;
        training_params_default(&p);
        snprintf(p.symbols[0], sizeof p.symbols[0], "BTCUSDT");
        p.n_symbols = 1;
        snprintf(p.timeframe, sizeof p.timeframe, "15m");
        p.now = c[1199].t + 901;
        p.epochs = 3;
        p.force = true;
        training_ctx tc = {.models_dir = models_dir};
        const features_candle *s[1] = {c};
        size_t l[1] = {1200};
        training_result *res = calloc(1, sizeof *res);
        CHECK_EQ_INT(training_run_candles(&p, &tc, s, l, 1, res), PD_EIO);
        printf("  training into a read-only repository: %s\n", res->message);
        free(res);
    }
    free(c);
    listing(sdir, names, sizeof names);
    CHECK_EQ_STR(names, before); /* nothing written, the temporary could not go */
    umount2(models_dir, MNT_DETACH);
    free(f);
    util_rmtree(base_dir);
}

/* Abandoned temporaries: removed when old, with what they hold (two levels
 * of directories at most); a fresh one (maybe a publish in progress), a
 * deeper one, a symbolic link and a plain dot-file are left alone. */
TEST(abandoned_temporaries_are_swept_with_limits)
{
    if (!unit_tmpdir(base_dir, sizeof base_dir, "pd-faults"))
        UNIT_SKIP("no temporary directory");
    char p[900], names[256];
    snprintf(p, sizeof p, "%s/.tmp-old", base_dir);
    make_old_temporary(p, 2);
    snprintf(p, sizeof p, "%s/.tmp-deep", base_dir);
    make_old_temporary(p, 3);
    snprintf(p, sizeof p, "%s/.tmp-fresh", base_dir);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/.tmp-link", base_dir);
    CHECK_EQ_INT(symlink("/tmp", p), 0);
    snprintf(p, sizeof p, "%s/.dotfile", base_dir);
    write_file(p, "x", 1);
    snprintf(p, sizeof p, "%s/1", base_dir);
    mkdir(p, 0755);
    int fd = open(base_dir, O_RDONLY | O_DIRECTORY);
    CHECK_EQ_INT(registry__sweep_temporaries(fd, "BTCUSDT", "15m", 3600), 1);
    close(fd);
    listing(base_dir, names, sizeof names);
    CHECK_EQ_STR(names, ".dotfile .tmp-deep .tmp-fresh .tmp-link 1 ");
    snprintf(p, sizeof p, "%s/.tmp-deep/sub/sub/sub/model.pb", base_dir);
    struct stat st;
    CHECK(stat(p, &st) == 0); /* partly emptied at most: the deepest level stays */
    util_rmtree(base_dir);
}

/* ------------------------------------------------------------------------
 * `predictd import` of a trades file (server/cmd_data.c), the command
 * itself: the file read, parsed, aggregated into 1m candles (more than the
 * collector's first 1024: a gap of 1100 minutes is filled), then stored.
 * No database is configured, so the reference run stops at the store with
 * exit 1 and says the database URL is required; a run whose allocation
 * fails must exit 1 saying "out of memory" and not mention the database
 * (it never got there). stderr is captured to a file around the call.
 */
typedef struct import_ctx {
    char csv[700], err[700];
} import_ctx;

static int op_import_trades(void *ctx)
{
    import_ctx *c = ctx;
    server_config cfg;
    memset(&cfg, 0, sizeof cfg);
    char *argv[] = {"import", c->csv, "--symbol", "BTCUSDT", NULL};
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    int fd = open(c->err, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (saved < 0 || fd < 0) {
        UNIT_FAIL_("cannot capture stderr");
        return -1000;
    }
    dup2(fd, STDERR_FILENO);
    close(fd);
    int ec = cmd_import(&cfg, 4, argv);
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    bool held = fault_hold();
    char *text = NULL;
    size_t n = 0;
    int rc = -1000;
    if (util_read_file(c->err, 1u << 20, &text, &n) != 0) {
        UNIT_FAIL_("stderr not captured");
    } else if (ec == 1 && strstr(text, "PREDICTD_DATABASE_URL (or --database-url) is required")) {
        rc = 0;
    } else if (ec == 1 && strstr(text, "out of memory") && !strstr(text, "DATABASE_URL")) {
        rc = PD_ENOMEM;
    } else {
        UNIT_FAIL_("import exited %d saying: %s", ec, text);
    }
    free(text);
    fault_resume(held);
    return rc;
}

TEST(import_of_trades_under_allocation_failures)
{
    char dir[512];
    if (!unit_tmpdir(dir, sizeof dir, "pd-faults-import"))
        UNIT_SKIP("no temporary directory");
    import_ctx c;
    snprintf(c.csv, sizeof c.csv, "%s/trades.csv", dir);
    snprintf(c.err, sizeof c.err, "%s/stderr.txt", dir);
    FILE *f = fopen(c.csv, "w");
    CHECK(f != NULL);
    if (!f)
        return;
    fprintf(f, "time,id,side,price,amount\n");
    for (int i = 0; i < 40; i++) /* a repeated id, a late trade */
        fprintf(f, "%lld,%d,%s,%.2f,1.5\n", 1700000040000LL + i * 20000LL, i == 7 ? 6 : i,
                i % 2 ? "buy" : "sell", 100.0 + i * 0.1);
    fprintf(f, "%lld,999,buy,105.00,2\n", 1700000040000LL + 1100LL * 60000);
    CHECK_EQ_INT(fclose(f), 0);
    CHECK(fault_loop("predictd import (trades)", op_import_trades, &c, 0, NULL, 0, 0, 1) > 0);
    util_rmtree(dir);
}

/* ------------------------------------------------------------------------
 * A pin over a policy.json an operator wrote (a label and a key of their
 * own): every faulted run either pins (the file then holds the pin, the
 * label and the operator's key) or fails with the file byte for byte as
 * it was (read before the change, so that putting it back needs no
 * memory) and the newest version serving in any other process.
 */
static const char kept_policy[] = "{\"labels\": {\"stable\": 2},\n \"owner_id\": 7}\n";

static int op_pin_over_policy(void *ctx)
{
    (void)ctx;
    bool held = fault_hold();
    char p[800];
    snprintf(p, sizeof p, "%s/BTCUSDT/15m/policy.json", models_dir);
    registry *r = NULL;
    if (registry_new(models_dir, &r) != 0 || registry_scan(r, NULL, NULL) != 0) {
        UNIT_FAIL_("registry");
        registry_free(r);
        fault_resume(held);
        return -1000;
    }
    fault_resume(held);
    int rc = registry_pin(r, "BTCUSDT", "15m", 1);
    held = fault_hold();
    char *text = NULL;
    size_t n = 0;
    CHECK_EQ_INT(util_read_file(p, 1u << 20, &text, &n), 0);
    if (rc == 0) {
        json_t *j = text ? json_loadb(text, n, 0, NULL) : NULL;
        CHECK_EQ_INT(json_integer_value(json_object_get(j, "pinned")), 1);
        CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(j, "labels"), "stable")),
                     2);
        CHECK_EQ_INT(json_integer_value(json_object_get(j, "owner_id")), 7);
        json_decref(j);
        CHECK_EQ_INT(fresh_serving(NULL), 1);
        CHECK_EQ_INT(write_file(p, kept_policy, strlen(kept_policy)), 0);
    } else {
        CHECK(text && n == strlen(kept_policy) && memcmp(text, kept_policy, n) == 0);
        CHECK_EQ_INT(fresh_serving(NULL), 2);
    }
    free(text);
    registry_free(r);
    fault_resume(held);
    return rc;
}

TEST(pin_over_an_operators_policy_under_allocation_failures)
{
    fx *f = malloc(sizeof *f);
    if (!repo_setup(f)) {
        free(f);
        UNIT_SKIP("no repository");
    }
    uint32_t ver = 0;
    CHECK_EQ_INT(registry_publish(models_dir, "BTCUSDT", "15m", &f->m, &f->s, &ver), 0);
    CHECK_EQ_INT(ver, 2);
    char p[800];
    snprintf(p, sizeof p, "%s/BTCUSDT/15m/policy.json", models_dir);
    CHECK_EQ_INT(write_file(p, kept_policy, strlen(kept_policy)), 0);
    CHECK(fault_loop("registry_pin over policy.json", op_pin_over_policy, NULL, 0, NULL, 0,
                     FAULT_TOLERATE, 1) > 0);
    free(f);
    util_rmtree(base_dir);
}

/* ------------------------------------------------------------------------
 * A series whose directory was removed, met by a full scan under
 * allocation failures: the scan returns 0 (some allocations it can do
 * without: the listing of refused directories) or PD_ENOMEM; after it (and,
 * when it ran out of memory, after one more scan with memory back) the
 * removed series serves nothing and the other one still serves its version.
 */
static int op_series_gone(void *ctx)
{
    fx *f = ctx;
    bool held = fault_hold();
    char p[800];
    snprintf(p, sizeof p, "%s/ETHUSDT/15m", models_dir);
    registry *r = NULL;
    registry_version *v = NULL;
    if (registry_new(models_dir, &r) != 0 || registry_scan(r, NULL, NULL) != 0 ||
        registry_acquire(r, "ETHUSDT", "15m", NULL, &v) != 0) {
        UNIT_FAIL_("registry");
        registry_free(r);
        fault_resume(held);
        return -1000;
    }
    registry_release(v);
    v = NULL;
    CHECK_EQ_INT(util_rmtree(p), 0);
    fault_resume(held);
    int rc = registry_scan(r, NULL, NULL);
    held = fault_hold();
    if (rc == PD_ENOMEM)
        CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    CHECK_EQ_INT(registry_acquire(r, "ETHUSDT", "15m", NULL, &v), PD_ENOMODEL);
    CHECK_EQ_INT(registry_acquire(r, "BTCUSDT", "15m", NULL, &v), 0);
    if (v)
        CHECK_EQ_INT(registry_version_number(v), 1);
    registry_release(v);
    registry_free(r);
    uint32_t ver = 0;
    f->meta.symbol = "ETHUSDT";
    CHECK_EQ_INT(registry_publish(models_dir, "ETHUSDT", "15m", &f->m, &f->s, &ver), 0);
    CHECK_EQ_INT(ver, 1);
    fault_resume(held);
    return rc;
}

TEST(a_series_directory_gone_under_allocation_failures)
{
    fx *f = malloc(sizeof *f);
    if (!repo_setup(f)) {
        free(f);
        UNIT_SKIP("no repository");
    }
    uint32_t ver = 0;
    f->meta.symbol = "ETHUSDT";
    CHECK_EQ_INT(registry_publish(models_dir, "ETHUSDT", "15m", &f->m, &f->s, &ver), 0);
    CHECK(fault_loop("registry_scan with a series gone", op_series_gone, f, 0, NULL, 0,
                     FAULT_TOLERATE, 1) > 0);
    free(f);
    util_rmtree(base_dir);
}

int main(int argc, char **argv)
{
    (void)argc;
    fault_main_init(argv);
    RUN_ONLY(registry_verify_and_read_under_allocation_failures);
    RUN_ONLY(registry_scan_acquire_list_under_allocation_failures);
    RUN_ONLY(registry_publish_under_allocation_failures);
    RUN_ONLY(inference_and_features_under_allocation_failures);
    RUN_ONLY(tree_and_sequence_models_under_allocation_failures);
    RUN_ONLY(prediction_computation_under_allocation_failures);
    RUN_ONLY(csv_and_trades_under_allocation_failures);
    RUN_ONLY(feed_connector_and_messages_under_allocation_failures);
    RUN_ONLY(training_under_allocation_failures);
    RUN_ONLY(promotion_under_allocation_failures);
    RUN_ONLY(pin_and_label_under_allocation_failures);
    RUN_ONLY(registry_over_a_mixed_repository_under_allocation_failures);
    RUN_ONLY(service_under_allocation_failures);
    RUN_ONLY(training_params_json_under_allocation_failures);
    RUN_ONLY(every_truncation_of_a_version_is_refused);
    RUN_ONLY(a_truncated_new_version_never_replaces_the_serving_one);
    RUN_ONLY(files_that_cannot_be_read_are_refused);
    RUN_ONLY(publishing_on_a_full_file_system);
    RUN_ONLY(a_read_only_repository_serves_and_refuses_writes);
    RUN_ONLY(abandoned_temporaries_are_swept_with_limits);
    RUN_ONLY(import_of_trades_under_allocation_failures);
    RUN_ONLY(pin_over_an_operators_policy_under_allocation_failures);
    RUN_ONLY(a_series_directory_gone_under_allocation_failures);
    return unit_report();
}
