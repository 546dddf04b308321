/*
 * Unit tests for the rules between a model's probabilities and the answer
 * a user reads: the price tick inferred from candles, levels rounded to it
 * and the two-tick floor, the cost floor, the overdue rule of the rendered
 * tail, and the cross-timeframe consensus. Pure: no database.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "features/features.h"
#include "inference/inference.h"
#include "predict/predict.h"
#include "tests/unit/unit.h"
#include "util/util.h"

static inference_policy policy(void)
{
    inference_policy p;
    memset(&p, 0, sizeof p);
    p.sl_atr = 1.5;
    p.tp_r[0] = 1, p.tp_r[1] = 2, p.tp_r[2] = 3;
    p.horizon = 16;
    p.min_confidence = 0.45;
    p.atr_period = 14;
    p.eta_candles[0] = p.eta_candles[1] = NAN;
    p.cost_bps = INFERENCE_DEFAULT_COST_BPS;
    p.min_risk_costs = INFERENCE_DEFAULT_MIN_RISK_COSTS;
    return p;
}

TEST(tick_from_candle_decimals)
{
    features_candle c[3] = {{0, 100.25, 100.5, 100.0, 100.25, 1},
                            {60, 100.25, 101.0, 100.1, 100.75, 1},
                            {120, 100.75, 100.8, 100.7, 100.71, 1}};
    CHECK_NEAR(features_price_tick(c, 3), 0.01, 1e-15);
    features_candle tenths[1] = {{0, 100.1, 100.5, 99.9, 100.2, 1}};
    CHECK_NEAR(features_price_tick(tenths, 1), 0.1, 1e-15);
    features_candle whole[1] = {{0, 6000, 6010, 5990, 6005, 1}};
    CHECK_NEAR(features_price_tick(whole, 1), 1, 0);
    features_candle sats[1] = {{0, 5.379e-05, 5.41e-05, 5.35e-05, 5.4e-05, 1}};
    CHECK_NEAR(features_price_tick(sats, 1), 1e-8, 1e-20);
    /* synthetic prices with every decimal: no tick known */
    features_candle noisy[1] = {{0, 100.123456789123, 101.2, 99.1, 100.5, 1}};
    CHECK_NEAR(features_price_tick(noisy, 1), 0, 0);
    CHECK_NEAR(features_price_tick(NULL, 0), 0, 0);
}

/* The case of a market quoted in 0.01 with an ATR of 2.7e-5: every level is
 * the same tradable price, so the call is NO_TRADE with its reason. */
TEST(levels_finer_than_the_tick_are_no_trade)
{
    inference_policy pol = policy();
    pol.cost_bps = 0;
    double probs[3] = {0.7, 0.1, 0.2};
    inference_signal s;
    CHECK_EQ_INT(inference_signal_make(&pol, probs, 1.23, 2.7e-5, &s), 0);
    CHECK_EQ_INT(s.direction, INFERENCE_LONG);
    inference_signal_market(&pol, 0.01, &s);
    CHECK_EQ_INT(s.direction, INFERENCE_NO_TRADE);
    CHECK_EQ_INT(s.model_choice, INFERENCE_LONG);
    CHECK_EQ_INT(s.no_trade_reason, INFERENCE_NT_TICK);
    CHECK_NEAR(s.confidence, 0.7, 0);
    CHECK_NEAR(s.tick, 0.01, 0);
    CHECK_NEAR(s.entry, 1.23, 1e-12);
    CHECK_NEAR(s.stop_loss, 1.23, 1e-12);
    CHECK_NEAR(s.tp[0], 1.23, 1e-12);
    CHECK(strcmp(inference_no_trade_reason_name(s.no_trade_reason), "levels_under_tick") == 0);
    /* a wide enough ATR: levels on the tick, the call stands */
    CHECK_EQ_INT(inference_signal_make(&pol, probs, 1.23, 0.0237, &s), 0);
    inference_signal_market(&pol, 0.01, &s);
    CHECK_EQ_INT(s.direction, INFERENCE_LONG);
    CHECK_NEAR(s.stop_loss, 1.19, 1e-12); /* 1.23 - 0.03555 */
    CHECK_NEAR(s.tp[0], 1.27, 1e-12);
    CHECK_NEAR(s.tp[2], 1.34, 1e-12);
    CHECK_NEAR(fmod(s.tp[1] * 100 + 1e-9, 1.0), 0, 1e-6);
}

