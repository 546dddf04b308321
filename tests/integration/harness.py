"""Integration-test harness: the real predictd binary against the real
PostgreSQL and Redis that tests/run started, real HTTP on loopback, and
every JSON response checked against openapi.yaml.

A test file defines functions decorated with @test and ends with
`sys.exit(run_tests())`, which prints "ok name" / "FAIL name" lines and the
summary line "N passed, N failed, N skipped" that tests/run adds up.

Every server a test starts is checked when it stops: it must exit 0 within
its drain time after SIGTERM, and its log must hold no sanitizer report
("Sanitizer", "runtime error", "LeakSanitizer"); a failure names the server
and prints its log's tail. Servers still running when the file ends are
stopped and checked the same way, each problem counted as a failure. The
output of every `cli()` run is checked for sanitizer reports too. Servers
bind port 0 and read the port the kernel chose from their log, so two
servers never race for one port.

Tests check with check()/check_eq()/check_near() or raise, never with a bare
`assert` (python -O would remove it); tests/run runs python with -E.

Environment (set by tests/run): PREDICTD_BIN, PREDICTD_ROOT,
PREDICTD_TEST_DATABASE_URL (a fresh database for this file),
PREDICTD_TEST_REDIS_URL, PREDICTD_TEST_SERVICES_DIR, PREDICTD_SHARED_DATA,
PREDICTD_TEST_TMP (removed after the run; TMPDIR points into it).
TEST_ONLY=substring runs only the matching tests (the others count as
skipped). Uses only Debian's python3 with python3-yaml and python3-jsonschema.
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request

ROOT = os.environ.get("PREDICTD_ROOT") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("PREDICTD_BIN") or os.path.join(ROOT, "build", "predictd")
DB_URL = os.environ.get("PREDICTD_TEST_DATABASE_URL")
REDIS_URL = os.environ.get("PREDICTD_TEST_REDIS_URL")
SERVICES_DIR = os.environ.get("PREDICTD_TEST_SERVICES_DIR")
SHARED_DATA = os.environ.get("PREDICTD_SHARED_DATA")

_tests = []
_current = {"test": None}

# a line holding one of these in a server's log or a command's stderr is a
# sanitizer report (ASan, UBSan, LSan), which fails the test
SANITIZER_MARKERS = ("Sanitizer", "runtime error", "LeakSanitizer")


def sanitizer_lines(text):
    """The lines of text that report a sanitizer finding."""
    return [ln for ln in text.splitlines() if any(m in ln for m in SANITIZER_MARKERS)]


def tail(text, n=40):
    return "\n".join(text.splitlines()[-n:])


class Skip(Exception):
    """Raised by a test that cannot run here (says why)."""


def test(fn):
    _tests.append(fn)
    return fn


def check(cond, msg="check failed"):
    if not cond:
        raise AssertionError(msg)


def check_eq(a, b, msg=""):
    if a != b:
        raise AssertionError(f"{a!r} != {b!r} {msg}")


def check_near(a, b, tol, msg=""):
    """|a - b| <= tol * max(1, |b|)."""
    if not abs(a - b) <= tol * max(1.0, abs(b)):
        raise AssertionError(f"{a!r} !~ {b!r} (tolerance {tol}) {msg}")


def check_in(item, container, msg=""):
    if item not in container:
        raise AssertionError(f"{item!r} not in {container!r} {msg}")


def run_tests():
    passed = failed = skipped = 0
    only = os.environ.get("TEST_ONLY")
    for fn in _tests:
        if only and only not in fn.__name__:
            skipped += 1
            continue
        t0 = time.time()
        _current["test"] = fn.__name__
        try:
            fn()
            passed += 1
            print(f"ok   {fn.__name__} ({time.time() - t0:.1f}s)", flush=True)
        except Skip as e:
            skipped += 1
            print(f"skip {fn.__name__}: {e}", flush=True)
        except Exception:  # noqa: BLE001 - every failure is reported
            failed += 1
            print(f"FAIL {fn.__name__}", flush=True)
            traceback.print_exc(file=sys.stdout)
    _current["test"] = None
    if only:
        print(f"TEST_ONLY={only}: {skipped} tests not selected count as skipped", flush=True)
    # servers the tests left running (shared ones): each must stop cleanly
    for svc in list(Service.running):
        try:
            svc.stop()
        except Exception as e:  # noqa: BLE001 - every failure is reported
            failed += 1
            print(f"FAIL server {svc.name}: {e}", flush=True)
    print(f"{passed} passed, {failed} failed, {skipped} skipped", flush=True)
    return 1 if failed else 0


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def listening_port(pid):
    """The TCP port process `pid` listens on (its first listening socket), or
    None: its socket inodes (/proc/PID/fd) matched against the kernel's
    listening sockets (/proc/net/tcp and tcp6, state 0A)."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    except OSError:
        return None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == "0A" and fields[9] in inodes:
                        return int(fields[1].rsplit(":", 1)[1], 16)
        except OSError:
            continue
    return None


