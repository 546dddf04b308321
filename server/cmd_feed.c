/*
 * cmd_feed.c: the market feed's subcommands and its place in `serve`.
 *   predictd ingest   runs the feed of PREDICTD_FEED alone (a deployment
 *                     that keeps ingestion apart from serving), with the
 *                     same leader lock as serve, so replicas never ingest
 *                     twice;
 *   predictd fetch    downloads 1m history over Binance's REST API into
 *                     the candles table, with a progress bar on stderr.
 * server_feed_start / stop: what serve calls when PREDICTD_FEED is set.
 *
 * The connectors read their endpoints from the environment
 * (feed_binance_new); the flags --binance-ws-url / --binance-rest-url /
 * --binance-renew and --database-url are copied into it here, on the main
 * thread, before any feed thread starts.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "feed/feed.h"
#include "server/commands.h"
#include "store/store.h"
#include "util/util.h"

static void export_endpoints(const server_config *cfg)
{
    if (cfg->binance_ws_url)
        setenv("PREDICTD_BINANCE_WS_URL", cfg->binance_ws_url, 1);
    if (cfg->binance_rest_url)
        setenv("PREDICTD_BINANCE_REST_URL", cfg->binance_rest_url, 1);
    if (cfg->database_url)
        setenv("PREDICTD_DATABASE_URL", cfg->database_url, 1);
    char renew[16];
    snprintf(renew, sizeof renew, "%d", cfg->binance_renew);
    setenv("PREDICTD_BINANCE_RENEW", renew, 1);
}

int server_feed_start(const server_config *cfg, feed_leader **out)
{
    *out = NULL;
    if (!cfg->feed)
        return 0;
    export_endpoints(cfg);
    char why[256] = "";
    int rc = feed_leader_start(cfg->feed, cfg->database_url, out, why, sizeof why);
    if (rc)
        LOG_ERROR("server", "PREDICTD_FEED=%s: %s", cfg->feed, why[0] ? why : util_strerror(rc));
    return rc;
}

static void leader_metrics_hook(void *arg, util_buf *out)
{
    feed_leader_metrics(arg, out);
}

void server_feed_metrics(void *arg, struct util_buf *out)
{
    leader_metrics_hook(arg, out);
}

int cmd_ingest(server_config *cfg, int argc, char **argv)
{
    if (cmd_wants_help(argc, argv) || argc > 1) {
        FILE *o = cmd_usage_out("ingest", argc, argv, 1);
        fprintf(o, "usage: predictd ingest [options]\n"
                   "Runs the market-data feed of PREDICTD_FEED (e.g. binance:BTCUSDT,ETHUSDT)\n"
                   "alone, writing 1m candles (every timeframe is derived from them). Of the\n"
                   "processes sharing the database one ingests (a PostgreSQL advisory lock);\n"
                   "the others stand by and take over when it dies. SIGTERM stops it.\n"
                   "Endpoints: PREDICTD_BINANCE_WS_URL, PREDICTD_BINANCE_REST_URL.\n");
        return cmd_wants_help(argc, argv) ? 0 : 2;
    }
    if (!cfg->feed) {
        fprintf(stderr, "predictd ingest: PREDICTD_FEED (or --feed) is not set\n");
        return 2;
    }
    if (!cfg->database_url) {
        fprintf(stderr, "predictd ingest: PREDICTD_DATABASE_URL (or --database-url) is not set\n");
        return 2;
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (store_init(cfg->database_url, cfg->redis_url, cfg->cache) != 0) {
        fprintf(stderr, "predictd ingest: cannot initialise the candle store\n");
        return 1;
    }
    feed_leader *l = NULL;
    int rc = server_feed_start(cfg, &l);
    if (rc) {
        store_shutdown();
        return 2;
    }
    LOG_INFO("ingest", "feed %s running (pid %d)", cfg->feed, (int)getpid());
    int sig = 0;
    while (sigwait(&set, &sig) != 0)
        ;
    LOG_INFO("ingest", "%s: stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    feed_leader_stop(l);
    store_shutdown();
    return 0;
}

struct bar {
    bool tty;
    int last_pct;
};

static void progress(int64_t done, int64_t total, void *arg)
{
    struct bar *b = arg;
    int pct = total > 0 ? (int)(done * 100 / total) : 100;
    if (pct > 100)
        pct = 100;
    if (!b->tty && pct / 10 == b->last_pct / 10 && done < total)
        return; /* not a terminal: a line every 10 % */
    b->last_pct = pct;
    char bar[41];
    int fill = pct * 40 / 100;
    for (int i = 0; i < 40; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[40] = '\0';
    fprintf(stderr, "%s[%s] %3d%% %lld/%lld minutes%s", b->tty ? "\r" : "", bar, pct,
            (long long)done, (long long)total, b->tty ? "" : "\n");
    fflush(stderr);
}

