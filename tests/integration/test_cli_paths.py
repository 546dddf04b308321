"""The command-line binary's failure paths a user or operator hits, each
checked for its exit status (0 done, 1 failed, 2 bad usage, 3 trained below
the baselines) and for the message that says what went wrong: argument
errors of fetch, ingest, train, seed, import, features and models;
configuration from flags and the environment (numbers, booleans, log
levels); a database that is not there (a closed port) or does not accept
the user; a model repository that cannot be written; trades files with
late trades; `models verify/eval/list` on good, corrupt and partial
version directories; `train` outcomes (below baseline without --force,
--dry-run, an MLP, --per-symbol, --all over an empty table).

The real binary against this file's PostgreSQL database (tests/run)."""
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from harness import (BIN, DB_URL, ROOT, Service, Skip, check, check_eq, check_in,  # noqa: E402
                     cli, need_services, prepare_database, psql, run_tests, test, train)

TMP = tempfile.mkdtemp(prefix="predictd-clipaths-")
MODELS = os.path.join(TMP, "models")
SYM, TF = "BTCUSDT", "1h"
# nothing listens on port 1: every connection is refused at once
DOWN_URL = "postgresql://postgres@127.0.0.1:1/predictd?connect_timeout=2"
state = {}


def setup():
    if "ready" not in state:
        need_services()
        prepare_database(symbols=(SYM,), timeframes=(TF,), count=1200)
        train(MODELS, SYM, TF)
        state["ready"] = True


def run(*args, env=None, stdin=None, timeout=600):
    return cli(*args, env=env, check_rc=False, stdin=stdin, timeout=timeout)


def expect(args, rc, words, env=None, stdin=None, stdout_empty=True, timeout=600):
    """predictd args must exit rc and say each of words on stderr."""
    p = run(*args, env=env, stdin=stdin, timeout=timeout)
    what = f"predictd {' '.join(args)}"
    check_eq(p.returncode, rc, f"{what}: stderr {p.stderr[-1500:]}")
    for w in words:
        check_in(w, p.stderr, what)
    if stdout_empty:
        check_eq(p.stdout, "", f"{what} printed to stdout")
    return p


def write(path, text, mode=None):
    with open(path, "w") as f:
        f.write(text)
    if mode is not None:
        os.chmod(path, mode)
    return path


# ---------------------------------------------------------------------------
# configuration: flags and environment


@test
def configuration_values_are_checked_whatever_their_source():
    # every refusal is exit 2 and names the flag and its variable
    for env, args, words in (
            ({"PREDICTD_THREADS": "many"}, [], ["--threads (PREDICTD_THREADS)", "'many'"]),
            ({"PREDICTD_RELOAD_INTERVAL": "12s"}, [], ["--reload-interval", "'12s'"]),
            ({}, ["--max-connections", "0"], ["--max-connections", "1..100000"]),
            ({}, ["--binance-renew=1"], ["--binance-renew", "5..86000"]),
            ({}, ["--drain-timeout", "99999999999999999999"], ["--drain-timeout"]),
            ({"PREDICTD_CACHE": "perhaps"}, [], ["--cache (PREDICTD_CACHE)", "on or off"]),
            ({}, ["--reuse-port"], ["--reuse-port needs a value"]),
            ({}, ["--log-level", "loud"], ["'loud' is not debug, info, warn or error"]),
            ({"PREDICTD_LISTEN": "127.0.0.1:65536"}, [], ["'127.0.0.1:65536' is not host:port"]),
            ({}, ["--listen", "[::1]:"], ["is not host:port"]),
            ({}, ["--listen=:8080"], ["is not host:port"]),
            ({}, ["--listen", "[]:8080"], ["is not host:port"]),
            ({}, ["--listen", "h" * 300 + ":80"], ["is not host:port"]),
            ({}, ["--listen", "example.org:80"], ["'example.org' is not an IPv4 or IPv6"])):
        expect(["version", *args], 2, ["predictd version: ", *words], env=env)
    # the accepted spellings of a boolean and each log level: the command runs
    for v in ("true", "yes", "1", "false", "no", "0", "on", "off"):
        p = run("version", "--cache", v)
        check_eq(p.returncode, 0, f"--cache {v}: {p.stderr}")
        check_in("predictd ", p.stdout)
    for level in ("debug", "info", "warn", "error"):
        p = run("version", "--log-level", level, "--log-format", "json", "--listen", "[::1]:0")
        check_eq(p.returncode, 0, f"--log-level {level}: {p.stderr}")
    # an empty variable is the default, a flag wins over the variable
    p = run("version", env={"PREDICTD_THREADS": ""})
    check_eq(p.returncode, 0, p.stderr)
    p = run("version", "--threads", "3", env={"PREDICTD_THREADS": "bogus"})
    check_eq(p.returncode, 2, "the variable is read before the flag replaces it")


@test
def top_level_usage_and_version():
    p = run()
    check_eq(p.returncode, 2)
    check_in("usage: predictd COMMAND", p.stderr)
    for args in (["help"], ["-h"], ["--help"]):
        p = run(*args)
        check_eq(p.returncode, 0, args)
        check_in("usage: predictd COMMAND", p.stdout)
        check_in("PREDICTD_LISTEN", p.stdout)  # the options table
    for args in (["-V"], ["--version"]):
        p = run(*args)
        check_eq(p.returncode, 0, args)
        check(p.stdout.startswith("predictd "), p.stdout)
    expect(["frobnicate"], 2, ["unknown command 'frobnicate'"])
    expect(["--frobnicate"], 2, ["unknown option '--frobnicate'"])
    expect(["version", "now"], 2, ["unexpected argument 'now'", "usage: predictd version"])


# ---------------------------------------------------------------------------
# fetch and ingest


