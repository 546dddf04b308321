/*
 * leader.c: one ingester among the replicas that share a database. The
 * leader thread takes the feed's PostgreSQL advisory lock
 * (STORE_LOCK_KEY_FEED, store_lock_*); while it holds it, it runs the
 * connector of PREDICTD_FEED with its sink; the other processes stand by,
 * trying the lock every LOCK_RETRY_S, and one of them takes over when the
 * holder's session ends (its process died or lost the database). When the
 * holder finds its lock gone (the connection broke), it stops its
 * connector at once and stands by like the others, so two processes never
 * ingest at the same time for longer than one check interval.
 * Without a database there is nothing to share: the connector runs
 * without a lock.
 *
 * It does not know any exchange: connectors come from feed_connector_new.
 *
 * THREADING: the leader thread owns the lock handle and starts, stops and
 * frees connectors; run_lock guards the running connector's pointer so
 * that /metrics and /health/status (request threads) may read it.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "feed/feed.h"
#include "feed/net_internal.h"
#include "store/store.h"
#include "util/util.h"

#define MOD "feed"
#define LOCK_RETRY_S 5

struct feed_leader {
    char *spec;
    char *database_url;
    pthread_t thread;
    atomic_bool stop;
    pthread_mutex_t run_lock;
    feed_connector *conn; /* run_lock (written by the leader thread) */
    feed_sink *sink;      /* run_lock */
    _Atomic bool standby; /* another process holds the lock */
    _Atomic uint64_t takeovers;
    char last_error[256]; /* run_lock */
};

static void leader_error(feed_leader *l, const char *why)
{
    pthread_mutex_lock(&l->run_lock);
    snprintf(l->last_error, sizeof l->last_error, "%s", why);
    pthread_mutex_unlock(&l->run_lock);
}

static int start_feed(feed_leader *l)
{
    char why[256] = "";
    feed_connector *c = NULL;
    feed_sink *s = NULL;
    int rc = feed_connector_new(l->spec, &c, why, sizeof why);
    if (rc == 0)
        rc = feed_sink_new(c->name, c->source ? c->source : "", &s);
    if (rc == 0 && (rc = c->start(c, s)) != 0)
        snprintf(why, sizeof why, "feed '%s' did not start: %s", c->name, util_strerror(rc));
    if (rc) {
        LOG_ERROR(MOD, "%s", why[0] ? why : util_strerror(rc));
        leader_error(l, why[0] ? why : util_strerror(rc));
        feed_connector_free(c);
        feed_sink_free(s);
        return rc;
    }
    pthread_mutex_lock(&l->run_lock);
    l->conn = c;
    l->sink = s;
    pthread_mutex_unlock(&l->run_lock);
    LOG_INFO(MOD, "feed %s ingesting (%s)", c->name, l->spec);
    return 0;
}

static void stop_feed(feed_leader *l)
{
    /* unpublished first: a scrape never reads a connector being stopped */
    pthread_mutex_lock(&l->run_lock);
    feed_connector *c = l->conn;
    feed_sink *s = l->sink;
    l->conn = NULL;
    l->sink = NULL;
    pthread_mutex_unlock(&l->run_lock);
    if (!c)
        return;
    c->stop(c); /* joins its threads: no call on the sink after this */
    c->free(c);
    feed_sink_free(s);
}

