/*
 * cmd_train: `predictd train`. Parses flags into training_params (through
 * training_params_set, the setter the admin API uses too), decides which
 * models to train (one symbol, several pooled into _default, several one by
 * one, or --all), runs each with a progress line and prints its metrics
 * table.
 *
 * Not here: any training logic (training/), SQL (features/). The process is
 * single-threaded apart from libpq; SIGINT/SIGTERM set the cancel flag the
 * run polls, so an interrupted run leaves nothing half-published.
 */
#include "server/cmd_train.h"

#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "features/features.h"
#include "store/store.h"
#include "training/training.h"
#include "util/util.h"

static atomic_bool interrupted;

static void on_signal(int sig)
{
    (void)sig;
    atomic_store(&interrupted, true);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: predictd train --timeframe TF (--symbol S[,S2,...] | --all) [options]\n"
               "\n"
               "Trains a model from the candles in PostgreSQL and publishes it as the next\n"
               "version of models/SYMBOL/TF/ (atomically). Labels are triple barriers built\n"
               "with the model's own signal policy; features are computed by the same code\n"
               "serving uses; the split is time-ordered (train | validation | test, with\n"
               "purge gaps of one horizon) and the test slice is the most recent data.\n"
               "\n"
               "data\n"
               "  --symbol S[,S2,...]    symbols; several are pooled into _default\n"
               "  --per-symbol           with several symbols: one model each instead\n"
               "  --all                  every symbol with candles for TF, one model each\n"
               "  --target NAME          series to publish as (a symbol or _default)\n"
               "  --timeframe TF         1m 5m 15m 1h 4h 1d (required)\n"
               "  --from T, --to T       candle open times, RFC 3339 or YYYY-MM-DD\n"
               "model\n"
               "  --kind softmax|mlp     softmax regression (default) or an MLP\n"
               "  --hidden 64,32         MLP hidden layer sizes (default 64,32)\n"
               "  --epochs N             most epochs (softmax 200, mlp 60); early stopping\n"
               "  --batch N              mini-batch size (256)\n"
               "  --learning-rate X      Adam step (softmax 0.01, mlp 0.002)\n"
               "  --l2 X                 weight decay (1e-4)\n"
               "  --patience N           epochs without validation gain before stopping (10)\n"
               "  --features LIST|default  feature specs, e.g. rsi:14,macd,natr:14\n"
               "  --window N             candles per feature window (200)\n"
               "  --val-frac X, --test-frac X  slice shares (0.15, 0.20)\n"
               "  --seed N               PRNG seed (42); same data and seed, same bytes\n"
               "signal policy (the labels' barriers, served with the model)\n"
               "  --sl-atr X             stop distance in ATRs (1.5)\n"
               "  --tp-r A,B,C           take-profits in multiples of risk (1,2,3)\n"
               "  --horizon N            candles a trade may take (16)\n"
               "  --min-confidence X     below it the answer is NO_TRADE (0.45)\n"
               "  --atr-period N         ATR period (14)\n"
               "  --max-age-s N          model expiry in seconds (2592000; 0 = never)\n"
               "  --cost-bps X           round-trip cost, fees + half spread (10 bps)\n"
               "output\n"
               "  --promote-if-better    publish only if the new model's log-loss on the\n"
               "                         most recent test window is below the serving one's\n"
               "  --dry-run              train and report, publish nothing\n"
               "  --force                publish even a model that beats neither baseline,\n"
               "                         or a degenerate fit\n"
               "                         (its answers are then NO_TRADE, below_baseline)\n"
               "  --now T                act as if it were T: candles closed by then, and\n"
               "                         trained_at (with --seed: byte-identical reruns)\n"
               "  --models-dir DIR       repository (PREDICTD_MODELS_DIR, ./models)\n"
               "  --database-url URL     PostgreSQL (PREDICTD_DATABASE_URL)\n"
               "  --verbose              log progress details\n"
               "  -h, --help             this text\n"
               "exit status: 0 trained (published, rejected or dry run), 1 failed (a\n"
               "degenerate fit among the reasons), 2 bad usage, 3 below_baseline (trained,\n"
               "beats neither baseline, not published), 130 interrupted\n");
}

