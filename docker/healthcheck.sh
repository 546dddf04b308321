#!/bin/sh
# The image's HEALTHCHECK: GET /health/live on the address predictd listens
# on (PREDICTD_LISTEN, host:port; 0.0.0.0 is probed on 127.0.0.1).
listen=${PREDICTD_LISTEN:-127.0.0.1:8080}
host=${listen%:*}
port=${listen##*:}
case "$host" in 0.0.0.0 | "") host=127.0.0.1 ;; esac
exec curl -fsS -o /dev/null --max-time 2 "http://$host:$port/health/live"
