"""status_api against the real Kafka broker and PostgreSQL: the progress view, per-file results, search."""
import json
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import TypeVar

import numpy as np
import pytest
from confluent_kafka import Producer
from fastapi.testclient import TestClient

from common.db import build_pool
from common.kafka import ensure_topics, produce_and_flush
from schemas.progress import BatchProgress, BatchStatus
from schemas.topics import encode
from services.status_api.app import create_app
from services.status_api.settings import StatusSettings

pytestmark = pytest.mark.integration

KEY_ACME, KEY_GLOBEX = "key-acme", "key-globex"
ACME, GLOBEX = {"Authorization": f"Bearer {KEY_ACME}"}, {"Authorization": f"Bearer {KEY_GLOBEX}"}
T = TypeVar("T")


@pytest.fixture
def status_settings(settings, monkeypatch: pytest.MonkeyPatch) -> StatusSettings:
    """This test's topics and schema (from the `settings` fixture's env) and two tenants."""
    monkeypatch.setenv("OCRSTREAM_API_KEYS", json.dumps({KEY_ACME: "acme", KEY_GLOBEX: "globex"}))
    return StatusSettings()


def wait_until(condition: Callable[[], T], what: str, timeout: float = 60.0) -> T:
    """Poll `condition` until it returns something truthy; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.1)  # poll interval only: the deadline and the condition decide
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


def wait_ready(client: TestClient) -> None:
    wait_until(lambda: client.get("/readyz").status_code == 200, "/readyz to answer 200")


def progress(batch_id: str, version: int, *, tenant: str = "acme", succeeded: int = 0, total: int = 10,
             status: BatchStatus = BatchStatus.PROCESSING) -> BatchProgress:
    started = datetime.now(timezone.utc) - timedelta(seconds=10)
    return BatchProgress(
        batch_id=batch_id, tenant=tenant, name=f"batch {batch_id}", status=status, total_files=total,
        total_chunks=2, succeeded=succeeded, failed=0, skipped=0, created_at=started, started_at=started,
        updated_at=started + timedelta(seconds=10), version=version,
    )


def publish(settings: StatusSettings, *records: BatchProgress | tuple[bytes, bytes]) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
    produce_and_flush(producer, [
        (settings.topic_batch_progress, *r) if isinstance(r, tuple)
        else (settings.topic_batch_progress, r.batch_id.encode(), encode(r))
        for r in records
    ], timeout=30)


def test_status_shows_the_highest_version_and_follows_the_topic(status_settings):
    # Versions out of order in one partition, another tenant's batch, and a record no contract can read.
    publish(status_settings,
            progress("b1", 3, succeeded=5), progress("b1", 1, succeeded=1), progress("b1", 2, succeeded=3),
            progress("b2", 1, tenant="globex", succeeded=2),
            (b"b1", b"{not json"))

    with TestClient(create_app(status_settings)) as client:
        wait_ready(client)

        body = client.get("/v1/batches/b1", headers=ACME).json()
        assert (body["version"], body["succeeded"], body["percent"]) == (3, 5, 50.0)
        assert body["status"] == "processing" and 0 <= body["eta_seconds"] <= 10

        assert client.get("/v1/batches/b2", headers=GLOBEX).json()["version"] == 1
        for batch_id in ("b2", "nope"):  # another tenant's batch looks exactly like one that does not exist
            response = client.get(f"/v1/batches/{batch_id}", headers=ACME)
            assert response.status_code == 404
            assert response.json() | {"detail": f"batch {batch_id} not found", "code": "batch_not_found"} == response.json()
        assert client.get("/v1/batches/b1").status_code == 401
        assert client.get("/v1/batches/b1", headers={"Authorization": "Bearer wrong"}).status_code == 401

        # After the catch-up the view keeps following; a stale replay published next to it changes nothing.
        publish(status_settings, progress("b1", 4, succeeded=8), progress("b1", 2, succeeded=3))
        body = wait_until(lambda: (b := client.get("/v1/batches/b1", headers=ACME).json())["version"] == 4 and b,
                          "version 4 of b1")
        assert (body["succeeded"], body["percent"]) == (8, 80.0)
        publish(status_settings, progress("b1", 5, succeeded=10, status=BatchStatus.COMPLETED))
        body = wait_until(lambda: (b := client.get("/v1/batches/b1", headers=ACME).json())["version"] == 5 and b,
                          "version 5 of b1")
        assert (body["status"], body["percent"], body["eta_seconds"]) == ("completed", 100.0, None)

        # Accepted (a 'pending' snapshot from ingest) but not yet persisted: no results yet, not a 404.
        publish(status_settings, progress("b3", 0, status=BatchStatus.PENDING))
        wait_until(lambda: client.get("/v1/batches/b3", headers=ACME).status_code == 200, "pending b3")
        response = client.get("/v1/batches/b3/results", headers=ACME)
        assert response.status_code == 200 and response.json() == {"batch_id": "b3", "data": [], "next_cursor": None}
        assert client.get("/v1/batches/b3/results", headers=GLOBEX).status_code == 404

        metrics = client.get("/metrics").text
        assert 'ocrstream_status_view_records_total{outcome="undecodable"}' in metrics
        assert 'ocrstream_status_view_records_total{outcome="stale"}' in metrics

    # A restarted instance rebuilds the same view from the topic alone.
    with TestClient(create_app(status_settings)) as client:
        wait_ready(client)
        assert client.get("/v1/batches/b1", headers=ACME).json()["version"] == 5


def test_not_ready_and_503_until_the_progress_topic_has_been_read(status_settings):
    later = status_settings.model_copy(update={"topic_batch_progress": status_settings.topic_batch_progress + ".later"})
    with TestClient(create_app(later)) as client:
        assert client.get("/readyz").status_code == 503
        response = client.get("/v1/batches/b1", headers=ACME)
        assert response.status_code == 503
        assert response.json()["detail"].startswith("status view is still loading")

        assert ensure_topics(later) == [later.topic_batch_progress]  # the materializer waits for it to exist
        publish(later, progress("b1", 1, succeeded=1))
        wait_ready(client)
        body = wait_until(lambda: (r := client.get("/v1/batches/b1", headers=ACME)).status_code == 200 and r.json(),
                          "b1 to be served")
        assert body["version"] == 1


PAGES = {  # (batch, tenant, file, page) → text
    ("ba", "acme", "fa-1", 1): "Invoice number 2024-117. Total amount due: 1,250 USD, payable by March 31.",
    ("ba", "acme", "fa-1", 2): "Thank you for your business. Questions about this invoice: billing@example.com",
    ("ba", "acme", "fa-2", 1): "고양이가 따뜻한 창가에 앉아 햇볕을 쬐며 낮잠을 자고 있다.",
    ("ba", "acme", "fa-3", 1): "The weather forecast predicts heavy rain and strong winds along the coast tomorrow.",
    ("bg", "globex", "fg-1", 1): "Invoice number 2024-117. Total amount due: 1,250 USD, payable by March 31.",
}


def insert_results(settings: StatusSettings, embedder) -> None:
    """Rows as the persister writes them (schemas/db/001_init.sql), embeddings from the real embedder."""
    keys = list(PAGES)
    embeddings = embedder.embed([PAGES[k] for k in keys])
    files = sorted({(b, t, f) for b, t, f, _ in keys})
    with build_pool(settings, name="test-status-api") as pool, pool.connection() as conn, conn.cursor() as cur:
        cur.executemany("INSERT INTO batches (batch_id, tenant, total_files, version) VALUES (%s, %s, %s, 1)",
                        [("ba", "acme", 3), ("bg", "globex", 1)])
        cur.executemany(
            "INSERT INTO files (file_id, batch_id, chunk_id, tenant, original_name, sha256, size_bytes, content_type,"
            " status, engine, embedding_model, page_count, timings, attempt)"
            " VALUES (%s, %s, 'c1', %s, %s, %s, 1000, 'image/png', 'ok', 'tesseract', %s, %s, '{}', 1)",
            [(f, b, t, f"{f}.png", "0" * 64, embedder.model_name, sum(1 for k in keys if k[2] == f))
             for b, t, f in files],
        )
        cur.executemany(
            "INSERT INTO pages (file_id, page_number, batch_id, tenant, width, height, text, mean_confidence,"
            " embedding) VALUES (%s, %s, %s, %s, 800, 600, %s, 0.915, %s)",
            [(f, p, b, t, PAGES[(b, t, f, p)], np.asarray(e, dtype=np.float32))
             for (b, t, f, p), e in zip(keys, embeddings)],
        )
        cur.executemany(
            "INSERT INTO words (file_id, page_number, word_index, text, confidence, x, y, width, height)"
            " VALUES ('fa-1', 1, %s, %s, 0.9, %s, 10, 50, 20)",
            [(i, word, 60 * i) for i, word in enumerate(PAGES[("ba", "acme", "fa-1", 1)].split()[:3])],
        )


def test_results_are_paged_by_cursor_and_search_stays_in_the_tenant(status_settings):
    with TestClient(create_app(status_settings)) as client:
        wait_ready(client)
        insert_results(status_settings, client.app.state.embedder)

        seen, cursor, pages_read = [], None, 0
        while True:
            params = {"limit": 1} | ({"cursor": cursor} if cursor else {})
            response = client.get("/v1/batches/ba/results", headers=ACME, params=params)
            assert response.status_code == 200, response.text
            body = response.json()
            seen += [f["file_id"] for f in body["data"]]
            pages_read += 1
            cursor = body["next_cursor"]
            if cursor is None:
                break
            assert len(body["data"]) == 1 and cursor == body["data"][-1]["file_id"]
        assert seen == ["fa-1", "fa-2", "fa-3"] and pages_read == 3

        whole = client.get("/v1/batches/ba/results", headers=ACME).json()
        assert [f["file_id"] for f in whole["data"]] == seen and whole["next_cursor"] is None
        first = whole["data"][0]
        assert [p["page_number"] for p in first["pages"]] == [1, 2] and first["pages"][0]["words"] is None
        assert first["text"] == "\f".join(PAGES[("ba", "acme", "fa-1", n)] for n in (1, 2))
        with_words = client.get("/v1/batches/ba/results", headers=ACME, params={"include_words": "true"}).json()
        words = with_words["data"][0]["pages"][0]["words"]
        assert [w["text"] for w in words] == ["Invoice", "number", "2024-117."]
        assert words[1]["bbox"] == {"x": 60, "y": 10, "width": 50, "height": 20}
        assert with_words["data"][0]["pages"][1]["words"] == []

        assert client.get("/v1/batches/bg/results", headers=ACME).status_code == 404
        assert client.get("/v1/batches/bg/results", headers=GLOBEX).json()["data"][0]["file_id"] == "fg-1"
        assert client.get("/v1/batches/ba/results", headers=ACME, params={"limit": 0}).status_code == 422

        def top_hits(query: str, headers: dict) -> list[dict]:
            response = client.get("/v1/search", headers=headers, params={"q": query, "k": 10})
            assert response.status_code == 200, response.text
            return response.json()["data"]

        hits = top_hits("how much is due on the invoice", ACME)
        assert (hits[0]["file_id"], hits[0]["page_number"]) == ("fa-1", 1)
        assert hits[0]["original_name"] == "fa-1.png" and hits[0]["snippet"].startswith("Invoice number")
        assert {h["batch_id"] for h in hits} == {"ba"}  # globex's identical page is never shown to acme
        assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
        assert top_hits("창가에서 낮잠 자는 고양이", ACME)[0]["file_id"] == "fa-2"
        assert [h["file_id"] for h in top_hits("invoice total", GLOBEX)] == ["fg-1"]

        for bad in ({"k": 3}, {"q": "", "k": 3}, {"q": "   "}, {"q": "x" * 501}, {"q": "rain", "k": 0},
                    {"q": "rain", "k": 101}):
            assert client.get("/v1/search", headers=ACME, params=bad).status_code == 422, bad
        assert client.get("/v1/search", params={"q": "rain"}).status_code == 401
