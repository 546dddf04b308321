/*
 * fault_wrap.h: the allocation-failure loop shared by test_faults and
 * test_faults_db. Include after unit.h, in a test binary linked with the
 * Makefile's FAULT_WRAP (-Wl,--wrap=malloc,calloc,realloc,strdup,strndup,
 * aligned_alloc): every call to those functions from predictd's own
 * objects (libpredictd.a) and from the test goes through the __wrap_
 * functions here, which call the real allocator (the libc one, or the
 * sanitizer's) unless the countdown says this is the allocation that
 * fails. Allocations inside shared libraries (libc's asprintf, libpq,
 * hiredis, protobuf-c's default allocator) are not counted.
 *
 * The loop is SQLite's: run the operation once without a fault (the
 * reference), then for N = 1, 2, ... with the Nth allocation from the
 * start of the operation failing; it ends at the first run that finishes
 * without reaching the fault, which must give the reference result. A
 * second pass fails the Nth allocation and every one after it. Each run
 * is checked for leaks with mallinfo2 in the plain build (glibc's tcache
 * off: fault_main_init re-executes the binary without it); LeakSanitizer
 * checks the sanitizer builds at each test's exit. FAULT_ONLY=word runs
 * the matching tests only (RUN_ONLY); FAULT_BACKTRACE=N prints where
 * allocation N is; FAULT_VERBOSE=1 prints every wrong code.
 *
 * Everything here is static: each binary has its own copy. The counters
 * are atomics, so allocations of other threads count too.
 */
#ifndef PREDICTD_UNIT_FAULT_WRAP_H
#define PREDICTD_UNIT_FAULT_WRAP_H

#include <dlfcn.h>
#include <errno.h>
#include <execinfo.h>
#include <jansson.h>
#include <protobuf-c/protobuf-c.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "util/util.h"

/* ------------------------------------------------------------------------
 * The allocation wrappers.
 */
void *__real_malloc(size_t n);
void *__real_calloc(size_t k, size_t n);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);
void *__real_aligned_alloc(size_t align, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t k, size_t n);
void *__wrap_realloc(void *p, size_t n);
char *__wrap_strdup(const char *s);
char *__wrap_strndup(const char *s, size_t n);
void *__wrap_aligned_alloc(size_t align, size_t n);
void __real_free(void *p);
void __wrap_free(void *p);

static atomic_bool fault_armed;
static atomic_long fault_count;   /* allocations since fault_arm */
static atomic_long fault_at;      /* the one that fails (1-based); 0: none */
static atomic_bool fault_persist; /* and every one after it */
static atomic_bool fault_fired;

/* fault_own_thread: only the allocations of the thread that armed the
 * loop count (and fail); other threads' (a worker the operation starts)
 * run as usual, so the count does not depend on their timing. */
static bool fault_own_thread;
static pthread_t fault_owner;

/* True when this allocation is the one to fail. */
static inline bool fault_now(void)
{
    if (!atomic_load(&fault_armed))
        return false;
    if (fault_own_thread && !pthread_equal(pthread_self(), fault_owner))
        return false;
    long n = atomic_fetch_add(&fault_count, 1) + 1, at = atomic_load(&fault_at);
    if (n != at && !(at && n > at && atomic_load(&fault_persist)))
        return false;
    atomic_store(&fault_fired, true);
    const char *bt = getenv("FAULT_BACKTRACE"); /* N: where the Nth one is */
    if (bt && atol(bt) == n) {
        void *frames[32];
        int k = backtrace(frames, 32);
        fprintf(stderr, "fault %ld:\n", n);
        backtrace_symbols_fd(frames, k, 2);
    }
    errno = ENOMEM;
    return true;
}

/*
 * Leak accounting of predictd's own allocations (fault_track_own): while
 * a run is measured, every block the wrappers hand out is recorded with
 * its size and caller, and forgotten when freed through free() (wrapped
 * too); what is left at the end of the run was allocated by the run and
 * not freed. Unlike mallinfo2 this does not see the buffers libpq and
 * hiredis keep and resize inside their connections, which the
 * database-backed paths cannot avoid touching. Blocks allocated before
 * the run and freed during it are not counted.
 */
