"""Hardening: hostile clients without a key must neither crash the service
nor starve it, and the small HTTP conventions hold. Each test names the
attack or convention it pins down. WebSocket tests use a standard client
(python3-websockets) as well as hand-made frames for what no well-behaved
client sends."""
import asyncio
import base64
import hashlib
import json
import os
import re
import resource
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (BIN, Service, Skip, check, check_eq, need_services,  # noqa: E402
                     raw_request, run_tests, test)

try:
    import websockets
except ImportError:  # python3-websockets (Debian), listed in the Makefile's packages
    websockets = None

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
state = {}


def service():
    if "svc" not in state:
        need_services()
        state["svc"] = Service(tempfile.mkdtemp(prefix="predictd-harden-models-"),
                               env={"PREDICTD_CORS_ORIGINS": "https://ok.example"})
    return state["svc"]


def alive(svc):
    check(svc.proc.poll() is None, f"the service died (exit {svc.proc.returncode}):\n"
          + svc.logs()[-3000:])
    status, _, _ = svc.get("/health/live", validate=False)
    check_eq(status, 200)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for ln in f:
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1])
    return 0


def get_raw(port, target, method="GET", headers=""):
    return raw_request(port, (f"{method} {target} HTTP/1.1\r\nHost: x\r\n{headers}"
                              "Connection: close\r\n\r\n").encode())