@test
def fetch_and_ingest_argument_errors_name_the_argument():
    expect(["fetch"], 2, ["SYMBOL is required", "usage: predictd fetch"])
    expect(["fetch", SYM], 2, ["--from is required"])
    expect(["fetch", SYM, "--from", "2024-01-01", "--bogus"], 2, ["unknown option '--bogus'"])
    expect(["fetch", SYM, "--from"], 2, ["--from needs a value"])
    expect(["fetch", SYM, "--from", "2024-01-01", "--to"], 2, ["--to needs a value"])
    expect(["fetch", SYM, "ETHUSDT", "--from", "2024-01-01"], 2,
           ["unexpected argument 'ETHUSDT'"])
    expect(["fetch", "btc", "--from", "2024-01-01"], 2, ["symbol 'btc' must match"])
    expect(["fetch", SYM, "--from=2024-02-30x"], 2, ["--from/--to must be"])
    expect(["fetch", SYM, "--from=2024-01-01", "--to=soon"], 2, ["--from/--to must be"])
    # of several options not understood, the first is named
    p = expect(["fetch", SYM, "--from", "2024-01-01", "--bogus", "--other"], 2,
               ["unknown option '--bogus'"])
    check("--other" not in p.stderr, p.stderr)
    expect(["fetch", SYM, "--from=2024-01-02", "--to=2024-01-01"], 2,
           ["--to must be after --from"])
    expect(["fetch", SYM, "--from", "2024-01-01"], 2, ["PREDICTD_DATABASE_URL"],
           env={"PREDICTD_DATABASE_URL": ""})
    p = run("fetch", "--help")
    check_eq(p.returncode, 0)
    check_in("usage: predictd fetch", p.stdout)
    expect(["ingest", "now"], 2, ["unexpected argument 'now'", "usage: predictd ingest"])
    p = run("ingest", "-h")
    check_eq(p.returncode, 0)
    check_in("usage: predictd ingest", p.stdout)
    expect(["ingest"], 2, ["PREDICTD_FEED (or --feed) is not set"], env={"PREDICTD_FEED": ""})
    expect(["ingest", "--feed", "demo"], 2, ["PREDICTD_DATABASE_URL (or --database-url)"],
           env={"PREDICTD_DATABASE_URL": ""})


@test
def fetch_from_an_exchange_that_is_not_there_fails_with_the_reason():
    setup()
    # a REST endpoint nothing listens on: exit 1, the symbol and the reason, nothing stored
    p = expect(["fetch", "NOEXUSDT", "--from", "2024-01-01", "--to", "2024-01-01T01:00:00Z",
                "--binance-rest-url", "http://127.0.0.1:1"], 1, ["predictd fetch: NOEXUSDT: "],
               timeout=120)
    check("connect" in p.stderr.lower(), p.stderr[-600:])
    check_eq(psql("SELECT count(*) FROM candles WHERE symbol = 'NOEXUSDT'"), "0")


@test
def ingest_with_an_unknown_feed_says_which_feeds_exist():
    setup()
    p = expect(["ingest", "--feed", "nosuchfeed:X"], 2, ["unknown feed 'nosuchfeed'"],
               stdout_empty=True)
    check_in("known:", p.stderr)


@test
def ingest_runs_the_demo_feed_until_sigterm():
    setup()
    import signal
    import time
    demo_dir = os.path.join(ROOT, "data", "demo")
    p = cli("seed", "--demo", "--behind", "3", env={"PREDICTD_DEMO_DIR": demo_dir})
    check_in("4 demo symbols seeded", p.stderr)
    count = "SELECT count(*) FROM candles WHERE symbol = 'ETHBTC' AND timeframe = '1m'"
    before = int(psql(count))
    e = dict(os.environ, PREDICTD_DATABASE_URL=DB_URL, PREDICTD_FEED="demo",
             PREDICTD_DEMO_DIR=demo_dir, PREDICTD_DEMO_STEP_MS="100",
             PREDICTD_LOG_FORMAT="text")
    log_path = os.path.join(TMP, "ingest.log")
    with open(log_path, "w") as log:
        proc = subprocess.Popen([BIN, "ingest"], env=e, stdout=log, stderr=log)
        try:
            deadline = time.time() + 60
            while time.time() < deadline and int(psql(count)) < before + 3:
                check(proc.poll() is None, f"ingest exited {proc.returncode}")
                time.sleep(0.1)
            check(int(psql(count)) >= before + 3, "the demo feed wrote no minute")
        finally:
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(timeout=60)
    text = open(log_path).read()
    check_eq(rc, 0, text[-1500:])
    check_in("feed demo running", text)
    check_in("SIGTERM: stopping", text)
    check(not [ln for ln in text.splitlines() if "Sanitizer" in ln or "runtime error" in ln],
          text[-1500:])


# ---------------------------------------------------------------------------
# the database missing, refusing or unreachable


@test
def data_commands_with_the_database_down_say_so():
    setup()
    csv = write(os.path.join(TMP, "down.csv"),
                "open_time,open,high,low,close,volume\n1704067200,1,2,0.5,1.5,10\n")
    for args in (["migrate", "--migrations-dir", os.path.join(ROOT, "db")],
                 ["seed", "--symbols", "DOWNUSDT", "--timeframes", "1h", "--count", "10"],
                 ["seed", "--if-empty", "--symbols", "DOWNUSDT", "--timeframes", "1h"],
                 ["import", csv, "--symbol", "DOWNUSDT", "--timeframe", "1h"]):
        p = expect(args, 1, ["database unavailable"], env={"PREDICTD_DATABASE_URL": DOWN_URL},
                   timeout=120)
        check_in("port 1", p.stderr)  # the log line says where it tried
    # train: the series it was loading and the reason
    expect(["train", "--symbol", SYM, "--timeframe", TF, "--models-dir", MODELS,
            "--database-url", DOWN_URL], 1, [f"{SYM}/{TF}", "database unavailable"],
           timeout=120)
    expect(["train", "--all", "--timeframe", TF, "--models-dir", MODELS,
            "--database-url", DOWN_URL], 1, ["listing symbols", "database unavailable"],
           timeout=120)
    # backtest and predict with a model but no database: exit 1, the reason
    expect(["backtest", SYM, TF, "--models-dir", MODELS], 1, ["database unavailable"],
           env={"PREDICTD_DATABASE_URL": DOWN_URL}, timeout=120)
    p = run("predict", SYM, TF, "--models-dir", MODELS, env={"PREDICTD_DATABASE_URL": DOWN_URL},
            timeout=120)
    check_eq(p.returncode, 1, p.stderr)
    body = json.loads(p.stdout)
    check_eq(body["status"], "error")
    check_eq(body["error"]["code"], "data_unavailable", body)


