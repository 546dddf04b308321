"""Regression tests for bugs found in a review of api/ and server/: each test
names the bug it pins down. They start the real binary (or run the real
scripts) the way users do.
"""
import base64
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (ROOT, Service, Skip, check, check_eq, need_services,  # noqa: E402
                     run_tests, test)

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


if __name__ == "__main__":
    sys.exit(run_tests())