TEST(risk_under_the_cost_floor_is_no_trade)
{
    inference_policy pol = policy(); /* 10 bps a round trip, 3 of them */
    double probs[3] = {0.1, 0.8, 0.1};
    inference_signal s;
    /* risk 1.5 x 0.01 = 0.015 on 100: 1.5 bps, under 30 bps */
    CHECK_EQ_INT(inference_signal_make(&pol, probs, 100, 0.01, &s), 0);
    inference_signal_market(&pol, 0, &s);
    CHECK_EQ_INT(s.direction, INFERENCE_NO_TRADE);
    CHECK_EQ_INT(s.no_trade_reason, INFERENCE_NT_COST);
    CHECK_EQ_INT(s.model_choice, INFERENCE_SHORT);
    /* risk 1.5 x 0.5 = 0.75 on 100: 75 bps, over 30 */
    CHECK_EQ_INT(inference_signal_make(&pol, probs, 100, 0.5, &s), 0);
    inference_signal_market(&pol, 0, &s);
    CHECK_EQ_INT(s.direction, INFERENCE_SHORT);
    CHECK_NEAR(inference_cost_r(&pol, 100, 0.75), 0.1 / 0.75, 1e-12);
    /* an explicit zero cost never refuses */
    pol.cost_bps = 0;
    CHECK_EQ_INT(inference_signal_make(&pol, probs, 100, 0.01, &s), 0);
    inference_signal_market(&pol, 0, &s);
    CHECK_EQ_INT(s.direction, INFERENCE_SHORT);
}

/* The signal's edges: class names out of range; a missing argument; levels
 * that overflow a double (refused, never served as inf); a short's far
 * take-profit that rounds to zero on the tick (one tick instead: a price is
 * positive); no tick known (levels as computed); no cost floor; the cost in
 * R for no risk or no cost. */
TEST(signal_edges)
{
    CHECK_EQ_STR(inference_class_name((enum inference_class)3), "UNKNOWN");
    CHECK_EQ_STR(inference_class_name((enum inference_class) - 1), "UNKNOWN");
    CHECK_EQ_STR(inference_class_name(INFERENCE_SHORT), "SHORT");
    CHECK_EQ_INT(inference_class_parse("SHORT"), INFERENCE_SHORT);
    CHECK_EQ_INT(inference_class_parse("short"), -1);
    CHECK_EQ_INT(inference_class_parse(NULL), -1);
    CHECK(inference_no_trade_reason_name(99) == NULL);

    inference_policy pol = policy();
    double lng[3] = {0.7, 0.1, 0.2}, sht[3] = {0.1, 0.7, 0.2};
    inference_signal s, before;
    memset(&s, 0x11, sizeof s);
    before = s;
    CHECK_EQ_INT(inference_signal_make(NULL, lng, 100, 1, &s), PD_EINVAL);
    CHECK_EQ_INT(inference_signal_make(&pol, NULL, 100, 1, &s), PD_EINVAL);
    CHECK_EQ_INT(inference_signal_make(&pol, lng, 100, 1, NULL), PD_EINVAL);
    /* a short's stop past the largest double */
    CHECK_EQ_INT(inference_signal_make(&pol, sht, 1e308, 1e308, &s), PD_EINVAL);
    /* a long's stop positive but its take-profit past the largest double */
    CHECK_EQ_INT(inference_signal_make(&pol, lng, 1.7e308, 1e308, &s), PD_EINVAL);
    CHECK(memcmp(&s, &before, sizeof s) == 0);

    /* short from 0.05, risk 1.5 x 0.0101333 = 0.0152: TP3 at 0.0044 rounds
     * to 0 on a 0.01 tick and is put at one tick */
    pol.cost_bps = 0;
    CHECK_EQ_INT(inference_signal_make(&pol, sht, 0.05, 0.0152 / 1.5, &s), 0);
    CHECK_NEAR(s.tp[2], 0.0044, 1e-12);
    inference_signal_market(&pol, 0.01, &s);
    CHECK_EQ_INT(s.direction, INFERENCE_SHORT);
    CHECK_NEAR(s.stop_loss, 0.07, 1e-12);
    CHECK_NEAR(s.tp[0], 0.03, 1e-12);
    CHECK_NEAR(s.tp[1], 0.02, 1e-12);
    CHECK_NEAR(s.tp[2], 0.01, 1e-12);

    /* no tick known (0 or NaN): nothing rounded, tick stays 0 */
    const double ticks[] = {0, NAN, -0.01};
    for (size_t i = 0; i < 3; i++) {
        CHECK_EQ_INT(inference_signal_make(&pol, lng, 1.23, 0.0237, &s), 0);
        inference_signal_market(&pol, ticks[i], &s);
        CHECK_EQ_INT(s.direction, INFERENCE_LONG);
        CHECK_NEAR(s.tick, 0, 0);
        CHECK_NEAR(s.stop_loss, 1.23 - 1.5 * 0.0237, 1e-15);
    }

    /* a cost but no floor (min_risk_costs 0): a tiny risk still calls */
    pol.cost_bps = 10;
    pol.min_risk_costs = 0;
    CHECK_EQ_INT(inference_signal_make(&pol, sht, 100, 0.01, &s), 0);
    inference_signal_market(&pol, 0, &s);
    CHECK_EQ_INT(s.direction, INFERENCE_SHORT);
    CHECK_EQ_INT(s.no_trade_reason, INFERENCE_NT_NONE);

    CHECK_NEAR(inference_cost_r(&pol, 100, 0), 0, 0);
    CHECK_NEAR(inference_cost_r(&pol, 100, NAN), 0, 0);
    CHECK_NEAR(inference_cost_r(&pol, 100, 2), 0.05, 1e-15);
    pol.cost_bps = 0;
    CHECK_NEAR(inference_cost_r(&pol, 100, 2), 0, 0);
}

