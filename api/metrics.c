/*
 * metrics.c: Prometheus text exposition of the service's counters.
 *
 * Counters are atomics bumped on the request path without locks; the
 * per-series prediction counters live in a fixed table (a mutex guards
 * inserting a series) so label sets stay bounded: only series that produced
 * a prediction appear, and past METRIC_SERIES_MAX they fold into
 * symbol="_other". Unknown symbols never reach it (they fail before a
 * prediction exists). Rendering reads the other modules' stats structs.
 */
#include <stdlib.h>
#include <string.h>

#include "api/http_internal.h"
#include "features/features.h"
#include "inference/inference.h"

#define METRIC_SERIES_MAX 512
#define NBUCKETS 14
static const double buckets[NBUCKETS] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                         0.025,  0.05,    0.1,    0.25,  0.5,    1,     2.5};

enum { CODE_2XX, CODE_400, CODE_401, CODE_404, CODE_413, CODE_414, CODE_429, CODE_4XX, CODE_500,
       CODE_503, CODE_5XX, CODE_COUNT_ };
static const char *code_names[CODE_COUNT_] = {"2xx", "400", "401", "404", "413", "414",
                                              "429", "4xx", "500", "503", "5xx"};

struct series_counter {
    char symbol[24];
    char tf[8];
    _Atomic uint64_t by_direction[3];
};

struct api_metrics {
    _Atomic uint64_t requests[API_METRIC_COUNT_][CODE_COUNT_];
    _Atomic uint64_t latency_bucket[API_METRIC_COUNT_][NBUCKETS];
    _Atomic uint64_t latency_count[API_METRIC_COUNT_];
    _Atomic uint64_t latency_sum_us[API_METRIC_COUNT_];
    _Atomic uint64_t rate_limited;
    pthread_mutex_t series_lock; /* guards inserting into series */
    _Atomic size_t nseries;
    struct series_counter series[METRIC_SERIES_MAX + 1]; /* the last is "_other" */
};

static int code_index(int status)
{
    switch (status) {
    case 400: return CODE_400;
    case 401: return CODE_401;
    case 404: return CODE_404;
    case 413: return CODE_413;
    case 414: return CODE_414;
    case 429: return CODE_429;
    case 500: return CODE_500;
    case 503: return CODE_503;
    }
    if (status >= 200 && status < 400)
        return CODE_2XX;
    if (status >= 400 && status < 500)
        return CODE_4XX;
    return CODE_5XX;
}

