/*
 * test_registry: the model repository end to end on real files in a
 * temporary directory. Models are built as Predictd__Model messages here
 * (a softmax over the 14 default features, window 100) whose golden cases
 * are computed with inference_run on the built model itself, published
 * with registry_publish, then broken in every way the registry must refuse.
 * Those goldens come from the code under test on purpose: this file tests
 * the repository (hashes, parsing, shapes, swaps), not the maths. The maths
 * is checked independently elsewhere: test_inference.c against hand-worked
 * and numpy values, test_importers.py against scikit-learn, XGBoost and
 * PyTorch, test_oracle.py end to end against tools/predictd_reference.py.
 *
 * No timing assertions: the scanner-thread test waits for a condition with
 * a generous deadline, it does not measure.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "registry/registry.h"
#include "registry/registry_internal.h"
#include "unit.h"
#include "fixtures.h"
#include "util/util.h"

#include "model_fixture.h"


/* ------------------------------------------------------------------------
 * File helpers.
 */

static char *mkdtemp_dir(void)
{
    char tmpl[512];
    char *d = unit_tmpdir(tmpl, sizeof tmpl, "pd-reg");
    return d ? strdup(d) : NULL;
}

static void pathf(char *out, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void pathf(char *out, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out, n, fmt, ap);
    va_end(ap);
}

static int write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = fwrite(data, 1, n, f);
    return fclose(f) == 0 && w == n ? 0 : -1;
}

static void file_sha(const char *path, char hex[65])
{
    char *data = NULL;
    size_t n = 0;
    if (util_read_file(path, 1u << 28, &data, &n) != 0) {
        strcpy(hex, "unreadable");
        return;
    }
    util_sha256_hex(data, n, hex);
    free(data);
}

/* Rewrites vdir/MANIFEST to match the files as they are. */
static void rewrite_manifest(const char *vdir)
{
    char p[512], m[65], s[65], text[200];
    pathf(p, sizeof p, "%s/model.pb", vdir);
    file_sha(p, m);
    pathf(p, sizeof p, "%s/scaler.pb", vdir);
    file_sha(p, s);
    pathf(text, sizeof text, "%s  model.pb\n%s  scaler.pb\n", m, s);
    pathf(p, sizeof p, "%s/MANIFEST", vdir);
    write_file(p, text, strlen(text));
}

static uint32_t publish(const char *models, const char *sym, const char *tf, fx *f)
{
    uint32_t v = 0;
    f->meta.symbol = (char *)sym;
    f->meta.timeframe = (char *)tf;
    int rc = registry_publish(models, sym, tf, &f->m, &f->s, &v);
    if (rc != 0)
        printf("  publish %s/%s: %s\n", sym, tf, util_strerror(rc));
    return rc == 0 ? v : 0;
}

static uint32_t publish_good(const char *models, const char *sym, const char *tf, unsigned seed)
{
    fx *f = malloc(sizeof *f);
    fx_init(f, seed, "test_registry");
    uint32_t v = publish(models, sym, tf, f);
    free(f);
    return v;
}

/* The version acquire gives for the default selector, 0 on error. */
static uint32_t serving(registry *r, const char *sym, const char *tf)
{
    registry_version *v = NULL;
    if (registry_acquire(r, sym, tf, NULL, &v) != 0)
        return 0;
    uint32_t n = registry_version_number(v);
    registry_release(v);
    return n;
}

/* Copies the listing entry of one version; false when absent. */
static bool version_info(registry *r, const char *sym, const char *tf, uint32_t ver,
                         registry_version_info *out, registry_series_info *series_out)
{
    registry_series_info *s = NULL;
    size_t n = 0;
    bool found = false;
    if (registry_list(r, &s, &n) != 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(s[i].symbol, sym) != 0 || strcmp(s[i].timeframe, tf) != 0)
            continue;
        if (series_out) {
            *series_out = s[i];
            series_out->versions = NULL;
        }
        for (size_t k = 0; k < s[i].n_versions; k++)
            if (s[i].versions[k].version == ver) {
                if (out)
                    *out = s[i].versions[k];
                found = true;
            }
        if (ver == 0)
            found = true;
    }
    registry_list_free(s, n);
    return found;
}

static size_t loaded_count(registry *r)
{
    registry_series_info *s = NULL;
    size_t n = 0, c = 0;
    if (registry_list(r, &s, &n) != 0)
        return 999;
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < s[i].n_versions; k++)
            c += s[i].versions[k].state == REGISTRY_AVAILABLE;
    registry_list_free(s, n);
    return c;
}

/* Version objects in memory, process-wide (registry_stats). */
static uint64_t in_memory(void)
{
    registry *tmp = NULL;
    registry_stats st;
    if (registry_new("/nonexistent-for-stats", &tmp) != 0)
        return 999;
    registry_stats_get(tmp, &st);
    registry_free(tmp);
    return st.versions_in_memory;
}

/* ------------------------------------------------------------------------
 * What the registry logs: stderr sent to a file at debug level for the
 * length of an operation, then read back (the log says why a version was
 * passed over, and an operator reads nothing else).
 */
static int log_saved_fd = -1;
static char log_path[600];

static void log_begin(const char *dir)
{
    fflush(stderr);
    pathf(log_path, sizeof log_path, "%s/captured.log", dir);
    int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    log_saved_fd = dup(STDERR_FILENO);
    if (fd >= 0) {
        dup2(fd, STDERR_FILENO);
        close(fd);
    }
    util_log_configure(UTIL_LOG_DEBUG, false);
}

/* What was logged since log_begin (malloc'd, never NULL). */
static char *log_end(void)
{
    fflush(stderr);
    if (log_saved_fd >= 0) {
        dup2(log_saved_fd, STDERR_FILENO);
        close(log_saved_fd);
        log_saved_fd = -1;
    }
    util_log_configure(getenv("PREDICTD_TEST_VERBOSE") ? UTIL_LOG_DEBUG : UTIL_LOG_ERROR, false);
    char *t = NULL;
    size_t n = 0;
    if (util_read_file(log_path, 1u << 24, &t, &n) != 0)
        return strdup("");
    unlink(log_path);
    return t;
}

#define CHECK_LOGGED(log, text)                                                                    \
    do {                                                                                           \
        bool found_ = strstr((log), (text)) != NULL;                                               \
        CHECK(found_);                                                                             \
        if (!found_)                                                                               \
            printf("  not in the log: %s\n  log was:\n%s\n", (text), (log));                       \
    } while (0)

/* ------------------------------------------------------------------------
 * Tests.
 */

TEST(test_publish_scan_acquire)
{
    char *base = mkdtemp_dir();
    char models[256];
    pathf(models, sizeof models, "%s/models", base);
    fx *f = malloc(sizeof *f);
    fx_init(f, 1, "test_registry");
    uint32_t ver = 0;
    CHECK_EQ_INT(registry_publish(models, "BTCUSDT", "15m", &f->m, &f->s, &ver), 0);
    CHECK_EQ_INT(ver, 1);
    CHECK_EQ_INT(f->meta.version, 1);

    registry *r = NULL;
    CHECK_EQ_INT(registry_new(models, &r), 0);
    registry_version *v = NULL;
    CHECK_EQ_INT(registry_acquire(r, "BTCUSDT", "15m", NULL, &v), PD_ENOMODEL); /* not scanned */
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    CHECK_EQ_INT(registry_acquire(r, "BTCUSDT", "15m", NULL, &v), 0);
    if (v) {
        CHECK_EQ_INT(registry_version_number(v), 1);
        CHECK_EQ_STR(registry_version_owner(v), "BTCUSDT");
        CHECK_EQ_STR(registry_version_timeframe(v), "15m");
        CHECK_EQ_INT(registry_version_candles(v), 100);
        CHECK(registry_version_label(v) == NULL);
        const registry_meta *meta = registry_version_meta(v);
        CHECK_EQ_STR(meta->trainer, "test_registry");
        CHECK_EQ_INT(meta->trained_at, 1700000001);
        CHECK_NEAR(meta->test_accuracy, 0.5, 1e-12);
        CHECK(isnan(meta->baseline_accuracy));
        char p[512], hex[65];
        pathf(p, sizeof p, "%s/BTCUSDT/15m/1/model.pb", models);
        file_sha(p, hex);
        CHECK_EQ_STR(registry_version_digest(v), hex);
        CHECK_EQ_INT(features_set_count(registry_version_features(v)), NF);
        const inference_model *m = registry_version_model(v);
        CHECK_EQ_INT(inference_n_features(m), NF);
        double probs[3];
        void *scratch = malloc(inference_scratch_size(m) + 8);
        CHECK_EQ_INT(inference_run(m, f->gin[1], probs, scratch), 0);
        for (int k = 0; k < 3; k++)
            CHECK_NEAR(probs[k], f->gout[1][k], 1e-12);
        free(scratch);
        registry_release(v);
    }
    registry_release(NULL);

    registry_version_info vi;
    registry_series_info si;
    CHECK(version_info(r, "BTCUSDT", "15m", 1, &vi, &si));
    CHECK_EQ_INT(vi.state, REGISTRY_AVAILABLE);
    CHECK(vi.serving);
    CHECK(vi.loaded_at > 0);
    CHECK(vi.load_ms >= 0);
    CHECK_EQ_STR(vi.reason, "");
    CHECK_EQ_INT(si.pinned, 0);
    CHECK_EQ_STR(si.note, "");
    size_t ns = 9, nf = 9;
    registry_counts(r, &ns, &nf);
    CHECK_EQ_INT(ns, 1);
    CHECK_EQ_INT(nf, 0);

    /* Other series, malformed names. */
    CHECK_EQ_INT(registry_acquire(r, "ETHUSDT", "15m", NULL, &v), PD_ENOMODEL);
    CHECK_EQ_INT(registry_acquire(r, "btc", "15m", NULL, &v), PD_ESYMBOL);
    CHECK_EQ_INT(registry_acquire(r, "BTCUSDT", "2m", NULL, &v), PD_ETIMEFRAME);
    CHECK_EQ_INT(registry_scan(r, "BTCUSDT", NULL), PD_EINVAL);
    CHECK_EQ_INT(registry_scan(r, "../x", "15m"), PD_EINVAL);
    CHECK_EQ_INT(registry_publish(models, "../x", "15m", &f->m, &f->s, &ver), PD_EINVAL);
    CHECK_EQ_INT(registry_publish(models, "BTCUSDT", "7m", &f->m, &f->s, &ver), PD_EINVAL);

    registry_stats st;
    registry_stats_get(r, &st);
    CHECK_EQ_INT(st.loads_ok, 1);
    CHECK_EQ_INT(st.loads_failed, 0);
    CHECK_EQ_INT(st.swaps, 1);
    CHECK_EQ_INT(st.scans, 1);
    CHECK_EQ_STR(registry_fail_name(REGISTRY_FAIL_GOLDEN), "golden");
    CHECK_EQ_STR(registry_fail_name(REGISTRY_FAIL_MANIFEST), "manifest");
    CHECK_EQ_STR(registry_fail_name(99), "unknown");

    registry_free(r);
    registry_free(NULL);
    free(f);
    util_rmtree(base);
    free(base);
}

TEST(test_highest_wins_and_swap)
{
    char *base = mkdtemp_dir();
    char models[256];
    pathf(models, sizeof models, "%s/models", base);
    CHECK_EQ_INT(publish_good(models, "BTCUSDT", "1h", 1), 1);
    CHECK_EQ_INT(publish_good(models, "BTCUSDT", "1h", 2), 2);
    registry *r = NULL;
    CHECK_EQ_INT(registry_new(models, &r), 0);
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "1h"), 2);
    registry_version_info vi;
    CHECK(version_info(r, "BTCUSDT", "1h", 1, &vi, NULL));
    CHECK_EQ_INT(vi.state, REGISTRY_RETIRED); /* older than what serves: never loaded */
    CHECK(!vi.serving);
    CHECK_EQ_INT(loaded_count(r), 1);

    CHECK_EQ_INT(publish_good(models, "BTCUSDT", "1h", 3), 3);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "1h"), 2); /* not before a scan */
    CHECK_EQ_INT(registry_scan(r, "BTCUSDT", "1h"), 0);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "1h"), 3);
    CHECK(version_info(r, "BTCUSDT", "1h", 2, &vi, NULL));
    CHECK_EQ_INT(vi.state, REGISTRY_RETIRED);
    CHECK_EQ_INT(vi.loaded_at, 0);
    CHECK_EQ_INT(loaded_count(r), 1);
    registry_stats st;
    registry_stats_get(r, &st);
    CHECK_EQ_INT(st.swaps, 2);

    /* An unchanged repository does not reload anything. */
    uint64_t before = st.loads_ok;
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    registry_stats_get(r, &st);
    CHECK_EQ_INT(st.loads_ok, before);

    /* Removing the serving version brings the previous one back. */
    char p[512];
    pathf(p, sizeof p, "%s/BTCUSDT/1h/3", models);
    CHECK_EQ_INT(util_rmtree(p), 0);
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "1h"), 2);
    CHECK(version_info(r, "BTCUSDT", "1h", 3, &vi, NULL));
    CHECK_EQ_INT(vi.state, REGISTRY_RETIRED);
    CHECK_EQ_INT(loaded_count(r), 1);

    /* The models directory disappearing (an unmounted volume) is an I/O
     * error, not a reason to drop what serves. */
    char moved[512];
    pathf(moved, sizeof moved, "%s/models-away", base);
    CHECK_EQ_INT(rename(models, moved), 0);
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), PD_EIO);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "1h"), 2);
    CHECK_EQ_INT(rename(moved, models), 0);

    /* Removing the whole series: nothing serves. */
    pathf(p, sizeof p, "%s/BTCUSDT", models);
    CHECK_EQ_INT(util_rmtree(p), 0);
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    registry_version *v = NULL;
    CHECK_EQ_INT(registry_acquire(r, "BTCUSDT", "1h", NULL, &v), PD_ENOMODEL);
    CHECK_EQ_INT(loaded_count(r), 0);
    size_t ns = 9, nf = 9;
    registry_counts(r, &ns, &nf);
    CHECK_EQ_INT(ns, 0);

    registry_free(r);
    util_rmtree(base);
    free(base);
}

