/*
 * catalogue: feature specs by name ("rsi:14", "bb_pctb:20:2"), resolved once
 * into an immutable features_set, and features_compute(), which turns a
 * window of candles into the feature vector of its last candle.
 *
 * A spec is a name and colon-separated parameters: integers in decimal
 * without sign or leading zeros, and for the Bollinger features a real
 * multiplier. Features are scale-free (ratios, percentages or bounded
 * oscillators) so one model can serve a coin at 0.0016 and one at 100000:
 *
 *   rsi:n                    RSI, 0..100 (50 on a flat window)
 *   macd:f:s:g               MACD line / close      (f < s)
 *   macd_signal:f:s:g        MACD signal / close
 *   macd_hist:f:s:g          MACD histogram / close
 *   natr:n                   ATR / close * 100
 *   trange_pct               true range / close * 100
 *   ema_dist:n, sma_dist:n, wma_dist:n   (close - average) / close
 *   bb_pctb:n:k              (close - lower) / (upper - lower); 0.5 when
 *                            the band has zero width (a flat window)
 *   bb_width:n:k             (upper - lower) / middle
 *   ret:n, logret:n          close / close[-n] - 1, ln of that ratio
 *   roc:n                    TA-Lib ROC, percent
 *   vol:n                    population stddev of the last n one-candle log
 *                            returns
 *   zscore:n                 (close - SMA) / population stddev of close; 0
 *                            when the stddev is 0
 *   volume_ratio:n           volume / SMA(volume); 1 when no volume traded
 *   adx:n, plus_di:n, minus_di:n         0..100
 *   stoch_k:fk:sk:sd, stoch_d:fk:sk:sd   slow %K and %D, 0..100
 *   stochrsi_k:n:fk:fd, stochrsi_d:n:fk:fd
 *   cci:n                    CCI (unbounded but scale-free)
 *   willr:n                  Williams %R, -100..0
 *   mfi:n                    MFI, 0..100
 *   obv_slope:n              (OBV - OBV[-n]) / volume traded over those n
 *                            candles, -1..1: OBV itself is unbounded and
 *                            depends on where the window starts, its change
 *                            over n candles relative to their volume does
 *                            not; 0 when no volume traded.
 * Periods are 1..1000 or 2..1000 as the kernel requires; the Bollinger k is
 * in (0, 10]. The neutral values above are documented in indicators.c.
 *
 * Window semantics: a feature uses exactly the candles passed in. The
 * recursive ones (EMA, MACD, RSI, ATR, ADX) start at the window's first
 * candle, so their value depends on where the window starts; training and
 * serving pass the same windows to the same binary and so get bit-identical
 * vectors (one fixed order of operations, no state kept between calls).
 * Candle times are not looked at: gaps and staleness are the loader's
 * business. No I/O here.
 *
 * Sharing: features_set_new() collapses features that need the same
 * computation (macd/macd_signal/macd_hist, bb_pctb/bb_width with the same
 * parameters, stoch_k/stoch_d, ...) into one "slot", computed once per call.
 *
 * Beyond features.h's codes: features_compute() and features_atr_last()
 * also refuse a zero price (PD_EINVAL: every ratio to the close needs a
 * positive one), a window over 10 million candles (PD_ETOOBIG), and return
 * PD_ENOMEM when the scratch cannot grow.
 *
 * Threading and memory: a features_set is immutable after features_set_new()
 * and may be shared by threads. features_compute() keeps one scratch array
 * per thread (thread-local, grown to the largest window seen, never shrunk);
 * it is freed by a pthread key destructor when the thread exits. After the
 * first call with a given window size, a call allocates nothing.
 */
#include "features/features.h"
#include "features/features_internal.h"
#include "util/util.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SPEC_LEN 64  /* longest spec string */
#define MAX_FEATURES 512 /* most features in one set */
#define MAX_SPEC_PERIOD 1000
#define MAX_BB_K 10.0
#define MAX_WINDOW 10000000 /* candles in one window (keeps scratch sizes sane) */

/* ------------------------------------------------------------------------ */
/* The catalogue                                                             */

