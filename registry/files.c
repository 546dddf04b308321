/*
 * registry/files.c: the registry's files. Reads a version directory and
 * verifies it (MANIFEST in `sha256sum` format, model.pb and scaler.pb
 * unpacked under a memory budget, feature specs resolved, the kernel built,
 * the window checked against the features, golden cases reproduced), and
 * publishes a new version atomically (hidden temporary directory, fsync,
 * rename to the next free number).
 *
 * What it does not do: decide what serves, keep state between calls, or
 * follow symlinks. Scanning, policy and swapping live in registry.c.
 *
 * DESIGN
 * - Files are opened relative to a directory descriptor with O_NOFOLLOW, so
 *   a symlink planted in a version directory is refused rather than
 *   followed, and a path is never built from an unvalidated name.
 * - Sizes are bounded twice: a file over REGISTRY_MAX_FILE_BYTES is refused
 *   before reading (fstat), and protobuf-c unpacks through a counting
 *   allocator that refuses to allocate more than a budget proportional to
 *   the file size, so a small hostile file that declares huge repeated
 *   fields cannot blow up memory.
 * - The unpacked messages are freed with the default allocator (NULL): the
 *   counting allocator allocates with malloc, so that is correct.
 *
 * Threading: every function here is thread-safe and touches no shared state
 * except the atomic counter registry__versions_live.
 */
#define _GNU_SOURCE
#include "registry/registry_internal.h"

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

#include "util/util.h"

#define MOD "registry"

atomic_long registry__versions_live;

/* Budget for one unpack: 16x the file plus 1 MiB, capped at 1 GiB. Real
 * model files unpack to about their own size (doubles are 8 bytes on the
 * wire and in memory); only degenerate inputs (thousands of empty
 * sub-messages) approach the factor. */
#define UNPACK_FACTOR 16u
#define UNPACK_SLACK (1u << 20)
#define UNPACK_CAP ((size_t)1 << 30)

static const char *const file_names[3] = {"model.pb", "scaler.pb", "MANIFEST"};

/* ------------------------------------------------------------------------
 * Small helpers.
 */

uint32_t registry__parse_version(const char *name)
{
    if (!name || name[0] < '1' || name[0] > '9')
        return 0;
    uint64_t v = 0;
    for (const char *p = name; *p; p++) {
        if (*p < '0' || *p > '9')
            return 0;
        v = v * 10 + (uint64_t)(*p - '0');
        if (v > REGISTRY__MAX_VERSION)
            return 0;
    }
    return (uint32_t)v;
}

int registry__read_at(int dirfd, const char *name, size_t max, char **out, size_t *len)
{
    /* O_NONBLOCK: opening a FIFO planted under a model name must not hang. */
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0)
        return errno == ENOENT ? PD_ENOTFOUND : PD_EIO;
    int rc = 0;
    char *buf = NULL;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        rc = PD_EIO;
        goto done;
    }
    if (st.st_size < 0 || (uint64_t)st.st_size > max) {
        rc = PD_ETOOBIG;
        goto done;
    }
    size_t want = (size_t)st.st_size, n = 0;
    buf = malloc(want + 1);
    if (!buf) {
        rc = PD_ENOMEM;
        goto done;
    }
    /* Read exactly the size fstat saw; a file still growing is a file still
     * being written, and its hash will not match its MANIFEST anyway. */
    while (n < want) {
        ssize_t r = read(fd, buf + n, want - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = PD_EIO;
            goto done;
        }
        if (r == 0)
            break; /* shrank: hash the bytes that are there */
        n += (size_t)r;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    buf = NULL;
done:
    free(buf);
    close(fd);
    return rc;
}

