#!/bin/sh
# The dashboard test drives Debian's Chromium (/usr/bin/chromium) headless. Install it when it
# is missing and apt can (root); otherwise say how, and fail: a test run must not pass without it.
set -eu
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's chromium for the dashboard test" >&2
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null
    exit 0
fi
echo "no /usr/bin/chromium: install Debian's chromium package (sudo apt-get install chromium)" >&2
exit 1
