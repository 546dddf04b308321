/*
 * predict: the prediction service. Everything between a request (or a new
 * candle) and a rendered prediction, and nothing of HTTP.
 *
 *   pipeline.c   one prediction: registry -> candles -> features -> kernel ->
 *                signal, with a process cache and a Redis cache of rendered
 *                predictions keyed by series, model version and candle
 *   render.c     the prediction's JSON: rendered once into a fragment, a
 *                short time-dependent tail appended per answer
 *   live.c       live accuracy per model version, from the ledger
 *   resolver.c   settling ledger rows against the candles after them
 *   loop.c       the inference loop: new candles -> predictions, ledger,
 *                stream messages, PUBLISH
 *   backtest.c   history replayed through the same computation and resolver
 *
 * Depends on registry, features, inference and store. The HTTP module (api/)
 * and the CLI (server/) call it; it calls neither.
 *
 * Threading: a predict_service is created before the threads that use it and
 * freed after they stop; its caches are internally synchronised, its
 * options read-only. predict_one() is thread-safe and is called by HTTP
 * workers, the CLI (`predictd predict`) and the inference loop.
 */
#ifndef PREDICTD_PREDICT_H
#define PREDICTD_PREDICT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "features/features.h"
#include "registry/registry.h"
#include "store/store.h"
#include "util/util.h"

typedef struct predict_service predict_service;

/* Read-only options. */
typedef struct predict_options {
    bool cache; /* process + Redis prediction caches (PREDICTD_CACHE) */
    int stale_tfs; /* PREDICTD_STALE_AFTER; 0: PREDICT_STALE_TFS */
} predict_options;

/* Creates the service over a registry the caller keeps alive longer.
 * Returns 0, PD_ENOMEM. Free with predict_service_free (NULL: no-op) after
 * every thread using it has stopped. */
int predict_service_new(const predict_options *opt, registry *reg, predict_service **out);
void predict_service_free(predict_service *svc);
/* The registry it serves from (borrowed). */
registry *predict_registry(predict_service *svc);

/* ===========================================================================
 * Predictions (pipeline.c, render.c).
 */

/*
 * A computed prediction, immutable and reference-counted: the cache and every
 * reader hold references. The JSON `fragment` is the prediction object
 * without its time-dependent tail (staleness_s, stale, model_expired,
 * warnings), which predict_render() appends for the moment of the
 * response.
 */
typedef struct predict_result {
    char symbol[24];
    char timeframe[8];
    int direction;           /* enum inference_class */
    int model_choice;        /* enum inference_class: the most probable class */
    int no_trade_reason;     /* enum inference_no_trade_reason; 0 for a call */
    bool stale_data;         /* computed from a window older than PREDICT_STALE_TFS timeframes */
    int n_warnings;          /* warnings already inside the fragment (see predict_render) */
    double probs[3];         /* LONG, SHORT, NO_TRADE */
    double confidence;       /* probability of model_choice */
    uint32_t version;
    int64_t candle_time;     /* open time of the last closed candle used */
    int64_t candle_close;    /* its close time */
    int64_t prediction_time; /* when it was computed */
    int64_t valid_until;     /* close time of the next candle */
    int64_t trained_at;
    int64_t max_age_s;       /* model expiry, 0 = never */
    int64_t tf_seconds;
    int gaps;                /* missing candles inside the window */
    char *fragment;          /* "{...," without the closing tail */
    size_t fragment_len;
    /* For the ledger: the levels and horizon behind the fragment.
     * Set when computed; has_levels is false for one read back from Redis. */
    bool has_levels;
    int levels_for;          /* enum inference_class: LONG or SHORT */
    double entry, stop_loss, tp[3], atr;
    uint32_t horizon;        /* candles a trade may run (the model's policy) */
    /* What model_accuracy was rendered from: the live hit rate of this
     * version over live_resolved trades (predict_set_live_accuracy); live when
     * live_resolved >= PREDICT_LIVE_MIN_RESOLVED, else the test accuracy. */
    double live_hit_rate;
    uint64_t live_resolved;
    /* The model_accuracy rendered: the live hit rate, else the backtest's;
     * NaN when neither is known. */
    double model_accuracy;
} predict_result;