def need_services():
    if not DB_URL or not REDIS_URL:
        raise Skip("needs PREDICTD_TEST_DATABASE_URL and PREDICTD_TEST_REDIS_URL (tests/run)")


def cli(*args, env=None, check_rc=True, stdin=None, timeout=600):
    """Runs the binary; returns CompletedProcess (text)."""
    e = dict(os.environ)
    e.setdefault("PREDICTD_LOG_FORMAT", "text")
    if DB_URL:
        e["PREDICTD_DATABASE_URL"] = DB_URL
    e.update(env or {})
    p = subprocess.run([BIN, *args], env=e, input=stdin, capture_output=True, text=True,
                       timeout=timeout)
    san = sanitizer_lines(p.stderr)
    if san:
        raise AssertionError(f"predictd {' '.join(args)}: sanitizer report: {san[0]}\n"
                             f"{tail(p.stderr)}")
    if check_rc and p.returncode != 0:
        raise AssertionError(f"predictd {' '.join(args)} exited {p.returncode}:\n{p.stderr}")
    return p


def services(cmd):
    """Stops or starts the shared PostgreSQL/Redis (fault tests)."""
    subprocess.run([os.path.join(ROOT, "server", "services.sh"), cmd, SERVICES_DIR],
                   check=True, capture_output=True, timeout=120)


