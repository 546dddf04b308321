"""The error answers of the model routes, admin and public, that no other
test asked for: bodies that are not JSON objects, half a series, a symbol
or timeframe that cannot be, a version that is not a positive integer, an
unknown label; each must be its documented 4xx with the right error code
(every answer is checked against openapi.yaml by the harness), and none may
change what serves. Also the backtests a series' model page lists once
`predictd backtest` has stored one. The real binary over HTTP, against
this file's PostgreSQL."""
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from harness import (Service, check, check_eq, check_in, cli, need_services,  # noqa: E402
                     prepare_database, run_tests, test, train)

MODELS = tempfile.mkdtemp(prefix="predictd-admin-errors-")
SYM, TF = "BTCUSDT", "1h"
KEY = "a" * 40
state = {}


def server():
    if "svc" not in state:
        need_services()
        prepare_database(symbols=(SYM,), timeframes=(TF,), count=1200)
        train(MODELS, SYM, TF)
        state["svc"] = Service(MODELS, env={"PREDICTD_API_KEY": KEY}, name="admin-errors")
    return state["svc"]


def admin(method, path, body=None):
    return server().request(method, path, body=body, headers={"X-API-Key": KEY})


def expect_error(status, payload, want_status, want_code, what):
    check_eq(status, want_status, f"{what}: {payload}")
    check_eq(payload["status"], "error", what)
    check_eq(payload["error"]["code"], want_code, f"{what}: {payload}")


def serving_version():
    status, _, body = server().get(f"/api/models/{SYM}/{TF}")
    check_eq(status, 200, body)
    return body


@test
def bad_admin_bodies_are_400_and_change_nothing():
    before = serving_version()
    cases = [
        ("POST", "/admin/models/reload", b"not json", 400, "parse_error"),
        ("POST", "/admin/models/reload", b"[1, 2]", 400, "parse_error"),
        ("POST", "/admin/models/reload", {"symbol": SYM}, 400, "invalid_argument"),
        ("POST", "/admin/models/reload", {"symbol": "bad/..", "timeframe": TF}, 400,
         "invalid_argument"),
        ("POST", "/admin/models/reload", {"symbol": SYM, "timeframe": "7m"}, 400,
         "invalid_argument"),
        ("POST", f"/admin/models/{SYM}/{TF}/pin", {"version": "1"}, 400, "invalid_argument"),
        ("POST", f"/admin/models/{SYM}/{TF}/pin", {"version": 0}, 400, "invalid_argument"),
        ("POST", f"/admin/models/{SYM}/{TF}/pin", {"version": 2 ** 40}, 400, "invalid_argument"),
        ("POST", f"/admin/models/{SYM}/{TF}/pin", {}, 400, "invalid_argument"),
        ("POST", f"/admin/models/{SYM}/{TF}/pin", {"version": 99}, 404, "not_found"),
        ("POST", f"/admin/models/{SYM}/7m/pin", {"version": 1}, 400, "invalid_timeframe"),
        ("POST", f"/admin/models/bad/{TF}/pin", {"version": 1}, 400, "invalid_symbol"),
        ("POST", f"/admin/models/{SYM}/{TF}/labels", {"label": "beta", "version": 1}, 400,
         "invalid_argument"),
        ("POST", f"/admin/models/{SYM}/{TF}/labels", b"{", 400, "parse_error"),
    ]
    for method, path, body, want_status, want_code in cases:
        status, _, payload = admin(method, path, body)
        expect_error(status, payload, want_status, want_code, f"{method} {path} {body!r}")
    # nothing changed: the same version serves, unpinned
    after = serving_version()
    check_eq(after["model"]["serving_version"], 1, after)
    check_eq(after["model"]["pinned_version"], None, after)
    check_eq(after["model"]["serving_version"], before["model"]["serving_version"])
    status, _, body = admin("POST", "/admin/models/reload", {})
    check_eq(status, 200, body)
    status, _, body = admin("POST", "/admin/models/reload", {"symbol": SYM, "timeframe": TF})
    check_eq(status, 200, body)


@test
def public_model_routes_refuse_what_cannot_be():
    svc = server()
    for path, want_status, want_code in (
            (f"/api/models/bad/{TF}", 400, "invalid_symbol"),
            (f"/api/models/{SYM}/7m", 400, "invalid_timeframe"),
            (f"/api/models/XRPUSDT/{TF}", 404, None),
            (f"/api/models/{SYM}/{TF}/performance?window=0", 400, None),
            (f"/api/models/{SYM}/{TF}/performance?window=abc", 400, None)):
        status, _, payload = svc.get(path)
        check_eq(status, want_status, f"{path}: {payload}")
        check_eq(payload["status"], "error", path)
        if want_code:
            check_eq(payload["error"]["code"], want_code, f"{path}: {payload}")


@test
def model_page_lists_stored_backtests():
    svc = server()
    cli("backtest", SYM, TF, "--models-dir", MODELS, timeout=900)
    status, _, body = svc.get(f"/api/models/{SYM}/{TF}")
    check_eq(status, 200, body)
    found = body.get("backtests")
    check(isinstance(found, list) and len(found) == 1, body)
    bt = found[0]
    check_eq(bt["version"], 1)
    check_in("figures", bt)
    check(bt["figures"]["predictions"] > 0, bt)
    # a replica without a database serves the same page, backtests unknown
    # (null, not an empty list that would say there are none)
    nodb = Service(MODELS, env={"PREDICTD_DATABASE_URL": ""}, redis=False, name="no-database")
    status, _, body = nodb.get(f"/api/models/{SYM}/{TF}")
    check_eq(status, 200, body)
    check(body["backtests"] is None, body)
    check_eq(body["model"]["serving_version"], 1, body)
    check_eq(nodb.stop(), 0)


