/* Unit tests of the feature catalogue (features/catalogue.c): the default
 * set, spec parsing and its error messages, min_window, features_compute
 * against the public kernels for every catalogue entry, the documented
 * neutral values, candle validation, determinism (same window, other
 * buffer, other thread), scale invariance, features_atr_last, and sliding
 * windows over the real candles in PREDICTD_SHARED_DATA. */
#include "features/features.h"
#include "tests/golden/shared_candles.h"
#include "tests/unit/unit.h"
#include "util/util.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

/* Every catalogue entry, with parameters. */
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
    "zscore:60",
    "volume_ratio:20",
    "adx:14",
    "plus_di:14",
    "minus_di:14",
    "stoch_k:14:3:3",
    "stoch_d:14:3:3",
    "stochrsi_k:14:5:3",
    "stochrsi_d:14:5:3",
    "cci:20",
    "willr:14",
    "mfi:14",
    "obv_slope:10",
};
#define NALL (sizeof all_specs / sizeof all_specs[0])

/* A deterministic random walk with wicks and volume. */
static void make_window(features_candle *c, size_t n, uint32_t seed, double start)
{
    uint32_t s = seed;
#define RND() ((s = s * 1664525u + 1013904223u), (double)s / 4294967296.0)
    double prev = start;
    for (size_t i = 0; i < n; i++) {
        double open = prev * (1 + (RND() - 0.5) * 0.004);
        double close = open * (1 + (RND() - 0.5) * 0.03);
        c[i].t = 1700000000 + (int64_t)i * 900;
        c[i].open = open;
        c[i].close = close;
        c[i].high = fmax(open, close) * (1 + RND() * 0.01);
        c[i].low = fmin(open, close) * (1 - RND() * 0.01);
        c[i].volume = 100 + RND() * 1000;
        prev = close;
    }
#undef RND
}

static features_set *must_set(const char *const *specs, size_t n)
{
    features_set *s = NULL;
    char why[256] = "";
    int rc = features_set_new(specs, n, &s, why, sizeof why);
    if (rc != 0)
        UNIT_FAIL_("features_set_new: rc %d: %s", rc, why);
    return s;
}

/* ------------------------------------------------------------------------ */

TEST(default_specs_exact)
{
    static const char *const want[] = {
        "rsi:14",      "macd:12:26:9", "macd_signal:12:26:9", "macd_hist:12:26:9", "natr:14",
        "ema_dist:12", "ema_dist:26",  "bb_pctb:20:2",        "bb_width:20:2",     "ret:1",
        "ret:5",       "vol:20",       "zscore:60",           "volume_ratio:20"};
    size_t n = 0;
    const char *const *d = features_default_specs(&n);
    CHECK_EQ_INT(n, 14);
    for (size_t i = 0; i < 14 && i < n; i++)
        CHECK_EQ_STR(d[i], want[i]);
    CHECK(features_default_specs(NULL) == d);

    features_set *s = must_set(d, n);
    if (!s)
        return;
    CHECK_EQ_INT(features_set_count(s), 14);
    for (size_t i = 0; i < 14; i++)
        CHECK_EQ_STR(features_set_name(s, i), want[i]);
    CHECK(features_set_name(s, 14) == NULL);
    /* zscore:60 needs the most: 60 candles */
    CHECK_EQ_INT(features_set_min_window(s), 60);
    features_set_free(s);
}

TEST(min_window_per_feature)
{
    static const struct {
        const char *spec;
        size_t min;
    } cases[] = {
        {"rsi:14", 15},
        {"macd:12:26:9", 34},
        {"macd_hist:5:35:5", 39},
        {"natr:14", 15},
        {"trange_pct", 2},
        {"ema_dist:26", 26},
        {"bb_width:20:2", 20},
        {"ret:1", 2},
        {"ret:5", 6},
        {"vol:20", 21},
        {"zscore:60", 60},
        {"volume_ratio:20", 20},
        {"adx:14", 28},
        {"plus_di:14", 15},
        {"stoch_k:14:3:3", 18},
        {"stoch_d:5:1:1", 5},
        {"stochrsi_k:14:5:3", 21},
        {"cci:20", 20},
        {"willr:14", 14},
        {"mfi:14", 15},
        {"obv_slope:10", 11},
        {"roc:10", 11},
        {"logret:1", 2},
        {"wma_dist:10", 10},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        features_set *s = must_set(&cases[i].spec, 1);
        if (!s)
            continue;
        if (features_set_min_window(s) != cases[i].min)
            UNIT_FAIL_("%s: min_window %zu, want %zu", cases[i].spec, features_set_min_window(s),
                       cases[i].min);
        features_set_free(s);
    }
    const char *two[] = {"rsi:14", "ema_dist:50"};
    features_set *s = must_set(two, 2);
    CHECK_EQ_INT(features_set_min_window(s), 50);
    features_set_free(s);
}

