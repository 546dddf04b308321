/*
 * test_config.c: the configuration loader (server/config.c): defaults,
 * environment versus flags, flag removal from argv, bounds and malformed
 * values, listen addresses, and the admin/read keys: key files that group
 * or others may access are refused, and no error message carries a key.
 */
#define _GNU_SOURCE
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grp.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "server/config.h"
#include "unit.h"
#include "fixtures.h"
#include "util/util.h"

extern char **environ;

static char tmpdir[160];

/* Removes every PREDICTD_* variable so each test starts from the defaults. */
static void clear_env(void)
{
    char names[64][64];
    size_t n = 0;
    for (char **e = environ; *e && n < 64; e++)
        if (strncmp(*e, "PREDICTD_", 9) == 0) {
            size_t len = strcspn(*e, "=");
            if (len < sizeof names[0]) {
                memcpy(names[n], *e, len);
                names[n++][len] = '\0';
            }
        }
    for (size_t i = 0; i < n; i++)
        unsetenv(names[i]);
}

/* Loads from a NULL-terminated argument list (copied: the loader edits it). */
static int load(server_config *c, char *why, int *argc_out, char **argv_out, const char *arg0, ...)
{
    static char *argv[32];
    int argc = 0;
    argv[argc++] = (char *)arg0;
    va_list ap;
    va_start(ap, arg0);
    for (const char *a; (a = va_arg(ap, const char *)) && argc < 31;)
        argv[argc++] = (char *)a;
    va_end(ap);
    argv[argc] = NULL;
    why[0] = '\0';
    int rc = server_config_load(c, &argc, argv, why, 512);
    if (argc_out)
        *argc_out = argc;
    if (argv_out)
        for (int i = 0; i <= argc && i < 32; i++)
            argv_out[i] = argv[i];
    return rc;
}

static char *write_file(const char *name, const char *content, mode_t mode)
{
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    unlink(path);
    FILE *f = fopen(path, "w");
    if (!f)
        return NULL;
    fputs(content, f);
    fclose(f);
    chmod(path, mode);
    return path;
}

TEST(defaults)
{
    clear_env();
    server_config c;
    char why[512];
    CHECK_EQ_INT(load(&c, why, NULL, NULL, "serve", NULL), 0);
    CHECK_EQ_STR(c.listen, "127.0.0.1:8080");
    CHECK_EQ_STR(c.listen_host, "127.0.0.1");
    CHECK_EQ_INT(c.listen_port, 8080);
    CHECK(c.database_url == NULL);
    CHECK(c.redis_url == NULL);
    CHECK_EQ_STR(c.models_dir, "./models");
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    CHECK_EQ_INT(c.threads, cores > 0 ? cores * 2 : 4);
    CHECK(c.api_key == NULL);
    CHECK_EQ_STR(c.api_key_file, "./.predictd_key");
    CHECK(c.read_key == NULL);
    CHECK_EQ_STR(c.log_format, isatty(STDERR_FILENO) ? "text" : "json");
    CHECK_EQ_STR(c.log_level, "info");
    CHECK(c.cors_origins == NULL);
    CHECK_EQ_INT(c.reload_interval, 15);
    CHECK_EQ_INT(c.rate_limit, 0);
    CHECK_EQ_INT(c.rate_burst, 0);
    CHECK(c.cache);
    CHECK_EQ_INT(c.drain_timeout, 10);
    CHECK_EQ_INT(c.max_connections, 1024);
    CHECK_EQ_INT(c.per_ip_connections, 64); /* well below max_connections */
    CHECK_EQ_INT(c.idle_timeout, 30);
    CHECK_EQ_INT(c.stream_max, 64);
    CHECK(!c.access_log);
    server_config_cleanup(&c);
}

