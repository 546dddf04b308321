/*
 * registry/registry.c: the model repository at run time. Scans
 * models/SYMBOL/TF/VERSION/, keeps per series the versions it has seen and
 * what became of them, applies policy.json (pin, labels, canary share),
 * chooses what serves, swaps it in atomically, unloads what is no longer
 * needed, and hands references to request threads.
 *
 * It does not read or verify model files itself (files.c does), and it
 * never follows a symlink or builds a path from a name it has not
 * validated: directories are walked with openat(O_NOFOLLOW) from the
 * models directory down, and only names that pass util_symbol_valid (or are
 * "_default"), util_tf_seconds and registry__parse_version are used.
 *
 * DESIGN
 * - Versions are immutable once published: a version number is verified at
 *   most once per appearance. A version that failed is remembered with its
 *   reason and a fingerprint of its files (MANIFEST content, identity of
 *   model.pb/scaler.pb/MANIFEST) and is verified again only when that
 *   fingerprint changes, so a broken file is not re-verified every scan
 *   but a fixed one, or one that was caught half-written, is picked up.
 * - What serves: the pinned version when policy.json pins one that
 *   verifies; otherwise the highest version that verifies. When the pinned
 *   version is unavailable the previous choice keeps serving (or, at start,
 *   the highest), and the series' note says why. Versions are tried from
 *   the highest down, so new versions above the serving one are always
 *   verified, and older ones are never loaded unless something asks for
 *   them.
 * - Memory: only the serving version and the labelled ones stay loaded;
 *   others are unloaded (RETIRED, still listed) as soon as a scan no longer
 *   needs them, and freed when their last request releases them. A version
 *   that verified once is not reloaded to be listed, only when chosen.
 * - Availability: a new choice is loaded before the old one is unloaded,
 *   and a version removed from disk keeps serving until its replacement is
 *   in, so a request never sees "no model" because of a swap.
 *
 * THREADING
 * - r->lock (the lookup lock) guards the series array, each series' slots
 *   array and every field marked "lock" below. It is held only to look up,
 *   copy or assign: never during I/O or verification. registry_acquire()
 *   takes it, finds the version, increments its reference count and
 *   leaves.
 * - r->scan_lock serialises scans and policy changes. Only the thread
 *   holding it writes series state (and it writes under r->lock too), so
 *   that thread may read series state without r->lock.
 * - The registry holds one reference to every loaded version (slot.v).
 *   Detaching a version from its slot happens under r->lock; the reference
 *   is dropped after unlocking. A request that found the version under the
 *   lock therefore always increments a live count.
 * - The scanner thread sleeps in poll() on a self-pipe, so
 *   registry_request_scan() is an atomic store and a write(2): safe in a
 *   signal handler.
 */
#define _GNU_SOURCE
#include "registry/registry_internal.h"

#include <dirent.h>
#include <errno.h>
#include <malloc.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <poll.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/util.h"

#define MOD "registry"

static const char LABEL_STABLE[] = "stable";
static const char LABEL_CANARY[] = "canary";

typedef struct policy {
    uint32_t pinned; /* 0: none */
    uint32_t stable; /* 0: no such label */
    uint32_t canary;
    uint32_t canary_share; /* percent */
} policy;

/* One version directory the registry has seen. */
typedef struct slot {
    uint32_t number;
    registry_state state; /* lock */
    bool on_disk;         /* scanner: present in the last listing */
    bool verified_ok;     /* scanner: verified since it (re)appeared */
    bool transient;       /* lock: the last failure was ENOMEM: retry */
    registry_version *v;  /* lock; the registry's own reference, NULL when unloaded */
    char reason[256];     /* lock */
    registry__fp fp;      /* scanner: files as of the last failure */
    int64_t loaded_at;    /* lock */
    double load_ms;       /* lock */
    double test_accuracy; /* lock */
    int64_t trained_at;   /* lock */
} slot;

typedef struct series {
    char symbol[32];
    char tf[8];
    slot *slots;                                 /* lock; ascending by number */
    size_t n;                                    /* lock */
    size_t cap;                                  /* lock: slots allocated */
    /* scanner: the other buffer merge_listing fills and swaps with slots, so
     * a scan allocates nothing once the listing stops growing (a fresh array
     * per scan fragments the heap and grows RSS with every publish) */
    slot *spare;
    size_t spare_cap;
    /* scanner: retired versions numbered <= floor were forgotten (see
     * forget_retired) and are not listed again unless the policy names them
     * or the serving version leaves the disk (scan_series) */
    uint32_t floor;
    registry_version *serving, *stable, *canary; /* lock; borrowed from slots */
    policy pol;                                  /* lock */
    /* lock: nothing serves yet and a scan is about to verify or is
     * verifying a version (requests get PD_ENOTREADY, not PD_ENOMODEL) */
    bool loading;
    char policy_err[160]; /* lock: why policy.json is ignored */
    char serve_note[160]; /* lock: why the policy is not (fully) honoured */
    /* scanner only: the last policy.json content seen */
    bool policy_present;
    uint8_t policy_sha[32];
} series;

struct registry {
    char *dir;
    util_mutex lock;      /* the lookup lock */
    util_mutex scan_lock; /* one scan or policy change at a time */
    series **series;           /* lock; sorted by (symbol, tf) */
    size_t n_series, cap_series;

    /* The scanner thread. running/thread/interval_s belong to the caller
     * of registry_start/registry_stop. */
    int wake[2]; /* self-pipe: [0] read by the scanner, [1] written */
    atomic_bool stop;
    atomic_bool requested;
    bool running;
    pthread_t thread;
    int interval_s;

    atomic_uint_fast64_t loads_ok, loads_failed, swaps, scans;
    atomic_uint_fast64_t generation; /* bumped when what serves a series changes */
    atomic_uint_fast64_t failed_by[REGISTRY_FAIL_COUNT_];

    /* set before any thread uses the registry, read-only afterwards */
    registry_change_fn on_change;
    void *on_change_arg;
    registry_refused_info *refused; /* lock; the last full scan's */
    size_t n_refused;
};

/* Refused directories collected by one full scan (scanner only). */
typedef struct refused_acc {
    registry_refused_info *v;
    size_t n, cap;
} refused_acc;

/* Records a refused directory; silently drops it when memory is short
 * (the scan itself must not fail for a listing). */
static void refuse(refused_acc *acc, const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void refuse(refused_acc *acc, const char *reason, const char *fmt, ...)
{
    if (!acc)
        return;
    if (acc->n == acc->cap) {
        size_t c = acc->cap ? acc->cap * 2 : 8;
        if (c > 4096)
            return;
        registry_refused_info *p = realloc(acc->v, c * sizeof *p);
        if (!p)
            return;
        acc->v = p;
        acc->cap = c;
    }
    registry_refused_info *e = &acc->v[acc->n++];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->path, sizeof e->path, fmt, ap);
    va_end(ap);
    snprintf(e->reason, sizeof e->reason, "%s", reason);
}

static bool is_symlink_at(int dfd, const char *name)
{
    struct stat st;
    return fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode);
}

#define SYMLINK_REASON "a symbolic link: refused (model directories must be real directories)"

/* ------------------------------------------------------------------------
 * Small helpers.
 */

/* snprintf for messages that may be cut short on purpose. */
static void msgf(char *dst, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void msgf(char *dst, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dst, n, fmt, ap);
    va_end(ap);
}

static bool symbol_ok(const char *s)
{
    return s && (util_symbol_valid(s) || strcmp(s, REGISTRY_DEFAULT_SYMBOL) == 0);
}

static bool tf_ok(const char *tf)
{
    return tf && util_tf_seconds(tf) > 0;
}

static int series_cmp(const char *sym, const char *tf, const series *s)
{
    int c = strcmp(sym, s->symbol);
    return c ? c : strcmp(tf, s->tf);
}

/* Index of the first series >= (sym, tf). Caller holds r->lock or is the
 * scanner. */