#define FT_BUCKETS 4096
struct ft_node {
    void *p;
    size_t n;
    void *caller;
    struct ft_node *next;
};
static struct ft_node *ft_tab[FT_BUCKETS];
static pthread_mutex_t ft_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_bool ft_on;     /* recording */
static bool fault_track_own;  /* fault_pass measures with the records */

static inline size_t ft_bucket(const void *p)
{
    return ((uintptr_t)p >> 4) % FT_BUCKETS;
}

static inline void ft_add(void *p, size_t n, void *caller)
{
    /* not while the loop is held: the checks' own allocations are not the
     * run's (their frees are still seen) */
    if (!p || !atomic_load(&ft_on) || !atomic_load(&fault_armed))
        return;
    struct ft_node *e = __real_malloc(sizeof *e);
    if (!e)
        return;
    e->p = p, e->n = n, e->caller = caller;
    pthread_mutex_lock(&ft_lock);
    e->next = ft_tab[ft_bucket(p)];
    ft_tab[ft_bucket(p)] = e;
    pthread_mutex_unlock(&ft_lock);
}

static inline void ft_del(void *p)
{
    if (!p || !atomic_load(&ft_on))
        return;
    struct ft_node *gone = NULL;
    pthread_mutex_lock(&ft_lock);
    for (struct ft_node **pe = &ft_tab[ft_bucket(p)]; *pe; pe = &(*pe)->next)
        if ((*pe)->p == p) {
            gone = *pe;
            *pe = gone->next;
            break;
        }
    pthread_mutex_unlock(&ft_lock);
    __real_free(gone);
}

/* Starts recording (an empty record). */
static inline void ft_start(void)
{
    atomic_store(&ft_on, true);
}

/* Stops recording; returns the bytes still allocated and forgets them.
 * *where: the caller of the first block left (NULL when none). */
static inline size_t ft_stop(void **where)
{
    atomic_store(&ft_on, false);
    size_t bytes = 0;
    *where = NULL;
    pthread_mutex_lock(&ft_lock);
    for (size_t i = 0; i < FT_BUCKETS; i++)
        while (ft_tab[i]) {
            struct ft_node *e = ft_tab[i];
            ft_tab[i] = e->next;
            bytes += e->n;
            if (!*where)
                *where = e->caller;
            __real_free(e);
        }
    pthread_mutex_unlock(&ft_lock);
    return bytes;
}

void *__wrap_malloc(size_t n)
{
    void *p = fault_now() ? NULL : __real_malloc(n);
    ft_add(p, n, __builtin_return_address(0));
    return p;
}

void *__wrap_calloc(size_t k, size_t n)
{
    void *p = fault_now() ? NULL : __real_calloc(k, n);
    ft_add(p, k * n, __builtin_return_address(0));
    return p;
}

void *__wrap_realloc(void *p, size_t n)
{
    /* realloc(p, 0) frees in glibc; failing it would be a leak of ours */
    if (n == 0) {
        ft_del(p);
        return __real_realloc(p, n);
    }
    if (fault_now())
        return NULL;
    void *q = __real_realloc(p, n);
    if (q) {
        ft_del(p);
        ft_add(q, n, __builtin_return_address(0));
    }
    return q;
}

void __wrap_free(void *p)
{
    ft_del(p);
    __real_free(p);
}

/* protobuf-c frees a message unpacked with predictd's allocator (which
 * mallocs through the wrappers) inside the shared library when it is
 * given no allocator: route those frees through __wrap_free, or the
 * records would count them as leaks. */
void __real_protobuf_c_message_free_unpacked(ProtobufCMessage *m, ProtobufCAllocator *a);
void __wrap_protobuf_c_message_free_unpacked(ProtobufCMessage *m, ProtobufCAllocator *a);

static inline void *ft_pb_alloc(void *data, size_t n)
{
    (void)data;
    return __wrap_malloc(n);
}

static inline void ft_pb_free(void *data, void *p)
{
    (void)data;
    __wrap_free(p);
}

void __wrap_protobuf_c_message_free_unpacked(ProtobufCMessage *m, ProtobufCAllocator *a)
{
    ProtobufCAllocator sys = {ft_pb_alloc, ft_pb_free, NULL};
    __real_protobuf_c_message_free_unpacked(m, a ? a : &sys);
}

