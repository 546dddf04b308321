#!/usr/bin/env bash
# `make run`: the service on an embedded default.
#
# Without PREDICTD_DATABASE_URL / PREDICTD_REDIS_URL it starts a private
# PostgreSQL and Redis under .run/ on free loopback ports (as the postgres
# user when run as root), applies migrations, seeds demo candles if the
# table is empty, trains demo models if the repository is empty, and serves
# on PREDICTD_LISTEN (127.0.0.1:8080) in the foreground. Ctrl-C stops
# everything it started. With the variables set it uses those servers and
# starts none.
set -euo pipefail
bin=${1:?usage: run.sh PATH_TO_PREDICTD}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
run=$root/.run
mkdir -p "$run"
started=0
pid= # predictd serve, while it runs

stop_services() {
    if [ "$started" = 1 ]; then
        echo "run: stopping the private PostgreSQL and Redis"
        server/services.sh stop "$run/services" >/dev/null 2>&1 || true
        started=0
    fi
}
# Whatever ends the script (Ctrl-C, SIGTERM, a hangup, an error) stops serve
# first (one SIGTERM: it drains), then the services. Before, a hangup ended
# bash without stopping serve (which takes SIGHUP as "rescan") and left it
# running alone.
cleanup() {
    if [ -n "$pid" ]; then
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        pid=
    fi
    stop_services
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

if [ -z "${PREDICTD_DATABASE_URL:-}" ]; then
    echo "run: starting a private PostgreSQL and Redis under .run/"
    started=1 # before: a half-done start (PostgreSQL up, Redis not) is stopped too
    server/services.sh start "$run/services" >/dev/null
    # shellcheck disable=SC1091
    . "$run/services/env"
fi

export PREDICTD_MODELS_DIR=${PREDICTD_MODELS_DIR:-$root/models}
"$bin" migrate
# The demo: real 1m candles of data/demo relabelled to end now, kept live by
# the demo feed (one real minute a minute). PREDICTD_FEED set to another feed
# (an exchange) is used as it is, without demo data.
export PREDICTD_FEED=${PREDICTD_FEED:-demo}
case $PREDICTD_FEED in
demo | demo:*)
    demo_files=${PREDICTD_FEED#demo}
    demo_files=${demo_files#:}
    "$bin" seed --if-empty --demo ${demo_files:+--demo-files "$demo_files"} \
        ${PREDICTD_DEMO_BEHIND:+--behind "$PREDICTD_DEMO_BEHIND"}
    ;;
esac

if ! find "$PREDICTD_MODELS_DIR" -mindepth 3 -maxdepth 3 -type d -regex '.*/[1-9][0-9]*' 2>/dev/null | grep -q .; then
    echo "run: the model repository is empty: training demo models (softmax, one per series)"
    # Eight days of 1m history: enough for 1m, 5m and 15m with the default
    # window, for 1h with a shorter one, not for 4h and 1d (they answer
    # "insufficient data" until history grows).
    for tf in 1m 5m 15m; do
        "$bin" train --all --timeframe "$tf" --seed 1
    done
    "$bin" train --all --timeframe 1h --seed 1 --window 64 ||
        echo "run: some 1h models are missing (too little history)"
fi

if [ -z "${PREDICTD_API_KEY:-}" ] && [ ! -f "${PREDICTD_API_KEY_FILE:-$root/.predictd_key}" ]; then
    "$bin" keygen --api-key-file "${PREDICTD_API_KEY_FILE:-$root/.predictd_key}"
fi

listen=${PREDICTD_LISTEN:-127.0.0.1:8080}
cat <<MSG

predictd is starting on http://$listen  (Ctrl-C stops it)

  curl 'http://$listen/api/predictions?timeframe=1m'
  curl 'http://$listen/api/predictions/ETHBTC?timeframe=15m'
  curl 'http://$listen/api/predictions/ETHBTC/summary'
  curl 'http://$listen/api/models'
  curl 'http://$listen/health/ready'
  curl 'http://$listen/health/status'     # "feed": "demo-replay" while the demo runs
  curl 'http://$listen/metrics'
  curl -H "X-API-Key: \$(cat .predictd_key)" 'http://$listen/admin/models'

MSG
# not exec: the trap must stop the services when serve exits. serve runs in a
# session of its own so the terminal's SIGINT (Ctrl-C) or SIGHUP reaches only
# this script, which stops serve with one SIGTERM: before, serve got the
# terminal's SIGINT and then the forwarded SIGTERM, and a second signal during
# its drain ends it at once. (setsid does not fork here: a background job is
# no process group leader, so $! is serve's own pid.)
setsid "$bin" serve &
pid=$!
wait "$pid" || true
pid=
