#!/usr/bin/env bash
# Build claud/python-base:3.11 without any container registry: debootstrap a
# minimal Debian bookworm (Debian's Python 3.11, ca-certificates, iproute2 for
# the broadcast discovery) from the Debian mirror this machine's apt already
# uses, then `docker import` it. It stands in for python:3.11-slim in
# Dockerfile.master and Dockerfile.slave (--build-arg BASE_IMAGE=...).
#
# Idempotent: exits at once when the image exists (FORCE=1 rebuilds).
# Environment: IMAGE (default claud/python-base:3.11), SUITE (bookworm),
#              MIRROR (default: the Debian mirror of /etc/apt, else deb.debian.org).
# Needs root and debootstrap (installed with apt-get when missing).
set -euo pipefail

IMAGE="${IMAGE:-claud/python-base:3.11}"
SUITE="${SUITE:-bookworm}"
here="$(cd "$(dirname "$0")/.." && pwd)"
work="$here/.build/base"

if [ "${FORCE:-0}" != 1 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "image $IMAGE is present"
    exit 0
fi

mkdir -p "$work"
# Two builds (make images in two shells, or cluster.sh up) may get here at once: one at a time.
exec 9>"$work/.lock"
flock 9
if [ "${FORCE:-0}" != 1 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "image $IMAGE is present"
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    echo "build-base-image.sh: debootstrap needs root (run it with sudo)" >&2
    exit 1
fi

# --- which mirror: the first Debian (not -security/-updates) source of this machine's apt
detect_mirror() {
    local f
    # deb822 sources: a stanza whose Suites has exactly $SUITE; its first URI.
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk -v suite="$SUITE" '
            function flush() { if (ok && uri != "") { print uri; found = 1; exit } ok = 0; uri = "" }
            /^[[:space:]]*$/ { flush(); next }
            /^[[:space:]]*#/ { next }
            tolower($1) == "types:" { types = $0 }
            tolower($1) == "uris:" { uri = $2 }
            tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == suite) ok = 1 }
            tolower($1) == "enabled:" && tolower($2) == "no" { ok = 0; uri = ""; skip = 1 }
            END { if (!found && ok && uri != "") print uri }
        ' "$f"
    done
    # One-line sources: "deb [options] URI SUITE COMPONENTS..."
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" | awk -v suite="$SUITE" '$1 == "deb" && $3 == suite { print $2 }'
    done
}
if [ -z "${MIRROR:-}" ]; then
    MIRROR="$(detect_mirror | grep -Ei '^(https?|file)://' | head -n 1 || true)"
    MIRROR="${MIRROR:-http://deb.debian.org/debian}"
fi
MIRROR="${MIRROR%/}"
echo "building $IMAGE: debootstrap --variant=minbase $SUITE from $MIRROR"

if ! command -v debootstrap >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
keyring_opt=()
[ -f "$keyring" ] && keyring_opt=(--keyring="$keyring")

rootfs="$work/rootfs"
umount_all() {
    # debootstrap mounts /proc and /sys in the target; never leave them behind.
    local m
    for m in $(awk -v r="$rootfs" '$2 ~ "^"r { print $2 }' /proc/mounts | sort -r); do
        umount -l "$m" 2>/dev/null || true
    done
}
trap umount_all EXIT
umount_all
rm -rf "$rootfs"
start=$SECONDS

# Packages cached between builds (FORCE=1 then needs no download at all).
mkdir -p "$work/debs"
debootstrap --variant=minbase --include=python3,ca-certificates,iproute2 \
    --cache-dir="$work/debs" "${keyring_opt[@]}" \
    "$SUITE" "$rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 || {
    echo "debootstrap failed; the end of $work/debootstrap.log:" >&2
    tail -n 20 "$work/debootstrap.log" >&2
    exit 1
}
umount_all

# --- make it small and container-friendly (what the official slim images do)
cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
EOF
cat >"$rootfs/etc/dpkg/dpkg.cfg.d/01-claud-slim" <<'EOF'
# No documentation, manuals or translations in this image.
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EOF
cat >"$rootfs/etc/apt/apt.conf.d/01-claud-slim" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
EOF
find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
rm -rf "$rootfs"/usr/share/{man,info,locale,lintian}/* \
       "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin \
       "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/* \
       "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/lib/dpkg/*-old \
       "$rootfs"/tmp/* "$rootfs"/root/.cache
find "$rootfs/usr/lib/python3" "$rootfs/usr/lib/python3.11" -name __pycache__ -type d -prune -exec rm -rf {} + 2>/dev/null || true
# `python` as in the official image, which the Dockerfiles may rely on.
ln -sf /usr/bin/python3 "$rootfs/usr/local/bin/python"
# Docker writes these at run time.
: >"$rootfs/etc/hostname"
: >"$rootfs/etc/resolv.conf"
# A fresh machine-id is the engine's business, not baked into the image.
: >"$rootfs/etc/machine-id"

version="$(chroot "$rootfs" /usr/bin/python3 -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"
tar --numeric-owner -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change "ENV PYTHON_VERSION=$version" \
    --change 'CMD ["python3"]' \
    --change "LABEL org.opencontainers.image.title=claud-python-base org.opencontainers.image.base.name=debian:$SUITE org.opencontainers.image.source=claud" \
    --message "debootstrap --variant=minbase $SUITE + python3 $version" \
    - "$IMAGE" >/dev/null
rm -rf "$rootfs"
echo "built $IMAGE (python $version) in $((SECONDS - start))s: $(docker image inspect "$IMAGE" --format '{{.Size}}' | awk '{ printf "%.0f MB", $1 / 1e6 }')"