static size_t series_lower(const registry *r, const char *sym, const char *tf)
{
    assert(util_mutex_held(&r->lock) || util_mutex_held(&r->scan_lock));
    size_t lo = 0, hi = r->n_series;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (series_cmp(sym, tf, r->series[mid]) > 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static series *find_series(const registry *r, const char *sym, const char *tf)
{
    size_t i = series_lower(r, sym, tf);
    return i < r->n_series && series_cmp(sym, tf, r->series[i]) == 0 ? r->series[i] : NULL;
}

/* Scanner: adds an empty series (under the lock). */
static series *add_series(registry *r, const char *sym, const char *tf)
{
    UTIL_ASSERT_HELD(&r->scan_lock);
    series *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    snprintf(s->symbol, sizeof s->symbol, "%s", sym);
    snprintf(s->tf, sizeof s->tf, "%s", tf);
    s->loading = true; /* until its first scan ends */
    util_mutex_lock(&r->lock);
    if (r->n_series == r->cap_series) {
        size_t cap = r->cap_series ? r->cap_series * 2 : 16;
        series **p = realloc(r->series, cap * sizeof *p);
        if (!p) {
            util_mutex_unlock(&r->lock);
            free(s);
            return NULL;
        }
        r->series = p;
        r->cap_series = cap;
    }
    size_t i = series_lower(r, sym, tf);
    memmove(r->series + i + 1, r->series + i, (r->n_series - i) * sizeof *r->series);
    r->series[i] = s;
    r->n_series++;
    util_mutex_unlock(&r->lock);
    return s;
}

/* Index of version number in s, or -1. Caller holds r->lock or is the
 * scanner. */
static ssize_t find_slot(const series *s, uint32_t number)
{
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->slots[mid].number < number)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < s->n && s->slots[lo].number == number ? (ssize_t)lo : -1;
}

static bool series_present(const series *s)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->slots[i].on_disk)
            return true;
    return false;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Opens models/SYMBOL/TF without following symlinks. Returns the fd or
 * -errno. */
static int open_series_dir(int rootfd, const char *sym, const char *tf)
{
    int symfd = openat(rootfd, sym, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (symfd < 0)
        return -errno;
    int sfd = openat(symfd, tf, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    int e = errno;
    close(symfd);
    return sfd >= 0 ? sfd : -e;
}

static bool is_real_dir_at(int dfd, const char *name)
{
    struct stat st;
    return fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
}

/* Valid version directories in sfd, ascending. *out is malloc'd. Version
 * names that are symlinks go to acc (may be NULL). */
static int list_versions(int sfd, const char *sym, const char *tf, uint32_t **out, size_t *n,
                         refused_acc *acc)
{
    DIR *d = registry__walk_dir(sfd);
    if (!d)
        return PD_EIO;
    uint32_t *v = NULL;
    size_t nv = 0, cap = 0;
    int rc = 0;
    struct dirent *e;
    /* errno cleared before each readdir: what the loop calls (fstatat, a
     * log line, an allocation) may set it, and only readdir's own error
     * means the listing is incomplete */
    while ((errno = 0, e = readdir(d)) != NULL) {
        const char *name = e->d_name;
        if (name[0] == '.' || strcmp(name, "policy.json") == 0)
            continue; /* hidden: temporaries being published, ".", ".." */
        uint32_t num = registry__parse_version(name);
        if (num && is_symlink_at(sfd, name)) {
            LOG_WARN(MOD, "%s/%s/%s is a symbolic link: refused", sym, tf, name);
            refuse(acc, SYMLINK_REASON, "%s/%s/%s", sym, tf, name);
            continue;
        }
        if (!num || !is_real_dir_at(sfd, name)) {
            LOG_DEBUG(MOD, "%s/%s: ignoring \"%.64s\" (not a version directory)", sym, tf, name);
            continue;
        }
        if (nv == cap) {
            cap = cap ? cap * 2 : 16;
            uint32_t *p = realloc(v, cap * sizeof *p);
            if (!p) {
                rc = PD_ENOMEM;
                break;
            }
            v = p;
        }
        v[nv++] = num;
    }
    if (!e && errno != 0 && rc == 0)
        rc = PD_EIO;
    closedir(d);
    if (rc) {
        free(v);
        return rc;
    }
    if (nv > 1)
        qsort(v, nv, sizeof *v, cmp_u32);
    *out = v;
    *n = nv;
    return 0;
}

/* ------------------------------------------------------------------------
 * policy.json
 */

static int json_version(json_t *j, const char *what, uint32_t *out, char *why, size_t whylen)
{
    if (!j || json_is_null(j)) {
        *out = 0;
        return 0;
    }
    json_int_t x = json_is_integer(j) ? json_integer_value(j) : -1;
    if (x < 1 || x > (json_int_t)REGISTRY__MAX_VERSION) {
        snprintf(why, whylen, "%s must be a version number", what);
        return PD_EPARSE;
    }
    *out = (uint32_t)x;
    return 0;
}

/* Parses policy.json: {"pinned": N, "labels": {"stable": N, "canary": N},
 * "canary_share": 0..100}, every key optional, other top-level keys
 * ignored. PD_EPARSE with why, or PD_ENOMEM (the text may be fine). */
static int parse_policy(const char *text, size_t len, policy *out, char *why, size_t whylen)
{
    json_error_t err;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &err);
    /* jansson does not always say a failure was an allocation (some read
     * as a syntax error at the token it was building): a text that parses
     * on a second try was fine, and one that fails with no reason or
     * out_of_memory is memory, not the file. */
    if (!root && json_error_code(&err) != json_error_out_of_memory && err.text[0])
        root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &err);
    if (!root) {
        bool oom = json_error_code(&err) == json_error_out_of_memory || !err.text[0];
        msgf(why, whylen, "line %d: %s", err.line, oom ? "out of memory" : err.text);
        return oom ? PD_ENOMEM : PD_EPARSE;
    }
    policy p = {0};
    int rc = PD_EPARSE;
    if (!json_is_object(root)) {
        snprintf(why, whylen, "not a JSON object");
        goto out;
    }
    if (json_version(json_object_get(root, "pinned"), "\"pinned\"", &p.pinned, why, whylen))
        goto out;
    json_t *labels = json_object_get(root, "labels");
    if (labels && !json_is_null(labels)) {
        if (!json_is_object(labels)) {
            snprintf(why, whylen, "\"labels\" must be an object");
            goto out;
        }
        const char *key;
        json_t *val;
        json_object_foreach(labels, key, val)
        {
            uint32_t *dst = strcmp(key, LABEL_STABLE) == 0   ? &p.stable
                            : strcmp(key, LABEL_CANARY) == 0 ? &p.canary
                                                             : NULL;
            if (!dst) {
                snprintf(why, whylen, "unknown label \"%.32s\" (labels are stable, canary)", key);
                goto out;
            }
            if (json_version(val, "a label", dst, why, whylen))
                goto out;
        }
    }
    json_t *share = json_object_get(root, "canary_share");
    if (share && !json_is_null(share)) {
        json_int_t x = json_is_integer(share) ? json_integer_value(share) : -1;
        if (x < 0 || x > 100) {
            snprintf(why, whylen, "\"canary_share\" must be an integer percent 0..100");
            goto out;
        }
        p.canary_share = (uint32_t)x;
    }
    *out = p;
    rc = 0;
out:
    json_decref(root);
    return rc;
}

int registry__policy_check(const char *text, size_t len, char *why, size_t whylen)
{
    policy p;
    return parse_policy(text, len, &p, why, whylen);
}

/* Scanner: reads the series' policy.json and updates s->pol. A malformed
 * file is ignored with its reason (the previous policy stays); an absent
 * one means no policy. Logs only when the content changes. Returns
 * PD_ENOMEM when memory ran out reading or parsing it (the previous policy
 * stays and the file is read again on the next scan), else 0. */
