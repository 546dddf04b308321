"""The deployment files, without a cluster or a container engine:

- docker/k8s/*.yaml validate against the Kubernetes API schemas
  (tests/k8s/validate.mjs, npm kubernetes-models, offline), and the
  validator refuses broken copies;
- every pod template passes the "restricted" Pod Security Standard (checked
  here field by field, as the admission controller does), and each rule is
  shown to catch its violation;
- the manifests agree with the image and the binary: the numeric user,
  the key Secret's mode (predictd accepts it), probes on routes that exist,
  the listen port, the grace period longer than preStop + drain, the RWX
  models claim, the migrate Job's retries; the placeholder key is refused;
- docker/Dockerfile, .dockerignore, .gitignore and docker/compose.yaml keep
  what the deployment needs (numeric user, pinned base, labels, health
  check; no .git or keys in the build context; restart policies, grace
  periods, a writable models volume, replicas).
"""
import copy
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

sys.path.insert(0, os.path.dirname(__file__))
from harness import (ROOT, Service, Skip, check, check_eq, cli, free_port, run_tests,  # noqa: E402
                     test)

K8S = os.path.join(ROOT, "docker", "k8s")
VALIDATOR = os.path.join(ROOT, "tests", "k8s")
TMP = tempfile.mkdtemp(prefix="predictd-k8s-")


def manifests():
    docs = []
    for f in sorted(os.listdir(K8S)):
        if f.endswith((".yaml", ".yml")):
            with open(os.path.join(K8S, f)) as fh:
                docs += [d for d in yaml.safe_load_all(fh) if d]
    return docs


def one(kind, name=None):
    found = [d for d in manifests() if d["kind"] == kind and
             (name is None or d["metadata"]["name"] == name)]
    check_eq(len(found), 1, f"{kind} {name or ''}")
    return found[0]


def pod_specs(docs):
    """(what, pod spec) of every workload."""
    out = []
    for d in docs:
        spec = d.get("spec") or {}
        if d["kind"] == "Pod":
            out.append((f"Pod/{d['metadata']['name']}", spec))
        elif d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
            out.append((f"{d['kind']}/{d['metadata']['name']}", spec["template"]["spec"]))
        elif d["kind"] == "CronJob":
            out.append((f"CronJob/{d['metadata']['name']}",
                        spec["jobTemplate"]["spec"]["template"]["spec"]))
    return out


# ---------------------------------------------------------------------------
# Pod Security Standards, "restricted" (which includes "baseline"), as
# documented for Kubernetes v1.30+; plus this project's own rule that the
# root filesystem is read-only.

RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                      "persistentVolumeClaim", "projected", "secret"}
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range",
                "net.ipv4.ip_unprivileged_port_start", "net.ipv4.tcp_syncookies",
                "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout",
                "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes"}