/* One computation, shared by the features that read it. */
enum slot_kind {
    S_RSI,
    S_MACD, /* macd, signal, hist */
    S_NATR,
    S_TRANGE,
    S_EMA,
    S_SMA,
    S_WMA,
    S_BB, /* upper, middle, lower */
    S_RET,
    S_LOGRET,
    S_ROC,
    S_VOL,
    S_ZSCORE,
    S_VOLRATIO,
    S_ADX,
    S_DI,       /* +DI, -DI */
    S_STOCH,    /* %K, %D */
    S_STOCHRSI, /* %K, %D */
    S_CCI,
    S_WILLR,
    S_MFI,
    S_OBVSLOPE,
};

/* How a feature turns its slot value into a number. */
enum transform {
    T_RAW,        /* the value itself */
    T_DIV_CLOSE,  /* value / close */
    T_DIST_CLOSE, /* (close - value) / close */
    T_PCT_CLOSE,  /* value / close * 100 */
    T_BB_PCTB,
    T_BB_WIDTH,
};

typedef struct feature_def {
    const char *name;
    int nint;  /* integer parameters */
    bool real; /* plus one real parameter (Bollinger k) */
    const char *pnames[3];
    int min[3];
    enum slot_kind slot;
    int out; /* which value of the slot */
    enum transform tr;
} feature_def;

/* One entry a line reads best as a table. */
/* clang-format off */
#define P_MACD {"fast period", "slow period", "signal period"}, {2, 2, 1}
#define P_STOCH {"fastk period", "slowk period", "slowd period"}, {1, 1, 1}
#define P_STOCHRSI {"period", "fastk period", "fastd period"}, {2, 1, 1}

static const feature_def defs[] = {
    {"rsi",          1, false, {"period"}, {2}, S_RSI,      0, T_RAW},
    {"macd",         3, false, P_MACD,          S_MACD,     0, T_DIV_CLOSE},
    {"macd_signal",  3, false, P_MACD,          S_MACD,     1, T_DIV_CLOSE},
    {"macd_hist",    3, false, P_MACD,          S_MACD,     2, T_DIV_CLOSE},
    {"natr",         1, false, {"period"}, {1}, S_NATR,     0, T_RAW},
    {"trange_pct",   0, false, {NULL},     {0}, S_TRANGE,   0, T_PCT_CLOSE},
    {"ema_dist",     1, false, {"period"}, {2}, S_EMA,      0, T_DIST_CLOSE},
    {"sma_dist",     1, false, {"period"}, {2}, S_SMA,      0, T_DIST_CLOSE},
    {"wma_dist",     1, false, {"period"}, {2}, S_WMA,      0, T_DIST_CLOSE},
    {"bb_pctb",      1, true,  {"period"}, {2}, S_BB,       0, T_BB_PCTB},
    {"bb_width",     1, true,  {"period"}, {2}, S_BB,       0, T_BB_WIDTH},
    {"ret",          1, false, {"period"}, {1}, S_RET,      0, T_RAW},
    {"logret",       1, false, {"period"}, {1}, S_LOGRET,   0, T_RAW},
    {"roc",          1, false, {"period"}, {1}, S_ROC,      0, T_RAW},
    {"vol",          1, false, {"period"}, {2}, S_VOL,      0, T_RAW},
    {"zscore",       1, false, {"period"}, {2}, S_ZSCORE,   0, T_RAW},
    {"volume_ratio", 1, false, {"period"}, {2}, S_VOLRATIO, 0, T_RAW},
    {"adx",          1, false, {"period"}, {2}, S_ADX,      0, T_RAW},
    {"plus_di",      1, false, {"period"}, {1}, S_DI,       0, T_RAW},
    {"minus_di",     1, false, {"period"}, {1}, S_DI,       1, T_RAW},
    {"stoch_k",      3, false, P_STOCH,         S_STOCH,    0, T_RAW},
    {"stoch_d",      3, false, P_STOCH,         S_STOCH,    1, T_RAW},
    {"stochrsi_k",   3, false, P_STOCHRSI,      S_STOCHRSI, 0, T_RAW},
    {"stochrsi_d",   3, false, P_STOCHRSI,      S_STOCHRSI, 1, T_RAW},
    {"cci",          1, false, {"period"}, {2}, S_CCI,      0, T_RAW},
    {"willr",        1, false, {"period"}, {2}, S_WILLR,    0, T_RAW},
    {"mfi",          1, false, {"period"}, {2}, S_MFI,      0, T_RAW},
    {"obv_slope",    1, false, {"period"}, {1}, S_OBVSLOPE, 0, T_RAW},
};