/* How a broken version is made: a mutation of the message before publish
 * (msg), or of the published files (files). */
typedef struct breakage {
    const char *name;
    void (*msg)(fx *f);
    void (*files)(const char *vdir);
    int fail;           /* expected enum registry_fail */
    const char *reason; /* expected substring of the reason */
} breakage;

static void br_nan_weight(fx *f)
{
    f->w[5] = NAN;
}
static void br_shape(fx *f)
{
    f->d.n_weights = 3 * NF - 1;
}
static void br_unknown_feature(fx *f)
{
    f->feat[3] = "foo:3";
}
static void br_golden_prob(fx *f)
{
    f->gout[1][0] += 0.01;
}
static void br_no_golden(fx *f)
{
    f->m.n_golden = 0;
}
static void br_window(fx *f)
{
    f->m.window = 20;
}
static void br_golden_input(fx *f)
{
    f->g[0].n_input = NF - 1;
}

static void br_manifest_hash(const char *vdir)
{
    char p[512];
    pathf(p, sizeof p, "%s/MANIFEST", vdir);
    char *m = NULL;
    size_t n = 0;
    if (util_read_file(p, 4096, &m, &n) != 0)
        return;
    m[10] = m[10] == '0' ? '1' : '0';
    write_file(p, m, n);
    free(m);
}
static void br_manifest_missing(const char *vdir)
{
    char p[512];
    pathf(p, sizeof p, "%s/MANIFEST", vdir);
    unlink(p);
}
static void br_manifest_no_scaler(const char *vdir)
{
    char p[512], m[65], text[200];
    pathf(p, sizeof p, "%s/model.pb", vdir);
    file_sha(p, m);
    pathf(text, sizeof text, "%s  model.pb\n", m);
    pathf(p, sizeof p, "%s/MANIFEST", vdir);
    write_file(p, text, strlen(text));
}
static void br_manifest_garbage(const char *vdir)
{
    char p[512];
    pathf(p, sizeof p, "%s/MANIFEST", vdir);
    write_file(p, "hello world\n", 12);
}
static void br_truncated_unlisted(const char *vdir)
{
    char p[512];
    pathf(p, sizeof p, "%s/model.pb", vdir);
    struct stat st;
    stat(p, &st);
    if (truncate(p, st.st_size / 2) != 0)
        printf("  truncate failed\n");
}
static void br_truncated(const char *vdir)
{
    br_truncated_unlisted(vdir);
    rewrite_manifest(vdir);
}
static void br_random_bytes(const char *vdir)
{
    char p[512];
    unsigned char buf[4096];
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < sizeof buf; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf[i] = (unsigned char)x;
    }
    buf[0] = 0xff; /* field 31, wire type 7: invalid whatever follows */
    pathf(p, sizeof p, "%s/model.pb", vdir);
    write_file(p, buf, sizeof buf);
    rewrite_manifest(vdir);
}
static void br_oversized(const char *vdir)
{
    char p[512];
    pathf(p, sizeof p, "%s/model.pb", vdir);
    int fd = open(p, O_WRONLY);
    if (fd < 0 || ftruncate(fd, (off_t)REGISTRY_MAX_FILE_BYTES + 1) != 0)
        printf("  ftruncate failed\n");
    if (fd >= 0)
        close(fd);
    /* The MANIFEST keeps the old hash: the size is refused before hashing. */
}
static void br_scaler_mismatch(const char *vdir)
{
    /* A scaler listing other features, MANIFEST consistent. */
    Predictd__Scaler s;
    predictd__scaler__init(&s);
    char *names[2] = {"rsi:14", "ret:1"};
    double mean[2] = {0, 0}, scale[2] = {1, 1};
    s.n_features = 2;
    s.features = names;
    s.n_mean = s.n_scale = 2;
    s.mean = mean;
    s.scale = scale;
    uint8_t buf[256];
    size_t n = predictd__scaler__pack(&s, buf);
    char p[512];
    pathf(p, sizeof p, "%s/scaler.pb", vdir);
    write_file(p, buf, n);
    rewrite_manifest(vdir);
}
static void br_symlinked_file(const char *vdir)
{
    /* model.pb replaced by a symlink to an identical copy outside: the hash
     * would match, but symlinks are never followed. */
    char p[512], q[512];
    pathf(p, sizeof p, "%s/model.pb", vdir);
    pathf(q, sizeof q, "%s/../../../../outside-model.pb", vdir);
    if (rename(p, q) != 0 || symlink(q, p) != 0)
        printf("  symlink setup failed\n");
}
static void br_model_is_dir(const char *vdir)
{
    char p[512];
    pathf(p, sizeof p, "%s/model.pb", vdir);
    unlink(p);
    mkdir(p, 0755);
}

static const breakage breakages[] = {
    {"nan weight", br_nan_weight, NULL, REGISTRY_FAIL_SHAPE, "not finite"},
    {"wrong shape", br_shape, NULL, REGISTRY_FAIL_SHAPE, "weights"},
    {"unknown feature", br_unknown_feature, NULL, REGISTRY_FAIL_FEATURES, "foo:3"},
    {"wrong golden probability", br_golden_prob, NULL, REGISTRY_FAIL_GOLDEN, "golden"},
    {"zero golden cases", br_no_golden, NULL, REGISTRY_FAIL_GOLDEN, "no golden cases"},
    {"golden input size", br_golden_input, NULL, REGISTRY_FAIL_GOLDEN, "golden"},
    {"window too small", br_window, NULL, REGISTRY_FAIL_FEATURES, "too small"},
    {"manifest hash", NULL, br_manifest_hash, REGISTRY_FAIL_MANIFEST, "does not match MANIFEST"},
    {"manifest missing", NULL, br_manifest_missing, REGISTRY_FAIL_MANIFEST, "MANIFEST: missing"},
    {"manifest without scaler", NULL, br_manifest_no_scaler, REGISTRY_FAIL_MANIFEST,
     "does not list scaler.pb"},
    {"manifest garbage", NULL, br_manifest_garbage, REGISTRY_FAIL_MANIFEST, "sha256sum"},
    {"truncated, old manifest", NULL, br_truncated_unlisted, REGISTRY_FAIL_MANIFEST, "sha256"},
    {"truncated model.pb", NULL, br_truncated, REGISTRY_FAIL_PARSE, "model.pb"},
    {"random bytes", NULL, br_random_bytes, REGISTRY_FAIL_PARSE, "not a valid"},
    {"oversized", NULL, br_oversized, REGISTRY_FAIL_IO, "limit"},
    {"scaler mismatch", NULL, br_scaler_mismatch, REGISTRY_FAIL_SHAPE, "scaler"},
    {"symlinked model.pb", NULL, br_symlinked_file, REGISTRY_FAIL_IO, "model.pb"},
    {"model.pb is a directory", NULL, br_model_is_dir, REGISTRY_FAIL_IO, "model.pb"},
};

TEST(test_broken_versions_never_serve)
{
    char *base = mkdtemp_dir();
    char models[256];
    pathf(models, sizeof models, "%s/models", base);
    CHECK_EQ_INT(publish_good(models, "BTCUSDT", "15m", 1), 1);
    registry *r = NULL;
    CHECK_EQ_INT(registry_new(models, &r), 0);
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "15m"), 1);

    fx *f = malloc(sizeof *f);
    size_t nb = sizeof breakages / sizeof breakages[0];
    for (size_t i = 0; i < nb; i++) {
        const breakage *b = &breakages[i];
        fx_init(f, 100 + (unsigned)i, "test_registry");
        if (b->msg)
            b->msg(f);
        uint32_t ver = publish(models, "BTCUSDT", "15m", f);
        CHECK(ver == i + 2);
        char vdir[512];
        pathf(vdir, sizeof vdir, "%s/BTCUSDT/15m/%u", models, ver);
        if (b->files)
            b->files(vdir);
        char why[256] = "";
        CHECK_EQ_INT(registry_verify_dir(vdir, why, sizeof why), PD_EVERIFY);

        registry_stats before, after;
        registry_stats_get(r, &before);
        CHECK_EQ_INT(registry_scan(r, "BTCUSDT", "15m"), 0);
        registry_stats_get(r, &after);
        registry_version_info vi;
        bool listed = version_info(r, "BTCUSDT", "15m", ver, &vi, NULL);
        CHECK(listed);
        if (listed && (vi.state != REGISTRY_FAILED || !strstr(vi.reason, b->reason)))
            printf("  %s: state %d reason \"%s\" (want \"%s\")\n", b->name, (int)vi.state,
                   vi.reason, b->reason);
        CHECK_EQ_INT(vi.state, REGISTRY_FAILED);
        CHECK(strstr(vi.reason, b->reason) != NULL);
        CHECK(!vi.serving);
        CHECK_EQ_STR(why, vi.reason);
        CHECK_EQ_INT(after.loads_failed, before.loads_failed + 1);
        CHECK_EQ_INT(after.failed_by_reason[b->fail], before.failed_by_reason[b->fail] + 1);
        CHECK_EQ_INT(serving(r, "BTCUSDT", "15m"), 1);
        registry_version *v = NULL;
        CHECK_EQ_INT(
            registry_acquire(r, "BTCUSDT", "15m", &(registry_selector){.version = ver}, &v),
            PD_ENOMODEL);

        /* Not verified again while its files stay the same. */
        CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
        registry_stats_get(r, &before);
        CHECK_EQ_INT(before.loads_failed, after.loads_failed);
    }
    size_t ns = 0, nf = 0;
    registry_counts(r, &ns, &nf);
    CHECK_EQ_INT(ns, 1);
    CHECK_EQ_INT(nf, nb);
    CHECK_EQ_INT(loaded_count(r), 1);

    /* A fixed version is picked up: replace the last broken version's files
     * with good ones (its fingerprint changes) and it serves. */
    uint32_t last = (uint32_t)nb + 1;
    char vdir[512], good[512], p[512], q[512];
    pathf(vdir, sizeof vdir, "%s/BTCUSDT/15m/%u", models, last);
    char spare[256];
    pathf(spare, sizeof spare, "%s/spare", base); /* outside the scanned tree */
    CHECK_EQ_INT(publish_good(spare, "SPARE", "15m", 7), 1);
    pathf(good, sizeof good, "%s/SPARE/15m/1", spare);
    const char *names[] = {"model.pb", "scaler.pb", "MANIFEST"};
    for (int k = 0; k < 3; k++) {
        pathf(p, sizeof p, "%s/%s", vdir, names[k]);
        pathf(q, sizeof q, "%s/%s", good, names[k]);
        util_rmtree(p);
        CHECK_EQ_INT(rename(q, p), 0);
    }
    CHECK_EQ_INT(registry_scan(r, "BTCUSDT", "15m"), 0);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "15m"), last);
    registry_counts(r, &ns, &nf);
    CHECK_EQ_INT(nf, nb - 1);

    /* A failed version below the serving one that gets fixed is no longer
     * listed as failed, and can then be pinned. */
    CHECK_EQ_INT(publish_good(spare, "SPARE", "15m", 8), 2);
    pathf(vdir, sizeof vdir, "%s/BTCUSDT/15m/2", models);
    pathf(good, sizeof good, "%s/SPARE/15m/2", spare);
    for (int k = 0; k < 3; k++) {
        pathf(p, sizeof p, "%s/%s", vdir, names[k]);
        pathf(q, sizeof q, "%s/%s", good, names[k]);
        util_rmtree(p);
        CHECK_EQ_INT(rename(q, p), 0);
    }
    registry_stats before, after;
    registry_stats_get(r, &before);
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    registry_stats_get(r, &after);
    CHECK_EQ_INT(after.loads_ok + after.loads_failed, before.loads_ok + before.loads_failed);
    registry_version_info vi;
    CHECK(version_info(r, "BTCUSDT", "15m", 2, &vi, NULL));
    CHECK_EQ_INT(vi.state, REGISTRY_RETIRED);
    CHECK_EQ_STR(vi.reason, "");
    registry_counts(r, &ns, &nf);
    CHECK_EQ_INT(nf, nb - 2);
    CHECK_EQ_INT(registry_pin(r, "BTCUSDT", "15m", 2), 0);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "15m"), 2);

    free(f);
    registry_free(r);
    util_rmtree(base);
    free(base);
}

