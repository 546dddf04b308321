"""The Binance connector against a stand-in exchange (exchange_standin.py): a
real server process on loopback speaking Binance's documented WebSocket and
REST formats, replaying the shared real XRPETH trades and candles with
faults (a dropped connection, a gap only REST can fill, duplicate and
out-of-order trades, malformed messages, a 429 with Retry-After). The
connector runs inside the real `predictd serve` (PREDICTD_FEED) and as
`predictd ingest` / `predictd fetch`; every minute it writes must equal the
exchange's 1m candle.
"""
import csv
import datetime
import math
import os
import shutil
import ssl
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (DB_URL, ROOT, BIN, Service, Skip, check, check_eq, cli, free_port,  # noqa: E402
                     need_services, psql, run_tests, test, SHARED_DATA)

HERE = os.path.dirname(os.path.abspath(__file__))
TRADES = os.path.join(SHARED_DATA or "", "XRPETH_trades_2019-10.csv")
CANDLES = os.path.join(SHARED_DATA or "", "XRPETH_1m_2019-10.csv")


def need_data():
    need_services()
    if not SHARED_DATA or not os.path.exists(TRADES) or not os.path.exists(CANDLES):
        raise Skip("needs ../shared/data/XRPETH_trades_2019-10.csv and XRPETH_1m_2019-10.csv")


class StandIn:
    def __init__(self, faults="dup,swap,malformed,gap,drop,429", speed=6000, lead=30,
                 tls=None):
        self.ws_port, self.rest_port = free_port(), free_port()
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", os.path.join(HERE, "exchange_standin.py"), "--trades", TRADES,
             "--candles", CANDLES, "--ws-port", str(self.ws_port), "--rest-port",
             str(self.rest_port), "--speed", str(speed), "--lead", str(lead), "--faults", faults,
             *(["--tls-cert", tls[0], "--tls-key", tls[1]] if tls else [])],
            stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.tls = tls
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.log.seek(0)
            raise AssertionError("stand-in did not start: " + self.log.read())
        self.ws = f"{'wss' if tls else 'ws'}://127.0.0.1:{self.ws_port}"
        self.rest = f"http://127.0.0.1:{self.rest_port}"

    def get(self, path):
        import json
        import urllib.request
        ctx = ssl._create_unverified_context() if self.tls else None
        url = self.rest.replace("http://", "https://") if self.tls else self.rest
        with urllib.request.urlopen(url + path, timeout=10, context=ctx) as r:
            return json.loads(r.read())

    def stats(self):
        return self.get("/_standin/stats")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def expected_candles():
    out = {}
    with open(CANDLES) as f:
        for r in csv.DictReader(f):
            t = datetime.datetime.fromisoformat(r["open_time"].replace("Z", "+00:00"))
            out[int(t.timestamp())] = tuple(float(r[k]) for k in
                                            ("open", "high", "low", "close", "volume"))
    return out


def stored_candles(symbol="XRPETH"):
    rows = psql(f"SELECT extract(epoch FROM open_time)::bigint, open, high, low, close, volume "
                f"FROM candles WHERE symbol = '{symbol}' AND timeframe = '1m' ORDER BY 1")
    out = {}
    for line in rows.splitlines():
        p = line.split("|")
        out[int(p[0])] = tuple(float(x) for x in p[1:])
    return out


def differences(want, have):
    """Minutes of want missing from have or different (prices exactly, volume
    to 1e-9 relative: a sum of amounts in another order)."""
    bad = []
    for t, w in want.items():
        h = have.get(t)
        if h is None:
            bad.append((t, "missing", w))
        elif h[:4] != w[:4] or not math.isclose(h[4], w[4], rel_tol=1e-9, abs_tol=1e-12):
            bad.append((t, h, w))
    return bad


def env_for(si, **extra):
    e = {"PREDICTD_BINANCE_WS_URL": si.ws, "PREDICTD_BINANCE_REST_URL": si.rest,
         "PREDICTD_LOG_FORMAT": "text"}
    e.update(extra)
    return e