void registry__fingerprint(int vfd, registry__fp *fp)
{
    memset(fp, 0, sizeof *fp);
    for (int i = 0; i < 3; i++) {
        struct stat st;
        if (fstatat(vfd, file_names[i], &st, AT_SYMLINK_NOFOLLOW) != 0)
            continue;
        fp->f[i].present = true;
        fp->f[i].ino = (uint64_t)st.st_ino;
        fp->f[i].size = (int64_t)st.st_size;
        fp->f[i].mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
    }
    char *m = NULL;
    size_t n = 0;
    if (registry__read_at(vfd, "MANIFEST", REGISTRY__MAX_SMALL_FILE, &m, &n) == 0) {
        util_sha256 s;
        util_sha256_init(&s);
        util_sha256_update(&s, m, n);
        util_sha256_final(&s, fp->manifest_sha);
        fp->manifest_read = true;
        free(m);
    }
}

bool registry__fp_equal(const registry__fp *a, const registry__fp *b)
{
    if (a->manifest_read != b->manifest_read)
        return false;
    if (a->manifest_read && memcmp(a->manifest_sha, b->manifest_sha, 32) != 0)
        return false;
    for (int i = 0; i < 3; i++) {
        if (a->f[i].present != b->f[i].present)
            return false;
        if (a->f[i].present && (a->f[i].ino != b->f[i].ino || a->f[i].size != b->f[i].size ||
                                a->f[i].mtime_ns != b->f[i].mtime_ns))
            return false;
    }
    return true;
}

/*
 * Parses `sha256sum` output: lines "<64 hex>  name" or "<64 hex> *name"
 * (binary marker). Records the lowercase digests of model.pb (want[0]) and
 * scaler.pb (want[1]); other names are allowed and ignored. Returns 0 or
 * PD_EVERIFY with the reason.
 */
static int parse_manifest(const char *text, size_t len, char want[2][65], char *why, size_t whylen)
{
    bool have[2] = {false, false};
    size_t lineno = 0;
    const char *p = text, *end = text + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        lineno++;
        size_t n = (size_t)(le - p);
        if (n > 0 && p[n - 1] == '\r')
            n--;
        if (n == 0) {
            p = nl ? nl + 1 : end;
            continue;
        }
        bool ok = n > 66 && (p[65] == ' ' || p[65] == '*') && p[64] == ' ';
        for (size_t i = 0; ok && i < 64; i++)
            ok = util_hex_value(p[i]) >= 0;
        if (!ok) {
            snprintf(why, whylen, "MANIFEST line %zu is not `sha256sum` output", lineno);
            return PD_EVERIFY;
        }
        const char *name = p + 66;
        size_t nlen = n - 66;
        for (int k = 0; k < 2; k++) {
            if (nlen != strlen(file_names[k]) || memcmp(name, file_names[k], nlen) != 0)
                continue;
            if (have[k]) {
                snprintf(why, whylen, "MANIFEST lists %s twice", file_names[k]);
                return PD_EVERIFY;
            }
            for (size_t i = 0; i < 64; i++)
                want[k][i] = "0123456789abcdef"[util_hex_value(p[i])];
            want[k][64] = '\0';
            have[k] = true;
        }
        p = nl ? nl + 1 : end;
    }
    for (int k = 0; k < 2; k++)
        if (!have[k]) {
            snprintf(why, whylen, "MANIFEST does not list %s", file_names[k]);
            return PD_EVERIFY;
        }
    return 0;
}

/* ------------------------------------------------------------------------
 * Bounded unpack.
 */

typedef struct budget {
    size_t used, limit;
    bool exceeded, oom;
} budget;

static void *budget_alloc(void *data, size_t size)
{
    budget *b = data;
    if (size > b->limit - b->used) {
        b->exceeded = true;
        return NULL;
    }
    b->used += size;
    void *p = malloc(size ? size : 1);
    if (!p)
        b->oom = true;
    return p;
}

static void budget_free(void *data, void *p)
{
    (void)data;
    free(p);
}

static size_t budget_for(size_t len)
{
    if (len > (UNPACK_CAP - UNPACK_SLACK) / UNPACK_FACTOR)
        return UNPACK_CAP;
    return len * UNPACK_FACTOR + UNPACK_SLACK;
}

