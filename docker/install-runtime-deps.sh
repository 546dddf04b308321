#!/bin/sh
# Runtime libraries of predictd (Debian 12), plus curl for the health check.
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends libulfius2.7 libjansson4 libpq5 \
    libhiredis0.14 libprotobuf-c1 libcurl3-gnutls libssl3 curl ca-certificates
[ "${KEEP_APT_LISTS:-0}" = 1 ] || rm -rf /var/lib/apt/lists/*
