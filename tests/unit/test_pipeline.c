/*
 * Unit tests of the prediction pipeline's one computation (compute_from,
 * through predict__compute_window, which predict_one, the loop and the
 * backtest share): verified models from a real repository, candles made
 * here, and every number checked against what the test computes itself
 * (softmax of the model's biases, a Wilder ATR written here, the levels
 * on the right side of the entry), not against the pipeline's own output.
 * Covers the refusals (too few candles, candles the features cannot use),
 * the rules (stale data, a model below its baselines, NO_TRADE as the most
 * probable class), gaps and the accuracy shown. Pure files: no database.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <jansson.h>

#include "inference/inference.h"
#include "predict/predict.h"
#include "predict/predict_internal.h"
#include "registry/registry.h"
#include "store/store.h"
#include "tests/unit/unit.h"
#include "tests/unit/fixtures.h"
#include "util/util.h"

#define WINDOW 40
#define TF "15m"
#define TFS 900

/* A softmax model over one feature (ret:1) with zero weights: its
 * probabilities are softmax(bias) whatever the candles, which the test
 * computes on its own. */
typedef struct mfx {
    Predictd__Model m;
    Predictd__Dense d;
    Predictd__Dense *layers[1];
    Predictd__SignalPolicy pol;
    double tp[3];
    Predictd__TrainingMeta meta;
    Predictd__Metric metric[2];
    Predictd__Metric *metrics[2];
    Predictd__GoldenCase g;
    Predictd__GoldenCase *gp[1];
    double gin[1], gout[3];
    double w[3], b[3];
    char *feat[1];
    char *cls[3];
    Predictd__Scaler s;
    double mean[1], scale[1];
} mfx;

static void softmax3(const double b[3], double out[3])
{
    double mx = fmax(b[0], fmax(b[1], b[2])), s = 0;
    for (int i = 0; i < 3; i++)
        s += out[i] = exp(b[i] - mx);
    for (int i = 0; i < 3; i++)
        out[i] /= s;
}

/* metric names/values: up to two (NULL name: none) */
static void mfx_init(mfx *f, double bl, double bs, double bn, const char *metric1, double v1,
                     const char *metric2, double v2)
{
    memset(f, 0, sizeof *f);
    f->feat[0] = "ret:1";
    f->cls[0] = "LONG";
    f->cls[1] = "SHORT";
    f->cls[2] = "NO_TRADE";
    f->b[0] = bl, f->b[1] = bs, f->b[2] = bn;
    f->mean[0] = 0;
    f->scale[0] = 1;
    predictd__dense__init(&f->d);
    f->d.in = 1;
    f->d.out = 3;
    f->d.n_weights = 3;
    f->d.weights = f->w;
    f->d.n_bias = 3;
    f->d.bias = f->b;
    f->d.activation = PREDICTD__ACTIVATION__LINEAR;
    f->layers[0] = &f->d;
    predictd__signal_policy__init(&f->pol);
    f->pol.sl_atr = 1.5;
    f->tp[0] = 1, f->tp[1] = 2, f->tp[2] = 3;
    f->pol.n_tp_r = 3;
    f->pol.tp_r = f->tp;
    f->pol.horizon = 12;
    f->pol.min_confidence = 0.4;
    f->pol.atr_period = 14;
    predictd__training_meta__init(&f->meta);
    f->meta.trained_at = 1700000000;
    f->meta.timeframe = TF;
    f->meta.trainer = "test_pipeline";
    const char *names[2] = {metric1, metric2};
    double vals[2] = {v1, v2};
    for (int i = 0; i < 2; i++) {
        if (!names[i])
            continue;
        predictd__metric__init(&f->metric[i]);
        f->metric[i].name = (char *)names[i];
        f->metric[i].value = vals[i];
        f->metrics[f->meta.n_metrics++] = &f->metric[i];
    }
    f->meta.metrics = f->metrics;
    predictd__model__init(&f->m);
    f->m.format = 1;
    f->m.kind = PREDICTD__MODEL_KIND__SOFTMAX;
    f->m.n_features = 1;
    f->m.features = f->feat;
    f->m.window = WINDOW;
    f->m.n_classes = 3;
    f->m.classes = f->cls;
    f->m.temperature = 1;
    f->m.n_layers = 1;
    f->m.layers = f->layers;
    f->m.policy = &f->pol;
    f->m.meta = &f->meta;
    predictd__scaler__init(&f->s);
    f->s.n_features = 1;
    f->s.features = f->feat;
    f->s.n_mean = 1;
    f->s.mean = f->mean;
    f->s.n_scale = 1;
    f->s.scale = f->scale;
    f->gin[0] = 0.01;
    softmax3(f->b, f->gout); /* the golden case, from the maths, not the kernel */
    predictd__golden_case__init(&f->g);
    f->g.n_input = 1;
    f->g.input = f->gin;
    f->g.n_probabilities = 3;
    f->g.probabilities = f->gout;
    f->gp[0] = &f->g;
    f->m.n_golden = 1;
    f->m.golden = f->gp;
}

static char models_dir[512];
static registry *reg;
static predict_service *svc;

