"""The operations surface: health and readiness, Prometheus
metrics checked by promtool, admin and read keys, key files and keygen,
rate limiting, URL/body/symbol limits, CORS, request ids and logs, and the
lifecycle: SIGTERM drains the requests already accepted and exits 0, a
second SIGTERM exits at once, SIGHUP reloads models.

Every test runs the real binary against the real PostgreSQL and Redis of
tests/run; JSON responses are checked against openapi.yaml by the harness."""
import http.client
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (Service, Skip, check, check_eq, cli, need_services,  # noqa: E402
                     prepare_database, run_tests, services, test, train)

MODELS = tempfile.mkdtemp(prefix="predictd-ops-models-")
TMP = tempfile.mkdtemp(prefix="predictd-ops-")
state = {}

ADMIN_KEY = "adm1n-" + "k" * 26 + "-SECRET"
READ_KEY = "r3ad-" + "q" * 20 + "-SECRET"


def setup():
    """Candles for two symbols, three trained series (once per file)."""
    if "ready" not in state:
        need_services()
        prepare_database(symbols=("BTCUSDT", "ETHUSDT"), timeframes=("15m", "1h"), count=2500)
        train(MODELS, "BTCUSDT", "15m")
        train(MODELS, "ETHUSDT", "15m")
        train(MODELS, "BTCUSDT", "1h")
        state["ready"] = True


def service():
    """A default service shared by the read-only tests."""
    setup()
    if "svc" not in state:
        state["svc"] = Service(MODELS)
    return state["svc"]


def models_copy(*series):
    """A private model repository with the given (symbol, tf) series of MODELS."""
    setup()
    d = tempfile.mkdtemp(prefix="models-", dir=TMP)
    for sym, tf in series:
        shutil.copytree(os.path.join(MODELS, sym, tf), os.path.join(d, sym, tf))
    return d


def key_file(content, mode):
    fd, path = tempfile.mkstemp(prefix="key-", dir=TMP)
    os.write(fd, content.encode())
    os.close(fd)
    os.chmod(path, mode)
    return path


def logs_of(svc):
    """The service's log so far (also after it stopped)."""
    return svc.logs()


def log_lines(svc):
    return [line for line in logs_of(svc).splitlines() if line.strip()]


def json_logs(svc):
    out = []
    for line in log_lines(svc):
        out.append(json.loads(line))  # every line must be one JSON object
    return out


def wait_for(cond, what, limit=30):
    """Polls cond() until true; the limit only bounds a hang, it asserts no speed."""
    deadline = time.time() + limit
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def metrics_text(svc, path="/metrics"):
    status, headers, body = svc.get(path)
    check_eq(status, 200)
    check(headers["Content-Type"].startswith("text/plain; version=0.0.4"), headers)
    return body.decode()


def metric_value(text, name, labels=""):
    """The value of one sample: name{labels} (labels in exposition order)."""
    series = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return None


def partial_request(port):
    """A connection holding one open request: headers promise a body that
    never comes. The drain waits for it (until its timeout)."""
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /admin/models/reload HTTP/1.1\r\nHost: x\r\n"
              b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
    return s


def wait_for_log(svc, needle, limit=30):
    wait_for(lambda: needle in logs_of(svc), f"log line {needle!r}", limit)


# ---------------------------------------------------------------------------
# Health.

@test
def live_ready_summary_and_status():
    svc = service()
    status, _, body = svc.get("/health/live")
    check_eq(status, 200)
    check_eq(body, {"status": "success", "live": True})
    status, _, body = svc.get("/health/ready")
    check_eq(status, 200, body)
    status, _, body = svc.get("/health")
    check_eq(status, 200)
    check_eq(body["ready"], True)
    check_eq(body["reason"], None)
    check_eq(body["models_serving"], 3)
    check_eq(body["models_failed"], 0)
    status, _, body = svc.get("/health/status")
    check_eq(status, 200, body)
    c = body["components"]
    check_eq(body["ready"], True)
    check_eq(c["database"]["state"], "up")
    check_eq(c["database"]["last_error"], None)
    check_eq(c["redis"]["state"], "up")
    check_eq(c["http"]["state"], "serving")
    series = {(s["symbol"], s["timeframe"]): s for s in c["registry"]["series"]}
    check_eq(sorted(series), [("BTCUSDT", "15m"), ("BTCUSDT", "1h"), ("ETHUSDT", "15m")])
    for s in series.values():
        check_eq(s["state"], "serving")
        check_eq(s["serving_version"], 1)
        check_eq(s["last_error"], None)
    jobs = {j["name"]: j for j in c["jobs"]}
    check({"model_scanner", "inference_loop", "training"} <= set(jobs), jobs)
    check_eq(jobs["model_scanner"]["state"], "running")
    check(jobs["model_scanner"]["runs"] >= 1, jobs)
    check_eq(jobs["training"]["state"], "idle")  # no job submitted, no schedule
    check_eq(jobs["training"]["last_error"], None)


