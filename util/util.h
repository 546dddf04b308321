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

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---------------------------------------------------------------------------
 * Errors. Functions return 0 on success or one of these (negative). The api
 * module maps each to an HTTP status and a stable JSON code string
 * (util_err_code()).
 */
enum {
    PD_OK = 0,
    PD_ENOMEM = -1,         /* allocation failed */
    PD_EINVAL = -2,         /* bad argument or input */
    PD_EIO = -3,            /* file or socket I/O failed */
    PD_ENOTFOUND = -4,      /* no such thing */
    PD_EDB = -5,            /* PostgreSQL unavailable or failed */
    PD_ECACHE = -6,         /* Redis unavailable or failed */
    PD_ENODATA = -7,        /* not enough candles for the features */
    PD_ENOMODEL = -8,       /* no verified model for the series */
    PD_EVERIFY = -9,        /* a model version failed verification */
    PD_ETIMEFRAME = -10,    /* unknown or malformed timeframe */
    PD_ESYMBOL = -11,       /* malformed symbol */
    PD_EUNKNOWNSYM = -12,   /* well-formed symbol with no candles */
    PD_ETOOBIG = -13,       /* input over a size limit */
    PD_EAUTH = -14,         /* missing or wrong credentials */
    PD_ERATE = -15,         /* rate limited */
    PD_EBUSY = -16,         /* resource busy (a job already runs, ...) */
    PD_ECANCELED = -17,     /* operation cancelled */
    PD_ENOTREADY = -18,     /* service not ready (draining, warming up) */
    PD_EPARSE = -19,        /* malformed file or message */
    PD_EINTERNAL = -20,     /* a bug: an invariant did not hold */
    PD_ERR_COUNT_ = 21
};

/* Human-readable text for an error code. Never NULL, static storage. */
const char *util_strerror(int err);
/* Stable snake_case code for JSON bodies and metrics ("data_unavailable"). */
const char *util_err_code(int err);

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
 * (NUL-terminated, *len without the NUL), PD_ETOOBIG, PD_ENOTFOUND or PD_EIO. */
int util_read_file(const char *path, size_t max, char **out, size_t *len);
/* Writes data to path via a temporary file in the same directory, fsync and
 * rename, so readers see the old or the new content, never a torn one. */
int util_write_file_atomic(const char *path, const void *data, size_t n, int mode);
/* Removes a directory tree (no symlinks followed). */
int util_rmtree(const char *path);

#endif