/* Flags passed to training_params_set under their own name. */
static const char *const param_flags[] = {
    "target",  "timeframe",      "from",          "to",        "kind",     "hidden",
    "epochs",  "batch",          "learning-rate", "l2",        "patience", "features",
    "window",  "val-frac",       "test-frac",     "seed",      "sl-atr",   "tp-r",
    "horizon", "min-confidence", "atr-period",    "max-age-s", "now",      "cost-bps",
    NULL,
};

/* The setter's message without its "name: " prefix (the flag is printed). */
static const char *reason(const char *why)
{
    const char *r = strstr(why, ": ");
    return r ? r + 2 : why;
}

typedef struct progress_state {
    const char *series;
    bool tty;
    double start;
    double last_print;
    int last_decile;
} progress_state;

static void on_progress(void *ud, double f, const char *stage)
{
    progress_state *s = ud;
    double now = util_now_precise();
    double el = now - s->start;
    char eta[32] = "--:--";
    if (f > 0.02 && f < 1) {
        double left = el * (1 - f) / f;
        snprintf(eta, sizeof eta, "%d:%02d", (int)(left / 60), (int)fmod(left, 60));
    }
    if (s->tty) {
        if (now - s->last_print < 0.1 && f < 1)
            return;
        s->last_print = now;
        fprintf(stderr, "\r\033[K%s  %-9s %5.1f%%  elapsed %ds  ETA %s", s->series, stage, 100 * f,
                (int)el, eta);
        fflush(stderr);
    } else {
        int dec = (int)(f * 10);
        if (dec <= s->last_decile)
            return;
        s->last_decile = dec;
        fprintf(stderr, "%s: %3d%% (%s), elapsed %ds, ETA %s\n", s->series, dec * 10, stage,
                (int)el, eta);
    }
}

static int run_one(const training_params *p, const char *models_dir)
{
    char series[64];
    snprintf(series, sizeof series, "%s/%s", training_params_target(p), p->timeframe);
    progress_state ps = {series, isatty(2) != 0, util_now_precise(), 0, -1};
    training_ctx ctx = {
        .models_dir = models_dir,
        .progress = on_progress,
        .progress_ud = &ps,
        .cancel = &interrupted,
    };
    training_result *res = calloc(1, sizeof *res);
    if (!res) {
        fprintf(stderr, "predictd train: out of memory\n");
        return 1;
    }
    int rc = training_run(p, &ctx, res);
    if (ps.tty)
        fprintf(stderr, "\r\033[K");
    int code = 0;
    if (rc == 0) {
        printf("== %s (%.1f s)\n", series, util_now_precise() - ps.start);
        training_result_print(res, stdout);
        printf("\n");
        fflush(stdout);
        if (res->outcome == TRAINING_BELOW_BASELINE) {
            fprintf(stderr, "predictd train: %s: %s\n", series, res->message);
            code = 3;
        }
    } else if (rc == PD_ECANCELED) {
        fprintf(stderr, "predictd train: %s: interrupted; nothing published\n", series);
        code = 130;
    } else {
        fprintf(stderr, "predictd train: %s: %s\n", series,
                res->message[0] ? res->message : util_strerror(rc));
        code = 1;
    }
    free(res);
    return code;
}

