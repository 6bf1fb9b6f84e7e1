"""deploy/kubernetes, validated offline: kustomize builds, Kubernetes' own schemas, our invariants.

No cluster here, so nothing is applied. What runs: ``kubectl kustomize`` on both variants (when
kubectl is installed: Debian's kubernetes-client, scripts/system-deps.sh), every built-in
object against the OpenAPI-derived JSON schemas that ship in the kubernetes-validate wheel
(strict: unknown fields fail), and the cross-file invariants a schema cannot see (probes hit
the service's routes, the grace period covers the drain, the HPA's metric is the adapter's).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.drain import graceful_timeout_s
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
K8S_VERSION = "1.29.0"  # oldest Kubernetes still in common support that has every API used here
CRD_KINDS = {"ServiceMonitor", "ScaledObject"}  # not in Kubernetes' schemas; checked by hand below


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def built(variant: str) -> list[dict[str, Any]]:
    """The objects of ``kubectl kustomize deploy/kubernetes/<variant>`` (kubectl when installed,
    else the same resources and patch applied here, so the invariants are checked either way)."""
    kubectl = shutil.which("kubectl")
    if kubectl is not None:
        out = subprocess.run(
            [kubectl, "kustomize", str(K8S / variant)], capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr
        return [d for d in yaml.safe_load_all(out.stdout) if d]
    kust = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    docs = [d for f in kust["resources"] for d in load_docs(K8S / "base" / f)]
    if variant == "gpu":
        patch = load_docs(K8S / "gpu" / "deployment-gpu.yaml")[0]["spec"]["template"]["spec"]
        pod = deployment(docs)["spec"]["template"]["spec"]
        pod["tolerations"] = patch["tolerations"]
        (patched,) = patch["containers"]
        env = {e["name"]: e for e in pod["containers"][0]["env"]}
        env.update({e["name"]: e for e in patched["env"]})
        pod["containers"][0].update(env=list(env.values()), resources=patched["resources"])
    return docs


def deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    return dep


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (c,) = [c for c in deployment(docs)["spec"]["template"]["spec"]["containers"] if c["name"] == "facegen"]
    return c


def env_of(c: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c["env"]}


@pytest.mark.parametrize("variant", ["base", "gpu"])
def test_objects_match_kubernetes_schemas(variant: str) -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="pip install -e '.[dev]' (kubernetes-validate)")
    docs = built(variant)
    assert {d["kind"] for d in docs} == {
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
    }
    for doc in docs:
        kv.validate(doc, K8S_VERSION, strict=True)  # raises ValidationError naming the field


def test_schema_validation_can_fail() -> None:
    kv = pytest.importorskip("kubernetes_validate")
    dep = deployment(built("base"))
    dep["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}  # a typo
    with pytest.raises(kv.ValidationError):
        kv.validate(dep, K8S_VERSION, strict=True)


@pytest.mark.parametrize("variant", ["base", "gpu"])
def test_pod_is_locked_down_and_probed(variant: str) -> None:
    docs = built(variant)
    pod = deployment(docs)["spec"]["template"]["spec"]
    c = container(docs)
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    for each in [*pod["containers"], *pod.get("initContainers", [])]:
        sc = each["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"] and "limits" in each["resources"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # The warm-up gets minutes before liveness could kill the pod.
    assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] >= 180
    # The model store: a volume, mounted read-only where FACEGEN_MODEL_STORE points.
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts[env_of(c)["FACEGEN_MODEL_STORE"]].get("readOnly") is True
    # Every FACEGEN_* variable is a real setting.
    fields = {f"FACEGEN_{name.upper()}" for name in Settings.model_fields}
    assert set(env_of(c)) <= fields, set(env_of(c)) - fields


def test_gpu_variant_asks_for_one_gpu_and_the_cuda_image() -> None:
    docs = built("gpu")
    c = container(docs)
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1" and env_of(c)["FACEGEN_DEVICE"] == "cuda"
    assert "nvidia.com/gpu" not in str(built("base"))
    if shutil.which("kubectl"):  # the images transformer only runs in kustomize
        assert c["image"] == "facegen:cuda" and container(built("base"))["image"] == "facegen:cpu"


def test_grace_period_covers_the_drain() -> None:
    docs = built("base")
    env = env_of(container(docs))
    drain, timeout = float(env["FACEGEN_DRAIN_DELAY_S"]), float(env["FACEGEN_REQUEST_TIMEOUT_S"])
    grace = deployment(docs)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert drain > 0 and grace >= drain + graceful_timeout_s(timeout)
    # The readiness probe notices the drain well within it.
    probe = container(docs)["readinessProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] < drain


def test_scaling_and_scraping_agree() -> None:
    docs = built("base")
    dep, (svc,), (pdb,), (hpa,) = (
        deployment(docs),
        [d for d in docs if d["kind"] == "Service"],
        [d for d in docs if d["kind"] == "PodDisruptionBudget"],
        [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"],
    )
    labels = dep["spec"]["template"]["metadata"]["labels"]
    for selector in (svc["spec"]["selector"], pdb["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= labels.items()
    assert hpa["spec"]["minReplicas"] >= 2 and pdb["spec"]["maxUnavailable"] == 1
    annotations = dep["spec"]["template"]["metadata"]["annotations"]
    (port,) = container(docs)["ports"]
    assert annotations["prometheus.io/port"] == str(port["containerPort"]) == "8000"
    # The HPA's metric is the one prometheus-adapter publishes from the service's gauge.
    (metric,) = hpa["spec"]["metrics"]
    (rule,) = yaml.safe_load((K8S / "optional" / "prometheus-adapter-rules.yaml").read_text())["rules"][
        "custom"
    ]
    assert rule["name"]["as"] == metric["pods"]["metric"]["name"]
    assert rule["seriesQuery"].startswith("facegen_queue_depth{")
    keda = load_docs(K8S / "optional" / "keda-scaledobject.yaml")[0]
    assert keda["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    assert "facegen_queue_depth" in keda["spec"]["triggers"][0]["metadata"]["query"]
    monitor = load_docs(K8S / "optional" / "servicemonitor.yaml")[0]
    assert (
        monitor["kind"] in CRD_KINDS
        and monitor["spec"]["endpoints"][0]["port"] == svc["spec"]["ports"][0]["name"]
    )


def test_service_exports_the_autoscaling_gauge() -> None:
    from service.metrics import Metrics

    body, _ = Metrics(64).render()
    assert b"facegen_queue_depth" in body