static bool setup(void)
{
    char base[256];
    if (!unit_tmpdir(base, sizeof base, "pd-pipeline"))
        return false;
    snprintf(models_dir, sizeof models_dir, "%s/models", base);
    struct {
        const char *sym;
        double b[3];
        const char *m1;
        double v1;
        const char *m2;
        double v2;
    } series[] = {
        {"LONGUSD", {3, 0, 0}, "bt_hit_rate", 0.61, NULL, 0},
        {"SHORTUSD", {0, 3, 0}, NULL, 0, NULL, 0},
        {"FLATUSD", {0, 0, 3}, NULL, 0, NULL, 0},
        {"WEAKUSD", {3, 0, 0}, "beats_baseline", 0, "bt_hit_rate", 0.4},
        {"SHYUSD", {0.2, 0.1, 0}, NULL, 0, NULL, 0}, /* max prob ~0.37 < 0.4 */
    };
    mfx *f = malloc(sizeof *f);
    for (size_t i = 0; i < sizeof series / sizeof series[0]; i++) {
        mfx_init(f, series[i].b[0], series[i].b[1], series[i].b[2], series[i].m1, series[i].v1,
                 series[i].m2, series[i].v2);
        f->meta.symbol = (char *)series[i].sym;
        uint32_t ver = 0;
        int rc = registry_publish(models_dir, series[i].sym, TF, &f->m, &f->s, &ver);
        if (rc != 0) {
            printf("  publish %s: %s\n", series[i].sym, util_strerror(rc));
            free(f);
            return false;
        }
    }
    free(f);
    if (registry_new(models_dir, &reg) != 0 || registry_scan(reg, NULL, NULL) != 0)
        return false;
    predict_options opt = {.cache = false};
    return predict_service_new(&opt, reg, &svc) == 0;
}

static void teardown(void)
{
    predict_service_free(svc);
    registry_free(reg);
}

/* n candles every 15 minutes from t0, prices in cents around 100 with a
 * range of about 1.2 (an ATR well above the tick and the cost floor). */
static features_candle *candles(size_t n, int64_t t0)
{
    features_candle *c = calloc(n, sizeof *c);
    double prev = 100.0;
    for (size_t i = 0; i < n; i++) {
        double close = round((100.0 + 3.0 * sin(0.37 * (double)i)) * 100) / 100;
        c[i].t = t0 + (int64_t)i * TFS;
        c[i].open = prev;
        c[i].close = close;
        c[i].high = round((fmax(prev, close) + 0.4 + 0.2 * cos((double)i)) * 100) / 100;
        c[i].low = round((fmin(prev, close) - 0.5) * 100) / 100;
        c[i].volume = 10 + (double)(i % 7);
        prev = close;
    }
    return c;
}

/* Wilder's ATR (TA-Lib): the first value the mean of the first `period`
 * true ranges (from the second candle on), then smoothed. Written here on
 * purpose, independently of features/. */
static double ref_atr(const features_candle *c, size_t n, int period)
{
    double atr = 0;
    for (size_t i = 1; i < n; i++) {
        double tr = fmax(c[i].high - c[i].low,
                         fmax(fabs(c[i].high - c[i - 1].close), fabs(c[i].low - c[i - 1].close)));
        if (i <= (size_t)period)
            atr += tr / period;
        else
            atr = (atr * (period - 1) + tr) / period;
    }
    return atr;
}

static registry_version *acquire(const char *sym)
{
    registry_version *v = NULL;
    int rc = registry_acquire(reg, sym, TF, NULL, &v);
    if (rc)
        printf("  acquire %s: %s\n", sym, util_strerror(rc));
    return v;
}

/* compute one answer for sym from candles c[0..n) at now */
static int answer(const char *sym, const features_candle *c, size_t n, int64_t now,
                  predict_result **p, char *why)
{
    registry_version *v = acquire(sym);
    if (!v)
        return -1000;
    int rc = predict__compute_window(svc, v, sym, TF, now, c, n, p, why, 256);
    registry_release(v);
    return rc;
}

#define T0 1700000100 /* a 15m boundary: 1700000100 = 1888889 x 900 */

