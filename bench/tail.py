#!/usr/bin/python3
"""tail.py: where the single cached route's p99 at 64 connections comes from.

  tail.py snap PID METRICS_URL OUT.json    before and after a wrk run
  tail.py diff BEFORE.json AFTER.json       prints what changed in between
  tail.py accepts STRACE_LOG                connections accepted per thread

A snapshot holds, per thread of PID, /proc/PID/task/TID/schedstat (ns on a
CPU, ns runnable but waiting for a CPU, time slices) and its name, plus the
in-process latency histogram of the single prediction route from /metrics
(predictd_http_request_duration_seconds: from dispatch to the response
queued). The difference says how long the request handling itself took
(its p50/p99 bucket) against how long the server's threads sat runnable
without a CPU (run-queue wait per slice): on a shared 2-core machine the
second is what wrk's p99 sees.
"""
import json
import os
import re
import sys
import urllib.request

ROUTE = "prediction"


def snap(pid, url, out):
    threads = {}
    for tid in os.listdir("/proc/%s/task" % pid):
        try:
            with open("/proc/%s/task/%s/schedstat" % (pid, tid)) as f:
                run, wait, slices = (int(x) for x in f.read().split())
            with open("/proc/%s/task/%s/comm" % (pid, tid)) as f:
                name = f.read().strip()
        except OSError:
            continue
        threads[tid] = {"name": name, "run": run, "wait": wait, "slices": slices}
    hist = {}
    try:
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        for m in re.finditer(r'^predictd_http_request_duration_seconds_bucket\{route="([^"]+)",le="([^"]+)"\} (\d+)',
                             text, re.M):
            hist.setdefault(m.group(1), {})[m.group(2)] = int(m.group(3))
    except OSError as e:
        print("tail: /metrics: %s" % e)
    with open(out, "w") as f:
        json.dump({"threads": threads, "hist": hist}, f)


def quantile(cum, q):
    """Upper bound of the bucket holding quantile q of a cumulative histogram."""
    bounds = sorted(cum, key=lambda k: float("inf") if k == "+Inf" else float(k))
    total = cum["+Inf"]
    if total <= 0:
        return None
    for b in bounds:
        if cum[b] >= q * total:
            return b
    return "+Inf"


def diff(before, after):
    a = json.load(open(before))
    b = json.load(open(after))
    rows = []
    for tid, t in b["threads"].items():
        o = a["threads"].get(tid, {"run": 0, "wait": 0, "slices": 0})
        d = {k: t[k] - o[k] for k in ("run", "wait", "slices")}
        if d["run"] > 0:
            rows.append((tid, t["name"], d))
    rows.sort(key=lambda r: -r[2]["run"])
    run = sum(r[2]["run"] for r in rows)
    wait = sum(r[2]["wait"] for r in rows)
    slices = sum(r[2]["slices"] for r in rows)
    print("   threads of predictd during the run (busiest first): on CPU / waiting for a CPU / slices")
    for tid, name, d in rows[:4]:
        print("     %-16s %7.0f ms on CPU, %7.0f ms runnable but waiting, %6d slices, %.2f ms wait per slice"
              % (name, d["run"] / 1e6, d["wait"] / 1e6, d["slices"], d["wait"] / 1e6 / max(d["slices"], 1)))
    print("   all threads: %.0f ms on CPU, %.0f ms waiting for a CPU (%.0f%% of their runnable time), "
          "%.2f ms mean wait per slice" % (run / 1e6, wait / 1e6, 100.0 * wait / max(run + wait, 1),
                                            wait / 1e6 / max(slices, 1)))
    ha = a["hist"].get(ROUTE, {})
    hb = b["hist"].get(ROUTE, {})
    if hb:
        d = {k: v - ha.get(k, 0) for k, v in hb.items()}
        n = d.get("+Inf", 0)
        def fmt(x):
            return "n/a" if x is None else ("> 10 s" if x == "+Inf" else "<= %g us" % (float(x) * 1e6))
        print("   in-process time of the %d requests (dispatch to response queued): p50 %s, p99 %s, "
              "p99.9 %s" % (n, fmt(quantile(d, 0.5)), fmt(quantile(d, 0.99)), fmt(quantile(d, 0.999))))


def accepts(log):
    per = {}
    for line in open(log):
        m = re.match(r"^(\d+)\s+(accept4?\(|<\.\.\. accept4? resumed>).*=\s+(\d+)\s*$", line)
        if m:
            per[m.group(1)] = per.get(m.group(1), 0) + 1
    counts = sorted(per.values(), reverse=True)
    print("   connections accepted per thread (strace during a fresh 64-connection wrk): %s" %
          (", ".join(str(c) for c in counts) or "none seen"))


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "snap" and len(sys.argv) == 5:
        snap(sys.argv[2], sys.argv[3], sys.argv[4])
    elif len(sys.argv) == 4 and sys.argv[1] == "diff":
        diff(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 3 and sys.argv[1] == "accepts":
        accepts(sys.argv[2])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
