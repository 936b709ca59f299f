"""Real endpoints for every test: from the environment, from testcontainers, or from the dev stack.

Never a silent skip: if no Kafka/S3/Postgres can be had, the session fails with the reason.
Each test gets its own topic names, bucket and database schema, so tests run in any order.
"""
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.db import apply_migrations
from common.kafka import ensure_topics
from common.settings import Settings
from common.storage import build_s3_client, ensure_bucket
from demo.processes import isolated_env as isolated_env_for
from tests.helpers import free_ports

ENDPOINT_VARS = (
    "OCRSTREAM_KAFKA_BOOTSTRAP_SERVERS",
    "OCRSTREAM_S3_ENDPOINT",
    "OCRSTREAM_S3_ACCESS_KEY",
    "OCRSTREAM_S3_SECRET_KEY",
    "OCRSTREAM_DATABASE_URL",
)


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0


def _testcontainers_endpoints(stack: list) -> dict[str, str]:
    from testcontainers.kafka import KafkaContainer
    from testcontainers.minio import MinioContainer
    from testcontainers.postgres import PostgresContainer

    kafka = KafkaContainer("apache/kafka:4.3.1").with_kraft()
    minio = MinioContainer("minio/minio:latest")
    postgres = PostgresContainer("pgvector/pgvector:pg17", driver=None)
    for container in (kafka, minio, postgres):
        container.start()
        stack.append(container)
    s3 = minio.get_config()
    return {
        "OCRSTREAM_KAFKA_BOOTSTRAP_SERVERS": kafka.get_bootstrap_server(),
        "OCRSTREAM_S3_ENDPOINT": s3["endpoint"],
        "OCRSTREAM_S3_ACCESS_KEY": s3["access_key"],
        "OCRSTREAM_S3_SECRET_KEY": s3["secret_key"],
        "OCRSTREAM_S3_SECURE": "false",
        "OCRSTREAM_DATABASE_URL": postgres.get_connection_url(),
    }


@pytest.fixture(scope="session")
def stack_endpoints() -> Iterator[dict[str, str]]:
    """OCRSTREAM_* endpoint variables of a running Kafka, S3 server and PostgreSQL with pgvector."""
    if all(os.environ.get(v) for v in ENDPOINT_VARS):
        yield {v: os.environ[v] for v in ENDPOINT_VARS} | {"OCRSTREAM_S3_SECURE": os.environ.get("OCRSTREAM_S3_SECURE", "false")}
        return
    if _docker_answers():
        containers: list = []
        try:
            yield _testcontainers_endpoints(containers)
        finally:
            for container in reversed(containers):
                container.stop()
        return
    from deploy.devstack import StackSettings, stack_endpoints as dev_endpoints, start_stack, stop_stack

    stack_settings = StackSettings()
    started = start_stack(stack_settings)
    try:
        yield dev_endpoints(stack_settings)
    finally:
        if started:  # leave alone what was already running before the session
            stop_stack(stack_settings, started)


@pytest.fixture
def isolated_env(stack_endpoints: dict[str, str]) -> dict[str, str]:
    """OCRSTREAM_* variables for this test: the stack's endpoints plus unique topics, bucket and schema."""
    return isolated_env_for(stack_endpoints, uuid.uuid4().hex[:10])


@pytest.fixture
def settings(isolated_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Shared settings pointing at this test's own topics, bucket and schema (created, migrated)."""
    for name, value in isolated_env.items():
        monkeypatch.setenv(name, value)  # service Settings subclasses built in the test see the same values
    settings = Settings()
    ensure_topics(settings)
    ensure_bucket(build_s3_client(settings), settings.s3_bucket)
    apply_migrations(settings)
    return settings


@pytest.fixture(scope="module")
def private_stack_settings(request):
    """A second dev stack's settings (a temporary directory, free ports), stopped and removed afterwards; for
    tests that stop and start its parts, next to whatever stack the other tests share."""
    from deploy.devstack import StackSettings, stop_stack

    # Not pytest's tmp_path: /tmp/pytest-of-root is 0700, and Postgres runs as an unprivileged user that
    # must be able to reach its data directory.
    root = Path(tempfile.mkdtemp(prefix="ocrstream-stack-test-"))
    root.chmod(0o755)
    kafka, controller, s3, metrics, pg = free_ports(5)
    settings = StackSettings(dir=root / "stack", kafka_port=kafka, kafka_controller_port=controller, s3_port=s3,
                             juicefs_metrics_port=metrics, pg_port=pg, kafka_heap="384m")

    def cleanup() -> None:
        try:
            stop_stack(settings)
        finally:
            shutil.rmtree(root, ignore_errors=True)

    request.addfinalizer(cleanup)
    return settings
