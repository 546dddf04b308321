/*
 * test_demo.c: the demo replay of feed/ (demo.c) with files this test
 * writes: every way a demo file can be wrong (a name without a symbol, a
 * corrupt or truncated gzip, rows off the minute, too few rows, two files
 * of one symbol, an empty or missing directory) is refused with its
 * reason; and, against the real PostgreSQL of tests/run (skipped without
 * it), a replay seeded behind the clock writes every remaining candle,
 * reaches the end of its files and says so (state "down"), resumes from
 * what is stored, and leaves alone a symbol whose stored candles are not
 * the demo's; two feed leaders on one database take turns (feed/leader.c).
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "features/features.h"
#include "feed/feed.h"
#include "store/store.h"
#include "tests/unit/unit.h"
#include "util/util.h"

#define DB_ENV "PREDICTD_TEST_DATABASE_URL"

static char dir[256];

static void make_dir(void)
{
    snprintf(dir, sizeof dir, "%s/predictd-demo-XXXXXX",
             getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(dir))
        dir[0] = 0;
}

/* Writes text gzipped to dir/name; returns the path (static buffer per call
 * slot). */
static const char *write_gz(const char *name, const char *text)
{
    static char paths[8][512];
    static int slot;
    char *p = paths[slot++ % 8];
    snprintf(p, 512, "%s/%s", dir, name);
    gzFile f = gzopen(p, "wb");
    if (f) {
        gzwrite(f, text, (unsigned)strlen(text));
        gzclose(f);
    }
    return p;
}

static const char *write_raw(const char *name, const void *data, size_t n)
{
    static char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    if (f) {
        fwrite(data, 1, n, f);
        fclose(f);
    }
    return p;
}

/* n 1m candles from 2018-01-01T00:00Z, price 100 + i. */
static char *candles_csv(int n, int first_second)
{
    util_buf b = {0};
    util_buf_puts(&b, "open_time,open,high,low,close,volume\n");
    for (int i = 0; i < n; i++) {
        int mm = i % 60, hh = i / 60;
        util_buf_printf(&b, "2018-01-01T%02d:%02d:%02dZ,%d,%d.5,%d,%d.25,%d\n", hh, mm,
                        i == 0 ? first_second : 0, 100 + i, 100 + i, 99 + i, 100 + i, 1 + i);
    }
    return b.data;
}

static void expect_refused(const char *files, int rc, const char *why_has)
{
    char why[512] = "";
    size_t seeded = 99;
    int got = feed_demo_seed(files, util_now(), 0, &seeded, why, sizeof why);
    if (got != rc)
        UNIT_FAIL_("%s: rc %d, want %d (%s)", files, got, rc, why);
    if (!strstr(why, why_has))
        UNIT_FAIL_("%s: why \"%s\" lacks \"%s\"", files, why, why_has);
    CHECK_EQ_INT(seeded, 99); /* untouched on an error */
}

