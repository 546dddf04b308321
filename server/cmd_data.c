/*
 * cmd_data.c: the data subcommands: migrate, seed, import and features.
 *
 * They parse their own arguments, call the feed and store modules and report on
 * stderr. Nothing here talks SQL: the store module does.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "features/features.h"
#include "feed/feed.h"
#include "store/store.h"
#include "server/commands.h"
#include "util/util.h"

#define MAX_CSV_BYTES (1024u << 20)

static const char *const demo_symbols[] = {"BTCUSDT", "ETHUSDT", "SOLUSDT",  "BNBUSDT",
                                           "XRPUSDT", "ADAUSDT", "DOGEUSDT", "AVAXUSDT"};
static const char *const demo_timeframes[] = {"15m", "1h", "4h", "1d"};

int cmd_wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
            return 1;
    return 0;
}

FILE *cmd_usage_out(const char *cmd, int argc, char **argv, int bad)
{
    if (cmd_wants_help(argc, argv))
        return stdout;
    if (bad > 0 && bad < argc)
        fprintf(stderr, "predictd %s: %s '%s'\n", cmd,
                argv[bad][0] == '-' && argv[bad][1] ? "unknown option" : "unexpected argument",
                argv[bad]);
    return stderr;
}

/* "--name value" or "--name=value" at argv[*i]; advances *i. NULL if not it. */
static const char *flag_value(int argc, char **argv, int *i, const char *name)
{
    size_t n = strlen(name);
    const char *a = argv[*i];
    if (strncmp(a, name, n) != 0)
        return NULL;
    if (a[n] == '=')
        return a + n + 1;
    if (a[n] == '\0' && *i + 1 < argc) {
        (*i)++;
        return argv[*i];
    }
    return NULL;
}

static int need_db(const server_config *cfg, const char *cmd)
{
    if (!cfg->database_url) {
        fprintf(stderr, "predictd %s: PREDICTD_DATABASE_URL (or --database-url) is required\n",
                cmd);
        return 1;
    }
    if (store_init(cfg->database_url, NULL, false) != 0) {
        fprintf(stderr, "predictd %s: cannot initialise the candle store\n", cmd);
        return 1;
    }
    return 0;
}

int cmd_migrate(server_config *cfg, int argc, char **argv)
{
    if (cmd_wants_help(argc, argv) || argc > 1) {
        fprintf(cmd_usage_out("migrate", argc, argv, 1),
                "usage: predictd migrate [--migrations-dir DIR] [--database-url URL]\n"
                "Applies the SQL files of DIR (default ./db) not yet applied, in name "
                "order. Idempotent.\n");
        return cmd_wants_help(argc, argv) ? 0 : 2;
    }
    if (need_db(cfg, "migrate"))
        return 1;
    int rc = store_migrate(cfg->migrations_dir);
    store_shutdown();
    if (rc) {
        /* name the directory: "not found" alone does not say what is missing */
        fprintf(stderr, "predictd migrate: %s (migrations directory %s)\n", util_strerror(rc),
                cfg->migrations_dir);
        return 1;
    }
    fprintf(stderr, "predictd migrate: schema up to date\n");
    return 0;
}

/* A whole decimal integer (no trailing text); false otherwise. */
static bool parse_long(const char *v, long *out)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end)
        return false;
    *out = x;
    return true;
}

/* Splits a comma list into a static-lifetime array of at most max items
 * pointing into s (which it modifies). */
static size_t split(char *s, const char **out, size_t max)
{
    size_t n = 0;
    for (char *save = NULL, *t = strtok_r(s, ",", &save); t && n < max;
         t = strtok_r(NULL, ",", &save))
        if (*t)
            out[n++] = t;
    return n;
}

