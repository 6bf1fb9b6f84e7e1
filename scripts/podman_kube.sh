#!/usr/bin/env bash
# The Kubernetes Deployment (deploy/kubernetes/base, rendered by kustomize) run by `podman play
# kube` on one machine: no cluster, but the pod's real shape (init container filling the model
# store volume, uid 10001, read-only root filesystem, read-only /models, writable /tmp, the
# FACEGEN_* settings, the SIGTERM drain) runs as written.
#
#   bash scripts/podman_kube.sh        # after scripts/podman_stack.py built localhost/facegen:cpu
#
# Changes to the rendered Deployment, all for one machine without a cluster network: 1 replica;
# the host's network (podman 4.3 here has no bridge DNS), so the service listens on 127.0.0.1 at
# a free port, the container port is dropped and the probes use that port number; the local image
# name; 1 torch thread and warm-up batch [1] (a shared 2-core machine). Needs podman, runc,
# catatonit (podman's pause image) and kubectl. podman 4.3 starts the main container too early
# when the init container is slow (it reports "cannot remove container ... as it is running"),
# so the script starts it itself once the init container has exited.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'podman --runtime runc --cgroup-manager=cgroupfs pod rm -f facegen-pod-0 >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
# podman's default ulimits exceed this container host's hard limits (runc: "error setting rlimits").
cat >"$work/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
EOF
export CONTAINERS_CONF="$work/containers.conf"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
kubectl kustomize deploy/kubernetes/base | PORT=$port python3 -c '
import os, sys, yaml
dep = next(d for d in yaml.safe_load_all(sys.stdin) if d and d["kind"] == "Deployment")
dep["spec"]["replicas"] = 1
pod = dep["spec"]["template"]["spec"]
port = int(os.environ["PORT"])
for c in pod["initContainers"] + pod["containers"]:
    c["image"] = "localhost/facegen:cpu"
c = pod["containers"][0]
c.pop("ports")
for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
    c[probe]["httpGet"]["port"] = port
env = {e["name"]: e["value"] for e in c["env"]}
env.update(FACEGEN_HOST="127.0.0.1", FACEGEN_PORT=str(port), FACEGEN_TORCH_THREADS="1",
           FACEGEN_WARMUP_BATCH_SIZES="[1]")
c["env"] = [{"name": k, "value": v} for k, v in env.items()]
yaml.safe_dump(dep, sys.stdout)
' >"$work/deployment.yaml"
podman play kube --network host "$work/deployment.yaml" || true
for _ in $(seq 1 120); do
  [ "$(podman inspect facegen-pod-0-model-store --format '{{.State.Status}}' 2>/dev/null)" = exited ] && break
  sleep 1
done
echo "init container exit code: $(podman inspect facegen-pod-0-model-store --format '{{.State.ExitCode}}')"
[ "$(podman inspect facegen-pod-0-facegen --format '{{.State.Status}}')" = running ] ||
  podman start facegen-pod-0-facegen >/dev/null 2>&1
url=http://127.0.0.1:$port
for i in $(seq 1 100); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$url/readyz")" = 200 ] && break
  sleep 3
done
echo "readyz: $(curl -s "$url/readyz")"
echo "user: $(podman exec facegen-pod-0-facegen id -u)"
podman exec facegen-pod-0-facegen sh -c 'touch /x 2>/dev/null && echo "root fs: WRITABLE" || echo "root fs: read-only"'
podman exec facegen-pod-0-facegen sh -c 'touch /models/x 2>/dev/null && echo "/models: WRITABLE" || echo "/models: read-only"'
podman exec facegen-pod-0-facegen sh -c 'touch /tmp/x && echo "/tmp: writable"'
echo "generate: $(curl -s -o /dev/null -w '%{http_code} %{content_type} %{size_download} bytes' \
  -X POST "$url/generate" -H 'Content-Type: application/json' -d '{"n": 4, "seed": 7}')"
start=$(date +%s)
podman stop -t 45 facegen-pod-0-facegen >/dev/null
echo "stop (SIGTERM, 5 s drain): $(($(date +%s) - start)) s, exit code $(podman inspect facegen-pod-0-facegen --format '{{.State.ExitCode}}')"
podman logs facegen-pod-0-facegen 2>&1 | grep -o 'SIGTERM: draining for [0-9.]* s' || { echo "no drain in the log"; exit 1; }
