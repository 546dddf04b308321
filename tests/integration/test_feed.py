"""Market data: one base timeframe (1m), every other derived in PostgreSQL.

Trades to 1m candles through `predictd import` (the shared XRPETH trades
give the shared XRPETH 1m candles, value for value), 1m imports rolled up
into 5m..1d (checked against a roll-up computed here), idempotent
re-imports, late and corrected candles, the refusal of direct writes to a
derived series, native series, the NOTIFY rule for derived series, and the
demo feed inside `serve`: real candles seeded a few minutes behind, replayed
with a fast catch-up clock (PREDICTD_DEMO_STEP_MS) until every 1m
prediction has moved to a newer candle and none is stale, with
/health/status saying "demo-replay". Only bounded waits, no timing
assertions.
"""
import calendar
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (DB_URL, ROOT, Service, Skip, check, check_eq, cli, need_services,  # noqa: E402
                     psql, run_tests, test)

SHARED = os.environ.get("PREDICTD_SHARED_DATA", "")
DEMO = ["ADABTC", "DASHBTC", "ETHBTC", "XLMBTC"]
TFS = {"5m": 300, "15m": 900, "1h": 3600, "4h": 14400, "1d": 86400}


def need_shared(name):
    p = os.path.join(SHARED, name) if SHARED else ""
    if not p or not os.path.exists(p):
        raise Skip(f"{name} absent (../shared/data)")
    return p


def epoch(s):
    return calendar.timegm(time.strptime(s[:19], "%Y-%m-%dT%H:%M:%S"))


def read_candles(path):
    with open(path) as f:
        return [(epoch(r["open_time"]), float(r["open"]), float(r["high"]), float(r["low"]),
                 float(r["close"]), float(r["volume"])) for r in csv.DictReader(f)]


def db_candles(sym, tf):
    out = psql(f"SELECT extract(epoch FROM open_time)::bigint, open, high, low, close, volume "
               f"FROM candles WHERE symbol = '{sym}' AND timeframe = '{tf}' ORDER BY open_time")
    rows = []
    for line in out.splitlines():
        t, o, h, lo, c, v = line.split("|")
        rows.append((int(t), float(o), float(h), float(lo), float(c), float(v)))
    return rows


def rollup(base, secs):
    """first open, max high, min low, last close, sum volume per closed
    bucket: one whose last minute is present or followed by a later base
    candle (the forming bucket has no row)."""
    out, last = {}, {}
    for t, o, h, lo, c, v in sorted(base):
        b = t - t % secs
        last[b] = t
        if b not in out:
            out[b] = [b, o, h, lo, c, v]
        else:
            r = out[b]
            r[2], r[3], r[4], r[5] = max(r[2], h), min(r[3], lo), c, r[5] + v
    newest = max(out)
    return [tuple(r) for b, r in sorted(out.items())
            if b < newest or last[b] + 60 == b + secs]


def same(a, b, what):
    check_eq(len(a), len(b), f"{what}: candle count")
    for x, y in zip(a, b):
        ok = x[0] == y[0] and x[1:5] == y[1:5] and abs(x[5] - y[5]) <= 1e-9 * max(1, abs(y[5]))
        check(ok, f"{what}: {x} != {y}")


def write_csv(rows, header="open_time,open,high,low,close,volume"):
    fd, path = tempfile.mkstemp(suffix=".csv")
    with os.fdopen(fd, "w") as f:
        f.write(header + "\n")
        for r in rows:
            f.write((r if isinstance(r, str) else ",".join(str(x) for x in r)) + "\n")
    return path


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def setup():
    need_services()
    cli("migrate", "--migrations-dir", os.path.join(ROOT, "db"))


@test
def trades_import_gives_the_shared_candles():
    setup()
    trades = need_shared("XRPETH_trades_2019-10.csv")
    want = read_candles(need_shared("XRPETH_1m_2019-10.csv"))
    p = cli("import", trades, "--symbol", "XRPETH")
    check("12477 trades" in p.stderr and "3560 1m candles" in p.stderr, p.stderr)
    got = db_candles("XRPETH", "1m")
    check_eq(len(got), 3560)
    same(got, want, "XRPETH 1m")
    for tf, secs in TFS.items():
        same(db_candles("XRPETH", tf), rollup(want, secs), f"XRPETH {tf}")
    check_eq(psql("SELECT string_agg(timeframe || '=' || kind, ',' ORDER BY timeframe) "
                  "FROM candle_series WHERE symbol = 'XRPETH'"),
             "15m=derived,1d=derived,1h=derived,1m=base,4h=derived,5m=derived")
    # a trades file is 1m by nature
    p = cli("import", trades, "--symbol", "XRPETH", "--timeframe", "1h", check_rc=False)
    check_eq(p.returncode, 2)
    check("trades file" in p.stderr, p.stderr)


