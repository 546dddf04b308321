#!/usr/bin/python3
"""burst.py: the candle-close burst of bench/run, measured from outside.

  burst.py prepare --symbols-file F --timeframes 15m,1h,4h,1d
      Deletes every candle of those series that opened at or after the last
      closed open time of its timeframe (at now), so the next closed candle
      of each series is missing. Run it while predictd is stopped.
  burst.py fire --symbols-file F --timeframes ... --count N --version V
      [--timeout S]
      Inserts the next closed candle of the first N series (symbols in file
      order, every timeframe of a symbol together) in ONE statement and one
      transaction (the trigger NOTIFYs each series), then measures from the
      COMMIT until every one of them is (ledger and keys polled every 25 ms)
        recorded:  its ledger row (predictions, candle_time = that candle),
        cached:    its Redis key predictd:pred:SYMBOL:TF:vV:-:EPOCH,
        published: its message on the Redis channel predictd:predictions
                   (a SUBSCRIBE opened before the insert counts them).
      Prints one line of key=value figures. Exit 0 when all arrived within
      the timeout, 1 otherwise (the line then says how many did). Only series that already have a ledger
      row (predictd predicted them at start-up) are taken.

The inserted candle is made from the series' previous close (open = that
close, a 0.1% move, the previous volume); when timeframe boundaries passed
since `prepare` (5m series: predictd's start-up takes a while), the
candles in between are inserted by the same statement, so the window has
no gap and the series still gets one NOTIFY and one new prediction.

Environment: PREDICTD_DATABASE_URL and PREDICTD_REDIS_URL (loopback).
Needs Debian's python3-psycopg2; Redis is spoken directly (RESP over a
socket), so no Python Redis client is needed. Every loop is bounded by the
timeout.
"""
import argparse
import json
import os
import select
import socket
import sys
import time
from datetime import datetime, timezone
from urllib.parse import urlparse

import psycopg2

TF_SECONDS = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "4h": 14400, "1d": 86400}
CHANNEL = "predictd:predictions"


def last_closed_open(tf, now):
    """Open time (epoch s) of the last candle of tf closed at now."""
    s = TF_SECONDS[tf]
    return (int(now) // s) * s - s


# ---------------------------------------------------------------------------
# A minimal RESP client (enough for SUBSCRIBE, EXISTS and pipelining).
class Resp:
    def __init__(self, url):
        u = urlparse(url)
        if u.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise SystemExit("burst: Redis must be on loopback, not %s" % u.hostname)
        self.sock = socket.create_connection((u.hostname, u.port or 6379), timeout=10)
        self.buf = b""
        db = (u.path or "/0").lstrip("/") or "0"
        if db != "0":
            self.call("SELECT", db)

    def send(self, *cmds):
        out = []
        for args in cmds:
            out.append(b"*%d\r\n" % len(args))
            for a in args:
                a = a if isinstance(a, bytes) else str(a).encode()
                out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))

    def _fill(self):
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("redis closed the connection")
        self.buf += chunk

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read(self):
        line = self._line()
        t, rest = line[:1], line[1:]
        if t in (b"+", b"-"):
            if t == b"-":
                raise RuntimeError(rest.decode())
            return rest
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self._fill()
            val, self.buf = self.buf[:n], self.buf[n + 2:]
            return val
        if t == b"*":
            return [self.read() for _ in range(int(rest))]
        raise RuntimeError("unexpected RESP %r" % line)

    def call(self, *args):
        self.send(args)
        return self.read()

    def take(self):
        """The next whole reply already buffered, or None (no I/O)."""
        v, end = parse(self.buf, 0)
        if end is None:
            return None
        self.buf = self.buf[end:]
        return v


