/*
 * loop: the inference loop. A background thread LISTENs on predictd_candles
 * and, for each notified series, computes the prediction at once, replaces
 * the cached one (process and Redis), records it in the ledger and
 * publishes it (streams and Redis PUBLISH predictd:predictions). It also
 * resolves the ledger's open predictions and keeps the live accuracy of
 * every model version current. See server/loop.c.
 */
#ifndef PREDICTD_SERVER_LOOP_H
#define PREDICTD_SERVER_LOOP_H

#include "api/api.h"
#include "server/config.h"

typedef struct server_loop server_loop;

/*
 * Starts the loop's thread over ctx (which must outlive the loop) with the
 * configuration's database and Redis URLs, and lends ctx a ledger handle
 * for the performance and history routes. The thread connects by itself
 * (and again after losing the database), so a database that is down at
 * start is not an error. Returns 0 and the loop, PD_EINVAL (no or a
 * malformed database URL), PD_ENOMEM, or PD_EIO (no thread).
 */
int server_loop_start(api_context *ctx, const server_config *cfg, server_loop **out);

/* Stops and joins the thread (promptly: it never waits longer than one
 * database statement), takes the ledger back from ctx and frees the loop.
 * Call after the HTTP service has stopped. NULL is a no-op. */
void server_loop_stop(server_loop *loop);

/* The loop's state for /health/status: "listening", "reconnecting" or
 * "stopped", the time of the last prediction it made, how many it made, and
 * the last error ("" when none). Thread-safe. */
void server_loop_status(server_loop *loop, api_job_status *out);

#endif