class Service:
    """One `predictd serve` process on a port the kernel chose (port 0).

    name says which test started it (failures name it). stop() checks the
    exit and the log; every server is stopped by the end of the file."""

    running = []

    def __init__(self, models_dir, env=None, redis=True, name=None, port=None):
        """port: listen there (a gateway's upstream must know it first);
        None: port 0, and the server's log line says which it got."""
        self.name = name or _current["test"] or "serve"
        self.port = port
        self.base = f"http://127.0.0.1:{port}" if port else None
        self.final_log = None  # the log's text once stopped (the file is removed)
        self.log_path = tempfile.mktemp(prefix="predictd-serve-", suffix=".log")
        e = dict(os.environ)
        e.update({
            "PREDICTD_LISTEN": f"127.0.0.1:{port or 0}",
            "PREDICTD_DATABASE_URL": DB_URL or "",
            "PREDICTD_MODELS_DIR": models_dir,
            "PREDICTD_LOG_FORMAT": "json",
            "PREDICTD_THREADS": "4",
            "PREDICTD_API_KEY_FILE": os.path.join(models_dir, ".no-key-file"),
            "PREDICTD_WEB_DIR": os.path.join(ROOT, "web"),
        })
        if redis and REDIS_URL:
            e["PREDICTD_REDIS_URL"] = REDIS_URL
        else:
            e.pop("PREDICTD_REDIS_URL", None)
        e.update(env or {})
        self.drain_timeout = int(e.get("PREDICTD_DRAIN_TIMEOUT") or 10)
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([BIN, "serve"], env=e, stdout=self.log, stderr=self.log)
        Service.running.append(self)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                Service.running.remove(self)
                self.log.close()
                raise AssertionError(f"server {self.name}: serve exited {self.proc.returncode} "
                                     f"at start:\n{tail(self.logs())}")
            if self.port is None:
                m = re.search(r"listening on [^\s:]+:(\d+)", self.logs())
                # at log levels above info there is no such line: ask the kernel
                port = int(m.group(1)) if m else listening_port(self.proc.pid)
                if port:
                    self.port = port
                    self.base = f"http://127.0.0.1:{self.port}"
            if self.port is not None:
                try:
                    status, _, _ = self.get("/health/live", validate=False)
                    if status == 200:
                        return
                except OSError:
                    pass
            time.sleep(0.05)
        self.stop(sig=signal.SIGKILL, expect_rc=None)
        raise AssertionError(f"server {self.name} did not become live in 30 s:\n"
                             f"{tail(self.logs())}")

    def logs(self):
        if self.final_log is not None:
            return self.final_log
        if not self.log.closed:
            self.log.flush()
        with open(self.log_path) as f:
            return f.read()

    def request(self, method, path, body=None, headers=None, validate=True, timeout=30):
        data = None
        hdrs = dict(headers or {})
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                status, rh, raw = r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            status, rh, raw = e.code, dict(e.headers), e.read()
        ctype = rh.get("Content-Type", "")
        payload = json.loads(raw) if ctype.startswith("application/json") and raw else raw
        if validate:
            openapi_check(method, path, status, payload, ctype)
        return status, rh, payload

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def stop(self, sig=signal.SIGTERM, expect_rc=0):
        """Stops the server (if still running) with sig and checks it: the
        exit status is expect_rc (None: any), reached within the drain time
        plus 30 s, and the log holds no sanitizer report. Raises
        AssertionError naming the server, with the log's tail, otherwise.
        Returns the exit status. A clean server's log is removed."""
        if self in Service.running:
            Service.running.remove(self)
        problems = []
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            limit = self.drain_timeout + 30
            try:
                self.proc.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                problems.append(f"did not exit within {limit} s of signal {int(sig)}; killed")
        rc = self.proc.returncode
        if expect_rc is not None and rc != expect_rc and not problems:
            problems.append(f"exited {rc}, expected {expect_rc}")
        if not self.log.closed:
            self.log.close()
        text = self.logs()
        san = sanitizer_lines(text)
        if san:
            problems.append(f"sanitizer report: {san[0]}")
        if problems:
            raise AssertionError(f"server {self.name} (port {self.port}, log {self.log_path}): "
                                 f"{'; '.join(problems)}\n--- log tail ---\n{tail(text)}")
        self.final_log = text
        try:
            os.unlink(self.log_path)
        except OSError:
            pass
        return rc


# ---------------------------------------------------------------------------
# OpenAPI checking. openapi.yaml is OpenAPI 3.1, whose schemas are JSON
# Schema 2020-12, so jsonschema validates them directly once $refs resolve.

_spec = None


def _load_spec():
    global _spec
    if _spec is None:
        import yaml
        with open(os.path.join(ROOT, "openapi.yaml")) as f:
            _spec = yaml.safe_load(f)
    return _spec


def _match_path(spec, path):
    path = path.split("?", 1)[0]
    for template, item in spec["paths"].items():
        rx = "^" + re.sub(r"\{[^/]+\}", "[^/]+", template) + "$"
        if re.match(rx, path):
            yield template, item


