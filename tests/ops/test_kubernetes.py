"""deploy/kubernetes: each overlay renders with `kubectl kustomize` and passes Kubernetes' own schema (strict: an
unknown field fails) at a pinned version, and says what docs/scaling.md promises of it.

The schema check is the PyPI package kubernetes-validate (a dev dependency), offline; kubectl is the renderer the
docs tell operators to use, so the test runs it rather than a Python re-implementation of kustomize.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.ops.support import DOCKER, REPO, require_binary, run

kubernetes_validate = pytest.importorskip("kubernetes_validate")

KUBERNETES_VERSION = "1.32.0"
"""The oldest Kubernetes the manifests are meant for (v1.32: the preStop ``sleep`` action is on by default)."""
KUSTOMIZE = REPO / "deploy" / "kubernetes"
OVERLAYS = ("cpu", "gpu")
QUEUE_DEPTH = KUSTOMIZE / "components" / "queue-depth-autoscaling"
MODELS = "/models"


def render(directory: Path) -> dict[str, dict[str, Any]]:
    """``kubectl kustomize directory`` → the rendered objects by kind (each kind appears once here)."""
    kubectl = require_binary("kubectl", "https://kubernetes.io/docs/tasks/tools/; CI machines have it")
    result = run([kubectl, "kustomize", str(directory)])
    assert result.returncode == 0, f"kubectl kustomize {directory}:\n{result.stderr}"
    objects: dict[str, dict[str, Any]] = {}
    for document in yaml.safe_load_all(result.stdout):
        assert document["kind"] not in objects, f"two {document['kind']} objects"
        objects[document["kind"]] = document
    return objects


def scorer(objects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    [container] = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    return container


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, dict[str, dict[str, Any]]]:
    return request.param, render(KUSTOMIZE / "overlays" / request.param)


def test_overlay_passes_the_kubernetes_schema(overlay) -> None:
    _, objects = overlay
    assert set(objects) == {
        "ConfigMap", "Service", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "PersistentVolumeClaim"
    }  # fmt: skip
    for kind, document in objects.items():
        try:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{kind} {document['metadata']['name']}: {exc.message} at {list(exc.path)}")


def test_pods_probe_the_services_endpoints_and_run_locked_down(overlay) -> None:
    name, objects = overlay
    container = scorer(objects)
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    assert container["image"] == f"prd-inspect/scorer:{name}"
    assert f"-t prd-inspect/scorer:{name} " in (DOCKER / f"Dockerfile.{name}").read_text()  # the image docker/ builds
    assert "command" not in container and "args" not in container  # the image's CMD: python -m service
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts[MODELS]["readOnly"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts[MODELS]["name"]]["persistentVolumeClaim"]["readOnly"] is True
    annotations = objects["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"
    strategy = objects["Deployment"]["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0  # a replica goes only once its successor is ready
    gpus = container["resources"]["limits"].get("nvidia.com/gpu")
    assert gpus == ("1" if name == "gpu" else None)


def test_configmap_holds_only_settings_the_service_knows(overlay) -> None:
    settings = pytest.importorskip("service.config").Settings
    _, objects = overlay
    data = objects["ConfigMap"]["data"]
    known = {f"PRD_{field.upper()}" for field in settings.model_fields}
    assert set(data) <= known, f"unknown settings: {sorted(set(data) - known)}"
    assert data["PRD_MODEL_STORE"] == MODELS
    settings(**{key.removeprefix("PRD_").lower(): value for key, value in data.items()})  # every value validates
    [source] = scorer(objects)["envFrom"]
    assert source["configMapRef"]["name"] == objects["ConfigMap"]["metadata"]["name"]


def test_service_budget_and_autoscaler_point_at_the_scorer_pods(overlay) -> None:
    _, objects = overlay
    deployment = objects["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for selector in (objects["Service"]["spec"]["selector"], objects["PodDisruptionBudget"]["spec"]["selector"]):
        assert selector.get("matchLabels", selector).items() <= labels.items()
    assert objects["Service"]["spec"]["ports"][0]["targetPort"] == scorer(objects)["ports"][0]["name"]
    hpa = objects["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["metrics"][0]["resource"]["name"] == "cpu"
    assert hpa["minReplicas"] >= 2  # with the budget's maxUnavailable 1, a drain never leaves zero replicas


def test_queue_depth_variant_renders_and_scales_on_prd_queue_depth(tmp_path: Path) -> None:
    copy = shutil.copytree(KUSTOMIZE, tmp_path / "kubernetes")  # kustomize refuses absolute paths to the repo's
    (copy / "variant").mkdir()
    (copy / "variant" / "kustomization.yaml").write_text(
        "resources: [../overlays/cpu]\ncomponents: [../components/queue-depth-autoscaling]\n"
    )
    objects = render(copy / "variant")
    hpa = objects["HorizontalPodAutoscaler"]
    kubernetes_validate.validate(hpa, KUBERNETES_VERSION, strict=True)
    [metric] = hpa["spec"]["metrics"]
    assert (metric["type"], metric["pods"]["metric"]["name"]) == ("Pods", "prd_queue_depth")
    assert "prd_queue_depth" in (REPO / "model_store" / "CONTRACT.md").read_text()
