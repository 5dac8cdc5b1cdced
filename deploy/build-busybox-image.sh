#!/usr/bin/env bash
# Build claud/busybox:latest — FROM scratch around Debian's busybox-static —
# without any container registry. Idempotent: exits at once when the image
# exists (set FORCE=1 to rebuild).
set -euo pipefail

IMAGE="${IMAGE:-claud/busybox:latest}"
here="$(cd "$(dirname "$0")/.." && pwd)"
work="$here/.build/busybox"

if [ "${FORCE:-0}" != 1 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "image $IMAGE is present"
    exit 0
fi

rm -rf "$work" && mkdir -p "$work"
cd "$work"
if ! apt-get download busybox-static >/dev/null 2>&1; then
    # A fresh machine may have empty package lists.
    apt-get update -qq
    apt-get download busybox-static
fi
dpkg-deb -x busybox-static_*.deb root
cp root/bin/busybox busybox
cat > Dockerfile <<'DOCKERFILE'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "mkdir", "-p", "/usr/bin", "/sbin", "/usr/sbin", "/tmp", "/etc"]
RUN ["/bin/busybox", "--install", "-s"]
ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin
CMD ["sh"]
DOCKERFILE
DOCKER_BUILDKIT=0 docker build -q -t "$IMAGE" --label org.opencontainers.image.source=claud . >/dev/null
echo "built $IMAGE"