void api_metrics_init(struct api_http *h)
{
    h->metrics = calloc(1, sizeof *h->metrics);
    if (h->metrics) {
        pthread_mutex_init(&h->metrics->series_lock, NULL);
        snprintf(h->metrics->series[METRIC_SERIES_MAX].symbol, 24, "_other");
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
    atomic_fetch_add_explicit(&m->requests[metric][code_index(status)], 1,
                              memory_order_relaxed);
    if (status == 429)
        atomic_fetch_add_explicit(&m->rate_limited, 1, memory_order_relaxed);
    for (int i = 0; i < NBUCKETS; i++)
        if (seconds <= buckets[i]) {
            atomic_fetch_add_explicit(&m->latency_bucket[metric][i], 1, memory_order_relaxed);
            break;
        }
    atomic_fetch_add_explicit(&m->latency_count[metric], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->latency_sum_us[metric], (uint64_t)(seconds * 1e6),
                              memory_order_relaxed);
}

void api_metrics_prediction(struct api_http *h, const char *symbol, const char *tf,
                            int direction)
{
    struct api_metrics *m = h->metrics;
    if (!m || direction < 0 || direction > 2)
        return;
    size_t n = atomic_load(&m->nseries);
    for (size_t i = 0; i < n; i++)
        if (strcmp(m->series[i].symbol, symbol) == 0 && strcmp(m->series[i].tf, tf) == 0) {
            atomic_fetch_add_explicit(&m->series[i].by_direction[direction], 1,
                                      memory_order_relaxed);
            return;
        }
    pthread_mutex_lock(&m->series_lock);
    n = atomic_load(&m->nseries);
    size_t i = 0;
    while (i < n && !(strcmp(m->series[i].symbol, symbol) == 0 && strcmp(m->series[i].tf, tf) == 0))
        i++;
    if (i == n) {
        if (n < METRIC_SERIES_MAX) {
            snprintf(m->series[n].symbol, sizeof m->series[n].symbol, "%s", symbol);
            snprintf(m->series[n].tf, sizeof m->series[n].tf, "%s", tf);
            atomic_store(&m->nseries, n + 1); /* publish after the names are written */
        } else {
            i = METRIC_SERIES_MAX;
        }
    }
    atomic_fetch_add_explicit(&m->series[i].by_direction[direction], 1, memory_order_relaxed);
    pthread_mutex_unlock(&m->series_lock);
}

static void header(util_buf *b, const char *name, const char *type, const char *help)
{
    util_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void api_metrics_render(struct api_http *h, util_buf *b)
{
    struct api_metrics *m = h->metrics;
    if (!m)
        return;
    header(b, "predictd_http_requests_total", "counter", "HTTP requests by route and status.");
    for (int r = 0; r < API_METRIC_COUNT_; r++)
        for (int c = 0; c < CODE_COUNT_; c++) {
            uint64_t v = atomic_load(&m->requests[r][c]);
            if (v)
                util_buf_printf(b, "predictd_http_requests_total{route=\"%s\",code=\"%s\"} %llu\n",
                                api_metric_route_name(r), code_names[c], (unsigned long long)v);
        }
    header(b, "predictd_http_request_duration_seconds", "histogram",
           "HTTP request latency by route.");
    for (int r = 0; r < API_METRIC_COUNT_; r++) {
        uint64_t count = atomic_load(&m->latency_count[r]);
        if (!count)
            continue;
        uint64_t cum = 0;
        for (int i = 0; i < NBUCKETS; i++) {
            cum += atomic_load(&m->latency_bucket[r][i]);
            util_buf_printf(b,
                            "predictd_http_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} "
                            "%llu\n",
                            api_metric_route_name(r), buckets[i], (unsigned long long)cum);
        }
        util_buf_printf(b,
                        "predictd_http_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} "
                        "%llu\n",
                        api_metric_route_name(r), (unsigned long long)count);
        util_buf_printf(b, "predictd_http_request_duration_seconds_sum{route=\"%s\"} %.6f\n",
                        api_metric_route_name(r),
                        (double)atomic_load(&m->latency_sum_us[r]) / 1e6);
        util_buf_printf(b, "predictd_http_request_duration_seconds_count{route=\"%s\"} %llu\n",
                        api_metric_route_name(r), (unsigned long long)count);
    }
    header(b, "predictd_http_in_flight_requests", "gauge", "Requests being handled now.");
    util_buf_printf(b, "predictd_http_in_flight_requests %ld\n", atomic_load(&h->in_flight));
    header(b, "predictd_rate_limited_requests_total", "counter",
           "Requests refused by the per-address rate limit.");
    util_buf_printf(b, "predictd_rate_limited_requests_total %llu\n",
                    (unsigned long long)atomic_load(&m->rate_limited));

    header(b, "predictd_predictions_total", "counter",
           "Predictions served by symbol, timeframe and direction.");
    size_t n = atomic_load(&m->nseries);
    for (size_t i = 0; i <= METRIC_SERIES_MAX; i++) {
        if (i == n && i < METRIC_SERIES_MAX)
            i = METRIC_SERIES_MAX;
        for (int d = 0; d < 3; d++) {
            uint64_t v = atomic_load(&m->series[i].by_direction[d]);
            if (v)
                util_buf_printf(b,
                                "predictd_predictions_total{symbol=\"%s\",timeframe=\"%s\","
                                "direction=\"%s\"} %llu\n",
                                m->series[i].symbol, m->series[i].tf,
                                inference_class_name((enum inference_class)d),
                                (unsigned long long)v);
        }
    }

    api_cache_stats cs;
    api_cache_stats_get(h->ctx, &cs);
    header(b, "predictd_cache_requests_total", "counter",
           "Prediction cache lookups by layer and result.");
    util_buf_printf(b,
                    "predictd_cache_requests_total{layer=\"process\",result=\"hit\"} %llu\n"
                    "predictd_cache_requests_total{layer=\"process\",result=\"miss\"} %llu\n"
                    "predictd_cache_requests_total{layer=\"redis\",result=\"hit\"} %llu\n"
                    "predictd_cache_requests_total{layer=\"redis\",result=\"miss\"} %llu\n",
                    (unsigned long long)cs.process_hits, (unsigned long long)cs.process_misses,
                    (unsigned long long)cs.redis_hits, (unsigned long long)cs.redis_misses);
    header(b, "predictd_predictions_computed_total", "counter",
           "Predictions computed from candles (not served from a cache).");
    util_buf_printf(b, "predictd_predictions_computed_total %llu\n",
                    (unsigned long long)cs.computed);

    features_stats fst;
    features_stats_get(&fst);
    header(b, "predictd_db_queries_total", "counter", "PostgreSQL queries.");
    util_buf_printf(b, "predictd_db_queries_total %llu\n", (unsigned long long)fst.db_queries);
    header(b, "predictd_db_errors_total", "counter", "PostgreSQL errors.");
    util_buf_printf(b, "predictd_db_errors_total %llu\n", (unsigned long long)fst.db_errors);
    header(b, "predictd_db_reconnects_total", "counter", "PostgreSQL reconnections.");
    util_buf_printf(b, "predictd_db_reconnects_total %llu\n",
                    (unsigned long long)fst.db_reconnects);
    header(b, "predictd_redis_candle_cache_total", "counter",
           "Candle window lookups in Redis by result.");
    util_buf_printf(b,
                    "predictd_redis_candle_cache_total{result=\"hit\"} %llu\n"
                    "predictd_redis_candle_cache_total{result=\"miss\"} %llu\n",
                    (unsigned long long)fst.redis_hits, (unsigned long long)fst.redis_misses);
    header(b, "predictd_redis_errors_total", "counter", "Redis errors (each one bypassed).");
    util_buf_printf(b, "predictd_redis_errors_total %llu\n",
                    (unsigned long long)fst.redis_errors);

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

    registry_series_info *s = NULL;
    size_t ns = 0;
    if (registry_list(reg, &s, &ns) == 0) {
        header(b, "predictd_model_info", "gauge",
               "The version serving each series (value 1), with its label.");
        for (size_t i = 0; i < ns; i++)
            for (size_t k = 0; k < s[i].n_versions; k++) {
                const registry_version_info *v = &s[i].versions[k];
                if (!v->serving && !v->label[0])
                    continue;
                util_buf_printf(b,
                                "predictd_model_info{symbol=\"%s\",timeframe=\"%s\",version=\"%u\","
                                "label=\"%s\",serving=\"%s\"} 1\n",
                                s[i].symbol, s[i].timeframe, v->version,
                                v->label[0] ? v->label : "none", v->serving ? "true" : "false");
            }
        registry_list_free(s, ns);
    }

    header(b, "predictd_uptime_seconds", "gauge", "Seconds since the service started.");
    util_buf_printf(b, "predictd_uptime_seconds %lld\n", (long long)(util_now() - h->started_at));
    header(b, "predictd_build_info", "gauge", "Build version and commit (value 1).");
    util_buf_printf(b, "predictd_build_info{version=\"%s\",commit=\"%s\"} 1\n", PREDICTD_VERSION,
                    PREDICTD_COMMIT);
}
