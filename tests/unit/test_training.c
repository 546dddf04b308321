/*
 * The trainer: parameters, the optimiser and calibration on toy data, the
 * dataset's parity with serving (bit-identical vectors, in memory and
 * through PostgreSQL's window loader), a model on seeded candles beating
 * the majority baseline, published files the registry verifies, bit-for-bit
 * determinism, the promotion rule, run errors, and background jobs
 * (success, rejection, cancellation while running and while queued, busy
 * series, persistence across restarts, interrupted jobs).
 *
 * Tests that need PostgreSQL use PREDICTD_TEST_DATABASE_URL and skip
 * without it; they migrate from $PREDICTD_ROOT/db.
 */
#include <dirent.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <unistd.h>

#include "registry/registry.h"
#include "training/internal.h"
#include "unit.h"
#include "feed/feed.h"
#include "store/store.h"

#define NOW INT64_C(1700000000)

static char tmp_root[512];

static const char *tmpdir(const char *name, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%s", tmp_root, name);
    util_rmtree(buf);
    mkdir(buf, 0755);
    return buf;
}

static features_candle *seeded(const char *symbol, const char *tf, size_t n, uint64_t seed)
{
    features_candle *c = NULL;
    if (feed_seed_series(symbol, tf, NOW, n, seed, &c) != 0)
        return NULL;
    return c;
}

/* A series with a signal a linear model finds: log-return drift of +-0.3
 * sigma per candle in regimes lasting ~300 candles (an xorshift stream:
 * independent of the seed generator's tuning). */
static features_candle *trending(size_t n, uint64_t seed, int64_t tfs)
{
    features_candle *c = malloc(n * sizeof *c);
    if (!c)
        return NULL;
    util_rng g;
    util_rng_seed(&g, seed);
    double price = 100, drift = 0.3;
    int64_t t0 = util_tf_last_closed_open(NOW, tfs) - (int64_t)(n - 1) * tfs;
    for (size_t i = 0; i < n; i++) {
        if (util_rng_uniform(&g) < 1.0 / 300)
            drift = -drift;
        double r = 0.01 * (drift + training__rng_normal(&g));
        double open = price, close = price * exp(r);
        double hi = (open > close ? open : close) * (1 + 0.004 * util_rng_uniform(&g));
        double lo = (open < close ? open : close) * (1 - 0.004 * util_rng_uniform(&g));
        c[i] = (features_candle){
            t0 + (int64_t)i * tfs, open, hi, lo, close, 1000 + 500 * util_rng_uniform(&g)};
        price = close;
    }
    return c;
}

/* A driftless random walk (Gaussian log-returns, 1% per candle): nothing
 * to learn. Then, from candle `trend_from` on (n: never), a steady climb of
 * 1% a candle with small wicks, whose triple-barrier labels are all LONG. */
static features_candle *random_walk(size_t n, uint64_t seed, int64_t tfs, size_t trend_from)
{
    features_candle *c = malloc(n * sizeof *c);
    if (!c)
        return NULL;
    util_rng g;
    util_rng_seed(&g, seed);
    double price = 100;
    int64_t t0 = util_tf_last_closed_open(NOW, tfs) - (int64_t)(n - 1) * tfs;
    for (size_t i = 0; i < n; i++) {
        bool up = i >= trend_from;
        double r = up ? 0.01 : 0.01 * training__rng_normal(&g);
        double open = price, close = price * exp(r);
        double w = up ? 0.001 : 0.004;
        double hi = (open > close ? open : close) * (1 + w * util_rng_uniform(&g));
        double lo = (open < close ? open : close) * (1 - w * util_rng_uniform(&g));
        c[i] = (features_candle){
            t0 + (int64_t)i * tfs, open, hi, lo, close, 1000 + 500 * util_rng_uniform(&g)};
        price = close;
    }
    return c;
}

static void params_for(training_params *p, const char *symbol, const char *tf)
{
    training_params_default(p);
    snprintf(p->symbols[0], sizeof p->symbols[0], "%s", symbol);
    p->n_symbols = 1;
    snprintf(p->timeframe, sizeof p->timeframe, "%s", tf);
    p->now = NOW;
}

static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static bool same_file(const char *a, const char *b)
{
    char *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    bool same = util_read_file(a, 1u << 26, &x, &nx) == 0 &&
                util_read_file(b, 1u << 26, &y, &ny) == 0 && nx == ny && memcmp(x, y, nx) == 0;
    free(x);
    free(y);
    return same;
}

/* ===========================================================================
 * Parameters.
 */
