"""The Kubernetes manifests under deploy/k8s validate against the API's schemas (strict:
unknown fields are errors), and carry what operators rely on."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
VERSION = "1.30.0"


def documents() -> list[dict]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


@pytest.mark.parametrize("doc", documents(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_manifest_is_valid(doc: dict) -> None:
    kubernetes_validate.validate(doc, VERSION, strict=True)


def test_probes_resources_and_autoscaling() -> None:
    docs = documents()
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    assert {
        "dockyard-api", "dockyard-worker-files", "dockyard-worker-deploy",
        "dockyard-worker-dead-letter", "dockyard-worker-webhooks", "dockyard-beat",
        "dockyard-flower",
    } <= set(deployments)  # fmt: skip
    api = deployments["dockyard-api"]["spec"]["template"]["spec"]["containers"][0]
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for deployment in deployments.values():
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            assert container["resources"]["requests"] and container["resources"]["limits"]
    scaled = {
        d["spec"]["scaleTargetRef"]["name"]: d["spec"]["metrics"][0]["external"]["metric"]
        for d in docs
        if d["kind"] == "HorizontalPodAutoscaler"
    }
    assert scaled["dockyard-worker-files"]["name"] == "dockyard_queue_depth"
    assert scaled["dockyard-worker-deploy"]["selector"]["matchLabels"] == {"queue": "deploy"}
    assert scaled["dockyard-worker-webhooks"]["selector"]["matchLabels"] == {"queue": "webhooks"}
    assert deployments["dockyard-beat"]["spec"]["replicas"] == 1


def test_read_only_containers_get_a_writable_tmp_and_fleets_name_their_service() -> None:
    """gunicorn cannot start its workers without a writable temporary directory, and werkzeug
    spools uploads there: a read-only root needs /tmp mounted. Log lines name the fleet."""
    docs = documents()
    for deployment in (d for d in docs if d["kind"] == "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for container in pod["containers"]:
            if container.get("securityContext", {}).get("readOnlyRootFilesystem"):
                mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
                assert "/tmp" in mounts, deployment["metadata"]["name"]
                assert "emptyDir" in volumes[mounts["/tmp"]]
            if container["args"][:4] == ["celery", "-A", "shared.celery_app", "worker"]:
                env = {e["name"]: e.get("value") for e in container.get("env", [])}
                assert env["DOCKYARD_SERVICE"] == deployment["metadata"]["name"].removeprefix(
                    "dockyard-"
                )


SECRET_VARIABLES = {
    "DATABASE_URL", "JWT_SECRET_KEY", "STORAGE_SIGNING_KEY", "METRICS_TOKEN",
    "DEPLOY_SECRETS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "FLOWER_BASIC_AUTH",
}  # fmt: skip


def test_no_secret_value_in_the_repository() -> None:
    """Secrets come from the `dockyard-secrets` Secret the operator creates: no manifest
    defines a Secret, and no ConfigMap or container env holds a secret variable's value."""
    docs = documents()
    assert not [d["metadata"]["name"] for d in docs if d["kind"] == "Secret"]
    for config_map in (d for d in docs if d["kind"] == "ConfigMap"):
        assert not SECRET_VARIABLES & set(config_map.get("data", {}))
    for doc in docs:
        pod = _pod_spec(doc)
        if pod is None:
            continue
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            assert {"secretRef": {"name": "dockyard-secrets"}} in container["envFrom"]
            for entry in container.get("env", []):
                assert entry["name"] not in SECRET_VARIABLES or "value" not in entry, entry


def _pod_spec(doc: dict) -> dict | None:
    if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return doc["spec"]["template"]["spec"]
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return None
