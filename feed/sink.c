/*
 * sink.c: where connectors deliver. Trades go through one aggregator per
 * symbol; closed base candles (the aggregator's, a kline stream's, a REST
 * backfill's, the demo replay's) are written with store_upsert_base_candles,
 * from which PostgreSQL derives every higher timeframe in the same
 * transaction. A write that fails (database down) keeps its candles pending
 * for the symbol and tries them again with the next call, so a short outage
 * loses no minute. The sink reports the feed's state to store_feed_status
 * for /health/status.
 *
 * It does not talk to an exchange, keep time, or decide when a minute ends:
 * the connector calls feed_sink_tick with its clock.
 *
 * THREADING: one mutex (lock) serialises every call, so a connector may
 * call from several threads; writes use the calling thread's store
 * connection (store_init() must have run).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "feed/feed.h"
#include "store/store.h"
#include "util/util.h"

#define MOD "feed"

typedef struct sym {
    char name[24];
    feed_agg *agg;
    features_candle *pending; /* closed candles not yet written, unique times */
    size_t npending, cap;
} sym;

struct feed_sink {
    pthread_mutex_t lock;
    sym *syms; /* lock */
    size_t nsyms, cap;
    store_feed_status st; /* lock */
    uint64_t duplicates, too_late;
    uint64_t ext_trades, ext_corrections; /* lock: aggregated by the connector itself */
};

const char *feed_state_name(int state)
{
    switch (state) {
    case FEED_STATE_CONNECTING:
        return "connecting";
    case FEED_STATE_CONNECTED:
        return "connected";
    case FEED_STATE_LAGGING:
        return "lagging";
    case FEED_STATE_BACKFILLING:
        return "backfilling";
    case FEED_STATE_DOWN:
        return "down";
    default:
        return "unknown";
    }
}

int feed_sink_new(const char *name, const char *source, feed_sink **out)
{
    if (!name || !source || !out || strlen(name) >= sizeof((store_feed_status *)0)->feed)
        return PD_EINVAL;
    feed_sink *s = calloc(1, sizeof *s);
    if (!s)
        return PD_ENOMEM;
    pthread_mutex_init(&s->lock, NULL);
    snprintf(s->st.feed, sizeof s->st.feed, "%s", name);
    snprintf(s->st.source, sizeof s->st.source, "%s", source);
    snprintf(s->st.state, sizeof s->st.state, "%s", feed_state_name(FEED_STATE_CONNECTING));
    s->st.updated_at = util_now();
    store_feed_status_set(&s->st);
    *out = s;
    return 0;
}

void feed_sink_free(feed_sink *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->nsyms; i++) {
        feed_agg_free(s->syms[i].agg);
        free(s->syms[i].pending);
    }
    free(s->syms);
    pthread_mutex_destroy(&s->lock);
    store_feed_status_set(NULL);
    free(s);
}

/* The symbol's entry, made on first use. Caller holds lock. */
static int find_sym(feed_sink *s, const char *symbol, sym **out)
{
    for (size_t i = 0; i < s->nsyms; i++)
        if (!strcmp(s->syms[i].name, symbol)) {
            *out = &s->syms[i];
            return 0;
        }
    if (!util_symbol_valid(symbol))
        return PD_ESYMBOL;
    if (s->nsyms == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 8;
        sym *v = realloc(s->syms, cap * sizeof *v);
        if (!v)
            return PD_ENOMEM;
        s->syms = v;
        s->cap = cap;
    }
    sym *y = &s->syms[s->nsyms];
    memset(y, 0, sizeof *y);
    snprintf(y->name, sizeof y->name, "%s", symbol);
    int rc = feed_agg_new(&y->agg);
    if (rc)
        return rc;
    s->nsyms++;
    *out = y;
    return 0;
}

/* Adds a closed candle to the symbol's pending ones (a later version of the
 * same minute replaces the earlier one). Minutes come in time order: one
 * after the last pending is new without a look at the others. */
static int pend(sym *y, const features_candle *c)
{
    if (y->npending && c->t <= y->pending[y->npending - 1].t)
        for (size_t i = y->npending; i-- > 0;)
            if (y->pending[i].t == c->t) {
                y->pending[i] = *c;
                return 0;
            }
    if (y->npending >= FEED_SINK_PENDING_MAX)
        return PD_ETOOBIG;
    if (y->npending == y->cap) {
        size_t cap = y->cap ? 2 * y->cap : 64;
        if (cap > FEED_SINK_PENDING_MAX)
            cap = FEED_SINK_PENDING_MAX;
        features_candle *v = realloc(y->pending, cap * sizeof *v);
        if (!v)
            return PD_ENOMEM;
        y->pending = v;
        y->cap = cap;
    }
    y->pending[y->npending++] = *c;
    return 0;
}

