/*
 * feedstate.c: the market-data feed's state as this process last set it,
 * for /health/status and /metrics. The feed (feed/) writes it, the API
 * reads it; neither depends on the other, both depend on store/.
 *
 * It does not reach the database: a feed running in another process
 * (`predictd ingest`) is not seen here.
 *
 * THREADING: one mutex guards the record; set and get copy it whole.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "store/store.h"
#include "util/util.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static store_feed_status status; /* lock */
static bool status_set;          /* lock */
static atomic_bool demo;         /* the feed is the demo replay: read per answer, no lock */

void store_feed_status_set(const store_feed_status *s)
{
    pthread_mutex_lock(&lock);
    if (s) {
        status = *s;
        status.feed[sizeof status.feed - 1] = 0;
        status.state[sizeof status.state - 1] = 0;
        status.source[sizeof status.source - 1] = 0;
    }
    status_set = s != NULL;
    atomic_store_explicit(&demo, s && !strcmp(s->feed, "demo-replay"), memory_order_relaxed);
    pthread_mutex_unlock(&lock);
}

int store_feed_status_get(store_feed_status *out)
{
    if (!out)
        return PD_EINVAL;
    pthread_mutex_lock(&lock);
    bool have = status_set;
    if (have)
        *out = status;
    pthread_mutex_unlock(&lock);
    return have ? 0 : PD_ENOTFOUND;
}

bool store_feed_demo(void)
{
    return atomic_load_explicit(&demo, memory_order_relaxed);
}
