"""The inference loop and the store under failure, end to end: the real
binary against the real PostgreSQL and Redis of tests/run.

- Redis hung (SIGSTOP) or killed: requests answer from PostgreSQL within
  the client timeout, /health/status says Redis is down, the loop keeps
  predicting and recording; once Redis answers again, so does the cache.
- Redis needing AUTH and a non-zero database (a private redis-server
  started here): the right password and database are used; a wrong or
  missing password, or a database Redis does not have, is an outage
  (logged with Redis' reason, never the password) and answers come from
  PostgreSQL.
- Redis refusing writes (over maxmemory, noeviction): answers stay right,
  the refusals are counted and logged with Redis' reason.
- Corrupt entries written into Redis directly (truncated, wrong version,
  garbage, an altered prediction fragment) are misses: the answer is
  recomputed, never the corrupt value. A well-formed entry is served (the
  control that shows the reads go to Redis at all).
- PostgreSQL stopped under a running `serve`, and a `serve` started while
  it is down: answers say so (503 data_unavailable) or come from Redis;
  once it is back, the loop LISTENs, catches up and records.
- The leader lock taken by another session: the loop turns follower
  (predicts, records nothing), then leader again and records what it
  missed. A ledger write the database refuses is retried until recorded.
- Notifications the loop cannot use (malformed candle or models payloads)
  are ignored; a models notification for _default rescans and re-predicts;
  a _default model's symbol with too few candles is logged once, answered
  with an error, and predicted once its candles arrive.
- Settling: exact touches of a level (a high equal to the take-profit, a
  low equal to the stop, both in one candle), a failure of the database in
  the middle of a settle (rolled back, settled on a later pass), and the
  connection killed in the middle of one (reconnected, settled).
"""
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(__file__))
from harness import (DB_URL, REDIS_URL, SERVICES_DIR, RedisSubscriber, Service, check, check_eq,  # noqa: E402
                     check_in, cli, free_port, need_services, prepare_database, psql, run_tests,
                     services, test, train)

SYM, TF, TFS = "FAULTUSDT", "1h", 3600
CSYM, CTF = "CANDUSDT", "1d"  # a series without a model: only the candles route reads it
LAG = 10
MODELS = tempfile.mkdtemp(prefix="predictd-faults-models-")
DEADLINE = 30
LEADER_KEY = 0x707265646c656164  # STORE_LOCK_KEY_LEADER (store/store.h)
state = {"deleted": []}


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def wait_for(cond, what, timeout=DEADLINE):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def setup():
    if "svc" in state:
        return state["svc"]
    need_services()
    prepare_database(symbols=(SYM,), timeframes=(TF,), count=2500)
    cli("seed", "--symbols", CSYM, "--timeframes", CTF, "--count", "300")
    rows = psql(f"SELECT extract(epoch FROM open_time)::bigint, open, high, low, close, volume "
                f"FROM candles WHERE symbol = '{SYM}' AND timeframe = '{TF}' "
                f"ORDER BY open_time DESC LIMIT {LAG}")
    state["deleted"] = sorted(tuple(float(x) if i else int(x) for i, x in enumerate(r.split("|")))
                              for r in rows.splitlines())
    psql(f"DELETE FROM candles WHERE symbol = '{SYM}' AND timeframe = '{TF}' AND "
         f"open_time >= to_timestamp({state['deleted'][0][0]})")
    train(MODELS, SYM, TF, "--horizon", "2")
    train(MODELS, SYM, TF, "--horizon", "2")
    # version 2 serves; version 1, labelled canary (without a share), stays
    # loaded and serves only requests that ask for it, which the loop never
    # computes
    with open(os.path.join(MODELS, SYM, TF, "policy.json"), "w") as f:
        json.dump({"labels": {"canary": 1}}, f)
    svc = Service(MODELS, env={"PREDICTD_LOG_LEVEL": "debug"}, name="faults")
    state["svc"] = svc
    wait_for(lambda: "caught up" in svc.logs(), "the loop's first catch-up")
    return svc


def last_open(symbol=SYM, tf=TF):
    return int(psql(f"SELECT extract(epoch FROM max(open_time))::bigint FROM candles "
                    f"WHERE symbol = '{symbol}' AND timeframe = '{tf}'"))


def next_candle():
    """The next deleted candle of SYM (closed: they were seeded)."""
    t = last_open() + TFS
    for c in state["deleted"]:
        if c[0] == t:
            return c
    raise AssertionError("no deleted candle left to insert")


def insert(c, symbol=SYM, tf=TF):
    psql(f"INSERT INTO candles VALUES ('{symbol}', '{tf}', to_timestamp({c[0]}), {c[1]!r}, "
         f"{c[2]!r}, {c[3]!r}, {c[4]!r}, {c[5]!r})")


