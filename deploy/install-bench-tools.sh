#!/usr/bin/env bash
# The peers bench/compare.py measures CLAUD against, from Debian's packages:
# etcd (etcd-server: a 3-member etcd on loopback, the write and failover peer)
# and wrk (the HTTP load generator both clusters get). compare.py installs
# nothing itself: it names this script when one is missing. Docker (Swarm and
# the bare SDK, the start peers) is deploy/install-docker.sh.
# Debian's etcd-server package would start an etcd on machines with systemd:
# it is stopped and disabled here, since compare.py starts its own members.
set -euo pipefail
exec >&2
missing=()
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
if [ ${#missing[@]} -eq 0 ]; then
    echo "bench-tools: etcd and wrk are here"
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "bench-tools: ${missing[*]} missing; as root on Debian: apt-get install -y ${missing[*]}"
    exit 1
fi
echo "bench-tools: installing ${missing[*]} from Debian's packages"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
if command -v systemctl >/dev/null 2>&1 && systemctl is-system-running >/dev/null 2>&1; then
    systemctl disable --now etcd >/dev/null 2>&1 || true
fi
echo "bench-tools: ready ($(etcd --version | head -1); $(wrk --version 2>&1 | head -1))"
