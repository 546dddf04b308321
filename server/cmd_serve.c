/*
 * cmd_serve.c: `predictd serve`, the HTTP service, and its lifecycle.
 *
 * Start-up: settle the admin key (refusing a key file others may read),
 * connect the candle store, load the model repository synchronously (so
 * the first request sees every verified model), start the scanner, the
 * HTTP pool, the inference loop and the market feed (PREDICTD_FEED: a
 * feed_leader thread that runs the connector while this process holds the
 * feed's advisory lock), and register the background jobs that
 * /health/status reports (the feed as job "feed").
 *
 * Replicas: several `predictd serve` on one database cooperate through it.
 * The inference loop holds (or waits for) the leader lock and the training
 * schedule asks it whether this replica leads; a pin, label or published
 * version made here is announced with NOTIFY predictd_models so the other
 * replicas rescan that series at once.
 *
 * Threads: the main thread owns start-up, shutdown and signals (it waits
 * in sigwait; every other thread blocks SIGTERM, SIGINT and SIGHUP because
 * they inherit the mask set before any thread starts). The registry's
 * scanner thread loads models; libmicrohttpd's pool threads serve requests.
 *
 * SIGHUP asks the registry for a scan. The first SIGTERM (or SIGINT) turns
 * readiness to 503, stops accepting connections, waits up to
 * PREDICTD_DRAIN_TIMEOUT seconds for the requests already accepted, stops
 * the inference loop, closes the database and Redis pools and exits 0. A
 * second SIGTERM or SIGINT during the drain exits at once (status 128 +
 * the signal); SIGHUP during the drain is ignored.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "api/api.h"
#include "features/features.h"
#include "feed/feed.h"
#include "store/store.h"
#include "registry/registry.h"
#include "server/commands.h"
#include "predict/predict.h"
#include "training/training.h"

static void die_now(int sig)
{
    _exit(128 + sig);
}

/* What the job probes read; lives in cmd_serve's frame, which outlives the
 * HTTP service (stopped before cmd_serve returns). Written before the jobs
 * are registered, read-only afterwards. */
struct serve_jobs {
    registry *reg;
    int reload_interval;
    bool loop_running;
    predict_loop *loop; /* NULL: not running */
    char loop_error[200];
    training_jobs *training; /* NULL: background training is off */
    char training_error[200];
    predict_loop *_Atomic leader; /* the loop while it runs (leader lock); NULL: none */
    store_notifier *notifier;     /* NOTIFY predictd_models; NULL without a database */
    feed_leader *feed; /* NULL: no PREDICTD_FEED */
};

/* The training schedule runs on the leader only (replicas on one database). */
static bool schedule_leads(void *arg)
{
    struct serve_jobs *j = arg;
    return predict_loop_leader(atomic_load(&j->leader));
}

/* A series changed here (pin, label, new version): tell the other replicas. */
static void announce_change(void *arg, const char *symbol, const char *tf)
{
    struct serve_jobs *j = arg;
    char payload[64];
    snprintf(payload, sizeof payload, "%s:%s", symbol, tf);
    if (store_notifier_send(j->notifier, PREDICT_MODELS_CHANNEL, payload) != 0)
        LOG_WARN("server", "could not tell the other replicas that %s changed; they see it "
                           "at their next scan",
                 payload);
}

/* The market feed (PREDICTD_FEED): connected, lagging, backfilling, down,
 * or standby while another replica ingests. */
static void feed_probe(void *arg, api_job_status *out)
{
    const struct serve_jobs *j = arg;
    feed_leader_status st;
    feed_leader_status_get(j->feed, &st);
    out->state = st.state;
    out->runs = st.reconnects;
    snprintf(out->last_error, sizeof out->last_error, "%s", st.last_error);
}

static void scanner_probe(void *arg, api_job_status *out)
{
    const struct serve_jobs *j = arg;
    registry_stats rs;
    registry_stats_get(j->reg, &rs);
    out->state = j->reload_interval > 0 ? "running" : "on_demand";
    out->runs = rs.scans;
}

