"""docker-compose.yml: `docker compose config` where a compose CLI exists; its structure checked everywhere."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
ONE_SHOT = {"minio-setup"}
PINNED = re.compile(r"^[\w./-]+:(?!latest$)[\w][\w.-]*$")


def _compose_cli() -> list[str] | None:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return [shutil.which("docker-compose")] if shutil.which("docker-compose") else None


@pytest.mark.skipif(_compose_cli() is None, reason="no docker compose CLI here: the structure tests below stand in")
def test_compose_config_is_valid():
    done = subprocess.run([*_compose_cli(), "config", "--quiet"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_every_image_is_pinned():
    for name, service in SERVICES.items():
        assert PINNED.match(service["image"]), f"{name}: image {service['image']!r} is not pinned to a version"


def test_every_long_running_service_has_a_healthcheck_and_waits_for_healthy_dependencies():
    for name, service in SERVICES.items():
        if name not in ONE_SHOT:
            assert service.get("healthcheck", {}).get("test"), f"{name}: no healthcheck"
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on must name conditions, not just order"
        for dependency, rule in depends.items():
            assert rule == {"condition": "service_healthy"}, f"{name} → {dependency}: {rule}"
            assert "healthcheck" in SERVICES[dependency], f"{name} waits for {dependency}, which has no healthcheck"


def test_state_lives_on_named_volumes_where_each_server_writes():
    declared = set(COMPOSE["volumes"])
    mounts = {name: dict(v.split(":")[:2][::-1] for v in s.get("volumes", []) if not v.startswith("./"))
              for name, s in SERVICES.items()}
    kafka_dir = SERVICES["kafka"]["environment"]["KAFKA_LOG_DIRS"]
    assert kafka_dir in mounts["kafka"], "Kafka must write its logs on the mounted volume"
    assert SERVICES["kafka"]["environment"]["CLUSTER_ID"], "a fixed cluster id, so the formatted volume is reused"
    assert "/data" in mounts["minio"] and "/var/lib/postgresql" in mounts["postgres"]
    assert "/prometheus" in mounts["prometheus"] and "/var/lib/grafana" in mounts["grafana"]
    used = {volume for m in mounts.values() for volume in m.values()}
    assert used <= declared, f"undeclared volumes: {used - declared}"


def test_host_files_it_mounts_exist():
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            if volume.startswith("./"):
                assert (ROOT / volume.split(":")[0]).exists(), f"{name}: {volume} is missing"


def test_workers_scale_and_are_scraped_by_dns():
    worker = SERVICES["ocr_worker"]
    assert "ports" not in worker and "container_name" not in worker, "`--scale ocr_worker=N` needs neither"
    prometheus = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    assert jobs["ocr_worker"]["dns_sd_configs"][0]["names"] == ["ocr_worker"]
    assert set(jobs) == {"ingest", "status_api", "persister", "ocr_worker"}


def test_minio_notifies_ingest_of_new_objects():
    env = SERVICES["minio"]["environment"]
    assert env["MINIO_NOTIFY_WEBHOOK_ENABLE_OCRSTREAM"] == "on"
    assert env["MINIO_NOTIFY_WEBHOOK_ENDPOINT_OCRSTREAM"].startswith("http://ingest:8000/")
    script = (ROOT / "deploy/minio/notifications.sh").read_text()
    assert "mc event add local/incoming arn:minio:sqs::OCRSTREAM:webhook --event put" in script
