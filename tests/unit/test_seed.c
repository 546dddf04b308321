/* Unit tests for feed_seed_series: determinism, alignment, OHLC
 * invariants, count, the last closed candle, realistic price levels, and
 * structure a model can learn (regime persistence) without it being
 * trivial. */
#include <stdint.h>

#include "features/features.h"
#include "feed/feed.h"
#include "tests/unit/unit.h"
#include "util/util.h"

static const int64_t NOW = 1718000000 + 1234; /* a fixed, unaligned instant */

TEST(deterministic)
{
    features_candle *a, *b, *c, *d;
    CHECK_EQ_INT(feed_seed_series("BTCUSDT", "15m", NOW, 3000, 42, &a), 0);
    CHECK_EQ_INT(feed_seed_series("BTCUSDT", "15m", NOW, 3000, 42, &b), 0);
    CHECK(memcmp(a, b, 3000 * sizeof *a) == 0);
    /* another seed, another symbol, another timeframe: other values */
    CHECK_EQ_INT(feed_seed_series("BTCUSDT", "15m", NOW, 3000, 43, &c), 0);
    CHECK(memcmp(a, c, 3000 * sizeof *a) != 0);
    CHECK_EQ_INT(feed_seed_series("BTCUSDC", "15m", NOW, 3000, 42, &d), 0);
    CHECK(a[1].close != d[1].close);
    /* `now` moves the timestamps, not the values */
    features_candle *e;
    CHECK_EQ_INT(feed_seed_series("BTCUSDT", "15m", NOW + 86400, 3000, 42, &e), 0);
    CHECK_EQ_INT(e[0].t, a[0].t + 86400);
    CHECK(e[100].close == a[100].close && e[2999].volume == a[2999].volume);
    free(a);
    free(b);
    free(c);
    free(d);
    free(e);
}

static void check_series(const char *symbol, const char *tf, size_t n)
{
    features_candle *c;
    int rc = feed_seed_series(symbol, tf, NOW, n, 7, &c);
    CHECK_EQ_INT(rc, 0);
    if (rc)
        return;
    int64_t tfs = util_tf_seconds(tf);
    CHECK_EQ_INT(c[n - 1].t, util_tf_last_closed_open(NOW, tfs));
    CHECK(c[n - 1].t + tfs <= NOW && c[n - 1].t + 2 * tfs > NOW);
    int bad = 0;
    for (size_t i = 0; i < n && bad < 5; i++) {
        const features_candle *k = &c[i];
        bool ok = k->t % tfs == 0 && (i == 0 || k->t == c[i - 1].t + tfs) &&
                  (i == 0 || k->open == c[i - 1].close) && k->low > 0 &&
                  k->high >= (k->open > k->close ? k->open : k->close) &&
                  k->low <= (k->open < k->close ? k->open : k->close) && k->volume >= 0 &&
                  isfinite(k->high) && isfinite(k->volume);
        if (!ok) {
            UNIT_FAIL_("%s %s candle %zu: t=%lld o=%g h=%g l=%g c=%g v=%g", symbol, tf, i,
                       (long long)k->t, k->open, k->high, k->low, k->close, k->volume);
            bad++;
        }
    }
    free(c);
}

TEST(aligned_invariants_and_last_closed)
{
    const char *tfs[] = {"1m", "5m", "15m", "1h", "4h", "1d"};
    for (size_t i = 0; i < 6; i++)
        check_series("ETHUSDT", tfs[i], 2000);
    check_series("DOGEUSDT", "1m", 50000);
    check_series("ZZTOP", "1d", 5000);
    check_series("BTCUSDT", "1h", 1);
}

TEST(price_levels)
{
    struct {
        const char *sym;
        double price;
    } want[] = {{"BTCUSDT", 60000}, {"ETHUSDT", 3000}, {"SOLUSDT", 150},   {"BNBUSDT", 550},
                {"XRPUSDT", 0.6},   {"ADAUSDT", 0.45}, {"DOGEUSDT", 0.15}, {"AVAXUSDT", 35},
                {"BTCUSD", 60000},  {"ETHBTC", 0.05}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        features_candle *c;
        CHECK_EQ_INT(feed_seed_series(want[i].sym, "1h", NOW, 10, 1, &c), 0);
        CHECK_NEAR(c[0].open, want[i].price, 1e-5);
        free(c);
    }
    /* unknown symbols: a stable price in a plausible band */
    features_candle *c, *d;
    CHECK_EQ_INT(feed_seed_series("FOOUSDT", "1h", NOW, 10, 1, &c), 0);
    CHECK_EQ_INT(feed_seed_series("FOOUSDT", "4h", NOW, 10, 99, &d), 0);
    CHECK(c[0].open >= 0.01 && c[0].open <= 1000);
    CHECK(c[0].open == d[0].open);
    free(c);
    free(d);
}

