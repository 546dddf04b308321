/*
 * rest.c: GET requests to an exchange's REST API over libcurl, with the
 * rules a public market-data client must keep (see net_internal.h):
 * pacing by the X-MBX-USED-WEIGHT-1M header, waiting out 429 and 418
 * answers for their Retry-After, retrying network errors and 5xx answers
 * with exponential back-off and jitter. It knows no endpoint: binance.c
 * builds the paths and parses the bodies.
 *
 * Threading: a client (one CURL easy handle, reused for keep-alive)
 * belongs to one thread; its counters are read by others through relaxed
 * atomics.
 */
#define _GNU_SOURCE
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>

#include "feed/net_internal.h"

#define MOD "feed"
#define BODY_MAX (16u << 20)

struct feed__rest {
    char *base;
    CURL *curl;
    const atomic_bool *stop;
    int max_attempts;
    int64_t weight_limit;
    util_rng rng; /* jitter */
    /* counters, read by other threads */
    _Atomic uint64_t requests, rate_limited, errors;
    _Atomic int64_t used_weight;
    /* per request, from the headers */
    long retry_after; /* seconds, -1: none */
};

bool feed__sleep_ms(int64_t ms, const atomic_bool *stop)
{
    while (ms > 0) {
        if (stop && atomic_load(stop))
            return true;
        int64_t slice = ms > 100 ? 100 : ms;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)slice * 1000000L};
        nanosleep(&ts, NULL);
        ms -= slice;
    }
    return stop && atomic_load(stop);
}

int feed__rest_new(const char *base, const atomic_bool *stop, int max_attempts, feed__rest **out,
                   char *why, size_t whylen)
{
    feed__url u;
    int rc = feed__url_parse(base, &u, why, whylen);
    if (rc)
        return rc;
    if (strncasecmp(base, "http", 4) != 0) {
        snprintf(why, whylen, "a REST URL must start with http:// or https://");
        return PD_EINVAL;
    }
    if ((rc = feed__net_global_init()) != 0) {
        snprintf(why, whylen, "libcurl initialisation failed");
        return rc;
    }
    feed__rest *r = calloc(1, sizeof *r);
    if (!r || !(r->base = strdup(base)) || !(r->curl = curl_easy_init())) {
        if (r) {
            free(r->base);
            free(r);
        }
        snprintf(why, whylen, "out of memory");
        return PD_ENOMEM;
    }
    size_t bl = strlen(r->base);
    while (bl > 0 && r->base[bl - 1] == '/')
        r->base[--bl] = '\0';
    r->stop = stop;
    r->max_attempts = max_attempts < 1 ? 1 : max_attempts;
    r->weight_limit = 6000;
    atomic_store(&r->used_weight, -1);
    util_rng_seed(&r->rng, util_mono_ns() ^ (uint64_t)(uintptr_t)r);
    *out = r;
    return 0;
}

void feed__rest_free(feed__rest *r)
{
    if (!r)
        return;
    curl_easy_cleanup(r->curl);
    free(r->base);
    free(r);
}

void feed__rest_set_weight_limit(feed__rest *r, int64_t limit)
{
    if (r && limit > 0)
        r->weight_limit = limit;
}

void feed__rest_stats_get(const feed__rest *r, feed__rest_stats *out)
{
    memset(out, 0, sizeof *out);
    out->used_weight = -1;
    if (!r)
        return;
    out->requests = atomic_load_explicit(&r->requests, memory_order_relaxed);
    out->rate_limited = atomic_load_explicit(&r->rate_limited, memory_order_relaxed);
    out->errors = atomic_load_explicit(&r->errors, memory_order_relaxed);
    out->used_weight = atomic_load_explicit(&r->used_weight, memory_order_relaxed);
}

struct body_ctx {
    util_buf *b;
    size_t start;
    bool too_big;
};

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    struct body_ctx *c = arg;
    size_t k = size * n;
    if (c->b->len - c->start + k > BODY_MAX) {
        c->too_big = true;
        return 0;
    }
    util_buf_append(c->b, p, k);
    return util_buf_ok(c->b) ? k : 0;
}

static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
    feed__rest *r = arg;
    size_t k = size * n;
    char line[256];
    size_t l = k < sizeof line - 1 ? k : sizeof line - 1;
    memcpy(line, p, l);
    line[l] = '\0';
    long v;
    if (strncasecmp(line, "x-mbx-used-weight-1m:", 21) == 0 && sscanf(line + 21, "%ld", &v) == 1)
        atomic_store_explicit(&r->used_weight, v, memory_order_relaxed);
    else if (strncasecmp(line, "retry-after:", 12) == 0 && sscanf(line + 12, "%ld", &v) == 1)
        r->retry_after = v < 0 ? 0 : v;
    return k;
}

/* Binance's error body {"code":-1121,"msg":"Invalid symbol."}, or the start
 * of the body. */