/* Unpacks bytes as desc's message under the budget. PD_EPARSE or PD_ENOMEM
 * (malloc failed: the bytes may be fine) with why. */
static int unpack_bounded(const ProtobufCMessageDescriptor *desc, const char *what,
                          const void *data, size_t len, ProtobufCMessage **out, char *why,
                          size_t whylen)
{
    budget b = {0, budget_for(len), false, false};
    ProtobufCAllocator a = {budget_alloc, budget_free, &b};
    ProtobufCMessage *m = protobuf_c_message_unpack(desc, &a, len, data);
    if (!m) {
        if (b.oom) {
            snprintf(why, whylen, "%s: out of memory", what);
            return PD_ENOMEM;
        }
        if (b.exceeded)
            snprintf(why, whylen,
                     "%s: decoding needs more than %zu bytes of memory (%zu-byte file)", what,
                     b.limit, len);
        else
            snprintf(why, whylen, "%s: not a valid %s message", what, desc->short_name);
        return PD_EPARSE;
    }
    *out = m;
    return 0;
}

static int read_message(const char *path, const ProtobufCMessageDescriptor *desc,
                        ProtobufCMessage **out, char *why, size_t whylen)
{
    if (!path || !out)
        return PD_EINVAL;
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    char dir[4096];
    if (slash) {
        size_t dl = slash == path ? 1 : (size_t)(slash - path);
        if (dl >= sizeof dir)
            return PD_EINVAL;
        memcpy(dir, path, dl);
        dir[dl] = '\0';
    } else {
        strcpy(dir, ".");
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        snprintf(why, whylen, "%s: cannot open its directory", path);
        return errno == ENOENT ? PD_ENOTFOUND : PD_EIO;
    }
    char *data = NULL;
    size_t len = 0;
    int rc = registry__read_at(dfd, base, REGISTRY_MAX_FILE_BYTES, &data, &len);
    close(dfd);
    if (rc == PD_ETOOBIG) {
        snprintf(why, whylen, "%s: larger than the %u-byte limit", base, REGISTRY_MAX_FILE_BYTES);
        return rc;
    }
    if (rc) {
        snprintf(why, whylen, "%s: %s", base, rc == PD_ENOTFOUND ? "missing" : "unreadable");
        return rc;
    }
    rc = unpack_bounded(desc, base, data, len, out, why, whylen);
    free(data);
    return rc;
}

int registry_read_model(const char *path, Predictd__Model **out, char *why, size_t whylen)
{
    ProtobufCMessage *m = NULL;
    int rc = read_message(path, &predictd__model__descriptor, &m, why, whylen);
    if (rc == 0)
        *out = (Predictd__Model *)m;
    return rc;
}

int registry_read_scaler(const char *path, Predictd__Scaler **out, char *why, size_t whylen)
{
    ProtobufCMessage *m = NULL;
    int rc = read_message(path, &predictd__scaler__descriptor, &m, why, whylen);
    if (rc == 0)
        *out = (Predictd__Scaler *)m;
    return rc;
}

/* ------------------------------------------------------------------------
 * Verification and loading.
 */

void registry__version_unref(registry_version *v)
{
    if (!v)
        return;
    unsigned prev = atomic_fetch_sub_explicit(&v->refs, 1, memory_order_acq_rel);
    if (prev != 1)
        return;
    inference_model_free(v->model);
    features_set_free(v->features);
    free(v->trainer);
    free(v);
    atomic_fetch_sub_explicit(&registry__versions_live, 1, memory_order_relaxed);
}

/* Reads one listed file, checks its hash against the MANIFEST. On success
 * *data is malloc'd and hex holds its digest. */