@test
def a_malformed_or_refused_database_url_is_named():
    setup()
    bad = "postgresql://%zz@/"
    for args in (["migrate"], ["seed", "--count", "5", "--symbols", "XXUSDT", "--timeframes", "1h"],
                 ["backtest", SYM, TF, "--models-dir", MODELS],
                 ["predict", SYM, TF, "--models-dir", MODELS]):
        p = run(*args, env={"PREDICTD_DATABASE_URL": bad})
        check_eq(p.returncode, 1, f"{args}: {p.stderr}")
        check_in("malformed", p.stderr, args)
        check_in(f"predictd {args[0]}: ", p.stderr, args)
    expect(["train", "--symbol", SYM, "--timeframe", TF, "--database-url", bad], 2,
           ["predictd train: database URL: invalid argument", "malformed"])
    # a role the server does not know: the server's refusal reaches the user
    nouser = DB_URL.replace("postgres@", "nosuchrole@", 1)
    p = expect(["migrate", "--migrations-dir", os.path.join(ROOT, "db")], 1,
               ["database unavailable"], env={"PREDICTD_DATABASE_URL": nouser})
    check_in("nosuchrole", p.stderr)


@test
def migrate_names_a_missing_migrations_directory():
    setup()
    missing = os.path.join(TMP, "no-migrations")
    expect(["migrate", "--migrations-dir", missing], 1, ["not found", missing])
    # a directory with a broken migration: the error, and the schema is untouched
    d = os.path.join(TMP, "badmig")
    os.makedirs(d, exist_ok=True)
    write(os.path.join(d, "9999_broken.sql"), "CREATE TABLE this is not sql;\n")
    p = run("migrate", "--migrations-dir", d)
    check_eq(p.returncode, 1, p.stderr)
    check("syntax" in p.stderr.lower() or "9999_broken" in p.stderr, p.stderr[-800:])


# ---------------------------------------------------------------------------
# seed, import, features


@test
def seed_refuses_bad_numbers_as_usage_errors():
    for args, word in ((["--count", "12x"], "--count must be 1..1000000"),
                       (["--count", "2000000"], "--count must be 1..1000000"),
                       (["--seed", "-4"], "--seed: '-4' is not an unsigned integer"),
                       (["--seed=abc"], "--seed: 'abc'"),
                       (["--demo", "--behind", "soon"], "--behind must be 0..100000"),
                       (["--demo", "--behind", "100001"], "--behind must be 0..100000"),
                       (["--symbols", "BTCUSDT,b-t"], "bad symbol 'b-t'"),
                       (["--timeframes", "1h,2h"], "bad timeframe '2h'")):
        expect(["seed", *args], 2, [word])
    expect(["seed", "--frobnicate"], 2, ["unknown option '--frobnicate'", "usage: predictd seed"])
    expect(["seed", "stray"], 2, ["unexpected argument 'stray'"])
    p = run("seed", "--help")
    check_eq(p.returncode, 0)
    check_in("--demo", p.stdout)


@test
def seed_skips_derived_series_and_reports_missing_demo_files():
    setup()
    # a base 1m series makes 1h derived: seeding 1h of it is refused by name
    cli("seed", "--symbols", "DERUSDT", "--timeframes", "1m", "--count", "120")
    p = cli("seed", "--symbols", "DERUSDT", "--timeframes", "1h", "--count", "5")
    check_in("DERUSDT 1h: derived from DERUSDT 1m, not seeded", p.stderr)
    # 120 minutes derive 2 or 3 hours; the 5 synthetic ones were not written
    n1h = int(psql("SELECT count(*) FROM candles WHERE symbol = 'DERUSDT' AND timeframe = '1h'"))
    check(1 <= n1h <= 3, n1h)
    missing = os.path.join(TMP, "nowhere.csv.gz")
    p = expect(["seed", "--demo-files", missing], 1, ["predictd seed: "])
    check_in("nowhere.csv.gz", p.stderr)


@test
def import_argument_and_file_errors():
    setup()
    candles = write(os.path.join(TMP, "c.csv"),
                    "open_time,open,high,low,close,volume\n1704067200,1,2,0.5,1.5,10\n")
    trades = write(os.path.join(TMP, "t.csv"),
                   "time,id,side,price,amount\n1704067200000,1,buy,10,1\n")
    expect(["import", candles, "--symbol", SYM, "--timeframe", "1h", "--bogus"], 2,
           ["unknown option '--bogus'", "usage: predictd import"])
    expect(["import", candles, "--symbol", "IMPUSDT"], 2, ["holds candles: --timeframe is required"])
    expect(["import", trades, "--symbol", "IMPUSDT", "--timeframe", "15m"], 2,
           ["is a trades file: it makes 1m candles, not 15m"])
    # a directory, and a file this process cannot read as a file
    expect(["import", TMP, "--symbol", "IMPUSDT", "--timeframe", "1h"], 1,
           [f"predictd import: {TMP}: Is a directory"])
    expect(["import", os.path.join(TMP, "absent.csv"), "--symbol", "IMPUSDT", "--timeframe",
            "1h"], 1, ["absent.csv: not found"])
    # a trades file with a bad row: its line, nothing stored
    bad = write(os.path.join(TMP, "tb.csv"),
                "time,id,side,price,amount\n1704067200000,1,buy,10,1\n1704067201000,2,buy,x,1\n")
    expect(["import", bad, "--symbol", "IMPUSDT"], 1, ["tb.csv: line 3"])
    check_eq(psql("SELECT count(*) FROM candles WHERE symbol = 'IMPUSDT'"), "0")
    # trades with the database unset: the parse happens, the store is refused
    expect(["import", trades, "--symbol", "IMPUSDT"], 1, ["PREDICTD_DATABASE_URL"],
           env={"PREDICTD_DATABASE_URL": ""})
    expect(["import", trades, "--symbol", "IMPUSDT"], 1, ["database unavailable",
                                                          "nothing was stored"],
           env={"PREDICTD_DATABASE_URL": DOWN_URL}, timeout=120)


