"""Regression tests for bugs found in a review of api/ and server/: each test
names the bug it pins down. They start the real binary (or run the real
scripts) the way users do.
"""
import base64
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (BIN, DB_URL, ROOT, Service, Skip, check, check_eq,  # noqa: E402
                     need_services, prepare_database, run_tests, sanitizer_lines, tail, test)

state = {}


def empty_service():
    """A service over an empty model repository (enough for the routes that
    need no model)."""
    if "svc" not in state:
        need_services()
        state["svc"] = Service(tempfile.mkdtemp(prefix="predictd-review-models-"))
    return state["svc"]


def websocket_handshake(port, path):
    """Opens a WebSocket (RFC 6455 handshake only) and returns the status."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               f"Upgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            break
        head += chunk
    s.close()
    return int(head.split(b" ", 2)[1])


def metric_lines(svc, prefix):
    status, _, text = svc.get("/metrics")
    check_eq(status, 200)
    return [ln for ln in text.decode().splitlines() if ln.startswith(prefix)]


@test
def websocket_handshakes_are_not_counted_as_server_errors():
    # api/metrics.c code_index() had no bucket for 101, so every WebSocket
    # client showed up as predictd_http_requests_total{route="stream",code="5xx"}
    svc = empty_service()
    check_eq(websocket_handshake(svc.port, "/api/predictions/stream"), 101)
    lines = metric_lines(svc, 'predictd_http_requests_total{route="stream"')
    check(not any('code="5xx"' in ln for ln in lines), f"a handshake counted as 5xx: {lines}")
    check(any('code="101"' in ln for ln in lines), f"the handshake is not counted: {lines}")


@test
def services_start_as_root_under_a_private_directory():
    # server/services.sh put the cluster in DIR/pg, which the postgres user
    # (the cluster runs as it when we are root) cannot reach when a parent is
    # private: `make run` from a checkout under /root (mode 0700 on a fresh
    # Debian 12) failed in initdb with "Permission denied".
    if os.geteuid() != 0:
        raise Skip("only root runs the cluster as the postgres user")
    if not any(os.path.isdir(f"/usr/lib/postgresql/{v}/bin") for v in os.listdir(
            "/usr/lib/postgresql") if os.path.isdir("/usr/lib/postgresql")):
        raise Skip("no PostgreSQL server binaries")
    parent = tempfile.mkdtemp(prefix="predictd-review-private-")
    os.chmod(parent, 0o700)
    d = os.path.join(parent, "checkout", ".run", "services")
    script = os.path.join(ROOT, "server", "services.sh")
    data = None
    try:
        p = subprocess.run([script, "start", d, "--fast"], capture_output=True, text=True,
                           timeout=120)
        check_eq(p.returncode, 0, p.stderr)
        with open(os.path.join(d, "pg.data")) as f:
            data = f.read().strip()
        env = {}
        with open(os.path.join(d, "env")) as f:
            for line in f:
                k, v = line.replace("export ", "", 1).strip().split("=", 1)
                env[k] = v.strip("'")
        q = subprocess.run(["psql", env["PREDICTD_DATABASE_URL"].split("?")[0], "-qtAX", "-c",
                            "SELECT 42"], capture_output=True, text=True, timeout=30)
        check_eq(q.stdout.strip(), "42", q.stderr)
    finally:
        subprocess.run([script, "stop", d], capture_output=True, timeout=120)
        if data and data.startswith("/var/tmp/predictd-pg."):
            subprocess.run(["rm", "-rf", data], timeout=60)
        subprocess.run(["rm", "-rf", parent], timeout=60)


def run_sh_with_real_serve():
    """Starts `server/run.sh BIN` (the real binary) as a terminal would start
    `make run`: in a process group of its own (the terminal's foreground
    group), on this file's database (so run.sh starts no services; the
    candles are there, so it seeds nothing) and a repository with a version
    directory (so it trains nothing). Returns the process, the path of its
    output and serve's pid once serve is ready."""
    need_services()
    prepare_database(symbols=("BTCUSDT",), timeframes=("15m",), count=300)
    tmp = tempfile.mkdtemp(prefix="predictd-review-run-")
    os.makedirs(os.path.join(tmp, "models", "BTCUSDT", "15m", "1"))
    log = os.path.join(tmp, "log")
    env = dict(os.environ, PREDICTD_MODELS_DIR=os.path.join(tmp, "models"),
               PREDICTD_DATABASE_URL=DB_URL, PREDICTD_API_KEY="k" * 32,
               PREDICTD_LISTEN="127.0.0.1:0", PREDICTD_LOG_FORMAT="json")
    env.pop("PREDICTD_REDIS_URL", None)
    out = open(log, "w")
    proc = subprocess.Popen([os.path.join(ROOT, "server", "run.sh"), BIN], env=env,
                            stdout=out, stderr=out, start_new_session=True)
    out.close()
    deadline = time.time() + 60
    while time.time() < deadline:
        with open(log) as f:
            m = re.search(r"ready to serve \(pid (\d+)\)", f.read())
        if m:
            return proc, log, int(m.group(1))
        check(proc.poll() is None, f"run.sh exited before serving:\n{tail(open(log).read())}")
        time.sleep(0.05)
    raise AssertionError("serve did not start under run.sh")


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purpose
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


def gone_within(pid, seconds):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


def stop_all(proc, pid):
    if alive(pid):
        os.kill(pid, signal.SIGKILL)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@test
def run_sh_ctrl_c_drains_serve_once():
    # server/run.sh forwarded SIGTERM to serve from its INT trap while the
    # terminal's SIGINT had reached serve too (same process group): serve saw
    # a second signal during its drain and exited at once (143) instead of
    # draining. Ctrl-C must reach serve once: the real serve logs which
    # signal started its drain and "stopped" when the drain completed.
    proc, log, pid = run_sh_with_real_serve()
    try:
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal does on Ctrl-C
        proc.wait(timeout=60)
        check(gone_within(pid, 30), "serve still runs after run.sh exited")
        with open(log) as f:
            seen = f.read()
        check(not sanitizer_lines(seen), f"sanitizer report:\n{tail(seen)}")
        check_eq(seen.count(": draining (up to"), 1, tail(seen))
        check("SIGTERM: draining" in seen, f"serve was not stopped by run.sh's SIGTERM:\n"
              f"{tail(seen)}")
        check('"msg":"stopped"' in seen, f"serve did not finish its drain:\n{tail(seen)}")
    finally:
        stop_all(proc, pid)


@test
def run_sh_hangup_leaves_no_serve_behind():
    # On a hangup (the terminal or SSH session closes) bash died without
    # stopping serve, which treats SIGHUP as "rescan" and kept running, alone,
    # after run.sh had stopped the private PostgreSQL and Redis.
    proc, log, pid = run_sh_with_real_serve()
    try:
        os.killpg(proc.pid, signal.SIGHUP)
        proc.wait(timeout=60)
        check(gone_within(pid, 30), "serve still runs after a hangup ended run.sh")
        with open(log) as f:
            seen = f.read()
        check('"msg":"stopped"' in seen, f"serve did not drain:\n{tail(seen)}")
    finally:
        stop_all(proc, pid)


if __name__ == "__main__":
    sys.exit(run_tests())
