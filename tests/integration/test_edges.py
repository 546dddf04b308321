"""Behaviours no other test reached (found by the coverage run): Redis hung,
answering errors, needing AUTH and a database number, corrupt cache
entries; broken model versions (corrupt scaler, oversized MANIFEST, no
features, a label pointing at a failed version); a series shorter than the
window; import of misaligned rows, of an unreadable file, with the database
down; serve with no database; `predictd models` listing; `predictd train`'s
error paths; the `*` CORS origin; a 5xx answer that is an error, not a crash;
the loop's start-up catch-up of symbols served by `_default`; a model
trained for another timeframe.
Everything runs the real binary against real PostgreSQL (and real or
deliberately misbehaving Redis servers on loopback)."""
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (REDIS_URL, ROOT, Service, check, check_eq, check_in,  # noqa: E402
                     cli, need_services, prepare_database, psql, run_tests, services, test,
                     train)

sys.path.insert(0, os.path.join(ROOT, "tools"))
import predictd_model as pm  # noqa: E402

MODELS = tempfile.mkdtemp(prefix="predictd-edges-models-")
SERIES = os.path.join(MODELS, "BTCUSDT", "15m")
KEY = "e" * 40
state = {}


def setup():
    if "ready" not in state:
        need_services()
        prepare_database(symbols=("BTCUSDT", "ETHUSDT"), timeframes=("15m",), count=1500)
        train(MODELS, "BTCUSDT", "15m")
        state["ready"] = True


def prediction(svc, symbol="BTCUSDT", label=None):
    q = f"&label={label}" if label else ""
    status, _, body = svc.get(f"/api/predictions/{symbol}?timeframe=15m{q}")
    check_eq(status, 200, body)
    return body["prediction"]


def numbers(p):
    return (p["candle_time"], p["probabilities"], p["entry"], p["stop_loss"],
            [t["price"] for t in p["take_profits"]])


def reference_numbers():
    """The prediction of a server without Redis or caches: what every
    Redis misbehaviour must still answer."""
    if "ref" not in state:
        svc = Service(MODELS, env={"PREDICTD_CACHE": "off"}, redis=False, name="reference")
        state["ref"] = numbers(prediction(svc))
        check_eq(svc.stop(), 0)
    return state["ref"]


def copy_version(mutate, series=SERIES):
    """Publishes a copy of version 1 as the next version after mutate(dir)
    (a hidden directory renamed into place, as users publish)."""
    have = [int(d) for d in os.listdir(series) if d.isdigit()]
    new = max(have) + 1
    tmp = os.path.join(series, f".tmp-{new}")
    shutil.copytree(os.path.join(series, "1"), tmp)
    mutate(tmp)
    os.rename(tmp, os.path.join(series, str(new)))
    return new, os.path.join(series, str(new))


def rewrite_manifest(d):
    lines = []
    for name in ("model.pb", "scaler.pb"):
        with open(os.path.join(d, name), "rb") as f:
            lines.append(f"{hashlib.sha256(f.read()).hexdigest()}  {name}\n")
    with open(os.path.join(d, "MANIFEST"), "w") as f:
        f.write("".join(lines))


# ---------------------------------------------------------------------------
# Redis


class FakeRedis:
    """A TCP server on a port the kernel chose: mode "hang" accepts and never
    answers; mode "error" answers every command with -ERR."""

    def __init__(self, mode):
        self.mode = mode
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.commands = 0
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            if self.mode == "error":
                threading.Thread(target=self._errors, args=(c,), daemon=True).start()

    def _errors(self, c):
        while True:
            try:
                data = c.recv(65536)
            except OSError:
                return
            if not data:
                return
            # one error per command: each RESP command starts with '*'
            n = max(1, data.count(b"\r\n*") + (1 if data.startswith(b"*") else 0))
            self.commands += n
            try:
                c.sendall(b"-ERR the fake server refuses everything\r\n" * n)
            except OSError:
                return

    def close(self):
        self.stopped = True
        self.sock.close()
        for c in self.conns:
            c.close()


