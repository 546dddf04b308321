/*
 * seed.c: deterministic synthetic candles for `predictd seed` and for tests
 * and benchmarks that need realistic series without a market feed.
 *
 * The model, per candle of length tf:
 *   - a hidden regime (trend up, trend down, range, high volatility) that
 *     follows a Markov chain with long expected durations, so that the
 *     recent past says something about the near future;
 *   - a log return = regime drift (+/- a fraction of sigma in trends, a pull
 *     back to the regime's entry price in ranges) + sigma * regime scale *
 *     GARCH-like volatility clustering * a fat-tailed shock, plus a small
 *     AR(1) momentum term and a pull towards the starting price that grows
 *     with the cube of the log distance (negligible within a factor of two,
 *     strong beyond ten), so long series stay in a plausible band;
 *   - sigma per candle = the symbol's daily volatility * sqrt(tf / 1 day);
 *   - wicks beyond the body scaled by the same volatility; prices rounded to
 *     a tick of about seven significant digits of the starting price;
 *   - volume = the symbol's daily notional / price * tf / 1 day, scaled by
 *     the regime, the size of the move, a UTC time-of-day cycle (intraday
 *     timeframes) and log-normal noise.
 * Invariants: open = previous close, low <= min(open, close), high >=
 * max(open, close), all prices > 0, volume >= 0, open times aligned to UTC
 * tf boundaries, the last candle is the last one closed at `now`.
 *
 * Determinism: the generator is util_rng (splitmix64 seeding
 * xoshiro256**) seeded with seed ^ FNV-1a("SYMBOL:TF"), so the same
 * (symbol, tf, count, seed) gives the same values bit for bit on a given
 * platform (the maths is libm's exp/log/sqrt/cos); `now` only moves the
 * timestamps. No rand(), no globals: thread-safe.
 *
 * It does no I/O; `predictd seed` writes the result with
 * store_upsert_candles().
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "features/features.h"
#include "feed/feed.h"
#include "util/util.h"

#define SEED_MAX_COUNT 10000000u

/* ---------------------------------------------------------------------------
 * PRNG: util_rng, with a spare normal draw kept between calls.
 */
typedef struct prng {
    util_rng r;
    bool has_spare;
    double spare;
} prng;

static uint64_t next_u64(prng *g)
{
    return util_rng_next(&g->r);
}

static void prng_seed(prng *g, uint64_t seed)
{
    util_rng_seed(&g->r, seed);
    g->has_spare = false;
}

/* Uniform in [0, 1). */
static double uniform(prng *g)
{
    return util_rng_uniform(&g->r);
}

/* Standard normal (Box-Muller, both values used). */
static double normal(prng *g)
{
    if (g->has_spare) {
        g->has_spare = false;
        return g->spare;
    }
    double u1 = uniform(g), u2 = uniform(g);
    if (u1 < 1e-300)
        u1 = 1e-300;
    double r = sqrt(-2.0 * log(u1)), a = 2.0 * M_PI * u2;
    g->spare = r * sin(a);
    g->has_spare = true;
    return r * cos(a);
}

static uint64_t fnv1a(const char *s, uint64_t h)
{
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= UINT64_C(0x100000001b3);
    }
    return h;
}

/* ---------------------------------------------------------------------------
 * Symbols.
 */
typedef struct asset {
    const char *base;
    double price;    /* USD */
    double vol_day;  /* daily volatility of log returns */
    double notional; /* USD traded per day */
} asset;

static const asset assets[] = {
    {"BTC", 60000, 0.035, 1.5e9}, {"ETH", 3000, 0.045, 8e8}, {"SOL", 150, 0.060, 4e8},
    {"BNB", 550, 0.040, 2e8},     {"XRP", 0.6, 0.055, 3e8},  {"ADA", 0.45, 0.055, 1e8},
    {"DOGE", 0.15, 0.070, 2e8},   {"AVAX", 35, 0.065, 8e7},
};

static const struct {
    const char *suffix;
    double usd; /* price of one unit of the quote currency in USD */
} quotes[] = {{"FDUSD", 1}, {"USDT", 1},   {"USDC", 1},    {"BUSD", 1},
              {"USD", 1},   {"EUR", 1.08}, {"BTC", 60000}, {"ETH", 3000}};

/* Fills the asset of a symbol: known bases by table, others from a hash. */
static void asset_of(const char *symbol, asset *a)
{
    size_t len = strlen(symbol);
    char base[24];
    double quote_usd = 1;
    memcpy(base, symbol, len + 1);
    for (size_t i = 0; i < sizeof quotes / sizeof quotes[0]; i++) {
        size_t sl = strlen(quotes[i].suffix);
        if (len > sl && strcmp(symbol + len - sl, quotes[i].suffix) == 0) {
            base[len - sl] = '\0';
            quote_usd = quotes[i].usd;
            break;
        }
    }
    for (size_t i = 0; i < sizeof assets / sizeof assets[0]; i++) {
        if (strcmp(base, assets[i].base) == 0) {
            *a = assets[i];
            a->price /= quote_usd;
            return;
        }
    }
    /* Unknown: a price between 0.01 and 1000 USD, volatility 4-8 %/day,
     * 10-300 M USD a day, all fixed by the name. */
    uint64_t x = fnv1a(base, UINT64_C(0xcbf29ce484222325));
    double u1 = (double)(util_splitmix64(&x) >> 11) * 0x1.0p-53;
    double u2 = (double)(util_splitmix64(&x) >> 11) * 0x1.0p-53;
    double u3 = (double)(util_splitmix64(&x) >> 11) * 0x1.0p-53;
    a->base = NULL;
    a->price = pow(10.0, -2.0 + 5.0 * u1) / quote_usd;
    a->vol_day = 0.04 + 0.04 * u2;
    a->notional = 1e7 * pow(30.0, u3);
}

