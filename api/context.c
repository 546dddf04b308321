/*
 * context.c: the api module's context (its options, the prediction service
 * it serves, the stream hub) and the error envelope every route answers
 * with.
 *
 * THREADING: made before the HTTP threads start and freed after they stop;
 * read-only in between.
 */
#include <stdlib.h>

#include "api/api_internal.h"
#include "api/http_internal.h"

int api_context_new(const api_options *opt, predict_service *svc, api_context **out)
{
    api_context *ctx = calloc(1, sizeof *ctx);
    if (!ctx)
        return PD_ENOMEM;
    ctx->opt = *opt;
    ctx->svc = svc;
    if (api_hub_new(&ctx->hub) != 0) {
        free(ctx);
        return PD_ENOMEM;
    }
    *out = ctx;
    return 0;
}

void api_context_free(api_context *ctx)
{
    if (!ctx)
        return;
    api_hub_free(ctx->hub);
    free(ctx);
}

registry *api_context_registry(api_context *ctx)
{
    return predict_registry(ctx->svc);
}

void api_render_error(util_buf *b, int err, const char *message)
{
    util_buf_puts(b, "{\"status\":\"error\",\"error\":{\"code\":");
    util_json_str(b, util_err_code(err));
    util_buf_puts(b, ",\"message\":");
    util_json_str(b, message && *message ? message : util_strerror(err));
    util_buf_puts(b, "}}");
}

void api_success_open(util_buf *b)
{
    util_buf_puts(b, "{\"status\":\"success\"");
}

void api_success_begin(util_buf *b, int64_t now)
{
    api_success_open(b);
    util_buf_puts(b, ",\"timestamp\":");
    api_timestamp(b, now);
}
