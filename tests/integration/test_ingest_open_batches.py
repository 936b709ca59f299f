"""Open batches at ingest on the real broker, S3 server and Postgres (no workers, no persister): create one
open, add files to it across requests, seal it; every answer and error code of the three endpoints."""
import threading

import pytest
from fastapi.testclient import TestClient

from common.kafka import read_topic
from common.settings import Settings
from common.storage import build_s3_client
from schemas.batch_events import BatchCreated, BatchFilesAdded, BatchSealed
from schemas.topics import Topic, decode
from services.ingest.planning import manifest_key
from tests.integration.test_ingest import multipart, render
from tests.integration.test_ingest_lifecycle import A, B, chunks_of, client, make_client, source_bucket  # noqa: F401

pytestmark = pytest.mark.integration


def batch_events(settings: Settings, expected: int = 0) -> list:
    return [decode(Topic.BATCH_EVENTS, r.value())
            for r in read_topic(settings, settings.topic(Topic.BATCH_EVENTS), expected=expected)]


def create_open(client: TestClient, seeds: range, **fields) -> dict:
    response = client.post("/v1/batches", headers=A, data={"open": "true", "chunk_size": "2"} | fields,
                           files=multipart([(f"p{i}.png", render(i)) for i in seeds]))
    assert response.status_code == 202, response.text
    return response.json()


def add(client: TestClient, batch_id: str, seeds: range, headers=A, **fields):
    return client.post(f"/v1/batches/{batch_id}/files", headers=headers, data=fields,
                       files=multipart([(f"p{i}.png", render(i)) for i in seeds]))


def test_an_open_batch_grows_across_requests_until_sealed(client: TestClient, settings: Settings) -> None:
    created = create_open(client, range(3))
    batch_id = created["batch_id"]
    added = add(client, batch_id, range(10, 13))
    refused = add(client, batch_id, range(20, 21), strict="true")  # nothing changes
    partly = client.post(f"/v1/batches/{batch_id}/files", headers=A,
                         files=multipart([("bad.txt", b"plain text"), ("p30.png", render(30))]))
    sealed = client.post(f"/v1/batches/{batch_id}/seal", headers=A)
    sealed_again = client.post(f"/v1/batches/{batch_id}/seal", headers=A)
    late = add(client, batch_id, range(40, 41))

    assert (created["total_files"], created["total_chunks"]) == (3, 2)
    assert added.status_code == 202, added.text
    body = added.json()
    assert (body["total_files"], body["total_chunks"], body["added_chunks"]) == (6, 4, 2)
    assert len(set(body["file_ids"])) == 3 and added.headers["location"] == body["status_url"]
    assert refused.status_code == 202  # strict with every file fine
    assert partly.status_code == 202
    assert [(r["index"], r["code"]) for r in partly.json()["rejected"]] == [(0, "unsupported_type")]
    assert partly.json()["file_ids"][0] == partly.json()["rejected"][0]["file_id"]
    assert (partly.json()["total_files"], partly.json()["total_chunks"]) == (9, 6)
    assert (sealed.status_code, sealed_again.status_code) == (202, 200)
    assert sealed.json() == sealed_again.json() == {
        "batch_id": batch_id, "sealed": True, "total_files": 9, "total_chunks": 6,
        "status_url": created["status_url"]}
    assert (late.status_code, late.json()["code"]) == (409, "batch_sealed")

    events = batch_events(settings, expected=5)
    assert [type(e) for e in events] == [BatchCreated, BatchFilesAdded, BatchFilesAdded, BatchFilesAdded,
                                         BatchSealed]
    assert events[0].open and [e.total_files for e in events[1:]] == [6, 7, 9, 9]
    assert [r.file_id for r in events[3].rejected] == [partly.json()["file_ids"][0]]
    chunk_ids = sorted(c.chunk_id for c in chunks_of(settings, expected=6))
    assert chunk_ids == [f"{batch_id}.{i:05d}" for i in range(6)]  # the additions continue the numbering
    # Every addition's stored files are in a manifest part of its own (what a retry runs again).
    s3 = build_s3_client(settings)
    assert [s3.stat_object(settings.s3_bucket, manifest_key("tenant-a", batch_id, part)).size > 0
            for part in range(4)] == [True] * 4


