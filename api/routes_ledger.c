/*
 * routes_ledger.c: what the prediction ledger says about the models.
 *
 *   GET /api/models/{symbol}/{timeframe}/performance?window=N
 *       per model version of the series: resolved count, hit rate, accuracy,
 *       precision per direction, average R, Brier score, over every row and
 *       over the N most recent resolved ones (default 100)
 *   GET /api/predictions/history?symbol=&timeframe=&from=&to=&limit=&cursor=
 *       the ledger, newest candle first, one page at a time, with outcomes
 *
 * Definitions (the ledger's columns are described in db/004_ledger_outcomes.sql):
 *   trades     resolved LONG and SHORT predictions
 *   hit_rate   trades whose outcome is TP1, TP2 or TP3, over trades; this is
 *              model_accuracy once a version has PREDICT_LIVE_MIN_RESOLVED trades
 *   accuracy   resolved predictions (NO_TRADE included) whose realised class
 *              is the predicted one, over resolved predictions: comparable
 *              with the model's test accuracy
 *   precision  per predicted direction: realised class = direction
 *   avg_r      mean realised R over trades
 *   brier      mean over resolved predictions of sum_k (p_k - [realised = k])^2,
 *              k in LONG, SHORT, NO_TRADE (0 is perfect, 2 the worst)
 *
 * The figures are SQL aggregates (store_ledger_performance) over the
 * handle the inference loop lends (predict_set_ledger); without it (no
 * database, or the loop is off) both routes answer 503. Neither route is on
 * the prediction path: they query the database on every request.
 *
 * Threading: handlers run on the HTTP pool; the ledger handle serialises
 * its own connection.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/http_internal.h"
#include "features/features.h"
#include "store/store.h"

#define WINDOW_DEFAULT 100
#define WINDOW_MAX 100000
#define LIMIT_DEFAULT 100
#define LIMIT_MAX 1000

static store_ledger *ledger_or_reply(struct api_request *rq)
{
    store_ledger *db = predict_ledger(rq->ctx->svc);
    if (!db)
        api_reply_error(rq, PD_EDB,
                        "the prediction ledger is unavailable (no database, or the inference "
                        "loop is not running)");
    return db;
}

/* A positive integer query parameter within [1, max]; def when absent. */
static bool query_count(struct api_request *rq, const char *name, size_t def, size_t max,
                        size_t *out)
{
    const char *s = api_query(rq, name);
    if (!s) {
        *out = def;
        return true;
    }
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || *end || *s == '-' || v < 1 || v > max) {
        api_reply_errorf(rq, PD_EINVAL, "%s must be an integer in 1..%zu", name, max);
        return false;
    }
    *out = (size_t)v;
    return true;
}

static void ratio(util_buf *b, const char *key, double num, uint64_t den)
{
    util_buf_puts(b, ",");
    util_json_key(b, key);
    if (den)
        util_json_num(b, num / (double)den);
    else
        util_buf_puts(b, "null");
}

static void render_figures(util_buf *b, const store_ledger_figures *f)
{
    util_buf_printf(b,
                    "{\"predictions\":%" PRIu64 ",\"open\":%" PRIu64 ",\"resolved\":%" PRIu64
                    ",\"trades\":%" PRIu64 ",\"hits\":%" PRIu64,
                    f->predictions, f->open, f->resolved, f->trades, f->hits);
    ratio(b, "hit_rate", (double)f->hits, f->trades);
    ratio(b, "accuracy", (double)f->correct, f->resolved);
    ratio(b, "avg_r", f->sum_r, f->trades);
    ratio(b, "brier", f->sum_brier, f->resolved);
    util_buf_puts(b, ",\"by_direction\":{");
    for (int d = 0; d < 3; d++) {
        bool trade = d != STORE_LEDGER_NO_TRADE;
        util_buf_printf(
            b, "%s\"%s\":{\"predictions\":%" PRIu64 ",\"resolved\":%" PRIu64 ",\"hits\":%" PRIu64,
            d ? "," : "", store_ledger_class_name(d), f->dir[d].predictions, f->dir[d].resolved,
            f->dir[d].hits);
        ratio(b, "hit_rate", (double)f->dir[d].hits, trade ? f->dir[d].resolved : 0);
        ratio(b, "precision", (double)f->dir[d].correct, f->dir[d].resolved);
        ratio(b, "avg_r", f->dir[d].sum_r, trade ? f->dir[d].resolved : 0);
        util_buf_puts(b, "}");
    }
    util_buf_puts(b, "},\"first_candle\":");
    if (f->first)
        api_timestamp(b, f->first);
    else
        util_buf_puts(b, "null");
    util_buf_puts(b, ",\"last_candle\":");
    if (f->last)
        api_timestamp(b, f->last);
    else
        util_buf_puts(b, "null");
    util_buf_puts(b, "}");
}

