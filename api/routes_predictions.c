/*
 * routes_predictions.c: GET /api/predictions, /api/predictions/{symbol} and
 * /api/predictions/{symbol}/summary.
 *
 * Handlers validate every input before any I/O (a malformed symbol or
 * timeframe never reaches the registry or the database), call predict_one
 * and render. Multi-series answers carry per-series errors next to the
 * predictions that worked; the whole request fails only when nothing could
 * be answered for a reason that applies to all of it (the database is down).
 */
#include <stdlib.h>
#include <string.h>

#include "api/http_internal.h"
#include "features/features.h"
#include "store/store.h"

#define MAX_SYMBOLS 100

static const char *const summary_tfs[] = {"15m", "1h", "4h", "1d"};

/* Reads version=, label= and the client identity for canary routing. */
static int selector_of(struct api_request *rq, registry_selector *sel)
{
    memset(sel, 0, sizeof *sel);
    const char *version = api_query(rq, "version");
    if (version) {
        char *end;
        unsigned long v = strtoul(version, &end, 10);
        if (*version < '1' || *version > '9' || *end || v > 0x7fffffff) {
            api_reply_error(rq, PD_EINVAL, "version must be a positive integer");
            return PD_EINVAL;
        }
        sel->version = (uint32_t)v;
    }
    const char *label = api_query(rq, "label");
    if (label) {
        if (strcmp(label, "stable") != 0 && strcmp(label, "canary") != 0) {
            api_reply_error(rq, PD_EINVAL, "label must be stable or canary");
            return PD_EINVAL;
        }
        sel->label = label;
    }
    const char *client = api_header(rq, "X-Client-Id");
    sel->client_key = client ? client : rq->client;
    return 0;
}

static bool timeframe_ok(struct api_request *rq, const char *tf)
{
    if (tf && util_tf_seconds(tf))
        return true;
    api_reply_errorf(rq, PD_ETIMEFRAME, "timeframe must be one of %s", util_tf_list());
    return false;
}

/* Fills an empty why with the message of the per-series codes every
 * prediction route words the same way. */
static void default_why(int rc, const char *symbol, const char *tf, char *why, size_t len)
{
    if (*why)
        return;
    if (rc == PD_EUNKNOWNSYM)
        snprintf(why, len, "no candles for %s %s", symbol, tf);
    else if (rc == PD_ENOMODEL)
        snprintf(why, len, "no verified model serves %s %s", symbol, tf);
    else if (rc == PD_ESYMBOL)
        snprintf(why, len, "symbol must match ^[A-Z0-9]{2,20}$");
}

static void reply_predict_error(struct api_request *rq, int rc, const char *symbol,
                                const char *tf, char *why, size_t len)
{
    if (rc == PD_EUNKNOWNSYM || rc == PD_ENOMODEL || rc == PD_ESYMBOL)
        why[0] = '\0'; /* these read the same whatever the detail */
    default_why(rc, symbol, tf, why, len);
    api_reply_error(rq, rc, *why ? why : NULL);
}

/* GET /api/predictions/{symbol}?timeframe=15m */

void api_route_prediction(struct api_request *rq)
{
    const char *symbol = api_query(rq, "symbol");
    const char *tf = api_query(rq, "timeframe");
    if (!util_symbol_valid(symbol)) {
        api_reply_error(rq, PD_ESYMBOL, "symbol must match ^[A-Z0-9]{2,20}$");
        return;
    }
    if (!timeframe_ok(rq, tf))
        return;
    registry_selector sel;
    if (selector_of(rq, &sel))
        return;
    predict_result *p = NULL;
    char why[256] = "";
    uint64_t t0 = util_mono_ns();
    int rc = predict_one(rq->ctx->svc, symbol, tf, &sel, rq->now, &p, why, sizeof why);
    if (rc) {
        reply_predict_error(rq, rc, symbol, tf, why, sizeof why);
        return;
    }
    api_metrics_prediction(rq->http, p, (double)(util_mono_ns() - t0) / 1e9);
    util_buf b;
    util_buf_init(&b);
    api_success_begin(&b, rq->now);
    util_buf_puts(&b, ",\"prediction\":");
    predict_render(&b, p, rq->now);
    util_buf_puts(&b, "}");
    api_reply_json(rq, 200, &b);
    util_buf_cleanup(&b);
    predict_result_release(p);
}

