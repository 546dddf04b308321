#!/usr/bin/env python3
"""The compose stack as shipped, on a Docker-compatible engine.

`make compose-test` (not part of .ci/run: it takes minutes and needs the
engine, ../shared/tools/containers/engine or PREDICTD_ENGINE). Builds the
image, starts docker/compose.yaml from empty volumes and checks:
  - the image alone: its HEALTHCHECK follows PREDICTD_LISTEN; a key file
    root:10001 0440 (a Kubernetes Secret with fsGroup) is accepted, a
    world-readable or an unreadable one stops the start with the reason;
  - every long-running service stays up 20 s without a restart, the one-shot
    jobs (migrate, init) exit 0;
  - /health/ready answers 200 through the gateway within 120 s;
  - each replica serves predictions (asked directly, inside its container),
    and the gateway does;
  - / serves the dashboard (web/index.html, byte for byte);
  - /admin/ is closed at the gateway by default (403), and open once the
    gateway is recreated with PREDICTD_GATEWAY_ADMIN_FROM;
  - a pin through the gateway succeeds and every replica then serves the
    pinned version (the time it takes is printed);
  - recreating the replicas leaves the gateway answering, without a restart
    of the gateway, and the pin survives (it lives in the models volume).
Prints the timings and the image size; ends with "N passed, N failed".
PREDICTD_COMPOSE_KEEP=1 leaves the stack running.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENGINE = os.environ.get("PREDICTD_ENGINE") or os.path.join(ROOT, "..", "shared", "tools",
                                                           "containers", "engine")
COMPOSE_FILE = os.path.join(ROOT, "docker", "compose.yaml")
PROJECT = "predictd"
IMAGE = "predictd:0.1.0"
LONG_RUNNING = ["postgres", "redis", "predictd", "gateway"]
ONE_SHOT = ["migrate", "init"]

passed = failed = 0
timings = {}


def check(cond, what, detail=""):
    global passed, failed
    if cond:
        passed += 1
        print(f"  ok    {what}", flush=True)
    else:
        failed += 1
        print(f"  FAIL  {what}{': ' + str(detail) if detail else ''}", flush=True)
    return cond


def sh(args, env=None, timeout=900, check_rc=True):
    r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    if check_rc and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {r.returncode}:\n{r.stdout[-3000:]}\n"
                           f"{r.stderr[-3000:]}")
    return r


def engine_env():
    r = sh([ENGINE, "up"], timeout=1800)
    env = dict(os.environ)
    for line in r.stdout.splitlines():
        if line.startswith("export "):
            for kv in line[len("export "):].split():
                k, _, v = kv.partition("=")
                env[k] = v.strip("'\"")
    return env


ENV = None


def compose(*args, extra_env=None, timeout=900, check_rc=True):
    env = dict(ENV)
    env.update(extra_env or {})
    return sh([ENGINE, "compose", "-f", COMPOSE_FILE, *args], env=env, timeout=timeout,
              check_rc=check_rc)


def podman(*args, timeout=120, check_rc=True):
    return sh(["podman", *args], env=ENV, timeout=timeout, check_rc=check_rc)


def containers(service):
    """[(name, id)] of the project's containers of one service, sorted by name."""
    out = podman("ps", "-a", "--filter", f"label=com.docker.compose.project={PROJECT}",
                 "--filter", f"label=com.docker.compose.service={service}",
                 "--format", "{{.Names}} {{.ID}}").stdout
    return sorted(tuple(l.split()) for l in out.splitlines() if l.strip())


def state(cid):
    out = podman("inspect", cid, "--format", "{{json .State}}|{{.RestartCount}}").stdout.strip()
    st, _, restarts = out.rpartition("|")
    return json.loads(st), int(restarts or 0)


def http(url, method="GET", body=None, headers=None, timeout=5):
    """(status, headers, body bytes); status 0 when the connection failed."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()
    except (urllib.error.URLError, OSError):
        return 0, {}, b""


def in_replica(cid, path, method="GET", headers=(), port=8080):
    """(status, JSON or None) of a request made inside a replica's container."""
    args = ["exec", cid, "curl", "-sS", "-o", "/dev/stdout", "-w", "\n%{http_code}", "-X", method]
    for h in headers:
        args += ["-H", h]
    r = podman(*args, f"http://127.0.0.1:{port}{path}", check_rc=False)
    body, _, code = r.stdout.rpartition("\n")
    try:
        return int(code), json.loads(body)
    except ValueError:
        return int(code) if code.isdigit() else 0, None


