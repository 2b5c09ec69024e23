#!/usr/bin/env bash
# Debian packages the browser and PostgreSQL tests need, installed only where missing (idempotent, ~1 min the first
# time). Nothing is started here: the PostgreSQL test starts its own server (initdb + pg_ctl on a temporary folder and
# a free port on 127.0.0.1, as the `postgres` user when run as root) and the UI test its own `dagster dev`.
#   chromium    headless browser that Playwright drives (never `playwright install`: no browser downloads)
#   postgresql  server binaries (/usr/lib/postgresql/*/bin) and the `postgres` system user
set -euo pipefail

need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
getent passwd postgres >/dev/null || need+=(postgresql)

if [ "${#need[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "services.sh: installing ${need[*]}"
  $sudo apt-get update -qq
  # policy-rc.d 101: the package's own cluster is not started (the tests run their own server)
  if [ -z "$sudo" ] && [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

chromium --version
ls -d /usr/lib/postgresql/*/bin
