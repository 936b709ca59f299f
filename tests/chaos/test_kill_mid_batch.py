"""SIGKILL OCR workers and the persister at random points mid-batch, restart them: still exactly one row
per file and one words set per page. OCRSTREAM_CHAOS_SCALE=full (make chaos) runs more files and kills."""
import os
import random
import time

import psycopg
import pytest

from demo.processes import client_for, running_services
from demo.sample_batch import render_sample_batch
from tests.helpers import file_row_counts

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
def test_sigkill_workers_and_persister_mid_batch(settings, isolated_env, tmp_path, seed):
    rng = random.Random(seed)
    images = 80 if FULL else 24
    samples = render_sample_batch(tmp_path / "batch", images=images, pdf_pages=3, seed=seed)
    total = len(samples)
    # Always one OCR worker and the persister; at full scale, more kills of any of them.
    victims = ["ocr_worker-1", "persister"] + [rng.choice(["ocr_worker-1", "ocr_worker-2", "persister"])
                                               for _ in range(4 if FULL else 0)]
    rng.shuffle(victims)
    schedule = list(zip(sorted(rng.sample(range(1, total - 2), len(victims))), victims))
    print(f"seed {seed}: SIGKILL schedule (rows persisted → victim): {schedule}")

    with running_services(isolated_env, tmp_path / "logs") as services, \
            client_for(services) as client:
        accepted = client.submit([s.path for s in samples], name="chaos", chunk_size=3)
        batch_id = accepted["batch_id"]
        for rows_seen, victim in schedule:
            wait_for_rows(settings, batch_id, rows_seen)
            services[victim].kill()
            services[victim].start()
        final = client.wait(batch_id, timeout=900)

    rows = file_row_counts(settings, batch_id)
    assert len(rows["by_id"]) == total, "no gaps: every accepted file has a row"
    assert set(rows["by_id"].values()) == {1}, "no duplicates: exactly one row per file"
    assert rows["broken_word_sets"] == [] and rows["orphan_pages"] == 0
    assert final["status"] == "completed"
    assert final["succeeded"] + final["failed"] == total == final["total_files"]
