/*
 * binance.c: the Binance spot connector. Live trades from the `<symbol>@trade`
 * WebSocket streams (one combined-stream connection for every symbol),
 * 1m history and gaps from `GET /api/v3/klines`, each symbol's status and
 * price tick from `GET /api/v3/exchangeInfo` (kept in the store's
 * exchange_symbols table for whoever rounds prices), and the server's
 * clock from `GET /api/v3/time`. Closed 1m candles go to the feed sink.
 *
 * Why trades rather than @kline_1m: trade ids are consecutive per symbol,
 * so a missing trade is seen (an id gap) and its minutes are fetched again
 * over REST; a kline stream drops updates silently. Trades also give the
 * tick-rate metrics, and the minute candles come from the project's one
 * aggregator (feed_agg), the same that imports trades CSV files.
 *
 * HOW NO MINUTE IS LOST OR DOUBLED
 * - REST is the authority for any minute the stream may not have seen
 *   whole. After every (re)connect the connector backfills over REST the
 *   closed minutes after the newest stored one, up to the server's current
 *   minute C, then takes trades; trades older than what REST wrote are
 *   dropped. C itself (its first trades may have been missed) is marked
 *   unsure, as are the minutes around an id gap that is not filled by a
 *   late trade within a grace period. Once the exchange's clock has passed
 *   an unsure range (plus GRACE_MS), the closed minutes from its start to
 *   the current one are fetched again over REST and written over what the
 *   aggregator made of them.
 * - Each symbol has its own aggregator, which is reset when REST takes
 *   over its minutes, so a partial minute is never emitted over a REST
 *   one; minutes without trades after a reset are flat at REST's last
 *   close (emitted here, since a fresh aggregator knows no previous close).
 * - Writes are upserts, so a minute written twice holds the last value:
 *   REST's, or a correction made by a late trade.
 * - The exchange's clock is the newest of: event and trade times seen, and
 *   /api/v3/time plus the local time elapsed since.
 *
 * CONNECTION RULES (Binance's documentation)
 * - The server pings now and then (every 20 s today, every 3 min in older
 *   documentation) and drops a client that does not pong; ws.c answers
 *   every ping with its payload. After PROBE_S without any frame (a quiet
 *   symbol, or a dead peer) the connector pings the server itself; no
 *   frame PROBE_WAIT_S after that, and the connection is taken as dead.
 * - A connection lives at most 24 hours: it is renewed (closed and opened
 *   again, with the backfill above) after renew_s (23 h 30 min).
 * - Reconnects back off exponentially (1 s doubling to 60 s) with jitter;
 *   the back-off resets after a connection that lasted 60 s.
 * - REST: rest.c paces by X-MBX-USED-WEIGHT-1M and waits out 429/418.
 * - A message that is not JSON, or JSON that is not a trade of a
 *   subscribed symbol, is counted as rejected and logged once per episode
 *   (the first after a clean stretch), never fatal.
 *
 * THREADING: one thread per connector (started by start(), joined by
 * stop()) owns the connection, the REST client, the aggregators and the
 * per-symbol bookkeeping. Counters read by /metrics and /health/status are
 * atomics.
 */
#define _GNU_SOURCE
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "feed/feed.h"
#include "feed/net_internal.h"
#include "store/store.h"
#include "util/util.h"

#define MOD "binance"
#define MAX_SYMBOLS 64
#define GRACE_MS 3000     /* a minute's trades may arrive this late */
#define READ_SLICE_MS 500 /* the thread looks at its clock this often */
#define PROBE_S 60        /* no frame for this long: ping the server */
#define PROBE_WAIT_S 30   /* and no frame this long after the ping: dead */
#define LAG_S 10          /* event time this far behind: lagging */
#define BACKOFF_MAX_MS 60000
#define INITIAL_BACKFILL_MIN 1000 /* minutes fetched for a symbol with no candles */
#define KLINES_LIMIT 1000
#define GAP_BITMAP_MAX 4096 /* id gaps up to this size are tracked id by id */
#define GAPS_MAX 32
#define MINUTE_MS INT64_C(60000)

static int64_t floor_min(int64_t ms)
{
    return ms - ((ms % MINUTE_MS) + MINUTE_MS) % MINUTE_MS;
}

/* Trade ids missing from the stream, between two trades seen. */
typedef struct gap {
    int64_t lo, hi;   /* missing ids lo..hi */
    int64_t t_before; /* time of the trade before the gap */
    int64_t t_after;  /* time of the trade after it */
    uint64_t missing; /* ids still missing */
    uint8_t *seen;    /* bitmap over lo..hi; NULL for a large gap (never filled) */
} gap;

typedef struct bsym {
    char name[24];
    char lower[24];
    bool enabled; /* exchangeInfo knows it */
    /* thread-owned */
    feed_agg *agg;
    bool agg_fresh;        /* no trade pushed since the last reset */
    int64_t agg_first_min; /* minute (ms) of the first trade since the reset */
    int64_t rest_upto;     /* ms: minutes before it were written from REST; older trades drop */
    int64_t fill_from;     /* ms: first minute a fresh aggregator has not emitted */
    double fill_close;     /* REST's last close, NaN: unknown */
    int64_t max_id;        /* highest trade id seen, -1: none */
    int64_t max_id_t;      /* its time */
    int64_t dirty_from, dirty_to; /* unsure minutes [from, to), 0/0: none */
    uint64_t refetch_not_before;  /* util_mono_ns(): after a failed refetch, wait */
    gap gaps[GAPS_MAX];
    size_t ngaps;
    /* counters (any thread reads) */
    _Atomic uint64_t trades, rejected, backfilled, dropped_old;
    _Atomic int64_t last_trade_wall_ms;        /* local time the last trade arrived, 0: never */
    _Atomic int64_t minute_wall;               /* the local minute of `this_minute` */
    _Atomic uint64_t this_minute, last_minute; /* trades received in it / the one before */
} bsym;

typedef struct binance {
    feed_binance_config cfg; /* its strings point into own */
    char *own[3];            /* copies of the URLs */
    char ws_url[1400];
    bsym syms[MAX_SYMBOLS];
    size_t nsyms;
    feed_sink *sink;
    pthread_t thread;
    bool started;
    atomic_bool stop;
    /* thread-owned */
    feed__rest *rest;
    store_markets *markets;
    int64_t xnow;         /* the exchange's clock, ms (newest seen) */
    int64_t clock_offset; /* server time - local time, ms, at the last sync */
    bool clock_synced;
    bool rejecting;       /* inside an episode of rejected messages */
    uint64_t clean_since; /* good messages since the last rejected one */
    /* read by other threads */
    _Atomic int state; /* enum feed_state */
    _Atomic uint64_t reconnects, renewals, connects;
    _Atomic uint64_t unattributed; /* rejected messages naming no subscribed symbol */
    _Atomic int64_t last_event_lag_ms;
    pthread_mutex_t err_lock;
    char last_error[256]; /* err_lock */
} binance;

