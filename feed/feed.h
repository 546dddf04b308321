/*
 * feed: market data into the store.
 *
 *   csv.c        candle CSV files (`predictd import`, `predictd features`)
 *   trades.c     trades CSV files and the trades-to-1m-candles aggregator
 *   sink.c       where a connector delivers: trades (aggregated per symbol)
 *                or closed base candles, written through store/ as 1m base
 *                candles, from which PostgreSQL derives every timeframe
 *   connector.c  the connector table: PREDICTD_FEED="name:args" -> connector
 *   leader.c     one ingester across replicas (the feed's advisory lock)
 *   binance.c    the Binance spot connector (trades stream, klines, exchangeInfo)
 *   ws.c, rest.c the exchange wires: RFC 6455 client over OpenSSL, REST over
 *                libcurl with weight pacing and Retry-After (net_internal.h)
 *   demo.c       the demo connector: replays real 1m candles at real time
 *   seed.c       deterministic synthetic candles (`predictd seed`)
 *
 * Another exchange is one more file: a constructor returning a
 * feed_connector, and one line in the table of connector.c.
 *
 * Threading: the parsers, the aggregator and the seed are pure (no I/O, no
 * globals); an aggregator belongs to one thread at a time. A sink is
 * thread-safe (a mutex serialises its calls) and writes through the calling
 * thread's store connection. A connector's threads are its own.
 */
#ifndef PREDICTD_FEED_H
#define PREDICTD_FEED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "features/features.h"

/* ===========================================================================
 * CSV: Binance kline dumps (12 columns, with or without header, ms or us
 * open times) and `open_time,open,high,low,close,volume` with RFC 3339 or
 * epoch (s/ms/us) times. Parses a whole buffer; on a bad row returns
 * PD_EPARSE with "line N: reason" in why and *out untouched.
 */
int feed_csv_parse(const char *text, size_t len, features_candle **out, size_t *n, char *why,
                       size_t whylen);
/* The same, and every open time must fall on a boundary of timeframe tf
 * ("15m"): the first row that does not is PD_EPARSE with its line. tf NULL
 * checks nothing; an unknown tf is PD_EINVAL. */
int feed_csv_parse_for(const char *text, size_t len, const char *tf, features_candle **out,
                       size_t *n, char *why, size_t whylen);

/* ===========================================================================
 * Trades.
 */
enum feed_side { FEED_SIDE_BUY = 0, FEED_SIDE_SELL = 1 }; /* the taker's side */

typedef struct feed_trade {
    int64_t t_ms;  /* trade time, Unix milliseconds (UTC) */
    int64_t id;    /* the exchange's trade id, unique per symbol */
    int side;      /* enum feed_side */
    double price;  /* > 0, finite */
    double amount; /* base currency, >= 0, finite */
} feed_trade;

/* True when the first non-blank line of text is the trades header
 * `time,id,side,price,amount` (spaces, quotes, a BOM and case ignored). */
bool feed_trades_csv_is(const char *text, size_t len);

/* Parses a trades CSV (the header above, then one trade a line: time as
 * RFC 3339 with optional fraction or epoch s/ms/us, integer id, buy|sell,
 * price, amount). Rows keep file order (the aggregator sorts nothing out:
 * it takes trades in any order). *out is malloc'd (free it). PD_EPARSE
 * with "line N: reason" in why on a bad row (*out untouched), PD_ENOMEM. */
int feed_trades_csv_parse(const char *text, size_t len, feed_trade **out, size_t *n, char *why,
                          size_t whylen);

/*
 * The aggregator: trades of one symbol in, 1m candles out, with the
 * exchange's conventions (open = first trade by time then id, high/low =
 * extremes, close = last trade, volume = sum of amounts; a minute without
 * a trade is a flat candle at the previous close, volume 0).
 *
 * Push trades one at a time. A minute is emitted (closed) once a trade of a
 * later minute arrives, or once feed_agg_advance() is told the time has
 * passed its end; feed_agg_finish() emits the open minute too. A trade id
 * seen before is ignored. A trade of an already emitted minute (within the
 * last FEED_AGG_KEEP_MINUTES) updates that candle, which is emitted again
 * with correction = true (as are the flat minutes after it whose price it
 * changes); an older one is dropped and counted as too_late. A trade
 * earlier than the first minute seen (within the kept span, before any
 * minute was dropped) adds its minute and flat ones up to the first.
 *
 * The emit callback receives a candle (open time t in Unix seconds, aligned
 * to the minute) owned by the aggregator for the duration of the call; its
 * non-zero return stops the call, which returns that value.
 */