static int read_listed(int vfd, int k, const char want[65], char **data, size_t *len, char hex[65],
                       int *fail, char *why, size_t whylen)
{
    int rc = registry__read_at(vfd, file_names[k], REGISTRY_MAX_FILE_BYTES, data, len);
    if (rc == PD_ENOMEM) {
        *fail = REGISTRY_FAIL_OTHER;
        snprintf(why, whylen, "%s: out of memory", file_names[k]);
        return rc;
    }
    if (rc) {
        *fail = REGISTRY_FAIL_IO;
        if (rc == PD_ETOOBIG)
            snprintf(why, whylen, "%s: larger than the %u-byte limit", file_names[k],
                     REGISTRY_MAX_FILE_BYTES);
        else
            snprintf(why, whylen, "%s: %s", file_names[k],
                     rc == PD_ENOTFOUND ? "missing" : "not a readable regular file");
        return PD_EVERIFY;
    }
    util_sha256_hex(*data, *len, hex);
    if (strcmp(hex, want) != 0) {
        *fail = REGISTRY_FAIL_MANIFEST;
        snprintf(why, whylen, "%s: sha256 %.12s... does not match MANIFEST %.12s...", file_names[k],
                 hex, want);
        free(*data);
        *data = NULL;
        return PD_EVERIFY;
    }
    return 0;
}

static double known_or_nan(double v)
{
    return isfinite(v) && v > 0 ? v : NAN;
}

