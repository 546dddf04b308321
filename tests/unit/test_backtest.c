/*
 * test_backtest: predict_backtest_run, the history replay behind `predictd
 * backtest`, called directly.
 *
 * Without a database: the refusals that come before any candle is read (a
 * symbol or timeframe that cannot be, no model for the series, a version
 * that does not exist) with their codes and reasons, and the store's
 * refusal once a model is there. With the test database (tests/run sets
 * PREDICTD_TEST_DATABASE_URL): a range with no closed candle after the
 * model's window is PD_ENODATA with its reason; a real replay over a wave
 * of candles holds together (one row per prediction, every prediction a
 * candle of the range, calls counted once per side, the calibration table
 * counting the settled calls, the explicit version equal to the serving
 * one, --from cutting the range where it says).
 *
 * The model is the registry tests' fixture (a softmax over the 14 default
 * features, window 100). No timing assertions.
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>

#include "predict/predict.h"
#include "registry/registry.h"
#include "store/store.h"
#include "unit.h"
#include "fixtures.h"
#include "util/util.h"

#include "model_fixture.h"

#define SYM "BTCUSDT"
#define TF "15m"
#define TFS 900
#define T0 1700000100

static char base[512], models[700];
static registry *reg;
static predict_service *svc;

static bool setup(bool with_model)
{
    if (!unit_tmpdir(base, sizeof base, "pd-backtest"))
        return false;
    snprintf(models, sizeof models, "%s/models", base);
    if (mkdir(models, 0755) != 0)
        return false;
    if (with_model) {
        fx *f = malloc(sizeof *f);
        fx_init(f, 7, "test_backtest");
        f->meta.symbol = SYM;
        uint32_t v = 0;
        int rc = registry_publish(models, SYM, TF, &f->m, &f->s, &v);
        free(f);
        if (rc != 0 || v != 1)
            return false;
    }
    predict_options opt = {.cache = false};
    return registry_new(models, &reg) == 0 && registry_scan(reg, NULL, NULL) == 0 &&
           predict_service_new(&opt, reg, &svc) == 0;
}

static void teardown(void)
{
    predict_service_free(svc);
    registry_free(reg);
    svc = NULL;
    reg = NULL;
    util_rmtree(base);
}

/* A wave with a drift: enough movement for calls to reach their levels. */
static features_candle *wave(size_t n)
{
    features_candle *c = calloc(n, sizeof *c);
    double prev = 100;
    for (size_t i = 0; i < n; i++) {
        double x = 100 + 8 * sin((double)i / 9.0) + 3 * sin((double)i / 2.3) + 0.01 * (double)i;
        c[i].t = T0 + (int64_t)i * TFS;
        c[i].open = prev;
        c[i].close = x;
        c[i].high = fmax(prev, x) + 0.6;
        c[i].low = fmin(prev, x) - 0.6;
        c[i].volume = 10 + (double)(i % 7);
        prev = x;
    }
    return c;
}

TEST(refusals_before_any_candle_is_read)
{
    if (!setup(false))
        UNIT_SKIP("no repository");
    predict_backtest bt;
    char why[256] = "";
    predict_backtest_options o = {.symbol = "btc", .tf = TF, .cost_bps = NAN};
    CHECK_EQ_INT(predict_backtest_run(svc, &o, &bt, why, sizeof why), PD_ESYMBOL);
    CHECK(bt.rows == NULL);
    CHECK_EQ_INT(bt.majority_class, -1);
    o.symbol = SYM;
    o.tf = "7m";
    CHECK_EQ_INT(predict_backtest_run(svc, &o, &bt, why, sizeof why), PD_ETIMEFRAME);
    o.tf = TF;
    CHECK_EQ_INT(predict_backtest_run(svc, &o, &bt, why, sizeof why), PD_ENOMODEL);
    CHECK_EQ_STR(why, "no verified model for BTCUSDT 15m");
    o.version = 3;
    why[0] = '\0';
    CHECK_EQ_INT(predict_backtest_run(svc, &o, &bt, why, sizeof why), PD_ENOMODEL);
    CHECK_EQ_STR(why, "no model directory for BTCUSDT 15m");
    predict_backtest_cleanup(&bt);
    predict_backtest_cleanup(NULL);
    teardown();

    /* a model, and no database: the store's refusal, named */
    if (!setup(true))
        UNIT_SKIP("no repository");
    why[0] = '\0';
    CHECK_EQ_INT(predict_backtest_run(svc, &o, &bt, why, sizeof why), PD_ENOMODEL);
    CHECK_EQ_STR(why, "BTCUSDT/15m has no version 3");
    o.version = 0;
    why[0] = '\0';
    int rc = predict_backtest_run(svc, &o, &bt, why, sizeof why);
    CHECK(rc != 0);
    CHECK(strstr(why, "loading BTCUSDT 15m: ") == why);
    CHECK(bt.rows == NULL);
    teardown();
}