int cmd_fetch(server_config *cfg, int argc, char **argv)
{
    const char *symbol = NULL, *from_s = NULL, *to_s = NULL;
    int bad = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--from") && i + 1 < argc)
            from_s = argv[++i];
        else if (!strncmp(argv[i], "--from=", 7))
            from_s = argv[i] + 7;
        else if (!strcmp(argv[i], "--to") && i + 1 < argc)
            to_s = argv[++i];
        else if (!strncmp(argv[i], "--to=", 5))
            to_s = argv[i] + 5;
        else if (argv[i][0] != '-' && !symbol)
            symbol = argv[i];
        else if (!strcmp(argv[i], "--from") || !strcmp(argv[i], "--to")) {
            fprintf(stderr, "predictd fetch: %s needs a value\n", argv[i]);
            return 2;
        } else if (strcmp(argv[i], "--help") && strcmp(argv[i], "-h") && !bad)
            bad = i; /* the first argument that is not understood */
    }
    if (cmd_wants_help(argc, argv) || bad || !symbol || !from_s) {
        FILE *o = cmd_usage_out("fetch", argc, argv, bad);
        if (o == stderr && !bad)
            fprintf(stderr, "predictd fetch: %s\n",
                    !symbol ? "SYMBOL is required" : "--from is required");
        fprintf(o, "usage: predictd fetch SYMBOL --from DATE [--to DATE]\n"
                   "Downloads the closed 1m candles of SYMBOL from Binance's REST API\n"
                   "(GET /api/v3/klines, PREDICTD_BINANCE_REST_URL) into the candles table;\n"
                   "every timeframe is derived from them. DATE is YYYY-MM-DD or RFC 3339 (UTC);\n"
                   "--to defaults to now. Resumable: a second run starts after the newest\n"
                   "candle already stored in the range; writes are idempotent. A progress bar\n"
                   "goes to stderr. Respects the exchange's weight limits and Retry-After.\n");
        return cmd_wants_help(argc, argv) ? 0 : 2;
    }
    if (!util_symbol_valid(symbol)) {
        fprintf(stderr, "predictd fetch: symbol '%s' must match ^[A-Z0-9]{2,20}$\n", symbol);
        return 2;
    }
    int64_t from = 0, to = 0;
    if (util_parse_time(from_s, &from) != 0 || (to_s && util_parse_time(to_s, &to) != 0)) {
        fprintf(stderr, "predictd fetch: --from/--to must be YYYY-MM-DD or RFC 3339\n");
        return 2;
    }
    if (to_s && to <= from) {
        fprintf(stderr, "predictd fetch: --to must be after --from\n");
        return 2;
    }
    if (!cfg->database_url) {
        fprintf(stderr, "predictd fetch: PREDICTD_DATABASE_URL (or --database-url) is not set\n");
        return 2;
    }
    if (store_init(cfg->database_url, cfg->redis_url, cfg->cache) != 0) {
        fprintf(stderr, "predictd fetch: cannot initialise the candle store\n");
        return 1;
    }
    feed_sink *sink = NULL;
    int rc = feed_sink_new("fetch", "Binance 1m klines (REST)", &sink);
    if (rc) {
        store_shutdown();
        return 1;
    }
    feed_binance_config bc = {.ws_url = cfg->binance_ws_url,
                              .rest_url = cfg->binance_rest_url,
                              .database_url = cfg->database_url};
    struct bar b = {.tty = isatty(2) != 0, .last_pct = -100};
    int64_t written = 0;
    char why[256] = "";
    rc = feed_binance_fetch(&bc, symbol, from, to, sink, progress, &b, &written, why, sizeof why);
    if (b.tty)
        fputc('\n', stderr);
    feed_sink_free(sink);
    store_shutdown();
    if (rc) {
        fprintf(stderr, "predictd fetch: %s: %s\n", symbol, why[0] ? why : util_strerror(rc));
        return 1;
    }
    fprintf(stderr, "predictd fetch: %s: %lld candles written\n", symbol, (long long)written);
    return 0;
}
