"""Integration-test harness: the real predictd binary against the real
PostgreSQL and Redis that tests/run started, real HTTP on loopback, and
every JSON response checked against openapi.yaml.

A test file defines functions decorated with @test and ends with
`sys.exit(run_tests())`, which prints "ok name" / "FAIL name" lines and the
summary line "N passed, N failed, N skipped" that tests/run adds up.

Environment (set by tests/run): PREDICTD_BIN, PREDICTD_ROOT,
PREDICTD_TEST_DATABASE_URL (a fresh database for this file),
PREDICTD_TEST_REDIS_URL, PREDICTD_TEST_SERVICES_DIR, PREDICTD_SHARED_DATA.
Uses only Debian's python3 with python3-yaml and python3-jsonschema.
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


def run_tests():
    passed = failed = skipped = 0
    only = os.environ.get("TEST_ONLY")
    for fn in _tests:
        if only and only not in fn.__name__:
            continue
        t0 = time.time()
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
    for svc in list(Service.running):
        svc.stop()
    print(f"{passed} passed, {failed} failed, {skipped} skipped", flush=True)
    return 1 if failed else 0


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


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
    if check_rc and p.returncode != 0:
        raise AssertionError(f"predictd {' '.join(args)} exited {p.returncode}:\n{p.stderr}")
    return p


def services(cmd):
    """Stops or starts the shared PostgreSQL/Redis (fault tests)."""
    subprocess.run([os.path.join(ROOT, "server", "services.sh"), cmd, SERVICES_DIR],
                   check=True, capture_output=True, timeout=120)


class Service:
    """One `predictd serve` process on a free port."""

    running = []

    def __init__(self, models_dir, env=None, redis=True, port=None):
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = tempfile.mktemp(prefix="predictd-serve-", suffix=".log")
        e = dict(os.environ)
        e.update({
            "PREDICTD_LISTEN": f"127.0.0.1:{self.port}",
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
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([BIN, "serve"], env=e, stdout=self.log, stderr=self.log)
        Service.running.append(self)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited {self.proc.returncode}:\n{self.logs()}")
            try:
                status, _, _ = self.get("/health/live", validate=False)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError("serve did not become live in 30 s:\n" + self.logs())

    def logs(self):
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

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self in Service.running:
            Service.running.remove(self)
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


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


def train(models_dir, symbol, tf, *extra):
    cli("train", "--symbol", symbol, "--timeframe", tf, "--models-dir", models_dir, "--seed", "1",
        *extra, timeout=900)


def psql(sql):
    """Runs SQL on this file's database; returns stdout."""
    p = subprocess.run(["psql", DB_URL.split("?")[0], "-qtAX", "-c", sql], capture_output=True,
                       text=True, timeout=60)
    if p.returncode != 0:
        raise AssertionError(f"psql failed: {p.stderr}")
    return p.stdout.strip()
