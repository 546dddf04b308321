#!/bin/sh
# Build dependencies of predictd (Debian 12). Idempotent.
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends build-essential pkg-config git \
    libulfius-dev libjansson-dev libpq-dev libhiredis-dev libprotobuf-c-dev protobuf-c-compiler \
    libcurl4-gnutls-dev libssl-dev zlib1g-dev