@test
def redis_hung_or_answering_errors_still_serves_the_same_numbers():
    setup()
    want = reference_numbers()
    for mode in ("hang", "error"):
        fake = FakeRedis(mode)
        try:
            svc = Service(MODELS, env={"PREDICTD_REDIS_URL": f"redis://127.0.0.1:{fake.port}/0"},
                          redis=False, name=f"redis-{mode}")
            for _ in range(3):
                check_eq(numbers(prediction(svc)), want, f"Redis {mode}")
            status, _, body = svc.get("/health/status")
            check_eq(status, 200, body)
            check_eq(svc.stop(), 0)
            if mode == "error":
                check(fake.commands > 0, "predictd never talked to the fake Redis")
        finally:
            fake.close()


def start_redis(*args):
    """A private redis-server on a free port (retried when the port is taken
    before it binds); returns (process, port)."""
    for _ in range(5):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        p = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port),
                              "--save", "", "--appendonly", "no", *args],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for _ in range(100):
            if p.poll() is not None:
                break
            r = subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True,
                               text=True)
            if r.stdout.strip() in ("PONG", "NOAUTH Authentication required."):
                return p, port
            time.sleep(0.05)
        p.kill()
        p.wait()
    raise AssertionError("could not start a private redis-server")


def redis_keys(port, db, password=None):
    args = ["redis-cli", "-p", str(port), "-n", str(db), "--no-auth-warning"]
    if password:
        args += ["-a", password]
    r = subprocess.run(args + ["--scan", "--pattern", "predictd:*"], capture_output=True,
                       text=True, timeout=30)
    return [k for k in r.stdout.split() if k]


@test
def redis_with_auth_and_a_database_number():
    setup()
    want = reference_numbers()
    proc, port = start_redis("--requirepass", "sekrit-pass-123")
    try:
        svc = Service(MODELS, env={"PREDICTD_REDIS_URL":
                                   f"redis://:sekrit-pass-123@127.0.0.1:{port}/3"},
                      redis=False, name="redis-auth")
        check_eq(numbers(prediction(svc)), want)
        check_eq(numbers(prediction(svc)), want)
        check(redis_keys(port, 3, "sekrit-pass-123"), "nothing cached in database 3")
        check_eq(redis_keys(port, 0, "sekrit-pass-123"), [], "keys outside database 3")
        check("sekrit-pass-123" not in svc.logs(), "the password is in the log")
        check_eq(svc.stop(), 0)
        # a wrong password: the cache is off, the answers are the same, the
        # log says why (and does not print the password)
        svc = Service(MODELS, env={"PREDICTD_REDIS_URL":
                                   f"redis://:wrong-pass-456@127.0.0.1:{port}/3"},
                      redis=False, name="redis-bad-auth")
        check_eq(numbers(prediction(svc)), want)
        logs = svc.logs()
        check("AUTH" in logs, logs[-1500:])
        check("wrong-pass-456" not in logs, "the password is in the log")
        check_eq(svc.stop(), 0)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@test
def corrupt_cache_entries_are_recomputed_not_served():
    # Every predictd:* entry in Redis (candles and predictions) overwritten
    # with garbage: a new process still answers the numbers of a server
    # without Redis. (Its inference loop computes the series at start, so
    # this reaches the candle entries; the prediction entries' parser is
    # only reached by a replica that did not compute the candle itself.)
    setup()
    need_services()
    want = reference_numbers()
    svc = Service(MODELS, name="cache-fill")
    check_eq(numbers(prediction(svc)), want)
    check_eq(svc.stop(), 0)
    port = REDIS_URL.rsplit(":", 1)[1].split("/")[0]
    keys = redis_keys(port, 0)
    check(any(k.startswith("predictd:pred:") for k in keys), keys)
    for k in keys:
        subprocess.run(["redis-cli", "-p", port, "-x", "set", k],
                       input=b"\x00garbage{not json", capture_output=True, timeout=30,
                       check=True)
    svc = Service(MODELS, name="cache-corrupt")  # a new process: its own cache is empty
    for _ in range(2):
        check_eq(numbers(prediction(svc)), want, "after the Redis entries were corrupted")
    check_eq(svc.stop(), 0)