int cmd_seed(server_config *cfg, int argc, char **argv)
{
    const char *symbols[64], *tfs[6];
    size_t nsym = 8, ntf = 4;
    memcpy(symbols, demo_symbols, sizeof demo_symbols);
    memcpy(tfs, demo_timeframes, sizeof demo_timeframes);
    long count = 6000;
    unsigned long long seed = 42;
    int if_empty = 0, demo = 0;
    long behind = 0;
    const char *demo_files = NULL;
    char *symlist = NULL, *tflist = NULL;
    for (int i = 1; i < argc; i++) {
        const char *v;
        if ((v = flag_value(argc, argv, &i, "--symbols")))
            symlist = strdup(v);
        else if ((v = flag_value(argc, argv, &i, "--timeframes")))
            tflist = strdup(v);
        else if ((v = flag_value(argc, argv, &i, "--count"))) {
            if (!parse_long(v, &count))
                count = -1; /* refused below with the range */
        } else if ((v = flag_value(argc, argv, &i, "--seed"))) {
            char *end;
            errno = 0;
            seed = strtoull(v, &end, 10);
            if (errno || end == v || *end || v[0] == '-') {
                fprintf(stderr, "predictd seed: --seed: '%s' is not an unsigned integer\n", v);
                free(symlist);
                free(tflist);
                return 2;
            }
        } else if (!strcmp(argv[i], "--if-empty"))
            if_empty = 1;
        else if (!strcmp(argv[i], "--demo"))
            demo = 1;
        else if ((v = flag_value(argc, argv, &i, "--demo-files"))) {
            demo = 1;
            demo_files = v;
        } else if ((v = flag_value(argc, argv, &i, "--behind"))) {
            if (!parse_long(v, &behind))
                behind = -1; /* refused below with the range */
        } else {
            fprintf(cmd_usage_out("seed", argc, argv, i),
                    "usage: predictd seed [--symbols A,B] [--timeframes 15m,1h] [--count N] "
                    "[--seed N] [--if-empty]\n"
                    "       predictd seed --demo [--demo-files A.csv.gz,B.csv] [--behind MIN] "
                    "[--if-empty]\n"
                    "Writes N deterministic synthetic candles per series (default: 8 demo "
                    "symbols x 15m,1h,4h,1d, 6000 each,\nending at the last closed candle). "
                    "--if-empty does nothing when the table has candles.\n"
                    "--demo writes real 1m candles instead (data/demo/*.csv.gz, or "
                    "PREDICTD_DEMO_DIR):\nthe first %d%% of each file, relabelled to end at "
                    "the last closed minute (less --behind\nminutes); 5m..1d are derived. "
                    "The demo feed (PREDICTD_FEED=demo) replays the rest.\n",
                    FEED_DEMO_SEED_PERCENT);
            free(symlist);
            free(tflist);
            return cmd_wants_help(argc, argv) ? 0 : 2;
        }
    }
    int exit_code = 2; /* the argument checks below are usage errors */
    if (symlist)
        nsym = split(symlist, symbols, 64);
    if (tflist)
        ntf = split(tflist, tfs, 6);
    if (count < 1 || count > 1000000) {
        fprintf(stderr, "predictd seed: --count must be 1..1000000\n");
        goto out;
    }
    for (size_t i = 0; i < nsym; i++)
        if (!util_symbol_valid(symbols[i])) {
            fprintf(stderr, "predictd seed: bad symbol '%s'\n", symbols[i]);
            goto out;
        }
    for (size_t i = 0; i < ntf; i++)
        if (!util_tf_seconds(tfs[i])) {
            fprintf(stderr, "predictd seed: bad timeframe '%s' (valid: %s)\n", tfs[i],
                    util_tf_list());
            goto out;
        }
    if (behind < 0 || behind > 100000) {
        fprintf(stderr, "predictd seed: --behind must be 0..100000 minutes\n");
        goto out;
    }
    exit_code = 1;
    if (need_db(cfg, "seed"))
        goto out;
    if (if_empty) {
        int64_t have = 0;
        int rc = store_count_candles(NULL, NULL, &have);
        if (rc) {
            fprintf(stderr, "predictd seed: %s\n", util_strerror(rc));
            goto out_db;
        }
        if (have > 0) {
            fprintf(stderr, "predictd seed: %lld candles already stored; nothing to do\n",
                    (long long)have);
            exit_code = 0;
            goto out_db;
        }
    }
    int64_t now = util_now();
    if (demo) {
        char why[512] = "";
        size_t k = 0;
        int rc = feed_demo_seed(demo_files, now, (int)behind, &k, why, sizeof why);
        if (rc) {
            fprintf(stderr, "predictd seed: %s\n", why[0] ? why : util_strerror(rc));
            goto out_db;
        }
        fprintf(stderr, "predictd seed: %zu demo symbols seeded with real 1m candles\n", k);
        exit_code = 0;
        goto out_db;
    }
    for (size_t s = 0; s < nsym; s++)
        for (size_t t = 0; t < ntf; t++) {
            int kind = STORE_SERIES_NONE;
            if (store_series_kind(symbols[s], tfs[t], &kind) == 0 && kind == STORE_SERIES_DERIVED) {
                fprintf(stderr, "predictd seed: %s %s: derived from %s 1m, not seeded\n",
                        symbols[s], tfs[t], symbols[s]);
                continue;
            }
            features_candle *c = NULL;
            int rc = feed_seed_series(symbols[s], tfs[t], now, (size_t)count, seed, &c);
            if (rc == 0)
                rc = store_upsert_candles(symbols[s], tfs[t], c, (size_t)count);
            free(c);
            if (rc) {
                fprintf(stderr, "predictd seed: %s %s: %s\n", symbols[s], tfs[t],
                        util_strerror(rc));
                goto out_db;
            }
            fprintf(stderr, "predictd seed: %s %s: %ld candles\n", symbols[s], tfs[t], count);
        }
    exit_code = 0;
out_db:
    store_shutdown();
out:
    free(symlist);
    free(tflist);
    return exit_code;
}