static void set_error(binance *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(binance *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pthread_mutex_lock(&b->err_lock);
    vsnprintf(b->last_error, sizeof b->last_error, fmt, ap);
    pthread_mutex_unlock(&b->err_lock);
    va_end(ap);
}

static void set_state(binance *b, int st)
{
    if (atomic_exchange(&b->state, st) != st)
        feed_sink_set_state(b->sink, st);
}

static int64_t wall_ms(void)
{
    return (int64_t)(util_now_precise() * 1000.0);
}

/* The exchange's clock. */
static int64_t xclock(binance *b)
{
    int64_t est = b->clock_synced ? wall_ms() + b->clock_offset : 0;
    return est > b->xnow ? est : b->xnow;
}

/* ---------------------------------------------------------------------------
 * Writing candles.
 */
static int write_candles(binance *b, bsym *s, const features_candle *c, size_t n)
{
    if (!n)
        return 0;
    int rc = feed_sink_candles(b->sink, s->name, c, n);
    if (rc && rc != PD_EDB)
        LOG_WARN(MOD, "%s: %zu candles not written: %s", s->name, n, util_strerror(rc));
    return rc;
}

struct emit_ctx {
    binance *b;
    bsym *s;
};

static int on_emit(const features_candle *c, bool correction, void *arg)
{
    struct emit_ctx *e = arg;
    (void)correction;
    if (c->t * 1000 < e->s->rest_upto)
        return 0;                          /* REST wrote that minute */
    (void)write_candles(e->b, e->s, c, 1); /* the sink keeps it pending on PD_EDB */
    return 0;
}

/* Flat minutes [s->fill_from, to_ms) at REST's last close, for a fresh
 * aggregator that has not seen a trade yet. */
static void fill_flats(binance *b, bsym *s, int64_t to_ms)
{
    if (isnan(s->fill_close) || s->fill_from <= 0)
        return;
    while (s->fill_from < to_ms) {
        features_candle c = {.t = s->fill_from / 1000,
                             .open = s->fill_close,
                             .high = s->fill_close,
                             .low = s->fill_close,
                             .close = s->fill_close,
                             .volume = 0};
        if (write_candles(b, s, &c, 1) == PD_EDB)
            return; /* tried again on the next tick */
        s->fill_from += MINUTE_MS;
    }
}

/* REST wrote every minute before upto (last close `close`, NaN when it
 * returned nothing): older trades are dropped from now on, and the
 * aggregator starts afresh unless it already holds trades of a minute at or
 * after upto (then only its emissions before upto are dropped). */
static void rest_took_over(bsym *s, int64_t upto, double close)
{
    if (upto <= s->rest_upto)
        return;
    s->rest_upto = upto;
    bool holds_later = !s->agg_fresh && s->agg && s->max_id_t >= upto;
    if (holds_later)
        return;
    feed_agg_free(s->agg);
    s->agg = NULL;
    (void)feed_agg_new(&s->agg); /* NULL on ENOMEM: made again on the next trade */
    s->agg_fresh = true;
    s->fill_from = upto;
    if (!isnan(close))
        s->fill_close = close;
}

/* ---------------------------------------------------------------------------
 * REST calls.
 */
static bool json_num_str(json_t *v, double *out)
{
    const char *s = json_string_value(v);
    if (!s) {
        if (!json_is_number(v))
            return false;
        *out = json_number_value(v);
        return isfinite(*out);
    }
    char *end;
    *out = strtod(s, &end);
    return end != s && *end == '\0' && isfinite(*out);
}

/*
 * Parses a klines body: [[openTime, "open", "high", "low", "close",
 * "volume", closeTime, ...], ...]. Keeps the candles closed at server time
 * now_ms (openTime + 60 s <= now_ms). *out malloc'd. PD_EPARSE on any
 * malformed row (why says which).
 */
int feed__binance_parse_klines(const char *body, size_t len, int64_t now_ms, features_candle **out,
                               size_t *n, char *why, size_t whylen)
{
    json_error_t jerr;
    json_t *root = json_loadb(body, len, 0, &jerr);
    if (!root || !json_is_array(root)) {
        snprintf(why, whylen, "klines: not a JSON array%s%s", root ? "" : ": ",
                 root ? "" : jerr.text);
        json_decref(root);
        return PD_EPARSE;
    }
    size_t cnt = json_array_size(root);
    features_candle *c = malloc((cnt ? cnt : 1) * sizeof *c);
    if (!c) {
        json_decref(root);
        return PD_ENOMEM;
    }
    size_t k = 0;
    int rc = 0;
    for (size_t i = 0; i < cnt; i++) {
        json_t *row = json_array_get(root, i);
        double v[5];
        json_t *t0 = json_array_get(row, 0);
        bool ok = json_is_array(row) && json_array_size(row) >= 6 && json_is_integer(t0);
        for (int f = 0; ok && f < 5; f++)
            ok = json_num_str(json_array_get(row, (size_t)f + 1), &v[f]);
        int64_t t = ok ? (int64_t)json_integer_value(t0) : 0;
        if (ok)
            ok = t >= 0 && t % MINUTE_MS == 0 && v[0] > 0 && v[1] > 0 && v[2] > 0 && v[3] > 0 &&
                 v[4] >= 0 && v[1] >= v[2] && v[1] >= v[0] && v[1] >= v[3] && v[2] <= v[0] &&
                 v[2] <= v[3] && (k == 0 || t > c[k - 1].t * 1000);
        if (!ok) {
            snprintf(why, whylen, "klines: row %zu is malformed", i);
            rc = PD_EPARSE;
            break;
        }
        if (t + MINUTE_MS > now_ms)
            continue; /* still open */
        c[k++] = (features_candle){
            .t = t / 1000, .open = v[0], .high = v[1], .low = v[2], .close = v[3], .volume = v[4]};
    }
    json_decref(root);
    if (rc) {
        free(c);
        return rc;
    }
    *out = c;
    *n = k;
    return 0;
}

/* GET path, JSON-decoded. */
static int rest_json(feed__rest *r, const char *path, json_t **out, char *why, size_t whylen)
{
    util_buf body;
    util_buf_init(&body);
    int rc = feed__rest_get(r, path, &body, why, whylen);
    if (rc == 0) {
        json_error_t jerr;
        json_t *j = json_loadb(body.data ? body.data : "", body.len, 0, &jerr);
        if (!j) {
            snprintf(why, whylen, "%s: malformed JSON: %s", path, jerr.text);
            rc = PD_EPARSE;
        } else {
            *out = j;
        }
    }
    util_buf_cleanup(&body);
    return rc;
}

static int sync_clock(binance *b)
{
    char why[256];
    json_t *j = NULL;
    int64_t before = wall_ms();
    int rc = rest_json(b->rest, "/api/v3/time", &j, why, sizeof why);
    if (rc) {
        set_error(b, "server time: %s", why);
        return rc;
    }
    json_t *st = json_object_get(j, "serverTime");
    if (!json_is_integer(st)) {
        json_decref(j);
        set_error(b, "server time: no serverTime in the answer");
        return PD_EPARSE;
    }
    int64_t server = (int64_t)json_integer_value(st);
    int64_t after = wall_ms();
    json_decref(j);
    b->clock_offset = server - (before + after) / 2;
    b->clock_synced = true;
    if (server > b->xnow)
        b->xnow = server;
    return 0;
}

/*
 * Fetches closed 1m candles of s with from_ms <= open < to_ms and writes
 * them, page by page. *last_close gets the close of the last one (left
 * alone when none). Returns 0 (what it could write), or a PD_* code.
 */
int feed__binance_klines_range(feed__rest *r, const char *symbol, int64_t from_ms, int64_t to_ms,
                               int64_t now_ms, feed__binance_page_fn page, void *arg, char *why,
                               size_t whylen)
{
    while (from_ms < to_ms) {
        char path[256];
        snprintf(path, sizeof path,
                 "/api/v3/klines?symbol=%s&interval=1m&startTime=%lld&endTime=%lld&limit=%d",
                 symbol, (long long)from_ms, (long long)(to_ms - 1), KLINES_LIMIT);
        util_buf body;
        util_buf_init(&body);
        int rc = feed__rest_get(r, path, &body, why, whylen);
        features_candle *c = NULL;
        size_t n = 0;
        if (rc == 0)
            rc = feed__binance_parse_klines(body.data ? body.data : "", body.len, now_ms, &c, &n,
                                            why, whylen);
        util_buf_cleanup(&body);
        if (rc)
            return rc;
        size_t keep = 0;
        while (keep < n && c[keep].t * 1000 < to_ms)
            keep++;
        if (keep && (rc = page(c, keep, arg)) != 0) {
            free(c);
            return rc;
        }
        int64_t next = keep ? c[keep - 1].t * 1000 + MINUTE_MS : to_ms;
        free(c);
        if (n == 0 || next <= from_ms)
            break; /* nothing more closed in the range */
        from_ms = next;
    }
    return 0;
}

struct page_ctx {
    binance *b;
    bsym *s;
    double last_close;
    int64_t written_to;
    size_t written;
};

static int on_page(const features_candle *c, size_t n, void *arg)
{
    struct page_ctx *p = arg;
    int rc = write_candles(p->b, p->s, c, n);
    if (rc)
        return rc;
    atomic_fetch_add_explicit(&p->s->backfilled, n, memory_order_relaxed);
    p->written += n;
    p->last_close = c[n - 1].close;
    p->written_to = c[n - 1].t * 1000 + MINUTE_MS;
    return 0;
}

/* Writes REST's closed minutes of s in [from, to) and hands them over.
 * 0 or a PD_* code (then nothing is handed over beyond what was written). */
static int refetch(binance *b, bsym *s, int64_t from, int64_t to)
{
    if (from >= to)
        return 0;
    char why[256] = "";
    struct page_ctx p = {.b = b, .s = s, .last_close = NAN};
    int rc = feed__binance_klines_range(b->rest, s->name, from, to, xclock(b), on_page, &p, why,
                                        sizeof why);
    if (rc) {
        set_error(b, "%s: klines: %s", s->name, why);
        LOG_WARN(MOD, "%s: backfill of %lld minutes failed: %s", s->name,
                 (long long)((to - from) / MINUTE_MS), why);
        if (p.written_to)
            rest_took_over(s, p.written_to, p.last_close);
        return rc;
    }
    if (p.written)
        LOG_INFO(MOD, "%s: %zu minutes written from REST", s->name, p.written);
    /* Minutes REST did not return (the exchange was down) stay as they are. */
    rest_took_over(s, to, p.last_close);
    return 0;
}

static int exchange_info(binance *b)
{
    util_buf path;
    util_buf_init(&path);
    util_buf_puts(&path, "/api/v3/exchangeInfo?symbols=%5B");
    for (size_t i = 0; i < b->nsyms; i++)
        util_buf_printf(&path, "%s%%22%s%%22", i ? "," : "", b->syms[i].name);
    util_buf_puts(&path, "%5D");
    char why[256] = "";
    json_t *j = NULL;
    int rc = util_buf_ok(&path) ? rest_json(b->rest, path.data, &j, why, sizeof why) : PD_ENOMEM;
    util_buf_cleanup(&path);
    if (rc) {
        set_error(b, "exchangeInfo: %s", why);
        LOG_ERROR(MOD, "exchangeInfo: %s", why);
        return rc;
    }
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(j, "rateLimits"), i, v)
    {
        const char *type = json_string_value(json_object_get(v, "rateLimitType"));
        const char *iv = json_string_value(json_object_get(v, "interval"));
        json_int_t num = json_integer_value(json_object_get(v, "intervalNum"));
        json_int_t limit = json_integer_value(json_object_get(v, "limit"));
        if (type && iv && !strcmp(type, "REQUEST_WEIGHT") && !strcmp(iv, "MINUTE") && num == 1)
            feed__rest_set_weight_limit(b->rest, limit);
    }
    for (size_t k = 0; k < b->nsyms; k++)
        b->syms[k].enabled = false;
    json_array_foreach(json_object_get(j, "symbols"), i, v)
    {
        const char *name = json_string_value(json_object_get(v, "symbol"));
        const char *status = json_string_value(json_object_get(v, "status"));
        bsym *s = NULL;
        for (size_t k = 0; name && k < b->nsyms; k++)
            if (!strcmp(b->syms[k].name, name))
                s = &b->syms[k];
        if (!s || !status)
            continue;
        store_market m = {.tick_size = 0};
        snprintf(m.venue, sizeof m.venue, "binance");
        snprintf(m.symbol, sizeof m.symbol, "%s", name);
        snprintf(m.status, sizeof m.status, "%s", status);
        size_t fi;
        json_t *f;
        json_array_foreach(json_object_get(v, "filters"), fi, f)
        {
            const char *ft = json_string_value(json_object_get(f, "filterType"));
            if (ft && !strcmp(ft, "PRICE_FILTER"))
                (void)json_num_str(json_object_get(f, "tickSize"), &m.tick_size);
            else if (ft && !strcmp(ft, "LOT_SIZE"))
                (void)json_num_str(json_object_get(f, "stepSize"), &m.step_size);
        }
        s->enabled = true;
        if (strcmp(status, "TRADING") != 0)
            LOG_WARN(MOD, "%s: the exchange says its status is %s", name, status);
        if (m.tick_size > 0 && b->markets) {
            int prc = store_market_put(b->markets, &m);
            if (prc)
                LOG_WARN(MOD, "%s: tick size not stored: %s", name, util_strerror(prc));
        }
        LOG_INFO(MOD, "%s: status %s, tick %.10g", name, status, m.tick_size);
    }
    json_decref(j);
    size_t enabled = 0;
    for (size_t k = 0; k < b->nsyms; k++) {
        if (b->syms[k].enabled)
            enabled++;
        else
            LOG_ERROR(MOD, "%s: not listed by the exchange; not streamed", b->syms[k].name);
    }
    if (!enabled) {
        set_error(b, "exchangeInfo lists none of the symbols");
        return PD_EUNKNOWNSYM;
    }
    return 0;
}

