/*
 * metrics.c: Prometheus text exposition (format 0.0.4) of the service's
 * counters, gauges and histograms, checked by `promtool check metrics`.
 *
 * Request-path updates are lock-free atomics. Label sets are bounded by
 * construction, so no request can create a series:
 * - routes are the fixed enum api_metric_route, status codes a fixed table;
 * - per-series prediction counters live in a fixed table of
 *   METRIC_SERIES_MAX entries (a mutex guards inserting one) and are made
 *   only by a prediction that succeeded, i.e. for a series with candles and
 *   a model: an unknown or malformed symbol fails before that. Past the
 *   table's size series fold into symbol="_other";
 * - model info and versions come from the repository listing;
 * - feature staleness is read at scrape time from the process cache of
 *   predictions (also made only by successful predictions), capped at
 *   METRIC_SERIES_MAX series.
 * The inference histogram and the staleness of cached series come from
 * the prediction service (predict_latency_get, predict_freshness_get):
 * this file only renders them.
 *
 * A histogram's buckets are counted non-cumulatively, with an overflow
 * bucket, and summed at render time: the count is the sum of the buckets,
 * so a scrape racing with observations is still monotonic and consistent.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "api/http_internal.h"
#include "features/features.h"
#include "store/store.h"
#include "inference/inference.h"
#include "training/training.h"

#define METRIC_SERIES_MAX 512

/* Tables read best as tables. */
/* clang-format off */
/* Request and prediction latency: 10 us .. 10 s (a cached answer takes
 * tens of microseconds). */
#define NBUCKETS 19
static const double buckets[NBUCKETS] = {0.00001, 0.000025, 0.00005, 0.0001, 0.00025,
                                         0.0005,  0.001,    0.0025,  0.005,  0.01,
                                         0.025,   0.05,     0.1,     0.25,   0.5,
                                         1,       2.5,      5,       10};
/* clang-format on */

/* The code label is the exact status: every status 100..599 has a slot. */
#define CODE_MIN 100
#define CODE_COUNT_ 500

/* Predictions of one series by one model version (a canary and the stable
 * version of a series are two entries, so they can be compared). */
struct series_counter {
    char symbol[24];
    char tf[8];
    uint32_t version;
    _Atomic uint64_t by_direction[3];
    _Atomic uint64_t latency_bucket[NBUCKETS + 1];
    _Atomic uint64_t latency_sum_us;
};

struct api_metrics {
    _Atomic uint64_t requests[API_METRIC_COUNT_][CODE_COUNT_];
    _Atomic uint64_t latency_bucket[API_METRIC_COUNT_][NBUCKETS + 1]; /* + overflow */
    _Atomic uint64_t latency_sum_us[API_METRIC_COUNT_];
    _Atomic uint64_t rate_limited;
    pthread_mutex_t series_lock; /* guards inserting into series */
    _Atomic size_t nseries;
    struct series_counter series[METRIC_SERIES_MAX + 1]; /* the last is "_other" */
};

static int code_index(int status)
{
    if (status < CODE_MIN || status >= CODE_MIN + CODE_COUNT_)
        status = 500; /* no reply is recorded as the 500 it becomes */
    return status - CODE_MIN;
}

static int bucket_index(const double *bounds, int n, double v)
{
    int i = 0;
    while (i < n && v > bounds[i])
        i++;
    return i; /* n: the overflow bucket */
}

void api_metrics_init(struct api_http *h)
{
    h->metrics = calloc(1, sizeof *h->metrics);
    if (h->metrics) {
        pthread_mutex_init(&h->metrics->series_lock, NULL);
        snprintf(h->metrics->series[METRIC_SERIES_MAX].symbol, 24, "_other");
        snprintf(h->metrics->series[METRIC_SERIES_MAX].tf, 8, "_other");
    } else {
        LOG_ERROR("metrics", "out of memory: /metrics will be empty");
    }
    h->started_at = util_now();
}

void api_metrics_cleanup(struct api_http *h)
{
    if (!h->metrics)
        return;
    pthread_mutex_destroy(&h->metrics->series_lock);
    free(h->metrics);
    h->metrics = NULL;
}

