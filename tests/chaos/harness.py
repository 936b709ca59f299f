"""What the fault tests share: a private pipeline on the fast engine, many distinct small files, readiness
probes, and the check that a batch ended exactly once with its status equal to Postgres."""
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from PIL import Image, ImageDraw

from common.db import apply_migrations
from common.kafka import ensure_topics
from common.settings import Settings
from common.storage import build_s3_client, ensure_bucket
from demo.processes import ServiceProcess, client_for, isolated_env, running_services
from ocrstream import Client
from ocrstream.errors import WaitTimeout
from tests.helpers import file_row_counts

FULL = os.environ.get("OCRSTREAM_CHAOS_SCALE") == "full"


def distinct_images(directory: Path, count: int) -> list[Path]:
    """`count` small PNGs, each different, and different from every other call's (the directory's name is drawn
    on each): ingest would link a file identical to an earlier one as a duplicate instead of reading it."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        image = Image.new("L", (240, 48), 255)
        ImageDraw.Draw(image).text((4, 8), f"{directory.name}\nfile {i:06d}", fill=0)
        path = directory / f"f{i:06d}.png"
        image.save(path)
        paths.append(path)
    return paths


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout:.0f} s: {what}"
        time.sleep(0.2)  # poll interval of the deadline loop


def is_ready(service: ServiceProcess) -> bool:
    try:
        return httpx.get(f"{service.probe_url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def assert_exactly_once(pipeline: "Pipeline", batch_id: str, total: int) -> dict:
    """One row per accepted file, intact words and pages, the batch completed, its status equal to Postgres."""
    try:
        final = pipeline.client.wait(batch_id, timeout=600)
    except WaitTimeout as exc:
        pytest.fail(f"{exc}\n{pipeline.diagnosis(batch_id, total)}")
    rows = file_row_counts(pipeline.settings, batch_id)
    assert len(rows["by_id"]) == total, "nothing lost: every accepted file has a row"
    assert set(rows["by_id"].values()) == {1}, "nothing duplicated: exactly one row per file"
    assert rows["broken_word_sets"] == [] and rows["orphan_pages"] == 0
    assert final["status"] == "completed" and final["total_files"] == total
    by_status = rows["by_status"]
    assert (final["succeeded"], final["failed"], final["skipped"]) == \
        (by_status.get("ok", 0), by_status.get("failed", 0), by_status.get("skipped", 0)), "status equals Postgres"
    return final


@dataclass
class Pipeline:
    settings: Settings
    env: dict[str, str]
    services: dict[str, ServiceProcess]
    client: Client
    files: Path

    def submit(self, count: int, name: str) -> tuple[str, int]:
        """A batch of `count` new distinct files; (batch id, count)."""
        paths = distinct_images(self.files / f"{name}-{uuid.uuid4().hex[:6]}", count)
        accepted = self.client.submit(paths, name=name, chunk_size=2, embeddings=False)
        return accepted["batch_id"], count

    def diagnosis(self, batch_id: str, total: int) -> str:
        """Where a batch that did not finish stands: its rows, its batches row, and each service's last warnings."""
        rows = file_row_counts(self.settings, batch_id)
        with psycopg.connect(self.settings.database_url,
                             options=f"-c search_path={self.settings.database_schema},public") as conn:
            batch = conn.execute("SELECT status, succeeded, failed, version, published_version FROM batches "
                                 "WHERE batch_id = %s", (batch_id,)).fetchone()
        lines = [f"{len(rows['by_id'])} of {total} files have rows {rows['by_status']}; batches row "
                 f"(status, succeeded, failed, version, published_version): {batch}"]
        for service in self.services.values():
            events = [line for line in service.log_tail(5000).splitlines()
                      if '"level": "warning"' in line or '"level": "error"' in line or "Traceback" in line]
            lines += [f"--- {service.name}: its last warnings ---", *events[-25:]]
        for name, service in self.services.items():
            if name.startswith(("ocr_worker", "persister")):  # the Kafka loops dump their stacks on SIGUSR1
                lines += [f"--- {name}: its threads now ---", service.stacks()]
        return "\n".join(lines)


@contextmanager
def pipeline_on(endpoints: dict[str, str], work: Path, **extra_env: str) -> Iterator[Pipeline]:
    """Every service on the fast engine against `endpoints`, with topics, bucket and schema of its own."""
    env = isolated_env(endpoints, uuid.uuid4().hex[:10]) | {"OCRSTREAM_ENGINE": "fast"} | extra_env
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        settings = Settings()
    ensure_topics(settings)
    ensure_bucket(build_s3_client(settings), settings.s3_bucket)
    apply_migrations(settings)
    with running_services(env, work / "logs") as services, client_for(services) as client:
        yield Pipeline(settings, env, services, client, work / "files")