int registry__load_at(int vfd, const char *owner, const char *tf, uint32_t number,
                      registry_version **out, int *fail, char *why, size_t whylen)
{
    char *manifest = NULL, *mdata = NULL, *sdata = NULL;
    size_t mlen = 0, mdlen = 0, sdlen = 0;
    Predictd__Model *model = NULL;
    Predictd__Scaler *scaler = NULL;
    features_set *fs = NULL;
    inference_model *im = NULL;
    registry_version *v = NULL;
    char want[2][65], hex[65], shex[65], sub[200];
    int rc;

    *fail = REGISTRY_FAIL_OTHER;
    why[0] = '\0';

    rc = registry__read_at(vfd, "MANIFEST", REGISTRY__MAX_SMALL_FILE, &manifest, &mlen);
    if (rc == PD_ENOMEM)
        goto nomem;
    if (rc) {
        *fail = REGISTRY_FAIL_MANIFEST;
        snprintf(why, whylen, "MANIFEST: %s",
                 rc == PD_ENOTFOUND ? "missing"
                 : rc == PD_ETOOBIG ? "too large"
                                    : "not a readable regular file");
        rc = PD_EVERIFY;
        goto out;
    }
    if ((rc = parse_manifest(manifest, mlen, want, why, whylen)) != 0) {
        *fail = REGISTRY_FAIL_MANIFEST;
        goto out;
    }
    if ((rc = read_listed(vfd, 0, want[0], &mdata, &mdlen, hex, fail, why, whylen)) != 0)
        goto out;
    if ((rc = read_listed(vfd, 1, want[1], &sdata, &sdlen, shex, fail, why, whylen)) != 0)
        goto out;

    *fail = REGISTRY_FAIL_PARSE;
    rc = unpack_bounded(&predictd__model__descriptor, "model.pb", mdata, mdlen,
                        (ProtobufCMessage **)&model, why, whylen);
    if (rc == PD_ENOMEM)
        goto nomem;
    if (rc)
        goto verify_fail;
    rc = unpack_bounded(&predictd__scaler__descriptor, "scaler.pb", sdata, sdlen,
                        (ProtobufCMessage **)&scaler, why, whylen);
    if (rc == PD_ENOMEM)
        goto nomem;
    if (rc)
        goto verify_fail;
    free(mdata);
    free(sdata);
    mdata = sdata = NULL;

    *fail = REGISTRY_FAIL_FEATURES;
    if (model->n_features == 0) {
        snprintf(why, whylen, "model.pb lists no features");
        goto verify_fail;
    }
    rc = features_set_new((const char *const *)model->features, model->n_features, &fs, sub,
                          sizeof sub);
    if (rc) {
        if (rc == PD_ENOMEM)
            goto nomem;
        snprintf(why, whylen, "features: %s", sub);
        goto verify_fail;
    }
    *fail = REGISTRY_FAIL_SHAPE; /* shapes, finiteness, scaler/model agreement */
    rc = inference_model_build(model, scaler, &im, sub, sizeof sub);
    if (rc) {
        if (rc == PD_ENOMEM)
            goto nomem;
        snprintf(why, whylen, "model: %s", sub);
        goto verify_fail;
    }
    if (inference_n_features(im) != features_set_count(fs)) {
        snprintf(why, whylen, "model reads %zu features but lists %zu", inference_n_features(im),
                 features_set_count(fs));
        goto verify_fail;
    }
    *fail = REGISTRY_FAIL_FEATURES;
    size_t minw = features_set_min_window(fs);
    if (model->window < minw) {
        snprintf(why, whylen, "window %u too small for features (they need %zu candles)",
                 model->window, minw);
        goto verify_fail;
    }
    *fail = REGISTRY_FAIL_GOLDEN;
    if (model->n_golden == 0) {
        snprintf(why, whylen, "no golden cases: a version must carry at least one");
        goto verify_fail;
    }
    rc = inference_check_golden(im, model, 1e-6, sub, sizeof sub);
    if (rc) {
        if (rc == PD_ENOMEM)
            goto nomem;
        snprintf(why, whylen, "golden: %s", sub);
        goto verify_fail;
    }

    v = calloc(1, sizeof *v);
    if (!v)
        goto nomem;
    const Predictd__TrainingMeta *meta = model->meta;
    v->trainer = strdup(meta && meta->trainer ? meta->trainer : "");
    if (!v->trainer)
        goto nomem;
    atomic_init(&v->refs, 1);
    atomic_init(&v->label, NULL);
    v->number = number;
    snprintf(v->owner, sizeof v->owner, "%s", owner ? owner : "");
    snprintf(v->tf, sizeof v->tf, "%s", tf ? tf : "");
    v->candles = model->window + inference_steps(im) - 1;
    memcpy(v->digest, hex, sizeof v->digest);
    v->meta.trainer = v->trainer;
    v->meta.test_accuracy = NAN;
    v->meta.baseline_accuracy = NAN;
    if (meta) {
        v->meta.trained_at = meta->trained_at;
        v->meta.data_from = meta->data_from;
        v->meta.data_to = meta->data_to;
        v->meta.train_samples = meta->train_samples;
        v->meta.test_samples = meta->test_samples;
        v->meta.test_accuracy = known_or_nan(meta->test_accuracy);
        v->meta.baseline_accuracy = known_or_nan(meta->baseline_accuracy);
        size_t cap = sizeof v->meta.metrics / sizeof v->meta.metrics[0];
        for (size_t i = 0; i < meta->n_metrics && v->meta.n_metrics < cap; i++) {
            const Predictd__Metric *mt = meta->metrics[i];
            if (!mt || !mt->name || strlen(mt->name) >= sizeof v->meta.metrics[0].name)
                continue;
            struct registry_metric *d = &v->meta.metrics[v->meta.n_metrics++];
            snprintf(d->name, sizeof d->name, "%s", mt->name);
            d->value = mt->value;
        }
        /* Metadata that disagrees with the directory is suspicious but not
         * fatal: a hand-copied version keeps its old number inside. */
        if (number && meta->version && meta->version != number)
            LOG_WARN(MOD, "%s/%s v%u: model.pb says it is version %u", owner, tf, number,
                     meta->version);
        if (tf && *tf && meta->timeframe && *meta->timeframe && strcmp(meta->timeframe, tf) != 0)
            LOG_WARN(MOD, "%s/%s v%u: model.pb was trained for timeframe %s", owner, tf, number,
                     meta->timeframe);
    }
    v->model = im;
    v->features = fs;
    im = NULL;
    fs = NULL;
    atomic_fetch_add_explicit(&registry__versions_live, 1, memory_order_relaxed);
    *out = v;
    v = NULL;
    rc = 0;
    goto out;

nomem:
    *fail = REGISTRY_FAIL_OTHER;
    snprintf(why, whylen, "out of memory");
    rc = PD_ENOMEM;
    goto out;
verify_fail:
    rc = PD_EVERIFY;
out:
    if (v) {
        free(v->trainer);
        free(v);
    }
    inference_model_free(im);
    features_set_free(fs);
    if (model)
        predictd__model__free_unpacked(model, NULL);
    if (scaler)
        predictd__scaler__free_unpacked(scaler, NULL);
    free(manifest);
    free(mdata);
    free(sdata);
    return rc;
}