static int load_policy(registry *r, series *s, int sfd)
{
    char *text = NULL;
    size_t len = 0;
    int rc = registry__read_at(sfd, "policy.json", REGISTRY__MAX_SMALL_FILE, &text, &len);
    if (rc == PD_ENOTFOUND) {
        if (s->policy_present)
            LOG_INFO(MOD, "%s/%s: policy.json removed", s->symbol, s->tf);
        s->policy_present = false;
        util_mutex_lock(&r->lock);
        memset(&s->pol, 0, sizeof s->pol);
        s->policy_err[0] = '\0';
        util_mutex_unlock(&r->lock);
        return 0;
    }
    if (rc) {
        LOG_WARN(MOD, "%s/%s: policy.json unreadable (%s); keeping the previous policy", s->symbol,
                 s->tf, util_strerror(rc));
        util_mutex_lock(&r->lock);
        snprintf(s->policy_err, sizeof s->policy_err,
                 "policy.json unreadable (%s); previous policy kept", util_strerror(rc));
        util_mutex_unlock(&r->lock);
        s->policy_present = false; /* re-read and re-log once it is back */
        return rc == PD_ENOMEM ? rc : 0;
    }
    uint8_t sha[32];
    util_sha256 h;
    util_sha256_init(&h);
    util_sha256_update(&h, text, len);
    util_sha256_final(&h, sha);
    if (s->policy_present && memcmp(sha, s->policy_sha, sizeof sha) == 0) {
        free(text);
        return 0;
    }
    policy p;
    char why[128];
    rc = parse_policy(text, len, &p, why, sizeof why);
    free(text);
    if (rc == PD_ENOMEM) {
        /* not the file's fault: keep the previous policy, read it again next scan */
        LOG_WARN(MOD, "%s/%s: policy.json not parsed (out of memory); keeping the previous policy",
                 s->symbol, s->tf);
        s->policy_present = false;
        return rc;
    }
    s->policy_present = true;
    memcpy(s->policy_sha, sha, sizeof sha);
    util_mutex_lock(&r->lock);
    if (rc == 0) {
        s->pol = p;
        s->policy_err[0] = '\0';
    } else {
        snprintf(s->policy_err, sizeof s->policy_err, "policy.json ignored: %s", why);
    }
    util_mutex_unlock(&r->lock);
    if (rc == 0)
        LOG_INFO(MOD, "%s/%s: policy pinned=%u stable=%u canary=%u canary_share=%u", s->symbol,
                 s->tf, p.pinned, p.stable, p.canary, p.canary_share);
    else
        LOG_WARN(MOD, "%s/%s: policy.json ignored, previous policy kept: %s", s->symbol, s->tf,
                 why);
    return 0;
}

/* ------------------------------------------------------------------------
 * Scanning one series. All of this runs with r->scan_lock held.
 */

/* Merges the directory listing into s->slots: new numbers become LOADING
 * slots, missing ones are marked off disk (a loaded one keeps serving until
 * choose() replaces it), reappearing ones start afresh. */
static int merge_listing(registry *r, series *s, const uint32_t *nums, size_t nn)
{
    UTIL_ASSERT_HELD(&r->scan_lock);
    size_t need = s->n + nn + 1;
    if (s->spare_cap < need) {
        size_t c = s->spare_cap ? s->spare_cap : 8;
        while (c < need)
            c *= 2;
        slot *grown = realloc(s->spare, c * sizeof *grown);
        if (!grown)
            return PD_ENOMEM;
        s->spare = grown;
        s->spare_cap = c;
    }
    uint32_t *gone = calloc(s->n + 1, sizeof *gone); /* logged after unlocking */
    if (!gone)
        return PD_ENOMEM;
    slot *ns = s->spare;
    memset(ns, 0, need * sizeof *ns);
    size_t i = 0, j = 0, k = 0, ngone = 0;
    util_mutex_lock(&r->lock);
    while (i < s->n || j < nn) {
        if (j >= nn || (i < s->n && s->slots[i].number < nums[j])) {
            slot *sl = &ns[k++];
            *sl = s->slots[i++];
            if (sl->on_disk) {
                sl->on_disk = false;
                gone[ngone++] = sl->number;
            }
            if (!sl->v)
                sl->state = REGISTRY_RETIRED;
        } else if (i >= s->n || nums[j] < s->slots[i].number) {
            if (nums[j] <= s->floor && nums[j] != s->pol.pinned && nums[j] != s->pol.stable &&
                nums[j] != s->pol.canary) {
                j++; /* forgotten: older than what serves and named by no policy */
                continue;
            }
            slot *sl = &ns[k++];
            sl->number = nums[j++];
            sl->state = REGISTRY_LOADING;
            sl->on_disk = true;
            sl->test_accuracy = NAN;
        } else {
            slot *sl = &ns[k++];
            *sl = s->slots[i++];
            j++;
            if (!sl->on_disk && !sl->v) {
                /* Removed and published again: a new version for us. */
                uint32_t num = sl->number;
                memset(sl, 0, sizeof *sl);
                sl->number = num;
                sl->state = REGISTRY_LOADING;
                sl->test_accuracy = NAN;
            }
            sl->on_disk = true;
        }
    }
    slot *old = s->slots;
    size_t old_cap = s->cap;
    s->slots = ns;
    s->cap = s->spare_cap;
    s->spare = old;
    s->spare_cap = old_cap;
    s->n = k;
    for (size_t x = 0; x < k && !s->serving; x++)
        if (ns[x].on_disk && ns[x].state == REGISTRY_LOADING)
            s->loading = true;
    util_mutex_unlock(&r->lock);
    for (size_t g = 0; g < ngone; g++)
        LOG_INFO(MOD, "%s/%s v%u removed from disk", s->symbol, s->tf, gone[g]);
    free(gone);
    return 0;
}

