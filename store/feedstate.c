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
#include <string.h>

#include "store/store.h"
#include "util/util.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static store_feed_status status; /* lock */
static bool status_set;          /* lock */

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
