"""The CLI's own paths that no server test reaches: `predictd backtest`
printing its table and storing its figures (the table and the stored JSON
must say the same numbers), and the argument errors of backtest, import,
seed, migrate and features: each exits 2 (usage) with a message naming the
problem, never 0 and never a crash. The real binary against this file's
PostgreSQL database."""
import json
import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from harness import (ROOT, check, check_eq, check_in, cli, need_services,  # noqa: E402
                     prepare_database, psql, run_tests, test, train)

MODELS = tempfile.mkdtemp(prefix="predictd-cli-models-")
SYM, TF = "BTCUSDT", "1h"
state = {}


def setup():
    if "ready" not in state:
        need_services()
        prepare_database(symbols=(SYM,), timeframes=(TF,), count=1200)
        train(MODELS, SYM, TF)
        state["ready"] = True


def usage_error(args, words, env=None):
    """Runs predictd with args; it must exit 2 and say each of words on stderr."""
    p = cli(*args, env=env, check_rc=False)
    check_eq(p.returncode, 2, f"predictd {' '.join(args)}: {p.stderr}")
    for w in words:
        check_in(w, p.stderr, f"predictd {' '.join(args)}")
    check_eq(p.stdout, "", f"predictd {' '.join(args)} printed to stdout")


@test
def backtest_table_and_stored_figures_agree():
    setup()
    p = cli("backtest", SYM, TF, "--cost-bps", "7.5", "--models-dir", MODELS, timeout=900)
    out = p.stdout
    m = re.search(r"== backtest (\w+)/(\w+) v(\d+), (\S+) \.\. (\S+), ([\d.]+) bps", out)
    check(m is not None, out)
    check_eq(m.group(1), SYM)
    check_eq(m.group(2), TF)
    check_eq(m.group(6), "7.5")
    c = re.search(r"candles (\d+), predictions (\d+), failed (\d+)", out)
    check(c is not None, out)
    for row in ("model", "persistence", "calibration"):
        check_in(row, out)
    # the stored row is this run, with the figures the table printed
    rows = psql(f"SELECT model_version || '|' || cost_bps || '|' || figures::text FROM backtests"
                f" WHERE symbol = '{SYM}' AND timeframe = '{TF}'").strip().splitlines()
    check_eq(len(rows), 1, rows)
    version, cost, figures = rows[0].split("|", 2)
    fig = json.loads(figures)
    check_eq(int(version), int(m.group(3)))
    check_eq(float(cost), 7.5)
    check_eq(fig["candles"], int(c.group(1)))
    check_eq(fig["predictions"], int(c.group(2)))
    check_eq(fig["failed"], int(c.group(3)))
    check(fig["predictions"] > 0, fig)
    model_row = [ln for ln in out.splitlines() if ln.strip().startswith("model ")]
    check_eq(len(model_row), 1, out)
    check_eq(int(model_row[0].split()[1]), fig["model"]["calls"], (model_row, fig["model"]))
    # --json prints the same figures; --no-store adds no row
    j = cli("backtest", SYM, TF, "--cost-bps", "7.5", "--json", "--no-store",
            "--models-dir", MODELS, timeout=900)
    again = json.loads(j.stdout)
    check_eq(again["predictions"], fig["predictions"])
    check_eq(again["model"]["calls"], fig["model"]["calls"])
    check_eq(psql(f"SELECT count(*) FROM backtests WHERE symbol = '{SYM}'").strip(), "1")
    # a version that does not exist is an error that names it
    p = cli("backtest", SYM, TF, "--version", "99", "--models-dir", MODELS, check_rc=False)
    check_eq(p.returncode, 1, p.stderr)
    check_in("version 99", p.stderr)
    p = cli("backtest", "backtest", SYM, TF, "--help", check_rc=False)
    check_eq(p.returncode, 0)
    check_in("usage: predictd backtest", p.stdout)


