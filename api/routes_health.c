/*
 * routes_health.c: liveness, readiness, the summary, component status and
 * metrics; the table of background jobs and the last error of each
 * dependency that /health/status reports.
 *
 * Liveness says the process can serve (it answers while it can run a
 * handler at all). Readiness is stricter, following the Kubernetes
 * convention: the service is not draining after SIGTERM, at least one model
 * version is verified and serving (zero models is not ready), and
 * PostgreSQL answers a query now. Every failing condition is reported, not
 * only the first.
 *
 * Background jobs are whatever other parts of the program register with
 * api_http_add_job (server/cmd_serve.c registers the model scanner and the
 * inference loop; training jobs register the same way once they run in the
 * service). /health/status calls each probe under the table's read lock;
 * a job stays registered until the server stops, so its state outlives
 * every probe call.
 *
 * Threading: all handlers run concurrently on the HTTP pool; they read the
 * registry, predict and store modules through their thread-safe calls.
 */
#include <math.h>
#include <string.h>

#include "api/http_internal.h"
#include "features/features.h"
#include "store/store.h"

/* A series that cannot clash with a real one in practice; the query is a
 * primary-key count, one round trip. */
#define PING_SYMBOL "PDPING00"
#define PING_TF "1d"

/* ------------------------------------------------------------------------
 * Component errors and jobs.
 */
void api_component_error(struct api_http *h, int component, const char *message)
{
    if (component < 0 || component >= API_COMPONENT_COUNT_)
        return;
    struct api_component_error *e = &h->component_errors[component];
    pthread_mutex_lock(&e->lock);
    snprintf(e->message, sizeof e->message, "%s", message);
    e->at = util_now();
    pthread_mutex_unlock(&e->lock);
}

/* Appends ,"last_error":...,"last_error_at":... for a component. */
static void render_component_error(util_buf *b, struct api_http *h, int component)
{
    struct api_component_error *e = &h->component_errors[component];
    char msg[sizeof e->message];
    pthread_mutex_lock(&e->lock);
    int64_t at = e->at;
    memcpy(msg, e->message, sizeof msg);
    pthread_mutex_unlock(&e->lock);
    util_buf_puts(b, ",\"last_error\":");
    if (at)
        util_json_str(b, msg);
    else
        util_buf_puts(b, "null");
    util_buf_puts(b, ",\"last_error_at\":");
    if (at)
        api_timestamp(b, at);
    else
        util_buf_puts(b, "null");
}

int api_http_add_job(api_http *h, const char *name, api_job_probe probe, void *arg)
{
    if (!h || !name || !*name || strlen(name) >= sizeof h->jobs[0].name || !probe)
        return PD_EINVAL;
    int rc = 0;
    pthread_rwlock_wrlock(&h->jobs_lock);
    size_t i = 0;
    while (i < h->njobs && strcmp(h->jobs[i].name, name) != 0)
        i++;
    if (i == h->njobs) {
        if (h->njobs == API_JOBS_MAX)
            rc = PD_ETOOBIG;
        else
            h->njobs++;
    }
    if (rc == 0) {
        snprintf(h->jobs[i].name, sizeof h->jobs[i].name, "%s", name);
        h->jobs[i].probe = probe;
        h->jobs[i].arg = arg;
    }
    pthread_rwlock_unlock(&h->jobs_lock);
    return rc;
}

static void render_jobs(util_buf *b, struct api_http *h)
{
    util_buf_puts(b, "\"jobs\":[");
    pthread_rwlock_rdlock(&h->jobs_lock);
    for (size_t i = 0; i < h->njobs; i++) {
        api_job_status st;
        memset(&st, 0, sizeof st);
        h->jobs[i].probe(h->jobs[i].arg, &st);
        st.last_error[sizeof st.last_error - 1] = '\0';
        util_buf_puts(b, i ? ",{\"name\":" : "{\"name\":");
        util_json_str(b, h->jobs[i].name);
        util_buf_puts(b, ",\"state\":");
        util_json_str(b, st.state ? st.state : "unknown");
        util_buf_puts(b, ",\"role\":");
        if (st.role)
            util_json_str(b, st.role);
        else
            util_buf_puts(b, "null");
        util_buf_printf(b, ",\"runs\":%llu,\"last_run\":", (unsigned long long)st.runs);
        if (st.last_run)
            api_timestamp(b, st.last_run);
        else
            util_buf_puts(b, "null");
        util_buf_puts(b, ",\"last_error\":");
        if (st.last_error[0])
            util_json_str(b, st.last_error);
        else
            util_buf_puts(b, "null");
        util_buf_puts(b, "}");
    }
    pthread_rwlock_unlock(&h->jobs_lock);
    util_buf_puts(b, "]");
}

/* ------------------------------------------------------------------------
 * Readiness.
 */

/* 0 when PostgreSQL answers; records the failure otherwise. */
static int database_check(struct api_http *h)
{
    int64_t count = 0;
    int rc = store_count_candles(PING_SYMBOL, PING_TF, &count);
    if (rc) {
        char msg[160];
        snprintf(msg, sizeof msg, "health check: %s", util_strerror(rc));
        api_component_error(h, API_COMPONENT_DATABASE, msg);
    }
    return rc;
}