@test
def zero_models_is_not_ready():
    setup()
    empty = tempfile.mkdtemp(prefix="models-empty-", dir=TMP)
    svc = Service(empty)
    status, _, body = svc.get("/health/live")
    check_eq(status, 200)
    status, _, body = svc.get("/health/ready")
    check_eq(status, 503)
    check_eq(body["error"]["code"], "not_ready")
    check("no model version is verified and serving" in body["error"]["message"], body)
    status, _, body = svc.get("/health")
    check_eq(status, 200)
    check_eq(body["ready"], False)
    check("no model" in body["reason"], body)
    status, _, body = svc.get("/api/predictions/BTCUSDT?timeframe=15m")
    check_eq(status, 404)
    check_eq(body["error"]["code"], "no_model")
    check_eq(svc.stop(), 0)


@test
def failed_version_is_visible_and_old_one_serves():
    d = models_copy(("BTCUSDT", "15m"))
    v1 = os.path.join(d, "BTCUSDT", "15m", "1")
    tmp = os.path.join(d, "BTCUSDT", "15m", ".v2")
    shutil.copytree(v1, tmp)
    with open(os.path.join(tmp, "MANIFEST"), "w") as f:
        f.write("0" * 64 + "  model.pb\n" + "0" * 64 + "  scaler.pb\n")
    os.rename(tmp, os.path.join(d, "BTCUSDT", "15m", "2"))
    svc = Service(d)
    status, _, body = svc.get("/health/status")
    check_eq(status, 200, body)
    (s,) = body["components"]["registry"]["series"]
    check_eq(s["serving_version"], 1)
    check_eq(s["failed_versions"], 1)
    check(s["last_error"], s)
    status, _, body = svc.get("/health/ready")
    check_eq(status, 200, body)
    text = metrics_text(svc)
    check_eq(metric_value(text, "predictd_model_loads_total", 'result="failed",reason="manifest"'), 1.0)
    check_eq(metric_value(text, "predictd_model_versions", 'state="failed"'), 1.0)
    check_eq(metric_value(text, "predictd_model_info",
                          'symbol="BTCUSDT",timeframe="15m",version="1",label="none",serving="true"'),
             1.0)
    check_eq(svc.stop(), 0)


@test
def redis_down_shows_in_status_and_stays_ready():
    svc = service()
    services("redis-stop")
    try:
        status, _, body = svc.get("/health/status")
        check_eq(status, 200)
        r = body["components"]["redis"]
        check_eq(r["state"], "down")
        check(r["last_error"], r)
        status, _, body = svc.get("/health/ready")
        check_eq(status, 200, body)  # Redis is a cache: never required
        status, _, body = svc.get("/api/predictions/BTCUSDT?timeframe=15m")
        check_eq(status, 200, body)
    finally:
        services("redis-start")


# ---------------------------------------------------------------------------
# Metrics.