void api_route_performance(struct api_request *rq)
{
    const char *symbol = api_query(rq, "symbol"), *tf = api_query(rq, "timeframe");
    if (!symbol || !util_symbol_valid(symbol)) {
        api_reply_error(rq, PD_ESYMBOL, "symbol must match ^[A-Z0-9]{2,20}$");
        return;
    }
    if (!tf || !util_tf_seconds(tf)) {
        api_reply_errorf(rq, PD_ETIMEFRAME, "timeframe must be one of %s", util_tf_list());
        return;
    }
    size_t window;
    if (!query_count(rq, "window", WINDOW_DEFAULT, WINDOW_MAX, &window))
        return;
    store_ledger *db = ledger_or_reply(rq);
    if (!db)
        return;
    store_ledger_perf *perf = NULL;
    size_t n = 0;
    int rc = store_ledger_performance(db, symbol, tf, window, &perf, &n);
    if (rc) {
        api_reply_error(rq, rc, rc == PD_EDB ? "the prediction ledger cannot be read now" : NULL);
        return;
    }
    uint32_t serving = 0;
    registry_version *v = NULL;
    if (registry_acquire(api_context_registry(rq->ctx), symbol, tf, NULL, &v) == 0) {
        serving = registry_version_number(v);
        registry_release(v);
    }

    util_buf b;
    util_buf_init(&b);
    api_success_begin(&b, rq->now);
    util_buf_puts(&b, ",\"symbol\":");
    util_json_str(&b, symbol);
    util_buf_puts(&b, ",\"timeframe\":");
    util_json_str(&b, tf);
    util_buf_printf(&b, ",\"window\":%zu,\"live_min_resolved\":%d,\"serving_version\":", window,
                    PREDICT_LIVE_MIN_RESOLVED);
    if (serving)
        util_buf_printf(&b, "%" PRIu32, serving);
    else
        util_buf_puts(&b, "null");
    util_buf_puts(&b, ",\"versions\":[");
    for (size_t i = 0; i < n; i++) {
        const store_ledger_perf *p = &perf[i];
        bool live = p->all.trades >= PREDICT_LIVE_MIN_RESOLVED;
        util_buf_printf(&b, "%s{\"version\":%" PRIu32 ",\"serving\":%s,\"accuracy_source\":\"%s\"",
                        i ? "," : "", p->version, p->version == serving ? "true" : "false",
                        live ? "live" : "backtest");
        util_buf_puts(&b, ",\"all\":");
        render_figures(&b, &p->all);
        util_buf_puts(&b, ",\"window\":");
        render_figures(&b, &p->window);
        util_buf_puts(&b, "}");
    }
    util_buf_puts(&b, "]}");
    free(perf);
    api_reply_json(rq, 200, &b);
    util_buf_cleanup(&b);
}

/* ------------------------------------------------------------------------
 * History.
 */

/* Cursor text: "<candle unix s>_<SYMBOL>_<tf>_<version>"; opaque to clients. */
static void cursor_format(char *out, size_t len, const store_ledger_row *r)
{
    snprintf(out, len, "%" PRId64 "_%s_%s_%" PRIu32, r->e.candle_time, r->e.symbol, r->e.timeframe,
             r->e.version);
}

static bool cursor_parse(const char *s, store_ledger_cursor *c)
{
    long long t;
    unsigned v;
    char sym[24], tf[8];
    int used = 0;
    if (strlen(s) > 80 ||
        sscanf(s, "%lld_%23[A-Z0-9]_%7[a-z0-9]_%u%n", &t, sym, tf, &v, &used) != 4 ||
        s[used] != '\0' || t < 0 || v == 0 || !util_symbol_valid(sym) || !util_tf_seconds(tf))
        return false;
    c->candle_time = t;
    snprintf(c->symbol, sizeof c->symbol, "%s", sym);
    snprintf(c->timeframe, sizeof c->timeframe, "%s", tf);
    c->version = v;
    return true;
}

static void num_or_null(util_buf *b, const char *key, double v)
{
    util_buf_puts(b, ",");
    util_json_key(b, key);
    util_json_num(b, v); /* NaN renders as null */
}

