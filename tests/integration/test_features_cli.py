"""`predictd features` against TA-Lib: the golden series and
TA-Lib's outputs generated into tests/golden/talib_golden.h are read here,
the series is written as CSV, and the CLI's feature row for the last candle
(a window of the whole series, as TA-Lib sees it) must equal TA-Lib's last
values to 1e-9. Also the sliding-window table shape and the CLI's errors."""
import csv
import io
import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from harness import ROOT, check, check_eq, cli, run_tests, test, SHARED_DATA, Skip  # noqa: E402

GOLDEN = os.path.join(ROOT, "tests", "golden", "talib_golden.h")


def arrays():
    text = open(GOLDEN).read()
    out = {}
    for name, body in re.findall(r"static const double (\w+)\[\d+\] = \{(.*?)\};", text, re.S):
        out[name] = [float(x) for x in body.replace("\n", " ").split(",") if x.strip()]
    cases = {}
    for fn, series, ip, nb, outs in re.findall(
            r'\{"(\w+)", (\d+), \{([^}]*)\}, ([0-9.]+), \d+, \d+, \{([^}]*)\}\}', text):
        key = (fn, int(series), tuple(int(x) for x in ip.split(",")), float(nb))
        cases[key] = [out[o.strip()] for o in outs.split(",") if o.strip() != "NULL"]
    return out, cases


def write_series(a, prefix):
    f = tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False)
    f.write("open_time,open,high,low,close,volume\n")
    for i in range(len(a[prefix + "close"])):
        f.write(f"{1700000000 + 3600 * i - 1700000000 % 3600},{a[prefix + 'open'][i]!r},"
                f"{a[prefix + 'high'][i]!r},{a[prefix + 'low'][i]!r},"
                f"{a[prefix + 'close'][i]!r},{a[prefix + 'volume'][i]!r}\n")
    f.close()
    return f.name


def near(a, b, tol=1e-9):
    return abs(a - b) <= tol * max(1.0, abs(b))


@test
def last_row_equals_talib():
    a, cases = arrays()
    path = write_series(a, "golden_main_")
    specs = ["rsi:14", "natr:14", "macd:12:26:9", "macd_signal:12:26:9", "macd_hist:12:26:9",
             "ema_dist:12", "ema_dist:26", "bb_pctb:20:2", "bb_width:20:2"]
    p = cli("features", path, "--spec", ",".join(specs), "--window", "120")
    rows = list(csv.reader(io.StringIO(p.stdout)))
    check_eq(rows[0], ["open_time"] + specs)
    check_eq(len(rows), 2, "one candle has a full 120-candle window")
    got = dict(zip(specs, map(float, rows[1][1:])))
    close = a["golden_main_close"][-1]
    rsi = cases[("rsi", 0, (14, 0, 0), 0.0)][0][-1]
    natr = cases[("natr", 0, (14, 0, 0), 0.0)][0][-1]
    macd, sig, hist = (o[-1] for o in cases[("macd", 0, (12, 26, 9), 0.0)])
    ema12 = cases[("ema", 0, (12, 0, 0), 0.0)][0][-1]
    ema26 = cases[("ema", 0, (26, 0, 0), 0.0)][0][-1]
    up, mid, lo = (o[-1] for o in cases[("bbands", 0, (20, 0, 0), 2.0)])
    want = {"rsi:14": rsi, "natr:14": natr, "macd:12:26:9": macd / close,
            "macd_signal:12:26:9": sig / close, "macd_hist:12:26:9": hist / close,
            "ema_dist:12": (close - ema12) / close, "ema_dist:26": (close - ema26) / close,
            "bb_pctb:20:2": (close - lo) / (up - lo), "bb_width:20:2": (up - lo) / mid}
    for k, w in want.items():
        check(near(got[k], w), f"{k}: predictd {got[k]!r} vs TA-Lib {w!r}")


@test
def sliding_table_and_default_spec():
    a, _ = arrays()
    path = write_series(a, "golden_main_")
    p = cli("features", path)  # default spec, smallest window (60)
    rows = list(csv.reader(io.StringIO(p.stdout)))
    check_eq(len(rows[0]), 15)
    check_eq(rows[0][1], "rsi:14")
    check_eq(len(rows) - 1, 120 - 60 + 1)
    for r in rows[1:]:
        check(all(v not in ("nan", "inf", "-inf") for v in r[1:]), r)
    # stdin works the same
    p2 = cli("features", "-", stdin=open(path).read())
    check_eq(p2.stdout, p.stdout)


@test
def cli_errors():
    a, _ = arrays()
    path = write_series(a, "golden_main_")
    p = cli("features", path, "--spec", "rsi:14,foo:3", check_rc=False)
    check_eq(p.returncode, 2)
    check("foo:3" in p.stderr, p.stderr)
    p = cli("features", path, "--spec", "rsi:14", "--window", "5", check_rc=False)
    check_eq(p.returncode, 2)
    bad = tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False)
    bad.write("open_time,open,high,low,close,volume\n2020-01-01T00:00:00Z,1,0.5,2,1,1\n")
    bad.close()
    p = cli("features", bad.name, check_rc=False)
    check(p.returncode != 0)
    check("line 2" in p.stderr, p.stderr)


@test
def real_minute_candles_give_finite_features():
    if not SHARED_DATA:
        raise Skip("../shared/data is not present")
    p = cli("features", os.path.join(SHARED_DATA, "UNITTEST-BTC_1m_freqtrade.csv"),
            "--window", "200")
    rows = p.stdout.strip().split("\n")
    check_eq(len(rows) - 1, 13681 - 199)
    check("nan" not in p.stdout and "inf" not in p.stdout)


if __name__ == "__main__":
    sys.exit(run_tests())