static void add_reason(char *why, size_t whylen, const char *reason)
{
    size_t n = strlen(why);
    if (n + 3 < whylen)
        snprintf(why + n, whylen - n, "%s%s", n ? "; " : "", reason);
}

/* api_readiness, also telling whether the database answered. */
static int readiness(struct api_http *h, char *why, size_t whylen, bool *db_up)
{
    int rc = 0;
    why[0] = '\0';
    if (atomic_load(&h->draining)) {
        add_reason(why, whylen, "draining: shutting down");
        rc = PD_ENOTREADY;
    }
    size_t serving = 0, failed = 0;
    registry_counts(api_context_registry(h->ctx), &serving, &failed);
    if (serving == 0) {
        add_reason(why, whylen, "no model version is verified and serving");
        rc = PD_ENOTREADY;
    }
    /* Ready means "can answer predictions": with the database away, a
     * replica whose process cache holds answers still serves them (flagged
     * by their staleness), so one database blip does not take every replica
     * out of the load balancer at once. */
    *db_up = database_check(h) == 0;
    predict_freshness any;
    if (!*db_up && predict_freshness_get(h->ctx->svc, &any, 1) == 0) {
        add_reason(why, whylen, "the candle database does not answer and no answer is cached");
        rc = PD_ENOTREADY;
    }
    return rc;
}

int api_readiness(struct api_http *h, char *why, size_t whylen)
{
    bool db_up;
    return readiness(h, why, whylen, &db_up);
}

/* ------------------------------------------------------------------------
 * Handlers.
 */
void api_route_live(struct api_request *rq)
{
    util_buf b;
    util_buf_init(&b);
    api_success_open(&b);
    util_buf_puts(&b, ",\"live\":true}");
    api_reply_json(rq, 200, &b);
    util_buf_cleanup(&b);
}

void api_route_ready(struct api_request *rq)
{
    char why[512] = "";
    if (api_readiness(rq->http, why, sizeof why) != 0) {
        util_buf b;
        util_buf_init(&b);
        api_render_error(&b, PD_ENOTREADY, why);
        api_reply_json(rq, 503, &b);
        rq->err = PD_ENOTREADY;
        util_buf_cleanup(&b);
        return;
    }
    util_buf b;
    util_buf_init(&b);
    api_success_open(&b);
    util_buf_puts(&b, ",\"ready\":true}");
    api_reply_json(rq, 200, &b);
    util_buf_cleanup(&b);
}

void api_route_health(struct api_request *rq)
{
    char why[512] = "";
    int rc = api_readiness(rq->http, why, sizeof why);
    size_t serving = 0, failed = 0;
    registry_counts(api_context_registry(rq->ctx), &serving, &failed);
    util_buf b;
    util_buf_init(&b);
    api_success_begin(&b, rq->now);
    util_buf_printf(&b, ",\"ready\":%s,\"reason\":", rc ? "false" : "true");
    if (rc)
        util_json_str(&b, why);
    else
        util_buf_puts(&b, "null");
    util_buf_printf(&b,
                    ",\"models_serving\":%zu,\"models_failed\":%zu,\"uptime_s\":%lld,"
                    "\"version\":\"%s\"}",
                    serving, failed, (long long)(rq->now - rq->http->started_at), PREDICTD_VERSION);
    api_reply_json(rq, 200, &b);
    util_buf_cleanup(&b);
}

static const char *series_state(const registry_series_info *s, int64_t now, uint32_t *serving,
                                size_t *nfailed, const char **last_error, bool *expired)
{
    bool loading = false;
    *expired = false;
    *serving = 0;
    *nfailed = 0;
    *last_error = NULL;
    for (size_t k = 0; k < s->n_versions; k++) {
        const registry_version_info *v = &s->versions[k];
        if (v->serving) {
            *serving = v->version;
            /* past its maximum age it still answers, flagged */
            *expired = v->max_age_s > 0 && v->trained_at > 0 && now - v->trained_at > v->max_age_s;
        }
        if (v->state == REGISTRY_LOADING)
            loading = true;
        if (v->state == REGISTRY_FAILED) {
            (*nfailed)++;
            *last_error = v->reason; /* versions ascend: the newest failure wins */
        }
    }
    if (*serving)
        return "serving";
    if (loading)
        return "loading";
    return *nfailed ? "failed" : "empty";
}