TEST(bad_demo_files_are_refused_with_their_reason)
{
    make_dir();
    CHECK(dir[0]);
    char *ok = candles_csv(10, 0);
    char files[2048];
    /* the file name must begin with a symbol */
    expect_refused(write_gz("_1m.csv.gz", ok), PD_EINVAL, "must start with the symbol");
    expect_refused(write_gz("btc-usd_1m.csv.gz", ok), PD_EINVAL, "'btc-usd' is not a symbol");
    /* missing */
    snprintf(files, sizeof files, "%s/NOPE_1m.csv.gz", dir);
    expect_refused(files, PD_ENOTFOUND, "NOPE_1m.csv.gz: ");
    /* a gzip header followed by garbage */
    const unsigned char junk[] = {0x1f, 0x8b, 0x08, 0x00, 0,    0,    0,    0,    0,    0x03, 0xde,
                                  0xad, 0xbe, 0xef, 0xff, 0xff, 0xff, 0x00, 0x12, 0x34, 0x56};
    expect_refused(write_raw("JUNK_1m.csv.gz", junk, sizeof junk), PD_EIO, "JUNK_1m.csv.gz: ");
    /* a good gzip cut in half: an error, not a shorter series */
    char *many = candles_csv(600, 0);
    const char *full = write_gz("CUT_1m.csv.gz", many);
    FILE *f = fopen(full, "rb");
    unsigned char buf[1 << 16];
    size_t n = f ? fread(buf, 1, sizeof buf, f) : 0;
    if (f)
        fclose(f);
    CHECK(n > 100);
    expect_refused(write_raw("CUT_1m.csv.gz", buf, n / 2), PD_EIO, "CUT_1m.csv.gz: ");
    free(many);
    /* a CSV row that does not parse names its line */
    expect_refused(write_gz("BADROW_1m.csv.gz", "open_time,open,high,low,close,volume\n"
                                                "2018-01-01T00:00:00Z,1,2,0.5,1.5,3\n"
                                                "2018-01-01T00:01:00Z,1,x,0.5,1.5,3\n"),
                   PD_EPARSE, "BADROW_1m.csv.gz: ");
    /* rows not on a minute are not 1m candles */
    char *off = candles_csv(10, 30);
    expect_refused(write_gz("OFFMIN_1m.csv.gz", off), PD_EPARSE, "candle 1 is not on a minute");
    free(off);
    /* one candle is not a replay */
    char *one = candles_csv(1, 0);
    expect_refused(write_gz("ONE_1m.csv.gz", one), PD_EPARSE, "fewer than 2 candles");
    free(one);
    /* two files of one symbol */
    const char *a = write_gz("TWO_1m.csv.gz", ok);
    const char *b = write_gz("TWO_5m.csv.gz", ok);
    snprintf(files, sizeof files, "%s,%s", a, b);
    expect_refused(files, PD_EINVAL, "a second file for TWO");
    /* a directory without demo files, and none at all */
    char empty[300];
    snprintf(empty, sizeof empty, "%s/empty", dir);
    CHECK_EQ_INT(mkdir(empty, 0700), 0);
    write_raw("empty/README", "x", 1);
    write_raw("empty/.hidden.csv.gz", "x", 1);
    setenv("PREDICTD_DEMO_DIR", empty, 1);
    expect_refused(NULL, PD_ENOTFOUND, "no demo files");
    expect_refused("", PD_ENOTFOUND, "no demo files");
    snprintf(empty, sizeof empty, "%s/absent", dir);
    setenv("PREDICTD_DEMO_DIR", empty, 1);
    expect_refused(NULL, PD_ENOTFOUND, "demo directory");
    /* the connector refuses the same, and a bad step */
    feed_connector *c = NULL;
    char why[512] = "";
    snprintf(files, sizeof files, "demo:%s", a);
    setenv("PREDICTD_DEMO_STEP_MS", "soon", 1);
    CHECK_EQ_INT(feed_connector_new(files, &c, why, sizeof why), PD_EINVAL);
    setenv("PREDICTD_DEMO_STEP_MS", "-1", 1);
    CHECK_EQ_INT(feed_connector_new(files, &c, why, sizeof why), PD_EINVAL);
    unsetenv("PREDICTD_DEMO_STEP_MS");
    CHECK_EQ_INT(feed_connector_new(files, &c, why, sizeof why), 0);
    if (c) {
        CHECK_EQ_INT(c->start(c, NULL), PD_EINVAL); /* no sink */
        feed_connector_free(c);                     /* never started */
    }
    CHECK_EQ_INT(feed_demo_seed(a, util_now(), -1, NULL, NULL, 0), PD_EINVAL);
    feed_runner *r = NULL;
    CHECK_EQ_INT(feed_runner_start("demo:/nonexistent/XX_1m.csv.gz", &r, why, sizeof why),
                 PD_ENOTFOUND);
    CHECK(r == NULL && strstr(why, "feed 'demo'") != NULL);
    CHECK_EQ_INT(feed_runner_start(NULL, &r, why, sizeof why), PD_EINVAL);
    feed_runner_stop(NULL);
    free(ok);
}

static int init(void)
{
    const char *root = getenv("PREDICTD_ROOT");
    char d[1024];
    snprintf(d, sizeof d, "%s/db", root && *root ? root : ".");
    int rc = store_init(getenv(DB_ENV), NULL, false);
    return rc ? rc : store_migrate(d);
}

/* Waits (bounded) until the feed's reported state is want. */
static bool wait_state(const char *want)
{
    store_feed_status st;
    for (int i = 0; i < 300; i++) {
        if (store_feed_status_get(&st) == 0 && !strcmp(st.state, want))
            return true;
        struct timespec ts = {.tv_nsec = 50000000};
        nanosleep(&ts, NULL);
    }
    printf("  state: %s\n", st.state);
    return false;
}