TEST(long_answer_numbers)
{
    if (!setup())
        UNIT_SKIP("no repository");
    size_t n = 120;
    features_candle *c = candles(n, T0);
    int64_t now = c[n - 1].t + TFS + 5; /* just after the last candle closed */
    predict_result *p = NULL;
    char why[256] = "";
    CHECK_EQ_INT(answer("LONGUSD", c, n, now, &p, why), 0);
    if (p) {
        double want[3];
        softmax3((double[]){3, 0, 0}, want);
        for (int k = 0; k < 3; k++)
            CHECK_NEAR(p->probs[k], want[k], 1e-12);
        CHECK_EQ_INT(p->direction, INFERENCE_LONG);
        CHECK_EQ_INT(p->model_choice, INFERENCE_LONG);
        CHECK_EQ_INT(p->no_trade_reason, INFERENCE_NT_NONE);
        CHECK_NEAR(p->confidence, want[0], 1e-12);
        CHECK(!p->stale_data);
        CHECK_EQ_STR(p->symbol, "LONGUSD");
        CHECK_EQ_INT(p->candle_time, c[n - 1].t);
        CHECK_EQ_INT(p->candle_close, c[n - 1].t + TFS);
        CHECK_EQ_INT(p->valid_until, c[n - 1].t + 2 * TFS);
        CHECK_EQ_INT(p->prediction_time, now);
        CHECK_EQ_INT(p->gaps, 0);
        CHECK_EQ_INT(p->version, 1);
        CHECK_EQ_INT(p->horizon, 12);
        /* the ATR of the window the model reads: the last WINDOW candles */
        double atr = ref_atr(c + n - WINDOW, WINDOW, 14);
        CHECK_NEAR(p->atr, atr, 1e-9);
        CHECK_NEAR(p->entry, c[n - 1].close, 1e-12);
        CHECK(p->levels_for == INFERENCE_LONG);
        /* levels on the 0.01 tick, within half a tick of the barrier */
        CHECK(fabs(p->stop_loss - (p->entry - 1.5 * atr)) <= 0.005 + 1e-9);
        for (int k = 0; k < 3; k++)
            CHECK(fabs(p->tp[k] - (p->entry + (k + 1) * 1.5 * atr)) <= 0.005 + 1e-9);
        CHECK(p->stop_loss < p->entry && p->entry < p->tp[0] && p->tp[0] < p->tp[1] &&
              p->tp[1] < p->tp[2]);
        /* accuracy: fewer than 50 live trades, so the trainer's backtest */
        CHECK_NEAR(p->model_accuracy, 0.61, 1e-12);
        /* the rendered answer parses and says the same */
        util_buf b;
        util_buf_init(&b);
        predict_render(&b, p, now);
        json_error_t err;
        json_t *j = util_buf_ok(&b) ? json_loads(b.data, 0, &err) : NULL;
        CHECK(j != NULL);
        if (j) {
            CHECK_EQ_STR(json_string_value(json_object_get(j, "direction")), "LONG");
            CHECK_NEAR(json_number_value(json_object_get(j, "entry")), c[n - 1].close, 1e-9);
            CHECK(json_is_false(json_object_get(j, "stale")));
            json_decref(j);
        }
        util_buf_cleanup(&b);
        predict_result_release(p);
    }
    free(c);
    teardown();
}

TEST(short_answer_levels_are_above_and_below)
{
    if (!setup())
        UNIT_SKIP("no repository");
    size_t n = WINDOW; /* exactly the window: enough */
    features_candle *c = candles(n, T0);
    predict_result *p = NULL;
    char why[256] = "";
    CHECK_EQ_INT(answer("SHORTUSD", c, n, c[n - 1].t + TFS, &p, why), 0);
    if (p) {
        double want[3];
        softmax3((double[]){0, 3, 0}, want);
        CHECK_NEAR(p->probs[INFERENCE_SHORT], want[1], 1e-12);
        CHECK_EQ_INT(p->direction, INFERENCE_SHORT);
        CHECK(p->levels_for == INFERENCE_SHORT);
        double atr = ref_atr(c, n, 14);
        CHECK(fabs(p->stop_loss - (p->entry + 1.5 * atr)) <= 0.005 + 1e-9);
        CHECK(p->tp[2] < p->tp[1] && p->tp[1] < p->tp[0] && p->tp[0] < p->entry &&
              p->entry < p->stop_loss);
        CHECK(isnan(p->model_accuracy)); /* no backtest figure in the file, no live one */
        predict_result_release(p);
    }
    free(c);
    teardown();
}

TEST(no_trade_rules)
{
    if (!setup())
        UNIT_SKIP("no repository");
    size_t n = 60;
    features_candle *c = candles(n, T0);
    int64_t now = c[n - 1].t + TFS;
    predict_result *p = NULL;
    char why[256] = "";
    /* NO_TRADE the most probable class */
    CHECK_EQ_INT(answer("FLATUSD", c, n, now, &p, why), 0);
    if (p) {
        CHECK_EQ_INT(p->direction, INFERENCE_NO_TRADE);
        CHECK_EQ_INT(p->model_choice, INFERENCE_NO_TRADE);
        CHECK_EQ_INT(p->no_trade_reason, INFERENCE_NT_MODEL);
        predict_result_release(p);
        p = NULL;
    }
    /* a model published below its baselines: its LONG is not a call */
    CHECK_EQ_INT(answer("WEAKUSD", c, n, now, &p, why), 0);
    if (p) {
        CHECK_EQ_INT(p->direction, INFERENCE_NO_TRADE);
        CHECK_EQ_INT(p->model_choice, INFERENCE_LONG);
        CHECK_EQ_INT(p->no_trade_reason, INFERENCE_NT_BASELINE);
        CHECK(strstr(p->fragment, "below_baseline") != NULL);
        CHECK_NEAR(p->model_accuracy, 0.4, 1e-12);
        predict_result_release(p);
        p = NULL;
    }
    /* the most probable side under min_confidence */
    CHECK_EQ_INT(answer("SHYUSD", c, n, now, &p, why), 0);
    if (p) {
        CHECK_EQ_INT(p->direction, INFERENCE_NO_TRADE);
        CHECK_EQ_INT(p->model_choice, INFERENCE_LONG);
        CHECK_EQ_INT(p->no_trade_reason, INFERENCE_NT_MIN_CONFIDENCE);
        predict_result_release(p);
        p = NULL;
    }
    /* two timeframes after the close is still fresh; one second more is stale */
    int64_t close = c[n - 1].t + TFS;
    CHECK_EQ_INT(answer("LONGUSD", c, n, close + 2 * TFS, &p, why), 0);
    if (p) {
        CHECK_EQ_INT(p->direction, INFERENCE_LONG);
        CHECK(!p->stale_data);
        predict_result_release(p);
        p = NULL;
    }
    CHECK_EQ_INT(answer("LONGUSD", c, n, close + 2 * TFS + 1, &p, why), 0);
    if (p) {
        CHECK_EQ_INT(p->direction, INFERENCE_NO_TRADE);
        CHECK_EQ_INT(p->model_choice, INFERENCE_LONG);
        CHECK_EQ_INT(p->no_trade_reason, INFERENCE_NT_STALE);
        CHECK(p->stale_data);
        CHECK(strstr(p->fragment, "stale_data") != NULL);
        predict_result_release(p);
    }
    free(c);
    teardown();
}

