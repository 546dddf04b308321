/*
 * util.c: error texts, clocks, timeframes, symbols, string buffers, JSON
 * writing and file helpers. See util.h.
 *
 * DESIGN: kept free of every other predictd module so it can be linked into
 * any test or tool. No mutable statics but the log configuration, which is
 * written once before threads start.
 */
#define _GNU_SOURCE
#include "util/util.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* One row per code, indexed by -code, generated from PD_ERRNO_MAP. */
static const struct {
    const char *code;
    const char *text;
    int status;
} err_table[PD_ERR_COUNT_] = {
#define PD_ERR_ROW(name, value, code, text, status) [-(value)] = {code, text, status},
    PD_ERRNO_MAP(PD_ERR_ROW)
#undef PD_ERR_ROW
};

/* The list must be dense from 0 down to -(PD_ERR_COUNT_ - 1). */
#define PD_ERR_ONE(name, value, code, text, status) +1
_Static_assert(0 PD_ERRNO_MAP(PD_ERR_ONE) == PD_ERR_COUNT_, "PD_ERRNO_MAP and PD_ERR_COUNT_ disagree");
#undef PD_ERR_ONE

const char *util_strerror(int err)
{
    int i = -err;
    if (i < 0 || i >= PD_ERR_COUNT_)
        return "unknown error";
    return err_table[i].text;
}

const char *util_err_code(int err)
{
    int i = -err;
    if (i < 0 || i >= PD_ERR_COUNT_)
        return "internal_error";
    return err_table[i].code;
}

int util_err_status(int err)
{
    int i = -err;
    if (i < 0 || i >= PD_ERR_COUNT_)
        return 500;
    return err_table[i].status;
}

/* ------------------------------------------------------------------------ */

static enum util_log_level log_level = UTIL_LOG_INFO;
static bool log_json;
static _Thread_local char log_request_id[64];

void util_log_configure(enum util_log_level level, bool json)
{
    log_level = level;
    log_json = json;
}

bool util_log_enabled(enum util_log_level level)
{
    return level >= log_level;
}

void util_log_set_request_id(const char *id)
{
    if (!id) {
        log_request_id[0] = '\0';
        return;
    }
    snprintf(log_request_id, sizeof log_request_id, "%s", id);
}

void util_log_write(enum util_log_level level, const char *module, const char *fmt, ...)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[64];
    snprintf(when, sizeof when, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);

    util_buf b;
    util_buf_init(&b);
    if (log_json) {
        util_buf_puts(&b, "{\"time\":");
        util_json_str(&b, when);
        util_buf_puts(&b, ",\"level\":");
        util_json_str(&b, names[level]);
        util_buf_puts(&b, ",\"module\":");
        util_json_str(&b, module);
        if (log_request_id[0]) {
            util_buf_puts(&b, ",\"request_id\":");
            util_json_str(&b, log_request_id);
        }
        util_buf_puts(&b, ",\"msg\":");
        util_json_str(&b, msg);
        util_buf_puts(&b, "}\n");
    } else {
        /* one event, one line: control characters (a newline in a message
         * from a library, say) must not start a forged line */
        for (char *p = msg; *p; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f)
                *p = ' ';
        util_buf_printf(&b, "%s %-5s %-9s ", when, names[level], module);
        if (log_request_id[0])
            util_buf_printf(&b, "[%s] ", log_request_id);
        util_buf_puts(&b, msg);
        util_buf_puts(&b, "\n");
    }
    if (util_buf_ok(&b))
        (void)!write(STDERR_FILENO, b.data, b.len); /* one write: lines do not interleave */
    util_buf_cleanup(&b);
}

/* ------------------------------------------------------------------------ */

int64_t util_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec;
}

double util_now_precise(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

uint64_t util_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

char *util_rfc3339(int64_t t, char buf[static 32])
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (!gmtime_r(&tt, &tm)) {
        snprintf(buf, 32, "1970-01-01T00:00:00Z");
        return buf;
    }
    if (strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(buf, 32, "1970-01-01T00:00:00Z");
    return buf;
}

static int digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)**p))
            return -1;
        v = v * 10 + (**p - '0');
        (*p)++;
    }
    *out = v;
    return 0;
}