int registry_verify_dir(const char *dir, char *why, size_t whylen)
{
    char tmp[256];
    if (!why || whylen == 0) {
        why = tmp;
        whylen = sizeof tmp;
    }
    if (!dir) {
        snprintf(why, whylen, "no directory given");
        return PD_EINVAL;
    }
    int vfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (vfd < 0) {
        snprintf(why, whylen, "%s: not a readable directory", dir);
        return PD_EVERIFY;
    }
    registry_version *v = NULL;
    int fail = 0;
    int rc = registry__load_at(vfd, "", "", 0, &v, &fail, why, whylen);
    close(vfd);
    if (rc == 0) {
        registry__version_unref(v);
        return 0;
    }
    return rc == PD_ENOMEM ? rc : PD_EVERIFY;
}

/* ------------------------------------------------------------------------
 * Publishing.
 */

/* mkdirat that accepts an existing real directory (not a symlink). */
static int ensure_dir_at(int parent, const char *name)
{
    if (mkdirat(parent, name, 0755) != 0 && errno != EEXIST)
        return PD_EIO;
    struct stat st;
    if (fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(st.st_mode))
        return PD_EIO;
    return 0;
}

DIR *registry__walk_dir(int dirfd)
{
    int fd = dup(dirfd);
    if (fd < 0)
        return NULL;
    DIR *d = fdopendir(fd);
    if (!d) {
        int e = errno;
        close(fd);
        errno = e;
        return NULL;
    }
    rewinddir(d); /* the duplicate shares its offset with dirfd */
    return d;
}

/* Highest valid version name in the series directory sfd (0 when none). */
static int max_version(int sfd, uint32_t *out)
{
    DIR *d = registry__walk_dir(sfd);
    if (!d)
        return PD_EIO;
    uint32_t max = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        uint32_t v = registry__parse_version(e->d_name);
        if (v > max)
            max = v;
    }
    closedir(d);
    *out = max;
    return 0;
}

/* Closes fd keeping errno (the cause of the failure being reported). */
static int close_failed(int fd)
{
    int e = errno;
    close(fd);
    errno = e;
    return PD_EIO;
}

/* Writes name in dfd and fsyncs it. 0 or PD_EIO with errno saying why. */
static int write_at(int dfd, const char *name, const void *data, size_t n)
{
    int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0)
        return PD_EIO;
    const char *p = data;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return close_failed(fd);
        p += w;
        n -= (size_t)w;
    }
    if (fsync(fd) != 0)
        return close_failed(fd);
    return close(fd) == 0 ? 0 : PD_EIO;
}

/* Packs the messages as they are now and writes the three files into tfd.
 * 0, PD_ENOMEM, or PD_EIO with errno saying why. */