@test
def trades_bad_row_names_its_line():
    setup()
    path = write_csv(["2019-10-11T00:00:01Z,1,buy,1,1", "2019-10-11T00:00:02Z,2,hodl,1,1"],
                     header="time,id,side,price,amount")
    p = cli("import", path, "--symbol", "BADTR", check_rc=False)
    check_eq(p.returncode, 1)
    check("line 3: side \"hodl\" is not buy or sell" in p.stderr, p.stderr)
    check_eq(psql("SELECT count(*) FROM candles WHERE symbol = 'BADTR'"), "0")
    os.unlink(path)


@test
def base_import_fills_every_derived_timeframe_idempotently():
    setup()
    src = need_shared("ETHBTC_1m_2018-01.csv")
    base = read_candles(src)
    p = cli("import", src, "--symbol", "ETHBTCT", "--timeframe", "1m")
    check("5m 15m 1h 4h 1d derived" in p.stderr, p.stderr)
    same(db_candles("ETHBTCT", "1m"), base, "ETHBTC 1m")
    for tf, secs in TFS.items():
        same(db_candles("ETHBTCT", tf), rollup(base, secs), f"ETHBTC {tf}")
    # a re-import rewrites nothing: the rows keep their transaction ids
    before = psql("SELECT md5(string_agg(xmin::text, ',' ORDER BY timeframe, open_time)) "
                  "FROM candles WHERE symbol = 'ETHBTCT'")
    cli("import", src, "--symbol", "ETHBTCT", "--timeframe", "1m")
    after = psql("SELECT md5(string_agg(xmin::text, ',' ORDER BY timeframe, open_time)) "
                 "FROM candles WHERE symbol = 'ETHBTCT'")
    check_eq(after, before, "a re-import rewrote rows")


@test
def late_and_corrected_base_candles_update_their_buckets():
    setup()
    src = need_shared("ETHBTC_1m_2018-01.csv")
    base = read_candles(src)
    cli("import", src, "--symbol", "ETHBTCL", "--timeframe", "1m")
    # a correction: a minute in the middle gets a new high
    i = 5000
    t, o, h, lo, c, v = base[i]
    base[i] = (t, o, h * 1.5, lo, c, v + 7)
    path = write_csv([(iso(t), o, h * 1.5, lo, c, v + 7)])
    cli("import", path, "--symbol", "ETHBTCL", "--timeframe", "1m")
    # a late minute: one the file lacks (a gap), inside the data
    have = {r[0] for r in base}
    gap = next(r[0] + 60 for r in base if r[0] + 60 not in have and r[0] + 60 < base[-1][0])
    late = (gap, 0.09, 0.2, 0.01, 0.095, 3.25)
    path2 = write_csv([(iso(gap),) + late[1:]])
    cli("import", path2, "--symbol", "ETHBTCL", "--timeframe", "1m")
    base = sorted(base + [late])
    for tf, secs in TFS.items():
        same(db_candles("ETHBTCL", tf), rollup(base, secs), f"ETHBTC {tf} after corrections")
    os.unlink(path)
    os.unlink(path2)


@test
def derived_series_refuse_direct_writes_native_ones_stand_alone():
    setup()
    t0 = 1700000000 - 1700000000 % 86400
    minutes = [(iso(t0 + 60 * k), 10 + k, 11 + k, 9 + k, 10.5 + k, 1) for k in range(10)]
    path = write_csv(minutes)
    cli("import", path, "--symbol", "MIXED", "--timeframe", "1m")
    five = write_csv([(iso(t0), 1, 2, 0.5, 1.5, 10)])
    p = cli("import", five, "--symbol", "MIXED", "--timeframe", "5m", check_rc=False)
    check_eq(p.returncode, 1)
    check("MIXED:5m is derived from MIXED:1m" in p.stderr, p.stderr)
    # any other writer too: the database refuses
    r = subprocess.run(["psql", DB_URL.split("?")[0], "-qtAX", "-c",
                        f"INSERT INTO candles VALUES ('MIXED', '1h', '{iso(t0 + 7200)}', 1, 2, 1, 1, 1)"],
                       capture_output=True, text=True, timeout=60)
    check(r.returncode != 0 and "series MIXED:1h is derived from MIXED:1m" in r.stderr, r.stderr)
    # a native series: imported at 1d first, never rolled up afterwards
    days = [(iso(t0 + 86400 * k), 100, 120, 90, 110, 1000) for k in range(3)]
    dpath = write_csv(days)
    p = cli("import", dpath, "--symbol", "NATIVE", "--timeframe", "1d")
    check("native series" in p.stderr, p.stderr)
    cli("import", path, "--symbol", "NATIVE", "--timeframe", "1m")
    check_eq(psql("SELECT kind FROM candle_series WHERE symbol = 'NATIVE' AND timeframe = '1d'"),
             "native")
    check_eq(psql("SELECT kind FROM candle_series WHERE symbol = 'NATIVE' AND timeframe = '5m'"),
             "derived")
    check_eq(psql(f"SELECT open || '/' || volume FROM candles WHERE symbol = 'NATIVE' "
                  f"AND timeframe = '1d' AND open_time = '{iso(t0)}'"), "100/1000")
    check_eq(psql("SELECT count(*) FROM candles WHERE symbol = 'NATIVE' AND timeframe = '5m'"),
             "2")  # minutes 0..9: two complete 5m buckets
    # and a native series accepts direct writes again
    cli("import", dpath, "--symbol", "NATIVE", "--timeframe", "1d")
    for f in (path, five, dpath):
        os.unlink(f)