/* The two market rules say why in the answer's warnings: levels that round
 * onto the entry on the candles' tick (whole units, an ATR of about 0.1
 * after one 1-unit move late in a flat window), and a risk under three round trips of the
 * cost (a 0.13 swing on 100: risk about 0.2 against a floor of 0.3). */
TEST(tick_and_cost_rules_warn)
{
    if (!setup())
        UNIT_SKIP("no repository");
    size_t n = 60;
    features_candle *c = calloc(n, sizeof *c);
    for (size_t i = 0; i < n; i++)
        c[i] = (features_candle){T0 + (int64_t)i * TFS, 100, 100, 100, 100, 5};
    c[n - 8].high = c[n - 8].close = 101;
    c[n - 7].open = c[n - 7].high = 101;
    int64_t now = c[n - 1].t + TFS + 5;
    predict_result *p = NULL;
    char why[256] = "";
    int rc = answer("LONGUSD", c, n, now, &p, why);
    if (rc)
        printf("  %s\n", why);
    CHECK_EQ_INT(rc, 0);
    if (p) {
        CHECK_EQ_INT(p->direction, INFERENCE_NO_TRADE);
        CHECK_EQ_INT(p->model_choice, INFERENCE_LONG);
        CHECK_EQ_INT(p->no_trade_reason, INFERENCE_NT_TICK);
        CHECK(strstr(p->fragment, "\"levels under the tick: stop 100 and TP1 100 are not 2 "
                                  "ticks of 1 from entry 100\"") != NULL);
        CHECK(strstr(p->fragment, "levels_under_tick") != NULL);
        CHECK_EQ_INT(p->n_warnings, 1);
        predict_result_release(p);
        p = NULL;
    }
    for (size_t i = 0; i < n; i++) {
        double close = i % 2 ? 100.13 : 100;
        c[i] =
            (features_candle){T0 + (int64_t)i * TFS, i % 2 ? 100 : 100.13, 100.13, 100, close, 5};
    }
    rc = answer("LONGUSD", c, n, now, &p, why);
    if (rc)
        printf("  %s\n", why);
    CHECK_EQ_INT(rc, 0);
    if (p) {
        CHECK_EQ_INT(p->direction, INFERENCE_NO_TRADE);
        CHECK_EQ_INT(p->no_trade_reason, INFERENCE_NT_COST);
        CHECK(strstr(p->fragment, "\"cost: the risk ") != NULL);
        CHECK(strstr(p->fragment, " is under 3 round trips of 10 bps (0.1") != NULL);
        CHECK_EQ_INT(p->n_warnings, 1);
        predict_result_release(p);
    }
    free(c);
    teardown();
}

TEST(refusals_and_gaps)
{
    if (!setup())
        UNIT_SKIP("no repository");
    size_t n = 80;
    features_candle *c = candles(n, T0);
    predict_result *p = NULL;
    char why[256] = "";
    /* one candle short of the window */
    CHECK_EQ_INT(answer("LONGUSD", c + n - (WINDOW - 1), WINDOW - 1, c[n - 1].t + TFS, &p, why),
                 PD_ENODATA);
    CHECK(p == NULL);
    CHECK(strstr(why, "has 39 closed candles; the model needs 40") != NULL);
    CHECK_EQ_INT(answer("LONGUSD", c, 0, c[n - 1].t + TFS, &p, why), PD_ENODATA);

    /* a zero close in the window: ret:1 is not finite, no answer made up */
    features_candle *bad = malloc(n * sizeof *bad);
    memcpy(bad, c, n * sizeof *bad);
    bad[n - 2].close = 0;
    why[0] = '\0';
    int rc = answer("LONGUSD", bad, n, c[n - 1].t + TFS, &p, why);
    CHECK_EQ_INT(rc, PD_ENODATA);
    CHECK(p == NULL);
    CHECK(why[0] != '\0');
    /* the same, outside the window the model reads: no effect */
    memcpy(bad, c, n * sizeof *bad);
    bad[0].close = 0;
    CHECK_EQ_INT(answer("LONGUSD", bad, n, c[n - 1].t + TFS, &p, why), 0);
    predict_result_release(p);
    p = NULL;
    /* no price range at all: no ATR for levels */
    for (size_t i = 0; i < n; i++)
        bad[i].open = bad[i].high = bad[i].low = bad[i].close = 100;
    rc = answer("LONGUSD", bad, n, c[n - 1].t + TFS, &p, why);
    if (rc == 0) {
        /* if an ATR of 0 is accepted, the levels must not pretend to be a call */
        CHECK(p->direction == INFERENCE_NO_TRADE);
        predict_result_release(p);
        p = NULL;
    } else {
        CHECK_EQ_INT(rc, PD_ENODATA);
    }
    free(bad);

    /* three missing candles inside the window are counted */
    features_candle *g = malloc(n * sizeof *g);
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (i != n - 5 && i != n - 10 && i != n - 11)
            g[m++] = c[i];
    CHECK_EQ_INT(answer("LONGUSD", g, m, c[n - 1].t + TFS, &p, why), 0);
    if (p) {
        CHECK_EQ_INT(p->gaps, 3);
        CHECK_EQ_INT(p->candle_time, c[n - 1].t);
        predict_result_release(p);
    }
    free(g);
    free(c);
    teardown();
}