/*
 * Makes (or fetches from cache) the prediction for symbol/tf at time now.
 * Returns 0 and a new reference in *out (predict_result_release it), or:
 * PD_ESYMBOL / PD_ETIMEFRAME (malformed, nothing looked up), PD_EUNKNOWNSYM
 * (no candles), PD_ENOMODEL, PD_ENOTREADY, PD_ENODATA (too few candles),
 * PD_EDB (database down and nothing cached), PD_EINVAL (bad candles).
 * why (may be NULL) receives a human-readable detail for the error body.
 */
int predict_one(predict_service *svc, const char *symbol, const char *tf,
                const registry_selector *sel, int64_t now, predict_result **out, char *why,
                size_t whylen);
void predict_result_release(predict_result *p); /* NULL is a no-op */
/* Adds a reference (released with predict_result_release). */
void predict_result_retain(predict_result *p);

/* The symbols that have candles for a timeframe, sorted: an immutable
 * snapshot shared by every request that asks within a few seconds. */
typedef struct predict_symbol_list {
    size_t n;
    const char *const *names;
} predict_symbol_list;

/* A snapshot of the symbols with candles for tf, refreshed from the database
 * every few seconds (never per request, and never with a lock held over the
 * query: requests meanwhile get the previous snapshot). Returns 0 and a new
 * reference in *out (predict_symbol_list_release it), PD_ETIMEFRAME, or
 * PD_EDB / PD_ENOMEM when there is no snapshot at all yet. Thread-safe. */
int predict_symbols_for(predict_service *svc, const char *tf, int64_t now,
                        predict_symbol_list **out);
void predict_symbol_list_release(predict_symbol_list *l); /* NULL is a no-op */

/*
 * predict_one for n symbols of one timeframe: the same answers, but the
 * candle windows of every symbol the caches cannot answer are read in one
 * pipelined round trip (store_load_windows) instead of one each. Writes
 * outs[i] (a new reference) or rcs[i] (a PD_* code, whys[i] the detail) for
 * each symbol. Returns 0, or PD_ENOMEM with nothing written.
 */
int predict_many(predict_service *svc, const char *const *symbols, size_t n, const char *tf,
                     const registry_selector *sel, int64_t now, predict_result **outs, int *rcs,
                     char (*whys)[256]);

/*
 * Recomputes symbol/tf for the serving version bypassing the caches, then
 * replaces the cached entry (process and Redis): predict_refresh_many for
 * one symbol. Returns a new reference like predict_one.
 */
int predict_refresh(predict_service *svc, const char *symbol, const char *tf, int64_t now,
                        predict_result **out, char *why, size_t whylen);

/*
 * predict_refresh for n symbols of one timeframe, as the inference loop does
 * when many series close together: the windows of all of them are read in
 * one pipelined round trip (store_load_windows) and the rendered
 * predictions written to Redis in one more. Writes outs[i] (a new
 * reference) or rcs[i] (a PD_* code, whys[i] the detail) for each symbol.
 * Returns 0, PD_ETIMEFRAME or PD_ENOMEM (nothing written).
 */
int predict_refresh_many(predict_service *svc, const char *const *symbols, size_t n,
                         const char *tf, int64_t now, predict_result **outs, int *rcs,
                         char (*whys)[256]);

/*
 * Appends the full prediction object (fragment + tail for now) to b.
 * The tail says how old the answer is at now. One rule for expiry: an
 * answer is stale (`stale: true`, with an "overdue" warning) once now has
 * reached its valid_until (the close of the candle after the one it used),
 * or when its data was already older than PREDICT_STALE_TFS timeframes
 * when it was computed; prediction_time never passes valid_until without
 * stale saying so.
 */
void predict_render(util_buf *b, const predict_result *p, int64_t now);

/* A window whose last candle closed more than this many timeframes (the
 * default of predict_options.stale_tfs) before the prediction was computed
 * is stale data: the answer is NO_TRADE (no_trade_reason "stale_data") and
 * the ledger row does not count toward live accuracy. An answer older than
 * this is rendered stale whatever stale_tfs says. */
#define PREDICT_STALE_TFS 2


/* Cache counters for /metrics. */
typedef struct predict_cache_stats {
    uint64_t process_hits, process_misses;
    uint64_t redis_hits, redis_misses;
    uint64_t computed;
    uint64_t negative_hits; /* "no" answers (unknown symbol, no model, too few candles) from cache */
} predict_cache_stats;
void predict_cache_stats_get(predict_service *svc, predict_cache_stats *out);