def catch_up_series():
    """Inserts the candles SYM misses up to the last closed one (the deleted
    ones, then made-up ones) and waits for the loop's prediction of it."""
    last_closed = (int(time.time()) // TFS - 1) * TFS
    while last_open() < last_closed:
        t = last_open() + TFS
        c = next((d for d in state["deleted"] if d[0] == t), None)
        if c is None:
            prev = float(psql(f"SELECT close FROM candles WHERE symbol = '{SYM}' AND timeframe = "
                              f"'{TF}' AND open_time = to_timestamp({t - TFS})"))
            c = (t, prev, prev * 1.002, prev * 0.998, prev * 1.001, 1000.0)
        insert(c)
    wait_for(lambda: ledger_count(last_closed) == 1, "the loop's prediction of the last candle")


def ledger_count(t, symbol=SYM, tf=TF):
    return int(psql(f"SELECT count(*) FROM predictions WHERE symbol = '{symbol}' AND "
                    f"timeframe = '{tf}' AND candle_time = to_timestamp({t})"))


def status_of(svc):
    status, _, body = svc.get("/health/status")
    check_eq(status, 200, body)
    return body


def loop_job(svc):
    """The inference loop's entry in /health/status."""
    body = status_of(svc)
    return next(j for j in body["components"]["jobs"] if j["name"] == "inference_loop")


def metric(svc, name):
    _, _, body = svc.get("/metrics", validate=False)
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def prediction(svc, query=""):
    status, _, body = svc.get(f"/api/predictions/{SYM}?timeframe={TF}{query}")
    check_eq(status, 200, body)
    return body["prediction"]


def db_candles(limit, symbol=CSYM, tf=CTF):
    """The last `limit` closed candles as the candles route renders them."""
    rows = psql(f"SELECT extract(epoch FROM open_time)::bigint, open, high, low, close, volume "
                f"FROM candles WHERE symbol = '{symbol}' AND timeframe = '{tf}' "
                f"ORDER BY open_time DESC LIMIT {limit}")
    out = []
    for r in reversed(rows.splitlines()):
        f = r.split("|")
        out.append([iso(int(f[0]))] + [float(x) for x in f[1:]])
    return out


def route_candles(svc, limit, symbol=CSYM, tf=CTF):
    status, _, body = svc.get(f"/api/candles/{symbol}?timeframe={tf}&limit={limit}")
    check_eq(status, 200, body)
    return [[c[0]] + [float(x) for x in c[1:]] for c in body["candles"]]


def same_candles(got, want, what=""):
    """The route prints 10 significant digits: equal to that."""
    check_eq(len(got), len(want), what)
    for g, w in zip(got, want):
        check_eq(g[0], w[0], what)
        for a, b in zip(g[1:], w[1:]):
            if abs(a - b) > 1e-9 * max(1.0, abs(b)):
                raise AssertionError(f"{what}: candle {g[0]}: {g} != {w}")


# ---------------------------------------------------------------------------
# Redis spoken over a raw socket: writes values the service never would.

class Redis:
    def __init__(self, port, password=None, db=0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""
        if password is not None:
            check_eq(self.cmd("AUTH", password), b"OK")
        if db:
            check_eq(self.cmd("SELECT", str(db)), b"OK")

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("redis closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _value(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._value() for _ in range(n)]
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise EOFError("redis closed the connection")
                self.buf += chunk
            v, self.buf = self.buf[:n], self.buf[n + 2:]
            return v
        if kind == b":":
            return int(rest)
        if kind == b"-":
            return RuntimeError(rest.decode())
        return rest

    def cmd(self, *args):
        parts = [a if isinstance(a, bytes) else str(a).encode() for a in args]
        msg = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
        self.sock.sendall(msg)
        return self._value()

    def close(self):
        self.sock.close()


def shared_redis():
    host_port = REDIS_URL.split("://", 1)[1].split("/")[0]
    return Redis(int(host_port.rsplit(":", 1)[1]))


def redis_pid():
    with open(os.path.join(SERVICES_DIR, "redis.pid")) as f:
        return int(f.read().strip())


def window_value(candles, version=2, complete=False, count=None):
    """A candle window as store/cache.c packs it: 48 bytes a candle, then
    the 24-byte trailer "PDCW", u16 version, u16 flags, u32 count, u32 0,
    i64 last open time (little-endian)."""
    body = b"".join(struct.pack("<q5d", c[0], *c[1:]) for c in candles)
    n = len(candles) if count is None else count
    return body + b"PDCW" + struct.pack("<HHIIq", version, 1 if complete else 0, n, 0,
                                        candles[-1][0])


# ---------------------------------------------------------------------------

@test
def hung_redis_times_out_and_answers_come_from_postgres():
    svc = setup()
    limit = 30
    want = db_candles(limit)
    same_candles(route_candles(svc, limit), want)
    errors = metric(svc, "predictd_redis_errors_total")
    c = next_candle()
    pid = redis_pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        # every request costs at most the client timeout, then the back-off
        # bypasses Redis: the answers are the database's (a request that
        # hung would fail on the harness's own request timeout; no duration
        # is asserted here)
        same_candles(route_candles(svc, limit + 1), db_candles(limit + 1))
        r = status_of(svc)["components"]["redis"]
        check_eq(r["state"], "down", r)
        check(r.get("last_error"), r)
        # the loop goes on without Redis: the new candle is predicted,
        # recorded and served
        insert(c)
        wait_for(lambda: ledger_count(c[0]) == 1, "the ledger row with Redis hung")
        wait_for(lambda: prediction(svc)["candle_time"] == iso(c[0]),
                 "the new prediction served with Redis hung")
        check(metric(svc, "predictd_redis_errors_total") > errors, "Redis errors counted")
        check_in("Redis unavailable, serving from the database", svc.logs())
        wait_for(lambda: "Redis unavailable, predictions are not published" in svc.logs(),
                 "the publisher's outage logged")
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for(lambda: status_of(svc)["components"]["redis"]["state"] == "up", "Redis up again",
             timeout=DEADLINE)
    wait_for(lambda: "Redis available again" in svc.logs(), "the end of the outage logged")
    # and the cache is used again: the window of this request is stored
    route_candles(svc, limit + 2)
    wait_for(lambda: shared_redis().cmd("EXISTS", f"predictd:candles:{CSYM}:{CTF}") == 1,
             "the window stored in Redis again")


@test
def killed_redis_under_the_loop_then_back():
    svc = setup()
    c = next_candle()
    services("redis-stop")
    try:
        insert(c)
        wait_for(lambda: ledger_count(c[0]) == 1, "the ledger row with Redis stopped")
        wait_for(lambda: prediction(svc)["candle_time"] == iso(c[0]),
                 "the new prediction served with Redis stopped")
        check_eq(status_of(svc)["components"]["redis"]["state"], "down")
        limit = 12
        same_candles(route_candles(svc, limit), db_candles(limit))
    finally:
        services("redis-start")
    wait_for(lambda: status_of(svc)["components"]["redis"]["state"] == "up", "Redis up again")
    # the publisher connects again: the next new prediction is PUBLISHed
    sub = RedisSubscriber(REDIS_URL, "predictd:predictions")
    try:
        c = next_candle()
        insert(c)
        deadline = time.time() + DEADLINE
        while True:
            msg = sub.read(max(0.1, deadline - time.time()))
            if msg[0] == b"message" and json.loads(msg[2])["data"]["candle_time"] == iso(c[0]):
                break
        wait_for(lambda: "Redis available again: publishing predictions" in svc.logs(),
                 "the publisher's recovery logged")
    finally:
        sub.close()


@test
def redis_refusing_writes_is_an_outage_of_writes_only():
    svc = setup()
    r = shared_redis()
    key = f"predictd:candles:{CSYM}:{CTF}"
    r.cmd("DEL", key)
    errors = metric(svc, "predictd_redis_errors_total")
    # over its memory limit with nothing to evict, Redis answers every write
    # with an error (OOM) and still serves reads
    check_eq(r.cmd("CONFIG", "SET", "maxmemory-policy", "noeviction"), b"OK")
    check_eq(r.cmd("CONFIG", "SET", "maxmemory", "1"), b"OK")
    try:
        c = next_candle()
        insert(c)
        wait_for(lambda: ledger_count(c[0]) == 1, "the ledger row with Redis refusing writes")
        wait_for(lambda: prediction(svc)["candle_time"] == iso(c[0]),
                 "the new prediction served with Redis refusing writes")
        for limit in (61, 62):
            same_candles(route_candles(svc, limit), db_candles(limit))
        check_eq(r.cmd("EXISTS", key), 0, "no window was written")
        check(metric(svc, "predictd_redis_errors_total") > errors, "the refused writes counted")
        wait_for(lambda: "OOM" in svc.logs(), "Redis' reason logged")
    finally:
        r.cmd("CONFIG", "SET", "maxmemory", "0")
    # writes are taken again
    same_candles(route_candles(svc, 63), db_candles(63))
    wait_for(lambda: r.cmd("EXISTS", key) == 1, "the window written once Redis takes writes")
    r.close()


def private_redis(password):
    """A redis-server needing AUTH, with 16 databases, on a free port; returns
    (process, port)."""
    d = tempfile.mkdtemp(prefix="predictd-faults-redis-")
    port = free_port()
    p = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir", d,
                          "--save", "", "--appendonly", "no", "--requirepass", password,
                          "--databases", "16"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    def up():
        try:
            r = Redis(port, password)
            ok = r.cmd("PING") == b"PONG"
            r.close()
            return ok
        except OSError:
            return False
    wait_for(up, "the private redis-server")
    return p, port


@test
def redis_auth_and_database_are_used_and_refusals_are_outages():
    setup()
    password = "s3cret p@ss:word/"
    enc = urllib.parse.quote(password, safe="")
    proc, port = private_redis(password)
    limit = 25
    want = db_candles(limit)
    key = f"predictd:candles:{CSYM}:{CTF}"
    try:
        # the right password and database 3: the cache lands in database 3
        svc = Service(MODELS, env={"PREDICTD_REDIS_URL": f"redis://:{enc}@127.0.0.1:{port}/3"},
                      name="redis-auth-db3")
        try:
            same_candles(route_candles(svc, limit), want)
            r3 = Redis(port, password, db=3)
            wait_for(lambda: r3.cmd("EXISTS", key) == 1, "the window in database 3")
            r0 = Redis(port, password)
            check_eq(r0.cmd("EXISTS", key), 0, "nothing in database 0")
            check_eq(status_of(svc)["components"]["redis"]["state"], "up")
            # a hit from database 3 gives the same answer
            same_candles(route_candles(svc, limit), want)
            r3.cmd("FLUSHDB")
            r0.close()
            r3.close()
        finally:
            check_eq(svc.stop(), 0)

        # a wrong password, none, a database Redis does not have: each an
        # outage with Redis' reason, the answers from PostgreSQL
        cases = [("wrong-password", f"redis://:wrong@127.0.0.1:{port}/0", "AUTH"),
                 ("no-password", f"redis://127.0.0.1:{port}/0", "NOAUTH"),
                 ("no-such-db", f"redis://:{enc}@127.0.0.1:{port}/99", "SELECT")]
        for name, url, reason in cases:
            svc = Service(MODELS, env={"PREDICTD_REDIS_URL": url}, name=f"redis-{name}")
            try:
                same_candles(route_candles(svc, limit), want, name)
                same_candles(route_candles(svc, limit), want, name)
                r = status_of(svc)["components"]["redis"]
                check_eq(r["state"], "down", name)
                check(metric(svc, "predictd_redis_errors_total") > 0, name)
                p = prediction(svc)
                check_eq(p["symbol"], SYM)
                logs = svc.logs()
                check_in("Redis unavailable, serving from the database", logs, name)
                line = next(ln for ln in logs.splitlines()
                            if "Redis unavailable, serving from the database" in ln)
                check_in(reason, line, name)
                check(password not in logs and enc not in logs, f"{name}: the password logged")
            finally:
                check_eq(svc.stop(), 0)
        ra = Redis(port, password, db=0)
        check_eq(ra.cmd("DBSIZE"), 0, "a refused service wrote nothing")
        ra.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@test
def corrupt_window_entries_are_misses_not_answers():
    svc = setup()
    key = f"predictd:candles:{CSYM}:{CTF}"
    size = 60  # the candles of each value written; each request asks fewer
    limits = iter(range(20, size))  # a new limit each time: the route's own
    # process cache keys its answers by limit
    limit = next(limits)
    same_candles(route_candles(svc, limit), db_candles(limit))
    r = shared_redis()
    stored = r.cmd("GET", key)
    check(isinstance(stored, bytes) and stored[-24:-20] == b"PDCW", "the route stored its window")
    rows = [tuple(float(x) if i else int(x) for i, x in enumerate(ln.split("|")))
            for ln in psql(f"SELECT extract(epoch FROM open_time)::bigint, open, high, low, "
                           f"close, volume FROM candles WHERE symbol = '{CSYM}' AND timeframe = "
                           f"'{CTF}' ORDER BY open_time DESC LIMIT {size}").splitlines()][::-1]
    doctored = [list(x) for x in rows]
    doctored[-1][4] = doctored[-1][4] * 2
    good = window_value(doctored)
    # the control: a well-formed entry is served as it is (so the reads below
    # do go to Redis); its last close is doctored
    r.cmd("SET", key, good, "EX", 600)
    limit = next(limits)
    got = route_candles(svc, limit)
    check(abs(got[-1][4] - doctored[-1][4]) < 1e-6, "a well-formed window is served from Redis")
    for name, value in [
            ("wrong version", window_value(doctored, version=3)),
            ("wrong magic", good[:-24] + b"PDCX" + good[-20:]),
            ("truncated trailer", good[:-7]),
            ("cut inside a candle", None),
            ("too short for the request", window_value(doctored[-5:])),
            ("count below its candles", window_value(doctored, count=5)),
            ("stale last candle", window_value(doctored[:-1])),
            ("garbage", b"\x00\xffnot a window at all" * 3),
            ("empty", b"")]:
        limit = next(limits)
        if value is None:  # exactly the candles asked for, the first one cut
            value = window_value(doctored[-limit:])[5:]
        r.cmd("SET", key, value, "EX", 600)
        same_candles(route_candles(svc, limit), db_candles(limit), f"{name}: from the database")
    # a value of another type (a list): an error reply to GETRANGE, then the
    # database's answer
    r.cmd("DEL", key)
    r.cmd("RPUSH", key, "x")
    limit = next(limits)
    same_candles(route_candles(svc, limit), db_candles(limit), "a key of the wrong type")
    r.cmd("DEL", key)
    r.close()


@test
def postgres_down_answers_say_so_and_the_loop_recovers():
    svc = setup()
    c = next_candle()
    services("pg-stop")
    late = None
    try:
        # a running service: its cache answers; the ledger says the database
        # is away
        check_eq(prediction(svc)["symbol"], SYM)
        status, _, body = svc.get(f"/api/models/{SYM}/{TF}/performance")
        check_eq(status, 503, body)
        check_eq(body["error"]["code"], "data_unavailable")
        # a candle series it never read, with Redis holding nothing: 503
        shared_redis().cmd("DEL", f"predictd:candles:{CSYM}:{CTF}")
        status, _, body = svc.get(f"/api/candles/{CSYM}?timeframe={CTF}&limit=17")
        check_eq(status, 503, body)
        check_eq(body["error"]["code"], "data_unavailable")
        # a service started while the database is down: live, not ready,
        # its loop reconnecting; a prediction it cannot compute says so
        r = shared_redis()
        r.cmd("FLUSHALL")
        r.close()
        late = Service(MODELS, env={"PREDICTD_LOG_LEVEL": "debug"}, name="started-without-db")
        status, _, body = late.get(f"/api/predictions/{SYM}?timeframe={TF}")
        check_eq(status, 503, body)
        check_eq(body["error"]["code"], "data_unavailable")
        status, _, body = late.get("/health/ready")
        check_eq(status, 503, body)
        jobs = status_of(late)["components"]
        check_eq(jobs["database"]["state"], "down", jobs)
    finally:
        services("pg-start")
    try:
        # both services reconnect: the new candle is predicted and recorded
        # once, and served by both
        insert(c)
        wait_for(lambda: ledger_count(c[0]) == 1, "the ledger row after the restart")
        wait_for(lambda: prediction(svc)["candle_time"] == iso(c[0]), "the running service")
        wait_for(lambda: prediction(late)["candle_time"] == iso(c[0]), "the late service")
        wait_for(lambda: late.get("/health/ready")[0] == 200, "the late service ready")
        wait_for(lambda: "listening for new candles on predictd_candles" in late.logs(),
                 "the late service's loop listening")
        same_candles(route_candles(late, 17), db_candles(17))
        status, _, body = late.get(f"/api/models/{SYM}/{TF}/performance")
        check_eq(status, 200, body)
    finally:
        check_eq(late.stop(), 0)
    check_eq(ledger_count(c[0]), 1, "one row, whoever led")


@test
def a_loop_without_the_leader_lock_records_nothing_until_it_has_it():
    svc = setup()
    wait_for(lambda: loop_job(svc)["role"] == "leader", "the loop leading")
    # another session waits for the lock; the leader's lock session is
    # terminated, so that session takes it
    holder = subprocess.Popen(["psql", DB_URL.split("?")[0], "-qtAX", "-c",
                               f"SELECT pg_advisory_lock({LEADER_KEY})", "-c",
                               "SELECT pg_sleep(120)"],
                              env=dict(os.environ, PGAPPNAME="test-lock-holder"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: psql("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = "
                              "'Lock' AND query LIKE '%pg_advisory_lock%'") == "1",
                 "the other session waiting for the lock")
        psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = "
             "'predictd-lock'")
        wait_for(lambda: "follower: lost the leader lock" in svc.logs(), "the loop turning follower")
        wait_for(lambda: loop_job(svc)["role"] == "follower", "the follower role in the status")
        c = next_candle()
        insert(c)
        # a follower predicts and serves, and records nothing
        wait_for(lambda: prediction(svc)["candle_time"] == iso(c[0]), "the follower's prediction")
        time.sleep(1.5)
        check_eq(ledger_count(c[0]), 0, "a follower does not record")
    finally:
        # the session, not only psql: a backend in pg_sleep keeps the lock
        psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = "
             "'test-lock-holder'")
        holder.wait(timeout=30)
    # the lock is free: the loop leads again and records what it missed
    wait_for(lambda: ledger_count(c[0]) == 1, "the ledger row once leader again")
    check(svc.logs().count("leader: this replica records") >= 2, "leader again")


@test
def malformed_candle_notifications_are_ignored():
    svc = setup()
    lost = svc.logs().count("lost the LISTEN connection")
    for payload in ("no series here", f"bad!sym:{TF}", f"{SYM}:7x", "X" * 30 + f":{TF}",
                    f":{TF}", f"{SYM}:"):
        psql(f"NOTIFY predictd_candles, '{payload}'")
    # the loop is still listening on the same connection, and the next real
    # notification is predicted and recorded
    c = next_candle()
    insert(c)
    wait_for(lambda: ledger_count(c[0]) == 1, "the ledger row after the malformed notifications")
    check_eq(loop_job(svc)["state"], "listening")
    check_eq(svc.logs().count("lost the LISTEN connection"), lost)
    check("bad!sym" not in psql("SELECT string_agg(DISTINCT symbol, ',') FROM predictions"))


@test
def a_refused_ledger_write_is_retried_until_recorded():
    svc = setup()
    psql("CREATE OR REPLACE FUNCTION test_refuse_record() RETURNS trigger LANGUAGE plpgsql AS "
         "$$BEGIN RAISE EXCEPTION 'test refuses this record'; END$$")
    psql("CREATE TRIGGER test_refuse_record BEFORE INSERT ON predictions FOR EACH ROW WHEN "
         f"(NEW.symbol = '{SYM}') EXECUTE FUNCTION test_refuse_record()")
    try:
        c = next_candle()
        insert(c)
        # predicted and served, not recorded: the status says why, and the
        # loop tries again (about once a second) rather than waiting for a
        # notification that already came
        wait_for(lambda: prediction(svc)["candle_time"] == iso(c[0]), "the prediction served")
        wait_for(lambda: "recording" in (loop_job(svc).get("last_error") or ""),
                 "the loop's error in the status")
        wait_for(lambda: svc.logs().count("test refuses this record") >= 2, "a retry")
        check_eq(ledger_count(c[0]), 0)
    finally:
        psql("DROP TRIGGER test_refuse_record ON predictions")
    wait_for(lambda: ledger_count(c[0]) == 1, "the row once the database takes it")


def scenario(symbol, candles, direction="LONG", t0=1704067200, close_horizon=True):
    """A hand-built ledger row at t0 for a 1m series with entry 100, stop 98
    (R = 2), targets 102/104/106 (mirrored for SHORT), horizon 3, followed
    by the given (high, low, close) candles."""
    rows = [f"('{symbol}', '1m', to_timestamp({t0}), 100, 100.5, 99.5, 100, 1)"]
    for j, (h, lo, c) in enumerate(candles, 1):
        rows.append(f"('{symbol}', '1m', to_timestamp({t0 + 60 * j}), {c}, {h}, {lo}, {c}, 1)")
    psql("INSERT INTO candles VALUES " + ", ".join(rows) + " ON CONFLICT DO NOTHING")
    if close_horizon:
        psql(f"INSERT INTO candles VALUES ('{symbol}', '1m', to_timestamp({t0 + 60 * 4}), "
             f"100, 100.5, 99.5, 100, 1) ON CONFLICT DO NOTHING")
    if direction == "LONG":
        lv, probs = "100, 98, 102, 104, 106", "0.6, 0.1, 0.3"
    else:
        lv, probs = "100, 102, 98, 96, 94", "0.1, 0.6, 0.3"
    psql(f"INSERT INTO predictions (symbol, timeframe, candle_time, model_version, direction, "
         f"confidence, p_long, p_short, p_no_trade, entry, stop_loss, tp1, tp2, tp3, atr, "
         f"horizon_candles) VALUES ('{symbol}', '1m', to_timestamp({t0}), 1, '{direction}', 0.6, "
         f"{probs}, {lv}, 1.3, 3)")


def outcomes(prefix, n):
    out = psql("SELECT symbol || '|' || outcome || '|' || realised || '|' || "
               "coalesce(round(r_multiple::numeric, 9)::float8::text, '') || '|' || "
               "coalesce(hit_time_s::text, '') FROM predictions WHERE symbol LIKE "
               f"'{prefix}%' AND outcome IS NOT NULL ORDER BY symbol")
    rows = out.splitlines()
    return {r.split("|")[0]: r.split("|")[1:] for r in rows} if len(rows) == n else None


@test
def exact_touches_of_a_level_count():
    setup()
    quiet = [(101, 99.5, 100), (101, 99.5, 100)]
    # a high equal to TP1, and its twin beyond it: the same outcome
    scenario("XTPEQ", [(102, 99.5, 101)] + quiet)
    scenario("XTPOVER", [(102.5, 99.5, 101)] + quiet)
    scenario("XTPUNDER", [(101.999, 99.5, 101)] + quiet)
    # a low equal to the stop, and its twin beyond it
    scenario("XSLEQ", [(100.5, 98, 99)] + quiet)
    scenario("XSLOVER", [(100.5, 97.5, 99)] + quiet)
    scenario("XSLUNDER", [(100.5, 98.001, 99)] + quiet)
    # both touched exactly in one candle: the stop wins (pessimistic)
    scenario("XBOTHEQ", [(102, 98, 100)] + quiet)
    scenario("XBOTHOVER", [(102.5, 97.5, 100)] + quiet)
    # SHORT: a low equal to its TP1, a high equal to its stop
    scenario("XSHTPEQ", [(100.5, 98, 99)] + quiet, "SHORT")
    scenario("XSHSLEQ", [(102, 99.5, 101)] + quiet, "SHORT")
    rows = wait_for(lambda: outcomes("X", 10), "the resolver")
    check_eq(rows["XTPEQ"], rows["XTPOVER"], "a high equal to TP1 reaches it")
    check_eq(rows["XTPEQ"][:2], ["TP1", "LONG"])
    check_eq(rows["XTPEQ"][3], "60")
    check(rows["XTPUNDER"][0] != "TP1", rows["XTPUNDER"])
    check_eq(rows["XSLEQ"], rows["XSLOVER"], "a low equal to the stop reaches it")
    check_eq(rows["XSLEQ"][0], "SL")
    check_eq(rows["XSLEQ"][2:], ["-1", "60"])
    check(rows["XSLUNDER"][0] != "SL", rows["XSLUNDER"])
    check_eq(rows["XBOTHEQ"], rows["XBOTHOVER"], "both exact in one candle: as both beyond")
    check_eq(rows["XBOTHEQ"][:3], ["SL", "NO_TRADE", "-1"])
    check_eq(rows["XSHTPEQ"][:2], ["TP1", "SHORT"])
    check_eq(rows["XSHSLEQ"][0], "SL")
    check_eq(rows["XSHSLEQ"][2:], ["-1", "60"])


@test
def a_settle_failing_midway_is_rolled_back_then_settled():
    svc = setup()
    t0 = 1704153600  # 2024-01-02
    psql("CREATE OR REPLACE FUNCTION test_refuse_settle() RETURNS trigger LANGUAGE plpgsql AS "
         "$$BEGIN RAISE EXCEPTION 'test refuses this settle'; END$$")
    psql("CREATE TRIGGER test_refuse_settle BEFORE UPDATE ON predictions FOR EACH ROW WHEN "
         f"(NEW.symbol = 'MIDFAIL' AND NEW.candle_time = to_timestamp({t0 + 60})) "
         "EXECUTE FUNCTION test_refuse_settle()")
    try:
        # two rows of one series, both stopped out: the first one's write
        # succeeds, the second one's fails
        stop = [(100.5, 97, 98), (100.5, 97, 98), (100.5, 97, 98), (100.5, 97, 98)]
        scenario("MIDFAIL", stop, t0=t0)
        scenario("MIDFAIL", stop[1:], t0=t0 + 60)
        wait_for(lambda: "test refuses this settle" in svc.logs(), "the refused settle")
        check_eq(psql("SELECT count(*) FROM predictions WHERE symbol = 'MIDFAIL' AND "
                      "outcome IS NOT NULL"), "0", "the first write was rolled back")
        line = next(ln for ln in svc.logs().splitlines() if "test refuses this settle" in ln)
        check_in("settle a prediction", line)
    finally:
        psql("DROP TRIGGER test_refuse_settle ON predictions")
    wait_for(lambda: psql("SELECT string_agg(outcome, ',' ORDER BY candle_time) FROM predictions "
                          "WHERE symbol = 'MIDFAIL'") == "SL,SL",
             "both settled once the database takes them")


@test
def a_settle_whose_connection_dies_midway_reconnects_and_settles():
    setup()
    t0 = 1704240000  # 2024-01-03
    psql("CREATE SEQUENCE IF NOT EXISTS test_kill_once")
    psql("CREATE OR REPLACE FUNCTION test_kill_settle() RETURNS trigger LANGUAGE plpgsql AS "
         "$$BEGIN IF nextval('test_kill_once') = 1 THEN "
         "PERFORM pg_terminate_backend(pg_backend_pid()); END IF; RETURN NEW; END$$")
    psql("CREATE TRIGGER test_kill_settle BEFORE UPDATE ON predictions FOR EACH ROW WHEN "
         "(NEW.symbol = 'MIDKILL') EXECUTE FUNCTION test_kill_settle()")
    try:
        scenario("MIDKILL", [(100.5, 97, 98), (101, 99, 100), (101, 99, 100)], t0=t0)
        rows = wait_for(lambda: outcomes("MIDKILL", 1), "the settle after the reconnect")
        check_eq(rows["MIDKILL"][0], "SL")
        check(int(psql("SELECT last_value FROM test_kill_once")) >= 2,
              "the connection was killed once, and the settle ran again")
    finally:
        psql("DROP TRIGGER test_kill_settle ON predictions")


@test
def a_default_model_without_enough_candles_says_so_then_predicts():
    setup()
    thin = "THINUSDT"
    cli("seed", "--symbols", thin, "--timeframes", TF, "--count", "30")
    models = tempfile.mkdtemp(prefix="predictd-faults-default-")
    shutil.copytree(os.path.join(MODELS, SYM, TF, "1"), os.path.join(models, "_default", TF, "1"))
    s = Service(models, env={"PREDICTD_LOG_LEVEL": "debug"}, name="default-thin")
    try:
        # the catch-up tries every symbol with candles in the timeframe; 30
        # candles are too few: one warning, and the route says why
        wait_for(lambda: f"{thin} {TF}: no prediction" in s.logs(), "the loop's warning")
        status, _, body = s.get(f"/api/predictions/{thin}?timeframe={TF}")
        check(status in (404, 409, 422, 503), f"{status} {body}")
        check_eq(body["status"], "error")
        line = next(ln for ln in s.logs().splitlines() if f"{thin} {TF}: no prediction" in ln)
        check(len(line) > len(f"{thin} {TF}: no prediction") + 10, line)
        # enough candles arrive (one upsert, one notification): it predicts
        cli("seed", "--symbols", thin, "--timeframes", TF, "--count", "2500")
        wait_for(lambda: f"{thin} {TF}: predicting again" in s.logs(), "predicting again")
        status, _, body = s.get(f"/api/predictions/{thin}?timeframe={TF}")
        check_eq(status, 200, body)
        check_eq(body["prediction"]["model"]["series"], "_default")
        check_eq(s.logs().count(f"{thin} {TF}: no prediction"), 1, "the warning is logged once")
        # a models notification the loop cannot use is ignored (no series in
        # it; a malformed symbol: its rescan fails); one for _default rescans
        # it and re-predicts every symbol of the timeframe with the new version
        psql("NOTIFY predictd_models, 'no series here'")
        psql(f"NOTIFY predictd_models, 'bad!sym:{TF}'")
        wait_for(lambda: f"models notification bad!sym:{TF}: rescan:" in s.logs(),
                 "the failed rescan logged")
        shutil.copytree(os.path.join(MODELS, SYM, TF, "2"), os.path.join(models, "_default", TF, "2"))
        psql(f"NOTIFY predictd_models, '_default:{TF}'")
        wait_for(lambda: f"models notification: rescanned _default {TF}" in s.logs(),
                 "the _default rescan")
        wait_for(lambda: s.get(f"/api/predictions/{thin}?timeframe={TF}")[2]["prediction"]
                 ["model"]["version"] == 2, "the new _default version serving")
        status, _, body = s.get("/health/live")
        check_eq(status, 200, body)
    finally:
        check_eq(s.stop(), 0)
        shutil.rmtree(models)


def pred_keys(r, version):
    return sorted(r.cmd("KEYS", f"predictd:pred:{SYM}:{TF}:v{version}:*") or [])


@test
def corrupt_prediction_entries_are_recomputed():
    svc = setup()
    # a prediction goes to Redis only while it is current: bring the series
    # up to the last closed candle (away from an hour's end, so that it stays
    # the last closed one during the test)
    if time.time() % TFS > TFS - 30:
        time.sleep(TFS - time.time() % TFS + 2)
    catch_up_series()
    ref = prediction(svc, "&version=1")
    check_eq(ref["model"]["version"], 1, ref)
    r = shared_redis()
    keys = wait_for(lambda: pred_keys(r, 1), "version 1's prediction in Redis")
    check_eq(len(keys), 1, keys)
    key = keys[0]
    good = r.cmd("GET", key)
    check(good.startswith(b"PD3 "), good[:40])
    header, fragment = good.split(b"\n", 1)
    fields = header.split(b" ")

    def fresh(name):
        """A new replica (empty process cache) asked for version 1."""
        s = Service(MODELS, name=f"corrupt-{name}")
        try:
            return prediction(s, "&version=1"), s.logs()
        finally:
            check_eq(s.stop(), 0)

    def same(p, name):
        for k in ("symbol", "timeframe", "direction", "candle_time", "confidence", "model",
                  "entry", "warnings"):
            check_eq(p[k], ref[k], f"{name}: {k}")

    # the control: an entry read from Redis is served (a doctored gap count
    # in an otherwise good entry shows in the warnings)
    check_eq(len(fields), 21, header)
    fields2 = list(fields)
    fields2[18] = b"7"
    r.cmd("SET", key, b" ".join(fields2) + b"\n" + fragment, "EX", 600)
    p, _ = fresh("control")
    check_in("7 missing candles in the feature window", p["warnings"], "the entry was not read")
    altered = bytearray(fragment)
    altered[len(altered) // 2] ^= 0x01

    cases = [("older format", b"PD2" + good[3:]),
             ("garbage", b"\x00\xff garbage"),
             ("no fragment", header),
             ("truncated header", b" ".join(fields[:9])),
             ("wrong candle", b" ".join(fields[:11] + [b"12345"] + fields[12:]) + b"\n" +
              fragment),
             ("truncated fragment", header + b"\n" + fragment[:len(fragment) // 2]),
             ("altered fragment", header + b"\n" + bytes(altered)),
             ("longer fragment", good + b"}"),
             ("empty", b"")]
    for name, value in cases:
        r.cmd("SET", key, value, "EX", 600)
        p, _ = fresh(name.replace(" ", "-"))
        same(p, name)
    r.close()


if __name__ == "__main__":
    sys.exit(run_tests())