#define FEED_AGG_KEEP_MINUTES 1440
/* The longest run of flat minutes filled in (a week): a trade further than
 * that after the last one starts afresh, leaving the span empty, and the
 * clock alone fills no more than that after the last trade. */
#define FEED_AGG_MAX_GAP_MINUTES 10080

typedef int (*feed_agg_emit_fn)(const features_candle *c, bool correction, void *arg);

typedef struct feed_agg feed_agg;

typedef struct feed_agg_stats {
    uint64_t trades;      /* accepted */
    uint64_t duplicates;  /* ignored: id seen before */
    uint64_t corrections; /* candles emitted again */
    uint64_t too_late;    /* dropped: older than the kept minutes */
    uint64_t emitted;     /* candles emitted, corrections included */
} feed_agg_stats;

/* A new, empty aggregator. PD_ENOMEM. Free with feed_agg_free (NULL: no-op). */
int feed_agg_new(feed_agg **out);
void feed_agg_free(feed_agg *a);
/* One trade. 0, PD_EINVAL (non-finite or non-positive price, negative or
 * non-finite amount, time before 1970), PD_ENOMEM, or emit's return. */
int feed_agg_push(feed_agg *a, const feed_trade *t, feed_agg_emit_fn emit, void *arg);
/* The clock moved to now_ms: emits every minute that ended at or before it
 * (flat ones after the last trade included, once a first trade was seen). */
int feed_agg_advance(feed_agg *a, int64_t now_ms, feed_agg_emit_fn emit, void *arg);
/* Emits the open minute (end of a file). Later trades of it are corrections. */
int feed_agg_finish(feed_agg *a, feed_agg_emit_fn emit, void *arg);
void feed_agg_stats_get(const feed_agg *a, feed_agg_stats *out);

/* ===========================================================================
 * Sink: where connectors deliver. Writes 1m base candles through
 * store_upsert_base_candles (PostgreSQL rolls them up into 5m..1d in the
 * same transaction and NOTIFYs), keeps one aggregator per symbol for
 * trades, and publishes the feed's state for /health/status.
 * Thread-safe: one mutex serialises every call on a sink. store_init()
 * must have run; each calling thread uses its own store connection.
 */
typedef struct feed_sink feed_sink;

/* name: the feed as /health/status shows it ("demo-replay", "binance");
 * source: where its data comes from (a sentence, shown with it). Both are
 * copied. PD_ENOMEM, PD_EINVAL. Free with feed_sink_free (NULL: no-op). */
int feed_sink_new(const char *name, const char *source, feed_sink **out);
void feed_sink_free(feed_sink *s);

/* Closed candles a symbol keeps while the database is away: past them, a
 * new minute is refused with PD_ETOOBIG (corrections of kept minutes are
 * still taken). */
#define FEED_SINK_PENDING_MAX 100000
/* A trade of symbol: aggregated; the minutes it closes (and corrections)
 * are written. 0, PD_ESYMBOL, PD_EINVAL (bad trade), PD_ETOOBIG, or the
 * store's code (PD_EDB ...: the candle is kept and written again on the
 * next call). */
int feed_sink_trade(feed_sink *s, const char *symbol, const feed_trade *t);
/* Closed 1m base candles of symbol (a kline stream, a REST backfill, the
 * demo replay): written as they are, in one transaction, idempotently
 * (a symbol is fed either trades or candles, not both). 0, PD_ESYMBOL,
 * PD_EINVAL (misaligned or bad values: dropped), PD_EDB (kept and written
 * again with the symbol's next call), PD_ETOOBIG (FEED_SINK_PENDING_MAX
 * kept already: the candles past them are lost). */
int feed_sink_candles(feed_sink *s, const char *symbol, const features_candle *c, size_t n);
/* A connector that aggregates trades itself (binance.c keeps one
 * aggregator per symbol so that REST can take minutes over) hands its
 * closed candles to feed_sink_candles and reports how many trades and
 * corrections it aggregated here, for the feed's status. Thread-safe. */
void feed_sink_note_trades(feed_sink *s, uint64_t trades, uint64_t corrections);
/* The clock: closes every symbol's minutes that ended at or before now_ms
 * (flat candles for minutes without trades). Call it every few seconds. */
int feed_sink_tick(feed_sink *s, int64_t now_ms);