int util_parse_time(const char *s, int64_t *out)
{
    int y, mo, d, h = 0, mi = 0, sec = 0;
    const char *p = s;
    if (digits(&p, 4, &y) || *p++ != '-' || digits(&p, 2, &mo) || *p++ != '-' ||
        digits(&p, 2, &d))
        return PD_EINVAL;
    if (*p == 'T' || *p == 't' || *p == ' ') {
        p++;
        if (digits(&p, 2, &h) || *p++ != ':' || digits(&p, 2, &mi))
            return PD_EINVAL;
        if (*p == ':') {
            p++;
            if (digits(&p, 2, &sec))
                return PD_EINVAL;
        }
        if (*p == '.') {
            p++;
            if (!isdigit((unsigned char)*p))
                return PD_EINVAL;
            while (isdigit((unsigned char)*p))
                p++;
        }
    }
    int64_t offset = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p == '-' ? -1 : 1, oh, om;
        p++;
        if (digits(&p, 2, &oh))
            return PD_EINVAL;
        if (*p == ':')
            p++;
        if (digits(&p, 2, &om))
            return PD_EINVAL;
        offset = sign * (oh * 3600 + om * 60);
    }
    if (*p != '\0')
        return PD_EINVAL;
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
        return PD_EINVAL;
    /* days from civil (Howard Hinnant's algorithm) */
    int64_t yy = y - (mo <= 2);
    int64_t era = (yy >= 0 ? yy : yy - 399) / 400;
    int64_t yoe = yy - era * 400;
    int64_t doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    int64_t days = era * 146097 + doe - 719468;
    *out = days * 86400 + h * 3600 + mi * 60 + sec - offset;
    return 0;
}

static const struct {
    const char *name;
    int64_t seconds;
} timeframes[] = {{"1m", 60}, {"5m", 300}, {"15m", 900}, {"1h", 3600}, {"4h", 14400}, {"1d", 86400}};

int64_t util_tf_seconds(const char *tf)
{
    if (!tf)
        return 0;
    for (size_t i = 0; i < sizeof timeframes / sizeof timeframes[0]; i++)
        if (strcmp(tf, timeframes[i].name) == 0)
            return timeframes[i].seconds;
    return 0;
}

const char *util_tf_list(void)
{
    return "1m,5m,15m,1h,4h,1d";
}

int64_t util_tf_last_closed_open(int64_t now, int64_t tf)
{
    int64_t cur_open = now - ((now % tf) + tf) % tf; /* open of the candle in progress */
    return cur_open - tf;
}

bool util_symbol_valid(const char *s)
{
    if (!s)
        return false;
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) || n >= 20)
            return false;
    }
    return n >= 2;
}

/* ------------------------------------------------------------------------ */

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(util_sha256 *s, const uint8_t *p)
{
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3], e = s->h[4], f = s->h[5],
             g = s->h[6], h = s->h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t S1 = ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25);
        uint32_t ch = (e & f) ^ (~e & g);
        uint32_t t1 = h + S1 + ch + K256[i] + w[i];
        uint32_t S0 = ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22);
        uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
        uint32_t t2 = S0 + maj;
        h = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    s->h[0] += a;
    s->h[1] += b;
    s->h[2] += c;
    s->h[3] += d;
    s->h[4] += e;
    s->h[5] += f;
    s->h[6] += g;
    s->h[7] += h;
}

void util_sha256_init(util_sha256 *s)
{
    static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, iv, sizeof iv);
    s->len = 0;
    s->used = 0;
}

void util_sha256_update(util_sha256 *s, const void *data, size_t n)
{
    const uint8_t *p = data;
    s->len += n;
    while (n > 0) {
        size_t take = 64 - s->used;
        if (take > n)
            take = n;
        memcpy(s->buf + s->used, p, take);
        s->used += take;
        p += take;
        n -= take;
        if (s->used == 64) {
            sha256_block(s, s->buf);
            s->used = 0;
        }
    }
}

void util_sha256_final(util_sha256 *s, uint8_t out[32])
{
    uint64_t bits = s->len * 8;
    uint8_t pad = 0x80;
    util_sha256_update(s, &pad, 1);
    uint8_t zero = 0;
    while (s->used != 56)
        util_sha256_update(s, &zero, 1);
    uint8_t lenb[8];
    for (int i = 0; i < 8; i++)
        lenb[i] = (uint8_t)(bits >> (56 - 8 * i));
    util_sha256_update(s, lenb, 8);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(s->h[i] >> 24);
        out[4 * i + 1] = (uint8_t)(s->h[i] >> 16);
        out[4 * i + 2] = (uint8_t)(s->h[i] >> 8);
        out[4 * i + 3] = (uint8_t)s->h[i];
    }
}