TEST(test_junk_is_ignored)
{
    char *base = mkdtemp_dir();
    char models[256], other[256], p[512], q[512];
    pathf(models, sizeof models, "%s/models", base);
    pathf(other, sizeof other, "%s/outside", base);
    CHECK_EQ_INT(publish_good(models, "BTCUSDT", "15m", 1), 1);
    /* Valid versions outside the tree, to be moved in under bad names or
     * pointed at by symlinks. */
    for (int i = 0; i < 12; i++)
        CHECK_EQ_INT(publish_good(other, "OUTSIDE", "15m", 10 + (unsigned)i), (uint32_t)i + 1);
    const char *bad_versions[] = {"007",        "0",  "abc", "-1", "4294967296",
                                  "2147483649", ".5", "1e3", " 3", "3 "};
    size_t nbad = sizeof bad_versions / sizeof bad_versions[0];
    for (size_t i = 0; i < nbad; i++) {
        pathf(p, sizeof p, "%s/OUTSIDE/15m/%zu", other, i + 1);
        pathf(q, sizeof q, "%s/BTCUSDT/15m/%s", models, bad_versions[i]);
        CHECK_EQ_INT(rename(p, q), 0);
    }
    /* A symlinked version directory, a symlinked symbol directory and a
     * symlinked timeframe directory, all pointing outside. */
    pathf(p, sizeof p, "%s/OUTSIDE/15m/11", other);
    pathf(q, sizeof q, "%s/BTCUSDT/15m/9", models);
    CHECK_EQ_INT(symlink(p, q), 0);
    pathf(p, sizeof p, "%s/OUTSIDE", other);
    pathf(q, sizeof q, "%s/ETHUSDT", models);
    CHECK_EQ_INT(symlink(p, q), 0);
    pathf(p, sizeof p, "%s/OUTSIDE/15m", other);
    pathf(q, sizeof q, "%s/BTCUSDT/1h", models);
    CHECK_EQ_INT(symlink(p, q), 0);
    /* Lower-case symbol, unknown timeframe, files where directories go. */
    CHECK_EQ_INT(publish_good(models, "SOLUSDT", "4h", 3), 1);
    pathf(p, sizeof p, "%s/SOLUSDT", models);
    pathf(q, sizeof q, "%s/sol", models);
    CHECK_EQ_INT(rename(p, q), 0);
    CHECK_EQ_INT(publish_good(models, "XRPUSDT", "4h", 4), 1);
    pathf(p, sizeof p, "%s/XRPUSDT/4h", models);
    pathf(q, sizeof q, "%s/XRPUSDT/2m", models);
    CHECK_EQ_INT(rename(p, q), 0);
    pathf(p, sizeof p, "%s/BTCUSDT/15m/5", models);
    CHECK_EQ_INT(write_file(p, "x", 1), 0);
    pathf(p, sizeof p, "%s/README", models);
    CHECK_EQ_INT(write_file(p, "x", 1), 0);
    pathf(p, sizeof p, "%s/BTCUSDT/15m/.tmp-1-2", models);
    CHECK_EQ_INT(mkdir(p, 0755), 0);

    registry *r = NULL;
    CHECK_EQ_INT(registry_new(models, &r), 0);
    log_begin(base);
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    /* each stray is named at debug level, each link refused at warning */
    char *log = log_end();
    CHECK_LOGGED(log, "ignoring \"README\" in the models directory");
    CHECK_LOGGED(log, "ignoring \"sol\" in the models directory");
    CHECK_LOGGED(log, "XRPUSDT: ignoring \"2m\" (not a timeframe directory)");
    CHECK_LOGGED(log, "BTCUSDT/15m: ignoring \"007\" (not a version directory)");
    CHECK_LOGGED(log, "BTCUSDT/15m: ignoring \"5\" (not a version directory)");
    CHECK_LOGGED(log, "BTCUSDT/15m/9 is a symbolic link: refused");
    CHECK_LOGGED(log, "ETHUSDT is a symbolic link: refused");
    CHECK_LOGGED(log, "BTCUSDT/1h is a symbolic link: refused");
    CHECK(strstr(log, ".tmp-1-2") == NULL); /* a temporary being written is not news */
    free(log);
    registry_series_info *s = NULL;
    size_t n = 0;
    CHECK_EQ_INT(registry_list(r, &s, &n), 0);
    CHECK_EQ_INT(n, 1);
    if (n == 1) {
        CHECK_EQ_STR(s[0].symbol, "BTCUSDT");
        CHECK_EQ_STR(s[0].timeframe, "15m");
        CHECK_EQ_INT(s[0].n_versions, 1);
        if (s[0].n_versions)
            CHECK_EQ_INT(s[0].versions[0].version, 1);
    }
    registry_list_free(s, n);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "15m"), 1);
    CHECK_EQ_INT(serving(r, "ETHUSDT", "15m"), 0);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "1h"), 0);
    registry_stats st;
    registry_stats_get(r, &st);
    CHECK_EQ_INT(st.loads_ok, 1);
    CHECK_EQ_INT(st.loads_failed, 0);
    /* Scanning a symlinked series by name finds nothing either. */
    CHECK_EQ_INT(registry_scan(r, "ETHUSDT", "15m"), 0);
    CHECK_EQ_INT(serving(r, "ETHUSDT", "15m"), 0);
    CHECK_EQ_INT(registry_pin(r, "ETHUSDT", "15m", 1), PD_ENOTFOUND);

    /* 2^31 itself is a valid version number. */
    pathf(p, sizeof p, "%s/OUTSIDE/15m/12", other);
    pathf(q, sizeof q, "%s/BTCUSDT/15m/2147483648", models);
    CHECK_EQ_INT(rename(p, q), 0);
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "15m"), 2147483648u);
    /* And the next publish has nowhere to go. */
    uint32_t ver = 0;
    fx *f = malloc(sizeof *f);
    fx_init(f, 5, "test_registry");
    CHECK_EQ_INT(registry_publish(models, "BTCUSDT", "15m", &f->m, &f->s, &ver), PD_EINVAL);
    free(f);

    /* A models directory that does not exist. */
    registry *r2 = NULL;
    CHECK_EQ_INT(registry_new("/nonexistent/predictd-models", &r2), 0);
    CHECK_EQ_INT(registry_scan(r2, NULL, NULL), PD_EIO);
    CHECK_EQ_INT(registry_scan(r2, "BTCUSDT", "15m"), 0); /* no such series */
    CHECK_EQ_INT(registry_pin(r2, "BTCUSDT", "15m", 1), PD_ENOTFOUND);
    registry_free(r2);
    CHECK_EQ_INT(registry_new("", &r2), PD_EINVAL);

    registry_free(r);
    util_rmtree(base);
    free(base);
}

static uint32_t fnv1a(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++) {
        h ^= (uint8_t)*s;
        h *= 16777619u;
    }
    return h;
}

static json_t *read_policy(const char *models, const char *sym, const char *tf)
{
    char p[512];
    pathf(p, sizeof p, "%s/%s/%s/policy.json", models, sym, tf);
    return json_load_file(p, 0, NULL);
}

TEST(test_policy)
{
    char *base = mkdtemp_dir();
    char models[256], p[512];
    pathf(models, sizeof models, "%s/models", base);
    for (unsigned i = 1; i <= 3; i++)
        CHECK_EQ_INT(publish_good(models, "BTCUSDT", "15m", i), i);
    pathf(p, sizeof p, "%s/BTCUSDT/15m/policy.json", models);
    const char *pol = "{\"pinned\": 2, \"labels\": {\"stable\": 2, \"canary\": 3},"
                      " \"canary_share\": 30, \"comment\": \"kept\"}";
    CHECK_EQ_INT(write_file(p, pol, strlen(pol)), 0);

    registry *r = NULL;
    CHECK_EQ_INT(registry_new(models, &r), 0);
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "15m"), 2);
    registry_series_info si;
    registry_version_info vi;
    CHECK(version_info(r, "BTCUSDT", "15m", 3, &vi, &si));
    CHECK_EQ_INT(si.pinned, 2);
    CHECK_EQ_INT(si.canary_share, 30);
    CHECK_EQ_STR(vi.label, "canary");
    CHECK_EQ_INT(vi.state, REGISTRY_AVAILABLE);
    CHECK(!vi.serving);
    CHECK(version_info(r, "BTCUSDT", "15m", 1, &vi, NULL));
    CHECK_EQ_INT(vi.state, REGISTRY_RETIRED);
    CHECK_EQ_INT(loaded_count(r), 2);

    /* Selectors. */
    registry_version *v = NULL;
    CHECK_EQ_INT(registry_acquire(r, "BTCUSDT", "15m", &(registry_selector){.label = "canary"}, &v),
                 0);
    if (v) {
        CHECK_EQ_INT(registry_version_number(v), 3);
        CHECK_EQ_STR(registry_version_label(v), "canary");
        registry_release(v);
    }
    CHECK_EQ_INT(registry_acquire(r, "BTCUSDT", "15m", &(registry_selector){.label = "stable"}, &v),
                 0);
    if (v) {
        CHECK_EQ_INT(registry_version_number(v), 2);
        CHECK_EQ_STR(registry_version_label(v), "stable");
        registry_release(v);
    }
    CHECK_EQ_INT(registry_acquire(r, "BTCUSDT", "15m", &(registry_selector){.label = "beta"}, &v),
                 PD_ENOMODEL);
    CHECK_EQ_INT(registry_acquire(r, "BTCUSDT", "15m", &(registry_selector){.version = 3}, &v), 0);
    if (v) {
        CHECK_EQ_INT(registry_version_number(v), 3);
        registry_release(v);
    }
    /* v1 is not loaded: only loaded versions are selectable. */
    CHECK_EQ_INT(registry_acquire(r, "BTCUSDT", "15m", &(registry_selector){.version = 1}, &v),
                 PD_ENOMODEL);
    CHECK_EQ_INT(registry_acquire(r, "BTCUSDT", "15m", &(registry_selector){.version = 99}, &v),
                 PD_ENOMODEL);

    /* Canary share: deterministic per key, FNV-1a % 100 < share. */
    int to_canary = 0;
    for (int i = 0; i < 1000; i++) {
        char key[32];
        snprintf(key, sizeof key, "client-%d", i);
        registry_selector sel = {.client_key = key};
        uint32_t got[2];
        for (int rep = 0; rep < 2; rep++) {
            got[rep] = 0;
            if (registry_acquire(r, "BTCUSDT", "15m", &sel, &v) == 0) {
                got[rep] = registry_version_number(v);
                registry_release(v);
            }
        }
        CHECK_EQ_INT(got[0], got[1]);
        CHECK_EQ_INT(got[0], fnv1a(key) % 100 < 30 ? 3 : 2);
        to_canary += got[0] == 3;
    }
    CHECK(to_canary > 200 && to_canary < 400);

    /* Admin changes rewrite policy.json (keeping unknown keys). */
    CHECK_EQ_INT(registry_pin(r, "BTCUSDT", "15m", 3), 0);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "15m"), 3);
    json_t *j = read_policy(models, "BTCUSDT", "15m");
    CHECK(j != NULL);
    CHECK_EQ_INT(json_integer_value(json_object_get(j, "pinned")), 3);
    CHECK_EQ_STR(json_string_value(json_object_get(j, "comment")), "kept");
    CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(j, "labels"), "canary")), 3);
    json_decref(j);

    CHECK_EQ_INT(registry_set_label(r, "BTCUSDT", "15m", "canary", 0, 0), 0);
    CHECK_EQ_INT(registry_set_label(r, "BTCUSDT", "15m", "stable", 0, 0), 0);
    CHECK_EQ_INT(registry_acquire(r, "BTCUSDT", "15m", &(registry_selector){.label = "canary"}, &v),
                 PD_ENOMODEL);
    j = read_policy(models, "BTCUSDT", "15m");
    CHECK(j && !json_object_get(j, "labels") && !json_object_get(j, "canary_share"));
    json_decref(j);
    CHECK_EQ_INT(registry_pin(r, "BTCUSDT", "15m", 1), 0);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "15m"), 1);
    CHECK_EQ_INT(loaded_count(r), 1);
    CHECK_EQ_INT(registry_unpin(r, "BTCUSDT", "15m"), 0);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "15m"), 3);
    j = read_policy(models, "BTCUSDT", "15m");
    CHECK(j && !json_object_get(j, "pinned"));
    CHECK_EQ_STR(json_string_value(json_object_get(j, "comment")), "kept");
    json_decref(j);

    CHECK_EQ_INT(registry_set_label(r, "BTCUSDT", "15m", "canary", 1, 50), 0);
    CHECK(version_info(r, "BTCUSDT", "15m", 1, &vi, &si));
    CHECK_EQ_STR(vi.label, "canary");
    CHECK_EQ_INT(si.canary_share, 50);
    CHECK_EQ_INT(vi.state, REGISTRY_AVAILABLE);

    /* Errors. */
    CHECK_EQ_INT(registry_pin(r, "BTCUSDT", "15m", 99), PD_ENOTFOUND);
    CHECK_EQ_INT(registry_pin(r, "BTCUSDT", "15m", 0), PD_EINVAL);
    CHECK_EQ_INT(registry_pin(r, "ETHUSDT", "15m", 1), PD_ENOTFOUND);
    CHECK_EQ_INT(registry_unpin(r, "ETHUSDT", "15m"), PD_ENOTFOUND);
    CHECK_EQ_INT(registry_pin(r, "bad/..", "15m", 1), PD_EINVAL);
    CHECK_EQ_INT(registry_set_label(r, "BTCUSDT", "15m", "beta", 1, 0), PD_EINVAL);
    CHECK_EQ_INT(registry_set_label(r, "BTCUSDT", "15m", "canary", 1, 101), PD_EINVAL);
    CHECK_EQ_INT(registry_set_label(r, "BTCUSDT", "15m", "canary", 1, -1), PD_EINVAL);
    CHECK_EQ_INT(registry_set_label(r, "BTCUSDT", "15m", "stable", 42, 0), PD_ENOTFOUND);

    /* A failed version cannot be pinned; a pin to one that fails later
     * keeps the previous choice serving, with a note. */
    fx *f = malloc(sizeof *f);
    fx_init(f, 9, "test_registry");
    f->gout[0][0] += 0.5;
    CHECK_EQ_INT(publish(models, "BTCUSDT", "15m", f), 4);
    free(f);
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "15m"), 3);
    CHECK_EQ_INT(registry_pin(r, "BTCUSDT", "15m", 4), PD_EVERIFY);
    CHECK_EQ_INT(registry_set_label(r, "BTCUSDT", "15m", "stable", 4, 0), PD_EVERIFY);
    CHECK_EQ_INT(registry_pin(r, "BTCUSDT", "15m", 2), 0);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "15m"), 2);
    const char *pin4 = "{\"pinned\": 4}";
    CHECK_EQ_INT(write_file(p, pin4, strlen(pin4)), 0);
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "15m"), 2);
    CHECK(version_info(r, "BTCUSDT", "15m", 0, NULL, &si));
    CHECK_EQ_INT(si.pinned, 4);
    CHECK(strstr(si.note, "pinned v4") != NULL);

    /* Malformed policy.json: ignored, previous policy kept, note says so. */
    const char *bad[] = {"{\"pinned\": ",
                         "[1,2]",
                         "{\"pinned\": \"2\"}",
                         "{\"pinned\": -3}",
                         "{\"labels\": {\"beta\": 2}}",
                         "{\"canary_share\": 101}",
                         "{\"labels\": [2]}",
                         "{\"pinned\": 1, \"pinned\": 2}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_EQ_INT(write_file(p, bad[i], strlen(bad[i])), 0);
        CHECK_EQ_INT(registry_scan(r, "BTCUSDT", "15m"), 0);
        CHECK(version_info(r, "BTCUSDT", "15m", 0, NULL, &si));
        CHECK_EQ_INT(si.pinned, 4);
        CHECK(strstr(si.note, "policy.json ignored") != NULL);
        CHECK_EQ_INT(serving(r, "BTCUSDT", "15m"), 2);
    }
    /* Removing policy.json: back to the highest that verifies. */
    unlink(p);
    CHECK_EQ_INT(registry_scan(r, "BTCUSDT", "15m"), 0);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "15m"), 3);
    CHECK(version_info(r, "BTCUSDT", "15m", 0, NULL, &si));
    CHECK_EQ_INT(si.pinned, 0);
    CHECK_EQ_STR(si.note, "");
    CHECK_EQ_INT(loaded_count(r), 1);

    registry_free(r);
    util_rmtree(base);
    free(base);
}

