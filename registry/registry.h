/*
 * registry: the model repository. Discovers versions under
 * models/SYMBOL/TF/VERSION/, verifies them (MANIFEST hashes, protobuf parse
 * under a byte budget, shapes, finite weights, known feature specs, golden
 * cases), and serves one version per series (or the one a policy, label or
 * request picks), swapping atomically when a new one verifies.
 *
 * Threading and ownership
 * - registry_acquire() is called by request threads: it takes a reference
 *   under a short lock and returns an immutable registry_version. Every
 *   successful acquire is paired with exactly one registry_release(). A
 *   version is freed when the repository no longer serves it and its last
 *   reference is released.
 * - Scans (the background thread, SIGHUP, the admin reload) are serialised
 *   by the registry; loading and verifying happen outside the lookup lock,
 *   so requests never wait for a load.
 */
#ifndef PREDICTD_REGISTRY_H
#define PREDICTD_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "features/features.h"
#include "inference/inference.h"
#include "proto/model.pb-c.h"

/* Model files above this are refused before parsing. */
#define REGISTRY_MAX_FILE_BYTES (64u << 20)
/* Retired (unloaded, superseded) versions listed per series; older ones on
 * disk are forgotten unless a policy names them. */
#define REGISTRY_KEEP_RETIRED 16
/* The name of the fallback series directory. */
#define REGISTRY_DEFAULT_SYMBOL "_default"

typedef struct registry registry;
typedef struct registry_version registry_version;

/* Training metadata a version carries, as plain values (borrowed from the
 * version: valid while the caller holds its reference). */
typedef struct registry_meta {
    int64_t trained_at;
    int64_t data_from, data_to;
    uint64_t train_samples, test_samples;
    double test_accuracy;     /* NaN when unknown */
    double baseline_accuracy; /* NaN when unknown */
    const char *trainer;
    /* TrainingMeta.metrics as written by the trainer (hit_rate_calls,
     * beats_baseline, bt_expectancy_r, ...): read with registry_meta_metric. */
    struct registry_metric {
        char name[32];
        double value;
    } metrics[96];
    size_t n_metrics;
} registry_meta;

/* The value of the named training metric of m, NaN when the file has none.
 * Thread-safe (the meta of a version is immutable). */
double registry_meta_metric(const registry_meta *m, const char *name);

/* Creates a registry over models_dir. Nothing is loaded until
 * registry_scan(). Returns 0 or PD_ENOMEM / PD_EINVAL. */
int registry_new(const char *models_dir, registry **out);
/* Stops the scanner if running and frees everything. Outstanding
 * references must have been released. NULL is a no-op. */
void registry_free(registry *r);

/*
 * Scans the repository (all series, or one when symbol and tf are given),
 * loads and verifies versions it has not seen, applies policy.json, and
 * swaps what serves. A version that fails verification is recorded with
 * its reason and never served; the serving version stays. Thread-safe;
 * concurrent scans are serialised. Returns 0 (even when some versions
 * failed: see registry_list; and for one series that does not exist, even
 * when the models directory does not) or PD_EIO when the models directory
 * is unreadable (what was loaded keeps serving), PD_EINVAL for a malformed
 * symbol/timeframe or only one of them.
 */
int registry_scan(registry *r, const char *symbol, const char *tf);

/* Starts a thread that scans every interval_s seconds (0: never) and on
 * registry_request_scan(). It does not scan at start: call registry_scan()
 * first for a synchronous initial load. PD_EBUSY when already running,
 * PD_EINVAL for a negative interval. Call from one thread with
 * registry_stop(). */
int registry_start(registry *r, int interval_s);
/* Asks the scanner thread to scan soon (async-signal-safe: SIGHUP). A
 * request made while no thread runs is served once one starts. */
void registry_request_scan(registry *r);
/* Stops and joins the scanner thread (an ongoing scan finishes first).
 * No-op when not running. */
void registry_stop(registry *r);

/* What a request asks for. All fields optional (0 / NULL). */
typedef struct registry_selector {
    uint32_t version;       /* an exact version */
    const char *label;      /* "stable", "canary" */
    const char *client_key; /* hashed to pick canary traffic by its share */
} registry_selector;

/*
 * The version serving symbol/tf for this selector: the series' own, else
 * models/_default/TF/. Returns 0 and a new reference in *out, PD_ENOMODEL
 * when none verified serves (or the asked version/label does not exist),
 * PD_ENOTREADY while the series' first version is still loading (or its
 * load ran out of memory: retried on the next scan),
 * PD_ESYMBOL / PD_ETIMEFRAME for a malformed symbol or timeframe.
 *
 * Selection: sel->version (wins over a label) must name a version that is
 * loaded (serving, pinned or labelled); sel->label "stable"/"canary" the
 * version policy.json labels so; otherwise, when the series has a canary
 * with canary_share > 0 and sel->client_key is given, FNV-1a(client_key)
 * % 100 < share picks the canary (the same key always lands on the same
 * side); else the serving version. Without a series of its own, or when
 * none of its versions serves, the default selection falls back to
 * _default; an explicit version or label does so only when the symbol has
 * no version directories at all. Thread-safe; takes a short lock.
 */
