/*
 * ratelimit.c: a token bucket per client address (PREDICTD_RATE_LIMIT
 * tokens a second, burst twice that). Buckets live in a fixed open-addressed
 * table; when it is full the least recently used bucket is reused, so memory
 * is bounded whatever the number of clients. One mutex guards the table: a
 * lookup is a hash and a few comparisons. Off (rate 0) costs nothing.
 */
#include <stdlib.h>
#include <string.h>

#include "api/http_internal.h"

#define RATE_SLOTS 4096

struct bucket {
    char client[64];
    double tokens;
    double last; /* seconds, monotonic */
};

struct api_rate {
    pthread_mutex_t lock; /* guards slots */
    double rate, burst;
    struct bucket slots[RATE_SLOTS];
};

void api_rate_init(struct api_http *h)
{
    if (h->ctx->opt.rate_limit <= 0)
        return;
    h->rate = calloc(1, sizeof *h->rate);
    if (!h->rate)
        return;
    pthread_mutex_init(&h->rate->lock, NULL);
    h->rate->rate = h->ctx->opt.rate_limit;
    h->rate->burst = 2.0 * h->ctx->opt.rate_limit;
}

void api_rate_cleanup(struct api_http *h)
{
    if (!h->rate)
        return;
    pthread_mutex_destroy(&h->rate->lock);
    free(h->rate);
    h->rate = NULL;
}

bool api_rate_allow(struct api_http *h, const char *client, int64_t now)
{
    (void)now;
    struct api_rate *r = h->rate;
    if (!r)
        return true;
    double t = (double)util_mono_ns() / 1e9;
    uint32_t hash = 2166136261u;
    for (const char *p = client; *p; p++)
        hash = (hash ^ (uint8_t)*p) * 16777619u;
    pthread_mutex_lock(&r->lock);
    struct bucket *b = NULL, *oldest = NULL;
    for (int probe = 0; probe < 8; probe++) {
        struct bucket *s = &r->slots[(hash + (uint32_t)probe) % RATE_SLOTS];
        if (strcmp(s->client, client) == 0) {
            b = s;
            break;
        }
        if (!oldest || s->last < oldest->last)
            oldest = s;
    }
    if (!b) {
        b = oldest;
        snprintf(b->client, sizeof b->client, "%s", client);
        b->tokens = r->burst;
        b->last = t;
    }
    b->tokens += (t - b->last) * r->rate;
    if (b->tokens > r->burst)
        b->tokens = r->burst;
    b->last = t;
    bool ok = b->tokens >= 1.0;
    if (ok)
        b->tokens -= 1.0;
    pthread_mutex_unlock(&r->lock);
    return ok;
}
