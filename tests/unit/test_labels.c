/*
 * Triple-barrier labels on hand-built series: entry 100, ATR 1, so with
 * the default policy (sl 1.5 ATR, TP1 1R) LONG has stop 98.5 / TP1 101.5 and
 * SHORT stop 101.5 / TP1 98.5.
 */
#include "training/internal.h"
#include "unit.h"

/* Candle i: the entry candle closes at 100; the rest are given (high, low). */
static features_candle C(double high, double low)
{
    features_candle c = {0, 100, high, low, (high + low) / 2, 1};
    return c;
}

static int label(features_candle *c, size_t n, const inference_policy *p, training_label *l)
{
    c[0] = (features_candle){0, 100, 100.2, 99.8, 100, 1};
    return training_label_at(c, n, 0, 1.0, p, l);
}

TEST(test_target_first)
{
    inference_policy p;
    training_policy_default(&p);
    p.horizon = 4;
    features_candle c[5] = {{0}, C(101, 99.5), C(102, 100), C(100.5, 99), C(100, 99)};
    training_label l;
    CHECK_EQ_INT(label(c, 5, &p, &l), 0);
    CHECK_EQ_INT(l.cls, INFERENCE_LONG);
    CHECK_EQ_INT(l.eta, 2);
    CHECK_EQ_INT(l.eta_tp[0], 2);
}

TEST(test_exact_touch_counts)
{
    inference_policy p;
    training_policy_default(&p);
    p.horizon = 2;
    features_candle c[3] = {{0}, C(101.5, 99), C(100, 99)}; /* high == TP1 */
    training_label l;
    CHECK_EQ_INT(label(c, 3, &p, &l), 0);
    CHECK_EQ_INT(l.cls, INFERENCE_LONG);
    CHECK_EQ_INT(l.eta, 1);
    features_candle d[3] = {{0}, C(100.5, 98.5), C(101.6, 99)}; /* low == long stop */
    CHECK_EQ_INT(label(d, 3, &p, &l), 0);
    /* low 98.5 is also SHORT's TP1, high 100.5 below its stop: SHORT */
    CHECK_EQ_INT(l.cls, INFERENCE_SHORT);
    CHECK_EQ_INT(l.eta, 1);
}

TEST(test_stop_first)
{
    inference_policy p;
    training_policy_default(&p);
    p.tp_r[0] = 2, p.tp_r[1] = 3, p.tp_r[2] = 4; /* LONG TP1 103, SHORT TP1 97 */
    p.horizon = 4;
    features_candle c[5] = {{0}, C(100, 98), C(103.5, 99), C(104, 100), C(105, 101)};
    training_label l;
    CHECK_EQ_INT(label(c, 5, &p, &l), 0);
    /* LONG stopped at candle 1 before its TP1 at 2; SHORT stopped at 2 */
    CHECK_EQ_INT(l.cls, INFERENCE_NO_TRADE);
    CHECK_EQ_INT(l.eta, 0);
}

TEST(test_both_barriers_in_one_candle_is_stop)
{
    inference_policy p;
    training_policy_default(&p);
    p.tp_r[0] = 2, p.tp_r[1] = 3, p.tp_r[2] = 4;
    p.horizon = 3;
    /* candle 1 spans 98.4..103.2: LONG's stop and TP1, SHORT's stop */
    features_candle c[4] = {{0}, C(103.2, 98.4), C(110, 105), C(95, 90)};
    training_label l;
    CHECK_EQ_INT(label(c, 4, &p, &l), 0);
    CHECK_EQ_INT(l.cls, INFERENCE_NO_TRADE);
    /* default policy, candle touching LONG TP1 and stop only */
    training_policy_default(&p);
    p.horizon = 2;
    features_candle d[3] = {{0}, C(101.6, 98.4), C(101, 99)};
    CHECK_EQ_INT(label(d, 3, &p, &l), 0);
    CHECK_EQ_INT(l.cls, INFERENCE_NO_TRADE);
}