/* DESIGN.md's default set, in its order. */
static const char *const default_specs[] = {
    "rsi:14", "macd:12:26:9", "macd_signal:12:26:9", "macd_hist:12:26:9", "natr:14",
    "ema_dist:12", "ema_dist:26", "bb_pctb:20:2", "bb_width:20:2", "ret:1", "ret:5", "vol:20",
    "zscore:60", "volume_ratio:20",
};
/* clang-format on */

const char *const *features_default_specs(size_t *n)
{
    if (n)
        *n = sizeof default_specs / sizeof default_specs[0];
    return default_specs;
}

/* ------------------------------------------------------------------------ */
/* Resolved sets                                                             */

typedef struct slot {
    enum slot_kind kind;
    int p[3];
    double r;
    size_t lookback;
} slot;

typedef struct feature {
    size_t slot;
    int out;
    enum transform tr;
} feature;

struct features_set {
    size_t count;
    char **names; /* the specs as given, owned */
    feature *feats;
    size_t nslots;
    slot *slots;
    size_t min_window;
    size_t tmp_fixed; /* scratch doubles the stochastics need besides n */
    bool tmp_n;       /* a STOCHRSI needs n more */
};

static size_t slot_lookback(const slot *s)
{
    size_t a = (size_t)s->p[0], b = (size_t)s->p[1], c = (size_t)s->p[2];
    switch (s->kind) {
    case S_MACD:
        return (b - 1) + (c - 1);
    case S_TRANGE:
        return 1;
    case S_EMA:
    case S_SMA:
    case S_WMA:
    case S_BB:
    case S_ZSCORE:
    case S_VOLRATIO:
    case S_CCI:
    case S_WILLR:
        return a - 1;
    case S_ADX:
        return 2 * a - 1;
    case S_STOCH:
        return (a - 1) + (b - 1) + (c - 1);
    case S_STOCHRSI:
        return a + (b - 1) + (c - 1);
    case S_RSI:
    case S_NATR:
    case S_RET:
    case S_LOGRET:
    case S_ROC:
    case S_VOL:
    case S_DI:
    case S_MFI:
    case S_OBVSLOPE:
        return a;
    }
    return 0;
}

static void set_why(char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_why(char *why, size_t whylen, const char *fmt, ...)
{
    if (!why || whylen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
}

/* A decimal integer without sign or leading zeros, at most 7 digits. */
static bool parse_int(const char *s, int *out)
{
    size_t len = strlen(s);
    if (len == 0 || len > 7 || (s[0] == '0' && len > 1))
        return false;
    int v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

/* A plain decimal real ("2", "1.5"): digits with at most one dot. */
static bool parse_real(const char *s, double *out)
{
    size_t len = strlen(s), dots = 0, digits = 0;
    if (len == 0 || len > 16)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '.')
            dots++;
        else if (s[i] >= '0' && s[i] <= '9')
            digits++;
        else
            return false;
    }
    if (dots > 1 || digits == 0)
        return false;
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v))
        return false;
    *out = v;
    return true;
}