# ---------------------------------------------------------------------------
# Broken model versions


def verify(d):
    return cli("models", "verify", d, check_rc=False)


def admin_versions(svc):
    status, _, body = svc.request("GET", "/admin/models", headers={"X-API-Key": KEY})
    check_eq(status, 200, body)
    s = [m for m in body["models"] if m["symbol"] == "BTCUSDT" and m["timeframe"] == "15m"][0]
    return s, {v["version"]: v for v in s["versions"]}


@test
def broken_versions_are_refused_with_a_reason():
    setup()

    def corrupt_scaler(d):
        with open(os.path.join(d, "scaler.pb"), "wb") as f:
            f.write(b"\x0a\xff\xff\xff\xff\x0f not a scaler")
        rewrite_manifest(d)

    def oversized_manifest(d):
        with open(os.path.join(d, "MANIFEST"), "a") as f:
            f.write(("0" * 64 + "  padding\n") * 200000)  # about 15 MB

    def no_features(d):
        p = pm.pb2()
        m = p.Model()
        with open(os.path.join(d, "model.pb"), "rb") as f:
            m.ParseFromString(f.read())
        del m.features[:]
        del m.golden[:]
        with open(os.path.join(d, "model.pb"), "wb") as f:
            f.write(m.SerializeToString())
        sc = p.Scaler()
        with open(os.path.join(d, "scaler.pb"), "wb") as f:
            f.write(sc.SerializeToString())
        rewrite_manifest(d)

    made = {}
    for name, mutate in (("scaler", corrupt_scaler), ("manifest", oversized_manifest),
                         ("features", no_features)):
        v, d = copy_version(mutate)
        made[name] = v
        p = verify(d)
        check(p.returncode != 0, f"{name}: models verify accepted it: {p.stdout} {p.stderr}")
        check(p.stderr.strip() or p.stdout.strip(), f"{name}: no reason given")
    svc = Service(MODELS, env={"PREDICTD_API_KEY": KEY}, name="broken-versions")
    try:
        series, versions = admin_versions(svc)
        check_eq(series["serving_version"], 1, series)
        for name, v in made.items():
            check_eq(versions[v]["state"], "failed", f"{name}: {versions[v]}")
            check(versions[v]["reason"], f"{name}: no reason")
        check_eq(prediction(svc)["model"]["version"], 1)
        # a label pointing at a failed version is refused over HTTP ...
        bad = made["scaler"]
        status, _, body = svc.request("POST", "/admin/models/BTCUSDT/15m/labels",
                                      body={"label": "stable", "version": bad},
                                      headers={"X-API-Key": KEY})
        check(status in (404, 409, 422), f"label on a failed version: {status} {body}")
        # ... and in policy.json it never serves: version 1 keeps serving
        with open(os.path.join(SERIES, "policy.json"), "w") as f:
            json.dump({"labels": {"stable": bad}}, f)
        status, _, body = svc.request("POST", "/admin/models/reload",
                                      body={"symbol": "BTCUSDT", "timeframe": "15m"},
                                      headers={"X-API-Key": KEY})
        check_eq(status, 200, body)
        p = prediction(svc)
        check_eq(p["model"]["version"], 1, "a label on a failed version served it")
        status, _, body = svc.get("/api/predictions/BTCUSDT?timeframe=15m&label=stable")
        check(status != 200 or body["prediction"]["model"]["version"] != bad, body)
    finally:
        os.unlink(os.path.join(SERIES, "policy.json"))
        for v in made.values():
            shutil.rmtree(os.path.join(SERIES, str(v)))
        svc.stop()


# ---------------------------------------------------------------------------
# Data


