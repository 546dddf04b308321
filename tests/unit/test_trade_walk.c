/* Unit tests of the training gate's trade walk (training__trade_walk): the
 * backtest of the test window scores each call by walking its trade over
 * the candles after it, with the triple barrier's rules. Hand-made candles
 * with known outcomes: each take-profit, the stop, the stop and a target in
 * one candle (the stop wins), a target then the stop (the target stands),
 * expiry marked to the last close, both sides; the horizon's end (a candle
 * past it is not looked at, a horizon past the series is no trade at all)
 * and levels the barrier refuses. Costs: 10 bps of a 100 entry over a risk
 * of 2 is 0.05 R. Pure. */
#include "tests/unit/unit.h"
#include "training/internal.h"
#include "util/util.h"

#include <math.h>

enum { N = 6 };

static inference_policy policy(uint32_t horizon)
{
    inference_policy p;
    memset(&p, 0, sizeof p);
    p.sl_atr = 1;
    p.tp_r[0] = 1;
    p.tp_r[1] = 2;
    p.tp_r[2] = 3;
    p.horizon = horizon;
    p.atr_period = 3;
    p.cost_bps = 10;
    p.min_risk_costs = 3;
    return p;
}

static inference_signal signal_for(int dir)
{
    inference_signal s;
    memset(&s, 0, sizeof s);
    s.direction = s.model_choice = s.levels_for = dir > 0 ? INFERENCE_LONG : INFERENCE_SHORT;
    s.entry = 100;
    s.stop_loss = 100 - dir * 2;
    for (int k = 0; k < INFERENCE_NTP; k++)
        s.tp[k] = 100 + dir * 2 * (k + 1);
    return s;
}

/* candle 0 is the call's; the others quiet (inside 99..101) unless set */
static void quiet(features_candle *c)
{
    for (int i = 0; i < N; i++)
        c[i] = (features_candle){1700000000 + i * 3600, 100, 100.5, 99.5, 100, 10};
}

static training__trade walk(const features_candle *c, size_t i, int dir, uint32_t horizon,
                            int want_rc)
{
    inference_signal s = signal_for(dir);
    inference_policy p = policy(horizon);
    training__trade t = {.outcome = -7, .tp_hit = -7, .r = -7, .net_r = -7};
    int rc = training__trade_walk(c, N, i, &s, &p, &t);
    if (rc != want_rc)
        UNIT_FAIL_("walk at %zu dir %d horizon %u: rc %d, want %d", i, dir, horizon, rc, want_rc);
    return t;
}

TEST(test_long_outcomes)
{
    features_candle c[N];
    /* TP2 on the second candle: +2 R gross, 1.95 net */
    quiet(c);
    c[2].high = 104.5;
    training__trade t = walk(c, 0, 1, 3, 0);
    CHECK_EQ_INT(t.outcome, TRAINING_TRADE_TP);
    CHECK_EQ_INT(t.tp_hit, 2);
    CHECK_NEAR(t.r, 2, 1e-12);
    CHECK_NEAR(t.net_r, 1.95, 1e-12);
    /* TP3 ends the trade: a stop after it does not count */
    quiet(c);
    c[1].high = 107;
    c[2].low = 90;
    t = walk(c, 0, 1, 3, 0);
    CHECK_EQ_INT(t.outcome, TRAINING_TRADE_TP);
    CHECK_EQ_INT(t.tp_hit, 3);
    CHECK_NEAR(t.r, 3, 1e-12);
    /* the stop: -1 R, -1.05 net */
    quiet(c);
    c[3].low = 97.9;
    t = walk(c, 0, 1, 3, 0);
    CHECK_EQ_INT(t.outcome, TRAINING_TRADE_SL);
    CHECK_EQ_INT(t.tp_hit, 0);
    CHECK_NEAR(t.r, -1, 0);
    CHECK_NEAR(t.net_r, -1.05, 1e-12);
    /* stop and TP1 in one candle: the stop (the pessimistic reading) */
    quiet(c);
    c[1].high = 102.5;
    c[1].low = 97;
    t = walk(c, 0, 1, 3, 0);
    CHECK_EQ_INT(t.outcome, TRAINING_TRADE_SL);
    CHECK_NEAR(t.r, -1, 0);
    /* TP1 first, the stop a candle later: TP1 was reached, +1 R */
    quiet(c);
    c[1].high = 102.5;
    c[2].low = 97;
    t = walk(c, 0, 1, 3, 0);
    CHECK_EQ_INT(t.outcome, TRAINING_TRADE_TP);
    CHECK_EQ_INT(t.tp_hit, 1);
    CHECK_NEAR(t.r, 1, 1e-12);
    /* neither: expired, marked to the horizon's last close (100.6: +0.3 R) */
    quiet(c);
    c[3].close = 100.6;
    t = walk(c, 0, 1, 3, 0);
    CHECK_EQ_INT(t.outcome, TRAINING_TRADE_EXPIRED);
    CHECK_EQ_INT(t.tp_hit, 0);
    CHECK_NEAR(t.r, 0.3, 1e-12);
    CHECK_NEAR(t.net_r, 0.25, 1e-12);
    /* a target one candle past the horizon is not seen */
    quiet(c);
    c[4].high = 110;
    t = walk(c, 0, 1, 3, 0);
    CHECK_EQ_INT(t.outcome, TRAINING_TRADE_EXPIRED);
    CHECK_NEAR(t.r, 0, 1e-12);
    t = walk(c, 0, 1, 4, 0); /* ... and is with a horizon one longer */
    CHECK_EQ_INT(t.outcome, TRAINING_TRADE_TP);
    CHECK_EQ_INT(t.tp_hit, 3);
}