void api_metrics_request(struct api_http *h, int metric, int status, double seconds)
{
    struct api_metrics *m = h->metrics;
    if (!m || metric < 0 || metric >= API_METRIC_COUNT_)
        return;
    atomic_fetch_add_explicit(&m->requests[metric][code_index(status)], 1, memory_order_relaxed);
    if (status == 429)
        atomic_fetch_add_explicit(&m->rate_limited, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->latency_bucket[metric][bucket_index(buckets, NBUCKETS, seconds)],
                              1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->latency_sum_us[metric], (uint64_t)(seconds * 1e6),
                              memory_order_relaxed);
}

static bool same_series(const struct series_counter *c, const predict_result *p)
{
    return c->version == p->version && strcmp(c->symbol, p->symbol) == 0 &&
           strcmp(c->tf, p->timeframe) == 0;
}

void api_metrics_prediction(struct api_http *h, const predict_result *p, double seconds)
{
    struct api_metrics *m = h->metrics;
    if (!m || !p || p->direction < 0 || p->direction > 2)
        return;
    size_t n = atomic_load(&m->nseries);
    size_t i = 0;
    while (i < n && !same_series(&m->series[i], p))
        i++;
    if (i == n) {
        pthread_mutex_lock(&m->series_lock);
        n = atomic_load(&m->nseries);
        i = 0;
        while (i < n && !same_series(&m->series[i], p))
            i++;
        if (i == n) {
            if (n < METRIC_SERIES_MAX) {
                snprintf(m->series[n].symbol, sizeof m->series[n].symbol, "%s", p->symbol);
                snprintf(m->series[n].tf, sizeof m->series[n].tf, "%s", p->timeframe);
                m->series[n].version = p->version;
                atomic_store(&m->nseries, n + 1); /* publish after the names are written */
            } else {
                i = METRIC_SERIES_MAX;
            }
        }
        pthread_mutex_unlock(&m->series_lock);
    }
    struct series_counter *c = &m->series[i];
    atomic_fetch_add_explicit(&c->by_direction[p->direction], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&c->latency_bucket[bucket_index(buckets, NBUCKETS, seconds)], 1,
                              memory_order_relaxed);
    atomic_fetch_add_explicit(&c->latency_sum_us, (uint64_t)(seconds * 1e6), memory_order_relaxed);
}

/* ------------------------------------------------------------------------
 * Rendering.
 */
