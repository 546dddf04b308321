/*
 * test_faults_io: system calls that fail the way disks and network file
 * systems make them fail, injected into the model repository's file code
 * (registry/files.c, util's atomic write) to check what it does then.
 *
 * This binary is linked with -Wl,--wrap=read,fsync,fstat64,close,openat64 (see the
 * Makefile): the calls to those functions from predictd's own objects
 * (libpredictd.a) and from this file go through the __wrap_ functions
 * below, which pass through to the C library unless a test armed a fault:
 * the Nth call (counted from io_arm) fails with a given errno, or, for
 * read, returns fewer bytes than asked (a file that shrank while read).
 * openat of a named directory can also fail with ENOENT (a version
 * directory removed between the listing and the load). The C library's own
 * calls (stdio) are not affected.
 *
 * Behaviours checked: a model file whose read fails (EIO) is refused and
 * the version does not serve; a read interrupted by a signal (EINTR) is
 * retried and the version serves; a file that ends before the size fstat
 * said is hashed as it is (and fails its MANIFEST); fstat failing refuses
 * the file; a publish whose fsync of a file, of the temporary directory or
 * of the series directory fails, or whose close fails, reports PD_EIO and
 * leaves no temporary directory behind; a policy change whose fsync fails
 * is refused, the policy in force stays and the temporary file is gone
 * (and its descriptor closed); a failed pin whose restore of the previous
 * policy fails is logged as an error; a version directory vanishing
 * mid-scan fails that version only, until it is back. No timing assertions.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <unistd.h>

#include "registry/registry.h"
#include "registry/registry_internal.h"
#include "unit.h"
#include "fixtures.h"
#include "util/util.h"

#include "model_fixture.h"

/* ------------------------------------------------------------------------
 * The system call wrappers.
 */
ssize_t __real_read(int fd, void *buf, size_t n);
int __real_fsync(int fd);
/* with 64-bit file offsets the headers call fstat64 */
int __real_fstat64(int fd, struct stat *st);
int __real_close(int fd);
ssize_t __wrap_read(int fd, void *buf, size_t n);
int __wrap_fsync(int fd);
int __wrap_fstat64(int fd, struct stat *st);
int __wrap_close(int fd);
int __real_openat64(int dirfd, const char *name, int flags, ...);
int __wrap_openat64(int dirfd, const char *name, int flags, ...);

enum io_call { IO_NONE, IO_READ, IO_FSYNC, IO_FSTAT, IO_CLOSE };

static _Atomic int io_which = IO_NONE; /* the call that fails */
static atomic_long io_at;              /* its Nth occurrence from io_arm (1-based) */
static atomic_long io_seen;            /* occurrences since io_arm */
static _Atomic int io_errno;           /* the errno; 0 for read: a short read */
static atomic_bool io_fired;
static atomic_bool io_persist; /* and every call after it */
/* openat of this name with O_DIRECTORY fails with ENOENT (a directory that
 * vanished after it was listed); "" for none */
static char io_vanish[32];
static atomic_bool io_vanished;

/* The at-th call of `which` from now fails with err (for read, err 0: the
 * call returns 0 bytes, the end of a file that shrank). */
static void io_arm(enum io_call which, long at, int err)
{
    atomic_store(&io_seen, 0);
    atomic_store(&io_at, at);
    atomic_store(&io_errno, err);
    atomic_store(&io_fired, false);
    atomic_store(&io_persist, false);
    atomic_store(&io_which, (int)which);
}

/* As io_arm, and every call after the at-th fails too (the disk is gone
 * until io_disarm). */
static void io_arm_from(enum io_call which, long at, int err)
{
    io_arm(which, at, err);
    atomic_store(&io_persist, true);
}

/* Disarms; true when the fault was injected. */
static bool io_disarm(void)
{
    atomic_store(&io_which, IO_NONE);
    return atomic_load(&io_fired);
}

static bool io_now(enum io_call which)
{
    if (atomic_load(&io_which) != (int)which)
        return false;
    long n = atomic_fetch_add(&io_seen, 1) + 1, at = atomic_load(&io_at);
    if (n != at && !(n > at && atomic_load(&io_persist)))
        return false;
    atomic_store(&io_fired, true);
    return true;
}

ssize_t __wrap_read(int fd, void *buf, size_t n)
{
    if (io_now(IO_READ)) {
        int e = atomic_load(&io_errno);
        if (e == 0)
            return 0;
        errno = e;
        return -1;
    }
    return __real_read(fd, buf, n);
}