char *__wrap_strdup(const char *s)
{
    char *p = fault_now() ? NULL : __real_strdup(s);
    ft_add(p, p ? strlen(p) + 1 : 0, __builtin_return_address(0));
    return p;
}

char *__wrap_strndup(const char *s, size_t n)
{
    char *p = fault_now() ? NULL : __real_strndup(s, n);
    ft_add(p, p ? strlen(p) + 1 : 0, __builtin_return_address(0));
    return p;
}

void *__wrap_aligned_alloc(size_t align, size_t n)
{
    void *p = fault_now() ? NULL : __real_aligned_alloc(align, n);
    ft_add(p, n, __builtin_return_address(0));
    return p;
}

/* jansson's allocations count unless a test turns this off: jansson 2.14
 * aborts (assert in lex_scan_string) when an allocation fails while it
 * lexes some strings, so parsing arbitrary JSON cannot be put under the
 * loop; and it reports some failed allocations as syntax errors. */
static atomic_bool fault_json = true;

static inline void *fault_json_malloc(size_t n)
{
    return atomic_load(&fault_json) ? __wrap_malloc(n) : __real_malloc(n);
}

static inline void fault_json_free(void *p)
{
    free(p);
}

/* Arms the countdown: the at-th allocation from now fails (0: none fails,
 * the allocations are only counted). */
static inline void fault_arm(long at)
{
    fault_owner = pthread_self();
    atomic_store(&fault_count, 0);
    atomic_store(&fault_at, at);
    atomic_store(&fault_fired, false);
    atomic_store(&fault_armed, true);
}

/* Disarms; true when the fault was reached. *count: allocations seen. */
static inline bool fault_disarm(long *count)
{
    atomic_store(&fault_armed, false);
    if (count)
        *count = atomic_load(&fault_count);
    return atomic_load(&fault_fired);
}

/* True when the armed run's fault has been reached (for checks inside an
 * operation that accept a degraded result only after a failure). */
static inline bool fault_fired_yet(void)
{
    return atomic_load(&fault_fired);
}

/* Stops counting (for checks inside an operation that are not under
 * test); returns what fault_resume needs. */
static inline bool fault_hold(void)
{
    return atomic_exchange(&fault_armed, false);
}

static inline void fault_resume(bool held)
{
    atomic_store(&fault_armed, held);
}

/* Bytes the C library has handed out (0 under a sanitizer, whose
 * allocator glibc does not see; LeakSanitizer checks those runs). */
static inline size_t heap_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

/* One operation under test. Runs it, checks its output against the
 * reference (rc 0) or that it left no output (rc != 0) with CHECKs of its
 * own, frees what it made, and returns the function's code. */
typedef int (*fault_op)(void *ctx);

#define FAULT_MAX_RUNS 200000

/* fault_loop flags. TOLERATE: a faulted run may also succeed (return
 * `want`), for operations with allocations they can do without (a change
 * detector's hash, a log line); the op's own checks then hold it to the
 * reference result, and the count of such runs is printed. */
#define FAULT_TOLERATE 1

/*
 * One pass of the loop (fault_persist says which). op(ctx) must return
 * `want` unfaulted; under a fault it must
 * return PD_ENOMEM or one of the `n_also` codes in `also`. Returns the
 * number of allocations of the unfaulted run (-1 on a failure, reported).
 * The loop runs every allocation point when step is 1; larger steps sample
 * every step-th one (for long operations), always ending with an
 * unfaulted completion.
 */
