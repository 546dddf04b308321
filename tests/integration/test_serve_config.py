"""`predictd serve` (and `ingest`) configuration and lifecycle that other
tests leave alone: a key file path through a regular file, and keys with
bytes outside printable ASCII, each refused at start with exit 2 and the
reason; the log level (error or warn keeps only
those lines, errors still reach the log) and the default log format (text
on a terminal, JSON otherwise); the model scanner on demand
(PREDICTD_RELOAD_INTERVAL=0) as /health/status reports it; the ledger
routes of a service without a database (503, their parameters still
checked first); the rate limit's default burst (twice the rate) and a
bucket that refills to the burst, not beyond, while its client is idle; a
timeframe no model serves (an empty list); a series whose only candle is
still open (no closed candle yet); a silent connection during the drain;
SIGINT like SIGTERM; the feed's metrics on the leader, on a standby that
takes over, and for an exchange that cannot be reached.

The real binary with empty model repositories (no training), and the
PostgreSQL of tests/run where a test says so."""
import json
import os
import pty
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (BIN, DB_URL, ROOT, Service, check, check_eq, check_in, cli,  # noqa: E402
                     free_port, need_services, psql, run_tests, sanitizer_lines, tail, test)

TMP = tempfile.mkdtemp(prefix="predictd-servecfg-")
ADMIN_KEY = "adm1n-" + "k" * 26 + "-SECRET"
# port 1 on loopback: refused at once
NOWHERE = "postgresql://127.0.0.1:1/none?connect_timeout=2"


def models_dir():
    return tempfile.mkdtemp(prefix="models-", dir=TMP)


def serve_env(**extra):
    e = {"PREDICTD_MODELS_DIR": models_dir(), "PREDICTD_LISTEN": "127.0.0.1:0",
         "PREDICTD_DATABASE_URL": ""}
    e.update(extra)
    return e


def refused(env, needle, what):
    """serve with env must exit 2 at once, saying needle, never the key."""
    p = cli("serve", env=env, check_rc=False, timeout=60)
    check_eq(p.returncode, 2, f"{what}: {p.stderr[-800:]}")
    check_in(needle, p.stderr, what)
    check(ADMIN_KEY not in p.stdout + p.stderr, f"{what}: the key was printed")
    return p


def wait_for(cond, what, limit=30):
    """Polls cond() until true; the limit bounds a hang, it asserts no speed."""
    deadline = time.time() + limit
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@test
def a_key_file_path_through_a_regular_file_is_refused_with_the_reason():
    # a path through a regular file: open fails with ENOTDIR, named
    f = os.path.join(TMP, "plain")
    with open(f, "w") as fh:
        fh.write("x")
    refused(serve_env(PREDICTD_API_KEY_FILE=os.path.join(f, "key")),
            f"key file {f}/key: Not a directory", "key file under a regular file")
    # (a key file of another user, EACCES, is test_cli_paths')


@test
def keys_with_bytes_outside_printable_ascii_are_refused():
    # a non-breaking space pasted into the key (UTF-8 C2 A0), a DEL (control
    # characters below the space are test_cli_paths')
    for bad in ("k" * 10 + "\u00a0" + "k" * 10, "k" * 20 + "\x7f"):
        path = os.path.join(tempfile.mkdtemp(dir=TMP), "key")
        with open(path, "wb") as fh:
            fh.write(bad.encode() + b"\n")
        os.chmod(path, 0o600)
        refused(serve_env(PREDICTD_API_KEY_FILE=path), "16 to 4096 printable characters",
                f"key file holding {bad!r}")
    for var in ("PREDICTD_API_KEY", "PREDICTD_READ_KEY"):
        p = refused(serve_env(**{var: "k" * 20 + "\u00e9"}), f"{var}: the key must be 16 to 4096",
                    f"{var} with an accented letter")
        check("k" * 20 not in p.stderr, f"{var}'s value echoed")


def levels_of(svc):
    out = []
    for line in svc.logs().splitlines():
        if line.strip():
            out.append(json.loads(line))  # every line is one JSON object
    return out