int __wrap_fsync(int fd)
{
    if (io_now(IO_FSYNC)) {
        errno = atomic_load(&io_errno);
        return -1;
    }
    return __real_fsync(fd);
}

int __wrap_fstat64(int fd, struct stat *st)
{
    if (io_now(IO_FSTAT)) {
        errno = atomic_load(&io_errno);
        return -1;
    }
    return __real_fstat64(fd, st);
}

/* A failing close still closes (as Linux does: the descriptor is gone
 * whatever close returns), so nothing leaks. */
int __wrap_close(int fd)
{
    int rc = __real_close(fd);
    if (rc == 0 && io_now(IO_CLOSE)) {
        errno = atomic_load(&io_errno);
        return -1;
    }
    return rc;
}

int __wrap_openat64(int dirfd, const char *name, int flags, ...)
{
    mode_t mode = 0;
    if (flags & O_CREAT) {
        va_list ap;
        va_start(ap, flags);
        mode = (mode_t)va_arg(ap, int);
        va_end(ap);
    }
    if (io_vanish[0] && (flags & O_DIRECTORY) && strcmp(name, io_vanish) == 0) {
        atomic_store(&io_vanished, true);
        errno = ENOENT;
        return -1;
    }
    return __real_openat64(dirfd, name, flags, mode);
}

/* ------------------------------------------------------------------------
 * A repository.
 */
static char base_dir[512], models_dir[600], series_dir[700];

static bool repo_init(void)
{
    if (!unit_tmpdir(base_dir, sizeof base_dir, "pd-faults-io"))
        return false;
    snprintf(models_dir, sizeof models_dir, "%s/models", base_dir);
    snprintf(series_dir, sizeof series_dir, "%s/BTCUSDT/15m", models_dir);
    return true;
}

static uint32_t publish_seed(unsigned seed, int *rc_out)
{
    fx *f = malloc(sizeof *f);
    fx_init(f, seed, "test_faults_io");
    uint32_t v = 0;
    int rc = registry_publish(models_dir, "BTCUSDT", "15m", &f->m, &f->s, &v);
    free(f);
    if (rc_out)
        *rc_out = rc;
    return rc == 0 ? v : 0;
}

/* Entries of the series directory: versions and hidden temporaries. */
static void series_entries(size_t *versions, size_t *temporaries)
{
    *versions = *temporaries = 0;
    DIR *d = opendir(series_dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        if (!strncmp(e->d_name, ".tmp-", 5))
            (*temporaries)++;
        else if (registry__parse_version(e->d_name))
            (*versions)++;
    }
    closedir(d);
}

/* Descriptors open in this process. */
static int open_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    closedir(d);
    return n - 1; /* the directory's own */
}

static uint32_t serving(registry *r)
{
    registry_version *v = NULL;
    if (registry_acquire(r, "BTCUSDT", "15m", NULL, &v) != 0)
        return 0;
    uint32_t n = registry_version_number(v);
    registry_release(v);
    return n;
}

static bool failed_with(registry *r, uint32_t ver, const char *why)
{
    registry_series_info *s = NULL;
    size_t n = 0;
    bool found = false;
    if (registry_list(r, &s, &n) != 0)
        return false;
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < s[i].n_versions; k++)
            if (s[i].versions[k].version == ver && s[i].versions[k].state == REGISTRY_FAILED) {
                found = strstr(s[i].versions[k].reason, why) != NULL;
                if (!found)
                    printf("  v%u failed: %s (want \"%s\")\n", ver, s[i].versions[k].reason, why);
            }
    registry_list_free(s, n);
    return found;
}

/* ------------------------------------------------------------------------
 * Tests.
 */