TEST(environment_then_flags)
{
    clear_env();
    setenv("PREDICTD_LISTEN", "0.0.0.0:9000", 1);
    setenv("PREDICTD_THREADS", "3", 1);
    setenv("PREDICTD_CACHE", "off", 1);
    setenv("PREDICTD_CORS_ORIGINS", "https://a.example,https://b.example", 1);
    setenv("PREDICTD_MODELS_DIR", "", 1); /* empty: as if unset */
    setenv("PREDICTD_ACCESS_LOG", "yes", 1);
    server_config c;
    char why[512];
    CHECK_EQ_INT(load(&c, why, NULL, NULL, "serve", NULL), 0);
    CHECK_EQ_STR(c.listen_host, "0.0.0.0");
    CHECK_EQ_INT(c.listen_port, 9000);
    CHECK_EQ_INT(c.threads, 3);
    CHECK(!c.cache);
    CHECK(c.access_log);
    CHECK_EQ_STR(c.cors_origins, "https://a.example,https://b.example");
    CHECK_EQ_STR(c.models_dir, "./models");
    server_config_cleanup(&c);

    /* a flag wins over the variable, in both spellings */
    CHECK_EQ_INT(load(&c, why, NULL, NULL, "serve", "--threads", "5", "--cache=on",
                      "--listen=localhost:81", NULL),
                 0);
    CHECK_EQ_INT(c.threads, 5);
    CHECK(c.cache);
    CHECK_EQ_STR(c.listen_host, "localhost");
    CHECK_EQ_INT(c.listen_port, 81);
    server_config_cleanup(&c);

    /* port 0: the kernel chooses (the test harness reads the port from the log) */
    CHECK_EQ_INT(load(&c, why, NULL, NULL, "serve", "--listen=127.0.0.1:0", NULL), 0);
    CHECK_EQ_INT(c.listen_port, 0);
    server_config_cleanup(&c);
    /* IPv6, bracketed or bare; the per-address connection cap */
    CHECK_EQ_INT(load(&c, why, NULL, NULL, "serve", "--listen", "[::]:8081",
                      "--per-ip-connections", "8", NULL),
                 0);
    CHECK_EQ_STR(c.listen_host, "::");
    CHECK_EQ_INT(c.listen_port, 8081);
    CHECK_EQ_INT(c.per_ip_connections, 8);
    server_config_cleanup(&c);
    CHECK_EQ_INT(load(&c, why, NULL, NULL, "serve", "--listen", "::1:82", NULL), 0);
    CHECK_EQ_STR(c.listen_host, "::1");
    CHECK_EQ_INT(c.listen_port, 82);
    server_config_cleanup(&c);

    /* the last of repeated flags wins */
    CHECK_EQ_INT(load(&c, why, NULL, NULL, "serve", "--rate-limit", "5", "--rate-limit", "7",
                      "--rate-burst=20", NULL),
                 0);
    CHECK_EQ_INT(c.rate_limit, 7);
    CHECK_EQ_INT(c.rate_burst, 20);
    server_config_cleanup(&c);
    clear_env();
}

TEST(flags_leave_the_commands_own_arguments_in_order)
{
    clear_env();
    server_config c;
    char why[512];
    int argc = 0;
    char *argv[32];
    CHECK_EQ_INT(load(&c, why, &argc, argv, "predict", "--models-dir", "/m", "BTCUSDT",
                      "--cache=off", "15m", "--unknown-flag", NULL),
                 0);
    CHECK_EQ_INT(argc, 4);
    CHECK_EQ_STR(argv[0], "predict");
    CHECK_EQ_STR(argv[1], "BTCUSDT");
    CHECK_EQ_STR(argv[2], "15m");
    CHECK_EQ_STR(argv[3], "--unknown-flag"); /* for the command to refuse */
    CHECK(argv[4] == NULL);
    CHECK_EQ_STR(c.models_dir, "/m");
    CHECK(!c.cache);
    server_config_cleanup(&c);
    /* a prefix of a flag is not that flag */
    CHECK_EQ_INT(load(&c, why, &argc, argv, "serve", "--thread", "4", NULL), 0);
    CHECK_EQ_INT(argc, 3);
    server_config_cleanup(&c);
}