/* ---------------------------------------------------------------------------
 * Regimes.
 */
enum regime { UP, DOWN, RANGE, HIGHVOL, NREGIME };

static const struct {
    double duration;      /* expected length in candles */
    double drift;         /* per candle, in units of sigma */
    double vol;           /* sigma multiplier */
    double volume;        /* volume multiplier */
    double next[NREGIME]; /* where it goes when it ends */
} regimes[NREGIME] = {
    [UP] = {80, 0.20, 1.00, 1.15, {0, 0.30, 0.50, 0.20}},
    [DOWN] = {70, -0.22, 1.15, 1.30, {0.25, 0, 0.50, 0.25}},
    [RANGE] = {90, 0, 0.70, 0.75, {0.35, 0.35, 0, 0.30}},
    [HIGHVOL] = {30, 0, 2.20, 1.90, {0.30, 0.30, 0.40, 0}},
};

static enum regime next_regime(prng *g, enum regime r)
{
    if (uniform(g) >= 1.0 / regimes[r].duration)
        return r;
    double u = uniform(g), acc = 0;
    for (int i = 0; i < NREGIME; i++) {
        acc += regimes[r].next[i];
        if (u < acc)
            return (enum regime)i;
    }
    return RANGE;
}

/* Rounds to the tick; monotonic, so orderings between prices survive. */
static double to_tick(double v, double tick)
{
    return nearbyint(v / tick) * tick;
}

int feed_seed_series(const char *symbol, const char *tf, int64_t now, size_t count,
                         uint64_t seed, features_candle **out)
{
    if (!symbol || !util_symbol_valid(symbol))
        return PD_ESYMBOL;
    int64_t tfs = util_tf_seconds(tf);
    if (!tfs)
        return PD_ETIMEFRAME;
    if (!out || count == 0)
        return PD_EINVAL;
    if (count > SEED_MAX_COUNT)
        return PD_ETOOBIG;
    int64_t last = util_tf_last_closed_open(now, tfs);
    int64_t first = last - (int64_t)(count - 1) * tfs;
    if (first < 0)
        return PD_EINVAL;
    features_candle *c = malloc(count * sizeof *c);
    if (!c)
        return PD_ENOMEM;

    asset a;
    asset_of(symbol, &a);
    char key[40];
    strcpy(key, symbol);
    strcat(key, ":");
    strcat(key, tf);
    prng g;
    prng_seed(&g, seed ^ fnv1a(key, UINT64_C(0xcbf29ce484222325)));

    double frac = (double)tfs / 86400.0;
    double sigma = a.vol_day * sqrt(frac);
    double tick = pow(10.0, floor(log10(a.price)) - 6);
    double p0 = to_tick(a.price, tick), price = p0, anchor = p0;
    double garch = 1.0, prev_z = 0.0, prev_r = 0.0;
    enum regime reg = (enum regime)(next_u64(&g) % NREGIME);

    for (size_t i = 0; i < count; i++) {
        enum regime nr = next_regime(&g, reg);
        if (nr != reg)
            anchor = price;
        reg = nr;
        /* Volatility clustering: mean 1, persistence 0.95. */
        garch = 0.05 + 0.10 * prev_z * prev_z + 0.85 * garch;
        double shock = normal(&g);
        if (uniform(&g) < 0.01)
            shock *= 2.5; /* fat tails */
        double scale = sigma * regimes[reg].vol * sqrt(garch);
        double drift = regimes[reg].drift * sigma;
        if (reg == RANGE)
            drift -= 0.02 * log(price / anchor);
        double away = log(price / p0);
        drift -= 0.03 * sigma * away * away * away; /* keeps long series in a band */
        double r = drift + 0.05 * prev_r + scale * shock;
        prev_z = shock;
        prev_r = r;

        double open = price;
        double close = to_tick(open * exp(r), tick);
        if (close < 100 * tick)
            close = 100 * tick; /* a floor a sane series never reaches */
        double body_hi = open > close ? open : close, body_lo = open < close ? open : close;
        double high = to_tick(body_hi * exp(0.6 * scale * fabs(normal(&g))), tick);
        double low = to_tick(body_lo * exp(-0.6 * scale * fabs(normal(&g))), tick);
        if (low < tick)
            low = tick;

        int64_t t = first + (int64_t)i * tfs;
        double season = 1.0;
        if (tfs < 86400) {
            double hour = (double)(t % 86400) / 3600.0;
            season = 1.0 + 0.35 * sin(2.0 * M_PI * (hour - 8.0) / 24.0);
        }
        double move = fabs(r) / (sigma > 0 ? sigma : 1);
        double volume = a.notional / close * frac * regimes[reg].volume * season *
                        (0.6 + 0.5 * move) * exp(0.35 * normal(&g) - 0.06);
        c[i] = (features_candle){.t = t,
                                 .open = open,
                                 .high = high,
                                 .low = low,
                                 .close = close,
                                 .volume = nearbyint(volume * 1e4) / 1e4};
        price = close;
    }
    *out = c;
    return 0;
}
