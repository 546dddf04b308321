"""The backtest against the live path, outcome by outcome, on real candles.

ETHBTC 1m (the demo's real January 2018 candles, relabelled to end at the
last closed minute) loses its last REPLAY minutes; a model is trained on
what is left (the default way: it must pass the baseline gate); then a
running `predictd serve` is given the REPLAY minutes back one at a time, as
a feed would write them, and its inference loop predicts each one into the
ledger and settles the earlier ones against it. `predictd backtest` of the
same version over the same minutes must give, for every settled ledger
row, the same direction, confidence, levels, realised class, outcome and R
multiple: the live path and the replay are one computation and one
resolver.

The re-inserted minutes are older than two timeframes when the loop sees
them, which the live rule answers NO_TRADE (stale_data); this server runs
with PREDICTD_STALE_AFTER large enough that the loop answers them as it
would have when they closed (the backtest computes at each close). A
window shifted by one candle, a swapped side or a resolver counting clock
time instead of candles would fail the comparison.
"""
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (ROOT, Service, check, check_eq, cli, need_services, psql,  # noqa: E402
                     run_tests, test)

SYM, TF, TFS = "ETHBTC", "1m", 60
REPLAY = 150      # minutes given back through the loop
HORIZON = 10      # candles a prediction has to reach a barrier
# a round trip of 1 bp: at 10 (the default) the cost floor turns nearly every
# call on these quiet minutes into NO_TRADE, and no outcome would be compared
COST_BPS = "1"
MODELS = tempfile.mkdtemp(prefix="predictd-replay-models-")
DEMO = os.path.join(ROOT, "data", "demo")
state = {}


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def wait_for(cond, what, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def ledger_has(t):
    return psql(f"SELECT count(*) FROM predictions WHERE symbol = '{SYM}' AND timeframe = "
                f"'{TF}' AND candle_time = to_timestamp({t})") == "1"


def setup():
    if "held" in state:
        return
    need_services()
    cli("migrate", "--migrations-dir", os.path.join(ROOT, "db"))
    cli("seed", "--demo", "--demo-files", os.path.join(DEMO, "ETHBTC_1m_2018-01.csv.gz"))
    rows = psql(f"SELECT extract(epoch FROM open_time)::bigint, open, high, low, close, volume "
                f"FROM candles WHERE symbol = '{SYM}' AND timeframe = '{TF}' "
                f"ORDER BY open_time DESC LIMIT {REPLAY}").splitlines()
    held = sorted((int(r.split("|")[0]),) + tuple(r.split("|")[1:]) for r in rows)
    check_eq(len(held), REPLAY)
    psql(f"DELETE FROM candles WHERE symbol = '{SYM}' AND timeframe = '{TF}' AND "
         f"open_time >= to_timestamp({held[0][0]})")
    # the default way: published only if it beats both baselines
    cli("train", "--symbol", SYM, "--timeframe", TF, "--models-dir", MODELS, "--seed", "1",
        "--horizon", str(HORIZON), "--cost-bps", COST_BPS, timeout=900)
    state["held"] = held


@test
def backtest_equals_the_loops_ledger_row_by_row():
    setup()
    held = state["held"]
    svc = Service(MODELS, env={"PREDICTD_STALE_AFTER": "100000"})
    try:
        for c in held:
            psql(f"INSERT INTO candles VALUES ('{SYM}', '{TF}', to_timestamp({c[0]}), {c[1]}, "
                 f"{c[2]}, {c[3]}, {c[4]}, {c[5]})")
            wait_for(lambda: ledger_has(c[0]), f"the loop's prediction of {iso(c[0])}")
        # the last rows settle with the last candle's insert: wait for those
        # whose horizon ended within the replay
        last_settled = held[-1 - HORIZON][0]
        wait_for(lambda: psql(f"SELECT outcome IS NOT NULL FROM predictions WHERE symbol = "
                              f"'{SYM}' AND timeframe = '{TF}' AND candle_time = "
                              f"to_timestamp({last_settled})") == "t",
                 "the settlement of the replay's rows")
    finally:
        svc.stop()
    rows = psql(f"SELECT extract(epoch FROM candle_time)::bigint, model_version, direction, "
                f"entry, stop_loss, tp1, tp2, tp3, confidence, outcome, realised, "
                f"coalesce(r_multiple::text, '') FROM predictions WHERE symbol = '{SYM}' AND "
                f"timeframe = '{TF}' AND outcome IS NOT NULL AND candle_time >= "
                f"to_timestamp({held[0][0]}) ORDER BY candle_time").splitlines()
    check(len(rows) >= REPLAY - HORIZON - 1, f"{len(rows)} settled rows of {REPLAY} minutes")
    version = rows[0].split("|")[1]
    out = os.path.join(MODELS, "replay-entries.jsonl")
    p = cli("backtest", SYM, TF, "--from", iso(held[0][0]), "--version", version,
            "--entries", out, "--no-store", "--json", "--models-dir", MODELS, timeout=900)
    figures = json.loads(p.stdout)
    check_eq(figures["version"], int(version))
    bt = {}
    with open(out) as f:
        for line in f:
            e = json.loads(line)
            bt[e["candle_time"]] = e
    calls = 0
    for r in rows:
        t, v, d, entry, sl, tp1, tp2, tp3, conf, outcome, realised, rm = r.split("|")
        check_eq(v, version, r)
        e = bt.get(int(t))
        check(e is not None, f"the backtest has no row for {iso(int(t))}: {r}")
        check_eq(e["direction"], d, (r, e))
        for a, b in ((entry, e["entry"]), (sl, e["stop_loss"]), (tp1, e["tp1"]),
                     (tp2, e["tp2"]), (tp3, e["tp3"]), (conf, e["confidence"])):
            check(abs(float(a) - b) <= 1e-9 * max(1.0, abs(b)), (r, e))
        check_eq(e["realised"], realised, (r, e))
        check_eq(e["outcome"], outcome, (r, e))
        if rm or e.get("r_multiple") is not None:
            check(rm != "" and e.get("r_multiple") is not None and
                  abs(float(rm) - e["r_multiple"]) < 1e-9, (r, e))
        calls += d in ("LONG", "SHORT")
    print(f"     {len(rows)} settled ledger rows equal to the backtest's ({calls} calls)",
          flush=True)
    check(calls > 0, f"the replay made no call: the comparison would not test outcomes; "
          f"{list(bt.values())[:2]} {figures}")


@test
def backtest_table_says_what_the_json_says():
    """The table `predictd backtest` prints (what an operator reads) shows
    the figures of --json: the calls of the model, of the majority-class
    baseline (named after its class) and of persistence, and one
    calibration row per bin with calls, with its calls, mean probability
    and TP1 rate."""
    setup()
    args = ("backtest", SYM, TF, "--no-store", "--models-dir", MODELS)
    fig = json.loads(cli(*args, "--json", timeout=900).stdout)
    table = cli(*args, timeout=900).stdout
    check(fig["model"]["calls"] > 0, f"the model made no call: nothing to compare {fig}")
    rows = {}  # "  NAME(12) CALLS ..." rows of the calls table
    for line in table.split("calibration of")[0].splitlines():
        rest = line[14:].split()
        if line.startswith("  ") and rest and rest[0].isdigit():
            rows[line[2:14].strip()] = int(rest[0])
    majority = {"LONG": "always LONG", "SHORT": "always SHORT"}.get(fig["majority_class"],
                                                                     "majority")
    check_eq(rows.get("model"), fig["model"]["calls"], table)
    check_eq(rows.get(majority), fig["majority"]["calls"], table)
    check_eq(rows.get("persistence"), fig["persistence"]["calls"], table)
    cal = [ln.split() for ln in table.split("calibration of the model's calls")[1].splitlines()[1:]
           if ln.strip()]
    want = [c for c in fig["calibration"] if c["calls"] > 0]
    check(len(want) > 0, fig["calibration"])
    check_eq(len(cal), len(want), (cal, want))
    for got, c in zip(cal, want):
        calls, mean_p, tp1 = int(got[-3]), float(got[-2]), float(got[-1])
        check_eq(calls, c["calls"], (got, c))
        check(abs(mean_p - c["mean_probability"]) <= 5e-5, (got, c))
        check(abs(tp1 - c["tp1_rate"]) <= 5e-5, (got, c))
        # the bins: "< 0.5" (JSON "0.4": everything under 0.5), "0.6", ">=0.8"
        label = "0.4" if got[0] == "<" and got[1] == "0.5" else got[0]
        check_eq(label, c["bin"], (got, c))


if __name__ == "__main__":
    run_tests()
