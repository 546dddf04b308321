"""The HTTP layer's refusals, each with its status and error code: the
WebSocket handshake and subscription messages a client gets wrong, close
codes and fragmentation rules, bodies without a Content-Length (chunked)
and over the limit, repeated and empty query parameters, methods a route
does not take, a missing dashboard, an address the server cannot listen on,
the access log's bounded path, and the reading routes with the database
stopped under a running server. JSON answers are checked against
openapi.yaml where the harness reads them (svc.get/request)."""
import base64
import hashlib
import json
import os
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (Service, _load_spec, check, check_eq, check_in, cli,  # noqa: E402
                     raw_request,
                     need_services, openapi_check, prepare_database, run_tests, services, test, train)

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
ADMIN_KEY = "k" * 40
state = {}


def service():
    if "svc" not in state:
        need_services()
        state["svc"] = Service(tempfile.mkdtemp(prefix="predictd-httperr-"),
                               env={"PREDICTD_API_KEY": ADMIN_KEY})
    return state["svc"]


def alive(svc):
    check(svc.proc.poll() is None, f"the service died (exit {svc.proc.returncode})")
    status, _, _ = svc.get("/health/live", validate=False)
    check_eq(status, 200)


def error_schema_check(payload):
    """payload is openapi.yaml's Error (for answers to methods the spec
    cannot list: every undocumented method gets 405 or 404)."""
    import jsonschema
    spec = _load_spec()
    root = dict(spec["components"]["schemas"]["Error"])
    root["components"] = spec["components"]
    jsonschema.Draft202012Validator(root).validate(payload)


def raw_json(port, method, target, headers="", body=b""):
    """A raw request whose answer must be JSON documented in openapi.yaml
    (an Error body for 404 and 405, which answer undocumented methods)."""
    status, h, b = raw_request(port, f"{method} {target} HTTP/1.1\r\nHost: x\r\n{headers}"
                       f"Connection: close\r\n\r\n".encode() + body)
    check(h.get("content-type", "").startswith("application/json"), h)
    payload = json.loads(b) if b else None
    if status in (404, 405):
        error_schema_check(payload)
    else:
        openapi_check(method, target, status, payload, h.get("content-type", ""))
    return status, h, payload


def handshake(port, path="/api/predictions/stream", headers=None):
    """The request of a WebSocket handshake, with headers replaced or
    removed (value None)."""
    key = base64.b64encode(os.urandom(16)).decode()
    h = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": key,
         "Sec-WebSocket-Version": "13"}
    h.update(headers or {})
    lines = "".join(f"{k}: {v}\r\n" for k, v in h.items() if v is not None)
    return raw_request(port, f"GET {path} HTTP/1.1\r\nHost: x\r\n{lines}\r\n".encode())


class WS:
    """A WebSocket opened by hand, to send frames as they are on the wire."""

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

    @staticmethod
    def frame(opcode, payload=b"", fin=True):
        b0 = (0x80 if fin else 0) | opcode
        n = len(payload)
        if n < 126:
            head = bytes([b0, 0x80 | n])
        else:
            head = bytes([b0, 0x80 | 126]) + n.to_bytes(2, "big")
        key = os.urandom(4)
        return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))

    def send(self, data):
        self.sock.sendall(data)

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
        n, off = self.buf[1] & 0x7F, 2
        if n == 126:
            need(4)
            n, off = int.from_bytes(self.buf[2:4], "big"), 4
        elif n == 127:
            need(10)
            n, off = int.from_bytes(self.buf[2:10], "big"), 10
        if not need(off + n):
            return None
        op, payload = self.buf[0] & 0x0F, self.buf[off:off + n]
        self.buf = self.buf[off + n:]
        return op, payload

    def message(self):
        """The next text message, as JSON."""
        op, payload = self.read_frame()
        check_eq(op, 0x1, f"a text frame, got {op}: {payload!r}")
        return json.loads(payload)

    def close_code(self, timeout=10):
        """Reads until the server's close frame; its status code (1005:
        none given, None: the connection ended without one)."""
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


def error_of(body):
    check(isinstance(body, dict) and body.get("status") == "error", f"an error body: {body!r}")
    return body["error"]["code"], body["error"]["message"]


# ---------------------------------------------------------------------------
# WebSocket.