/* Over a long series the returns have fat tails and volatility clustering,
 * volume follows |return|, and the sign of the past 20 candles' move says
 * something (but not everything) about the next 10. */
TEST(learnable_not_trivial)
{
    size_t n = 40000;
    features_candle *c;
    CHECK_EQ_INT(feed_seed_series("SOLUSDT", "15m", NOW, n, 2024, &c), 0);
    double *r = malloc(n * sizeof *r);
    double sum = 0, sum2 = 0, sum4 = 0;
    for (size_t i = 0; i < n; i++) {
        r[i] = log(c[i].close / c[i].open);
        sum += r[i];
    }
    double mean = sum / (double)n;
    for (size_t i = 0; i < n; i++) {
        double d = r[i] - mean;
        sum2 += d * d;
        sum4 += d * d * d * d;
    }
    double var = sum2 / (double)n, kurt = sum4 / (double)n / (var * var);
    CHECK(kurt > 3.5); /* fatter tails than a normal distribution */
    /* sigma per 15m candle for SOL (6 %/day): about 0.6 % */
    CHECK(sqrt(var) > 0.003 && sqrt(var) < 0.012);

    /* |r| autocorrelation (volatility clustering) */
    double am = 0;
    for (size_t i = 0; i < n; i++)
        am += fabs(r[i]);
    am /= (double)n;
    double num = 0, den = 0;
    for (size_t i = 1; i < n; i++) {
        num += (fabs(r[i]) - am) * (fabs(r[i - 1]) - am);
        den += (fabs(r[i]) - am) * (fabs(r[i]) - am);
    }
    CHECK(num / den > 0.05);

    /* momentum: sign agreement between the last 20 and the next 10 */
    size_t agree = 0, total = 0;
    for (size_t i = 20; i + 10 < n; i += 5) {
        double past = log(c[i].close / c[i - 20].close);
        double next = log(c[i + 10].close / c[i].close);
        if (past == 0 || next == 0)
            continue;
        agree += (past > 0) == (next > 0);
        total++;
    }
    double acc = (double)agree / (double)total;
    printf("  kurtosis %.2f, sigma %.4f, |r| acf %.3f, momentum agreement %.3f\n", kurt, sqrt(var),
           num / den, acc);
    CHECK(acc > 0.53 && acc < 0.75);

    /* volume higher on big moves */
    double vbig = 0, vsmall = 0;
    size_t nbig = 0, nsmall = 0;
    for (size_t i = 0; i < n; i++) {
        if (fabs(r[i]) > 2 * sqrt(var)) {
            vbig += c[i].volume;
            nbig++;
        } else if (fabs(r[i]) < 0.5 * sqrt(var)) {
            vsmall += c[i].volume;
            nsmall++;
        }
    }
    CHECK(nbig && nsmall && vbig / (double)nbig > 1.5 * vsmall / (double)nsmall);
    free(r);
    free(c);
}

TEST(bad_arguments)
{
    features_candle *c = (features_candle *)0x1;
    CHECK_EQ_INT(feed_seed_series("btc", "1h", NOW, 10, 1, &c), PD_ESYMBOL);
    CHECK_EQ_INT(feed_seed_series(NULL, "1h", NOW, 10, 1, &c), PD_ESYMBOL);
    CHECK_EQ_INT(feed_seed_series("BTCUSDT", "2h", NOW, 10, 1, &c), PD_ETIMEFRAME);
    CHECK_EQ_INT(feed_seed_series("BTCUSDT", "1h", NOW, 0, 1, &c), PD_EINVAL);
    CHECK_EQ_INT(feed_seed_series("BTCUSDT", "1h", NOW, 10, 1, NULL), PD_EINVAL);
    CHECK_EQ_INT(feed_seed_series("BTCUSDT", "1d", NOW, 100000, 1, &c), PD_EINVAL);
    CHECK_EQ_INT(feed_seed_series("BTCUSDT", "1m", NOW, 20000000, 1, &c), PD_ETOOBIG);
    CHECK(c == (features_candle *)0x1);
}

int main(void)
{
    RUN(deterministic);
    RUN(aligned_invariants_and_last_closed);
    RUN(price_levels);
    RUN(learnable_not_trivial);
    RUN(bad_arguments);
    return unit_report();
}