TEST(bad_specs_rejected_with_reason)
{
    static const struct {
        const char *spec, *why;
    } cases[] = {
        {"foo:3", "unknown feature 'foo:3'"},
        {"RSI:14", "unknown feature 'RSI:14'"},
        {"", "unknown feature ''"},
        {"rsi:1", "rsi: period must be 2..1000 (got 'rsi:1')"},
        {"rsi:1001", "rsi: period must be 2..1000 (got 'rsi:1001')"},
        {"rsi:014", "rsi: period must be 2..1000 (got 'rsi:014')"},
        {"rsi:+14", "rsi: period must be 2..1000 (got 'rsi:+14')"},
        {"rsi:14x", "rsi: period must be 2..1000 (got 'rsi:14x')"},
        {"rsi:", "rsi: period must be 2..1000 (got 'rsi:')"},
        {"rsi:99999999999", "rsi: period must be 2..1000 (got 'rsi:99999999999')"},
        {"rsi", "rsi: expects 1 parameter (period), got 'rsi'"},
        {"rsi:14:2", "rsi: expects 1 parameter (period), got 'rsi:14:2'"},
        {"macd:12:26", "macd: expects 3 parameters (fast period:slow period:signal period), "
                       "got 'macd:12:26'"},
        {"macd:26:12:9", "macd: fast period must be below slow period (got 'macd:26:12:9')"},
        {"macd_hist:12:12:9", "macd_hist: fast period must be below slow period (got "
                              "'macd_hist:12:12:9')"},
        {"macd:12:26:0", "macd: signal period must be 1..1000 (got 'macd:12:26:0')"},
        {"bb_pctb:20", "bb_pctb: expects 2 parameters (period:k), got 'bb_pctb:20'"},
        {"bb_pctb:20:0", "bb_pctb: k (standard deviations) must be a number in (0, 10] (got "
                         "'bb_pctb:20:0')"},
        {"bb_width:20:11", "bb_width: k (standard deviations) must be a number in (0, 10] (got "
                           "'bb_width:20:11')"},
        {"bb_width:20:1e1", "bb_width: k (standard deviations) must be a number in (0, 10] "
                            "(got 'bb_width:20:1e1')"},
        {"bb_width:20:nan", "bb_width: k (standard deviations) must be a number in (0, 10] "
                            "(got 'bb_width:20:nan')"},
        {"bb_width:1:2", "bb_width: period must be 2..1000 (got 'bb_width:1:2')"},
        {"trange_pct:3", "trange_pct: takes no parameters (got 'trange_pct:3')"},
        {"stoch_k:14:0:3", "stoch_k: slowk period must be 1..1000 (got 'stoch_k:14:0:3')"},
        {"stochrsi_d:1:5:3", "stochrsi_d: period must be 2..1000 (got 'stochrsi_d:1:5:3')"},
        {"adx:1", "adx: period must be 2..1000 (got 'adx:1')"},
        {"rsi:14:1:2:3:4:5:6", "rsi: expects 1 parameter (period), got 'rsi:14:1:2:3:4:5:6'"},
        {"rsi:14 ", "rsi: period must be 2..1000 (got 'rsi:14 ')"},
        {"bb_pctb:20:",
         "bb_pctb: k (standard deviations) must be a number in (0, 10] (got 'bb_pctb:20:')"},
        {"bb_pctb:20:1.2.3",
         "bb_pctb: k (standard deviations) must be a number in (0, 10] (got 'bb_pctb:20:1.2.3')"},
        {"bb_pctb:20:.",
         "bb_pctb: k (standard deviations) must be a number in (0, 10] (got 'bb_pctb:20:.')"},
        {"bb_pctb:20:-2",
         "bb_pctb: k (standard deviations) must be a number in (0, 10] (got 'bb_pctb:20:-2')"},
        {"bb_pctb:20:2.00000000000000000", "bb_pctb: k (standard deviations) must be a number in "
                                           "(0, 10] (got 'bb_pctb:20:2.00000000000000000')"},
        {"bb_pctb:20:2x",
         "bb_pctb: k (standard deviations) must be a number in (0, 10] (got 'bb_pctb:20:2x')"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        features_set *s = (features_set *)0x1;
        char why[256] = "";
        const char *specs[2] = {"rsi:14", cases[i].spec};
        int rc = features_set_new(specs, 2, &s, why, sizeof why);
        if (rc != PD_EINVAL || strcmp(why, cases[i].why) != 0)
            UNIT_FAIL_("'%s': rc %d why \"%s\", want \"%s\"", cases[i].spec, rc, why, cases[i].why);
        if (s != (features_set *)0x1)
            UNIT_FAIL_("'%s': out written on failure", cases[i].spec);
    }
    /* a spec longer than any valid one */
    char longspec[200];
    memset(longspec, 'a', sizeof longspec - 1);
    longspec[sizeof longspec - 1] = '\0';
    const char *lp = longspec;
    features_set *s = NULL;
    char why[256];
    CHECK_EQ_INT(features_set_new(&lp, 1, &s, why, sizeof why), PD_EINVAL);
    CHECK(strncmp(why, "unknown feature 'aaaa", 21) == 0);
    /* NULL spec, empty list, no why buffer, a short why buffer */
    const char *withnull[] = {"rsi:14", NULL};
    CHECK_EQ_INT(features_set_new(withnull, 2, &s, why, sizeof why), PD_EINVAL);
    CHECK_EQ_STR(why, "feature 1 is NULL");
    CHECK_EQ_INT(features_set_new(withnull, 0, &s, why, sizeof why), PD_EINVAL);
    CHECK_EQ_INT(features_set_new(NULL, 3, &s, why, sizeof why), PD_EINVAL);
    const char *foo = "foo";
    CHECK_EQ_INT(features_set_new(&foo, 1, &s, NULL, 0), PD_EINVAL);
    char tiny[8];
    CHECK_EQ_INT(features_set_new(&foo, 1, &s, tiny, sizeof tiny), PD_EINVAL);
    CHECK_EQ_STR(tiny, "unknown");
    CHECK_EQ_INT(features_set_new(&foo, 1, NULL, why, sizeof why), PD_EINVAL);
}

TEST(every_catalogue_entry_parses)
{
    features_set *s = must_set(all_specs, NALL);
    if (!s)
        return;
    CHECK_EQ_INT(features_set_count(s), NALL);
    for (size_t i = 0; i < NALL; i++)
        CHECK_EQ_STR(features_set_name(s, i), all_specs[i]);
    CHECK_EQ_INT(features_set_min_window(s), 60);
    features_set_free(s);
    /* accessors on NULL */
    CHECK_EQ_INT(features_set_count(NULL), 0);
    CHECK(features_set_name(NULL, 0) == NULL);
    CHECK_EQ_INT(features_set_min_window(NULL), 0);
    features_set_free(NULL);
    /* the specs are copied */
    char spec[16] = "rsi:14";
    const char *sp = spec;
    s = must_set(&sp, 1);
    strcpy(spec, "xxx");
    CHECK_EQ_STR(features_set_name(s, 0), "rsi:14");
    features_set_free(s);
}

/* ------------------------------------------------------------------------ */
/* The value of one spec at the last candle, from the public kernels. */

typedef struct cols {
    size_t n;
    double *h, *l, *c, *v, *o1, *o2, *o3;
} cols;

static int cols_init(cols *k, const features_candle *w, size_t n)
{
    double *m = malloc(7 * n * sizeof *m);
    if (!m)
        return -1;
    *k = (cols){n, m, m + n, m + 2 * n, m + 3 * n, m + 4 * n, m + 5 * n, m + 6 * n};
    for (size_t i = 0; i < n; i++) {
        k->h[i] = w[i].high;
        k->l[i] = w[i].low;
        k->c[i] = w[i].close;
        k->v[i] = w[i].volume;
    }
    return 0;
}

static void cols_free(cols *k)
{
    free(k->h);
}

static double from_kernels(const char *spec, const cols *k)
{
    size_t n = k->n, L = n - 1;
    double cl = k->c[L], r = 0;
    int a = 0, b = 0, d = 0;
    char name[32];
    if (sscanf(spec, "%31[a-z_]:%d:%d:%d", name, &a, &b, &d) < 1)
        return NAN;
    if (!strcmp(name, "bb_pctb") || !strcmp(name, "bb_width"))
        sscanf(spec, "%*[a-z_]:%d:%lf", &a, &r);
    int rc = -1000;
    double x = NAN;
#define ONE(call, expr)                                                                            \
    do {                                                                                           \
        rc = call;                                                                                 \
        x = expr;                                                                                  \
    } while (0)
    if (!strcmp(name, "rsi"))
        ONE(features_rsi(k->c, n, a, k->o1), k->o1[L]);
    else if (!strcmp(name, "macd"))
        ONE(features_macd(k->c, n, a, b, d, k->o1, k->o2, k->o3), k->o1[L] / cl);
    else if (!strcmp(name, "macd_signal"))
        ONE(features_macd(k->c, n, a, b, d, k->o1, k->o2, k->o3), k->o2[L] / cl);
    else if (!strcmp(name, "macd_hist"))
        ONE(features_macd(k->c, n, a, b, d, k->o1, k->o2, k->o3), k->o3[L] / cl);
    else if (!strcmp(name, "natr"))
        ONE(features_natr(k->h, k->l, k->c, n, a, k->o1), k->o1[L]);
    else if (!strcmp(name, "trange_pct"))
        ONE(features_trange(k->h, k->l, k->c, n, k->o1), k->o1[L] / cl * 100.0);
    else if (!strcmp(name, "ema_dist"))
        ONE(features_ema(k->c, n, a, k->o1), (cl - k->o1[L]) / cl);
    else if (!strcmp(name, "sma_dist"))
        ONE(features_sma(k->c, n, a, k->o1), (cl - k->o1[L]) / cl);
    else if (!strcmp(name, "wma_dist"))
        ONE(features_wma(k->c, n, a, k->o1), (cl - k->o1[L]) / cl);
    else if (!strcmp(name, "bb_pctb"))
        ONE(features_bbands(k->c, n, a, r, k->o1, k->o2, k->o3),
            k->o1[L] == k->o3[L] ? 0.5 : (cl - k->o3[L]) / (k->o1[L] - k->o3[L]));
    else if (!strcmp(name, "bb_width"))
        ONE(features_bbands(k->c, n, a, r, k->o1, k->o2, k->o3), (k->o1[L] - k->o3[L]) / k->o2[L]);
    else if (!strcmp(name, "ret"))
        ONE(features_ret(k->c, n, a, k->o1), k->o1[L]);
    else if (!strcmp(name, "logret"))
        ONE(features_logret(k->c, n, a, k->o1), k->o1[L]);
    else if (!strcmp(name, "roc"))
        ONE(features_roc(k->c, n, a, k->o1), k->o1[L]);
    else if (!strcmp(name, "vol"))
        ONE(features_volatility(k->c, n, a, k->o1), k->o1[L]);
    else if (!strcmp(name, "zscore"))
        ONE(features_zscore(k->c, n, a, k->o1), k->o1[L]);
    else if (!strcmp(name, "volume_ratio"))
        ONE(features_volume_ratio(k->v, n, a, k->o1), k->o1[L]);
    else if (!strcmp(name, "adx"))
        ONE(features_adx(k->h, k->l, k->c, n, a, k->o1), k->o1[L]);
    else if (!strcmp(name, "plus_di"))
        ONE(features_plus_di(k->h, k->l, k->c, n, a, k->o1), k->o1[L]);
    else if (!strcmp(name, "minus_di"))
        ONE(features_minus_di(k->h, k->l, k->c, n, a, k->o1), k->o1[L]);
    else if (!strcmp(name, "stoch_k"))
        ONE(features_stoch(k->h, k->l, k->c, n, a, b, d, k->o1, k->o2), k->o1[L]);
    else if (!strcmp(name, "stoch_d"))
        ONE(features_stoch(k->h, k->l, k->c, n, a, b, d, k->o1, k->o2), k->o2[L]);
    else if (!strcmp(name, "stochrsi_k"))
        ONE(features_stochrsi(k->c, n, a, b, d, k->o1, k->o2), k->o1[L]);
    else if (!strcmp(name, "stochrsi_d"))
        ONE(features_stochrsi(k->c, n, a, b, d, k->o1, k->o2), k->o2[L]);
    else if (!strcmp(name, "cci"))
        ONE(features_cci(k->h, k->l, k->c, n, a, k->o1), k->o1[L]);
    else if (!strcmp(name, "willr"))
        ONE(features_willr(k->h, k->l, k->c, n, a, k->o1), k->o1[L]);
    else if (!strcmp(name, "mfi"))
        ONE(features_mfi(k->h, k->l, k->c, k->v, n, a, k->o1), k->o1[L]);
    else if (!strcmp(name, "obv_slope")) {
        rc = features_obv(k->c, k->v, n, k->o1);
        double tot = 0;
        for (size_t i = n - (size_t)a; i < n; i++)
            tot += k->v[i];
        x = tot != 0 ? (k->o1[L] - k->o1[L - (size_t)a]) / tot : 0;
    }
#undef ONE
    return rc == 0 ? x : NAN;
}

/* Compares features_compute with the kernels for every entry; returns the
 * number of mismatches. OBV's slope goes through a running sum in the
 * kernel, so it gets a tolerance; everything else must be bit-identical. */
static int check_against_kernels(const features_set *s, const char *const *specs, size_t nspec,
                                 const features_candle *w, size_t n, const char *what)
{
    double out[64];
    int rc = features_compute(s, w, n, out);
    if (rc != 0) {
        UNIT_FAIL_("%s: features_compute rc %d", what, rc);
        return 1;
    }
    cols k;
    if (cols_init(&k, w, n) != 0)
        return 1;
    int bad = 0;
    for (size_t i = 0; i < nspec; i++) {
        double want = from_kernels(specs[i], &k);
        bool ok = !strcmp(specs[i], "obv_slope:10") ? fabs(out[i] - want) <= 1e-12
                                                    : memcmp(&out[i], &want, sizeof want) == 0;
        if (!ok || !isfinite(out[i])) {
            UNIT_FAIL_("%s: %s = %.17g, kernels say %.17g", what, specs[i], out[i], want);
            bad++;
        }
    }
    cols_free(&k);
    return bad;
}

TEST(compute_matches_kernels)
{
    features_candle w[300];
    make_window(w, 300, 7, 100);
    features_set *s = must_set(all_specs, NALL);
    if (!s)
        return;
    check_against_kernels(s, all_specs, NALL, w, 300, "300 candles");
    /* the shortest window, and one in between */
    check_against_kernels(s, all_specs, NALL, w + 240, 60, "60 candles");
    check_against_kernels(s, all_specs, NALL, w + 100, 137, "137 candles");
    /* a different walk */
    make_window(w, 300, 12345, 0.0016);
    check_against_kernels(s, all_specs, NALL, w, 300, "low-priced walk");
    features_set_free(s);

    /* the default set, through its own specs */
    size_t nd;
    const char *const *d = features_default_specs(&nd);
    s = must_set(d, nd);
    check_against_kernels(s, d, nd, w, 300, "default set");
    features_set_free(s);
}

TEST(compute_needs_min_window)
{
    features_candle w[100];
    make_window(w, 100, 3, 50);
    size_t nd;
    const char *const *d = features_default_specs(&nd);
    features_set *s = must_set(d, nd);
    double out[14];
    for (int i = 0; i < 14; i++)
        out[i] = -7;
    CHECK_EQ_INT(features_compute(s, w, 59, out), PD_ENODATA);
    CHECK_EQ_INT(features_compute(s, w, 0, out), PD_ENODATA);
    CHECK(out[0] == -7 && out[13] == -7);
    CHECK_EQ_INT(features_compute(s, w, 60, out), 0);
    for (int i = 0; i < 14; i++)
        CHECK(isfinite(out[i]));
    /* absurd lengths are refused before anything is read */
    CHECK_EQ_INT(features_compute(s, w, 10000001, out), PD_ETOOBIG);
    double atr;
    CHECK_EQ_INT(features_atr_last(w, 10000001, 14, &atr), PD_ETOOBIG);
    CHECK_EQ_INT(features_compute(NULL, w, 60, out), PD_EINVAL);
    CHECK_EQ_INT(features_compute(s, NULL, 60, out), PD_EINVAL);
    CHECK_EQ_INT(features_compute(s, w, 60, NULL), PD_EINVAL);
    features_set_free(s);
}

TEST(invalid_candles_rejected)
{
    features_candle w[80];
    size_t nd;
    const char *const *d = features_default_specs(&nd);
    features_set *s = must_set(d, nd);
    double out[14];
    /* Each rejection logs its reason once (a warning); show the first only. */
    for (size_t at = 0; at < 80; at += 79)
        for (int field = 0; field < 9; field++) {
            if (at > 0 || field > 0)
                util_log_configure(UTIL_LOG_ERROR, false);
            make_window(w, 80, 5, 100);
            features_candle *k = &w[at];
            switch (field) {
            case 0:
                k->close = NAN;
                break;
            case 1:
                k->open = INFINITY;
                break;
            case 2:
                k->volume = NAN;
                break;
            case 3:
                k->volume = -1;
                break;
            case 4:
                k->low = -1;
                break;
            case 5:
                k->close = 0;
                break;
            case 6:
                k->high = k->low * 0.99;
                break; /* high < low */
            case 7:
                k->open = -0.5;
                break;
            case 8:
                k->high = -INFINITY;
                break;
            }
            for (int i = 0; i < 14; i++)
                out[i] = -7;
            int rc = features_compute(s, w, 80, out);
            if (rc != PD_EINVAL || out[0] != -7)
                UNIT_FAIL_("candle %zu field case %d: rc %d", at, field, rc);
            double atr = -7;
            rc = features_atr_last(w, 80, 14, &atr);
            if (rc != PD_EINVAL || atr != -7)
                UNIT_FAIL_("atr_last: candle %zu field case %d: rc %d", at, field, rc);
        }
    util_log_configure(UTIL_LOG_INFO, false);
    /* zero volume and a zero-range candle are valid */
    make_window(w, 80, 5, 100);
    w[79].volume = 0;
    w[40].high = w[40].low = w[40].open = w[40].close;
    CHECK_EQ_INT(features_compute(s, w, 80, out), 0);
    features_set_free(s);
}

/* Flat and volume-less windows have defined, neutral values. */
TEST(flat_window_neutral_features)
{
    features_candle w[100];
    for (size_t i = 0; i < 100; i++)
        w[i] = (features_candle){1700000000 + (int64_t)i * 60, 100, 100, 100, 100, 5};
    features_set *s = must_set(all_specs, NALL);
    double out[NALL];
    CHECK_EQ_INT(features_compute(s, w, 100, out), 0);
    static const struct {
        const char *spec;
        double v;
    } want[] = {
        {"rsi:14", 50},
        {"macd:12:26:9", 0},
        {"macd_signal:12:26:9", 0},
        {"macd_hist:12:26:9", 0},
        {"natr:14", 0},
        {"trange_pct", 0},
        {"ema_dist:12", 0},
        {"sma_dist:20", 0},
        {"wma_dist:10", 0},
        {"bb_pctb:20:2", 0.5},
        {"bb_width:20:2.5", 0},
        {"ret:1", 0},
        {"logret:3", 0},
        {"roc:10", 0},
        {"vol:20", 0},
        {"zscore:60", 0},
        {"volume_ratio:20", 1},
        {"adx:14", 0},
        {"plus_di:14", 0},
        {"minus_di:14", 0},
        {"stoch_k:14:3:3", 50},
        {"stoch_d:14:3:3", 50},
        {"stochrsi_k:14:5:3", 50},
        {"stochrsi_d:14:5:3", 50},
        {"cci:20", 0},
        {"willr:14", -50},
        {"mfi:14", 50},
        {"obv_slope:10", 0},
    };
    CHECK_EQ_INT(sizeof want / sizeof want[0], NALL);
    for (size_t i = 0; i < NALL; i++) {
        CHECK_EQ_STR(all_specs[i], want[i].spec);
        if (out[i] != want[i].v)
            UNIT_FAIL_("flat: %s = %.17g, want %g", all_specs[i], out[i], want[i].v);
    }
    /* a low-priced flat coin: still defined (exact zeros, no tolerance) */
    for (size_t i = 0; i < 100; i++) {
        w[i].open = w[i].high = w[i].low = w[i].close = 0.00161;
        w[i].volume = 0;
    }
    CHECK_EQ_INT(features_compute(s, w, 100, out), 0);
    for (size_t i = 0; i < NALL; i++) {
        if (!(fabs(out[i] - want[i].v) <= 1e-12))
            UNIT_FAIL_("flat 0.00161: %s = %.17g, want %g", all_specs[i], out[i], want[i].v);
    }
    features_set_free(s);
}

/* ------------------------------------------------------------------------ */

typedef struct thread_job {
    const features_set *s;
    const features_candle *w;
    size_t n;
    double out[NALL];
    int rc;
} thread_job;

static void *thread_main(void *arg)
{
    thread_job *j = arg;
    /* a bigger window first, so this thread's scratch is grown and reused */
    features_candle big[500];
    make_window(big, 500, 99, 10);
    double tmp[NALL];
    j->rc = features_compute(j->s, big, 500, tmp);
    if (j->rc == 0)
        j->rc = features_compute(j->s, j->w, j->n, j->out);
    return NULL;
}

TEST(deterministic_same_window)
{
    features_candle w[300], copy[300];
    make_window(w, 300, 42, 30000);
    memcpy(copy, w, sizeof w);
    features_set *s = must_set(all_specs, NALL);
    double a[NALL], b[NALL], c[NALL];
    CHECK_EQ_INT(features_compute(s, w, 300, a), 0);
    /* a larger window in between must not leave anything behind */
    features_candle big[1000];
    make_window(big, 1000, 1, 5);
    CHECK_EQ_INT(features_compute(s, big, 1000, b), 0);
    CHECK_EQ_INT(features_compute(s, copy, 300, b), 0);
    CHECK(memcmp(a, b, sizeof a) == 0);
    /* another set object with the same specs */
    features_set *s2 = must_set(all_specs, NALL);
    CHECK_EQ_INT(features_compute(s2, w, 300, c), 0);
    CHECK(memcmp(a, c, sizeof a) == 0);
    /* another thread */
    thread_job j = {s, copy, 300, {0}, -1};
    pthread_t t;
    CHECK_EQ_INT(pthread_create(&t, NULL, thread_main, &j), 0);
    pthread_join(t, NULL);
    CHECK_EQ_INT(j.rc, 0);
    CHECK(memcmp(a, j.out, sizeof a) == 0);
    /* the same candles in a window that starts earlier: SMA-type features
     * agree, EMA-type ones (which start at the window's first candle) may
     * not; that is the contract */
    features_set_free(s2);
    features_set_free(s);
}

/* Every feature is scale-free: prices x 1e-5 and volumes x 1000 leave them
 * unchanged (to rounding). */
TEST(scale_invariance)
{
    features_candle w[300], z[300];
    make_window(w, 300, 77, 25000);
    for (size_t i = 0; i < 300; i++) {
        z[i] = w[i];
        z[i].open *= 1e-5;
        z[i].high *= 1e-5;
        z[i].low *= 1e-5;
        z[i].close *= 1e-5;
        z[i].volume *= 1000;
    }
    features_set *s = must_set(all_specs, NALL);
    double a[NALL], b[NALL];
    CHECK_EQ_INT(features_compute(s, w, 300, a), 0);
    CHECK_EQ_INT(features_compute(s, z, 300, b), 0);
    for (size_t i = 0; i < NALL; i++)
        if (!(fabs(a[i] - b[i]) <= 1e-9 * fabs(a[i]) + 1e-12))
            UNIT_FAIL_("%s: %.17g at scale 1, %.17g at 1e-5", all_specs[i], a[i], b[i]);
    features_set_free(s);
}

TEST(shared_slots_and_duplicates)
{
    const char *specs[] = {"bb_pctb:20:2",      "bb_width:20:2", "bb_pctb:20:2",
                           "macd_hist:12:26:9", "macd:12:26:9",  "bb_pctb:20:2.0"};
    features_set *s = must_set(specs, 6);
    features_candle w[100];
    make_window(w, 100, 8, 70);
    double out[6];
    CHECK_EQ_INT(features_compute(s, w, 100, out), 0);
    CHECK(out[0] == out[2] && out[0] == out[5]);
    CHECK_EQ_INT(check_against_kernels(s, specs, 5, w, 100, "shared"), 0);
    CHECK(out[1] > 0 && out[0] != out[1]);
    features_set_free(s);
}

TEST(atr_last)
{
    features_candle w[200];
    make_window(w, 200, 9, 1000);
    cols k;
    if (cols_init(&k, w, 200) != 0)
        return;
    CHECK_EQ_INT(features_atr(k.h, k.l, k.c, 200, 14, k.o1), 0);
    double atr = -1;
    CHECK_EQ_INT(features_atr_last(w, 200, 14, &atr), 0);
    CHECK(atr == k.o1[199]);
    CHECK_EQ_INT(features_atr_last(w, 15, 14, &atr), 0);
    CHECK_EQ_INT(features_atr(k.h, k.l, k.c, 15, 14, k.o1), 0);
    CHECK(atr == k.o1[14]);
    atr = -1;
    CHECK_EQ_INT(features_atr_last(w, 14, 14, &atr), PD_ENODATA);
    CHECK_EQ_INT(features_atr_last(w, 200, 0, &atr), PD_EINVAL);
    CHECK_EQ_INT(features_atr_last(NULL, 200, 14, &atr), PD_EINVAL);
    CHECK_EQ_INT(features_atr_last(w, 200, 14, NULL), PD_EINVAL);
    CHECK(atr == -1);
    cols_free(&k);
}

/* Sliding windows of 300 over the real series, as training does: every
 * window computes, every value is finite; a sample is checked against the
 * kernels. */
TEST(real_candles_sliding_windows)
{
    UNIT_NEED_ENV("PREDICTD_SHARED_DATA");
    const char *dir = getenv("PREDICTD_SHARED_DATA");
    features_set *s = must_set(all_specs, NALL);
    if (!s)
        return;
    const size_t N = 300;
    for (size_t f = 0; f < SHARED_CANDLE_FILES; f++) {
        features_candle *k;
        size_t n;
        if (shared_candles_load(dir, shared_candle_files[f], &k, &n) != 0) {
            UNIT_FAIL_("cannot load %s", shared_candle_files[f]);
            continue;
        }
        size_t windows = 0, failures = 0, short_ok = 0;
        double out[NALL];
        for (size_t end = N; end <= n; end++) {
            int rc = features_compute(s, k + end - N, N, out);
            bool finite = true;
            for (size_t i = 0; i < NALL; i++)
                finite &= isfinite(out[i]) != 0;
            if (rc != 0 || !finite) {
                if (failures++ < 3)
                    UNIT_FAIL_("%s window ending %zu: rc %d", shared_candle_files[f], end, rc);
            }
            windows++;
            if (end % 997 == 0) {
                char what[128];
                snprintf(what, sizeof what, "%s window ending %zu", shared_candle_files[f], end);
                check_against_kernels(s, all_specs, NALL, k + end - N, N, what);
            }
        }
        /* the shortest windows too, at the start of the series (BTC 2011:
         * zero-range days and tiny volumes) */
        for (size_t end = 60; end < 400 && end <= n; end++)
            short_ok += features_compute(s, k + end - 60, 60, out) == 0;
        CHECK_EQ_INT(short_ok, (n < 400 ? n + 1 : 400) - 60);
        printf("  %s: %zu windows of %zu, %zu failed\n", shared_candle_files[f], windows, N,
               failures);
        free(k);
    }
    features_set_free(s);
}

/* k is a plain decimal: ".5" and "2." are read as 0.5 and 2 (the same
 * feature as "0.5" and "2": equal values on one window). */
TEST(bollinger_k_forms)
{
    const char *a[] = {"bb_pctb:20:.5", "bb_width:20:2."};
    const char *b[] = {"bb_pctb:20:0.5", "bb_width:20:2"};
    features_set *sa = must_set(a, 2), *sb = must_set(b, 2);
    features_candle w[60];
    make_window(w, 60, 11, 100);
    double oa[2] = {-1, -1}, ob[2] = {-2, -2};
    CHECK_EQ_INT(features_compute(sa, w, 60, oa), 0);
    CHECK_EQ_INT(features_compute(sb, w, 60, ob), 0);
    CHECK(oa[0] == ob[0]);
    CHECK(oa[1] == ob[1]);
    CHECK(oa[1] > 0);
    features_set_free(sa);
    features_set_free(sb);
}

/* Valid candles whose feature overflows a double (a 1e-300 to 1e300
 * move: ret is inf) are refused, never handed to a model as inf; the
 * output is left alone. */
TEST(overflowing_feature_refused)
{
    const char *specs[] = {"ret:1"};
    features_set *s = must_set(specs, 1);
    features_candle w[2] = {{1700000000, 1e-300, 1e-300, 1e-300, 1e-300, 1},
                            {1700000060, 1e-300, 1e300, 1e-300, 1e300, 1}};
    double out[1] = {-7};
    util_log_configure(UTIL_LOG_ERROR, false); /* the refusal logs a warning */
    CHECK_EQ_INT(features_compute(s, w, 2, out), PD_EINVAL);
    util_log_configure(UTIL_LOG_INFO, false);
    CHECK(out[0] == -7);
    /* a finite move is a value */
    w[1].close = w[1].high = 2e-300;
    CHECK_EQ_INT(features_compute(s, w, 2, out), 0);
    CHECK_NEAR(out[0], 1.0, 1e-12);
    features_set_free(s);
}

int main(void)
{
    RUN(default_specs_exact);
    RUN(min_window_per_feature);
    RUN(bad_specs_rejected_with_reason);
    RUN(every_catalogue_entry_parses);
    RUN(bollinger_k_forms);
    RUN(overflowing_feature_refused);
    RUN(compute_matches_kernels);
    RUN(compute_needs_min_window);
    RUN(invalid_candles_rejected);
    RUN(flat_window_neutral_features);
    RUN(deterministic_same_window);
    RUN(scale_invariance);
    RUN(shared_slots_and_duplicates);
    RUN(atr_last);
    RUN(real_candles_sliding_windows);
    return unit_report();
}