/* Reads FILE, or stdin when path is NULL or "-", under a byte limit. A
 * file is opened as a user names it: through a symlink, or a pipe such as
 * bash's <(zcat x.csv.gz) (util_read_file, which the model repository uses,
 * refuses both). On failure *why holds the system's reason when it has one
 * (ENOENT is PD_ENOTFOUND, said by the caller). */
static int read_input(const char *path, char **out, size_t *len, char *why, size_t whylen)
{
    int fd = STDIN_FILENO;
    why[0] = '\0';
    if (path && strcmp(path, "-") != 0) {
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0) {
            if (errno == ENOENT)
                return PD_ENOTFOUND;
            snprintf(why, whylen, "%s", strerror(errno));
            return PD_EIO;
        }
    }
    util_buf b;
    util_buf_init(&b);
    char chunk[65536];
    ssize_t r;
    int rc = 0;
    for (;;) {
        r = read(fd, chunk, sizeof chunk);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        util_buf_append(&b, chunk, (size_t)r);
        if (b.len > MAX_CSV_BYTES) {
            rc = PD_ETOOBIG;
            break;
        }
    }
    if (r < 0) {
        snprintf(why, whylen, "%s", strerror(errno)); /* EISDIR: "Is a directory" */
        rc = PD_EIO;
    }
    if (fd != STDIN_FILENO)
        close(fd);
    util_buf_puts(&b, "");
    if (rc == 0 && !util_buf_ok(&b))
        rc = PD_ENOMEM;
    if (rc) {
        util_buf_cleanup(&b);
        return rc;
    }
    *len = b.len;
    *out = util_buf_steal(&b);
    return 0;
}

struct trades_out {
    features_candle *c;
    size_t n, cap;
};

/* Collects the aggregator's candles; a correction replaces its minute. */
static int collect_candle(const features_candle *c, bool correction, void *arg)
{
    struct trades_out *o = arg;
    if (correction)
        for (size_t i = o->n; i-- > 0;)
            if (o->c[i].t == c->t) {
                o->c[i] = *c;
                return 0;
            }
    if (o->n == o->cap) {
        size_t cap = o->cap ? 2 * o->cap : 1024;
        features_candle *v = realloc(o->c, cap * sizeof *v);
        if (!v)
            return PD_ENOMEM;
        o->c = v;
        o->cap = cap;
    }
    o->c[o->n++] = *c;
    return 0;
}

/* A trades CSV: through the aggregator into 1m base candles. */
static int import_trades(server_config *cfg, const char *file, const char *symbol, const char *text,
                         size_t len)
{
    feed_trade *t = NULL;
    size_t n = 0;
    char why[256] = "";
    int rc = feed_trades_csv_parse(text, len, &t, &n, why, sizeof why);
    if (rc) {
        fprintf(stderr, "predictd import: %s: %s\n", file, why[0] ? why : util_strerror(rc));
        return 1;
    }
    feed_agg *agg = NULL;
    struct trades_out o = {0};
    if ((rc = feed_agg_new(&agg)) == 0) {
        for (size_t i = 0; i < n && rc == 0; i++)
            rc = feed_agg_push(agg, &t[i], collect_candle, &o);
        if (rc == 0)
            rc = feed_agg_finish(agg, collect_candle, &o);
    }
    feed_agg_stats st = {0};
    if (agg)
        feed_agg_stats_get(agg, &st);
    feed_agg_free(agg);
    free(t);
    int exit_code = 1;
    if (rc) {
        fprintf(stderr, "predictd import: %s: %s\n", file, util_strerror(rc));
        goto out;
    }
    if (need_db(cfg, "import"))
        goto out;
    rc = store_upsert_base_candles(symbol, o.c, o.n);
    store_shutdown();
    if (rc) {
        fprintf(stderr, "predictd import: %s (nothing was stored)\n", util_strerror(rc));
        goto out;
    }
    fprintf(stderr,
            "predictd import: %zu trades (%llu duplicates ignored, %llu corrections) -> %zu 1m "
            "candles of %s stored; 5m 15m 1h 4h 1d derived\n",
            n, (unsigned long long)st.duplicates, (unsigned long long)st.corrections, o.n, symbol);
    exit_code = 0;
out:
    free(o.c);
    return exit_code;
}