/* Resolves one spec into a slot description and a feature. */
static int resolve(const char *spec, slot *sl, feature *f, char *why, size_t whylen)
{
    size_t len = strlen(spec);
    if (len == 0 || len > MAX_SPEC_LEN) {
        set_why(why, whylen, "unknown feature '%.*s%s'", MAX_SPEC_LEN, spec,
                len > MAX_SPEC_LEN ? "..." : "");
        return PD_EINVAL;
    }
    char buf[MAX_SPEC_LEN + 1];
    memcpy(buf, spec, len + 1);
    char *tok[6];
    size_t ntok = 0;
    for (char *p = buf;;) {
        if (ntok == 6)
            break;
        tok[ntok++] = p;
        char *c = strchr(p, ':');
        if (!c)
            break;
        *c = '\0';
        p = c + 1;
    }
    const feature_def *d = NULL;
    for (size_t i = 0; i < sizeof defs / sizeof defs[0]; i++)
        if (strcmp(defs[i].name, tok[0]) == 0)
            d = &defs[i];
    if (!d) {
        set_why(why, whylen, "unknown feature '%s'", spec);
        return PD_EINVAL;
    }
    size_t want = (size_t)d->nint + (d->real ? 1 : 0);
    if (ntok - 1 != want || strchr(tok[ntok - 1], ':')) {
        if (want == 0)
            set_why(why, whylen, "%s: takes no parameters (got '%s')", d->name, spec);
        else
            set_why(why, whylen, "%s: expects %zu parameter%s (%s%s%s%s%s%s), got '%s'", d->name,
                    want, want > 1 ? "s" : "", d->pnames[0], d->nint > 1 ? ":" : "",
                    d->nint > 1 ? d->pnames[1] : "", d->nint > 2 ? ":" : "",
                    d->nint > 2 ? d->pnames[2] : "", d->real ? ":k" : "", spec);
        return PD_EINVAL;
    }
    memset(sl, 0, sizeof *sl);
    sl->kind = d->slot;
    for (int i = 0; i < d->nint; i++) {
        int v;
        if (!parse_int(tok[1 + i], &v) || v < d->min[i] || v > MAX_SPEC_PERIOD) {
            set_why(why, whylen, "%s: %s must be %d..%d (got '%s')", d->name, d->pnames[i],
                    d->min[i], MAX_SPEC_PERIOD, spec);
            return PD_EINVAL;
        }
        sl->p[i] = v;
    }
    if (d->real) {
        double k;
        if (!parse_real(tok[1 + d->nint], &k) || !(k > 0.0) || k > MAX_BB_K) {
            set_why(why, whylen,
                    "%s: k (standard deviations) must be a number in (0, %g] (got '%s')", d->name,
                    MAX_BB_K, spec);
            return PD_EINVAL;
        }
        sl->r = k;
    }
    if (d->slot == S_MACD && sl->p[0] >= sl->p[1]) {
        set_why(why, whylen, "%s: fast period must be below slow period (got '%s')", d->name, spec);
        return PD_EINVAL;
    }
    sl->lookback = slot_lookback(sl);
    f->out = d->out;
    f->tr = d->tr;
    return 0;
}

static bool slot_same(const slot *a, const slot *b)
{
    return a->kind == b->kind && a->p[0] == b->p[0] && a->p[1] == b->p[1] && a->p[2] == b->p[2] &&
           a->r == b->r;
}

int features_set_new(const char *const *specs, size_t n, features_set **out, char *why,
                     size_t whylen)
{
    if (!out || (!specs && n > 0)) {
        set_why(why, whylen, "no specs");
        return PD_EINVAL;
    }
    if (n == 0 || n > MAX_FEATURES) {
        set_why(why, whylen, "a feature set needs 1..%d features (got %zu)", MAX_FEATURES, n);
        return PD_EINVAL;
    }
    int rc = PD_ENOMEM;
    features_set *s = calloc(1, sizeof *s);
    if (!s)
        goto fail;
    s->names = calloc(n, sizeof *s->names);
    s->feats = calloc(n, sizeof *s->feats);
    s->slots = calloc(n, sizeof *s->slots);
    if (!s->names || !s->feats || !s->slots)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        if (!specs[i]) {
            set_why(why, whylen, "feature %zu is NULL", i);
            rc = PD_EINVAL;
            goto fail;
        }
        slot sl;
        rc = resolve(specs[i], &sl, &s->feats[i], why, whylen);
        if (rc)
            goto fail;
        rc = PD_ENOMEM;
        s->names[i] = strdup(specs[i]);
        if (!s->names[i])
            goto fail;
        s->count = i + 1;
        size_t k = 0;
        while (k < s->nslots && !slot_same(&s->slots[k], &sl))
            k++;
        if (k == s->nslots) {
            s->slots[s->nslots++] = sl;
            if (sl.lookback + 1 > s->min_window)
                s->min_window = sl.lookback + 1;
            if (sl.kind == S_STOCH && (size_t)(sl.p[1] + 2 * sl.p[2] - 1) > s->tmp_fixed)
                s->tmp_fixed = (size_t)(sl.p[1] + 2 * sl.p[2] - 1);
            if (sl.kind == S_STOCHRSI) {
                s->tmp_n = true;
                if ((size_t)sl.p[2] > s->tmp_fixed)
                    s->tmp_fixed = (size_t)sl.p[2];
            }
        }
        s->feats[i].slot = k;
    }
    *out = s;
    return 0;
fail:
    if (rc == PD_ENOMEM)
        set_why(why, whylen, "out of memory");
    features_set_free(s);
    return rc;
}