TEST(test_default_fallback)
{
    char *base = mkdtemp_dir();
    char models[256];
    pathf(models, sizeof models, "%s/models", base);
    CHECK_EQ_INT(publish_good(models, "_default", "15m", 1), 1);
    registry *r = NULL;
    CHECK_EQ_INT(registry_new(models, &r), 0);
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    registry_version *v = NULL;
    CHECK_EQ_INT(registry_acquire(r, "ETHUSDT", "15m", NULL, &v), 0);
    if (v) {
        CHECK_EQ_STR(registry_version_owner(v), "_default");
        registry_release(v);
    }
    CHECK_EQ_INT(registry_acquire(r, "_default", "15m", NULL, &v), 0);
    registry_release(v);
    CHECK_EQ_INT(registry_acquire(r, "ETHUSDT", "1h", NULL, &v), PD_ENOMODEL);

    /* A series of its own wins once it verifies... */
    CHECK_EQ_INT(publish_good(models, "ETHUSDT", "15m", 2), 1);
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    CHECK_EQ_INT(registry_acquire(r, "ETHUSDT", "15m", NULL, &v), 0);
    if (v) {
        CHECK_EQ_STR(registry_version_owner(v), "ETHUSDT");
        registry_release(v);
    }
    /* ...and one whose only version fails falls back to the default. */
    fx *f = malloc(sizeof *f);
    fx_init(f, 3, "test_registry");
    f->m.n_golden = 0;
    CHECK_EQ_INT(publish(models, "SOLUSDT", "15m", f), 1);
    free(f);
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    CHECK_EQ_INT(registry_acquire(r, "SOLUSDT", "15m", NULL, &v), 0);
    if (v) {
        CHECK_EQ_STR(registry_version_owner(v), "_default");
        registry_release(v);
    }
    /* An explicit version is looked up in the symbol's own series. */
    CHECK_EQ_INT(registry_acquire(r, "SOLUSDT", "15m", &(registry_selector){.version = 1}, &v),
                 PD_ENOMODEL);
    CHECK_EQ_INT(registry_acquire(r, "ADAUSDT", "15m", &(registry_selector){.version = 1}, &v), 0);
    if (v) {
        CHECK_EQ_STR(registry_version_owner(v), "_default");
        registry_release(v);
    }
    /* Pin then unpin with nothing else in the policy: no file is left. */
    CHECK_EQ_INT(registry_pin(r, "ETHUSDT", "15m", 1), 0);
    char p[512];
    pathf(p, sizeof p, "%s/ETHUSDT/15m/policy.json", models);
    CHECK(access(p, F_OK) == 0);
    CHECK_EQ_INT(registry_unpin(r, "ETHUSDT", "15m"), 0);
    CHECK(access(p, F_OK) != 0);
    CHECK_EQ_INT(registry_unpin(r, "ETHUSDT", "15m"), 0); /* idempotent */
    registry_free(r);
    util_rmtree(base);
    free(base);
}

TEST(test_refcount_outlives_swap)
{
    char *base = mkdtemp_dir();
    char models[256];
    pathf(models, sizeof models, "%s/models", base);
    uint64_t mem0 = in_memory();
    fx *f = malloc(sizeof *f);
    fx_init(f, 1, "test_registry");
    CHECK_EQ_INT(publish(models, "BTCUSDT", "15m", f), 1);
    registry *r = NULL;
    CHECK_EQ_INT(registry_new(models, &r), 0);
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    registry_version *old = NULL, *old2 = NULL;
    CHECK_EQ_INT(registry_acquire(r, "BTCUSDT", "15m", NULL, &old), 0);
    CHECK_EQ_INT(registry_acquire(r, "BTCUSDT", "15m", NULL, &old2), 0);
    CHECK_EQ_INT(in_memory(), mem0 + 1);

    CHECK_EQ_INT(publish_good(models, "BTCUSDT", "15m", 2), 2);
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "15m"), 2);
    CHECK_EQ_INT(in_memory(), mem0 + 2); /* v1 retired but still referenced */
    registry_version_info vi;
    CHECK(version_info(r, "BTCUSDT", "15m", 1, &vi, NULL));
    CHECK_EQ_INT(vi.state, REGISTRY_RETIRED);

    if (old && old2) {
        /* The old version still runs and still answers like v1. */
        CHECK_EQ_INT(registry_version_number(old), 1);
        const inference_model *m = registry_version_model(old);
        double probs[3];
        void *scratch = malloc(inference_scratch_size(m) + 8);
        CHECK_EQ_INT(inference_run(m, f->gin[0], probs, scratch), 0);
        CHECK_NEAR(probs[0], f->gout[0][0], 1e-12);
        free(scratch);
        registry_release(old);
        CHECK_EQ_INT(in_memory(), mem0 + 2);
        registry_release(old2);
        CHECK_EQ_INT(in_memory(), mem0 + 1);
    }
    /* A reference held across registry_free is still valid until release. */
    registry_version *held = NULL;
    CHECK_EQ_INT(registry_acquire(r, "BTCUSDT", "15m", NULL, &held), 0);
    registry_free(r);
    if (held) {
        CHECK_EQ_INT(registry_version_number(held), 2);
        registry_release(held);
    }
    CHECK_EQ_INT(in_memory(), mem0);
    free(f);
    util_rmtree(base);
    free(base);
}

typedef struct worker {
    registry *r;
    atomic_bool *stop;
    long ok, failed, runs;
} worker;

static void *worker_main(void *arg)
{
    worker *w = arg;
    double in[NF];
    for (int i = 0; i < NF; i++)
        in[i] = i == 0 ? 50 : 0.1 * i;
    void *scratch = malloc(1 << 16);
    while (!atomic_load(w->stop)) {
        registry_version *v = NULL;
        if (registry_acquire(w->r, "BTCUSDT", "15m", NULL, &v) != 0) {
            w->failed++;
            continue;
        }
        w->ok++;
        const inference_model *m = registry_version_model(v);
        double probs[3];
        if (inference_scratch_size(m) <= (1 << 16) && inference_run(m, in, probs, scratch) == 0 &&
            fabs(probs[0] + probs[1] + probs[2] - 1) < 1e-9)
            w->runs++;
        registry_release(v);
    }
    free(scratch);
    return NULL;
}

TEST(test_concurrent_acquire_during_publishes)
{
    char *base = mkdtemp_dir();
    char models[256];
    pathf(models, sizeof models, "%s/models", base);
    uint64_t mem0 = in_memory();
    CHECK_EQ_INT(publish_good(models, "BTCUSDT", "15m", 0), 1);
    registry *r = NULL;
    CHECK_EQ_INT(registry_new(models, &r), 0);
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);

    atomic_bool stop;
    atomic_init(&stop, false);
    worker w[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (worker){r, &stop, 0, 0, 0};
        pthread_create(&th[i], NULL, worker_main, &w[i]);
    }
    fx *f = malloc(sizeof *f);
    size_t max_loaded = 0;
    for (unsigned i = 1; i <= 100; i++) {
        fx_init(f, i, "test_registry");
        CHECK_EQ_INT(publish(models, "BTCUSDT", "15m", f), i + 1);
        CHECK_EQ_INT(registry_scan(r, "BTCUSDT", "15m"), 0);
        size_t lc = loaded_count(r);
        if (lc > max_loaded)
            max_loaded = lc;
    }
    free(f);
    atomic_store(&stop, true);
    long ok = 0, failed = 0, runs = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        ok += w[i].ok;
        failed += w[i].failed;
        runs += w[i].runs;
    }
    CHECK_EQ_INT(failed, 0);
    CHECK(ok > 0);
    CHECK_EQ_INT(runs, ok);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "15m"), 101);
    CHECK_EQ_INT(max_loaded, 1);
    CHECK_EQ_INT(loaded_count(r), 1);
    CHECK_EQ_INT(in_memory(), mem0 + 1); /* memory flat: one version in memory */
    registry_stats st;
    registry_stats_get(r, &st);
    CHECK_EQ_INT(st.loads_ok, 101);
    CHECK_EQ_INT(st.swaps, 101);
    registry_free(r);
    CHECK_EQ_INT(in_memory(), mem0);
    util_rmtree(base);
    free(base);
}

typedef struct observer {
    registry *r;
    atomic_bool *stop;
    int seq[64]; /* distinct successive results */
    int n;
    bool other; /* a code outside {0, ENOTREADY, ENOMODEL} */
    atomic_int looked;
} observer;

static void *observer_main(void *arg)
{
    observer *o = arg;
    for (;;) {
        bool last = atomic_load(o->stop); /* one more look after the scan */
        registry_version *v = NULL;
        int rc = registry_acquire(o->r, "BTCUSDT", "15m", NULL, &v);
        if (rc == 0)
            registry_release(v);
        else if (rc != PD_ENOTREADY && rc != PD_ENOMODEL)
            o->other = true;
        if ((o->n == 0 || o->seq[o->n - 1] != rc) && o->n < 64)
            o->seq[o->n++] = rc;
        atomic_store(&o->looked, 1);
        if (last)
            break;
    }
    return NULL;
}

/* Whatever the timing, a request during the first scan sees "no model"
 * (not discovered yet), then "not ready" (being verified), then the model,
 * and never goes backwards. */
TEST(test_readiness_is_monotone)
{
    char *base = mkdtemp_dir();
    char models[256];
    pathf(models, sizeof models, "%s/models", base);
    /* A slow first load: 20000 golden cases (~2.7 MB to hash, unpack, run). */
    fx *f = malloc(sizeof *f);
    fx_init(f, 1, "test_registry");
    size_t ng = 20000;
    Predictd__GoldenCase **many = malloc(ng * sizeof *many);
    for (size_t i = 0; i < ng; i++)
        many[i] = &f->g[i % NG];
    f->m.n_golden = ng;
    f->m.golden = many;
    CHECK_EQ_INT(publish(models, "BTCUSDT", "15m", f), 1);
    free(many);
    free(f);
    int saw_not_ready = 0;
    for (int round = 0; round < 20; round++) {
        registry *r = NULL;
        CHECK_EQ_INT(registry_new(models, &r), 0);
        atomic_bool stop;
        atomic_init(&stop, false);
        observer o = {r, &stop, {0}, 0, false, 0};
        pthread_t th;
        pthread_create(&th, NULL, observer_main, &o);
        while (atomic_load(&o.looked) == 0) /* the observer is running */
            sched_yield();
        CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
        atomic_store(&stop, true);
        pthread_join(th, NULL);
        CHECK(!o.other);
        CHECK(o.n >= 1 && o.seq[o.n - 1] == 0);
        int rank_prev = -1;
        for (int i = 0; i < o.n; i++) {
            int rank = o.seq[i] == PD_ENOMODEL ? 0 : o.seq[i] == PD_ENOTREADY ? 1 : 2;
            CHECK(rank > rank_prev);
            rank_prev = rank;
            saw_not_ready += rank == 1;
        }
        registry_free(r);
    }
    /* Informational: how often the race landed inside the first load. */
    printf("  (not ready seen in %d of 20 rounds)\n", saw_not_ready);
    util_rmtree(base);
    free(base);
}