/* Freshness of the series the process cache holds, for /metrics: per
 * series, the close time of the newest candle behind a cached prediction
 * and the gaps in its window. Writes at most max entries; returns how many.
 * Takes the cache's read lock briefly. */
typedef struct predict_freshness {
    char symbol[24];
    char timeframe[8];
    int64_t candle_close;
    int gaps;
} predict_freshness;
size_t predict_freshness_get(predict_service *svc, predict_freshness *out, size_t max);

/* Model kernel latency (each inference_run), process-wide: counts per bucket
 * (upper bounds in seconds, non-cumulative, the last one is +Inf) and the
 * sum. Lock-free. */
#define PREDICT_LATENCY_BUCKETS 14
typedef struct predict_latency {
    const double *bounds; /* PREDICT_LATENCY_BUCKETS upper bounds; static storage */
    uint64_t counts[PREDICT_LATENCY_BUCKETS + 1];
    double sum_s;
} predict_latency;
void predict_latency_get(predict_latency *out);

/* ===========================================================================
 * What the inference loop keeps current (live.c): live accuracy, and the
 * ledger handle the performance and history routes read.
 */

/* Resolved trades a version needs before model_accuracy is its live hit
 * rate (accuracy_source "live") rather than its test accuracy. */
#define PREDICT_LIVE_MIN_RESOLVED 50

struct store_ledger;

/*
 * Records the live figures of one model version of a series: hit_rate over
 * `resolved` resolved LONG/SHORT predictions. Predictions computed
 * afterwards render model_accuracy from it (when resolved reaches
 * PREDICT_LIVE_MIN_RESOLVED). Returns 0, PD_EINVAL (bad series, version 0,
 * hit_rate outside [0, 1]) or PD_ENOMEM. Thread-safe; meant to be called by
 * the loop after the resolver ran, never on a request.
 */
int predict_set_live_accuracy(predict_service *svc, const char *symbol, const char *tf, uint32_t version,
                          double hit_rate, uint64_t resolved);

/* Lends the performance and history routes a ledger handle (NULL detaches;
 * without one they answer 503). The caller keeps it alive until it has
 * detached it after the HTTP service stopped. Thread-safe. */
void predict_set_ledger(predict_service *svc, struct store_ledger *db);
/* The ledger handle lent, or NULL. Borrowed: valid while the lender keeps
 * it (for the loop's, until the HTTP service has stopped). Thread-safe. */
struct store_ledger *predict_ledger(predict_service *svc);

/* Appends {"type":"prediction","data":{...prediction at now...}}: the
 * message the streams and Redis (predictd:predictions) carry. */
void predict_render_stream_message(util_buf *b, const predict_result *p, int64_t now);

/* ===========================================================================
 * The resolver (resolver.c).
 */

/*
 * The ledger's resolver, pure (resolver.c). Settles entry e against the
 * candles that followed it: `after` holds candles of the same series in
 * ascending open time (those at or before e->candle_time, after
 * last_closed_open, or past the horizon are ignored), last_closed_open is
 * the open time of the series' latest closed candle.
 *
 * The horizon counts candles, as the training labels do: candle j is the
 * j-th stored candle after candle_time (j = 1..horizon), so a gap in the
 * series is skipped the same way in both, and the horizon is complete once
 * `horizon` candles followed the entry. Rules (R = |entry - stop_loss|):
 * - Trade (LONG/SHORT only, on its levels): a candle whose range reaches
 *   the stop ends it (reaching the stop and a target in one candle counts
 *   as the stop); else each take-profit reached is noted and TP3 ends it.
 *   The outcome is the highest take-profit reached before the end, r =
 *   that level's R multiple (|tp - entry| / R); SL (r = -1) when none was;
 *   at the end of a complete horizon without either, EXPIRED with r the
 *   mark-to-market of the last close in the horizon (0 without candles).
 *   mfe/mae span the candles from the entry to the deciding one.
 * - Realised class: the triple barrier of the training labels, on both
 *   sides with the entry's risk R and its TP1 multiple: a side wins when
 *   its TP1 is reached before its stop (the same candle counts as the
 *   stop); LONG or SHORT is the side that wins first, NO_TRADE when both
 *   win in the same candle, neither wins, or the horizon ends.
 * An entry is settled once both are decided (for NO_TRADE, the class
 * only: outcome NONE). Otherwise out->outcome is STORE_OUTCOME_OPEN.
 * The walk is the one triple barrier of inference/barrier.c, as the
 * training labels'.
 *
 * Returns 0 and fills *out, or PD_EINVAL (out untouched) for a NULL
 * argument, tf_seconds <= 0, horizon 0, levels that are not finite and
 * positive, stop equal to entry, take-profits on the wrong side or out of
 * order, or LONG/SHORT levels that disagree with the direction.
 * Thread-safe.
 */
