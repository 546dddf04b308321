/*
 * util: what every module of predictd shares and nothing else: the project
 * error codes and their one strerror, the log macros, clocks and timeframe
 * arithmetic, SHA-256, a growable string buffer with a JSON writer, and
 * symbol/timeframe validation.
 *
 * util depends on nothing of predictd's and does no I/O but logging to
 * stderr. Every function here is thread-safe unless its comment says not.
 */
#ifndef PREDICTD_UTIL_H
#define PREDICTD_UTIL_H

#include <assert.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---------------------------------------------------------------------------
 * Errors. Functions return 0 on success or one of these (negative). The one
 * list below is the only place a code is defined: the enum, the JSON code
 * string, the text and the HTTP status are all generated from it.
 *
 *   X(NAME, value, "json_code", "text", http_status)
 */
#define PD_ERRNO_MAP(X)                                                                            \
    X(OK, 0, "ok", "success", 200)                                                                 \
    X(ENOMEM, -1, "out_of_memory", "out of memory", 500)                                           \
    X(EINVAL, -2, "invalid_argument", "invalid argument", 400)                                     \
    X(EIO, -3, "io_error", "input/output error", 500)                                              \
    X(ENOTFOUND, -4, "not_found", "not found", 404)                                                \
    X(EDB, -5, "data_unavailable", "database unavailable", 503)                                    \
    X(ECACHE, -6, "cache_unavailable", "cache unavailable", 503)                                   \
    X(ENODATA, -7, "insufficient_data", "not enough candles for the features", 503)                \
    X(ENOMODEL, -8, "no_model", "no verified model for this series", 404)                          \
    X(EVERIFY, -9, "model_invalid", "model failed verification", 422)                              \
    X(ETIMEFRAME, -10, "invalid_timeframe", "invalid timeframe", 400)                              \
    X(ESYMBOL, -11, "invalid_symbol", "invalid symbol", 400)                                       \
    X(EUNKNOWNSYM, -12, "unknown_symbol", "unknown symbol", 404)                                   \
    X(ETOOBIG, -13, "too_large", "input too large", 413)                                           \
    X(EAUTH, -14, "unauthorized", "missing or invalid credentials", 401)                           \
    X(ERATE, -15, "rate_limited", "rate limited", 429)                                             \
    X(EBUSY, -16, "busy", "resource busy", 409)                                                    \
    X(ECANCELED, -17, "canceled", "operation cancelled", 500)                                      \
    X(ENOTREADY, -18, "not_ready", "service not ready", 503)                                       \
    X(EPARSE, -19, "parse_error", "malformed input", 400)                                          \
    X(EINTERNAL, -20, "internal_error", "internal error", 500)                                     \
    X(EMETHOD, -21, "method_not_allowed", "method not allowed", 405)                               \
    X(EORIGIN, -22, "origin_not_allowed", "origin not allowed", 403)

enum {
#define PD_ERR_ENUM(name, value, code, text, status) PD_##name = value,
    PD_ERRNO_MAP(PD_ERR_ENUM)
#undef PD_ERR_ENUM
    PD_ERR_COUNT_ = 23
};

/* Human-readable text for an error code. Never NULL, static storage. */
const char *util_strerror(int err);
/* Stable snake_case code for JSON bodies and metrics ("data_unavailable");
 * "internal_error" for a value outside the list. */
const char *util_err_code(int err);
/* The HTTP status an error answers with (200 for PD_OK, 500 outside the list). */
int util_err_status(int err);

/* ---------------------------------------------------------------------------
 * Logging: one line per event on stderr, text or JSON. The level is checked
 * before any formatting. Never log a secret. */
enum util_log_level { UTIL_LOG_DEBUG, UTIL_LOG_INFO, UTIL_LOG_WARN, UTIL_LOG_ERROR };

/* Set once at start-up, before threads start. json: one JSON object a line. */
void util_log_configure(enum util_log_level level, bool json);
bool util_log_enabled(enum util_log_level level);
/* Per-thread request id included in every line this thread logs; NULL clears.
 * The string is copied. */
