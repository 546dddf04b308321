#!/bin/sh
# Gateway start-up step (mounted into nginx's /docker-entrypoint.d/, run by
# the image's entrypoint before nginx starts). Writes the two parts of the
# configuration that depend on where the gateway runs, included by
# nginx.conf from /etc/nginx/predictd.d/:
#   resolver.conf  the container's DNS server (Docker's 127.0.0.11, podman's
#                  aardvark-dns, ...) from /etc/resolv.conf, so the
#                  replicas' name is re-resolved while nginx runs
#   admin.conf     who may reach /admin/ through the gateway: the addresses
#                  or CIDRs in PREDICTD_GATEWAY_ADMIN_FROM (space or comma
#                  separated); empty (the default): nobody
set -eu
out=/etc/nginx/predictd.d
mkdir -p "$out"

# Only the first nameserver: the engine's own. nginx asks its resolvers in
# turn, and a second one (podman adds the host's) does not know the
# replicas' name: every other lookup would fail with a 502.
ns=$(awk '$1 == "nameserver" { print $2; exit }' /etc/resolv.conf)
if [ -z "$ns" ]; then
    echo "gateway: no nameserver in /etc/resolv.conf; using 127.0.0.11" >&2
    ns=127.0.0.11
fi
case "$ns" in *:*) ns="[$ns]" ;; esac
servers=" $ns"
echo "resolver$servers valid=5s ipv6=off;" >"$out/resolver.conf"
echo "resolver_timeout 3s;" >>"$out/resolver.conf"

{
    echo "geo \$predictd_admin {"
    default=0
    for a in $(echo "${PREDICTD_GATEWAY_ADMIN_FROM:-}" | tr ',' ' '); do
        case "$a" in 0.0.0.0/0) default=1 ;; *) echo "    $a 1;" ;; esac
    done
    echo "    default $default;"
    echo "}"
} >"$out/admin.conf"
echo "gateway: resolver$servers; admin routes open to: ${PREDICTD_GATEWAY_ADMIN_FROM:-nobody}" >&2
