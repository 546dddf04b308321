/*
 * cmd_serve.c: `predictd serve`, the HTTP service, and its lifecycle.
 *
 * Threads: the main thread owns start-up, shutdown and signals (it waits
 * in sigwait; every other thread blocks SIGTERM, SIGINT and SIGHUP because
 * they inherit the mask set before any thread starts). The registry's
 * scanner thread loads models; libmicrohttpd's pool threads serve requests.
 *
 * SIGHUP asks the registry for a scan. The first SIGTERM (or SIGINT) turns
 * readiness to 503, stops accepting connections, waits up to
 * PREDICTD_DRAIN_TIMEOUT seconds for the requests already accepted, closes
 * the pools and exits 0. A second one during the drain exits at once.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "api/api.h"
#include "features/features.h"
#include "registry/registry.h"
#include "server/commands.h"
#include "server/loop.h"

static void die_now(int sig)
{
    _exit(128 + sig);
}

int cmd_serve(server_config *cfg, int argc, char **argv)
{
    if (cmd_wants_help(argc, argv) || argc > 1) {
        fprintf(stderr, "usage: predictd serve [options]\n"
                        "Serves the HTTP API in the foreground. Options are the shared ones of "
                        "`predictd --help`.\n");
        return argc > 1 && !cmd_wants_help(argc, argv) ? 2 : 0;
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    int exit_code = 1;
    registry *reg = NULL;
    api_context *ctx = NULL;
    api_http *http = NULL;
    server_loop *loop = NULL;

    if (!cfg->database_url)
        LOG_WARN("server", "PREDICTD_DATABASE_URL is not set: every prediction will answer 503");
    if (features_init(cfg->database_url, cfg->redis_url, cfg->cache) != 0) {
        LOG_ERROR("server", "cannot initialise the candle store");
        goto out;
    }
    if (registry_new(cfg->models_dir, &reg) != 0) {
        LOG_ERROR("server", "cannot open the model repository %s", cfg->models_dir);
        goto out_features;
    }
    if (registry_scan(reg, NULL, NULL) != 0)
        LOG_WARN("server", "model repository %s could not be read; will retry", cfg->models_dir);
    size_t serving = 0, failed = 0;
    registry_counts(reg, &serving, &failed);
    LOG_INFO("server", "%zu series serving, %zu versions failed verification", serving, failed);
    if (registry_start(reg, cfg->reload_interval) != 0) {
        LOG_ERROR("server", "cannot start the model scanner");
        goto out_registry;
    }
    if (!cfg->api_key)
        LOG_WARN("server", "no admin key (PREDICTD_API_KEY or %s): admin routes are disabled",
                 cfg->api_key_file);

    api_options opt = {.listen_host = cfg->listen_host,
                       .listen_port = cfg->listen_port,
                       .threads = cfg->threads,
                       .max_connections = cfg->max_connections,
                       .idle_timeout = cfg->idle_timeout,
                       .cache = cfg->cache,
                       .admin_key = cfg->api_key,
                       .read_key = cfg->read_key,
                       .cors_origins = cfg->cors_origins,
                       .rate_limit = cfg->rate_limit,
                       .stream_max = cfg->stream_max,
                       .access_log = cfg->access_log,
                       .models_dir = cfg->models_dir};
    if (api_context_new(&opt, reg, &ctx) != 0)
        goto out_registry;
    if (api_http_start(ctx, &http) != 0)
        goto out_ctx;
    if (cfg->database_url && server_loop_start(ctx, cfg, &loop) != 0)
        LOG_WARN("server", "the inference loop did not start; predictions are made on request");

    for (;;) {
        int sig = 0;
        if (sigwait(&set, &sig) != 0)
            continue;
        if (sig == SIGHUP) {
            LOG_INFO("server", "SIGHUP: rescanning the model repository");
            registry_request_scan(reg);
            continue;
        }
        LOG_INFO("server", "%s: draining (up to %d s); send it again to exit at once",
                 sig == SIGTERM ? "SIGTERM" : "SIGINT", cfg->drain_timeout);
        break;
    }
    struct sigaction sa = {.sa_handler = die_now};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);

    api_http_stop(http, cfg->drain_timeout);
    server_loop_stop(loop);
    exit_code = 0;
    LOG_INFO("server", "stopped");
out_ctx:
    api_context_free(ctx);
out_registry:
    registry_stop(reg);
    registry_free(reg);
out_features:
    features_shutdown();
out:
    return exit_code;
}