static void header(util_buf *b, const char *name, const char *type, const char *help)
{
    util_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value, escaped as the text format wants (\\, \", \n). */
static void label(util_buf *b, const char *name, const char *value, bool first)
{
    util_buf_printf(b, "%s%s=\"", first ? "" : ",", name);
    for (const char *p = value; *p; p++) {
        if (*p == '\\' || *p == '"')
            util_buf_printf(b, "\\%c", *p);
        else if (*p == '\n')
            util_buf_puts(b, "\\n");
        else
            util_buf_append(b, p, 1);
    }
    util_buf_puts(b, "\"");
}

/* Appends the _bucket, _sum and _count lines of one histogram; labels is
 * "" or `route="x",` (with the trailing comma). */
static void histogram(util_buf *b, const char *name, const char *labels, const double *bounds,
                      int n, _Atomic uint64_t *counts, double sum)
{
    uint64_t cum = 0;
    for (int i = 0; i <= n; i++) {
        cum += atomic_load_explicit(&counts[i], memory_order_relaxed);
        if (i < n)
            util_buf_printf(b, "%s_bucket{%sle=\"%g\"} %llu\n", name, labels, bounds[i],
                            (unsigned long long)cum);
        else
            util_buf_printf(b, "%s_bucket{%sle=\"+Inf\"} %llu\n", name, labels,
                            (unsigned long long)cum);
    }
    size_t ll = strlen(labels);
    if (ll) /* drop the trailing comma for _sum and _count */
        util_buf_printf(b, "%s_sum{%.*s} %.9g\n%s_count{%.*s} %llu\n", name, (int)ll - 1, labels,
                        sum, name, (int)ll - 1, labels, (unsigned long long)cum);
    else
        util_buf_printf(b, "%s_sum %.9g\n%s_count %llu\n", name, sum, name,
                        (unsigned long long)cum);
}

/* The market-data feed of this process (store_feed_status); nothing when
 * none runs here. */
static void render_feed(util_buf *b, int64_t now)
{
    static const char *const states[] = {"connecting", "connected", "lagging", "backfilling",
                                         "down"};
    store_feed_status f;
    if (store_feed_status_get(&f) != 0)
        return;
    /* a replica on standby (another one holds the feed's leader lock)
     * exports no feed series: predictd_feed_leader says it waits */
    if (!strcmp(f.state, "standby"))
        return;
    bool up = !strcmp(f.state, "connected") || !strcmp(f.state, "lagging") ||
              !strcmp(f.state, "backfilling");
    header(b, "predictd_feed_up", "gauge",
           "1 while the market-data feed delivers (connected, lagging or backfilling), else 0.");
    util_buf_puts(b, "predictd_feed_up{");
    label(b, "feed", f.feed, true);
    util_buf_printf(b, "} %d\n", up ? 1 : 0);
    header(b, "predictd_feed_state", "gauge", "The feed's state: 1 for the current one.");
    for (size_t i = 0; i < sizeof states / sizeof *states; i++) {
        util_buf_puts(b, "predictd_feed_state{");
        label(b, "feed", f.feed, true);
        label(b, "state", states[i], false);
        util_buf_printf(b, "} %d\n", !strcmp(f.state, states[i]));
    }
    struct {
        const char *name, *help;
        uint64_t v;
    } c[] = {
        {"predictd_feed_candles_total", "1m base candles the feed wrote.", f.candles},
        {"predictd_feed_trades_total", "Trades the feed aggregated.", f.trades},
        {"predictd_feed_corrections_total", "Base candles written again (late trades).",
         f.corrections},
        {"predictd_feed_write_errors_total", "Failed base candle writes.", f.write_errors},
    };
    for (size_t i = 0; i < sizeof c / sizeof *c; i++) {
        header(b, c[i].name, "counter", c[i].help);
        util_buf_printf(b, "%s{", c[i].name);
        label(b, "feed", f.feed, true);
        util_buf_printf(b, "} %llu\n", (unsigned long long)c[i].v);
    }
    if (f.last_candle) {
        header(b, "predictd_feed_last_candle_age_seconds", "gauge",
               "Seconds since the newest base candle the feed wrote closed.");
        util_buf_puts(b, "predictd_feed_last_candle_age_seconds{");
        label(b, "feed", f.feed, true);
        int64_t age = now - f.last_candle - 60;
        util_buf_printf(b, "} %lld\n", (long long)(age > 0 ? age : 0));
    }
}

void api_metrics_render_staleness(struct api_http *h, util_buf *b, int64_t now)
{
    predict_freshness *s = calloc(METRIC_SERIES_MAX, sizeof *s);
    if (!s)
        return;
    size_t n = predict_freshness_get(h->ctx->svc, s, METRIC_SERIES_MAX);
    header(b, "predictd_feature_staleness_seconds", "gauge",
           "Seconds since the close of the newest candle behind the prediction each series "
           "serves from the process cache (absent with PREDICTD_CACHE=off).");
    for (size_t k = 0; k < n; k++) {
        util_buf_puts(b, "predictd_feature_staleness_seconds{");
        label(b, "symbol", s[k].symbol, true);
        label(b, "timeframe", s[k].timeframe, false);
        util_buf_printf(b, "} %lld\n", (long long)(now > s[k].candle_close ? now - s[k].candle_close : 0));
    }
    header(b, "predictd_feature_window_gaps", "gauge",
           "Missing candles inside the feature window of the newest cached prediction of each "
           "series (data quality; also in the prediction's warnings).");
    for (size_t k = 0; k < n; k++) {
        util_buf_puts(b, "predictd_feature_window_gaps{");
        label(b, "symbol", s[k].symbol, true);
        label(b, "timeframe", s[k].timeframe, false);
        util_buf_printf(b, "} %d\n", s[k].gaps);
    }
    free(s);
}

static void render_http(struct api_http *h, util_buf *b)
{
    struct api_metrics *m = h->metrics;
    header(b, "predictd_http_requests_total", "counter", "HTTP requests by route and status.");
    for (int r = 0; r < API_METRIC_COUNT_; r++)
        for (int c = 0; c < CODE_COUNT_; c++) {
            uint64_t v = atomic_load(&m->requests[r][c]);
            if (v)
                util_buf_printf(b, "predictd_http_requests_total{route=\"%s\",code=\"%d\"} %llu\n",
                                api_metric_route_name(r), c + CODE_MIN, (unsigned long long)v);
        }
    header(b, "predictd_http_request_duration_seconds", "histogram",
           "HTTP request latency by route, from dispatch to the response being queued.");
    for (int r = 0; r < API_METRIC_COUNT_; r++) {
        uint64_t any = 0;
        for (int i = 0; i <= NBUCKETS; i++)
            any |= atomic_load(&m->latency_bucket[r][i]);
        if (!any)
            continue;
        char labels[48];
        snprintf(labels, sizeof labels, "route=\"%s\",", api_metric_route_name(r));
        histogram(b, "predictd_http_request_duration_seconds", labels, buckets, NBUCKETS,
                  m->latency_bucket[r], (double)atomic_load(&m->latency_sum_us[r]) / 1e6);
    }
    header(b, "predictd_http_in_flight_requests", "gauge",
           "Requests accepted and not yet answered in full (what a drain waits for).");
    util_buf_printf(b, "predictd_http_in_flight_requests %ld\n", atomic_load(&h->open_requests));
    header(b, "predictd_http_streams", "gauge", "WebSocket and SSE clients connected.");
    util_buf_printf(b, "predictd_http_streams %d\n", atomic_load(&h->streams));
    if (h->ctx) {
        api_stream_stats st;
        api_stream_stats_get(h->ctx, &st);
        header(b, "predictd_stream_messages_published_total", "counter",
               "Predictions handed to the WebSocket/SSE hub by the inference loop.");
        util_buf_printf(b, "predictd_stream_messages_published_total %llu\n",
                        (unsigned long long)st.published);
        header(b, "predictd_stream_messages_delivered_total", "counter",
               "Messages queued to a subscribed WebSocket or SSE client.");
        util_buf_printf(b, "predictd_stream_messages_delivered_total %llu\n",
                        (unsigned long long)st.delivered);
        header(b, "predictd_stream_clients_dropped_total", "counter",
               "Stream clients disconnected because they fell a full queue behind.");
        util_buf_printf(b, "predictd_stream_clients_dropped_total %llu\n",
                        (unsigned long long)st.dropped);
    }
    header(b, "predictd_http_header_timeouts_total", "counter",
           "Connections closed for not sending a request line and headers within "
           "PREDICTD_HEADER_TIMEOUT (however slowly they trickled bytes).");
    util_buf_printf(b, "predictd_http_header_timeouts_total %llu\n",
                    (unsigned long long)atomic_load(&h->header_timeouts));
    header(b, "predictd_http_draining", "gauge", "1 after SIGTERM while requests drain.");
    util_buf_printf(b, "predictd_http_draining %d\n", atomic_load(&h->draining) ? 1 : 0);
    header(b, "predictd_rate_limited_requests_total", "counter",
           "Requests refused by the per-address rate limit.");
    util_buf_printf(b, "predictd_rate_limited_requests_total %llu\n",
                    (unsigned long long)atomic_load(&m->rate_limited));
}

static void render_predictions(struct api_http *h, util_buf *b)
{
    struct api_metrics *m = h->metrics;
    header(b, "predictd_predictions_total", "counter",
           "Predictions served by symbol, timeframe, model version and direction.");
    size_t n = atomic_load(&m->nseries);
    for (size_t i = 0; i <= METRIC_SERIES_MAX; i++) {
        if (i == n && i < METRIC_SERIES_MAX)
            i = METRIC_SERIES_MAX;
        char version[16];
        snprintf(version, sizeof version, i == METRIC_SERIES_MAX ? "_other" : "%u",
                 m->series[i].version);
        for (int d = 0; d < 3; d++) {
            uint64_t v = atomic_load(&m->series[i].by_direction[d]);
            if (!v)
                continue;
            util_buf_puts(b, "predictd_predictions_total{");
            label(b, "symbol", m->series[i].symbol, true);
            label(b, "timeframe", m->series[i].tf, false);
            label(b, "version", version, false);
            label(b, "direction", inference_class_name((enum inference_class)d), false);
            util_buf_printf(b, "} %llu\n", (unsigned long long)v);
        }
    }
    header(b, "predictd_prediction_duration_seconds", "histogram",
           "Time to obtain a prediction (cache or computed) by symbol, timeframe and model "
           "version; the predictions of one batch request share the batch's time.");
    for (size_t i = 0; i <= METRIC_SERIES_MAX; i++) {
        if (i == n && i < METRIC_SERIES_MAX)
            i = METRIC_SERIES_MAX;
        uint64_t any = 0;
        for (int k = 0; k <= NBUCKETS; k++)
            any |= atomic_load(&m->series[i].latency_bucket[k]);
        if (!any)
            continue;
        util_buf lb;
        util_buf_init(&lb);
        char version[16];
        snprintf(version, sizeof version, i == METRIC_SERIES_MAX ? "_other" : "%u",
                 m->series[i].version);
        label(&lb, "symbol", m->series[i].symbol, true);
        label(&lb, "timeframe", m->series[i].tf, false);
        label(&lb, "version", version, false);
        util_buf_puts(&lb, ",");
        if (util_buf_ok(&lb))
            histogram(b, "predictd_prediction_duration_seconds", lb.data, buckets, NBUCKETS,
                      m->series[i].latency_bucket,
                      (double)atomic_load(&m->series[i].latency_sum_us) / 1e6);
        util_buf_cleanup(&lb);
    }
    header(b, "predictd_inference_duration_seconds", "histogram",
           "Model kernel latency (one inference_run: scaler, layers or trees, softmax).");
    predict_latency lat;
    predict_latency_get(&lat);
    _Atomic uint64_t lat_counts[PREDICT_LATENCY_BUCKETS + 1];
    for (int i = 0; i <= PREDICT_LATENCY_BUCKETS; i++)
        atomic_init(&lat_counts[i], lat.counts[i]);
    histogram(b, "predictd_inference_duration_seconds", "", lat.bounds, PREDICT_LATENCY_BUCKETS,
              lat_counts, lat.sum_s);

    predict_cache_stats cs;
    predict_cache_stats_get(h->ctx->svc, &cs);
    store_stats fst;
    store_stats_get(&fst);
    header(b, "predictd_cache_requests_total", "counter",
           "Cache lookups by cache (rendered predictions, candle windows, negative answers), "
           "layer (process, redis) and result.");
    util_buf_printf(
        b,
        "predictd_cache_requests_total{cache=\"prediction\",layer=\"process\",result=\"hit\"} "
        "%llu\n"
        "predictd_cache_requests_total{cache=\"prediction\",layer=\"process\",result=\"miss\"} "
        "%llu\n"
        "predictd_cache_requests_total{cache=\"prediction\",layer=\"redis\",result=\"hit\"} %llu\n"
        "predictd_cache_requests_total{cache=\"prediction\",layer=\"redis\",result=\"miss\"} "
        "%llu\n"
        "predictd_cache_requests_total{cache=\"candles\",layer=\"redis\",result=\"hit\"} %llu\n"
        "predictd_cache_requests_total{cache=\"candles\",layer=\"redis\",result=\"miss\"} %llu\n"
        "predictd_cache_requests_total{cache=\"negative\",layer=\"process\",result=\"hit\"} "
        "%llu\n",
        (unsigned long long)cs.process_hits, (unsigned long long)cs.process_misses,
        (unsigned long long)cs.redis_hits, (unsigned long long)cs.redis_misses,
        (unsigned long long)fst.redis_hits, (unsigned long long)fst.redis_misses,
        (unsigned long long)cs.negative_hits);
    header(b, "predictd_predictions_computed_total", "counter",
           "Predictions computed from candles (not served from a cache).");
    util_buf_printf(b, "predictd_predictions_computed_total %llu\n",
                    (unsigned long long)cs.computed);
    api_metrics_render_staleness(h, b, util_now());
    render_feed(b, util_now());

    header(b, "predictd_db_queries_total", "counter", "PostgreSQL queries.");
    util_buf_printf(b, "predictd_db_queries_total %llu\n", (unsigned long long)fst.db_queries);
    header(b, "predictd_db_errors_total", "counter", "PostgreSQL errors.");
    util_buf_printf(b, "predictd_db_errors_total %llu\n", (unsigned long long)fst.db_errors);
    header(b, "predictd_db_reconnects_total", "counter", "PostgreSQL reconnections.");
    util_buf_printf(b, "predictd_db_reconnects_total %llu\n",
                    (unsigned long long)fst.db_reconnects);
    static const struct {
        int kind;
        const char *name, *help;
    } lats[] = {{STORE_LATENCY_DB, "predictd_db_query_duration_seconds",
                 "PostgreSQL statement latency (each round trip of a request-path statement)."},
                {STORE_LATENCY_REDIS, "predictd_redis_command_duration_seconds",
                 "Redis reply latency (in a pipelined batch the first reply carries the round "
                 "trip)."}};
    for (size_t k = 0; k < sizeof lats / sizeof lats[0]; k++) {
        store_latency sl;
        store_latency_get(lats[k].kind, &sl);
        _Atomic uint64_t counts[STORE_LATENCY_BUCKETS + 1];
        for (int i = 0; i <= STORE_LATENCY_BUCKETS; i++)
            atomic_init(&counts[i], sl.counts[i]);
        header(b, lats[k].name, "histogram", lats[k].help);
        histogram(b, lats[k].name, "", store_latency_bounds, STORE_LATENCY_BUCKETS, counts,
                  sl.sum_s);
    }
    header(b, "predictd_redis_errors_total", "counter",
           "Redis errors (each one bypassed: the database answers instead).");
    util_buf_printf(b, "predictd_redis_errors_total %llu\n", (unsigned long long)fst.redis_errors);
}

static void render_models(struct api_http *h, util_buf *b)
{
    registry *reg = api_context_registry(h->ctx);
    registry_stats rs;
    registry_stats_get(reg, &rs);
    header(b, "predictd_model_loads_total", "counter", "Model version loads by result and reason.");
    util_buf_printf(b, "predictd_model_loads_total{result=\"ok\",reason=\"none\"} %llu\n",
                    (unsigned long long)rs.loads_ok);
    for (int i = 0; i < REGISTRY_FAIL_COUNT_; i++)
        util_buf_printf(b, "predictd_model_loads_total{result=\"failed\",reason=\"%s\"} %llu\n",
                        registry_fail_name(i), (unsigned long long)rs.failed_by_reason[i]);
    header(b, "predictd_model_swaps_total", "counter", "Serving version changes.");
    util_buf_printf(b, "predictd_model_swaps_total %llu\n", (unsigned long long)rs.swaps);
    header(b, "predictd_model_scans_total", "counter", "Model repository scans.");
    util_buf_printf(b, "predictd_model_scans_total %llu\n", (unsigned long long)rs.scans);

    registry_series_info *s = NULL;
    size_t ns = 0;
    if (registry_list(reg, &s, &ns) != 0)
        return;
    uint64_t by_state[4] = {0};
    header(b, "predictd_model_info", "gauge",
           "Versions that serve or carry a label, per series (value 1).");
    for (size_t i = 0; i < ns; i++)
        for (size_t k = 0; k < s[i].n_versions; k++) {
            const registry_version_info *v = &s[i].versions[k];
            if ((unsigned)v->state < 4)
                by_state[v->state]++;
            if (!v->serving && !v->label[0])
                continue;
            char version[16];
            snprintf(version, sizeof version, "%u", v->version);
            util_buf_puts(b, "predictd_model_info{");
            label(b, "symbol", s[i].symbol, true);
            label(b, "timeframe", s[i].timeframe, false);
            label(b, "version", version, false);
            label(b, "label", v->label[0] ? v->label : "none", false);
            label(b, "serving", v->serving ? "true" : "false", false);
            util_buf_puts(b, "} 1\n");
        }
    header(b, "predictd_model_versions", "gauge", "Model versions in the repository by state.");
    for (int st = 0; st < 4; st++)
        util_buf_printf(b, "predictd_model_versions{state=\"%s\"} %llu\n",
                        registry_state_name((registry_state)st), (unsigned long long)by_state[st]);
    registry_list_free(s, ns);
}

static void render_training(struct api_http *h, util_buf *b)
{
    training_jobs *j = h->ctx->opt.jobs;
    if (!j)
        return; /* background training is off: no series at all */
    training_jobs_stats st;
    training_jobs_stats_get(j, &st);
    header(b, "predictd_training_jobs_finished_total", "counter",
           "Background training jobs that ended (any final state).");
    util_buf_printf(b, "predictd_training_jobs_finished_total %llu\n",
                    (unsigned long long)st.finished);
    header(b, "predictd_training_jobs_failed_total", "counter",
           "Background training jobs that failed.");
    util_buf_printf(b, "predictd_training_jobs_failed_total %llu\n", (unsigned long long)st.failed);
    header(b, "predictd_training_jobs_queued", "gauge", "Training jobs waiting to run.");
    util_buf_printf(b, "predictd_training_jobs_queued %zu\n", st.queued);
    header(b, "predictd_training_job_running", "gauge", "1 while a training job runs.");
    util_buf_printf(b, "predictd_training_job_running %d\n", st.running ? 1 : 0);
}

/* The standard process_* metrics of Prometheus' client libraries, from
 * /proc (Linux): CPU time, memory, file descriptors, threads. A value that
 * cannot be read is left out rather than reported as 0. */
static void render_process(util_buf *b)
{
    long tick = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "r");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f)
        fclose(f);
    buf[n] = '\0';
    /* fields after the command (which may hold spaces), from field 3 on */
    const char *p = strrchr(buf, ')');
    unsigned long utime = 0, stime = 0;
    unsigned long long start = 0, vsize = 0;
    long threads = 0, rss = 0;
    if (p && tick > 0 &&
        sscanf(p + 2,
               "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d %*d %*d %ld %*d %llu "
               "%llu %ld",
               &utime, &stime, &threads, &start, &vsize, &rss) == 6) {
        header(b, "process_cpu_seconds_total", "counter", "User and system CPU time (seconds).");
        util_buf_printf(b, "process_cpu_seconds_total %.2f\n", (double)(utime + stime) / tick);
        header(b, "process_resident_memory_bytes", "gauge", "Resident memory (bytes).");
        util_buf_printf(b, "process_resident_memory_bytes %lld\n", (long long)rss * page);
        header(b, "process_virtual_memory_bytes", "gauge", "Virtual memory (bytes).");
        util_buf_printf(b, "process_virtual_memory_bytes %llu\n", vsize);
        header(b, "process_threads", "gauge", "Threads of the process.");
        util_buf_printf(b, "process_threads %ld\n", threads);
        /* start: clock ticks after boot; btime: boot in Unix seconds */
        f = fopen("/proc/stat", "r");
        long long btime = -1;
        while (f && fgets(buf, sizeof buf, f))
            if (sscanf(buf, "btime %lld", &btime) == 1)
                break;
        if (f)
            fclose(f);
        if (btime >= 0) {
            header(b, "process_start_time_seconds", "gauge",
                   "Start time of the process (Unix seconds).");
            util_buf_printf(b, "process_start_time_seconds %.2f\n",
                            (double)btime + (double)start / tick);
        }
    }
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        long fds = -1; /* the directory's own descriptor is not counted */
        while (readdir(d))
            fds++;
        closedir(d);
        header(b, "process_open_fds", "gauge", "Open file descriptors.");
        util_buf_printf(b, "process_open_fds %ld\n", fds - 2); /* . and .. */
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        header(b, "process_max_fds", "gauge", "Limit on open file descriptors.");
        util_buf_printf(b, "process_max_fds %llu\n", (unsigned long long)rl.rlim_cur);
    }
}

void api_metrics_render(struct api_http *h, util_buf *b)
{
    if (!h->metrics)
        return;
    render_http(h, b);
    render_predictions(h, b);
    render_models(h, b);
    render_training(h, b);
    pthread_rwlock_rdlock(&h->jobs_lock);
    if (h->metrics_hook)
        h->metrics_hook(h->metrics_hook_arg, b);
    pthread_rwlock_unlock(&h->jobs_lock);
    header(b, "predictd_uptime_seconds", "gauge", "Seconds since the service started.");
    util_buf_printf(b, "predictd_uptime_seconds %lld\n", (long long)(util_now() - h->started_at));
    render_process(b);
    header(b, "predictd_build_info", "gauge", "Build version and commit (value 1).");
    util_buf_printf(b, "predictd_build_info{version=\"%s\",commit=\"%s\"} 1\n", PREDICTD_VERSION,
                    PREDICTD_COMMIT);
}

void api_http_set_metrics_hook(api_http *h, api_metrics_hook fn, void *arg)
{
    if (!h)
        return;
    pthread_rwlock_wrlock(&h->jobs_lock);
    h->metrics_hook = fn;
    h->metrics_hook_arg = fn ? arg : NULL;
    pthread_rwlock_unlock(&h->jobs_lock);
}
