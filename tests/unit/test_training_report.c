/*
 * The trainer's pure helpers that the runs on real data do not reach: the
 * signal policy's refusals (each field out of range, in order, with its
 * sentence), the metrics table's outcome lines (rejected, below_baseline,
 * not published, a promotion comparison, no data range), the metrics JSON
 * of zero, one and several metrics, and the dataset builder's refusals of
 * bad arguments. No database.
 */
#include <stdatomic.h>

#include "training/internal.h"
#include "unit.h"

/* What training_result_print writes, as a string (caller frees). */
static char *printed(const training_result *r)
{
    char *text = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&text, &n);
    if (!f)
        return NULL;
    training_result_print(r, f);
    fclose(f);
    return text;
}

/* The i-th way of spoiling a good policy (the order of says[] below). */
static void spoil(inference_policy *p, size_t i)
{
    switch (i) {
    case 0:
        p->sl_atr = NAN;
        break;
    case 1:
        p->sl_atr = 0;
        break;
    case 2:
        p->tp_r[0] = -1;
        break;
    case 3:
        p->tp_r[0] = INFINITY;
        break;
    case 4:
        p->tp_r[1] = p->tp_r[0] / 2;
        break;
    case 5:
        p->tp_r[1] = NAN;
        break;
    case 6:
        p->tp_r[2] = p->tp_r[1] / 2;
        break;
    case 7:
        p->tp_r[2] = INFINITY;
        break;
    case 8:
        p->horizon = 0;
        break;
    case 9:
        p->horizon = 10001;
        break;
    case 10:
        p->min_confidence = -0.01;
        break;
    case 11:
        p->min_confidence = 1.01;
        break;
    case 12:
        p->min_confidence = NAN;
        break;
    case 13:
        p->atr_period = 0;
        break;
    case 14:
        p->atr_period = 1001;
        break;
    case 15:
        p->max_age_s = -1;
        break;
    case 16:
        p->cost_bps = -0.5;
        break;
    case 17:
        p->cost_bps = 10000;
        break;
    case 18:
        p->cost_bps = NAN;
        break;
    case 19:
        p->min_risk_costs = -1;
        break;
    default:
        p->min_risk_costs = INFINITY;
        break;
    }
}

TEST(test_policy_check_names_each_bad_field)
{
    inference_policy ok;
    training_policy_default(&ok);
    char why[128] = "";
    CHECK_EQ_INT(training__policy_check(&ok, why, sizeof why), 0);
    CHECK_EQ_STR(why, "");

    static const char *const says[] = {
        "sl_atr must be a positive number",
        "sl_atr must be a positive number",
        "tp_r must be positive numbers",
        "tp_r must be positive numbers",
        "tp_r must be three ascending positive numbers",
        "tp_r must be three ascending positive numbers",
        "tp_r must be three ascending positive numbers",
        "tp_r must be three ascending positive numbers",
        "horizon must be 1..10000 candles",
        "horizon must be 1..10000 candles",
        "min_confidence must be in [0, 1]",
        "min_confidence must be in [0, 1]",
        "min_confidence must be in [0, 1]",
        "atr_period must be 1..1000",
        "atr_period must be 1..1000",
        "max_age_s must be >= 0",
        "cost_bps must be in [0, 10000)",
        "cost_bps must be in [0, 10000)",
        "cost_bps must be in [0, 10000)",
        "min_risk_costs must be >= 0",
        "min_risk_costs must be >= 0",
    };
    for (size_t i = 0; i < sizeof says / sizeof says[0]; i++) {
        inference_policy p = ok;
        spoil(&p, i);
        why[0] = '\0';
        CHECK_EQ_INT(training__policy_check(&p, why, sizeof why), PD_EINVAL);
        CHECK_EQ_STR(why, says[i]);
        /* without a buffer: the same verdict, nothing written */
        CHECK_EQ_INT(training__policy_check(&p, NULL, 0), PD_EINVAL);
        CHECK_EQ_INT(training__policy_check(&p, why, 0), PD_EINVAL);
    }
    /* the edges that are allowed */
    inference_policy p = ok;
    p.horizon = 10000;
    p.min_confidence = 1;
    p.atr_period = 1000;
    p.max_age_s = 0;
    p.cost_bps = 0;
    p.min_risk_costs = 0;
    p.tp_r[0] = p.tp_r[1] = p.tp_r[2] = 2; /* equal take-profits are ascending */
    CHECK_EQ_INT(training__policy_check(&p, why, sizeof why), 0);
}