int predict_resolve(const store_ledger_entry *e, int64_t tf_seconds, const features_candle *after,
                    size_t n, int64_t last_closed_open, store_ledger_resolution *out);


/* The ledger row the inference loop records for p (its levels, horizon and
 * stale_data flag). Thread-safe, pure. */
void predict_ledger_entry(const predict_result *p, store_ledger_entry *e);

/* ===========================================================================
 * Cross-timeframe consensus (consensus.c), for the summary route.
 *
 * Rule: each timeframe's answer that is fresh (not stale at now) and from a
 * model that beats its baselines votes. A call votes its side with its
 * probability, NO_TRADE votes 0; each vote is weighted by the timeframe's
 * model_accuracy (live once it has one, else the backtest's; 0.5 when
 * neither is known). score = sum(weight x vote) / sum(weight), with LONG
 * positive and SHORT negative; strength = |score| in [0, 1]; the direction
 * is the sign's side when strength >= PREDICT_CONSENSUS_MIN_STRENGTH, else
 * NO_TRADE. A timeframe agrees when its answer is the consensus direction,
 * disagrees when it is the other call (or any call under a NO_TRADE
 * consensus), is neutral when it answers NO_TRADE under a directional
 * consensus, and is excluded when it is stale, below baseline or missing.
 */
#define PREDICT_CONSENSUS_MIN_STRENGTH 0.25
#define PREDICT_CONSENSUS_MAX 8

typedef struct predict_consensus {
    int direction;   /* enum inference_class */
    double strength; /* 0..1 */
    double score;    /* -1..1, LONG positive */
    /* timeframe names (borrowed from the caller's tfs) per group */
    const char *agree[PREDICT_CONSENSUS_MAX], *disagree[PREDICT_CONSENSUS_MAX],
        *neutral[PREDICT_CONSENSUS_MAX], *excluded[PREDICT_CONSENSUS_MAX];
    size_t n_agree, n_disagree, n_neutral, n_excluded;
} predict_consensus;

/* The consensus of ps[i] (NULL: no answer) for timeframes tfs[i], i < n
 * (at most PREDICT_CONSENSUS_MAX), at time now. Pure, thread-safe. */
void predict_consensus_of(const predict_result *const *ps, const char *const *tfs, size_t n,
                          int64_t now, predict_consensus *out);
/* Appends it as a JSON object. */
void predict_consensus_json(const predict_consensus *c, util_buf *b);

/* ===========================================================================
 * The backtest (backtest.c): history replayed candle by candle through the
 * serving computation and the ledger's resolver.
 */
typedef struct predict_backtest_options {
    const char *symbol, *tf;
    uint32_t version; /* 0: the version serving the series */
    int64_t from, to; /* candle open times: predictions for from <= t < to; 0 = unbounded */
    double cost_bps;  /* round-trip cost the figures are net of; NaN: the model's policy */
    int64_t now;      /* candles closed by then; 0: the wall clock */
} predict_backtest_options;

/* Figures of one caller's LONG/SHORT calls whose horizon completed. */
typedef struct predict_backtest_side {
    uint64_t trades, open;      /* settled calls; calls whose horizon runs past the data */
    uint64_t tp[3];             /* settled calls that reached TP1, TP2, TP3 */
    uint64_t stops, expired, net_wins;
    double sum_r, sum_net;      /* gross R and R after the round-trip cost */
    double equity, peak, max_drawdown_r; /* one unit per signal, net, in time order */
} predict_backtest_side;

typedef struct predict_backtest_row {
    store_ledger_entry e;       /* what the loop would have recorded */
    store_ledger_resolution r;  /* what the resolver made of it (OPEN: horizon incomplete) */
    int no_trade_reason;        /* enum inference_no_trade_reason, 0 for a call */
    size_t index;               /* the candle's index in the loaded range */
} predict_backtest_row;

