"""Replicas that cooperate: three `predictd serve` processes on one
PostgreSQL and one Redis, behind Debian's nginx on loopback (an upstream of
the three ports, retrying idempotent requests on the next one), sharing one
models directory.

- a new candle: every replica's cache serves it, the ledger gets exactly one
  row and Redis exactly one PUBLISH (the leader's);
- kill -9 one replica under load: no request fails through the gateway;
- kill -9 the leader: another replica takes the loop over, and what is
  recorded next still has exactly one ledger row per prediction;
- a pin, a version published by a training job, and a reload through one
  replica after a version was copied in by hand are served by all three
  long before the periodic scan (PREDICTD_RELOAD_INTERVAL is an hour here:
  only the NOTIFY can have told them);
- a training job started through one replica reads the same through every
  replica and is cancelled through another than the one running it;
- restarting a replica leaves another replica's running job alone; a job
  whose replica is killed is marked failed by the others; a replica that
  stops (SIGTERM) hands its running job back to the queue for another.

Latencies are printed, never asserted (deadlines are generous; speed lives
in benchmarks).
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from harness import (REDIS_URL, Service, Skip, check, check_eq, free_port,  # noqa: E402
                     need_services, prepare_database, psql, run_tests, test, train)

SYM, TF, TFS = "BTCUSDT", "1h", 3600
OTHER = "ETHUSDT"  # trained by jobs
LAG = 6            # candles held back, inserted by the tests one at a time
KEY = "r" * 40
MODELS = tempfile.mkdtemp(prefix="predictd-replicas-models-")
DEADLINE = 20
ENV = {"PREDICTD_API_KEY": KEY, "PREDICTD_RELOAD_INTERVAL": "3600", "PREDICTD_THREADS": "4",
       "PREDICTD_LOG_LEVEL": "debug",
       # a schedule that never comes due here, so /health/status names its leader
       "PREDICTD_RETRAIN_INTERVAL": "100000000"}
state = {"held": [], "inserted": [], "replicas": [None, None, None], "ports": []}


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def note(name, seconds):
    print(f"     {name}: {seconds * 1000:.0f} ms", flush=True)


def wait_for(cond, what, timeout=DEADLINE, step=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# ---------------------------------------------------------------------------
# The gateway.

class Gateway:
    """Debian's nginx in the foreground on a free loopback port, with its own
    prefix (config, logs, temp files) in a temporary directory."""

    def __init__(self, ports):
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.path.exists(nginx):
            raise Skip("nginx is not installed (nginx-light, make deps)")
        self.dir = tempfile.mkdtemp(prefix="predictd-nginx-")
        os.chmod(self.dir, 0o755)
        for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            os.mkdir(os.path.join(self.dir, d))
            os.chmod(os.path.join(self.dir, d), 0o777)  # workers may run as nobody
        self.port = free_port()
        servers = "\n".join(f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=5s;"
                            for p in ports)
        conf = f"""