/* ---------------------------------------------------------------------------
 * Through the service's public entry points, with candles in PostgreSQL
 * and the Redis cache on: the same numbers as the computation above, the
 * error of each kind of missing thing, refresh replacing the cached answer.
 */

static bool setup_store(features_candle **c, size_t n)
{
    if (store_init(unit_db_url(), unit_redis_url(), true) != 0 ||
        store_migrate(unit_migrations_dir()) != 0)
        return false;
    *c = candles(n, T0);
    /* LONGUSD has a model and candles; SHORTUSD too, but only 10 candles;
     * NOMODELUSD has candles and no model */
    return store_upsert_candles("LONGUSD", TF, *c, n) == 0 &&
           store_upsert_candles("SHORTUSD", TF, *c + n - 10, 10) == 0 &&
           store_upsert_candles("NOMODELUSD", TF, *c, n) == 0;
}

TEST(service_answers_and_refusals)
{
    UNIT_NEED_ENV(UNIT_DB_ENV);
    UNIT_NEED_ENV(UNIT_REDIS_ENV);
    if (!setup())
        UNIT_SKIP("no repository");
    predict_service_free(svc);
    predict_options opt = {.cache = true};
    CHECK_EQ_INT(predict_service_new(&opt, reg, &svc), 0);
    CHECK(predict_registry(svc) == reg);
    size_t n = 100;
    features_candle *c = NULL;
    CHECK(setup_store(&c, n));
    if (!c)
        return;
    int64_t now = c[n - 1].t + TFS + 1;
    char why[256] = "";
    predict_result *p = NULL, *q = NULL;

    /* the answer from the database equals the computation from the same window */
    CHECK_EQ_INT(predict_one(svc, "LONGUSD", TF, NULL, now, &p, why, sizeof why), 0);
    CHECK_EQ_INT(answer("LONGUSD", c, n, now, &q, why), 0);
    if (p && q) {
        CHECK_EQ_INT(p->direction, INFERENCE_LONG);
        CHECK_EQ_INT(p->candle_time, c[n - 1].t);
        CHECK_NEAR(p->entry, q->entry, 0);
        CHECK_NEAR(p->stop_loss, q->stop_loss, 0);
        CHECK_NEAR(p->atr, ref_atr(c + n - WINDOW, WINDOW, 14), 1e-9);
        CHECK_EQ_STR(p->fragment, q->fragment);
    }
    predict_result_release(q);
    q = NULL;
    /* asked again: the cached object itself */
    CHECK_EQ_INT(predict_one(svc, "LONGUSD", TF, NULL, now + 10, &q, why, sizeof why), 0);
    CHECK(q == p);
    predict_result_release(q);
    q = NULL;
    /* refresh computes anew and replaces the cached entry */
    CHECK_EQ_INT(predict_refresh(svc, "LONGUSD", TF, now + 20, &q, why, sizeof why), 0);
    CHECK(q != NULL && q != p);
    if (q) {
        CHECK_EQ_INT(q->prediction_time, now + 20);
        CHECK(q->fragment && strstr(q->fragment, "\"direction\":\"LONG\"") != NULL);
    }
    predict_result *r2 = NULL;
    CHECK_EQ_INT(predict_one(svc, "LONGUSD", TF, NULL, now + 30, &r2, why, sizeof why), 0);
    CHECK(r2 == q);
    predict_result_release(r2);
    predict_result_release(q);
    predict_result_release(p);
    p = q = NULL;

    /* each missing thing has its own code */
    CHECK_EQ_INT(predict_one(svc, "bad", TF, NULL, now, &p, why, sizeof why), PD_ESYMBOL);
    CHECK_EQ_INT(predict_one(svc, "LONGUSD", "2h", NULL, now, &p, why, sizeof why), PD_ETIMEFRAME);
    CHECK_EQ_INT(predict_one(svc, "NOMODELUSD", TF, NULL, now, &p, why, sizeof why), PD_ENOMODEL);
    CHECK_EQ_INT(predict_one(svc, "FLATUSD", TF, NULL, now, &p, why, sizeof why), PD_EUNKNOWNSYM);
    why[0] = '\0';
    CHECK_EQ_INT(predict_one(svc, "SHORTUSD", TF, NULL, now, &p, why, sizeof why), PD_ENODATA);
    CHECK(strstr(why, "has 10 closed candles") != NULL);
    CHECK_EQ_INT(predict_refresh(svc, "SHORTUSD", TF, now, &p, why, sizeof why), PD_ENODATA);
    CHECK_EQ_INT(predict_refresh(svc, "NOMODELUSD", TF, now, &p, why, sizeof why), PD_ENOMODEL);
    CHECK_EQ_INT(predict_refresh(svc, "bad", TF, now, &p, why, sizeof why), PD_ESYMBOL);
    /* a version that does not exist */
    CHECK_EQ_INT(predict_one(svc, "LONGUSD", TF, &(registry_selector){.version = 9}, now, &p, why,
                             sizeof why),
                 PD_ENOMODEL);
    CHECK(p == NULL);

    /* many at once: one answer or one code per symbol, in order */
    const char *syms[] = {"LONGUSD", "SHORTUSD", "NOMODELUSD", "bad", "FLATUSD"};
    predict_result *outs[5] = {0};
    int rcs[5] = {0};
    char whys[5][256];
    CHECK_EQ_INT(predict_many(svc, syms, 5, TF, NULL, now + 40, outs, rcs, whys), 0);
    CHECK_EQ_INT(rcs[0], 0);
    CHECK(outs[0] && outs[0]->direction == INFERENCE_LONG);
    CHECK_EQ_INT(rcs[1], PD_ENODATA);
    CHECK_EQ_INT(rcs[2], PD_ENOMODEL);
    CHECK_EQ_INT(rcs[3], PD_ESYMBOL);
    CHECK_EQ_INT(rcs[4], PD_EUNKNOWNSYM);
    for (int i = 0; i < 5; i++) {
        predict_result_release(outs[i]);
        outs[i] = NULL;
    }
    CHECK_EQ_INT(predict_refresh_many(svc, syms, 5, TF, now + 50, outs, rcs, whys), 0);
    CHECK_EQ_INT(rcs[0], 0);
    CHECK(outs[0] && outs[0]->prediction_time == now + 50);
    CHECK_EQ_INT(rcs[1], PD_ENODATA);
    CHECK_EQ_INT(rcs[2], PD_ENOMODEL);
    CHECK_EQ_INT(rcs[3], PD_ESYMBOL);
    for (int i = 0; i < 5; i++)
        predict_result_release(outs[i]);
    CHECK_EQ_INT(predict_refresh_many(svc, syms, 5, "2h", now, outs, rcs, whys), PD_ETIMEFRAME);

    /* the symbols with candles */
    predict_symbol_list *l = NULL;
    CHECK_EQ_INT(predict_symbols_for(svc, TF, now, &l), 0);
    if (l) {
        CHECK(l->n >= 3);
        bool seen = false;
        for (size_t i = 0; i < l->n; i++)
            seen |= strcmp(l->names[i], "NOMODELUSD") == 0;
        CHECK(seen);
    }
    predict_symbol_list_release(l);
    CHECK_EQ_INT(predict_symbols_for(svc, "3m", now, &l), PD_ETIMEFRAME);
    free(c);
    teardown();
    store_shutdown();
}

