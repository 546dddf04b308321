"""What the dashboard needs from the service: GET /api/candles/{symbol}
(closed candles only, equal to PostgreSQL's, cached until the next close,
every error path) and POST /api/stream-token (a read-keyed service opens
its event stream to a token, never to a key in the URL, and refuses
forged, expired and missing tokens). Every response is checked against
openapi.yaml by the harness.

CNDLUSDT 1h is seeded to the last closed hour and its last candle deleted,
so a test can put a closed candle back and see it served."""
import calendar
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (DB_URL, REDIS_URL, Service, Skip, check, check_eq, need_services,  # noqa: E402
                     prepare_database, psql, run_tests, test, train)

SYM, TF, TFS = "CNDLUSDT", "1h", 3600
MODELS = tempfile.mkdtemp(prefix="predictd-web-models-")
READ_KEY = "web-read-" + "k" * 20
state = {}


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def setup():
    if "deleted" not in state:
        need_services()
        prepare_database(symbols=(SYM,), timeframes=(TF,), count=1500)
        row = psql(f"SELECT extract(epoch FROM open_time)::bigint, open, high, low, close, volume "
                   f"FROM candles WHERE symbol = '{SYM}' AND timeframe = '{TF}' "
                   f"ORDER BY open_time DESC LIMIT 1")
        state["deleted"] = row.split("|")
        psql(f"DELETE FROM candles WHERE symbol = '{SYM}' AND timeframe = '{TF}' AND "
             f"open_time = to_timestamp({state['deleted'][0]})")
        train(MODELS, SYM, TF)


def service():
    if "svc" not in state:
        setup()
        state["svc"] = Service(MODELS, env={"PREDICTD_ACCESS_LOG": "on"})
    return state["svc"]


def db_candles(limit):
    rows = psql(f"SELECT extract(epoch FROM open_time)::bigint, open, high, low, close, volume "
                f"FROM candles WHERE symbol = '{SYM}' AND timeframe = '{TF}' AND "
                f"open_time + interval '1 hour' <= now() ORDER BY open_time DESC LIMIT {limit}")
    out = []
    for r in reversed(rows.splitlines()):
        f = r.split("|")
        out.append([iso(int(f[0]))] + [float(x) for x in f[1:]])
    return out


@test
def candles_are_the_closed_candles_of_the_database():
    svc = service()
    status, headers, body = svc.get(f"/api/candles/{SYM}?timeframe={TF}&limit=50")
    check_eq(status, 200, body)
    check_eq((body["symbol"], body["timeframe"], body["count"]), (SYM, TF, 50))
    check_eq(body["columns"], ["time", "open", "high", "low", "close", "volume"])
    want = db_candles(50)
    check_eq(len(body["candles"]), 50)
    for got, exp in zip(body["candles"], want):
        check_eq(got[0], exp[0])
        for a, b in zip(got[1:], exp[1:]):
            check(abs(a - b) <= 1e-9 * max(1.0, abs(b)), f"{got} != {exp}")
    times = [c[0] for c in body["candles"]]
    check(times == sorted(times), "oldest first")
    last = calendar.timegm(time.strptime(times[-1], "%Y-%m-%dT%H:%M:%SZ"))
    check_eq(body["last_close"], iso(int(last) + TFS))
    check_eq(body["next_close"], iso(int(last) + 2 * TFS))
    # the default is 200 candles
    status, _, body = svc.get(f"/api/candles/{SYM}?timeframe={TF}")
    check_eq((status, body["count"]), (200, 200))


@test
def candles_limit_bounds():
    svc = service()
    for limit, count in (("1", 1), ("1000", 1000)):
        status, _, body = svc.get(f"/api/candles/{SYM}?timeframe={TF}&limit={limit}")
        check_eq(status, 200, body)
        check_eq(body["count"], count)
        check_eq(len(body["candles"]), count)
    for limit in ("0", "1001", "-1", "+5", "abc", "", "1.5", "99999999999999999999"):
        status, _, body = svc.get(f"/api/candles/{SYM}?timeframe={TF}&limit={limit}")
        check_eq(status, 400, f"limit={limit!r}")
        check_eq(body["error"]["code"], "invalid_argument")
        check("1..1000" in body["error"]["message"], body)