TEST(test_result_print_outcomes)
{
    training_result *r = calloc(1, sizeof *r);
    CHECK(r != NULL);
    if (!r)
        return;
    snprintf(r->target, sizeof r->target, "BTCUSDT");
    r->test_accuracy = NAN;
    r->baseline_accuracy = NAN;
    static const struct {
        training_outcome o;
        const char *line;
    } outcomes[] = {
        {TRAINING_PUBLISHED, "result      published\n"},
        {TRAINING_REJECTED, "result      rejected\n"},
        {TRAINING_BELOW_BASELINE, "result      below_baseline\n"},
        {TRAINING_NOT_PUBLISHED, "result      not published\n"},
    };
    for (size_t i = 0; i < sizeof outcomes / sizeof outcomes[0]; i++) {
        r->outcome = outcomes[i].o;
        char *t = printed(r);
        CHECK(t != NULL);
        if (!t)
            continue;
        CHECK(strstr(t, outcomes[i].line) != NULL);
        CHECK(strstr(t, "series      BTCUSDT\n") != NULL);
        /* no data range: dashes, not 1970 */
        CHECK(strstr(t, "data        - .. -\n") != NULL);
        /* the accuracy row of a result without figures says n/a */
        CHECK(strstr(t, "  accuracy                          n/a        n/a\n") != NULL);
        CHECK(strstr(t, "promotion") == NULL);
        free(t);
    }
    /* a message wins over the outcome's word; a comparison with the serving
     * version is printed with both log-losses */
    r->outcome = TRAINING_REJECTED;
    snprintf(r->message, sizeof r->message, "rejected: not better than v3");
    r->old_version = 3;
    snprintf(r->old_series, sizeof r->old_series, "_default");
    r->new_log_loss = 0.91234;
    r->old_log_loss = 0.9;
    r->compared = 120;
    r->data_from = 1704067200;
    r->data_to = 1704070800;
    training__metric_add(r, "cal_60_n", 12);
    training__metric_add(r, "cal_60_p", 0.64);
    training__metric_add(r, "cal_60_hit", 0.5);
    char *t = printed(r);
    CHECK(t != NULL);
    if (t) {
        CHECK(strstr(t, "result      rejected: not better than v3\n") != NULL);
        CHECK(strstr(t, "promotion   log-loss new 0.91234 vs serving _default v3 0.90000 on "
                        "120 samples\n") != NULL);
        CHECK(strstr(t, "data        2024-01-01T00:00:00Z .. 2024-01-01T01:00:00Z\n") != NULL);
        CHECK(strstr(t, "      0.6      12  0.6400  0.5000\n") != NULL);
        CHECK(strstr(t, "0.8  ") == NULL); /* empty bins are not printed */
        free(t);
    }
    free(r);
}

TEST(test_metric_add)
{
    training_result *r = calloc(1, sizeof *r);
    CHECK(r != NULL);
    if (!r)
        return;
    CHECK_EQ_INT(r->n_metrics, 0);
    training__metric_add(r, "log_loss", 0.5);
    CHECK_NEAR(training_result_metric(r, "log_loss"), 0.5, 0);
    training__metric_add(r, "calls", 12);
    training__metric_add(r, "brier", NAN);     /* undefined: not recorded */
    training__metric_add(r, "log_loss", 0.25); /* a second value replaces the first */
    CHECK_EQ_INT(r->n_metrics, 2);
    CHECK_NEAR(training_result_metric(r, "log_loss"), 0.25, 0);
    CHECK_NEAR(training_result_metric(r, "calls"), 12, 0);
    CHECK(isnan(training_result_metric(r, "brier")));
    CHECK(isnan(training_result_metric(r, "absent")));
    free(r);
}