TEST(test_short_outcomes)
{
    features_candle c[N];
    /* the long's winning candle is the short's stop */
    quiet(c);
    c[2].high = 104.5;
    training__trade t = walk(c, 0, -1, 3, 0);
    CHECK_EQ_INT(t.outcome, TRAINING_TRADE_SL);
    CHECK_NEAR(t.r, -1, 0);
    /* TP3 below */
    quiet(c);
    c[2].low = 93.5;
    t = walk(c, 0, -1, 3, 0);
    CHECK_EQ_INT(t.outcome, TRAINING_TRADE_TP);
    CHECK_EQ_INT(t.tp_hit, 3);
    CHECK_NEAR(t.r, 3, 1e-12);
    CHECK_NEAR(t.net_r, 2.95, 1e-12);
    /* expired above the entry: a loss of 0.5 R for a short */
    quiet(c);
    c[3].close = 101;
    t = walk(c, 0, -1, 3, 0);
    CHECK_EQ_INT(t.outcome, TRAINING_TRADE_EXPIRED);
    CHECK_NEAR(t.r, -0.5, 1e-12);
    CHECK_NEAR(t.net_r, -0.55, 1e-12);
}

/* A call whose horizon runs past the series is not a trade (PD_ENODATA,
 * out untouched): N = 6 candles, horizon 3, so calls at 0..2 walk and at 3
 * onwards do not. Levels the barrier refuses are PD_EINVAL. */
TEST(test_horizon_end_and_bad_levels)
{
    features_candle c[N];
    quiet(c);
    walk(c, 2, 1, 3, 0);
    training__trade t = walk(c, 3, 1, 3, PD_ENODATA);
    CHECK_EQ_INT(t.outcome, -7);
    CHECK_NEAR(t.r, -7, 0);
    walk(c, 5, 1, 0, 0); /* horizon 0 at the last candle: nothing to walk */
    walk(c, 6, 1, 0, PD_ENODATA);
    walk(c, 100, -1, 3, PD_ENODATA);

    inference_signal s = signal_for(1);
    inference_policy p = policy(3);
    s.stop_loss = 101; /* above a long's entry */
    t.outcome = -7;
    CHECK_EQ_INT(training__trade_walk(c, N, 0, &s, &p, &t), PD_EINVAL);
    CHECK_EQ_INT(t.outcome, -7);
    s = signal_for(-1);
    s.tp[1] = 99; /* a short's targets out of order */
    CHECK_EQ_INT(training__trade_walk(c, N, 0, &s, &p, &t), PD_EINVAL);
    s = signal_for(1);
    s.entry = NAN;
    CHECK_EQ_INT(training__trade_walk(c, N, 0, &s, &p, &t), PD_EINVAL);
    CHECK_EQ_INT(t.outcome, -7);
}

/* With no candle walked (horizon 0) the trade expires flat: r 0, and the
 * net is the cost alone. */
TEST(test_nothing_walked_is_flat)
{
    features_candle c[N];
    quiet(c);
    training__trade t = walk(c, 5, 1, 0, 0);
    CHECK_EQ_INT(t.outcome, TRAINING_TRADE_EXPIRED);
    CHECK_NEAR(t.r, 0, 0);
    CHECK_NEAR(t.net_r, -0.05, 1e-12);
}

/* The signal at candle i needs a whole window ending at i. */
TEST(test_signal_needs_a_window)
{
    features_candle c[N];
    quiet(c);
    inference_policy p = policy(3);
    double probs[INFERENCE_NCLASS] = {0.7, 0.2, 0.1};
    inference_signal s;
    memset(&s, 0x5a, sizeof s);
    unsigned char before[sizeof s];
    memcpy(before, &s, sizeof s);
    CHECK_EQ_INT(training__signal_at(c, 5, 3, &p, probs, &s), PD_EINVAL);
    CHECK(memcmp(before, &s, sizeof s) == 0);
    CHECK_EQ_INT(training__signal_at(c, 5, 4, &p, probs, &s), 0);
    CHECK_EQ_INT(s.levels_for, INFERENCE_LONG);
    CHECK_NEAR(s.entry, 100, 1e-12);
    CHECK(s.stop_loss < s.entry);
}

int main(void)
{
    RUN(test_long_outcomes);
    RUN(test_short_outcomes);
    RUN(test_horizon_end_and_bad_levels);
    RUN(test_nothing_walked_is_flat);
    RUN(test_signal_needs_a_window);
    return unit_report();
}