def notifications(sql):
    """Runs sql in a session that LISTENs; returns the payloads it got."""
    r = subprocess.run(["psql", DB_URL.split("?")[0], "-qtAX", "-c", "LISTEN predictd_candles",
                        "-c", sql, "-c", "SELECT 1"], capture_output=True, text=True, timeout=60)
    check(r.returncode == 0, r.stderr)
    out = []
    for line in (r.stdout + r.stderr).splitlines():
        if "Asynchronous notification" in line and 'payload "' in line:
            out.append(line.split('payload "', 1)[1].split('"', 1)[0])
    return sorted(out)


def ins(sym, t, px):
    return (f"INSERT INTO candles VALUES ('{sym}', '1m', '{iso(t)}', {px}, {px}, {px}, {px}, 1) "
            f"ON CONFLICT (symbol, timeframe, open_time) DO UPDATE SET close = EXCLUDED.close, "
            f"high = greatest(candles.high, EXCLUDED.high)")


@test
def derived_series_notify_when_a_bucket_closes():
    setup()
    t0 = 1700006400  # a 4h and 1h boundary (and of 5m, 15m)
    check_eq(t0 % 14400, 0)
    s = "NOTE"
    # the first minute: nothing derived is closed yet
    check_eq(notifications(ins(s, t0, 10)), [f"{s}:1m"])
    check_eq(psql(f"SELECT count(*) FROM candles WHERE symbol = '{s}' AND timeframe <> '1m'"),
             "0")
    # a minute inside the forming 5m bucket: only 1m
    check_eq(notifications(ins(s, t0 + 60, 11)), [f"{s}:1m"])
    # the first minute of the next 5m bucket: the 5m bucket before closed
    check_eq(notifications(ins(s, t0 + 300, 12)), sorted([f"{s}:1m", f"{s}:5m"]))
    # a correction of a closed 5m bucket: 5m again
    check_eq(notifications(ins(s, t0 + 120, 13)), sorted([f"{s}:1m", f"{s}:5m"]))
    # a write that changes nothing notifies nobody
    check_eq(notifications(f"INSERT INTO candles VALUES ('{s}', '1m', '{iso(t0 + 300)}', "
                           f"12, 12, 12, 12, 1) ON CONFLICT DO NOTHING"), [])
    # the last minute of a 5m bucket completes it: 5m notifies at once
    check_eq(notifications(ins(s, t0 + 540, 15)), sorted([f"{s}:1m", f"{s}:5m"]))
    # the first minute after a gap closes the 15m bucket that ended in the gap
    check_eq(notifications(ins(s, t0 + 960, 14)), sorted([f"{s}:1m", f"{s}:15m"]))
    check_eq(psql(f"SELECT count(*) FROM candles WHERE symbol = '{s}' AND timeframe = '5m'"),
             "2")  # [t0, t0+5m) and [t0+5m, t0+10m); [t0+15m, ..) is forming
    check_eq(psql(f"SELECT open || '/' || high || '/' || close || '/' || volume FROM candles "
                  f"WHERE symbol = '{s}' AND timeframe = '5m' AND open_time = '{iso(t0)}'"),
             "10/13/13/3")  # minutes t0, t0+1 and the late t0+2


def predictions_1m(svc):
    st, _, body = svc.get("/api/predictions?timeframe=1m&symbols=" + ",".join(DEMO))
    check_eq(st, 200, str(body))
    return {p["symbol"]: p for p in body["predictions"]}, body


