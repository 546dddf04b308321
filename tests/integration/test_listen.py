"""The listening port: a second `predictd serve` on a port that is already
in use fails at start, with a message that says so, and leaves the first
one serving; sharing the port (SO_REUSEPORT, for zero-downtime restarts)
happens only when both processes ask for it with PREDICTD_REUSE_PORT=on.

Real binary, real sockets on loopback; no database is needed (serve starts
without one and says so)."""
import os
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import BIN, ROOT, Service, check, check_eq, free_port, run_tests, test  # noqa: E402

MODELS = tempfile.mkdtemp(prefix="predictd-listen-models-")


def serve_env(port, **extra):
    e = dict(os.environ)
    e.pop("PREDICTD_DATABASE_URL", None)
    e.pop("PREDICTD_REDIS_URL", None)
    e.update({"PREDICTD_LISTEN": f"127.0.0.1:{port}", "PREDICTD_MODELS_DIR": MODELS,
              "PREDICTD_LOG_FORMAT": "text", "PREDICTD_THREADS": "2",
              "PREDICTD_API_KEY_FILE": os.path.join(MODELS, ".no-key"),
              "PREDICTD_WEB_DIR": os.path.join(ROOT, "web")})
    e.update(extra)
    return e


def second_serve(port, timeout=30, **extra):
    """Runs a second serve on port; (exit code or None if it kept running, stderr)."""
    p = subprocess.Popen([BIN, "serve"], env=serve_env(port, **extra), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(timeout=timeout)
        return p.returncode, err
    except subprocess.TimeoutExpired:
        p.terminate()
        out, err = p.communicate(timeout=30)
        return None, err


class FixedPortService(Service):
    """A Service on a port chosen by the test (the harness picks a free one)."""

    def __init__(self, port, **extra):
        import harness
        saved = harness.free_port
        harness.free_port = lambda: port
        try:
            super().__init__(MODELS, env={k: v for k, v in serve_env(port, **extra).items()
                                          if k.startswith("PREDICTD_")}, redis=False)
        finally:
            harness.free_port = saved


@test
def a_taken_port_fails_the_start_and_says_so():
    port = free_port()
    first = FixedPortService(port)
    rc, err = second_serve(port)
    check(rc is not None and rc != 0, f"second serve on a taken port kept running:\n{err}")
    check(f"127.0.0.1:{port}" in err and "already in use" in err, err)
    check("PREDICTD_REUSE_PORT" in err, err)
    # the first one still answers, and is the only one there
    status, _, _ = first.get("/health/live")
    check_eq(status, 200)
    check_eq(first.stop(), 0)


@test
def a_port_held_by_another_program_fails_the_start():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    port = s.getsockname()[1]
    try:
        rc, err = second_serve(port)
        check(rc is not None and rc != 0, f"serve started on a port another program listens on:\n{err}")
        check("already in use" in err, err)
        # asking for SO_REUSEPORT does not take a port whose owner did not
        rc, err = second_serve(port, PREDICTD_REUSE_PORT="on")
        check(rc is not None and rc != 0, f"serve shared a port its owner did not offer:\n{err}")
        check("already in use" in err, err)
    finally:
        s.close()


@test
def reuse_port_on_both_shares_the_port():
    port = free_port()
    first = FixedPortService(port, PREDICTD_REUSE_PORT="on")
    # only one of the two asks: refused
    rc, err = second_serve(port)
    check(rc is not None and rc != 0, f"second serve without PREDICTD_REUSE_PORT started:\n{err}")
    # both ask: the second starts and serves on the same port
    second = FixedPortService(port, PREDICTD_REUSE_PORT="on")
    pids = set()
    for _ in range(200):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
            c.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = c.recv(4096)
                if not chunk:
                    break
                data += chunk
        check(data.startswith(b"HTTP/1.1 200"), data[:100])
        # the request id prefix differs per process
        for line in data.split(b"\r\n"):
            if line.lower().startswith(b"x-request-id:"):
                pids.add(line.split(b":", 1)[1].strip().rsplit(b"-", 1)[0])
        if len(pids) == 2:
            break
    check_eq(len(pids), 2, "both processes answered on the shared port")
    check_eq(second.stop(), 0)
    check_eq(first.stop(), 0)


@test
def reuse_port_is_on_or_off():
    rc, err = second_serve(free_port(), PREDICTD_REUSE_PORT="maybe")
    check(rc is not None and rc != 0 and "PREDICTD_REUSE_PORT" in err and "on or off" in err, err)


if __name__ == "__main__":
    sys.exit(run_tests())