static inline long fault_pass(const char *what, fault_op op, void *ctx, int want, const int *also,
                       size_t n_also, int flags, long step)
{
    /* Warm-up: one-time initialisations (stdio buffers, lazily built
     * tables) happen here, so they do not count as leaks below; stdout's
     * buffer too (a CHECK failing inside op would allocate it). */
    printf("  %s: every allocation failing in turn\n", what);
    fault_arm(0);
    int rc = op(ctx);
    long total = 0;
    fault_disarm(&total);
    if (rc == want) { /* the second run's count: lazy initialisations are done */
        fault_arm(0);
        rc = op(ctx);
        fault_disarm(&total);
    }
    if (rc != want) {
        UNIT_FAIL_("%s: unfaulted run returned %s, want %s", what, util_strerror(rc),
                   util_strerror(want));
        return -1;
    }
    long runs = 0, leaks = 0, bad = 0, tolerated = 0;
    for (long n = 1; n < FAULT_MAX_RUNS; n += step) {
        size_t before = fault_track_own ? 0 : heap_in_use();
        void *where = NULL;
        if (fault_track_own)
            ft_start();
        fault_arm(n);
        rc = op(ctx);
        long seen = 0;
        bool fired = fault_disarm(&seen);
        size_t after = fault_track_own ? ft_stop(&where) : heap_in_use();
        runs++;
        if (after != before && leaks++ < 3) {
            Dl_info di = {0};
            uintptr_t off = where && dladdr(where, &di) && di.dli_fbase
                                ? (uintptr_t)where - (uintptr_t)di.dli_fbase
                                : (uintptr_t)where;
            UNIT_FAIL_("%s: allocation %ld failing: %zd bytes still in use after the call"
                       " (allocated at %s+%#lx)",
                       what, n, (ssize_t)(after - before), di.dli_fname ? di.dli_fname : "?",
                       (unsigned long)off);
        }
        if (!fired) {
            if (rc != want)
                UNIT_FAIL_("%s: the run past the last allocation (%ld) returned %s, want %s", what,
                           seen, util_strerror(rc), util_strerror(want));
            printf("  %s: %ld allocations, %ld faulted runs (%ld did without it)%s\n", what, total,
                   runs - 1, tolerated, unit_cur_failed ? "" : ", all clean");
            return unit_cur_failed ? -1 : total;
        }
        bool ok = rc == PD_ENOMEM;
        if (rc == want && (flags & FAULT_TOLERATE)) {
            ok = true;
            tolerated++;
        }
        for (size_t i = 0; i < n_also; i++)
            ok = ok || rc == also[i];
        if (!ok && (bad++ < 5 || getenv("FAULT_VERBOSE")))
            UNIT_FAIL_("%s: allocation %ld of %ld failing returned %s (%d)", what, n, total,
                       util_strerror(rc), rc);
    }
    UNIT_FAIL_("%s: the loop did not end after %d runs", what, FAULT_MAX_RUNS);
    return -1;
}

/* The loop, twice: the Nth allocation failing alone (the code must recover
 * from one failure and clean up), then the Nth and every one after it (as
 * when memory is really gone: error paths that allocate must cope too).
 * Returns the first pass's count, -1 on a failure. */
static inline long fault_loop(const char *what, fault_op op, void *ctx, int want, const int *also,
                       size_t n_also, int flags, long step)
{
    atomic_store(&fault_persist, false);
    long total = fault_pass(what, op, ctx, want, also, n_also, flags, step);
    if (total < 0)
        return total;
    char name[160];
    snprintf(name, sizeof name, "%s, then all after", what);
    atomic_store(&fault_persist, true);
    long again = fault_pass(name, op, ctx, want, also, n_also, flags, step);
    atomic_store(&fault_persist, false);
    return again < 0 ? again : total;
}


/* FAULT_ONLY=word runs only the tests whose name contains it (with
 * FAULT_BACKTRACE=N: where allocation N of that test is). */
#define RUN_ONLY(t)                                                                                \
    do {                                                                                           \
        if (!getenv("FAULT_ONLY") || strstr(#t, getenv("FAULT_ONLY")))                             \
            RUN(t);                                                                                \
    } while (0)

/* The start of main(): re-executes the binary with glibc's per-thread
 * cache off (it keeps freed chunks counted as in use, which would hide or
 * fake leaks in heap_in_use), makes glibc read the time zone (once, on the
 * first gmtime_r: not a leak of the first run that logs), routes jansson
 * through the wrappers and quiets the log below errors. */
static inline void fault_main_init(char **argv)
{
    if (!getenv("PD_FAULTS_REEXEC")) {
        setenv("PD_FAULTS_REEXEC", "1", 1);
        setenv("GLIBC_TUNABLES", "glibc.malloc.tcache_count=0", 1);
        execv("/proc/self/exe", argv);
        perror("re-exec");
    }
    struct tm tm;
    time_t t0 = 0;
    gmtime_r(&t0, &tm);
    json_set_alloc_funcs(fault_json_malloc, fault_json_free);
    util_log_configure(UTIL_LOG_ERROR, false);
}

#endif
