#!/bin/sh
# Builds predictd and lays out the runtime tree under $1 (bin/predictd, db/).
set -eu
out=${1:?usage: build.sh OUTDIR}
make -j"$(nproc)" BUILD=build-docker all
mkdir -p "$out/bin" "$out/db"
cp build-docker/predictd "$out/bin/"
cp db/*.sql "$out/db/"
"$out/bin/predictd" version