@test
def a_series_shorter_than_the_window_is_503_insufficient_data():
    setup()
    cli("seed", "--symbols", "SHORTUSDT", "--timeframes", "15m", "--count", "50")
    d = os.path.join(MODELS, "_default", "15m")
    os.makedirs(d, exist_ok=True)
    shutil.copytree(os.path.join(SERIES, "1"), os.path.join(d, "1"))
    try:
        svc = Service(MODELS, name="short-series")
        status, _, body = svc.get("/api/predictions/SHORTUSDT?timeframe=15m")
        check_eq(status, 503, body)
        check_eq(body["error"]["code"], "insufficient_data", body)
        check("50" in body["error"]["message"], body)
        check_eq(svc.stop(), 0)
    finally:
        shutil.rmtree(os.path.join(MODELS, "_default"))


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


@test
def import_refuses_misaligned_rows_and_unreadable_files():
    setup()
    tmp = tempfile.mkdtemp(prefix="predictd-edges-import-")
    count = psql("SELECT count(*) FROM candles")
    # a 15m candle that does not open on a 15-minute boundary
    bad = write(os.path.join(tmp, "misaligned.csv"),
                "open_time,open,high,low,close,volume\n"
                "2024-01-01T00:00:00Z,1,2,0.5,1.5,10\n"
                "2024-01-01T00:07:30Z,1,2,0.5,1.5,10\n")
    p = cli("import", bad, "--symbol", "IMPUSDT", "--timeframe", "15m", check_rc=False)
    check(p.returncode != 0, f"misaligned rows imported: {p.stdout} {p.stderr}")
    # the message names the misaligned row (00:07:30), not the first row
    check("1704067650" in p.stderr and "row 2" in p.stderr,
          f"the bad row is not named: {p.stderr}")
    # the import is one transaction: nothing of it was stored
    check_eq(psql("SELECT count(*) FROM candles"), count)
    for path in (os.path.join(tmp, "missing.csv"), tmp):
        p = cli("import", path, "--symbol", "IMPUSDT", "--timeframe", "15m", check_rc=False)
        check(p.returncode != 0, f"{path}: {p.stdout} {p.stderr}")
        check(path in p.stderr, f"{path}: the error does not name the file: {p.stderr}")
    check_eq(psql("SELECT count(*) FROM candles"), count)
    shutil.rmtree(tmp)


@test
def import_with_the_database_down_fails_cleanly():
    setup()
    tmp = tempfile.mkdtemp(prefix="predictd-edges-import-")
    rows = ["open_time,open,high,low,close,volume"]
    t0 = 1704067200
    for i in range(200):
        rows.append(f"{t0 + 900 * i},1,2,0.5,1.5,10")
    path = write(os.path.join(tmp, "ok.csv"), "\n".join(rows) + "\n")
    services("pg-stop")
    try:
        p = cli("import", path, "--symbol", "DOWNUSDT", "--timeframe", "15m", check_rc=False,
                timeout=120)
    finally:
        services("pg-start")
    check(p.returncode != 0, f"import 'succeeded' with the database down: {p.stdout}")
    check(p.stderr.strip(), "no error message")
    check_eq(psql("SELECT count(*) FROM candles WHERE symbol = 'DOWNUSDT'"), "0")
    # and once it is back, the same import works
    cli("import", path, "--symbol", "DOWNUSDT", "--timeframe", "15m")
    check_eq(psql("SELECT count(*) FROM candles WHERE symbol = 'DOWNUSDT'"), "200")
    shutil.rmtree(tmp)


# ---------------------------------------------------------------------------
# serve, models, train


@test
def serve_without_a_database_answers_503_and_stays_up():
    setup()
    svc = Service(MODELS, env={"PREDICTD_DATABASE_URL": ""}, redis=False, name="no-database")
    status, _, body = svc.get("/api/predictions/BTCUSDT?timeframe=15m")
    check_eq(status, 503, body)
    check_eq(body["error"]["code"], "data_unavailable", body)
    check_eq(svc.get("/health/live")[0], 200)
    status, _, body = svc.get("/health/status")
    check_eq(status, 200, body)
    status, _, body = svc.get("/api/models")
    check_eq(status, 200, body)
    check_eq(svc.stop(), 0)