/* Verifies and loads slot i. Returns true when it is now loaded. */
static bool load_slot(registry *r, series *s, int sfd, size_t i)
{
    uint32_t num = s->slots[i].number;
    uint32_t serving_num = s->serving ? s->serving->number : 0;
    util_mutex_lock(&r->lock);
    s->slots[i].state = REGISTRY_LOADING;
    if (!s->serving)
        s->loading = true;
    util_mutex_unlock(&r->lock);

    uint64_t t0 = util_mono_ns();
    char name[16], why[256];
    snprintf(name, sizeof name, "%u", num);
    registry_version *v = NULL;
    registry__fp fp;
    memset(&fp, 0, sizeof fp);
    int fail = REGISTRY_FAIL_IO, rc;
    int vfd = openat(sfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (vfd < 0) {
        snprintf(why, sizeof why, "version directory unreadable: %s", strerror(errno));
        rc = PD_EVERIFY;
    } else {
        registry__fingerprint(vfd, &fp);
        rc = registry__load_at(vfd, s->symbol, s->tf, num, &v, &fail, why, sizeof why);
        close(vfd);
    }
    double ms = (double)(util_mono_ns() - t0) / 1e6;

    slot *sl = &s->slots[i];
    util_mutex_lock(&r->lock);
    sl->load_ms = ms;
    if (rc == 0) {
        sl->v = v;
        sl->state = REGISTRY_AVAILABLE;
        sl->reason[0] = '\0';
        sl->loaded_at = util_now();
        sl->test_accuracy = v->meta.test_accuracy;
        sl->trained_at = v->meta.trained_at;
    } else {
        sl->state = REGISTRY_FAILED;
        snprintf(sl->reason, sizeof sl->reason, "%s", why);
        sl->loaded_at = 0;
    }
    sl->transient = rc == PD_ENOMEM;
    util_mutex_unlock(&r->lock);

    sl->fp = fp;
    sl->verified_ok = rc == 0;
    if (rc == 0) {
        atomic_fetch_add(&r->loads_ok, 1);
        LOG_INFO(MOD, "loaded %s/%s v%u in %.1f ms", s->symbol, s->tf, num, ms);
        return true;
    }
    atomic_fetch_add(&r->loads_failed, 1);
    if (fail < 0 || fail >= REGISTRY_FAIL_COUNT_)
        fail = REGISTRY_FAIL_OTHER;
    atomic_fetch_add(&r->failed_by[fail], 1);
    if (serving_num)
        LOG_WARN(MOD, "%s/%s v%u failed verification: %s; still serving v%u", s->symbol, s->tf, num,
                 why, serving_num);
    else
        LOG_WARN(MOD, "%s/%s v%u failed verification: %s; nothing serving", s->symbol, s->tf, num,
                 why);
    return false;
}

/* Could slot i serve? Loads it when that is the only way to know (a version
 * not verified since it appeared). A version that verified before counts
 * without being loaded (it is loaded when chosen); a failed one does not. */
static bool usable(registry *r, series *s, int sfd, ssize_t i)
{
    if (i < 0)
        return false;
    slot *sl = &s->slots[i];
    if (!sl->on_disk)
        return false;
    if (sl->v)
        return true;
    if (sl->state == REGISTRY_FAILED && !sl->transient)
        return false; /* until its files change: see refresh_failed() */
    if (sl->verified_ok)
        return true;
    return load_slot(r, s, sfd, (size_t)i);
}

/* Failed versions whose files changed since (fixed, or caught half-written
 * before) become pending again: verified when a choice needs them, else
 * listed RETIRED. The rest stay FAILED without being read again. */
static void refresh_failed(registry *r, series *s, int sfd)
{
    for (size_t i = 0; i < s->n; i++) {
        slot *sl = &s->slots[i];
        if (!sl->on_disk || sl->state != REGISTRY_FAILED || sl->transient)
            continue;
        char name[16];
        snprintf(name, sizeof name, "%u", sl->number);
        int vfd = openat(sfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (vfd < 0)
            continue;
        registry__fp now;
        registry__fingerprint(vfd, &now);
        close(vfd);
        if (registry__fp_equal(&now, &sl->fp))
            continue;
        LOG_INFO(MOD, "%s/%s v%u changed since it failed; it will be verified again", s->symbol,
                 s->tf, sl->number);
        util_mutex_lock(&r->lock);
        sl->state = REGISTRY_LOADING;
        sl->reason[0] = '\0';
        util_mutex_unlock(&r->lock);
        sl->verified_ok = false;
    }
}

static const char *state_word(const slot *sl)
{
    if (!sl->on_disk)
        return "not on disk";
    if (sl->state == REGISTRY_FAILED)
        return "failed verification";
    return "not available";
}

/*
 * Chooses what serves and which labels resolve, loads what is chosen,
 * then swaps under the lock and unloads everything else.
 */
static void choose_and_swap(registry *r, series *s, int sfd)
{
    UTIL_ASSERT_HELD(&r->scan_lock);
    const policy pol = s->pol;
    uint32_t prev = s->serving ? s->serving->number : 0;
    ssize_t choice = -1, st = -1, ca = -1, pin = -1;

    /* Each round either ends or turns a slot FAILED (which is not retried
     * within the scan), so this terminates. */
    for (size_t round = 0; round <= s->n + 1; round++) {
        ssize_t latest = -1;
        for (ssize_t i = (ssize_t)s->n - 1; i >= 0; i--)
            if (usable(r, s, sfd, i)) {
                latest = i;
                break;
            }
        pin = pol.pinned ? find_slot(s, pol.pinned) : -1;
        st = pol.stable ? find_slot(s, pol.stable) : -1;
        ca = pol.canary ? find_slot(s, pol.canary) : -1;
        if (!usable(r, s, sfd, st))
            st = -1;
        if (!usable(r, s, sfd, ca))
            ca = -1;
        if (usable(r, s, sfd, pin)) {
            choice = pin;
        } else if (pol.pinned) {
            ssize_t p = prev ? find_slot(s, prev) : -1;
            choice = usable(r, s, sfd, p) ? p : latest;
        } else {
            choice = latest;
        }
        bool again = false;
        ssize_t want[3] = {choice, st, ca};
        for (int w = 0; w < 3; w++)
            if (want[w] >= 0 && !s->slots[want[w]].v && !load_slot(r, s, sfd, (size_t)want[w]))
                again = true;
        if (!again)
            break;
    }
    if (choice >= 0 && !s->slots[choice].v)
        choice = -1;
    if (st >= 0 && !s->slots[st].v)
        st = -1;
    if (ca >= 0 && !s->slots[ca].v)
        ca = -1;

    char note[160] = "";
    if (pol.pinned && choice != pin) {
        ssize_t p = find_slot(s, pol.pinned);
        if (choice >= 0)
            snprintf(note, sizeof note, "pinned v%u %s; serving v%u", pol.pinned,
                     p >= 0 ? state_word(&s->slots[p]) : "does not exist", s->slots[choice].number);
        else
            snprintf(note, sizeof note, "pinned v%u %s", pol.pinned,
                     p >= 0 ? state_word(&s->slots[p]) : "does not exist");
    } else if ((pol.stable && st < 0) || (pol.canary && ca < 0)) {
        uint32_t bad = pol.stable && st < 0 ? pol.stable : pol.canary;
        snprintf(note, sizeof note, "label %s points at v%u, which is not available",
                 pol.stable && st < 0 ? LABEL_STABLE : LABEL_CANARY, bad);
    }
    if (note[0] && strcmp(note, s->serve_note) != 0)
        LOG_WARN(MOD, "%s/%s: %s", s->symbol, s->tf, note);

    registry_version *nserv = choice >= 0 ? s->slots[choice].v : NULL;
    registry_version *nst = st >= 0 ? s->slots[st].v : NULL;
    registry_version *nca = ca >= 0 ? s->slots[ca].v : NULL;

    registry_version **drop = malloc((s->n + 1) * sizeof *drop);
    size_t ndrop = 0;
    util_mutex_lock(&r->lock);
    s->serving = nserv;
    s->stable = nst;
    s->canary = nca;
    s->loading = false;
    snprintf(s->serve_note, sizeof s->serve_note, "%s", note);
    size_t removed = 0;
    for (size_t i = 0; i < s->n; i++) {
        slot *sl = &s->slots[i];
        registry_version *v = sl->v;
        if (v && v != nserv && v != nst && v != nca && drop) {
            atomic_store(&v->label, NULL);
            drop[ndrop++] = v;
            sl->v = NULL;
            sl->loaded_at = 0;
            sl->state = REGISTRY_RETIRED;
        } else if (v) {
            atomic_store(&v->label, v == nst ? LABEL_STABLE : v == nca ? LABEL_CANARY : NULL);
        }
        if (!sl->v && sl->state == REGISTRY_LOADING)
            sl->state = REGISTRY_RETIRED; /* older than what serves: never needed */
        if (!sl->on_disk && !sl->v)
            removed++;
    }
    /* Keep the listing bounded: forget the oldest versions gone from disk. */
    if (removed > REGISTRY__KEEP_REMOVED) {
        size_t excess = removed - REGISTRY__KEEP_REMOVED, k = 0;
        for (size_t i = 0; i < s->n; i++) {
            if (excess && !s->slots[i].on_disk && !s->slots[i].v) {
                excess--;
                continue;
            }
            s->slots[k++] = s->slots[i];
        }
        s->n = k;
    }
    util_mutex_unlock(&r->lock);

    for (size_t i = 0; i < ndrop; i++) {
        LOG_DEBUG(MOD, "%s/%s v%u unloaded", s->symbol, s->tf, drop[i]->number);
        registry__version_unref(drop[i]);
    }
    free(drop);

    uint32_t now = nserv ? nserv->number : 0;
    if (now != prev) {
        atomic_fetch_add(&r->generation, 1);
        if (now) {
            atomic_fetch_add(&r->swaps, 1);
            if (prev)
                LOG_INFO(MOD, "%s/%s now serving v%u (was v%u)", s->symbol, s->tf, now, prev);
            else
                LOG_INFO(MOD, "%s/%s now serving v%u", s->symbol, s->tf, now);
        } else {
            LOG_WARN(MOD, "%s/%s: no version serving", s->symbol, s->tf);
        }
    }
}

/*
 * Keeps the listing of a series bounded: of the RETIRED versions (unloaded,
 * older than what serves), only the REGISTRY_KEEP_RETIRED most recent stay
 * listed; older ones are forgotten and s->floor rises past them, so a
 * repository that accumulates versions does not grow memory (or the
 * listing) with every publish. A forgotten version a policy later pins or
 * labels is picked up again. Failed versions are kept: they are news.
 */
static void forget_retired(registry *r, series *s)
{
    UTIL_ASSERT_HELD(&r->scan_lock);
    util_mutex_lock(&r->lock);
    size_t retired = 0;
    for (size_t i = 0; i < s->n; i++)
        if (s->slots[i].state == REGISTRY_RETIRED && !s->slots[i].v)
            retired++;
    size_t drop = retired > REGISTRY_KEEP_RETIRED ? retired - REGISTRY_KEEP_RETIRED : 0;
    size_t k = 0;
    for (size_t i = 0; i < s->n; i++) {
        slot *sl = &s->slots[i];
        if (drop > 0 && sl->state == REGISTRY_RETIRED && !sl->v) { /* ascending: oldest first */
            drop--;
            if (sl->number > s->floor)
                s->floor = sl->number;
            continue;
        }
        if (k != i)
            s->slots[k] = *sl;
        k++;
    }
    s->n = k;
    util_mutex_unlock(&r->lock);
}

static bool listed(const uint32_t *nums, size_t n, uint32_t v)
{
    for (size_t i = 0; i < n; i++)
        if (nums[i] == v)
            return true;
    return false;
}

/*
 * Scans one series. Returns 0, PD_ENOTFOUND when its directory does not
 * exist (everything it had is retired), PD_EIO when it cannot be read (its
 * state is kept: a transient error must not take models away), PD_ENOMEM.
 */
static int scan_series(registry *r, int rootfd, const char *sym, const char *tf, refused_acc *acc)
{
    UTIL_ASSERT_HELD(&r->scan_lock);
    series *s = find_series(r, sym, tf);
    int sfd = open_series_dir(rootfd, sym, tf);
    if (sfd >= 0)
        registry__sweep_temporaries(sfd, sym, tf, REGISTRY__TMP_MAX_AGE_S);
    if (sfd < 0) {
        int e = -sfd;
        if (e != ENOENT && e != ENOTDIR && e != ELOOP) {
            LOG_WARN(MOD, "%s/%s: cannot open the series directory: %s", sym, tf, strerror(e));
            return PD_EIO;
        }
        if (s) {
            if (series_present(s))
                LOG_WARN(MOD, "%s/%s: series directory gone", sym, tf);
            int rc = merge_listing(r, s, NULL, 0);
            if (rc)
                return rc;
            choose_and_swap(r, s, -1);
        }
        return PD_ENOTFOUND;
    }
    uint32_t *nums = NULL;
    size_t nn = 0;
    int rc = list_versions(sfd, sym, tf, &nums, &nn, acc);
    if (rc) {
        LOG_WARN(MOD, "%s/%s: cannot list versions: %s", sym, tf, util_strerror(rc));
        goto out;
    }
    if (!s && !(s = add_series(r, sym, tf))) {
        rc = PD_ENOMEM;
        goto out;
    }
    int prc = load_policy(r, s, sfd); /* on failure the scan goes on with the old policy */
    if (s->floor && s->serving && !listed(nums, nn, s->serving->number)) {
        /* what serves left the disk: a version forgotten below it may be
         * what serves now, as a process starting on this directory would
         * choose (otherwise the removed one would serve until a restart) */
        LOG_INFO(MOD, "%s/%s: v%u left the disk; older versions are listed again", sym, tf,
                 s->serving->number);
        s->floor = 0;
    }
    if ((rc = merge_listing(r, s, nums, nn)) != 0)
        goto out;
    refresh_failed(r, s, sfd);
    choose_and_swap(r, s, sfd);
    forget_retired(r, s);
    rc = prc;
out:
    if (rc && s) {
        util_mutex_lock(&r->lock);
        s->loading = false;
        util_mutex_unlock(&r->lock);
    }
    free(nums);
    close(sfd);
    return rc;
}

typedef struct series_key {
    char symbol[32];
    char tf[8];
} series_key;

static int add_key(series_key **keys, size_t *n, size_t *cap, const char *sym, const char *tf)
{
    for (size_t i = 0; i < *n; i++)
        if (strcmp((*keys)[i].symbol, sym) == 0 && strcmp((*keys)[i].tf, tf) == 0)
            return 0;
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 32;
        series_key *p = realloc(*keys, c * sizeof *p);
        if (!p)
            return PD_ENOMEM;
        *keys = p;
        *cap = c;
    }
    snprintf((*keys)[*n].symbol, sizeof(*keys)[*n].symbol, "%s", sym);
    snprintf((*keys)[*n].tf, sizeof(*keys)[*n].tf, "%s", tf);
    (*n)++;
    return 0;
}

/* Series directories under rootfd, validated; appended to keys. Symlinked
 * series directories go to acc. */
static int walk_root(int rootfd, series_key **keys, size_t *n, size_t *cap, refused_acc *acc)
{
    int fd = dup(rootfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0)
            close(fd);
        return PD_EIO;
    }
    rewinddir(d);
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        const char *sym = e->d_name;
        if (sym[0] == '.')
            continue;
        if (symbol_ok(sym) && is_symlink_at(rootfd, sym)) {
            LOG_WARN(MOD, "%s is a symbolic link: refused", sym);
            refuse(acc, SYMLINK_REASON, "%s", sym);
            continue;
        }
        if (!symbol_ok(sym) || !is_real_dir_at(rootfd, sym)) {
            LOG_DEBUG(MOD, "ignoring \"%.64s\" in the models directory", sym);
            continue;
        }
        int symfd = openat(rootfd, sym, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        DIR *sd = symfd >= 0 ? fdopendir(symfd) : NULL;
        if (!sd) {
            if (symfd >= 0)
                close(symfd);
            LOG_WARN(MOD, "%s: cannot open: %s", sym, strerror(errno));
            continue;
        }
        struct dirent *te;
        while (rc == 0 && (te = readdir(sd)) != NULL) {
            const char *tf = te->d_name;
            if (tf[0] == '.')
                continue;
            if (tf_ok(tf) && is_symlink_at(dirfd(sd), tf)) {
                LOG_WARN(MOD, "%s/%s is a symbolic link: refused", sym, tf);
                refuse(acc, SYMLINK_REASON, "%s/%s", sym, tf);
                continue;
            }
            if (!tf_ok(tf) || !is_real_dir_at(dirfd(sd), tf)) {
                LOG_DEBUG(MOD, "%s: ignoring \"%.64s\" (not a timeframe directory)", sym, tf);
                continue;
            }
            rc = add_key(keys, n, cap, sym, tf);
        }
        closedir(sd);
    }
    closedir(d);
    return rc;
}

