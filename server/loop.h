/*
 * loop: the inference loop. A background thread LISTENs on
 * predictd_candles and, for each notified series, computes the prediction
 * at once, replaces the cached one and records it in the ledger.
 */
#ifndef PREDICTD_SERVER_LOOP_H
#define PREDICTD_SERVER_LOOP_H

#include "api/api.h"
#include "server/config.h"

typedef struct server_loop server_loop;

/* Starts the loop's threads. Returns 0 and the loop, or a PD_* code. */
int server_loop_start(api_context *ctx, const server_config *cfg, server_loop **out);
/* Stops and joins the threads and frees the loop. NULL is a no-op. */
void server_loop_stop(server_loop *loop);

#endif