int registry_acquire(registry *r, const char *symbol, const char *tf, const registry_selector *sel,
                     registry_version **out);
/*
 * Verifies and loads version `version` of symbol/tf from disk whatever the
 * registry serves or keeps (for `backtest --version` of an old version):
 * the series' own directory, else _default's when the symbol has none. The
 * version is not added to the registry; *out is the caller's only
 * reference (registry_release frees it). Returns 0, PD_ESYMBOL,
 * PD_ETIMEFRAME, PD_EINVAL, PD_EIO (repository unreadable), PD_ENOMODEL (no
 * such directory), PD_EVERIFY (it fails verification), PD_ENOMEM; a reason
 * in why. Thread-safe; reads files on the calling thread.
 */
int registry_open_version(registry *r, const char *symbol, const char *tf, uint32_t version,
                          registry_version **out, char *why, size_t whylen);
/* Drops a reference; the last one of a version no longer loaded frees it.
 * NULL is a no-op. Thread-safe; never blocks. */
void registry_release(registry_version *v);

/* Accessors; the results are borrowed from v. */
const inference_model *registry_version_model(const registry_version *v);
const features_set *registry_version_features(const registry_version *v);
uint32_t registry_version_number(const registry_version *v);
/* The label the version carries in its series' policy ("stable", "canary")
 * or NULL. */
const char *registry_version_label(const registry_version *v);
/* The series directory it came from: the symbol, or "_default". */
const char *registry_version_owner(const registry_version *v);
const char *registry_version_timeframe(const registry_version *v);
/* Candles one prediction needs: window + steps - 1. */
size_t registry_version_candles(const registry_version *v);
const registry_meta *registry_version_meta(const registry_version *v);
/* sha256 of model.pb, hex. */
const char *registry_version_digest(const registry_version *v);

/* ===========================================================================
 * Listing (admin API, `predictd models`, health). A snapshot, owned by the
 * caller: free with registry_list_free.
 */
typedef enum registry_state {
    REGISTRY_LOADING,
    REGISTRY_AVAILABLE, /* verified; serving or selectable */
    REGISTRY_FAILED,    /* verification failed: see reason */
    REGISTRY_RETIRED    /* removed from disk or superseded and unloaded */
} registry_state;

/* "loading", "available", "failed", "retired"; "unknown" for other values.
 * Static storage. */
const char *registry_state_name(registry_state s);

typedef struct registry_version_info {
    uint32_t version;
    registry_state state;
    bool serving;         /* the default choice for requests */
    char label[16];       /* "" when none */
    char reason[256];     /* why it failed; "" otherwise */
    int64_t loaded_at;    /* Unix seconds; 0 when not loaded */
    double load_ms;       /* time to verify and load */
    double test_accuracy; /* NaN when unknown */
    int64_t trained_at;
    int64_t max_age_s;    /* the signal policy's model expiry, 0 = never or not loaded */
} registry_version_info;

typedef struct registry_series_info {
    char symbol[32]; /* or "_default" */
    char timeframe[8];
    uint32_t pinned;       /* 0 when not pinned */
    uint32_t canary_share; /* percent of traffic to the canary label */
    /* Why policy.json is ignored (malformed: the previous policy stays) or
     * not fully honoured (pinned/labelled version unavailable); "" when
     * all is well. */
    char note[192];
    size_t n_versions;
    registry_version_info *versions; /* ascending */
} registry_series_info;

/* A consistent snapshot of every series seen (sorted by symbol, then
 * timeframe), including versions removed from disk (RETIRED; the last 16
 * per series). Returns 0 or PD_ENOMEM; *out is the caller's. Thread-safe. */
int registry_list(registry *r, registry_series_info **out, size_t *n);
void registry_list_free(registry_series_info *s, size_t n); /* NULL is a no-op */
/* Directories a full scan refused to read: a series or version directory
 * that is a symbolic link (models are read only through real directories,
 * so a link cannot smuggle files from elsewhere in). path is
 * "SYMBOL/TF[/VERSION]" under the models directory. The list is the last
 * full scan's. Returns 0 or PD_ENOMEM; *out (free() it) may be NULL with
 * *n 0. Thread-safe. */
typedef struct registry_refused_info {
    char path[96];
    char reason[128];
} registry_refused_info;
int registry_refused(registry *r, registry_refused_info **out, size_t *n);

/* Counts for readiness: series with a serving version, versions (on disk)
 * failed. Zero serving series means not ready. Thread-safe. */