/* The kernel's refusals (no input, no output, no scratch, a non-finite
 * input, a logit that overflows) and the computation's refusals when the
 * caller gives no buffer for the reason: the same codes, no crash. */
TEST(kernel_and_computation_refusals)
{
    if (!setup())
        UNIT_SKIP("no repository");
    registry_version *v = acquire("LONGUSD");
    CHECK(v != NULL);
    if (!v)
        return;
    const inference_model *m = registry_version_model(v);
    double x[1] = {0.01}, probs[3] = {-1, -1, -1};
    void *scratch = malloc(inference_scratch_size(m) + 64);
    CHECK_EQ_INT(inference_run(NULL, x, probs, scratch), PD_EINVAL);
    CHECK_EQ_INT(inference_run(m, NULL, probs, scratch), PD_EINVAL);
    CHECK_EQ_INT(inference_run(m, x, NULL, scratch), PD_EINVAL);
    if (inference_scratch_size(m))
        CHECK_EQ_INT(inference_run(m, x, probs, NULL), PD_EINVAL);
    x[0] = NAN;
    CHECK_EQ_INT(inference_run(m, x, probs, scratch), PD_EINVAL);
    x[0] = INFINITY;
    CHECK_EQ_INT(inference_run(m, x, probs, scratch), PD_EINVAL);
    CHECK(probs[0] == -1); /* untouched on error */
    x[0] = 0.01;
    CHECK_EQ_INT(inference_run(m, x, probs, scratch), 0);
    double want[3];
    softmax3((double[]){3, 0, 0}, want);
    CHECK_NEAR(probs[0], want[0], 1e-12);
    free(scratch);

    size_t n = 60;
    features_candle *c = candles(n, T0);
    predict_result *p = NULL;
    int64_t now = c[n - 1].t + TFS;
    CHECK_EQ_INT(predict__compute_window(svc, v, "LONGUSD", TF, now, c, 5, &p, NULL, 0),
                 PD_ENODATA);
    c[n - 3].close = 0;
    CHECK_EQ_INT(predict__compute_window(svc, v, "LONGUSD", TF, now, c, n, &p, NULL, 0),
                 PD_ENODATA);
    /* a price jump so large that ret:1 overflows the logits is refused too */
    features_candle *big = candles(n, T0);
    big[n - 1].close = big[n - 1].high = 1e306;
    int rc = predict__compute_window(svc, v, "LONGUSD", TF, now, big, n, &p, NULL, 0);
    if (rc == 0) {
        /* finite features: then the answer must be a real one */
        CHECK(p && isfinite(p->probs[0]));
        predict_result_release(p);
        p = NULL;
    } else {
        CHECK_EQ_INT(rc, PD_ENODATA);
    }
    CHECK(p == NULL);
    free(big);
    free(c);
    registry_release(v);
    teardown();
}