@test
def promtool_accepts_metrics_and_labels_stay_bounded():
    if not shutil.which("promtool"):
        raise Skip("promtool is not installed (make deps installs Debian's prometheus)")
    svc = service()
    for path in ("/api/predictions/BTCUSDT?timeframe=15m", "/api/predictions/BTCUSDT?timeframe=15m",
                 "/api/predictions?timeframe=15m", "/api/predictions/BTCUSDT/summary",
                 "/api/predictions/ZZZUSDT?timeframe=15m", "/api/predictions/QQQQQQ?timeframe=1h",
                 "/api/predictions?timeframe=15m&symbols=BTCUSDT,NOPEUSDT",
                 "/api/predictions/btc?timeframe=15m", "/api/models"):
        svc.get(path)
    status, _, body = svc.get("/no/such/route", validate=False)
    check_eq(status, 404)
    check_eq(json.loads(body)["error"]["code"] if isinstance(body, bytes) else body["error"]["code"],
             "not_found")
    text = metrics_text(svc)
    p = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=60)
    check_eq(p.returncode, 0, p.stdout + p.stderr)
    check_eq((p.stdout + p.stderr).strip(), "", "promtool printed warnings")
    for unknown in ("ZZZUSDT", "QQQQQQ", "NOPEUSDT", "btc", "no/such"):
        check(unknown not in text, f"{unknown} made a series")
    families = ["predictd_http_requests_total", "predictd_http_request_duration_seconds",
                "predictd_inference_duration_seconds", "predictd_predictions_total",
                "predictd_cache_requests_total", "predictd_feature_staleness_seconds",
                "predictd_model_loads_total", "predictd_model_info", "predictd_db_errors_total",
                "predictd_redis_errors_total", "predictd_rate_limited_requests_total",
                "predictd_http_in_flight_requests", "predictd_uptime_seconds",
                "predictd_build_info", "predictd_training_jobs_finished_total"]
    for fam in families:
        check(f"# TYPE {fam} " in text, f"{fam} missing")
    check(metric_value(text, "predictd_http_requests_total", 'route="prediction",code="404"') >= 2)
    check(metric_value(text, "predictd_http_requests_total", 'route="other",code="404"') >= 1)
    check(metric_value(text, "predictd_inference_duration_seconds_count") >= 1)
    check(metric_value(text, "predictd_cache_requests_total",
                       'cache="prediction",layer="process",result="hit"') >= 1)
    stale = metric_value(text, "predictd_feature_staleness_seconds",
                         'symbol="BTCUSDT",timeframe="15m"')
    check(stale is not None and 0 <= stale <= 2 * 900, f"staleness {stale}")
    check(re.search(r'predictd_predictions_total\{symbol="BTCUSDT",timeframe="15m",'
                    r'version="\d+",direction="(LONG|SHORT|NO_TRADE)"\} \d+', text),
          "prediction counter")
    # the same exposition on /health/metrics
    other = metrics_text(svc, "/health/metrics")
    check_eq(sorted(re.findall(r"^# TYPE (\S+)", text, re.M)),
             sorted(re.findall(r"^# TYPE (\S+)", other, re.M)))


# ---------------------------------------------------------------------------
# Keys.

@test
def admin_routes_need_the_key_and_no_secret_is_logged():
    setup()
    path = key_file(ADMIN_KEY + "\n", 0o600)
    svc = Service(MODELS, env={"PREDICTD_API_KEY_FILE": path, "PREDICTD_ACCESS_LOG": "on",
                               "PREDICTD_LOG_LEVEL": "debug"})
    status, _, body = svc.get("/admin/models")
    check_eq(status, 401)
    check_eq(body["error"]["code"], "unauthorized")
    status, _, body = svc.get("/admin/models", headers={"X-API-Key": ADMIN_KEY + "x"})
    check_eq(status, 401)
    status, _, body = svc.get("/admin/models", headers={"X-API-Key": ADMIN_KEY[:-1]})
    check_eq(status, 401)
    check(ADMIN_KEY not in json.dumps(body), "key in an error body")
    status, _, body = svc.get("/admin/models", headers={"X-API-Key": ADMIN_KEY})
    check_eq(status, 200, body)
    status, _, body = svc.request("POST", "/admin/models/reload", body={},
                                  headers={"X-API-Key": ADMIN_KEY})
    check_eq(status, 200, body)
    check_eq(svc.stop(), 0)
    logs = logs_of(svc)
    check(ADMIN_KEY not in logs and ADMIN_KEY[:16] not in logs, "the admin key was logged")


@test
def admin_routes_disabled_without_a_key():
    svc = service()
    status, _, body = svc.get("/admin/models", headers={"X-API-Key": ADMIN_KEY})
    check_eq(status, 401)
    check("disabled" in body["error"]["message"], body)
    lines = [e for e in json_logs(svc) if e["module"] == "server" and
             "admin routes are disabled" in e["msg"]]
    check_eq(len(lines), 1)
    check_eq(lines[0]["level"], "warn")