/* The inference loop (predict/loop.c): its own state, or why it is off. */
static void loop_probe(void *arg, api_job_status *out)
{
    const struct serve_jobs *j = arg;
    if (j->loop) {
        predict_loop_state st;
        memset(&st, 0, sizeof st);
        predict_loop_status(j->loop, &st);
        out->state = st.state;
        out->role = st.role;
        out->last_run = st.last_run;
        out->runs = st.runs;
        snprintf(out->last_error, sizeof out->last_error, "%s", st.last_error);
        return;
    }
    out->state = "off";
    snprintf(out->last_error, sizeof out->last_error, "%s", j->loop_error);
}

/* The loop's new predictions go to this process's stream clients. */
static void deliver_to_streams(void *arg, const char *symbol, const char *tf, const char *msg,
                               size_t len)
{
    (void)api_streams_publish(arg, symbol, tf, msg, len);
}

/* Background training: the job worker's summary (training_jobs_stats). */
static void training_probe(void *arg, api_job_status *out)
{
    const struct serve_jobs *j = arg;
    if (!j->training) {
        out->state = "off";
        snprintf(out->last_error, sizeof out->last_error, "%s", j->training_error);
        return;
    }
    training_jobs_stats st;
    training_jobs_stats_get(j->training, &st);
    if (st.retrain_interval_s) /* the schedule is the leader's */
        out->role = predict_loop_leader(atomic_load(&j->leader)) ? "leader" : "follower";
    out->state = st.running              ? "running"
                 : st.queued             ? "queued"
                 : st.retrain_interval_s ? "scheduled"
                                         : "idle";
    out->last_run = st.last_activity;
    out->runs = st.finished;
    snprintf(out->last_error, sizeof out->last_error, "%s", st.last_error);
}