@test
def backtest_of_a_version_the_registry_does_not_keep_loaded():
    # the registry loads what serves (the newest) and labelled versions; an
    # older one is read from disk for the backtest, and a corrupt one is
    # refused with the verifier's reason
    import shutil
    setup()
    series = os.path.join(MODELS, SYM, TF)
    if not os.path.isdir(os.path.join(series, "2")):
        train(MODELS, SYM, TF)
    versions = sorted(int(v) for v in os.listdir(series) if v.isdigit())
    check(len(versions) >= 2, versions)
    old, new = versions[0], versions[-1]
    figs = {}
    for v in (old, new):
        j = cli("backtest", SYM, TF, "--version", str(v), "--json", "--no-store",
                "--models-dir", MODELS, timeout=900)
        figs[v] = json.loads(j.stdout)
        check_eq(figs[v]["version"], v, figs[v])
        check(figs[v]["predictions"] > 0, figs[v])
    bad = max(versions) + 1
    shutil.copytree(os.path.join(series, str(old)), os.path.join(series, str(bad)))
    try:
        model = os.path.join(series, str(bad), "model.pb")
        with open(model, "r+b") as f:
            f.truncate(os.path.getsize(model) // 2)
        p = cli("backtest", SYM, TF, "--version", str(bad), "--no-store", "--models-dir", MODELS,
                check_rc=False)
        check_eq(p.returncode, 1, p.stderr)
        check_in("model", p.stderr)
        check_eq(p.stdout, "", p.stdout)
    finally:
        shutil.rmtree(os.path.join(series, str(bad)))


@test
def backtest_entries_written_or_the_command_fails():
    """--entries writes one JSON line per prediction; a file that cannot be
    written (a full disk: /dev/full; a directory) fails the command (exit 1,
    the reason on stderr) instead of reporting success."""
    setup()
    out = os.path.join(MODELS, "entries.jsonl")
    p = cli("backtest", SYM, TF, "--json", "--no-store", "--entries", out, "--models-dir", MODELS,
            timeout=900)
    fig = json.loads(p.stdout)
    with open(out) as f:
        rows = [json.loads(line) for line in f]
    check(len(rows) > 0, rows[:3])
    check_eq(len([r for r in rows if r["direction"] in ("LONG", "SHORT")]), fig["model"]["calls"])
    for bad, why in (("/dev/full", "No space left on device"), (MODELS, "Is a directory")):
        p = cli("backtest", SYM, TF, "--json", "--no-store", "--entries", bad,
                "--models-dir", MODELS, check_rc=False, timeout=900)
        check_eq(p.returncode, 1, p.stderr)
        check_in(f"cannot write {bad}: {why}", p.stderr)


@test
def backtest_of_an_empty_range_says_so():
    """A range with no closed candle after the model's window (--from after
    the last candle, --to before the first): exit 1, the reason on stderr,
    nothing printed and nothing stored."""
    setup()
    before = psql(f"SELECT count(*) FROM backtests WHERE symbol = '{SYM}'").strip()
    for arg in (("--from", "2100-01-01T00:00:00Z"), ("--to", "1971-01-01T00:00:00Z")):
        p = cli("backtest", SYM, TF, *arg, "--models-dir", MODELS, check_rc=False)
        check_eq(p.returncode, 1, (arg, p.stderr))
        check_in(f"{SYM} {TF} has no closed candle in the range with", p.stderr, arg)
        check_eq(p.stdout, "", arg)
    check_eq(psql(f"SELECT count(*) FROM backtests WHERE symbol = '{SYM}'").strip(), before)


@test
def backtest_argument_errors():
    usage_error(["backtest", SYM], ["usage"])
    usage_error(["backtest", SYM, TF, "extra"], ["unexpected argument 'extra'"])
    usage_error(["backtest", SYM, TF, "--version", "x"], ["--version", "'x' is not a version"])
    usage_error(["backtest", SYM, TF, "--version", "0"], ["is not a version"])
    usage_error(["backtest", SYM, TF, "--cost-bps", "-1"], ["--cost-bps", "[0, 10000)"])
    usage_error(["backtest", SYM, TF, "--fee-bps", "1e5"], ["--fee-bps"])
    usage_error(["backtest", SYM, TF, "--from", "yesterday"], ["--from", "not a time"])
    usage_error(["backtest", SYM, TF, "--bogus", "1"], ["unknown option '--bogus'"])
    usage_error(["backtest", SYM, TF, "--to"], ["--to needs a value"])
    usage_error(["backtest", "btc", TF], ["bad symbol or timeframe"])
    usage_error(["backtest", SYM, "2h"], ["bad symbol or timeframe"])
    usage_error(["backtest", SYM, TF], ["needs a database"], env={"PREDICTD_DATABASE_URL": ""})


@test
def import_seed_migrate_features_argument_errors():
    csv = os.path.join(MODELS, "few.csv")
    with open(csv, "w") as f:
        f.write("open_time,open,high,low,close,volume\n0,1,2,0.5,1.5,10\n")
    usage_error(["import", csv, "--symbol", "btc", "--timeframe", "1h"], ["symbol 'btc'"])
    usage_error(["import", csv, "--symbol", SYM, "--timeframe", "7m"], ["timeframe '7m'"])
    usage_error(["import", csv], ["usage"])
    p = cli("import", "--help", check_rc=False)
    check_eq(p.returncode, 0)
    check_in("import", p.stdout)
    usage_error(["migrate", "extra"], ["unexpected argument"])
    usage_error(["migrate", "--nope"], ["unknown option"])
    p = cli("migrate", "--help", check_rc=False)
    check_eq(p.returncode, 0)
    for args, word in ((["seed", "--count", "0"], "--count"),
                       (["seed", "--symbols", "btc"], "bad symbol 'btc'"),
                       (["seed", "--timeframes", "9m"], "bad timeframe '9m'")):
        p = cli(*args, check_rc=False)
        check(p.returncode != 0, f"predictd {' '.join(args)} exited 0")
        check_in(word, p.stderr)
    # no database: each data command says it needs one, none crashes
    for args in (["migrate"], ["seed", "--symbols", SYM, "--timeframes", TF, "--count", "10"],
                 ["import", csv, "--symbol", SYM, "--timeframe", "1h"]):
        p = cli(*args, env={"PREDICTD_DATABASE_URL": ""}, check_rc=False)
        check_eq(p.returncode, 1, f"predictd {' '.join(args)}: {p.stderr}")
        check_in("PREDICTD_DATABASE_URL", p.stderr)
    # features: a window outside what the features need, and a file that is not there
    p = cli("features", csv, "--window", "3", check_rc=False)
    check(p.returncode != 0, p.stderr)
    check_in("window", p.stderr)
    p = cli("features", os.path.join(MODELS, "absent.csv"), check_rc=False)
    check(p.returncode != 0, p.stderr)
    check_in("absent.csv", p.stderr)


@test
def import_from_stdin_and_seed_if_empty():
    setup()
    # "-" reads the CSV from stdin; the rows land exactly as given
    rows = "".join(f"{1704067200 + 3600 * i},{100 + i}.5,{102 + i},{99 + i},{101 + i}.25,{i}\n"
                   for i in range(5))
    cli("import", "-", "--symbol", "STDINUSDT", "--timeframe", "1h",
        stdin="open_time,open,high,low,close,volume\n" + rows)
    check_eq(psql("SELECT count(*) || ' ' || min(open) || ' ' || max(close) FROM candles"
                  " WHERE symbol = 'STDINUSDT' AND timeframe = '1h'").strip(), "5 100.5 105.25")
    # a bad row on stdin: the error names the line, nothing more is stored
    p = cli("import", "-", "--symbol", "STDINUSDT", "--timeframe", "1h", check_rc=False,
            stdin="1704085200,1,2,0.5,1.5,3\n1704088800,1,2,0.5,abc,3\n")
    check_eq(p.returncode, 1, p.stderr)
    check_in("line 2: close is not a number", p.stderr)
    check_eq(psql("SELECT count(*) FROM candles WHERE symbol = 'STDINUSDT'").strip(), "5")
    # --if-empty with candles stored: nothing to do, exit 0, nothing written
    before = psql("SELECT count(*) FROM candles").strip()
    p = cli("seed", "--if-empty", "--symbols", "SEEDUSDT", "--timeframes", "1h", "--count", "10")
    check_in("already stored; nothing to do", p.stderr)
    check_eq(psql("SELECT count(*) FROM candles").strip(), before)
    # --seed makes the series deterministic: the same seed, the same closes
    cli("seed", "--symbols", "SEEDUSDT", "--timeframes", "1h", "--count", "20", "--seed", "7")
    a = psql("SELECT string_agg(close::text, ',' ORDER BY open_time) FROM candles"
             " WHERE symbol = 'SEEDUSDT'")
    cli("seed", "--symbols", "SEEDUSDT", "--timeframes", "1h", "--count", "20", "--seed", "7")
    check_eq(psql("SELECT string_agg(close::text, ',' ORDER BY open_time) FROM candles"
                  " WHERE symbol = 'SEEDUSDT'"), a)
    check_eq(psql("SELECT count(*) FROM candles WHERE symbol = 'SEEDUSDT'").strip(), "20")


@test
def models_eval_matches_the_numpy_reference_and_refuses_bad_rows():
    """`predictd models eval DIR` (the exporters' parity check) against
    the numpy forward pass of tools/predictd_model.py on the same files, and
    its refusals of rows of the wrong width or with text in them."""
    setup()
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import numpy as np
    import predictd_model as pm
    vdir = os.path.join(MODELS, SYM, TF, "1")
    p = pm.pb2()
    m, sc = p.Model(), p.Scaler()
    with open(os.path.join(vdir, "model.pb"), "rb") as f:
        m.ParseFromString(f.read())
    with open(os.path.join(vdir, "scaler.pb"), "rb") as f:
        sc.ParseFromString(f.read())
    width = len(m.features)
    rng = np.random.default_rng(5)
    X = np.array(sc.mean) + np.array(sc.scale) * rng.normal(size=(4, width))
    want = pm.to_canonical(pm.reference_predict(m, sc, X), list(m.classes))
    text = "\n".join(",".join(repr(float(v)) for v in row) for row in X) + "\n\n"
    out = cli("models", "eval", vdir, stdin=text).stdout.split()
    check_eq(len(out), 4, out)
    for got, w in zip(out, want):
        vals = [float(v) for v in got.split(",")]
        for a, b in zip(vals, w):
            check(abs(a - b) <= 1e-9, (vals, list(w)))
    short = ",".join(["0.5"] * (width - 1)) + "\n"
    r = cli("models", "eval", vdir, stdin=short, check_rc=False)
    check_eq(r.returncode, 1, r.stderr)
    check_in(f"line 1: {width - 1} values, expected {width}", r.stderr)
    r = cli("models", "eval", vdir, stdin=text.split("\n")[0] + "\n" + "1,abc\n", check_rc=False)
    check_eq(r.returncode, 1, r.stderr)
    check_in(f"line 2: expected {width} numbers", r.stderr)
    check_eq(len(r.stdout.split()), 1, r.stdout)  # the good first row was answered
    r = cli("models", "eval", os.path.join(MODELS, "nowhere"), stdin="", check_rc=False)
    check(r.returncode != 0, r.stderr)
    usage_error(["models", "frobnicate"], ["usage"])
    usage_error(["models", "list", "extra"], ["usage"])
    usage_error(["predict", SYM], ["usage"])
    # predict for a series with candles but no model: the API's error JSON, exit 1
    cli("seed", "--symbols", "NOMODELUSDT", "--timeframes", "1h", "--count", "10")
    r = cli("predict", "NOMODELUSDT", "1h", "--models-dir", MODELS, check_rc=False)
    check_eq(r.returncode, 1, r.stderr)
    body = json.loads(r.stdout)
    check_eq(body["status"], "error")
    check_eq(body["error"]["code"], "no_model")


if __name__ == "__main__":
    run_tests()