/* A hand-made result whose fragment is what render.c writes before the
 * tail: "{...,\"warnings\":[" with n_warnings fixed warnings. */
static predict_result result(int64_t candle_open, int64_t tfs, const char *fragment, int nw)
{
    predict_result p;
    memset(&p, 0, sizeof p);
    p.tf_seconds = tfs;
    p.candle_time = candle_open;
    p.candle_close = candle_open + tfs;
    p.valid_until = candle_open + 2 * tfs;
    p.prediction_time = candle_open + tfs + 5;
    p.fragment = (char *)fragment;
    p.fragment_len = strlen(fragment);
    p.n_warnings = nw;
    return p;
}

TEST(overdue_answers_are_stale)
{
    const int64_t t0 = 1717999200, tf = 900;
    predict_result p = result(t0, tf, "{\"x\":1,\"warnings\":[", 0);
    util_buf b;
    util_buf_init(&b);
    /* before valid_until: fresh, no warning */
    predict_render(&b, &p, t0 + tf + 60);
    CHECK(strstr(b.data, "\"stale\":false") != NULL);
    CHECK(strstr(b.data, "\"warnings\":[]") != NULL);
    /* at valid_until the next candle is due: stale, and said why */
    b.len = 0;
    predict_render(&b, &p, t0 + 2 * tf);
    CHECK(strstr(b.data, "\"stale\":true") != NULL);
    CHECK(strstr(b.data, "overdue: valid until") != NULL);
    /* an answer computed from old data is stale from the start */
    p.stale_data = true;
    b.len = 0;
    predict_render(&b, &p, t0 + tf + 60);
    CHECK(strstr(b.data, "\"stale\":true") != NULL);
    CHECK(strstr(b.data, "stale data") != NULL);
    /* fixed warnings in the fragment are kept, with a separator */
    predict_result q = result(t0, tf, "{\"x\":1,\"warnings\":[\"model below baseline\"", 1);
    b.len = 0;
    predict_render(&b, &q, t0 + 3 * tf);
    CHECK(strstr(b.data, "[\"model below baseline\",\"overdue") != NULL);
    util_buf_cleanup(&b);
}

/* Each time-dependent part of the tail on its own: a clock behind the
 * candle's close (staleness clamped to 0), data older than
 * PREDICT_STALE_TFS timeframes (the exact age said), gaps in the window
 * (said first), a model past its max age (and one exactly at it, or with
 * no max age or no training time, which is not expired). */
