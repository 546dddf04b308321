/*
 * ratelimit.c: a token bucket per client address: PREDICTD_RATE_LIMIT
 * tokens a second, PREDICTD_RATE_BURST tokens at most (default twice the
 * rate). A refused request is told when the next token is due (Retry-After).
 *
 * Buckets live in a fixed open-addressed table probed a few slots deep; when
 * those slots are all taken the least recently used one is reused, so
 * memory is bounded whatever the number of clients (a reused bucket starts
 * full: an attacker cycling through addresses gains at most a burst each).
 * Addresses are those of the TCP peer, or the forwarded client's when the
 * peer is a trusted proxy (forwarded.c): behind a gateway that is not
 * trusted every client shares the gateway's bucket, which is why the limit
 * is off by default.
 *
 * Threading: one mutex guards the table; a lookup is a hash and a few
 * comparisons. Off (rate 0) allocates nothing and takes no lock.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "api/http_internal.h"

#define RATE_SLOTS 4096
#define RATE_PROBES 8

struct bucket {
    char client[64];
    double tokens;
    double last; /* seconds, monotonic; 0: empty slot */
};

struct api_rate {
    pthread_mutex_t lock; /* guards slots */
    double rate, burst;
    struct bucket slots[RATE_SLOTS];
};

void api_rate_init(struct api_http *h)
{
    const api_options *o = &h->ctx->opt;
    if (o->rate_limit <= 0)
        return;
    h->rate = calloc(1, sizeof *h->rate);
    if (!h->rate) {
        LOG_ERROR("http", "out of memory: the rate limit is off");
        return;
    }
    pthread_mutex_init(&h->rate->lock, NULL);
    h->rate->rate = o->rate_limit;
    h->rate->burst = o->rate_burst > 0 ? o->rate_burst : 2.0 * o->rate_limit;
}

void api_rate_cleanup(struct api_http *h)
{
    if (!h->rate)
        return;
    pthread_mutex_destroy(&h->rate->lock);
    free(h->rate);
    h->rate = NULL;
}

bool api_rate_take(struct api_http *h, const char *client, int *retry_after_s)
{
    struct api_rate *r = h->rate;
    if (!r)
        return true;
    /* +1: a zero "last" marks an empty slot */
    double t = (double)util_mono_ns() / 1e9 + 1.0;
    uint32_t hash = util_fnv1a(UTIL_FNV1A_INIT, client);
    pthread_mutex_lock(&r->lock);
    struct bucket *b = NULL, *oldest = NULL;
    for (uint32_t probe = 0; probe < RATE_PROBES; probe++) {
        struct bucket *s = &r->slots[(hash + probe) % RATE_SLOTS];
        if (s->last > 0 && strcmp(s->client, client) == 0) {
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
    double wait = ok ? 0 : (1.0 - b->tokens) / r->rate;
    pthread_mutex_unlock(&r->lock);
    if (!ok)
        *retry_after_s = wait <= 1.0 ? 1 : (int)ceil(wait);
    return ok;
}

