"""SIGKILL an OCR worker and the persister at random points mid-batch; still exactly one row per file."""
import os
import random
import time

import psycopg
import pytest

from demo.sample_batch import render_sample_batch
from tests.pipeline_helpers import file_row_counts, running_pipeline

pytestmark = pytest.mark.chaos

FULL = os.environ.get("OCRSTREAM_CHAOS_SCALE") == "full"


def persisted_files(settings, batch_id: str) -> int:
    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.database_schema},public") as conn:
        return conn.execute("SELECT count(*) FROM files WHERE batch_id = %s", (batch_id,)).fetchone()[0]


def wait_for_rows(settings, batch_id: str, at_least: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while persisted_files(settings, batch_id) < at_least:
        assert time.monotonic() < deadline, f"fewer than {at_least} rows after {timeout} s"
        time.sleep(0.1)  # poll interval of the deadline loop


@pytest.mark.parametrize("seed", [int(os.environ.get("OCRSTREAM_CHAOS_SEED", random.randrange(10**6)))])
def test_sigkill_worker_and_persister_mid_batch(settings, isolated_env, tmp_path, seed):
    rng = random.Random(seed)
    images = 60 if FULL else 24
    samples = render_sample_batch(tmp_path / "batch", images=images, pdf_pages=3, seed=seed)
    total = len(samples)
    kill_worker_at, kill_persister_at = sorted(rng.sample(range(1, total - 2), 2))
    print(f"seed {seed}: kill ocr_worker-1 after {kill_worker_at} rows, persister after {kill_persister_at}")

    with running_pipeline(isolated_env, tmp_path / "logs") as (services, client):
        accepted = client.submit([s.path for s in samples], name="chaos", chunk_size=3)
        batch_id = accepted["batch_id"]

        wait_for_rows(settings, batch_id, kill_worker_at)
        services["ocr_worker-1"].kill()
        services["ocr_worker-1"].start()

        wait_for_rows(settings, batch_id, kill_persister_at)
        services["persister"].kill()
        services["persister"].start()

        final = client.wait(batch_id, timeout=900)

    rows = file_row_counts(settings, batch_id)
    assert len(rows["by_id"]) == total, "no gaps: every accepted file has a row"
    assert set(rows["by_id"].values()) == {1}, "no duplicates: exactly one row per file"
    assert rows["broken_word_sets"] == [] and rows["orphan_pages"] == 0
    assert final["status"] == "completed"
    assert final["succeeded"] + final["failed"] == total == final["total_files"]