@test
def import_reads_through_a_symlink_and_from_a_pipe():
    setup()
    rows = "".join(f"{1704067200 + 3600 * i},{100 + i},{102 + i},{99 + i},{101 + i},{i}\n"
                   for i in range(4))
    real = write(os.path.join(TMP, "real.csv"), "open_time,open,high,low,close,volume\n" + rows)
    link = os.path.join(TMP, "link.csv")
    os.symlink(real, link)
    p = cli("import", link, "--symbol", "LINKUSDT", "--timeframe", "1h")
    check_in("4 candles of LINKUSDT 1h stored", p.stderr)
    # a named pipe (what bash's <(zcat file.csv.gz) hands over)
    fifo = os.path.join(TMP, "pipe.csv")
    os.mkfifo(fifo)
    import threading

    def feed():
        with open(fifo, "w") as f:
            f.write("open_time,open,high,low,close,volume\n" + rows)
    t = threading.Thread(target=feed)
    t.start()
    p = run("import", fifo, "--symbol", "PIPEUSDT", "--timeframe", "1h", timeout=60)
    t.join(timeout=60)
    check_eq(p.returncode, 0, p.stderr)
    check_eq(psql("SELECT count(*) || ' ' || max(close) FROM candles WHERE symbol = 'PIPEUSDT'"
                  " AND timeframe = '1h'"), "4 104")


@test
def trades_import_with_a_late_trade_corrects_its_minute():
    setup()
    t0 = 1704067200000  # 2024-01-01T00:00Z
    rows = ["time,id,side,price,amount",
            f"{t0 + 1000},1,buy,100,1",
            f"{t0 + 2000},2,sell,104,2",
            f"{t0 + 125000},3,buy,101,1",  # minute 2 (minute 1 has no trade)
            f"{t0 + 30000},4,buy,99,0.5",  # late: minute 0, after minute 2 was seen
            f"{t0 + 30000},4,buy,99,0.5"]  # duplicate id: ignored
    path = write(os.path.join(TMP, "late.csv"), "\n".join(rows) + "\n")
    p = cli("import", path, "--symbol", "LATEUSDT", "--timeframe", "1m")  # 1m: what trades make
    # two corrections: minute 0 takes the late trade, and the flat minute 1
    # (written at minute 0's old close) follows its new close
    check_in("5 trades (1 duplicates ignored, 2 corrections) -> 3 1m candles of LATEUSDT", p.stderr)
    got = psql("SELECT string_agg(open || '/' || high || '/' || low || '/' || close || '/' ||"
               " volume, ' ' ORDER BY open_time) FROM candles"
               " WHERE symbol = 'LATEUSDT' AND timeframe = '1m'")
    # minute 0 holds the late trade (low 99, close 99: the last by time), the
    # empty minute 1 is flat at the previous close, minute 2 its own trade
    check_eq(got, "100/104/99/99/3.5 99/99/99/99/0 101/101/101/101/1")


@test
def features_refuses_bad_windows_and_specs():
    csv = write(os.path.join(TMP, "f.csv"),
                "open_time,open,high,low,close,volume\n"
                + "".join(f"{1704067200 + 3600 * i},{100 + i},{101 + i},{99 + i},{100.5 + i},5\n"
                          for i in range(60)))
    expect(["features", csv, "--window", "50x"], 2, ["--window must be"])
    expect(["features", csv, "--window", "1000000"], 2, ["--window must be"])
    expect(["features", csv, "--spec", "rsi:14,nope"], 2, ["predictd features: ", "nope"])
    expect(["features", csv, "extra.csv"], 2, ["unexpected argument 'extra.csv'"])
    expect(["features", csv, "--no"], 2, ["unknown option '--no'"])
    p = run("features", "--help")
    check_eq(p.returncode, 0)
    check_in("usage: predictd features", p.stdout)
    # a spec list from stdin, a window just big enough: one row per full window
    text = open(csv).read()
    p = run("features", "-", "--spec", "rsi:14", "--window", "15", stdin=text)
    check_eq(p.returncode, 0, p.stderr)
    lines = p.stdout.strip().splitlines()
    check_eq(lines[0], "open_time,rsi:14")
    check_eq(len(lines), 1 + 60 - 15 + 1, p.stdout[:300])
    # a CSV that does not parse: exit 1 with the reason
    expect(["features", "-"], 1, ["predictd features: "], stdin="a,b\n1,2\n")


# ---------------------------------------------------------------------------
# models list / verify / eval


def version_dir(v="1"):
    return os.path.join(MODELS, SYM, TF, v)


