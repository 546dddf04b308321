/*
 * routes_models.c: what serves, publicly (/api/models) and for operators
 * (/admin/models: failure reasons, reload, pin, labels).
 *
 * The public listing shows every series with its serving version and the
 * state of each version; the admin listing adds why a version failed. Admin
 * bodies are parsed by bodies.c; the handlers act on plain values.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "api/bodies_internal.h"
#include "api/http_internal.h"

static void render_series(util_buf *b, const registry_series_info *s, bool admin)
{
    const registry_version_info *serving = NULL;
    for (size_t i = 0; i < s->n_versions; i++)
        if (s->versions[i].serving)
            serving = &s->versions[i];
    char ts[32];
    util_buf_puts(b, "{\"symbol\":");
    util_json_str(b, s->symbol);
    util_buf_puts(b, ",\"timeframe\":");
    util_json_str(b, s->timeframe);
    util_buf_puts(b, ",\"serving_version\":");
    if (serving)
        util_buf_printf(b, "%u", serving->version);
    else
        util_buf_puts(b, "null");
    util_buf_puts(b, ",\"pinned_version\":");
    if (s->pinned)
        util_buf_printf(b, "%u", s->pinned);
    else
        util_buf_puts(b, "null");
    util_buf_printf(b, ",\"canary_share\":%u,\"versions\":[", s->canary_share);
    for (size_t i = 0; i < s->n_versions; i++) {
        const registry_version_info *v = &s->versions[i];
        util_buf_printf(b, "%s{\"version\":%u,\"state\":", i ? "," : "", v->version);
        util_json_str(b, registry_state_name(v->state));
        util_buf_printf(b, ",\"serving\":%s,\"label\":", v->serving ? "true" : "false");
        if (v->label[0])
            util_json_str(b, v->label);
        else
            util_buf_puts(b, "null");
        util_buf_puts(b, ",\"test_accuracy\":");
        util_json_num(b, v->test_accuracy);
        util_buf_puts(b, ",\"trained_at\":");
        if (v->trained_at > 0)
            util_json_str(b, util_rfc3339(v->trained_at, ts));
        else
            util_buf_puts(b, "null");
        util_buf_puts(b, ",\"loaded_at\":");
        if (v->loaded_at > 0)
            util_json_str(b, util_rfc3339(v->loaded_at, ts));
        else
            util_buf_puts(b, "null");
        util_buf_puts(b, ",\"load_ms\":");
        util_json_fixed(b, v->load_ms, 3);
        if (admin) {
            util_buf_puts(b, ",\"reason\":");
            if (v->reason[0])
                util_json_str(b, v->reason);
            else
                util_buf_puts(b, "null");
        } else if (v->state == REGISTRY_FAILED) {
            util_buf_puts(b, ",\"reason\":\"failed verification\"");
        }
        util_buf_puts(b, "}");
    }
    util_buf_puts(b, "]}");
}

static void reply_listing(struct api_request *rq, bool admin)
{
    registry_series_info *s = NULL;
    size_t n = 0;
    int rc = registry_list(api_context_registry(rq->ctx), &s, &n);
    if (rc) {
        api_reply_error(rq, rc, NULL);
        return;
    }
    util_buf b;
    util_buf_init(&b);
    api_success_begin(&b, rq->now);
    util_buf_printf(&b, ",\"count\":%zu,\"models\":[", n);
    for (size_t i = 0; i < n; i++) {
        if (i)
            util_buf_puts(&b, ",");
        render_series(&b, &s[i], admin);
    }
    util_buf_puts(&b, "]");
    registry_refused_info *ref = NULL;
    size_t nref = 0;
    if (admin && registry_refused(api_context_registry(rq->ctx), &ref, &nref) == 0) {
        util_buf_puts(&b, ",\"refused\":[");
        for (size_t i = 0; i < nref; i++) {
            util_buf_puts(&b, i ? ",{\"path\":" : "{\"path\":");
            util_json_str(&b, ref[i].path);
            util_buf_puts(&b, ",\"reason\":");
            util_json_str(&b, ref[i].reason);
            util_buf_puts(&b, "}");
        }
        util_buf_puts(&b, "]");
        free(ref);
    }
    util_buf_puts(&b, "}");
    api_reply_json(rq, 200, &b);
    util_buf_cleanup(&b);
    registry_list_free(s, n);
}

/* Validated {symbol}/{timeframe} path parameters ("_default" allowed). */
static bool series_params(struct api_request *rq, const char **symbol, const char **tf)
{
    *symbol = api_query(rq, "symbol");
    *tf = api_query(rq, "timeframe");
    if (!*symbol ||
        (!util_symbol_valid(*symbol) && strcmp(*symbol, REGISTRY_DEFAULT_SYMBOL) != 0)) {
        api_reply_error(rq, PD_ESYMBOL, "symbol must match ^[A-Z0-9]{2,20}$ or be _default");
        return false;
    }
    if (!util_tf_seconds(*tf)) {
        api_reply_errorf(rq, PD_ETIMEFRAME, "timeframe must be one of %s", util_tf_list());
        return false;
    }
    return true;
}

void api_route_models(struct api_request *rq)
{
    reply_listing(rq, false);
}

void api_route_admin_models(struct api_request *rq)
{
    reply_listing(rq, true);
}

/* The latest `predictd backtest` figures of each version, from the ledger
 * database (stored as JSON by the command, passed through); null when no
 * ledger is attached or it cannot be read now. */
