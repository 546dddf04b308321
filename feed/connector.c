/*
 * connector.c: the table of connectors and the runner. PREDICTD_FEED is
 * "name[:args]"; the name picks a constructor here, args go to it. Adding
 * an exchange is one constructor in its own file and one row below.
 *
 * THREADING: feed_connector_new and the runner functions are called by one
 * thread (serve's or ingest's main); the connector's threads are its own.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "feed/feed.h"
#include "util/util.h"

#define MOD "feed"

static const struct {
    const char *name;
    feed_connector_new_fn make;
} table[] = {
    {"demo", feed_demo_new},
    {"binance", feed_binance_new},
};

int feed_connector_new(const char *spec, feed_connector **out, char *why, size_t whylen)
{
    if (!spec || !out)
        return PD_EINVAL;
    const char *colon = strchr(spec, ':');
    size_t nlen = colon ? (size_t)(colon - spec) : strlen(spec);
    const char *args = colon ? colon + 1 : "";
    for (size_t i = 0; i < sizeof table / sizeof *table; i++) {
        if (strlen(table[i].name) != nlen || strncmp(spec, table[i].name, nlen) != 0)
            continue;
        int rc = table[i].make(args, out);
        if (rc && why && whylen)
            snprintf(why, whylen, "feed '%.*s': %s", (int)nlen, spec, util_strerror(rc));
        return rc;
    }
    if (why && whylen) {
        int k = snprintf(why, whylen, "unknown feed '%.*s' (known:", (int)(nlen > 32 ? 32 : nlen),
                         spec);
        for (size_t i = 0; i < sizeof table / sizeof *table && k > 0 && (size_t)k < whylen; i++)
            k += snprintf(why + k, whylen - (size_t)k, " %s", table[i].name);
        if (k > 0 && (size_t)k < whylen)
            snprintf(why + k, whylen - (size_t)k, ")");
    }
    return PD_EINVAL;
}

void feed_connector_free(feed_connector *c)
{
    if (!c)
        return;
    c->stop(c);
    c->free(c);
}

struct feed_runner {
    feed_connector *conn;
    feed_sink *sink;
};

int feed_runner_start(const char *spec, feed_runner **out, char *why, size_t whylen)
{
    if (!spec || !out)
        return PD_EINVAL;
    feed_runner *r = calloc(1, sizeof *r);
    if (!r)
        return PD_ENOMEM;
    int rc = feed_connector_new(spec, &r->conn, why, whylen);
    if (rc)
        goto fail;
    if ((rc = feed_sink_new(r->conn->name, r->conn->source ? r->conn->source : "", &r->sink)))
        goto fail;
    if ((rc = r->conn->start(r->conn, r->sink))) {
        if (why && whylen)
            snprintf(why, whylen, "feed '%s' did not start: %s", r->conn->name, util_strerror(rc));
        goto fail;
    }
    LOG_INFO(MOD, "feed %s started (%s)", r->conn->name, spec);
    *out = r;
    return 0;
fail:
    feed_connector_free(r->conn);
    feed_sink_free(r->sink);
    free(r);
    return rc;
}

void feed_runner_stop(feed_runner *r)
{
    if (!r)
        return;
    feed_connector_free(r->conn);
    feed_sink_free(r->sink);
    free(r);
}