/* Each case: the loader fails with PD_EINVAL and names the option. */
TEST(bounds_and_malformed_values)
{
    clear_env();
    static const struct {
        const char *a, *b, *needle;
    } cases[] = {
        {"--threads", "257", "0..256"},
        {"--threads", "-1", "--threads"},
        {"--threads", "4x", "--threads"},
        {"--threads", "", "--threads"},
        {"--threads", "99999999999999999999", "--threads"},
        {"--idle-timeout", "0", "1..3600"},
        {"--rate-limit", "-5", "--rate-limit"},
        {"--drain-timeout", "3601", "--drain-timeout"},
        {"--max-connections", "0", "--max-connections"},
        {"--cache", "maybe", "on or off"},
        {"--access-log", "2", "on or off"},
        {"--log-format", "xml", "text or json"},
        {"--log-level", "trace", "debug, info, warn or error"},
        {"--listen", "8080", "host:port"},
        {"--listen", ":8080", "host:port"},
        {"--listen", "127.0.0.1:", "host:port"},
        {"--listen", "127.0.0.1:-1", "host:port"},
        {"--listen", "127.0.0.1:65536", "host:port"},
        {"--listen", "127.0.0.1:80x", "host:port"},
        {"--listen", "example.com:80", "IPv4"},
        {"--listen", "[::1:80", "IPv6"},
        {"--listen", "[]:80", "host:port"},
        {"--listen", "[fe80::zz]:80", "IPv6"},
        {"--per-ip-connections", "-1", "--per-ip-connections"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        server_config c;
        char why[512];
        int rc = load(&c, why, NULL, NULL, "serve", cases[i].a, cases[i].b, NULL);
        if (rc != PD_EINVAL || !strstr(why, cases[i].needle))
            UNIT_FAIL_("%s %s: rc %d, why '%s'", cases[i].a, cases[i].b, rc, why);
        server_config_cleanup(&c);
    }
    /* the same through the environment */
    setenv("PREDICTD_RELOAD_INTERVAL", "86401", 1);
    server_config c;
    char why[512];
    CHECK_EQ_INT(load(&c, why, NULL, NULL, "serve", NULL), PD_EINVAL);
    CHECK(strstr(why, "PREDICTD_RELOAD_INTERVAL") != NULL);
    server_config_cleanup(&c);
    clear_env();
    /* a flag without its value */
    CHECK_EQ_INT(load(&c, why, NULL, NULL, "serve", "--threads", NULL), PD_EINVAL);
    CHECK(strstr(why, "needs a value") != NULL);
    server_config_cleanup(&c);
    /* limits themselves are accepted */
    CHECK_EQ_INT(load(&c, why, NULL, NULL, "serve", "--threads", "256", "--listen",
                      "127.0.0.1:65535", "--drain-timeout", "0", NULL),
                 0);
    CHECK_EQ_INT(c.threads, 256);
    CHECK_EQ_INT(c.drain_timeout, 0);
    server_config_cleanup(&c);
}

static const char *KEY = "0123456789abcdef0123456789abcdef";

/* Loads the defaults with the key file at path, then the keys. */
static int load_keys(server_config *c, char *why, const char *path)
{
    clear_env();
    if (path)
        setenv("PREDICTD_API_KEY_FILE", path, 1);
    int rc = load(c, why, NULL, NULL, "serve", NULL);
    if (rc == 0)
        rc = server_config_load_keys(c, why, 512);
    return rc;
}

TEST(key_file_private_is_read)
{
    server_config c;
    char why[512];
    char content[80];
    snprintf(content, sizeof content, "%s\n", KEY);
    const char *path = write_file("key600", content, 0600);
    CHECK_EQ_INT(load_keys(&c, why, path), 0);
    CHECK_EQ_STR(c.api_key, KEY);
    server_config_cleanup(&c);
    path = write_file("key400", KEY, 0400); /* no newline, read-only */
    CHECK_EQ_INT(load_keys(&c, why, path), 0);
    CHECK_EQ_STR(c.api_key, KEY);
    server_config_cleanup(&c);
    /* readable by the group, writable by nobody but the owner: accepted (a
     * Kubernetes Secret volume with fsGroup is root-owned 0440) */
    static const mode_t group_modes[] = {0640, 0440, 0610, 0650};
    for (size_t i = 0; i < sizeof group_modes / sizeof group_modes[0]; i++) {
        const char *p = write_file("keygroup", KEY, group_modes[i]);
        int rc = load_keys(&c, why, p);
        if (rc != 0 || !c.api_key || strcmp(c.api_key, KEY) != 0)
            UNIT_FAIL_("mode %o: rc %d, why '%s'", (unsigned)group_modes[i], rc, why);
        server_config_cleanup(&c);
    }
    /* a symlink to a private file: followed (Kubernetes secrets) */
    char link[256];
    snprintf(link, sizeof link, "%s/keylink", tmpdir);
    unlink(link);
    CHECK(symlink(path, link) == 0);
    CHECK_EQ_INT(load_keys(&c, why, link), 0);
    CHECK_EQ_STR(c.api_key, KEY);
    server_config_cleanup(&c);
    /* no file at all: no key, admin routes disabled, not an error */
    char missing[256];
    snprintf(missing, sizeof missing, "%s/nope", tmpdir);
    CHECK_EQ_INT(load_keys(&c, why, missing), 0);
    CHECK(c.api_key == NULL);
    server_config_cleanup(&c);
}

TEST(key_file_readable_by_others_is_refused)
{
    /* world-readable, or writable by group or others: refused */
    static const mode_t modes[] = {0644,        0604, 0660, 0602, 0620, 0601,
                                   0700 | 0044, 0444, 0664, 0606, 0460, 0642};
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        server_config c;
        char why[512];
        const char *path = write_file("keyopen", KEY, modes[i]);
        int rc = load_keys(&c, why, path);
        if (rc != PD_EINVAL || !strstr(why, "chmod 600") || !strstr(why, path))
            UNIT_FAIL_("mode %o: rc %d, why '%s'", (unsigned)modes[i], rc, why);
        CHECK(strstr(why, KEY) == NULL);
        CHECK(c.api_key == NULL);
        server_config_cleanup(&c);
    }
    /* through a symlink: the target's mode is what counts */
    server_config c;
    char why[512];
    const char *path = write_file("keyopen2", KEY, 0644);
    char link[256];
    snprintf(link, sizeof link, "%s/keylink2", tmpdir);
    unlink(link);
    CHECK(symlink(path, link) == 0);
    CHECK_EQ_INT(load_keys(&c, why, link), PD_EINVAL);
    server_config_cleanup(&c);
    /* a directory is not a key file */
    CHECK_EQ_INT(load_keys(&c, why, tmpdir), PD_EINVAL);
    CHECK(strstr(why, "not a regular file") != NULL);
    server_config_cleanup(&c);
}