def parse(b, i):
    """(value, end) of the RESP reply at b[i:], or (None, None) if incomplete."""
    j = b.find(b"\r\n", i)
    if j < 0:
        return None, None
    t, rest = b[i:i + 1], b[i + 1:j]
    if t in (b"+", b"-"):
        return rest, j + 2
    if t == b":":
        return int(rest), j + 2
    if t == b"$":
        n = int(rest)
        if n < 0:
            return None, j + 2
        if len(b) < j + 2 + n + 2:
            return None, None
        return b[j + 2:j + 2 + n], j + 4 + n
    if t == b"*":
        out, k = [], j + 2
        for _ in range(int(rest)):
            v, k = parse(b, k)
            if k is None:
                return None, None
            out.append(v)
        return out, k
    raise RuntimeError("unexpected RESP %r" % b[i:j])


def read_symbols(path):
    with open(path) as f:
        return [s.strip() for s in f.read().replace(",", "\n").split() if s.strip()]


def cmd_prepare(a, db):
    now = time.time()
    syms = read_symbols(a.symbols_file)
    tfs = a.timeframes.split(",")
    cur = db.cursor()
    total = 0
    for tf in tfs:
        cut = last_closed_open(tf, now)
        cur.execute(
            "DELETE FROM candles WHERE timeframe = %s AND symbol = ANY(%s) AND open_time >= to_timestamp(%s)",
            (tf, syms, cut))
        total += cur.rowcount
    db.commit()
    print("burst_prepare series=%d deleted=%d" % (len(syms) * len(tfs), total))
    return 0


