#!/usr/bin/env bash
# For a machine with no Docker engine: install Debian's docker.io and start
# dockerd in the background (there may be no systemd), then wait until it answers.
set -euo pipefail

if docker info >/dev/null 2>&1; then
    echo "a Docker engine already answers"
    exit 0
fi
if ! command -v dockerd >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
    nohup dockerd >/var/log/dockerd.log 2>&1 &
fi
for _ in $(seq 1 60); do
    if docker info >/dev/null 2>&1; then
        echo "dockerd is up"
        exit 0
    fi
    sleep 1
done
echo "dockerd did not come up; see /var/log/dockerd.log" >&2
exit 1
