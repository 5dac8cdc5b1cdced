#!/usr/bin/env bash
# The tools the suite drives besides Docker: headless Chromium, for the
# dashboard's XSS and CSP tests (tests/integration/test_dashboard.py), and
# Prometheus' promtool, which checks /metrics (tests/integration/test_metrics.py).
# Installed from Debian's packages when missing and this user may; otherwise one
# line says so and those tests skip. Progress on stderr; seconds when already there.
set -euo pipefail
exec >&2
here="$(cd "$(dirname "$0")/.." && pwd)"

# promtool only, unpacked from Debian's prometheus package into .build/: installing
# the package would also start a Prometheus server on machines without systemd.
tools="$here/.build/tools"
if ! command -v promtool >/dev/null 2>&1 && [ ! -x "$tools/promtool" ]; then
    if command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1; then
        start=$SECONDS
        echo "test-tools: fetching promtool (Debian's prometheus package)"
        mkdir -p "$tools" && work=$(mktemp -d)
        if [ "$(id -u)" = 0 ] && [ -z "$(ls /var/lib/apt/lists/ 2>/dev/null | grep -v lock)" ]; then apt-get update -qq; fi
        if (cd "$work" && apt-get download -qq prometheus >/dev/null 2>&1) \
            || { [ "$(id -u)" = 0 ] && apt-get update -qq && (cd "$work" && apt-get download -qq prometheus >/dev/null); }; then
            dpkg-deb -x "$work"/prometheus_*.deb "$work/root"
            cp "$work/root/usr/bin/promtool" "$tools/promtool"
            echo "test-tools: promtool ready in ${tools#"$here"/} ($((SECONDS - start))s)"
        else
            echo "test-tools: could not fetch Debian's prometheus package: the promtool check will skip"
        fi
        rm -rf "$work"
    else
        echo "test-tools: promtool is missing and there is no apt-get here: the promtool check will skip"
    fi
fi

if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "test-tools: chromium is missing and cannot be installed here (needs root and apt-get):" \
         "the dashboard tests will skip; install it with: apt-get install -y chromium"
    exit 0
fi
start=$SECONDS
echo "test-tools: installing chromium from Debian's packages (a minute or two)"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
echo "test-tools: chromium installed ($((SECONDS - start))s)"