typedef struct publisher {
    const char *models;
    uint32_t got[20];
    int errors;
} publisher;

static void *publisher_main(void *arg)
{
    publisher *p = arg;
    fx *f = malloc(sizeof *f);
    for (int i = 0; i < 20; i++) {
        fx_init(f, (unsigned)i, "test_registry");
        if (registry_publish(p->models, "BTCUSDT", "5m", &f->m, &f->s, &p->got[i]) != 0)
            p->errors++;
    }
    free(f);
    return NULL;
}

TEST(test_concurrent_publishers)
{
    char *base = mkdtemp_dir();
    char models[256];
    pathf(models, sizeof models, "%s/models", base);
    publisher pubs[2] = {{models, {0}, 0}, {models, {0}, 0}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&th[i], NULL, publisher_main, &pubs[i]);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    CHECK_EQ_INT(pubs[0].errors + pubs[1].errors, 0);
    bool seen[41] = {false};
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < 20; k++) {
            uint32_t v = pubs[i].got[k];
            CHECK(v >= 1 && v <= 40);
            if (v >= 1 && v <= 40) {
                CHECK(!seen[v]);
                seen[v] = true;
            }
        }
    /* Each model.pb carries its own directory's number, every one verifies,
     * and no temporary directory is left behind. */
    for (uint32_t v = 1; v <= 40; v++) {
        char p[512], why[256];
        pathf(p, sizeof p, "%s/BTCUSDT/5m/%u/model.pb", models, v);
        Predictd__Model *m = NULL;
        CHECK_EQ_INT(registry_read_model(p, &m, why, sizeof why), 0);
        if (m) {
            CHECK(m->meta && m->meta->version == v);
            predictd__model__free_unpacked(m, NULL);
        }
        pathf(p, sizeof p, "%s/BTCUSDT/5m/%u", models, v);
        CHECK_EQ_INT(registry_verify_dir(p, why, sizeof why), 0);
    }
    char p[512];
    pathf(p, sizeof p, "%s/BTCUSDT/5m", models);
    DIR *d = opendir(p);
    int entries = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        entries += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    if (d)
        closedir(d);
    CHECK_EQ_INT(entries, 40);
    util_rmtree(base);
    free(base);
}

TEST(test_read_files_bounded)
{
    char *base = mkdtemp_dir();
    char models[256], p[512], why[256];
    pathf(models, sizeof models, "%s/models", base);
    CHECK_EQ_INT(publish_good(models, "BTCUSDT", "15m", 1), 1);
    pathf(p, sizeof p, "%s/BTCUSDT/15m/1/scaler.pb", models);
    Predictd__Scaler *s = NULL;
    CHECK_EQ_INT(registry_read_scaler(p, &s, why, sizeof why), 0);
    if (s) {
        CHECK_EQ_INT(s->n_features, NF);
        predictd__scaler__free_unpacked(s, NULL);
    }
    Predictd__Model *m = NULL;
    pathf(p, sizeof p, "%s/none.pb", base);
    CHECK_EQ_INT(registry_read_model(p, &m, why, sizeof why), PD_ENOTFOUND);

    /* 1 MiB of empty GoldenCase sub-messages (2 bytes each on the wire,
     * ~70 bytes each in memory): refused by the decode budget. */
    size_t n = 1u << 20;
    uint8_t *buf = malloc(n);
    for (size_t i = 0; i < n; i += 2) {
        buf[i] = (12 << 3) | 2; /* field 12 (golden), length-delimited */
        buf[i + 1] = 0;
    }
    pathf(p, sizeof p, "%s/bomb.pb", base);
    CHECK_EQ_INT(write_file(p, buf, n), 0);
    free(buf);
    CHECK_EQ_INT(registry_read_model(p, &m, why, sizeof why), PD_EPARSE);
    CHECK(strstr(why, "memory") != NULL);
    /* A sparse file over the size limit is refused before reading. */
    pathf(p, sizeof p, "%s/big.pb", base);
    int fd = open(p, O_CREAT | O_WRONLY, 0644);
    CHECK(fd >= 0 && ftruncate(fd, (off_t)REGISTRY_MAX_FILE_BYTES + 1) == 0);
    close(fd);
    CHECK_EQ_INT(registry_read_model(p, &m, why, sizeof why), PD_ETOOBIG);
    /* Garbage. */
    pathf(p, sizeof p, "%s/garbage.pb", base);
    CHECK_EQ_INT(write_file(p, "\xff\xff\xff\xff", 4), 0);
    CHECK_EQ_INT(registry_read_model(p, &m, why, sizeof why), PD_EPARSE);
    /* verify_dir on something that is not a directory. */
    CHECK_EQ_INT(registry_verify_dir(p, why, sizeof why), PD_EVERIFY);
    CHECK_EQ_INT(registry_verify_dir(NULL, why, sizeof why), PD_EINVAL);
    util_rmtree(base);
    free(base);
}

static registry *sig_registry;
static void on_usr1(int sig)
{
    (void)sig;
    registry_request_scan(sig_registry);
}

/* Waits (at most 20 s) until want serves; the deadline only bounds a
 * failing test, nothing is timed. */
static bool wait_serving(registry *r, const char *sym, const char *tf, uint32_t want)
{
    for (int i = 0; i < 2000; i++) {
        if (serving(r, sym, tf) == want)
            return true;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return false;
}

TEST(test_scanner_thread)
{
    char *base = mkdtemp_dir();
    char models[256];
    pathf(models, sizeof models, "%s/models", base);
    registry *r = NULL;
    CHECK_EQ_INT(registry_new(models, &r), 0);
    CHECK_EQ_INT(registry_start(r, -1), PD_EINVAL);
    CHECK_EQ_INT(registry_start(r, 0), 0); /* on request only */
    CHECK_EQ_INT(registry_start(r, 0), PD_EBUSY);
    CHECK_EQ_INT(publish_good(models, "BTCUSDT", "15m", 1), 1);
    registry_request_scan(r);
    CHECK(wait_serving(r, "BTCUSDT", "15m", 1));

    /* From a signal handler, as SIGHUP does. */
    sig_registry = r;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    CHECK_EQ_INT(publish_good(models, "BTCUSDT", "15m", 2), 2);
    raise(SIGUSR1);
    CHECK(wait_serving(r, "BTCUSDT", "15m", 2));
    signal(SIGUSR1, SIG_DFL);
    registry_stop(r);
    registry_stop(r); /* idempotent */

    /* Periodic: picked up without a request. */
    CHECK_EQ_INT(registry_start(r, 1), 0);
    CHECK_EQ_INT(publish_good(models, "BTCUSDT", "15m", 3), 3);
    CHECK(wait_serving(r, "BTCUSDT", "15m", 3));
    registry_free(r); /* stops the running thread */
    util_rmtree(base);
    free(base);
}

/* an atomic, not a volatile sig_atomic_t: the handler runs on the
 * scanner thread and the test reads it from its own (lock-free atomics
 * are async-signal-safe) */
static atomic_int usr2_seen;
static void on_usr2(int sig)
{
    (void)sig;
    int saved = errno;
    atomic_store(&usr2_seen, 1);
    errno = saved;
}

/* Signals land on the scanner thread (a process-directed SIGHUP may be
 * taken by any thread; here every other thread blocks them, so the
 * scanner's wait is the one interrupted): a signal whose handler asks for
 * nothing wakes it with nothing to do and it goes on waiting; one whose
 * handler asks for a scan (as SIGHUP's does) gets the scan. Either way the
 * scanner keeps working. */
TEST(test_scanner_thread_takes_signals)
{
    char *base = mkdtemp_dir();
    char models[256];
    pathf(models, sizeof models, "%s/models", base);
    registry *r = NULL;
    CHECK_EQ_INT(registry_new(models, &r), 0);
    CHECK_EQ_INT(registry_start(r, 0), 0); /* on request only */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr2;
    sigaction(SIGUSR2, &sa, NULL);
    sig_registry = r;
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &set, &old); /* this thread: only the scanner takes them */

    /* a first scan on request; once it is counted the scanner is back in
     * its wait, where the signal finds it */
    CHECK_EQ_INT(publish_good(models, "BTCUSDT", "15m", 111), 1);
    registry_request_scan(r);
    CHECK(wait_serving(r, "BTCUSDT", "15m", 1));
    registry_stats st;
    for (int i = 0; i < 2000; i++) {
        registry_stats_get(r, &st);
        if (st.scans >= 1)
            break;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    atomic_store(&usr2_seen, 0);
    CHECK_EQ_INT(kill(getpid(), SIGUSR2), 0);
    for (int i = 0; i < 2000 && !atomic_load(&usr2_seen); i++) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    CHECK(atomic_load(&usr2_seen));
    /* still scanning, on a request from a handler run on the scanner
     * thread itself */
    CHECK_EQ_INT(publish_good(models, "BTCUSDT", "15m", 112), 2);
    CHECK_EQ_INT(kill(getpid(), SIGUSR1), 0);
    CHECK(wait_serving(r, "BTCUSDT", "15m", 2));
    registry_free(r);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    signal(SIGUSR1, SIG_DFL);
    signal(SIGUSR2, SIG_DFL);
    util_rmtree(base);
    free(base);
}

/* MANIFEST as people write it: `sha256sum -b` (the '*' marker), CRLF from
 * an editor on another system, blank lines, upper-case hex, other files
 * listed. All verify. A file listed twice, a line with a tab, a digest one
 * character short do not, each with its reason. */
TEST(test_manifest_forms)
{
    char *base = mkdtemp_dir();
    char models[256], vdir[512], p[512], m[65], sc[65], text[600], why[256];
    pathf(models, sizeof models, "%s/models", base);
    CHECK_EQ_INT(publish_good(models, "BTCUSDT", "15m", 3), 1);
    pathf(vdir, sizeof vdir, "%s/BTCUSDT/15m/1", models);
    pathf(p, sizeof p, "%s/model.pb", vdir);
    file_sha(p, m);
    pathf(p, sizeof p, "%s/scaler.pb", vdir);
    file_sha(p, sc);
    char upper[65];
    for (int i = 0; i < 65; i++)
        upper[i] = (char)toupper((unsigned char)sc[i]);
    pathf(p, sizeof p, "%s/MANIFEST", vdir);

    struct {
        const char *fmt; /* %1$s the model's digest, %2$s the scaler's */
        int rc;
        const char *reason;
    } forms[] = {
        {"%s *model.pb\r\n\r\n%s *scaler.pb\r\n", 0, NULL},
        {"\n\n%s  model.pb\n%s  scaler.pb", 0, NULL}, /* no final newline */
        {"%s  model.pb\n%s  scaler.pb\n"
         "0000000000000000000000000000000000000000000000000000000000000000  README\n",
         0, NULL},
        {"%1$s  model.pb\n%2$s  scaler.pb\n%1$s  model.pb\n", PD_EVERIFY, "lists model.pb twice"},
        {"%s\tmodel.pb\n%s  scaler.pb\n", PD_EVERIFY, "line 1 is not"},
        {"%.63s  model.pb\n%s  scaler.pb\n", PD_EVERIFY, "line 1 is not"},
        {"%s  model.pb\n%s  scaler.pb \n", PD_EVERIFY, "does not list scaler.pb"},
        {"%s  model.pb\n%s  \n", PD_EVERIFY, "line 2 is not"},
    };
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
        snprintf(text, sizeof text, forms[i].fmt, m, i == 0 ? upper : sc);
#pragma GCC diagnostic pop
        CHECK_EQ_INT(write_file(p, text, strlen(text)), 0);
        why[0] = '\0';
        int rc = registry_verify_dir(vdir, why, sizeof why);
        if (rc != forms[i].rc || (forms[i].reason && !strstr(why, forms[i].reason)))
            UNIT_FAIL_("form %zu: rc %d why '%s'", i, rc, why);
    }
    /* a digest in upper case that is wrong is still wrong */
    snprintf(text, sizeof text, "%s  model.pb\n%s  scaler.pb\n", m, upper);
    text[80] = text[80] == 'A' ? 'B' : 'A'; /* in the scaler digest */
    CHECK_EQ_INT(write_file(p, text, strlen(text)), 0);
    CHECK_EQ_INT(registry_verify_dir(vdir, why, sizeof why), PD_EVERIFY);
    CHECK(strstr(why, "scaler.pb") != NULL);

    /* the directory itself */
    CHECK_EQ_INT(registry_verify_dir(NULL, why, sizeof why), PD_EINVAL);
    pathf(p, sizeof p, "%s/no-such-version", models);
    CHECK_EQ_INT(registry_verify_dir(p, why, sizeof why), PD_EVERIFY);
    CHECK(strstr(why, "not a readable directory") != NULL);
    CHECK_EQ_INT(registry_verify_dir(p, NULL, 0), PD_EVERIFY); /* no room for a reason */
    pathf(p, sizeof p, "%s/model.pb", vdir);
    CHECK_EQ_INT(registry_verify_dir(p, why, sizeof why), PD_EVERIFY); /* a file */
    util_rmtree(base);
    free(base);
}

/* registry_read_model / _scaler (what `predictd models eval` and the
 * exporters' checks use): relative paths, missing directories and files,
 * a scaler read as a model. */
