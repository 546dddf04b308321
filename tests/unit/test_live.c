/*
 * test_live.c: the live accuracy table of the prediction service
 * (predict/live.c): what predict_set_live_accuracy refuses (a series that
 * cannot be, version 0, a hit rate outside [0, 1] or NaN), that an entry is
 * keyed by symbol, timeframe and version (no bleed between them) and
 * overwritten in place, and that the table is bounded: past its last entry
 * a new series is refused with PD_ENOMEM while the ones it holds still
 * update. No database: the service is made over no registry.
 */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "predict/predict_internal.h"
#include "tests/unit/unit.h"
#include "util/util.h"

#define LIVE_MAX 100000 /* predict/live.c */

static predict_service *make(void)
{
    predict_options opt = {.cache = false};
    predict_service *svc = NULL;
    return predict_service_new(&opt, NULL, &svc) == 0 ? svc : NULL;
}

TEST(refusals_record_nothing)
{
    predict_service *svc = make();
    CHECK(svc != NULL);
    if (!svc)
        return;
    CHECK_EQ_INT(predict_set_live_accuracy(NULL, "BTCUSDT", "15m", 1, 0.5, 10), PD_EINVAL);
    CHECK_EQ_INT(predict_set_live_accuracy(svc, NULL, "15m", 1, 0.5, 10), PD_EINVAL);
    CHECK_EQ_INT(predict_set_live_accuracy(svc, "btc", "15m", 1, 0.5, 10), PD_EINVAL);
    CHECK_EQ_INT(predict_set_live_accuracy(svc, "BTCUSDT", NULL, 1, 0.5, 10), PD_EINVAL);
    CHECK_EQ_INT(predict_set_live_accuracy(svc, "BTCUSDT", "7m", 1, 0.5, 10), PD_EINVAL);
    CHECK_EQ_INT(predict_set_live_accuracy(svc, "BTCUSDT", "15m", 0, 0.5, 10), PD_EINVAL);
    CHECK_EQ_INT(predict_set_live_accuracy(svc, "BTCUSDT", "15m", 1, -0.01, 10), PD_EINVAL);
    CHECK_EQ_INT(predict_set_live_accuracy(svc, "BTCUSDT", "15m", 1, 1.01, 10), PD_EINVAL);
    CHECK_EQ_INT(predict_set_live_accuracy(svc, "BTCUSDT", "15m", 1, NAN, 10), PD_EINVAL);
    double hr = -1;
    uint64_t n = 99;
    CHECK(!predict__live_get(svc, "BTCUSDT", "15m", 1, &hr, &n));
    CHECK(hr == -1 && n == 99); /* untouched when absent */
    CHECK(!predict__live_get(NULL, "BTCUSDT", "15m", 1, &hr, &n));
    CHECK(!predict__live_get(svc, NULL, "15m", 1, &hr, &n));
    CHECK(!predict__live_get(svc, "BTCUSDT", NULL, 1, &hr, &n));
    /* the bounds themselves are hit rates */
    CHECK_EQ_INT(predict_set_live_accuracy(svc, "BTCUSDT", "15m", 1, 0.0, 3), 0);
    CHECK_EQ_INT(predict_set_live_accuracy(svc, "BTCUSDT", "15m", 2, 1.0, 4), 0);
    predict_service_free(svc);
}

TEST(entries_are_per_series_and_version_and_overwritten)
{
    predict_service *svc = make();
    CHECK(svc != NULL);
    if (!svc)
        return;
    CHECK_EQ_INT(predict_set_live_accuracy(svc, "BTCUSDT", "15m", 3, 0.61, 120), 0);
    CHECK_EQ_INT(predict_set_live_accuracy(svc, "BTCUSDT", "1h", 3, 0.40, 7), 0);
    CHECK_EQ_INT(predict_set_live_accuracy(svc, "ETHUSDT", "15m", 3, 0.55, 60), 0);
    double hr = 0;
    uint64_t n = 0;
    CHECK(predict__live_get(svc, "BTCUSDT", "15m", 3, &hr, &n));
    CHECK_NEAR(hr, 0.61, 1e-12);
    CHECK_EQ_INT(n, 120);
    CHECK(predict__live_get(svc, "BTCUSDT", "1h", 3, &hr, &n));
    CHECK_NEAR(hr, 0.40, 1e-12);
    CHECK_EQ_INT(n, 7);
    CHECK(predict__live_get(svc, "ETHUSDT", "15m", 3, &hr, &n));
    CHECK_NEAR(hr, 0.55, 1e-12);
    CHECK(!predict__live_get(svc, "BTCUSDT", "15m", 4, &hr, &n)); /* another version */
    CHECK(!predict__live_get(svc, "BTCUSD", "15m", 3, &hr, &n));  /* a prefix */
    /* the loop's next reading replaces the figures */
    CHECK_EQ_INT(predict_set_live_accuracy(svc, "BTCUSDT", "15m", 3, 0.58, 131), 0);
    CHECK(predict__live_get(svc, "BTCUSDT", "15m", 3, &hr, &n));
    CHECK_NEAR(hr, 0.58, 1e-12);
    CHECK_EQ_INT(n, 131);
    predict_service_free(svc);
}

TEST(the_table_is_bounded_and_its_entries_still_update)
{
    predict_service *svc = make();
    CHECK(svc != NULL);
    if (!svc)
        return;
    int failed = 0;
    char sym[24];
    for (int i = 0; i < LIVE_MAX && !failed; i++) {
        snprintf(sym, sizeof sym, "S%07d", i);
        failed = predict_set_live_accuracy(svc, sym, "1h", 1, 0.5, (uint64_t)i) != 0;
    }
    CHECK(!failed);
    /* one more series: refused, not tracked */
    CHECK_EQ_INT(predict_set_live_accuracy(svc, "NEWUSDT", "1h", 1, 0.5, 1), PD_ENOMEM);
    double hr = 0;
    uint64_t n = 0;
    CHECK(!predict__live_get(svc, "NEWUSDT", "1h", 1, &hr, &n));
    /* one it holds: still updated */
    CHECK_EQ_INT(predict_set_live_accuracy(svc, "S0000042", "1h", 1, 0.75, 500), 0);
    CHECK(predict__live_get(svc, "S0000042", "1h", 1, &hr, &n));
    CHECK_NEAR(hr, 0.75, 1e-12);
    CHECK_EQ_INT(n, 500);
    CHECK(predict__live_get(svc, "S0099999", "1h", 1, &hr, &n));
    CHECK_EQ_INT(n, 99999);
    predict_service_free(svc);
}

int main(void)
{
    RUN(refusals_record_nothing);
    RUN(entries_are_per_series_and_version_and_overwritten);
    RUN(the_table_is_bounded_and_its_entries_still_update);
    return unit_report();
}