/* Redis configured but not there: every answer is still computed from
 * PostgreSQL, with the same numbers, one at a time and in batches. */
TEST(service_with_redis_down)
{
    UNIT_NEED_ENV(UNIT_DB_ENV);
    if (!setup())
        UNIT_SKIP("no repository");
    predict_service_free(svc);
    predict_options opt = {.cache = true};
    CHECK_EQ_INT(predict_service_new(&opt, reg, &svc), 0);
    if (store_init(unit_db_url(), "redis://127.0.0.1:1/0", true) != 0 ||
        store_migrate(unit_migrations_dir()) != 0) {
        UNIT_FAIL_("store_init with Redis down failed");
        return;
    }
    size_t n = 90;
    features_candle *c = candles(n, T0 + 86400);
    CHECK_EQ_INT(store_upsert_candles("LONGUSD", TF, c, n), 0);
    int64_t now = c[n - 1].t + TFS + 1;
    char why[256] = "";
    predict_result *p = NULL, *q = NULL;
    CHECK_EQ_INT(predict_one(svc, "LONGUSD", TF, NULL, now, &p, why, sizeof why), 0);
    CHECK_EQ_INT(answer("LONGUSD", c, n, now, &q, why), 0);
    if (p && q) {
        CHECK_EQ_INT(p->candle_time, c[n - 1].t);
        CHECK_NEAR(p->stop_loss, q->stop_loss, 0);
        CHECK_NEAR(p->probs[0], q->probs[0], 0);
    }
    predict_result_release(p);
    predict_result_release(q);
    const char *syms[] = {"LONGUSD", "FLATUSD"};
    predict_result *outs[2] = {0};
    int rcs[2];
    char whys[2][256];
    CHECK_EQ_INT(predict_refresh_many(svc, syms, 2, TF, now + 5, outs, rcs, whys), 0);
    CHECK_EQ_INT(rcs[0], 0);
    CHECK(outs[0] && outs[0]->prediction_time == now + 5 && outs[0]->candle_time == c[n - 1].t);
    CHECK(rcs[1] != 0);
    predict_result_release(outs[0]);
    predict_result_release(outs[1]);
    free(c);
    teardown();
    store_shutdown();
}

/* The exchange ticks: read from exchange_symbols (the newest row per
 * symbol), 0 for a symbol no exchange listed or without a database; the
 * snapshot answers until its time is up (no query per computation). */
TEST(exchange_ticks_come_from_the_table)
{
    UNIT_NEED_ENV(UNIT_DB_ENV);
    predict_options opt = {.cache = false};
    predict_service *s = NULL;
    CHECK_EQ_INT(predict_service_new(&opt, NULL, &s), 0);
    if (!s)
        return;
    /* no database configured yet: no tick */
    CHECK(predict__exchange_tick(s, "TICKUSDT") == 0);
    predict_service_free(s);
    if (store_init(unit_db_url(), NULL, false) != 0 || store_migrate(unit_migrations_dir()) != 0) {
        UNIT_FAIL_("store_init failed");
        return;
    }
    PGconn *c = unit_db_admin();
    CHECK(unit_sql_ok(c, "DELETE FROM exchange_symbols WHERE symbol IN ('TICKUSDT', 'TACKUSDT')"));
    CHECK(unit_sql_ok(c, "INSERT INTO exchange_symbols (venue, symbol, status, tick_size, "
                         "updated_at) VALUES ('binance', 'TICKUSDT', 'TRADING', 0.01, now() - "
                         "interval '1 day'), ('other', 'TICKUSDT', 'TRADING', 0.005, now()), "
                         "('binance', 'TACKUSDT', 'BREAK', 0.25, now())"));
    CHECK_EQ_INT(predict_service_new(&opt, NULL, &s), 0);
    if (!s)
        return;
    CHECK_NEAR(predict__exchange_tick(s, "TICKUSDT"), 0.005, 0); /* the newest word */
    CHECK_NEAR(predict__exchange_tick(s, "TACKUSDT"), 0.25, 0);
    CHECK(predict__exchange_tick(s, "NONEUSDT") == 0);
    /* the snapshot answers without reading the table again */
    CHECK(unit_sql_ok(c, "DELETE FROM exchange_symbols WHERE symbol = 'TACKUSDT'"));
    CHECK_NEAR(predict__exchange_tick(s, "TACKUSDT"), 0.25, 0);
    CHECK(unit_sql_ok(c, "DELETE FROM exchange_symbols WHERE symbol = 'TICKUSDT'"));
    predict_service_free(s);
    PQfinish(c);
}