static int scan_locked(registry *r, const char *sym, const char *tf)
{
    UTIL_ASSERT_HELD(&r->scan_lock);
    int rootfd = open(r->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0) {
        /* One series of a repository not created yet simply does not
         * exist. State is kept either way: a models directory that went
         * away (an unmounted volume) must not take the models with it. */
        if (sym && errno == ENOENT)
            return PD_ENOTFOUND;
        LOG_WARN(MOD, "models directory %s unreadable: %s", r->dir, strerror(errno));
        return PD_EIO;
    }
    int rc = 0;
    if (sym) {
        rc = scan_series(r, rootfd, sym, tf, NULL);
        close(rootfd);
        return rc;
    }
    series_key *keys = NULL;
    size_t n = 0, cap = 0;
    refused_acc acc = {0};
    rc = walk_root(rootfd, &keys, &n, &cap, &acc);
    if (rc) {
        LOG_WARN(MOD, "models directory %s: %s", r->dir, util_strerror(rc));
        goto out;
    }
    /* Series known from earlier scans whose directories vanished. */
    for (size_t i = 0; rc == 0 && i < r->n_series; i++)
        rc = add_key(&keys, &n, &cap, r->series[i]->symbol, r->series[i]->tf);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        int x = scan_series(r, rootfd, keys[i].symbol, keys[i].tf, &acc);
        if (x == PD_ENOMEM)
            rc = x;
    }
    if (rc == 0) {
        util_mutex_lock(&r->lock);
        free(r->refused);
        r->refused = acc.v;
        r->n_refused = acc.n;
        util_mutex_unlock(&r->lock);
        acc.v = NULL;
    }
out:
    free(acc.v);
    free(keys);
    close(rootfd);
    return rc;
}

/* ------------------------------------------------------------------------
 * Lifetime, scanning, scanner thread.
 */

int registry_new(const char *models_dir, registry **out)
{
    if (!models_dir || !*models_dir || !out)
        return PD_EINVAL;
    registry *r = calloc(1, sizeof *r);
    if (!r)
        return PD_ENOMEM;
    r->wake[0] = r->wake[1] = -1;
    r->dir = strdup(models_dir);
    if (!r->dir) {
        free(r);
        return PD_ENOMEM;
    }
    if (pipe2(r->wake, O_CLOEXEC | O_NONBLOCK) != 0) {
        r->wake[0] = r->wake[1] = -1;
        free(r->dir);
        free(r);
        return PD_EIO;
    }
    util_mutex_init(&r->lock);
    util_mutex_init(&r->scan_lock);
    atomic_init(&r->stop, false);
    atomic_init(&r->requested, false);
    *out = r;
    return 0;
}

void registry_free(registry *r)
{
    if (!r)
        return;
    registry_stop(r);
    for (size_t i = 0; i < r->n_series; i++) {
        series *s = r->series[i];
        for (size_t k = 0; k < s->n; k++)
            registry__version_unref(s->slots[k].v);
        free(s->slots);
        free(s->spare);
        free(s);
    }
    free(r->series);
    free(r->refused);
    close(r->wake[0]);
    close(r->wake[1]);
    util_mutex_destroy(&r->lock);
    util_mutex_destroy(&r->scan_lock);
    free(r->dir);
    free(r);
}

int registry_refused(registry *r, registry_refused_info **out, size_t *n)
{
    util_mutex_lock(&r->lock);
    size_t k = r->n_refused;
    registry_refused_info *v = k ? malloc(k * sizeof *v) : NULL;
    if (k && !v) {
        util_mutex_unlock(&r->lock);
        return PD_ENOMEM;
    }
    if (k)
        memcpy(v, r->refused, k * sizeof *v);
    util_mutex_unlock(&r->lock);
    *out = v;
    *n = k;
    return 0;
}

