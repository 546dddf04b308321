#!/usr/bin/python3
"""Soak: predictd serve under a mixed load for SOAK_SECONDS (default 600),
with PostgreSQL restarted at one third and Redis at two thirds.

Load (loopback only, every loop bounded by the deadline):
  - 4 threads of single predictions, lists (symbols=) and summaries;
  - 1 thread opening a Server-Sent Events stream, reading for a moment and
    leaving, over and over;
  - 1 thread publishing a new model version every 20 s (a swap);
  - the inference loop working on a candle inserted every 5 s.
Every 10 s it samples the server's RSS, open file descriptors and threads
(/proc). A request fails when it gets no answer or a 5xx; failures inside an
outage window (from a restart's stop until 15 s after its start) are counted
apart. It prints one line per sample and a summary:

  soak: 600 s, 123456 requests, 0 failed outside outages (17 inside),
        RSS 14.2 -> 14.9 MB, fds 31 -> 31, threads 12 -> 12

Usage: bench/soak.py [--seconds N] (PREDICTD_BIN, default build/predictd).
It starts its own PostgreSQL and Redis (server/services.sh) in a temporary
directory and removes them at the end.
"""
import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("PREDICTD_BIN", os.path.join(ROOT, "build", "predictd"))
SYMBOLS = ["SOAKAUSDT", "SOAKBUSDT", "SOAKCUSDT", "SOAKDUSDT"]
TFS = ["15m", "1h", "4h", "1d"]
OUTAGE_TAIL_S = 15


def sh(*args, env=None, check=True, timeout=600):
    p = subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        sys.exit(f"soak: {' '.join(args)} exited {p.returncode}: {p.stderr[-2000:]}")
    return p


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Counters:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = self.failed = self.failed_outage = 0
        self.outages = []  # [start, end] windows (end None while open)

    def in_outage(self, t):
        return any(a <= t and (b is None or t <= b + OUTAGE_TAIL_S) for a, b in self.outages)

    def note(self, ok):
        with self.lock:
            self.requests += 1
            if not ok:
                if self.in_outage(time.time()):
                    self.failed_outage += 1
                else:
                    self.failed += 1


def get(base, path, timeout=10):
    try:
        with urllib.request.urlopen(base + path, timeout=timeout) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def ok_status(status):
    return status is not None and status < 500


def request_load(base, c, deadline, k):
    paths = [f"/api/predictions/{s}?timeframe={tf}" for s in SYMBOLS for tf in TFS]
    paths += [f"/api/predictions?timeframe={tf}&symbols={','.join(SYMBOLS)}" for tf in TFS]
    paths += [f"/api/predictions/{s}/summary" for s in SYMBOLS]
    paths += ["/api/predictions/NOSUCHUSDT?timeframe=1h", "/health/ready"]
    i = k
    while time.time() < deadline:
        c.note(ok_status(get(base, paths[i % len(paths)])))
        i += 1


def stream_load(port, c, deadline):
    while time.time() < deadline:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /api/predictions/events HTTP/1.1\r\nHost: x\r\n\r\n")
            head = s.recv(4096)
            c.note(head.startswith(b"HTTP/1.1 200"))
            time.sleep(0.5)
            s.close()
        except OSError:
            c.note(False)
            time.sleep(0.2)


def swap_load(models, deadline):
    src = os.path.join(models, SYMBOLS[0], "1h")
    n = 1
    while time.time() < deadline:
        time.sleep(20)
        versions = sorted(int(v) for v in os.listdir(src) if v.isdigit())
        if not versions:
            continue
        tmp = os.path.join(src, ".soak")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(os.path.join(src, str(versions[0])), tmp)
        os.rename(tmp, os.path.join(src, str(versions[-1] + 1)))
        n += 1


def candle_load(db, deadline):
    t = int(time.time()) // 3600 * 3600
    while time.time() < deadline:
        time.sleep(5)
        sql = ("INSERT INTO candles (symbol, timeframe, open_time, open, high, low, close, volume) "
               f"SELECT '{SYMBOLS[1]}', '1h', to_timestamp({t} - 3600), open, high, low, close, "
               f"volume FROM candles WHERE symbol = '{SYMBOLS[1]}' AND timeframe = '1h' "
               f"AND open_time < to_timestamp({t} - 3600) ORDER BY open_time DESC LIMIT 1 "
               "ON CONFLICT (symbol, timeframe, open_time) DO UPDATE SET volume = excluded.volume + 1")
        subprocess.run(["psql", db.split("?")[0], "-qtAX", "-c", sql], capture_output=True,
                       timeout=30)