TEST(test_read_model_paths)
{
    char *base = mkdtemp_dir();
    char models[256], vdir[512], p[512], why[256] = "", cwd[1024];
    pathf(models, sizeof models, "%s/models", base);
    CHECK_EQ_INT(publish_good(models, "ETHUSDT", "1h", 4), 1);
    pathf(vdir, sizeof vdir, "%s/ETHUSDT/1h/1", models);
    Predictd__Model *m = NULL;
    Predictd__Scaler *s = NULL;

    CHECK(getcwd(cwd, sizeof cwd) != NULL);
    CHECK_EQ_INT(chdir(vdir), 0);
    CHECK_EQ_INT(registry_read_model("model.pb", &m, why, sizeof why), 0);
    CHECK(m != NULL);
    if (m) {
        CHECK_EQ_INT(m->n_features, NF);
        CHECK_EQ_STR(m->meta->symbol, "ETHUSDT");
        predictd__model__free_unpacked(m, NULL);
        m = NULL;
    }
    CHECK_EQ_INT(registry_read_scaler("scaler.pb", &s, why, sizeof why), 0);
    if (s) {
        CHECK_EQ_INT(s->n_mean, NF);
        CHECK_NEAR(s->mean[0], 50.0, 0);
        predictd__scaler__free_unpacked(s, NULL);
        s = NULL;
    }
    CHECK_EQ_INT(chdir(cwd), 0);

    CHECK_EQ_INT(registry_read_model(NULL, &m, why, sizeof why), PD_EINVAL);
    pathf(p, sizeof p, "%s/nowhere/model.pb", base);
    CHECK_EQ_INT(registry_read_model(p, &m, why, sizeof why), PD_ENOTFOUND);
    CHECK(strstr(why, "cannot open its directory") != NULL);
    pathf(p, sizeof p, "%s/absent.pb", vdir);
    CHECK_EQ_INT(registry_read_model(p, &m, why, sizeof why), PD_ENOTFOUND);
    CHECK(strstr(why, "absent.pb: missing") != NULL);
    CHECK_EQ_INT(registry_read_model("/no-such-file.pb", &m, why, sizeof why), PD_ENOTFOUND);
    CHECK(m == NULL);
    /* a MANIFEST is text, not a protobuf model */
    pathf(p, sizeof p, "%s/MANIFEST", vdir);
    int rc = registry_read_model(p, &m, why, sizeof why);
    CHECK(rc != 0);
    CHECK(m == NULL);
    util_rmtree(base);
    free(base);
}

/* registry_publish refuses what it cannot publish, before writing anything:
 * missing arguments, a bad symbol or timeframe, a models directory that is
 * a file or whose parent does not exist. The scan and start arguments are
 * checked the same way. */
TEST(test_publish_and_scan_refusals)
{
    char *base = mkdtemp_dir();
    char models[256], p[512];
    pathf(models, sizeof models, "%s/models", base);
    fx *f = malloc(sizeof *f);
    fx_init(f, 9, "test_registry");
    uint32_t v = 77;
    CHECK_EQ_INT(registry_publish(NULL, "BTCUSDT", "15m", &f->m, &f->s, &v), PD_EINVAL);
    CHECK_EQ_INT(registry_publish("", "BTCUSDT", "15m", &f->m, &f->s, &v), PD_EINVAL);
    CHECK_EQ_INT(registry_publish(models, "BTCUSDT", "15m", NULL, &f->s, &v), PD_EINVAL);
    CHECK_EQ_INT(registry_publish(models, "BTCUSDT", "15m", &f->m, NULL, &v), PD_EINVAL);
    CHECK_EQ_INT(registry_publish(models, "BTCUSDT", "15m", &f->m, &f->s, NULL), PD_EINVAL);
    CHECK_EQ_INT(registry_publish(models, "../x", "15m", &f->m, &f->s, &v), PD_EINVAL);
    CHECK_EQ_INT(registry_publish(models, "BTCUSDT", "3m", &f->m, &f->s, &v), PD_EINVAL);
    CHECK_EQ_INT(v, 77);
    CHECK(access(models, F_OK) != 0); /* nothing was created */
    /* _default is a valid owner */
    CHECK_EQ_INT(registry_publish(models, "_default", "1h", &f->m, &f->s, &v), 0);
    CHECK_EQ_INT(v, 1);
    /* the models directory is a file; its parent does not exist */
    pathf(p, sizeof p, "%s/plainfile", base);
    CHECK_EQ_INT(write_file(p, "x", 1), 0);
    v = 77;
    CHECK_EQ_INT(registry_publish(p, "BTCUSDT", "15m", &f->m, &f->s, &v), PD_EIO);
    pathf(p, sizeof p, "%s/no/such/parent", base);
    CHECK_EQ_INT(registry_publish(p, "BTCUSDT", "15m", &f->m, &f->s, &v), PD_EIO);
    CHECK_EQ_INT(v, 77);
    /* a timeframe directory that is a file */
    pathf(p, sizeof p, "%s/ETHUSDT", models);
    CHECK_EQ_INT(mkdir(p, 0755), 0);
    pathf(p, sizeof p, "%s/ETHUSDT/15m", models);
    CHECK_EQ_INT(write_file(p, "x", 1), 0);
    CHECK_EQ_INT(registry_publish(models, "ETHUSDT", "15m", &f->m, &f->s, &v), PD_EIO);
    free(f);

    registry *r = NULL;
    CHECK_EQ_INT(registry_new(NULL, &r), PD_EINVAL);
    CHECK_EQ_INT(registry_new("", &r), PD_EINVAL);
    CHECK_EQ_INT(registry_new(models, NULL), PD_EINVAL);
    CHECK_EQ_INT(registry_new(models, &r), 0);
    CHECK_EQ_INT(registry_scan(r, "BTCUSDT", NULL), PD_EINVAL);
    CHECK_EQ_INT(registry_scan(r, NULL, "15m"), PD_EINVAL);
    CHECK_EQ_INT(registry_scan(r, "bad", "15m"), PD_EINVAL);
    CHECK_EQ_INT(registry_scan(r, "BTCUSDT", "9m"), PD_EINVAL);
    CHECK_EQ_INT(registry_scan(NULL, NULL, NULL), PD_EINVAL);
    /* a series that is not there, and the whole tree with a file where a
     * timeframe directory should be: no error, nothing served from them */
    CHECK_EQ_INT(registry_scan(r, "XRPUSDT", "15m"), 0);
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    registry_version *rv = NULL;
    /* ETHUSDT 15m has no version of its own and _default only a 1h one */
    CHECK_EQ_INT(registry_acquire(r, "ETHUSDT", "15m", NULL, &rv), PD_ENOMODEL);
    CHECK(rv == NULL);
    CHECK_EQ_INT(registry_acquire(r, "ETHUSDT", "1h", NULL, &rv), 0);
    if (rv) {
        CHECK_EQ_STR(registry_version_owner(rv), "_default");
        CHECK_EQ_INT(registry_version_number(rv), 1);
        registry_release(rv);
    }
    CHECK_EQ_INT(registry_start(r, -1), PD_EINVAL);
    CHECK_EQ_INT(registry_start(r, 86400 * 366), PD_EINVAL);
    CHECK_EQ_INT(registry_start(NULL, 5), PD_EINVAL);
    CHECK_EQ_INT(registry_start(r, 0), 0);
    CHECK_EQ_INT(registry_start(r, 0), PD_EBUSY);
    registry_stop(r);
    registry_stop(r); /* twice is harmless */
    registry_free(r);
    registry_free(NULL);
    CHECK_EQ_STR(registry_fail_name(-1), "unknown");
    CHECK_EQ_STR(registry_fail_name(REGISTRY_FAIL_COUNT_), "unknown");
    CHECK(strcmp(registry_fail_name(REGISTRY_FAIL_MANIFEST), "unknown") != 0);
    registry_stats st;
    memset(&st, 0xff, sizeof st);
    registry_stats_get(NULL, &st);
    CHECK_EQ_INT(st.loads_failed, 0);
    util_rmtree(base);
    free(base);
}

/* A series directory that goes away (deleted, or replaced by a symlink,
 * which the scanner does not follow): nothing serves from it any more, a
 * request already holding its version finishes with it, and publishing
 * again brings it back. Versions removed from disk one by one are
 * forgotten beyond the last REGISTRY__KEEP_REMOVED. */
TEST(test_series_directory_gone)
{
    char *base = mkdtemp_dir();
    char models[256], sdir[512], p[512];
    pathf(models, sizeof models, "%s/models", base);
    pathf(sdir, sizeof sdir, "%s/BTCUSDT/15m", models);
    CHECK_EQ_INT(publish_good(models, "BTCUSDT", "15m", 21), 1);
    registry *r = NULL;
    CHECK_EQ_INT(registry_new(models, &r), 0);
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    registry_version *held = NULL;
    CHECK_EQ_INT(registry_acquire(r, "BTCUSDT", "15m", NULL, &held), 0);

    CHECK_EQ_INT(util_rmtree(sdir), 0);
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "15m"), 0);
    registry_version *v = NULL;
    CHECK_EQ_INT(registry_acquire(r, "BTCUSDT", "15m", NULL, &v), PD_ENOMODEL);
    /* the request that held it still reads a whole model */
    CHECK(held != NULL);
    if (held) {
        CHECK_EQ_INT(registry_version_number(held), 1);
        CHECK(registry_version_model(held) != NULL);
        registry_release(held);
    }
    CHECK_EQ_INT(registry_scan(r, "BTCUSDT", "15m"), 0);

    /* a symlink in its place is not followed */
    pathf(p, sizeof p, "%s/elsewhere", base);
    CHECK_EQ_INT(publish_good(p, "BTCUSDT", "15m", 22), 1);
    char target[512];
    pathf(target, sizeof target, "%s/BTCUSDT/15m", p);
    CHECK_EQ_INT(symlink(target, sdir), 0);
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "15m"), 0);
    CHECK_EQ_INT(unlink(sdir), 0);

    /* published again: serves again, numbered after nothing (a fresh directory) */
    CHECK_EQ_INT(publish_good(models, "BTCUSDT", "15m", 23), 1);
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "15m"), 1);

    /* twenty more versions, then all but the newest removed from disk: the
     * listing keeps at most REGISTRY__KEEP_REMOVED of the removed ones */
    for (int i = 0; i < 20; i++)
        publish_good(models, "BTCUSDT", "15m", 30 + (unsigned)i);
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "15m"), 21);
    for (int ver = 1; ver <= 20; ver++) {
        pathf(p, sizeof p, "%s/%d", sdir, ver);
        CHECK_EQ_INT(util_rmtree(p), 0);
        CHECK_EQ_INT(registry_scan(r, "BTCUSDT", "15m"), 0);
    }
    CHECK_EQ_INT(serving(r, "BTCUSDT", "15m"), 21);
    registry_series_info *s = NULL;
    size_t n = 0;
    CHECK_EQ_INT(registry_list(r, &s, &n), 0);
    size_t listed = 0;
    for (size_t i = 0; i < n; i++)
        if (!strcmp(s[i].symbol, "BTCUSDT") && !strcmp(s[i].timeframe, "15m"))
            listed = s[i].n_versions;
    registry_list_free(s, n);
    CHECK(listed >= 1 && listed <= 1 + REGISTRY__KEEP_REMOVED);
    registry_free(r);
    util_rmtree(base);
    free(base);
}

/* Policy changes that cannot be made: pinning a version whose files were
 * broken since the last scan (the previous policy is written back and keeps
 * serving), a policy.json that is not an object (rewritten as one), a
 * policy.json that cannot be replaced, a series whose directory is gone. */
TEST(test_policy_changes_that_fail)
{
    char *base = mkdtemp_dir();
    char models[256], p[512], sdir[512];
    pathf(models, sizeof models, "%s/models", base);
    pathf(sdir, sizeof sdir, "%s/BTCUSDT/15m", models);
    CHECK_EQ_INT(publish_good(models, "BTCUSDT", "15m", 41), 1);
    CHECK_EQ_INT(publish_good(models, "BTCUSDT", "15m", 42), 2);
    CHECK_EQ_INT(publish_good(models, "ETHUSDT", "15m", 43), 1);
    registry *r = NULL;
    CHECK_EQ_INT(registry_new(models, &r), 0);
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "15m"), 2);

    /* v1's model.pb broken behind the scanner's back, then pinned */
    pathf(p, sizeof p, "%s/1/model.pb", sdir);
    CHECK_EQ_INT(write_file(p, "\x08\x01junk", 6), 0);
    int rc = registry_pin(r, "BTCUSDT", "15m", 1);
    CHECK_EQ_INT(rc, PD_EVERIFY);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "15m"), 2);
    json_t *j = read_policy(models, "BTCUSDT", "15m");
    /* the policy written back pins nothing */
    CHECK(!j || json_integer_value(json_object_get(j, "pinned")) == 0);
    json_decref(j);

    /* a policy.json that is not an object is replaced by one */
    pathf(p, sizeof p, "%s/policy.json", sdir);
    CHECK_EQ_INT(write_file(p, "[1, 2]", 6), 0);
    CHECK_EQ_INT(registry_pin(r, "BTCUSDT", "15m", 2), 0);
    j = read_policy(models, "BTCUSDT", "15m");
    CHECK(j && json_is_object(j));
    CHECK_EQ_INT(json_integer_value(json_object_get(j, "pinned")), 2);
    json_decref(j);

    /* policy.json a directory: the change cannot be written and is refused */
    pathf(p, sizeof p, "%s/ETHUSDT/15m/policy.json", models);
    CHECK_EQ_INT(mkdir(p, 0755), 0);
    rc = registry_pin(r, "ETHUSDT", "15m", 1);
    CHECK(rc == PD_EIO);
    CHECK_EQ_INT(serving(r, "ETHUSDT", "15m"), 1);
    CHECK_EQ_INT(rmdir(p), 0);

    /* the series directory removed after the scan */
    pathf(p, sizeof p, "%s/ETHUSDT/15m", models);
    CHECK_EQ_INT(util_rmtree(p), 0);
    CHECK_EQ_INT(registry_pin(r, "ETHUSDT", "15m", 1), PD_ENOTFOUND);
    CHECK_EQ_INT(registry_unpin(r, "ETHUSDT", "15m"), PD_ENOTFOUND);
    CHECK_EQ_INT(registry_set_label(r, "ETHUSDT", "15m", "stable", 1, 0), PD_ENOTFOUND);
    registry_free(r);
    util_rmtree(base);
    free(base);
}

