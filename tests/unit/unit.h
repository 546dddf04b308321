/*
 * unit.h: the unit-test harness. Each tests/unit/test_*.c is one binary
 * with TEST() functions listed in main() through RUN(). Every check that
 * fails prints file:line and marks the test failed; the binary ends with
 * "N passed, N failed" and exits non-zero on any failure. tests/run sums
 * the lines of all binaries. Each test runs in a process of its own (RUN).
 *
 * Tests that need PostgreSQL or Redis read PREDICTD_TEST_DATABASE_URL and
 * PREDICTD_TEST_REDIS_URL (set by tests/run, which starts private servers);
 * unit_need_env() skips a test when they are absent. Real market candles
 * are read from PREDICTD_SHARED_DATA (../shared/data) when present.
 */
#ifndef PREDICTD_UNIT_H
#define PREDICTD_UNIT_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static int unit_passed, unit_failed, unit_skipped, unit_cur_failed, unit_cur_skipped;

#define TEST(name) static void name(void)

/* Each test runs in a child process of its own: a crash (or an abort from a
 * sanitizer) fails that test by name, with the lines it printed before, and
 * the tests after it still run. stdout is line-buffered so nothing printed
 * is lost. The child exits 0 (pass), 1 (fail) or 2 (skip); any other exit
 * or a signal is a failure. Side effects in PostgreSQL or Redis persist
 * between tests; memory does not. UNIT_NOFORK=1 runs the tests in this
 * process (for a debugger). A test that runs past UNIT_TIMEOUT seconds
 * (default 300) is killed. */
static inline void unit_run_(void (*fn)(void), const char *name)
{
    static int line_buffered;
    if (!line_buffered) {
        setvbuf(stdout, NULL, _IOLBF, 0);
        line_buffered = 1;
    }
    fflush(stdout);
    fflush(stderr);
    int status = 0, forked = !getenv("UNIT_NOFORK");
    pid_t pid = forked ? fork() : 0;
    if (pid < 0) {
        perror("fork");
        forked = 0;
    }
    if (pid == 0) {
        unit_cur_failed = 0;
        unit_cur_skipped = 0;
        if (forked) {
            const char *t = getenv("UNIT_TIMEOUT");
            alarm(t && atoi(t) > 0 ? (unsigned)atoi(t) : 300);
        }
        fn();
        if (forked) {
            fflush(stdout);
            exit(unit_cur_skipped ? 2 : unit_cur_failed ? 1 : 0); /* exit: gcov and LSan run */
        }
        status = unit_cur_skipped ? 2 << 8 : unit_cur_failed ? 1 << 8 : 0;
    } else {
        while (waitpid(pid, &status, 0) < 0)
            ;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 2) {
        unit_skipped++;
        printf("skip %s\n", name);
    } else if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        unit_passed++;
        printf("ok   %s\n", name);
    } else {
        unit_failed++;
        if (WIFSIGNALED(status))
            printf("FAIL %s (killed by signal %d: %s)\n", name, WTERMSIG(status),
                   strsignal(WTERMSIG(status)));
        else if (WEXITSTATUS(status) != 1)
            printf("FAIL %s (exit %d)\n", name, WEXITSTATUS(status));
        else
            printf("FAIL %s\n", name);
    }
    fflush(stdout);
}

#define RUN(name) unit_run_(name, #name)

#define UNIT_FAIL_(...)                                                                            \
    do {                                                                                           \
        printf("  %s:%d: ", __FILE__, __LINE__);                                                   \
        printf(__VA_ARGS__);                                                                       \
        printf("\n");                                                                              \
        unit_cur_failed = 1;                                                                       \
    } while (0)

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            UNIT_FAIL_("CHECK(%s)", #cond);                                                        \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                                         \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        if (a_ != b_)                                                                              \
            UNIT_FAIL_("%s == %s: %lld != %lld", #a, #b, a_, b_);                                  \
    } while (0)

#define CHECK_EQ_STR(a, b)                                                                         \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        if (!a_ || !b_ || strcmp(a_, b_) != 0)                                                     \
            UNIT_FAIL_("%s == %s: \"%s\" != \"%s\"", #a, #b, a_ ? a_ : "(null)",                   \
                       b_ ? b_ : "(null)");                                                        \
    } while (0)

/* |a - b| <= tol * max(1, |b|): relative for large values, absolute near 0. */
#define CHECK_NEAR(a, b, tol)                                                                      \
    do {                                                                                           \
        double a_ = (a), b_ = (b), s_ = fabs(b_) > 1 ? fabs(b_) : 1;                               \
        if (!(fabs(a_ - b_) <= (tol) * s_))                                                        \
            UNIT_FAIL_("%s ~ %s: %.17g vs %.17g", #a, #b, a_, b_);                                 \
    } while (0)

/* Returns from the test (marking it skipped) when an env variable is unset. */
#define UNIT_NEED_ENV(var)                                                                         \
    do {                                                                                           \
        if (!getenv(var) || !*getenv(var)) {                                                       \
            printf("  (needs %s)\n", var);                                                         \
            unit_cur_skipped = 1;                                                                  \
            return;                                                                                \
        }                                                                                          \
    } while (0)

#define UNIT_SKIP(why)                                                                             \
    do {                                                                                           \
        printf("  (skipped: %s)\n", why);                                                          \
        unit_cur_skipped = 1;                                                                      \
        return;                                                                                    \
    } while (0)

static inline int unit_report(void)
{
    printf("%d passed, %d failed, %d skipped\n", unit_passed, unit_failed, unit_skipped);
    return unit_failed ? 1 : 0;
}

#endif