static int write_version_files(int tfd, const Predictd__Model *model,
                               const Predictd__Scaler *scaler)
{
    int rc = PD_ENOMEM;
    size_t mlen = predictd__model__get_packed_size(model);
    size_t slen = predictd__scaler__get_packed_size(scaler);
    uint8_t *mbuf = malloc(mlen ? mlen : 1), *sbuf = malloc(slen ? slen : 1);
    if (!mbuf || !sbuf)
        goto out;
    predictd__model__pack(model, mbuf);
    predictd__scaler__pack(scaler, sbuf);
    char mhex[65], shex[65], manifest[160];
    util_sha256_hex(mbuf, mlen, mhex);
    util_sha256_hex(sbuf, slen, shex);
    int ml = snprintf(manifest, sizeof manifest, "%s  model.pb\n%s  scaler.pb\n", mhex, shex);
    if ((rc = write_at(tfd, "model.pb", mbuf, mlen)) != 0 ||
        (rc = write_at(tfd, "scaler.pb", sbuf, slen)) != 0 ||
        (rc = write_at(tfd, "MANIFEST", manifest, (size_t)ml)) != 0)
        goto out;
    rc = fsync(tfd) == 0 ? 0 : PD_EIO;
out:
    free(mbuf);
    free(sbuf);
    return rc;
}

/* Renames tmp to name within sfd without ever replacing an existing entry
 * (rename(2) would replace an empty directory someone is filling). */
static int rename_noreplace(int sfd, const char *tmp, const char *name)
{
    if (renameat2(sfd, tmp, sfd, name, RENAME_NOREPLACE) == 0)
        return 0;
    if (errno != EINVAL && errno != ENOSYS)
        return -1;
    /* File system without RENAME_NOREPLACE: check, then rename (racy). */
    struct stat st;
    if (fstatat(sfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
        errno = EEXIST;
        return -1;
    }
    return renameat(sfd, tmp, sfd, name);
}

/* Removes dir (in dfd) and what it holds: plain files, and directories
 * down to depth levels; symlinks inside are unlinked, never followed. */
static int remove_tree_at(int dfd, const char *name, int depth)
{
    int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -1;
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return -1;
    }
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        struct stat st;
        if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
            rc = -1;
            continue;
        }
        if (S_ISDIR(st.st_mode))
            rc |= depth > 0 ? remove_tree_at(dirfd(d), e->d_name, depth - 1) : -1;
        else if (unlinkat(dirfd(d), e->d_name, 0) != 0)
            rc = -1;
    }
    closedir(d);
    if (rc == 0 && unlinkat(dfd, name, AT_REMOVEDIR) != 0)
        rc = -1;
    return rc;
}

int registry__sweep_temporaries(int sfd, const char *sym, const char *tf, int64_t max_age_s)
{
    int fd = dup(sfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0)
            close(fd);
        return 0;
    }
    rewinddir(d);
    int64_t now = util_now();
    int removed = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const char *name = e->d_name;
        if (name[0] != '.' || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
            continue;
        struct stat st;
        if (fstatat(sfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(st.st_mode))
            continue;
        int64_t age = now - (int64_t)st.st_mtime;
        if (age < max_age_s)
            continue; /* maybe a publish in progress */
        if (remove_tree_at(sfd, name, 2) == 0) {
            removed++;
            LOG_INFO(MOD, "%s/%s: removed the abandoned temporary \"%.64s\" (%lld s old)", sym, tf,
                     name, (long long)age);
        } else {
            LOG_WARN(MOD, "%s/%s: cannot remove the abandoned temporary \"%.64s\": %s", sym, tf,
                     name, strerror(errno));
        }
    }
    closedir(d);
    return removed;
}