int cmd_train(int argc, char **argv)
{
    training_params p;
    training_params_default(&p);
    const char *symbols = NULL, *models_dir = NULL, *db_url = NULL;
    bool all = false, per_symbol = false, verbose = false;
    char why[256];

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (strncmp(a, "--", 2) != 0) {
            fprintf(stderr, "predictd train: unexpected argument '%s' (see --help)\n", a);
            return 2;
        }
        char name[64];
        const char *eq = strchr(a + 2, '=');
        size_t nl = eq ? (size_t)(eq - (a + 2)) : strlen(a + 2);
        if (nl == 0 || nl >= sizeof name) {
            fprintf(stderr, "predictd train: unknown option '%s' (see --help)\n", a);
            return 2;
        }
        memcpy(name, a + 2, nl);
        name[nl] = '\0';
        /* switches */
        bool *sw = !strcmp(name, "all")          ? &all
                   : !strcmp(name, "per-symbol") ? &per_symbol
                   : !strcmp(name, "verbose")    ? &verbose
                                                 : NULL;
        if (sw || !strcmp(name, "promote-if-better") || !strcmp(name, "dry-run") ||
            !strcmp(name, "force")) {
            if (eq) {
                fprintf(stderr, "predictd train: --%s takes no value\n", name);
                return 2;
            }
            if (sw)
                *sw = true;
            else if (!strcmp(name, "dry-run"))
                p.publish = false;
            else if (!strcmp(name, "force"))
                p.force = true;
            else
                p.promote_if_better = true;
            continue;
        }
        const char *v = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (!v) {
            fprintf(stderr, "predictd train: --%s needs a value\n", name);
            return 2;
        }
        if (!strcmp(name, "symbol") || !strcmp(name, "symbols")) {
            symbols = v;
            if (training_params_set(&p, "symbols", v, why, sizeof why) != 0) {
                fprintf(stderr, "predictd train: --%s: %s\n", name, reason(why));
                return 2;
            }
            continue;
        }
        if (!strcmp(name, "models-dir")) {
            models_dir = v;
            continue;
        }
        if (!strcmp(name, "database-url")) {
            db_url = v;
            continue;
        }
        bool known = false;
        for (size_t k = 0; param_flags[k]; k++)
            known |= !strcmp(param_flags[k], name);
        if (!known) {
            fprintf(stderr, "predictd train: unknown option '--%s' (see --help)\n", name);
            return 2;
        }
        if (training_params_set(&p, name, v, why, sizeof why) != 0) {
            fprintf(stderr, "predictd train: --%s: %s\n", name, reason(why));
            return 2;
        }
    }

    util_log_configure(verbose ? UTIL_LOG_INFO : UTIL_LOG_WARN, false);
    if (!p.timeframe[0]) {
        fprintf(stderr, "predictd train: --timeframe is required (one of %s)\n", util_tf_list());
        return 2;
    }
    if (!symbols == !all) {
        fprintf(stderr, "predictd train: give either --symbol S[,S2,...] or --all\n");
        return 2;
    }
    if (!models_dir)
        models_dir = getenv("PREDICTD_MODELS_DIR");
    if (!models_dir || !*models_dir)
        models_dir = "./models";
    if (!db_url)
        db_url = getenv("PREDICTD_DATABASE_URL");
    if (!db_url || !*db_url) {
        fprintf(stderr,
                "predictd train: no database: set --database-url or PREDICTD_DATABASE_URL\n");
        return 2;
    }
    if (all && p.target[0]) {
        fprintf(stderr, "predictd train: --target does not go with --all\n");
        return 2;
    }
    /* Everything but the symbols can be checked before touching the database. */
    training_params probe = p;
    if (all) {
        probe.n_symbols = 1;
        snprintf(probe.symbols[0], sizeof probe.symbols[0], "XX");
    }
    if (training_params_validate(&probe, why, sizeof why) != 0) {
        fprintf(stderr, "predictd train: %s\n", why);
        return 2;
    }

    int rc = store_init(db_url, NULL, false);
    if (rc != 0) {
        fprintf(stderr, "predictd train: database URL: %s\n", util_strerror(rc));
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    int code = 0;
    if (all || (per_symbol && p.n_symbols > 1)) {
        char **list = NULL;
        size_t n = 0;
        if (all) {
            rc = store_list_symbols(p.timeframe, &list, &n);
            if (rc != 0) {
                fprintf(stderr, "predictd train: listing symbols: %s\n", util_strerror(rc));
                store_shutdown();
                return 1;
            }
            if (n == 0) {
                fprintf(stderr, "predictd train: no symbol has %s candles\n", p.timeframe);
                store_strv_free(list, n); /* an empty list is still allocated */
                store_shutdown();
                return 1;
            }
        }
        size_t count = all ? n : p.n_symbols;
        training_params one = p;
        for (size_t i = 0; i < count && code != 130; i++) {
            const char *s = all ? list[i] : p.symbols[i];
            if (!util_symbol_valid(s))
                continue;
            snprintf(one.symbols[0], sizeof one.symbols[0], "%s", s);
            one.n_symbols = 1;
            one.target[0] = '\0';
            int c = run_one(&one, models_dir);
            if (c > code)
                code = c;
        }
        store_strv_free(list, n);
    } else {
        code = run_one(&p, models_dir);
    }
    store_shutdown();
    return code;
}
