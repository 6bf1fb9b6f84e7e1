#!/usr/bin/env bash
# Debian tools the deployment tests use (promtool, prometheus, docker-compose).
# Installed only when missing and when we are root (CI is); otherwise those tests skip.
set -euo pipefail
need=()
command -v promtool >/dev/null || need+=(prometheus)
command -v docker-compose >/dev/null || need+=(docker-compose)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "system-deps: ${need[*]} missing and not root; the tests that need them will skip." >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