int registry_scan(registry *r, const char *symbol, const char *tf)
{
    if (!r || (!symbol) != (!tf))
        return PD_EINVAL;
    if (symbol && (!symbol_ok(symbol) || !tf_ok(tf)))
        return PD_EINVAL;
    util_mutex_lock(&r->scan_lock);
    uint64_t swaps = atomic_load(&r->swaps);
    int rc = scan_locked(r, symbol, tf);
    bool swapped = atomic_load(&r->swaps) != swaps;
    util_mutex_unlock(&r->scan_lock);
    atomic_fetch_add(&r->scans, 1);
    /* Loading and unloading models interleaves large short-lived buffers
     * (files, unpacked messages) with small long-lived ones, which leaves
     * free pages inside the heap; hand them back so RSS stays flat across
     * any number of swaps. Rare (once per swap) and off the request path. */
    if (swapped)
        malloc_trim(0);
    return rc == PD_ENOTFOUND ? 0 : rc;
}

static void *scanner_main(void *arg)
{
    registry *r = arg;
    uint64_t period = (uint64_t)r->interval_s * 1000000000ull;
    uint64_t next = util_mono_ns() + period;
    while (!atomic_load(&r->stop)) {
        int timeout = -1;
        if (period) {
            uint64_t now = util_mono_ns();
            timeout = now >= next ? 0 : (int)((next - now + 999999) / 1000000);
        }
        struct pollfd p = {.fd = r->wake[0], .events = POLLIN};
        int n = poll(&p, 1, timeout);
        if (n < 0 && errno != EINTR) {
            LOG_ERROR(MOD, "scanner: poll: %s", strerror(errno));
            break;
        }
        char buf[64];
        while (read(r->wake[0], buf, sizeof buf) > 0) {
        }
        if (atomic_load(&r->stop))
            break;
        bool due = period && util_mono_ns() >= next;
        bool asked = atomic_exchange(&r->requested, false);
        if (!due && !asked)
            continue;
        if (due)
            next = util_mono_ns() + period;
        registry_scan(r, NULL, NULL);
    }
    return NULL;
}

int registry_start(registry *r, int interval_s)
{
    if (!r || interval_s < 0 || interval_s > 86400 * 365)
        return PD_EINVAL;
    if (r->running)
        return PD_EBUSY;
    atomic_store(&r->stop, false);
    r->interval_s = interval_s;
    if (pthread_create(&r->thread, NULL, scanner_main, r) != 0)
        return PD_ENOMEM;
    r->running = true;
    return 0;
}

void registry_request_scan(registry *r)
{
    if (!r)
        return;
    int saved = errno; /* may run in a signal handler */
    atomic_store(&r->requested, true);
    ssize_t w = write(r->wake[1], "s", 1);
    (void)w; /* a full pipe already wakes the scanner */
    errno = saved;
}

void registry_stop(registry *r)
{
    if (!r || !r->running)
        return;
    atomic_store(&r->stop, true);
    ssize_t w = write(r->wake[1], "q", 1);
    (void)w;
    pthread_join(r->thread, NULL);
    r->running = false;
}

/* ------------------------------------------------------------------------
 * Requests.
 */

/* The version sel picks in s, or NULL. Caller holds r->lock. */
static registry_version *pick(const series *s, const registry_selector *sel)
{
    if (sel && sel->version) {
        ssize_t i = find_slot(s, sel->version);
        return i >= 0 && s->slots[i].on_disk ? s->slots[i].v : NULL;
    }
    if (sel && sel->label && *sel->label) {
        if (strcmp(sel->label, LABEL_STABLE) == 0)
            return s->stable;
        if (strcmp(sel->label, LABEL_CANARY) == 0)
            return s->canary;
        return NULL;
    }
    if (sel && sel->client_key && s->canary && s->pol.canary_share > 0 &&
        util_fnv1a(UTIL_FNV1A_INIT, sel->client_key) % 100 < s->pol.canary_share)
        return s->canary;
    return s->serving;
}

/* Nothing serves s yet but a version is on its way: its first load is
 * running, or a load ran out of memory and is retried on the next scan
 * (not "no model": the version itself may be fine). Caller holds r->lock. */
static bool series_pending(const series *s)
{
    if (s->serving)
        return false;
    if (s->loading)
        return true;
    for (size_t i = 0; i < s->n; i++)
        if (s->slots[i].on_disk && s->slots[i].state == REGISTRY_FAILED && s->slots[i].transient)
            return true;
    return false;
}

int registry_acquire(registry *r, const char *symbol, const char *tf, const registry_selector *sel,
                     registry_version **out)
{
    if (!r || !out)
        return PD_EINVAL;
    if (!symbol_ok(symbol))
        return PD_ESYMBOL;
    if (!tf_ok(tf))
        return PD_ETIMEFRAME;
    bool explicit_sel = sel && (sel->version || (sel->label && *sel->label));
    bool is_default = strcmp(symbol, REGISTRY_DEFAULT_SYMBOL) == 0;

    util_mutex_lock(&r->lock);
    series *own = find_series(r, symbol, tf);
    /* The common case (own series serving, default selection) skips the
     * second lookup. */
    bool need_def =
        !is_default && (explicit_sel ? !own || !series_present(own) : !own || !own->serving);
    series *def = need_def ? find_series(r, REGISTRY_DEFAULT_SYMBOL, tf) : NULL;
    series *s;
    if (explicit_sel)
        s = own && series_present(own) ? own : def;
    else
        s = own && own->serving ? own : def && def->serving ? def : NULL;
    registry_version *v = s ? pick(s, sel) : NULL;
    int rc = 0;
    if (v)
        atomic_fetch_add_explicit(&v->refs, 1, memory_order_relaxed);
    else if ((own && series_pending(own)) || (def && series_pending(def)))
        rc = PD_ENOTREADY;
    else
        rc = PD_ENOMODEL;
    util_mutex_unlock(&r->lock);
    if (rc == 0)
        *out = v;
    return rc;
}

