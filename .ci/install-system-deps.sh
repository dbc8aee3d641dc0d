#!/usr/bin/env bash
# Debian packages the deployment and browser tests need, installed only when missing (idempotent):
#   prometheus      - promtool (check/test rules, check metrics) and the real server for the scrape test
#   systemd         - systemd-analyze verify for the unit files
#   chromium        - the headless browser the review app's browser test drives
#   chromium-driver - Debian's chromedriver for that chromium (Selenium is given its path: nothing is downloaded)
# Runs `apt-get update` at most once. Needs root (or sudo) when something is missing.
set -euo pipefail

need=()
command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)

if [ ${#need[@]} -eq 0 ]; then
    echo "install-system-deps: promtool, prometheus, systemd-analyze, chromium and chromedriver already present"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

echo "install-system-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# --no-install-recommends keeps the image small; the server is never started as a service here
# (policy-rc.d or no running systemd in containers), only its binary is used.
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"

command -v promtool >/dev/null && command -v prometheus >/dev/null && command -v systemd-analyze >/dev/null
command -v chromium >/dev/null && command -v chromedriver >/dev/null
echo "install-system-deps: done"