/* registry__read_at, the one reader of model files, under each failure. */
TEST(reading_a_file_that_fails)
{
    if (!repo_init())
        UNIT_SKIP("no temporary directory");
    CHECK_EQ_INT(publish_seed(1, NULL), 1);
    char vdir[800];
    snprintf(vdir, sizeof vdir, "%s/1", series_dir);
    int dfd = open(vdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    CHECK(dfd >= 0);
    char *ref = NULL, *out = NULL;
    size_t rlen = 0, len = 0;
    CHECK_EQ_INT(registry__read_at(dfd, "model.pb", 1u << 24, &ref, &rlen), 0);
    CHECK(rlen > 100);

    /* interrupted by a signal: retried, the whole file */
    io_arm(IO_READ, 1, EINTR);
    CHECK_EQ_INT(registry__read_at(dfd, "model.pb", 1u << 24, &out, &len), 0);
    CHECK(io_disarm());
    CHECK(out && len == rlen && memcmp(out, ref, rlen) == 0);
    free(out);
    out = NULL;

    /* a read error: PD_EIO, nothing returned */
    io_arm(IO_READ, 1, EIO);
    CHECK_EQ_INT(registry__read_at(dfd, "model.pb", 1u << 24, &out, &len), PD_EIO);
    CHECK(io_disarm());
    CHECK(out == NULL);

    /* the file ends early (it shrank after fstat): the bytes there were */
    io_arm(IO_READ, 1, 0);
    CHECK_EQ_INT(registry__read_at(dfd, "model.pb", 1u << 24, &out, &len), 0);
    CHECK(io_disarm());
    CHECK_EQ_INT(len, 0);
    CHECK(out && out[0] == '\0');
    free(out);
    out = NULL;

    /* fstat failing: the file is not read */
    io_arm(IO_FSTAT, 1, EIO);
    CHECK_EQ_INT(registry__read_at(dfd, "model.pb", 1u << 24, &out, &len), PD_EIO);
    CHECK(io_disarm());
    CHECK(out == NULL);
    free(ref);
    close(dfd);
    util_rmtree(base_dir);
}

/* A registry meeting those failures while it verifies a new version: a
 * read error or a short read refuses the version (the serving one stays),
 * and once the disk answers again the version, unchanged, is verified
 * again only when asked to (its files did not change), while an EINTR
 * does not stop it serving. */
TEST(a_version_whose_read_fails_does_not_serve)
{
    if (!repo_init())
        UNIT_SKIP("no temporary directory");
    CHECK_EQ_INT(publish_seed(11, NULL), 1);
    registry *r = NULL;
    CHECK_EQ_INT(registry_new(models_dir, &r), 0);
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    CHECK_EQ_INT(serving(r), 1);

    /* v2: every read of the scan fails (the disk is gone): refused, v1
     * serves; when the disk is back the next scan sees its files read
     * differently (its MANIFEST now readable), verifies it again, and it
     * serves */
    CHECK_EQ_INT(publish_seed(12, NULL), 2);
    io_arm_from(IO_READ, 1, EIO);
    CHECK_EQ_INT(registry_scan(r, "BTCUSDT", "15m"), 0);
    CHECK(io_disarm());
    CHECK_EQ_INT(serving(r), 1);
    CHECK(failed_with(r, 2, "MANIFEST"));
    registry_stats st;
    registry_stats_get(r, &st);
    CHECK_EQ_INT(st.loads_failed, 1);
    CHECK_EQ_INT(registry_scan(r, "BTCUSDT", "15m"), 0);
    CHECK_EQ_INT(serving(r), 2);

    /* v3: interrupted reads are retried: it serves */
    CHECK_EQ_INT(publish_seed(13, NULL), 3);
    io_arm(IO_READ, 2, EINTR);
    CHECK_EQ_INT(registry_scan(r, "BTCUSDT", "15m"), 0);
    CHECK(io_disarm());
    CHECK_EQ_INT(serving(r), 3);

    /* v4: its model.pb read short (it shrank under the reader): refused
     * by its hash, v3 stays */
    CHECK_EQ_INT(publish_seed(14, NULL), 4);
    long reads = 0;
    for (long at = 1; at < 20; at++) {
        /* find the read of model.pb: the one whose failure names it */
        registry *t = NULL;
        CHECK_EQ_INT(registry_new(models_dir, &t), 0);
        io_arm(IO_READ, at, 0);
        CHECK_EQ_INT(registry_scan(t, "BTCUSDT", "15m"), 0);
        bool fired = io_disarm();
        bool named = fired && failed_with(t, 4, "model.pb");
        registry_free(t);
        if (!fired)
            break;
        if (named) {
            reads = at;
            break;
        }
    }
    CHECK(reads > 0);
    io_arm(IO_READ, reads, 0);
    CHECK_EQ_INT(registry_scan(r, "BTCUSDT", "15m"), 0);
    CHECK(io_disarm());
    CHECK_EQ_INT(serving(r), 3);
    CHECK(failed_with(r, 4, "model.pb"));
    registry_free(r);
    util_rmtree(base_dir);
}

/* Publishing when the disk fails to make the files durable: each fsync
 * (model.pb, scaler.pb, MANIFEST, the temporary directory), and each close
 * of a written file, failing in turn: PD_EIO, no new version, no temporary
 * directory left. The fsync of the series directory after the rename
 * failing: PD_EIO too (the version is in place but not known durable; the
 * caller is told). An fsync that works again: the next publish succeeds
 * and verifies. */
TEST(publishing_when_fsync_or_close_fails)
{
    if (!repo_init())
        UNIT_SKIP("no temporary directory");
    CHECK_EQ_INT(publish_seed(21, NULL), 1);
    size_t nv = 0, nt = 0;
    for (long at = 1; at <= 4; at++) {
        io_arm(IO_FSYNC, at, EIO);
        int rc = 0;
        CHECK_EQ_INT(publish_seed(22, &rc), 0);
        CHECK(io_disarm());
        CHECK_EQ_INT(rc, PD_EIO);
        series_entries(&nv, &nt);
        CHECK_EQ_INT(nv, 1);
        CHECK_EQ_INT(nt, 0);
    }
    for (long at = 1; at <= 3; at++) {
        /* the closes of the three files come before the directory's */
        io_arm(IO_CLOSE, at, EIO);
        int rc = 0;
        CHECK_EQ_INT(publish_seed(23, &rc), 0);
        bool fired = io_disarm();
        CHECK(fired);
        if (fired && rc != PD_EIO)
            printf("  close %ld failing: publish returned %s\n", at, util_strerror(rc));
        series_entries(&nv, &nt);
        CHECK_EQ_INT(nt, 0);
        if (rc == 0) /* a close that was not a written file's: the publish stands */
            CHECK_EQ_INT(nv, 2);
        else
            CHECK_EQ_INT(nv, 1);
        if (nv == 2) {
            char p[800];
            snprintf(p, sizeof p, "%s/2", series_dir);
            util_rmtree(p);
        }
    }
    /* the fifth fsync: the series directory, after the rename */
    io_arm(IO_FSYNC, 5, EIO);
    int rc = 0;
    CHECK_EQ_INT(publish_seed(24, &rc), 0);
    CHECK(io_disarm());
    CHECK_EQ_INT(rc, PD_EIO);
    series_entries(&nv, &nt);
    CHECK_EQ_INT(nt, 0);
    CHECK_EQ_INT(nv, 2);
    /* the disk is back: the next one is v3 and verifies */
    CHECK_EQ_INT(publish_seed(25, NULL), 3);
    char vdir[800], why[256];
    snprintf(vdir, sizeof vdir, "%s/3", series_dir);
    CHECK_EQ_INT(registry_verify_dir(vdir, why, sizeof why), 0);
    util_rmtree(base_dir);
}

/* A pin whose policy.json cannot be made durable (fsync fails): refused
 * with PD_EIO, the version in force keeps serving, no policy.json (none
 * was there) and no temporary file is left behind, and no descriptor
 * stays open. */
TEST(a_policy_change_whose_fsync_fails_is_refused)
{
    if (!repo_init())
        UNIT_SKIP("no temporary directory");
    CHECK_EQ_INT(publish_seed(31, NULL), 1);
    CHECK_EQ_INT(publish_seed(32, NULL), 2);
    registry *r = NULL;
    CHECK_EQ_INT(registry_new(models_dir, &r), 0);
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    CHECK_EQ_INT(serving(r), 2);
    int fds = open_fds();
    io_arm(IO_FSYNC, 1, EIO);
    CHECK_EQ_INT(registry_pin(r, "BTCUSDT", "15m", 1), PD_EIO);
    CHECK(io_disarm());
    CHECK_EQ_INT(serving(r), 2);
    CHECK_EQ_INT(open_fds(), fds); /* the temporary file's descriptor closed */
    char p[800];
    snprintf(p, sizeof p, "%s/policy.json", series_dir);
    CHECK(access(p, F_OK) != 0);
    snprintf(p, sizeof p, "%s/.policy.json.tmp.%d", series_dir, (int)getpid());
    CHECK(access(p, F_OK) != 0);
    size_t nv = 0, nt = 0;
    series_entries(&nv, &nt);
    CHECK_EQ_INT(nt, 0);
    /* and works once the disk does */
    CHECK_EQ_INT(registry_pin(r, "BTCUSDT", "15m", 1), 0);
    CHECK_EQ_INT(serving(r), 1);
    registry_free(r);
    util_rmtree(base_dir);
}

/* A pin of a version that fails to load, when putting the previous
 * policy.json back fails too (its fsync): the failure is logged as an
 * error naming the series, the call still says the version failed
 * verification, and what serves is what served (the pin on disk names a
 * version that fails, which is never served). */
TEST(a_failed_pin_whose_restore_fails_is_logged)
{
    if (!repo_init())
        UNIT_SKIP("no temporary directory");
    CHECK_EQ_INT(publish_seed(41, NULL), 1);
    CHECK_EQ_INT(publish_seed(42, NULL), 2);
    char p[800], logp[800];
    snprintf(p, sizeof p, "%s/policy.json", series_dir);
    const char *text = "{\"labels\": {\"stable\": 2}}\n";
    FILE *f = fopen(p, "w");
    CHECK(f != NULL);
    if (!f)
        return;
    fputs(text, f);
    fclose(f);
    registry *r = NULL;
    CHECK_EQ_INT(registry_new(models_dir, &r), 0);
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    CHECK_EQ_INT(serving(r), 2);
    /* v1's model broken behind the registry's back */
    snprintf(p, sizeof p, "%s/1/model.pb", series_dir);
    f = fopen(p, "w");
    if (f) {
        fputs("\x08\x01junk", f);
        fclose(f);
    }
    /* stderr to a file: the error line is what an operator gets */
    snprintf(logp, sizeof logp, "%s/stderr.log", base_dir);
    fflush(stderr);
    int saved = dup(STDERR_FILENO), fd = open(logp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    CHECK(saved >= 0 && fd >= 0);
    dup2(fd, STDERR_FILENO);
    close(fd);
    io_arm(IO_FSYNC, 2, EIO); /* the new policy is written; putting the old back fails */
    int rc = registry_pin(r, "BTCUSDT", "15m", 1);
    bool fired = io_disarm();
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    CHECK(fired);
    CHECK_EQ_INT(rc, PD_EVERIFY);
    char *log = NULL;
    size_t n = 0;
    CHECK_EQ_INT(util_read_file(logp, 1u << 20, &log, &n), 0);
    CHECK(log && strstr(log, "BTCUSDT/15m: the previous policy could not be restored"));
    if (log && !strstr(log, "could not be restored"))
        printf("  log: %s\n", log);
    free(log);
    CHECK_EQ_INT(serving(r), 2);
    registry_free(r);
    /* a fresh process reads the pin left on disk and still serves v2 */
    r = NULL;
    CHECK_EQ_INT(registry_new(models_dir, &r), 0);
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    CHECK_EQ_INT(serving(r), 2);
    registry_free(r);
    util_rmtree(base_dir);
}

/* A version directory that vanishes between the listing and the load (an
 * operator's rm racing the scanner; here its open fails with ENOENT): the
 * version fails with that reason, what served still serves, and when the
 * directory is readable again the next scan verifies it (its files read
 * differently from the nothing it saw) and it serves. */
TEST(a_version_directory_vanishing_mid_scan)
{
    if (!repo_init())
        UNIT_SKIP("no temporary directory");
    CHECK_EQ_INT(publish_seed(51, NULL), 1);
    registry *r = NULL;
    CHECK_EQ_INT(registry_new(models_dir, &r), 0);
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    CHECK_EQ_INT(serving(r), 1);
    CHECK_EQ_INT(publish_seed(52, NULL), 2);
    snprintf(io_vanish, sizeof io_vanish, "2");
    atomic_store(&io_vanished, false);
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    io_vanish[0] = '\0';
    CHECK(atomic_load(&io_vanished));
    CHECK_EQ_INT(serving(r), 1);
    CHECK(failed_with(r, 2, "version directory unreadable: No such file or directory"));
    CHECK_EQ_INT(registry_scan(r, NULL, NULL), 0);
    CHECK_EQ_INT(serving(r), 2);
    registry_free(r);
    util_rmtree(base_dir);
}

int main(void)
{
    util_log_configure(getenv("PREDICTD_TEST_VERBOSE") ? UTIL_LOG_DEBUG : UTIL_LOG_ERROR, false);
    RUN(reading_a_file_that_fails);
    RUN(a_version_whose_read_fails_does_not_serve);
    RUN(publishing_when_fsync_or_close_fails);
    RUN(a_policy_change_whose_fsync_fails_is_refused);
    RUN(a_failed_pin_whose_restore_fails_is_logged);
    RUN(a_version_directory_vanishing_mid_scan);
    return unit_report();
}
