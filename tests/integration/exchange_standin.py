#!/usr/bin/python3
"""A stand-in for Binance's public spot API, for protocol tests on loopback.

It speaks the documented formats (https://developers.binance.com/docs/binance-spot-api-docs):
- WebSocket combined streams: GET /stream?streams=<symbol>@trade/... answers
  {"stream": "<symbol>@trade", "data": {"e": "trade", "E": ..., "s": ...,
  "t": id, "p": "price", "q": "qty", "T": trade time ms, "m": buyer is maker,
  "M": true}}; the server pings, the client must pong with the payload.
- REST: GET /api/v3/time {"serverTime": ms}; GET /api/v3/exchangeInfo
  (?symbol= or ?symbols=["A","B"]) with rateLimits and PRICE_FILTER/LOT_SIZE
  filters, 400 {"code": -1121, "msg": "Invalid symbol."} for an unknown one;
  GET /api/v3/klines?symbol&interval=1m&startTime&endTime&limit, rows
  [openTime, "o", "h", "l", "c", "v", closeTime, "quoteVolume", trades,
  "takerBase", "takerQuote", "0"], header X-MBX-USED-WEIGHT-1M; 429 with
  Retry-After when told to.

It replays the real XRPETH trades and 1m candles of ../shared/data on a
virtual clock that runs `speed` times faster than the wall clock, starting
`lead` minutes after the first candle and stopping 2 minutes after the last
trade. Trades are "broadcast" at their time: a client connected then gets
them, a client that is not connected never will (only REST can fill that).

Faults (all deterministic, by trade index; --faults none turns them off):
  dup        some trades are sent twice, at once and 40 trades later
  swap       some neighbouring trades are sent in the wrong order, several
             of them across a minute boundary
  malformed  at one point: a non-JSON text, a trade with a bad field, an
             unknown event, a message of a stream never subscribed to
  gap        a run of trades is never sent, the connection stays up
  drop       at one point the connection is cut (TCP abort, no close frame)
  429        the second klines request is answered 429 with Retry-After: 1
 Wire faults (written as raw RFC 6455 frames; each fires on the first trade
 at or after its index while a client is connected):
  split      trades 700..709 sent as three fragments with a ping between
             them, one byte per TCP write
  badutf8    at 1500: a trade with invalid UTF-8, then trades whose fields
             have the wrong JSON types (the trades are then sent properly)
  close      at 2500: a close frame with code 1001 "going away"
  masked     at 5000: a trade in a masked frame (servers must not mask)
  oversized  at 8000: a frame header announcing 5 MiB, and the cut

Statistics for the test: GET /_standin/stats on the REST port.
Control: GET /_standin/mode?klines=429once|418once|malformed|ok for error-path tests;
/_standin/mode?info=halted|zerotick|unlisted|malformed|ok for exchangeInfo's answer.
With --tls-cert and --tls-key both ports speak TLS (wss:// and https://).

Usage: exchange_standin.py --trades FILE --candles FILE --ws-port N
       --rest-port N [--speed X] [--lead MIN] [--faults LIST]
Prints "ready" on stdout when both ports listen.
Uses Python 3's standard library and Debian's python3-websockets.
"""
import argparse
import asyncio
import csv
import datetime
import json
import ssl
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import websockets

MIN_MS = 60000


def parse_time_ms(s):
    d = datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))
    return int(round(d.timestamp() * 1000))


