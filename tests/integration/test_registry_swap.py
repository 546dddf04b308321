"""The model repository under load: publishing 100 versions in a
row while requests keep coming fails no request and leaves memory flat; a
broken version never serves, the serving one stays, and the reason shows in
the admin API and the metrics; pin and labels work over HTTP."""
import os
import shutil
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (Service, check, check_eq, need_services, prepare_database,  # noqa: E402
                     run_tests, test, train)

MODELS = tempfile.mkdtemp(prefix="predictd-models-")
KEY = "s" * 40
SERIES = os.path.join(MODELS, "BTCUSDT", "15m")
state = {}


def service():
    if "svc" not in state:
        need_services()
        prepare_database(symbols=("BTCUSDT",), timeframes=("15m",), count=2000)
        train(MODELS, "BTCUSDT", "15m")
        state["svc"] = Service(MODELS, env={"PREDICTD_API_KEY": KEY,
                                            "PREDICTD_RELOAD_INTERVAL": "0"})
    return state["svc"]


def admin(method, path, body=None):
    return service().request(method, path, body=body, headers={"X-API-Key": KEY})


def versions():
    return sorted(int(d) for d in os.listdir(SERIES) if d.isdigit())


def publish_copy(src_version, mutate=None):
    """Publishes a copy of a version the way a user would: a hidden temporary
    directory, then one rename. mutate(dir) may break it first."""
    new = max(versions()) + 1
    tmp = os.path.join(SERIES, f".tmp-{new}")
    shutil.copytree(os.path.join(SERIES, str(src_version)), tmp)
    if mutate:
        mutate(tmp)
    os.rename(tmp, os.path.join(SERIES, str(new)))
    return new


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@test
def hundred_swaps_under_load_fail_nothing_and_keep_memory_flat():
    svc = service()
    stop = threading.Event()
    results = {"ok": 0, "failed": [], "versions": set()}
    lock = threading.Lock()

    per_thread = [0, 0, 0]

    def load(k):
        # every way a request can end other than 200 is a failure, a reset
        # or a timeout included; the thread keeps going until stopped
        while not stop.is_set():
            try:
                status, _, body = svc.get("/api/predictions/BTCUSDT?timeframe=15m",
                                          validate=False)
            except Exception as e:  # noqa: BLE001 - recorded as a failure
                status, body = "exception", repr(e)
            with lock:
                if status == 200:
                    results["ok"] += 1
                    per_thread[k] += 1
                    results["versions"].add(body["prediction"]["model"]["version"])
                else:
                    results["failed"].append((status, str(body)[:300]))

    threads = [threading.Thread(target=load, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    try:
        rss = []
        # 10 warm-up swaps (first-use allocations of every worker thread),
        # then the baseline, then 100 more
        for i in range(110):
            v = publish_copy(1)
            status, _, body = admin("POST", "/admin/models/reload",
                                    {"symbol": "BTCUSDT", "timeframe": "15m"})
            check_eq(status, 200, body)
            serving = [m for m in body["models"] if m["symbol"] == "BTCUSDT"][0]
            check_eq(serving["serving_version"], v)
            if i in (9, 109):
                rss.append(rss_kb(svc.proc.pid))
    finally:
        alive = [t.is_alive() for t in threads]
        stop.set()
        for t in threads:
            t.join(timeout=60)
    check_eq(results["failed"], [])
    check_eq(alive, [True] * 3, "a load thread ended before the swaps did")
    check(all(n > 0 for n in per_thread), f"requests per thread: {per_thread}")
    check(len(results["versions"]) > 5, "requests saw versions change under them")
    grow = (rss[1] - rss[0]) / rss[0]
    print(f"   RSS before 100 swaps {rss[0]} kB, after {rss[1]} kB ({grow:+.1%}); "
          f"{results['ok']} requests ({per_thread} per thread), 0 failed")
    # Leaks are LeakSanitizer's job (make sanitize: the harness fails a
    # server whose log reports one). The RSS bound only catches gross growth,
    # with room for allocator noise (malloc arenas of 4 workers moved RSS by
    # 2-3% between runs, close to the 5% bound this test had).
    if os.environ.get("PREDICTD_SANITIZER"):
        print("   (RSS bound not asserted under sanitizers: their allocator keeps quarantines)")
    else:
        check(grow < 0.25, f"RSS grew {grow:.1%} over 100 swaps")
    # only what serves stays loaded: the rest is retired
    status, _, body = admin("GET", "/admin/models")
    states = [v["state"] for v in body["models"][0]["versions"]]
    check_eq(states.count("available"), 1, states)
    # the listing stays bounded: only the 16 most recent retired versions
    check_eq(states.count("retired"), 16, states)


def flip_byte(d):
    p = os.path.join(d, "model.pb")
    data = bytearray(open(p, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(p, "wb").write(bytes(data))


def truncate_with_manifest(d):
    import hashlib
    p = os.path.join(d, "model.pb")
    data = open(p, "rb").read()[:40]
    open(p, "wb").write(data)
    lines = []
    for name in ("model.pb", "scaler.pb"):
        h = hashlib.sha256(open(os.path.join(d, name), "rb").read()).hexdigest()
        lines.append(f"{h}  {name}\n")
    open(os.path.join(d, "MANIFEST"), "w").write("".join(lines))


@test
def broken_versions_never_serve_and_say_why():
    service()
    _, _, body = admin("GET", "/admin/models")
    before = body["models"][0]["serving_version"]
    for mutate, word in ((flip_byte, "manifest"), (truncate_with_manifest, "parse")):
        bad = publish_copy(1, mutate)
        status, _, body = admin("POST", "/admin/models/reload",
                                {"symbol": "BTCUSDT", "timeframe": "15m"})
        check_eq(status, 200, body)
        series = body["models"][0]
        check_eq(series["serving_version"], before, "the serving version stays")
        failed = [v for v in series["versions"] if v["version"] == bad][0]
        check_eq(failed["state"], "failed")
        check(failed["reason"], "a reason is given")
        # the public listing does not leak the detail, only that it failed
        _, _, pub = service().get("/api/models/BTCUSDT/15m")
        pv = [v for v in pub["model"]["versions"] if v["version"] == bad][0]
        check_eq(pv["state"], "failed")
    status, _, body = service().get("/api/predictions/BTCUSDT?timeframe=15m")
    check_eq(status, 200, body)
    check_eq(body["prediction"]["model"]["version"], before)
    _, _, metrics = service().get("/metrics")
    text = metrics.decode()
    check('predictd_model_loads_total{result="failed",reason="manifest"}' in text, text[:2000])
    import re
    m = re.search(r'predictd_model_loads_total\{result="failed",reason="manifest"\} (\d+)', text)
    check(m and int(m.group(1)) >= 1, "the manifest failure is counted")
    check(service().proc.poll() is None, "the process is up")


@test
def pin_and_labels_over_http():
    service()
    status, _, body = admin("POST", "/admin/models/BTCUSDT/15m/pin", {"version": 1})
    check_eq(status, 200, body)
    check_eq(body["model"]["pinned_version"], 1)
    check_eq(body["model"]["serving_version"], 1)
    status, _, body = service().get("/api/predictions/BTCUSDT?timeframe=15m")
    check_eq(body["prediction"]["model"]["version"], 1)
    # pinning a version that failed verification is refused
    _, _, listing = admin("GET", "/admin/models")
    failed = [v["version"] for v in listing["models"][0]["versions"] if v["state"] == "failed"]
    if not failed:  # this test alone (TEST_ONLY): publish a broken version itself
        failed = [publish_copy(1, flip_byte)]
        status, _, body = admin("POST", "/admin/models/reload",
                                {"symbol": "BTCUSDT", "timeframe": "15m"})
        check_eq(status, 200, body)
    status, _, body = admin("POST", "/admin/models/BTCUSDT/15m/pin", {"version": failed[0]})
    check(status in (404, 422), body)
    status, _, body = admin("DELETE", "/admin/models/BTCUSDT/15m/pin")
    check_eq(status, 200, body)
    check_eq(body["model"]["pinned_version"], None)
    latest_ok = max(v["version"] for v in body["model"]["versions"]
                    if v["state"] != "failed")
    # a canary label for all traffic, then requested explicitly
    status, _, body = admin("POST", "/admin/models/BTCUSDT/15m/labels",
                            {"label": "stable", "version": latest_ok})
    check_eq(status, 200, body)
    status, _, body = admin("POST", "/admin/models/BTCUSDT/15m/labels",
                            {"label": "canary", "version": 1, "canary_share": 100})
    check_eq(status, 200, body)
    status, _, body = service().get("/api/predictions/BTCUSDT?timeframe=15m")
    check_eq(status, 200, body)
    check_eq(body["prediction"]["model"]["version"], 1)
    check_eq(body["prediction"]["model"]["label"], "canary")
    status, _, body = service().get("/api/predictions/BTCUSDT?timeframe=15m&label=stable")
    check_eq(body["prediction"]["model"]["version"], latest_ok)
    check_eq(body["prediction"]["model"]["label"], "stable")
    status, _, body = admin("POST", "/admin/models/BTCUSDT/15m/labels",
                            {"label": "purple", "version": 1})
    check_eq(status, 400, body)
    status, _, body = admin("POST", "/admin/models/BTCUSDT/15m/pin", {"version": "x"})
    check_eq(status, 400, body)


if __name__ == "__main__":
    sys.exit(run_tests())