TEST(test_params_set_and_validate)
{
    training_params p;
    training_params_default(&p);
    char why[256];
    CHECK_EQ_INT(training_params_validate(&p, why, sizeof why), PD_EINVAL); /* no symbol */
    CHECK_EQ_INT(training_params_set(&p, "symbols", "BTCUSDT,ETHUSDT", why, sizeof why), 0);
    CHECK_EQ_INT(p.n_symbols, 2);
    CHECK_EQ_STR(training_params_target(&p), "_default");
    CHECK_EQ_INT(training_params_set(&p, "timeframe", "15m", why, sizeof why), 0);
    CHECK_EQ_INT(training_params_validate(&p, why, sizeof why), 0);
    CHECK_EQ_INT(training_params_set(&p, "kind", "mlp", why, sizeof why), 0);
    CHECK_EQ_INT(training_params_set(&p, "hidden", "32,16,8", why, sizeof why), 0);
    CHECK_EQ_INT(p.n_hidden, 3);
    CHECK_EQ_INT(p.hidden[2], 8);
    CHECK_EQ_INT(training_params_set(&p, "tp-r", "1.5,2,4", why, sizeof why), 0);
    CHECK_NEAR(p.policy.tp_r[0], 1.5, 0);
    CHECK_EQ_INT(training_params_set(&p, "sl_atr", "2", why, sizeof why), 0);
    CHECK_EQ_INT(training_params_set(&p, "from", "2024-01-01", why, sizeof why), 0);
    CHECK_EQ_INT(p.from, 1704067200);
    CHECK_EQ_INT(training_params_set(&p, "to", "2024-01-02T00:00:00Z", why, sizeof why), 0);
    CHECK_EQ_INT(training_params_set(&p, "promote-if-better", "true", why, sizeof why), 0);
    CHECK(p.promote_if_better);
    CHECK_EQ_INT(training_params_set(&p, "features", "rsi:14,natr:14,ret:1", why, sizeof why), 0);
    CHECK_EQ_INT(p.n_features, 3);
    CHECK_EQ_INT(training_params_validate(&p, why, sizeof why), 0);

    /* each bad value is refused and leaves p as it was */
    training_params q = p;
    const char *bad[][2] = {
        {"kind", "forest"},     {"hidden", "64,0"},
        {"hidden", ""},         {"tp_r", "2,1,3"},
        {"tp_r", "1,2"},        {"sl_atr", "-1"},
        {"horizon", "0"},       {"min_confidence", "1.5"},
        {"window", "x"},        {"symbols", "btc"},
        {"symbols", "A,,B"},    {"timeframe", "7m"},
        {"from", "yesterday"},  {"seed", "-3"},
        {"epochs", "1e3"},      {"val_frac", "0.6"},
        {"publish", "maybe"},   {"no_such", "1"},
        {"target", "bad name"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        why[0] = '\0';
        int rc = training_params_set(&p, bad[i][0], bad[i][1], why, sizeof why);
        if (rc != PD_EINVAL || !why[0])
            UNIT_FAIL_("set %s=%s: rc %d why '%s'", bad[i][0], bad[i][1], rc, why);
    }
    CHECK(memcmp(&p, &q, sizeof p) == 0);

    /* whole-set checks */
    training_params r = q;
    training_params_set(&r, "features", "nope:3", why, sizeof why);
    CHECK_EQ_INT(training_params_validate(&r, why, sizeof why), PD_EINVAL);
    CHECK(strstr(why, "features") != NULL);
    r = q;
    training_params_set(&r, "window", "20", why, sizeof why);
    training_params_set(&r, "features", "default", why, sizeof why);
    CHECK_EQ_INT(training_params_validate(&r, why, sizeof why), PD_EINVAL);
    CHECK(strstr(why, "window") != NULL);
    r = q;
    r.from = r.to + 10;
    CHECK_EQ_INT(training_params_validate(&r, why, sizeof why), PD_EINVAL);
}

TEST(test_params_json)
{
    training_params p;
    params_for(&p, "BTCUSDT", "1h");
    training_params_set(&p, "kind", "mlp", NULL, 0);
    util_buf b;
    util_buf_init(&b);
    training_params_json(&p, &b);
    CHECK(util_buf_ok(&b));
    json_error_t err;
    json_t *j = json_loads(b.data, 0, &err);
    CHECK(j != NULL);
    if (j) {
        CHECK_EQ_STR(json_string_value(json_object_get(j, "target")), "BTCUSDT");
        CHECK_EQ_STR(json_string_value(json_object_get(j, "kind")), "mlp");
        CHECK_EQ_INT(json_array_size(json_object_get(j, "hidden")), 2);
        CHECK_EQ_INT(json_integer_value(json_object_get(j, "epochs")), 60);
        CHECK_EQ_INT(json_integer_value(json_object_get(j, "horizon")), 16);
        CHECK_EQ_STR(json_string_value(json_object_get(j, "features")), "default");
        CHECK(json_is_null(json_object_get(j, "from")));
        json_decref(j);
    }
    util_buf_cleanup(&b);
}

/* ===========================================================================
 * Optimiser and calibration on toy data.
 */
TEST(test_temperature_fit)
{
    /* every row has logits 10*(1,0,0); labels 80/10/10: the NLL optimum is
     * p0 = 0.8, i.e. e^(10/T) = 8, T = 10 / ln 8 */
    enum { N = 100 };
    double logits[N * 3];
    training_label y[N];
    size_t idx[N];
    for (size_t i = 0; i < N; i++) {
        logits[3 * i] = 10, logits[3 * i + 1] = 0, logits[3 * i + 2] = 0;
        memset(&y[i], 0, sizeof y[i]);
        y[i].cls = i < 80 ? 0 : i < 90 ? 1 : 2;
        idx[i] = i;
    }
    CHECK_NEAR(training__fit_temperature(logits, y, idx, N), 10 / log(8.0), 1e-5);
    /* uninformative logits: T = 1 exactly */
    memset(logits, 0, sizeof logits);
    CHECK_NEAR(training__fit_temperature(logits, y, idx, N), 1.0, 0);
    CHECK_NEAR(training__fit_temperature(logits, y, idx, 0), 1.0, 0);
}

/* x in [-1,1]^2: LONG when x0*x1 > 0.05, SHORT when < -0.05, else NO_TRADE:
 * no linear model separates it, an MLP does. Returns validation accuracy. */
static double fit_xor(int n_hidden, const uint32_t *hidden, int32_t epochs)
{
    enum { N = 3000 };
    double *x = malloc(N * 2 * sizeof *x);
    training_label *y = calloc(N, sizeof *y);
    size_t *train = malloc(N * sizeof *train), *val = malloc(N * sizeof *val);
    util_rng g;
    util_rng_seed(&g, 1);
    size_t nt = 0, nv = 0;
    for (size_t i = 0; i < N; i++) {
        double a = 2 * util_rng_uniform(&g) - 1, b = 2 * util_rng_uniform(&g) - 1;
        x[2 * i] = a, x[2 * i + 1] = b;
        y[i].cls = a * b > 0.05    ? INFERENCE_LONG
                   : a * b < -0.05 ? INFERENCE_SHORT
                                   : INFERENCE_NO_TRADE;
        if (i < 2400)
            train[nt++] = i;
        else
            val[nv++] = i;
    }
    training__net net;
    util_rng_seed(&g, 2);
    double acc = -1;
    if (training__net_init(&net, 2, hidden, (size_t)n_hidden, &g) == 0) {
        double cw[3] = {1, 1, 1};
        training__fit_opts o = {
            .epochs = epochs, .batch = 64, .lr = 0.01, .l2 = 0, .patience = 50, .seed = 3};
        training__fit_out out;
        if (training__fit(&net, x, y, train, nt, val, nv, cw, &o, &out) == 0) {
            double scratch[256], z[3];
            size_t ok = 0;
            for (size_t k = 0; k < nv; k++) {
                training__net_logits(&net, x + 2 * val[k], scratch, z);
                int c = z[1] > z[0] ? 1 : 0;
                c = z[2] > z[c] ? 2 : c;
                ok += c == y[val[k]].cls;
            }
            acc = (double)ok / (double)nv;
        }
        training__net_cleanup(&net);
    }
    free(x);
    free(y);
    free(train);
    free(val);
    return acc;
}

TEST(test_mlp_learns_what_softmax_cannot)
{
    uint32_t h[2] = {16, 16};
    double mlp = fit_xor(2, h, 150), lin = fit_xor(0, NULL, 150);
    printf("  xor: mlp %.3f, softmax %.3f\n", mlp, lin);
    CHECK(mlp > 0.90);
    CHECK(lin < 0.70);
}

TEST(test_rng_stream)
{
    util_rng a, b;
    util_rng_seed(&a, 42);
    util_rng_seed(&b, 42);
    for (int i = 0; i < 1000; i++)
        CHECK(util_rng_next(&a) == util_rng_next(&b));
    util_rng_seed(&b, 43);
    CHECK(util_rng_next(&a) != util_rng_next(&b));
    double s = 0, s2 = 0;
    for (int i = 0; i < 20000; i++) {
        double v = training__rng_normal(&a);
        s += v;
        s2 += v * v;
    }
    CHECK(fabs(s / 20000) < 0.05);
    CHECK(fabs(s2 / 20000 - 1) < 0.05);
    size_t v[10];
    for (size_t i = 0; i < 10; i++)
        v[i] = i;
    training__rng_shuffle(&a, v, 10);
    size_t sum = 0;
    for (size_t i = 0; i < 10; i++)
        sum += v[i];
    CHECK_EQ_INT(sum, 45);
}

/* ===========================================================================
 * Dataset: parity with serving.
 */
TEST(test_dataset_matches_serving_call)
{
    size_t n = 1200, w = 200;
    features_candle *c = seeded("BTCUSDT", "15m", n, 11);
    CHECK(c != NULL);
    if (!c)
        return;
    size_t nd;
    const char *const *specs = features_default_specs(&nd);
    features_set *fs = NULL;
    CHECK_EQ_INT(features_set_new(specs, nd, &fs, NULL, 0), 0);
    inference_policy pol;
    training_policy_default(&pol);
    const features_candle *series[1] = {c};
    size_t lens[1] = {n};
    training_dataset ds;
    CHECK_EQ_INT(training_dataset_build(fs, w, &pol, series, lens, 1, NULL, NULL, NULL, &ds), 0);
    CHECK_EQ_INT(ds.n + ds.dropped_invalid, n - (w - 1) - pol.horizon);
    CHECK_EQ_INT(ds.d, nd);
    CHECK_EQ_INT(ds.index[0], w - 1);
    CHECK_EQ_INT(ds.index[ds.n - 1], n - 1 - pol.horizon);
    /* serving: the window ending at the sample candle, in its own buffer */
    features_candle *win = malloc(w * sizeof *win);
    double *vec = malloc(nd * sizeof *vec);
    size_t mismatches = 0, checked = 0;
    for (size_t k = 0; k < ds.n; k += 37) {
        size_t i = ds.index[k];
        memcpy(win, &c[i + 1 - w], w * sizeof *win);
        CHECK_EQ_INT(features_compute(fs, win, w, vec), 0);
        mismatches += memcmp(vec, ds.x + k * nd, nd * sizeof *vec) != 0;
        double atr;
        training_label l;
        CHECK_EQ_INT(features_atr_last(win, w, 14, &atr), 0);
        CHECK_EQ_INT(training_label_at(c, n, i, atr, &pol, &l), 0);
        CHECK(memcmp(&l, &ds.y[k], sizeof l) == 0);
        checked++;
    }
    /* the last sample too */
    size_t k = ds.n - 1, i = ds.index[k];
    memcpy(win, &c[i + 1 - w], w * sizeof *win);
    CHECK_EQ_INT(features_compute(fs, win, w, vec), 0);
    mismatches += memcmp(vec, ds.x + k * nd, nd * sizeof *vec) != 0;
    CHECK(checked > 20);
    CHECK_EQ_INT(mismatches, 0);
    free(win);
    free(vec);
    training_dataset_cleanup(&ds);

    /* errors */
    CHECK_EQ_INT(training_dataset_build(fs, 10, &pol, series, lens, 1, NULL, NULL, NULL, &ds),
                 PD_EINVAL); /* window below the features' minimum */
    size_t short_len[1] = {w + pol.horizon - 1};
    CHECK_EQ_INT(training_dataset_build(fs, w, &pol, series, short_len, 1, NULL, NULL, NULL, &ds),
                 PD_ENODATA);
    atomic_bool cancel = true;
    CHECK_EQ_INT(training_dataset_build(fs, w, &pol, series, lens, 1, &cancel, NULL, NULL, &ds),
                 PD_ECANCELED);
    features_set_free(fs);
    free(c);
}

/* ===========================================================================
 * Runs on candles in memory.
 */
TEST(test_seeded_model_beats_majority_baseline)
{
    size_t n = 30000;
    features_candle *c = seeded("BTCUSDT", "15m", n, 7);
    CHECK(c != NULL);
    if (!c)
        return;
    training_params p;
    params_for(&p, "BTCUSDT", "15m");
    p.publish = false;
    const features_candle *s[1] = {c};
    size_t l[1] = {n};
    training_result *r = calloc(1, sizeof *r);
    CHECK_EQ_INT(training_run_candles(&p, NULL, s, l, 1, r), 0);
    double ll = training_result_metric(r, "log_loss");
    double bll = training_result_metric(r, "baseline_log_loss");
    printf("  test accuracy %.4f vs baseline %.4f; log-loss %.4f vs prior %.4f (%zu test)\n",
           r->test_accuracy, r->baseline_accuracy, ll, bll, r->test);
    CHECK(r->test_accuracy > r->baseline_accuracy);
    CHECK(ll < bll);
    CHECK_EQ_INT(r->outcome, TRAINING_NOT_PUBLISHED);
    CHECK(r->train > r->val && r->val > 0 && r->test > 0);
    /* purge gaps: train + val + test + 2 gaps of one horizon = samples */
    CHECK_EQ_INT(r->train + r->val + r->test + 2 * 16, r->samples);
    CHECK(isfinite(training_result_metric(r, "brier")));
    CHECK(isfinite(training_result_metric(r, "calls")));
    CHECK(isfinite(training_result_metric(r, "recall_short")));
    free(r);
    free(c);
}

/* Trains a model of kind on n trending candles into models_dir. */
static int train_into(const char *models_dir, int kind, int32_t epochs, bool promote, uint64_t seed,
                      size_t n, training_result *r)
{
    features_candle *c = trending(n, 5, 3600);
    if (!c)
        return PD_ENOMEM;
    training_params p;
    params_for(&p, "ETHUSDT", "1h");
    p.kind = kind;
    p.epochs = epochs;
    p.seed = seed;
    p.promote_if_better = promote;
    /* these runs test determinism and promotion, not the baseline gate: a
     * model below its baselines (an untrained one) is published anyway */
    p.force = true;
    if (kind == TRAINING_MLP) {
        p.hidden[0] = 16, p.hidden[1] = 8;
        p.n_hidden = 2;
    }
    training_ctx ctx = {.models_dir = models_dir};
    const features_candle *s[1] = {c};
    size_t l[1] = {n};
    int rc = training_run_candles(&p, &ctx, s, l, 1, r);
    free(c);
    return rc;
}

TEST(test_published_version_verifies)
{
    char dir[600], vdir[700], path[800];
    tmpdir("publish", dir, sizeof dir);
    training_result *r = calloc(1, sizeof *r);
    CHECK_EQ_INT(train_into(dir, TRAINING_SOFTMAX, -1, false, 42, 6000, r), 0);
    CHECK_EQ_INT(r->outcome, TRAINING_PUBLISHED);
    CHECK_EQ_INT(r->version, 1);
    snprintf(vdir, sizeof vdir, "%s/ETHUSDT/1h/1", dir);
    char why[256] = "";
    CHECK_EQ_INT(registry_verify_dir(vdir, why, sizeof why), 0);
    if (why[0])
        printf("  verify: %s\n", why);

    snprintf(path, sizeof path, "%s/model.pb", vdir);
    Predictd__Model *m = NULL;
    CHECK_EQ_INT(registry_read_model(path, &m, why, sizeof why), 0);
    if (m) {
        CHECK_EQ_INT(m->kind, PREDICTD__MODEL_KIND__SOFTMAX);
        CHECK_EQ_INT(m->window, 200);
        CHECK_EQ_INT(m->n_features, 14);
        CHECK_EQ_INT(m->n_classes, 3);
        CHECK_EQ_STR(m->classes[0], "LONG");
        CHECK_EQ_INT(m->n_layers, 1);
        CHECK_EQ_INT(m->n_golden, 8);
        CHECK(m->temperature > 0);
        CHECK(m->policy && m->policy->n_tp_r == 3 && m->policy->horizon == 16);
        CHECK(m->policy && m->policy->n_eta_candles == 2 && m->policy->eta_candles[0] >= 1);
        CHECK(m->policy && m->policy->n_eta_candles_tp == 3);
        CHECK(m->meta != NULL);
        if (m->meta) {
            CHECK_EQ_INT(m->meta->version, 1);
            CHECK_EQ_INT(m->meta->trained_at, NOW);
            CHECK_EQ_STR(m->meta->symbol, "ETHUSDT");
            CHECK_EQ_STR(m->meta->timeframe, "1h");
            CHECK(strncmp(m->meta->trainer, "predictd-train ", 15) == 0);
            CHECK_EQ_INT(m->meta->seed, 42);
            CHECK_EQ_INT(m->meta->train_samples, r->train);
            CHECK_EQ_INT(m->meta->test_samples, r->test);
            CHECK(m->meta->data_from < m->meta->data_to);
            CHECK_NEAR(m->meta->test_accuracy, r->test_accuracy, 0);
            const char *need[] = {
                "accuracy",       "precision_long", "recall_short",      "brier",
                "hit_rate_calls", "calls",          "baseline_accuracy", "log_loss"};
            for (size_t k = 0; k < sizeof need / sizeof need[0]; k++) {
                bool found = false;
                for (size_t i = 0; i < m->meta->n_metrics; i++)
                    found |= strcmp(m->meta->metrics[i]->name, need[k]) == 0;
                if (!found)
                    UNIT_FAIL_("metric %s missing", need[k]);
            }
        }
        predictd__model__free_unpacked(m, NULL);
    }

    /* served through a registry, the golden inputs give the same numbers */
    registry *reg = NULL;
    CHECK_EQ_INT(registry_new(dir, &reg), 0);
    CHECK_EQ_INT(registry_scan(reg, "ETHUSDT", "1h"), 0);
    registry_version *v = NULL;
    CHECK_EQ_INT(registry_acquire(reg, "ETHUSDT", "1h", NULL, &v), 0);
    if (v) {
        CHECK_EQ_INT(registry_version_number(v), 1);
        CHECK_EQ_INT(registry_version_candles(v), 200);
        registry_release(v);
    }
    registry_free(reg);
    free(r);
}

/* Models that learned nothing are not published: four random walks
 * trained the default way publish at most one model (by chance) that
 * passes the baselines; the others are below_baseline or a degenerate fit,
 * each with its figures or reason. */
TEST(test_random_walks_do_not_publish)
{
    char dir[600];
    tmpdir("walks", dir, sizeof dir);
    training_result *r = calloc(1, sizeof *r);
    int published = 0, below = 0, degenerate = 0;
    for (uint64_t seed = 1; seed <= 4; seed++) {
        features_candle *c = random_walk(4000, 100 + seed, 3600, 4000);
        training_params p;
        params_for(&p, "WALKUSDT", "1h");
        training_ctx ctx = {.models_dir = dir};
        const features_candle *s[1] = {c};
        size_t l[1] = {4000};
        int rc = training_run_candles(&p, &ctx, s, l, 1, r);
        printf("  walk %" PRIu64 ": rc %d, %s\n", seed, rc, r->message);
        if (rc == 0 && r->outcome == TRAINING_PUBLISHED) {
            published++;
            CHECK_NEAR(training_result_metric(r, "beats_baseline"), 1, 0);
        } else if (rc == 0) {
            CHECK_EQ_INT(r->outcome, TRAINING_BELOW_BASELINE);
            CHECK(strstr(r->message, "below_baseline") != NULL);
            CHECK(strstr(r->message, "persistence") != NULL);
            CHECK_NEAR(training_result_metric(r, "beats_baseline"), 0, 0);
            below++;
        } else {
            CHECK_EQ_INT(rc, PD_EINVAL);
            CHECK(strstr(r->message, "degenerate fit") != NULL);
            degenerate++;
        }
        free(c);
    }
    printf("  published %d, below baseline %d, degenerate %d\n", published, below, degenerate);
    CHECK(published <= 1);
    free(r);
}

/* force publishes a model below its baselines, flagged in its metrics so
 * that serving answers NO_TRADE (below_baseline) with the figures. */
TEST(test_force_publishes_flagged)
{
    char dir[600];
    tmpdir("force", dir, sizeof dir);
    training_result *r = calloc(1, sizeof *r);
    features_candle *c = random_walk(4000, 7, 3600, 4000);
    training_params p;
    params_for(&p, "WALKUSDT", "1h");
    p.epochs = 0; /* the initial (prior) model: never better than the majority baseline */
    p.force = true;
    training_ctx ctx = {.models_dir = dir};
    const features_candle *s[1] = {c};
    size_t l[1] = {4000};
    CHECK_EQ_INT(training_run_candles(&p, &ctx, s, l, 1, r), 0);
    CHECK_EQ_INT(r->outcome, TRAINING_PUBLISHED);
    CHECK_NEAR(training_result_metric(r, "beats_baseline"), 0, 0);
    CHECK(isfinite(training_result_metric(r, "persistence_log_loss")));
    CHECK(isfinite(training_result_metric(r, "bt_trades")));
    registry *reg = NULL;
    CHECK_EQ_INT(registry_new(dir, &reg), 0);
    CHECK_EQ_INT(registry_scan(reg, "WALKUSDT", "1h"), 0);
    registry_version *v = NULL;
    CHECK_EQ_INT(registry_acquire(reg, "WALKUSDT", "1h", NULL, &v), 0);
    if (v) {
        const registry_meta *m = registry_version_meta(v);
        CHECK_NEAR(registry_meta_metric(m, "beats_baseline"), 0, 0);
        CHECK(isfinite(registry_meta_metric(m, "baseline_log_loss")));
        CHECK(isnan(registry_meta_metric(m, "no_such_metric")));
        registry_release(v);
    }
    registry_free(reg);
    /* without force the same run is refused */
    p.force = false;
    CHECK_EQ_INT(training_run_candles(&p, &ctx, s, l, 1, r), 0);
    CHECK_EQ_INT(r->outcome, TRAINING_BELOW_BASELINE);
    CHECK_EQ_INT(r->version, 0);
    free(c);
    free(r);
}

/* A validation window of one class would calibrate to certainty: it fails
 * training with a clear message. */
TEST(test_one_class_validation_fails)
{
    char dir[600];
    tmpdir("oneclass", dir, sizeof dir);
    training_result *r = calloc(1, sizeof *r);
    /* the walk turns into a steady climb before the validation slice */
    features_candle *c = random_walk(4000, 9, 3600, 2600);
    training_params p;
    params_for(&p, "CLIMBUSDT", "1h");
    training_ctx ctx = {.models_dir = dir};
    const features_candle *s[1] = {c};
    size_t l[1] = {4000};
    CHECK_EQ_INT(training_run_candles(&p, &ctx, s, l, 1, r), PD_EINVAL);
    printf("  %s\n", r->message);
    CHECK(strstr(r->message, "degenerate fit: the validation window holds one class") != NULL);
    CHECK_EQ_INT(r->version, 0);
    free(c);
    free(r);
}

TEST(test_same_seed_same_bytes)
{
    char a[600], b[600], pa[800], pb[800];
    training_result *r = calloc(1, sizeof *r);
    for (int kind = TRAINING_SOFTMAX; kind <= TRAINING_MLP; kind++) {
        tmpdir("det_a", a, sizeof a);
        tmpdir("det_b", b, sizeof b);
        int32_t epochs = kind == TRAINING_MLP ? 8 : -1;
        CHECK_EQ_INT(train_into(a, kind, epochs, false, 99, 4000, r), 0);
        CHECK_EQ_INT(train_into(b, kind, epochs, false, 99, 4000, r), 0);
        const char *files[] = {"model.pb", "scaler.pb", "MANIFEST"};
        for (size_t i = 0; i < 3; i++) {
            snprintf(pa, sizeof pa, "%s/ETHUSDT/1h/1/%s", a, files[i]);
            snprintf(pb, sizeof pb, "%s/ETHUSDT/1h/1/%s", b, files[i]);
            if (!same_file(pa, pb))
                UNIT_FAIL_("kind %d: %s differs between runs with one seed", kind, files[i]);
        }
        /* another seed gives another model (shuffle order, MLP init) */
        tmpdir("det_b", b, sizeof b);
        CHECK_EQ_INT(train_into(b, kind, epochs, false, 100, 4000, r), 0);
        snprintf(pa, sizeof pa, "%s/ETHUSDT/1h/1/model.pb", a);
        snprintf(pb, sizeof pb, "%s/ETHUSDT/1h/1/model.pb", b);
        CHECK(!same_file(pa, pb));
    }
    free(r);
}

TEST(test_promotion_rule)
{
    char dir[600], path[800];
    tmpdir("promote", dir, sizeof dir);
    training_result *r = calloc(1, sizeof *r);
    /* v1: an untrained softmax (after the prior correction: the train
     * slice's class frequencies, whatever the features say) */
    CHECK_EQ_INT(train_into(dir, TRAINING_SOFTMAX, 0, false, 1, 6000, r), 0);
    CHECK_EQ_INT(r->outcome, TRAINING_PUBLISHED);
    CHECK_EQ_INT(r->version, 1);
    CHECK_EQ_INT(r->epochs_run, 0);

    /* a trained model beats it: v2 */
    CHECK_EQ_INT(train_into(dir, TRAINING_SOFTMAX, -1, true, 1, 6000, r), 0);
    printf("  trained vs untrained: %.5f vs %.5f on %zu -> %s\n", r->new_log_loss, r->old_log_loss,
           r->compared, r->message);
    CHECK_EQ_INT(r->outcome, TRAINING_PUBLISHED);
    CHECK_EQ_INT(r->version, 2);
    CHECK_EQ_INT(r->old_version, 1);
    CHECK(r->compared == r->test);
    CHECK(r->new_log_loss < r->old_log_loss);

    /* a deliberately worse one (0 epochs) is not promoted: no v3 */
    CHECK_EQ_INT(train_into(dir, TRAINING_SOFTMAX, 0, true, 1, 6000, r), 0);
    printf("  untrained vs trained: %.5f vs %.5f -> %s\n", r->new_log_loss, r->old_log_loss,
           r->message);
    CHECK_EQ_INT(r->outcome, TRAINING_REJECTED);
    CHECK_EQ_INT(r->version, 0);
    CHECK_EQ_INT(r->old_version, 2);
    CHECK(strstr(r->message, "not promoted") != NULL);
    snprintf(path, sizeof path, "%s/ETHUSDT/1h/3", dir);
    CHECK(!exists(path));

    /* an MLP whose random init is never trained is worse too */
    CHECK_EQ_INT(train_into(dir, TRAINING_MLP, 0, true, 1, 6000, r), 0);
    CHECK_EQ_INT(r->outcome, TRAINING_REJECTED);
    CHECK(!exists(path));

    /* a tie keeps the serving version: the very same model again */
    CHECK_EQ_INT(train_into(dir, TRAINING_SOFTMAX, -1, true, 1, 6000, r), 0);
    CHECK_NEAR(r->new_log_loss, r->old_log_loss, 0);
    CHECK_EQ_INT(r->outcome, TRAINING_REJECTED);
    CHECK(!exists(path));
    free(r);
}

TEST(test_promotion_against_default_fallback)
{
    char dir[600], path[800];
    tmpdir("promote_default", dir, sizeof dir);
    training_result *r = calloc(1, sizeof *r);
    /* a trained _default/1h serves ETHUSDT by fallback */
    features_candle *c = trending(6000, 5, 3600);
    training_params p;
    params_for(&p, "ETHUSDT", "1h");
    snprintf(p.target, sizeof p.target, "_default");
    p.force = true;
    training_ctx ctx = {.models_dir = dir};
    const features_candle *s[1] = {c};
    size_t l[1] = {6000};
    CHECK_EQ_INT(training_run_candles(&p, &ctx, s, l, 1, r), 0);
    CHECK_EQ_INT(r->outcome, TRAINING_PUBLISHED);
    free(c);
    /* an untrained ETHUSDT model is compared with it and refused */
    CHECK_EQ_INT(train_into(dir, TRAINING_SOFTMAX, 0, true, 1, 6000, r), 0);
    CHECK_EQ_INT(r->outcome, TRAINING_REJECTED);
    CHECK(strstr(r->message, "_default") != NULL);
    snprintf(path, sizeof path, "%s/ETHUSDT", dir);
    CHECK(!exists(path));
    free(r);
}

TEST(test_run_errors)
{
    char dir[600];
    tmpdir("errors", dir, sizeof dir);
    features_candle *c = seeded("BTCUSDT", "15m", 3000, 3);
    training_params p;
    params_for(&p, "BTCUSDT", "15m");
    training_ctx ctx = {.models_dir = dir};
    const features_candle *s[1] = {c};
    training_result *r = calloc(1, sizeof *r);

    size_t few[1] = {300}; /* 85 samples: too few for three slices */
    CHECK_EQ_INT(training_run_candles(&p, &ctx, s, few, 1, r), PD_ENODATA);
    CHECK(strstr(r->message, "too few samples") != NULL);
    size_t none[1] = {210};
    CHECK_EQ_INT(training_run_candles(&p, &ctx, s, none, 1, r), PD_ENODATA);
    CHECK(strstr(r->message, "window + horizon") != NULL);

    size_t l[1] = {3000};
    CHECK_EQ_INT(training_run_candles(&p, &ctx, s, l, 0, r), PD_EINVAL); /* 0 series for 1 */
    training_ctx nodir = {0};
    CHECK_EQ_INT(training_run_candles(&p, &nodir, s, l, 1, r), PD_EINVAL);
    CHECK(strstr(r->message, "models directory") != NULL);
    training_params bad = p;
    bad.window = 5;
    CHECK_EQ_INT(training_run_candles(&bad, &ctx, s, l, 1, r), PD_EINVAL);
    CHECK(r->message[0] != '\0');

    atomic_bool cancel = true;
    training_ctx cctx = {.models_dir = dir, .cancel = &cancel};
    CHECK_EQ_INT(training_run_candles(&p, &cctx, s, l, 1, r), PD_ECANCELED);
    char path[700];
    snprintf(path, sizeof path, "%s/BTCUSDT", dir);
    CHECK(!exists(path)); /* nothing published by failed runs */

    /* publishing into an unwritable place */
    training_ctx badctx = {.models_dir = "/proc/predictd-no-such-dir"};
    CHECK(training_run_candles(&p, &badctx, s, l, 1, r) != 0);
    free(r);
    free(c);
}

TEST(test_pooled_series)
{
    char dir[600], path[800];
    tmpdir("pooled", dir, sizeof dir);
    features_candle *a = seeded("BTCUSDT", "4h", 2500, 1), *b = seeded("ETHUSDT", "4h", 2000, 2);
    training_params p;
    params_for(&p, "BTCUSDT", "4h");
    training_params_set(&p, "symbols", "BTCUSDT,ETHUSDT", NULL, 0);
    training_ctx ctx = {.models_dir = dir};
    const features_candle *s[2] = {a, b};
    size_t l[2] = {2500, 2000};
    training_result *r = calloc(1, sizeof *r);
    CHECK_EQ_INT(training_run_candles(&p, &ctx, s, l, 2, r), 0);
    CHECK_EQ_STR(r->target, "_default");
    CHECK_EQ_INT(r->samples, 2500 + 2000 - 2 * (199 + 16));
    CHECK_EQ_INT(r->train + r->val + r->test + 4 * 16, r->samples);
    snprintf(path, sizeof path, "%s/_default/4h/1/model.pb", dir);
    Predictd__Model *m = NULL;
    char why[200];
    CHECK_EQ_INT(registry_read_model(path, &m, why, sizeof why), 0);
    if (m) {
        CHECK_EQ_STR(m->meta->symbol, "_default");
        CHECK_EQ_INT(m->meta->n_symbols, 2);
        CHECK_EQ_STR(m->meta->symbols[1], "ETHUSDT");
        predictd__model__free_unpacked(m, NULL);
    }
    free(r);
    free(a);
    free(b);
}

/* ===========================================================================
 * PostgreSQL: the real loaders, and background jobs.
 */
static bool db_ready(void)
{
    const char *url = getenv("PREDICTD_TEST_DATABASE_URL");
    const char *root = getenv("PREDICTD_ROOT");
    char dir[600];
    snprintf(dir, sizeof dir, "%s/db", root ? root : ".");
    return store_init(url, NULL, false) == 0 && store_migrate(dir) == 0;
}

static int upsert_seeded(const char *symbol, const char *tf, size_t n, uint64_t seed)
{
    features_candle *c = seeded(symbol, tf, n, seed);
    if (!c)
        return PD_ENOMEM;
    int rc = store_upsert_candles(symbol, tf, c, n);
    free(c);
    return rc;
}

TEST(test_db_vectors_bit_identical_to_serving)
{
    UNIT_NEED_ENV("PREDICTD_TEST_DATABASE_URL");
    CHECK(db_ready());
    CHECK_EQ_INT(upsert_seeded("SOLUSDT", "15m", 1500, 21), 0);
    /* training's path: the range loader */
    features_candle *c = NULL;
    size_t n = 0;
    CHECK_EQ_INT(store_load_range("SOLUSDT", "15m", 0, 0, NOW, &c, &n), 0);
    CHECK_EQ_INT(n, 1500);
    size_t nd;
    const char *const *specs = features_default_specs(&nd);
    features_set *fs = NULL;
    CHECK_EQ_INT(features_set_new(specs, nd, &fs, NULL, 0), 0);
    inference_policy pol;
    training_policy_default(&pol);
    const features_candle *series[1] = {c};
    training_dataset ds;
    CHECK_EQ_INT(training_dataset_build(fs, 200, &pol, series, &n, 1, NULL, NULL, NULL, &ds), 0);
    /* serving's path: the window loader at the moment the sample candle had
     * just closed, then the same call; for the last samples and a spread */
    size_t checked = 0, mismatches = 0;
    double *vec = malloc(nd * sizeof *vec);
    for (size_t k = ds.n; k-- > 0 && checked<40; k = k> 30 ? k - 30 : 0) {
        int64_t close_t = c[ds.index[k]].t + util_tf_seconds("15m");
        features_candle *w = NULL;
        size_t wn = 0;
        store_window_info info;
        CHECK_EQ_INT(store_load_window("SOLUSDT", "15m", close_t, 200, &w, &wn, &info), 0);
        CHECK_EQ_INT(wn, 200);
        CHECK_EQ_INT(info.last_open, c[ds.index[k]].t);
        CHECK_EQ_INT(features_compute(fs, w, wn, vec), 0);
        mismatches += memcmp(vec, ds.x + k * nd, nd * sizeof *vec) != 0;
        checked++;
        free(w);
        if (k == 0)
            break;
    }
    CHECK(checked >= 30);
    CHECK_EQ_INT(mismatches, 0);
    free(vec);
    training_dataset_cleanup(&ds);
    features_set_free(fs);
    free(c);
}

TEST(test_db_training_run)
{
    UNIT_NEED_ENV("PREDICTD_TEST_DATABASE_URL");
    CHECK(db_ready());
    CHECK_EQ_INT(upsert_seeded("ADAUSDT", "1h", 3000, 4), 0);
    char dir[600];
    tmpdir("db_run", dir, sizeof dir);
    training_params p;
    params_for(&p, "ADAUSDT", "1h");
    p.force = true; /* seeded candles are a random walk: past the gate */
    training_ctx ctx = {.models_dir = dir};
    training_result *r = calloc(1, sizeof *r);
    CHECK_EQ_INT(training_run(&p, &ctx, r), 0);
    CHECK_EQ_INT(r->version, 1);
    char vdir[700], why[200];
    snprintf(vdir, sizeof vdir, "%s/ADAUSDT/1h/1", dir);
    CHECK_EQ_INT(registry_verify_dir(vdir, why, sizeof why), 0);
    /* a range restricts the candles */
    training_params q = p;
    q.from = NOW - 1500 * 3600;
    CHECK_EQ_INT(training_run(&q, &ctx, r), 0);
    CHECK(r->data_from >= q.from);
    CHECK(r->samples < 1500);
    /* a symbol without candles */
    params_for(&p, "NOPEUSDT", "1h");
    p.force = true; /* seeded candles are a random walk: past the gate */
    CHECK_EQ_INT(training_run(&p, &ctx, r), PD_EUNKNOWNSYM);
    CHECK(strstr(r->message, "NOPEUSDT") != NULL);
    free(r);
}

static training_job_info wait_job(training_jobs *j, int64_t id,
                                  bool (*until)(const training_job_info *))
{
    training_job_info info;
    memset(&info, 0, sizeof info);
    for (int i = 0; i < 6000; i++) { /* generous: sanitizer builds are slow */
        if (training_jobs_get(j, id, &info) == 0 && until(&info))
            break;
        usleep(50000);
    }
    return info;
}

static bool is_final(const training_job_info *i)
{
    return training_job_state_final(i->state);
}

static bool is_fitting(const training_job_info *i)
{
    return i->state == TRAINING_JOB_RUNNING && strcmp(i->stage, "fit") == 0;
}

/* A thread of this process at nice 10 bound to one CPU (the worker). */
static bool confined_worker_exists(void)
{
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return false;
    bool found = false;
    struct dirent *e;
    while (!found && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char path[300], *text = NULL;
        size_t len = 0;
        snprintf(path, sizeof path, "/proc/self/task/%s/stat", e->d_name);
        if (util_read_file(path, 4096, &text, &len) != 0)
            continue;
        const char *p = strrchr(text, ')');
        int nice = 0;
        for (int field = 3; p && field <= 19; field++) {
            p = strchr(p + 1, ' ');
            if (p && field == 19)
                nice = atoi(p + 1);
        }
        free(text);
        if (nice != 10)
            continue;
        snprintf(path, sizeof path, "/proc/self/task/%s/status", e->d_name);
        if (util_read_file(path, 1 << 16, &text, &len) != 0)
            continue;
        const char *c = strstr(text, "Cpus_allowed_list:");
        if (c) {
            c += strlen("Cpus_allowed_list:");
            while (*c == ' ' || *c == '\t')
                c++;
            size_t span = strcspn(c, "\n");
            found = memchr(c, ',', span) == NULL && memchr(c, '-', span) == NULL;
        }
        free(text);
    }
    closedir(d);
    return found;
}

static int jobs_start(const char *dir, training_jobs **j)
{
    training_jobs_config cfg = {
        .models_dir = dir,
        .database_url = getenv("PREDICTD_TEST_DATABASE_URL"),
    };
    return training_jobs_start(&cfg, j);
}

TEST(test_jobs_succeed_reject_and_persist)
{
    UNIT_NEED_ENV("PREDICTD_TEST_DATABASE_URL");
    CHECK(db_ready());
    CHECK_EQ_INT(upsert_seeded("XRPUSDT", "1h", 3000, 8), 0);
    char dir[600];
    tmpdir("jobs", dir, sizeof dir);
    training_jobs *j = NULL;
    CHECK_EQ_INT(jobs_start(dir, &j), 0);
    if (!j)
        return;
    training_params p;
    params_for(&p, "XRPUSDT", "1h");
    p.force = true; /* seeded candles are a random walk: past the gate */
    p.promote_if_better = true;
    int64_t id1 = 0, id2 = 0;
    char why[200];
    CHECK_EQ_INT(training_jobs_submit(j, &p, &id1, why, sizeof why), 0);
    training_job_info a = wait_job(j, id1, is_final);
    CHECK_EQ_INT(a.state, TRAINING_JOB_SUCCEEDED);
    CHECK_EQ_INT(a.version, 1);
    CHECK_NEAR(a.progress, 1, 0);
    CHECK(a.started_at >= a.created_at && a.finished_at >= a.started_at);
    CHECK(isfinite(a.test_accuracy) && a.n_metrics > 10);

    /* the same model again is not better: rejected, nothing published */
    CHECK_EQ_INT(training_jobs_submit(j, &p, &id2, why, sizeof why), 0);
    training_job_info b = wait_job(j, id2, is_final);
    CHECK_EQ_INT(b.state, TRAINING_JOB_REJECTED);
    CHECK_EQ_INT(b.version, 0);
    CHECK(strstr(b.error, "not promoted") != NULL);

    /* invalid parameters never queue */
    training_params bad = p;
    bad.window = 3;
    int64_t id3 = 0;
    CHECK_EQ_INT(training_jobs_submit(j, &bad, &id3, why, sizeof why), PD_EINVAL);
    CHECK_EQ_INT(id3, 0);
    CHECK_EQ_INT(training_jobs_cancel(j, id1), PD_EINVAL); /* already finished */
    CHECK_EQ_INT(training_jobs_cancel(j, 987654), PD_ENOTFOUND);

    training_job_info *list = NULL;
    size_t n = 0;
    CHECK_EQ_INT(training_jobs_list(j, 10, &list, &n), 0);
    CHECK(n >= 2);
    if (n >= 2) {
        CHECK_EQ_INT(list[0].id, id2); /* newest first */
        CHECK_EQ_INT(list[1].id, id1);
    }
    free(list);
    util_buf jb;
    util_buf_init(&jb);
    training_job_json(&a, &jb);
    json_t *js = json_loads(jb.data, 0, NULL);
    CHECK(js != NULL);
    if (js) {
        CHECK_EQ_STR(json_string_value(json_object_get(js, "state")), "succeeded");
        CHECK_EQ_INT(json_integer_value(json_object_get(js, "version")), 1);
        CHECK(json_is_array(json_object_get(json_object_get(js, "params"), "tp_r")));
        CHECK(json_is_number(json_object_get(json_object_get(js, "metrics"), "accuracy")));
        json_decref(js);
    }
    util_buf_cleanup(&jb);
    training_jobs_stop(j);

    /* a new process reads the history back, rejection included */
    CHECK_EQ_INT(jobs_start(dir, &j), 0);
    if (!j)
        return;
    training_job_info a2, b2;
    CHECK_EQ_INT(training_jobs_get(j, id1, &a2), 0);
    CHECK_EQ_INT(a2.state, TRAINING_JOB_SUCCEEDED);
    CHECK_EQ_INT(a2.version, 1);
    CHECK_NEAR(a2.test_accuracy, a.test_accuracy, 1e-12);
    CHECK_EQ_INT(training_jobs_get(j, id2, &b2), 0);
    CHECK_EQ_INT(b2.state, TRAINING_JOB_REJECTED);
    CHECK_EQ_STR(b2.error, b.error);
    CHECK(strstr(b2.params_json, "XRPUSDT") != NULL);
    training_jobs_stop(j);
}

TEST(test_jobs_cancel_running_and_queued)
{
    UNIT_NEED_ENV("PREDICTD_TEST_DATABASE_URL");
    CHECK(db_ready());
    CHECK_EQ_INT(upsert_seeded("DOTUSDT", "1h", 2000, 9), 0);
    CHECK_EQ_INT(upsert_seeded("LTCUSDT", "1h", 2000, 10), 0);
    char dir[600];
    tmpdir("jobs_cancel", dir, sizeof dir);
    training_jobs *j = NULL;
    CHECK_EQ_INT(jobs_start(dir, &j), 0);
    if (!j)
        return;
    /* a job that would run for hours */
    training_params p;
    params_for(&p, "DOTUSDT", "1h");
    p.force = true; /* seeded candles are a random walk: past the gate */
    training_params_set(&p, "kind", "mlp", NULL, 0);
    training_params_set(&p, "hidden", "256,256", NULL, 0);
    training_params_set(&p, "epochs", "100000", NULL, 0);
    training_params_set(&p, "patience", "100000", NULL, 0);
    int64_t id = 0, id_q = 0, id_dup = 0;
    char why[200];
    CHECK_EQ_INT(training_jobs_submit(j, &p, &id, why, sizeof why), 0);
    /* the same series again: busy */
    CHECK_EQ_INT(training_jobs_submit(j, &p, &id_dup, why, sizeof why), PD_EBUSY);
    /* another series queues behind it */
    training_params q;
    params_for(&q, "LTCUSDT", "1h");
    q.force = true; /* seeded candles are a random walk: past the gate */
    CHECK_EQ_INT(training_jobs_submit(j, &q, &id_q, why, sizeof why), 0);

    training_job_info r = wait_job(j, id, is_fitting);
    CHECK_EQ_INT(r.state, TRAINING_JOB_RUNNING);
    CHECK(confined_worker_exists()); /* nice 10, one CPU */
    training_jobs_stats st;
    training_jobs_stats_get(j, &st);
    CHECK(st.running);
    CHECK_EQ_INT(st.queued, 1);
    training_job_info qi;
    CHECK_EQ_INT(training_jobs_get(j, id_q, &qi), 0);
    CHECK_EQ_INT(qi.state, TRAINING_JOB_QUEUED);
    /* cancel the queued one: at once */
    CHECK_EQ_INT(training_jobs_cancel(j, id_q), 0);
    CHECK_EQ_INT(training_jobs_get(j, id_q, &qi), 0);
    CHECK_EQ_INT(qi.state, TRAINING_JOB_CANCELED);
    /* cancel the running one: it stops at its next batch */
    CHECK_EQ_INT(training_jobs_cancel(j, id), 0);
    r = wait_job(j, id, is_final);
    CHECK_EQ_INT(r.state, TRAINING_JOB_CANCELED);
    CHECK_EQ_INT(r.version, 0);
    char path[700];
    snprintf(path, sizeof path, "%s/DOTUSDT", dir);
    CHECK(!exists(path));
    snprintf(path, sizeof path, "%s/LTCUSDT", dir);
    CHECK(!exists(path));
    /* the series is free again */
    CHECK_EQ_INT(training_jobs_submit(j, &q, &id_q, why, sizeof why), 0);
    qi = wait_job(j, id_q, is_final);
    CHECK_EQ_INT(qi.state, TRAINING_JOB_SUCCEEDED);
    training_jobs_stop(j);

    /* the records say so too */
    store_jobs_db *db = NULL;
    CHECK_EQ_INT(store_jobs_open(getenv("PREDICTD_TEST_DATABASE_URL"), &db), 0);
    store_job_row row;
    CHECK_EQ_INT(store_jobs_get(db, id, &row), 0);
    CHECK_EQ_STR(row.state, "canceled");
    CHECK(row.finished_at > 0);
    store_job_row_cleanup(&row);
    store_jobs_close(db);
}

TEST(test_jobs_interrupted_by_restart)
{
    UNIT_NEED_ENV("PREDICTD_TEST_DATABASE_URL");
    CHECK(db_ready());
    store_jobs_db *db = NULL;
    CHECK_EQ_INT(store_jobs_open(getenv("PREDICTD_TEST_DATABASE_URL"), &db), 0);
    int64_t id = 0, created = 0;
    CHECK_EQ_INT(
        store_jobs_insert(db, "BNBUSDT", "4h", "{\"symbols\":[\"BNBUSDT\"]}", &id, &created), 0);
    store_job_row row;
    memset(&row, 0, sizeof row);
    row.id = id;
    snprintf(row.state, sizeof row.state, "running");
    row.progress = 0.5;
    row.started_at = created;
    CHECK_EQ_INT(store_jobs_update(db, &row), 0);
    /* the table allows one active job per series */
    int64_t id2 = 0;
    CHECK_EQ_INT(store_jobs_insert(db, "BNBUSDT", "4h", "{}", &id2, NULL), PD_EBUSY);
    row.id = 99999999;
    CHECK_EQ_INT(store_jobs_update(db, &row), PD_ENOTFOUND);
    char dir[600];
    tmpdir("jobs_restart", dir, sizeof dir);
    training_jobs *j = NULL;
    CHECK_EQ_INT(jobs_start(dir, &j), 0);
    training_job_info info;
    CHECK_EQ_INT(training_jobs_get(j, id, &info), 0);
    CHECK_EQ_INT(info.state, TRAINING_JOB_FAILED);
    CHECK(strstr(info.error, "interrupted") != NULL);
    training_jobs_stop(j);
    store_job_row back;
    CHECK_EQ_INT(store_jobs_get(db, id, &back), 0);
    CHECK_EQ_STR(back.state, "failed");
    CHECK_NEAR(back.progress, 0.5, 1e-9);
    store_job_row_cleanup(&back);
    store_jobs_close(db);
}

TEST(test_jobs_scheduled_retrain)
{
    UNIT_NEED_ENV("PREDICTD_TEST_DATABASE_URL");
    CHECK(db_ready());
    CHECK_EQ_INT(upsert_seeded("AVAXUSDT", "1h", 2500, 12), 0);
    char dir[600];
    tmpdir("jobs_schedule", dir, sizeof dir);
    training_params p;
    params_for(&p, "AVAXUSDT", "1h");
    p.force = true; /* seeded candles are a random walk: past the gate */
    p.seed = 7;
    training_params_set(&p, "tp_r", "1,1.5,2", NULL, 0);
    training_ctx ctx = {.models_dir = dir};
    training_result *r = calloc(1, sizeof *r);
    CHECK_EQ_INT(training_run(&p, &ctx, r), 0);
    CHECK_EQ_INT(r->version, 1);
    free(r);

    registry *reg = NULL;
    CHECK_EQ_INT(registry_new(dir, &reg), 0);
    CHECK_EQ_INT(registry_scan(reg, NULL, NULL), 0);
    training_jobs_config cfg = {
        .models_dir = dir,
        .reg = reg,
        .database_url = getenv("PREDICTD_TEST_DATABASE_URL"),
        .retrain_interval_s = 1,
    };
    training_jobs *j = NULL;
    CHECK_EQ_INT(training_jobs_start(&cfg, &j), 0);
    if (!j) {
        registry_free(reg);
        return;
    }
    /* the schedule retrains the serving series with the parameters its
     * model was trained with: the same data gives the same model, which is
     * not better (a tie keeps the serving version) */
    training_job_info found;
    memset(&found, 0, sizeof found);
    for (int i = 0; i < 6000 && !found.id; i++) {
        training_job_info *list = NULL;
        size_t n = 0;
        if (training_jobs_list(j, 0, &list, &n) == 0) {
            for (size_t k = n; k-- > 0;)
                if (list[k].scheduled && !strcmp(list[k].symbol, "AVAXUSDT") &&
                    training_job_state_final(list[k].state)) {
                    found = list[k];
                    break;
                }
            free(list);
        }
        usleep(50000);
    }
    CHECK(found.id > 0);
    /* the schedule does not force: on the seeded candles the retrained
     * model meets the degenerate-fit check or the baseline gate before the
     * promotion rule */
    CHECK(found.state == TRAINING_JOB_BELOW_BASELINE ||
          (found.state == TRAINING_JOB_FAILED && strstr(found.error, "degenerate fit")));
    CHECK(strstr(found.params_json, "\"tp_r\":[1,1.5,2]") != NULL);
    CHECK(strstr(found.params_json, "\"seed\":7") != NULL);
    CHECK(strstr(found.params_json, "\"promote_if_better\":true") != NULL);
    training_jobs_stop(j);
    registry_free(reg);
}

/* The jobs need the database (the training_jobs table is the queue and the
 * history); without one they refuse to start, and a database that does not
 * answer fails the start with PD_EDB. */
TEST(test_jobs_without_database)
{
    char dir[600];
    tmpdir("jobs_nodb", dir, sizeof dir);
    training_jobs_config cfg = {.models_dir = dir};
    training_jobs *j = NULL;
    CHECK_EQ_INT(training_jobs_start(&cfg, &j), PD_EINVAL);
    CHECK(j == NULL);
    cfg.database_url = "postgresql://postgres@127.0.0.1:1/none?connect_timeout=2";
    CHECK_EQ_INT(training_jobs_start(&cfg, &j), PD_EDB);
    CHECK(j == NULL);
    training_jobs_stop(NULL);
    CHECK_EQ_INT(training_jobs_start(NULL, &j), PD_EINVAL);
}

/* Stopping the service with a job running and two queued: the running one
 * is cancelled, the queued ones are marked cancelled with the reason, and a
 * new process reads all three back that way. Also the arguments the jobs
 * API refuses. */
TEST(test_jobs_stop_with_a_queue)
{
    training_jobs *bad = NULL;
    CHECK_EQ_INT(training_jobs_start(NULL, &bad), PD_EINVAL);
    training_jobs_config nodir = {.models_dir = NULL, .database_url = "postgresql://127.0.0.1:1/x"};
    CHECK_EQ_INT(training_jobs_start(&nodir, &bad), PD_EINVAL);
    training_jobs_config neg = {.models_dir = "/tmp",
                                .database_url = "postgresql://127.0.0.1:1/x",
                                .retrain_interval_s = -1};
    CHECK_EQ_INT(training_jobs_start(&neg, &bad), PD_EINVAL);
    CHECK(bad == NULL);
    CHECK_EQ_STR(training_job_state_name((training_job_state)99), "unknown");
    CHECK(!training_job_state_final(TRAINING_JOB_QUEUED));
    CHECK(training_job_state_final(TRAINING_JOB_CANCELED));

    UNIT_NEED_ENV("PREDICTD_TEST_DATABASE_URL");
    CHECK(db_ready());
    CHECK_EQ_INT(upsert_seeded("ADAUSDT", "1h", 2000, 11), 0);
    char dir[600];
    tmpdir("jobs_stop", dir, sizeof dir);
    training_jobs *j = NULL;
    CHECK_EQ_INT(jobs_start(dir, &j), 0);
    if (!j)
        return;
    training_params p;
    params_for(&p, "ADAUSDT", "1h");
    p.force = true;
    training_params_set(&p, "kind", "mlp", NULL, 0);
    training_params_set(&p, "hidden", "256,256", NULL, 0);
    training_params_set(&p, "epochs", "100000", NULL, 0);
    training_params_set(&p, "patience", "100000", NULL, 0);
    int64_t id = 0, q1 = 0, q2 = 0;
    char why[200];
    CHECK_EQ_INT(training_jobs_submit(j, &p, &id, why, sizeof why), 0);
    training_params q;
    params_for(&q, "ADAUSDT", "15m");
    CHECK_EQ_INT(training_jobs_submit(j, &q, &q1, why, sizeof why), 0);
    params_for(&q, "ADAUSDT", "4h");
    CHECK_EQ_INT(training_jobs_submit(j, &q, &q2, why, sizeof why), 0);
    (void)wait_job(j, id, is_fitting);
    CHECK_EQ_INT(training_jobs_get(NULL, id, NULL), PD_EINVAL);
    CHECK_EQ_INT(training_jobs_cancel(NULL, id), PD_EINVAL);
    training_jobs_stop(j);

    CHECK_EQ_INT(jobs_start(dir, &j), 0);
    if (!j)
        return;
    /* With a database the queue is shared by the replicas: a stopping one
     * hands its running job back and leaves the queued ones queued, so the
     * next process (here the same directory again) finds all three unfinished,
     * none failed or cancelled by the stop. */
    training_job_info a, b, c;
    CHECK_EQ_INT(training_jobs_get(j, id, &a), 0);
    CHECK(a.state == TRAINING_JOB_QUEUED || a.state == TRAINING_JOB_RUNNING);
    CHECK_EQ_INT(training_jobs_get(j, q1, &b), 0);
    CHECK(b.state == TRAINING_JOB_QUEUED || b.state == TRAINING_JOB_RUNNING);
    CHECK_EQ_STR(b.error, "");
    CHECK_EQ_INT(training_jobs_get(j, q2, &c), 0);
    CHECK(c.state == TRAINING_JOB_QUEUED || c.state == TRAINING_JOB_RUNNING);
    CHECK_EQ_INT(training_jobs_get(j, 987654321, &c), PD_ENOTFOUND);
    /* ended now (cancelled through this process), so no later test inherits them */
    int64_t ids[3] = {id, q1, q2};
    for (int k = 0; k < 3; k++) {
        (void)training_jobs_cancel(j, ids[k]); /* refused when it already ended */
        training_job_info f;
        memset(&f, 0, sizeof f);
        for (int i = 0; i < 600 && !training_job_state_final(f.state); i++) {
            if (training_jobs_get(j, ids[k], &f) != 0)
                break;
            if (!training_job_state_final(f.state))
                usleep(50000);
        }
        /* cancelled, or already finished by the worker that claimed it */
        CHECK(training_job_state_final(f.state));
    }
    training_jobs_stop(j);
    training_jobs_stop(NULL);
}

/* The exporter writes what is known about the time to a target and
 * leaves the rest out: no side ever reached TP1 in the training slice (both
 * ETAs NaN) and no per-level figures (none given, or all NaN) leave the
 * fields out of the file; one known side or level writes them all, the
 * unknown ones as NaN. What it writes is read back by the kernel as the
 * same policy (absent ETAs read as NaN). */
TEST(test_export_writes_known_etas_only)
{
    size_t nd = 0;
    const char *const *specs = features_default_specs(&nd);
    features_set *fs = NULL;
    CHECK_EQ_INT(features_set_new(specs, nd, &fs, NULL, 0), 0);
    util_rng g;
    util_rng_seed(&g, 5);
    training__net net;
    CHECK_EQ_INT(training__net_init(&net, nd, NULL, 0, &g), 0);
    double *mean = calloc(nd, sizeof *mean), *scale = calloc(nd, sizeof *scale);
    for (size_t i = 0; i < nd; i++)
        scale[i] = 1;
    inference_policy pol = {.sl_atr = 1.5,
                            .tp_r = {1, 2, 3},
                            .horizon = 12,
                            .min_confidence = 0.4,
                            .atr_period = 14,
                            .cost_bps = 6,
                            .min_risk_costs = 3,
                            .eta_candles = {NAN, NAN}};
    const double nan3[3] = {NAN, NAN, NAN}, one[3] = {NAN, 4.5, NAN};
    training__export *e = malloc(sizeof *e);
    struct {
        double eta[2];
        const double *tp;
        size_t want_eta, want_tp;
    } cases[] = {
        {{NAN, NAN}, NULL, 0, 0},
        {{NAN, NAN}, nan3, 0, 0},
        {{NAN, 7}, one, 2, 3},
        {{3, NAN}, NULL, 2, 0},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        pol.eta_candles[0] = cases[k].eta[0];
        pol.eta_candles[1] = cases[k].eta[1];
        training__export_init(e, &net, TRAINING_SOFTMAX, fs, 100, 1.0, &pol, cases[k].tp, mean,
                              scale);
        CHECK_EQ_INT(e->model.policy->n_eta_candles, cases[k].want_eta);
        CHECK_EQ_INT(e->model.policy->n_eta_candles_tp, cases[k].want_tp);
        CHECK_NEAR(e->model.policy->costs->round_trip_bps, 6, 0);
        Predictd__Model *m = NULL;
        Predictd__Scaler *sc = NULL;
        CHECK_EQ_INT(training__export_pack(e, &m, &sc), 0);
        inference_model *im = NULL;
        char why[256] = "";
        CHECK_EQ_INT(inference_model_build(m, sc, &im, why, sizeof why), 0);
        if (im) {
            const inference_policy *back = inference_model_policy(im);
            for (int s2 = 0; s2 < 2; s2++) {
                if (isnan(cases[k].eta[s2]))
                    CHECK(isnan(back->eta_candles[s2]));
                else
                    CHECK_NEAR(back->eta_candles[s2], cases[k].eta[s2], 0);
            }
            for (int t = 0; t < 3; t++) {
                double want = cases[k].tp ? cases[k].tp[t] : NAN;
                if (isnan(want))
                    CHECK(isnan(back->eta_candles_tp[t]));
                else
                    CHECK_NEAR(back->eta_candles_tp[t], want, 0);
            }
            CHECK_NEAR(back->cost_bps, 6, 0);
            inference_model_free(im);
        } else {
            printf("  case %zu: %s\n", k, why);
        }
        predictd__model__free_unpacked(m, NULL);
        predictd__scaler__free_unpacked(sc, NULL);
    }
    free(e);
    free(mean);
    free(scale);
    training__net_cleanup(&net);
    features_set_free(fs);
}

int main(void)
{
    const char *t = getenv("PREDICTD_TEST_TMP");
    snprintf(tmp_root, sizeof tmp_root, "%s/test_training.%d", t && *t ? t : "/tmp", (int)getpid());
    mkdir(tmp_root, 0755);
    util_log_configure(UTIL_LOG_ERROR, false);

    RUN(test_params_set_and_validate);
    RUN(test_params_json);
    RUN(test_temperature_fit);
    RUN(test_mlp_learns_what_softmax_cannot);
    RUN(test_rng_stream);
    RUN(test_dataset_matches_serving_call);
    RUN(test_seeded_model_beats_majority_baseline);
    RUN(test_published_version_verifies);
    RUN(test_random_walks_do_not_publish);
    RUN(test_force_publishes_flagged);
    RUN(test_one_class_validation_fails);
    RUN(test_same_seed_same_bytes);
    RUN(test_promotion_rule);
    RUN(test_promotion_against_default_fallback);
    RUN(test_run_errors);
    RUN(test_pooled_series);
    RUN(test_jobs_without_database);
    RUN(test_db_vectors_bit_identical_to_serving);
    RUN(test_db_training_run);
    RUN(test_jobs_succeed_reject_and_persist);
    RUN(test_jobs_cancel_running_and_queued);
    RUN(test_jobs_stop_with_a_queue);
    RUN(test_jobs_interrupted_by_restart);
    RUN(test_jobs_scheduled_retrain);
    RUN(test_export_writes_known_etas_only);
    store_shutdown();
    util_rmtree(tmp_root);
    return unit_report();
}