@test
def world_readable_or_group_writable_key_file_is_refused():
    setup()
    for mode in (0o644, 0o604, 0o660, 0o620):
        path = key_file(ADMIN_KEY + "\n", mode)
        p = cli("serve", env={"PREDICTD_API_KEY_FILE": path, "PREDICTD_MODELS_DIR": MODELS,
                              "PREDICTD_LISTEN": "127.0.0.1:0"},
                check_rc=False, timeout=60)
        check(p.returncode != 0, f"mode {mode:o}: serve started")
        check(path in p.stderr and "chmod 600" in p.stderr, p.stderr)
        check(ADMIN_KEY not in p.stderr + p.stdout, "key printed")
    # a key too short, and a directory, are refused too
    for path, needle in ((key_file("short\n", 0o600), "16 to 4096"),
                         (tempfile.mkdtemp(dir=TMP), "not a regular file")):
        p = cli("serve", env={"PREDICTD_API_KEY_FILE": path, "PREDICTD_MODELS_DIR": MODELS,
                              "PREDICTD_LISTEN": "127.0.0.1:0"},
                check_rc=False, timeout=60)
        check(p.returncode != 0 and needle in p.stderr, p.stderr)
    # readable by the group, writable only by the owner: accepted (what a
    # Kubernetes Secret volume with fsGroup looks like: 0440)
    for mode in (0o640, 0o440):
        path = key_file(ADMIN_KEY + "\n", mode)
        svc = Service(MODELS, env={"PREDICTD_API_KEY_FILE": path})
        status, _, body = svc.get("/admin/models", headers={"X-API-Key": ADMIN_KEY})
        check_eq(status, 200, f"mode {mode:o}: {body}")
        check_eq(svc.stop(), 0)
    # the variable wins over the file (the insecure file is not even read)
    path = key_file("x" * 40, 0o644)
    svc = Service(MODELS, env={"PREDICTD_API_KEY_FILE": path, "PREDICTD_API_KEY": ADMIN_KEY})
    status, _, body = svc.get("/admin/models", headers={"X-API-Key": ADMIN_KEY})
    check_eq(status, 200, body)
    check_eq(svc.stop(), 0)
    check(ADMIN_KEY not in logs_of(svc))


@test
def keygen_writes_private_key_and_prints_only_when_asked():
    setup()
    path = os.path.join(tempfile.mkdtemp(dir=TMP), "key")
    p = cli("keygen", "--api-key-file", path)
    check_eq(p.stdout, "")
    check_eq(stat.S_IMODE(os.stat(path).st_mode), 0o600)
    key = open(path).read().strip()
    check(re.fullmatch(r"[0-9a-f]{64}", key), key)
    check(key not in p.stderr)
    p = cli("keygen", "--api-key-file", path, check_rc=False)
    check(p.returncode != 0 and "--force" in p.stderr, p.stderr)
    check_eq(open(path).read().strip(), key)
    p = cli("keygen", "--api-key-file", path, "--force", "--print")
    key2 = open(path).read().strip()
    check(key2 != key, "a new key")
    check_eq(p.stdout.strip(), key2)
    check_eq(stat.S_IMODE(os.stat(path).st_mode), 0o600)
    # --force also repairs a file whose mode is too open
    os.chmod(path, 0o644)
    cli("keygen", "--api-key-file", path, "--force")
    check_eq(stat.S_IMODE(os.stat(path).st_mode), 0o600)
    key3 = open(path).read().strip()
    svc = Service(MODELS, env={"PREDICTD_API_KEY_FILE": path})
    status, _, body = svc.get("/admin/models", headers={"X-API-Key": key3})
    check_eq(status, 200, body)
    check_eq(svc.stop(), 0)
    check(key3 not in logs_of(svc))


@test
def read_key_guards_prediction_routes_only():
    setup()
    svc = Service(MODELS, env={"PREDICTD_READ_KEY": READ_KEY, "PREDICTD_API_KEY": ADMIN_KEY})
    for path in ("/api/predictions/BTCUSDT?timeframe=15m", "/api/predictions?timeframe=15m",
                 "/api/models"):
        status, _, body = svc.get(path)
        check_eq(status, 401, path)
        check_eq(body["error"]["code"], "unauthorized")
        status, _, _ = svc.get(path, headers={"X-API-Key": "wrong-" + READ_KEY})
        check_eq(status, 401, path)
        status, _, body = svc.get(path, headers={"X-API-Key": READ_KEY})
        check_eq(status, 200, body)
        status, _, body = svc.get(path, headers={"X-API-Key": ADMIN_KEY})
        check_eq(status, 200, body)
    status, _, _ = svc.get("/admin/models", headers={"X-API-Key": READ_KEY})
    check_eq(status, 401)  # the read key is not an admin key
    for path in ("/health", "/health/ready", "/metrics"):
        status, _, _ = svc.get(path)
        check_eq(status, 200, path)
    check_eq(svc.stop(), 0)
    logs = logs_of(svc)
    check(READ_KEY not in logs and ADMIN_KEY not in logs, "a key was logged")


# ---------------------------------------------------------------------------
# Rate limiting, limits, CORS.