class RawWS:
    """A WebSocket opened by hand, to send frames no real client would."""

    def __init__(self, port, path="/api/predictions/stream"):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(4096)
            check(chunk, "closed during the handshake")
            buf += chunk
        head, _, self.buf = buf.partition(b"\r\n\r\n")
        check(head.startswith(b"HTTP/1.1 101"), f"no 101: {head!r}")
        want = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        check(f"sec-websocket-accept: {want}".lower().encode() in head.lower(), "accept key")

    def send_raw(self, data):
        self.sock.sendall(data)

    def frame(self, opcode, payload=b"", fin=True, mask=True, rsv=0):
        b0 = (0x80 if fin else 0) | rsv | opcode
        n = len(payload)
        if n < 126:
            head = bytes([b0, (0x80 if mask else 0) | n])
        elif n < 65536:
            head = bytes([b0, (0x80 if mask else 0) | 126]) + n.to_bytes(2, "big")
        else:
            head = bytes([b0, (0x80 if mask else 0) | 127]) + n.to_bytes(8, "big")
        if not mask:
            return head + payload
        key = os.urandom(4)
        return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))

    def read_frame(self, timeout=10):
        """(opcode, payload) of the next server frame; None at EOF."""
        self.sock.settimeout(timeout)

        def need(n):
            while len(self.buf) < n:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return False
                self.buf += chunk
            return True
        if not need(2):
            return None
        b0, b1 = self.buf[0], self.buf[1]
        check(not b1 & 0x80, "a server frame must not be masked")
        n, off = b1 & 0x7F, 2
        if n == 126:
            need(4)
            n, off = int.from_bytes(self.buf[2:4], "big"), 4
        elif n == 127:
            need(10)
            n, off = int.from_bytes(self.buf[2:10], "big"), 10
        if not need(off + n):
            return None
        payload = self.buf[off:off + n]
        self.buf = self.buf[off + n:]
        return b0 & 0x0F, payload

    def close_code(self, timeout=10):
        """Reads until the server's close frame; its status code."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            f = self.read_frame(timeout=max(0.1, deadline - time.time()))
            if f is None:
                return None
            if f[0] == 0x8:
                return int.from_bytes(f[1][:2], "big") if len(f[1]) >= 2 else 1005
        return None

    def close(self):
        self.sock.close()


# ---------------------------------------------------------------------------
# 1. Crash: WebSocket connect/close churn.

@test
def websocket_churn_16_clients_for_10_s_does_not_crash():
    if websockets is None:
        raise Skip("python3-websockets is not installed")
    svc = service()
    url = f"ws://127.0.0.1:{svc.port}/api/predictions/stream"
    counts = {"open": 0, "refused": 0}

    async def client(i):
        end = time.time() + 10
        while time.time() < end:
            try:
                async with websockets.connect(url, open_timeout=5, close_timeout=5) as ws:
                    counts["open"] += 1
                    if i % 2:
                        await ws.send(json.dumps({"type": "subscribe", "symbols": ["BTCUSDT"]}))
                        reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
                        assert reply["type"] == "subscribed", reply
            except websockets.exceptions.InvalidStatusCode as e:
                # 503 when PREDICTD_STREAM_MAX clients are connected
                assert e.status_code == 503, e
                counts["refused"] += 1

    async def main():
        await asyncio.gather(*(client(i) for i in range(16)))
    asyncio.run(main())
    print(f"     {counts['open']} WebSocket sessions in 10 s ({counts['refused']} refused)")
    check(counts["open"] > 100, f"too few sessions: {counts}")
    alive(svc)
    streams_back_to_zero(svc)


def streams_back_to_zero(svc):
    """Every stream slot came back: the stream gauge ends at 0."""
    deadline = time.time() + 5
    while time.time() < deadline:
        _, _, text = svc.get("/metrics")
        line = [ln for ln in text.decode().splitlines()
                if ln.startswith("predictd_http_streams ")]
        if line and line[0].endswith(" 0"):
            break
        time.sleep(0.1)
    check(line and line[0].endswith(" 0"), f"stream clients left: {line}")


@test
def websocket_raw_churn_with_resets_does_not_crash():
    # what crashed libulfius' websocket list: 16 clients opening websockets
    # and leaving at once, by reset, by close frame or by a bare FIN
    import struct
    import threading
    svc = service()
    done = [0]
    lock = threading.Lock()

    def worker(i):
        end = time.time() + 10
        while time.time() < end and svc.proc.poll() is None:
            try:
                s = socket.create_connection(("127.0.0.1", svc.port), timeout=5)
                key = base64.b64encode(os.urandom(16)).decode()
                s.sendall((f"GET /api/predictions/stream HTTP/1.1\r\nHost: x\r\n"
                           f"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                           ).encode())
                s.recv(4096)
                if i % 3 == 0:  # reset
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                elif i % 3 == 1:  # close frame, not waiting for the answer
                    m = os.urandom(4)
                    s.sendall(bytes([0x88, 0x82]) + m + bytes(b ^ m[k % 4] for k, b in
                                                              enumerate(b"\x03\xe8")))
                s.close()
                with lock:
                    done[0] += 1
            except OSError:
                pass
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"     {done[0]} raw WebSocket sessions in 10 s")
    alive(svc)
    streams_back_to_zero(svc)


# ---------------------------------------------------------------------------
# 2. Memory: frames declaring huge lengths are refused from their header.

@test
def websocket_frame_of_2_63_bytes_is_refused_without_allocation():
    svc = service()
    before = rss_kib(svc.proc.pid)
    for _ in range(4):
        ws = RawWS(svc.port)
        key = os.urandom(4)
        ws.send_raw(bytes([0x81, 0x80 | 127]) + (2**63 - 1).to_bytes(8, "big") + key
                    + b"x" * 1000)
        check_eq(ws.close_code(), 1009, "2^63-1 bytes: message too big")
        ws.close()
    ws = RawWS(svc.port)
    ws.send_raw(ws.frame(0x1, b"{" + b" " * 9000 + b"}"))
    check_eq(ws.close_code(), 1009, "a 9 KB message is over the 8 KiB limit")
    ws.close()
    # a message over the limit in small fragments is refused too
    ws = RawWS(svc.port)
    for i in range(5):
        ws.send_raw(ws.frame(0x1 if i == 0 else 0x0, b" " * 2000, fin=False))
    check_eq(ws.close_code(), 1009, "fragments adding up past the limit")
    ws.close()
    after = rss_kib(svc.proc.pid)
    check(after - before < 50 * 1024, f"RSS grew by {after - before} KiB")
    alive(svc)


@test
def malformed_websocket_frames_close_with_the_rfc_codes():
    svc = service()
    cases = [
        ("unmasked frame", lambda w: w.frame(0x1, b"{}", mask=False), 1002),
        ("RSV1 without an extension", lambda w: w.frame(0x1, b"{}", rsv=0x40), 1002),
        ("reserved opcode 0x3", lambda w: w.frame(0x3, b"x"), 1002),
        ("fragmented ping", lambda w: w.frame(0x9, b"x", fin=False), 1002),
        ("continuation of nothing", lambda w: w.frame(0x0, b"x"), 1002),
        ("ping over 125 bytes", lambda w: bytes([0x89, 0x80 | 126]) + (200).to_bytes(2, "big")
         + b"\0" * 204, 1002),
        ("64-bit length with the top bit set", lambda w: bytes([0x81, 0xFF]) + b"\xff" * 8
         + b"\0" * 4, 1002),
        ("length not in its shortest form", lambda w: bytes([0x81, 0x80 | 126])
         + (5).to_bytes(2, "big") + b"\0" * 4 + b"hello", 1002),
        ("text that is not UTF-8", lambda w: w.frame(0x1, b"\xff\xfe"), 1007),
        ("close with a 1-byte body", lambda w: w.frame(0x8, b"\x03"), 1002),
        ("close with a reserved code", lambda w: w.frame(0x8, (1005).to_bytes(2, "big")), 1002),
    ]
    for name, make, code in cases:
        ws = RawWS(svc.port)
        ws.send_raw(make(ws))
        check_eq(ws.close_code(), code, name)
        ws.close()
    alive(svc)


@test
def websocket_ping_pong_and_close_handshake():
    svc = service()
    ws = RawWS(svc.port)
    ws.send_raw(ws.frame(0x9, b"are you there"))
    op, payload = ws.read_frame()
    check_eq((op, payload), (0xA, b"are you there"), "pong echoes the ping")
    ws.send_raw(ws.frame(0x8, (1000).to_bytes(2, "big") + b"bye"))
    check_eq(ws.close_code(), 1000, "the close is answered with its code")
    check(ws.read_frame(timeout=5) is None, "the server closes the TCP connection")
    ws.close()
    # fragmented subscription, with a ping between the fragments
    ws = RawWS(svc.port)
    msg = json.dumps({"type": "subscribe", "symbols": ["BTCUSDT"], "timeframes": ["15m"]})
    ws.send_raw(ws.frame(0x1, msg[:10].encode(), fin=False))
    ws.send_raw(ws.frame(0x9, b"p"))
    ws.send_raw(ws.frame(0x0, msg[10:].encode()))
    check_eq(ws.read_frame(), (0xA, b"p"))
    op, payload = ws.read_frame()
    check_eq(op, 0x1)
    check_eq(json.loads(payload)["type"], "subscribed")
    ws.close()


@test
def standard_client_subscribes_and_is_closed_on_shutdown():
    if websockets is None:
        raise Skip("python3-websockets is not installed")
    need_services()
    svc = Service(tempfile.mkdtemp(prefix="predictd-harden-ws-"))
    url = f"ws://127.0.0.1:{svc.port}/api/predictions/stream"
    codes = {}

    async def main():
        async with websockets.connect(url) as ws:
            await ws.send(json.dumps({"type": "subscribe", "symbols": ["ETHUSDT"]}))
            reply = json.loads(await ws.recv())
            assert reply == {"type": "subscribed", "symbols": ["ETHUSDT"],
                             "timeframes": ["1m", "5m", "15m", "1h", "4h", "1d"]}, reply
            await ws.send(b"\x01\x02")
            err = json.loads(await ws.recv())
            assert err["type"] == "error", err
            pong = await ws.ping(b"x")
            await asyncio.wait_for(pong, 5)
            svc.proc.send_signal(15)
            try:
                await asyncio.wait_for(ws.recv(), 10)
            except websockets.exceptions.ConnectionClosed as e:
                codes["close"] = e.code
    asyncio.run(main())
    check_eq(codes.get("close"), 1001, "going away on SIGTERM")
    check_eq(svc.proc.wait(timeout=30), 0, "exit status after SIGTERM")
    svc.stop()


# ---------------------------------------------------------------------------
# 3. Malformed escapes.

@test
def malformed_percent_escapes_are_400():
    svc = service()
    for target in ["/api/predictions/BTCUSDT%g0XYZ?timeframe=15m",
                   "/api/predictions/BTC%zzUSDT",
                   "/api/predictions/BTCUSDT%2",
                   "/api/predictions/BTCUSDT%00X",
                   "/api/predictions/BTCUSDT?timeframe=15m%g0",
                   "/api/predictions?timeframe=15m&symbols=BTC%zz",
                   "/api/predictions?timeframe=%",
                   "/health/live%"]:
        status, _, body = get_raw(svc.port, target)
        check_eq(status, 400, target)
        check_eq(json.loads(body)["error"]["code"], "invalid_argument", target)


@test
def undecodable_query_values_are_400():
    svc = service()
    for target in ["/api/predictions/history?symbol=%FF",
                   "/api/predictions/history?symbol=%C0%AF",
                   "/api/predictions?timeframe=15m&symbols=%ED%A0%80"]:
        status, _, body = get_raw(svc.port, target)
        check_eq(status, 400, target)
    # valid UTF-8 passes the check and reaches the handler's own validation
    status, _, body = get_raw(svc.port, "/api/predictions/history?symbol=%C3%A9")
    check_eq(status, 400)
    check(json.loads(body)["error"]["code"] != "invalid_argument" or
          "UTF-8" not in json.loads(body)["error"]["message"])


# ---------------------------------------------------------------------------
# 4. One client holds every connection.

@test
def one_address_cannot_take_every_connection():
    need_services()
    try:
        socket.create_connection(("127.0.0.1", 9), timeout=1,
                                 source_address=("127.0.0.2", 0)).close()
    except ConnectionRefusedError:
        pass
    except OSError as e:
        raise Skip(f"no 127.0.0.2 on this host: {e}")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 400:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    svc = Service(tempfile.mkdtemp(prefix="predictd-harden-conn-"),
                  env={"PREDICTD_MAX_CONNECTIONS": "128", "PREDICTD_PER_IP_CONNECTIONS": "32"})
    hog = []
    try:
        for _ in range(300):
            try:
                s = socket.create_connection(("127.0.0.1", svc.port), timeout=2,
                                             source_address=("127.0.0.2", 0))
                hog.append(s)
            except OSError:
                break
        time.sleep(0.5)
        t0 = time.time()
        status, _, _ = svc.get("/health/live", validate=False, timeout=5)
        check_eq(status, 200, "liveness answered while one address holds its cap")
        print(f"     /health/live with 300 idle connections from one address: "
              f"{(time.time() - t0) * 1000:.0f} ms")
    finally:
        for s in hog:
            s.close()
    time.sleep(0.5)
    logs = svc.logs()
    refused = [ln for ln in logs.splitlines() if '"mhd"' in ln or "mhd" in ln]
    check(len(refused) <= 5, f"{len(refused)} log lines for one episode:\n" + "\n".join(refused))
    svc.stop()


@test
def a_client_trickling_its_headers_cannot_hold_a_connection():
    need_services()
    svc = Service(tempfile.mkdtemp(prefix="predictd-harden-slow-"),
                  env={"PREDICTD_HEADER_TIMEOUT": "2", "PREDICTD_IDLE_TIMEOUT": "30"})
    try:
        s = socket.create_connection(("127.0.0.1", svc.port), timeout=10)
        s.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")
        t0 = time.time()
        closed = False
        while time.time() - t0 < 12:  # one byte a second: never idle for 30 s
            try:
                s.sendall(b"X")
                s.settimeout(1)
                if s.recv(4096) == b"":
                    closed = True
                    break
            except socket.timeout:
                continue
            except OSError:
                closed = True
                break
        took = time.time() - t0
        s.close()
        check(closed, "a client trickling header bytes kept its connection for 12 s")
        print(f"     trickling client cut after {took:.1f} s (header timeout 2 s)")
        # a slow but honest keep-alive client is not cut between requests
        s = socket.create_connection(("127.0.0.1", svc.port), timeout=10)
        for _ in range(2):
            s.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            data = s.recv(65536)
            check(data.startswith(b"HTTP/1.1 200"), data[:40])
            time.sleep(3)  # idle longer than the header timeout
        s.close()
        _, _, text = svc.get("/metrics")
        line = [ln for ln in text.decode().splitlines()
                if ln.startswith("predictd_http_header_timeouts_total ")]
        check(line and float(line[0].split()[1]) >= 1, f"{line}")
    finally:
        svc.stop()


# ---------------------------------------------------------------------------
# Conventions.

@test
def wrong_method_is_405_with_allow():
    svc = service()
    status, headers, body = get_raw(svc.port, "/api/predictions", method="POST")
    check_eq(status, 405)
    check_eq(json.loads(body)["error"]["code"], "method_not_allowed")
    check_eq(headers.get("allow"), "GET, HEAD, OPTIONS")
    status, headers, _ = get_raw(svc.port, "/admin/models/BTCUSDT/15m/pin", method="PUT")
    check_eq(status, 405)
    check_eq(headers.get("allow"), "POST, DELETE")
    status, headers, _ = get_raw(svc.port, "/health/live", method="DELETE")
    check_eq((status, headers.get("allow")), (405, "GET, HEAD"))
    status, _, _ = get_raw(svc.port, "/no/such/route", method="POST")
    check_eq(status, 404)


@test
def head_answers_on_get_routes():
    svc = service()
    for path in ["/health/live", "/health", "/metrics"]:
        s = socket.create_connection(("127.0.0.1", svc.port), timeout=10)
        s.sendall(f"HEAD {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        head, _, body = data.partition(b"\r\n\r\n")
        check(head.startswith(b"HTTP/1.1 200"), f"HEAD {path}: {head[:40]!r}")
        check_eq(body, b"", f"HEAD {path} has no body")


@test
def refused_cors_origin_has_its_own_code():
    svc = service()
    status, _, body = get_raw(svc.port, "/api/predictions", method="OPTIONS",
                              headers="Origin: https://evil.example\r\n"
                                      "Access-Control-Request-Method: GET\r\n")
    check_eq(status, 403)
    check_eq(json.loads(body)["error"]["code"], "origin_not_allowed")
    status, headers, _ = get_raw(svc.port, "/api/predictions", method="OPTIONS",
                                 headers="Origin: https://ok.example\r\n")
    check_eq(status, 204)
    check_eq(headers.get("access-control-allow-origin"), "https://ok.example")


@test
def metrics_have_exact_codes_process_figures_and_fine_buckets():
    svc = service()
    get_raw(svc.port, "/api/predictions", method="POST")  # 405
    get_raw(svc.port, "/api/predictions/BTC%zz")           # 400
    get_raw(svc.port, "/api/predictions?timeframe=15m")    # lists symbols: a database query
    _, _, text = svc.get("/metrics")
    text = text.decode()
    codes = set()
    for ln in text.splitlines():
        if ln.startswith("predictd_http_requests_total{"):
            codes.add(ln.split('code="')[1].split('"')[0])
    check(codes and all(c.isdigit() and len(c) == 3 for c in codes), f"code labels: {codes}")
    check({"405", "400"} <= codes, f"code labels: {codes}")
    values = {}
    for ln in text.splitlines():
        if ln.startswith("process_"):
            name, value = ln.split()
            values[name] = float(value)
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes",
                 "process_open_fds", "process_start_time_seconds", "process_threads"):
        check(name in values, f"{name} missing")
    check(values["process_resident_memory_bytes"] > 1 << 20, "RSS over 1 MiB")
    check(values["process_threads"] >= 4, "the pool's threads")
    check(abs(values["process_start_time_seconds"] - svc_started(svc)) < 60,
          "start time is the process's")
    fds = len(os.listdir(f"/proc/{svc.proc.pid}/fd"))
    check(abs(values["process_open_fds"] - fds) <= 3, f"{values['process_open_fds']} vs {fds}")
    check('predictd_http_request_duration_seconds_bucket{route="other",le="1e-05"}' in text,
          "latency buckets start at 10 us")
    for fam in ("predictd_db_query_duration_seconds", "predictd_redis_command_duration_seconds"):
        check(f"# TYPE {fam} histogram" in text, f"{fam} missing")
    db_count = [ln for ln in text.splitlines()
                if ln.startswith("predictd_db_query_duration_seconds_count ")]
    check(db_count and float(db_count[0].split()[1]) >= 1, f"no database latency: {db_count}")
    p = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=60)
    check_eq(p.returncode, 0, p.stdout + p.stderr)


def svc_started(svc):
    return os.stat(f"/proc/{svc.proc.pid}").st_mtime


@test
def listens_on_ipv6():
    try:
        probe = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        probe.bind(("::1", 0))
        probe.close()
    except OSError as e:
        raise Skip(f"no IPv6 loopback: {e}")
    need_services()
    # port 0: the kernel picks a free port of the IPv6 socket and the log
    # line names it (no port picked here and released: no race for it)
    for listen, host in (("[::1]:0", "::1"), ("[::]:0", "::1")):
        env = dict(os.environ, PREDICTD_LISTEN=listen, PREDICTD_LOG_FORMAT="json",
                   PREDICTD_MODELS_DIR=tempfile.mkdtemp(prefix="predictd-harden-v6-"))
        env.pop("PREDICTD_DATABASE_URL", None)
        p = subprocess.Popen([BIN, "serve"], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
        try:
            port = None
            for line in p.stderr:  # until the line that names the port
                m = re.search(r'"listening on [^"]*:(\d+) with', line.decode())
                if m:
                    port = int(m.group(1))
                    break
            check(port and port > 0, f"{listen}: no port in the log")
            status, _, body = raw_request(
                port, b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                host=host)
            check_eq(status, 200, f"GET /health/live over IPv6 ({listen})")
        finally:
            p.terminate()
            _, err = p.communicate(timeout=30)
        check_eq(p.returncode, 0, err.decode()[-2000:])


@test
def redis_over_a_unix_socket_with_an_encoded_password():
    need_services()
    d = tempfile.mkdtemp(prefix="predictd-harden-redis-")
    os.chmod(d, 0o777)
    sock = os.path.join(d, "redis.sock")
    password = "p@ss:w/rd%"
    r = subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", sock,
                          "--unixsocketperm", "777", "--requirepass", password, "--save", "",
                          "--appendonly", "no", "--dir", d],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 10
        while not os.path.exists(sock) and time.time() < deadline:
            time.sleep(0.05)
        check(os.path.exists(sock), "redis-server did not start")
        url = "unix://:p%40ss%3Aw%2Frd%25@" + sock + "?db=1"
        svc = Service(tempfile.mkdtemp(prefix="predictd-harden-models-"),
                      env={"PREDICTD_REDIS_URL": url})
        try:
            status, _, body = svc.get("/health/status")
            check_eq(status, 200)
            check_eq(body["components"]["redis"]["state"], "up",
                     str(body["components"]) + "\n" + svc.logs()[-2000:])
        finally:
            svc.stop()
        # the same URL with a wrong password: Redis is down, not the service
        bad = "unix://:wrong@" + sock + "?db=1"
        svc = Service(tempfile.mkdtemp(prefix="predictd-harden-models-"),
                      env={"PREDICTD_REDIS_URL": bad})
        try:
            status, _, body = svc.get("/health/status")
            check_eq(body["components"]["redis"]["state"], "down")
        finally:
            svc.stop()
    finally:
        r.terminate()
        r.wait()
    # rediss:// is refused at start, with the reason
    p = subprocess.run([BIN, "serve"], capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, PREDICTD_REDIS_URL="rediss://h:6380",
                                PREDICTD_LISTEN="127.0.0.1:1", PREDICTD_LOG_FORMAT="text"))
    check(p.returncode != 0, "rediss:// must not start without TLS support")
    check("TLS" in p.stderr, p.stderr[-1000:])
    check("rediss://h" not in p.stderr, "the URL is not echoed")


@test
def import_names_the_line_of_a_misaligned_row():
    d = tempfile.mkdtemp(prefix="predictd-harden-import-")
    path = os.path.join(d, "candles.csv")
    with open(path, "w") as f:
        f.write("open_time,open,high,low,close,volume\n"
                "2024-01-01T00:00:00Z,1,2,0.5,1.5,3\n"
                "2024-01-01T00:15:00Z,1,2,0.5,1.5,3\n"
                "2024-01-01T00:30:00Z,1,2,0.5,1.5,3\n"
                "2024-01-01T00:47:00Z,1,2,0.5,1.5,3\n")
    p = subprocess.run([BIN, "import", path, "--symbol", "BTCUSDT", "--timeframe", "15m"],
                       capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, PREDICTD_DATABASE_URL="postgresql://nobody@127.0.0.1:1/x"))
    check_eq(p.returncode, 1)
    check("line 5: open time 2024-01-01T00:47:00Z is not on a 15m candle boundary" in p.stderr,
          p.stderr)


@test
def scans_remove_old_temporaries_and_list_refused_symlinks():
    need_services()
    models = tempfile.mkdtemp(prefix="predictd-harden-reg-")
    elsewhere = tempfile.mkdtemp(prefix="predictd-harden-elsewhere-")
    os.makedirs(os.path.join(elsewhere, "15m", "1"))
    series = os.path.join(models, "BTCUSDT", "15m")
    os.makedirs(series)
    old = os.path.join(series, ".tmp-4242-00000000deadbeef")  # a killed train's
    os.makedirs(old)
    with open(os.path.join(old, "model.pb"), "wb") as f:
        f.write(b"half")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    fresh = os.path.join(series, ".tmp-4243-00000000cafef00d")  # maybe still publishing
    os.makedirs(fresh)
    old_link = os.path.join(series, ".tmp-link")  # a link is never followed nor removed
    os.symlink(elsewhere, old_link)
    os.symlink(os.path.join(elsewhere, "15m", "1"), os.path.join(series, "7"))
    os.symlink(elsewhere, os.path.join(models, "ETHUSDT"))
    os.makedirs(os.path.join(models, "SOLUSDT"))
    os.symlink(os.path.join(elsewhere, "15m"), os.path.join(models, "SOLUSDT", "1h"))
    key = "k" * 32
    svc = Service(models, env={"PREDICTD_API_KEY": key})
    try:
        check(not os.path.exists(old), "the abandoned temporary is still there")
        check(os.path.isdir(fresh), "a temporary younger than an hour was removed")
        check(os.path.islink(old_link) and os.path.isdir(os.path.join(elsewhere, "15m")),
              "a symlink was followed")
        status, _, body = svc.get("/admin/models", headers={"X-API-Key": key})
        check_eq(status, 200)
        refused = {r["path"]: r["reason"] for r in body["refused"]}
        check_eq(sorted(refused), ["BTCUSDT/15m/7", "ETHUSDT", "SOLUSDT/1h"])
        check(all("symbolic link" in r for r in refused.values()), refused)
        status, _, body = svc.get("/api/models")
        check("refused" not in body, "the public listing shows no paths")
        check("removed the abandoned temporary" in svc.logs())
    finally:
        svc.stop()


@test
def help_goes_to_stdout_and_unknown_flags_are_named():
    commands = ["serve", "migrate", "seed", "import", "train", "features", "predict", "models",
                "keygen", "version"]
    for args in [["--help"], ["-h"]] + [[c, "--help"] for c in commands]:
        p = subprocess.run([BIN, *args], capture_output=True, text=True, timeout=30)
        check_eq(p.returncode, 0, f"predictd {' '.join(args)}: {p.stderr}")
        check("usage: predictd" in p.stdout, f"predictd {' '.join(args)}: help not on stdout")
        check_eq(p.stderr, "", f"predictd {' '.join(args)} wrote to stderr")
    p = subprocess.run([BIN, "--version"], capture_output=True, text=True, timeout=30)
    check_eq(p.returncode, 0)
    check(p.stdout.startswith("predictd "), p.stdout)
    for args, named in ((["serve", "--bogus"], "'--bogus'"), (["keygen", "--frob"], "'--frob'"),
                        (["--bogus"], "'--bogus'"), (["seed", "--nope"], "'--nope'")):
        p = subprocess.run([BIN, *args], capture_output=True, text=True, timeout=30)
        check_eq(p.returncode, 2, " ".join(args))
        check(named in p.stderr.splitlines()[0], f"{args}: {p.stderr[:200]}")
    p = subprocess.run([BIN], capture_output=True, text=True, timeout=30)
    check_eq(p.returncode, 2, "no command is an error")
    check("usage: predictd" in p.stderr)


if __name__ == "__main__":
    run_tests()