@test
def training_route_refusals():
    """Job parameters the trainer cannot take are refused with the
    parameter's name before a job is queued; ids that are not ids are 400,
    ids of no job 404."""
    bad = [
        ({"symbol": SYM, "timeframe": TF, "epochs": 1.5}, "epochs"),
        ({"symbol": SYM, "timeframe": TF, "hidden": [[64]]}, "hidden"),
        ({"symbol": SYM, "timeframe": TF, "kind": "forest"}, "kind"),
        ({"symbol": SYM, "timeframe": TF, "publish": "perhaps"}, "publish"),
        ({"symbol": SYM, "timeframe": TF, "no_such_thing": 1}, "no_such_thing"),
        ({"symbol": SYM, "timeframe": TF, "tp_r": [1, 2]}, "tp_r"),
        ({"symbol": SYM, "timeframe": TF, "force": None}, None),
        (["not", "an", "object"], None),
    ]
    status, _, listing = admin("GET", "/admin/training")
    check_eq(status, 200, listing)
    jobs_before = len(listing.get("jobs", []))
    for body, word in bad:
        status, _, payload = admin("POST", "/admin/training", body)
        check_eq(status, 400, f"{body}: {payload}")
        check_eq(payload["status"], "error")
        if word:
            check_in(word, payload["error"]["message"], f"{body}")
    status, _, listing = admin("GET", "/admin/training")
    check_eq(len(listing.get("jobs", [])), jobs_before, "a refused job was queued")
    for path, want in (("/admin/training/abc", 400), ("/admin/training/0", 400),
                       ("/admin/training/-4", 400), ("/admin/training/12x", 400),
                       # past the largest id: refused, not clamped to another id
                       ("/admin/training/99999999999999999999", 400),
                       ("/admin/training/999999", 404)):
        status, _, payload = admin("GET", path)
        check_eq(status, want, f"GET {path}: {payload}")
        status, _, payload = admin("DELETE", path)
        check_eq(status, want, f"DELETE {path}: {payload}")
    # booleans and numbers are taken in their JSON types: a dry run that publishes nothing
    status, _, job = admin("POST", "/admin/training",
                           {"symbol": SYM, "timeframe": TF, "epochs": 2, "publish": False,
                            "force": True, "l2": 0.001, "tp_r": [1, 2, 3]})
    check_eq(status, 202, job)


@test
def prediction_selectors_and_symbol_lists():
    """?version= and ?label= pick a version or are refused; symbol lists
    with a name too long are refused before any lookup."""
    svc = server()
    base = f"/api/predictions/{SYM}?timeframe={TF}"
    status, _, body = svc.get(base + "&version=1")
    check_eq(status, 200, body)
    check_eq(body["prediction"]["model"]["version"], 1)
    status, _, body = svc.get(base + "&version=7")
    check_eq(status, 404, body)
    check_eq(body["error"]["code"], "no_model")
    for q in ("&version=0", "&version=abc", "&version=1x", "&version=99999999999",
              "&label=beta"):
        status, _, body = svc.get(base + q)
        check_eq(status, 400, f"{q}: {body}")
        check_eq(body["error"]["code"], "invalid_argument", q)
    # no stable label is set: asking for it is 404, not another version
    status, _, body = svc.get(base + "&label=stable")
    check_eq(status, 404, body)
    for path in (f"/api/predictions?timeframe={TF}&symbols={'A' * 30}",
                 f"/api/predictions?timeframe={TF}&version=0",
                 f"/api/predictions/{SYM}/summary?version=abc",
                 "/api/predictions/bad!/summary"):
        status, _, body = svc.get(path)
        check_eq(status, 400, f"{path}: {body}")
    # the same symbol twice is answered once
    status, _, body = svc.get(f"/api/predictions?timeframe={TF}&symbols={SYM},{SYM}")
    check_eq(status, 200, body)
    check_eq(body["count"], 1, body)


@test
def health_of_a_series_whose_only_version_failed():
    """A series with one version that fails verification: /health/status
    says the series failed, with the reason, and serves nothing from it;
    the registry as a whole is empty (nothing serves)."""
    need_services()
    d = tempfile.mkdtemp(prefix="predictd-admin-broken-")
    v = os.path.join(d, "ETHUSDT", "1h", "1")
    os.makedirs(v)
    for name in ("model.pb", "scaler.pb"):
        with open(os.path.join(v, name), "wb") as f:
            f.write(b"\x08\x01garbage")
    with open(os.path.join(v, "MANIFEST"), "w") as f:
        f.write("hello world\n")
    svc = Service(d, name="admin-broken")
    status, _, body = svc.get("/health/status")
    check_eq(status, 200, body)
    reg = body["components"]["registry"]
    check_eq(reg["state"], "empty", reg)
    series = [x for x in reg["series"] if x["symbol"] == "ETHUSDT"]
    check_eq(len(series), 1, reg)
    check_eq(series[0]["state"], "failed", series[0])
    check_in("MANIFEST", str(series[0]), series[0])
    status, _, body = svc.get("/api/predictions/ETHUSDT?timeframe=1h")
    check(status in (404, 503), body)
    check_eq(body["status"], "error")
    svc.stop()


if __name__ == "__main__":
    run_tests()
