#!/usr/bin/env bash
# Private PostgreSQL 15 and Redis on free loopback ports, for `make run`
# (under .run/) and the test harness (under a temporary directory).
#
#   server/services.sh start DIR [--fast]   start both (reuses running ones), writes DIR/env
#   server/services.sh stop DIR             stop both
#   server/services.sh pg-stop DIR | pg-start DIR   stop/start PostgreSQL only (fault tests)
#   server/services.sh redis-stop DIR | redis-start DIR
#
# DIR/env holds `export PREDICTD_DATABASE_URL=...` and `export
# PREDICTD_REDIS_URL=...`. PostgreSQL refuses to run as root, so as root the
# cluster runs as the `postgres` system user in a directory it owns.
# --fast turns fsync off (tests only: the data is thrown away).
set -euo pipefail

cmd=${1:?usage: services.sh start|stop|pg-stop|pg-start|redis-stop|redis-start DIR}
dir=${2:?usage: services.sh $cmd DIR}
fast=${3:-}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$pgbin" ] || { echo "services: PostgreSQL server binaries not found (make deps)" >&2; exit 1; }

as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
    /usr/bin/python3 - <<'PY'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
}

wait_for() { # wait_for SECONDS COMMAND...
    local n=$(( $1 * 10 )); shift
    for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
    return 1
}

# The cluster's directory: DIR/pg, unless the cluster runs as the postgres
# user and cannot reach DIR (a checkout under /root, mode 0700 on a fresh
# Debian, made initdb fail with "Permission denied"); then a directory of its
# own under /var/tmp. The choice is recorded in DIR/pg.data so every command
# finds the same cluster.
pg_data() {
    if [ -f "$dir/pg.data" ]; then cat "$dir/pg.data"; return 0; fi
    local data=$dir/pg
    if [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -x "$dir" 2>/dev/null; then
        data=$(mktemp -d /var/tmp/predictd-pg.XXXXXX)
    fi
    echo "$data" >"$dir/pg.data"
    echo "$data"
}

pg_start() {
    local data; data=$(pg_data)
    if [ ! -f "$data/PG_VERSION" ]; then
        mkdir -p "$data"
        chmod 700 "$data"
        [ "$(id -u)" = 0 ] && chown postgres:postgres "$data"
        as_pg "$pgbin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
            || { cat "$dir/initdb.log" >&2; exit 1; }
    fi
    if [ -f "$dir/pg.port" ] && as_pg "$pgbin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        return 0
    fi
    # A port chosen here is free when chosen but may be taken before the
    # server binds it: then another one is tried. A recorded port (a restart
    # after pg-stop) is kept: clients already know it.
    local port fresh=0 attempt
    if [ -f "$dir/pg.port" ]; then port=$(cat "$dir/pg.port"); else port=$(free_port); fresh=1; fi
    for attempt in 1 2 3 4 5; do
        echo "$port" >"$dir/pg.port"
        local opts="-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$data -c max_connections=200"
        [ "$fast" = --fast ] && opts="$opts -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        rm -f "$data/server.log"
        as_pg "$pgbin/pg_ctl" -D "$data" -l "$data/server.log" -o "$opts" -w -t 30 start >/dev/null && break
        if [ "$fresh" = 1 ] && [ "$attempt" -lt 5 ] && grep -q "could not bind\|already in use" "$data/server.log"; then
            port=$(free_port)
            continue
        fi
        tail -n 20 "$data/server.log" >&2
        exit 1
    done
    as_pg "$pgbin/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -qtAc \
        "SELECT 1 FROM pg_database WHERE datname='predictd'" | grep -q 1 \
        || as_pg "$pgbin/createdb" -h 127.0.0.1 -p "$port" -U postgres predictd
}

pg_stop() {
    local data; data=$(cat "$dir/pg.data" 2>/dev/null || echo "$dir/pg")
    [ -f "$data/PG_VERSION" ] || return 0
    as_pg "$pgbin/pg_ctl" -D "$data" -m fast -w -t 30 stop >/dev/null 2>&1 || true
}

redis_start() {
    if [ -f "$dir/redis.pid" ] && kill -0 "$(cat "$dir/redis.pid")" 2>/dev/null; then return 0; fi
    # as for PostgreSQL: a freshly chosen port taken meanwhile is replaced
    local port fresh=0 attempt
    if [ -f "$dir/redis.port" ]; then port=$(cat "$dir/redis.port"); else port=$(free_port); fresh=1; fi
    mkdir -p "$dir/redis"
    for attempt in 1 2 3 4 5; do
        echo "$port" >"$dir/redis.port"
        : >"$dir/redis/redis.log"
        redis-server --bind 127.0.0.1 --port "$port" --dir "$dir/redis" --save '' --appendonly no \
            --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis/redis.log" >/dev/null
        # the pid file names our server: a ping alone could reach another one on the port
        if wait_for 10 test -s "$dir/redis.pid" && wait_for 10 redis-cli -p "$port" ping; then
            return 0
        fi
        if [ "$fresh" = 1 ] && [ "$attempt" -lt 5 ] && grep -q "already in use\|Could not create server TCP" "$dir/redis/redis.log"; then
            port=$(free_port)
            continue
        fi
        echo "services: redis did not start" >&2
        exit 1
    done
}

redis_stop() {
    if [ -f "$dir/redis.pid" ]; then
        local pid; pid=$(cat "$dir/redis.pid")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        rm -f "$dir/redis.pid"
    fi
}

write_env() {
    cat >"$dir/env" <<ENV
export PREDICTD_DATABASE_URL='postgresql://postgres@127.0.0.1:$(cat "$dir/pg.port")/predictd?connect_timeout=3'
export PREDICTD_REDIS_URL='redis://127.0.0.1:$(cat "$dir/redis.port")/0'
ENV
}

# The parent directories must be traversable by the postgres user.
[ "$(id -u)" = 0 ] && chmod o+x "$dir" 2>/dev/null || true

case "$cmd" in
    start) pg_start; redis_start; write_env; cat "$dir/env" ;;
    stop) redis_stop; pg_stop ;;
    pg-stop) pg_stop ;;
    pg-start) pg_start ;;
    redis-stop) redis_stop ;;
    redis-start) redis_start ;;
    *) echo "services: unknown command $cmd" >&2; exit 2 ;;
esac