def on_terminal(args, env, timeout=300):
    """Runs the binary with its stderr on a pseudo-terminal; (exit status,
    what it wrote there)."""
    import pty
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([BIN, *args], env=dict(os.environ, PREDICTD_DATABASE_URL=DB_URL,
                                                       **env),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave)
        os.close(slave)
        out = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        rc = proc.wait(timeout=timeout)
    finally:
        os.close(master)
    text = out.decode(errors="replace")
    check(not [ln for ln in text.splitlines() if "Sanitizer" in ln or "runtime error" in ln],
          f"sanitizer report: {text[-2000:]}")
    return rc, text


def wait_for(pred, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def metric(text, name, symbol="XRPETH"):
    for line in text.splitlines():
        if line.startswith(name + "{") and f'symbol="{symbol}"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def ingest_until(env, done, timeout=60):
    """Runs `predictd ingest` until done(log text) holds (or timeout), then
    SIGTERM; returns (exit code, log text)."""
    log = tempfile.TemporaryFile(mode="w+")
    e = dict(os.environ, PREDICTD_DATABASE_URL=DB_URL, PREDICTD_LOG_FORMAT="text")
    e.update(env)
    p = subprocess.Popen([BIN, "ingest"], env=e,
                         stdout=subprocess.DEVNULL, stderr=log, text=True)
    deadline = time.time() + timeout
    text = ""
    while time.time() < deadline and p.poll() is None:
        log.seek(0)
        text = log.read()
        if done(text):
            break
        time.sleep(0.2)
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
    try:
        p.wait(30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    log.seek(0)
    return p.returncode, log.read()


@test
def feed_survives_every_fault_and_every_minute_matches():
    need_data()
    cli("migrate", "--migrations-dir", os.path.join(ROOT, "db"))
    si = StandIn()
    models = tempfile.mkdtemp(prefix="predictd-exchange-models-")
    svc = ingest2 = None
    try:
        # renewing every 8 s exercises the 24-hour renewal many times over
        svc = Service(models, env=env_for(si, PREDICTD_FEED="binance:XRPETH",
                                          PREDICTD_BINANCE_RENEW="8"))
        # a second replica on the same database stands by
        ingest2 = subprocess.Popen([BIN, "ingest"], env=dict(
            os.environ, PREDICTD_DATABASE_URL=DB_URL, PREDICTD_FEED="binance:XRPETH",
            **env_for(si)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: si.stats()["replay_done"], 120, "the replay")
        want = expected_candles()
        # the last minute closes once the connector's clock passes it
        try:
            wait_for(lambda: not differences(want, stored_candles()), 60,
                     "every minute in PostgreSQL")
        except AssertionError:
            bad = differences(want, stored_candles())
            raise AssertionError(f"{len(bad)} minutes differ from the exchange's, first: "
                                 f"{bad[:5]}") from None
        st = si.stats()
        check(st["dropped"] >= 1 and st["ws_connections"] >= 2,
              f"the connection was dropped and made again: {st}")
        check(st["rate_limited"] >= 1, "the 429 was served")
        check(st["gap_ids"], "a run of trades was never sent")
        check(st["malformed_sent"] >= 4, "malformed messages were sent")
        check(st["pongs"] >= 2, f"pings were answered: {st['pongs']}")
        # a renewal comes every 8 s whatever the replay's pace: wait for one (bounded)
        deadline = time.time() + 30
        while time.time() < deadline and "renewing the stream connection" not in svc.logs():
            time.sleep(0.2)
        check("renewing the stream connection" in svc.logs(), "renewed")
        st = si.stats()
        check(st["ws_connections"] >= 3, f"renewals: {st['ws_connections']} connections")
        check(st["ws_connections"] == len([p for p in st["ws_paths"]
                                           if p.startswith("/stream?streams=xrpeth@trade")]),
              f"stream paths: {st['ws_paths']}")
        # derived timeframes follow the base candles
        if psql("SELECT count(*) FROM candles WHERE symbol = 'XRPETH' AND timeframe = '1h'") \
                not in ("", "0"):
            check_eq(psql("SELECT count(*) FROM candles WHERE symbol='XRPETH' AND "
                          "timeframe='1h' AND open_time < '2019-10-13 11:00Z'"), "59")
        # the tick is kept for the rest of the service
        check_eq(psql("SELECT status, tick_size FROM exchange_symbols WHERE venue = 'binance' "
                      "AND symbol = 'XRPETH'"), "TRADING|1e-08")
        # observability
        status, _, m = svc.get("/metrics", validate=False)
        m = m.decode() if isinstance(m, bytes) else m
        check_eq(status, 200)
        check(metric(m, "predictd_feed_reconnects_total") >= 1, "reconnects counted")
        check(metric(m, "predictd_feed_backfilled_candles_total") >= 30, "backfill counted")
        check(metric(m, "predictd_feed_rejected_messages_total") >= 2, "rejects counted")
        got = metric(m, "predictd_feed_symbol_trades_total")
        print(f"  stand-in: {st['trades_sent']} trades sent over {st['ws_connections']} "
              f"connections, {st['klines_requests']} klines requests; the connector received "
              f"{got:.0f} trades and wrote "
              f"{metric(m, 'predictd_feed_backfilled_candles_total'):.0f} candles from REST",
              flush=True)
        # how many reach it depends on how long the reconnects take; the
        # minutes above are what must be exact
        check(got > 1000, "trades counted")
        metric(m, "predictd_feed_trades_per_minute")
        check(metric(m, "predictd_feed_last_trade_age_seconds") >= 0, "last trade age")
        check("predictd_feed_leader 1" in m, "serve ingests")
        if shutil.which("promtool"):
            p = subprocess.run(["promtool", "check", "metrics"], input=m, capture_output=True,
                               text=True, timeout=60)
            check_eq(p.returncode, 0, p.stdout + p.stderr)
        status, _, h = svc.get("/health/status")
        check_eq(status, 200)
        jobs = {j["name"]: j for j in h["components"]["jobs"]}
        check(jobs.get("feed", {}).get("state") in ("connected", "lagging", "backfilling"),
              f"feed job: {jobs.get('feed')}")
        check_eq(h["feed"], "binance")
        check(h["components"]["feed"]["trades"] > 1000, f"{h['components']['feed']}")
        # out-of-order trades across a minute boundary corrected a written minute
        check(h["components"]["feed"]["corrections"] >= 1, f"{h['components']['feed']}")
        # four malformed messages in a row: one episode, one log line
        check_eq(svc.logs().count("rejected a stream message"), 1)
        # the stand-by replica takes over when the ingester dies
        check(ingest2.poll() is None, "the second replica runs")
        svc.stop(sig=signal.SIGKILL, expect_rc=-9)  # killed on purpose: the standby takes over
        svc = None
        deadline = time.time() + 30
        conns = si.stats()["ws_connections"]
        while time.time() < deadline and si.stats()["ws_connections"] == conns:
            time.sleep(0.5)
        check(si.stats()["ws_connections"] > conns, "the stand-by replica connected")
        # it stops cleanly (and, in a sanitizer build, without a report)
        ingest2.send_signal(signal.SIGTERM)
        _, err = ingest2.communicate(timeout=30)
        check_eq(ingest2.returncode, 0, err[-3000:])
        check("Sanitizer" not in err and "runtime error" not in err, err[-6000:])
        check("feed binance ingesting" in err, "the stand-by replica took over")
    finally:
        if ingest2 and ingest2.poll() is None:
            ingest2.send_signal(signal.SIGTERM)
            try:
                ingest2.wait(20)
            except subprocess.TimeoutExpired:
                ingest2.kill()
        if svc:
            log = svc.logs()
            svc.stop()
            if sys.exc_info()[0]:
                print(log[-6000:])
        si.stop()


@test
def fetch_downloads_history_resumably_through_a_429():
    need_data()
    cli("migrate", "--migrations-dir", os.path.join(ROOT, "db"))
    psql("DELETE FROM candles WHERE symbol = 'XRPETH'")
    si = StandIn(faults="none", speed=1000000, lead=4000)
    try:
        wait_for(lambda: si.stats()["now_ms"] >= si.stats()["t_end"], 30, "the end of the data")
        si.get("/_standin/mode?klines=429once")
        env = env_for(si)
        p = cli("fetch", "XRPETH", "--from", "2019-10-11", "--to", "2019-10-12", env=env)
        check("1440/1440" in p.stderr or "100%" in p.stderr, f"progress bar: {p.stderr}")
        check_eq(si.stats()["rate_limited"], 1)
        have = stored_candles()
        want = {t: v for t, v in expected_candles().items() if t < 1570838400}
        check_eq(len(want), 1440)
        check_eq(differences(want, have), [])
        n1 = si.stats()["klines_requests"]
        # again: resumes after what is stored, writes nothing new
        p = cli("fetch", "XRPETH", "--from", "2019-10-11", "--to", "2019-10-12", env=env)
        check(si.stats()["klines_requests"] - n1 <= 1, "the second run resumed at the end")
        check_eq(stored_candles(), have)
        # the rest of the data, through a 418 (an IP ban, also with Retry-After)
        # (on a terminal: one progress bar redrawn in place with CR, not a
        # line per tenth as in a log)
        si.get("/_standin/mode?klines=418once")
        rc, text = on_terminal(["fetch", "XRPETH", "--from", "2019-10-11"], env)
        check_eq(rc, 0, text[-2000:])
        bars = [b for b in text.split("\r") if b.startswith("[")]
        check(len(bars) >= 2, f"no progress bar redrawn on the terminal: {text[-2000:]!r}")
        check(all("\n" not in b for b in bars[:-1]), f"a redraw ended its line: {bars[:3]!r}")
        check(" 100% " in bars[-1] and "candles written" in text, text[-2000:])
        check_eq(si.stats()["rate_limited"], 2)
        check_eq(differences(expected_candles(), stored_candles()), [])
    finally:
        si.stop()


@test
def error_paths_fail_clearly():
    need_services()
    cli("migrate", "--migrations-dir", os.path.join(ROOT, "db"))
    # --help on stdout, exit 0
    for cmd in ("ingest", "fetch"):
        p = cli(cmd, "--help")
        check("usage: predictd " + cmd in p.stdout, p.stdout)
    # bad URLs and specs are refused at start
    p = cli("ingest", env={"PREDICTD_FEED": "binance:XRPETH",
                           "PREDICTD_BINANCE_WS_URL": "ftp://example"}, check_rc=False)
    check_eq(p.returncode, 2)
    check("PREDICTD_BINANCE_WS_URL" in p.stderr, p.stderr)
    p = cli("ingest", env={"PREDICTD_FEED": "binance:xrp-eth"}, check_rc=False)
    check_eq(p.returncode, 2)
    p = cli("ingest", env={"PREDICTD_FEED": "nosuchexchange:X"}, check_rc=False)
    check_eq(p.returncode, 2)
    check("unknown feed" in p.stderr, p.stderr)
    p = cli("fetch", "XRPETH", "--from", "yesterday", check_rc=False)
    check_eq(p.returncode, 2)
    # REST down: a closed port fails after its retries, with the reason
    port = free_port()
    p = cli("fetch", "XRPETH", "--from", "2019-10-11",
            env={"PREDICTD_BINANCE_REST_URL": f"http://127.0.0.1:{port}"}, check_rc=False,
            timeout=120)
    check_eq(p.returncode, 1)
    check("fetch: XRPETH:" in p.stderr, p.stderr)
    if not SHARED_DATA or not os.path.exists(TRADES):
        return
    si = StandIn(faults="none", speed=1000000, lead=4000)
    try:
        env = env_for(si)
        # an unknown symbol: the exchange's own message
        p = cli("fetch", "DOGEUSDT", "--from", "2019-10-11", env=env, check_rc=False)
        check_eq(p.returncode, 1)
        check("Invalid symbol" in p.stderr, p.stderr)
        # malformed JSON from REST
        psql("DELETE FROM candles WHERE symbol = 'XRPETH'")
        si.get("/_standin/mode?klines=malformed")
        p = cli("fetch", "XRPETH", "--from", "2019-10-11", env=env, check_rc=False)
        check_eq(p.returncode, 1)
        check("klines" in p.stderr, p.stderr)
        si.get("/_standin/mode?klines=ok")
        # a symbol the exchange does not list: said in the log, not streamed, no crash
        rc, err = ingest_until(dict(env, PREDICTD_FEED="binance:DOGEUSDT"),
                               lambda t: "Invalid symbol" in t)
        check_eq(rc, 0, err)
        check("Invalid symbol" in err, err)
    finally:
        si.stop()


@test
def wss_verifies_the_certificate():
    need_data()
    if not shutil.which("openssl"):
        raise Skip("needs the openssl command")
    cli("migrate", "--migrations-dir", os.path.join(ROOT, "db"))
    d = tempfile.mkdtemp(prefix="predictd-tls-")
    ca_key, ca, key, csr, crt = (os.path.join(d, n) for n in
                                 ("ca.key", "ca.pem", "srv.key", "srv.csr", "srv.pem"))
    ext = os.path.join(d, "ext.cnf")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for cmd in (["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key,
                 "-out", ca, "-days", "2", "-subj", "/CN=predictd test CA"],
                ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
                 "-subj", "/CN=127.0.0.1"],
                ["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key,
                 "-CAcreateserial", "-out", crt, "-days", "2", "-extfile", ext]):
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    si = StandIn(faults="none", speed=6000, lead=30, tls=(crt, key))
    rest = StandIn(faults="none", speed=6000, lead=30)  # REST in the clear here
    try:
        def run_ingest(extra, done):
            rc, err = ingest_until(dict(PREDICTD_FEED="binance:XRPETH",
                                        PREDICTD_BINANCE_WS_URL=si.ws,
                                        PREDICTD_BINANCE_REST_URL=rest.rest, **extra), done)
            check_eq(rc, 0, err)
            return err
        # not trusted: refused, never streamed
        err = run_ingest({"SSL_CERT_FILE": os.path.join(d, "nothing.pem")},
                         lambda t: "certificate" in t)
        check("certificate" in err, err[-2000:])
        check_eq(si.stats()["ws_connections"], 0)
        # trusted (the test CA): the stream flows over TLS
        err = run_ingest({"SSL_CERT_FILE": ca},
                         lambda t: "streaming wss://" in t and si.stats()["pongs"] >= 1)
        check("streaming wss://" in err, err[-2000:])
        check(si.stats()["ws_connections"] >= 1 and si.stats()["pongs"] >= 1,
              f"{si.stats()}")
    finally:
        si.stop()
        rest.stop()


# STORE_LOCK_KEY_FEED ("predfeed") as pg_locks shows an advisory lock
FEED_LOCK_CLASSID, FEED_LOCK_OBJID = 0x70726564, 0x66656564


@test
def leader_lock_lost_and_regained_backfills_and_keeps_every_minute():
    """The ingester's lock session is killed under it (a failover of the
    database, an operator's pg_terminate_backend) after the stream's gap,
    duplicates and malformed messages: it stops its feed at once, stands
    by, takes the lock again, and REST fills the minutes it missed; every
    minute still equals the exchange's and it stops cleanly."""
    need_data()
    cli("migrate", "--migrations-dir", os.path.join(ROOT, "db"))
    psql("DELETE FROM candles WHERE symbol = 'XRPETH'")
    si = StandIn(faults="dup,swap,malformed,gap")
    want = expected_candles()
    killed = []

    def lock_pids():
        return psql(f"SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND "
                    f"classid = {FEED_LOCK_CLASSID} AND objid = {FEED_LOCK_OBJID}").split()

    def step(text):
        if not killed:
            # after the faults (trade 4025), before the end of the replay
            if "feed binance ingesting" in text and si.stats()["trades_sent"] >= 4300:
                pids = lock_pids()
                check_eq(len(pids), 1, "one session holds the feed's lock")
                psql(f"SELECT pg_terminate_backend({pids[0]})")
                killed.append(pids[0])
            return False
        return (text.count("feed binance ingesting") >= 2 and si.stats()["replay_done"]
                and not differences(want, stored_candles()))

    try:
        rc, err = ingest_until(env_for(si, PREDICTD_FEED="binance:XRPETH"), step, timeout=180)
        check_eq(rc, 0, err[-3000:])
        check(killed, "the lock session was terminated")
        check("leader lock is lost: stopping the feed" in err, err[-3000:])
        check_eq(err.count("feed binance ingesting"), 2)
        # the lock is taken again by a new session of the same process
        check("Sanitizer" not in err and "runtime error" not in err, err[-6000:])
        bad = differences(want, stored_candles())
        check_eq(bad[:5], [])
        # the faults before the loss were seen and said once
        st = si.stats()
        check(st["gap_ids"] and st["malformed_sent"] >= 4, f"{st}")
        check_eq(err.count("rejected a stream message"), 1)
        check("trades missing from the stream" in err, err[-3000:])
    finally:
        si.stop()


@test
def stream_wire_faults_reconnect_backfill_and_keep_every_minute():
    """RFC 6455 faults from the stream server, inside `predictd serve`:
    trades split into fragments with a ping between them and written one
    byte per TCP segment are joined; a trade with invalid UTF-8 and trades
    with fields of the wrong JSON type are rejected and counted, not
    written; a close frame (1001), a masked frame and a frame announcing
    5 MiB each end the connection with their reason in the log, the feed
    reconnects and REST backfills what the stream missed: every minute
    equals the exchange's, and serve stops cleanly."""
    need_data()
    cli("migrate", "--migrations-dir", os.path.join(ROOT, "db"))
    psql("DELETE FROM candles WHERE symbol = 'XRPETH'")
    si = StandIn(faults="split,badutf8,close,masked,oversized")
    models = tempfile.mkdtemp(prefix="predictd-exchange-models-")
    svc = None
    try:
        svc = Service(models, env=env_for(si, PREDICTD_FEED="binance:XRPETH"))
        wait_for(lambda: si.stats()["replay_done"], 120, "the replay")
        want = expected_candles()
        try:
            wait_for(lambda: not differences(want, stored_candles()), 90,
                     "every minute in PostgreSQL")
        except AssertionError:
            bad = differences(want, stored_candles())
            raise AssertionError(f"{len(bad)} minutes differ from the exchange's, first: "
                                 f"{bad[:5]}") from None
        st = si.stats()
        for f in ("split", "badutf8", "close", "masked", "oversized"):
            check(st[f + "_sent"] >= 1, f"fault {f} was sent: {st}")
        check_eq(st["split_sent"], 10)
        # one connection, and one more after each fault that ends it
        check(st["ws_connections"] >= 4, f"{st['ws_connections']} connections")
        log = svc.logs()
        for reason in ("the server closed the stream (code 1001: going away)",
                       "masked frame from the server",
                       "frame of 5242880 bytes"):
            check(f"stream lost: {reason}" in log, f"no 'stream lost: {reason}' in the log")
        # only those three ended a connection: the split trades and the bad
        # ones did not
        check_eq(log.count("stream lost:"), 3)
        # the invalid bytes are not copied into the log (it decoded as UTF-8)
        rej = [ln for ln in log.splitlines() if "rejected a stream message" in ln]
        check(len(rej) == 1 and '"s": "??' in rej[0], f"{rej}")
        # the split trades came whole: the stand-in's pings were answered
        check(st["pongs"] >= 1, f"{st}")
        status, _, m = svc.get("/metrics", validate=False)
        m = m.decode() if isinstance(m, bytes) else m
        check_eq(status, 200)
        # the four wrongly typed trades name the symbol; the invalid UTF-8 one cannot
        check_eq(metric(m, "predictd_feed_rejected_messages_total"), 4)
        check('predictd_feed_unattributed_rejects_total{feed="binance"} 1' in m,
              "one unattributed reject")
        check(metric(m, "predictd_feed_reconnects_total") >= 3, "reconnects counted")
        check(metric(m, "predictd_feed_backfilled_candles_total") >= 1, "backfill counted")
        check_eq(log.count("rejected a stream message"), 1)
        svc.stop()  # SIGTERM: exits 0
        svc = None
    finally:
        if svc:
            log = svc.logs()
            svc.stop(sig=signal.SIGKILL, expect_rc=None)
            if sys.exc_info()[0]:
                print(log[-6000:])
        si.stop()


@test
def exchange_info_halts_odd_ticks_and_unlisted_symbols():
    """What exchangeInfo says decides what is streamed: a halted symbol
    (status BREAK, its tick size as a JSON number) is said in the log,
    stored and still streamed; a zero tick size is not stored over the
    known one; a symbol the answer does not list is not streamed and the
    feed, retrying, says it is down; a malformed answer is named."""
    need_data()
    cli("migrate", "--migrations-dir", os.path.join(ROOT, "db"))
    si = StandIn(faults="none")
    q = "SELECT status, tick_size FROM exchange_symbols WHERE venue = 'binance' AND " \
        "symbol = 'XRPETH'"
    try:
        env = env_for(si, PREDICTD_FEED="binance:XRPETH")
        psql("DELETE FROM exchange_symbols WHERE venue = 'binance' AND symbol = 'XRPETH'")
        si.get("/_standin/mode?info=halted")
        rc, err = ingest_until(env, lambda t: "streaming ws://" in t)
        check_eq(rc, 0, err[-3000:])
        check("XRPETH: the exchange says its status is BREAK" in err, err[-3000:])
        check_eq(psql(q), "BREAK|0.0001")
        si.get("/_standin/mode?info=zerotick")
        rc, err = ingest_until(env, lambda t: "streaming ws://" in t)
        check_eq(rc, 0, err[-3000:])
        check("XRPETH: status TRADING, tick 0\n" in err, err[-3000:])
        check_eq(psql(q), "BREAK|0.0001")  # a zero tick is not stored
        conns = si.stats()["ws_connections"]
        si.get("/_standin/mode?info=unlisted")
        rc, err = ingest_until(env, lambda t: "feed down: 3 attempts failed in a row" in t)
        check_eq(rc, 0, err[-3000:])
        check("XRPETH: not listed by the exchange; not streamed" in err, err[-3000:])
        check("feed down: 3 attempts failed in a row" in err, err[-3000:])
        check_eq(si.stats()["ws_connections"], conns)
        si.get("/_standin/mode?info=malformed")
        rc, err = ingest_until(env, lambda t: "malformed JSON" in t)
        check_eq(rc, 0, err[-3000:])
        check("exchangeInfo: /api/v3/exchangeInfo" in err and "malformed JSON" in err,
              err[-3000:])
        check_eq(si.stats()["ws_connections"], conns)
    finally:
        si.stop()


@test
def database_sessions_dropped_mid_stream_lose_no_minute():
    """The ingester's database sessions (not its lock) are terminated twice
    while it streams, as a database restart or a proxy would: candles whose
    write fails are kept and written on the next call, the connections are
    made again, and every minute still equals the exchange's."""
    need_data()
    cli("migrate", "--migrations-dir", os.path.join(ROOT, "db"))
    psql("DELETE FROM candles WHERE symbol = 'XRPETH'")
    si = StandIn(faults="none")
    want = expected_candles()
    killed = []

    def drop_sessions():
        return psql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
                    "datname = current_database() AND pid <> pg_backend_pid() AND "
                    "backend_type = 'client backend' AND application_name <> 'predictd-lock'")

    def step(text):
        sent = si.stats()["trades_sent"]
        for at in (3000, 7000):
            if sent >= at and len(killed) < (1 if at == 3000 else 2) and \
                    "feed binance ingesting" in text:
                killed.append(int(drop_sessions()))
        return (len(killed) == 2 and si.stats()["replay_done"]
                and not differences(want, stored_candles()))

    try:
        rc, err = ingest_until(env_for(si, PREDICTD_FEED="binance:XRPETH"), step, timeout=180)
        check_eq(rc, 0, err[-3000:])
        check(len(killed) == 2 and all(k >= 1 for k in killed), f"sessions terminated: {killed}")
        check_eq(differences(want, stored_candles())[:5], [])
        # the lock was not touched: one ingester all along
        check_eq(err.count("feed binance ingesting"), 1)
        check("leader lock is lost" not in err, err[-3000:])
        # each drop was noticed and the session made again
        check(err.count("reconnected to the database") >= 2, err[-3000:])
    finally:
        si.stop()


if __name__ == "__main__":
    sys.exit(run_tests())