/* The cache of "no" answers on its own (no database): a "no" is kept until
 * the open candle closes, at most 30 s, and only under the registry
 * generation it was made in; errors that are not a "no" (a dead store) are
 * never kept; a series name too long for a slot, an unknown timeframe, or a
 * service without caching keep nothing; forget drops it. */
TEST(negative_answers_cache)
{
    if (!setup())
        UNIT_SKIP("no repository");
    const int64_t k = 1718000000 / TFS * TFS;
    int rc = 0;
    char why[64] = "";
    uint64_t gen = registry_generation(reg);
    /* caching off: nothing is kept */
    CHECK(svc->neg == NULL);
    predict__neg_put(svc, "NOMODELUSD", TF, k, gen, PD_ENOMODEL, "no model");
    CHECK(!predict__neg_get(svc, "NOMODELUSD", TF, k, &rc, why, sizeof why));
    predict_service_free(svc);
    predict_options opt = {.cache = true};
    CHECK_EQ_INT(predict_service_new(&opt, reg, &svc), 0);
    CHECK(svc->neg != NULL);

    /* 10 s before the candle closes: kept for those 10 s */
    predict__neg_put(svc, "NOMODELUSD", TF, k + TFS - 10, gen, PD_ENOMODEL, "no model here");
    rc = 0;
    CHECK(predict__neg_get(svc, "NOMODELUSD", TF, k + TFS - 1, &rc, why, sizeof why));
    CHECK_EQ_INT(rc, PD_ENOMODEL);
    CHECK_EQ_STR(why, "no model here");
    CHECK(!predict__neg_get(svc, "NOMODELUSD", TF, k + TFS, &rc, why, sizeof why));
    /* early in a candle: 30 s at most */
    predict__neg_put(svc, "NOMODELUSD", TF, k, gen, PD_ENODATA, NULL);
    rc = 0;
    CHECK(predict__neg_get(svc, "NOMODELUSD", TF, k + 29, &rc, NULL, 0));
    CHECK_EQ_INT(rc, PD_ENODATA);
    why[0] = 'x';
    CHECK(predict__neg_get(svc, "NOMODELUSD", TF, k + 29, &rc, why, sizeof why));
    CHECK_EQ_STR(why, ""); /* made without a reason */
    CHECK(!predict__neg_get(svc, "NOMODELUSD", TF, k + 30, &rc, why, sizeof why));
    /* another timeframe of the symbol is another entry */
    CHECK(!predict__neg_get(svc, "NOMODELUSD", "1h", k + 1, &rc, why, sizeof why));
    /* made under an older generation (the registry changed meanwhile) */
    predict__neg_put(svc, "FLATUSD", TF, k, gen + 1, PD_EUNKNOWNSYM, "x");
    CHECK(!predict__neg_get(svc, "FLATUSD", TF, k + 1, &rc, why, sizeof why));
    predict__neg_put(svc, "FLATUSD", TF, k, gen, PD_EUNKNOWNSYM, "x");
    CHECK(predict__neg_get(svc, "FLATUSD", TF, k + 1, &rc, why, sizeof why));
    CHECK_EQ_INT(rc, PD_EUNKNOWNSYM);
    predict__neg_forget(svc, "FLATUSD", TF);
    CHECK(!predict__neg_get(svc, "FLATUSD", TF, k + 1, &rc, why, sizeof why));
    predict__neg_forget(svc, "NEVERUSD", TF); /* nothing there: no effect */
    /* not a "no": never kept */
    const int errors[] = {PD_EIO, PD_ENOMEM, PD_ESYMBOL, 0};
    for (size_t i = 0; i < sizeof errors / sizeof errors[0]; i++) {
        predict__neg_put(svc, "LONGUSD", TF, k, gen, errors[i], "down");
        if (predict__neg_get(svc, "LONGUSD", TF, k + 1, &rc, why, sizeof why))
            UNIT_FAIL_("rc %d was cached", errors[i]);
    }
    predict__neg_put(svc, "LONGUSD", "2h", k, gen, PD_ENOMODEL, "x");
    CHECK(!predict__neg_get(svc, "LONGUSD", "2h", k + 1, &rc, why, sizeof why));
    const char *longsym = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    predict__neg_put(svc, longsym, TF, k, gen, PD_ENOMODEL, "x");
    CHECK(!predict__neg_get(svc, longsym, TF, k + 1, &rc, why, sizeof why));
    teardown();
}

int main(void)
{
    RUN(long_answer_numbers);
    RUN(short_answer_levels_are_above_and_below);
    RUN(no_trade_rules);
    RUN(tick_and_cost_rules_warn);
    RUN(refusals_and_gaps);
    RUN(service_answers_and_refusals);
    RUN(negative_answers_cache);
    RUN(kernel_and_computation_refusals);
    RUN(service_with_redis_down);
    RUN(exchange_ticks_come_from_the_table);
    return unit_report();
}