static int on_emit(const features_candle *c, bool correction, void *arg)
{
    (void)correction; /* counted by the aggregator */
    return pend(arg, c);
}

/* Writes the symbol's pending candles. Caller holds lock. */
static int flush(feed_sink *s, sym *y)
{
    if (!y->npending)
        return 0;
    int rc = store_upsert_base_candles(y->name, y->pending, y->npending);
    if (rc) {
        s->st.write_errors++;
        if (rc != PD_EDB) {
            /* The store refused them (a native 1m series cannot be, so bad
             * values): they will never be written; drop them. */
            LOG_WARN(MOD, "%s: %zu base candles refused: %s", y->name, y->npending,
                     util_strerror(rc));
            y->npending = 0;
        }
        return rc;
    }
    for (size_t i = 0; i < y->npending; i++)
        if (y->pending[i].t > s->st.last_candle)
            s->st.last_candle = y->pending[i].t;
    s->st.candles += y->npending;
    y->npending = 0;
    return 0;
}

/* Publishes the counters. Caller holds lock. */
static void report(feed_sink *s)
{
    uint64_t trades = 0, corr = 0, dup = 0, late = 0;
    for (size_t i = 0; i < s->nsyms; i++) {
        feed_agg_stats a;
        feed_agg_stats_get(s->syms[i].agg, &a);
        trades += a.trades;
        corr += a.corrections;
        dup += a.duplicates;
        late += a.too_late;
    }
    s->st.trades = trades + s->ext_trades;
    s->st.corrections = corr + s->ext_corrections;
    s->duplicates = dup;
    s->too_late = late;
    s->st.updated_at = util_now();
    store_feed_status_set(&s->st);
}

int feed_sink_trade(feed_sink *s, const char *symbol, const feed_trade *t)
{
    if (!s || !symbol || !t)
        return PD_EINVAL;
    pthread_mutex_lock(&s->lock);
    sym *y;
    int rc = find_sym(s, symbol, &y);
    if (rc == 0)
        rc = feed_agg_push(y->agg, t, on_emit, y);
    if (rc == 0)
        rc = flush(s, y);
    report(s);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int feed_sink_candles(feed_sink *s, const char *symbol, const features_candle *c, size_t n)
{
    if (!s || !symbol || (n && !c))
        return PD_EINVAL;
    pthread_mutex_lock(&s->lock);
    sym *y;
    int rc = find_sym(s, symbol, &y);
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = pend(y, &c[i]);
    if (rc == 0)
        rc = flush(s, y);
    report(s);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int feed_sink_tick(feed_sink *s, int64_t now_ms)
{
    if (!s)
        return PD_EINVAL;
    pthread_mutex_lock(&s->lock);
    int first = 0;
    for (size_t i = 0; i < s->nsyms; i++) {
        sym *y = &s->syms[i];
        int rc = feed_agg_advance(y->agg, now_ms, on_emit, y);
        if (rc == 0)
            rc = flush(s, y);
        if (rc && !first)
            first = rc;
    }
    report(s);
    pthread_mutex_unlock(&s->lock);
    return first;
}

void feed_sink_set_state(feed_sink *s, int state)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    snprintf(s->st.state, sizeof s->st.state, "%s", feed_state_name(state));
    report(s);
    pthread_mutex_unlock(&s->lock);
}

void feed_sink_stats_get(feed_sink *s, feed_sink_stats *out)
{
    pthread_mutex_lock(&s->lock);
    *out = (feed_sink_stats){.trades = s->st.trades,
                             .duplicates = s->duplicates,
                             .corrections = s->st.corrections,
                             .too_late = s->too_late,
                             .candles_written = s->st.candles,
                             .write_errors = s->st.write_errors,
                             .last_candle = s->st.last_candle};
    pthread_mutex_unlock(&s->lock);
}

void feed_sink_note_trades(feed_sink *s, uint64_t trades, uint64_t corrections)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    s->ext_trades += trades;
    s->ext_corrections += corrections;
    report(s);
    pthread_mutex_unlock(&s->lock);
}