@test
def the_log_level_keeps_only_lines_at_or_above_it():
    need_services()
    # an unreachable database makes the start log an error (the training
    # jobs cannot be read) and warnings (training unavailable, no key)
    for level, allowed, must in (("error", {"error"}, "error"),
                                 ("warn", {"warn", "error"}, "warn")):
        # the "listening on" line is info, not logged here: the harness reads
        # the port the server bound from /proc
        svc = Service(models_dir(), redis=False, name=f"log-level-{level}",
                      env={"PREDICTD_LOG_LEVEL": level, "PREDICTD_DATABASE_URL": NOWHERE,
                           "PREDICTD_ACCESS_LOG": "on"})
        check_eq(svc.get("/api/models")[0], 200)  # an access-log line (info)
        check_eq(svc.get("/no/such/route", validate=False)[0], 404)
        check_eq(svc.stop(), 0)
        lines = levels_of(svc)
        levels = {e["level"] for e in lines}
        check(levels <= allowed, f"level {level}: lines at {levels - allowed}:\n{tail(svc.logs())}")
        check_in(must, levels, f"level {level}: no {must} line")
        check(not any(e["module"] == "access" for e in lines), "access lines at " + level)
        msgs = " | ".join(e["msg"] for e in lines)
        check_in("reading the training jobs failed", msgs)
        if level == "warn":
            check_in("background training is unavailable", msgs)
            check_in("admin routes are disabled", msgs)
        else:
            check("background training is unavailable" not in msgs, msgs)


@test
def the_default_log_format_is_text_on_a_terminal_and_json_elsewhere():
    env = dict(os.environ, **serve_env(PREDICTD_API_KEY="short"))
    env.pop("PREDICTD_LOG_FORMAT", None)
    # stderr a pipe: one JSON object a line
    p = subprocess.run([BIN, "serve"], env=env, capture_output=True, text=True, timeout=60)
    check(not sanitizer_lines(p.stderr), p.stderr[-2000:])
    check_eq(p.returncode, 2, p.stderr)
    entry = json.loads(p.stderr.strip().splitlines()[-1])
    check_eq(entry["level"], "error")
    check_in("PREDICTD_API_KEY", entry["msg"])
    # stderr a terminal: the text form ("TIME error server    cannot start: ...")
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([BIN, "serve"], env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=slave)
        os.close(slave)
        out = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        rc = proc.wait(timeout=60)
    finally:
        os.close(master)
    text = out.decode(errors="replace").strip()
    check(not sanitizer_lines(text), text[-2000:])
    check_eq(rc, 2, text)
    last = text.splitlines()[-1]
    check(not last.lstrip().startswith("{"), f"JSON on a terminal: {last}")
    check(" error " in last and "cannot start: PREDICTD_API_KEY" in last, last)


@test
def the_scanner_on_demand_is_reported_and_counts_sighup_scans():
    svc = Service(models_dir(), redis=False,
                  env={"PREDICTD_RELOAD_INTERVAL": "0", "PREDICTD_DATABASE_URL": ""})

    def scanner():
        status, _, body = svc.get("/health/status")
        check_eq(status, 200, body)
        jobs = {j["name"]: j for j in body["components"]["jobs"]}
        return jobs["model_scanner"]

    first = scanner()
    check_eq(first["state"], "on_demand")
    check_eq(first["runs"], 1)  # the scan at start
    svc.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: scanner()["runs"] == 2, "the SIGHUP scan to be counted")
    check_eq(scanner()["state"], "on_demand")
    check_eq(svc.stop(), 0)
    # the default interval: a scanner that runs by itself
    svc = Service(models_dir(), redis=False, env={"PREDICTD_DATABASE_URL": ""})
    check_eq(scanner()["state"], "running")
    check_eq(svc.stop(), 0)


@test
def ledger_routes_without_a_database_check_their_parameters_then_answer_503():
    svc = Service(models_dir(), redis=False, env={"PREDICTD_DATABASE_URL": ""})

    def error(path, want_status, want_code, needle):
        status, _, body = svc.get(path)
        check_eq(status, want_status, f"{path}: {body}")
        check_eq(body["error"]["code"], want_code, f"{path}: {body}")
        check_in(needle, body["error"]["message"], path)

    # parameters are refused before the ledger is looked for (the other
    # refusals are test_http_errors'): a cursor longer than any given
    # (zeros in front keep it well formed: only its length is wrong)
    error("/api/predictions/history?cursor=" + "0" * 60 + "1700000000_BTCUSDT_15m_3", 400,
          "invalid_argument", "cursor is not one this service gave")
    # then: no ledger without a database
    for path in ("/api/predictions/history",
                 "/api/predictions/history?symbol=BTCUSDT&timeframe=15m&limit=5"
                 "&cursor=1700000000_BTCUSDT_15m_3",
                 "/api/models/BTCUSDT/15m/performance"):
        error(path, 503, "data_unavailable", "the prediction ledger is unavailable")
    check_eq(svc.stop(), 0)


