"""deploy/k8s validated offline: built by kustomize (kubectl's) when present, each resource checked against the
Kubernetes OpenAPI schemas (kubernetes-validate, strict), and the KEDA ScaledObject checked for its structure
and for agreeing with the workers' settings (KEDA's CRD schema is not shipped offline)."""
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from services.ocr_worker.settings import WorkerSettings

pytestmark = pytest.mark.unit

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
KUBERNETES_VERSION = "1.32.0"


def rendered() -> list[dict]:
    """kubectl kustomize's output; without kubectl, the listed resources with the namespace applied."""
    kubectl = shutil.which("kubectl")
    if kubectl:
        done = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return [d for d in yaml.safe_load_all(done.stdout) if d]
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs = [d for r in kustomization["resources"] for d in yaml.safe_load_all((K8S / r).read_text()) if d]
    for doc in docs:
        if doc["kind"] != "Namespace":
            doc["metadata"]["namespace"] = kustomization["namespace"]
    return docs


DOCS = rendered()
BY_KIND = {(d["kind"], d["metadata"]["name"]): d for d in DOCS}


@pytest.mark.parametrize("doc", [d for d in DOCS if d["apiVersion"] != "keda.sh/v1alpha1"],
                         ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_resource_matches_the_kubernetes_schema(doc):
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_every_service_runs_with_probes_and_reaches_its_config():
    assert ("ConfigMap", "ocrstream-config") in BY_KIND and ("Secret", "ocrstream-secrets") in BY_KIND
    workloads = {name: d for (kind, name), d in BY_KIND.items() if kind in ("Deployment", "StatefulSet")}
    assert set(workloads) == {"ingest", "status-api", "persister", "ocr-worker"}
    for name, workload in workloads.items():
        [container] = workload["spec"]["template"]["spec"]["containers"]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", name
        refs = {next(iter(ref.values()))["name"] for ref in container["envFrom"]}
        assert refs == {"ocrstream-config", "ocrstream-secrets"}, name
        assert container["image"].startswith("ocrstream-server:"), "kustomize pins the image tag"
    worker_env = {e["name"]: e for e in workloads["ocr-worker"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert worker_env["OCRSTREAM_WORKER_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name", \
        "a stable worker id per replica keeps zombie fencing"


def test_keda_scales_the_workers_on_chunk_lag_up_to_the_partition_count():
    scaler = BY_KIND[("ScaledObject", "ocr-worker")]
    config = BY_KIND[("ConfigMap", "ocrstream-config")]["data"]
    spec = scaler["spec"]
    target = spec["scaleTargetRef"]
    assert (target["kind"], target["name"]) in BY_KIND and target["apiVersion"] == "apps/v1"
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] == int(config["OCRSTREAM_TOPIC_PARTITIONS"])
    [trigger] = spec["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "kafka"
    assert meta["topic"] == config["OCRSTREAM_TOPIC_OCR_CHUNKS"]
    assert meta["consumerGroup"] == WorkerSettings.model_fields["worker_group"].default
    assert meta["bootstrapServers"] == config["OCRSTREAM_KAFKA_BOOTSTRAP_SERVERS"]
    assert meta["allowIdleConsumers"] == "false"
    assert all(isinstance(v, str) for v in meta.values()), "KEDA trigger metadata values are strings"
    assert int(meta["lagThreshold"]) > 0