def restricted_violations(spec):
    v = []
    psc = spec.get("securityContext") or {}
    for f in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(f):
            v.append(f"{f} is true")
    for vol in spec.get("volumes") or []:
        kinds = set(vol) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            v.append(f"volume {vol.get('name')}: type {sorted(kinds - RESTRICTED_VOLUMES)}")
    for s in psc.get("sysctls") or []:
        if s.get("name") not in SAFE_SYSCTLS:
            v.append(f"sysctl {s.get('name')}")
    if (psc.get("seLinuxOptions") or {}).get("user") or (psc.get("seLinuxOptions") or {}).get("role"):
        v.append("pod seLinuxOptions user/role")
    if psc.get("runAsUser") == 0:
        v.append("pod runAsUser 0")
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    if pod_seccomp not in (None, "RuntimeDefault", "Localhost"):
        v.append(f"pod seccompProfile {pod_seccomp}")
    containers = [("container", c) for c in spec.get("containers") or []] + \
                 [("initContainer", c) for c in spec.get("initContainers") or []] + \
                 [("ephemeralContainer", c) for c in spec.get("ephemeralContainers") or []]
    if not spec.get("containers"):
        v.append("no containers")
    for what, c in containers:
        n = f"{what} {c.get('name')}"
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            v.append(f"{n}: privileged")
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            v.append(f"{n}: hostProcess")
        if sc.get("procMount", "Default") != "Default":
            v.append(f"{n}: procMount {sc.get('procMount')}")
        for p in c.get("ports") or []:
            if p.get("hostPort"):
                v.append(f"{n}: hostPort {p['hostPort']}")
        if sc.get("allowPrivilegeEscalation") is not False:
            v.append(f"{n}: allowPrivilegeEscalation is not false")
        nonroot = sc.get("runAsNonRoot", psc.get("runAsNonRoot"))
        if nonroot is not True:
            v.append(f"{n}: runAsNonRoot is not true")
        uid = sc.get("runAsUser", psc.get("runAsUser"))
        if uid == 0:
            v.append(f"{n}: runAsUser 0")
        if not isinstance(uid, int):
            # the kubelet can check runAsNonRoot only against a numeric user
            v.append(f"{n}: no numeric runAsUser")
        seccomp = (sc.get("seccompProfile") or {}).get("type", pod_seccomp)
        if seccomp not in ("RuntimeDefault", "Localhost"):
            v.append(f"{n}: seccompProfile {seccomp}")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            v.append(f"{n}: capabilities do not drop ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            v.append(f"{n}: capabilities add {caps.get('add')}")
        if (sc.get("seLinuxOptions") or {}).get("user") or (sc.get("seLinuxOptions") or {}).get("role"):
            v.append(f"{n}: seLinuxOptions user/role")
        if what == "container" and sc.get("readOnlyRootFilesystem") is not True:
            v.append(f"{n}: readOnlyRootFilesystem is not true")
    return v


@test
def every_pod_passes_the_restricted_pod_security_standard():
    specs = pod_specs(manifests())
    check(len(specs) >= 2, f"Deployment and Job expected: {[w for w, _ in specs]}")
    for what, spec in specs:
        check_eq(restricted_violations(spec), [], what)


@test
def the_restricted_check_catches_each_violation():
    base = dict(pod_specs([one("Deployment", "predictd")]))["Deployment/predictd"]
    c0 = ("containers", 0, "securityContext")

    def at(spec, path):
        for p in path:
            spec = spec[p]
        return spec

    cases = [
        ("runAsNonRoot false", c0, lambda sc: sc.update(runAsNonRoot=False)),
        ("runAsUser 0", c0, lambda sc: sc.update(runAsUser=0)),
        ("no numeric user", c0, lambda sc: sc.pop("runAsUser")),
        ("privilege escalation", c0, lambda sc: sc.update(allowPrivilegeEscalation=True)),
        ("escalation unset", c0, lambda sc: sc.pop("allowPrivilegeEscalation")),
        ("no drop ALL", c0, lambda sc: sc.update(capabilities={"drop": ["NET_RAW"]})),
        ("adds SYS_ADMIN", c0, lambda sc: sc["capabilities"].update(add=["SYS_ADMIN"])),
        ("privileged", c0, lambda sc: sc.update(privileged=True)),
        ("seccomp Unconfined", c0, lambda sc: sc.update(seccompProfile={"type": "Unconfined"})),
        ("writable root", c0, lambda sc: sc.update(readOnlyRootFilesystem=False)),
        ("procMount", c0, lambda sc: sc.update(procMount="Unmasked")),
        ("hostNetwork", (), lambda s: s.update(hostNetwork=True)),
        ("hostPID", (), lambda s: s.update(hostPID=True)),
        ("hostPath", ("volumes",), lambda vs: vs.append({"name": "h", "hostPath": {"path": "/"}})),
        ("unsafe sysctl", ("securityContext",),
         lambda psc: psc.update(sysctls=[{"name": "kernel.msgmax", "value": "1"}])),
        ("hostPort", ("containers", 0, "ports", 0), lambda p: p.update(hostPort=8080)),
    ]
    for name, path, mutate in cases:
        spec = copy.deepcopy(base)
        mutate(at(spec, path))
        if name == "no numeric user" or name == "seccomp Unconfined":
            # the pod-level values would still apply: remove them too
            spec["securityContext"].pop("runAsUser" if name == "no numeric user" else "seccompProfile")
        check(restricted_violations(spec), f"{name}: not caught")
    # the pod-level settings alone are enough (containers inherit them)
    spec = copy.deepcopy(base)
    for k in ("runAsNonRoot", "runAsUser", "seccompProfile"):
        spec["containers"][0]["securityContext"].pop(k)
    check_eq(restricted_violations(spec), [])
    spec["securityContext"].pop("runAsNonRoot")
    check(restricted_violations(spec), "runAsNonRoot nowhere: not caught")


# ---------------------------------------------------------------------------
# Schema validation (npm kubernetes-models, run by node).

def validator(*files):
    node = shutil.which("node")
    if not node:
        raise Skip("node is not installed (make deps-test)")
    if not os.path.isdir(os.path.join(VALIDATOR, "node_modules", "kubernetes-models")):
        raise Skip("tests/k8s/node_modules is missing (make deps-test runs npm ci there)")
    return subprocess.run([node, "validate.mjs", *files], cwd=VALIDATOR, capture_output=True,
                          text=True, timeout=120)


@test
def manifests_validate_against_the_kubernetes_schemas():
    files = sorted(os.path.join(K8S, f) for f in os.listdir(K8S) if f.endswith(".yaml"))
    p = validator(*files)
    check_eq(p.returncode, 0, p.stdout + p.stderr)
    oks = [l for l in p.stdout.splitlines() if l.startswith("ok ")]
    check_eq(len(oks), len(manifests()), p.stdout)
    kinds = {d["kind"] for d in manifests()}
    check_eq(kinds, {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler",
                     "NetworkPolicy", "Job", "PersistentVolumeClaim", "Secret"})


@test
def the_schema_validator_refuses_broken_manifests():
    dep = one("Deployment", "predictd")
    broken = []
    d = copy.deepcopy(dep)
    d["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "eighty"
    broken.append(("a port that is not a number", d))
    d = copy.deepcopy(dep)
    del d["spec"]["selector"]
    broken.append(("no selector", d))
    d = copy.deepcopy(dep)
    del d["spec"]["template"]["spec"]["containers"][0]["name"]
    broken.append(("a container without a name", d))
    d = copy.deepcopy(dep)
    d["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] = "yes"
    broken.append(("runAsNonRoot a string", d))
    d = copy.deepcopy(one("HorizontalPodAutoscaler"))
    d["spec"]["minReplicas"] = "two"
    broken.append(("minReplicas a string", d))
    d = copy.deepcopy(dep)
    d["kind"] = "Deploymnt"
    broken.append(("a misspelt kind", d))
    for name, doc in broken:
        path = os.path.join(TMP, "broken.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(doc, f)
        p = validator(path)
        check(p.returncode != 0 and "FAIL" in p.stdout, f"{name}: accepted\n{p.stdout}")


# ---------------------------------------------------------------------------
# The manifests agree with the image and the binary.

def dockerfile():
    with open(os.path.join(ROOT, "docker", "Dockerfile")) as f:
        return f.read()


def env_of(container):
    return {e["name"]: e.get("value") for e in container.get("env") or []}


@test
def the_deployment_agrees_with_the_image_and_the_binary():
    dep = one("Deployment", "predictd")
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    user = re.search(r"^USER\s+(\d+):(\d+)\s*$", dockerfile(), re.M)
    check(user, "the Dockerfile's USER is numeric uid:gid")
    check_eq(pod["securityContext"]["runAsUser"], int(user.group(1)))
    check_eq(pod["securityContext"]["fsGroup"], int(user.group(2)))
    # the listen port is the container port; probes hit routes that exist
    env = env_of(c)
    check_eq(int(env["PREDICTD_LISTEN"].rsplit(":", 1)[1]), c["ports"][0]["containerPort"])
    with open(os.path.join(ROOT, "openapi.yaml")) as f:
        paths = yaml.safe_load(f)["paths"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        check(c[probe]["httpGet"]["path"] in paths, probe)
        check_eq(c[probe]["httpGet"]["port"], c["ports"][0]["name"])
    check_eq(c["readinessProbe"]["httpGet"]["path"], "/health/ready")
    check(c["resources"]["requests"] and c["resources"]["limits"], "resources")
    # grace period > preStop + drain
    pre = int(c["lifecycle"]["preStop"]["exec"]["command"][-1])
    check(pod["terminationGracePeriodSeconds"] > pre + int(env["PREDICTD_DRAIN_TIMEOUT"]),
          "grace period")
    # the models volume: the RWX claim, mounted writable
    vols = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    claim = one("PersistentVolumeClaim", "predictd-models")
    check_eq(claim["spec"]["accessModes"], ["ReadWriteMany"])
    check_eq(vols[mounts[env["PREDICTD_MODELS_DIR"]]["name"]]["persistentVolumeClaim"]["claimName"],
             "predictd-models")
    check(not mounts[env["PREDICTD_MODELS_DIR"]].get("readOnly"), "models mounted read-only")
    # the key: the Secret's file, a mode predictd accepts (group-readable at
    # most), in the directory PREDICTD_API_KEY_FILE names
    key_dir, key_name = os.path.split(env["PREDICTD_API_KEY_FILE"])
    kv = vols[mounts[key_dir]["name"]]["secret"]
    check_eq(kv["secretName"], "predictd-key")
    check_eq(kv["defaultMode"] & 0o027, 0, f"mode {kv['defaultMode']:o}")
    check(key_name in one("Secret", "predictd-key")["stringData"], "the Secret holds the key")
    # and the binary reads a key file with exactly that mode
    path = os.path.join(TMP, "k8s-key")
    with open(path, "w") as f:
        f.write("k" * 32 + "\n")
    os.chmod(path, kv["defaultMode"])
    svc = Service(TMP, env={"PREDICTD_API_KEY_FILE": path, "PREDICTD_DATABASE_URL": ""},
                  redis=False)
    status, _, body = svc.get("/admin/models", headers={"X-API-Key": "k" * 32})
    check_eq(status, 200, body)
    check_eq(svc.stop(), 0)
    # PDB, HPA and Service select the Deployment's pods
    labels = dep["spec"]["template"]["metadata"]["labels"]
    check_eq(one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"], labels)
    check_eq(one("Service", "predictd")["spec"]["selector"], labels)
    check_eq(one("NetworkPolicy")["spec"]["podSelector"]["matchLabels"], labels)
    hpa = one("HorizontalPodAutoscaler")["spec"]
    check_eq(hpa["scaleTargetRef"]["name"], "predictd")
    check(hpa["minReplicas"] > one("PodDisruptionBudget")["spec"]["minAvailable"], "HPA vs PDB")
    # the migrate Job retries
    job = one("Job", "predictd-migrate")
    check(job["spec"]["backoffLimit"] >= 1, "backoffLimit")
    check_eq(job["spec"]["template"]["spec"]["containers"][0]["args"], ["migrate"])


@test
def the_placeholder_key_is_refused():
    placeholder = one("Secret", "predictd-key")["stringData"]["key"]
    p = cli("serve", env={"PREDICTD_API_KEY": placeholder, "PREDICTD_MODELS_DIR": TMP,
                          "PREDICTD_DATABASE_URL": "",
                          "PREDICTD_LISTEN": f"127.0.0.1:{free_port()}"},
            check_rc=False, timeout=60)
    check(p.returncode != 0 and "16 to 4096 printable" in p.stderr, p.stderr)


# ---------------------------------------------------------------------------
# Image and compose files.

@test
def the_image_recipe_and_build_context():
    df = dockerfile()
    froms = re.findall(r"^FROM\s+(\S+)", df, re.M)
    base = re.search(r"^ARG BASE=(\S+)", df, re.M)
    check(base and base.group(1) == "debian:12-slim", "pinned base debian:12-slim")
    check(all(f.startswith("${BASE}") for f in froms), froms)
    check(re.search(r"^HEALTHCHECK .*\n?.*CMD", df, re.M), "HEALTHCHECK")
    for label in ("title", "description", "version", "revision", "created"):
        check(f"org.opencontainers.image.{label}=" in df, label)
    check("PREDICTD_WEB_DIR=/app/web" in df and "PREDICTD_MIGRATIONS_DIR=/app/db" in df,
          "dashboard and migrations inside")
    with open(os.path.join(ROOT, ".dockerignore")) as f:
        ignored = {l.strip() for l in f if l.strip() and not l.startswith("#")}
    for must in (".git", "build", "build-*", ".run", ".predictd_key", "docker/predictd_key"):
        check(must in ignored, f".dockerignore lacks {must}")
    p = subprocess.run(["git", "-C", ROOT, "check-ignore", "-q", "docker/predictd_key"])
    if p.returncode == 128:
        raise Skip("not a git checkout")
    check_eq(p.returncode, 0, "docker/predictd_key is not git-ignored")


@test
def the_compose_file_keeps_what_the_stack_needs():
    with open(os.path.join(ROOT, "docker", "compose.yaml")) as f:
        c = yaml.safe_load(f)
    s = c["services"]
    for name in ("postgres", "redis", "predictd", "gateway"):
        check_eq(s[name].get("restart"), "unless-stopped", name)
    check(s["predictd"]["deploy"]["replicas"] >= 2, "replicas")
    check("-h" in s["postgres"]["healthcheck"]["test"], "PostgreSQL health check over TCP")
    drain = int(s["predictd"]["environment"]["PREDICTD_DRAIN_TIMEOUT"])
    grace = int(s["predictd"]["stop_grace_period"].rstrip("s"))
    check(grace > drain, f"stop_grace_period {grace} s <= drain {drain} s")
    mounts = s["predictd"]["volumes"]
    check("models:/models" in mounts, f"models volume writable: {mounts}")
    check("models" in c["volumes"], "named models volume")
    check_eq(s["predictd"]["depends_on"]["init"]["condition"], "service_completed_successfully")
    check_eq(s["init"]["depends_on"]["migrate"]["condition"], "service_completed_successfully")
    check_eq(s["migrate"]["depends_on"]["postgres"]["condition"], "service_healthy")


if __name__ == "__main__":
    sys.exit(run_tests())