/* The stream URL for the enabled symbols. PD_ETOOBIG past ws_url's size,
 * PD_ENOMEM. */
static int build_ws_url(binance *b)
{
    util_buf u;
    util_buf_init(&u);
    const char *base = b->cfg.ws_url;
    size_t bl = strlen(base);
    while (bl > 0 && base[bl - 1] == '/')
        bl--;
    util_buf_append(&u, base, bl);
    util_buf_puts(&u, "/stream?streams=");
    bool first = true;
    for (size_t i = 0; i < b->nsyms; i++) {
        if (!b->syms[i].enabled)
            continue;
        util_buf_printf(&u, "%s%s@trade", first ? "" : "/", b->syms[i].lower);
        first = false;
    }
    int rc = !util_buf_ok(&u) ? PD_ENOMEM : u.len < sizeof b->ws_url ? 0 : PD_ETOOBIG;
    if (rc == 0)
        snprintf(b->ws_url, sizeof b->ws_url, "%s", u.data);
    util_buf_cleanup(&u);
    return rc;
}

/* The newest stored 1m candle's end (ms), 0 when none. */
static int64_t stored_upto(const char *symbol)
{
    features_candle *c = NULL;
    size_t n = 0;
    int64_t upto = 0;
    if (store_load_window(symbol, "1m", util_now() + 86400 * 365, 1, &c, &n, NULL) == 0 && n)
        upto = c[n - 1].t * 1000 + MINUTE_MS;
    free(c);
    return upto;
}