def cmd_fire(a, db):
    syms = read_symbols(a.symbols_file)
    tfs = a.timeframes.split(",")
    cur = db.cursor()
    # only series predictd predicted at start-up (it recorded them): a
    # series it cannot predict (too few or unusable candles) would never
    # arrive and say nothing about the burst
    cur.execute("SELECT DISTINCT symbol, timeframe FROM predictions")
    known = set(cur.fetchall())
    db.rollback()
    every = [(s, tf) for s in syms for tf in tfs]
    usable = [k for k in every if k in known]
    series = usable[: a.count]
    skipped = sum(1 for k in every[: every.index(series[-1]) + 1] if k not in known) if series else 0
    if len(series) < a.count:
        raise SystemExit("burst: only %d predictable series of %d" % (len(series), len(every)))
    redis_url = os.environ["PREDICTD_REDIS_URL"]
    sub = Resp(redis_url)
    sub.call("SUBSCRIBE", CHANNEL)  # the subscription confirmation
    sub.sock.setblocking(False)
    poll = Resp(redis_url)

    now = time.time()
    target = {tf: last_closed_open(tf, now) for tf in tfs}
    want = {(s, tf): target[tf] for s, tf in series}
    keys = {(s, tf): "predictd:pred:%s:%s:v%d:-:%d" % (s, tf, a.version, target[tf])
            for s, tf in series}

    values = ",".join(cur.mogrify("(%s,%s,to_timestamp(%s),%s)",
                                  (s, tf, target[tf], "%d seconds" % TF_SECONDS[tf])).decode()
                      for s, tf in series)
    t_begin = time.monotonic()
    # the next closed candle of each series; when minutes passed since
    # `prepare` (5m), the candles in between too, so the window has no gap
    cur.execute(
        "INSERT INTO candles (symbol, timeframe, open_time, open, high, low, close, volume) "
        "SELECT v.symbol, v.tf, g.t, c.close, c.close * 1.002, c.close * 0.999, c.close * 1.001, c.volume "
        "FROM (VALUES " + values + ") AS v(symbol, tf, t, step) "
        "CROSS JOIN LATERAL (SELECT open_time, close, volume FROM candles "
        "  WHERE symbol = v.symbol AND timeframe = v.tf AND open_time < v.t "
        "  ORDER BY open_time DESC LIMIT 1) c "
        "CROSS JOIN LATERAL generate_series(c.open_time + v.step::interval, v.t, v.step::interval) AS g(t)")
    inserted = cur.rowcount
    t_insert = time.monotonic()
    db.commit()
    t0 = time.monotonic()  # the NOTIFYs are delivered at the commit

    ts_values = ",".join(cur.mogrify("(%s,to_timestamp(%s))", (tf, target[tf])).decode() for tf in tfs)
    count_sql = ("SELECT count(*) FROM predictions p JOIN (VALUES " + ts_values +
                 ") AS v(tf, t) ON p.timeframe = v.tf AND p.candle_time = v.t")
    n = len(series)
    published = set()
    pending_keys = dict(keys)
    t_pub = t_rec = t_cache = None
    last = {"rec": None, "cache": None, "pub": None}  # when each count last grew
    recorded = 0
    deadline = t0 + a.timeout
    next_poll = t0
    while time.monotonic() < deadline and (t_pub is None or t_rec is None or t_cache is None):
        seen = [t for t in last.values() if t is not None]
        if seen and time.monotonic() - max(seen) > a.stall:
            break  # nothing new for a while: the missing ones are not coming
        r, _, _ = select.select([sub.sock], [], [], 0.002)
        if r:
            try:
                while True:
                    sub._fill()
            except (BlockingIOError, InterruptedError):
                pass
            arrived = time.monotonic()
            while True:
                msg = sub.take()
                if msg is None:
                    break  # nothing, or a partial reply: the rest comes later
                if not isinstance(msg, list) or len(msg) != 3 or msg[0] != b"message":
                    continue
                try:
                    d = json.loads(msg[2])["data"]
                    ct = int(datetime.strptime(d["candle_time"], "%Y-%m-%dT%H:%M:%SZ")
                             .replace(tzinfo=timezone.utc).timestamp())
                    k = (d["symbol"], d["timeframe"])
                except (ValueError, KeyError, TypeError):
                    continue
                if want.get(k) == ct and k not in published:
                    published.add(k)
                    last["pub"] = arrived
            if t_pub is None and len(published) == n:
                t_pub = arrived
        now_m = time.monotonic()
        if now_m >= next_poll:
            next_poll = now_m + 0.025  # the count is a query: not too often
            if t_rec is None:
                cur.execute(count_sql)
                got = cur.fetchone()[0]
                db.rollback()
                if got > recorded:
                    last["rec"] = time.monotonic()
                recorded = got
                if recorded >= n:
                    t_rec = time.monotonic()
            if t_cache is None and pending_keys:
                items = list(pending_keys.items())
                poll.send(*[("EXISTS", k) for _, k in items])
                for sk, _k in items:
                    if poll.read() == 1:
                        del pending_keys[sk]
                        last["cache"] = time.monotonic()
                if not pending_keys:
                    t_cache = time.monotonic()
    ok = t_pub is not None and t_rec is not None and t_cache is not None

    def fmt(t, what):
        if t is not None:
            return "%.3f" % (t - t0)
        # the time the last one arrived, and that not all did
        return "timeout(last_at_%.3f)" % (last[what] - t0) if last[what] else "timeout"

    done = [t for t in (t_pub, t_rec, t_cache) if t is not None]
    print("burst series=%d skipped_unpredictable=%d candles=%d insert_s=%.3f commit_s=%.3f recorded_s=%s cached_s=%s published_s=%s "
          "all_s=%s recorded=%d cached=%d published=%d" % (
              n, skipped, inserted, t_insert - t_begin, t0 - t_insert, fmt(t_rec, "rec"), fmt(t_cache, "cache"),
              fmt(t_pub, "pub"), "%.3f" % (max(done) - t0) if ok else "timeout", recorded, n - len(pending_keys), len(published)))
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["prepare", "fire"])
    ap.add_argument("--symbols-file", required=True)
    ap.add_argument("--timeframes", default="5m,15m,1h,4h")
    ap.add_argument("--count", type=int, default=0)
    ap.add_argument("--version", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--stall", type=float, default=10.0,
                    help="give up after this many seconds without progress")
    a = ap.parse_args()
    url = os.environ.get("PREDICTD_DATABASE_URL")
    if not url:
        raise SystemExit("burst: PREDICTD_DATABASE_URL is not set")
    for tf in a.timeframes.split(","):
        if tf not in TF_SECONDS:
            raise SystemExit("burst: unknown timeframe %s" % tf)
    db = psycopg2.connect(url)
    try:
        return cmd_prepare(a, db) if a.action == "prepare" else cmd_fire(a, db)
    finally:
        db.close()


if __name__ == "__main__":
    sys.exit(main())
