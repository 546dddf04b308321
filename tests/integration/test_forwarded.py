"""The client address behind a gateway: X-Forwarded-For is believed only
from a trusted proxy (PREDICTD_TRUSTED_PROXIES), read from the right
skipping trusted hops, and used for the access log and the rate limit;
from any other peer it is ignored. A malformed list fails the start.

Real binary on loopback (the test is the proxy: its address is 127.0.0.1);
no database is needed (/api/models answers without one)."""
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (ROOT, Service, check, check_eq, cli, free_port, run_tests,  # noqa: E402
                     test)

MODELS = tempfile.mkdtemp(prefix="predictd-fwd-models-")


def serve(**env):
    e = {"PREDICTD_DATABASE_URL": "", "PREDICTD_ACCESS_LOG": "on", "PREDICTD_RATE_LIMIT": "1",
         "PREDICTD_RATE_BURST": "2"}
    e.update(env)
    svc = Service(MODELS, env=e, redis=False)
    return svc


def models(svc, xff=None):
    headers = {"X-Forwarded-For": xff} if xff is not None else {}
    status, _, _ = svc.get("/api/models", headers=headers)
    return status


def access_clients(svc):
    """The client field of each access-log line, in order."""
    out = []
    with open(svc.log_path) as f:
        text = f.read()
    for line in text.splitlines():
        if '"module":"access"' in line and "/api/models" in line:
            msg = line.split('"msg":"', 1)[1]
            out.append(msg.split(" ", 1)[0])
    return out


def until_limited(svc, xff, most=50):
    """Requests as one client until one is refused; the number sent."""
    for n in range(1, most + 1):
        if models(svc, xff) == 429:
            return n
    raise AssertionError(f"{most} requests from {xff} were never limited")


@test
def a_trusted_proxy_names_the_client():
    svc = serve(PREDICTD_TRUSTED_PROXIES="127.0.0.1/32, 10.0.0.0/8")
    # each client has its own bucket: once one is limited, another (a full
    # bucket of 2) still passes, and 20 different clients all pass
    n = until_limited(svc, "203.0.113.1")
    check_eq(models(svc, "203.0.113.2"), 200)
    check_eq([models(svc, f"198.51.100.{i}") for i in range(1, 21)], [200] * 20)
    # read from the right: what the client itself sent is not believed, a
    # trusted hop (10.1.2.3) is skipped
    check_eq(models(svc, "192.0.2.1, 203.0.113.3"), 200)
    check_eq(models(svc, "203.0.113.4, 10.1.2.3"), 200)
    # garbage on the right: the hop after it (the peer) is the client
    check_eq(models(svc, "203.0.113.5, not-an-ip"), 200)
    time.sleep(0.2)
    check_eq(svc.stop(), 0)
    check_eq(access_clients(svc), ["203.0.113.1"] * n + ["203.0.113.2"] +
             [f"198.51.100.{i}" for i in range(1, 21)] +
             ["203.0.113.3", "203.0.113.4", "127.0.0.1"])


@test
def an_untrusted_peer_cannot_pick_its_address():
    # no list, or a list without the peer: the header is ignored, every
    # request is the peer's and they share one bucket (2 tokens, 1 a second:
    # 20 requests cannot all pass)
    for env in ({}, {"PREDICTD_TRUSTED_PROXIES": "10.0.0.0/8"}):
        svc = serve(**env)
        codes = [models(svc, f"203.0.113.{i}") for i in range(1, 21)]
        check(429 in codes, codes)
        time.sleep(0.2)
        check_eq(svc.stop(), 0)
        check_eq(access_clients(svc), ["127.0.0.1"] * 20)


@test
def a_malformed_list_fails_the_start():
    for bad in ("10.0.0.0/33", "localhost", "10.0.0.1/", "::1", "10.0.0.0/8,300.1.1.1"):
        p = cli("serve", env={"PREDICTD_TRUSTED_PROXIES": bad, "PREDICTD_MODELS_DIR": MODELS,
                              "PREDICTD_DATABASE_URL": "",
                              "PREDICTD_API_KEY_FILE": os.path.join(MODELS, ".none"),
                              "PREDICTD_WEB_DIR": os.path.join(ROOT, "web"),
                              "PREDICTD_LISTEN": f"127.0.0.1:{free_port()}"},
                check_rc=False, timeout=60)
        check(p.returncode != 0, f"{bad!r}: serve started")
        check("PREDICTD_TRUSTED_PROXIES" in p.stderr and "not an IPv4 address or CIDR" in p.stderr,
              p.stderr)


if __name__ == "__main__":
    sys.exit(run_tests())