static void render_backtests(struct api_request *rq, util_buf *b, const char *symbol,
                             const char *tf)
{
    util_buf_puts(b, ",\"backtests\":");
    store_ledger *db = predict_ledger(rq->ctx->svc);
    store_ledger_backtest *bt = NULL;
    size_t n = 0;
    if (!db || !util_symbol_valid(symbol) || store_ledger_backtests(db, symbol, tf, &bt, &n) != 0) {
        util_buf_puts(b, "null");
        return;
    }
    util_buf_puts(b, "[");
    for (size_t i = 0; i < n; i++) {
        char ts[32];
        util_buf_printf(b, "%s{\"version\":%u,\"created_at\":\"%s\",\"figures\":%s}",
                        i ? "," : "", bt[i].version, util_rfc3339(bt[i].created_at, ts),
                        bt[i].figures_json);
    }
    util_buf_puts(b, "]");
    store_ledger_backtests_free(bt, n);
}

static void reply_one(struct api_request *rq, const char *symbol, const char *tf, bool admin)
{
    registry_series_info *s = NULL;
    size_t n = 0;
    int rc = registry_list(api_context_registry(rq->ctx), &s, &n);
    if (rc) {
        api_reply_error(rq, rc, NULL);
        return;
    }
    const registry_series_info *found = NULL;
    for (size_t i = 0; i < n && !found; i++)
        if (strcmp(s[i].symbol, symbol) == 0 && strcmp(s[i].timeframe, tf) == 0)
            found = &s[i];
    if (!found) {
        api_reply_errorf(rq, PD_ENOMODEL, "no model repository entry for %s %s", symbol, tf);
    } else {
        util_buf b;
        util_buf_init(&b);
        api_success_begin(&b, rq->now);
        util_buf_puts(&b, ",\"model\":");
        render_series(&b, found, admin);
        if (!admin)
            render_backtests(rq, &b, symbol, tf);
        util_buf_puts(&b, "}");
        api_reply_json(rq, 200, &b);
        util_buf_cleanup(&b);
    }
    registry_list_free(s, n);
}

void api_route_model(struct api_request *rq)
{
    const char *symbol, *tf;
    if (series_params(rq, &symbol, &tf))
        reply_one(rq, symbol, tf, false);
}

void api_route_admin_reload(struct api_request *rq)
{
    char sym[24], tfb[8], why[256] = "";
    int prc = api__body_reload(rq->req->binary_body, rq->req->binary_body_length, sym, tfb, why,
                               sizeof why);
    if (prc) {
        api_reply_error(rq, prc, why);
        return;
    }
    const char *symbol = sym[0] ? sym : NULL, *tf = tfb[0] ? tfb : NULL;
    registry *reg = api_context_registry(rq->ctx);
    int rc = registry_scan(reg, symbol, tf);
    if (rc) {
        api_reply_error(rq, rc, "the model repository could not be read");
        return;
    }
    /* the other replicas (sharing the directory) rescan the same series */
    if (symbol) {
        registry_announce(reg, symbol, tf);
    } else {
        registry_series_info *all = NULL;
        size_t n = 0;
        if (registry_list(reg, &all, &n) == 0) {
            for (size_t i = 0; i < n; i++)
                registry_announce(reg, all[i].symbol, all[i].timeframe);
            registry_list_free(all, n);
        }
    }
    reply_listing(rq, true);
}

void api_route_admin_pin(struct api_request *rq)
{
    const char *symbol, *tf;
    if (!series_params(rq, &symbol, &tf))
        return;
    uint32_t v32 = 0;
    char why[256] = "";
    int prc =
        api__body_pin(rq->req->binary_body, rq->req->binary_body_length, &v32, why, sizeof why);
    if (prc) {
        api_reply_error(rq, prc, why);
        return;
    }
    long long version = v32;
    int rc = registry_pin(api_context_registry(rq->ctx), symbol, tf, (uint32_t)version);
    if (rc) {
        api_reply_errorf(rq, rc, "cannot pin %s %s to version %lld: %s", symbol, tf,
                         (long long)version, util_strerror(rc));
        return;
    }
    LOG_INFO("api", "pinned %s %s to v%lld", symbol, tf, (long long)version);
    reply_one(rq, symbol, tf, true);
}

void api_route_admin_unpin(struct api_request *rq)
{
    const char *symbol, *tf;
    if (!series_params(rq, &symbol, &tf))
        return;
    int rc = registry_unpin(api_context_registry(rq->ctx), symbol, tf);
    if (rc) {
        api_reply_errorf(rq, rc, "cannot unpin %s %s: %s", symbol, tf, util_strerror(rc));
        return;
    }
    LOG_INFO("api", "unpinned %s %s", symbol, tf);
    reply_one(rq, symbol, tf, true);
}

void api_route_admin_label(struct api_request *rq)
{
    const char *symbol, *tf;
    if (!series_params(rq, &symbol, &tf))
        return;
    char label_copy[16] = "", why[256] = "";
    uint32_t v32 = 0;
    int share = 0;
    int rc = api__body_label(rq->req->binary_body, rq->req->binary_body_length, label_copy, &v32,
                             &share, why, sizeof why);
    if (rc) {
        api_reply_error(rq, rc, why);
        return;
    }
    long long version = v32;
    rc = registry_set_label(api_context_registry(rq->ctx), symbol, tf, label_copy, v32, share);
    if (rc) {
        api_reply_errorf(rq, rc, "cannot label %s %s v%lld %s: %s", symbol, tf,
                         (long long)version, label_copy, util_strerror(rc));
        return;
    }
    LOG_INFO("api", "labelled %s %s v%lld %s", symbol, tf, (long long)version, label_copy);
    reply_one(rq, symbol, tf, true);
}
