/* Unit tests of util: time parsing and formatting, timeframes, symbols,
 * SHA-256 against FIPS vectors, JSON escaping, atomic file writes. */
#include "tests/unit/unit.h"
#include "tests/unit/fixtures.h"
#include "util/util.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

TEST(test_time_parse)
{
    int64_t t = 0;
    CHECK_EQ_INT(util_parse_time("1970-01-01T00:00:00Z", &t), 0);
    CHECK_EQ_INT(t, 0);
    CHECK_EQ_INT(util_parse_time("2017-11-04T23:02:00Z", &t), 0);
    CHECK_EQ_INT(t, 1509836520);
    CHECK_EQ_INT(util_parse_time("2017-11-04 23:02:00.123+01:00", &t), 0);
    CHECK_EQ_INT(t, 1509836520 - 3600);
    CHECK_EQ_INT(util_parse_time("2024-02-29", &t), 0);
    CHECK_EQ_INT(t, 1709164800);
    CHECK_EQ_INT(util_parse_time("2024-13-01", &t), PD_EINVAL);
    CHECK_EQ_INT(util_parse_time("2024-01-01T00:00:00Zjunk", &t), PD_EINVAL);
    CHECK_EQ_INT(util_parse_time("", &t), PD_EINVAL);
    char buf[32];
    CHECK_EQ_STR(util_rfc3339(1509836520, buf), "2017-11-04T23:02:00Z");
}

TEST(test_timeframes)
{
    CHECK_EQ_INT(util_tf_seconds("15m"), 900);
    CHECK_EQ_INT(util_tf_seconds("1d"), 86400);
    CHECK_EQ_INT(util_tf_seconds("2h"), 0);
    CHECK_EQ_INT(util_tf_seconds(NULL), 0);
    /* at 10:07, the last closed 15m candle opened at 09:45 */
    CHECK_EQ_INT(util_tf_last_closed_open(36420, 900), 35100);
    /* exactly at a boundary the candle that just closed counts */
    CHECK_EQ_INT(util_tf_last_closed_open(36000, 900), 35100);
}

TEST(test_symbols)
{
    CHECK(util_symbol_valid("BTCUSDT"));
    CHECK(util_symbol_valid("A1"));
    CHECK(!util_symbol_valid("A"));
    CHECK(!util_symbol_valid("btcusdt"));
    CHECK(!util_symbol_valid("../etc"));
    CHECK(!util_symbol_valid("ABCDEFGHIJKLMNOPQRSTU")); /* 21 */
    CHECK(util_symbol_valid("ABCDEFGHIJKLMNOPQRST"));   /* 20 */
    CHECK(!util_symbol_valid(""));
    CHECK(!util_symbol_valid(NULL));
}