static void append_item_error(util_buf *b, bool *first, const char *key, const char *value, int rc,
                              const char *why)
{
    util_buf_puts(b, *first ? "{" : ",{");
    *first = false;
    util_json_key(b, key);
    util_json_str(b, value);
    util_buf_puts(b, ",\"code\":");
    util_json_str(b, util_err_code(rc));
    util_buf_puts(b, ",\"message\":");
    util_json_str(b, why && *why ? why : util_strerror(rc));
    util_buf_puts(b, "}");
}

/* Splits "A,B,C" into validated symbols. Returns the count, or -1 after
 * replying with an error. */
static int parse_symbols(struct api_request *rq, const char *list, char (*out)[24])
{
    int n = 0;
    const char *p = list;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len > 0) {
            if (n == MAX_SYMBOLS) {
                api_reply_errorf(rq, PD_EINVAL, "at most %d symbols per request", MAX_SYMBOLS);
                return -1;
            }
            if (len >= 24) {
                api_reply_error(rq, PD_ESYMBOL, "symbol must match ^[A-Z0-9]{2,20}$");
                return -1;
            }
            memcpy(out[n], p, len);
            out[n][len] = '\0';
            if (!util_symbol_valid(out[n])) {
                api_reply_errorf(rq, PD_ESYMBOL, "symbol '%s' must match ^[A-Z0-9]{2,20}$",
                                 out[n]);
                return -1;
            }
            bool dup = false;
            for (int i = 0; i < n && !dup; i++)
                dup = strcmp(out[i], out[n]) == 0;
            if (!dup)
                n++;
        }
        if (!e)
            break;
        p = e + 1;
    }
    return n;
}

/* GET /api/predictions?timeframe=15m&symbols=A,B */

void api_route_predictions(struct api_request *rq)
{
    const char *tf = api_query(rq, "timeframe");
    if (!timeframe_ok(rq, tf))
        return;
    registry_selector sel;
    if (selector_of(rq, &sel))
        return;
    const char *list = api_query(rq, "symbols");
    char(*wanted)[24] = NULL;
    predict_symbol_list *all = NULL;
    size_t n = 0;
    if (list && *list) {
        wanted = calloc(MAX_SYMBOLS, sizeof *wanted);
        if (!wanted) {
            api_reply_error(rq, PD_ENOMEM, NULL);
            return;
        }
        int k = parse_symbols(rq, list, wanted);
        if (k < 0) {
            free(wanted);
            return;
        }
        n = (size_t)k;
    } else {
        int rc = predict_symbols_for(rq->ctx->svc, tf, rq->now, &all);
        if (rc) {
            api_reply_error(rq, rc, rc == PD_EDB ? "the candle database is unavailable" : NULL);
            return;
        }
        n = all->n;
    }

    util_buf preds, errs;
    util_buf_init(&preds);
    util_buf_init(&errs);
    util_buf_puts(&preds, "");
    util_buf_puts(&errs, "");
    bool first_p = true, first_e = true;
    size_t count = 0, db_errors = 0;
    const char **syms = calloc(n ? n : 1, sizeof *syms);
    predict_result **got = calloc(n ? n : 1, sizeof *got);
    int *rcs = calloc(n ? n : 1, sizeof *rcs);
    char(*whys)[256] = calloc(n ? n : 1, sizeof *whys);
    int many_rc = syms && got && rcs && whys ? 0 : PD_ENOMEM;
    for (size_t i = 0; many_rc == 0 && i < n; i++)
        syms[i] = wanted ? wanted[i] : all->names[i];
    /* the windows of every symbol the caches miss come in one round trip */
    uint64_t t0 = util_mono_ns();
    if (many_rc == 0)
        many_rc = predict_many(rq->ctx->svc, syms, n, tf, &sel, rq->now, got, rcs, whys);
    double batch_s = (double)(util_mono_ns() - t0) / 1e9;
    for (size_t i = 0; many_rc == 0 && i < n; i++) {
        const char *symbol = syms[i];
        predict_result *p = got[i];
        char *why = whys[i];
        int rc = rcs[i];
        if (rc) {
            if (rc == PD_EDB)
                db_errors++;
            default_why(rc, symbol, tf, why, 256);
            append_item_error(&errs, &first_e, "symbol", symbol, rc, why);
            continue;
        }
        api_metrics_prediction(rq->http, p, batch_s);
        if (!first_p)
            util_buf_puts(&preds, ",");
        first_p = false;
        predict_render(&preds, p, rq->now);
        predict_result_release(p);
        count++;
    }
    free(syms);
    free(got);
    free(rcs);
    free(whys);
    if (many_rc) {
        api_reply_error(rq, many_rc, NULL);
    } else if (n > 0 && db_errors == n) {
        api_reply_error(rq, PD_EDB, "the candle database is unavailable");
    } else {
        util_buf b;
        util_buf_init(&b);
        api_success_begin(&b, rq->now);
        util_buf_puts(&b, ",\"timeframe\":");
        util_json_str(&b, tf);
        util_buf_printf(&b, ",\"count\":%zu,\"predictions\":[", count);
        util_buf_append(&b, preds.data, preds.len);
        util_buf_puts(&b, "],\"errors\":[");
        util_buf_append(&b, errs.data, errs.len);
        util_buf_puts(&b, "]}");
        if (!util_buf_ok(&preds) || !util_buf_ok(&errs))
            b.oom = true;
        api_reply_json(rq, 200, &b);
        util_buf_cleanup(&b);
    }
    util_buf_cleanup(&preds);
    util_buf_cleanup(&errs);
    free(wanted);
    predict_symbol_list_release(all);
}

