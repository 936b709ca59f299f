"""An open batch through the whole pipeline (ingest, an OCR worker on the fast engine, the persister, the status
API as processes on the real stack): created open, grown by three more requests, sealed. It stays unfinished
while open even when every file so far is done, completes once sealed, and each file has exactly one row.
Additions to a batch created sealed, or to a cancelled one, are refused."""
import io
import json
import time
import uuid

import httpx
import psycopg
import pytest
from PIL import Image

from common.settings import Settings
from demo.processes import isolated_env, running_services
from tests.helpers import file_row_counts

pytestmark = pytest.mark.e2e

A = {"Authorization": "Bearer key-a"}


@pytest.fixture(scope="module")
def pipeline(stack_endpoints, tmp_path_factory):
    env = isolated_env(stack_endpoints, uuid.uuid4().hex[:10]) | {
        "OCRSTREAM_ENGINE": "fast", "OCRSTREAM_API_KEYS": json.dumps({"key-a": "tenant-a"})}
    with running_services(env, tmp_path_factory.mktemp("logs"), workers=1) as services, \
            pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        ingest = httpx.Client(base_url=services["ingest"].probe_url, headers=A, timeout=60)
        status = httpx.Client(base_url=services["status_api"].probe_url, headers=A, timeout=30)
        yield {"ingest": ingest, "status": status, "settings": Settings()}
        ingest.close()
        status.close()


def png(seed: int) -> bytes:
    image = Image.new("L", (24 + seed % 20, 12), 255)
    image.putpixel((seed % 24, 5), seed % 200)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def files(seeds: range) -> list:
    return [("files", (f"scan-{i:03d}.png", png(i), "image/png")) for i in seeds]


def batch_row(pipeline, batch_id: str) -> dict | None:
    s = pipeline["settings"]
    with psycopg.connect(s.database_url, autocommit=True,
                         options=f"-c search_path={s.database_schema},public") as conn:
        row = conn.execute("SELECT status, sealed, total_files, total_chunks, succeeded, failed, cancelled"
                           " FROM batches WHERE batch_id = %s", (batch_id,)).fetchone()
    keys = ("status", "sealed", "total", "chunks", "succeeded", "failed", "cancelled")
    return dict(zip(keys, row)) if row else None


def wait_for(pipeline, batch_id: str, condition, deadline_s: float = 60) -> dict:
    deadline = time.monotonic() + deadline_s
    while not ((row := batch_row(pipeline, batch_id)) and condition(row)):
        assert time.monotonic() < deadline, f"batch {batch_id}: {row}"
        time.sleep(0.2)  # poll interval of the deadline loop
    return row


def wait_for_view(pipeline, batch_id: str, condition, deadline_s: float = 30) -> dict:
    deadline = time.monotonic() + deadline_s
    while not ((view := pipeline["status"].get(f"/v1/batches/{batch_id}")).status_code == 200
               and condition(view.json())):
        assert time.monotonic() < deadline, f"batch {batch_id}: {view.text}"
        time.sleep(0.2)  # poll interval of the deadline loop
    return view.json()


def test_an_open_batch_grows_over_three_requests_and_completes_once_sealed(pipeline) -> None:
    ingest = pipeline["ingest"]
    created = ingest.post("/v1/batches", data={"open": "true", "chunk_size": "2"}, files=files(range(4)))
    assert created.status_code == 202, created.text
    batch_id = created.json()["batch_id"]

    # Every file so far done, and the batch still open: processing, not completed (in Postgres and in the view).
    row = wait_for(pipeline, batch_id, lambda r: r["succeeded"] == 4)
    assert (row["status"], row["sealed"], row["total"]) == ("processing", False, 4)
    view = wait_for_view(pipeline, batch_id, lambda v: v["processed_files"] == 4)
    assert (view["status"], view["sealed"], view["finished_at"]) == ("processing", False, None)

    added_ids: list[str] = []
    for seeds in (range(10, 13), range(20, 24), range(30, 35)):
        added = ingest.post(f"/v1/batches/{batch_id}/files", files=files(seeds))
        assert added.status_code == 202, added.text
        added_ids += added.json()["file_ids"]
    assert added.json()["total_files"] == 16
    wait_for(pipeline, batch_id, lambda r: r["succeeded"] == 16)
    assert batch_row(pipeline, batch_id)["status"] == "processing"  # all 16 done, still open

    sealed = ingest.post(f"/v1/batches/{batch_id}/seal")
    assert sealed.status_code == 202, sealed.text
    row = wait_for(pipeline, batch_id, lambda r: r["status"] != "processing")
    assert row == {"status": "completed", "sealed": True, "total": 16, "chunks": 2 + 2 + 2 + 3, "succeeded": 16,
                   "failed": 0, "cancelled": 0}
    counts = file_row_counts(pipeline["settings"], batch_id)
    assert len(counts["by_id"]) == 16 and set(counts["by_id"].values()) == {1}
    assert len(set(added_ids)) == 12 and set(added_ids) <= set(counts["by_id"])
    assert counts["orphan_pages"] == 0 and counts["broken_word_sets"] == []
    view = wait_for_view(pipeline, batch_id, lambda v: v["status"] == "completed")
    assert (view["sealed"], view["total_files"], view["succeeded"]) == (True, 16, 16)

    late = ingest.post(f"/v1/batches/{batch_id}/files", files=files(range(40, 41)))
    assert (late.status_code, late.json()["code"]) == (409, "batch_sealed")


def test_a_sealed_or_cancelled_batch_takes_no_more_files(pipeline) -> None:
    ingest = pipeline["ingest"]
    sealed_id = ingest.post("/v1/batches", files=files(range(50, 52))).json()["batch_id"]
    open_id = ingest.post("/v1/batches", data={"open": "true"}, files=files(range(60, 62))).json()["batch_id"]
    wait_for(pipeline, sealed_id, lambda r: r["status"] == "completed")
    wait_for(pipeline, open_id, lambda r: r["succeeded"] == 2)
    cancel = ingest.delete(f"/v1/batches/{open_id}")

    to_sealed = ingest.post(f"/v1/batches/{sealed_id}/files", files=files(range(70, 71)))
    seal_sealed = ingest.post(f"/v1/batches/{sealed_id}/seal")
    to_cancelled = ingest.post(f"/v1/batches/{open_id}/files", files=files(range(70, 71)))
    seal_cancelled = ingest.post(f"/v1/batches/{open_id}/seal")

    assert cancel.status_code == 202, cancel.text
    assert (to_sealed.status_code, to_sealed.json()["code"]) == (409, "batch_sealed")
    assert seal_sealed.status_code == 200 and seal_sealed.json()["total_files"] == 2
    assert (to_cancelled.status_code, to_cancelled.json()["code"]) == (409, "batch_cancelled")
    assert (seal_cancelled.status_code, seal_cancelled.json()["code"]) == (409, "batch_cancelled")
    # Cancelled while open, its files all done: it ends cancelled without a seal.
    row = wait_for(pipeline, open_id, lambda r: r["status"] != "processing")
    assert (row["status"], row["sealed"], row["total"]) == ("cancelled", False, 2)