int cmd_serve(server_config *cfg, int argc, char **argv)
{
    if (cmd_wants_help(argc, argv) || argc > 1) {
        FILE *out = cmd_usage_out("serve", argc, argv, 1);
        fprintf(out, "usage: predictd serve [options]\n"
                     "Serves the HTTP API in the foreground. SIGTERM drains and exits 0, "
                     "SIGHUP rescans the model repository. Options are the shared ones of "
                     "`predictd --help`.\n");
        if (out == stdout)
            server_config_usage(stdout);
        return out == stdout ? 0 : 2;
    }
    char why[512] = "";
    if (server_config_load_keys(cfg, why, sizeof why) != 0) {
        LOG_ERROR("server", "cannot start: %s", why);
        return 2;
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
    predict_service *svc = NULL;
    api_context *ctx = NULL;
    api_http *http = NULL;
    predict_loop *loop = NULL;
    struct serve_jobs jobs = {.reload_interval = cfg->reload_interval};

    if (!cfg->database_url)
        LOG_WARN("server", "PREDICTD_DATABASE_URL is not set: every prediction will answer 503");
    if (store_init(cfg->database_url, cfg->redis_url, cfg->cache) != 0) {
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
    if (cfg->database_url) {
        if (store_notifier_open(cfg->database_url, &jobs.notifier) == 0)
            registry_set_change_hook(reg, announce_change, &jobs);
        else
            LOG_WARN("server", "model changes made here reach other replicas only at their "
                               "next scan");
    }
    if (registry_start(reg, cfg->reload_interval) != 0) {
        LOG_ERROR("server", "cannot start the model scanner");
        goto out_registry;
    }
    if (!cfg->api_key)
        LOG_WARN("server",
                 "no admin key (PREDICTD_API_KEY, or the key file %s): admin routes are "
                 "disabled and answer 401",
                 cfg->api_key_file ? cfg->api_key_file : "(none)");
    if (cfg->read_key)
        LOG_INFO("server", "prediction and model routes require the read key (X-API-Key)");

    /* background training (admin API and the retrain schedule): one worker thread */
    training_jobs *tjobs = NULL;
    if (cfg->database_url) {
        training_jobs_config tc = {.models_dir = cfg->models_dir,
                                   .reg = reg,
                                   .database_url = cfg->database_url,
                                   .retrain_interval_s = cfg->retrain_interval,
                                   .nice = 10,
                                   .keep = 50,
                                   .is_leader = schedule_leads,
                                   .leader_arg = &jobs};
        int rc = training_jobs_start(&tc, &tjobs);
        if (rc) {
            LOG_WARN("server", "background training is unavailable: %s", util_strerror(rc));
            snprintf(jobs.training_error, sizeof jobs.training_error, "did not start: %s",
                     util_strerror(rc));
        }
    } else {
        snprintf(jobs.training_error, sizeof jobs.training_error, "no database configured");
    }
    jobs.training = tjobs;

    api_options opt = {.listen_host = cfg->listen_host,
                       .listen_port = cfg->listen_port,
                       .threads = cfg->threads,
                       .max_connections = cfg->max_connections,
                       .per_ip_connections = cfg->per_ip_connections,
                       .header_timeout = cfg->header_timeout,
                       .idle_timeout = cfg->idle_timeout,
                       .cache = cfg->cache,
                       .admin_key = cfg->api_key,
                       .read_key = cfg->read_key,
                       .cors_origins = cfg->cors_origins,
                       .rate_limit = cfg->rate_limit,
                       .rate_burst = cfg->rate_burst,
                       .stream_max = cfg->stream_max,
                       .access_log = cfg->access_log,
                       .reuse_port = cfg->reuse_port,
                       .models_dir = cfg->models_dir,
                       .jobs = tjobs,
                       .web_dir = cfg->web_dir,
                       .trusted_proxies = cfg->trusted_proxies,
                       .redis = cfg->redis_url != NULL};
    predict_options popt = {.cache = cfg->cache, .stale_tfs = cfg->stale_after};
    if (predict_service_new(&popt, reg, &svc) != 0 || api_context_new(&opt, svc, &ctx) != 0)
        goto out_ctx;
    if (api_http_start(ctx, &http) != 0)
        goto out_ctx;
    jobs.reg = reg;
    if (!cfg->database_url) {
        snprintf(jobs.loop_error, sizeof jobs.loop_error, "no database configured");
    } else {
        predict_loop_options lopt = {.database_url = cfg->database_url,
                                     .redis_url = cfg->redis_url,
                                     .deliver = deliver_to_streams,
                                     .deliver_arg = ctx};
        int rc = predict_loop_start(svc, &lopt, &loop);
        if (rc != 0) {
            snprintf(jobs.loop_error, sizeof jobs.loop_error, "did not start: %s",
                     util_strerror(rc));
            LOG_WARN("server",
                     "the inference loop did not start (%s); predictions are made on "
                     "request",
                     util_strerror(rc));
        }
        jobs.loop_running = rc == 0 && loop != NULL;
        jobs.loop = jobs.loop_running ? loop : NULL;
        atomic_store(&jobs.leader, jobs.loop);
    }
    if (cfg->feed && *cfg->feed) {
        /* a feed_leader: runs the connector while this process holds the
         * feed's advisory lock, stands by while another replica does */
        if (!cfg->database_url)
            LOG_ERROR("server", "PREDICTD_FEED needs a database (PREDICTD_DATABASE_URL)");
        else
            (void)server_feed_start(cfg, &jobs.feed);
        if (!jobs.feed) {
            api_http_stop(http, 0);
            predict_loop_stop(loop);
            exit_code = 2;
            goto out_ctx;
        }
        api_http_set_metrics_hook(http, server_feed_metrics, jobs.feed);
    }
    (void)api_http_add_job(http, "model_scanner", scanner_probe, &jobs);
    (void)api_http_add_job(http, "inference_loop", loop_probe, &jobs);
    (void)api_http_add_job(http, "training", training_probe, &jobs);
    if (jobs.feed)
        (void)api_http_add_job(http, "feed", feed_probe, &jobs);
    LOG_INFO("server", "ready to serve (pid %d)", (int)getpid());

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
    /* a second SIGTERM/SIGINT ends the process at once; SIGHUP stays blocked */
    struct sigaction sa = {.sa_handler = die_now};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigset_t term;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    sigaddset(&term, SIGINT);
    pthread_sigmask(SIG_UNBLOCK, &term, NULL);

    api_http_stop(http, cfg->drain_timeout);
    feed_leader_stop(jobs.feed); /* after HTTP: no probe or scrape reads it any more */
    atomic_store(&jobs.leader, NULL);
    predict_loop_stop(loop);
    exit_code = 0;
out_ctx:
    training_jobs_stop(tjobs);
    api_context_free(ctx);
    predict_service_free(svc);
out_registry:
    registry_stop(reg);
    registry_free(reg);
    store_notifier_close(jobs.notifier);
out_features:
    store_shutdown();
    if (exit_code == 0)
        LOG_INFO("server", "stopped");
out:
    return exit_code;
}
