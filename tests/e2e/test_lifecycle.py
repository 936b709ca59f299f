"""The batch lifecycle through the whole pipeline (ingest, an OCR worker, the persister, the status API as
processes on the real stack): cancel racing running chunks, retry after a worker SIGKILL, dedupe, and another
tenant trying to reach, cancel or retry a batch. Every file ends with exactly one terminal row.

The OCR engine is tests/poison_engine.py: the fast engine, except for pages marked by their top-left pixel
(SLOW: read after half a second; RAISE_UNLESS_FLAG: fails until a flag file exists).
"""
import io
import json
import time
import uuid

import httpx
import psycopg
import pytest

from common.kafka import read_topic
from common.settings import Settings
from demo.processes import isolated_env, running_services
from schemas.batch_events import BatchCancelled, BatchRetryRequested
from schemas.topics import Topic, decode
from tests import poison_engine
from tests.helpers import file_row_counts

pytestmark = pytest.mark.e2e

KEYS = {"key-a": "tenant-a", "key-b": "tenant-b"}
A = {"Authorization": "Bearer key-a"}
B = {"Authorization": "Bearer key-b"}


@pytest.fixture(scope="module")
def pipeline(stack_endpoints, tmp_path_factory):
    flag = tmp_path_factory.mktemp("flag") / "fixed"
    env = isolated_env(stack_endpoints, uuid.uuid4().hex[:10]) | {
        "OCRSTREAM_ENGINE": "tests.poison_engine:build",
        "OCRSTREAM_OCR_ATTEMPTS": "1",
        "OCRSTREAM_CHUNK_ATTEMPTS": "1",
        "OCRSTREAM_API_KEYS": json.dumps(KEYS),
        "OCRSTREAM_TEST_FIXED_FLAG": str(flag),
    }
    env["OCRSTREAM_S3_SOURCES"] = json.dumps({"tenant-a": [f"{env['OCRSTREAM_S3_BUCKET']}/tenant-a/"]})
    with running_services(env, tmp_path_factory.mktemp("logs"), workers=1) as services, \
            pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        ingest = httpx.Client(base_url=services["ingest"].probe_url, timeout=60)
        status = httpx.Client(base_url=services["status_api"].probe_url, timeout=30)
        yield {"env": env, "services": services, "ingest": ingest, "status": status, "flag": flag,
               "settings": Settings()}
        ingest.close()
        status.close()


def png(marker: tuple[int, int, int], seed: int) -> bytes:
    image = poison_engine.poison_image(marker, size=(64 + seed % 50, 48))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def submit(pipeline, files: list[tuple[str, bytes]], headers=A, **fields) -> dict:
    response = pipeline["ingest"].post("/v1/batches", headers=headers, data={k: str(v) for k, v in fields.items()},
                                       files=[("files", (name, data, "image/png")) for name, data in files])
    assert response.status_code == 202, response.text
    return response.json()


def db(pipeline) -> psycopg.Connection:
    s = pipeline["settings"]
    return psycopg.connect(s.database_url, autocommit=True, options=f"-c search_path={s.database_schema},public")


def batch_row(pipeline, batch_id: str) -> dict:
    with db(pipeline) as conn:
        row = conn.execute("SELECT status, total_files, succeeded, failed, skipped, cancelled, version,"
                           " cancel_requested_at FROM batches WHERE batch_id = %s", (batch_id,)).fetchone()
    keys = ("status", "total", "succeeded", "failed", "skipped", "cancelled", "version", "cancel_requested_at")
    return dict(zip(keys, row)) if row else {}


def wait_for(pipeline, batch_id: str, condition, deadline_s: float = 120) -> dict:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        row = batch_row(pipeline, batch_id)
        if row and condition(row):
            return row
        time.sleep(0.2)  # poll interval of the deadline loop
    raise TimeoutError(f"batch {batch_id}: {batch_row(pipeline, batch_id)}")


def finished(row: dict) -> bool:
    return row["status"] in ("completed", "failed", "cancelled")


def assert_one_terminal_row_per_file(pipeline, batch_id: str, total: int) -> dict:
    counts = file_row_counts(pipeline["settings"], batch_id)
    assert len(counts["by_id"]) == total and set(counts["by_id"].values()) == {1}
    assert counts["orphan_pages"] == 0 and counts["broken_word_sets"] == []
    assert sum(counts["by_status"].values()) == total
    return counts["by_status"]