/* After a (re)connect: REST for the closed minutes after the stored ones;
 * the current minute is unsure. */
static int backfill(binance *b)
{
    int rc = sync_clock(b);
    if (rc)
        return rc;
    int64_t now = xclock(b);
    int64_t cur = floor_min(now);
    for (size_t i = 0; i < b->nsyms && !atomic_load(&b->stop); i++) {
        bsym *s = &b->syms[i];
        if (!s->enabled)
            continue;
        int64_t from = stored_upto(s->name);
        if (from < s->rest_upto)
            from = s->rest_upto;
        if (!from) /* nothing stored: the last INITIAL_BACKFILL_MIN minutes */
            from = cur - INITIAL_BACKFILL_MIN * MINUTE_MS;
        if ((rc = refetch(b, s, from, cur)) != 0)
            return rc;
        if (s->dirty_from == 0 || cur < s->dirty_from)
            s->dirty_from = cur;
        if (cur + MINUTE_MS > s->dirty_to)
            s->dirty_to = cur + MINUTE_MS;
    }
    return 0;
}

/* ---------------------------------------------------------------------------
 * Gaps and unsure minutes.
 */
static void gap_free(gap *g)
{
    free(g->seen);
    g->seen = NULL;
}

static void mark_dirty(bsym *s, int64_t from, int64_t to)
{
    from = floor_min(from);
    to = floor_min(to - 1) + MINUTE_MS;
    if (from < s->rest_upto)
        from = s->rest_upto; /* REST already answered for those */
    if (from >= to)
        return;
    if (s->dirty_to == 0 || from < s->dirty_from)
        s->dirty_from = from;
    if (to > s->dirty_to)
        s->dirty_to = to;
}

/* A trade id: does it open a gap, or fill one? */
static void track_id(bsym *s, int64_t id, int64_t t)
{
    if (s->max_id < 0 || id == s->max_id + 1) {
        s->max_id = id;
        s->max_id_t = t;
        return;
    }
    if (id > s->max_id + 1) {
        if (s->ngaps == GAPS_MAX) { /* too many open gaps: the oldest becomes unsure now */
            mark_dirty(s, s->gaps[0].t_before, s->gaps[0].t_after + 1);
            gap_free(&s->gaps[0]);
            memmove(s->gaps, s->gaps + 1, (GAPS_MAX - 1) * sizeof s->gaps[0]);
            s->ngaps--;
        }
        gap *g = &s->gaps[s->ngaps++];
        *g = (gap){.lo = s->max_id + 1, .hi = id - 1, .t_before = s->max_id_t, .t_after = t};
        g->missing = (uint64_t)(g->hi - g->lo + 1);
        if (g->missing <= GAP_BITMAP_MAX)
            g->seen = calloc((g->missing + 7) / 8, 1);
        s->max_id = id;
        s->max_id_t = t;
        return;
    }
    /* a late trade: inside a gap? */
    for (size_t i = 0; i < s->ngaps; i++) {
        gap *g = &s->gaps[i];
        if (id < g->lo || id > g->hi || !g->seen)
            continue;
        uint64_t k = (uint64_t)(id - g->lo);
        if (g->seen[k / 8] & (1u << (k % 8)))
            return; /* a duplicate */
        g->seen[k / 8] |= (uint8_t)(1u << (k % 8));
        if (--g->missing == 0) {
            gap_free(g);
            memmove(g, g + 1, (s->ngaps - i - 1) * sizeof *g);
            s->ngaps--;
        }
        return;
    }
}

/* Gaps not filled in time make their minutes unsure; unsure minutes whose
 * end is GRACE_MS behind the exchange's clock are fetched again. */
static void settle(binance *b, bsym *s)
{
    int64_t now = xclock(b);
    for (size_t i = 0; i < s->ngaps;) {
        gap *g = &s->gaps[i];
        if (floor_min(g->t_after) + MINUTE_MS + GRACE_MS <= now) {
            LOG_INFO(MOD,
                     "%s: %llu trades missing from the stream (ids %lld..%lld); their "
                     "minutes will be fetched over REST",
                     s->name, (unsigned long long)g->missing, (long long)g->lo, (long long)g->hi);
            mark_dirty(s, g->t_before, g->t_after + 1);
            gap_free(g);
            memmove(g, g + 1, (s->ngaps - i - 1) * sizeof *g);
            s->ngaps--;
            continue;
        }
        i++;
    }
    if (s->dirty_to && s->dirty_to + GRACE_MS <= now && util_mono_ns() >= s->refetch_not_before) {
        int prev = atomic_load(&b->state);
        set_state(b, FEED_STATE_BACKFILLING);
        /* the current minute stays with the aggregator */
        if (refetch(b, s, s->dirty_from, floor_min(now)) == 0)
            s->dirty_from = s->dirty_to = 0;
        else /* REST is down or refuses: keep streaming, try again later */
            s->refetch_not_before = util_mono_ns() + UINT64_C(30000000000);
        set_state(b, prev);
    }
}

