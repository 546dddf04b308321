/*
 * cmd_backtest.c: `predictd backtest SYMBOL TF`: replays the candles in
 * PostgreSQL through the serving computation and the ledger's resolver
 * (predict_backtest_run), prints the figures and stores them in the
 * backtests table, where /api/models/{symbol}/{timeframe} shows them.
 * Nothing here computes a figure; it parses flags, prints and stores.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inference/inference.h"
#include "predict/predict.h"
#include "registry/registry.h"
#include "server/commands.h"
#include "store/store.h"
#include "util/util.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: predictd backtest SYMBOL TIMEFRAME [--from T] [--to T] [--version N]\n"
               "                         [--fee-bps X] [--entries FILE] [--json] [--no-store]\n"
               "Replays the series' closed candles one by one through the code that serves\n"
               "(window, features, model, levels on the tick, cost rule) at each candle's\n"
               "close, settles every answer with the ledger's resolver, and prints the\n"
               "figures of the calls: hit rate per take-profit, stop-outs, expiries,\n"
               "average R, expectancy after the round-trip cost, maximum drawdown of a\n"
               "one-unit-per-signal equity curve, a calibration table, and the same for\n"
               "the always-majority and persistence baselines. The figures are stored\n"
               "(table backtests) unless --no-store.\n"
               "  --from T, --to T   candle open times, RFC 3339 or YYYY-MM-DD\n"
               "  --version N        a model version, any on disk (default: the one serving)\n"
               "  --fee-bps X        round-trip cost, fees plus half the spread, in basis\n"
               "                     points (default: the model's policy, 10)\n"
               "  --cost-bps X       the same\n"
               "  --entries FILE     one JSON line per prediction (entry, levels, outcome)\n"
               "  --json             print the figures as JSON instead of a table\n");
}

static void side_row(const char *name, const predict_backtest_side *s)
{
    double n = (double)s->trades;
#define R(x) (s->trades ? (double)(x) / n : NAN)
    printf("  %-12s %7llu %7.4f %7.4f %7.4f %7.4f %7.4f %8.4f %8.4f %8.4f %8.2f\n", name,
           (unsigned long long)s->trades, R(s->tp[0]), R(s->tp[1]), R(s->tp[2]), R(s->stops),
           R(s->expired), s->trades ? s->sum_r / n : NAN, s->trades ? s->sum_net / n : NAN,
           R(s->net_wins), s->max_drawdown_r);
#undef R
}

static void print_table(const char *symbol, const char *tf, const predict_backtest *bt)
{
    char a[32], b[32];
    printf("== backtest %s/%s v%u, %s .. %s, %.4g bps per round trip\n", symbol, tf, bt->version,
           util_rfc3339(bt->from, a), util_rfc3339(bt->to, b), bt->cost_bps);
    printf(
        "candles %llu, predictions %llu, failed %llu; NO_TRADE:", (unsigned long long)bt->candles,
        (unsigned long long)bt->predictions, (unsigned long long)bt->failed);
    for (int k = 1; k < 8; k++)
        if (inference_no_trade_reason_name(k) && bt->no_trade[k])
            printf(" %s %llu", inference_no_trade_reason_name(k),
                   (unsigned long long)bt->no_trade[k]);
    printf("\n\n  %-12s %7s %7s %7s %7s %7s %7s %8s %8s %8s %8s\n", "calls of", "calls", "TP1",
           "TP2", "TP3", "stop", "expiry", "avg R", "exp. R", "net>0", "max DD");
    side_row("model", &bt->model);
    side_row(bt->majority_class == 0   ? "always LONG"
             : bt->majority_class == 1 ? "always SHORT"
                                       : "majority",
             &bt->majority);
    side_row("persistence", &bt->persistence);
    printf("  (exp. R: mean R after the cost; max DD: of the net equity curve, in R)\n\n");
    printf("  calibration of the model's calls: bin, calls, mean probability, TP1 reached\n");
    for (int k = 0; k < 5; k++)
        if (bt->cal[k].n)
            printf("    %s%.1f %7llu  %.4f  %.4f\n",
                   k == 0   ? "< "
                   : k == 4 ? ">="
                            : "  ",
                   k == 0 ? 0.5 : 0.4 + 0.1 * k, (unsigned long long)bt->cal[k].n,
                   bt->cal[k].sum_p / (double)bt->cal[k].n,
                   (double)bt->cal[k].hits / (double)bt->cal[k].n);
}

static int write_entries(const char *path, const predict_backtest *bt)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return PD_EIO;
    for (size_t i = 0; i < bt->n_rows; i++) {
        const predict_backtest_row *r = &bt->rows[i];
        util_buf b;
        util_buf_init(&b);
        util_buf_printf(&b, "{\"candle_time\":%lld,\"version\":%u,\"direction\":\"%s\"",
                        (long long)r->e.candle_time, r->e.version,
                        store_ledger_class_name(r->e.direction));
        util_buf_puts(&b, ",\"no_trade_reason\":");
        const char *why = inference_no_trade_reason_name(r->no_trade_reason);
        if (why)
            util_json_str(&b, why);
        else
            util_buf_puts(&b, "null");
        const double lv[] = {r->e.confidence, r->e.entry, r->e.stop_loss,
                             r->e.tp[0],      r->e.tp[1], r->e.tp[2]};
        const char *names[] = {"confidence", "entry", "stop_loss", "tp1", "tp2", "tp3"};
        for (int k = 0; k < 6; k++) {
            util_buf_printf(&b, ",\"%s\":", names[k]);
            util_json_num(&b, lv[k]);
        }
        util_buf_printf(
            &b, ",\"outcome\":\"%s\",\"realised\":", store_ledger_outcome_name(r->r.outcome));
        if (r->r.realised >= 0)
            util_json_str(&b, store_ledger_class_name(r->r.realised));
        else
            util_buf_puts(&b, "null");
        util_buf_puts(&b, ",\"r_multiple\":");
        util_json_num(&b, r->r.r_multiple);
        util_buf_puts(&b, "}\n");
        if (util_buf_ok(&b))
            fputs(b.data, f);
        util_buf_cleanup(&b);
    }
    return fclose(f) == 0 ? 0 : PD_EIO;
}

int cmd_backtest(server_config *cfg, int argc, char **argv)
{
    if (cmd_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    const char *pos[2] = {NULL, NULL};
    size_t npos = 0;
    predict_backtest_options o = {.cost_bps = NAN};
    const char *entries = NULL;
    bool json = false, store = true;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0) {
            if (npos == 2) {
                fprintf(stderr, "predictd backtest: unexpected argument '%s'\n", a);
                return 2;
            }
            pos[npos++] = a;
            continue;
        }
        if (!strcmp(a, "--json")) {
            json = true;
            continue;
        }
        if (!strcmp(a, "--no-store")) {
            store = false;
            continue;
        }
        const char *v = i + 1 < argc ? argv[++i] : NULL;
        if (!v) {
            fprintf(stderr, "predictd backtest: %s needs a value\n", a);
            return 2;
        }
        char *end = NULL;
        if (!strcmp(a, "--from") || !strcmp(a, "--to")) {
            int64_t t;
            if (util_parse_time(v, &t) != 0) {
                fprintf(stderr, "predictd backtest: %s: '%s' is not a time\n", a, v);
                return 2;
            }
            *(a[2] == 'f' ? &o.from : &o.to) = t;
        } else if (!strcmp(a, "--version")) {
            unsigned long n = strtoul(v, &end, 10);
            if (!*v || *end || n == 0 || n > UINT32_MAX) {
                fprintf(stderr, "predictd backtest: --version: '%s' is not a version\n", v);
                return 2;
            }
            o.version = (uint32_t)n;
        } else if (!strcmp(a, "--fee-bps") || !strcmp(a, "--cost-bps")) {
            double d = strtod(v, &end);
            if (!*v || *end || !(d >= 0 && d < 10000)) {
                fprintf(stderr, "predictd backtest: %s: '%s' is not in [0, 10000)\n", a, v);
                return 2;
            }
            o.cost_bps = d;
        } else if (!strcmp(a, "--entries")) {
            entries = v;
        } else {
            fprintf(stderr, "predictd backtest: unknown option '%s' (see --help)\n", a);
            return 2;
        }
    }
    if (npos != 2) {
        usage(stderr);
        return 2;
    }
    o.symbol = pos[0];
    o.tf = pos[1];
    if (!util_symbol_valid(o.symbol) || !util_tf_seconds(o.tf)) {
        fprintf(stderr, "predictd backtest: bad symbol or timeframe '%s %s'\n", o.symbol, o.tf);
        return 2;
    }
    if (!cfg->database_url) {
        fprintf(stderr, "predictd backtest: needs a database (PREDICTD_DATABASE_URL)\n");
        return 2;
    }
    int code = 1;
    registry *reg = NULL;
    predict_service *svc = NULL;
    store_ledger *ledger = NULL;
    predict_backtest bt;
    memset(&bt, 0, sizeof bt);
    if (store_init(cfg->database_url, NULL, false) != 0) {
        fprintf(stderr, "predictd backtest: the database URL is not usable (see the log line)\n");
        return 1;
    }
    if (registry_new(cfg->models_dir, &reg) != 0 || registry_scan(reg, o.symbol, o.tf) != 0) {
        fprintf(stderr, "predictd backtest: cannot read the model repository %s\n",
                cfg->models_dir);
        goto out;
    }
    predict_options popt = {.cache = false};
    if (predict_service_new(&popt, reg, &svc) != 0)
        goto out;
    char why[256] = "";
    int rc = predict_backtest_run(svc, &o, &bt, why, sizeof why);
    if (rc) {
        fprintf(stderr, "predictd backtest: %s\n", why[0] ? why : util_strerror(rc));
        goto out;
    }
    util_buf b;
    util_buf_init(&b);
    predict_backtest_json(&bt, &b);
    if (json)
        printf("%s\n", b.data);
    else
        print_table(o.symbol, o.tf, &bt);
    code = 0;
    if (entries && write_entries(entries, &bt) != 0) {
        /* asked for and not written (a full disk, a directory): a failure */
        fprintf(stderr, "predictd backtest: cannot write %s: %s\n", entries, strerror(errno));
        code = 1;
    }
    if (store) {
        rc = store_ledger_open(cfg->database_url, &ledger);
        if (rc == 0)
            rc = store_ledger_backtest_save(ledger, o.symbol, o.tf, bt.version, bt.from, bt.to,
                                            bt.cost_bps, b.data);
        if (rc) {
            fprintf(stderr, "predictd backtest: storing the figures: %s\n", util_strerror(rc));
            code = 1;
        }
    }
    util_buf_cleanup(&b);
out:
    predict_backtest_cleanup(&bt);
    store_ledger_close(ledger);
    predict_service_free(svc);
    registry_free(reg);
    store_shutdown();
    return code;
}