static registry_state state_of(registry *r, const char *sym, const char *tf, uint32_t ver)
{
    registry_version_info vi;
    memset(&vi, 0, sizeof vi);
    if (!version_info(r, sym, tf, ver, &vi, NULL))
        return (registry_state)-1;
    return vi.state;
}

/* Sets a file's modification time to `sec` seconds (a fixed value, so that
 * two writes within one clock tick still differ, or still match). */
static int set_mtime(const char *path, time_t sec)
{
    struct timespec ts[2] = {{sec, 0}, {sec, 0}};
    return utimensat(AT_FDCWD, path, ts, 0);
}

/* Overwrites a file in place (same inode): O_TRUNC, then the bytes. */
static int overwrite_in_place(const char *path, const void *data, size_t n)
{
    int fd = open(path, O_WRONLY | O_TRUNC);
    if (fd < 0)
        return -1;
    ssize_t w = write(fd, data, n);
    return close(fd) == 0 && w == (ssize_t)n ? 0 : -1;
}

/* A failed version is not read again until its files change (a scanner
 * must not re-verify a broken 100 MB model every few seconds); each way
 * its files can change makes it verified again: a missing file put back,
 * a MANIFEST put back, a file rewritten in place to another size, or to
 * the same size (only its modification time tells), a file replaced by
 * another (a new inode). Each repaired version then serves. */
TEST(test_failed_versions_are_verified_again_when_their_files_change)
{
    char *base = mkdtemp_dir();
    char models[256], sdir[512], p[600], q[600];
    pathf(models, sizeof models, "%s/models", base);
    pathf(sdir, sizeof sdir, "%s/BTCUSDT/15m", models);
    CHECK_EQ_INT(publish_good(models, "BTCUSDT", "15m", 61), 1);
    registry *r = NULL;
    CHECK_EQ_INT(registry_new(models, &r), 0);
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "15m"), 1);
    registry_stats st;

    /* v2 without its scaler.pb; then the file is put back */
    CHECK_EQ_INT(publish_good(models, "BTCUSDT", "15m", 62), 2);
    pathf(p, sizeof p, "%s/2/scaler.pb", sdir);
    pathf(q, sizeof q, "%s/scaler.pb.aside", base);
    CHECK_EQ_INT(rename(p, q), 0);
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    CHECK_EQ_INT(state_of(r, "BTCUSDT", "15m", 2), REGISTRY_FAILED);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "15m"), 1);
    /* nothing changed: not read again */
    registry_stats_get(r, &st);
    uint64_t failed_before = st.loads_failed;
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    registry_stats_get(r, &st);
    CHECK_EQ_INT(st.loads_failed, failed_before);
    CHECK_EQ_INT(state_of(r, "BTCUSDT", "15m", 2), REGISTRY_FAILED);
    CHECK_EQ_INT(rename(q, p), 0);
    log_begin(base);
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    char *log = log_end();
    CHECK_LOGGED(log, "BTCUSDT/15m v2 changed since it failed; it will be verified again");
    CHECK_LOGGED(log, "loaded BTCUSDT/15m v2");
    free(log);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "15m"), 2);

    /* v3 without its MANIFEST; then the MANIFEST is put back */
    CHECK_EQ_INT(publish_good(models, "BTCUSDT", "15m", 63), 3);
    pathf(p, sizeof p, "%s/3/MANIFEST", sdir);
    pathf(q, sizeof q, "%s/MANIFEST.aside", base);
    CHECK_EQ_INT(rename(p, q), 0);
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    CHECK_EQ_INT(state_of(r, "BTCUSDT", "15m", 3), REGISTRY_FAILED);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "15m"), 2);
    CHECK_EQ_INT(rename(q, p), 0);
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "15m"), 3);

    /* v4's model.pb cut in place (same inode, another size); then its
     * bytes written back into the same inode */
    CHECK_EQ_INT(publish_good(models, "BTCUSDT", "15m", 64), 4);
    pathf(p, sizeof p, "%s/4/model.pb", sdir);
    char *good = NULL;
    size_t glen = 0;
    CHECK_EQ_INT(util_read_file(p, 1u << 24, &good, &glen), 0);
    struct stat sb0, sb1;
    CHECK_EQ_INT(stat(p, &sb0), 0);
    CHECK_EQ_INT(overwrite_in_place(p, good, glen / 2), 0);
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    CHECK_EQ_INT(state_of(r, "BTCUSDT", "15m", 4), REGISTRY_FAILED);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "15m"), 3);
    CHECK_EQ_INT(overwrite_in_place(p, good, glen), 0);
    CHECK_EQ_INT(stat(p, &sb1), 0);
    CHECK(sb0.st_ino == sb1.st_ino);
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "15m"), 4);

    /* v5's model.pb with one byte changed in place (same inode, same
     * size); then the byte put back: only the modification time differs */
    CHECK_EQ_INT(publish_good(models, "BTCUSDT", "15m", 65), 5);
    pathf(p, sizeof p, "%s/5/model.pb", sdir);
    free(good);
    good = NULL;
    CHECK_EQ_INT(util_read_file(p, 1u << 24, &good, &glen), 0);
    char *bad = malloc(glen ? glen : 1);
    memcpy(bad, good, glen);
    bad[glen - 1] ^= 0x5a;
    CHECK_EQ_INT(overwrite_in_place(p, bad, glen), 0);
    CHECK_EQ_INT(set_mtime(p, 1700000000), 0);
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    CHECK_EQ_INT(state_of(r, "BTCUSDT", "15m", 5), REGISTRY_FAILED);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "15m"), 4);
    CHECK_EQ_INT(overwrite_in_place(p, good, glen), 0);
    CHECK_EQ_INT(set_mtime(p, 1700000001), 0);
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "15m"), 5);

    /* v6's model.pb replaced by another file (new inode) with bad bytes of
     * the same size and time; then by one with the good bytes */
    CHECK_EQ_INT(publish_good(models, "BTCUSDT", "15m", 66), 6);
    pathf(p, sizeof p, "%s/6/model.pb", sdir);
    pathf(q, sizeof q, "%s/6/model.pb.new", sdir);
    free(good);
    free(bad);
    good = NULL;
    CHECK_EQ_INT(util_read_file(p, 1u << 24, &good, &glen), 0);
    bad = malloc(glen ? glen : 1);
    memcpy(bad, good, glen);
    bad[glen - 1] ^= 0x5a;
    CHECK_EQ_INT(write_file(q, bad, glen), 0);
    CHECK_EQ_INT(set_mtime(q, 1700000000), 0);
    CHECK_EQ_INT(rename(q, p), 0);
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    CHECK_EQ_INT(state_of(r, "BTCUSDT", "15m", 6), REGISTRY_FAILED);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "15m"), 5);
    CHECK_EQ_INT(write_file(q, good, glen), 0);
    CHECK_EQ_INT(set_mtime(q, 1700000000), 0);
    CHECK_EQ_INT(rename(q, p), 0);
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "15m"), 6);
    free(good);
    free(bad);
    registry_free(r);
    util_rmtree(base);
    free(base);
}

/* A pin whose version fails to load puts the previous policy.json back:
 * byte for byte when it could be read (an operator's formatting and keys
 * the registry does not know survive), rebuilt from the policy in force
 * when it could not (too big to read: the registry kept the policy it had).
 * Pinning a version forgotten from the listing (older than the bounded
 * history) works while its directory is there, and is refused when its
 * directory is gone or is a file. */
TEST(test_policy_put_back_when_a_pin_fails)
{
    char *base = mkdtemp_dir();
    char models[256], sdir[512], p[600], pol[600];
    pathf(models, sizeof models, "%s/models", base);
    pathf(sdir, sizeof sdir, "%s/BTCUSDT/15m", models);
    pathf(pol, sizeof pol, "%s/policy.json", sdir);
    for (unsigned i = 1; i <= 4; i++)
        CHECK_EQ_INT(publish_good(models, "BTCUSDT", "15m", 70 + i), i);
    const char *text = "{\"labels\":   {\"stable\": 2},\n  \"owner\": \"desk-7\"}\n";
    CHECK_EQ_INT(write_file(pol, text, strlen(text)), 0);
    registry *r = NULL;
    CHECK_EQ_INT(registry_new(models, &r), 0);
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "15m"), 4);

    /* v1 broken behind the scanner's back, then pinned */
    pathf(p, sizeof p, "%s/1/model.pb", sdir);
    CHECK_EQ_INT(write_file(p, "\x08\x01junk", 6), 0);
    log_begin(base);
    CHECK_EQ_INT(registry_pin(r, "BTCUSDT", "15m", 1), PD_EVERIFY);
    char *log = log_end();
    CHECK_LOGGED(log, "BTCUSDT/15m: v1 failed to load; restoring the previous policy");
    free(log);
    char *now = NULL;
    size_t nlen = 0;
    CHECK_EQ_INT(util_read_file(pol, 1u << 20, &now, &nlen), 0);
    CHECK(now && nlen == strlen(text) && memcmp(now, text, nlen) == 0);
    free(now);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "15m"), 4);
    registry_series_info si;
    CHECK(version_info(r, "BTCUSDT", "15m", 0, NULL, &si));
    CHECK_EQ_INT(si.pinned, 0);

    /* policy.json grown past what the registry reads: the scan keeps the
     * policy it had (stable = v2); v3, broken since, pinned: the policy
     * in force is written back */
    size_t big = REGISTRY__MAX_SMALL_FILE + 100;
    char *huge = malloc(big);
    int head = snprintf(huge, big, "{\"labels\": {\"stable\": 1}, \"pad\": \"");
    memset(huge + head, 'x', big - (size_t)head - 3);
    memcpy(huge + big - 3, "\"}\n", 3);
    CHECK_EQ_INT(write_file(pol, huge, big), 0);
    free(huge);
    pathf(p, sizeof p, "%s/3/model.pb", sdir);
    CHECK_EQ_INT(write_file(p, "\x08\x01junk", 6), 0);
    CHECK_EQ_INT(registry_pin(r, "BTCUSDT", "15m", 3), PD_EVERIFY);
    json_t *j = read_policy(models, "BTCUSDT", "15m");
    CHECK(j && json_is_object(j));
    CHECK(json_object_get(j, "pinned") == NULL);
    CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(j, "labels"), "stable")), 2);
    json_decref(j);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "15m"), 4);
    CHECK_EQ_INT(registry_set_label(r, "BTCUSDT", "15m", "stable", 0, 0), 0);
    CHECK(access(pol, F_OK) != 0); /* nothing left to say: no file */

    /* a long history: the oldest retired versions (v2, v4, v5; the failed
     * v1 and v3 are kept) are forgotten from the listing */
    for (unsigned i = 5; i <= 22; i++)
        CHECK_EQ_INT(publish_good(models, "BTCUSDT", "15m", 70 + i), i);
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "15m"), 22);
    CHECK(version_info(r, "BTCUSDT", "15m", 1, NULL, NULL));
    CHECK(!version_info(r, "BTCUSDT", "15m", 2, NULL, NULL));
    CHECK(!version_info(r, "BTCUSDT", "15m", 4, NULL, NULL));
    CHECK(!version_info(r, "BTCUSDT", "15m", 5, NULL, NULL));
    /* v2's directory removed, v4's replaced by a file: neither can be
     * pinned; v5, forgotten but there, can */
    pathf(p, sizeof p, "%s/2", sdir);
    CHECK_EQ_INT(util_rmtree(p), 0);
    pathf(p, sizeof p, "%s/4", sdir);
    CHECK_EQ_INT(util_rmtree(p), 0);
    CHECK_EQ_INT(write_file(p, "x", 1), 0);
    CHECK_EQ_INT(registry_pin(r, "BTCUSDT", "15m", 2), PD_ENOTFOUND);
    CHECK_EQ_INT(registry_pin(r, "BTCUSDT", "15m", 4), PD_ENOTFOUND);
    CHECK(access(pol, F_OK) != 0);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "15m"), 22);
    CHECK_EQ_INT(registry_pin(r, "BTCUSDT", "15m", 5), 0);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "15m"), 5);
    j = read_policy(models, "BTCUSDT", "15m");
    CHECK(j && json_integer_value(json_object_get(j, "pinned")) == 5);
    json_decref(j);

    /* unpinned, and every version after v5 removed: v5, forgotten from the
     * listing, is the newest left and serves (as a process starting on
     * this directory would choose) */
    CHECK_EQ_INT(registry_unpin(r, "BTCUSDT", "15m"), 0);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "15m"), 22);
    for (unsigned i = 6; i <= 22; i++) {
        pathf(p, sizeof p, "%s/%u", sdir, i);
        CHECK_EQ_INT(util_rmtree(p), 0);
    }
    CHECK_EQ_INT(registry_scan(r, "BTCUSDT", "15m"), 0);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "15m"), 5);
    registry_version_info vi;
    CHECK(version_info(r, "BTCUSDT", "15m", 5, &vi, NULL));
    CHECK(vi.serving);

    /* calls that name no registry or no valid series */
    CHECK_EQ_INT(registry_pin(NULL, "BTCUSDT", "15m", 1), PD_EINVAL);
    CHECK_EQ_INT(registry_unpin(NULL, "BTCUSDT", "15m"), PD_EINVAL);
    CHECK_EQ_INT(registry_unpin(r, "BTCUSDT", "9m"), PD_EINVAL);
    CHECK_EQ_INT(registry_unpin(r, "btc", "15m"), PD_EINVAL);
    CHECK_EQ_INT(registry_set_label(r, "BTCUSDT", "7m", "stable", 5, 0), PD_EINVAL);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "15m"), 5);
    registry_free(r);
    util_rmtree(base);
    free(base);
}