void util_log_set_request_id(const char *id);
void util_log_write(enum util_log_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define PD_LOG_(lvl, mod, ...)                                                                     \
    do {                                                                                           \
        if (util_log_enabled(lvl))                                                                 \
            util_log_write(lvl, mod, __VA_ARGS__);                                                 \
    } while (0)
#define LOG_DEBUG(mod, ...) PD_LOG_(UTIL_LOG_DEBUG, mod, __VA_ARGS__)
#define LOG_INFO(mod, ...) PD_LOG_(UTIL_LOG_INFO, mod, __VA_ARGS__)
#define LOG_WARN(mod, ...) PD_LOG_(UTIL_LOG_WARN, mod, __VA_ARGS__)
#define LOG_ERROR(mod, ...) PD_LOG_(UTIL_LOG_ERROR, mod, __VA_ARGS__)

/* ---------------------------------------------------------------------------
 * Time. Candle times are Unix seconds (UTC). */
int64_t util_now(void);          /* wall clock, seconds */
double util_now_precise(void);   /* wall clock, seconds with fraction */
uint64_t util_mono_ns(void);     /* monotonic nanoseconds */

/* Writes "2024-01-02T03:04:05Z" (21 bytes with NUL) into buf. Thread-safe
 * (gmtime_r). Returns buf. */
char *util_rfc3339(int64_t t, char buf[static 32]);
/* Parses RFC 3339 ("...Z" or "+hh:mm", optional fraction, or a space for
 * 'T'), or a date "YYYY-MM-DD". Returns 0 and writes *out, or PD_EINVAL. */
int util_parse_time(const char *s, int64_t *out);

/* Timeframes: 1m 5m 15m 1h 4h 1d. Returns the length in seconds, or 0 when
 * tf is not one of them. */
int64_t util_tf_seconds(const char *tf);
/* The comma-separated list of valid timeframes, for error messages. */
const char *util_tf_list(void);
/* Open time of the last candle whose close time is <= now. */
int64_t util_tf_last_closed_open(int64_t now, int64_t tf_seconds);

/* Symbols match ^[A-Z0-9]{2,20}$. */
bool util_symbol_valid(const char *s);

/* ---------------------------------------------------------------------------
 * Locks that know their owner, so "caller holds X" is an assert, not only a
 * comment (UTIL_ASSERT_HELD). A util_mutex is a pthread mutex plus the id
 * of the thread holding it; a util_rwlock tracks its writer (readers are
 * not tracked). The bookkeeping is one relaxed atomic store per lock and
 * unlock. Not for use with pthread_cond_wait (its owner would go stale).
 */
typedef struct util_mutex {
    pthread_mutex_t m;
    _Atomic unsigned long owner; /* pthread_self() of the holder, 0: free */
} util_mutex;
int util_mutex_init(util_mutex *m);
void util_mutex_destroy(util_mutex *m);
void util_mutex_lock(util_mutex *m);
void util_mutex_unlock(util_mutex *m);
/* True when the calling thread holds m. */
bool util_mutex_held(const util_mutex *m);

typedef struct util_rwlock {
    pthread_rwlock_t l;
    _Atomic unsigned long writer; /* pthread_self() of the writer, 0: none */
} util_rwlock;
int util_rwlock_init(util_rwlock *l);
void util_rwlock_destroy(util_rwlock *l);
void util_rwlock_rdlock(util_rwlock *l);
void util_rwlock_wrlock(util_rwlock *l);
void util_rwlock_unlock(util_rwlock *l);
/* True when the calling thread holds l for writing. */
bool util_rwlock_write_held(const util_rwlock *l);

#define UTIL_ASSERT_HELD(m) assert(util_mutex_held(m))
#define UTIL_ASSERT_WRITE_HELD(l) assert(util_rwlock_write_held(l))

/* ---------------------------------------------------------------------------
 * A seeded PRNG and a string hash, shared so no module keeps its own copy.
 *
 * util_rng is xoshiro256** (Blackman & Vigna) seeded through splitmix64: the
 * same seed gives the same stream on every platform, which the demo seed and
 * the trainer's bit-for-bit reproducibility rely on. Not for secrets. One
 * generator belongs to one thread at a time.
 */
typedef struct util_rng {
    uint64_t s[4];
} util_rng;
void util_rng_seed(util_rng *r, uint64_t seed);
/* splitmix64: advances *state and returns the next output (the seeder). */
uint64_t util_splitmix64(uint64_t *state);
uint64_t util_rng_next(util_rng *r);
/* Uniform in [0, 1) with 53 bits. */
double util_rng_uniform(util_rng *r);

/* The value of a hexadecimal digit (either case), -1 for any other byte. */
int util_hex_value(int c);

/* FNV-1a, 32 bits: util_fnv1a(UTIL_FNV1A_INIT, s) hashes a string; pass a
 * previous result as h to hash several strings as one. For hash tables and
 * buckets, never for anything an attacker could exploit by collisions
 * beyond a slower lookup. */
#define UTIL_FNV1A_INIT 2166136261u
uint32_t util_fnv1a(uint32_t h, const char *s);
/* The same over n bytes (NULs included). */
uint32_t util_fnv1a_bytes(uint32_t h, const void *p, size_t n);
/* One more 32-bit value folded into h (FNV-1a step). */
uint32_t util_fnv1a_u32(uint32_t h, uint32_t v);

/* ---------------------------------------------------------------------------
 * SHA-256 (FIPS 180-4). */
typedef struct util_sha256 {
    uint32_t h[8];
    uint64_t len;
    uint8_t buf[64];
    size_t used;
} util_sha256;
void util_sha256_init(util_sha256 *s);
void util_sha256_update(util_sha256 *s, const void *data, size_t n);
void util_sha256_final(util_sha256 *s, uint8_t out[32]);
/* Hex digest (64 chars + NUL) of data. */
void util_sha256_hex(const void *data, size_t n, char out[65]);

/* ---------------------------------------------------------------------------
 * Growable string buffer. A failed allocation sets oom and later appends do
 * nothing, so callers check once at the end (util_buf_ok). */
typedef struct util_buf {
    char *data;   /* NUL-terminated while len < cap */
    size_t len;
    size_t cap;
    bool oom;
} util_buf;

void util_buf_init(util_buf *b);
void util_buf_cleanup(util_buf *b);
void util_buf_reset(util_buf *b); /* len = 0, keeps the memory */
bool util_buf_ok(const util_buf *b);
void util_buf_append(util_buf *b, const char *s, size_t n);
void util_buf_puts(util_buf *b, const char *s);
void util_buf_printf(util_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Hands the string to the caller (free() it) and resets b. NULL if oom. */
char *util_buf_steal(util_buf *b);

/* JSON writing helpers on a util_buf: a quoted, escaped string; a number
 * (non-finite values are written as null); a fixed-precision number. */
void util_json_str(util_buf *b, const char *s);
void util_json_num(util_buf *b, double v);
void util_json_fixed(util_buf *b, double v, int decimals);
/* "key": prefix including the colon, key must not need escaping. */
void util_json_key(util_buf *b, const char *key);

/* ---------------------------------------------------------------------------
 * Files. */
/* Reads a whole file of at most max bytes. Returns 0 and a malloc'd buffer
 * (NUL-terminated, *len without the NUL), PD_ETOOBIG, PD_ENOTFOUND or PD_EIO
 * (also for anything but a regular file: a symlink, a directory, a FIFO, which
 * is refused without waiting for a writer). */
int util_read_file(const char *path, size_t max, char **out, size_t *len);
/* Writes data to path via a temporary file in the same directory, fsync and
 * rename, so readers see the old or the new content, never a torn one. */
int util_write_file_atomic(const char *path, const void *data, size_t n, int mode);
/* Removes a directory tree (no symlinks followed). */
int util_rmtree(const char *path);

#endif