TEST(test_dataset_refuses_bad_arguments)
{
    size_t nd;
    const char *const *specs = features_default_specs(&nd);
    features_set *fs = NULL;
    CHECK_EQ_INT(features_set_new(specs, nd, &fs, NULL, 0), 0);
    if (!fs)
        return;
    inference_policy pol;
    training_policy_default(&pol);
    size_t w = features_set_min_window(fs) + 20;
    features_candle c[4] = {{0}};
    const features_candle *series[1] = {c};
    size_t lens[1] = {4};
    training_dataset ds;
    memset(&ds, 0, sizeof ds);
    CHECK_EQ_INT(training_dataset_build(NULL, w, &pol, series, lens, 1, NULL, NULL, NULL, &ds),
                 PD_EINVAL);
    CHECK_EQ_INT(training_dataset_build(fs, w, NULL, series, lens, 1, NULL, NULL, NULL, &ds),
                 PD_EINVAL);
    CHECK_EQ_INT(training_dataset_build(fs, w, &pol, NULL, lens, 1, NULL, NULL, NULL, &ds),
                 PD_EINVAL);
    CHECK_EQ_INT(training_dataset_build(fs, w, &pol, series, NULL, 1, NULL, NULL, NULL, &ds),
                 PD_EINVAL);
    /* a window no longer than the ATR period cannot label */
    inference_policy longatr = pol;
    longatr.atr_period = (uint32_t)w;
    CHECK_EQ_INT(training_dataset_build(fs, w, &longatr, series, lens, 1, NULL, NULL, NULL, &ds),
                 PD_EINVAL);
    inference_policy bad = pol;
    bad.sl_atr = -1;
    CHECK_EQ_INT(training_dataset_build(fs, w, &bad, series, lens, 1, NULL, NULL, NULL, &ds),
                 PD_EINVAL);
    /* no series at all: no data, not a crash */
    CHECK_EQ_INT(training_dataset_build(fs, w, &pol, NULL, NULL, 0, NULL, NULL, NULL, &ds),
                 PD_ENODATA);
    /* the cleanup of an empty or NULL dataset is harmless */
    training_dataset_cleanup(&ds);
    training_dataset_cleanup(NULL);
    features_set_free(fs);
}

/* Rows whose window holds an invalid candle are dropped and counted, the
 * others are the same rows as from the clean series; a series too short
 * for one row is skipped; a series with no valid row at all is no data. */
TEST(test_dataset_drops_invalid_rows)
{
    const char *specs[] = {"ret:1", "rsi:5"};
    features_set *fs = NULL;
    CHECK_EQ_INT(features_set_new(specs, 2, &fs, NULL, 0), 0);
    if (!fs)
        return;
    inference_policy pol;
    training_policy_default(&pol);
    pol.horizon = 4;
    pol.atr_period = 5;
    enum { N = 100, W = 20, SHORT = 12 };
    features_candle *a = calloc(N, sizeof *a), *bad = calloc(N, sizeof *bad);
    features_candle shortc[SHORT];
    double prev = 100;
    for (size_t i = 0; i < N; i++) {
        double close = 100 + 5 * sin(0.3 * (double)i);
        a[i] = (features_candle){(int64_t)i * 3600,       prev,  fmax(prev, close) + 0.5,
                                 fmin(prev, close) - 0.5, close, 10};
        prev = close;
    }
    memcpy(bad, a, N * sizeof *a);
    memcpy(shortc, a, sizeof shortc);
    bad[50].close = NAN;
    const features_candle *clean_s[2] = {shortc, a}, *bad_s[2] = {shortc, bad};
    size_t lens[2] = {SHORT, N};
    training_dataset d0, d1;
    memset(&d0, 0, sizeof d0);
    memset(&d1, 0, sizeof d1);
    CHECK_EQ_INT(training_dataset_build(fs, W, &pol, clean_s, lens, 2, NULL, NULL, NULL, &d0), 0);
    CHECK_EQ_INT(training_dataset_build(fs, W, &pol, bad_s, lens, 2, NULL, NULL, NULL, &d1), 0);
    /* rows at W-1 .. N-1-horizon of the long series only */
    CHECK_EQ_INT(d0.n, N - 4 - (W - 1));
    CHECK_EQ_INT(d0.dropped_invalid, 0);
    /* the 20 windows holding candle 50 go at least */
    CHECK(d1.dropped_invalid >= W);
    CHECK_EQ_INT(d1.n + d1.dropped_invalid, d0.n);
    size_t j = 0;
    for (size_t r = 0; r < d1.n; r++) {
        CHECK_EQ_INT(d1.series[r], 1);
        uint32_t i = d1.index[r];
        if (i >= 50 && i < 50 + W)
            UNIT_FAIL_("row at %u kept: its window holds the NaN", i);
        while (j < d0.n && d0.index[j] != i)
            j++;
        if (j == d0.n) {
            UNIT_FAIL_("row at %u not in the clean set", i);
            break;
        }
        if (memcmp(&d1.x[r * d1.d], &d0.x[j * d0.d], d0.d * sizeof(double)) != 0 ||
            memcmp(&d1.y[r], &d0.y[j], sizeof d0.y[j]) != 0)
            UNIT_FAIL_("row at %u differs from the clean one", i);
    }
    training_dataset_cleanup(&d0);
    training_dataset_cleanup(&d1);
    /* every candle invalid: no row, no data (each drop logs a warning) */
    util_log_configure(UTIL_LOG_ERROR, false);
    for (size_t i = 0; i < N; i++)
        bad[i].volume = -1;
    const features_candle *all_bad[1] = {bad};
    size_t len1[1] = {N};
    CHECK_EQ_INT(training_dataset_build(fs, W, &pol, all_bad, len1, 1, NULL, NULL, NULL, &d1),
                 PD_ENODATA);
    CHECK(d1.x == NULL);
    util_log_configure(UTIL_LOG_INFO, false);
    free(a);
    free(bad);
    features_set_free(fs);
}