TEST(test_expiry_is_no_trade)
{
    inference_policy p;
    training_policy_default(&p);
    p.horizon = 3;
    features_candle c[6] = {{0},        C(101, 99), C(101.4, 98.6), C(100.5, 99.5),
                            C(120, 80), C(120, 80)};
    training_label l;
    CHECK_EQ_INT(label(c, 6, &p, &l), 0);
    CHECK_EQ_INT(l.cls, INFERENCE_NO_TRADE); /* candle 4 is past the horizon */
    CHECK_EQ_INT(l.eta, 0);
    CHECK_EQ_INT(l.eta_tp[0], 0);
}

TEST(test_short_mirror)
{
    inference_policy p;
    training_policy_default(&p);
    p.horizon = 6;
    /* mirror of the LONG case: TP1 98.5 at 2, TP2 97 at 4, stopped at 5 */
    features_candle c[7] = {{0},         C(100.5, 99), C(100, 98.4), C(99, 97.5),
                            C(98, 96.9), C(101.5, 97), C(99, 90)};
    training_label l;
    CHECK_EQ_INT(label(c, 7, &p, &l), 0);
    CHECK_EQ_INT(l.cls, INFERENCE_SHORT);
    CHECK_EQ_INT(l.eta, 2);
    CHECK_EQ_INT(l.eta_tp[0], 2);
    CHECK_EQ_INT(l.eta_tp[1], 4);
    CHECK_EQ_INT(l.eta_tp[2], 0); /* TP3 95.5 only after the stop */

    features_candle d[7] = {{0},           C(101, 99.5), C(101.6, 100), C(102.5, 100.5),
                            C(103.1, 102), C(103, 98.5), C(110, 104)};
    CHECK_EQ_INT(label(d, 7, &p, &l), 0);
    CHECK_EQ_INT(l.cls, INFERENCE_LONG);
    CHECK_EQ_INT(l.eta, 2);
    CHECK_EQ_INT(l.eta_tp[1], 4);
    CHECK_EQ_INT(l.eta_tp[2], 0);
}

TEST(test_both_win_first_target_decides)
{
    inference_policy p;
    training_policy_default(&p);
    p.tp_r[0] = 0.5, p.tp_r[1] = 1, p.tp_r[2] = 1.5; /* LONG TP1 100.75, SHORT TP1 99.25 */
    p.horizon = 3;
    features_candle c[4] = {{0}, C(100.8, 99.5), C(100.5, 99.2), C(100, 99.9)};
    training_label l;
    CHECK_EQ_INT(label(c, 4, &p, &l), 0);
    CHECK_EQ_INT(l.cls, INFERENCE_LONG);
    CHECK_EQ_INT(l.eta, 1);
    features_candle d[4] = {{0}, C(100.5, 99.2), C(100.8, 99.5), C(100, 99.9)};
    CHECK_EQ_INT(label(d, 4, &p, &l), 0);
    CHECK_EQ_INT(l.cls, INFERENCE_SHORT);
    /* both TP1s in the same candle: NO_TRADE */
    features_candle e[4] = {{0}, C(100.8, 99.2), C(101, 99), C(100, 99.9)};
    CHECK_EQ_INT(label(e, 4, &p, &l), 0);
    CHECK_EQ_INT(l.cls, INFERENCE_NO_TRADE);
}

TEST(test_levels_scale_with_atr_and_entry)
{
    /* entry 200 (close of candle 3), atr 4: LONG stop 194, TP1 206 */
    inference_policy p;
    training_policy_default(&p);
    p.horizon = 2;
    features_candle c[6] = {{0, 1, 1, 1, 1, 1},
                            {0, 1, 1, 1, 1, 1},
                            {0, 1, 1, 1, 1, 1},
                            {0, 200, 201, 199, 200, 1},
                            {0, 200, 205.9, 194.1, 200, 1},
                            {0, 200, 206, 196, 205, 1}};
    training_label l;
    CHECK_EQ_INT(training_label_at(c, 6, 3, 4.0, &p, &l), 0);
    CHECK_EQ_INT(l.cls, INFERENCE_LONG);
    CHECK_EQ_INT(l.eta, 2);
}