@test
def models_verify_good_corrupt_and_partial_versions():
    setup()
    p = cli("models", "verify", version_dir())
    check_eq(p.stdout.strip(), f"{version_dir()}: ok")
    # a copy with one byte of the model changed: the hash check names the file
    bad = os.path.join(TMP, "corrupt", SYM, TF, "1")
    shutil.copytree(version_dir(), bad)
    with open(os.path.join(bad, "model.pb"), "r+b") as f:
        f.seek(10)
        b = f.read(1)
        f.seek(10)
        f.write(bytes([b[0] ^ 0xFF]))
    p = expect(["models", "verify", bad], 1, ["predictd models verify: ", "model.pb"])
    # partial: the scaler missing
    part = os.path.join(TMP, "partial", SYM, TF, "1")
    shutil.copytree(version_dir(), part)
    os.unlink(os.path.join(part, "scaler.pb"))
    expect(["models", "verify", part], 1, ["scaler.pb"])
    expect(["models", "eval", part], 1, ["predictd models: ", "scaler.pb"], stdin="1\n")
    # eval: a row with too many values, blank lines skipped, spaces allowed
    import re
    width = None
    r = run("models", "eval", version_dir(), stdin="0.5\n")
    m = re.search(r"(\d+) values, expected (\d+)", r.stderr)
    check(m is not None, r.stderr)
    width = int(m.group(2))
    row = ", ".join(["0.25"] * width)
    r = run("models", "eval", version_dir(), stdin=f"\n{row}\n\n{row}\r\n")
    check_eq(r.returncode, 0, r.stderr)
    outs = r.stdout.split()
    check_eq(len(outs), 2, r.stdout)
    check_eq(outs[0], outs[1])
    probs = [float(x) for x in outs[0].split(",")]
    check(abs(sum(probs) - 1) < 1e-9 and all(0 <= q <= 1 for q in probs), probs)
    r = run("models", "eval", version_dir(), stdin=row + ",0.25\n")
    check_eq(r.returncode, 1)
    check_in(f"line 1: expected {width} numbers", r.stderr)
    r = run("models", "eval", version_dir(), stdin="1e999" + ",0" * (width - 1) + "\n")
    check_eq(r.returncode, 1, r.stdout)
    check_in("line 1:", r.stderr)
    # a NaN parses as a number; the model refuses it, after the good rows before it
    r = run("models", "eval", version_dir(), stdin=f"{row}\n" + "nan" + ",0" * (width - 1) + "\n")
    check_eq(r.returncode, 1, r.stdout)
    check_in("predictd models eval: line 2: invalid argument", r.stderr)
    check_eq(len(r.stdout.split()), 1, r.stdout)
    # usage
    expect(["models", "verify"], 2, ["usage: predictd models"])
    expect(["models", "eval", "a", "b"], 2, ["unexpected argument 'b'"])
    p = run("models", "--help")
    check_eq(p.returncode, 0)
    check_in("models verify DIR", p.stdout)


@test
def models_list_on_empty_partial_and_corrupt_repositories():
    setup()
    repo = os.path.join(TMP, "listrepo")
    shutil.copytree(os.path.join(MODELS, SYM), os.path.join(repo, SYM))
    # a version being written (hidden) is no version; a corrupt one is FAILED
    os.makedirs(os.path.join(repo, SYM, TF, ".2.tmp-123"))
    bad = os.path.join(repo, SYM, TF, "3")
    shutil.copytree(version_dir(), bad)
    write(os.path.join(bad, "MANIFEST"), "not a manifest\n")
    p = cli("models", "list", "--models-dir", repo)
    lines = [ln.split() for ln in p.stdout.splitlines()[1:]]
    by_version = {ln[2]: ln for ln in lines if ln[:2] == [SYM, TF]}
    check_eq(sorted(by_version), ["1", "3"], p.stdout)
    check_eq(by_version["1"][3:5], ["available", "yes"], p.stdout)
    check_eq(by_version["3"][3], "FAILED", p.stdout)
    # empty: the header and a line saying so
    empty = os.path.join(TMP, "emptyrepo")
    os.makedirs(empty, exist_ok=True)
    p = cli("models", "list", "--models-dir", empty)
    check_in(f"(no models under {empty})", p.stdout)
    # a file where the repository should be
    f = write(os.path.join(TMP, "afile"), "x")
    expect(["models", "list", "--models-dir", f], 1, [f"predictd models: cannot read {f}"],
           stdout_empty=True)


# ---------------------------------------------------------------------------
# train


@test
def train_argument_errors_exit_2_and_name_the_flag():
    base = ["train", "--models-dir", os.path.join(TMP, "never")]
    for args, words in (
            (["stray"], ["unexpected argument 'stray'"]),
            (["--=x"], ["unknown option '--=x'"]),
            (["--" + "x" * 70], ["unknown option"]),
            (["--force=yes"], ["--force takes no value"]),
            (["--all=1"], ["--all takes no value"]),
            (["--epochs"], ["--epochs needs a value"]),
            (["--colour", "blue"], ["unknown option '--colour'"]),
            (["--timeframe", "1h", "--symbol", SYM, "--epochs", "-3"], ["--epochs: "]),
            (["--timeframe", "1h", "--symbol", SYM, "--cost-bps", "10000"], ["--cost-bps: "]),
            (["--timeframe", "1h", "--symbol", SYM, "--cost-bps=nan"], ["--cost-bps: "]),
            (["--timeframe", "1h", "--symbols", "lower"], ["--symbols: "]),
            (["--timeframe", "1h", "--symbol", SYM, "--all"], ["either --symbol"]),
            (["--timeframe", "1h", "--all", "--target", "_default"],
             ["--target does not go with --all"]),
            (["--timeframe", "1h", "--symbol", SYM, "--val-frac", "0.5", "--test-frac", "0.5"],
             ["predictd train: "]),
            (["--timeframe", "1h", "--symbol", SYM, "--kind", "mlp", "--hidden", "0"],
             ["--hidden"])):
        expect(base + args, 2, words)
    expect(base + ["--timeframe", "1h", "--symbol", SYM], 2,
           ["no database: set --database-url or PREDICTD_DATABASE_URL"],
           env={"PREDICTD_DATABASE_URL": ""})
    p = run("train", "-h")
    check_eq(p.returncode, 0)
    check_in("exit status: 0 trained", p.stdout)


