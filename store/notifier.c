/*
 * notifier.c: NOTIFY from any thread, for the replicas that share one
 * database to tell each other that something changed (a series of the
 * model repository: predictd_models 'SYMBOL:TF'). The listening side is
 * notify.c's store_listener.
 *
 * DESIGN: one dedicated connection, a store__pg_link (made on first use,
 * again once after a loss), so a NOTIFY never waits behind a request's
 * query on a per-thread connection. pg_notify($1, $2) takes the channel
 * and payload as parameters: nothing is spliced into SQL.
 *
 * THREADING: thread-safe (the link's mutex).
 */
#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>

#include "store/pg_internal.h"
#include "store/store.h"
#include "util/util.h"

#define MOD "notify"

struct store_notifier {
    store__pg_link link;
};

int store_notifier_open(const char *database_url, store_notifier **out)
{
    if (!out)
        return PD_EINVAL;
    store_notifier *n = calloc(1, sizeof *n);
    if (!n)
        return PD_ENOMEM;
    int rc = store__pg_link_init(&n->link, database_url, MOD, "predictd-notify",
                                 STORE__PG_KEEPALIVE_DEFAULT);
    if (rc) {
        free(n);
        return rc;
    }
    *out = n;
    return 0;
}

struct notify_arg {
    const char *channel, *payload;
};

static int op_notify(PGconn *c, void *arg)
{
    const struct notify_arg *a = arg;
    const char *vals[] = {a->channel, a->payload};
    return store__pg_exec(MOD, c, "NOTIFY", "SELECT pg_notify($1, $2)", 2, vals, PGRES_TUPLES_OK, 0,
                          NULL);
}

int store_notifier_send(store_notifier *n, const char *channel, const char *payload)
{
    if (!n || !channel || !*channel || !payload || strlen(payload) >= 8000)
        return PD_EINVAL;
    struct notify_arg a = {channel, payload};
    return store__pg_link_run(&n->link, op_notify, &a);
}

void store_notifier_close(store_notifier *n)
{
    if (!n)
        return;
    store__pg_link_cleanup(&n->link);
    free(n);
}