void features_set_free(features_set *s)
{
    if (!s)
        return;
    if (s->names)
        for (size_t i = 0; i < s->count; i++)
            free(s->names[i]);
    free(s->names);
    free(s->feats);
    free(s->slots);
    free(s);
}

size_t features_set_count(const features_set *s)
{
    return s ? s->count : 0;
}

const char *features_set_name(const features_set *s, size_t i)
{
    return s && i < s->count ? s->names[i] : NULL;
}

size_t features_set_min_window(const features_set *s)
{
    return s ? s->min_window : 0;
}

/* ------------------------------------------------------------------------ */
/* Per-thread scratch                                                        */

static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static pthread_key_t scratch_key; /* written once under scratch_once */
static bool scratch_key_ok;       /* likewise */
static _Thread_local double *scratch;
static _Thread_local size_t scratch_cap;

static void scratch_destroy(void *p)
{
    free(p);
}

static void scratch_key_init(void)
{
    scratch_key_ok = pthread_key_create(&scratch_key, scratch_destroy) == 0;
}

/* The calling thread's scratch with room for need doubles, or NULL. */
static double *scratch_get(size_t need)
{
    if (need <= scratch_cap)
        return scratch;
    pthread_once(&scratch_once, scratch_key_init);
    size_t cap = scratch_cap * 2 > need ? scratch_cap * 2 : need;
    if (cap < 1024)
        cap = 1024;
    double *p = realloc(scratch, cap * sizeof *p);
    if (!p)
        return NULL;
    scratch = p;
    scratch_cap = cap;
    if (scratch_key_ok)
        pthread_setspecific(scratch_key, p);
    return p;
}

/* ------------------------------------------------------------------------ */
/* Computing                                                                 */

/*
 * Checks every candle and copies high, low, close and volume into columns.
 * On a bad candle logs why and returns PD_EINVAL.
 */
static int load_columns(const features_candle *c, size_t n, double *h, double *l, double *cl,
                        double *v)
{
    for (size_t i = 0; i < n; i++) {
        const features_candle *k = &c[i];
        /* One branch-free test per candle: x - x is 0 for a finite x and
         * NaN for NaN or an infinity (and NaN fails every comparison);
         * high >= low > 0 covers high. The reason is worked out only for a
         * bad candle. */
        double fin = (k->open - k->open) + (k->high - k->high) + (k->low - k->low) +
                     (k->close - k->close) + (k->volume - k->volume);
        int ok = (fin == 0) & (k->open > 0) & (k->low > 0) & (k->close > 0) & (k->volume >= 0) &
                 (k->high >= k->low);
        if (!ok) {
            const char *why = "high is below low";
            if (!isfinite(k->open) || !isfinite(k->high) || !isfinite(k->low) ||
                !isfinite(k->close) || !isfinite(k->volume))
                why = "a value is NaN or infinite";
            else if (!(k->open > 0) || !(k->high > 0) || !(k->low > 0) || !(k->close > 0))
                why = "a price is zero or negative";
            else if (k->volume < 0)
                why = "volume is negative";
            LOG_WARN("features", "invalid candle %zu of %zu (open time %lld): %s", i, n,
                     (long long)k->t, why);
            return PD_EINVAL;
        }
        h[i] = k->high;
        l[i] = k->low;
        cl[i] = k->close;
        v[i] = k->volume;
    }
    return 0;
}

