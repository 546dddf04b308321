/*
 * routes_training.c: background training jobs over the admin API.
 *
 *   POST   /admin/training        start a job: {"symbols": "BTCUSDT", "timeframe": "15m", ...}
 *   GET    /admin/training        recent jobs, newest first
 *   GET    /admin/training/{id}   one job: state, progress, metrics, error
 *   DELETE /admin/training/{id}   cancel it
 *
 * The body's keys are exactly the parameter names of training_params_set
 * (and of `predictd train`'s flags); values may be strings, numbers,
 * booleans or arrays (joined with commas). Jobs started here publish only
 * when better than the serving version unless the body says
 * "promote_if_better": false. The work runs on the training worker thread,
 * never on a request thread.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "api/bodies_internal.h"
#include "api/http_internal.h"
#include "training/training.h"

static training_jobs *jobs_of(struct api_request *rq)
{
    training_jobs *j = rq->ctx->opt.jobs;
    if (!j)
        api_reply_error(rq, PD_ENOTREADY,
                        "background training is not available (no database configured)");
    return j;
}

static void reply_job(struct api_request *rq, int status, const training_job_info *info)
{
    util_buf b;
    util_buf_init(&b);
    api_success_begin(&b, rq->now);
    util_buf_puts(&b, ",\"job\":");
    training_job_json(info, &b);
    util_buf_puts(&b, "}");
    api_reply_json(rq, status, &b);
    util_buf_cleanup(&b);
}

void api_route_training_start(struct api_request *rq)
{
    training_jobs *jobs = jobs_of(rq);
    if (!jobs)
        return;
    training_params p;
    char why[512] = "";
    int rc =
        api__body_training(rq->req->binary_body, rq->req->binary_body_length, &p, why, sizeof why);
    int64_t id = 0;
    if (rc == 0)
        rc = training_jobs_submit(jobs, &p, &id, why, sizeof why);
    if (rc) {
        api_reply_error(rq, rc, why[0] ? why : NULL);
        return;
    }
    training_job_info info;
    if (training_jobs_get(jobs, id, &info) != 0) {
        api_reply_error(rq, PD_EINTERNAL, "the job vanished after it was queued");
        return;
    }
    LOG_INFO("api", "training job %lld queued for %s %s", (long long)id, info.symbol,
             info.timeframe);
    reply_job(rq, 202, &info);
}

void api_route_training_list(struct api_request *rq)
{
    training_jobs *jobs = jobs_of(rq);
    if (!jobs)
        return;
    training_job_info *list = NULL;
    size_t n = 0;
    int rc = training_jobs_list(jobs, 50, &list, &n);
    if (rc) {
        api_reply_error(rq, rc, NULL);
        return;
    }
    util_buf b;
    util_buf_init(&b);
    api_success_begin(&b, rq->now);
    util_buf_printf(&b, ",\"count\":%zu,\"jobs\":[", n);
    for (size_t i = 0; i < n; i++) {
        if (i)
            util_buf_puts(&b, ",");
        training_job_json(&list[i], &b);
    }
    util_buf_puts(&b, "]}");
    api_reply_json(rq, 200, &b);
    util_buf_cleanup(&b);
    free(list);
}

/* The {id} path parameter as a positive integer; replies 400 otherwise. */
static bool job_id(struct api_request *rq, int64_t *id)
{
    const char *s = api_query(rq, "id");
    char *end = NULL;
    errno = 0;
    long long v = s ? strtoll(s, &end, 10) : 0;
    /* ERANGE: digits past LLONG_MAX, which strtoll would clamp to an id never asked for */
    if (!s || *s < '1' || *s > '9' || *end || errno == ERANGE || v <= 0) {
        api_reply_error(rq, PD_EINVAL, "job id must be a positive integer");
        return false;
    }
    *id = v;
    return true;
}

void api_route_training_get(struct api_request *rq)
{
    training_jobs *jobs = jobs_of(rq);
    int64_t id;
    if (!jobs || !job_id(rq, &id))
        return;
    training_job_info info;
    int rc = training_jobs_get(jobs, id, &info);
    if (rc) {
        api_reply_errorf(rq, rc, "no training job %lld", (long long)id);
        return;
    }
    reply_job(rq, 200, &info);
}

void api_route_training_cancel(struct api_request *rq)
{
    training_jobs *jobs = jobs_of(rq);
    int64_t id;
    if (!jobs || !job_id(rq, &id))
        return;
    int rc = training_jobs_cancel(jobs, id);
    if (rc == PD_ENOTFOUND) {
        api_reply_errorf(rq, rc, "no training job %lld", (long long)id);
        return;
    }
    if (rc == PD_EINVAL) {
        api_reply_errorf(rq, PD_EBUSY, "training job %lld already finished", (long long)id);
        return;
    }
    training_job_info info;
    if (rc || training_jobs_get(jobs, id, &info) != 0) {
        api_reply_error(rq, rc ? rc : PD_EINTERNAL, NULL);
        return;
    }
    LOG_INFO("api", "training job %lld cancel requested", (long long)id);
    reply_job(rq, 200, &info);
}
