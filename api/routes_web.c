/*
 * routes_web.c: GET / serves the dashboard page (web/index.html, read once
 * at start from PREDICTD_WEB_DIR). The page only calls the public JSON
 * routes and the SSE stream; it needs no key unless a read key is set.
 */
#include "api/http_internal.h"

void api_route_dashboard(struct api_request *rq)
{
    struct api_http *h = rq->http;
    if (!h->dashboard) {
        api_reply_error(rq, PD_ENOTFOUND,
                        "the dashboard is not installed (PREDICTD_WEB_DIR/index.html)");
        return;
    }
    ulfius_set_binary_body_response(rq->resp, 200, h->dashboard, h->dashboard_len);
    u_map_put(rq->resp->map_header, "Content-Type", "text/html; charset=utf-8");
    u_map_put(rq->resp->map_header, "Cache-Control", "no-cache");
    u_map_put(rq->resp->map_header, "Content-Security-Policy",
              "default-src 'self'; script-src 'self' 'unsafe-inline'; "
              "style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'");
    u_map_put(rq->resp->map_header, "X-Content-Type-Options", "nosniff");
    rq->status = 200;
}