@test
def models_list_shows_series_versions_and_failures():
    setup()
    v, d = copy_version(lambda d: open(os.path.join(d, "model.pb"), "ab").write(b"x"))
    try:
        p = cli("models", "list", env={"PREDICTD_MODELS_DIR": MODELS})
        out = p.stdout
        check("BTCUSDT" in out and "15m" in out, out)
        lines = [ln for ln in out.splitlines() if "BTCUSDT" in ln or ln.strip().startswith(
            ("1", str(v)))]
        check(lines, out)
        check("fail" in out.lower(), f"the broken version {v} is not shown as failed:\n{out}")
        # the same without the word list, and an empty repository
        check_eq(cli("models", env={"PREDICTD_MODELS_DIR": MODELS}).stdout, out)
        empty = tempfile.mkdtemp(prefix="predictd-edges-empty-")
        p = cli("models", "list", env={"PREDICTD_MODELS_DIR": empty}, check_rc=False)
        check_eq(p.returncode, 0, p.stderr)
        p = cli("models", "list", env={"PREDICTD_MODELS_DIR": os.path.join(empty, "none")},
                check_rc=False)
        check(p.returncode != 0 or "no" in (p.stdout + p.stderr).lower(), p.stdout + p.stderr)
    finally:
        shutil.rmtree(d)


@test
def train_error_paths_name_the_problem():
    setup()
    out = tempfile.mkdtemp(prefix="predictd-edges-train-")
    cases = [
        (["--symbol", "NOPEUSDT", "--timeframe", "15m"], "NOPEUSDT"),
        (["--symbol", "BTCUSDT"], "--timeframe"),
        (["--symbol", "BTCUSDT", "--timeframe", "7m"], "7m"),
        (["--symbol", "BTCUSDT", "--timeframe", "15m", "--kind", "forest"], "forest"),
        (["--symbol", "BTCUSDT", "--timeframe", "15m", "--features", "rsi:14,nope:3"], "nope"),
        (["--symbol", "BTCUSDT", "--timeframe", "15m", "--from", "2999-01-01"], ""),
        (["--symbol", "bad symbol", "--timeframe", "15m"], "symbol"),
    ]
    for args, needle in cases:
        p = cli("train", "--models-dir", out, "--seed", "1", *args, check_rc=False, timeout=300)
        check(p.returncode != 0, f"train {args} succeeded: {p.stdout}")
        check(needle in p.stderr, f"train {args}: {p.stderr[-500:]}")
    check_eq([d for d in os.listdir(out) if not d.startswith(".")], [],
             "a failed training published something")
    # --all: one model per symbol with candles, each verifying; a series too
    # short to train fails the command, names itself, and stops no other
    cli("seed", "--symbols", "SHORTUSDT", "--timeframes", "15m", "--count", "50")
    # (--force: no model beats its baselines on the synthetic random walk, and
    # the gate would otherwise publish nothing; see harness.train)
    p = cli("train", "--all", "--timeframe", "15m", "--models-dir", out, "--seed", "1",
            "--epochs", "5", "--force", timeout=900, check_rc=False)
    check(p.returncode != 0, "a series that cannot train did not fail --all")
    check("SHORTUSDT/15m" in p.stderr and "shorter than window" in p.stderr, p.stderr[-800:])
    check(not os.path.exists(os.path.join(out, "SHORTUSDT")), "SHORTUSDT published")
    for sym in ("BTCUSDT", "ETHUSDT"):
        d = os.path.join(out, sym, "15m", "1")
        check(os.path.isdir(d), f"--all trained no {sym}")
        check_eq(verify(d).returncode, 0)
    shutil.rmtree(out)


@test
def cors_star_allows_any_origin():
    setup()
    svc = Service(MODELS, env={"PREDICTD_CORS_ORIGINS": "*"}, name="cors-star")
    for origin in ("https://anything.example", "http://localhost:3000"):
        status, headers, _ = svc.get("/api/predictions/BTCUSDT?timeframe=15m",
                                     headers={"Origin": origin})
        check_eq(status, 200)
        allowed = headers.get("Access-Control-Allow-Origin")
        check_in(allowed, ("*", origin), f"Origin {origin}: {headers}")
        status, headers, _ = svc.request("OPTIONS", "/api/predictions/BTCUSDT?timeframe=15m",
                                         headers={"Origin": origin,
                                                  "Access-Control-Request-Method": "GET"},
                                         validate=False)
        check(status in (200, 204), f"preflight: {status}")
        check_in(headers.get("Access-Control-Allow-Origin"), ("*", origin), headers)
    check_eq(svc.stop(), 0)