TEST(test_sha256)
{
    char hex[65];
    util_sha256_hex("", 0, hex);
    CHECK_EQ_STR(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    util_sha256_hex("abc", 3, hex);
    CHECK_EQ_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    util_sha256_hex(m, strlen(m), hex);
    CHECK_EQ_STR(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    /* a million 'a' through many updates of odd sizes */
    util_sha256 s;
    util_sha256_init(&s);
    char chunk[997];
    memset(chunk, 'a', sizeof chunk);
    size_t left = 1000000;
    while (left) {
        size_t k = left < sizeof chunk ? left : sizeof chunk;
        util_sha256_update(&s, chunk, k);
        left -= k;
    }
    uint8_t d[32];
    util_sha256_final(&s, d);
    char got[65];
    for (int i = 0; i < 32; i++)
        snprintf(got + 2 * i, 3, "%02x", d[i]);
    /* FIPS 180-2 test vector: all 32 bytes */
    CHECK_EQ_STR(got, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(test_json_writer)
{
    util_buf b;
    util_buf_init(&b);
    util_json_str(&b, "a\"b\\c\nd\x01");
    util_buf_puts(&b, ",");
    util_json_num(&b, 1.0 / 0.0);
    util_buf_puts(&b, ",");
    util_json_num(&b, 42);
    util_buf_puts(&b, ",");
    util_json_fixed(&b, 0.123456, 3);
    CHECK(util_buf_ok(&b));
    CHECK_EQ_STR(b.data, "\"a\\\"b\\\\c\\nd\\u0001\",null,42,0.123");
    util_buf_reset(&b);
    for (int i = 0; i < 10000; i++)
        util_buf_printf(&b, "%d,", i);
    CHECK(b.len > 40000);
    char *s = util_buf_steal(&b);
    CHECK(s && strncmp(s, "0,1,2,", 6) == 0);
    free(s);
    util_buf_cleanup(&b);
}

TEST(test_files)
{
    char dir[160];
    CHECK(unit_tmpdir(dir, sizeof dir, "predictd-util") != NULL);
    char path[256];
    snprintf(path, sizeof path, "%s/f.txt", dir);
    CHECK_EQ_INT(util_write_file_atomic(path, "hello", 5, 0600), 0);
    char *data = NULL;
    size_t n = 0;
    CHECK_EQ_INT(util_read_file(path, 100, &data, &n), 0);
    CHECK_EQ_INT(n, 5);
    CHECK_EQ_STR(data, "hello");
    free(data);
    CHECK_EQ_INT(util_read_file(path, 4, &data, &n), PD_ETOOBIG);
    CHECK_EQ_INT(util_read_file("/nonexistent/x", 4, &data, &n), PD_ENOTFOUND);
    CHECK_EQ_INT(util_rmtree(dir), 0);
    CHECK(access(dir, F_OK) != 0);
}

TEST(test_errors)
{
    CHECK_EQ_STR(util_err_code(PD_EDB), "data_unavailable");
    CHECK_EQ_STR(util_err_code(PD_EUNKNOWNSYM), "unknown_symbol");
    CHECK_EQ_STR(util_err_code(-999), "internal_error");
    CHECK(strlen(util_strerror(PD_ENOMODEL)) > 0);
}

/* the malformed times a client or a CSV can send, each refused; offsets
 * with and without a colon, fractions, lowercase designators accepted */
TEST(test_time_parse_edges)
{
    int64_t t = 7;
    const char *bad[] = {
        "2024-01-01T1:00Z",      /* one-digit hour */
        "2024-01-01T10-00Z",     /* no colon */
        "2024-01-01T10:00:5Z",   /* one-digit second */
        "2024-01-01T10:00:00.Z", /* fraction without digits */
        "2024-01-01T10:00+1:00", /* one-digit offset hour */
        "2024-01-01T10:00+01:0", /* one-digit offset minute */
        "2024-01-00",            /* day 0 */
        "2024-01-32",            /* day 32 */
        "2024-00-10",            /* month 0 */
        "2024-01-01T24:00Z",     /* hour 24 */
        "2024-01-01T23:60Z",     /* minute 60 */
        "2024-01-01T23:59:61Z",  /* second 61 */
        "2024/01/01",
        "24-01-01",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (util_parse_time(bad[i], &t) != PD_EINVAL)
            UNIT_FAIL_("'%s' was accepted", bad[i]);
    CHECK_EQ_INT(t, 7); /* out is written only on success */
    CHECK_EQ_INT(util_parse_time("2017-11-04t23:02z", &t), 0);
    CHECK_EQ_INT(t, 1509836520);
    CHECK_EQ_INT(util_parse_time("2017-11-04T23:02:00-0230", &t), 0);
    CHECK_EQ_INT(t, 1509836520 + 2 * 3600 + 30 * 60);
    CHECK_EQ_INT(util_parse_time("2017-11-04T23:02:00.999999999+00:00", &t), 0);
    CHECK_EQ_INT(t, 1509836520);
    CHECK_EQ_INT(util_parse_time("2016-12-31T23:59:60Z", &t), 0); /* a leap second */
    CHECK_EQ_INT(t, 1483228800);
    CHECK_EQ_INT(util_parse_time("1969-12-31T23:59:59Z", &t), 0);
    CHECK_EQ_INT(t, -1);
    CHECK_EQ_INT(util_parse_time("0001-01-01", &t), 0);
    CHECK_EQ_INT(t, -62135596800LL);
}

TEST(test_error_table_bounds)
{
    /* every code has a text, a JSON name and a status; out of range is 500 */
    CHECK_EQ_STR(util_strerror(1), "unknown error");
    CHECK_EQ_STR(util_strerror(-100000), "unknown error");
    CHECK_EQ_INT(util_err_status(-100000), 500);
    CHECK_EQ_INT(util_err_status(5), 500);
    CHECK_EQ_INT(util_err_status(PD_EINVAL), 400);
    CHECK_EQ_INT(util_err_status(PD_ETOOBIG), 413);
    CHECK_EQ_INT(util_err_status(PD_EDB), 503);
    CHECK_EQ_STR(util_err_code(0), "ok");
}

TEST(test_hex_and_escapes)
{
    CHECK_EQ_INT(util_hex_value('0'), 0);
    CHECK_EQ_INT(util_hex_value('9'), 9);
    CHECK_EQ_INT(util_hex_value('a'), 10);
    CHECK_EQ_INT(util_hex_value('F'), 15);
    CHECK_EQ_INT(util_hex_value('g'), -1);
    CHECK_EQ_INT(util_hex_value('G'), -1);
    CHECK_EQ_INT(util_hex_value('/'), -1);
    CHECK_EQ_INT(util_hex_value(':'), -1);
    util_buf b;
    util_buf_init(&b);
    util_json_str(&b, "\r\t\x7f/");
    util_buf_puts(&b, ",");
    util_json_fixed(&b, 0.0 / 0.0, 2);
    util_buf_puts(&b, ",");
    util_json_fixed(&b, -1.005, 1);
    util_buf_puts(&b, ",");
    util_json_num(&b, 1e15);
    util_buf_puts(&b, ",");
    util_json_num(&b, -0.25);
    util_buf_puts(&b, ",");
    util_json_key(&b, "k");
    CHECK(util_buf_ok(&b));
    /* DEL needs no escape in JSON */
    CHECK_EQ_STR(b.data, "\"\\r\\t\x7f/\",null,-1.0,1e+15,-0.25,\"k\":");
    util_buf_cleanup(&b);
}

TEST(test_file_edges)
{
    char dir[160];
    CHECK(unit_tmpdir(dir, sizeof dir, "predictd-util2") != NULL);
    char *data = (char *)"untouched";
    size_t n = 99;
    /* a directory is not a file */
    CHECK_EQ_INT(util_read_file(dir, 100, &data, &n), PD_EIO);
    /* a symlink is not followed */
    char path[256], link[256];
    snprintf(path, sizeof path, "%s/target", dir);
    snprintf(link, sizeof link, "%s/link", dir);
    CHECK_EQ_INT(util_write_file_atomic(path, "abc", 3, 0644), 0);
    CHECK_EQ_INT(symlink(path, link), 0);
    CHECK_EQ_INT(util_read_file(link, 100, &data, &n), PD_EIO);
    CHECK_EQ_STR(data, "untouched");
    CHECK_EQ_INT(n, 99);
    /* a file of exactly the limit is read whole (it was refused once), one
     * byte over is too big */
    size_t big = 300000;
    char *buf = malloc(big);
    for (size_t i = 0; i < big; i++)
        buf[i] = (char)('a' + i % 26);
    CHECK_EQ_INT(util_write_file_atomic(path, buf, big, 0600), 0);
    CHECK_EQ_INT(util_read_file(path, big, &data, &n), 0);
    CHECK_EQ_INT(n, big);
    CHECK(memcmp(data, buf, big) == 0);
    CHECK_EQ_INT(data[big], '\0');
    free(data);
    CHECK_EQ_INT(util_read_file(path, big - 1, &data, &n), PD_ETOOBIG);
    free(buf);
    /* the mode asked for is the mode written */
    struct stat st;
    CHECK_EQ_INT(stat(path, &st), 0);
    CHECK_EQ_INT(st.st_mode & 0777, 0600);
    /* into a directory that does not exist: an error, nothing left */
    char nodir[256];
    snprintf(nodir, sizeof nodir, "%s/no/such/file", dir);
    CHECK_EQ_INT(util_write_file_atomic(nodir, "x", 1, 0600), PD_EIO);
    /* a path too long for the temporary name */
    char *longp = malloc(5000);
    memset(longp, 'a', 4999);
    longp[0] = '/';
    longp[4999] = '\0';
    CHECK_EQ_INT(util_write_file_atomic(longp, "x", 1, 0600), PD_EINVAL);
    free(longp);
    /* rmtree: a missing path is already gone; a plain file is removed */
    char gone[256];
    snprintf(gone, sizeof gone, "%s/never", dir);
    CHECK_EQ_INT(util_rmtree(gone), 0);
    CHECK_EQ_INT(util_rmtree(link), 0);
    CHECK(access(path, F_OK) == 0); /* the link went, not what it points at */
    CHECK_EQ_INT(util_rmtree(dir), 0);
    CHECK(access(dir, F_OK) != 0);
}

TEST(test_write_in_the_current_directory)
{
    char dir[160], cwd[1024];
    CHECK(unit_tmpdir(dir, sizeof dir, "predictd-util3") != NULL);
    CHECK(getcwd(cwd, sizeof cwd) != NULL);
    CHECK_EQ_INT(chdir(dir), 0);
    CHECK_EQ_INT(util_write_file_atomic("plain.txt", "hi", 2, 0600), 0);
    char *data = NULL;
    size_t n = 0;
    CHECK_EQ_INT(util_read_file("plain.txt", 10, &data, &n), 0);
    CHECK_EQ_STR(data, "hi");
    free(data);
    CHECK_EQ_INT(chdir(cwd), 0);
    CHECK_EQ_INT(util_rmtree(dir), 0);
}

/* FNV-1a 32 against the published test vectors; the byte form equals the
 * string form on a string and hashes what follows a NUL. */
TEST(test_fnv1a)
{
    CHECK_EQ_INT(util_fnv1a(UTIL_FNV1A_INIT, ""), 0x811c9dc5u);
    CHECK_EQ_INT(util_fnv1a(UTIL_FNV1A_INIT, "a"), 0xe40c292cu);
    CHECK_EQ_INT(util_fnv1a(UTIL_FNV1A_INIT, "foobar"), 0xbf9cf968u);
    CHECK_EQ_INT(util_fnv1a_bytes(UTIL_FNV1A_INIT, "foobar", 6), 0xbf9cf968u);
    CHECK_EQ_INT(util_fnv1a_bytes(UTIL_FNV1A_INIT, "", 0), 0x811c9dc5u);
    CHECK(util_fnv1a_bytes(UTIL_FNV1A_INIT, "foo\0bar", 7) !=
          util_fnv1a_bytes(UTIL_FNV1A_INIT, "foo", 3));
    CHECK_EQ_INT(util_fnv1a_bytes(util_fnv1a(UTIL_FNV1A_INIT, "foo"), "bar", 3), 0xbf9cf968u);
}

/* Files that are not regular files, or whose size is not what stat says:
 * a FIFO is refused at once (opening it must not wait for a writer: a FIFO
 * named as the dashboard file or a migration would hang the reader for ever); a
 * /proc file reports size 0 and grows as it is read, so the budget is what
 * stops it, at every point of the buffer's growth; a read the kernel fails is
 * PD_EIO. */
TEST(test_read_file_special_files)
{
    char dir[160], fifo[256];
    CHECK(unit_tmpdir(dir, sizeof dir, "predictd-util4") != NULL);
    snprintf(fifo, sizeof fifo, "%s/fifo", dir);
    CHECK_EQ_INT(mkfifo(fifo, 0600), 0);
    char *data = (char *)"untouched";
    size_t n = 99;
    /* a reader that blocks fails here, not at the harness's timeout (which
     * is put back after) */
    unsigned outer = alarm(20);
    CHECK_EQ_INT(util_read_file(fifo, 100, &data, &n), PD_EIO);
    alarm(outer);
    CHECK_EQ_STR(data, "untouched");
    CHECK_EQ_INT(n, 99);
    /* the FIFO is a leaf util_rmtree removes like a file */
    CHECK_EQ_INT(util_rmtree(dir), 0);
    CHECK(access(dir, F_OK) != 0);

    /* /proc/self/status: st_size 0, some hundreds of bytes when read */
    struct stat st;
    CHECK_EQ_INT(stat("/proc/self/status", &st), 0);
    CHECK_EQ_INT(st.st_size, 0);
    CHECK_EQ_INT(util_read_file("/proc/self/status", 1 << 20, &data, &n), 0);
    CHECK(n > 64);
    CHECK_EQ_INT(strncmp(data, "Name:", 5), 0);
    CHECK_EQ_INT(strlen(data), n);
    free(data);
    /* budgets that end at a buffer doubling (7, 15: the extra byte is
     * probed) and inside one (10, 40: the read itself overshoots) */
    /* a read that fails (/proc/self/mem at offset 0: EIO from the kernel)
     * is PD_EIO, nothing returned */
    data = (char *)"untouched";
    n = 99;
    CHECK_EQ_INT(util_read_file("/proc/self/mem", 1 << 20, &data, &n), PD_EIO);
    CHECK_EQ_STR(data, "untouched");
    CHECK_EQ_INT(n, 99);
    static const size_t budgets[] = {0, 1, 7, 10, 15, 40};
    for (size_t k = 0; k < sizeof budgets / sizeof budgets[0]; k++) {
        data = (char *)"untouched";
        int rc = util_read_file("/proc/self/status", budgets[k], &data, &n);
        if (rc != PD_ETOOBIG || strcmp(data, "untouched") != 0)
            UNIT_FAIL_("budget %zu: rc %d", budgets[k], rc);
    }
}

/* A write that fails half-way (the file-size limit stands in for a full
 * disk) reports PD_EIO, leaves the old content in place and no temporary
 * file behind; so does a rename onto a directory. */
TEST(test_write_atomic_failures_keep_the_old_file)
{
    char dir[160], path[256];
    CHECK(unit_tmpdir(dir, sizeof dir, "predictd-util5") != NULL);
    snprintf(path, sizeof path, "%s/model.pb", dir);
    CHECK_EQ_INT(util_write_file_atomic(path, "old", 3, 0600), 0);

    struct rlimit old;
    CHECK_EQ_INT(getrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit small = {1000, old.rlim_max};
    CHECK_EQ_INT(setrlimit(RLIMIT_FSIZE, &small), 0);
    char big[4000];
    memset(big, 'x', sizeof big);
    int rc = util_write_file_atomic(path, big, sizeof big, 0600);
    CHECK_EQ_INT(setrlimit(RLIMIT_FSIZE, &old), 0);
    CHECK_EQ_INT(rc, PD_EIO);
    char *data = NULL;
    size_t n = 0;
    CHECK_EQ_INT(util_read_file(path, 100, &data, &n), 0);
    CHECK_EQ_STR(data, "old");
    free(data);

    /* the target is a non-empty directory: the rename fails */
    char sub[256], inner[300];
    snprintf(sub, sizeof sub, "%s/sub", dir);
    CHECK_EQ_INT(mkdir(sub, 0700), 0);
    snprintf(inner, sizeof inner, "%s/keep", sub);
    CHECK_EQ_INT(util_write_file_atomic(inner, "k", 1, 0600), 0);
    CHECK_EQ_INT(util_write_file_atomic(sub, "new", 3, 0600), PD_EIO);
    CHECK_EQ_INT(util_read_file(inner, 10, &data, &n), 0);
    CHECK_EQ_STR(data, "k");
    free(data);

    /* nothing but model.pb and sub/ is left: no .tmp file */
    DIR *d = opendir(dir);
    CHECK(d != NULL);
    int entries = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        entries++;
        if (strcmp(e->d_name, "model.pb") != 0 && strcmp(e->d_name, "sub") != 0)
            UNIT_FAIL_("left behind: %s", e->d_name);
    }
    if (d)
        closedir(d);
    CHECK_EQ_INT(entries, 2);
    CHECK_EQ_INT(util_rmtree(dir), 0);
    CHECK(access(dir, F_OK) != 0);
}

/* util_rmtree on a nested tree removes it all; a path through a file is an
 * error, not "already gone"; a child whose path would not fit is reported
 * (PD_EINVAL) and its parent kept rather than half-removed silently. */
TEST(test_rmtree_edges)
{
    char dir[160], p[512];
    CHECK(unit_tmpdir(dir, sizeof dir, "predictd-util6") != NULL);
    snprintf(p, sizeof p, "%s/a", dir);
    CHECK_EQ_INT(mkdir(p, 0700), 0);
    snprintf(p, sizeof p, "%s/a/b", dir);
    CHECK_EQ_INT(mkdir(p, 0700), 0);
    snprintf(p, sizeof p, "%s/a/b/f", dir);
    CHECK_EQ_INT(util_write_file_atomic(p, "x", 1, 0600), 0);
    snprintf(p, sizeof p, "%s/a/g", dir);
    CHECK_EQ_INT(util_write_file_atomic(p, "y", 1, 0600), 0);
    /* through a regular file: ENOTDIR is an error */
    snprintf(p, sizeof p, "%s/a/g/child", dir);
    CHECK_EQ_INT(util_rmtree(p), PD_EIO);
    CHECK(access(p, F_OK) != 0);
    snprintf(p, sizeof p, "%s/a/g", dir);
    CHECK(access(p, F_OK) == 0); /* untouched */

    /* a name that makes the child's path longer than 4095 bytes: build it
     * with chdir, each level a 200-byte name */
    char cwd[1024];
    CHECK(getcwd(cwd, sizeof cwd) != NULL);
    char name[201];
    memset(name, 'n', 200);
    name[200] = '\0';
    snprintf(p, sizeof p, "%s/a/b", dir);
    CHECK_EQ_INT(chdir(p), 0);
    int levels = 0;
    for (; levels < 22; levels++) {
        if (mkdir(name, 0700) != 0 || chdir(name) != 0)
            break;
    }
    CHECK_EQ_INT(levels, 22); /* 22 x 201 > 4096 */
    CHECK_EQ_INT(chdir(cwd), 0);
    CHECK_EQ_INT(util_rmtree(dir), PD_EINVAL);
    CHECK(access(dir, F_OK) == 0); /* kept: its subtree could not be emptied */
    snprintf(p, sizeof p, "%s/a/g", dir);
    CHECK(access(p, F_OK) != 0); /* what could go, went */
    /* clean up from the deep end with relative paths */
    snprintf(p, sizeof p, "%s/a/b", dir);
    CHECK_EQ_INT(chdir(p), 0);
    for (int k = 0; k < 11; k++)
        CHECK_EQ_INT(chdir(name), 0);
    CHECK_EQ_INT(util_rmtree(name), 0);
    CHECK_EQ_INT(chdir(cwd), 0);
    CHECK_EQ_INT(util_rmtree(dir), 0);
    CHECK(access(dir, F_OK) != 0);
}

int main(void)
{
    RUN(test_time_parse);
    RUN(test_timeframes);
    RUN(test_symbols);
    RUN(test_sha256);
    RUN(test_json_writer);
    RUN(test_files);
    RUN(test_errors);
    RUN(test_time_parse_edges);
    RUN(test_error_table_bounds);
    RUN(test_hex_and_escapes);
    RUN(test_file_edges);
    RUN(test_write_in_the_current_directory);
    RUN(test_fnv1a);
    RUN(test_read_file_special_files);
    RUN(test_write_atomic_failures_keep_the_old_file);
    RUN(test_rmtree_edges);
    return unit_report();
}