TEST(replay_reaches_the_end_of_its_files_and_resumes)
{
    UNIT_NEED_ENV(DB_ENV);
    CHECK_EQ_INT(init(), 0);
    make_dir();
    char sym[24], other[24];
    snprintf(sym, sizeof sym, "DM%d", (int)getpid() % 1000000);
    snprintf(other, sizeof other, "DO%d", (int)getpid() % 1000000);
    char name[64], oname[64];
    snprintf(name, sizeof name, "%s_1m.csv.gz", sym);
    snprintf(oname, sizeof oname, "%s_1m.csv.gz", other);
    char *csv = candles_csv(10, 0);
    char files[1200];
    const char *a = write_gz(name, csv);
    const char *b = write_gz(oname, csv);
    snprintf(files, sizeof files, "%s,%s", a, b);
    /* the other symbol holds candles that are not this demo's */
    int64_t now = util_now();
    features_candle foreign = {
        .t = (now / 60 - 30) * 60, .open = 5, .high = 6, .low = 4, .close = 5, .volume = 1};
    CHECK_EQ_INT(store_upsert_base_candles(other, &foreign, 1), 0);
    /* 8 of 10 seeded (80 %), ending 5 minutes behind: the other 2 are due */
    size_t seeded = 0;
    char why[512] = "";
    CHECK_EQ_INT(feed_demo_seed(files, now, 5, &seeded, why, sizeof why), 0);
    CHECK_EQ_INT(seeded, 1);
    int64_t count = 0;
    CHECK_EQ_INT(store_count_candles(sym, "1m", &count), 0);
    CHECK_EQ_INT(count, 8);
    /* seeding again writes nothing */
    CHECK_EQ_INT(feed_demo_seed(files, now, 5, &seeded, why, sizeof why), 0);
    CHECK_EQ_INT(seeded, 0);
    setenv("PREDICTD_DEMO_STEP_MS", "5", 1);
    char spec[1300];
    snprintf(spec, sizeof spec, "demo:%s", files);
    for (int round = 0; round < 2; round++) {
        feed_runner *r = NULL;
        CHECK_EQ_INT(feed_runner_start(spec, &r, why, sizeof why), 0);
        /* the end of the files: every candle written, the feed says down */
        CHECK(wait_state("down"));
        feed_runner_stop(r);
        CHECK_EQ_INT(store_count_candles(sym, "1m", &count), 0);
        CHECK_EQ_INT(count, 10);
        features_candle *c = NULL;
        size_t n = 0;
        CHECK_EQ_INT(store_load_range(sym, "1m", 0, 0, now + 3600, &c, &n), 0);
        CHECK_EQ_INT(n, 10);
        for (size_t i = 0; i < n; i++) {
            CHECK_EQ_INT(c[i].t, c[0].t + (int64_t)i * 60); /* consecutive minutes */
            CHECK_NEAR(c[i].open, 100 + (double)i, 0);
            CHECK_NEAR(c[i].close, 100.25 + (double)i, 0);
            CHECK_NEAR(c[i].volume, 1 + (double)i, 0);
        }
        CHECK(n == 10 && c[9].t + 60 <= now); /* all closed before now */
        free(c);
        /* the foreign series is left as it was */
        CHECK_EQ_INT(store_count_candles(other, "1m", &count), 0);
        CHECK_EQ_INT(count, 1);
    }
    unsetenv("PREDICTD_DEMO_STEP_MS");
    free(csv);
}

/* Two leaders on one database: one ingests, the other stands by and says
 * so (status, metrics); when the first stops, the other takes over within
 * its retry interval. A leader without a usable database runs alone. */
static bool wait_leader(feed_leader *l, bool standby, uint64_t takeovers)
{
    feed_leader_status st;
    for (int i = 0; i < 400; i++) { /* bounded: 20 s */
        feed_leader_status_get(l, &st);
        if ((strcmp(st.state, "standby") == 0) == standby && st.takeovers == takeovers)
            return true;
        struct timespec ts = {.tv_nsec = 50000000};
        nanosleep(&ts, NULL);
    }
    printf("  leader state %s, takeovers %llu\n", st.state, (unsigned long long)st.takeovers);
    return false;
}