class Exchange:
    def __init__(self, args):
        self.symbol = "XRPETH"
        self.trades = []
        with open(args.trades) as f:
            for r in csv.DictReader(f):
                self.trades.append({"t": parse_time_ms(r["time"]), "id": int(r["id"]),
                                    "side": r["side"], "p": r["price"], "q": r["amount"]})
        self.candles = {}  # open ms -> [o, h, l, c, v] as strings
        with open(args.candles) as f:
            for r in csv.DictReader(f):
                self.candles[parse_time_ms(r["open_time"])] = [
                    r["open"], r["high"], r["low"], r["close"], r["volume"]]
        self.first_min = min(self.candles)
        self.last_min = max(self.candles)
        self.speed = args.speed
        self.t0 = self.first_min + args.lead * MIN_MS
        self.t_end = self.trades[-1]["t"] + 2 * MIN_MS
        self.wall0 = time.time()
        self.faults = set(args.faults.split(",")) if args.faults != "none" else set()
        self.lock = threading.Lock()
        self.stats = {"ws_connections": 0, "ws_paths": [], "pongs": 0, "pings": 0,
                      "trades_sent": 0, "dropped": 0, "klines_requests": 0,
                      "rate_limited": 0, "rest_requests": 0, "malformed_sent": 0,
                      "gap_ids": [], "unsent_while_down": 0}
        self.klines_mode = "429second" if "429" in self.faults else "ok"
        self.info_mode = "ok"
        self.weight = 0
        self.weight_minute = 0
        n = len(self.trades)
        # fault positions (trade indexes)
        self.dup_at = set(range(500, n, 1111)) if "dup" in self.faults else set()
        self.dup_later = {}
        self.swap_at = set()
        if "swap" in self.faults:
            # every 777th trade, and the first few minute boundaries after 2000
            self.swap_at = set(range(300, n - 1, 777))
            k = 0
            for i in range(2000, n - 1):
                if self.trades[i]["t"] // MIN_MS != self.trades[i + 1]["t"] // MIN_MS:
                    self.swap_at.add(i)
                    k += 1
                    if k == 5:
                        break
        self.malformed_at = 3000 if "malformed" in self.faults else -1
        self.gap = range(4000, 4025) if "gap" in self.faults else range(0)
        self.drop_at = 6000 if "drop" in self.faults else -1
        self.split = range(700, 710) if "split" in self.faults else range(0)
        self.wire_faults = sorted((at, f) for f, at in (("badutf8", 1500), ("close", 2500),
                                                        ("masked", 5000), ("oversized", 8000))
                                  if f in self.faults)
        for f in ("split", "badutf8", "close", "masked", "oversized"):
            self.stats[f + "_sent"] = 0
        self.pos = 0
        self.clients = set()

    def now_ms(self):
        v = self.t0 + int((time.time() - self.wall0) * 1000 * self.speed)
        return min(v, self.t_end)

    # -- REST ---------------------------------------------------------------
    def use_weight(self, w):
        with self.lock:
            m = int(time.time() // 60)
            if m != self.weight_minute:
                self.weight_minute, self.weight = m, 0
            self.weight += w
            return self.weight

    def price_at(self, t_open):
        """The candle of minute t_open as strings, or None when the data has
        none (before the data). Minutes after the data are flat."""
        if t_open in self.candles:
            return self.candles[t_open]
        if t_open < self.first_min:
            return None
        last = self.candles[self.last_min]
        return [last[3], last[3], last[3], last[3], "0.0"]

    def open_minute(self, t_open, now):
        """The candle of the minute still open at now: trades so far."""
        ts = [t for t in self.trades if t_open <= t["t"] <= now]
        if not ts:
            prev = self.price_at(t_open - MIN_MS)
            if prev is None:
                return None
            return [prev[3]] * 4 + ["0.0"]
        ps = [float(t["p"]) for t in ts]
        return [ts[0]["p"], repr(max(ps)), repr(min(ps)), ts[-1]["p"],
                repr(sum(float(t["q"]) for t in ts))]

    def klines(self, q):
        sym = q.get("symbol", [""])[0]
        if sym != self.symbol:
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        if q.get("interval", [""])[0] != "1m":
            return 400, {"code": -1120, "msg": "Invalid interval."}
        try:
            start = int(q.get("startTime", ["0"])[0])
            end = int(q.get("endTime", [str(2**62)])[0])
            limit = min(int(q.get("limit", ["500"])[0]), 1000)
        except ValueError:
            return 400, {"code": -1100, "msg": "Illegal characters found in a parameter."}
        now = self.now_ms()
        t = max(start - start % MIN_MS, self.first_min)
        if t < start:
            t += MIN_MS
        rows = []
        while t <= end and t <= now and len(rows) < limit:
            c = self.open_minute(t, now) if t + MIN_MS > now else self.price_at(t)
            if c is not None:
                rows.append([t, c[0], c[1], c[2], c[3], c[4], t + MIN_MS - 1, "0", 0, "0",
                             "0", "0"])
            t += MIN_MS
        return 200, rows

    def exchange_info(self, q):
        names = []
        if "symbol" in q:
            names = [q["symbol"][0]]
        elif "symbols" in q:
            try:
                names = json.loads(q["symbols"][0])
            except ValueError:
                return 400, {"code": -1100, "msg": "Illegal characters found in parameter "
                                                   "'symbols'."}
        for n in names:
            if n != self.symbol:
                return 400, {"code": -1121, "msg": "Invalid symbol."}
        body = {
            "timezone": "UTC", "serverTime": self.now_ms(),
            "rateLimits": [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE",
                            "intervalNum": 1, "limit": 6000},
                           {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE",
                            "intervalNum": 5, "limit": 61000}],
            "symbols": [{"symbol": self.symbol, "status": "TRADING", "baseAsset": "XRP",
                         "quoteAsset": "ETH",
                         "filters": [{"filterType": "PRICE_FILTER", "minPrice": "0.00000001",
                                      "maxPrice": "1000.00000000",
                                      "tickSize": "0.00000001"},
                                     {"filterType": "LOT_SIZE", "minQty": "1.00000000",
                                      "maxQty": "90000000.00000000",
                                      "stepSize": "1.00000000"}]}]}
        mode, sym = self.info_mode, body["symbols"][0]
        if mode == "halted":  # a trading halt, a tick size sent as a JSON number
            sym["status"] = "BREAK"
            sym["filters"][0]["tickSize"] = 0.0001
        elif mode == "zerotick":  # no usable tick size; an unknown rate limit kind
            sym["filters"][0]["tickSize"] = "0.00000000"
            body["rateLimits"][0]["interval"] = "SECOND"
        elif mode == "unlisted":  # the symbol is not in the answer (delisted meanwhile)
            body["symbols"] = [dict(sym, symbol="XRPBTC"), {"status": "TRADING"}]
        elif mode == "malformed":
            return 200, b'{"timezone": "UTC", "symbols": ['
        return 200, body

    # -- WebSocket ----------------------------------------------------------
    def trade_msg(self, tr):
        return json.dumps({"stream": "xrpeth@trade", "data": {
            "e": "trade", "E": self.now_ms(), "s": self.symbol, "t": tr["id"], "p": tr["p"],
            "q": tr["q"], "T": tr["t"], "m": tr["side"] == "sell", "M": True}})

    @staticmethod
    def raw_frame(op, payload, fin=True, mask=False, length=None):
        """One RFC 6455 frame as bytes (a server's frames are unmasked)."""
        n = len(payload) if length is None else length
        head = bytes([(0x80 if fin else 0) | op])
        m = 0x80 if mask else 0
        if n < 126:
            head += bytes([m | n])
        elif n <= 0xFFFF:
            head += bytes([m | 126]) + n.to_bytes(2, "big")
        else:
            head += bytes([m | 127]) + n.to_bytes(8, "big")
        if mask:
            key = b"\x5a\xa5\x3c\xc3"
            head += key
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        return head + payload

    async def send_raw(self, data, bytewise=False):
        for ws in list(self.clients):
            if bytewise:  # no await between the bytes: no other frame can come between
                for k in range(len(data)):
                    ws.transport.write(data[k:k + 1])
            else:
                ws.transport.write(data)

    async def wire_fault(self, name, tr):
        """Sends the wire fault name (tr: the trade it replaces or precedes)."""
        self.stats[name + "_sent"] += 1
        msg = self.trade_msg(tr).encode()
        if name == "badutf8":
            bad = msg.replace(b'"s": "', b'"s": "\xff\xfe', 1)
            await self.send_raw(self.raw_frame(1, bad))
            for field, value in (("t", "not-an-id"), ("p", None), ("m", "yes"), ("T", 1.5)):
                d = json.loads(msg)
                d["data"][field] = value
                await self.send_all(json.dumps(d))
            await self.send_all(msg.decode())  # the real trade
            return True
        if name == "close":
            for ws in list(self.clients):
                self.clients.discard(ws)
                asyncio.ensure_future(ws.close(1001, "going away"))
            return False
        if name == "masked":
            await self.send_raw(self.raw_frame(1, msg, mask=True))
            return False
        if name == "oversized":
            await self.send_raw(self.raw_frame(1, b"", length=5 << 20))
            for ws in list(self.clients):
                ws.transport.abort()
                self.clients.discard(ws)
            return False
        return True

    async def send_all(self, msg):
        for ws in list(self.clients):
            try:
                await ws.send(msg)
            except websockets.ConnectionClosed:
                self.clients.discard(ws)

    async def broadcast(self):
        n = len(self.trades)
        while self.pos < n:
            now = self.now_ms()
            while self.pos < n and self.trades[self.pos]["t"] <= now:
                i = self.pos
                self.pos += 1
                if not self.clients:
                    self.stats["unsent_while_down"] += 1
                    continue
                if i in self.gap:
                    self.stats["gap_ids"].append(self.trades[i]["id"])
                    continue
                if i == self.malformed_at:
                    for m in ['{"stream": "xrpeth@trade", "data": {"e": "trade", "T": 1',
                              json.dumps({"stream": "xrpeth@trade", "data": {
                                  "e": "trade", "t": 1, "T": "yesterday", "p": "x", "q": "1",
                                  "m": True}}),
                              json.dumps({"stream": "xrpeth@kline_1m", "data": {"e": "kline"}}),
                              json.dumps({"stream": "dogeusdt@trade", "data": {
                                  "e": "trade", "t": 5, "T": now, "p": "1", "q": "1",
                                  "m": False}})]:
                        await self.send_all(m)
                        self.stats["malformed_sent"] += 1
                if self.wire_faults and i >= self.wire_faults[0][0]:
                    _, name = self.wire_faults.pop(0)
                    if await self.wire_fault(name, self.trades[i]):
                        self.stats["trades_sent"] += 1
                    continue
                if i in self.split:
                    payload = self.trade_msg(self.trades[i]).encode()
                    a, b = len(payload) // 3, 2 * len(payload) // 3
                    data = (self.raw_frame(1, payload[:a], fin=False) +
                            self.raw_frame(0x9, b"split") +
                            self.raw_frame(0, payload[a:b], fin=False) +
                            self.raw_frame(0, payload[b:]))
                    await self.send_raw(data, bytewise=True)
                    self.stats["split_sent"] += 1
                    self.stats["trades_sent"] += 1
                    continue
                if i == self.drop_at:
                    for ws in list(self.clients):
                        ws.transport.abort()
                        self.clients.discard(ws)
                    self.stats["dropped"] += 1
                    self.stats["unsent_while_down"] += 1
                    continue
                if i in self.swap_at and self.pos < n and self.trades[self.pos]["t"] <= now:
                    nxt = self.trades[self.pos]
                    self.pos += 1
                    await self.send_all(self.trade_msg(nxt))
                    self.stats["trades_sent"] += 1
                msg = self.trade_msg(self.trades[i])
                await self.send_all(msg)
                self.stats["trades_sent"] += 1
                if i in self.dup_at:
                    await self.send_all(msg)
                    self.dup_later[i + 40] = msg
                if i in self.dup_later:
                    await self.send_all(self.dup_later.pop(i))
            await asyncio.sleep(0.005)

    async def keepalive(self, ws):
        try:
            while True:
                await asyncio.sleep(0.5)
                self.stats["pings"] += 1
                waiter = await ws.ping(b"standin")
                await asyncio.wait_for(waiter, 5)
                self.stats["pongs"] += 1
        except (websockets.ConnectionClosed, asyncio.TimeoutError, asyncio.CancelledError):
            return

    async def handler(self, ws, path):
        self.stats["ws_connections"] += 1
        self.stats["ws_paths"].append(path)
        u = urllib.parse.urlparse(path)
        streams = urllib.parse.parse_qs(u.query).get("streams", [""])[0].split("/")
        if u.path != "/stream" or "xrpeth@trade" not in streams:
            await ws.close(1008, "unknown stream")
            return
        self.clients.add(ws)
        ka = asyncio.ensure_future(self.keepalive(ws))
        try:
            async for _ in ws:
                pass  # the client sends nothing we need
        except websockets.ConnectionClosed:
            pass
        finally:
            ka.cancel()
            self.clients.discard(ws)