@test
def a_model_whose_levels_are_not_prices_answers_a_documented_5xx():
    # stop-loss = entry - 1000 ATR is below zero: the signal refuses to make
    # up a level; the request gets a documented error, the server stays up
    setup()
    d = os.path.join(MODELS, "ETHUSDT", "15m")
    os.makedirs(d, exist_ok=True)

    def huge_stop(v):
        p = pm.pb2()
        m = p.Model()
        with open(os.path.join(v, "model.pb"), "rb") as f:
            m.ParseFromString(f.read())
        m.policy.sl_atr = 1000.0
        with open(os.path.join(v, "model.pb"), "wb") as f:
            f.write(m.SerializeToString())
        rewrite_manifest(v)

    shutil.copytree(os.path.join(SERIES, "1"), os.path.join(d, ".tmp"))
    huge_stop(os.path.join(d, ".tmp"))
    os.rename(os.path.join(d, ".tmp"), os.path.join(d, "1"))
    try:
        svc = Service(MODELS, env={"PREDICTD_CACHE": "off"}, name="no-levels")
        status, _, body = svc.get("/api/predictions/ETHUSDT?timeframe=15m")
        check(500 <= status < 600, f"{status} {body}")
        check(body["error"]["code"] != "internal_error" or status == 500, body)
        check_eq(prediction(svc)["symbol"], "BTCUSDT")  # the rest still serves
        check_eq(svc.stop(), 0)
    finally:
        shutil.rmtree(d)


def wait_for(cond, what, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@test
def the_loop_catches_up_symbols_served_by_default():
    # a repository with only models/_default/15m: at start the inference
    # loop predicts the latest closed candle of every symbol it serves
    setup()
    models = tempfile.mkdtemp(prefix="predictd-edges-default-")
    shutil.copytree(os.path.join(SERIES, "1"), os.path.join(models, "_default", "15m", "1"))
    psql("DELETE FROM predictions WHERE symbol IN ('BTCUSDT', 'ETHUSDT') AND timeframe = '15m'")
    svc = Service(models, name="default-catch-up")
    try:
        for sym in ("BTCUSDT", "ETHUSDT"):
            # the ledger row comes from the loop, before any request asks
            t = psql(f"SELECT extract(epoch FROM max(open_time))::bigint FROM candles WHERE "
                     f"symbol = '{sym}' AND timeframe = '15m'")
            wait_for(lambda: psql(f"SELECT count(*) FROM predictions WHERE symbol = '{sym}' "
                                  f"AND timeframe = '15m' AND candle_time = to_timestamp({t})")
                     == "1", f"the loop's prediction of {sym} at {t}")
            p = prediction(svc, sym)
            check_eq(p["model"]["series"], "_default", p["model"])
    finally:
        check_eq(svc.stop(), 0)
        shutil.rmtree(models)


@test
def a_model_trained_for_another_timeframe_warns_and_serves():
    setup()
    cli("seed", "--symbols", "BTCUSDT", "--timeframes", "1h", "--count", "400")
    models = tempfile.mkdtemp(prefix="predictd-edges-tf-")
    shutil.copytree(os.path.join(SERIES, "1"), os.path.join(models, "BTCUSDT", "1h", "1"))
    svc = Service(models, name="other-timeframe")
    try:
        status, _, body = svc.get("/api/predictions/BTCUSDT?timeframe=1h")
        check_eq(status, 200, body)
        check_eq(body["prediction"]["model"]["version"], 1)
        logs = svc.logs()
        check("was trained for timeframe 15m" in logs, logs[-2000:])
    finally:
        check_eq(svc.stop(), 0)
        shutil.rmtree(models)


if __name__ == "__main__":
    sys.exit(run_tests())