@test
def train_below_baseline_exits_3_and_publishes_nothing():
    setup()
    out = os.path.join(TMP, "gate")
    # 3000 seeded hours (a random walk, seed 42): the fit learns something
    # but beats neither baseline on log-loss
    cli("seed", "--symbols", "GATEUSDT", "--timeframes", TF, "--count", "3000")
    args = ["train", "--symbol", "GATEUSDT", "--timeframe", TF, "--models-dir", out,
            "--seed", "1", "--epochs", "30"]
    p = run(*args, timeout=900)
    check_eq(p.returncode, 3, p.stderr[-1500:])
    check_in("predictd train: GATEUSDT/1h: below_baseline: not published", p.stderr)
    check_in("against majority", p.stderr)
    check_in("below_baseline", p.stdout)  # the metrics table's result line says it
    check(not os.path.exists(os.path.join(out, "GATEUSDT", TF, "1")), "published below baseline")
    # --dry-run: trained and reported, nothing written, exit 0
    p = run(*args, "--dry-run", timeout=900)
    check_eq(p.returncode, 0, p.stderr[-1500:])
    check_in("== GATEUSDT/1h", p.stdout)
    check(not os.path.exists(os.path.join(out, "GATEUSDT", TF, "1")), "a dry run published")
    # --force: published, verified, and its answers say below_baseline
    p = run(*args, "--force", timeout=900)
    check_eq(p.returncode, 0, p.stderr[-1500:])
    check_eq(cli("models", "verify", os.path.join(out, "GATEUSDT", TF, "1")).returncode, 0)
    r = run("predict", "GATEUSDT", TF, "--models-dir", out)
    check_eq(r.returncode, 0, r.stderr)
    pred = json.loads(r.stdout)["prediction"]
    check_eq(pred["direction"], "NO_TRADE")
    check_eq(pred["no_trade_reason"], "below_baseline")
    # a fit that learns nothing (1200 hours, 5 epochs): exit 1, says why
    p = run("train", "--symbol", SYM, "--timeframe", TF, "--models-dir", out, "--seed", "1",
            "--epochs", "5", timeout=900)
    check_eq(p.returncode, 1, p.stderr[-1500:])
    check_in(f"predictd train: {SYM}/{TF}: degenerate fit", p.stderr)
    check(not os.path.exists(os.path.join(out, SYM)), "a degenerate fit was published")


@test
def train_mlp_per_symbol_and_cost_publish_verified_versions():
    setup()
    cli("seed", "--symbols", "ETHUSDT", "--timeframes", TF, "--count", "1200")
    out = os.path.join(TMP, "mlp")
    p = run("train", "--symbols", f"{SYM},ETHUSDT", "--per-symbol", "--timeframe", TF,
            "--models-dir", out, "--seed", "2", "--kind", "mlp", "--hidden", "8",
            "--epochs", "3", "--cost-bps", "4.5", "--force", "--verbose", timeout=900)
    check_eq(p.returncode, 0, p.stderr[-1500:])
    for sym in (SYM, "ETHUSDT"):
        d = os.path.join(out, sym, TF, "1")
        check_eq(cli("models", "verify", d).returncode, 0)
        check_in(f"== {sym}/{TF}", p.stdout)
    # the cost reaches the served policy: predict reports it
    r = run("predict", SYM, TF, "--models-dir", out)
    check_eq(r.returncode, 0, r.stderr)
    check_eq(json.loads(r.stdout)["prediction"]["model"]["cost_bps"], 4.5)


@test
def train_promote_if_better_compares_with_the_default_model():
    setup()
    cli("seed", "--symbols", "POOLAUSDT,POOLBUSDT", "--timeframes", TF, "--count", "1500",
        "--seed", "9")
    out = os.path.join(TMP, "promote")
    common = ["--timeframe", TF, "--models-dir", out, "--seed", "3", "--epochs", "30",
              "--force"]
    # two symbols pooled: the _default model of the timeframe
    p = run("train", "--symbols", "POOLAUSDT,POOLBUSDT", *common, timeout=900)
    check_eq(p.returncode, 0, p.stderr[-1500:])
    check_in("== _default/1h", p.stdout)
    check(os.path.isdir(os.path.join(out, "_default", TF, "1")), os.listdir(out))
    # POOLAUSDT alone, published only if better than what serves it now (the default)
    p = run("train", "--symbol", "POOLAUSDT", "--promote-if-better", *common, timeout=900)
    check_eq(p.returncode, 0, p.stderr[-1500:])
    check_in("vs serving _default v1", p.stdout)
    result = [ln for ln in p.stdout.splitlines() if ln.startswith("result")]
    check_eq(len(result), 1, p.stdout)
    published = os.path.isdir(os.path.join(out, "POOLAUSDT", TF, "1"))
    if "not promoted (not better)" in result[0]:
        check(not published, "rejected, yet published")
    else:
        check_in("promoted: log-loss", result[0])
        check_in("published v1", result[0])
        check(published, "promoted, yet not published")
    # --target names the series explicitly
    p = run("train", "--symbol", "POOLBUSDT", "--target", "_default", *common, timeout=900)
    check_eq(p.returncode, 0, p.stderr[-1500:])
    check(os.path.isdir(os.path.join(out, "_default", TF, "2")), "no _default v2")