def test_cancel_racing_running_chunks(pipeline) -> None:
    files = [(f"slow-{i:02d}.png", png(poison_engine.SLOW, i)) for i in range(40)]
    batch_id = submit(pipeline, files, chunk_size=2)["batch_id"]
    wait_for(pipeline, batch_id, lambda r: r["succeeded"] >= 2)  # some chunks done, one running

    first = pipeline["ingest"].delete(f"/v1/batches/{batch_id}", headers=A)
    again = pipeline["ingest"].post(f"/v1/batches/{batch_id}/cancel", headers=A)
    row = wait_for(pipeline, batch_id, finished)

    assert first.status_code == again.status_code == 202 and first.json()["cancel_requested"] is True
    assert row["status"] == "cancelled"
    by_status = assert_one_terminal_row_per_file(pipeline, batch_id, 40)
    assert set(by_status) == {"ok", "cancelled"} and by_status["cancelled"] > 0 and by_status["ok"] >= 2
    assert (row["succeeded"], row["cancelled"]) == (by_status["ok"], by_status["cancelled"])
    assert row["succeeded"] + row["failed"] + row["skipped"] + row["cancelled"] == row["total"] == 40
    # The status view serves the same counts (through BatchProgress).
    progress = max((decode(Topic.BATCH_PROGRESS, r.value()) for r in read_topic(
        pipeline["settings"], pipeline["settings"].topic_batch_progress) if r.key() == batch_id.encode()),
        key=lambda p: p.version)
    assert (progress.status, progress.cancelled, progress.processed_files) == ("cancelled", row["cancelled"], 40)
    view = pipeline["status"].get(f"/v1/batches/{batch_id}", headers=A).json()
    assert view["status"] == "cancelled"
    # Cancelled: no retry, and a repeated cancel changes nothing.
    retry = pipeline["ingest"].post(f"/v1/batches/{batch_id}/retry", headers=A)
    late = pipeline["ingest"].delete(f"/v1/batches/{batch_id}", headers=A)
    assert (retry.status_code, retry.json()["code"]) == (409, "batch_cancelled")
    assert late.status_code == 202 and batch_row(pipeline, batch_id)["version"] == row["version"]
    cancels = [e for e in (decode(Topic.BATCH_EVENTS, r.value()) for r in read_topic(
        pipeline["settings"], pipeline["settings"].topic_batch_events)) if isinstance(e, BatchCancelled)
        and e.batch_id == batch_id]
    assert 1 <= len(cancels) <= 2  # the second request may have come before the persister saw the first


def test_a_finished_batch_cannot_be_cancelled(pipeline) -> None:
    batch_id = submit(pipeline, [("one.png", png((5, 5, 5), 1))])["batch_id"]
    wait_for(pipeline, batch_id, finished)
    response = pipeline["ingest"].delete(f"/v1/batches/{batch_id}", headers=A)
    assert (response.status_code, response.json()["code"]) == (409, "batch_finished")


def test_retry_of_failed_files_after_a_worker_sigkill(pipeline) -> None:
    failing = [(f"bug-{i}.png", png(poison_engine.RAISE_UNLESS_FLAG, i)) for i in range(6)]
    good = [(f"good-{i}.png", png((9, 9, 9), i)) for i in range(2)]
    batch_id = submit(pipeline, failing + good, chunk_size=1)["batch_id"]
    row = wait_for(pipeline, batch_id, finished)
    assert (row["status"], row["succeeded"], row["failed"]) == ("completed", 2, 6)
    with db(pipeline) as conn:
        failed_ids = [f for (f,) in conn.execute("SELECT file_id FROM files WHERE batch_id = %s AND status = "
                                                 "'failed' ORDER BY original_name", (batch_id,))]
    nothing = pipeline["ingest"].post(f"/v1/batches/{batch_id}/retry", headers=A, json={"file_ids": ["nope"]})
    assert (nothing.status_code, nothing.json()["code"]) == (422, "files_not_retryable")

    pipeline["flag"].touch()  # the bug is fixed: a retry now succeeds
    worker = pipeline["services"]["ocr_worker-1"]
    worker.kill()  # SIGKILL, then the retry is asked for while no worker runs...
    first = pipeline["ingest"].post(f"/v1/batches/{batch_id}/retry", headers=A, json={"file_ids": failed_ids[:4]})
    pending = pipeline["ingest"].post(f"/v1/batches/{batch_id}/retry", headers=A)
    worker.start()  # ...and a new worker process picks it up
    worker.wait_ready()
    row = wait_for(pipeline, batch_id, lambda r: finished(r) and r["succeeded"] == 6)

    assert first.status_code == 202 and first.json()["attempt"] == 2 and first.json()["file_ids"] == failed_ids[:4]
    assert (pending.status_code, pending.json()["code"]) == (409, "batch_not_finished")
    assert (row["status"], row["succeeded"], row["failed"]) == ("completed", 6, 2)
    second = pipeline["ingest"].post(f"/v1/batches/{batch_id}/retry", headers=A)  # every failed file left
    row = wait_for(pipeline, batch_id, lambda r: finished(r) and r["succeeded"] == 8)
    assert second.status_code == 202 and (second.json()["attempt"], sorted(second.json()["file_ids"])) == (3, sorted(failed_ids[4:]))
    assert (row["status"], row["failed"]) == ("completed", 0)
    assert assert_one_terminal_row_per_file(pipeline, batch_id, 8) == {"ok": 8}
    with db(pipeline) as conn:
        history = dict(conn.execute("SELECT file_id, array_agg(status || ':' || attempt ORDER BY id) FROM"
                                    " file_attempts WHERE file_id = ANY(%s) GROUP BY 1", (failed_ids,)).fetchall())
    assert [history[f] for f in failed_ids] == [["failed:1", "ok:2"]] * 4 + [["failed:1", "ok:3"]] * 2
    again = pipeline["ingest"].post(f"/v1/batches/{batch_id}/retry", headers=A)
    assert (again.status_code, again.json()["code"]) == (409, "nothing_to_retry")
    events = [e for e in (decode(Topic.BATCH_EVENTS, r.value()) for r in read_topic(
        pipeline["settings"], pipeline["settings"].topic_batch_events)) if isinstance(e, BatchRetryRequested)
        and e.batch_id == batch_id]
    assert [e.attempt for e in events] == [2, 3]


