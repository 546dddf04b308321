/*
 * replay.c: runs a fuzz target's committed inputs without libFuzzer, as a
 * test of `make test` (build/tests/test_fuzz_NAME): every file of
 * tests/fuzz/corpus/NAME (the seeds) and tests/fuzz/regressions/NAME
 * (inputs that once crashed or hung a target) goes through
 * LLVMFuzzerTestOneInput once. A crash fails the test by crashing it; the
 * sanitizer build (make sanitize) catches what does not crash. Arguments,
 * when given, are files or directories replayed instead.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replayed, unreadable;

static void replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        printf("  cannot open %s\n", path);
        unreadable++;
        return;
    }
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 4096;
            uint8_t *b = realloc(buf, cap);
            if (!b)
                abort();
            buf = b;
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        if (n == 0)
            break;
        len += n;
    }
    fclose(f);
    /* an exact-size copy, so reads past the input show under ASan */
    uint8_t *exact = malloc(len ? len : 1);
    if (!exact)
        abort();
    memcpy(exact, buf, len);
    free(buf);
    LLVMFuzzerTestOneInput(exact, len);
    free(exact);
    replayed++;
}

static void replay(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return; /* no such corpus: nothing to replay */
    if (!S_ISDIR(st.st_mode)) {
        replay_file(path);
        return;
    }
    DIR *d = opendir(path);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", path, e->d_name);
        replay(p);
    }
    closedir(d);
}

int main(int argc, char **argv)
{
    if (argc > 1) {
        for (int i = 1; i < argc; i++)
            replay(argv[i]);
    } else {
        const char *root = getenv("PREDICTD_ROOT");
        if (!root || !*root)
            root = FUZZ_ROOT;
        char p[4096];
        snprintf(p, sizeof p, "%s/tests/fuzz/corpus/%s", root, FUZZ_NAME);
        replay(p);
        snprintf(p, sizeof p, "%s/tests/fuzz/regressions/%s", root, FUZZ_NAME);
        replay(p);
    }
    int ok = replayed > 0 && unreadable == 0;
    printf("%s %s: %d inputs replayed\n", ok ? "ok  " : "FAIL", FUZZ_NAME, replayed);
    printf("%d passed, %d failed, 0 skipped\n", ok, !ok);
    return ok ? 0 : 1;
}
