#!/usr/bin/env bash
# The tools the suite drives besides Docker: headless Chromium, for the
# dashboard's XSS and CSP tests (tests/integration/test_dashboard.py). Installed
# from Debian's packages when missing and this user may; otherwise one line says
# so and those tests skip. Progress on stderr; seconds when it is already there.
set -euo pipefail
exec >&2
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