TEST(replay_over_the_database)
{
    UNIT_NEED_ENV(UNIT_DB_ENV);
    if (!setup(true))
        UNIT_SKIP("no repository");
    size_t n = 600;
    features_candle *c = wave(n);
    CHECK_EQ_INT(store_init(unit_db_url(), NULL, false), 0);
    CHECK_EQ_INT(store_migrate(unit_migrations_dir()), 0);
    CHECK_EQ_INT(store_upsert_candles(SYM, TF, c, n), 0);
    int64_t now = c[n - 1].t + TFS + 1;
    predict_backtest bt, again;
    char why[256] = "";

    /* nothing closed in the range after the window */
    predict_backtest_options o = {
        .symbol = SYM, .tf = TF, .cost_bps = NAN, .now = now, .from = c[n - 1].t + TFS};
    CHECK_EQ_INT(predict_backtest_run(svc, &o, &bt, why, sizeof why), PD_ENODATA);
    CHECK_EQ_STR(why, "BTCUSDT 15m has no closed candle in the range with 99 before it");
    o.from = 0;
    o.to = c[50].t;
    CHECK_EQ_INT(predict_backtest_run(svc, &o, &bt, why, sizeof why), PD_ENODATA);

    /* the whole history */
    o.to = 0;
    CHECK_EQ_INT(predict_backtest_run(svc, &o, &bt, why, sizeof why), 0);
    CHECK_EQ_INT(bt.version, 1);
    CHECK_EQ_INT(bt.candles, n - 99);
    CHECK_EQ_INT(bt.predictions + bt.failed, bt.candles);
    CHECK_EQ_INT(bt.n_rows, bt.predictions);
    CHECK_EQ_INT(bt.from, c[99].t);
    CHECK_EQ_INT(bt.to, c[n - 1].t);
    uint64_t calls = 0, open = 0, no_trade = 0, cal = 0;
    for (size_t i = 0; i < bt.n_rows; i++) {
        const predict_backtest_row *r = &bt.rows[i];
        CHECK(r->e.candle_time >= bt.from && r->e.candle_time <= bt.to);
        CHECK(i == 0 || r->e.candle_time > bt.rows[i - 1].e.candle_time);
        if (r->e.direction == STORE_LEDGER_NO_TRADE) {
            no_trade++;
            continue;
        }
        calls++;
        open += r->r.outcome == STORE_OUTCOME_OPEN;
    }
    uint64_t nt_reasons = 0;
    for (int k = 1; k < 8; k++)
        nt_reasons += bt.no_trade[k];
    CHECK_EQ_INT(nt_reasons, no_trade);
    CHECK_EQ_INT(bt.model.trades + bt.model.open, calls);
    CHECK_EQ_INT(bt.model.open, open);
    for (int k = 0; k < 5; k++)
        cal += bt.cal[k].n;
    CHECK_EQ_INT(cal, bt.model.trades);
    CHECK(bt.model.tp[0] >= bt.model.tp[1] && bt.model.tp[1] >= bt.model.tp[2]);
    CHECK_EQ_INT(bt.model.tp[0] + bt.model.stops + bt.model.expired, bt.model.trades);
    printf("  %llu predictions, %llu calls (%llu settled), majority class %d\n",
           (unsigned long long)bt.predictions, (unsigned long long)calls,
           (unsigned long long)bt.model.trades, bt.majority_class);

    /* the serving version asked for by number: the same figures */
    o.version = 1;
    CHECK_EQ_INT(predict_backtest_run(svc, &o, &again, why, sizeof why), 0);
    CHECK_EQ_INT(again.predictions, bt.predictions);
    CHECK_EQ_INT(again.model.trades, bt.model.trades);
    CHECK_NEAR(again.model.sum_net, bt.model.sum_net, 1e-12);
    predict_backtest_cleanup(&again);
    /* a cost of 0: the same calls, net R equal to gross R */
    o.cost_bps = 0;
    CHECK_EQ_INT(predict_backtest_run(svc, &o, &again, why, sizeof why), 0);
    CHECK_EQ_INT(again.model.trades, bt.model.trades);
    CHECK_NEAR(again.model.sum_net, again.model.sum_r, 1e-9);
    CHECK_NEAR(again.cost_bps, 0, 0);
    predict_backtest_cleanup(&again);
    /* from: the first prediction is the first candle at or after it */
    o.cost_bps = NAN;
    o.from = c[300].t - 1;
    CHECK_EQ_INT(predict_backtest_run(svc, &o, &again, why, sizeof why), 0);
    CHECK_EQ_INT(again.from, c[300].t);
    CHECK_EQ_INT(again.candles, n - 300);
    predict_backtest_cleanup(&again);
    predict_backtest_cleanup(&bt);
    free(c);
    store_shutdown();
    teardown();
}

int main(void)
{
    util_log_configure(getenv("PREDICTD_TEST_VERBOSE") ? UTIL_LOG_DEBUG : UTIL_LOG_ERROR, false);
    RUN(refusals_before_any_candle_is_read);
    RUN(replay_over_the_database);
    return unit_report();
}