static void render_registry(util_buf *b, struct api_request *rq)
{
    registry_series_info *s = NULL;
    size_t ns = 0;
    if (registry_list(api_context_registry(rq->ctx), &s, &ns) != 0) {
        util_buf_puts(b, "\"registry\":{\"state\":\"down\",\"series\":[]}");
        return;
    }
    size_t serving_series = 0;
    for (size_t i = 0; i < ns; i++)
        for (size_t k = 0; k < s[i].n_versions; k++)
            if (s[i].versions[k].serving) {
                serving_series++;
                break;
            }
    util_buf_printf(b, "\"registry\":{\"state\":\"%s\",\"series\":[",
                    serving_series ? "up" : "empty");
    for (size_t i = 0; i < ns; i++) {
        uint32_t serving;
        size_t nfailed;
        const char *last_error;
        bool expired;
        const char *state =
            series_state(&s[i], rq->now, &serving, &nfailed, &last_error, &expired);
        util_buf_puts(b, i ? ",{\"symbol\":" : "{\"symbol\":");
        util_json_str(b, s[i].symbol);
        util_buf_puts(b, ",\"timeframe\":");
        util_json_str(b, s[i].timeframe);
        util_buf_printf(b, ",\"state\":\"%s\",\"serving_version\":", state);
        if (serving)
            util_buf_printf(b, "%u", serving);
        else
            util_buf_puts(b, "null");
        util_buf_printf(b,
                        ",\"model_expired\":%s,\"versions\":%zu,\"failed_versions\":%zu,"
                        "\"last_error\":",
                        expired ? "true" : "false", s[i].n_versions, nfailed);
        if (last_error)
            util_json_str(b, last_error);
        else
            util_buf_puts(b, "null");
        util_buf_puts(b, "}");
    }
    util_buf_puts(b, "]}");
    registry_list_free(s, ns);
}

/* The market-data feed of this process (store_feed_status): components.feed,
 * and the feed's name at the top level, so a demo says it is one. */
static void render_feed(util_buf *b, int64_t now)
{
    store_feed_status f;
    if (store_feed_status_get(&f) != 0) {
        util_buf_puts(b, "\"feed\":{\"state\":\"off\",\"name\":null,\"source\":null,"
                         "\"last_candle\":null,\"last_candle_age_s\":null,\"candles\":0,"
                         "\"trades\":0,\"corrections\":0,\"write_errors\":0}},\"feed\":null");
        return;
    }
    util_buf_puts(b, "\"feed\":{\"state\":");
    util_json_str(b, f.state);
    util_buf_puts(b, ",\"name\":");
    util_json_str(b, f.feed);
    util_buf_puts(b, ",\"source\":");
    util_json_str(b, f.source);
    if (f.last_candle) {
        char t[32];
        util_buf_printf(b, ",\"last_candle\":\"%s\",\"last_candle_age_s\":%lld",
                        util_rfc3339(f.last_candle, t),
                        (long long)(now - f.last_candle - 60 > 0 ? now - f.last_candle - 60 : 0));
    } else {
        util_buf_puts(b, ",\"last_candle\":null,\"last_candle_age_s\":null");
    }
    util_buf_printf(b,
                    ",\"candles\":%llu,\"trades\":%llu,\"corrections\":%llu,"
                    "\"write_errors\":%llu}},\"feed\":",
                    (unsigned long long)f.candles, (unsigned long long)f.trades,
                    (unsigned long long)f.corrections, (unsigned long long)f.write_errors);
    util_json_str(b, f.feed);
}

void api_route_status(struct api_request *rq)
{
    struct api_http *h = rq->http;
    const api_options *opt = &rq->ctx->opt;
    char why[512] = "";
    bool db_up = false;
    int not_ready = readiness(h, why, sizeof why, &db_up);
    store_stats fs;
    store_stats_get(&fs);

    const char *redis_state = "off";
    if (opt->redis && opt->cache) {
        char *probe = NULL;
        size_t plen = 0;
        int rc = store_cache_get("predictd:health", &probe, &plen);
        free(probe);
        redis_state = rc == PD_ECACHE ? "down" : "up";
        if (rc == PD_ECACHE)
            api_component_error(h, API_COMPONENT_REDIS, "health check: Redis does not answer");
    }

    util_buf b;
    util_buf_init(&b);
    api_success_begin(&b, rq->now);
    util_buf_printf(&b, ",\"ready\":%s,\"reason\":", not_ready ? "false" : "true");
    if (not_ready)
        util_json_str(&b, why);
    else
        util_buf_puts(&b, "null");
    util_buf_puts(&b, ",\"components\":{");
    util_buf_printf(&b, "\"http\":{\"state\":\"%s\",\"open_requests\":%ld,\"streams\":%d},",
                    atomic_load(&h->draining) ? "draining" : "serving",
                    atomic_load(&h->open_requests), atomic_load(&h->streams));
    util_buf_printf(&b,
                    "\"database\":{\"state\":\"%s\",\"queries\":%llu,\"errors\":%llu,"
                    "\"reconnects\":%llu",
                    db_up ? "up" : "down", (unsigned long long)fs.db_queries,
                    (unsigned long long)fs.db_errors, (unsigned long long)fs.db_reconnects);
    render_component_error(&b, h, API_COMPONENT_DATABASE);
    util_buf_printf(&b, "},\"redis\":{\"state\":\"%s\",\"errors\":%llu", redis_state,
                    (unsigned long long)fs.redis_errors);
    render_component_error(&b, h, API_COMPONENT_REDIS);
    util_buf_puts(&b, "},");
    render_registry(&b, rq);
    util_buf_puts(&b, ",");
    render_jobs(&b, h);
    util_buf_puts(&b, ",");
    render_feed(&b, rq->now); /* closes components */
    util_buf_puts(&b, "}");
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