void util_sha256_hex(const void *data, size_t n, char out[65])
{
    util_sha256 s;
    uint8_t d[32];
    util_sha256_init(&s);
    util_sha256_update(&s, data, n);
    util_sha256_final(&s, d);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

/* ------------------------------------------------------------------------ */

void util_buf_init(util_buf *b)
{
    b->data = NULL;
    b->len = b->cap = 0;
    b->oom = false;
}

void util_buf_cleanup(util_buf *b)
{
    free(b->data);
    util_buf_init(b);
}

void util_buf_reset(util_buf *b)
{
    b->len = 0;
    b->oom = false;
    if (b->data)
        b->data[0] = '\0';
}

bool util_buf_ok(const util_buf *b)
{
    return !b->oom && b->data != NULL;
}

static bool buf_reserve(util_buf *b, size_t extra)
{
    if (b->oom)
        return false;
    if (b->len + extra + 1 <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 1024; /* one allocation holds a typical answer */
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p) {
        b->oom = true;
        return false;
    }
    b->data = p;
    b->cap = cap;
    return true;
}

void util_buf_append(util_buf *b, const char *s, size_t n)
{
    if (!buf_reserve(b, n))
        return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void util_buf_puts(util_buf *b, const char *s)
{
    util_buf_append(b, s, strlen(s));
}

void util_buf_printf(util_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char small[256];
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof small) {
        util_buf_append(b, small, (size_t)n);
        return;
    }
    if (!buf_reserve(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

char *util_buf_steal(util_buf *b)
{
    if (b->oom || !b->data) {
        util_buf_cleanup(b);
        return NULL;
    }
    char *s = b->data;
    util_buf_init(b);
    return s;
}

void util_json_str(util_buf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    util_buf_append(b, "\"", 1);
    const char *run = s;
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        util_buf_append(b, run, (size_t)(p - run));
        run = p + 1;
        char esc[7] = {'\\', 0};
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
        }
        util_buf_puts(b, esc);
    }
    util_buf_puts(b, run);
    util_buf_append(b, "\"", 1);
}

void util_json_num(util_buf *b, double v)
{
    if (!isfinite(v)) {
        util_buf_append(b, "null", 4);
        return;
    }
    if (v == (double)(int64_t)v && fabs(v) < 1e15) {
        util_buf_printf(b, "%lld", (long long)v);
        return;
    }
    util_buf_printf(b, "%.10g", v);
}

void util_json_fixed(util_buf *b, double v, int decimals)
{
    if (!isfinite(v)) {
        util_buf_append(b, "null", 4);
        return;
    }
    util_buf_printf(b, "%.*f", decimals, v);
}

void util_json_key(util_buf *b, const char *key)
{
    util_buf_append(b, "\"", 1);
    util_buf_puts(b, key);
    util_buf_append(b, "\":", 2);
}

/* ------------------------------------------------------------------------ */

int util_read_file(const char *path, size_t max, char **out, size_t *len)
{
    /* O_NONBLOCK: opening a FIFO must not wait for a writer (it is then
     * refused as not a regular file); reads of a regular file ignore it */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0)
        return errno == ENOENT ? PD_ENOTFOUND : PD_EIO;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return PD_EIO;
    }
    if ((size_t)st.st_size > max) {
        close(fd);
        return PD_ETOOBIG;
    }
    size_t cap = (size_t)st.st_size + 1, n = 0;
    char *buf = malloc(cap);
    if (!buf) {
        close(fd);
        return PD_ENOMEM;
    }
    for (;;) {
        if (n + 1 >= cap) { /* the buffer is full: at the end, or the file grew */
            if (n >= max) {
                /* exactly max bytes is allowed: too big only if more follow */
                char extra;
                ssize_t r = read(fd, &extra, 1);
                if (r < 0 && errno == EINTR)
                    continue;
                if (r == 0)
                    break;
                free(buf);
                close(fd);
                return r < 0 ? PD_EIO : PD_ETOOBIG;
            }
            char *p = realloc(buf, cap * 2);
            if (!p) {
                free(buf);
                close(fd);
                return PD_ENOMEM;
            }
            buf = p;
            cap *= 2;
        }
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            free(buf);
            close(fd);
            return PD_EIO;
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n > max) {
            free(buf);
            close(fd);
            return PD_ETOOBIG;
        }
    }
    close(fd);
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