@test
def demo_feed_moves_every_1m_prediction():
    setup()
    demo_dir = os.path.join(ROOT, "data", "demo")
    check(os.path.isdir(demo_dir), "data/demo is missing")
    p = cli("seed", "--demo", "--behind", "3",
            env={"PREDICTD_DEMO_DIR": demo_dir})
    check("4 demo symbols seeded" in p.stderr, p.stderr)
    models = tempfile.mkdtemp(prefix="predictd-feed-models-")
    cli("train", "--symbol", ",".join(DEMO), "--per-symbol", "--timeframe", "1m",
        "--models-dir", models, "--seed", "1",
        timeout=900)
    svc = Service(models, env={"PREDICTD_FEED": "demo", "PREDICTD_DEMO_DIR": demo_dir,
                               "PREDICTD_DEMO_STEP_MS": "500"})
    try:
        first, _ = predictions_1m(svc)
        check_eq(sorted(first), ["ADABTC", "DASHBTC", "ETHBTC", "XLMBTC"])
        start = {s: p["candle_time"] for s, p in first.items()}
        deadline = time.time() + 120
        moved = False
        while time.time() < deadline:
            now, _ = predictions_1m(svc)
            moved = all(s in now and now[s]["candle_time"] > start[s] and not now[s]["stale"]
                        for s in start)
            if moved:
                break
            time.sleep(0.5)
        check(moved, f"1m predictions did not all move and turn fresh: {start} -> "
                     f"{ {s: (p['candle_time'], p['stale']) for s, p in now.items()} }\n"
              + svc.logs()[-3000:])
        for p in now.values():
            check(any(w.startswith("demo data: real 2018 candles") for w in p["warnings"]),
                  f"a demo answer does not say so: {p['warnings']}")
        st, _, status = svc.get("/health/status")
        check_eq(st, 200)
        check_eq(status["feed"], "demo-replay")
        f = status["components"]["feed"]
        check(f["state"] in ("connected", "lagging"), str(f))
        check(f["candles"] > 0 and "data/demo" in f["source"], str(f))
        st, _, text = svc.get("/metrics")
        text = text.decode() if isinstance(text, bytes) else text
        check('predictd_feed_up{feed="demo-replay"} 1' in text, "no predictd_feed_up 1 in /metrics")
        check('predictd_feed_candles_total{feed="demo-replay"}' in text, "no feed counters")
        if shutil.which("promtool"):
            p = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                               text=True, timeout=60)
            check_eq((p.stdout + p.stderr).strip(), "", "promtool check metrics with a feed")
        # one symbol's timeframes agree: the last closed 5m candle is the roll-up
        # of its 1m candles
        for sym in start:
            row = psql(f"SELECT d.close = (SELECT close FROM candles b WHERE b.symbol = d.symbol "
                       f"AND b.timeframe = '1m' AND b.open_time < d.open_time + interval '5 min' "
                       f"ORDER BY b.open_time DESC LIMIT 1) FROM candles d "
                       f"WHERE d.symbol = '{sym}' AND d.timeframe = '5m' "
                       f"ORDER BY d.open_time DESC LIMIT 1 OFFSET 1")
            check_eq(row, "t", f"{sym}: 5m close is not its last 1m close")
    finally:
        svc.stop()
    # the seed is idempotent: a second one writes nothing
    p = cli("seed", "--if-empty", "--demo", env={"PREDICTD_DEMO_DIR": demo_dir})
    check("already stored" in p.stderr, p.stderr)


@test
def prometheus_rules_check_and_pass_their_tests():
    if not shutil.which("promtool"):
        raise Skip("promtool is not installed (make deps installs Debian's prometheus)")
    d = os.path.join(ROOT, "docker", "prometheus")
    for args in (["check", "rules", "predictd.rules.yml"],
                 ["test", "rules", "predictd.rules.test.yml"]):
        p = subprocess.run(["promtool", *args], cwd=d, capture_output=True, text=True, timeout=120)
        check(p.returncode == 0 and "SUCCESS" in p.stdout, p.stdout + p.stderr)


@test
def a_bad_feed_spec_stops_serve():
    setup()
    models = tempfile.mkdtemp(prefix="predictd-feed-models-")
    try:
        Service(models, env={"PREDICTD_FEED": "nosuchexchange:BTCUSDT"})
        check(False, "serve started with an unknown feed")
    except AssertionError as e:
        check("unknown feed 'nosuchexchange'" in str(e), str(e))


if __name__ == "__main__":
    run_tests()
