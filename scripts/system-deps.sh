#!/usr/bin/env bash
# Debian tools the deployment tests use (tests/deploy):
#   promtool, prometheus  <- Debian package `prometheus` (2.42 on bookworm)
#   docker-compose        <- Debian package `docker-compose` (1.29, knows GPU reservations)
#   nginx                 <- Debian package `nginx-light` (the failover test's load balancer)
#   kubectl               <- Debian package `kubernetes-client` (kubectl kustomize, offline)
# With FACEGEN_PODMAN=1 also podman, runc, mmdebstrap and catatonit, for the opt-in (slow) podman stack test
# (tests/deploy/test_podman_stack.py, scripts/podman_stack.py); CI's default suite does not need them.
# and the browser the playground tests drive (tests/service/test_playground.py, via Playwright):
#   chromium              <- Debian package `chromium`
# With FACEGEN_PEERS=1 also Java for TorchServe (openjdk-17-jre-headless), for the opt-in
# `python -m bench --peers` and tests/bench/test_peers_smoke.py; CI's default suite does not need it.
# Installed only when missing and when we are root on a Debian/Ubuntu system (CI is);
# otherwise the tests that need them skip, each with a reason naming the package.
set -euo pipefail
need=()
{ command -v promtool && command -v prometheus; } >/dev/null || need+=(prometheus)
command -v docker-compose >/dev/null || need+=(docker-compose)
command -v chromium >/dev/null || need+=(chromium)
{ command -v nginx || [ -x /usr/sbin/nginx ]; } >/dev/null || need+=(nginx-light)
command -v kubectl >/dev/null || need+=(kubernetes-client)
if [ "${FACEGEN_PODMAN:-0}" = 1 ]; then
  for tool in podman runc mmdebstrap catatonit; do command -v "$tool" >/dev/null || need+=("$tool"); done
fi
if [ "${FACEGEN_PEERS:-0}" = 1 ]; then
  command -v java >/dev/null || need+=(openjdk-17-jre-headless)
fi
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "system-deps: ${need[*]} missing and this is not root on Debian/Ubuntu;" \
    "the deployment tests that need them will skip." >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
# The prometheus package would start a Prometheus daemon on :9090; the tests start their own.
# Debian's policy-rc.d hook (already there in Docker's Debian images) keeps services stopped.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
export PATH="$PATH:/usr/sbin"
for tool in promtool prometheus docker-compose nginx kubectl chromium; do
  command -v "$tool" >/dev/null || { echo "system-deps: $tool is still missing" >&2; exit 1; }
done
echo "system-deps: $(promtool --version 2>&1 | head -1); $(docker-compose version --short); $(chromium --version 2>/dev/null)"