int registry_open_version(registry *r, const char *symbol, const char *tf, uint32_t version,
                          registry_version **out, char *why, size_t whylen)
{
    if (!symbol_ok(symbol))
        return PD_ESYMBOL;
    if (!util_tf_seconds(tf))
        return PD_ETIMEFRAME;
    if (!out || version == 0 || version > REGISTRY__MAX_VERSION)
        return PD_EINVAL;
    int rootfd = open(r->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0) {
        snprintf(why, whylen, "model repository %s unreadable: %s", r->dir, strerror(errno));
        return PD_EIO;
    }
    /* the series' own directory; without one, _default's (as acquire) */
    const char *owner = symbol;
    int sfd = open_series_dir(rootfd, symbol, tf);
    if (sfd == -ENOENT && strcmp(symbol, REGISTRY_DEFAULT_SYMBOL) != 0) {
        owner = REGISTRY_DEFAULT_SYMBOL;
        sfd = open_series_dir(rootfd, owner, tf);
    }
    close(rootfd);
    if (sfd < 0) {
        snprintf(why, whylen, "no model directory for %s %s", symbol, tf);
        return PD_ENOMODEL;
    }
    char name[16];
    snprintf(name, sizeof name, "%u", version);
    int vfd = openat(sfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    int e = errno;
    close(sfd);
    if (vfd < 0) {
        snprintf(why, whylen, "%s/%s has no version %u%s", owner, tf, version,
                 e == ENOENT ? "" : " (unreadable)");
        return PD_ENOMODEL;
    }
    int fail = REGISTRY_FAIL_OTHER;
    registry_version *v = NULL;
    int rc = registry__load_at(vfd, owner, tf, version, &v, &fail, why, whylen);
    close(vfd);
    if (rc)
        return rc;
    *out = v;
    return 0;
}

void registry_release(registry_version *v)
{
    registry__version_unref(v);
}

const inference_model *registry_version_model(const registry_version *v)
{
    return v->model;
}

const features_set *registry_version_features(const registry_version *v)
{
    return v->features;
}

uint32_t registry_version_number(const registry_version *v)
{
    return v->number;
}

const char *registry_version_label(const registry_version *v)
{
    return atomic_load(&((registry_version *)v)->label);
}

const char *registry_version_owner(const registry_version *v)
{
    return v->owner;
}

const char *registry_version_timeframe(const registry_version *v)
{
    return v->tf;
}

size_t registry_version_candles(const registry_version *v)
{
    return v->candles;
}

double registry_meta_metric(const registry_meta *m, const char *name)
{
    for (size_t i = 0; m && name && i < m->n_metrics; i++)
        if (strcmp(m->metrics[i].name, name) == 0)
            return m->metrics[i].value;
    return NAN;
}

const registry_meta *registry_version_meta(const registry_version *v)
{
    return &v->meta;
}

const char *registry_version_digest(const registry_version *v)
{
    return v->digest;
}

/* ------------------------------------------------------------------------
 * Listing and counters.
 */

int registry_list(registry *r, registry_series_info **out, size_t *n)
{
    if (!r || !out || !n)
        return PD_EINVAL;
    int rc = 0;
    util_mutex_lock(&r->lock);
    size_t ns = r->n_series;
    registry_series_info *info = calloc(ns ? ns : 1, sizeof *info);
    if (!info) {
        rc = PD_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < ns; i++) {
        const series *s = r->series[i];
        registry_series_info *si = &info[i];
        snprintf(si->symbol, sizeof si->symbol, "%s", s->symbol);
        snprintf(si->timeframe, sizeof si->timeframe, "%s", s->tf);
        si->pinned = s->pol.pinned;
        si->canary_share = s->pol.canary_share;
        msgf(si->note, sizeof si->note, "%s%s%s", s->policy_err,
             s->policy_err[0] && s->serve_note[0] ? "; " : "", s->serve_note);
        si->versions = calloc(s->n ? s->n : 1, sizeof *si->versions);
        if (!si->versions) {
            registry_list_free(info, i);
            info = NULL;
            rc = PD_ENOMEM;
            goto out;
        }
        si->n_versions = s->n;
        for (size_t k = 0; k < s->n; k++) {
            const slot *sl = &s->slots[k];
            registry_version_info *vi = &si->versions[k];
            vi->version = sl->number;
            vi->state = sl->state;
            vi->serving = sl->v && sl->v == s->serving;
            const char *label = s->pol.stable == sl->number   ? LABEL_STABLE
                                : s->pol.canary == sl->number ? LABEL_CANARY
                                                              : "";
            snprintf(vi->label, sizeof vi->label, "%s", label);
            snprintf(vi->reason, sizeof vi->reason, "%s",
                     sl->state == REGISTRY_FAILED ? sl->reason : "");
            vi->loaded_at = sl->v ? sl->loaded_at : 0;
            vi->load_ms = sl->load_ms;
            vi->test_accuracy = sl->test_accuracy;
            vi->trained_at = sl->trained_at;
            vi->max_age_s = sl->v ? inference_model_policy(sl->v->model)->max_age_s : 0;
        }
    }
out:
    util_mutex_unlock(&r->lock);
    if (rc == 0) {
        *out = info;
        *n = ns;
    }
    return rc;
}

void registry_list_free(registry_series_info *s, size_t n)
{
    if (!s)
        return;
    for (size_t i = 0; i < n; i++)
        free(s[i].versions);
    free(s);
}

void registry_counts(registry *r, size_t *serving, size_t *failed)
{
    size_t ns = 0, nf = 0;
    if (r) {
        util_mutex_lock(&r->lock);
        for (size_t i = 0; i < r->n_series; i++) {
            const series *s = r->series[i];
            if (s->serving)
                ns++;
            for (size_t k = 0; k < s->n; k++)
                if (s->slots[k].on_disk && s->slots[k].state == REGISTRY_FAILED)
                    nf++;
        }
        util_mutex_unlock(&r->lock);
    }
    if (serving)
        *serving = ns;
    if (failed)
        *failed = nf;
}

const char *registry_fail_name(int reason)
{
    static const char *const names[REGISTRY_FAIL_COUNT_] = {
        [REGISTRY_FAIL_MANIFEST] = "manifest", [REGISTRY_FAIL_PARSE] = "parse",
        [REGISTRY_FAIL_SHAPE] = "shape",       [REGISTRY_FAIL_FEATURES] = "features",
        [REGISTRY_FAIL_GOLDEN] = "golden",     [REGISTRY_FAIL_IO] = "io",
        [REGISTRY_FAIL_OTHER] = "other",
    };
    return reason >= 0 && reason < REGISTRY_FAIL_COUNT_ ? names[reason] : "unknown";
}

void registry_stats_get(registry *r, registry_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!r)
        return;
    out->loads_ok = atomic_load(&r->loads_ok);
    out->loads_failed = atomic_load(&r->loads_failed);
    for (int i = 0; i < REGISTRY_FAIL_COUNT_; i++)
        out->failed_by_reason[i] = atomic_load(&r->failed_by[i]);
    out->swaps = atomic_load(&r->swaps);
    out->scans = atomic_load(&r->scans);
    long live = atomic_load(&registry__versions_live);
    out->versions_in_memory = live > 0 ? (uint64_t)live : 0;
}

/* ------------------------------------------------------------------------
 * Policy changes.
 */

/* Rewrites the series' policy.json from p, keeping keys it does not know
 * about from the file on disk when that parses; removes the file when
 * nothing is left in it. PD_ENOMEM, writing nothing, when the file is there
 * but could not be read or parsed for lack of memory: writing then would
 * drop the keys it holds. jansson reports some failed allocations as
 * syntax errors, so a file whose bytes parsed at the last scan (s's
 * policy_sha) and do not now is taken for a lack of memory too. Caller
 * holds scan_lock. */
static int write_policy(registry *r, const series *s, int sfd, const policy *p)
{
    const char *sym = s->symbol, *tf = s->tf;
    char *text = NULL;
    size_t len = 0;
    json_t *root = NULL;
    json_error_t jerr;
    int rrc = registry__read_at(sfd, "policy.json", REGISTRY__MAX_SMALL_FILE, &text, &len);
    bool parsed_before = false;
    if (rrc == 0) {
        root = json_loadb(text, len, 0, &jerr);
        if (!root && s->policy_present && !s->policy_err[0]) {
            uint8_t sha[32];
            util_sha256 h;
            util_sha256_init(&h);
            util_sha256_update(&h, text, len);
            util_sha256_final(&h, sha);
            parsed_before = memcmp(sha, s->policy_sha, sizeof sha) == 0;
        }
    }
    free(text);
    if (rrc == PD_ENOMEM ||
        (rrc == 0 && !root &&
         (json_error_code(&jerr) == json_error_out_of_memory || !jerr.text[0] || parsed_before)))
        return PD_ENOMEM;
    if (root && !json_is_object(root)) {
        json_decref(root);
        root = NULL;
    }
    if (!root && !(root = json_object()))
        return PD_ENOMEM;
    int rc = PD_ENOMEM;
    json_t *labels = json_object();
    if (!labels)
        goto out;
    /* every set checked: a key lost to a failed allocation would write a
     * different policy than the one asked for */
    if ((p->stable && json_object_set_new(labels, LABEL_STABLE, json_integer(p->stable))) ||
        (p->canary && json_object_set_new(labels, LABEL_CANARY, json_integer(p->canary))))
        goto out;
    if (p->pinned) {
        if (json_object_set_new(root, "pinned", json_integer(p->pinned)))
            goto out;
    } else {
        json_object_del(root, "pinned");
    }
    if (json_object_size(labels)) {
        if (json_object_set(root, "labels", labels))
            goto out;
    } else {
        json_object_del(root, "labels");
    }
    if (p->canary_share) {
        if (json_object_set_new(root, "canary_share", json_integer(p->canary_share)))
            goto out;
    } else {
        json_object_del(root, "canary_share");
    }
    if (json_object_size(root) == 0) {
        /* Nothing left to say: no file is the empty policy (and when there
         * was none, nothing changes: a read-only repository agrees). */
        if (rrc == PD_ENOTFOUND) {
            rc = 0;
            goto out;
        }
        rc = unlinkat(sfd, "policy.json", 0) == 0 || errno == ENOENT ? 0 : PD_EIO;
        if (rc == 0)
            LOG_INFO(MOD, "%s/%s: policy.json removed (empty policy)", sym, tf);
        goto out;
    }
    char *out = json_dumps(root, JSON_INDENT(2));
    if (!out)
        goto out;
    /* jansson (2.14) can return damaged text when an allocation fails
     * while it dumps (a key's closing quote lost): what is written must
     * read back as what was meant, else it is a lack of memory */
    json_t *back = json_loads(out, 0, NULL);
    bool same = back && json_equal(back, root);
    json_decref(back);
    if (!same) {
        free(out);
        goto out;
    }
    char path[4096];
    size_t olen = strlen(out);
    if (snprintf(path, sizeof path, "%s/%s/%s/policy.json", r->dir, sym, tf) >= (int)sizeof path) {
        rc = PD_EINVAL;
    } else {
        char *nl = malloc(olen + 2);
        if (nl) {
            memcpy(nl, out, olen);
            nl[olen] = '\n';
            rc = util_write_file_atomic(path, nl, olen + 1, 0644);
            free(nl);
        }
    }
    free(out);
    if (rc == 0)
        LOG_INFO(MOD, "%s/%s: policy.json written (pinned=%u stable=%u canary=%u share=%u)", sym,
                 tf, p->pinned, p->stable, p->canary, p->canary_share);
out:
    json_decref(labels);
    json_decref(root);
    return rc;
}

