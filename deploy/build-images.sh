#!/usr/bin/env bash
# Build the images of the compose cluster: claud/master and claud/slave, plus
# claud/busybox (the jobs' test image). Offline when no registry answers: the
# base image is then debootstrapped (deploy/build-base-image.sh) and CLAUD is
# installed from wheels built on this host (deploy/build-wheels.sh).
#
# Base image, in order: $BASE_IMAGE if set; else claud/python-base:3.11 if
# present; else python:3.11-slim if present or pullable; else built offline.
# Fast when nothing changed (every step is cached or skipped): `make test`
# runs it before every test run, so that no test ever waits for a build.
# Progress goes to stderr, one line per step (what, how long), so that a cold
# build (minutes: debootstrap, wheels) shows where its time goes.
# Environment: MASTER_IMAGE, SLAVE_IMAGE (default claud/master:latest, claud/slave:latest).
set -euo pipefail
# Nothing this script prints is a result: all of it is progress.
exec >&2

here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
MASTER_IMAGE="${MASTER_IMAGE:-claud/master:latest}"
SLAVE_IMAGE="${SLAVE_IMAGE:-claud/slave:latest}"
OFFLINE_BASE=claud/python-base:3.11
PUBLIC_BASE=python:3.11-slim
have() { docker image inspect "$1" >/dev/null 2>&1; }
start=$SECONDS
step_start=$SECONDS
done_step() {  # done_step WHAT: the progress line of the step that just ended
    echo "images: $1 ($((SECONDS - step_start))s)"
    step_start=$SECONDS
}

mkdir -p .build
exec 8>.build/images.lock
flock 8

if [ -z "${BASE_IMAGE:-}" ]; then
    if have "$OFFLINE_BASE"; then
        BASE_IMAGE="$OFFLINE_BASE"
    elif have "$PUBLIC_BASE" || timeout 60 docker pull -q "$PUBLIC_BASE" >/dev/null 2>&1; then
        BASE_IMAGE="$PUBLIC_BASE"
    else
        echo "no registry answers: building $OFFLINE_BASE offline"
        bash deploy/build-base-image.sh
        BASE_IMAGE="$OFFLINE_BASE"
    fi
elif ! have "$BASE_IMAGE"; then
    if [ "$BASE_IMAGE" = "$OFFLINE_BASE" ]; then
        bash deploy/build-base-image.sh
    else
        docker pull -q "$BASE_IMAGE" >/dev/null
    fi
fi
done_step "base image $BASE_IMAGE ready"

bash deploy/build-wheels.sh
done_step "wheels in .build/wheels ready"
bash deploy/build-busybox-image.sh
done_step "image claud/busybox:latest ready"

# The legacy builder needs nothing beyond the engine (no buildx here); it
# caches each step, so an unchanged tree rebuilds in seconds. (Its deprecation
# notice is filtered out; errors are not.)
build() {  # build DOCKERFILE IMAGE
    local status=0
    DOCKER_BUILDKIT=0 docker build -q -f "$1" -t "$2" --build-arg BASE_IMAGE="$BASE_IMAGE" . \
        >/dev/null 2>.build/docker-build.err || status=$?
    grep -v -e DEPRECATED -e 'BuildKit is currently disabled' -e 'environment-variable\.' -e '^$' \
        .build/docker-build.err >&2 || true
    if [ "$status" != 0 ]; then echo "docker build -f $1 failed" >&2; exit "$status"; fi
    done_step "image $2 ready, $(docker image inspect "$2" --format '{{.Size}}' | awk '{ printf "%.0f MB", $1 / 1e6 }')"
}
build Dockerfile.master "$MASTER_IMAGE"
build Dockerfile.slave "$SLAVE_IMAGE"
# The images these builds replaced would pile up: remove them (only them: the
# build cache, untagged stage images included, is what makes the next build fast).
dangling=$(docker images -q --filter dangling=true --filter label=claud.image)
[ -z "$dangling" ] || docker rmi $dangling >/dev/null 2>&1 || true
echo "images: all ready in $((SECONDS - start))s"