int cmd_import(server_config *cfg, int argc, char **argv)
{
    const char *file = NULL, *symbol = NULL, *tf = NULL;
    int bad = 0;
    for (int i = 1; i < argc; i++) {
        const char *v;
        if ((v = flag_value(argc, argv, &i, "--symbol")))
            symbol = v;
        else if ((v = flag_value(argc, argv, &i, "--timeframe")))
            tf = v;
        else if ((argv[i][0] != '-' || !strcmp(argv[i], "-")) && !file)
            file = argv[i]; /* "-": stdin, as read_input reads it */
        else {
            file = NULL;
            bad = i;
            break;
        }
    }
    if (cmd_wants_help(argc, argv) || !file || !symbol) {
        fprintf(cmd_usage_out("import", argc, argv, bad),
                "usage: predictd import FILE|- --symbol SYMBOL [--timeframe TF]\n"
                "Loads candles from a Binance kline CSV (12 columns, with or without header,\n"
                "ms or us times) or open_time,open,high,low,close,volume (RFC 3339 or epoch);\n"
                "--timeframe is required for candles. A trades CSV (header\n"
                "time,id,side,price,amount) is aggregated into 1m candles (duplicate ids\n"
                "ignored; a minute without trades is flat at the previous close).\n"
                "1m candles are the symbol's base: 5m 15m 1h 4h 1d are derived from them in\n"
                "the database. A higher timeframe imported directly is a native series; a\n"
                "derived series refuses direct imports.\n"
                "One transaction: a bad row aborts the import with its line number, nothing\n"
                "partial is stored. Re-importing the same rows is idempotent (upsert).\n");
        return cmd_wants_help(argc, argv) ? 0 : 2;
    }
    if (!util_symbol_valid(symbol)) {
        fprintf(stderr, "predictd import: symbol '%s' must match ^[A-Z0-9]{2,20}$\n", symbol);
        return 2;
    }
    if (tf && !util_tf_seconds(tf)) {
        fprintf(stderr, "predictd import: timeframe '%s' must be one of %s\n", tf, util_tf_list());
        return 2;
    }
    char *text = NULL;
    size_t len = 0;
    char rwhy[256];
    int rc = read_input(file, &text, &len, rwhy, sizeof rwhy);
    if (rc) {
        fprintf(stderr, "predictd import: %s: %s\n", file, rwhy[0] ? rwhy : util_strerror(rc));
        return 1;
    }
    if (feed_trades_csv_is(text, len)) {
        if (tf && strcmp(tf, "1m") != 0) {
            fprintf(stderr, "predictd import: %s is a trades file: it makes 1m candles, not %s\n",
                    file, tf);
            free(text);
            return 2;
        }
        int ec = import_trades(cfg, file, symbol, text, len);
        free(text);
        return ec;
    }
    if (!tf) {
        fprintf(stderr, "predictd import: %s holds candles: --timeframe is required\n", file);
        free(text);
        return 2;
    }
    features_candle *c = NULL;
    size_t n = 0;
    char why[256] = "";
    rc = feed_csv_parse_for(text, len, tf, &c, &n, why, sizeof why);
    free(text);
    if (rc) {
        fprintf(stderr, "predictd import: %s: %s\n", file, why[0] ? why : util_strerror(rc));
        return 1;
    }
    if (need_db(cfg, "import")) {
        free(c);
        return 1;
    }
    bool base = !strcmp(tf, "1m");
    int kind = STORE_SERIES_NONE;
    if (!base && (rc = store_series_kind(symbol, tf, &kind)) == 0 && kind == STORE_SERIES_DERIVED) {
        fprintf(stderr,
                "predictd import: series %s:%s is derived from %s:1m and refuses direct writes; "
                "import its 1m candles instead (nothing was stored)\n",
                symbol, tf, symbol);
        store_shutdown();
        free(c);
        return 1;
    }
    rc = base ? store_upsert_base_candles(symbol, c, n) : store_upsert_candles(symbol, tf, c, n);
    store_shutdown();
    free(c);
    if (rc) {
        fprintf(stderr, "predictd import: %s (nothing was stored)\n", util_strerror(rc));
        return 1;
    }
    if (base)
        fprintf(stderr, "predictd import: %zu candles of %s 1m stored; 5m 15m 1h 4h 1d derived\n",
                n, symbol);
    else
        fprintf(stderr, "predictd import: %zu candles of %s %s stored (native series)\n", n, symbol,
                tf);
    return 0;
}