TEST(malformed_keys_are_refused_without_echo)
{
    static const char *bad[] = {"short\n", "has a space inside it ok\n", "tab\there-0123456789\n",
                                "\n", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        server_config c;
        char why[512];
        const char *path = write_file("keybad", bad[i], 0600);
        int rc = load_keys(&c, why, path);
        if (rc != PD_EINVAL || !strstr(why, "16 to 4096"))
            UNIT_FAIL_("key #%zu: rc %d, why '%s'", i, rc, why);
        server_config_cleanup(&c);
    }
    /* longer than 4096 */
    char *big = malloc(5000);
    memset(big, 'k', 4999);
    big[4999] = '\0';
    server_config c;
    char why[512];
    const char *path = write_file("keybig", big, 0600);
    CHECK_EQ_INT(load_keys(&c, why, path), PD_EINVAL);
    CHECK(strstr(why, big) == NULL);
    server_config_cleanup(&c);
    free(big);
}

TEST(environment_key_wins_and_is_checked)
{
    server_config c;
    char why[512];
    /* an insecure file is not even read when the variable is set */
    const char *path = write_file("keyignored", "ignored-ignored-ignored", 0644);
    clear_env();
    setenv("PREDICTD_API_KEY_FILE", path, 1);
    setenv("PREDICTD_API_KEY", KEY, 1);
    CHECK_EQ_INT(load(&c, why, NULL, NULL, "serve", NULL), 0);
    CHECK_EQ_INT(server_config_load_keys(&c, why, sizeof why), 0);
    CHECK_EQ_STR(c.api_key, KEY);
    server_config_cleanup(&c);
    /* keys are not read by server_config_load: other commands (keygen) run
     * whatever the key file looks like */
    clear_env();
    setenv("PREDICTD_API_KEY_FILE", path, 1);
    CHECK_EQ_INT(load(&c, why, NULL, NULL, "keygen", NULL), 0);
    CHECK(c.api_key == NULL);
    server_config_cleanup(&c);
    /* short variable keys */
    clear_env();
    setenv("PREDICTD_API_KEY", "tooshort", 1);
    CHECK_EQ_INT(load(&c, why, NULL, NULL, "serve", NULL), 0);
    CHECK_EQ_INT(server_config_load_keys(&c, why, sizeof why), PD_EINVAL);
    CHECK(strstr(why, "PREDICTD_API_KEY") != NULL && strstr(why, "tooshort") == NULL);
    server_config_cleanup(&c);
    clear_env();
    setenv("PREDICTD_READ_KEY", "tooshort", 1);
    setenv("PREDICTD_API_KEY_FILE", "/nonexistent/key", 1);
    CHECK_EQ_INT(load(&c, why, NULL, NULL, "serve", NULL), 0);
    CHECK_EQ_INT(server_config_load_keys(&c, why, sizeof why), PD_EINVAL);
    CHECK(strstr(why, "PREDICTD_READ_KEY") != NULL && strstr(why, "tooshort") == NULL);
    server_config_cleanup(&c);
    /* a good read key, from the flag */
    clear_env();
    setenv("PREDICTD_API_KEY_FILE", "/nonexistent/key", 1);
    CHECK_EQ_INT(load(&c, why, NULL, NULL, "serve", "--read-key", "read-key-read-key-1", NULL), 0);
    CHECK_EQ_INT(server_config_load_keys(&c, why, sizeof why), 0);
    CHECK_EQ_STR(c.read_key, "read-key-read-key-1");
    CHECK(c.api_key == NULL);
    server_config_cleanup(&c);
    clear_env();
}