def make_http(ex):
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def reply(self, status, body, headers=None):
            raw = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json;charset=UTF-8")
            self.send_header("Content-Length", str(len(raw)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(raw)

        def do_GET(self):
            u = urllib.parse.urlparse(self.path)
            q = urllib.parse.parse_qs(u.query)
            ex.stats["rest_requests"] += 1
            if u.path == "/_standin/stats":
                with ex.lock:
                    s = dict(ex.stats)
                s["now_ms"] = ex.now_ms()
                s["t_end"] = ex.t_end
                s["replay_done"] = ex.pos >= len(ex.trades)
                return self.reply(200, s)
            if u.path == "/_standin/mode":
                ex.klines_mode = q.get("klines", [ex.klines_mode])[0]
                ex.info_mode = q.get("info", [ex.info_mode])[0]
                return self.reply(200, {"klines": ex.klines_mode, "info": ex.info_mode})
            if u.path == "/api/v3/time":
                w = ex.use_weight(1)
                return self.reply(200, {"serverTime": ex.now_ms()},
                                  {"X-MBX-USED-WEIGHT-1M": str(w)})
            if u.path == "/api/v3/exchangeInfo":
                w = ex.use_weight(20)
                st, body = ex.exchange_info(q)
                return self.reply(st, body, {"X-MBX-USED-WEIGHT-1M": str(w)})
            if u.path == "/api/v3/klines":
                ex.stats["klines_requests"] += 1
                mode = ex.klines_mode
                if (mode == "429second" and ex.stats["klines_requests"] == 2) or \
                        mode in ("429once", "418once"):
                    status = 418 if mode == "418once" else 429
                    if mode != "429second":
                        ex.klines_mode = "ok"
                    ex.stats["rate_limited"] += 1
                    return self.reply(status, {"code": -1003, "msg": "Way too many requests; "
                                                                    "IP banned until later."},
                                      {"Retry-After": "1"})
                if mode == "malformed":
                    return self.reply(200, b'[[1570752000000, "0.1", "0.2"')
                w = ex.use_weight(2)
                st, body = ex.klines(q)
                return self.reply(st, body, {"X-MBX-USED-WEIGHT-1M": str(w)})
            self.reply(404, {"code": -1, "msg": "no such endpoint"})
    return H


async def main_async(ex, args):
    httpd = ThreadingHTTPServer(("127.0.0.1", args.rest_port), make_http(ex))
    ctx = None
    if args.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    async with websockets.serve(ex.handler, "127.0.0.1", args.ws_port, ping_interval=None,
                                max_queue=None, ssl=ctx):
        print("ready", flush=True)
        bc = asyncio.ensure_future(ex.broadcast())
        await asyncio.Future()  # until killed
        bc.cancel()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trades", required=True)
    ap.add_argument("--candles", required=True)
    ap.add_argument("--ws-port", type=int, required=True)
    ap.add_argument("--rest-port", type=int, required=True)
    ap.add_argument("--speed", type=float, default=6000.0)
    ap.add_argument("--lead", type=int, default=30)
    ap.add_argument("--faults", default="dup,swap,malformed,gap,drop,429")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    args = ap.parse_args()
    ex = Exchange(args)
    asyncio.run(main_async(ex, args))


if __name__ == "__main__":
    main()
