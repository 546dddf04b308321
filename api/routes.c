/*
 * routes.c: the route table, in one place, so what the service answers is
 * readable at a glance and matches openapi.yaml line for line.
 * Priorities: fixed paths (0) before paths with a {symbol} parameter (1).
 */
#include "api/http_internal.h"

static const struct api_route_def routes[] = {
    {"GET", "/api/predictions", api_route_predictions, API_ROUTE_READ | API_ROUTE_CORS_PREFLIGHT,
     API_METRIC_PREDICTIONS, 0},
    /* fixed paths under /api/predictions/ come before ":symbol" (2) */
    {"GET", "/api/predictions/stream", api_route_stream_ws, API_ROUTE_READ | API_ROUTE_TOKEN,
     API_METRIC_STREAM, 0},
    {"GET", "/api/predictions/events", api_route_stream_sse,
     API_ROUTE_READ | API_ROUTE_TOKEN | API_ROUTE_CORS_PREFLIGHT, API_METRIC_STREAM, 0},
    {"POST", "/api/stream-token", api_route_stream_token, API_ROUTE_READ, API_METRIC_STREAM, 0},
    {"GET", "/api/candles/:symbol", api_route_candles, API_ROUTE_READ | API_ROUTE_CORS_PREFLIGHT,
     API_METRIC_CANDLES, 1},
    {"GET", "/api/predictions/history", api_route_history,
     API_ROUTE_READ | API_ROUTE_CORS_PREFLIGHT, API_METRIC_PREDICTIONS, 0},
    {"GET", "/api/models/:symbol/:timeframe/performance", api_route_performance,
     API_ROUTE_READ | API_ROUTE_CORS_PREFLIGHT, API_METRIC_MODEL, 1},
    {"GET", "/api/predictions/:symbol/summary", api_route_summary,
     API_ROUTE_READ | API_ROUTE_CORS_PREFLIGHT, API_METRIC_SUMMARY, 1},
    {"GET", "/api/predictions/:symbol", api_route_prediction,
     API_ROUTE_READ | API_ROUTE_CORS_PREFLIGHT, API_METRIC_PREDICTION, 2},
    {"GET", "/api/models", api_route_models, API_ROUTE_READ | API_ROUTE_CORS_PREFLIGHT,
     API_METRIC_MODELS, 0},
    {"GET", "/api/models/:symbol/:timeframe", api_route_model,
     API_ROUTE_READ | API_ROUTE_CORS_PREFLIGHT, API_METRIC_MODEL, 1},
    {"GET", "/admin/models", api_route_admin_models, API_ROUTE_ADMIN, API_METRIC_ADMIN, 0},
    {"POST", "/admin/models/reload", api_route_admin_reload, API_ROUTE_ADMIN, API_METRIC_ADMIN, 0},
    {"POST", "/admin/models/:symbol/:timeframe/pin", api_route_admin_pin, API_ROUTE_ADMIN,
     API_METRIC_ADMIN, 1},
    {"DELETE", "/admin/models/:symbol/:timeframe/pin", api_route_admin_unpin, API_ROUTE_ADMIN,
     API_METRIC_ADMIN, 1},
    {"POST", "/admin/models/:symbol/:timeframe/labels", api_route_admin_label, API_ROUTE_ADMIN,
     API_METRIC_ADMIN, 1},
    {"POST", "/admin/training", api_route_training_start, API_ROUTE_ADMIN, API_METRIC_ADMIN, 0},
    {"GET", "/admin/training", api_route_training_list, API_ROUTE_ADMIN, API_METRIC_ADMIN, 0},
    {"GET", "/admin/training/:id", api_route_training_get, API_ROUTE_ADMIN, API_METRIC_ADMIN, 1},
    {"DELETE", "/admin/training/:id", api_route_training_cancel, API_ROUTE_ADMIN, API_METRIC_ADMIN,
     1},
    {"GET", "/", api_route_dashboard, 0, API_METRIC_OTHER, 0},
    {"GET", "/health", api_route_health, 0, API_METRIC_HEALTH, 0},
    {"GET", "/health/live", api_route_live, 0, API_METRIC_HEALTH, 0},
    {"GET", "/health/ready", api_route_ready, 0, API_METRIC_HEALTH, 0},
    {"GET", "/health/status", api_route_status, 0, API_METRIC_HEALTH, 0},
    {"GET", "/health/metrics", api_route_metrics, 0, API_METRIC_METRICS, 0},
    {"GET", "/metrics", api_route_metrics, 0, API_METRIC_METRICS, 0},
};

const struct api_route_def *api_routes(size_t *n)
{
    *n = sizeof routes / sizeof routes[0];
    return routes;
}

const char *api_metric_route_name(int metric)
{
    static const char *names[API_METRIC_COUNT_] = {
        "predictions", "prediction", "summary", "models",  "model", "admin",
        "health",      "metrics",    "stream",  "candles", "other"};
    return metric >= 0 && metric < API_METRIC_COUNT_ ? names[metric] : "other";
}