/* The test window's figures on four hand-made rows: accuracy, precision
 * and recall per class (absent when nothing was predicted or labelled),
 * calls above min_confidence and their hit rate, the majority baseline; a
 * probability of 0 for the true class costs -ln 1e-15 (finite), as does a
 * prior of 0; an empty window adds nothing; metrics past the table's size
 * are dropped while the ones in it still update. */
TEST(test_evaluate_by_hand)
{
    training_result *r = calloc(1, sizeof *r);
    CHECK(r != NULL);
    if (!r)
        return;
    /* rows: LONG called right (0.7), LONG called wrong on a SHORT (0.6),
     * LONG too shy to be a call on a LONG (0.4), NO_TRADE right */
    const double probs[] = {0.7, 0.2, 0.1, 0.6, 0.0, 0.4, 0.4, 0.3, 0.3, 0.1, 0.1, 0.8};
    training_label y[4];
    memset(y, 0, sizeof y);
    y[0].cls = INFERENCE_LONG;
    y[1].cls = INFERENCE_SHORT;
    y[2].cls = INFERENCE_LONG;
    y[3].cls = INFERENCE_NO_TRADE;
    const size_t idx[] = {0, 1, 2, 3};
    training__eval_in in = {probs, y, idx, 4, 0.5, {0.5, 0.0, 0.5}};
    training__evaluate(&in, r);
    CHECK_NEAR(r->test_accuracy, 0.75, 1e-15);
    CHECK_NEAR(training_result_metric(r, "precision_long"), 2.0 / 3.0, 1e-15);
    CHECK_NEAR(training_result_metric(r, "recall_long"), 1.0, 1e-15);
    CHECK(isnan(training_result_metric(r, "precision_short"))); /* never predicted */
    CHECK_NEAR(training_result_metric(r, "recall_short"), 0.0, 0);
    CHECK_NEAR(training_result_metric(r, "calls"), 2, 0);
    CHECK_NEAR(training_result_metric(r, "hit_rate_calls"), 0.5, 1e-15);
    CHECK_NEAR(training_result_metric(r, "calls_short"), 0, 0);
    CHECK(isnan(training_result_metric(r, "hit_rate_short")));
    CHECK_NEAR(training_result_metric(r, "baseline_class"), INFERENCE_LONG, 0);
    CHECK_NEAR(r->baseline_accuracy, 0.5, 1e-15);
    double ll = -(log(0.7) + log(1e-15) + log(0.4) + log(0.8)) / 4;
    CHECK_NEAR(training_result_metric(r, "log_loss"), ll, 1e-12);
    double bll = -(log(0.5) + log(1e-15) + log(0.5) + log(0.5)) / 4;
    CHECK_NEAR(training_result_metric(r, "baseline_log_loss"), bll, 1e-12);
    CHECK(isnan(training__log_loss(probs, y, idx, 0)));

    /* an empty window: nothing added */
    size_t before = r->n_metrics;
    in.n = 0;
    training__evaluate(&in, r);
    CHECK_EQ_INT(r->n_metrics, before);

    /* the table full: a new name is dropped, a known one updated */
    char name[32];
    for (size_t i = r->n_metrics; i < TRAINING_MAX_METRICS + 5; i++) {
        snprintf(name, sizeof name, "extra_%zu", i);
        training__metric_add(r, name, (double)i);
    }
    CHECK_EQ_INT(r->n_metrics, TRAINING_MAX_METRICS);
    snprintf(name, sizeof name, "extra_%d", TRAINING_MAX_METRICS);
    CHECK(isnan(training_result_metric(r, name)));
    snprintf(name, sizeof name, "extra_%d", TRAINING_MAX_METRICS - 1);
    CHECK_NEAR(training_result_metric(r, name), TRAINING_MAX_METRICS - 1, 0);
    training__metric_add(r, "accuracy", 0.125);
    CHECK_NEAR(training_result_metric(r, "accuracy"), 0.125, 0);
    free(r);
}

int main(void)
{
    RUN(test_policy_check_names_each_bad_field);
    RUN(test_result_print_outcomes);
    RUN(test_metric_add);
    RUN(test_evaluate_by_hand);
    RUN(test_dataset_refuses_bad_arguments);
    RUN(test_dataset_drops_invalid_rows);
    return unit_report();
}