def openapi_check(method, path, status, payload, ctype):
    """Raises AssertionError when the response is not what openapi.yaml says."""
    import jsonschema
    spec = _load_spec()
    matches = list(_match_path(spec, path))
    check(matches, f"{path} is not in openapi.yaml")
    # the most specific template wins (fewest parameters)
    template, item = sorted(matches, key=lambda m: m[0].count("{"))[0]
    op = item.get(method.lower())
    check(op is not None, f"{method} {template} is not in openapi.yaml")
    responses = op["responses"]
    resp = responses.get(str(status)) or responses.get("default")
    check(resp is not None, f"{method} {template}: status {status} is not documented")
    if "$ref" in resp:
        resp = _resolve(spec, resp["$ref"])
    content = resp.get("content", {})
    if not content:
        return
    media = next((m for m in content if ctype.startswith(m)), None)
    check(media is not None, f"{method} {template} {status}: content type {ctype} not documented")
    schema = content[media].get("schema")
    if schema is None or not isinstance(payload, (dict, list)):
        return
    root = dict(schema)
    root["components"] = spec.get("components", {})
    validator = jsonschema.Draft202012Validator(root)
    errors = sorted(validator.iter_errors(payload), key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        raise AssertionError(f"{method} {path} {status} does not match openapi.yaml at "
                             f"{'/'.join(map(str, e.path))}: {e.message}")


def _resolve(spec, ref):
    node = spec
    for part in ref.lstrip("#/").split("/"):
        node = node[part]
    return node


# ---------------------------------------------------------------------------
# Data set-up shared by tests.

def prepare_database(symbols=("BTCUSDT", "ETHUSDT"), timeframes=("15m", "1h"), count=3000):
    """Migrates this file's database and seeds synthetic candles."""
    cli("migrate", "--migrations-dir", os.path.join(ROOT, "db"))
    cli("seed", "--symbols", ",".join(symbols), "--timeframes", ",".join(timeframes),
        "--count", str(count))


def train(models_dir, symbol, tf, *extra, force=True):
    """Trains and publishes a model. The seeded candles are a random walk, on
    which no model beats its baselines: tests that are not about that gate
    publish anyway (--force), and the model's answers are NO_TRADE with
    no_trade_reason below_baseline."""
    cli("train", "--symbol", symbol, "--timeframe", tf, "--models-dir", models_dir, "--seed", "1",
        *(("--force",) if force else ()), *extra, timeout=900)


def raw_request(port, data, timeout=10, host="127.0.0.1"):
    """Sends raw bytes, returns (status, headers, body) of the answer."""
    s = socket.create_connection((host, port), timeout=timeout)
    s.sendall(data)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in
               (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
    want = int(headers.get("content-length", "0"))
    while len(body) < want:
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    s.close()
    return int(lines[0].split()[1]), headers, body


def psql(sql):
    """Runs SQL on this file's database; returns stdout."""
    p = subprocess.run(["psql", DB_URL.split("?")[0], "-qtAX", "-c", sql], capture_output=True,
                       text=True, timeout=60)
    if p.returncode != 0:
        raise AssertionError(f"psql failed: {p.stderr}")
    return p.stdout.strip()


# ---------------------------------------------------------------------------
# A Redis subscriber speaking RESP over a raw socket (the loop's PUBLISH).

class RedisSubscriber:
    def __init__(self, url, channel):
        host, port = url.split("://", 1)[1].split("/")[0].rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        self.buf = b""
        self.sock.sendall(f"*2\r\n$9\r\nSUBSCRIBE\r\n${len(channel)}\r\n{channel}\r\n".encode())
        check_eq(self.read()[0], b"subscribe")

    def _need(self, n, deadline):
        while len(self.buf) < n:
            self.sock.settimeout(max(0.01, deadline - time.time()))
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("redis closed the connection")
            self.buf += chunk

    def _line(self, deadline):
        while b"\r\n" not in self.buf:
            self._need(len(self.buf) + 1, deadline)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _value(self, deadline):
        line = self._line(deadline)
        kind, rest = line[:1], line[1:]
        if kind == b"*":
            return [self._value(deadline) for _ in range(int(rest))]
        if kind == b"$":
            n = int(rest)
            self._need(n + 2, deadline)
            v, self.buf = self.buf[:n], self.buf[n + 2:]
            return v
        if kind == b":":
            return int(rest)
        return rest

    def read(self, timeout=30):
        return self._value(time.time() + timeout)

    def close(self):
        self.sock.close()
