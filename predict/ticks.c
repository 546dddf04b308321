/*
 * ticks.c: the price tick each symbol's levels are rounded to. The
 * exchange's word (exchange_symbols, written by the feed from the
 * exchange's symbol information) comes first; without it the pipeline
 * infers the tick from the candles' decimals (features_price_tick).
 *
 * The table is small (the symbols of the venues the feed serves), so it is
 * read whole, at most once per TICK_TTL_S (once per TICK_RETRY_S after a
 * database error), and kept as a sorted snapshot: a computation looks its
 * symbol up without I/O, and a burst of the loop over hundreds of symbols
 * costs one query, not one per symbol. A feed that has just written a new
 * tick is seen within TICK_TTL_S.
 *
 * It does not round anything (inference_signal_market does) and does not
 * ask an exchange (feed/ does).
 *
 * THREADING: one mutex guards the snapshot, held for a lookup, never
 * across the query. One thread refreshes at a time (the one that finds the
 * snapshot expired); the others keep using the old one meanwhile.
 */
#include <stdlib.h>
#include <string.h>

#include "predict/predict_internal.h"
#include "store/store.h"

#define TICK_TTL_S 300
#define TICK_RETRY_S 30

struct predict_ticks {
    util_mutex lock; /* guards the fields below */
    store_tick *v;   /* sorted by symbol; NULL before the first read */
    size_t n;
    int64_t until;   /* wall clock: read again from then on */
    bool refreshing; /* a thread is reading the table */
};

int predict__ticks_new(struct predict_ticks **out)
{
    struct predict_ticks *t = calloc(1, sizeof *t);
    if (!t)
        return PD_ENOMEM;
    util_mutex_init(&t->lock);
    *out = t;
    return 0;
}

void predict__ticks_free(struct predict_ticks *t)
{
    if (!t)
        return;
    util_mutex_destroy(&t->lock);
    free(t->v);
    free(t);
}

static int by_symbol(const void *key, const void *elem)
{
    return strcmp(key, ((const store_tick *)elem)->symbol);
}

double predict__exchange_tick(predict_service *svc, const char *symbol)
{
    struct predict_ticks *t = svc->ticks;
    if (!t)
        return 0;
    int64_t now = util_now(); /* the wall clock: a backtest's moment is history */
    util_mutex_lock(&t->lock);
    bool mine = now >= t->until && !t->refreshing;
    if (mine)
        t->refreshing = true;
    util_mutex_unlock(&t->lock);

    if (mine) {
        store_tick *v = NULL;
        size_t n = 0;
        int rc = store_symbol_ticks(&v, &n);
        if (rc)
            LOG_DEBUG("ticks", "exchange ticks unread: %s", util_strerror(rc));
        util_mutex_lock(&t->lock);
        if (rc == 0) {
            free(t->v);
            t->v = v;
            t->n = n;
        }
        /* after an error the last snapshot (if any) stays in use */
        t->until = now + (rc == 0 ? TICK_TTL_S : TICK_RETRY_S);
        t->refreshing = false;
        util_mutex_unlock(&t->lock);
    }

    util_mutex_lock(&t->lock);
    const store_tick *e = t->n ? bsearch(symbol, t->v, t->n, sizeof *t->v, by_symbol) : NULL;
    double tick = e ? e->tick : 0;
    util_mutex_unlock(&t->lock);
    return tick;
}