/* ---------------------------------------------------------------------------
 * Messages.
 */
static void reject(binance *b, bsym *s, const char *what, const char *msg, size_t len)
{
    if (s)
        atomic_fetch_add_explicit(&s->rejected, 1, memory_order_relaxed);
    if (!b->rejecting) {
        /* the network's bytes, printable ASCII only: no invalid UTF-8 or
         * line breaks in the log */
        char shown[161];
        size_t k = len > 160 ? 160 : len;
        for (size_t i = 0; i < k; i++)
            shown[i] = msg[i] >= 0x20 && msg[i] < 0x7f ? msg[i] : '?';
        shown[k] = '\0';
        LOG_WARN(MOD,
                 "rejected a stream message (%s): %s%s; further ones are counted until "
                 "the stream is clean again",
                 what, shown, len > 160 ? "..." : "");
    }
    b->rejecting = true;
    b->clean_since = 0;
}

static bsym *find_lower(binance *b, const char *stream)
{
    size_t n = strcspn(stream, "@");
    for (size_t i = 0; i < b->nsyms; i++)
        if (strlen(b->syms[i].lower) == n && !strncmp(b->syms[i].lower, stream, n))
            return &b->syms[i];
    return NULL;
}

static void count_trade(bsym *s)
{
    int64_t now = wall_ms();
    int64_t m = now / MINUTE_MS;
    int64_t cur = atomic_load_explicit(&s->minute_wall, memory_order_relaxed);
    if (m != cur) {
        uint64_t prev = atomic_exchange(&s->this_minute, 0);
        atomic_store(&s->last_minute, m == cur + 1 ? prev : 0);
        atomic_store(&s->minute_wall, m);
    }
    atomic_fetch_add_explicit(&s->this_minute, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->trades, 1, memory_order_relaxed);
    atomic_store_explicit(&s->last_trade_wall_ms, now, memory_order_relaxed);
}

/* One trade of s. */
static void on_trade(binance *b, bsym *s, const feed_trade *t)
{
    count_trade(s);
    if (t->t_ms > b->xnow)
        b->xnow = t->t_ms;
    settle(b, s); /* may hand minutes to REST, moving rest_upto */
    track_id(s, t->id, t->t_ms);
    if (t->t_ms < s->rest_upto) {
        atomic_fetch_add_explicit(&s->dropped_old, 1, memory_order_relaxed);
        return;
    }
    int64_t tm = floor_min(t->t_ms);
    if (!s->agg && feed_agg_new(&s->agg) != 0)
        return;
    if (s->agg_fresh) {
        fill_flats(b, s, tm);
        s->agg_fresh = false;
        s->agg_first_min = tm;
    } else if (tm < s->agg_first_min) {
        /* older than what the aggregator holds: REST settles its minute */
        mark_dirty(s, tm, tm + MINUTE_MS);
        return;
    }
    struct emit_ctx e = {b, s};
    feed_agg_stats before, after;
    feed_agg_stats_get(s->agg, &before);
    int rc = feed_agg_push(s->agg, t, on_emit, &e);
    feed_agg_stats_get(s->agg, &after);
    feed_sink_note_trades(b->sink, after.trades - before.trades,
                          after.corrections - before.corrections);
    if (rc)
        LOG_WARN(MOD, "%s: trade %lld not aggregated: %s", s->name, (long long)t->id,
                 util_strerror(rc));
}

int feed__binance_parse_trade(const char *msg, size_t len, char *stream, size_t streamlen,
                              feed_trade *out, char *why, size_t whylen)
{
    json_error_t jerr;
    json_t *root = json_loadb(msg, len, 0, &jerr);
    int rc = PD_EPARSE;
    if (!root) {
        snprintf(why, whylen, "not JSON");
        return PD_EPARSE;
    }
    json_t *data = json_object_get(root, "data");
    const char *st = json_string_value(json_object_get(root, "stream"));
    if (!data || !st) {
        snprintf(why, whylen, "not a combined-stream message");
        goto out;
    }
    snprintf(stream, streamlen, "%s", st);
    const char *e = json_string_value(json_object_get(data, "e"));
    if (!e || strcmp(e, "trade") != 0) {
        snprintf(why, whylen, "not a trade event");
        goto out;
    }
    json_t *T = json_object_get(data, "T"), *id = json_object_get(data, "t");
    json_t *m = json_object_get(data, "m");
    double p, q;
    if (!json_is_integer(T) || !json_is_integer(id) || !json_is_boolean(m) ||
        !json_num_str(json_object_get(data, "p"), &p) ||
        !json_num_str(json_object_get(data, "q"), &q) || !(p > 0) || q < 0 ||
        json_integer_value(T) < 0) {
        snprintf(why, whylen, "a trade with missing or bad fields");
        goto out;
    }
    *out = (feed_trade){.t_ms = (int64_t)json_integer_value(T),
                        .id = (int64_t)json_integer_value(id),
                        /* m: the buyer is the maker, so the taker sold */
                        .side = json_is_true(m) ? FEED_SIDE_SELL : FEED_SIDE_BUY,
                        .price = p,
                        .amount = q};
    rc = 0;
out:
    json_decref(root);
    return rc;
}

static void on_message(binance *b, const char *msg, size_t len)
{
    char stream[64] = "", why[128] = "";
    feed_trade t;
    int rc = feed__binance_parse_trade(msg, len, stream, sizeof stream, &t, why, sizeof why);
    bsym *s = stream[0] ? find_lower(b, stream) : NULL;
    if (rc == 0 && !s) {
        rc = PD_EPARSE;
        snprintf(why, sizeof why, "a stream not subscribed to");
    }
    if (rc) {
        if (!s)
            atomic_fetch_add_explicit(&b->unattributed, 1, memory_order_relaxed);
        reject(b, s, why, msg, len);
        return;
    }
    if (b->rejecting && ++b->clean_since >= 100)
        b->rejecting = false;
    /* how far the trade is behind the exchange's clock as estimated here */
    int64_t lag = b->clock_synced ? wall_ms() + b->clock_offset - t.t_ms : 0;
    atomic_store_explicit(&b->last_event_lag_ms, lag, memory_order_relaxed);
    on_trade(b, s, &t);
}

/* ---------------------------------------------------------------------------
 * The thread.
 */
static void tick(binance *b)
{
    int64_t now = xclock(b);
    for (size_t i = 0; i < b->nsyms; i++) {
        bsym *s = &b->syms[i];
        if (!s->enabled)
            continue;
        settle(b, s);
        if (s->agg_fresh) {
            fill_flats(b, s, floor_min(now - GRACE_MS));
        } else if (s->agg) {
            struct emit_ctx e = {b, s};
            (void)feed_agg_advance(s->agg, now - GRACE_MS, on_emit, &e);
        }
    }
}