typedef struct predict_backtest {
    uint32_t version;
    int64_t from, to;           /* open times of the first and last candle predicted */
    double cost_bps;
    uint32_t horizon;
    uint64_t candles, predictions, failed;
    uint64_t no_trade[8];       /* NO_TRADE answers by enum inference_no_trade_reason */
    predict_backtest_side model, majority, persistence;
    int majority_class;         /* the period's most frequent realised class, -1: none */
    struct {
        uint64_t n, hits;
        double sum_p;
    } cal[5];                   /* calls by probability: <0.5, 0.5, 0.6, 0.7, >=0.8 */
    predict_backtest_row *rows; /* one per prediction, in time order; owned */
    size_t n_rows;
} predict_backtest;

/*
 * Replays symbol/tf: for each closed candle in [from, to) with a full
 * window before it, the prediction the service computes at that candle's
 * close (predict_one's computation without caches), the ledger row the
 * loop records, and predict_resolve's settlement against the candles
 * after it. Returns 0 with *out filled (free with predict_backtest_cleanup),
 * or PD_ESYMBOL, PD_ETIMEFRAME, PD_ENOMODEL (why says), PD_ENODATA, PD_EDB,
 * PD_ENOMEM. Needs store_init(); runs on the caller's thread.
 */
int predict_backtest_run(predict_service *svc, const predict_backtest_options *o,
                         predict_backtest *out, char *why, size_t whylen);
void predict_backtest_cleanup(predict_backtest *b); /* NULL is a no-op */
/* Appends the figures (not the rows) as one JSON object. */
void predict_backtest_json(const predict_backtest *b, util_buf *out);

/* ===========================================================================
 * The inference loop (loop.c). A background thread LISTENs on
 * predictd_candles and, for each notified series, computes the prediction
 * at once, replaces the cached one (process and Redis), records it in the
 * ledger and publishes it (the stream clients, through opt->deliver, and
 * Redis PUBLISH predictd:predictions). It also resolves the ledger's open
 * predictions and keeps the live accuracy of every model version current.
 */

/* Hands a rendered stream message for symbol/tf to the stream clients;
 * called on the loop's thread, must not block. */
typedef void (*predict_deliver_fn)(void *arg, const char *symbol, const char *tf,
                                   const char *msg, size_t len);

typedef struct predict_loop_options {
    const char *database_url;   /* required */
    const char *redis_url;      /* NULL: no PUBLISH */
    predict_deliver_fn deliver; /* NULL: no stream clients */
    void *deliver_arg;
} predict_loop_options;

/* The loop's state for /health/status. */
typedef struct predict_loop_state {
    const char *state;    /* "listening", "reconnecting", "stopped": static storage */
    const char *role;     /* "leader" (records, settles, publishes) or "follower" */
    int64_t last_run;     /* Unix seconds of the last prediction made; 0: none */
    uint64_t runs;        /* predictions made */
    char last_error[256]; /* "" when none */
} predict_loop_state;

typedef struct predict_loop predict_loop;

/*
 * Starts the loop's thread over svc (which must outlive the loop) with the
 * options' database and Redis URLs, and lends svc a ledger handle
 * for the performance and history routes. The thread connects by itself
 * (and again after losing the database), so a database that is down at
 * start is not an error. Returns 0 and the loop, PD_EINVAL (no or a
 * malformed database URL), PD_ENOMEM, or PD_EIO (no thread).
 */
int predict_loop_start(predict_service *svc, const predict_loop_options *opt, predict_loop **out);

/* Stops and joins the thread (promptly: it never waits longer than one
 * database statement), takes the ledger back from svc and frees the loop.
 * Call after the HTTP service has stopped. NULL is a no-op. */
void predict_loop_stop(predict_loop *loop);

/* The loop's state for /health/status: "listening", "reconnecting" or
 * "stopped", the time of the last prediction it made, how many it made, and
 * the last error ("" when none). Thread-safe. */
void predict_loop_status(predict_loop *loop, predict_loop_state *out);

/*
 * Whether this process is the replicas' leader: it holds the advisory lock
 * STORE_LOCK_KEY_LEADER on the database, so its loop writes the ledger,
 * settles and PUBLISHes, and its retraining schedule runs. false for NULL.
 * Thread-safe (an atomic the loop's thread sets about every second).
 */
bool predict_loop_leader(predict_loop *loop);

/* The channel and payload ('SYMBOL:TF') by which a replica that changed a
 * series in the model repository (a new version, a pin, a label) tells the
 * others; every replica's loop LISTENs on it and rescans the series. */
#define PREDICT_MODELS_CHANNEL "predictd_models"

#endif
