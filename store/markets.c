/*
 * markets.c: the exchange_symbols table of db/006_exchange_symbols.sql:
 * what an exchange says about a symbol (trading status, price tick,
 * quantity step). The feed writes it when it (re)connects; readers (price
 * rounding, the admin API) look a symbol up.
 *
 * It does not ask any exchange: feed/ does, and hands the result here.
 *
 * THREADING: a handle owns one dedicated connection (pg.c's link: made on
 * first use, made again once after a loss), guarded by the link's mutex,
 * so every function is thread-safe.
 */
#include <libpq-fe.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/pg_internal.h"
#include "store/store.h"
#include "util/util.h"

#define MOD "markets"

struct store_markets {
    store__pg_link link;
};

int store_markets_open(const char *database_url, store_markets **out)
{
    if (!out)
        return PD_EINVAL;
    store_markets *m = calloc(1, sizeof *m);
    if (!m)
        return PD_ENOMEM;
    int rc = store__pg_link_init(&m->link, database_url, MOD, "predictd-markets",
                                 STORE__PG_KEEPALIVE_DEFAULT);
    if (rc) {
        free(m);
        return rc;
    }
    *out = m;
    return 0;
}

void store_markets_close(store_markets *m)
{
    if (!m)
        return;
    store__pg_link_cleanup(&m->link);
    free(m);
}

static bool venue_ok(const char *v)
{
    size_t n = v ? strlen(v) : 0;
    return n >= 1 && n <= 32 && strspn(v, "abcdefghijklmnopqrstuvwxyz0123456789_-") == n;
}

struct put_arg {
    const store_market *m;
};

static int op_put(PGconn *c, void *arg)
{
    const store_market *m = ((struct put_arg *)arg)->m;
    char tick[40], step[40];
    snprintf(tick, sizeof tick, "%.17g", m->tick_size);
    snprintf(step, sizeof step, "%.17g", m->step_size);
    const char *vals[5] = {m->venue, m->symbol, m->status, tick, m->step_size > 0 ? step : NULL};
    return store__pg_exec(MOD, c, "exchange symbol upsert",
                          "INSERT INTO exchange_symbols (venue, symbol, status, tick_size, "
                          "step_size, updated_at) VALUES ($1, $2, $3, $4, $5, now()) "
                          "ON CONFLICT (venue, symbol) DO UPDATE SET status = EXCLUDED.status, "
                          "tick_size = EXCLUDED.tick_size, step_size = EXCLUDED.step_size, "
                          "updated_at = now()",
                          5, vals, PGRES_COMMAND_OK, 0, NULL);
}

int store_market_put(store_markets *h, const store_market *m)
{
    if (!h || !m || !venue_ok(m->venue) || !util_symbol_valid(m->symbol) || !m->status[0] ||
        !(m->tick_size > 0) || !isfinite(m->tick_size) || !(m->step_size >= 0) ||
        !isfinite(m->step_size))
        return PD_EINVAL;
    struct put_arg a = {m};
    return store__pg_link_run(&h->link, op_put, &a);
}

struct get_arg {
    const char *venue, *symbol;
    store_market *out;
};

static int op_get(PGconn *c, void *arg)
{
    struct get_arg *a = arg;
    const char *vals[2] = {a->venue, a->symbol};
    PGresult *r = NULL;
    int rc = store__pg_exec(MOD, c, "exchange symbol lookup",
                            "SELECT status, tick_size, coalesce(step_size, 0), "
                            "extract(epoch FROM updated_at)::bigint FROM exchange_symbols "
                            "WHERE venue = $1 AND symbol = $2",
                            2, vals, PGRES_TUPLES_OK, 0, &r);
    if (rc)
        return rc;
    if (PQntuples(r) != 1) {
        PQclear(r);
        return PD_ENOTFOUND;
    }
    store_market m = {0};
    snprintf(m.venue, sizeof m.venue, "%s", a->venue);
    snprintf(m.symbol, sizeof m.symbol, "%s", a->symbol);
    snprintf(m.status, sizeof m.status, "%s", PQgetvalue(r, 0, 0));
    m.tick_size = strtod(PQgetvalue(r, 0, 1), NULL);
    m.step_size = strtod(PQgetvalue(r, 0, 2), NULL);
    m.updated_at = strtoll(PQgetvalue(r, 0, 3), NULL, 10);
    PQclear(r);
    *a->out = m;
    return 0;
}

int store_market_get(store_markets *h, const char *venue, const char *symbol, store_market *out)
{
    if (!h || !out || !venue_ok(venue))
        return PD_EINVAL;
    if (!util_symbol_valid(symbol))
        return PD_ESYMBOL;
    struct get_arg a = {venue, symbol, out};
    return store__pg_link_run(&h->link, op_get, &a);
}