static int64_t jitter(util_rng *r, int64_t ms)
{
    return ms / 2 + (int64_t)(util_rng_uniform(r) * (double)ms / 2);
}

static void *run(void *arg)
{
    binance *b = arg;
    util_rng rng;
    util_rng_seed(&rng, util_mono_ns());
    int64_t backoff = 1000;
    int failures = 0;
    bool have_info = false;
    int64_t info_at = 0;
    while (!atomic_load(&b->stop)) {
        set_state(b, failures >= 3 ? FEED_STATE_DOWN : FEED_STATE_CONNECTING);
        int rc = 0;
        char why[256] = "";
        if (!have_info || util_now() - info_at > 86400) {
            /* a failed daily refresh keeps what the last one said */
            int irc = exchange_info(b);
            if (irc == 0 && (irc = build_ws_url(b)) != 0)
                set_error(b, "stream URL too long");
            if (irc == 0) {
                have_info = true;
                info_at = util_now();
            }
            if (!have_info)
                rc = irc;
        }
        feed__ws *ws = NULL;
        if (rc == 0 && (rc = feed__ws_connect(b->ws_url, 10000, &ws, why, sizeof why)) != 0) {
            set_error(b, "stream: %s", why);
            LOG_WARN(MOD, "cannot open the stream: %s", why);
        }
        if (rc == 0) {
            atomic_fetch_add(&b->connects, 1);
            set_state(b, FEED_STATE_BACKFILLING);
            rc = backfill(b);
        }
        if (rc != 0) {
            feed__ws_close(ws);
            failures++;
            if (failures == 3)
                LOG_ERROR(MOD, "feed down: %d attempts failed in a row", failures);
            int64_t wait = jitter(&rng, backoff);
            backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
            set_state(b, failures >= 3 ? FEED_STATE_DOWN : FEED_STATE_CONNECTING);
            feed__sleep_ms(wait, &b->stop);
            continue;
        }
        LOG_INFO(MOD, "streaming %s", b->ws_url);
        set_state(b, FEED_STATE_CONNECTED);
        uint64_t opened = util_mono_ns(), last_frame = opened, last_sync = opened,
                 last_trade = opened, probed = 0;
        feed__ws_stats ws0;
        feed__ws_stats_get(ws, &ws0);
        bool renew = false;
        while (!atomic_load(&b->stop)) {
            const char *msg;
            size_t len;
            rc = feed__ws_read(ws, READ_SLICE_MS, &msg, &len, why, sizeof why);
            uint64_t now = util_mono_ns();
            if (rc < 0)
                break;
            feed__ws_stats wst;
            feed__ws_stats_get(ws, &wst);
            if (rc == 1 || wst.pings != ws0.pings || wst.pongs != ws0.pongs) {
                last_frame = now;
                probed = 0;
                ws0 = wst;
            }
            if (rc == 1) {
                on_message(b, msg, len);
                last_trade = now;
            }
            /* The clock closes minutes without trades: sync it with the
             * server every minute, and every few seconds while quiet. */
            if (now - last_sync >= UINT64_C(60000000000) ||
                (now - last_sync >= UINT64_C(3000000000) &&
                 now - last_trade >= UINT64_C(3000000000))) {
                (void)sync_clock(b);
                last_sync = now;
            }
            tick(b);
            int64_t lag = atomic_load(&b->last_event_lag_ms);
            set_state(b, lag > LAG_S * 1000 ? FEED_STATE_LAGGING : FEED_STATE_CONNECTED);
            if (!probed && (now - last_frame) / 1000000000u >= PROBE_S) {
                if (feed__ws_send(ws, FEED__WS_PING, "predictd", 8) != 0) {
                    snprintf(why, sizeof why, "cannot ping the server");
                    rc = PD_EIO;
                    break;
                }
                probed = now;
            } else if (probed && (now - probed) / 1000000000u >= PROBE_WAIT_S) {
                snprintf(why, sizeof why, "no frame for %d s, nor a pong to our ping",
                         PROBE_S + PROBE_WAIT_S);
                rc = PD_EIO;
                break;
            }
            if ((int64_t)((now - opened) / 1000000000u) >= b->cfg.renew_s) {
                renew = true;
                break;
            }
        }
        bool long_lived = (util_mono_ns() - opened) / 1000000000u >= 60;
        feed__ws_close(ws);
        if (atomic_load(&b->stop))
            break;
        if (renew) {
            atomic_fetch_add(&b->renewals, 1);
            LOG_INFO(MOD, "renewing the stream connection (older than %d s)", b->cfg.renew_s);
            continue;
        }
        atomic_fetch_add(&b->reconnects, 1);
        set_error(b, "stream: %s", why);
        LOG_WARN(MOD, "stream lost: %s; reconnecting", why);
        if (long_lived) {
            backoff = 1000;
            failures = 0;
        }
        set_state(b, FEED_STATE_CONNECTING);
        feed__sleep_ms(jitter(&rng, backoff), &b->stop);
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }
    set_state(b, FEED_STATE_DOWN);
    store_thread_cleanup();
    return NULL;
}

/* ---------------------------------------------------------------------------
 * The connector.
 */
static int b_start(feed_connector *self, feed_sink *sink)
{
    binance *b = self->impl;
    if (b->started || !sink)
        return PD_EINVAL;
    char why[256];
    int rc = feed__rest_new(b->cfg.rest_url, &b->stop, 5, &b->rest, why, sizeof why);
    if (rc) {
        LOG_ERROR(MOD, "REST client: %s", why);
        return rc;
    }
    if (b->cfg.database_url && store_markets_open(b->cfg.database_url, &b->markets) != 0)
        LOG_WARN(MOD, "exchange symbols will not be stored (bad database URL)");
    b->sink = sink;
    atomic_store(&b->stop, false);
    if (pthread_create(&b->thread, NULL, run, b) != 0) {
        feed__rest_free(b->rest);
        b->rest = NULL;
        return PD_EINTERNAL;
    }
    b->started = true;
    return 0;
}

static void b_stop(feed_connector *self)
{
    binance *b = self->impl;
    if (!b->started)
        return;
    atomic_store(&b->stop, true);
    pthread_join(b->thread, NULL);
    b->started = false;
    feed__rest_free(b->rest);
    b->rest = NULL;
    store_markets_close(b->markets);
    b->markets = NULL;
}

static void b_free(feed_connector *self)
{
    if (!self)
        return;
    binance *b = self->impl;
    b_stop(self);
    for (size_t i = 0; i < b->nsyms; i++) {
        feed_agg_free(b->syms[i].agg);
        for (size_t g = 0; g < b->syms[i].ngaps; g++)
            gap_free(&b->syms[i].gaps[g]);
    }
    for (int i = 0; i < 3; i++)
        free(b->own[i]);
    pthread_mutex_destroy(&b->err_lock);
    free(b);
    free(self);
}