static void *run(void *arg)
{
    feed_leader *l = arg;
    store_lock *lk = NULL;
    if (l->database_url && store_lock_open(l->database_url, STORE_LOCK_KEY_FEED, &lk) != 0)
        LOG_WARN(MOD, "the feed's leader lock is unavailable (bad database URL): running alone");
    bool running = false, said_standby = false;
    while (!atomic_load(&l->stop)) {
        bool held = true;
        if (lk) {
            int rc = running ? store_lock_check(lk, &held) : store_lock_try(lk, &held);
            if (rc)
                held = false;
        }
        if (running && !held) {
            LOG_WARN(MOD, "the feed's leader lock is lost: stopping the feed, standing by");
            stop_feed(l);
            running = false;
        }
        if (!running && held) {
            if (start_feed(l) == 0) {
                running = true;
                said_standby = false;
                atomic_store(&l->standby, false);
                atomic_fetch_add(&l->takeovers, 1);
            } else {
                store_lock_release(lk); /* let another process try */
            }
        }
        if (!running && lk && !held) {
            if (!said_standby) {
                store_feed_status st = {.updated_at = util_now()};
                snprintf(st.feed, sizeof st.feed, "%.*s", (int)strcspn(l->spec, ":"), l->spec);
                snprintf(st.state, sizeof st.state, "standby");
                snprintf(st.source, sizeof st.source,
                         "another process holds the feed's leader lock and ingests");
                store_feed_status_set(&st);
            }
            atomic_store(&l->standby, true);
            if (!said_standby)
                LOG_INFO(MOD, "another process ingests the feed: standing by");
            said_standby = true;
        }
        feed__sleep_ms(LOCK_RETRY_S * 1000, &l->stop);
    }
    stop_feed(l);
    if (atomic_load(&l->standby))
        store_feed_status_set(NULL);
    store_lock_close(lk);
    store_thread_cleanup();
    return NULL;
}

int feed_leader_start(const char *spec, const char *database_url, feed_leader **out, char *why,
                      size_t whylen)
{
    if (!spec || !out)
        return PD_EINVAL;
    /* the spec is checked here, so a typo fails the start, not a thread */
    feed_connector *probe = NULL;
    int rc = feed_connector_new(spec, &probe, why, whylen);
    if (rc)
        return rc;
    feed_connector_free(probe);
    feed_leader *l = calloc(1, sizeof *l);
    if (!l || !(l->spec = strdup(spec)) ||
        (database_url && !(l->database_url = strdup(database_url)))) {
        if (l)
            free(l->spec);
        free(l);
        return PD_ENOMEM;
    }
    pthread_mutex_init(&l->run_lock, NULL);
    if (pthread_create(&l->thread, NULL, run, l) != 0) {
        pthread_mutex_destroy(&l->run_lock);
        free(l->spec);
        free(l->database_url);
        free(l);
        return PD_EINTERNAL;
    }
    *out = l;
    return 0;
}

void feed_leader_stop(feed_leader *l)
{
    if (!l)
        return;
    atomic_store(&l->stop, true);
    pthread_join(l->thread, NULL);
    pthread_mutex_destroy(&l->run_lock);
    free(l->spec);
    free(l->database_url);
    free(l);
}

void feed_leader_metrics(feed_leader *l, util_buf *out)
{
    if (!l)
        return;
    util_buf_printf(out,
                    "# HELP predictd_feed_leader 1 while this process holds the feed's leader "
                    "lock and ingests; 0 while it stands by.\n"
                    "# TYPE predictd_feed_leader gauge\npredictd_feed_leader %d\n",
                    atomic_load(&l->standby) ? 0 : 1);
    pthread_mutex_lock(&l->run_lock);
    if (l->conn && l->conn->metrics)
        l->conn->metrics(l->conn, out);
    pthread_mutex_unlock(&l->run_lock);
}

void feed_leader_status_get(feed_leader *l, feed_leader_status *out)
{
    memset(out, 0, sizeof *out);
    if (!l) {
        out->state = "off";
        return;
    }
    pthread_mutex_lock(&l->run_lock);
    feed_connector_status cs = {.state = FEED_STATE_CONNECTING};
    if (l->conn && l->conn->status)
        l->conn->status(l->conn, &cs);
    if (atomic_load(&l->standby))
        out->state = "standby";
    else if (!l->conn)
        out->state = "down";
    else
        out->state = feed_state_name(cs.state);
    out->reconnects = cs.reconnects;
    out->takeovers = atomic_load(&l->takeovers);
    snprintf(out->last_error, sizeof out->last_error, "%s",
             cs.last_error[0] ? cs.last_error : l->last_error);
    pthread_mutex_unlock(&l->run_lock);
}