@test
def the_default_burst_is_twice_the_rate_and_an_idle_bucket_refills_to_it():
    rate, burst = 5, 10  # PREDICTD_RATE_BURST unset: 2 x the rate
    svc = Service(models_dir(), redis=False,
                  env={"PREDICTD_RATE_LIMIT": str(rate), "PREDICTD_DATABASE_URL": ""})

    def until_limited():
        """Requests until the first 429: (statuses, seconds taken, Retry-After)."""
        statuses, t0 = [], time.monotonic()
        while len(statuses) < 500:
            status, headers, body = svc.get("/api/models")
            statuses.append(status)
            if status == 429:
                check_eq(body["error"]["code"], "rate_limited")
                return statuses, time.monotonic() - t0, int(headers["Retry-After"])
        raise AssertionError(f"never limited: {len(statuses)} requests")

    statuses, took, retry = until_limited()
    # a full bucket lets the burst through at once; at most rate x elapsed
    # more (+1 refilled at the edge) however slow this machine is
    check(statuses[:burst] == [200] * burst, f"the burst of {burst} did not pass: {statuses}")
    check(statuses.count(200) <= burst + rate * took + 1, f"{statuses} in {took:.1f} s")
    check_eq(retry, 1)  # one token comes back in 1/rate s: "retry after 1 s"
    # idle for twice what refills the bucket: it holds the burst again, not
    # the idle time's worth of tokens (that would be about 2 x burst)
    time.sleep(2 * burst / rate)
    statuses, took, _ = until_limited()
    check(statuses[:burst] == [200] * burst, statuses)
    check(statuses.count(200) <= burst + rate * took + 1,
          f"{statuses.count(200)} passed after an idle spell, in {took:.1f} s")
    check_eq(svc.stop(), 0)


@test
def a_timeframe_no_model_serves_lists_no_predictions():
    need_services()
    cli("migrate", "--migrations-dir", os.path.join(ROOT, "db"))
    svc = Service(models_dir(), redis=False)
    # all symbols of the timeframe (none has a model), an empty symbols list
    # (all, too), and either label: an empty list, not an error
    for query in ("timeframe=15m", "timeframe=15m&symbols=", "timeframe=1h&label=canary",
                  "timeframe=1h&label=stable"):
        status, _, body = svc.get("/api/predictions?" + query)
        check_eq(status, 200, f"{query}: {body}")
        check_eq((body["count"], body["predictions"], body["errors"]), (0, [], []), query)
    check_eq(svc.stop(), 0)


@test
def a_series_whose_only_candle_is_still_open_has_no_candles_yet():
    need_services()
    cli("migrate", "--migrations-dir", os.path.join(ROOT, "db"))
    hour = int(time.time()) // 3600 * 3600
    # the current hour's candle: stored (a feed writes it as it forms), not closed
    psql("INSERT INTO candles (symbol, timeframe, open_time, open, high, low, close, volume) "
         f"VALUES ('OPENUSDT', '1h', to_timestamp({hour}), 1, 2, 0.5, 1.5, 10) "
         "ON CONFLICT DO NOTHING")
    svc = Service(models_dir(), redis=False, env={"PREDICTD_CACHE": "off"})
    status, _, body = svc.get("/api/candles/OPENUSDT?timeframe=1h")
    check_eq((status, body["error"]["code"]), (503, "insufficient_data"), body)
    check_in("no closed candle yet for OPENUSDT 1h", body["error"]["message"])
    # a series with no candle at all is another answer
    status, _, body = svc.get("/api/candles/NONEUSDT?timeframe=1h")
    check_eq((status, body["error"]["code"]), (404, "unknown_symbol"), body)
    check_eq(svc.stop(), 0)


@test
def a_silent_connection_holds_the_drain_only_for_its_grace():
    # connected, never a byte sent: the drain gives such a connection a
    # short grace (its request may be on the way), not the whole drain time
    svc = Service(models_dir(), redis=False,
                  env={"PREDICTD_DATABASE_URL": "", "PREDICTD_DRAIN_TIMEOUT": "120"})
    silent = socket.create_connection(("127.0.0.1", svc.port), timeout=150)
    try:
        check_eq(svc.get("/health/live")[0], 200)  # the pool took the silent one too
        svc.proc.send_signal(signal.SIGTERM)
        rc = svc.proc.wait(timeout=150)
        check_eq(svc.stop(), 0)
        check_eq(rc, 0)
        m = re.search(r"drained 0 open requests in (\d+) ms", svc.logs())
        check(m, tail(svc.logs()))
        check(int(m.group(1)) < 120000, f"the drain waited its whole time: {m.group(0)}")
        check_eq(silent.recv(1), b"")  # closed by the server, never answered
    finally:
        silent.close()