@test
def websocket_handshakes_that_are_not_rfc_6455_are_400():
    svc = service()
    # a plain GET (no Upgrade) is told where Server-Sent Events are
    status, _, body = svc.get("/api/predictions/stream")
    check_eq(status, 400)
    code, msg = error_of(body)
    check_eq(code, "invalid_argument")
    check_in("/api/predictions/events", msg)
    for name, hdrs in [("version 8", {"Sec-WebSocket-Version": "8"}),
                       ("no version", {"Sec-WebSocket-Version": None}),
                       ("no key", {"Sec-WebSocket-Key": None}),
                       ("Connection without upgrade", {"Connection": "keep-alive"}),
                       ("Upgrade to another protocol", {"Upgrade": "h2c"})]:
        status, h, b = handshake(svc.port, headers=hdrs)
        check_eq(status, 400, name)
        check_eq(error_of(json.loads(b))[0], "invalid_argument", name)
    for key in ["short", "dGhlIHNhbXBsZSBub25jZQ!=", base64.b64encode(b"x" * 15).decode(),
                base64.b64encode(b"x" * 17).decode()]:
        status, _, b = handshake(svc.port, headers={"Sec-WebSocket-Key": key})
        check_eq(status, 400, key)
        code, msg = error_of(json.loads(b))
        check_eq(code, "invalid_argument")
        check_in("Sec-WebSocket-Key", msg)
    # HEAD runs the GET route, but a handshake is a GET: 400, no body
    key = base64.b64encode(os.urandom(16)).decode()
    s = socket.create_connection(("127.0.0.1", svc.port), timeout=10)
    s.sendall((f"HEAD /api/predictions/stream HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        check(chunk, "closed before the answer")
        head += chunk
    s.close()
    check(head.startswith(b"HTTP/1.1 400"), head[:40])
    # the handshake of another method: the route is GET only
    status, h, b = raw_request(svc.port, b"POST /api/predictions/stream HTTP/1.1\r\nHost: x\r\n"
                       b"Upgrade: websocket\r\nConnection: Upgrade\r\nContent-Length: 0\r\n\r\n")
    check_eq(status, 405)
    check_eq(h.get("allow"), "GET, HEAD, OPTIONS")  # /api/predictions/{symbol} matches too
    alive(svc)


@test
def stream_subscriptions_in_the_query_are_checked_before_the_upgrade():
    svc = service()
    too_many = ",".join(f"S{i:03d}" for i in range(101))
    cases = [("symbols=btcusdt", "does not match"),
             ("symbols=BTCUSDT,B", "does not match"),
             ("symbols=" + "A" * 30, "too long"),
             ("symbols=" + too_many, "at most 100 symbols"),
             ("timeframes=7m", "is not one of"),
             ("timeframe=15m,2h", "'2h' is not one of")]
    for query, why in cases:
        # the WebSocket route and the SSE route read the query the same way
        status, _, b = handshake(svc.port, path=f"/api/predictions/stream?{query}")
        check_eq(status, 400, query)
        code, msg = error_of(json.loads(b))
        check_eq(code, "invalid_argument", query)
        check_in(why, msg)
        status, _, body = svc.get(f"/api/predictions/events?{query}")
        check_eq(status, 400, query)
        check_eq(error_of(body), (code, msg), query)
    # empty items are skipped: the query's list is accepted (101), and a
    # message's empty symbol is dropped and a null list means all
    ws = WS(svc.port, "/api/predictions/stream?symbols=,BTCUSDT,,ETHUSDT,&timeframes=1h,,15m")
    ws.send(WS.frame(0x1, b'{"type":"subscribe","symbols":["BTCUSDT",""],"timeframes":null}'))
    check_eq(ws.message(), {"type": "subscribed", "symbols": ["BTCUSDT"],
                            "timeframes": ["1m", "5m", "15m", "1h", "4h", "1d"]})
    ws.close()


@test
def websocket_messages_that_are_not_subscriptions_get_error_replies():
    svc = service()
    ws = WS(svc.port)
    many = json.dumps({"type": "subscribe", "symbols": [f"S{i:03d}" for i in range(101)]})
    cases = [(b"[1,2]", "parse_error", "not a JSON object"),
             (b"not json", "parse_error", "not a JSON object"),
             (b"{}", "invalid_argument", "unknown message type"),
             (b'{"type":"unsubscribe"}', "invalid_argument", "unknown message type"),
             (b'{"type":7}', "invalid_argument", "unknown message type"),
             (b'{"type":"subscribe","symbols":"BTCUSDT"}', "invalid_argument",
              "symbols must be an array of strings"),
             (b'{"type":"subscribe","symbols":["BTCUSDT",1]}', "invalid_argument",
              "symbols must be an array of strings"),
             (b'{"type":"subscribe","timeframes":{"a":1}}', "invalid_argument",
              "timeframes must be an array of strings"),
             (b'{"type":"subscribe","timeframes":["15m","7m"]}', "invalid_argument",
              "timeframe '7m' is not one of"),
             (b'{"type":"subscribe","symbols":["eth"]}', "invalid_argument", "does not match"),
             (json.dumps({"type": "subscribe", "symbols": ["A" * 40]}).encode(),
              "invalid_argument", "too long"),
             (many.encode(), "invalid_argument", "at most 100 symbols")]
    for text, code, why in cases:
        ws.send(WS.frame(0x1, text))
        m = ws.message()
        check_eq(m["type"], "error", text)
        check_eq(m["error"]["code"], code, text)
        check_in(why, m["error"]["message"])
    # after all that the connection still serves: a subscription, a pong
    ws.send(WS.frame(0x1, b'{"type":"subscribe","symbols":null,"timeframes":["4h","1m"]}'))
    check_eq(ws.message(), {"type": "subscribed", "symbols": [], "timeframes": ["1m", "4h"]})
    ws.send(WS.frame(0xA, b"unsolicited"))  # a pong nobody asked for is ignored
    ws.send(WS.frame(0x9, b"still there"))
    check_eq(ws.read_frame(), (0xA, b"still there"))
    ws.send(WS.frame(0x8))
    check_eq(ws.close_code(), 1000, "a close without a code is answered 1000")
    ws.close()
    alive(svc)


@test
def websocket_close_codes_and_fragmentation_rules():
    svc = service()
    # codes a peer may not send (RFC 6455 7.4): a protocol error
    for code in (0, 999, 1004, 1005, 1006, 1015, 1100, 2999, 5000, 65535):
        ws = WS(svc.port)
        ws.send(WS.frame(0x8, code.to_bytes(2, "big")))
        check_eq(ws.close_code(), 1002, f"close code {code}")
        ws.close()
    # codes it may send are answered with the same code
    for code in (1000, 1001, 1003, 1011, 1014, 3000, 4999):
        ws = WS(svc.port)
        ws.send(WS.frame(0x8, code.to_bytes(2, "big") + "au revoir é".encode()))
        check_eq(ws.close_code(), code, f"close code {code}")
        ws.close()
    # a reason that is not UTF-8
    ws = WS(svc.port)
    ws.send(WS.frame(0x8, (1000).to_bytes(2, "big") + b"\xc3\x28"))
    check_eq(ws.close_code(), 1007)
    ws.close()
    # a new message while another is still open
    ws = WS(svc.port)
    ws.send(WS.frame(0x1, b'{"type":', fin=False))
    ws.send(WS.frame(0x1, b'"subscribe"}'))
    check_eq(ws.close_code(), 1002, "a text frame inside a fragmented message")
    ws.close()
    # after its close frame the server waits a moment for the peer's, then
    # ends the connection itself; frames other than a close meanwhile are
    # not answered
    ws = WS(svc.port)
    ws.send(WS.frame(0x3, b"x"))  # a reserved opcode
    check_eq(ws.close_code(), 1002)
    ws.send(WS.frame(0x9, b"ignored"))
    check_eq(ws.read_frame(timeout=15), None, "no pong after the close, then EOF")
    ws.close()
    # a peer that answers the close (after a ping, a frame split in two)
    # is let go at its close frame
    for code, bad in ((1002, WS.frame(0x3, b"x")), (1007, WS.frame(0x1, b"\xff")),
                      (1009, WS.frame(0x1, b" " * 9000))):
        ws = WS(svc.port)
        ws.send(bad)
        check_eq(ws.close_code(), code)
        reply = WS.frame(0x9, b"late") + WS.frame(0x8, (1000).to_bytes(2, "big"))
        ws.send(reply[:3])
        time.sleep(0.05)
        ws.send(reply[3:])
        check_eq(ws.read_frame(timeout=15), None, "EOF after the peer's close")
        ws.close()
    # a binary message is not a subscription
    ws = WS(svc.port)
    ws.send(WS.frame(0x2, b'{"type":"subscribe"}'))
    m = ws.message()
    check_eq(m["type"], "error")
    ws.close()
    # a frame that arrives a byte at a time is still one frame
    ws = WS(svc.port)
    f = WS.frame(0x1, b'{"type":"subscribe","symbols":["ETHUSDT"],"timeframes":["1d"]}')
    ws.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for i in range(len(f)):
        ws.send(f[i:i + 1])
        if i < 8:
            time.sleep(0.02)
    check_eq(ws.message(), {"type": "subscribed", "symbols": ["ETHUSDT"], "timeframes": ["1d"]})
    # a fragmented message of 3 frames with a pong between
    msg = b'{"type":"subscribe","timeframes":["5m"]}'
    ws.send(WS.frame(0x1, msg[:5], fin=False) + WS.frame(0x0, msg[5:20], fin=False)
            + WS.frame(0xA) + WS.frame(0x0, msg[20:]))
    check_eq(ws.message(), {"type": "subscribed", "symbols": [], "timeframes": ["5m"]})
    ws.close()
    alive(svc)


# ---------------------------------------------------------------------------
# Bodies, methods, parameters.

@test
def chunked_bodies_reach_the_handler_and_are_bounded():
    svc = service()
    key = f"X-API-Key: {ADMIN_KEY}\r\n"

    def chunked(data, size=1000):
        out = b""
        for i in range(0, len(data), size):
            part = data[i:i + size]
            out += f"{len(part):x}\r\n".encode() + part + b"\r\n"
        return out + b"0\r\n\r\n"
    te = "Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n"
    # no Content-Length: the body still reaches the handler's parser
    status, _, body = raw_json(svc.port, "POST", "/admin/models/BTCUSDT/15m/pin", key + te,
                               chunked(b'{"version":0}'))
    check_eq(status, 400)
    check_eq(error_of(body)[0], "invalid_argument")
    status, _, body = raw_json(svc.port, "POST", "/admin/models/reload", key + te,
                               chunked(b'[1,2,3]'))
    check_eq((status, error_of(body)[0]), (400, "parse_error"))
    # over 64 KiB without a declared length: counted as it arrives
    big = b'{"symbol":"' + b"A" * 70000 + b'"}'
    status, _, body = raw_json(svc.port, "POST", "/admin/models/reload", key + te,
                               chunked(big, 8192))
    check_eq((status, error_of(body)[0]), (413, "too_large"))
    # a declared length over the limit, body sent in full (1 MiB): 413, the
    # upload is read and dropped, and the service answers as before
    mib = b"x" * (1 << 20)
    status, _, body = raw_json(svc.port, "POST", "/admin/models/reload",
                               key + f"Content-Length: {len(mib)}\r\n", mib)
    check_eq((status, error_of(body)[0]), (413, "too_large"))
    # a length past 64 bits is refused by libmicrohttpd before any handler
    status, _, _ = raw_request(svc.port, b"POST /admin/models/reload HTTP/1.1\r\nHost: x\r\n"
                       b"Content-Length: 99999999999999999999999\r\nConnection: close\r\n\r\n")
    check_eq(status, 413)
    alive(svc)


@test
def methods_a_route_does_not_take():
    svc = service()
    # OPTIONS on a route without CORS preflight: 405 naming what it takes
    status, h, body = raw_json(svc.port, "OPTIONS", "/admin/models/reload",
                               "Origin: https://ok.example\r\n")
    check_eq((status, error_of(body)[0]), (405, "method_not_allowed"))
    check_eq(h.get("allow"), "POST")
    status, h, body = raw_json(svc.port, "OPTIONS", "/admin/models/BTCUSDT/15m/labels")
    check_eq((status, h.get("allow")), (405, "POST"))
    # a path that matches no route: 404, whatever the method
    for m in ("OPTIONS", "DELETE", "PATCH", "GET"):
        status, _, b = raw_request(svc.port, f"{m} /api/nothing/here HTTP/1.1\r\nHost: x\r\n"
                           "Connection: close\r\n\r\n".encode())
        check_eq(status, 404, m)
        error_schema_check(json.loads(b))
        check_eq(error_of(json.loads(b))[0], "not_found", m)
    # a path several routes match (the history route and /:symbol, both
    # GET): each method is named once
    status, h, body = raw_json(svc.port, "PUT", "/api/predictions/history")
    check_eq((status, h.get("allow")), (405, "GET, HEAD, OPTIONS"))
    status, h, body = raw_json(svc.port, "DELETE", "/api/predictions/stream")
    check_eq((status, h.get("allow")), (405, "GET, HEAD, OPTIONS"))
    status, h, body = raw_json(svc.port, "PUT", "/admin/training/7")
    check_eq((status, h.get("allow")), (405, "GET, HEAD, DELETE"))
    # a method libmicrohttpd has never heard of gets the route's 405
    status, h, b = raw_request(svc.port, b"BREW /health/live HTTP/1.1\r\nHost: x\r\n"
                       b"Connection: close\r\n\r\n")
    check_eq(status, 405)
    check_eq(h.get("allow"), "GET, HEAD")
    alive(svc)


@test
def oversized_and_malformed_request_heads():
    svc = service()
    # one large header that fits the connection's 32 KiB is fine
    status, _, body = raw_json(svc.port, "GET", "/health/live", "X-Pad: " + "p" * 16000 + "\r\n")
    check_eq(status, 200)
    # headers past the connection's memory: libmicrohttpd refuses them
    # itself, and nothing else is affected
    for hdrs in ["X-Pad: " + "p" * 40000 + "\r\n",
                 "".join(f"X-H{i}: {'v' * 60}\r\n" for i in range(800))]:
        status, _, _ = raw_request(svc.port, f"GET /health/live HTTP/1.1\r\nHost: x\r\n{hdrs}"
                           "Connection: close\r\n\r\n".encode())
        check_eq(status, 431)
    # a header line without a colon: 400
    status, _, _ = raw_request(svc.port, b"GET /health/live HTTP/1.1\r\nHost: x\r\nno colon here\r\n"
                       b"Connection: close\r\n\r\n")
    check_eq(status, 400)
    # an X-Request-Id that could forge a log line is replaced, a good one
    # echoed
    status, h, _ = raw_json(svc.port, "GET", "/health/live", "X-Request-Id: a\"b\r\n")
    check(h.get("x-request-id") not in (None, 'a"b'), h)
    status, h, _ = raw_json(svc.port, "GET", "/health/live", "X-Request-Id: trace-1.2:3\r\n")
    check_eq(h.get("x-request-id"), "trace-1.2:3")
    alive(svc)


@test
def repeated_and_empty_parameters_are_refused():
    svc = service()
    # a repeated parameter keeps both values: "15m,1h" is no timeframe
    status, _, body = svc.get("/api/predictions/BTCUSDT?timeframe=15m&timeframe=1h")
    check_eq(status, 400)
    code, msg = error_of(body)
    check_eq(code, "invalid_timeframe")
    # a parameter without a value is empty, not absent
    for path in ["/api/predictions/BTCUSDT?timeframe", "/api/predictions?timeframe=",
                 "/api/candles/BTCUSDT?timeframe"]:
        status, _, body = svc.get(path)
        check_eq((status, error_of(body)[0]), (400, "invalid_timeframe"), path)
    for path, why in [("/api/predictions/BTCUSDT?timeframe=15m&version", "version"),
                      ("/api/predictions/BTCUSDT?timeframe=15m&version=0", "version"),
                      ("/api/predictions/BTCUSDT?timeframe=15m&version=2147483648", "version"),
                      ("/api/predictions/BTCUSDT?timeframe=15m&version=+1", "version"),
                      ("/api/predictions/BTCUSDT?timeframe=15m&label=", "label"),
                      ("/api/predictions/BTCUSDT/summary?label=beta", "label"),
                      ("/api/predictions/BTCUSDT/summary?version=x", "version"),
                      ("/api/predictions?timeframe=15m&label=Stable", "label"),
                      ("/api/predictions/history?limit=0", "limit"),
                      ("/api/predictions/history?limit=1001", "limit"),
                      ("/api/predictions/history?limit=-5", "limit"),
                      ("/api/predictions/history?limit=", "limit"),
                      ("/api/predictions/history?limit=10x", "limit"),
                      ("/api/predictions/history?from=yesterday", "from"),
                      ("/api/predictions/history?to=1969-12-31", "to"),
                      ("/api/predictions/history?from=2024-02-01&to=2024-01-01", "before"),
                      ("/api/predictions/history?from=2024-01-01&to=2024-01-01", "before"),
                      ("/api/predictions/history?cursor=abc", "cursor"),
                      ("/api/predictions/history?cursor=1_BTCUSDT_15m_0", "cursor"),
                      ("/api/predictions/history?cursor=1_BTCUSDT_7m_1", "cursor"),
                      ("/api/predictions/history?cursor=-1_BTCUSDT_15m_1", "cursor"),
                      ("/api/predictions/history?cursor=1_BTCUSDT_15m_1x", "cursor"),
                      ("/api/models/BTCUSDT/15m/performance?window=0", "window"),
                      ("/api/models/BTCUSDT/15m/performance?window=100001", "window"),
                      ("/api/models/BTCUSDT/15m/performance?window=-1", "window")]:
        status, _, body = svc.get(path)
        check_eq(status, 400, path)
        code, msg = error_of(body)
        check_eq(code, "invalid_argument", path)
        check_in(why, msg)
    for path, code in [("/api/predictions/history?symbol=btc", "invalid_symbol"),
                       ("/api/predictions/history?timeframe=2h", "invalid_timeframe"),
                       ("/api/models/BTCUSDT/2h/performance", "invalid_timeframe"),
                       ("/api/models/btc/15m/performance", "invalid_symbol"),
                       ("/api/predictions/BTCUSD%20T?timeframe=15m", "invalid_symbol")]:
        status, _, body = svc.get(path)
        check_eq((status, error_of(body)[0]), (400, code), path)
    # a repeated key header is two keys, neither of which is the key
    status, _, body = raw_json(svc.port, "POST", "/admin/models/reload",
                               f"X-API-Key: {ADMIN_KEY}\r\nX-API-Key: {ADMIN_KEY}\r\n"
                               "Content-Length: 0\r\n")
    check_eq((status, error_of(body)[0]), (401, "unauthorized"))
    status, _, body = raw_json(svc.port, "POST", "/admin/models/reload",
                               f"X-API-Key: {ADMIN_KEY}\r\nContent-Length: 0\r\n")
    check_eq(status, 200, body)


@test
def admin_series_routes_check_their_path_and_the_series():
    svc = service()
    admin = {"X-API-Key": ADMIN_KEY}
    label = {"label": "stable", "version": 1}
    for method, path, body, status, code in [
            ("DELETE", "/admin/models/btc/15m/pin", None, 400, "invalid_symbol"),
            ("DELETE", "/admin/models/BTCUSDT/2h/pin", None, 400, "invalid_timeframe"),
            ("POST", "/admin/models/btc/15m/pin", {"version": 1}, 400, "invalid_symbol"),
            ("POST", "/admin/models/_DEFAULT/15m/labels", label, 400, "invalid_symbol"),
            ("POST", "/admin/models/BTCUSDT/1w/labels", label, 400, "invalid_timeframe"),
            ("GET", "/api/models/b!/15m", None, 400, "invalid_symbol"),
            # well-formed, but the repository has no such series
            ("DELETE", "/admin/models/NOSUCH/15m/pin", None, 404, "not_found"),
            ("POST", "/admin/models/NOSUCH/15m/pin", {"version": 1}, 404, "not_found"),
            ("POST", "/admin/models/_default/15m/labels", label, 404, "not_found"),
            ("GET", "/api/models/NOSUCH/15m", None, 404, "no_model")]:
        st, _, payload = svc.request(method, path, body=body, headers=admin)
        check_eq(st, status, f"{method} {path}: {payload}")
        check_eq(error_of(payload)[0], code, f"{method} {path}")
    # what the route refused changed nothing: the listing is still empty
    st, _, payload = svc.request("GET", "/admin/models", headers=admin)
    check_eq((st, payload["count"], payload["refused"]), (200, 0, []), payload)


# ---------------------------------------------------------------------------
# Start-up and logs.

@test
def an_address_the_host_does_not_have_fails_the_start():
    need_services()
    models = tempfile.mkdtemp(prefix="predictd-httperr-listen-")
    # 192.0.2.1 (TEST-NET-1) is on no interface here: the bind fails and
    # the message says why, not only that it failed
    p = cli("serve", env={"PREDICTD_LISTEN": "192.0.2.1:0", "PREDICTD_MODELS_DIR": models,
                          "PREDICTD_REDIS_URL": ""}, check_rc=False, timeout=60)
    check(p.returncode != 0, "serve exited 0")
    check_in("cannot listen on 192.0.2.1:0", p.stderr)
    check_in("assign requested address", p.stderr)
    # localhost is 127.0.0.1
    svc = Service(models, env={"PREDICTD_LISTEN": "localhost:0"})
    check_in("listening on localhost:", svc.logs())
    alive(svc)
    check_eq(svc.stop(), 0)


@test
def the_per_address_limit_is_bounded_by_the_connection_limit():
    need_services()
    models = tempfile.mkdtemp(prefix="predictd-httperr-perip-")
    # 0 (no per-address limit of its own) and a limit above the total are
    # both the total
    for per_ip in ("0", "100"):
        svc = Service(models, env={"PREDICTD_MAX_CONNECTIONS": "50",
                                   "PREDICTD_PER_IP_CONNECTIONS": per_ip})
        check_in("50 connections at most (50 per address)", svc.logs())
        check_eq(svc.stop(), 0)


@test
def refused_connections_are_logged_once_per_episode_with_a_count():
    need_services()
    svc = Service(tempfile.mkdtemp(prefix="predictd-httperr-episode-"),
                  env={"PREDICTD_PER_IP_CONNECTIONS": "2", "PREDICTD_LOG_FORMAT": "text",
                       "PREDICTD_HEADER_TIMEOUT": "60"})  # the held ones stay
    # two connections the server has surely accepted (each answered one
    # keep-alive request; a sleep is not enough under load, where two pool
    # threads may take a held connection and the next one in either order)
    # The harness's own start-up probe may still hold one of the address's
    # two slots for a moment (its close not yet seen by a loaded server):
    # a held connection refused for that is tried again, and the refusals'
    # log lines counted from after them.
    held = []
    for _ in range(2):
        for attempt in range(50):
            h = socket.create_connection(("127.0.0.1", svc.port), timeout=5)
            got = b""
            try:
                h.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
                while b"\r\n\r\n" not in got:
                    chunk = h.recv(4096)
                    if not chunk:
                        break
                    got += chunk
            except ConnectionResetError:
                pass
            if got:
                break
            h.close()
            time.sleep(0.1)
        check(got.startswith(b"HTTP/1.1 200"), f"a held connection was not answered: {got[:40]}")
        held.append(h)

    def limit_lines():
        return [ln for ln in svc.logs().splitlines() if "connection limit" in ln]
    base = len(limit_lines())
    if base:  # let the episode of those refusals end: the next one starts a new one
        time.sleep(10.5)

    def refused_once():
        """One connection over the address's limit: libmicrohttpd closes it."""
        s = socket.create_connection(("127.0.0.1", svc.port), timeout=5)
        try:
            s.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            check_eq(s.recv(100), b"", "a connection over the limit is closed unanswered")
        except ConnectionResetError:
            pass
        s.close()
    try:
        for _ in range(5):
            refused_once()
        time.sleep(0.3)
        mhd = limit_lines()[base:]
        check_eq(len(mhd), 1, mhd)  # the episode's first refusal only
        # the next refusal after the episode's 10 s says how many were not logged
        time.sleep(10.5)
        refused_once()
        time.sleep(0.3)
        mhd = limit_lines()[base:]
        check_eq(len(mhd), 2, mhd)
        check_in("(and 4 more like it in the last 10 s or more)", mhd[1])
    finally:
        for s in held:
            s.close()
    check_eq(svc.stop(), 0)


@test
def a_missing_dashboard_is_404_and_the_start_says_so():
    need_services()
    models = tempfile.mkdtemp(prefix="predictd-httperr-web-")
    svc = Service(models, env={"PREDICTD_WEB_DIR": os.path.join(models, "no-such-dir")})
    status, _, body = svc.get("/")
    check_eq((status, error_of(body)[0]), (404, "not_found"))
    check_in("no dashboard at", svc.logs())
    check_eq(svc.stop(), 0)


@test
def the_access_log_prints_a_bounded_printable_path_without_the_query():
    need_services()
    models = tempfile.mkdtemp(prefix="predictd-httperr-log-")
    svc = Service(models, env={"PREDICTD_ACCESS_LOG": "on", "PREDICTD_LOG_FORMAT": "text"})
    long_path = "/api/x" + "y" * 400
    status, _, _ = raw_request(svc.port, f"GET {long_path}?secret=s3cr3t HTTP/1.1\r\nHost: x\r\n"
                       "Connection: close\r\n\r\n".encode())
    check_eq(status, 404)
    # bytes that are not printable ASCII are logged as '?'
    status, _, _ = raw_request(svc.port, b"GET /api/\xc3\xa9t\xc3\xa9 HTTP/1.1\r\nHost: x\r\n"
                       b"Connection: close\r\n\r\n")
    check_eq(status, 404)
    time.sleep(0.2)
    log = svc.logs()
    lines = [ln for ln in log.splitlines() if "/api/xyyy" in ln]
    check_eq(len(lines), 1, lines)
    check_in("yyy... 404", lines[0])
    check(len(lines[0]) < 400, f"the path is cut: {len(lines[0])} characters")
    check("s3cr3t" not in log, "the query string is never logged")
    check_in("GET /api/??t?? 404", log)  # each byte of an é is one ?
    check_eq(svc.stop(), 0)


# ---------------------------------------------------------------------------
# Dependencies stopped under a running server.

@test
def reading_routes_answer_503_with_the_database_stopped():
    need_services()
    tfs = ("15m", "1h", "4h", "1d")
    prepare_database(symbols=("BTCUSDT", "ETHUSDT"), timeframes=tfs, count=1200)
    models = tempfile.mkdtemp(prefix="predictd-httperr-db-")
    for tf in tfs:
        train(models, "BTCUSDT", tf)
    train(models, "ETHUSDT", "15m")
    svc = Service(models, env={"PREDICTD_CACHE": "off", "PREDICTD_API_KEY": ADMIN_KEY})
    admin = {"X-API-Key": ADMIN_KEY}
    # empty items and repeats in a list are skipped
    status, _, body = svc.get("/api/predictions?timeframe=15m&symbols=,BTCUSDT,,ETHUSDT,BTCUSDT,")
    check_eq((status, body.get("count")), (200, 2), body)
    # a client id picks the canary share's side; with no label set, the
    # one version serves every client
    status, _, body = svc.get("/api/predictions/BTCUSDT?timeframe=1h",
                              headers={"X-Client-Id": "user-42"})
    check_eq((status, body["prediction"]["model"]["version"]), (200, 1), body)
    status, _, body = svc.get("/api/predictions/BTCUSDT/summary")
    check_eq((status, len(body["errors"])), (200, 0), body)
    services("pg-stop")
    try:
        # every symbol of a list failed on the database: the list is 503
        status, _, body = svc.get("/api/predictions?timeframe=15m&symbols=BTCUSDT,ETHUSDT")
        check_eq(status, 503, body)
        code, msg = error_of(body)
        check_eq(code, "data_unavailable")
        check_in("database", msg)
        # one symbol on the database, one without a model: 200, both named
        status, _, body = svc.get("/api/predictions?timeframe=1h&symbols=BTCUSDT,ETHUSDT")
        check_eq(status, 200, body)
        check_eq(sorted((e["symbol"], e["code"]) for e in body["errors"]),
                 [("BTCUSDT", "data_unavailable"), ("ETHUSDT", "no_model")])
        # every timeframe of a summary failed on the database: 503
        status, _, body = svc.get("/api/predictions/BTCUSDT/summary")
        check_eq((status, error_of(body)[0]), (503, "data_unavailable"), body)
        # a summary of one timeframe on the database and three without a
        # model: 200 with one error per timeframe
        status, _, body = svc.get("/api/predictions/ETHUSDT/summary")
        check_eq(status, 200, body)
        codes = {e["timeframe"]: e["code"] for e in body["errors"]}
        check_eq(codes, {"15m": "data_unavailable", "1h": "no_model", "4h": "no_model",
                         "1d": "no_model"})
        # candles come from the database too
        status, _, body = svc.get("/api/candles/BTCUSDT?timeframe=15m")
        check_eq((status, error_of(body)[0]), (503, "data_unavailable"), body)
        # the ledger routes
        for path in ("/api/predictions/history", "/api/models/BTCUSDT/15m/performance"):
            status, _, body = svc.get(path)
            check_eq((status, error_of(body)[0]), (503, "data_unavailable"), path)
        # training jobs live in the database
        status, _, body = svc.get("/admin/training", headers=admin)
        check_eq((status, error_of(body)[0]), (503, "data_unavailable"), body)
        # status says the database is down, with the last error a request met
        status, _, body = svc.get("/health/status")
        check_eq(status, 200, body)
        db = body["components"]["database"]
        check_eq(db["state"], "down", db)
        check(db["last_error"], db)
        check(body["ready"] is False and body["reason"], body)
        # a pin is the repository's (files): it holds, and the replicas it
        # cannot be announced to are told so in the log (they rescan later)
        status, _, body = svc.request("POST", "/admin/models/BTCUSDT/4h/pin",
                                      body={"version": 1}, headers=admin)
        check_eq(status, 200, body)
        check_eq(body["model"]["pinned_version"], 1, body)
        check_in("could not tell the other replicas that BTCUSDT:4h changed", svc.logs())
        status, _, body = svc.get("/api/models/BTCUSDT/4h")
        check_eq((status, body["model"]["pinned_version"]), (200, 1), body)
        check(svc.proc.poll() is None, "the process stays up")
    finally:
        services("pg-start")
    deadline = time.time() + 15
    while True:
        status, _, body = svc.get("/api/predictions?timeframe=15m&symbols=BTCUSDT,ETHUSDT")
        if status == 200 or time.time() > deadline:
            break
        time.sleep(0.2)
    check_eq(status, 200, body)
    status, _, body = svc.get("/admin/training", headers=admin)
    check_eq(status, 200, body)
    # a job on a series without candles fails; cancelling it then is 409
    status, _, body = svc.request("POST", "/admin/training", headers=admin,
                                  body={"symbols": "NOSUCH", "timeframe": "15m"})
    check_eq(status, 202, body)
    job_id = body["job"]["id"]
    deadline = time.time() + 120
    while True:
        status, _, body = svc.get(f"/admin/training/{job_id}", headers=admin)
        check_eq(status, 200, body)
        if body["job"]["state"] not in ("queued", "running") or time.time() > deadline:
            break
        time.sleep(0.2)
    check_eq(body["job"]["state"], "failed", body)
    status, _, body = svc.request("DELETE", f"/admin/training/{job_id}", headers=admin)
    check_eq((status, error_of(body)[0]), (409, "busy"), body)
    check_in("already finished", error_of(body)[1])
    # the exposition counts what was served, per series and version, and
    # describes the serving versions; 5xx answers are counted by code
    status, _, text = svc.get("/metrics", validate=False)
    text = text.decode()
    served = [ln for ln in text.splitlines()
              if ln.startswith('predictd_predictions_total{symbol="BTCUSDT",timeframe="1h",'
                               'version="1",direction="')]
    check_eq(len(served), 1, served)
    check_eq(served[0].rsplit(" ", 1)[1], "2", "two 1h predictions of BTCUSDT were served")
    want = ['predictd_prediction_duration_seconds_count{symbol="ETHUSDT",timeframe="15m",'
            'version="1"}',
            'predictd_http_requests_total{route="summary",code="503"} 1\n',
            'predictd_http_requests_total{route="candles",code="503"} 1\n',
            'predictd_model_versions{state="available"} 5\n']
    want += [f'predictd_model_info{{symbol="BTCUSDT",timeframe="{tf}",version="1",'
             'label="none",serving="true"} 1\n' for tf in tfs]
    for line in want:
        check(line in text, f"/metrics lacks {line!r}")
    check_eq(svc.stop(), 0)


@test
def training_routes_without_a_database_are_503_not_ready():
    need_services()
    svc = Service(tempfile.mkdtemp(prefix="predictd-httperr-nodb-"),
                  env={"PREDICTD_DATABASE_URL": "", "PREDICTD_API_KEY": ADMIN_KEY})
    admin = {"X-API-Key": ADMIN_KEY}
    for method, path, body in [("GET", "/admin/training", None),
                               ("POST", "/admin/training",
                                {"symbols": "BTCUSDT", "timeframe": "15m"}),
                               ("GET", "/admin/training/1", None),
                               ("DELETE", "/admin/training/1", None)]:
        status, _, payload = svc.request(method, path, body=body, headers=admin)
        check_eq(status, 503, f"{method} {path}: {payload}")
        code, msg = error_of(payload)
        check_eq(code, "not_ready")
        check_in("no database", msg)
    check_eq(svc.stop(), 0)


@test
def a_connection_accepted_before_the_drain_is_still_answered():
    need_services()
    svc = Service(tempfile.mkdtemp(prefix="predictd-httperr-drain-"))
    # connected, request not sent yet: the drain gives them a grace to arrive
    conns = [socket.create_connection(("127.0.0.1", svc.port), timeout=10) for _ in range(3)]
    time.sleep(0.2)
    svc.proc.send_signal(15)
    time.sleep(0.2)
    key = base64.b64encode(os.urandom(16)).decode()
    requests = [b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n",
                # streams are not opened once the drain began: 503
                (f"GET /api/predictions/stream HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                 f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                 "Sec-WebSocket-Version: 13\r\n\r\n").encode(),
                b"GET /api/predictions/events HTTP/1.1\r\nHost: x\r\n\r\n"]
    answers = []
    for s, req in zip(conns, requests):
        s.sendall(req)
    for s in conns:
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        answers.append(data)
    check(answers[0].startswith(b"HTTP/1.1 200"), answers[0][:60])
    check_in(b"connection: close", answers[0].lower(), "keep-alive ends with the drain")
    for path, data in zip(("/api/predictions/stream", "/api/predictions/events"), answers[1:]):
        head, _, body = data.partition(b"\r\n\r\n")
        check(head.startswith(b"HTTP/1.1 503"), head[:60])
        payload = json.loads(body)
        openapi_check("GET", path, 503, payload, "application/json")
        check_eq(error_of(payload), ("not_ready", "the service is shutting down"))
    check_eq(svc.proc.wait(timeout=40), 0, "the drain ends by itself")
    check_eq(svc.stop(), 0)


sys.exit(run_tests())