enum feed_state {
    FEED_STATE_CONNECTING,
    FEED_STATE_CONNECTED,
    FEED_STATE_LAGGING,
    FEED_STATE_BACKFILLING,
    FEED_STATE_DOWN
};
/* "connecting", "connected", "lagging", "backfilling", "down". Static. */
const char *feed_state_name(int state);
/* The connector says how it is (shown in /health/status). */
void feed_sink_set_state(feed_sink *s, int state);

/* Counters of a sink, for logs and metrics. */
typedef struct feed_sink_stats {
    uint64_t trades, duplicates, corrections, too_late;
    uint64_t candles_written, write_errors;
    int64_t last_candle; /* open time of the newest base candle written, 0: none */
} feed_sink_stats;
void feed_sink_stats_get(feed_sink *s, feed_sink_stats *out);

/* ===========================================================================
 * Connectors. PREDICTD_FEED="name:args" picks one from the table in
 * connector.c ("demo", "demo:FILE,FILE", "binance:BTCUSDT,ETHUSDT", ...).
 */
typedef struct feed_connector feed_connector;
struct util_buf;
struct feed_connector_status;
struct feed_connector {
    /* The feed's name in /health/status ("demo-replay", "binance"): static. */
    const char *name;
    /* Starts delivering to sink from the connector's own thread(s) and
     * returns: 0, or a PD_* code (nothing started). The sink outlives the
     * connector's threads. Called once. */
    int (*start)(feed_connector *self, feed_sink *sink);
    /* Stops and joins the threads: after it returns no call on the sink is
     * running or will run. Safe to call when start failed or never ran. */
    void (*stop)(feed_connector *self);
    /* Frees the connector (stopped first). */
    void (*free)(feed_connector *self);
    /* The source sentence the sink shows ("real candles ..."); static or
     * owned by the connector. */
    const char *source;
    /* The connector's own state. */
    void *impl;
    /* Optional (NULL: none). Appends the connector's Prometheus series
     * (HELP, TYPE and samples) to out. Called from a scrape's thread while
     * the connector runs: reads atomics only. */
    void (*metrics)(feed_connector *self, struct util_buf *out);
    /* Optional (NULL: none). The connector's state and last error, for
     * /health/status. Thread-safe, quick. */
    void (*status)(feed_connector *self, struct feed_connector_status *out);
};

/* What a connector says about itself. */
typedef struct feed_connector_status {
    int state;            /* enum feed_state */
    uint64_t reconnects;  /* connections lost and made again */
    char last_error[256]; /* "" when none; never a secret */
} feed_connector_status;

/* A constructor: args is the text after "name:" ("" when none). */
typedef int (*feed_connector_new_fn)(const char *args, feed_connector **out);

/* Parses spec "name[:args]" and builds that connector (not started).
 * PD_EINVAL with why filled for an unknown name or bad args, PD_ENOMEM. */
int feed_connector_new(const char *spec, feed_connector **out, char *why, size_t whylen);
/* stop + free; NULL is a no-op. */
void feed_connector_free(feed_connector *c);

/*
 * A running feed: the connector of spec, a sink named after it, started.
 * What `serve` (PREDICTD_FEED) and `predictd ingest` run. store_init() must
 * have run. PD_EINVAL with why for a bad spec, or the connector's start
 * code. feed_runner_stop stops the connector, then frees both (NULL: no-op).
 */
typedef struct feed_runner feed_runner;
int feed_runner_start(const char *spec, feed_runner **out, char *why, size_t whylen);
void feed_runner_stop(feed_runner *r);

/*
 * The demo (demo.c): real 1m candles (.csv or .csv.gz; the symbol is the
 * file name up to its first '_'), relabelled by a whole number of minutes
 * so that the first FEED_DEMO_SEED_PERCENT % of each file end at the last
 * closed minute (less `behind` minutes), then replayed one candle per
 * minute as each relabelled candle closes.
 *
 * files: a comma-separated list, or NULL/"" for every *.csv.gz in the
 * directory PREDICTD_DEMO_DIR (default ./data/demo).
 */
#define FEED_DEMO_SEED_PERCENT 80

/* Writes the seed part of every file whose symbol has no 1m candles yet
 * (their 5m..1d follow in PostgreSQL). *seeded (may be NULL) gets how many
 * symbols were written. PD_ENOTFOUND (no files), PD_EPARSE (with why),
 * PD_EIO, PD_EDB. */
int feed_demo_seed(const char *files, int64_t now, int behind_minutes, size_t *seeded, char *why,
                   size_t whylen);

/* The demo connector: args as files above. Seeds an empty symbol first, then
 * replays. Environment: PREDICTD_DEMO_STEP_MS (default 0: a candle is
 * written as soon as its relabelled close has passed; N > 0: at most one
 * candle per symbol every N ms while catching up, for tests). */