def wait_for(fn, limit, step=0.5):
    """Seconds until fn() is true, or None after limit seconds."""
    t0 = time.monotonic()
    while True:
        if fn():
            return time.monotonic() - t0
        if time.monotonic() - t0 > limit:
            return None
        time.sleep(step)


def served_version(cid, symbol="BTCUSDT", tf="15m"):
    code, j = in_replica(cid, f"/api/predictions/{symbol}?timeframe={tf}")
    if code != 200 or not j:
        return None
    return j.get("prediction", {}).get("model", {}).get("version")


def main():
    global ENV
    if not os.access(ENGINE, os.X_OK):
        print(f"compose-test: no engine at {ENGINE} (set PREDICTD_ENGINE)")
        print("0 passed, 0 failed, 1 skipped")
        return 0
    t = time.monotonic()
    ENV = engine_env()
    timings["engine up"] = time.monotonic() - t
    commit = sh(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], check_rc=False).stdout.strip()
    build_env = {"PREDICTD_COMMIT": commit or "unknown",
                 "PREDICTD_CREATED": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

    print("== from empty volumes", flush=True)
    compose("down", "-v", "--remove-orphans", check_rc=False)
    t = time.monotonic()
    compose("build", extra_env=build_env, timeout=1800)
    timings["image build"] = time.monotonic() - t
    size = int(podman("image", "inspect", IMAGE, "--format", "{{.Size}}").stdout.strip())
    timings["image size MB"] = size / 1e6
    user = podman("image", "inspect", IMAGE, "--format", "{{.Config.User}}").stdout.strip()
    check(user == "10001:10001", "the image runs as 10001:10001", user)

    try:
        image_checks()
        run_checks()
    finally:
        if os.environ.get("PREDICTD_COMPOSE_KEEP") != "1":
            compose("down", "-v", "--remove-orphans", check_rc=False, timeout=300)
    print("\ntimings (seconds, except the size):")
    for k, v in timings.items():
        print(f"  {k:<44} {v:8.1f}")
    print(f"\n{passed} passed, {failed} failed")
    return 1 if failed else 0


def image_checks():
    """The image alone: the health check follows PREDICTD_LISTEN, and a key
    file laid out as Kubernetes does with fsGroup (root:10001 0440) is
    accepted while a world-readable or an unreadable one is refused."""
    print("== the image", flush=True)
    tmp = tempfile.mkdtemp(prefix="predictd-compose-test-")
    os.chmod(tmp, 0o755)
    names = []

    def run(name, key_mode=None, key_owner=(0, 10001), env=()):
        args = ["run", "-d", "--name", name, "-e", "PREDICTD_LISTEN=0.0.0.0:9090"]
        for e in env:
            args += ["-e", e]
        if key_mode is not None:
            path = os.path.join(tmp, name)
            with open(path, "w") as f:
                f.write("k" * 40 + "\n")
            os.chown(path, *key_owner)
            os.chmod(path, key_mode)
            args += ["-v", f"{path}:/run/secrets/predictd/key:ro",
                     "-e", "PREDICTD_API_KEY_FILE=/run/secrets/predictd/key"]
        podman("rm", "-f", name, check_rc=False)
        podman(*args, IMAGE, "serve")
        names.append(name)
        return name

    def exited(name, limit=15):
        return wait_for(lambda: not state(name)[0].get("Running"), limit) is not None

    try:
        c = run("predictd-test-hc", key_mode=0o440)
        live = wait_for(lambda: podman("exec", c, "/app/bin/healthcheck", check_rc=False)
                        .returncode == 0, 20)
        check(live is not None, "HEALTHCHECK probes the port PREDICTD_LISTEN names (9090)")
        r = podman("exec", "-e", "PREDICTD_LISTEN=0.0.0.0:8080", c, "/app/bin/healthcheck",
                   check_rc=False)
        check(r.returncode != 0, "... and fails where nothing listens (8080)")
        code, body = in_replica(c, "/admin/models", headers=["X-API-Key: " + "k" * 40],
                                port=9090)
        check(code == 200, "a root:10001 0440 key file (a Secret with fsGroup) is accepted", code)
        for name, mode, owner, needle in (
                ("predictd-test-key644", 0o644, (0, 10001), "accessible by others"),
                ("predictd-test-key400", 0o400, (0, 0), "not readable by this process")):
            run(name, key_mode=mode, key_owner=owner)
            gone = exited(name)
            logs = podman("logs", name, check_rc=False)
            text = logs.stdout + logs.stderr
            check(gone and state(name)[0].get("ExitCode") != 0 and needle in text,
                  f"a key file {mode:o} owned {owner[0]}:{owner[1]} stops the start ({needle})",
                  text[-300:])
    finally:
        for n in names:
            podman("rm", "-f", n, check_rc=False)
        shutil.rmtree(tmp, ignore_errors=True)


def run_checks():
    t_up = time.monotonic()
    compose("up", "-d", timeout=900)
    timings["compose up -d returned"] = time.monotonic() - t_up
    port = compose("port", "gateway", "8080").stdout.strip().rsplit(":", 1)[-1]
    base = f"http://127.0.0.1:{port}"

    ready = wait_for(lambda: http(base + "/health/ready")[0] == 200, 120 - (time.monotonic() - t_up))
    if ready is not None:
        timings["up -> /health/ready 200 via gateway"] = time.monotonic() - t_up
    if not check(ready is not None, "/health/ready answers 200 through the gateway within 120 s"):
        for s in LONG_RUNNING + ONE_SHOT:
            print(compose("logs", "--tail", "20", s, check_rc=False).stdout)
        return

    # every service up 20 s without a restart; the one-shot jobs exited 0
    first = {}
    for s in LONG_RUNNING:
        for name, cid in containers(s):
            first[name] = (cid, state(cid)[0].get("StartedAt"))
    replicas = containers("predictd")
    check(len(replicas) == 2, "deploy.replicas: 2 replicas", replicas)
    time.sleep(20)
    for s in LONG_RUNNING:
        cs = containers(s)
        ok = bool(cs)
        why = []
        for name, cid in cs:
            st, restarts = state(cid)
            if not st.get("Running") or restarts or first.get(name, (0, 0))[1] != st.get("StartedAt"):
                ok = False
                why.append(f"{name}: running={st.get('Running')} restarts={restarts}")
        check(ok, f"{s}: up 20 s without a restart", "; ".join(why))
    for s in ONE_SHOT:
        cs = containers(s)
        codes = [state(cid)[0].get("ExitCode") for _, cid in cs]
        running = [state(cid)[0].get("Running") for _, cid in cs]
        check(cs and codes == [0] * len(cs) and not any(running), f"{s}: ran once and exited 0",
              codes)

    # predictions: each replica, and through the gateway
    for name, cid in replicas:
        code, j = in_replica(cid, "/api/predictions/BTCUSDT?timeframe=15m")
        check(code == 200 and j and j["prediction"]["direction"] in ("LONG", "SHORT", "NO_TRADE"),
              f"{name} serves predictions", code)
    codes = [http(base + "/api/predictions?timeframe=1h")[0] for _ in range(20)]
    check(codes == [200] * 20, "20 predictions through the gateway answer 200", codes)

    # the dashboard
    code, hdr, body = http(base + "/")
    with open(os.path.join(ROOT, "web", "index.html"), "rb") as f:
        page = f.read()
    check(code == 200 and body == page, "/ serves the dashboard (web/index.html)", code)

    code, _, _ = http(base + "/api/predictions/NOPE1?timeframe=15m")
    check(code == 404, "an unknown symbol through the gateway is 404", code)

    # admin: closed at the gateway by default
    code, _, body = http(base + "/admin/models")
    check(code == 403 and b"closed at the gateway" in body, "/admin/ is closed at the gateway by default",
          code)

    key = podman("exec", replicas[0][1], "cat", "/var/lib/predictd/predictd_key").stdout.strip()
    check(len(key) >= 16, "init wrote an admin key into the keys volume")
    gw_before = containers("gateway")
    compose("up", "-d", "--no-deps", "gateway", extra_env={"PREDICTD_GATEWAY_ADMIN_FROM": "0.0.0.0/0"})
    wait_for(lambda: http(base + "/health/live")[0] == 200, 30)
    code, _, _ = http(base + "/admin/models", headers={"X-API-Key": key})
    check(code == 200, "/admin/ through the gateway once PREDICTD_GATEWAY_ADMIN_FROM allows it", code)
    code, _, _ = http(base + "/admin/models", headers={"X-API-Key": "x" * 32})
    check(code == 401, "... and a wrong key is still refused by the replica", code)
    gw = containers("gateway")
    check(gw and gw != gw_before, "the gateway was recreated with the new setting", gw)

    # a second version of BTCUSDT/15m, then a pin of the first through the gateway
    t = time.monotonic()
    r = podman("exec", replicas[0][1], "/app/bin/predictd", "train", "--symbol", "BTCUSDT",
               "--timeframe", "15m", "--seed", "2", "--force", timeout=600, check_rc=False)
    timings["train one more version (in a replica)"] = time.monotonic() - t
    check(r.returncode == 0 and "published BTCUSDT/15m v2" in r.stdout,
          "a second version is trained into the shared models volume", r.stderr[-500:])
    t = wait_for(lambda: all(served_version(cid) == 2 for _, cid in replicas), 30)
    check(t is not None, "every replica serves the new version v2 (repository scan)")
    if t is not None:
        timings["v2 published -> served by both replicas"] = t
    code, _, body = http(base + "/admin/models/BTCUSDT/15m/pin", method="POST",
                         body={"version": 1}, headers={"X-API-Key": key})
    t_pin = time.monotonic()
    check(code == 200, "a pin through the gateway succeeds", (code, body[:200]))
    t = wait_for(lambda: all(served_version(cid) == 1 for _, cid in replicas), 30, step=0.1)
    check(t is not None, "every replica serves the pinned version v1 (within 30 s)")
    if t is not None:
        timings["pin -> served by both replicas"] = time.monotonic() - t_pin
        print(f"  note  the pin reached every replica after {time.monotonic() - t_pin:.1f} s "
              f"({'within' if time.monotonic() - t_pin <= 1 else 'NOT within'} a second; without "
              f"NOTIFY the other replicas find it at their next scan, PREDICTD_RELOAD_INTERVAL=5)")

    # recreate the replicas: the gateway keeps answering, without a restart
    gw_id = containers("gateway")[0][1]
    gw_started = state(gw_id)[0].get("StartedAt")
    # requests through the gateway while the replicas are replaced (docker-
    # compose stops both, then starts both: not a rolling update, so a gap
    # is expected; its size is printed, not asserted)
    seen = {"ok": 0, "failed": 0}
    stop = threading.Event()

    def load():
        while not stop.is_set():
            code = http(base + "/api/predictions/BTCUSDT?timeframe=15m", timeout=3)[0]
            seen["ok" if code == 200 else "failed"] += 1
            time.sleep(0.05)

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    t = time.monotonic()
    compose("up", "-d", "--no-deps", "--force-recreate", "predictd", timeout=300)
    timings["recreate replicas (compose returned)"] = time.monotonic() - t
    new = containers("predictd")
    check(len(new) == 2 and {c for _, c in new}.isdisjoint({c for _, c in replicas}),
          "the replicas were recreated", new)
    back = wait_for(lambda: http(base + "/health/ready")[0] == 200 and
                    http(base + "/api/predictions/BTCUSDT?timeframe=15m")[0] == 200, 60)
    if back is not None:
        timings["recreated -> gateway answers again"] = time.monotonic() - t
    time.sleep(1)
    stop.set()
    loader.join(10)
    print(f"  note  during the recreation: {seen['ok']} requests answered 200, "
          f"{seen['failed']} did not (both replicas were down together)")
    check(back is not None, "the gateway answers after the replicas are recreated")
    codes = [http(base + "/api/predictions?timeframe=15m")[0] for _ in range(20)]
    check(codes == [200] * 20, "20 requests through the gateway after the recreation answer 200",
          codes)
    st, restarts = state(gw_id)
    check(st.get("Running") and restarts == 0 and st.get("StartedAt") == gw_started,
          "the gateway was not restarted", (restarts, st.get("StartedAt"), gw_started))
    t = wait_for(lambda: all(served_version(cid) == 1 for _, cid in new), 30)
    check(t is not None, "the recreated replicas still serve the pinned version v1")


if __name__ == "__main__":
    sys.exit(main())