@test
def rate_limit_answers_429_with_retry_after():
    setup()
    svc = Service(MODELS, env={"PREDICTD_RATE_LIMIT": "1", "PREDICTD_RATE_BURST": "2"})
    # Requests until the first 429, however slow this machine is: a token
    # bucket of 1/s with a burst of 2 lets through at most 2 + 1 per second
    # elapsed (+1 for a token refilled at the edge), so a limit that never
    # applies fails, and no fixed request count has to beat the clock.
    statuses, limited = [], None
    t0 = time.monotonic()
    while limited is None and len(statuses) < 500:
        status, headers, body = svc.get("/api/models")
        statuses.append(status)
        if status == 429:
            limited = (headers, body)
    elapsed = time.monotonic() - t0
    check(limited is not None, f"never limited: {statuses}")
    check(statuses.count(200) <= 2 + int(elapsed) + 1,
          f"{statuses.count(200)} passed in {elapsed:.1f} s at 1/s, burst 2")
    headers, body = limited
    check_eq(body["error"]["code"], "rate_limited")
    check(int(headers["Retry-After"]) >= 1, headers)
    check(statuses[:2] == [200, 200], statuses)  # the burst passes
    # probes and scrapers are never limited
    for _ in range(5):
        check_eq(svc.get("/health/live")[0], 200)
        check_eq(svc.get("/health/ready")[0], 200)
    text = metrics_text(svc)
    check_eq(metric_value(text, "predictd_rate_limited_requests_total"), float(statuses.count(429)))
    check_eq(metric_value(text, "predictd_http_requests_total", 'route="models",code="429"'),
             float(statuses.count(429)))
    check_eq(svc.stop(), 0)


@test
def url_body_and_symbol_limits():
    svc = service()
    long_q = "&pad=" + "a" * 3000
    status, _, body = svc.get("/api/predictions?timeframe=15m" + long_q)
    check_eq(status, 414)
    check_eq(body["error"]["code"], "too_large")
    status, _, body = svc.get("/health/live?" + long_q)
    check_eq(status, 414)
    status, _, _ = svc.get("/api/predictions/BTCUSDT?timeframe=15m&pad=" + "a" * 1900)
    check_eq(status, 200)  # under 2 KiB in all
    # past the per-connection memory (128 KiB) libmicrohttpd answers 414 itself
    status, _, _ = svc.get("/api/predictions?timeframe=15m&pad=" + "a" * 200000, validate=False)
    check_eq(status, 414)
    hundred = ",".join(f"S{i:03d}" for i in range(100))
    status, _, body = svc.get("/api/predictions?timeframe=15m&symbols=" + hundred)
    check_eq(status, 200, body)
    check_eq(len(body["errors"]), 100)
    status, _, body = svc.get("/api/predictions?timeframe=15m&symbols=" + hundred + ",S100")
    check_eq(status, 400)
    check("at most 100" in body["error"]["message"], body)
    # bodies: 64 KiB at most, checked before authentication
    status, _, body = svc.request("POST", "/admin/models/reload", body=b"{" + b" " * 70000 + b"}")
    check_eq(status, 413)
    check_eq(body["error"]["code"], "too_large")
    status, _, body = svc.request("POST", "/admin/models/reload",
                                  body=b"{" + b" " * (64 * 1024 + 1) + b"}")
    check_eq(status, 413)
    status, _, body = svc.request("POST", "/admin/models/reload", body=b"{" + b" " * 60000 + b"}")
    check_eq(status, 401)  # in bounds: on to authentication


@test
def cors_preflight_and_allowed_origins():
    svc = service()  # no PREDICTD_CORS_ORIGINS: no CORS at all
    status, headers, _ = svc.get("/api/models", headers={"Origin": "https://dash.example"})
    check_eq(status, 200)
    check("Access-Control-Allow-Origin" not in headers, headers)
    status, _, body = svc.request("OPTIONS", "/api/models",
                                  headers={"Origin": "https://dash.example",
                                           "Access-Control-Request-Method": "GET"})
    check_eq(status, 403)
    setup()
    svc = Service(MODELS, env={"PREDICTD_CORS_ORIGINS": "https://dash.example, https://b.example"})
    pre = {"Origin": "https://dash.example", "Access-Control-Request-Method": "GET",
           "Access-Control-Request-Headers": "x-api-key"}
    for path in ("/api/predictions/BTCUSDT", "/api/predictions", "/api/models",
                 "/api/predictions/BTCUSDT/summary", "/api/models/BTCUSDT/15m"):
        status, headers, _ = svc.request("OPTIONS", path, headers=pre)
        check_eq(status, 204, path)
        check_eq(headers["Access-Control-Allow-Origin"], "https://dash.example")
        check("GET" in headers["Access-Control-Allow-Methods"], headers)
        check("X-API-Key" in headers["Access-Control-Allow-Headers"], headers)
        check_eq(headers.get("Vary"), "Origin")
    status, headers, _ = svc.request("OPTIONS", "/api/models",
                                     headers=dict(pre, Origin="https://evil.example"))
    check_eq(status, 403)
    check("Access-Control-Allow-Origin" not in headers, headers)
    status, headers, _ = svc.get("/api/predictions/BTCUSDT?timeframe=15m",
                                 headers={"Origin": "https://b.example"})
    check_eq(status, 200)
    check_eq(headers["Access-Control-Allow-Origin"], "https://b.example")
    check("X-Request-Id" in headers["Access-Control-Expose-Headers"], headers)
    status, headers, _ = svc.get("/api/models", headers={"Origin": "https://evil.example"})
    check_eq(status, 200)
    check("Access-Control-Allow-Origin" not in headers, headers)
    check_eq(svc.stop(), 0)