TEST(test_horizon_past_data_and_bad_input)
{
    inference_policy p;
    training_policy_default(&p);
    p.horizon = 3;
    features_candle c[4] = {{0}, C(100, 99), C(100, 99), C(100, 99)};
    training_label l = {.cls = 7};
    CHECK_EQ_INT(label(c, 4, &p, &l), 0); /* i + horizon == n - 1: fits */
    CHECK_EQ_INT(training_label_at(c, 3, 0, 1.0, &p, &l), PD_ENODATA);
    CHECK_EQ_INT(training_label_at(c, 4, 1, 1.0, &p, &l), PD_ENODATA);
    CHECK_EQ_INT(training_label_at(c, 4, 9, 1.0, &p, &l), PD_ENODATA);
    CHECK_EQ_INT(training_label_at(c, 4, 0, 0.0, &p, &l), PD_EINVAL);
    CHECK_EQ_INT(training_label_at(c, 4, 0, NAN, &p, &l), PD_EINVAL);
    CHECK_EQ_INT(training_label_at(c, 4, 0, -1, &p, &l), PD_EINVAL);
    inference_policy bad = p;
    bad.sl_atr = 0;
    CHECK_EQ_INT(training_label_at(c, 4, 0, 1.0, &bad, &l), PD_EINVAL);
    bad = p;
    bad.tp_r[1] = 0.5; /* not ascending */
    CHECK_EQ_INT(training_label_at(c, 4, 0, 1.0, &bad, &l), PD_EINVAL);
    bad = p;
    bad.horizon = 0;
    CHECK_EQ_INT(training_label_at(c, 4, 0, 1.0, &bad, &l), PD_EINVAL);
    features_candle z[4] = {{0, 0, 0, 0, 0, 0}, C(100, 99), C(100, 99), C(100, 99)};
    CHECK_EQ_INT(training_label_at(z, 4, 0, 1.0, &p, &l), PD_EINVAL); /* entry 0 */
}

TEST(test_eta_medians)
{
    training_label y[6] = {
        {INFERENCE_LONG, 2, {2, 5, 0}},     {INFERENCE_LONG, 4, {4, 6, 9}},
        {INFERENCE_LONG, 9, {9, 0, 0}},     {INFERENCE_SHORT, 3, {3, 7, 0}},
        {INFERENCE_NO_TRADE, 0, {0, 0, 0}}, {INFERENCE_SHORT, 5, {5, 0, 0}},
    };
    size_t idx[6] = {0, 1, 2, 3, 4, 5};
    double eta[2], tp[3];
    CHECK_EQ_INT(training__eta_medians(y, idx, 6, eta, tp), 0);
    CHECK_NEAR(eta[0], 4, 1e-12); /* 2 4 9 */
    CHECK_NEAR(eta[1], 4, 1e-12); /* 3 5 */
    CHECK_NEAR(tp[0], 4, 1e-12);  /* 2 3 4 5 9 */
    CHECK_NEAR(tp[1], 6, 1e-12);  /* 5 6 7 */
    CHECK_NEAR(tp[2], 9, 1e-12);  /* 9 */
    size_t only_long[1] = {0};
    CHECK_EQ_INT(training__eta_medians(y, only_long, 1, eta, tp), 0);
    CHECK_NEAR(eta[0], 2, 1e-12);
    CHECK(isnan(eta[1]));
    CHECK(isnan(tp[2]));
}

TEST(test_default_policy)
{
    inference_policy p;
    training_policy_default(&p);
    CHECK_NEAR(p.sl_atr, 1.5, 0);
    CHECK_NEAR(p.tp_r[0], 1, 0);
    CHECK_NEAR(p.tp_r[1], 2, 0);
    CHECK_NEAR(p.tp_r[2], 3, 0);
    CHECK_EQ_INT(p.horizon, 16);
    CHECK_NEAR(p.min_confidence, 0.45, 0);
    CHECK_EQ_INT(p.atr_period, 14);
    CHECK_EQ_INT(p.max_age_s, 30 * 86400);
}

int main(void)
{
    RUN(test_target_first);
    RUN(test_exact_touch_counts);
    RUN(test_stop_first);
    RUN(test_both_barriers_in_one_candle_is_stop);
    RUN(test_expiry_is_no_trade);
    RUN(test_short_mirror);
    RUN(test_both_win_first_target_decides);
    RUN(test_levels_scale_with_atr_and_entry);
    RUN(test_horizon_past_data_and_bad_input);
    RUN(test_eta_medians);
    RUN(test_default_policy);
    return unit_report();
}