int util_write_file_atomic(const char *path, const void *data, size_t n, int mode)
{
    char tmp[4096];
    const char *slash = strrchr(path, '/');
    int dirlen = slash ? (int)(slash - path) : 1;
    const char *dir = slash ? path : ".";
    if (snprintf(tmp, sizeof tmp, "%.*s/.%s.tmp.%d", dirlen, dir, slash ? slash + 1 : path,
                 (int)getpid()) >= (int)sizeof tmp)
        return PD_EINVAL;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return PD_EIO;
    const char *p = data;
    size_t left = n;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            close(fd);
            unlink(tmp);
            return PD_EIO;
        }
        p += w;
        left -= (size_t)w;
    }
    /* closed whatever fchmod or fsync say: a failed fsync must not leak
     * the descriptor */
    bool bad = fchmod(fd, (mode_t)mode) != 0 || fsync(fd) != 0;
    if (close(fd) != 0 || bad) {
        unlink(tmp);
        return PD_EIO;
    }
    if (rename(tmp, path) != 0) {
        unlink(tmp);
        return PD_EIO;
    }
    return 0;
}

int util_rmtree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? 0 : PD_EIO;
    if (!S_ISDIR(st.st_mode))
        return unlink(path) == 0 ? 0 : PD_EIO;
    DIR *d = opendir(path);
    if (!d)
        return PD_EIO;
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char child[4096];
        if (snprintf(child, sizeof child, "%s/%s", path, e->d_name) >= (int)sizeof child) {
            rc = PD_EINVAL;
            continue;
        }
        int r = util_rmtree(child);
        if (r)
            rc = r;
    }
    closedir(d);
    if (rmdir(path) != 0 && rc == 0)
        rc = PD_EIO;
    return rc;
}

/* ------------------------------------------------------------------------
 * PRNG and hash.
 */
uint64_t util_splitmix64(uint64_t *x)
{
    uint64_t z = (*x += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

void util_rng_seed(util_rng *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        r->s[i] = util_splitmix64(&x);
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t util_rng_next(util_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double util_rng_uniform(util_rng *r)
{
    return (double)(util_rng_next(r) >> 11) * 0x1.0p-53;
}

uint32_t util_fnv1a(uint32_t h, const char *s)
{
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

uint32_t util_fnv1a_bytes(uint32_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 16777619u;
    return h;
}

uint32_t util_fnv1a_u32(uint32_t h, uint32_t v)
{
    return (h ^ v) * 16777619u;
}

/* ------------------------------------------------------------------------
 * Locks that know their owner.
 */
static unsigned long self_id(void)
{
    return (unsigned long)pthread_self();
}

int util_mutex_init(util_mutex *m)
{
    atomic_init(&m->owner, 0);
    return pthread_mutex_init(&m->m, NULL) == 0 ? 0 : PD_ENOMEM;
}

void util_mutex_destroy(util_mutex *m)
{
    pthread_mutex_destroy(&m->m);
}

void util_mutex_lock(util_mutex *m)
{
    pthread_mutex_lock(&m->m);
    atomic_store_explicit(&m->owner, self_id(), memory_order_relaxed);
}

void util_mutex_unlock(util_mutex *m)
{
    assert(util_mutex_held(m));
    atomic_store_explicit(&m->owner, 0, memory_order_relaxed);
    pthread_mutex_unlock(&m->m);
}

bool util_mutex_held(const util_mutex *m)
{
    return atomic_load_explicit(&m->owner, memory_order_relaxed) == self_id();
}

int util_rwlock_init(util_rwlock *l)
{
    atomic_init(&l->writer, 0);
    return pthread_rwlock_init(&l->l, NULL) == 0 ? 0 : PD_ENOMEM;
}

void util_rwlock_destroy(util_rwlock *l)
{
    pthread_rwlock_destroy(&l->l);
}

void util_rwlock_rdlock(util_rwlock *l)
{
    pthread_rwlock_rdlock(&l->l);
}

void util_rwlock_wrlock(util_rwlock *l)
{
    pthread_rwlock_wrlock(&l->l);
    atomic_store_explicit(&l->writer, self_id(), memory_order_relaxed);
}

void util_rwlock_unlock(util_rwlock *l)
{
    if (atomic_load_explicit(&l->writer, memory_order_relaxed) == self_id())
        atomic_store_explicit(&l->writer, 0, memory_order_relaxed);
    pthread_rwlock_unlock(&l->l);
}

bool util_rwlock_write_held(const util_rwlock *l)
{
    return atomic_load_explicit(&l->writer, memory_order_relaxed) == self_id();
}

int util_hex_value(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}
