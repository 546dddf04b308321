"""The dashboard (web/index.html) in headless Chromium against the real
service: tests/browser/dashboard.mjs drives the page with puppeteer-core
and reports one JSON line per check, which become this file's tests.

Data: LIVEUSDT 1h (and 4h, for the timeframe summary) and OLDUSDT 1h are
seeded to the last closed candle. LIVEUSDT's last 12 hourly candles are
deleted before training (horizon 3, tight barriers), then 9 are put back one at a time
through the running service, so the ledger holds calls with outcomes; the
other three are pushed while the page watches (one in the keyed run, two in
the open run, the last making the call fresh again). OLDUSDT loses its last
6 candles: its answers are stale.

The seeded candles are a random walk: the models are published with --force
and every answer of theirs is NO_TRADE (below_baseline), the fed candles'
ones on stale data besides. So that the chart's call markers by outcome are
proven too, CALLS (LONG/SHORT ledger rows with known outcomes: TP2, SL,
EXPIRED, TP1) are written into the ledger at earlier candles, as the loop
would have written them for a version that called; the page must draw each
as a triangle coloured by its outcome, and the loop's NO_TRADE answers as
dots. `predictd backtest` of LIVEUSDT 1h is stored, so the record shows a
replay through the serving path.

Skipped, with the reason, when Chromium, node or puppeteer-core (make
browser-deps: npm ci in tests/browser) is missing. Screenshots go to
$PREDICTD_SCREENSHOT_DIR, else the suite's temporary directory.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (DB_URL, ROOT, Service, Skip, check, check_eq, cli, need_services,  # noqa: E402
                     prepare_database, psql, run_tests, test, train)

LIVE, OLD, TF, TFS = "LIVEUSDT", "OLDUSDT", "1h", 3600
LAG, FED = 12, 9
READ_KEY = "browser-read-" + "z" * 20
MODELS = tempfile.mkdtemp(prefix="predictd-browser-models-")
BROWSER_DIR = os.path.join(ROOT, "tests", "browser")
state = {}


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def need_browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise Skip("chromium is not installed (make deps installs it): browser tests not run")
    if not shutil.which("node"):
        raise Skip("node is not installed (make deps installs it): browser tests not run")
    if not os.path.isdir(os.path.join(BROWSER_DIR, "node_modules", "puppeteer-core")):
        raise Skip("puppeteer-core is not installed (make browser-deps): browser tests not run")
    return chromium


# (candles back from the last one left once the LAG are deleted, direction, outcome,
#  realised class, R, hours to the hit)
CALLS = [(8, "LONG", "TP2", "LONG", 2.0, 2), (6, "SHORT", "SL", "LONG", -1.0, 1),
         (4, "LONG", "EXPIRED", "NO_TRADE", 0.3, None), (2, "SHORT", "TP1", "SHORT", 1.0, 1)]


def insert_calls():
    """Ledger rows with known outcomes at candles the chart shows."""
    closes = psql(f"SELECT extract(epoch FROM open_time)::bigint, close FROM candles WHERE "
                  f"symbol = '{LIVE}' AND timeframe = '{TF}' ORDER BY open_time DESC LIMIT 17")
    closes = [(int(t), float(c)) for t, c in (r.split("|") for r in closes.splitlines())]
    calls = []
    for back, d, outcome, realised, r, hours in CALLS:
        t, close = closes[back]
        sign = 1 if d == "LONG" else -1
        risk = close * 0.004
        p = (0.62, 0.2, 0.18) if d == "LONG" else (0.2, 0.62, 0.18)
        hit = "NULL" if hours is None else str(hours * TFS)
        psql(f"INSERT INTO predictions (symbol, timeframe, candle_time, model_version, direction, "
             f"confidence, p_long, p_short, p_no_trade, entry, stop_loss, tp1, tp2, tp3, atr, "
             f"horizon_candles, outcome, realised, resolved_at, hit_time_s, r_multiple, mfe, mae, "
             f"stale_data) VALUES ('{LIVE}', '{TF}', to_timestamp({t}), 1, '{d}', 0.62, {p[0]}, "
             f"{p[1]}, {p[2]}, {close}, {close - sign * risk}, {close + sign * risk}, "
             f"{close + 2 * sign * risk}, {close + 3 * sign * risk}, {risk * 2}, 3, '{outcome}', "
             f"'{realised}', to_timestamp({t + 4 * TFS}), {hit}, {r}, {max(r, 0.5)}, 0.4, false)")
        calls.append({"candle_time": iso(t), "direction": d, "outcome": outcome, "r": r})
    return calls


def candle_sql(c):
    return (f"INSERT INTO candles VALUES ('{LIVE}', '{TF}', to_timestamp({c[0]}), {c[1]}, {c[2]}, "
            f"{c[3]}, {c[4]}, {c[5]})")


def ledger_count(t):
    return int(psql(f"SELECT count(*) FROM predictions WHERE symbol = '{LIVE}' AND "
                    f"timeframe = '{TF}' AND candle_time = to_timestamp({t})"))


def wait_for(cond, what, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def setup():
    if "deleted" in state:
        return
    need_services()
    prepare_database(symbols=(LIVE, OLD), timeframes=(TF,), count=1500)
    cli("seed", "--symbols", LIVE, "--timeframes", "4h", "--count", "800")
    rows = psql(f"SELECT extract(epoch FROM open_time)::bigint, open, high, low, close, volume "
                f"FROM candles WHERE symbol = '{LIVE}' AND timeframe = '{TF}' "
                f"ORDER BY open_time DESC LIMIT {LAG}")
    state["deleted"] = sorted(tuple(r.split("|")) for r in rows.splitlines())
    state["deleted"] = [(int(c[0]),) + c[1:] for c in state["deleted"]]
    psql(f"DELETE FROM candles WHERE symbol = '{LIVE}' AND timeframe = '{TF}' AND "
         f"open_time >= to_timestamp({state['deleted'][0][0]})")
    psql(f"DELETE FROM candles WHERE symbol = '{OLD}' AND timeframe = '{TF}' AND open_time >= "
         f"(SELECT max(open_time) FROM candles WHERE symbol = '{OLD}' AND timeframe = '{TF}') "
         f"- interval '5 hours'")
    # tight barriers and no confidence floor: calls that trade and resolve fast
    train(MODELS, LIVE, TF, "--horizon", "3", "--sl-atr", "0.5", "--min-confidence", "0")
    train(MODELS, LIVE, "4h")
    train(MODELS, OLD, TF)
    state["calls"] = insert_calls()
    # a replay through the serving path, stored for /api/models/{s}/{tf}
    cli("backtest", LIVE, TF, "--from", iso(state["deleted"][0][0] - 300 * TFS),
        "--models-dir", MODELS)


def node(mode, svc, push, extra=None):
    chromium = need_browser()
    out_dir = os.environ.get("PREDICTD_SCREENSHOT_DIR") or os.path.join(
        os.environ.get("PREDICTD_TEST_TMP") or tempfile.gettempdir(), "browser")
    os.makedirs(out_dir, exist_ok=True)
    env = dict(os.environ)
    env.update({"PREDICTD_URL": svc.base, "CHROMIUM": chromium, "DB_URL": DB_URL,
                "OUT_DIR": out_dir, "SYMBOL": LIVE, "STALE_SYMBOL": OLD, "TF": TF,
                "PUSH": json.dumps([{"sql": candle_sql(c), "candle_time": iso(c[0])}
                                    for c in push]),
                "CALLS": json.dumps(state["calls"])})
    env.update(extra or {})
    p = subprocess.run(["node", os.path.join(BROWSER_DIR, "dashboard.mjs"), mode], env=env,
                       capture_output=True, text=True, timeout=300, cwd=BROWSER_DIR)
    results = {}
    for line in p.stdout.splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            continue
        results[r["check"]] = r
    if not results:
        raise AssertionError(f"dashboard.mjs {mode} exited {p.returncode} with no result:\n"
                             f"{p.stdout}\n{p.stderr}")
    return results


def keyed():
    """The keyed run (first: it pushes the 10th candle)."""
    if "keyed" not in state:
        need_browser()
        setup()
        svc = Service(MODELS, env={"PREDICTD_READ_KEY": READ_KEY, "PREDICTD_ACCESS_LOG": "on"})
        try:
            wait_for(lambda: "caught up" in svc.logs(), "the loop's first catch-up")
            for c in state["deleted"][:FED]:  # the ledger fills and resolves
                psql(candle_sql(c))
                wait_for(lambda: ledger_count(c[0]) == 1, f"the ledger row of {iso(c[0])}")
            state["keyed"] = node("keyed", svc, state["deleted"][FED:FED + 1],
                                  {"READ_KEY": READ_KEY})
        finally:
            check_eq(svc.stop(), 0)
        state["keyed_logs"] = svc.logs()  # the stopped server's final log
    return state["keyed"]


def opened():
    """The run without a key: pushes the last two candles."""
    if "open" not in state:
        keyed()
        svc = Service(MODELS)
        try:
            wait_for(lambda: "caught up" in svc.logs(), "the loop's first catch-up")
            state["open"] = node("open", svc, state["deleted"][FED + 1:])
        finally:
            check_eq(svc.stop(), 0)
    return state["open"]


def result(results, name):
    r = results.get(name)
    check(r is not None, f"dashboard.mjs did not report {name}")
    if r["detail"]:
        print(f"     {name}: {r['detail'].splitlines()[0][:300]}", flush=True)
    check(r["ok"], r["detail"])
    return r


@test
def read_key_prompt_then_data_and_a_token_stream():
    result(keyed(), "read_key_prompt_then_data_and_stream_with_a_token")
    logs = state["keyed_logs"]
    check("/api/predictions/events" in logs, "the access log has the stream")
    check(READ_KEY not in logs, "the key was logged")
    check("token=" not in logs, "a token was logged")


@test
def page_loads_without_console_errors():
    result(opened(), "page_loads_without_console_errors")


@test
def header_shows_feed_state_and_source():
    result(opened(), "header_shows_feed_state_and_source")


@test
def chart_levels_at_the_prediction_prices():
    result(opened(), "chart_levels_at_the_prediction_prices")


@test
def past_calls_marked_by_outcome():
    result(opened(), "past_calls_marked_by_outcome")


@test
def record_shows_backtest_live_and_baselines():
    result(opened(), "record_shows_backtest_live_and_baselines")


@test
def no_trade_said_in_words_with_the_models_choice():
    result(opened(), "no_trade_reason_in_words_with_the_models_choice")
    result(opened(), "no_trade_reason_after_the_push")


@test
def consensus_is_the_services():
    result(opened(), "consensus_is_the_services")


@test
def prediction_pushed_by_a_new_candle_appears():
    r = result(opened(), "prediction_pushed_by_a_new_candle_appears")
    print(f"     insert -> shown (ms): {r['figures'].get('push_ms')}", flush=True)


@test
def stale_series_shows_its_badge():
    result(opened(), "stale_series_shows_its_badge")


@test
def screenshots_without_horizontal_overflow():
    for size in ("1280x800", "390x844"):
        r = result(opened(), f"screenshot_{size}_without_horizontal_overflow")
        check(os.path.getsize(r["detail"]) > 10000, "an empty screenshot")


@test
def view_in_the_url_and_keyboard_reachable():
    result(opened(), "view_is_in_the_url_and_controls_are_keyboard_reachable")


@test
def no_console_errors_in_the_whole_run():
    result(opened(), "no_console_errors_in_the_whole_run")


if __name__ == "__main__":
    sys.exit(run_tests())
