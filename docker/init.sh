#!/bin/sh
# One-shot jobs of the container deployments (compose services `migrate` and
# `init`, the Kubernetes migrate Job). Exits 0 when done, non-zero otherwise.
#
#   predictd-init migrate   applies db/ migrations, retrying while the
#                           database is not reachable yet (PostgreSQL's first
#                           start answers on its socket before it listens on
#                           TCP): PREDICTD_INIT_TRIES (30) x 2 s
#   predictd-init demo      seeds the demo candles when the table is empty,
#                           writes an admin key to PREDICTD_API_KEY_FILE when
#                           neither it nor PREDICTD_API_KEY exists, and trains
#                           the demo models (softmax, one per series) when the
#                           model repository (PREDICTD_MODELS_DIR) has no
#                           version yet. Idempotent: a second run does nothing.
set -eu
bin=/app/bin/predictd
[ -x "$bin" ] || bin=predictd
models=${PREDICTD_MODELS_DIR:-/models}

migrate() {
    tries=${PREDICTD_INIT_TRIES:-30}
    n=1
    while ! "$bin" migrate; do
        if [ "$n" -ge "$tries" ]; then
            echo "predictd-init: migrate failed $n times, giving up" >&2
            exit 1
        fi
        echo "predictd-init: migrate failed (try $n of $tries), retrying in 2 s" >&2
        n=$((n + 1))
        sleep 2
    done
}

has_versions() {
    find "$models" -mindepth 3 -maxdepth 3 -type d -name '[1-9]*' 2>/dev/null | grep -q .
}

demo() {
    "$bin" seed --if-empty
    if [ -z "${PREDICTD_API_KEY:-}" ] && [ -n "${PREDICTD_API_KEY_FILE:-}" ] &&
        [ ! -e "$PREDICTD_API_KEY_FILE" ]; then
        "$bin" keygen --api-key-file "$PREDICTD_API_KEY_FILE"
    fi
    if has_versions; then
        echo "predictd-init: $models already has models; not training"
        return 0
    fi
    echo "predictd-init: $models is empty: training the demo models (softmax, one per series)"
    # the seeded candles are a random walk: no model beats its baselines on
    # them, so --force publishes them anyway (they answer NO_TRADE,
    # below_baseline, with the figures), as `make run` does
    for tf in ${PREDICTD_INIT_TIMEFRAMES:-15m 1h 4h 1d}; do
        "$bin" train --all --timeframe "$tf" --seed 1 --force
    done
}

case "${1:-}" in
migrate) migrate ;;
demo) demo ;;
*)
    echo "usage: predictd-init migrate|demo" >&2
    exit 2
    ;;
esac