int feed_demo_new(const char *args, feed_connector **out);

/* ===========================================================================
 * Binance spot (binance.c): `<symbol>@trade` streams, 1m klines over REST
 * for history and gaps, exchangeInfo for each symbol's status and tick
 * (written to the store's exchange_symbols table). See binance.c for how
 * no minute is lost or doubled across disconnects.
 */
#define FEED_BINANCE_WS_URL "wss://stream.binance.com:9443"
#define FEED_BINANCE_REST_URL "https://api.binance.com"
#define FEED_BINANCE_RENEW_S (23 * 3600 + 1800) /* Binance ends a connection at 24 h */

typedef struct feed_binance_config {
    const char *ws_url;       /* NULL: FEED_BINANCE_WS_URL */
    const char *rest_url;     /* NULL: FEED_BINANCE_REST_URL */
    const char *database_url; /* for exchange_symbols; NULL: not stored */
    int renew_s;              /* connection age before renewal; 0: FEED_BINANCE_RENEW_S */
} feed_binance_config;

/* A connector for symbols "BTCUSDT,ETHUSDT" (not started; strings are
 * copied). PD_EINVAL / PD_ESYMBOL (bad URL, bad or duplicate symbol,
 * more than 64, symbols whose one stream URL would be too long),
 * PD_ENOMEM; why is filled on every error. */
int feed_binance_open(const feed_binance_config *cfg, const char *symbols, feed_connector **out,
                      char *why, size_t whylen);
/* The connector table's constructor: feed_binance_open with the URLs of
 * PREDICTD_BINANCE_WS_URL, PREDICTD_BINANCE_REST_URL, the database of
 * PREDICTD_DATABASE_URL and the renewal age PREDICTD_BINANCE_RENEW
 * (seconds) from the environment (read once, here). */
int feed_binance_new(const char *args, feed_connector **out);

/* Progress of a download: minutes done of total. */
typedef void (*feed_fetch_progress_fn)(int64_t done, int64_t total, void *arg);

/*
 * Downloads the closed 1m candles of symbol with from <= open < to (Unix
 * seconds, to 0: now) over REST and writes them through sink. Resumes
 * after the newest candle already stored in the range; writes are upserts,
 * so running it again changes nothing. progress (may be NULL) is called
 * after each page. *written (may be NULL) gets the candles written.
 * 0, PD_EINVAL (bad range, unknown symbol: why has the exchange's
 * message), PD_ERATE, PD_EIO (REST down), PD_EDB.
 */
int feed_binance_fetch(const feed_binance_config *cfg, const char *symbol, int64_t from,
                       int64_t to, feed_sink *sink, feed_fetch_progress_fn progress, void *arg,
                       int64_t *written, char *why, size_t whylen);

/* ===========================================================================
 * Leader (leader.c): one ingester among processes sharing a database. A
 * thread takes the feed's advisory lock (store_lock_*), runs the connector
 * of spec with a sink while it holds it, and stands by (retrying every
 * 5 s) while another process does. Without database_url it runs alone.
 */
typedef struct feed_leader feed_leader;

/* Checks spec (feed_connector_new) and starts the thread. 0, PD_EINVAL
 * (why filled), PD_ENOMEM, PD_EINTERNAL. Strings are copied. */
int feed_leader_start(const char *spec, const char *database_url, feed_leader **out, char *why,
                      size_t whylen);
/* Stops the connector (if running), releases the lock, joins, frees. NULL: no-op. */
void feed_leader_stop(feed_leader *l);
/* Appends predictd_feed_leader and the running connector's series to
 * out. Thread-safe. */
void feed_leader_metrics(feed_leader *l, struct util_buf *out);

typedef struct feed_leader_status {
    const char *state;    /* "standby", a feed_state_name(), "down", "off": static */
    uint64_t reconnects;  /* of the running connector */
    uint64_t takeovers;   /* times this process became the ingester */
    char last_error[256];
} feed_leader_status;
/* Thread-safe, quick. l NULL: state "off". */
void feed_leader_status_get(feed_leader *l, feed_leader_status *out);

/* ===========================================================================
 * Seed: deterministic synthetic candles (regime-switching random walk with
 * volume and wicks). Writes `count` candles of tf ending with the last one
 * closed before `now`, for a given symbol and seed. *out is malloc'd.
 */
int feed_seed_series(const char *symbol, const char *tf, int64_t now, size_t count,
                         uint64_t seed, features_candle **out);

#endif