/* In a child that runs as uid 65534 (nobody) with the given supplementary
 * group (or none): the result of loading a root-owned 0440 key file whose
 * group is 10001, as Kubernetes lays out a Secret volume with fsGroup. Writes
 * why into the pipe. Only as root (setuid); returns -1000 otherwise. */
static int load_as_nobody(const char *path, bool in_group, char *why, size_t whylen)
{
    if (geteuid() != 0)
        return -1000;
    int fds[2];
    if (pipe(fds) != 0)
        return -1001;
    pid_t pid = fork();
    if (pid < 0)
        return -1002;
    if (pid == 0) {
        close(fds[0]);
        gid_t g = 10001;
        if (setgroups(in_group ? 1 : 0, &g) != 0 || setgid(65534) != 0 || setuid(65534) != 0)
            _exit(99);
        server_config c;
        char w[512] = "";
        int rc = load_keys(&c, w, path);
        if (rc == 0 && (!c.api_key || strcmp(c.api_key, KEY) != 0))
            rc = -1003;
        server_config_cleanup(&c);
        if (write(fds[1], w, strlen(w)) < 0)
            _exit(98);
        _exit(rc == 0 ? 0 : rc == PD_EINVAL ? 1 : 2);
    }
    close(fds[1]);
    ssize_t n = read(fds[0], why, whylen - 1);
    why[n > 0 ? n : 0] = '\0';
    close(fds[0]);
    int st;
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st))
        return -1004;
    return WEXITSTATUS(st) == 0 ? 0 : WEXITSTATUS(st) == 1 ? PD_EINVAL : -WEXITSTATUS(st);
}

TEST(key_file_is_read_through_the_group_and_unreadable_is_clear)
{
    if (geteuid() != 0) {
        printf("  (skipped: needs root to change identity)\n");
        return;
    }
    const char *path = write_file("keyfsgroup", KEY, 0440);
    CHECK(chown(path, 0, 10001) == 0);
    CHECK(chmod(tmpdir, 0755) == 0);
    char why[512];
    /* in the file's group: read */
    CHECK_EQ_INT(load_as_nobody(path, true, why, sizeof why), 0);
    /* not in it: refused, and the message says why and what to do */
    CHECK_EQ_INT(load_as_nobody(path, false, why, sizeof why), PD_EINVAL);
    CHECK(strstr(why, "not readable by this process") != NULL);
    CHECK(strstr(why, "uid 65534") != NULL);
    CHECK(strstr(why, path) != NULL);
    CHECK(strstr(why, KEY) == NULL);
}

int main(void)
{
    if (!unit_tmpdir(tmpdir, sizeof tmpdir, "predictd-test-config")) {
        perror("mkdtemp");
        return 1;
    }
    RUN(defaults);
    RUN(environment_then_flags);
    RUN(flags_leave_the_commands_own_arguments_in_order);
    RUN(bounds_and_malformed_values);
    RUN(key_file_private_is_read);
    RUN(key_file_readable_by_others_is_refused);
    RUN(key_file_is_read_through_the_group_and_unreadable_is_clear);
    RUN(malformed_keys_are_refused_without_echo);
    RUN(environment_key_wins_and_is_checked);
    util_rmtree(tmpdir);
    return unit_report();
}