void registry_counts(registry *r, size_t *serving, size_t *failed);

/* Load outcomes since start, for /metrics. */
typedef struct registry_stats {
    uint64_t loads_ok;
    uint64_t loads_failed;
    uint64_t failed_by_reason[8]; /* indexed by enum registry_fail */
    uint64_t swaps;
    uint64_t scans;
    uint64_t versions_in_memory; /* loaded or still referenced, process-wide */
} registry_stats;
enum registry_fail {
    REGISTRY_FAIL_MANIFEST,
    REGISTRY_FAIL_PARSE,
    REGISTRY_FAIL_SHAPE,
    REGISTRY_FAIL_FEATURES,
    REGISTRY_FAIL_GOLDEN,
    REGISTRY_FAIL_IO,
    REGISTRY_FAIL_OTHER,
    REGISTRY_FAIL_COUNT_
};
/* "manifest", "parse", ...; "unknown" out of range. Static storage. */
const char *registry_fail_name(int reason);
/* Counters since registry_new (atomics: thread-safe, each value exact, the
 * set not one snapshot). NULL r zeroes *out. */
void registry_stats_get(registry *r, registry_stats *out);

/* A number that changes whenever what serves some series changes (a swap,
 * a series losing its last version): a cheap "may anything be answered
 * differently now" for caches of negative answers. Lock-free. */
uint64_t registry_generation(registry *r);

/* ===========================================================================
 * Policy changes (admin API). Each rewrites the series' policy.json
 * atomically (keeping keys it does not know) and rescans it. PD_ENOTFOUND
 * when the series or version does not exist; PD_EVERIFY when pinning or
 * labelling a version that failed, or that fails when loaded (the previous
 * policy.json is then put back). Serialised with scans; thread-safe.
 *
 * policy.json: {"pinned": 3, "labels": {"stable": 3, "canary": 4},
 * "canary_share": 10}, every key optional. The pinned version serves
 * instead of the highest; while it is unavailable the previous choice
 * keeps serving (note in registry_series_info). A malformed file is
 * ignored with its reason and the previous policy kept.
 */
int registry_pin(registry *r, const char *symbol, const char *tf, uint32_t version);
int registry_unpin(registry *r, const char *symbol, const char *tf);
/* label: "stable" or "canary"; version 0 removes the label. canary_share:
 * percent (0..100) of clients sent to the canary, ignored for "stable". */
int registry_set_label(registry *r, const char *symbol, const char *tf, const char *label,
                       uint32_t version, int canary_share);

/*
 * Telling other processes. A hook called after this process changed a
 * series on disk: a successful pin, unpin or label change (from the thread
 * that made it), and registry_announce() (what a publisher calls after it
 * published a version). server/ sets it to NOTIFY the other replicas; the
 * registry itself talks no SQL. The hook must be quick and thread-safe.
 * Set it before any other thread uses the registry.
 */
typedef void (*registry_change_fn)(void *arg, const char *symbol, const char *tf);
void registry_set_change_hook(registry *r, registry_change_fn fn, void *arg);
/* Calls the hook for symbol/tf (no-op without a hook, for a NULL registry
 * or a malformed name). Thread-safe. */
void registry_announce(registry *r, const char *symbol, const char *tf);

/* ===========================================================================
 * Files.
 */
/*
 * Verifies one version directory on its own (`predictd models verify DIR`,
 * tools' tests): MANIFEST, parse, shapes, features, golden cases. Returns 0,
 * PD_EVERIFY with the reason in why, or PD_ENOMEM (why: out of memory).
 */
int registry_verify_dir(const char *dir, char *why, size_t whylen);

/*
 * Publishes a new version of symbol/tf: writes model.pb, scaler.pb and
 * MANIFEST into a hidden temporary directory, fsyncs, and renames it to the
 * next free version number (one more than the highest present). Sets
 * model->meta->version to that number before writing when meta is present.
 * Returns 0 and the number in *version, or PD_EIO / PD_EINVAL.
 */
int registry_publish(const char *models_dir, const char *symbol, const char *tf,
                     Predictd__Model *model, const Predictd__Scaler *scaler, uint32_t *version);

/* Reads and unpacks a model or scaler file under REGISTRY_MAX_FILE_BYTES
 * with a counting allocator (at most 16x the file size + 1 MiB, capped at
 * 1 GiB); free with the matching protobuf-c free_unpacked (allocator NULL).
 * The last path component is not followed if it is a symlink.
 * PD_EPARSE / PD_ETOOBIG / PD_EIO / PD_ENOTFOUND / PD_ENOMEM, with the reason
 * in why. */
int registry_read_model(const char *path, Predictd__Model **out, char *why, size_t whylen);
int registry_read_scaler(const char *path, Predictd__Scaler **out, char *why, size_t whylen);

#endif