def test_additions_are_refused_with_a_code(make_client, settings: Settings) -> None:
    client = make_client(max_files_per_open_batch=5, max_files_per_batch=4)
    batch_id = create_open(client, range(3))["batch_id"]

    unknown = add(client, "0" * 32, range(1))
    other_tenant = add(client, batch_id, range(1), headers=B)
    other_seal = client.post(f"/v1/batches/{batch_id}/seal", headers=B)
    full = add(client, batch_id, range(10, 13))
    too_many = add(client, batch_id, range(10, 15))
    no_files = client.post(f"/v1/batches/{batch_id}/files", headers=A, data={"strict": "true"})
    json_body = client.post(f"/v1/batches/{batch_id}/files", headers=A, json={"objects": []})
    options = add(client, batch_id, range(1), languages="eng")  # the batch keeps the options it was created with
    all_bad = client.post(f"/v1/batches/{batch_id}/files", headers=A, files=multipart([("a.txt", b"text")]))
    fits = add(client, batch_id, range(10, 12))
    open_too_large = client.post("/v1/batches", headers=A, data={"open": "true"},
                                 files=multipart([(f"q{i}.png", render(100 + i)) for i in range(4)]))

    for response, status, code in [(unknown, 404, "batch_not_found"), (other_tenant, 404, "batch_not_found"),
                                   (other_seal, 404, "batch_not_found"), (full, 413, "batch_full"),
                                   (too_many, 413, "too_many_files"), (no_files, 422, "no_files"),
                                   (json_body, 415, "unsupported_media_type"), (options, 422, "invalid_request"),
                                   (all_bad, 415, "unsupported_type")]:
        assert (response.status_code, response.json()["code"]) == (status, code), response.text
    assert "max_files_per_open_batch (5)" in full.json()["detail"]
    assert fits.status_code == 202 and fits.json()["total_files"] == 5
    assert open_too_large.status_code == 202  # 4 files fit in an open batch of 5
    assert sorted(type(e).__name__ for e in batch_events(settings, expected=3)) == [
        "BatchCreated", "BatchCreated", "BatchFilesAdded"]


def test_an_addition_repeated_under_its_idempotency_key_adds_once(client: TestClient, settings: Settings) -> None:
    first_batch = create_open(client, range(2))["batch_id"]
    second_batch = create_open(client, range(50, 52))["batch_id"]
    key = {"Idempotency-Key": "add-1"}

    first = add(client, first_batch, range(10, 12), headers=A | key)
    again = add(client, first_batch, range(10, 12), headers=A | key)
    client.post(f"/v1/batches/{first_batch}/seal", headers=A)
    after_seal = add(client, first_batch, range(10, 12), headers=A | key)  # the answer was lost: still the same
    elsewhere = add(client, second_batch, range(10, 12), headers=A | key)

    assert first.status_code == again.status_code == after_seal.status_code == 202
    assert again.json() == after_seal.json() == first.json()
    assert (elsewhere.status_code, elsewhere.json()["code"]) == (409, "idempotency_key_reused")
    added = [e for e in batch_events(settings, expected=4) if isinstance(e, BatchFilesAdded)]
    assert [e.batch_id for e in added] == [first_batch]


def test_concurrent_additions_to_one_batch_run_one_after_another(client: TestClient, settings: Settings) -> None:
    batch_id = create_open(client, range(2))["batch_id"]
    answers: list = [None, None, None]
    barrier = threading.Barrier(3)

    def post(slot: int) -> None:
        barrier.wait()
        answers[slot] = add(client, batch_id, range(10 + 10 * slot, 13 + 10 * slot))

    threads = [threading.Thread(target=post, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    assert [a.status_code for a in answers] == [202] * 3
    assert sorted(a.json()["total_files"] for a in answers) == [5, 8, 11]
    added = [e for e in batch_events(settings, expected=4) if isinstance(e, BatchFilesAdded)]
    assert [e.total_files for e in added] == [5, 8, 11]  # in the order they were counted
    chunk_ids = [c.chunk_id for c in chunks_of(settings, expected=7)]
    assert len(set(chunk_ids)) == 7
