#!/bin/sh
# Builds predictd and lays out the runtime tree under $1:
#   bin/predictd, bin/healthcheck, bin/predictd-init, db/*.sql, web/
set -eu
out=${1:?usage: build.sh OUTDIR}
here=$(dirname "$0")
make -j"$(nproc)" BUILD=build-docker COMMIT="${PREDICTD_COMMIT:-unknown}" all
mkdir -p "$out/bin" "$out/db" "$out/web"
cp build-docker/predictd "$out/bin/"
cp "$here/healthcheck.sh" "$out/bin/healthcheck"
cp "$here/init.sh" "$out/bin/predictd-init"
chmod 0755 "$out/bin/healthcheck" "$out/bin/predictd-init"
cp db/*.sql "$out/db/"
cp -R web/. "$out/web/"
"$out/bin/predictd" version