static void compute_slot(const slot *sl, const double *h, const double *l, const double *c,
                         const double *v, size_t n, double *tmp, double val[3])
{
    size_t last = n - 1;
    const int *p = sl->p;
    switch (sl->kind) {
    case S_RSI:
        val[0] = features__rsi_run(c, n, p[0], NULL);
        break;
    case S_MACD:
        features__macd_run(c, n, p[0], p[1], p[2], NULL, NULL, NULL, val);
        break;
    case S_NATR:
        val[0] = features__atr_run(h, l, c, n, p[0], true, NULL);
        break;
    case S_TRANGE:
        val[0] = features__trange_at(h, l, c, last);
        break;
    case S_EMA:
        val[0] = features__ema_run(c, n, p[0], NULL);
        break;
    case S_SMA:
        val[0] = features__mean_at(c, last, p[0]);
        break;
    case S_WMA:
        val[0] = features__wma_at(c, last, p[0]);
        break;
    case S_BB:
        features__bbands_at(c, last, p[0], sl->r, val);
        break;
    case S_RET:
        val[0] = features__ret_at(c, last, p[0]);
        break;
    case S_LOGRET:
        val[0] = features__logret_at(c, last, p[0]);
        break;
    case S_ROC:
        val[0] = features__roc_at(c, last, p[0]);
        break;
    case S_VOL:
        val[0] = features__volatility_at(c, last, p[0]);
        break;
    case S_ZSCORE:
        val[0] = features__zscore_at(c, last, p[0]);
        break;
    case S_VOLRATIO:
        val[0] = features__volume_ratio_at(v, last, p[0]);
        break;
    case S_ADX:
        val[0] = features__adx_run(h, l, c, n, p[0], NULL);
        break;
    case S_DI:
        features__di_run(h, l, c, n, p[0], NULL, NULL, val);
        break;
    case S_STOCH:
        features__stoch_last(h, l, c, n, p[0], p[1], p[2], tmp, val);
        break;
    case S_STOCHRSI:
        features__stochrsi_last(c, n, p[0], p[1], p[2], tmp, val);
        break;
    case S_CCI:
        val[0] = features__cci_at(h, l, c, last, p[0]);
        break;
    case S_WILLR:
        val[0] = features__willr_at(h, l, c, last, p[0]);
        break;
    case S_MFI:
        val[0] = features__mfi_at(h, l, c, v, last, p[0]);
        break;
    case S_OBVSLOPE:
        val[0] = features__obv_slope_at(c, v, last, p[0]);
        break;
    }
}

static double apply(enum transform tr, int out, const double val[3], double close)
{
    switch (tr) {
    case T_RAW:
        return val[out];
    case T_DIV_CLOSE:
        return val[out] / close;
    case T_DIST_CLOSE:
        return (close - val[out]) / close;
    case T_PCT_CLOSE:
        return val[out] / close * 100.0;
    case T_BB_PCTB:
        /* A zero-width band (flat window): the close is its middle. */
        return val[0] == val[2] ? 0.5 : (close - val[2]) / (val[0] - val[2]);
    case T_BB_WIDTH:
        return (val[0] - val[2]) / val[1];
    }
    return NAN;
}

int features_compute(const features_set *s, const features_candle *window, size_t n, double *out)
{
    if (!s || !window || !out)
        return PD_EINVAL;
    if (n < s->min_window || n == 0)
        return PD_ENODATA;
    if (n > MAX_WINDOW)
        return PD_ETOOBIG;
    size_t need = 4 * n + 3 * s->nslots + s->count + s->tmp_fixed + (s->tmp_n ? n : 0);
    double *w = scratch_get(need);
    if (!w)
        return PD_ENOMEM;
    double *h = w, *l = h + n, *c = l + n, *v = c + n;
    double *vals = v + n, *res = vals + 3 * s->nslots, *tmp = res + s->count;
    int rc = load_columns(window, n, h, l, c, v);
    if (rc)
        return rc;
    for (size_t k = 0; k < s->nslots; k++)
        compute_slot(&s->slots[k], h, l, c, v, n, tmp, &vals[3 * k]);
    double close = c[n - 1];
    for (size_t i = 0; i < s->count; i++) {
        const feature *f = &s->feats[i];
        double x = apply(f->tr, f->out, &vals[3 * f->slot], close);
        if (!isfinite(x)) {
            LOG_WARN("features", "feature '%s' is not finite (%g) at open time %lld", s->names[i],
                     x, (long long)window[n - 1].t);
            return PD_EINVAL;
        }
        res[i] = x;
    }
    memcpy(out, res, s->count * sizeof *out);
    return 0;
}

int features_atr_last(const features_candle *c, size_t n, int period, double *out)
{
    if (!c || !out || period < 1 || period > FEATURES_MAX_PERIOD)
        return PD_EINVAL;
    if (n > MAX_WINDOW)
        return PD_ETOOBIG;
    double *w = scratch_get(4 * n + 1);
    if (!w)
        return PD_ENOMEM;
    double *h = w, *l = h + n, *cl = l + n, *v = cl + n;
    int rc = load_columns(c, n, h, l, cl, v);
    if (rc)
        return rc;
    if (n <= (size_t)period)
        return PD_ENODATA;
    double atr = features__atr_run(h, l, cl, n, period, false, NULL);
    if (!isfinite(atr))
        return PD_EINVAL;
    *out = atr;
    return 0;
}