static void b_metrics(feed_connector *self, util_buf *out)
{
    binance *b = self->impl;
    int64_t now = wall_ms();
    static const struct {
        const char *name, *type, *help;
    } m[] = {
        {"predictd_feed_trades_per_minute", "gauge",
         "Trades received in the last whole local minute, per symbol."},
        {"predictd_feed_last_trade_age_seconds", "gauge",
         "Seconds since the last trade was received (-1: none yet)."},
        {"predictd_feed_symbol_trades_total", "counter",
         "Trades received from the stream, per symbol."},
        {"predictd_feed_backfilled_candles_total", "counter",
         "1m candles written from the REST API (backfill after a disconnect or a gap)."},
        {"predictd_feed_rejected_messages_total", "counter",
         "Stream messages rejected (malformed JSON, unknown or malformed events)."},
        {"predictd_feed_reconnects_total", "counter",
         "Stream connections lost and opened again (renewals not counted)."},
    };
    for (size_t k = 0; k < sizeof m / sizeof m[0]; k++) {
        util_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", m[k].name, m[k].help, m[k].name,
                        m[k].type);
        for (size_t i = 0; i < b->nsyms; i++) {
            bsym *s = &b->syms[i];
            util_buf_printf(out, "%s{feed=\"binance\",symbol=\"%s\"} ", m[k].name, s->name);
            switch (k) {
            case 0: {
                int64_t mw = atomic_load(&s->minute_wall), cur = now / MINUTE_MS;
                uint64_t v = mw == cur       ? atomic_load(&s->last_minute)
                             : mw == cur - 1 ? atomic_load(&s->this_minute)
                                             : 0;
                util_buf_printf(out, "%llu\n", (unsigned long long)v);
                break;
            }
            case 1: {
                int64_t lt = atomic_load(&s->last_trade_wall_ms);
                util_buf_printf(out, "%.3f\n", lt ? (double)(now - lt) / 1000.0 : -1.0);
                break;
            }
            case 2:
                util_buf_printf(out, "%llu\n", (unsigned long long)atomic_load(&s->trades));
                break;
            case 3:
                util_buf_printf(out, "%llu\n", (unsigned long long)atomic_load(&s->backfilled));
                break;
            case 4:
                util_buf_printf(out, "%llu\n", (unsigned long long)atomic_load(&s->rejected));
                break;
            default:
                util_buf_printf(out, "%llu\n", (unsigned long long)atomic_load(&b->reconnects));
                break;
            }
        }
    }
    util_buf_printf(out,
                    "# HELP predictd_feed_unattributed_rejects_total Stream messages rejected "
                    "that name no subscribed symbol.\n"
                    "# TYPE predictd_feed_unattributed_rejects_total counter\n"
                    "predictd_feed_unattributed_rejects_total{feed=\"binance\"} %llu\n",
                    (unsigned long long)atomic_load(&b->unattributed));
    feed__rest_stats rs;
    feed__rest_stats_get(b->rest, &rs);
    util_buf_printf(out,
                    "# HELP predictd_feed_rest_rate_limited_total REST answers 429 or 418 "
                    "(waited out for their Retry-After).\n"
                    "# TYPE predictd_feed_rest_rate_limited_total counter\n"
                    "predictd_feed_rest_rate_limited_total{feed=\"binance\"} %llu\n"
                    "# HELP predictd_feed_rest_used_weight Request weight used in the current "
                    "minute, as the exchange last reported it (-1: not reported).\n"
                    "# TYPE predictd_feed_rest_used_weight gauge\n"
                    "predictd_feed_rest_used_weight{feed=\"binance\"} %lld\n",
                    (unsigned long long)rs.rate_limited, (long long)rs.used_weight);
}

static void b_status(feed_connector *self, feed_connector_status *out)
{
    binance *b = self->impl;
    out->state = atomic_load(&b->state);
    out->reconnects = atomic_load(&b->reconnects);
    pthread_mutex_lock(&b->err_lock);
    snprintf(out->last_error, sizeof out->last_error, "%s", b->last_error);
    pthread_mutex_unlock(&b->err_lock);
}

int feed_binance_open(const feed_binance_config *cfg, const char *symbols, feed_connector **out,
                      char *why, size_t whylen)
{
    if (!cfg || !symbols || !out) {
        snprintf(why, whylen, "binance: no configuration");
        return PD_EINVAL;
    }
    feed__url u;
    const char *ws = cfg->ws_url ? cfg->ws_url : FEED_BINANCE_WS_URL;
    const char *rest = cfg->rest_url ? cfg->rest_url : FEED_BINANCE_REST_URL;
    char uwhy[160];
    if (feed__url_parse(ws, &u, uwhy, sizeof uwhy) != 0 || strncasecmp(ws, "ws", 2) != 0) {
        snprintf(why, whylen, "PREDICTD_BINANCE_WS_URL: %s",
                 strncasecmp(ws, "ws", 2) ? "must start with ws:// or wss://" : uwhy);
        return PD_EINVAL;
    }
    if (feed__url_parse(rest, &u, uwhy, sizeof uwhy) != 0 || strncasecmp(rest, "http", 4) != 0) {
        snprintf(why, whylen, "PREDICTD_BINANCE_REST_URL: %s",
                 strncasecmp(rest, "http", 4) ? "must start with http:// or https://" : uwhy);
        return PD_EINVAL;
    }
    binance *b = calloc(1, sizeof *b);
    feed_connector *c = calloc(1, sizeof *c);
    if (!b || !c) {
        free(b);
        free(c);
        snprintf(why, whylen, "binance: out of memory");
        return PD_ENOMEM;
    }
    pthread_mutex_init(&b->err_lock, NULL);
    b->cfg.ws_url = b->own[0] = strdup(ws);
    b->cfg.rest_url = b->own[1] = strdup(rest);
    b->cfg.database_url = b->own[2] = cfg->database_url ? strdup(cfg->database_url) : NULL;
    b->cfg.renew_s = cfg->renew_s > 0 ? cfg->renew_s : FEED_BINANCE_RENEW_S;
    c->impl = b;
    c->name = "binance";
    c->source = "Binance spot trades (WebSocket) and 1m klines (REST)";
    c->start = b_start;
    c->stop = b_stop;
    c->free = b_free;
    c->metrics = b_metrics;
    c->status = b_status;
    int rc = 0;
    if (!b->cfg.ws_url || !b->cfg.rest_url || (cfg->database_url && !b->cfg.database_url)) {
        snprintf(why, whylen, "binance: out of memory");
        rc = PD_ENOMEM;
        goto fail;
    }
    const char *p = symbols;
    while (*p) {
        size_t n = strcspn(p, ",");
        if (n == 0 || n >= sizeof b->syms[0].name || b->nsyms == MAX_SYMBOLS) {
            /* the reason first: a long list would push it out of why */
            snprintf(why, whylen,
                     "binance: bad symbol list (SYMBOL,SYMBOL,... at most %d): '%.64s%s'",
                     MAX_SYMBOLS, symbols, strlen(symbols) > 64 ? "..." : "");
            rc = PD_EINVAL;
            goto fail;
        }
        bsym *s = &b->syms[b->nsyms];
        memcpy(s->name, p, n);
        s->name[n] = '\0';
        if (!util_symbol_valid(s->name)) {
            snprintf(why, whylen, "binance: '%s' is not a symbol (^[A-Z0-9]{2,20}$)", s->name);
            rc = PD_ESYMBOL;
            goto fail;
        }
        for (size_t k = 0; k <= n; k++)
            s->lower[k] =
                (char)(s->name[k] >= 'A' && s->name[k] <= 'Z' ? s->name[k] + 32 : s->name[k]);
        for (size_t k = 0; k < b->nsyms; k++)
            if (!strcmp(b->syms[k].name, s->name)) {
                snprintf(why, whylen, "binance: %s listed twice", s->name);
                rc = PD_EINVAL;
                goto fail;
            }
        s->enabled = true;
        s->max_id = -1;
        s->fill_close = NAN;
        b->nsyms++;
        p += n;
        if (*p == ',')
            p++;
    }
    if (!b->nsyms) {
        snprintf(why, whylen, "binance: no symbols (binance:BTCUSDT,ETHUSDT)");
        rc = PD_EINVAL;
        goto fail;
    }
    /* the one stream of every symbol must fit a URL the connection can
     * take, or the feed would only fail at its first connect */
    feed__url su;
    char swhy[64];
    if ((rc = build_ws_url(b)) != 0 ||
        (rc = feed__url_parse(b->ws_url, &su, swhy, sizeof swhy)) != 0) {
        if (rc == PD_ENOMEM)
            snprintf(why, whylen, "binance: out of memory");
        else
            snprintf(why, whylen,
                     "binance: the stream URL of these %zu symbols is too long (%s): "
                     "split them over two feeds",
                     b->nsyms, rc == PD_ETOOBIG ? "over 1400 bytes" : swhy);
        rc = rc == PD_ENOMEM ? PD_ENOMEM : PD_EINVAL;
        goto fail;
    }
    atomic_store(&b->state, FEED_STATE_CONNECTING);
    *out = c;
    return 0;
fail:
    b_free(c);
    return rc;
}