TEST(leaders_share_one_lock_and_take_over)
{
    UNIT_NEED_ENV(DB_ENV);
    CHECK_EQ_INT(init(), 0);
    make_dir();
    char name[64];
    snprintf(name, sizeof name, "DL%d_1m.csv.gz", (int)getpid() % 1000000);
    char *csv = candles_csv(10, 0);
    char spec[600];
    snprintf(spec, sizeof spec, "demo:%s", write_gz(name, csv));
    free(csv);
    char why[256] = "";
    feed_leader *a = NULL, *b = NULL;
    CHECK_EQ_INT(feed_leader_start(spec, getenv(DB_ENV), &a, why, sizeof why), 0);
    CHECK(wait_leader(a, false, 1));
    CHECK_EQ_INT(feed_leader_start(spec, getenv(DB_ENV), &b, why, sizeof why), 0);
    CHECK(wait_leader(b, true, 0));
    util_buf m = {0};
    feed_leader_metrics(b, &m);
    CHECK(m.data && strstr(m.data, "predictd_feed_leader 0") != NULL);
    util_buf_reset(&m);
    feed_leader_metrics(a, &m);
    CHECK(m.data && strstr(m.data, "predictd_feed_leader 1") != NULL);
    store_feed_status fs;
    CHECK_EQ_INT(store_feed_status_get(&fs), 0);
    feed_leader_stop(a); /* releases the lock */
    CHECK(wait_leader(b, false, 1));
    feed_leader_status st;
    feed_leader_status_get(b, &st);
    CHECK(strcmp(st.state, "standby") != 0 && strcmp(st.state, "off") != 0);
    feed_leader_stop(b);
    /* a database URL that cannot be used: the feed runs without a lock */
    feed_leader *c = NULL;
    CHECK_EQ_INT(feed_leader_start(spec, "not a database url", &c, why, sizeof why), 0);
    CHECK(wait_leader(c, false, 1));
    feed_leader_stop(c);
    /* refusals and NULLs */
    CHECK_EQ_INT(feed_leader_start("nosuch:x", NULL, &c, why, sizeof why), PD_EINVAL);
    CHECK(strstr(why, "unknown feed") != NULL);
    CHECK_EQ_INT(feed_leader_start(NULL, NULL, &c, why, sizeof why), PD_EINVAL);
    feed_leader_status_get(NULL, &st);
    CHECK_EQ_STR(st.state, "off");
    util_buf_reset(&m);
    feed_leader_metrics(NULL, &m);
    CHECK_EQ_INT(m.len, 0);
    feed_leader_stop(NULL);
    util_buf_cleanup(&m);
}

/* With the database away, seeding says which symbol it could not write
 * (and seeds nothing), and the demo connector keeps retrying its seed
 * until stopped, promptly, with nothing written. */
TEST(demo_with_the_database_away)
{
    CHECK_EQ_INT(store_init("postgresql://127.0.0.1:9/none?connect_timeout=2", NULL, false), 0);
    make_dir();
    CHECK(dir[0]);
    char *csv = candles_csv(10, 0);
    const char *f = write_gz("AWAY_1m.csv.gz", csv);
    free(csv);
    char why[512] = "";
    size_t seeded = 99;
    CHECK_EQ_INT(feed_demo_seed(f, util_now(), 0, &seeded, why, sizeof why), PD_EDB);
    CHECK(strncmp(why, "AWAY: ", 6) == 0);
    CHECK_EQ_INT(seeded, 99);
    char spec[600];
    snprintf(spec, sizeof spec, "demo:%s", f);
    feed_connector *c = NULL;
    CHECK_EQ_INT(feed_connector_new(spec, &c, why, sizeof why), 0);
    feed_sink *sink = NULL;
    CHECK_EQ_INT(feed_sink_new(c->name, c->source, &sink), 0);
    CHECK_EQ_INT(c->start(c, sink), 0);
    CHECK_EQ_INT(c->start(c, sink), PD_EINVAL); /* once */
    struct timespec ts = {.tv_sec = 1, .tv_nsec = 500000000}; /* a retry or two */
    nanosleep(&ts, NULL);
    feed_connector_free(c); /* returns: the retry wait ends on stop */
    feed_sink_stats st;
    feed_sink_stats_get(sink, &st);
    CHECK_EQ_INT(st.candles_written, 0);
    CHECK_EQ_INT(st.last_candle, 0);
    feed_sink_free(sink);
    store_shutdown();
}

int main(void)
{
    RUN(bad_demo_files_are_refused_with_their_reason);
    RUN(replay_reaches_the_end_of_its_files_and_resumes);
    RUN(leaders_share_one_lock_and_take_over);
    RUN(demo_with_the_database_away);
    return unit_report();
}