@test
def candles_bad_symbol_timeframe_and_unknown_series():
    svc = service()
    for sym in ("btcusdt", "B", "A" * 21, "BTC-USDT", "BTC%20USDT"):
        status, _, body = svc.get(f"/api/candles/{sym}?timeframe={TF}")
        check_eq(status, 400, sym)
        check_eq(body["error"]["code"], "invalid_symbol")
    for q in ("", "?timeframe=2h", "?timeframe=", "?limit=5"):
        status, _, body = svc.get(f"/api/candles/{SYM}{q}")
        check_eq(status, 400, q)
        check_eq(body["error"]["code"], "invalid_timeframe")
    status, _, body = svc.get(f"/api/candles/NOSUCHUSDT?timeframe={TF}")
    check_eq(status, 404)
    check_eq(body["error"]["code"], "unknown_symbol")
    status, _, body = svc.get(f"/api/candles/{SYM}?timeframe=15m")  # a series it does not have
    check_eq(status, 404)
    check_eq(body["error"]["code"], "unknown_symbol")


@test
def candles_cache_control_and_the_candle_in_progress():
    svc = service()
    status, headers, body = svc.get(f"/api/candles/{SYM}?timeframe={TF}&limit=5")
    check_eq(status, 200, body)
    cc = headers.get("Cache-Control", "")
    # the last candle was deleted: the next one is due, nothing may cache
    check_eq(cc, "no-cache")
    # a candle whose close time is in the future is never served
    now = int(time.time())
    in_progress = now - now % TFS
    psql(f"INSERT INTO candles VALUES ('{SYM}', '{TF}', to_timestamp({in_progress}), 1, 2, 0.5, "
         f"1.5, 10) ON CONFLICT DO NOTHING")
    try:
        status, _, body = svc.get(f"/api/candles/{SYM}?timeframe={TF}&limit=5")
        check_eq(status, 200, body)
        check(iso(in_progress) not in [c[0] for c in body["candles"]], "the open candle leaked")
    finally:
        psql(f"DELETE FROM candles WHERE symbol = '{SYM}' AND timeframe = '{TF}' AND "
             f"open_time = to_timestamp({in_progress})")


@test
def candles_a_closed_candle_put_back_is_served():
    svc = service()
    t = int(state["deleted"][0])
    _, _, before = svc.get(f"/api/candles/{SYM}?timeframe={TF}&limit=3")
    check(iso(t) not in [c[0] for c in before["candles"]], "deleted candle still served")
    d = state["deleted"]
    psql(f"INSERT INTO candles VALUES ('{SYM}', '{TF}', to_timestamp({t}), {d[1]}, {d[2]}, {d[3]}, "
         f"{d[4]}, {d[5]})")
    deadline = time.time() + 20
    while time.time() < deadline:
        status, _, body = svc.get(f"/api/candles/{SYM}?timeframe={TF}&limit=3")
        check_eq(status, 200, body)
        if body["candles"][-1][0] == iso(t):
            break
        time.sleep(0.2)
    check_eq(body["candles"][-1][0], iso(t))
    check_eq(body["candles"][-1][4], float(d[4]))
    # current again: cacheable until the next close (a clock past it says no-cache)
    status, headers, body = svc.get(f"/api/candles/{SYM}?timeframe={TF}&limit=3")
    left = (calendar.timegm(time.strptime(body["next_close"], "%Y-%m-%dT%H:%M:%SZ")) -
            calendar.timegm(time.strptime(body["timestamp"], "%Y-%m-%dT%H:%M:%SZ")))
    if left > 0:
        check_eq(headers["Cache-Control"], f"public, max-age={min(left, 300)}")
    else:
        check_eq(headers["Cache-Control"], "no-cache")
    check_eq(body["candles"][-2][0], before["candles"][-1][0])


