/*
 * ticks.c: the price tick each symbol's levels are rounded to. The
 * exchange's word (exchange_symbols, written by the feed from the
 * exchange's symbol information) comes first; without it the pipeline
 * infers the tick from the candles' decimals (features_price_tick).
 *
 * A prediction is computed at most once per series and candle, but a
 * database query per computation would still be one too many: the answer
 * is kept for TICK_TTL_S (TICK_RETRY_S after a database error, so an
 * outage is not remembered as "no tick"). A feed that has just written a
 * new tick is seen within TICK_TTL_S.
 *
 * It does not round anything (inference_signal_market does) and does not
 * ask an exchange (feed/ does).
 *
 * DESIGN: a fixed table of TICK_SLOTS entries addressed by a hash of the
 * symbol; a colliding symbol overwrites the slot (bounded memory, and a
 * lost entry costs one query).
 *
 * THREADING: one mutex guards the table, held for a copy, never across
 * the query.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "predict/predict_internal.h"
#include "store/store.h"

#define TICK_SLOTS 512
#define TICK_TTL_S 300
#define TICK_RETRY_S 30

struct tick_slot {
    char symbol[24]; /* "" when empty */
    double tick;     /* 0: the exchange has not said */
    int64_t until;
};

struct predict_ticks {
    util_mutex lock; /* guards slot[] */
    struct tick_slot slot[TICK_SLOTS];
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
    free(t);
}

double predict__exchange_tick(predict_service *svc, const char *symbol)
{
    int64_t now = util_now(); /* the wall clock: a backtest's moment is history */
    struct predict_ticks *t = svc->ticks;
    if (!t || strlen(symbol) >= sizeof t->slot[0].symbol)
        return 0;
    size_t i = util_fnv1a(UTIL_FNV1A_INIT, symbol) % TICK_SLOTS;
    util_mutex_lock(&t->lock);
    struct tick_slot s = t->slot[i];
    util_mutex_unlock(&t->lock);
    if (s.symbol[0] && strcmp(s.symbol, symbol) == 0 && now < s.until)
        return s.tick;

    double tick = 0;
    int rc = store_symbol_tick(symbol, &tick);
    if (rc != 0 && rc != PD_ENOTFOUND)
        LOG_DEBUG("ticks", "no exchange tick for %s: %s", symbol, util_strerror(rc));
    util_mutex_lock(&t->lock);
    snprintf(t->slot[i].symbol, sizeof t->slot[i].symbol, "%s", symbol);
    t->slot[i].tick = rc == 0 ? tick : 0;
    t->slot[i].until = now + (rc == 0 || rc == PD_ENOTFOUND ? TICK_TTL_S : TICK_RETRY_S);
    util_mutex_unlock(&t->lock);
    return rc == 0 ? tick : 0;
}