int registry_publish(const char *models_dir, const char *symbol, const char *tf,
                     Predictd__Model *model, const Predictd__Scaler *scaler, uint32_t *version)
{
    if (!models_dir || !*models_dir || !symbol || !tf || !model || !scaler || !version)
        return PD_EINVAL;
    if (!util_symbol_valid(symbol) && strcmp(symbol, REGISTRY_DEFAULT_SYMBOL) != 0)
        return PD_EINVAL;
    if (util_tf_seconds(tf) <= 0)
        return PD_EINVAL;

    int rc = PD_EIO, rootfd = -1, symfd = -1, sfd = -1, tfd = -1;
    char tmp[64] = "";
    bool made_tmp = false;
    const char *step = "opening the repository"; /* what failed, for the log */
    int err = 0;                                 /* and its errno */
#define PUBLISH_FAIL(what)                                                                         \
    do {                                                                                           \
        err = errno;                                                                               \
        step = (what);                                                                             \
        goto out;                                                                                  \
    } while (0)

    if (mkdir(models_dir, 0755) != 0 && errno != EEXIST)
        PUBLISH_FAIL("making the repository directory");
    rootfd = open(models_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0 || ensure_dir_at(rootfd, symbol) != 0)
        PUBLISH_FAIL("making the symbol's directory");
    symfd = openat(rootfd, symbol, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (symfd < 0 || ensure_dir_at(symfd, tf) != 0)
        PUBLISH_FAIL("making the series directory");
    sfd = openat(symfd, tf, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (sfd < 0)
        PUBLISH_FAIL("opening the series directory");
    registry__sweep_temporaries(sfd, symbol, tf, REGISTRY__TMP_MAX_AGE_S);

    for (int attempt = 0; attempt < 100 && !made_tmp; attempt++) {
        uint64_t rnd = util_mono_ns() ^ ((uint64_t)(uintptr_t)&rnd << 16) ^ (uint64_t)attempt;
        snprintf(tmp, sizeof tmp, ".tmp-%d-%016llx", (int)getpid(), (unsigned long long)rnd);
        if (mkdirat(sfd, tmp, 0755) == 0)
            made_tmp = true;
        else if (errno != EEXIST)
            PUBLISH_FAIL("making the temporary directory");
    }
    if (!made_tmp)
        PUBLISH_FAIL("making the temporary directory");
    tfd = openat(sfd, tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (tfd < 0)
        PUBLISH_FAIL("opening the temporary directory");

    /* Someone may publish the same number meanwhile: then the rename fails
     * with EEXIST/ENOTEMPTY and the files are rewritten for the next one
     * (the version is inside model.pb, so they must be). */
    for (int attempt = 0; attempt < 100; attempt++) {
        uint32_t max = 0;
        if ((rc = max_version(sfd, &max)) != 0)
            PUBLISH_FAIL("listing the versions");
        if (max >= REGISTRY__MAX_VERSION) {
            rc = PD_EINVAL;
            errno = 0;
            PUBLISH_FAIL("numbering: the highest version number is taken");
        }
        uint32_t next = max + 1;
        if (model->meta)
            model->meta->version = next;
        if ((rc = write_version_files(tfd, model, scaler)) != 0)
            PUBLISH_FAIL("writing the version's files");
        char name[16];
        snprintf(name, sizeof name, "%u", next);
        if (rename_noreplace(sfd, tmp, name) == 0) {
            made_tmp = false;
            if (fsync(sfd) != 0) {
                rc = PD_EIO;
                PUBLISH_FAIL("syncing the series directory");
            }
            LOG_INFO(MOD, "published %s/%s v%u", symbol, tf, next);
            *version = next;
            rc = 0;
            goto out;
        }
        if (errno != EEXIST && errno != ENOTEMPTY) {
            rc = PD_EIO;
            PUBLISH_FAIL("renaming the temporary directory to its version");
        }
    }
    rc = PD_EIO;
    step = "numbering: 100 concurrent publishes took every number tried";
out:
#undef PUBLISH_FAIL
    if (rc)
        LOG_WARN(MOD, "publishing %s/%s failed %s: %s%s%s", symbol, tf, step, util_strerror(rc),
                 err ? ": " : "", err ? strerror(err) : "");
    if (tfd >= 0)
        close(tfd);
    if (made_tmp) {
        char path[4096];
        if (snprintf(path, sizeof path, "%s/%s/%s/%s", models_dir, symbol, tf, tmp) <
            (int)sizeof path)
            util_rmtree(path);
    }
    if (sfd >= 0)
        close(sfd);
    if (symfd >= 0)
        close(symfd);
    if (rootfd >= 0)
        close(rootfd);
    return rc;
}