def test_dedupe_links_an_earlier_result(pipeline) -> None:
    original = png((21, 21, 21), 3)
    first = submit(pipeline, [("orig.png", original)])
    wait_for(pipeline, first["batch_id"], finished)
    second = submit(pipeline, [("copy.png", original), ("new.png", png((22, 22, 22), 4))])
    opted_out = submit(pipeline, [("copy2.png", original)], dedupe="false")
    other_options = submit(pipeline, [("copy3.png", original)], pdf_dpi=300)
    for batch in (second, opted_out, other_options):
        wait_for(pipeline, batch["batch_id"], finished)

    assert (second["deduplicated"], second["total_chunks"]) == (1, 1)
    assert opted_out["deduplicated"] == other_options["deduplicated"] == 0
    with db(pipeline) as conn:
        orig_id, orig_pages = conn.execute("SELECT file_id, page_count FROM files WHERE batch_id = %s",
                                           (first["batch_id"],)).fetchone()
        copy = conn.execute("SELECT status, duplicate_of, page_count, engine FROM files WHERE batch_id = %s AND"
                            " original_name = 'copy.png'", (second["batch_id"],)).fetchone()
        texts = conn.execute("SELECT f.original_name, p.text FROM pages p JOIN files f USING (file_id) WHERE"
                             " f.file_id = %s OR f.duplicate_of = %s ORDER BY 1", (orig_id, orig_id)).fetchall()
    assert copy == ("ok", orig_id, orig_pages, copy[3]) and orig_pages >= 1
    assert [name for name, _ in texts] == ["copy.png", "orig.png"] and texts[0][1] == texts[1][1]
    assert batch_row(pipeline, second["batch_id"])["succeeded"] == 2


def test_another_tenant_can_neither_see_nor_change_a_batch(pipeline) -> None:
    batch_id = submit(pipeline, [("mine.png", png((30, 30, 30), 5)), ("bug.png", png(poison_engine.RAISE, 6))],
                      chunk_size=1)["batch_id"]
    before = wait_for(pipeline, batch_id, finished)
    settings = pipeline["settings"]
    events_before = len(read_topic(settings, settings.topic_batch_events))
    bucket = settings.s3_bucket

    answers = {
        "status": pipeline["status"].get(f"/v1/batches/{batch_id}", headers=B),
        "files": pipeline["status"].get(f"/v1/batches/{batch_id}/results", headers=B),
        "cancel": pipeline["ingest"].delete(f"/v1/batches/{batch_id}", headers=B),
        "cancel (POST)": pipeline["ingest"].post(f"/v1/batches/{batch_id}/cancel", headers=B),
        "retry": pipeline["ingest"].post(f"/v1/batches/{batch_id}/retry", headers=B),
        "S3 prefix": pipeline["ingest"].post("/v1/batches", headers=B,
                                             json={"prefix": {"bucket": bucket, "prefix": "tenant-a/"}}),
        "S3 object": pipeline["ingest"].post("/v1/batches", headers=B, json={
            "objects": [{"bucket": bucket, "key": f"tenant-a/{batch_id}/manifest.json"}]}),
    }

    assert {what: r.status_code for what, r in answers.items()} == {
        "status": 404, "files": 404, "cancel": 404, "cancel (POST)": 404, "retry": 404, "S3 prefix": 403,
        "S3 object": 403}
    assert all(r.json()["code"] in ("batch_not_found", "s3_access_denied") for what, r in answers.items()
               if what not in ("status", "files"))
    assert batch_row(pipeline, batch_id) == before
    assert len(read_topic(settings, settings.topic_batch_events)) == events_before