static void server_message(const util_buf *b, size_t start, long status, char *why, size_t whylen)
{
    const char *text = b->data ? b->data + start : "";
    size_t len = b->len - start;
    json_t *j = json_loadb(text, len, 0, NULL);
    const char *msg = j ? json_string_value(json_object_get(j, "msg")) : NULL;
    json_t *code = j ? json_object_get(j, "code") : NULL;
    if (msg)
        snprintf(why, whylen, "HTTP %ld: %s (code %lld)", status, msg,
                 (long long)json_integer_value(code));
    else
        snprintf(why, whylen, "HTTP %ld: %.120s", status, len ? text : "(empty body)");
    for (char *p = why; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    json_decref(j);
}

/* Waits for the next minute of the weight window when the last answer said
 * we are near the limit. */
static int pace(feed__rest *r)
{
    int64_t used = atomic_load_explicit(&r->used_weight, memory_order_relaxed);
    if (used < 0 || used * 10 < r->weight_limit * 9)
        return 0;
    int64_t ms = 60000 - (int64_t)(util_now_precise() * 1000) % 60000 + 250;
    LOG_WARN(MOD, "REST weight %lld of %lld used this minute: waiting %lld ms", (long long)used,
             (long long)r->weight_limit, (long long)ms);
    atomic_store_explicit(&r->used_weight, 0, memory_order_relaxed);
    return feed__sleep_ms(ms, r->stop) ? PD_ECANCELED : 0;
}

int feed__rest_get(feed__rest *r, const char *path_query, util_buf *body, char *why, size_t whylen)
{
    char url[2048];
    int n = snprintf(url, sizeof url, "%s%s", r->base, path_query);
    if (n < 0 || (size_t)n >= sizeof url) {
        snprintf(why, whylen, "URL too long");
        return PD_EINVAL;
    }
    int64_t backoff_ms = 1000;
    for (int attempt = 1;; attempt++) {
        int rc = pace(r);
        if (rc)
            return rc;
        size_t start = body->len;
        struct body_ctx bc = {.b = body, .start = start};
        r->retry_after = -1;
        curl_easy_reset(r->curl);
        curl_easy_setopt(r->curl, CURLOPT_URL, url);
        curl_easy_setopt(r->curl, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(r->curl, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
        curl_easy_setopt(r->curl, CURLOPT_TIMEOUT_MS, 30000L);
        curl_easy_setopt(r->curl, CURLOPT_ACCEPT_ENCODING, "");
        curl_easy_setopt(r->curl, CURLOPT_USERAGENT, "predictd/" PREDICTD_VERSION);
        curl_easy_setopt(r->curl, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(r->curl, CURLOPT_WRITEDATA, &bc);
        curl_easy_setopt(r->curl, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(r->curl, CURLOPT_HEADERDATA, r);
        curl_easy_setopt(r->curl, CURLOPT_PROTOCOLS_STR, "http,https");
        atomic_fetch_add_explicit(&r->requests, 1, memory_order_relaxed);
        CURLcode cc = curl_easy_perform(r->curl);
        long status = 0;
        curl_easy_getinfo(r->curl, CURLINFO_RESPONSE_CODE, &status);
        int64_t wait_ms;
        if (cc == CURLE_OK && status >= 200 && status < 300)
            return 0;
        if (bc.too_big) {
            snprintf(why, whylen, "response over %u bytes", BODY_MAX);
            return PD_ETOOBIG;
        }
        if (cc == CURLE_OK && (status == 429 || status == 418)) {
            atomic_fetch_add_explicit(&r->rate_limited, 1, memory_order_relaxed);
            long ra = r->retry_after >= 0 ? r->retry_after : 60;
            server_message(body, start, status, why, whylen);
            body->len = start;
            if (ra > FEED__REST_MAX_WAIT_S) {
                snprintf(why + strlen(why), whylen - strlen(why), "; Retry-After %ld s", ra);
                return PD_ERATE;
            }
            LOG_WARN(MOD, "REST %s: %s; waiting %ld s (Retry-After)", path_query, why, ra);
            wait_ms = ra * 1000 + 100;
            attempt--; /* a rate limit is waited out, not counted as a failure */
        } else if (cc == CURLE_OK && status < 500) {
            server_message(body, start, status, why, whylen);
            body->len = start;
            return status == 400 ? PD_EINVAL : status == 404 ? PD_ENOTFOUND : PD_EIO;
        } else {
            atomic_fetch_add_explicit(&r->errors, 1, memory_order_relaxed);
            if (cc != CURLE_OK)
                snprintf(why, whylen, "%s", curl_easy_strerror(cc));
            else
                server_message(body, start, status, why, whylen);
            body->len = start;
            if (attempt >= r->max_attempts)
                return PD_EIO;
            wait_ms = backoff_ms / 2 + (int64_t)(util_rng_uniform(&r->rng) * (double)backoff_ms);
            LOG_WARN(MOD, "REST %s failed (%s); try %d of %d in %lld ms", path_query, why,
                     attempt + 1, r->max_attempts, (long long)wait_ms);
            backoff_ms = backoff_ms * 2 > 30000 ? 30000 : backoff_ms * 2;
        }
        if (feed__sleep_ms(wait_ms, r->stop))
            return PD_ECANCELED;
    }
}