# ---------------------------------------------------------------------------
# Request ids and logs.

@test
def request_ids_are_echoed_and_logged():
    setup()
    svc = Service(MODELS, env={"PREDICTD_ACCESS_LOG": "on"})
    status, headers, _ = svc.get("/api/predictions/BTCUSDT?timeframe=15m",
                                 headers={"X-Request-Id": "trace-42.a_b:c"})
    check_eq(status, 200)
    check_eq(headers["X-Request-Id"], "trace-42.a_b:c")
    ids = []
    for bad in ("has space", "x" * 64, "semi;colon", None):
        hdrs = {"X-Request-Id": bad} if bad else {}
        status, headers, _ = svc.get("/health/live", headers=hdrs)
        rid = headers["X-Request-Id"]
        check(rid != bad and re.fullmatch(r"[0-9a-f]{16}-\d+", rid), rid)
        ids.append(rid)
    check_eq(len(set(ids)), 4)
    status, headers, _ = svc.get("/api/predictions/ZZZUSDT?timeframe=15m",
                                 headers={"X-Request-Id": "trace-404"})
    check_eq(status, 404)
    check_eq(svc.stop(), 0)
    entries = json_logs(svc)
    for e in entries:
        check({"time", "level", "module", "msg"} <= set(e), e)
        check(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", e["time"]), e)
    access = [e for e in entries if e["module"] == "access"]
    mine = [e for e in access if e.get("request_id") == "trace-42.a_b:c"]
    check_eq(len(mine), 1)
    check("GET /api/predictions/BTCUSDT 200" in mine[0]["msg"], mine[0])
    check("timeframe" not in mine[0]["msg"], "query strings stay out of the access log")
    check(any(e.get("request_id") == "trace-404" and " 404 " in e["msg"] for e in access))
    check(all(e.get("request_id") for e in access), "every access line has its request id")
    for rid in ids:
        check(any(e.get("request_id") == rid and "GET /health/live 200" in e["msg"]
                  for e in access), f"no access line for {rid}")


@test
def access_log_is_off_by_default_and_text_format_works():
    svc = service()
    svc.get("/api/models")
    check(not [e for e in json_logs(svc) if e["module"] == "access"], "access log on by default")
    setup()
    svc = Service(MODELS, env={"PREDICTD_LOG_FORMAT": "text", "PREDICTD_ACCESS_LOG": "on"})
    svc.get("/api/models", headers={"X-Request-Id": "text-1"})
    check_eq(svc.stop(), 0)
    lines = log_lines(svc)
    check(lines and not any(line.startswith("{") for line in lines), lines[:3])
    check(any(re.match(r"\d{4}-\d\d-\d\dT\S+Z info +access +\[text-1\] ", line) for line in lines),
          lines)


# ---------------------------------------------------------------------------
# Lifecycle.

def load_request(port, path, results, lock):
    """One request on a new connection; records how it ended."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    t0 = time.time()
    try:
        conn.connect()
    except (ConnectionRefusedError, ConnectionResetError):
        with lock:
            results.append(("refused", t0, time.time(), None, None))
        return False
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        body = r.read()
        outcome = ("answered", t0, time.time(), r.status, body)
    except Exception as e:  # noqa: BLE001 - a lost request is what this test looks for
        outcome = ("lost", t0, time.time(), None, repr(e))
    finally:
        conn.close()
    with lock:
        results.append(outcome)
    return outcome[0] == "answered"


@test
def sigterm_under_load_loses_no_accepted_request():
    setup()
    svc = Service(MODELS, env={"PREDICTD_CACHE": "off", "PREDICTD_THREADS": "4",
                               "PREDICTD_DRAIN_TIMEOUT": "10"})
    path = "/api/predictions?timeframe=15m&symbols=BTCUSDT,ETHUSDT"
    results, lock, stop = [], threading.Lock(), threading.Event()

    def client():
        while not stop.is_set():
            if not load_request(svc.port, path, results, lock):
                return

    threads = [threading.Thread(target=client) for _ in range(24)]
    for t in threads:
        t.start()
    wait_for(lambda: len(results) >= 100, "the load to build up", 120)
    t_sig = time.time()
    svc.proc.send_signal(signal.SIGTERM)
    rc = svc.proc.wait(timeout=60)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    svc.stop()
    check_eq(rc, 0, logs_of(svc)[-2000:])
    # A connection the kernel queued after SIGTERM, which the server (no
    # longer accepting) never saw, is reset when the listening socket
    # closes: refused, not lost. A reset of one begun before SIGTERM is lost.
    results = [("refused",) + r[1:] if r[0] == "lost" and r[1] > t_sig and
               r[4].startswith("ConnectionResetError") else r for r in results]
    lost = [r for r in results if r[0] == "lost"]
    check_eq(lost, [], "requests accepted and then dropped")
    answered = [r for r in results if r[0] == "answered"]
    for r in answered:
        check_eq(r[3], 200, r[4][:300])
        body = json.loads(r[4])
        check_eq(body["count"], 2)
    in_flight = [r for r in answered if r[1] < t_sig < r[2]]
    print(f"     {len(answered)} answered (200), {len(in_flight)} of them in flight at SIGTERM, "
          f"{sum(r[0] == 'refused' for r in results)} refused after it, 0 lost", flush=True)
    check(in_flight, "no request was in flight at SIGTERM: the test proved nothing")
    check(any(r[0] == "refused" for r in results), "new connections were not refused")
    logs = logs_of(svc)
    check("SIGTERM: draining" in logs and "drained " in logs and '"stopped"' in logs, logs[-1500:])


@test
def draining_turns_readiness_503_and_ignores_sighup():
    setup()
    svc = Service(MODELS, env={"PREDICTD_DRAIN_TIMEOUT": "60"})
    keep = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=30)
    keep.request("GET", "/health/ready")
    r = keep.getresponse()
    r.read()
    check_eq(r.status, 200)
    hold = partial_request(svc.port)  # keeps the drain going
    wait_for(lambda: metric_value(metrics_text(svc), "predictd_http_in_flight_requests") >= 2,
             "the held request")
    svc.proc.send_signal(signal.SIGTERM)
    wait_for_log(svc, "SIGTERM: draining")
    svc.proc.send_signal(signal.SIGHUP)  # ignored while draining
    keep.request("GET", "/health/ready")
    r = keep.getresponse()
    body = json.loads(r.read())
    check_eq(r.status, 503)
    check_eq(body["error"]["code"], "not_ready")
    check("draining" in body["error"]["message"], body)
    check_eq(r.getheader("Connection"), "close")
    check(svc.proc.poll() is None, "exited while a request was open")
    try:
        socket.create_connection(("127.0.0.1", svc.port), timeout=5).close()
        refused = False
    except OSError:
        refused = True
    check(refused, "a new connection was accepted while draining")
    hold.sendall(b" " * 98 + b"}")  # the held request completes: 401 (no key)
    answer = hold.recv(4096)
    check(answer.startswith(b"HTTP/1.1 401"), answer[:100])
    hold.close()
    keep.close()
    check_eq(svc.proc.wait(timeout=60), 0)
    svc.stop()


@test
def second_sigterm_exits_at_once_and_drain_is_bounded():
    setup()
    svc = Service(MODELS, env={"PREDICTD_DRAIN_TIMEOUT": "600"})
    hold = partial_request(svc.port)
    wait_for(lambda: metric_value(metrics_text(svc), "predictd_http_in_flight_requests") >= 2,
             "the held request")
    svc.proc.send_signal(signal.SIGTERM)
    wait_for_log(svc, "SIGTERM: draining")
    check(svc.proc.poll() is None, "the drain should wait for the held request")
    svc.proc.send_signal(signal.SIGTERM)
    rc = svc.proc.wait(timeout=60)  # far below the 600 s drain
    check_eq(rc, 128 + signal.SIGTERM)
    hold.close()
    svc.stop(expect_rc=128 + signal.SIGTERM)

    svc = Service(MODELS, env={"PREDICTD_DRAIN_TIMEOUT": "1"})
    hold = partial_request(svc.port)
    wait_for(lambda: metric_value(metrics_text(svc), "predictd_http_in_flight_requests") >= 2,
             "the held request")
    svc.proc.send_signal(signal.SIGTERM)
    check_eq(svc.proc.wait(timeout=60), 0)
    hold.close()
    svc.stop()
    check("drain timed out after 1 s with 1 requests still open" in logs_of(svc), logs_of(svc)[-800:])


@test
def sighup_reloads_models():
    d = models_copy(("BTCUSDT", "15m"))
    svc = Service(d, env={"PREDICTD_RELOAD_INTERVAL": "0"})
    status, _, body = svc.get("/api/predictions/ETHUSDT?timeframe=15m")
    check_eq(status, 404)
    check_eq(body["error"]["code"], "no_model")
    os.makedirs(os.path.join(d, "ETHUSDT", "15m"))
    tmp = os.path.join(d, "ETHUSDT", "15m", ".incoming")
    shutil.copytree(os.path.join(MODELS, "ETHUSDT", "15m", "1"), tmp)
    os.rename(tmp, os.path.join(d, "ETHUSDT", "15m", "1"))
    status, _, _ = svc.get("/api/predictions/ETHUSDT?timeframe=15m")
    check_eq(status, 404)  # interval 0: nothing scans until asked
    svc.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: svc.get("/api/predictions/ETHUSDT?timeframe=15m")[0] == 200,
             "ETHUSDT to serve after SIGHUP")
    check("SIGHUP: rescanning" in logs_of(svc))
    check_eq(svc.stop(), 0)


@test
def bad_configuration_is_refused_at_start():
    setup()
    for env, needle in (({"PREDICTD_THREADS": "1000"}, "--threads"),
                        ({"PREDICTD_LISTEN": "nohost"}, "--listen"),
                        ({"PREDICTD_LISTEN": "example.com:80"}, "IPv4"),
                        ({"PREDICTD_RATE_LIMIT": "-1"}, "--rate-limit"),
                        ({"PREDICTD_ACCESS_LOG": "maybe"}, "on or off"),
                        ({"PREDICTD_LOG_FORMAT": "xml"}, "text or json"),
                        ({"PREDICTD_API_KEY": "short"}, "PREDICTD_API_KEY"),
                        ({"PREDICTD_READ_KEY": "has space in it, 16+"}, "PREDICTD_READ_KEY")):
        e = {"PREDICTD_MODELS_DIR": MODELS, "PREDICTD_LISTEN": "127.0.0.1:0"}
        e.update(env)
        p = cli("serve", env=e, check_rc=False, timeout=60)
        check(p.returncode == 2 and needle in p.stderr, f"{env}: {p.returncode} {p.stderr}")
        for var in ("PREDICTD_API_KEY", "PREDICTD_READ_KEY"):
            if var in env:
                check(env[var] not in p.stderr, f"{var}'s value echoed: {p.stderr}")


@test
def a_taken_port_fails_the_start_unless_reuse_port_is_on():
    # libmicrohttpd was always given SO_REUSEPORT: a second server on a taken
    # port started and silently shared it (with a test harness that picked
    # ports, two test servers could answer for each other)
    setup()
    svc = Service(MODELS)
    p = cli("serve", env={"PREDICTD_MODELS_DIR": MODELS, "PREDICTD_LISTEN": f"127.0.0.1:{svc.port}"},
            check_rc=False, timeout=60)
    check(p.returncode != 0, f"a second server started on port {svc.port}")
    check("cannot listen on" in p.stderr, p.stderr[-800:])
    check_eq(svc.get("/health/live")[0], 200)
    check_eq(svc.stop(), 0)
    # with PREDICTD_REUSE_PORT=on on both, the second one shares the port
    a = Service(MODELS, env={"PREDICTD_REUSE_PORT": "on"})
    b = Service(MODELS, env={"PREDICTD_REUSE_PORT": "on",
                             "PREDICTD_LISTEN": f"127.0.0.1:{a.port}"})
    check_eq(b.port, a.port)
    check_eq(a.stop(), 0)
    check_eq(b.get("/health/live")[0], 200)  # b alone answers now
    check_eq(b.stop(), 0)


if __name__ == "__main__":
    try:
        sys.exit(run_tests())
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
        shutil.rmtree(MODELS, ignore_errors=True)