@test
def candles_process_cache_serves_until_the_next_close():
    """A silent change (no NOTIFY, Redis' window dropped) is not seen while
    the process cache may serve: it is what the process cache holds."""
    svc = service()  # the test before put the last candle back: the series is current
    status, headers, body = svc.get(f"/api/candles/{SYM}?timeframe={TF}&limit=4")
    if headers["Cache-Control"] == "no-cache":
        raise Skip("the series is not current (run alone, or the clock passed the next close)")
    t, close = body["candles"][-1][0], body["candles"][-1][4]
    epoch = calendar.timegm(time.strptime(t, "%Y-%m-%dT%H:%M:%SZ"))
    args = ["psql", DB_URL.split("?")[0], "-qtAX", "-v", "ON_ERROR_STOP=1",
            "-c", "SET session_replication_role = replica",  # no trigger, no NOTIFY
            "-c", f"UPDATE candles SET close = close + 1 WHERE symbol = '{SYM}' AND "
                  f"timeframe = '{TF}' AND open_time = to_timestamp({epoch})"]
    subprocess.run(args, check=True, capture_output=True, timeout=60)
    subprocess.run(["redis-cli", "-u", REDIS_URL, "del", f"predictd:candles:{SYM}:{TF}"],
                   check=True, capture_output=True, timeout=30)
    try:
        _, _, cached = svc.get(f"/api/candles/{SYM}?timeframe={TF}&limit=4")
        check_eq(cached["candles"][-1][4], close)  # the process cache answered
        # another key reads the store (this entry keeps the changed value: no
        # other test asks for 7 candles)
        _, _, other = svc.get(f"/api/candles/{SYM}?timeframe={TF}&limit=7")
        check_eq(other["candles"][-1][4], close + 1)
    finally:
        args[-1] = args[-1].replace("close = close + 1", "close = close - 1")
        subprocess.run(args, check=True, capture_output=True, timeout=60)
        subprocess.run(["redis-cli", "-u", REDIS_URL, "del", f"predictd:candles:{SYM}:{TF}"],
                       check=True, capture_output=True, timeout=30)


@test
def candles_without_the_process_cache_match():
    setup()
    other = Service(MODELS, env={"PREDICTD_CACHE": "off"})
    status, _, body = other.get(f"/api/candles/{SYM}?timeframe={TF}&limit=20")
    check_eq(status, 200, body)
    _, _, cached = service().get(f"/api/candles/{SYM}?timeframe={TF}&limit=20")
    check_eq(body["candles"], cached["candles"])
    check_eq(other.stop(), 0)


def sse_status(port, path):
    """Opens an event stream; returns (status, first body bytes)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
              .encode())
    raw = b""
    while b"retry:" not in raw and b"\r\n\r\n{" not in raw:
        chunk = s.recv(4096)
        if not chunk:
            break
        raw += chunk
        if raw.startswith(b"HTTP/1.1 4") and b"\r\n\r\n" in raw:
            break
    s.close()
    return int(raw.split(b" ", 2)[1]), raw


@test
def stream_token_opens_the_event_stream_of_a_keyed_service():
    setup()
    svc = Service(MODELS, env={"PREDICTD_READ_KEY": READ_KEY, "PREDICTD_ACCESS_LOG": "on"})
    # no key, wrong key: no token
    status, _, body = svc.request("POST", "/api/stream-token")
    check_eq(status, 401)
    status, _, _ = svc.request("POST", "/api/stream-token", headers={"X-API-Key": "x" + READ_KEY})
    check_eq(status, 401)
    # the stream refuses no token, a forged one, an expired one and the key as a token
    path = f"/api/predictions/events?symbols={SYM}&timeframes={TF}"
    now = int(time.time())
    for q in ("", "&token=", f"&token={now + 30}." + "0" * 64, f"&token={now - 5}." + "a" * 64,
              f"&token={READ_KEY}", "&token=" + str(now + 30)):
        status, raw = sse_status(svc.port, path + q)
        check_eq(status, 401, q)
    status, headers, body = svc.request("POST", "/api/stream-token",
                                        headers={"X-API-Key": READ_KEY})
    check_eq(status, 200, body)
    check_eq(headers.get("Cache-Control"), "no-store")
    token = body["token"]
    check_eq(body["expires_in"], 60)
    status, raw = sse_status(svc.port, path + "&token=" + token)
    check_eq(status, 200, raw)
    check(b"text/event-stream" in raw and b"retry: 3000" in raw, raw)
    # a token is not a key: the other routes still want X-API-Key
    status, _, _ = svc.get(f"/api/candles/{SYM}?timeframe={TF}&token={token}")
    check_eq(status, 401)
    # a token that differs in one hex digit, or outlives 60 s, is refused
    forged = token[:-1] + ("0" if token[-1] != "0" else "1")
    check_eq(sse_status(svc.port, path + "&token=" + forged)[0], 401)
    exp, mac = token.split(".")
    check_eq(sse_status(svc.port, path + f"&token={int(exp) + 3600}.{mac}")[0], 401)
    # the admin key gets a token too; keyed candles are private to caches
    status, _, body = svc.request("POST", "/api/stream-token", headers={"X-API-Key": READ_KEY})
    check_eq(status, 200)
    status, headers, _ = svc.get(f"/api/candles/{SYM}?timeframe={TF}",
                                 headers={"X-API-Key": READ_KEY})
    check_eq(status, 200)
    check(headers["Cache-Control"].startswith("private, max-age="), headers["Cache-Control"])
    check_eq(svc.stop(), 0)
    logs = svc.final_log
    check("/api/predictions/events" in logs, "the access log has the stream requests")
    check(token not in logs and mac not in logs, "a token was logged")
    check(READ_KEY not in logs, "the key was logged")


def ws_status(port, path):
    """A WebSocket handshake; returns the HTTP status of the answer."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
    raw = b""
    while b"\r\n" not in raw:
        chunk = s.recv(4096)
        if not chunk:
            break
        raw += chunk
    s.close()
    return int(raw.split(b" ", 2)[1])


