/*
 * routes_health.c: liveness, readiness, status and metrics.
 *
 * Liveness says the process can serve. Readiness is stricter, following
 * the Kubernetes convention: PostgreSQL must answer, at least one model
 * version must be verified and serving (zero models is not ready), and the
 * service must not be draining after SIGTERM.
 */
#include <string.h>

#include "api/http_internal.h"
#include "features/features.h"

int api_readiness(struct api_http *h, char *why, size_t whylen)
{
    if (atomic_load(&h->draining)) {
        snprintf(why, whylen, "draining: shutting down");
        return PD_ENOTREADY;
    }
    size_t serving = 0, failed = 0;
    registry_counts(api_context_registry(h->ctx), &serving, &failed);
    if (serving == 0) {
        snprintf(why, whylen, "no model version is verified and serving");
        return PD_ENOTREADY;
    }
    /* a primary-key lookup of a series that cannot exist: one round trip */
    int64_t count = 0;
    if (features_count_candles("__PING__", "1m", &count) != 0) {
        snprintf(why, whylen, "the candle database does not answer");
        return PD_EDB;
    }
    return 0;
}

void api_route_live(struct api_request *rq)
{
    util_buf b;
    util_buf_init(&b);
    util_buf_puts(&b, "{\"status\":\"success\",\"live\":true}");
    api_reply_json(rq, 200, &b);
    util_buf_cleanup(&b);
}

void api_route_ready(struct api_request *rq)
{
    char why[256] = "";
    int rc = api_readiness(rq->http, why, sizeof why);
    if (rc) {
        util_buf b;
        util_buf_init(&b);
        api_render_error(&b, PD_ENOTREADY, why);
        api_reply_json(rq, 503, &b);
        util_buf_cleanup(&b);
        return;
    }
    util_buf b;
    util_buf_init(&b);
    util_buf_puts(&b, "{\"status\":\"success\",\"ready\":true}");
    api_reply_json(rq, 200, &b);
    util_buf_cleanup(&b);
}

void api_route_health(struct api_request *rq)
{
    char why[256] = "";
    int rc = api_readiness(rq->http, why, sizeof why);
    size_t serving = 0, failed = 0;
    registry_counts(api_context_registry(rq->ctx), &serving, &failed);
    util_buf b;
    util_buf_init(&b);
    util_buf_puts(&b, "{\"status\":\"success\",\"timestamp\":");
    api_timestamp(&b, rq->now);
    util_buf_printf(&b, ",\"ready\":%s,\"reason\":", rc ? "false" : "true");
    if (rc)
        util_json_str(&b, why);
    else
        util_buf_puts(&b, "null");
    util_buf_printf(&b,
                    ",\"models_serving\":%zu,\"models_failed\":%zu,\"uptime_s\":%lld,"
                    "\"version\":\"%s\"}",
                    serving, failed, (long long)(rq->now - rq->http->started_at),
                    PREDICTD_VERSION);
    api_reply_json(rq, 200, &b);
    util_buf_cleanup(&b);
}

void api_route_status(struct api_request *rq)
{
    struct api_http *h = rq->http;
    char why[256] = "";
    int ready = api_readiness(h, why, sizeof why);
    int64_t count = 0;
    int db = features_count_candles("__PING__", "1m", &count);
    features_stats fs;
    features_stats_get(&fs);
    char *probe = NULL;
    size_t plen = 0;
    int redis = features_cache_get("predictd:ping", &probe, &plen);
    free(probe);

    util_buf b;
    util_buf_init(&b);
    util_buf_puts(&b, "{\"status\":\"success\",\"timestamp\":");
    api_timestamp(&b, rq->now);
    util_buf_printf(&b, ",\"ready\":%s,\"components\":{", ready ? "false" : "true");
    util_buf_printf(&b, "\"database\":{\"state\":\"%s\",\"errors\":%llu,\"reconnects\":%llu},",
                    db == 0 ? "up" : "down", (unsigned long long)fs.db_errors,
                    (unsigned long long)fs.db_reconnects);
    const char *rstate = redis == PD_ECACHE ? "down_or_off" : "up";
    util_buf_printf(&b, "\"redis\":{\"state\":\"%s\",\"errors\":%llu},", rstate,
                    (unsigned long long)fs.redis_errors);
    util_buf_puts(&b, "\"registry\":{\"series\":[");
    registry_series_info *s = NULL;
    size_t ns = 0;
    if (registry_list(api_context_registry(rq->ctx), &s, &ns) == 0) {
        for (size_t i = 0; i < ns; i++) {
            uint32_t serving = 0;
            const char *last_error = NULL;
            for (size_t k = 0; k < s[i].n_versions; k++) {
                if (s[i].versions[k].serving)
                    serving = s[i].versions[k].version;
                if (s[i].versions[k].state == REGISTRY_FAILED)
                    last_error = s[i].versions[k].reason;
            }
            util_buf_printf(&b, "%s{\"symbol\":", i ? "," : "");
            util_json_str(&b, s[i].symbol);
            util_buf_puts(&b, ",\"timeframe\":");
            util_json_str(&b, s[i].timeframe);
            util_buf_puts(&b, ",\"serving_version\":");
            if (serving)
                util_buf_printf(&b, "%u", serving);
            else
                util_buf_puts(&b, "null");
            util_buf_puts(&b, ",\"last_error\":");
            if (last_error)
                util_json_str(&b, last_error);
            else
                util_buf_puts(&b, "null");
            util_buf_puts(&b, "}");
        }
        registry_list_free(s, ns);
    }
    util_buf_puts(&b, "]}}}");
    api_reply_json(rq, 200, &b);
    util_buf_cleanup(&b);
}

void api_route_metrics(struct api_request *rq)
{
    util_buf b;
    util_buf_init(&b);
    api_metrics_render(rq->http, &b);
    if (!util_buf_ok(&b)) {
        util_buf_cleanup(&b);
        api_reply_error(rq, PD_ENOMEM, NULL);
        return;
    }
    ulfius_set_binary_body_response(rq->resp, 200, b.data, b.len);
    u_map_put(rq->resp->map_header, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    rq->status = 200;
    util_buf_cleanup(&b);
}