/* GET /api/predictions/{symbol}/summary: 15m, 1h, 4h and 1d together. */

void api_route_summary(struct api_request *rq)
{
    const char *symbol = api_query(rq, "symbol");
    if (!util_symbol_valid(symbol)) {
        api_reply_error(rq, PD_ESYMBOL, "symbol must match ^[A-Z0-9]{2,20}$");
        return;
    }
    registry_selector sel;
    if (selector_of(rq, &sel))
        return;
    util_buf preds, errs;
    util_buf_init(&preds);
    util_buf_init(&errs);
    util_buf_puts(&preds, "");
    util_buf_puts(&errs, "");
    bool first_p = true, first_e = true;
    int n = sizeof summary_tfs / sizeof summary_tfs[0], failed = 0, common = 0;
    for (int i = 0; i < n; i++) {
        const char *tf = summary_tfs[i];
        predict_result *p = NULL;
        char why[256] = "";
        uint64_t t0 = util_mono_ns();
        int rc = predict_one(rq->ctx->svc, symbol, tf, &sel, rq->now, &p, why, sizeof why);
        if (rc) {
            failed++;
            common = (failed == 1 || common == rc) ? rc : PD_EINTERNAL;
            default_why(rc, symbol, tf, why, sizeof why);
            append_item_error(&errs, &first_e, "timeframe", tf, rc, why);
            continue;
        }
        api_metrics_prediction(rq->http, p, (double)(util_mono_ns() - t0) / 1e9);
        util_buf_puts(&preds, first_p ? "" : ",");
        first_p = false;
        util_json_key(&preds, tf);
        predict_render(&preds, p, rq->now);
        predict_result_release(p);
    }
    if (failed == n && (common == PD_EUNKNOWNSYM || common == PD_EDB)) {
        if (common == PD_EUNKNOWNSYM)
            api_reply_errorf(rq, common, "no candles for %s", symbol);
        else
            api_reply_error(rq, common, "the candle database is unavailable");
    } else {
        util_buf b;
        util_buf_init(&b);
        api_success_begin(&b, rq->now);
        util_buf_puts(&b, ",\"symbol\":");
        util_json_str(&b, symbol);
        util_buf_puts(&b, ",\"predictions\":{");
        util_buf_append(&b, preds.data, preds.len);
        util_buf_puts(&b, "},\"errors\":[");
        util_buf_append(&b, errs.data, errs.len);
        util_buf_puts(&b, "]}");
        if (!util_buf_ok(&preds) || !util_buf_ok(&errs))
            b.oom = true;
        api_reply_json(rq, 200, &b);
        util_buf_cleanup(&b);
    }
    util_buf_cleanup(&preds);
    util_buf_cleanup(&errs);
}