/* A series directory replaced by a file, then its symbol directory too:
 * the scanner says the series is gone, nothing serves from it, a pin is
 * refused as not found; the other series are untouched. */
TEST(test_series_directory_replaced_by_a_file)
{
    char *base = mkdtemp_dir();
    char models[256], p[600];
    pathf(models, sizeof models, "%s/models", base);
    CHECK_EQ_INT(publish_good(models, "BTCUSDT", "15m", 81), 1);
    CHECK_EQ_INT(publish_good(models, "BTCUSDT", "1h", 82), 1);
    registry *r = NULL;
    CHECK_EQ_INT(registry_new(models, &r), 0);
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "15m"), 1);
    pathf(p, sizeof p, "%s/BTCUSDT/15m", models);
    CHECK_EQ_INT(util_rmtree(p), 0);
    CHECK_EQ_INT(write_file(p, "not a directory", 15), 0);
    log_begin(base);
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    char *log = log_end();
    CHECK_LOGGED(log, "BTCUSDT/15m: series directory gone");
    CHECK_LOGGED(log, "BTCUSDT: ignoring \"15m\" (not a timeframe directory)");
    free(log);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "15m"), 0);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "1h"), 1);
    CHECK_EQ_INT(registry_pin(r, "BTCUSDT", "15m", 1), PD_ENOTFOUND);
    CHECK_EQ_INT(registry_scan(r, "BTCUSDT", "15m"), 0);
    /* the symbol directory a file: every series under it is gone */
    pathf(p, sizeof p, "%s/BTCUSDT", models);
    CHECK_EQ_INT(util_rmtree(p), 0);
    CHECK_EQ_INT(write_file(p, "x", 1), 0);
    log_begin(base);
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    log = log_end();
    CHECK_LOGGED(log, "BTCUSDT/1h: series directory gone");
    CHECK_LOGGED(log, "ignoring \"BTCUSDT\" in the models directory");
    free(log);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "1h"), 0);
    registry_version *v = NULL;
    CHECK_EQ_INT(registry_acquire(r, "BTCUSDT", "1h", NULL, &v), PD_ENOMODEL);
    CHECK(v == NULL);
    registry_free(r);
    util_rmtree(base);
    free(base);
}

/* Symlinked version directories: refused, each named in the full scan's
 * list (which grows past its first allocation), never in a one-series
 * scan's (that keeps the last full scan's list); the list is bounded at
 * 4096 entries however many links there are, and the scan still serves
 * the real versions. */
TEST(test_refused_directories_are_listed_within_a_bound)
{
    char *base = mkdtemp_dir();
    char models[256], sdir[512], p[600], target[600];
    pathf(models, sizeof models, "%s/models", base);
    pathf(sdir, sizeof sdir, "%s/BTCUSDT/15m", models);
    CHECK_EQ_INT(publish_good(models, "BTCUSDT", "15m", 91), 1);
    pathf(target, sizeof target, "%s/1", sdir);
    for (int i = 0; i < 9; i++) {
        pathf(p, sizeof p, "%s/%d", sdir, 100 + i);
        CHECK_EQ_INT(symlink(target, p), 0);
    }
    registry *r = NULL;
    CHECK_EQ_INT(registry_new(models, &r), 0);
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    registry_refused_info *ref = NULL;
    size_t n = 0;
    CHECK_EQ_INT(registry_refused(r, &ref, &n), 0);
    CHECK_EQ_INT(n, 9);
    bool named = false;
    for (size_t i = 0; i < n; i++) {
        named = named || strcmp(ref[i].path, "BTCUSDT/15m/104") == 0;
        CHECK(strstr(ref[i].reason, "symbolic link") != NULL);
    }
    CHECK(named);
    free(ref);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "15m"), 1);
    /* one series scanned: still refused, the list is the full scan's */
    pathf(p, sizeof p, "%s/200", sdir);
    CHECK_EQ_INT(symlink(target, p), 0);
    CHECK_EQ_INT(registry_scan(r, "BTCUSDT", "15m"), 0);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "15m"), 1);
    ref = NULL;
    CHECK_EQ_INT(registry_refused(r, &ref, &n), 0);
    CHECK_EQ_INT(n, 9);
    free(ref);
    /* thousands of links: the list stops at 4096 */
    for (int i = 0; i < 4200; i++) {
        pathf(p, sizeof p, "%s/%d", sdir, 1000 + i);
        CHECK_EQ_INT(symlink(target, p), 0);
    }
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    ref = NULL;
    CHECK_EQ_INT(registry_refused(r, &ref, &n), 0);
    CHECK_EQ_INT(n, 4096);
    free(ref);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "15m"), 1);
    registry_free(r);
    util_rmtree(base);
    free(base);
}

/* Training metadata as trainers write it: none at all (a hand-made model:
 * it verifies and serves, with an empty trainer and unknown figures);
 * metrics whose names fit are readable, one whose name is too long for the
 * listing is left out (not truncated into a different name); a model.pb
 * with no timeframe in it says nothing, one trained for another timeframe
 * is served with a warning. */
TEST(test_training_metadata_as_written)
{
    char *base = mkdtemp_dir();
    char models[256];
    pathf(models, sizeof models, "%s/models", base);
    fx *f = malloc(sizeof *f);
    fx_init(f, 95, "test_registry");
    f->m.meta = NULL;
    uint32_t ver = 0;
    CHECK_EQ_INT(registry_publish(models, "BTCUSDT", "15m", &f->m, &f->s, &ver), 0);
    CHECK_EQ_INT(ver, 1);
    registry *r = NULL;
    CHECK_EQ_INT(registry_new(models, &r), 0);
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    registry_version *v = NULL;
    CHECK_EQ_INT(registry_acquire(r, "BTCUSDT", "15m", NULL, &v), 0);
    if (v) {
        const registry_meta *m = registry_version_meta(v);
        CHECK_EQ_STR(m->trainer, "");
        CHECK_EQ_INT(m->trained_at, 0);
        CHECK(isnan(m->test_accuracy));
        CHECK_EQ_INT(m->n_metrics, 0);
        CHECK(isnan(registry_meta_metric(m, "hit_rate_calls")));
        registry_release(v);
    }

    /* metrics, one with a name too long; no timeframe in the file */
    fx_init(f, 96, "test_registry");
    Predictd__Metric mt[3];
    Predictd__Metric *mp[3] = {&mt[0], &mt[1], &mt[2]};
    const char *names[3] = {"hit_rate_calls", "a_metric_name_longer_than_the_listing_keeps",
                            "beats_baseline"};
    const double values[3] = {0.61, 7, 1};
    for (int i = 0; i < 3; i++) {
        predictd__metric__init(&mt[i]);
        mt[i].name = (char *)names[i];
        mt[i].value = values[i];
    }
    f->meta.n_metrics = 3;
    f->meta.metrics = mp;
    f->meta.timeframe = "";
    CHECK_EQ_INT(registry_publish(models, "BTCUSDT", "15m", &f->m, &f->s, &ver), 0);
    CHECK_EQ_INT(ver, 2);
    log_begin(base);
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    char *log = log_end();
    CHECK_LOGGED(log, "loaded BTCUSDT/15m v2");
    CHECK(strstr(log, "trained for timeframe") == NULL);
    free(log);
    v = NULL;
    CHECK_EQ_INT(registry_acquire(r, "BTCUSDT", "15m", NULL, &v), 0);
    if (v) {
        const registry_meta *m = registry_version_meta(v);
        CHECK_EQ_INT(registry_version_number(v), 2);
        CHECK_EQ_INT(m->n_metrics, 2);
        CHECK_NEAR(registry_meta_metric(m, "hit_rate_calls"), 0.61, 1e-12);
        CHECK_NEAR(registry_meta_metric(m, "beats_baseline"), 1, 0);
        CHECK(isnan(registry_meta_metric(m, names[1])));
        CHECK(isnan(registry_meta_metric(m, "a_metric_name_longer_than_the_li")));
        registry_release(v);
    }

    /* trained for 1h, published under 15m: served, with a warning */
    fx_init(f, 97, "test_registry");
    f->meta.timeframe = "1h";
    CHECK_EQ_INT(registry_publish(models, "BTCUSDT", "15m", &f->m, &f->s, &ver), 0);
    CHECK_EQ_INT(ver, 3);
    log_begin(base);
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    log = log_end();
    CHECK_LOGGED(log, "BTCUSDT/15m v3: model.pb was trained for timeframe 1h");
    free(log);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "15m"), 3);
    free(f);
    registry_free(r);
    util_rmtree(base);
    free(base);
}

/* A pinned version removed from disk: the newest left serves, the series'
 * note says why ("pinned v1 not on disk; serving v2"), and pinning it again
 * is refused as not found while the listing still shows it. The calls that
 * take a registry accept NULL where their header says so. */
TEST(test_pinned_version_removed_from_disk)
{
    char *base = mkdtemp_dir();
    char models[256], p[600];
    pathf(models, sizeof models, "%s/models", base);
    CHECK_EQ_INT(publish_good(models, "BTCUSDT", "15m", 101), 1);
    CHECK_EQ_INT(publish_good(models, "BTCUSDT", "15m", 102), 2);
    registry *r = NULL;
    CHECK_EQ_INT(registry_new(models, &r), 0);
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    CHECK_EQ_INT(registry_pin(r, "BTCUSDT", "15m", 1), 0);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "15m"), 1);
    pathf(p, sizeof p, "%s/BTCUSDT/15m/1", models);
    CHECK_EQ_INT(util_rmtree(p), 0);
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "15m"), 2);
    registry_series_info si;
    registry_version_info vi;
    CHECK(version_info(r, "BTCUSDT", "15m", 1, &vi, &si));
    CHECK_EQ_STR(si.note, "pinned v1 not on disk; serving v2");
    CHECK_EQ_INT(si.pinned, 1);
    CHECK_EQ_INT(vi.state, REGISTRY_RETIRED);
    CHECK_EQ_INT(registry_pin(r, "BTCUSDT", "15m", 1), PD_ENOTFOUND);
    CHECK_EQ_INT(registry_set_label(r, "BTCUSDT", "15m", "stable", 1, 0), PD_ENOTFOUND);
    CHECK_EQ_INT(registry_pin(r, "BTCUSDT", "15m", REGISTRY__MAX_VERSION + 1u), PD_EINVAL);
    CHECK_EQ_INT(registry_unpin(r, "BTCUSDT", "15m"), 0);
    CHECK(version_info(r, "BTCUSDT", "15m", 0, NULL, &si));
    CHECK_EQ_STR(si.note, "");
    CHECK_EQ_INT(si.pinned, 0);
    /* NULL registries and lists: no-ops */
    registry_set_change_hook(NULL, NULL, NULL);
    registry_request_scan(NULL);
    registry_stop(NULL);
    registry_list_free(NULL, 0);
    CHECK_EQ_INT(serving(r, "BTCUSDT", "15m"), 2);
    registry_free(r);
    util_rmtree(base);
    free(base);
}

int main(void)
{
    util_log_configure(getenv("PREDICTD_TEST_VERBOSE") ? UTIL_LOG_DEBUG : UTIL_LOG_ERROR, false);
    RUN(test_publish_scan_acquire);
    RUN(test_highest_wins_and_swap);
    RUN(test_broken_versions_never_serve);
    RUN(test_junk_is_ignored);
    RUN(test_policy);
    RUN(test_default_fallback);
    RUN(test_refcount_outlives_swap);
    RUN(test_concurrent_acquire_during_publishes);
    RUN(test_readiness_is_monotone);
    RUN(test_concurrent_publishers);
    RUN(test_read_files_bounded);
    RUN(test_scanner_thread);
    RUN(test_scanner_thread_takes_signals);
    RUN(test_manifest_forms);
    RUN(test_read_model_paths);
    RUN(test_publish_and_scan_refusals);
    RUN(test_series_directory_gone);
    RUN(test_policy_changes_that_fail);
    RUN(test_failed_versions_are_verified_again_when_their_files_change);
    RUN(test_policy_put_back_when_a_pin_fails);
    RUN(test_series_directory_replaced_by_a_file);
    RUN(test_refused_directories_are_listed_within_a_bound);
    RUN(test_training_metadata_as_written);
    RUN(test_pinned_version_removed_from_disk);
    return unit_report();
}