@test
def stream_token_opens_the_websocket_too():
    setup()
    svc = Service(MODELS, env={"PREDICTD_READ_KEY": READ_KEY})
    path = f"/api/predictions/stream?symbols={SYM}"
    check_eq(ws_status(svc.port, path), 401)
    check_eq(ws_status(svc.port, path + "&token=" + "1" * 10 + "." + "f" * 64), 401)
    _, _, body = svc.request("POST", "/api/stream-token", headers={"X-API-Key": READ_KEY})
    check_eq(ws_status(svc.port, path + "&token=" + body["token"]), 101)
    check_eq(svc.stop(), 0)


@test
def candles_requests_have_their_metrics_label():
    svc = service()
    svc.get(f"/api/candles/{SYM}?timeframe={TF}&limit=2")
    svc.get(f"/api/candles/{SYM}?timeframe={TF}&limit=0")
    status, _, text = svc.get("/metrics", validate=False)
    check_eq(status, 200)
    text = text.decode()
    check('predictd_http_requests_total{route="candles",code="200"}' in text, "200 not counted")
    check('predictd_http_requests_total{route="candles",code="400"}' in text, "400 not counted")


@test
def stream_token_without_a_read_key():
    svc = service()
    status, _, body = svc.request("POST", "/api/stream-token")
    check_eq(status, 200, body)
    # the stream is open anyway, with or without a token
    check_eq(sse_status(svc.port, f"/api/predictions/events?timeframes={TF}")[0], 200)
    check_eq(sse_status(svc.port, f"/api/predictions/events?timeframes={TF}&token=junk")[0], 200)
    status, _, body = svc.get("/api/stream-token", validate=False)
    check(status in (404, 405), status)


@test
def dashboard_has_no_favicon_404_and_allows_its_icon():
    svc = service()
    status, headers, body = svc.get("/")
    check_eq(status, 200)
    check(b'rel="icon" href="data:image/svg+xml' in body, "inline favicon")
    check("img-src 'self' data:" in headers["Content-Security-Policy"], headers)
    for route in (b"/api/candles/", b"/api/stream-token", b"/api/predictions/history",
                  b"/performance", b"/health/status", b"X-API-Key", b"localStorage"):
        check(route in body, f"the page uses {route!r}")
    check(b"X-API-Key=" not in body and b"key=\" + key" not in body, "the key never goes in a URL")


if __name__ == "__main__":
    sys.exit(run_tests())