static void render_row(util_buf *b, const store_ledger_row *r)
{
    const store_ledger_entry *e = &r->e;
    util_buf_puts(b, "{\"symbol\":");
    util_json_str(b, e->symbol);
    util_buf_puts(b, ",\"timeframe\":");
    util_json_str(b, e->timeframe);
    util_buf_puts(b, ",\"candle_time\":");
    api_timestamp(b, e->candle_time);
    util_buf_printf(b, ",\"model_version\":%" PRIu32 ",\"direction\":", e->version);
    util_json_str(b, store_ledger_class_name(e->direction));
    util_buf_puts(b, ",\"confidence\":");
    util_json_fixed(b, e->confidence, 6);
    util_buf_puts(b, ",\"probabilities\":{\"LONG\":");
    util_json_fixed(b, e->probs[0], 6);
    util_buf_puts(b, ",\"SHORT\":");
    util_json_fixed(b, e->probs[1], 6);
    util_buf_puts(b, ",\"NO_TRADE\":");
    util_json_fixed(b, e->probs[2], 6);
    util_buf_puts(b, "}");
    num_or_null(b, "entry", e->entry);
    num_or_null(b, "stop_loss", e->stop_loss);
    util_buf_puts(b, ",\"take_profits\":[");
    for (int k = 0; k < 3; k++) {
        util_buf_printf(b, "%s{\"level\":%d,\"price\":", k ? "," : "", k + 1);
        util_json_num(b, e->tp[k]);
        util_buf_puts(b, "}");
    }
    util_buf_puts(b, "]");
    num_or_null(b, "atr", e->atr);
    util_buf_puts(b, ",\"horizon_candles\":");
    if (e->horizon)
        util_buf_printf(b, "%" PRIu32, e->horizon);
    else
        util_buf_puts(b, "null");
    util_buf_puts(b, ",\"created_at\":");
    api_timestamp(b, e->created_at);
    bool open = r->r.outcome == STORE_OUTCOME_OPEN;
    util_buf_puts(b, ",\"outcome\":");
    if (open)
        util_buf_puts(b, "null");
    else
        util_json_str(b, store_ledger_outcome_name(r->r.outcome));
    util_buf_puts(b, ",\"realised\":");
    if (r->r.realised >= 0)
        util_json_str(b, store_ledger_class_name(r->r.realised));
    else
        util_buf_puts(b, "null");
    util_buf_puts(b, ",\"resolved_at\":");
    if (r->resolved_at)
        api_timestamp(b, r->resolved_at);
    else
        util_buf_puts(b, "null");
    num_or_null(b, "hit_time_s", r->r.hit_time_s);
    num_or_null(b, "r_multiple", r->r.r_multiple);
    num_or_null(b, "mfe", r->r.mfe);
    num_or_null(b, "mae", r->r.mae);
    util_buf_puts(b, "}");
}

/* An RFC 3339 time query parameter; 0 when absent. */
static bool query_time(struct api_request *rq, const char *name, int64_t *out)
{
    const char *s = api_query(rq, name);
    *out = 0;
    if (!s)
        return true;
    if (util_parse_time(s, out) != 0 || *out <= 0) {
        api_reply_errorf(rq, PD_EINVAL, "%s must be an RFC 3339 time after 1970", name);
        return false;
    }
    return true;
}

void api_route_history(struct api_request *rq)
{
    store_ledger_query q = {.symbol = api_query(rq, "symbol"),
                               .timeframe = api_query(rq, "timeframe")};
    if (q.symbol && !util_symbol_valid(q.symbol)) {
        api_reply_error(rq, PD_ESYMBOL, "symbol must match ^[A-Z0-9]{2,20}$");
        return;
    }
    if (q.timeframe && !util_tf_seconds(q.timeframe)) {
        api_reply_errorf(rq, PD_ETIMEFRAME, "timeframe must be one of %s", util_tf_list());
        return;
    }
    if (!query_time(rq, "from", &q.from) || !query_time(rq, "to", &q.to))
        return;
    if (q.from && q.to && q.from >= q.to) {
        api_reply_error(rq, PD_EINVAL, "from must be before to");
        return;
    }
    if (!query_count(rq, "limit", LIMIT_DEFAULT, LIMIT_MAX, &q.limit))
        return;
    store_ledger_cursor cur;
    const char *cs = api_query(rq, "cursor");
    if (cs) {
        if (!cursor_parse(cs, &cur)) {
            api_reply_error(rq, PD_EINVAL, "cursor is not one this service gave");
            return;
        }
        q.after = &cur;
    }
    store_ledger *db = ledger_or_reply(rq);
    if (!db)
        return;
    store_ledger_row *rows = NULL;
    size_t n = 0;
    bool more = false;
    int rc = store_ledger_history(db, &q, &rows, &n, &more);
    if (rc) {
        api_reply_error(rq, rc, rc == PD_EDB ? "the prediction ledger cannot be read now" : NULL);
        return;
    }
    util_buf b;
    util_buf_init(&b);
    api_success_begin(&b, rq->now);
    util_buf_printf(&b, ",\"count\":%zu,\"next_cursor\":", n);
    if (more && n) {
        char next[96];
        cursor_format(next, sizeof next, &rows[n - 1]);
        util_json_str(&b, next);
    } else {
        util_buf_puts(&b, "null");
    }
    util_buf_puts(&b, ",\"predictions\":[");
    for (size_t i = 0; i < n; i++) {
        if (i)
            util_buf_puts(&b, ",");
        render_row(&b, &rows[i]);
    }
    util_buf_puts(&b, "]}");
    free(rows);
    api_reply_json(rq, 200, &b);
    util_buf_cleanup(&b);
}