@test
def sigint_stops_serve_and_ingest_like_sigterm():
    # Ctrl-C in a terminal: serve drains and exits 0, ingest stops and exits 0
    svc = Service(models_dir(), redis=False, env={"PREDICTD_DATABASE_URL": ""})
    check_eq(svc.stop(sig=signal.SIGINT), 0)
    check_in("SIGINT: draining", svc.logs())
    check_in("stopped", svc.logs())
    need_services()
    cli("migrate", "--migrations-dir", os.path.join(ROOT, "db"))
    demo_dir = os.path.join(ROOT, "data", "demo")
    cli("seed", "--if-empty", "--demo", "--behind", "3", env={"PREDICTD_DEMO_DIR": demo_dir})
    env = dict(os.environ, PREDICTD_DATABASE_URL=DB_URL, PREDICTD_FEED="demo",
               PREDICTD_DEMO_DIR=demo_dir, PREDICTD_DEMO_STEP_MS="100",
               PREDICTD_LOG_FORMAT="text")
    log_path = os.path.join(TMP, "ingest-sigint.log")
    with open(log_path, "w") as log:
        proc = subprocess.Popen([BIN, "ingest"], env=env, stdout=log, stderr=log)
        try:
            wait_for(lambda: "feed demo running" in open(log_path).read(), "ingest to run", 60)
        finally:
            proc.send_signal(signal.SIGINT)
            rc = proc.wait(timeout=60)
    text = open(log_path).read()
    check(not sanitizer_lines(text), text[-2000:])
    check_eq(rc, 0, text[-1500:])
    check_in("SIGINT: stopping", text)


def metrics(svc):
    status, _, text = svc.get("/metrics", validate=False)
    check_eq(status, 200)
    return text.decode()


@test
def feed_metrics_follow_the_feed_lock_and_a_dead_feed_is_down():
    need_services()
    cli("migrate", "--migrations-dir", os.path.join(ROOT, "db"))
    demo_dir = os.path.join(ROOT, "data", "demo")
    cli("seed", "--if-empty", "--demo", "--behind", "3", env={"PREDICTD_DEMO_DIR": demo_dir})
    env = {"PREDICTD_FEED": "demo", "PREDICTD_DEMO_DIR": demo_dir, "PREDICTD_DEMO_STEP_MS": "200"}
    up = 'predictd_feed_up{feed="demo-replay"} 1'
    a = Service(models_dir(), env=env, name="feed-leader")
    wait_for(lambda: up in metrics(a), "the first replica's feed to be up", 60)
    check_in("predictd_feed_leader 1", metrics(a))
    # a second replica on the database waits: no feed series of its own (an
    # alert on predictd_feed_up must not fire for a standby), its status says so
    b = Service(models_dir(), env=env, name="feed-standby")
    wait_for(lambda: "predictd_feed_leader 0" in metrics(b), "the standby's leader gauge", 60)
    text = metrics(b)
    check("predictd_feed_up" not in text and "predictd_feed_state" not in text, text[-3000:])
    status, _, body = b.get("/health/status")
    check_eq(body["components"]["feed"]["state"], "standby", body["components"]["feed"])
    # the leader stops: the standby takes the lock and its feed comes up
    check_eq(a.stop(), 0)
    wait_for(lambda: up in metrics(b), "the standby to take over the feed", 90)
    check_in("predictd_feed_leader 1", metrics(b))
    check_eq(b.stop(), 0)
    # an exchange that cannot be reached: the feed is exported and not up
    port = free_port()  # nothing listens there
    c = Service(models_dir(), name="feed-dead",
                env={"PREDICTD_FEED": "binance:XRPETH",
                     "PREDICTD_BINANCE_WS_URL": f"ws://127.0.0.1:{port}/ws",
                     "PREDICTD_BINANCE_REST_URL": f"http://127.0.0.1:{port}"})

    def state_of(text):
        lines = [ln for ln in text.splitlines()
                 if ln.startswith("predictd_feed_state{") and ln.endswith(" 1")]
        return lines[0].split('state="')[1].split('"')[0] if len(lines) == 1 else None

    wait_for(lambda: state_of(metrics(c)) is not None, "the dead feed's state", 60)
    text = metrics(c)
    check(re.search(r'^predictd_feed_up\{feed="[^"]+"\} 0$', text, re.M), text[-3000:])
    check_in(state_of(text), ("connecting", "down"), text[-3000:])
    check_eq(c.stop(), 0)


if __name__ == "__main__":
    try:
        sys.exit(run_tests())
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