int cmd_features(server_config *cfg, int argc, char **argv)
{
    (void)cfg;
    const char *file = NULL, *spec = "default";
    long window = 0;
    for (int i = 1; i < argc; i++) {
        const char *v;
        if ((v = flag_value(argc, argv, &i, "--spec")))
            spec = v;
        else if ((v = flag_value(argc, argv, &i, "--window"))) {
            if (!parse_long(v, &window))
                window = -1; /* refused below with the range */
        } else if ((argv[i][0] != '-' || !strcmp(argv[i], "-")) && !file)
            file = argv[i];
        else {
            fprintf(cmd_usage_out("features", argc, argv, i),
                    "usage: predictd features [FILE|-] [--spec default|NAME,NAME,...] "
                    "[--window N]\n"
                    "Prints the feature table of the candles in FILE (or stdin) as CSV: one "
                    "row per candle\nthat has a full window of N candles (default: the "
                    "smallest window the specs need),\neach computed from exactly that "
                    "window, as training and serving do.\n");
            return cmd_wants_help(argc, argv) ? 0 : 2;
        }
    }
    const char *specs[64];
    size_t nspec = 0;
    char *speccopy = NULL;
    if (!strcmp(spec, "default")) {
        const char *const *d = features_default_specs(&nspec);
        for (size_t i = 0; i < nspec && i < 64; i++)
            specs[i] = d[i];
    } else {
        speccopy = strdup(spec);
        if (!speccopy)
            return 1;
        nspec = split(speccopy, specs, 64);
    }
    features_set *fs = NULL;
    char why[256] = "";
    int rc = features_set_new(specs, nspec, &fs, why, sizeof why);
    free(speccopy);
    if (rc) {
        fprintf(stderr, "predictd features: %s\n", why);
        return 2;
    }
    size_t min = features_set_min_window(fs);
    if (window == 0)
        window = (long)min;
    if (window < (long)min || window > 100000) {
        fprintf(stderr, "predictd features: --window must be %zu..100000 for these specs\n", min);
        features_set_free(fs);
        return 2;
    }
    char *text = NULL;
    size_t len = 0;
    rc = read_input(file, &text, &len, why, sizeof why);
    if (rc) {
        fprintf(stderr, "predictd features: %s: %s\n", file ? file : "stdin",
                why[0] ? why : util_strerror(rc));
        features_set_free(fs);
        return 1;
    }
    features_candle *c = NULL;
    size_t n = 0;
    rc = feed_csv_parse(text, len, &c, &n, why, sizeof why);
    free(text);
    if (rc) {
        fprintf(stderr, "predictd features: %s\n", why);
        features_set_free(fs);
        return 1;
    }
    size_t nf = features_set_count(fs);
    double *row = calloc(nf, sizeof *row);
    printf("open_time");
    for (size_t k = 0; k < nf; k++)
        printf(",%s", features_set_name(fs, k));
    printf("\n");
    size_t skipped = 0;
    for (size_t i = (size_t)window - 1; row && i < n; i++) {
        rc = features_compute(fs, c + i + 1 - (size_t)window, (size_t)window, row);
        char ts[32];
        if (rc) {
            skipped++;
            fprintf(stderr, "predictd features: %s: %s\n", util_rfc3339(c[i].t, ts),
                    util_strerror(rc));
            continue;
        }
        printf("%s", util_rfc3339(c[i].t, ts));
        for (size_t k = 0; k < nf; k++)
            printf(",%.17g", row[k]);
        printf("\n");
    }
    free(row);
    free(c);
    features_set_free(fs);
    if (skipped)
        fprintf(stderr, "predictd features: %zu rows had no defined features\n", skipped);
    return 0;
}