worker_processes 1;
daemon off;
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {self.dir}/access.log;
    client_body_temp_path {self.dir}/body;
    proxy_temp_path {self.dir}/proxy;
    fastcgi_temp_path {self.dir}/fastcgi;
    uwsgi_temp_path {self.dir}/uwsgi;
    scgi_temp_path {self.dir}/scgi;
    upstream predictd {{
{servers}
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{self.port};
        location / {{
            proxy_pass http://predictd;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            # idempotent requests go to the next replica when one fails;
            # POST and the other non-idempotent methods never do
            # (no "non_idempotent" here)
            proxy_next_upstream error timeout http_502 http_504;
            proxy_next_upstream_tries 3;
            proxy_connect_timeout 1s;
            proxy_read_timeout 30s;
        }}
    }}
}}
"""
        self.conf = os.path.join(self.dir, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        self.log = open(os.path.join(self.dir, "stderr.log"), "w")
        self.proc = subprocess.Popen([nginx, "-p", self.dir, "-c", self.conf,
                                      "-e", os.path.join(self.dir, "error.log")],
                                     stdout=self.log, stderr=self.log)
        self.base = f"http://127.0.0.1:{self.port}"
        wait_for(self._up, "nginx to listen", timeout=10)

    def _up(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"nginx exited {self.proc.returncode}: {self.errors()}")
        try:
            with urllib.request.urlopen(self.base + "/health/live", timeout=2) as r:
                return r.status == 200
        except (OSError, urllib.error.HTTPError):
            return False

    def errors(self):
        try:
            with open(os.path.join(self.dir, "error.log")) as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def get(self, path, timeout=10):
        """(status, body) for a GET through the gateway; status 0 on a
        transport error (the gateway itself failed us)."""
        try:
            with urllib.request.urlopen(self.base + path, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
        except OSError as e:
            return 0, str(e).encode()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------------------
# The cluster.

def start_replica(i):
    r = Service(MODELS, env=ENV, port=state["ports"][i])
    state["replicas"][i] = r
    return r


def cluster():
    if "gw" not in state:
        need_services()
        prepare_database(symbols=(SYM, OTHER), timeframes=(TF,), count=2500)
        rows = psql(f"SELECT extract(epoch FROM open_time)::bigint FROM candles WHERE "
                    f"symbol = '{SYM}' AND timeframe = '{TF}' ORDER BY open_time DESC LIMIT {LAG}")
        state["held"] = sorted(int(x) for x in rows.split())
        psql(f"CREATE TABLE held AS SELECT * FROM candles WHERE symbol = '{SYM}' AND "
             f"timeframe = '{TF}' AND open_time >= to_timestamp({state['held'][0]})")
        psql(f"DELETE FROM candles WHERE symbol = '{SYM}' AND timeframe = '{TF}' AND "
             f"open_time >= to_timestamp({state['held'][0]})")
        train(MODELS, SYM, TF)
        train(MODELS, OTHER, TF)
        state["ports"] = [free_port() for _ in range(3)]
        for i in range(3):
            start_replica(i)
        state["gw"] = Gateway(state["ports"])
        wait_for(lambda: len(leaders()) == 1, "one leader among the three")
    return state["gw"]


def replicas():
    return [r for r in state["replicas"] if r and r.proc.poll() is None]


def role(r, job="inference_loop"):
    try:
        status, _, body = r.get("/health/status", timeout=5)
    except OSError:
        return None
    if status not in (200, 503) or not isinstance(body, dict):
        return None
    for j in body.get("components", {}).get("jobs", []):
        if j["name"] == job:
            return j.get("role")
    return None


def leaders():
    return [r for r in replicas() if role(r) == "leader"]


def admin(r, method, path, body=None):
    return r.request(method, path, body=body, headers={"X-API-Key": KEY})


def insert_held():
    """Inserts the next held-back candle; returns its open time."""
    t = state["held"].pop(0)
    state["inserted"].append(t)
    psql(f"INSERT INTO candles SELECT * FROM held WHERE open_time = to_timestamp({t})")
    return t


def ledger_rows(t):
    return int(psql(f"SELECT count(*) FROM predictions WHERE symbol = '{SYM}' AND "
                    f"timeframe = '{TF}' AND candle_time = to_timestamp({t})"))


class Subscriber:
    """redis-cli SUBSCRIBE in the background; collects the messages."""

    def __init__(self, channel):
        self.proc = subprocess.Popen(["redis-cli", "-u", REDIS_URL, "subscribe", channel], stdout=subprocess.PIPE, text=True)
        self.lines = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        wait_for(lambda: len(self.lines) >= 3, "the Redis subscription", timeout=10)

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.strip())

    def messages(self):
        out = []
        for s in list(self.lines):
            if s.startswith("{"):
                try:
                    out.append(json.loads(s))
                except ValueError:
                    pass
        return out

    def close(self):
        self.proc.kill()
        self.proc.wait()


def published_for(sub, t):
    n = 0
    for m in sub.messages():
        d = m.get("data", m)
        if d.get("symbol") == SYM and d.get("timeframe") == TF and d.get("candle_time") == iso(t):
            n += 1
    return n


def candle_served(r, t):
    try:
        status, _, body = r.get(f"/api/predictions/{SYM}?timeframe={TF}", timeout=5)
    except OSError:
        return False
    return status == 200 and body["prediction"]["candle_time"] == iso(t)


# ---------------------------------------------------------------------------
# Tests.

@test
def status_names_one_leader_and_followers():
    cluster()
    roles = sorted(role(r) for r in replicas())
    check_eq(roles, ["follower", "follower", "leader"])
    for r in replicas():
        status, _, body = r.get("/health/status")
        check(status in (200, 503), body)
        jobs = {j["name"]: j for j in body["components"]["jobs"]}
        check_eq(jobs["model_scanner"]["role"], None)  # every replica scans
        check_eq(jobs["training"]["role"], jobs["inference_loop"]["role"])  # one leader for both


@test
def new_candle_one_ledger_row_one_publish_every_cache():
    cluster()
    sub = Subscriber("predictd:predictions")
    try:
        t0 = time.time()
        t = insert_held()
        for r in replicas():  # followers refresh their own caches too
            wait_for(lambda: candle_served(r, t), f"replica {r.port} to serve the new candle")
        note("new candle served by all three", time.time() - t0)
        wait_for(lambda: ledger_rows(t) >= 1, "the ledger row")
        wait_for(lambda: published_for(sub, t) >= 1, "the PUBLISH")
        time.sleep(1.5)  # anything a second replica would have written comes by now
        check_eq(ledger_rows(t), 1)
        check_eq(published_for(sub, t), 1)
    finally:
        sub.close()


@test
def kill9_one_replica_under_load_no_failed_request():
    gw = cluster()
    leader = leaders()[0]
    victim_i = next(i for i, r in enumerate(state["replicas"]) if r is not leader)
    victim = state["replicas"][victim_i]
    results = []
    stop = threading.Event()

    def load():
        while not stop.is_set():
            results.append(gw.get(f"/api/predictions/{SYM}?timeframe={TF}")[0])

    threads = [threading.Thread(target=load) for _ in range(4)]
    for th in threads:
        th.start()
    time.sleep(1.0)
    before = len(results)
    victim.proc.kill()  # SIGKILL: no drain, connections reset mid-flight
    victim.proc.wait()
    time.sleep(2.0)
    stop.set()
    for th in threads:
        th.join()
    failed = [s for s in results if s != 200]
    retried = [ln for ln in gw.errors().splitlines() if f":{state['ports'][victim_i]}" in ln]
    print(f"     {len(results)} requests ({len(results) - before} after the kill), "
          f"{len(failed)} not 200, {len(retried)} upstream errors retried by the gateway",
          flush=True)
    check(len(results) - before > 20, "load went on after the kill")
    check(retried, "the kill never hit a request (nothing for the gateway to retry)")
    check_eq(failed, [], gw.errors())
    Service.running.remove(victim)
    victim.log.close()
    start_replica(victim_i)  # back on its port for the next tests


@test
def kill9_leader_standby_takes_over_one_row_per_prediction():
    cluster()
    old = leaders()
    check_eq(len(old), 1)
    old = old[0]
    old_i = state["replicas"].index(old)
    sub = Subscriber("predictd:predictions")
    try:
        t0 = time.time()
        old.proc.kill()
        old.proc.wait()
        t = insert_held()  # while no replica leads: the next leader catches it up
        new = wait_for(lambda: leaders(), "a standby to take the leader lock", timeout=30)
        note("leader takeover after kill -9", time.time() - t0)
        check_eq(len(new), 1)
        check(new[0] is not old)
        wait_for(lambda: ledger_rows(t) >= 1, "the new leader's ledger row")
        wait_for(lambda: published_for(sub, t) >= 1, "the new leader's PUBLISH")
        Service.running.remove(old)
        old.log.close()
        start_replica(old_i)  # comes back as a follower
        wait_for(lambda: role(state["replicas"][old_i]) == "follower", "the restarted follower")
        t2 = insert_held()
        wait_for(lambda: ledger_rows(t2) >= 1, "a ledger row with the old leader back")
        time.sleep(1.5)
        check_eq(ledger_rows(t), 1)
        check_eq(ledger_rows(t2), 1)
        check_eq(published_for(sub, t), 1)
        check_eq(published_for(sub, t2), 1)
        check_eq(len(leaders()), 1)
        # every candle inserted so far: one row each, none missing
        for c in state["inserted"]:
            check_eq(ledger_rows(c), 1, f"candle {iso(c)}")
    finally:
        sub.close()


def serving_version(r, symbol):
    status, _, body = r.get(f"/api/models/{symbol}/{TF}", timeout=5)
    if status != 200:
        return None
    return body["model"]["serving_version"]


@test
def pin_is_served_by_every_replica_at_once():
    cluster()
    rs = replicas()
    status, _, body = admin(rs[0], "POST", "/admin/training",
                            {"symbols": SYM, "timeframe": TF, "promote_if_better": False,
                             "seed": 5, "force": True})  # the walk need not beat its baselines
    check_eq(status, 202, body)
    job = wait_final(rs[0], body["job"]["id"])
    check_eq(job["state"], "succeeded", job)
    v2 = job["version"]
    t0 = time.time()
    wait_for(lambda: all(serving_version(r, SYM) == v2 for r in replicas()),
             f"every replica to serve the published v{v2}", timeout=10)
    note(f"published v{v2} served by all three after the job ended", time.time() - t0)
    # pin v1 through one replica: the others follow
    t0 = time.time()
    status, _, body = admin(rs[1], "POST", f"/admin/models/{SYM}/{TF}/pin", {"version": 1})
    check_eq(status, 200, body)
    wait_for(lambda: all(serving_version(r, SYM) == 1 for r in replicas()),
             "every replica to serve the pinned v1", timeout=10)
    note("pin served by all three", time.time() - t0)
    status, _, body = admin(rs[2], "DELETE", f"/admin/models/{SYM}/{TF}/pin")
    check(status in (200, 204), body)
    wait_for(lambda: all(serving_version(r, SYM) == v2 for r in replicas()),
             "every replica to serve v2 again after the unpin", timeout=10)


@test
def reload_through_one_replica_reaches_all():
    cluster()
    before = {serving_version(r, OTHER) for r in replicas()}
    check_eq(len(before), 1)
    old = before.pop()
    train(MODELS, OTHER, TF, "--seed", "9")  # by hand: no server hears of it
    time.sleep(0.5)
    check(all(serving_version(r, OTHER) == old for r in replicas()),
          "a replica found the hand-published version on its own (the scan is hourly)")
    rs = replicas()
    status, _, body = admin(rs[0], "POST", "/admin/models/reload", {})
    check_eq(status, 200, body)
    t0 = time.time()
    wait_for(lambda: all(serving_version(r, OTHER) == old + 1 for r in replicas()),
             f"every replica to serve v{old + 1} after one reload", timeout=10)
    note("one reload reached all three", time.time() - t0)


def wait_final(r, job_id, timeout=300):
    def final():
        status, _, body = admin(r, "GET", f"/admin/training/{job_id}")
        check_eq(status, 200, body)
        return body["job"] if body["job"]["state"] not in ("queued", "running") else None
    return wait_for(final, f"job {job_id} to finish", timeout=timeout, step=0.2)


LONG_JOB = {"symbols": OTHER, "timeframe": TF, "kind": "mlp", "hidden": [256, 256],
            "epochs": 100000, "patience": 100000, "promote_if_better": False}


def start_long_job(r):
    status, _, body = admin(r, "POST", "/admin/training", LONG_JOB)
    check_eq(status, 202, body)
    job_id = body["job"]["id"]

    def running():
        row = psql(f"SELECT state, coalesce(worker, '') FROM training_jobs WHERE id = {job_id}")
        st, worker = row.split("|")
        return worker if st == "running" else None
    worker = wait_for(running, "the job to be claimed", timeout=30)
    pid = int(worker.rsplit(":", 1)[1])
    runner = next(x for x in replicas() if x.proc.pid == pid)
    return job_id, runner


def comparable(job):
    j = dict(job)
    for k in ("progress", "stage"):  # the running worker writes them every second
        j.pop(k, None)
    return j


@test
def job_reads_the_same_everywhere_and_cancels_through_any():
    cluster()
    rs = replicas()
    job_id, runner = start_long_job(rs[0])
    views = []
    for r in replicas():
        status, _, body = admin(r, "GET", f"/admin/training/{job_id}")
        check_eq(status, 200, body)
        views.append(comparable(body["job"]))
    check(all(v == views[0] for v in views), views)
    check_eq(views[0]["state"], "running")
    lists = []
    for r in replicas():
        status, _, body = admin(r, "GET", "/admin/training")
        check_eq(status, 200, body)
        lists.append([comparable(j) for j in body["jobs"]])
    check(all(x == lists[0] for x in lists), "listings differ between replicas")
    # the same series again is busy through any replica
    status, _, body = admin(rs[2], "POST", "/admin/training", LONG_JOB)
    check_eq(status, 409, body)
    other = next(r for r in replicas() if r is not runner)
    t0 = time.time()
    status, _, body = admin(other, "DELETE", f"/admin/training/{job_id}")
    check_eq(status, 200, body)
    job = wait_final(other, job_id, timeout=60)
    note("cancel through another replica took effect", time.time() - t0)
    check_eq(job["state"], "canceled", job)
    status, _, body = admin(runner, "DELETE", f"/admin/training/{job_id}")
    check_eq(status, 409, body)


@test
def restarting_a_replica_leaves_a_running_job_alone():
    cluster()
    job_id, runner = start_long_job(replicas()[0])
    i = next(k for k, r in enumerate(state["replicas"]) if r and r is not runner and
             r.proc.poll() is None)
    bystander = state["replicas"][i]
    check_eq(bystander.stop(), 0)
    start_replica(i)
    time.sleep(6)  # longer than a sweep period: the restarted replica has swept by now
    status, _, body = admin(state["replicas"][i], "GET", f"/admin/training/{job_id}")
    check_eq(status, 200, body)
    check_eq(body["job"]["state"], "running", body["job"])
    check(body["job"]["error"] is None, body["job"])
    # its own replica killed, the others mark it failed once its heartbeat is stale
    ri = state["replicas"].index(runner)
    t0 = time.time()
    runner.proc.kill()
    runner.proc.wait()
    Service.running.remove(runner)
    runner.log.close()

    def failed():
        status, _, body = admin(state["replicas"][i], "GET", f"/admin/training/{job_id}")
        return body["job"] if body["job"]["state"] == "failed" else None
    job = wait_for(failed, "the orphaned job to be marked failed", timeout=60, step=0.5)
    note("orphaned job marked failed", time.time() - t0)
    check("interrupted" in job["error"], job)
    start_replica(ri)


@test
def stopping_a_replica_hands_its_running_job_to_another():
    cluster()
    job_id, runner = start_long_job(replicas()[0])
    ri = state["replicas"].index(runner)
    check_eq(runner.stop(), 0)  # SIGTERM: a rolling restart

    def reclaimed():
        row = psql(f"SELECT state, coalesce(worker, '') FROM training_jobs WHERE id = {job_id}")
        st, worker = row.split("|")
        return worker if st == "running" and worker.rsplit(":", 1)[1] != str(runner.proc.pid) \
            else None
    worker = wait_for(reclaimed, "another replica to claim the handed-back job", timeout=30)
    pid = int(worker.rsplit(":", 1)[1])
    check(any(r.proc.pid == pid for r in replicas()), worker)
    start_replica(ri)
    status, _, body = admin(state["replicas"][ri], "DELETE", f"/admin/training/{job_id}")
    check_eq(status, 200, body)
    job = wait_final(state["replicas"][ri], job_id, timeout=60)
    check_eq(job["state"], "canceled", job)


@test
def gateway_serves_after_all():
    gw = cluster()
    status, body = gw.get(f"/api/predictions/{SYM}?timeframe={TF}")
    check_eq(status, 200, body)
    check_eq(len(replicas()), 3)


if __name__ == "__main__":
    try:
        rc = run_tests()
    finally:
        if "gw" in state:
            state["gw"].stop()
        shutil.rmtree(MODELS, ignore_errors=True)
    sys.exit(rc)