/* What the admin calls need to know about a version: -1 not on disk, else
 * its state. Caller holds scan_lock. */
static int version_state(const series *s, uint32_t v)
{
    ssize_t i = find_slot(s, v);
    if (i < 0 || !s->slots[i].on_disk)
        return -1;
    return (int)s->slots[i].state;
}

static bool version_loaded(const series *s, uint32_t v)
{
    ssize_t i = find_slot(s, v);
    return i >= 0 && s->slots[i].v;
}

/*
 * The common path of pin/unpin/set_label: refresh the series, let edit()
 * derive the new policy (it checks its version: PD_ENOTFOUND, PD_EVERIFY),
 * write it, rescan, and when the version it needs then fails, put the old
 * policy back and return PD_EVERIFY.
 */
typedef int (*policy_edit)(const series *s, int sfd, policy *p, const void *arg, uint32_t *needs);

static int change_policy(registry *r, const char *sym, const char *tf, policy_edit edit,
                         const void *arg)
{
    if (!r || !symbol_ok(sym) || !tf_ok(tf))
        return PD_EINVAL;
    util_mutex_lock(&r->scan_lock);
    int rootfd = -1, sfd = -1;
    char *old_text = NULL; /* policy.json as it was, put back byte for byte */
    size_t old_len = 0;
    int rc = scan_locked(r, sym, tf);
    if (rc)
        goto out;
    series *s = find_series(r, sym, tf);
    rootfd = open(r->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    sfd = rootfd >= 0 ? open_series_dir(rootfd, sym, tf) : -1;
    if (!s || sfd < 0) {
        rc = sfd == -ENOENT || !s ? PD_ENOTFOUND : PD_EIO;
        goto out;
    }
    policy old = s->pol, p = s->pol;
    uint32_t needs = 0;
    if ((rc = edit(s, sfd, &p, arg, &needs)) != 0)
        goto out;
    /* Read now, so that undoing needs no memory (it is most needed when
     * memory ran out applying the change). */
    int orc = registry__read_at(sfd, "policy.json", REGISTRY__MAX_SMALL_FILE, &old_text, &old_len);
    if (orc == PD_ENOMEM) {
        rc = orc;
        goto out;
    }
    if ((rc = write_policy(r, s, sfd, &p)) != 0)
        goto out;
    int src = scan_series(r, rootfd, sym, tf, NULL);
    ssize_t ni = needs ? find_slot(s, needs) : -1;
    /* out of memory (the scan, or loading the version) is not the version's fault */
    bool nomem = src == PD_ENOMEM || (ni >= 0 && s->slots[ni].transient);
    if (src == PD_ENOMEM || (needs && !version_loaded(s, needs))) {
        if (nomem)
            LOG_WARN(MOD,
                     "%s/%s: out of memory applying the new policy; restoring the previous one",
                     sym, tf);
        else
            LOG_WARN(MOD, "%s/%s: v%u failed to load; restoring the previous policy", sym, tf,
                     needs);
        char path[4096];
        int wrc;
        if (orc == PD_ENOTFOUND)
            wrc = unlinkat(sfd, "policy.json", 0) == 0 || errno == ENOENT ? 0 : PD_EIO;
        else if (orc == 0 && snprintf(path, sizeof path, "%s/%s/%s/policy.json", r->dir, sym, tf) <
                                 (int)sizeof path)
            wrc = util_write_file_atomic(path, old_text, old_len, 0644);
        else
            wrc = write_policy(r, s, sfd, &old);
        if (wrc == 0)
            scan_series(r, rootfd, sym, tf, NULL);
        else
            LOG_ERROR(MOD, "%s/%s: the previous policy could not be restored: %s", sym, tf,
                      util_strerror(wrc));
        rc = nomem ? PD_ENOMEM : PD_EVERIFY;
    }
out:
    free(old_text);
    if (sfd >= 0)
        close(sfd);
    if (rootfd >= 0)
        close(rootfd);
    util_mutex_unlock(&r->scan_lock);
    atomic_fetch_add(&r->scans, 1);
    if (rc == 0)
        registry_announce(r, sym, tf);
    return rc == PD_ENOTFOUND || rc == PD_EVERIFY || rc == PD_EINVAL || rc == PD_ENOMEM || rc == 0
               ? rc
               : PD_EIO;
}

static int check_target(const series *s, int sfd, uint32_t v)
{
    int st = version_state(s, v);
    if (st < 0 && v <= s->floor && find_slot(s, v) < 0) {
        /* a forgotten retired version: fine if its directory is still there */
        char name[16];
        struct stat sb;
        snprintf(name, sizeof name, "%u", v);
        if (fstatat(sfd, name, &sb, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(sb.st_mode))
            return 0;
    }
    if (st < 0)
        return PD_ENOTFOUND;
    return st == REGISTRY_FAILED ? PD_EVERIFY : 0;
}

static int edit_pin(const series *s, int sfd, policy *p, const void *arg, uint32_t *needs)
{
    uint32_t v = *(const uint32_t *)arg;
    int rc = check_target(s, sfd, v);
    if (rc)
        return rc;
    p->pinned = v;
    *needs = v;
    return 0;
}

static int edit_unpin(const series *s, int sfd, policy *p, const void *arg, uint32_t *needs)
{
    (void)s;
    (void)sfd;
    (void)arg;
    (void)needs;
    p->pinned = 0;
    return 0;
}

typedef struct label_arg {
    bool canary;
    uint32_t version;
    int share;
} label_arg;

static int edit_label(const series *s, int sfd, policy *p, const void *arg, uint32_t *needs)
{
    const label_arg *a = arg;
    if (a->version) {
        int rc = check_target(s, sfd, a->version);
        if (rc)
            return rc;
        *needs = a->version;
    }
    if (a->canary) {
        p->canary = a->version;
        p->canary_share = a->version ? (uint32_t)a->share : 0;
    } else {
        p->stable = a->version;
    }
    return 0;
}

int registry_pin(registry *r, const char *symbol, const char *tf, uint32_t version)
{
    if (version == 0 || version > REGISTRY__MAX_VERSION)
        return PD_EINVAL;
    return change_policy(r, symbol, tf, edit_pin, &version);
}

int registry_unpin(registry *r, const char *symbol, const char *tf)
{
    return change_policy(r, symbol, tf, edit_unpin, NULL);
}

int registry_set_label(registry *r, const char *symbol, const char *tf, const char *label,
                       uint32_t version, int canary_share)
{
    if (!label || version > REGISTRY__MAX_VERSION)
        return PD_EINVAL;
    label_arg a = {false, version, canary_share};
    if (strcmp(label, LABEL_CANARY) == 0) {
        a.canary = true;
        if (version && (canary_share < 0 || canary_share > 100))
            return PD_EINVAL;
    } else if (strcmp(label, LABEL_STABLE) != 0) {
        return PD_EINVAL;
    }
    return change_policy(r, symbol, tf, edit_label, &a);
}

void registry_set_change_hook(registry *r, registry_change_fn fn, void *arg)
{
    if (!r)
        return;
    r->on_change = fn;
    r->on_change_arg = arg;
}

void registry_announce(registry *r, const char *symbol, const char *tf)
{
    if (r && r->on_change && symbol_ok(symbol) && tf_ok(tf))
        r->on_change(r->on_change_arg, symbol, tf);
}

/* clang-format off */
const char *registry_state_name(registry_state s)
{
    switch (s) {
    case REGISTRY_LOADING: return "loading";
    case REGISTRY_AVAILABLE: return "available";
    case REGISTRY_FAILED: return "failed";
    case REGISTRY_RETIRED: return "retired";
    }
    return "unknown";
}
/* clang-format on */

uint64_t registry_generation(registry *r)
{
    return atomic_load_explicit(&r->generation, memory_order_acquire);
}