@test
def train_interrupted_exits_130_and_publishes_nothing():
    setup()
    import signal
    import time
    out = os.path.join(TMP, "interrupted")
    e = dict(os.environ, PREDICTD_DATABASE_URL=DB_URL, PREDICTD_LOG_FORMAT="text")
    # many epochs of an MLP: the fit is still running when SIGINT arrives
    proc = subprocess.Popen([BIN, "train", "--symbol", SYM, "--timeframe", TF, "--models-dir",
                             out, "--kind", "mlp", "--hidden", "64,64", "--epochs", "100000",
                             "--patience", "100000", "--force"], env=e,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    err = b""
    try:
        # read stderr under a deadline (a blocking readline would wait for
        # ever on a run that prints nothing), until the fit has started
        deadline = time.time() + 300
        while b"(fit)" not in err and time.time() < deadline:
            ready, _, _ = select.select([proc.stderr], [], [], 1.0)
            if ready:
                chunk = os.read(proc.stderr.fileno(), 65536)
                if not chunk:
                    break
                err += chunk
        check_in("(fit)", err.decode(errors="replace"), "the fit never started")
        proc.send_signal(signal.SIGINT)
        _, rest_err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = (err + rest_err).decode(errors="replace")
    check_eq(proc.returncode, 130, err[-1500:])
    check_in(f"predictd train: {SYM}/{TF}: interrupted; nothing published", err)
    check(not os.path.exists(os.path.join(out, SYM)), "an interrupted run published")


@test
def train_into_an_unwritable_repository_fails_and_says_where():
    setup()
    blocker = write(os.path.join(TMP, "repo-is-a-file"), "x")
    p = run("train", "--symbol", SYM, "--timeframe", TF, "--models-dir", blocker, "--seed", "1",
            "--epochs", "3", "--force", timeout=900)
    check_eq(p.returncode, 1, p.stderr[-1500:])
    check_in(f"predictd train: {SYM}/{TF}: ", p.stderr)
    check(os.path.isfile(blocker) and open(blocker).read() == "x", "the file was touched")
    # --all over a migrated database without candles
    admin = DB_URL.rsplit("/", 1)[0] + "/postgres"
    subprocess.run(["psql", admin.split("?")[0], "-qtAX", "-c",
                    "DROP DATABASE IF EXISTS t_clipaths_empty"], capture_output=True, timeout=60)
    subprocess.run(["psql", admin.split("?")[0], "-qtAX", "-c",
                    "CREATE DATABASE t_clipaths_empty"], check=True, capture_output=True,
                   timeout=60)
    empty = DB_URL.rsplit("/", 1)[0] + "/t_clipaths_empty?connect_timeout=3"
    cli("migrate", "--migrations-dir", os.path.join(ROOT, "db"),
        env={"PREDICTD_DATABASE_URL": empty})
    expect(["train", "--all", "--timeframe", "1d", "--models-dir", os.path.join(TMP, "none"),
            "--database-url", empty], 1, ["no symbol has 1d candles"])
    # seed --if-empty on that empty table seeds (what `make run` relies on)
    p = cli("seed", "--if-empty", "--symbols", "EMPTYUSDT", "--timeframes", "1d", "--count", "7",
            env={"PREDICTD_DATABASE_URL": empty})
    check_in("EMPTYUSDT 1d: 7 candles", p.stderr)
    p = cli("seed", "--if-empty", "--symbols", "EMPTYUSDT", "--timeframes", "1d", "--count", "7",
            env={"PREDICTD_DATABASE_URL": empty})
    check_in("7 candles already stored; nothing to do", p.stderr)
    # a symbol without candles: named, nothing published
    expect(["train", "--symbol", "NOCANDLEUSDT", "--timeframe", TF, "--models-dir",
            os.path.join(TMP, "none"), "--force"], 1, ["NOCANDLEUSDT"], stdout_empty=False)
    check(not os.path.exists(os.path.join(TMP, "none", "NOCANDLEUSDT")), "published")


@test
def backtest_entries_file_and_its_errors():
    setup()
    entries = os.path.join(TMP, "entries.jsonl")
    p = cli("backtest", SYM, TF, "--models-dir", MODELS, "--entries", entries, "--no-store",
            "--from", "2000-01-01", timeout=900)
    check_in(f"== backtest {SYM}/{TF} v1", p.stdout)
    rows = [json.loads(ln) for ln in open(entries)]
    check(rows, "no entries written")
    for r in rows:
        check(r["direction"] in ("LONG", "SHORT", "NO_TRADE"), r)
        check_eq(r["version"], 1)
    # an entries path that cannot be written: the command fails and says why
    # (the figures are printed before the entries are written)
    p = run("backtest", SYM, TF, "--models-dir", MODELS, "--no-store",
            "--entries", os.path.join(TMP, "no", "such", "dir", "e.jsonl"), timeout=900)
    check_eq(p.returncode, 1, p.stderr)
    check_in("cannot write", p.stderr)
    check_in("No such file or directory", p.stderr)
    # a series without a model: named, not "model 0"
    cli("seed", "--symbols", "NOMODUSDT", "--timeframes", TF, "--count", "50")
    expect(["backtest", "NOMODUSDT", TF, "--models-dir", MODELS], 1,
           [f"no verified model for NOMODUSDT {TF}"])
    expect(["predict", SYM, TF, "extra"], 2, ["unexpected argument 'extra'",
                                               "usage: predictd predict"])
    # a repository that is a file
    f = write(os.path.join(TMP, "repo-file-bt"), "x")
    expect(["backtest", SYM, TF, "--models-dir", f], 1, ["predictd backtest: "])


# ---------------------------------------------------------------------------
# serve: what it does without its database, feed or repository; the key file


@test
def serve_with_the_database_unreachable_stays_up_and_is_not_ready():
    """README (Readiness): a replica with no database and nothing cached is
    not ready and says why; live stays 200; predictions are 503; the
    process still drains and exits 0."""
    setup()
    svc = Service(MODELS, env={"PREDICTD_DATABASE_URL": DOWN_URL}, redis=False,
                  name="db-unreachable")
    try:
        check_eq(svc.get("/health/live")[0], 200)
        status, _, body = svc.get("/health/ready")
        check_eq(status, 503, body)
        check_eq(body["error"]["code"], "not_ready")
        check_in("database", body["error"]["message"].lower())
        status, _, body = svc.get(f"/api/predictions/{SYM}?timeframe={TF}")
        check_eq(status, 503, body)
        check_eq(body["error"]["code"], "data_unavailable", body)
        status, _, body = svc.get("/health/status")
        check_eq(status, 200, body)
        check_eq(body["ready"], False)
        check_eq(body["components"]["database"]["state"], "down")
        check(body["components"]["database"]["last_error"], body["components"]["database"])
        # the trainer could not read its jobs table: said in the log and the status
        check_in("background training is unavailable", svc.logs())
        training = [j for j in body["components"]["jobs"] if j["name"] == "training"]
        check_eq(len(training), 1, body["components"]["jobs"])
        check_in("did not start", training[0]["last_error"] or "", training[0])
    finally:
        check_eq(svc.stop(), 0)


@test
def serve_refuses_a_feed_it_cannot_run():
    setup()
    for env, needle in (({"PREDICTD_FEED": "demo", "PREDICTD_DATABASE_URL": ""},
                         "PREDICTD_FEED needs a database"),
                        ({"PREDICTD_FEED": "carrierpigeon:X"}, "unknown feed 'carrierpigeon'")):
        e = {"PREDICTD_MODELS_DIR": MODELS, "PREDICTD_LISTEN": "127.0.0.1:0",
             "PREDICTD_API_KEY_FILE": os.path.join(TMP, "no-key"), "PREDICTD_LOG_FORMAT": "text"}
        e.update(env)
        p = run("serve", env=e, timeout=120)
        check_eq(p.returncode, 2, f"{env}: {p.stderr[-800:]}")
        check_in(needle, p.stderr)


@test
def serve_with_a_missing_repository_warns_and_is_not_ready():
    setup()
    missing = os.path.join(TMP, "no-repo-yet")
    svc = Service(missing, name="missing-repo",
                  env={"PREDICTD_API_KEY_FILE": os.path.join(TMP, "no-key")})
    try:
        check_in(f"model repository {missing} could not be read; will retry", svc.logs())
        status, _, body = svc.get("/health/ready")
        check_eq(status, 503, body)
        check_in("no model", body["error"]["message"].lower())
        # the repository appears: a SIGHUP rescan serves it
        shutil.copytree(MODELS, missing)
        import signal
        import time
        svc.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 30
        while time.time() < deadline and svc.get("/health/ready", validate=False)[0] != 200:
            time.sleep(0.1)
        check_eq(svc.get("/health/ready")[0], 200, "the rescan did not serve the repository")
    finally:
        check_eq(svc.stop(), 0)
    p = run("serve", "--help")
    check_eq(p.returncode, 0)
    check_in("usage: predictd serve", p.stdout)
    check_in("PREDICTD_LISTEN", p.stdout)
    expect(["serve", "now"], 2, ["unexpected argument 'now'", "usage: predictd serve"])


@test
def key_files_the_process_cannot_use_stop_the_start():
    setup()
    base = {"PREDICTD_MODELS_DIR": MODELS, "PREDICTD_LISTEN": "127.0.0.1:0",
            "PREDICTD_LOG_FORMAT": "text"}
    p = run("serve", env=dict(base, PREDICTD_API_KEY="k" * 4097), timeout=60)
    check_eq(p.returncode, 2, p.stderr[-600:])
    check_in("PREDICTD_API_KEY: the key must be 16 to 4096 printable characters", p.stderr)
    check("k" * 100 not in p.stderr, "the key was echoed")
    long_key = write(os.path.join(TMP, "long.key"), "k" * 5000 + "\n", 0o600)
    ctl_key = write(os.path.join(TMP, "ctl.key"), "abcdefgh\x01ijklmnopqrstu\n", 0o600)
    for path, needle in ((long_key, "longer than 4096 characters"),
                         (ctl_key, "16 to 4096 printable characters")):
        p = run("serve", env=dict(base, PREDICTD_API_KEY_FILE=path), timeout=60)
        check_eq(p.returncode, 2, p.stderr[-600:])
        check_in(path, p.stderr)
        check_in(needle, p.stderr)
    # trailing CR, LF and spaces are not part of the key: the key works
    key = "Z" * 32
    crlf = write(os.path.join(TMP, "crlf.key"), key + " \r\n", 0o600)
    svc = Service(MODELS, env={"PREDICTD_API_KEY_FILE": crlf}, name="crlf-key")
    try:
        check_eq(svc.get("/admin/models", headers={"X-API-Key": key})[0], 200)
        check_eq(svc.get("/admin/models", headers={"X-API-Key": key + " "}, validate=False)[0],
                 401)
    finally:
        check_eq(svc.stop(), 0)
    # a key file this process cannot read: the message names its uid and gid
    if os.geteuid() != 0:
        raise Skip("the unreadable key file needs root to run predictd as nobody")
    private = write(os.path.join(TMP, "root-only.key"), "Y" * 32 + "\n", 0o600)
    e = dict(os.environ)
    e.update(base, PREDICTD_API_KEY_FILE=private, PREDICTD_DATABASE_URL="",
             PREDICTD_MODELS_DIR=TMP)
    p = subprocess.run(["runuser", "-u", "nobody", "--", BIN, "serve"], env=e,
                       capture_output=True, text=True, timeout=60)
    check_eq(p.returncode, 2, p.stderr[-600:])
    check_in(f"key file {private}: not readable by this process (uid 65534, gid 65534)",
             p.stderr)


@test
def keygen_refuses_to_overwrite_or_write_nowhere():
    path = os.path.join(TMP, "admin.key")
    p = cli("keygen", "--api-key-file", path, "--print")
    key = p.stdout.strip()
    check_eq(len(key), 64)
    check_eq(stat_mode(path), 0o600)
    expect(["keygen", "--api-key-file", path], 1, ["File exists", "use --force to replace it"])
    check_eq(open(path).read().strip(), key, "the key was replaced without --force")
    expect(["keygen", "--api-key-file", os.path.join(TMP, "no", "dir", "k")], 1,
           ["No such file or directory"])
    # a symlink is not followed (O_NOFOLLOW): a planted link cannot redirect the key
    link = os.path.join(TMP, "link.key")
    os.symlink(os.path.join(TMP, "elsewhere.key"), link)
    p = expect(["keygen", "--force", "--api-key-file", link], 1, ["predictd keygen: "])
    check(not os.path.exists(os.path.join(TMP, "elsewhere.key")), "the link was followed")
    p = run("keygen", "--help")
    check_eq(p.returncode, 0)
    check_in("usage: predictd keygen", p.stdout)


def stat_mode(path):
    return os.stat(path).st_mode & 0o7777


if __name__ == "__main__":
    sys.exit(run_tests())