int feed_binance_new(const char *args, feed_connector **out)
{
    const char *renew = getenv("PREDICTD_BINANCE_RENEW");
    feed_binance_config cfg = {.ws_url = getenv("PREDICTD_BINANCE_WS_URL"),
                               .rest_url = getenv("PREDICTD_BINANCE_REST_URL"),
                               .database_url = getenv("PREDICTD_DATABASE_URL"),
                               .renew_s = renew ? atoi(renew) : 0};
    if (cfg.ws_url && !*cfg.ws_url)
        cfg.ws_url = NULL;
    if (cfg.rest_url && !*cfg.rest_url)
        cfg.rest_url = NULL;
    char why[256];
    int rc = feed_binance_open(&cfg, args ? args : "", out, why, sizeof why);
    if (rc)
        LOG_ERROR(MOD, "%s", why);
    return rc;
}

/* ---------------------------------------------------------------------------
 * History download (`predictd fetch`).
 */
struct fetch_ctx {
    feed_sink *sink;
    const char *symbol;
    int64_t from_ms, total, written;
    feed_fetch_progress_fn progress;
    void *arg;
};

static int fetch_page(const features_candle *c, size_t n, void *arg)
{
    struct fetch_ctx *f = arg;
    int rc = feed_sink_candles(f->sink, f->symbol, c, n);
    if (rc)
        return rc;
    f->written += (int64_t)n;
    if (f->progress)
        f->progress((c[n - 1].t * 1000 + MINUTE_MS - f->from_ms) / MINUTE_MS, f->total, f->arg);
    return 0;
}

int feed_binance_fetch(const feed_binance_config *cfg, const char *symbol, int64_t from, int64_t to,
                       feed_sink *sink, feed_fetch_progress_fn progress, void *arg,
                       int64_t *written, char *why, size_t whylen)
{
    if (!cfg || !sink || !util_symbol_valid(symbol)) {
        snprintf(why, whylen, "a symbol must match ^[A-Z0-9]{2,20}$");
        return PD_EINVAL;
    }
    const char *rest = cfg->rest_url ? cfg->rest_url : FEED_BINANCE_REST_URL;
    feed__rest *r = NULL;
    int rc = feed__rest_new(rest, NULL, 3, &r, why, whylen);
    if (rc)
        return rc;
    json_t *j = NULL;
    int64_t now_ms = 0;
    if ((rc = rest_json(r, "/api/v3/time", &j, why, whylen)) == 0) {
        json_t *st = json_object_get(j, "serverTime");
        now_ms = json_is_integer(st) ? (int64_t)json_integer_value(st) : 0;
        json_decref(j);
        if (!now_ms) {
            snprintf(why, whylen, "server time: no serverTime in the answer");
            rc = PD_EPARSE;
        }
    }
    if (rc)
        goto out;
    int64_t from_ms = floor_min(from * 1000);
    int64_t to_ms = to > 0 ? floor_min(to * 1000 + MINUTE_MS - 1) : floor_min(now_ms);
    if (to_ms > floor_min(now_ms))
        to_ms = floor_min(now_ms);
    if (from <= 0 || from_ms >= to_ms) {
        snprintf(why, whylen, "the range is empty (--from must be before --to and before now)");
        rc = PD_EINVAL;
        goto out;
    }
    struct fetch_ctx f = {.sink = sink,
                          .symbol = symbol,
                          .from_ms = from_ms,
                          .total = (to_ms - from_ms) / MINUTE_MS,
                          .progress = progress,
                          .arg = arg};
    /* resume after the newest candle already stored in the range */
    features_candle *have = NULL;
    size_t nhave = 0;
    int64_t start = from_ms;
    if (store_load_range(symbol, "1m", from_ms / 1000, to_ms / 1000, util_now() + 86400 * 365,
                         &have, &nhave) == 0 &&
        nhave)
        start = have[nhave - 1].t * 1000 + MINUTE_MS;
    free(have);
    if (start > from_ms) {
        LOG_INFO(MOD, "%s: resuming after %lld minutes already stored", symbol,
                 (long long)((start - from_ms) / MINUTE_MS));
        if (progress)
            progress((start - from_ms) / MINUTE_MS, f.total, arg);
    }
    rc = feed__binance_klines_range(r, symbol, start, to_ms, now_ms, fetch_page, &f, why, whylen);
    if (progress && rc == 0)
        progress(f.total, f.total, arg);
    if (written)
        *written = f.written;
out:
    feed__rest_free(r);
    return rc;
}
