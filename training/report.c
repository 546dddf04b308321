/*
 * report: a training result for people (the CLI's table) and for JSON
 * consumers (the metrics object). Pure formatting; no state.
 */
#include <inttypes.h>
#include <math.h>
#include <string.h>

#include "training/internal.h"

static void row(FILE *f, const char *label, double model, double base, int decimals)
{
    fprintf(f, "  %-26s", label);
    if (isfinite(model))
        fprintf(f, " %10.*f", decimals, model);
    else
        fprintf(f, " %10s", "n/a");
    if (isfinite(base))
        fprintf(f, " %10.*f\n", decimals, base);
    else
        fprintf(f, " %10s\n", "n/a");
}

static void row1(FILE *f, const char *label, double model, int decimals)
{
    fprintf(f, "  %-26s", label);
    if (isfinite(model))
        fprintf(f, " %10.*f %10s\n", decimals, model, "");
    else
        fprintf(f, " %10s %10s\n", "n/a", "");
}

void training_result_print(const training_result *r, FILE *f)
{
    char a[32], b[32];
#define M(name) training_result_metric(r, name)
    fprintf(f, "series      %s\n", r->target);
    fprintf(f, "data        %s .. %s\n", r->data_from ? util_rfc3339(r->data_from, a) : "-",
            r->data_to ? util_rfc3339(r->data_to, b) : "-");
    fprintf(f, "samples     %zu (train %zu, validation %zu, test %zu)\n", r->samples, r->train,
            r->val, r->test);
    fprintf(f, "fit         %d epochs (best %.0f), temperature %.4f\n", r->epochs_run,
            M("best_epoch"), r->temperature);
    fprintf(f, "test labels LONG %.1f%%  SHORT %.1f%%  NO_TRADE %.1f%%\n",
            100 * M("test_share_long"), 100 * M("test_share_short"),
            100 * M("test_share_no_trade"));
    fprintf(f, "\n  %-26s %10s %10s\n", "test metric", "model", "baseline");
    row(f, "accuracy", r->test_accuracy, r->baseline_accuracy, 4);
    row(f, "log-loss", M("log_loss"), M("baseline_log_loss"), 4);
    row(f, "brier", M("brier"), M("baseline_brier"), 4);
    row(f, "calls (LONG/SHORT)", M("calls"), M("baseline_calls"), 0);
    row(f, "hit rate of calls", M("hit_rate_calls"), M("baseline_hit_rate_calls"), 4);
    row1(f, "calls LONG", M("calls_long"), 0);
    row1(f, "hit rate LONG", M("hit_rate_long"), 4);
    row1(f, "calls SHORT", M("calls_short"), 0);
    row1(f, "hit rate SHORT", M("hit_rate_short"), 4);
    row1(f, "precision LONG", M("precision_long"), 4);
    row1(f, "recall LONG", M("recall_long"), 4);
    row1(f, "precision SHORT", M("precision_short"), 4);
    row1(f, "recall SHORT", M("recall_short"), 4);
    row1(f, "precision NO_TRADE", M("precision_no_trade"), 4);
    row1(f, "recall NO_TRADE", M("recall_no_trade"), 4);
    row1(f, "validation log-loss", M("val_log_loss"), 4);
    fprintf(f, "\n  %-26s %10s %10s\n", "persistence baseline", "model", "persist.");
    row(f, "log-loss", M("log_loss"), M("persistence_log_loss"), 4);
    row(f, "hit rate of calls", M("hit_rate_calls"), M("persistence_hit_rate_calls"), 4);
    fprintf(f, "  beats majority %s, persistence %s\n",
            M("beats_majority") == 1 ? "yes" : "no", M("beats_persistence") == 1 ? "yes" : "no");
    fprintf(f, "\n  backtest of the test window (levels on the tick, %.3g bps per round trip)\n",
            M("cost_bps"));
    fprintf(f, "  %-20s %9s %9s %9s\n", "", "model", "majority", "persist.");
    static const char *const bt[][2] = {
        {"trades", "trades"},       {"hit rate TP1", "hit_rate"},
        {"hit rate TP2", "hit_rate_tp2"}, {"hit rate TP3", "hit_rate_tp3"},
        {"stop-outs", "stop_rate"}, {"expiries", "expired_rate"},
        {"average R (gross)", "avg_r"}, {"expectancy R (net)", "expectancy_r"},
        {"hit rate net > 0", "hit_rate_net"}, {"max drawdown R", "max_drawdown_r"},
    };
    for (size_t k = 0; k < sizeof bt / sizeof bt[0]; k++) {
        char km[40], kj[40], kp[40];
        snprintf(km, sizeof km, "bt_%s", bt[k][1]);
        snprintf(kj, sizeof kj, "bt_majority_%s", bt[k][1]);
        snprintf(kp, sizeof kp, "bt_persistence_%s", bt[k][1]);
        fprintf(f, "  %-20s %9.4g %9.4g %9.4g\n", bt[k][0], M(km), M(kj), M(kp));
    }
    fprintf(f, "  calibration of calls: bin  n  mean p  TP1 reached\n");
    for (int bin = 40; bin <= 80; bin += 10) {
        char kn[24], kq[24], kh[24];
        snprintf(kn, sizeof kn, "cal_%d_n", bin);
        snprintf(kq, sizeof kq, "cal_%d_p", bin);
        snprintf(kh, sizeof kh, "cal_%d_hit", bin);
        if (M(kn) > 0)
            fprintf(f, "    %s%.1f  %6.0f  %.4f  %.4f\n", bin == 80 ? ">=" : "  ", bin / 100.0,
                    M(kn), M(kq), M(kh));
    }
#undef M
    fprintf(f, "  (baseline accuracy, calls, hit rate: always the test slice's most frequent\n"
               "   class, the no-information rate; its calls are n/a when that class is\n"
               "   NO_TRADE. Baseline log-loss and brier: the train class frequencies.)\n\n");
    if (r->old_version)
        fprintf(f, "promotion   log-loss new %.5f vs serving %s v%" PRIu32 " %.5f on %zu samples\n",
                r->new_log_loss, r->old_series, r->old_version, r->old_log_loss, r->compared);
    const char *what = r->outcome == TRAINING_PUBLISHED  ? "published"
                       : r->outcome == TRAINING_REJECTED ? "rejected"
                       : r->outcome == TRAINING_BELOW_BASELINE ? "below_baseline"
                                                         : "not published";
    fprintf(f, "result      %s\n", r->message[0] ? r->message : what);
}
