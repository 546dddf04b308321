/*
 * loop.c: placeholder until the inference loop lands (issue 7): starting it
 * reports that predictions are only made on request.
 */
#include "server/loop.h"

int server_loop_start(api_context *ctx, const server_config *cfg, server_loop **out)
{
    (void)ctx;
    (void)cfg;
    *out = NULL;
    return PD_ENOTREADY;
}

void server_loop_stop(server_loop *loop)
{
    (void)loop;
}
