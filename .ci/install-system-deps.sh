#!/usr/bin/env bash
# Debian packages the deployment and browser tests need, installed only when missing (idempotent):
#   prometheus      - promtool (check/test rules, check metrics) and the real server for the scrape test
#   systemd         - systemd-analyze verify for the unit files
#   chromium        - the headless browser the review app's browser test drives
#   chromium-driver - Debian's chromedriver for that chromium (Selenium is given its path: nothing is downloaded)
#   postgresql      - initdb, pg_ctl and postgres (/usr/lib/postgresql/<ver>/bin) for the throwaway server
#                     the PostgreSQL catalogue tests start; Debian's own cluster is not created nor used
# Also creates the unprivileged system user `xtalwatch-pg` that runs that test server when the tests run
# as root (PostgreSQL refuses to run as root). Runs `apt-get update` at most once. Needs root (or sudo)
# when something is missing.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

have_postgres_server() { ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; }

need=()
command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
have_postgres_server || need+=(postgresql)

if [ ${#need[@]} -eq 0 ]; then
    echo "install-system-deps: promtool, prometheus, systemd-analyze, chromium, chromedriver and postgresql already present"
else
    echo "install-system-deps: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if [[ " ${need[*]} " == *" postgresql "* ]]; then
        # Tell postgresql-common not to create (and start) the `main` cluster: the tests start their own.
        $SUDO mkdir -p /etc/postgresql-common/createcluster.d
        echo "create_main_cluster = false" | $SUDO tee /etc/postgresql-common/createcluster.d/xtalwatch.conf >/dev/null
    fi
    $SUDO apt-get update -qq
    # --no-install-recommends keeps the image small; the servers are never started as services here
    # (policy-rc.d or no running systemd in containers), only their binaries are used.
    $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

if ! getent passwd xtalwatch-pg >/dev/null; then
    echo "install-system-deps: creating system user xtalwatch-pg"
    $SUDO useradd --system --no-create-home --shell /usr/sbin/nologin xtalwatch-pg
fi

command -v promtool >/dev/null && command -v prometheus >/dev/null && command -v systemd-analyze >/dev/null
command -v chromium >/dev/null && command -v chromedriver >/dev/null
have_postgres_server
getent passwd xtalwatch-pg >/dev/null
echo "install-system-deps: done"