def sample(pid):
    rss = fds = threads = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("Threads:"):
                    threads = int(line.split()[1])
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        pass
    return rss, fds, threads


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=int, default=int(os.environ.get("SOAK_SECONDS", 600)))
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="predictd-soak-")
    os.chmod(tmp, 0o755)
    svc_dir = os.path.join(tmp, "svc")
    os.mkdir(svc_dir)
    services = os.path.join(ROOT, "server", "services.sh")
    proc = None
    try:
        sh(services, "start", svc_dir, "--fast")
        env = dict(os.environ)
        for line in open(os.path.join(svc_dir, "env")):
            k, v = line.replace("export ", "").strip().split("=", 1)
            env[k] = v.strip("'\"")
        models = os.path.join(tmp, "models")
        env.update(PREDICTD_MODELS_DIR=models, PREDICTD_LOG_FORMAT="json",
                   PREDICTD_LOG_LEVEL="warn", PREDICTD_RELOAD_INTERVAL="2")
        sh(BIN, "migrate", "--migrations-dir", os.path.join(ROOT, "db"), env=env)
        sh(BIN, "seed", "--symbols", ",".join(SYMBOLS), "--timeframes", ",".join(TFS),
           "--count", "1500", env=env)
        for tf in TFS:
            sh(BIN, "train", "--all", "--timeframe", tf, "--seed", "1", "--force", env=env,
               check=False)
        port = free_port()
        env["PREDICTD_LISTEN"] = f"127.0.0.1:{port}"
        log = open(os.path.join(tmp, "serve.log"), "w")
        proc = subprocess.Popen([BIN, "serve"], env=env, stdout=log, stderr=log)
        base = f"http://127.0.0.1:{port}"
        for _ in range(300):
            if get(base, "/health/live") == 200:
                break
            time.sleep(0.1)
        else:
            sys.exit("soak: serve did not come up")
        start = time.time()
        deadline = start + a.seconds
        c = Counters()
        threads = [threading.Thread(target=request_load, args=(base, c, deadline, k), daemon=True)
                   for k in range(4)]
        threads.append(threading.Thread(target=stream_load, args=(port, c, deadline), daemon=True))
        threads.append(threading.Thread(target=swap_load, args=(models, deadline), daemon=True))
        threads.append(threading.Thread(target=candle_load,
                                        args=(env["PREDICTD_DATABASE_URL"], deadline), daemon=True))
        for t in threads:
            t.start()
        samples = []
        restarts = [(start + a.seconds / 3, "pg"), (start + 2 * a.seconds / 3, "redis")]
        next_sample = start
        while time.time() < deadline:
            now = time.time()
            if restarts and now >= restarts[0][0]:
                _, what = restarts.pop(0)
                with c.lock:
                    c.outages.append([time.time(), None])
                sh(services, f"{what}-stop", svc_dir)
                time.sleep(5)
                sh(services, f"{what}-start", svc_dir)
                with c.lock:
                    c.outages[-1][1] = time.time()
                print(f"  {now - start:6.0f} s  {what} restarted", flush=True)
            if now >= next_sample:
                rss, fds, nthreads = sample(proc.pid)
                samples.append((rss, fds, nthreads))
                print(f"  {now - start:6.0f} s  RSS {rss / 1024:.1f} MB  fds {fds}  threads "
                      f"{nthreads}  requests {c.requests}  failed {c.failed} "
                      f"(in outages {c.failed_outage})", flush=True)
                next_sample += 10
            time.sleep(0.2)
        for t in threads:
            t.join(timeout=30)
        alive = proc.poll() is None
        first, last = samples[0], samples[-1]
        peak = max(s[0] for s in samples)
        print(f"soak: {a.seconds} s, {c.requests} requests, {c.failed} failed outside outages "
              f"({c.failed_outage} inside), RSS {first[0] / 1024:.1f} -> {last[0] / 1024:.1f} MB "
              f"(peak {peak / 1024:.1f}), fds {first[1]} -> {last[1]}, threads {first[2]} -> "
              f"{last[2]}, serve {'running' if alive else 'EXITED'}", flush=True)
        return 0 if alive and c.failed == 0 else 1
    finally:
        if proc and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
        subprocess.run([services, "stop", svc_dir], capture_output=True, timeout=120)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