TEST(render_tail_each_warning)
{
    const int64_t t0 = 1717999200, tf = 900;
    predict_result p = result(t0, tf, "{\"x\":1,\"warnings\":[", 0);
    util_buf b;
    util_buf_init(&b);
    predict_render(&b, &p, t0 + tf - 30);
    CHECK_EQ_STR(b.data, "{\"x\":1,\"warnings\":[],\"staleness_s\":0,\"stale\":false,"
                         "\"model_expired\":false}");
    b.len = 0;
    predict_render(&b, &p, t0 + tf + 3 * tf);
    CHECK(strstr(b.data, ",\"stale data: the last closed candle ended 2700 s ago\"],") != NULL);
    CHECK(strstr(b.data, "\"staleness_s\":2700,\"stale\":true,\"model_expired\":false}") != NULL);
    /* two timeframes exactly is overdue but not yet old data */
    b.len = 0;
    predict_render(&b, &p, t0 + tf + 2 * tf);
    CHECK(strstr(b.data, "overdue") != NULL);
    CHECK(strstr(b.data, "stale data") == NULL);

    p.gaps = 2;
    b.len = 0;
    predict_render(&b, &p, t0 + tf + 60);
    CHECK_EQ_STR(b.data, "{\"x\":1,\"warnings\":[\"2 missing candles in the feature window\"],"
                         "\"staleness_s\":60,\"stale\":false,\"model_expired\":false}");
    p.gaps = 0;

    const int64_t now = t0 + tf + 60;
    p.max_age_s = 3 * 86400;
    p.trained_at = now - 3 * 86400 - 1;
    b.len = 0;
    predict_render(&b, &p, now);
    CHECK_EQ_STR(b.data, "{\"x\":1,\"warnings\":[\"model expired: trained 3 days ago\"],"
                         "\"staleness_s\":60,\"stale\":false,\"model_expired\":true}");
    p.trained_at = now - 3 * 86400;
    b.len = 0;
    predict_render(&b, &p, now);
    CHECK(strstr(b.data, "\"model_expired\":false}") != NULL);
    CHECK(strstr(b.data, "\"warnings\":[]") != NULL);
    p.max_age_s = 0;
    p.trained_at = now - 400 * 86400;
    b.len = 0;
    predict_render(&b, &p, now);
    CHECK(strstr(b.data, "\"model_expired\":false}") != NULL);
    p.max_age_s = 86400;
    p.trained_at = 0;
    b.len = 0;
    predict_render(&b, &p, now);
    CHECK(strstr(b.data, "\"model_expired\":false}") != NULL);
    CHECK(util_buf_ok(&b));
    util_buf_cleanup(&b);
}

TEST(consensus_rule)
{
    const int64_t t0 = 1717999200, now = t0 + 1000;
    const char *tfs[4] = {"15m", "1h", "4h", "1d"};
    predict_result r[4];
    for (int i = 0; i < 4; i++) {
        r[i] = result(t0, 900, "{", 0);
        r[i].valid_until = now + 100;
        r[i].model_accuracy = 0.6;
    }
    r[0].direction = INFERENCE_LONG, r[0].probs[0] = 0.7;
    r[1].direction = INFERENCE_LONG, r[1].probs[0] = 0.6;
    r[2].direction = INFERENCE_SHORT, r[2].probs[1] = 0.5, r[2].model_accuracy = NAN;
    r[3].direction = INFERENCE_NO_TRADE, r[3].no_trade_reason = INFERENCE_NT_BASELINE;
    const predict_result *ps[4] = {&r[0], &r[1], &r[2], &r[3]};
    predict_consensus c;
    predict_consensus_of(ps, tfs, 4, now, &c);
    /* (0.6 x 0.7 + 0.6 x 0.6 - 0.5 x 0.5) / (0.6 + 0.6 + 0.5) */
    CHECK_NEAR(c.score, (0.42 + 0.36 - 0.25) / 1.7, 1e-12);
    CHECK_EQ_INT(c.direction, INFERENCE_LONG);
    CHECK_EQ_INT((int)c.n_agree, 2);
    CHECK_EQ_INT((int)c.n_disagree, 1);
    CHECK(strcmp(c.disagree[0], "4h") == 0);
    CHECK_EQ_INT((int)c.n_excluded, 1);
    CHECK(strcmp(c.excluded[0], "1d") == 0);
    /* a stale answer and a missing one do not vote; a weak lean is NO_TRADE */
    r[0].valid_until = now;
    ps[1] = NULL;
    predict_consensus_of(ps, tfs, 4, now, &c);
    CHECK_EQ_INT(c.direction, INFERENCE_SHORT); /* 4h alone: -0.5 */
    r[2].probs[1] = 0.2;
    predict_consensus_of(ps, tfs, 4, now, &c);
    CHECK_EQ_INT(c.direction, INFERENCE_NO_TRADE);
    CHECK_EQ_INT((int)c.n_disagree, 1);
    CHECK_EQ_INT((int)c.n_excluded, 3);
    util_buf b;
    util_buf_init(&b);
    predict_consensus_json(&c, &b);
    CHECK(strstr(b.data, "\"direction\":\"NO_TRADE\"") != NULL);
    CHECK(strstr(b.data, "\"excluded\":[\"15m\",\"1h\",\"1d\"]") != NULL);
    util_buf_cleanup(&b);
}

int main(void)
{
    util_log_configure(UTIL_LOG_ERROR, false);
    RUN(tick_from_candle_decimals);
    RUN(levels_finer_than_the_tick_are_no_trade);
    RUN(risk_under_the_cost_floor_is_no_trade);
    RUN(signal_edges);
    RUN(overdue_answers_are_stale);
    RUN(render_tail_each_warning);
    RUN(consensus_rule);
    return unit_report();
}
