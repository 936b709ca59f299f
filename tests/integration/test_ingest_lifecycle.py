"""ingest's request rules on the real broker, S3 server and Postgres (no workers): the gate before the body,
partial accept, field limits, Idempotency-Key, S3 object and prefix batches, S3 event notifications, and the
OpenAPI document listing every problem code."""
import hashlib
import io
import json
import threading
from collections.abc import Callable, Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient
from minio import Minio

from common.kafka import read_topic
from common.settings import Settings
from common.storage import build_s3_client, ensure_bucket
from schemas.api import ProblemCode
from schemas.batch_events import BatchCreated
from schemas.chunks import ChunkRequested
from schemas.topics import Topic, decode
from services.ingest.app import create_app
from services.ingest.settings import IngestSettings
from tests.integration.test_ingest import multipart, render

pytestmark = pytest.mark.integration

KEYS = {"key-a": "tenant-a", "key-b": "tenant-b"}
A = {"Authorization": "Bearer key-a"}
B = {"Authorization": "Bearer key-b"}


@pytest.fixture
def source_bucket(settings: Settings) -> str:
    """A bucket of scans that tenants own prefixes of (the S3-upload flow)."""
    bucket = f"{settings.s3_bucket}-src"
    ensure_bucket(build_s3_client(settings), bucket)
    return bucket


@pytest.fixture
def make_client(settings: Settings, source_bucket: str) -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def make(**overrides) -> TestClient:
        ingest = IngestSettings(**({"api_keys": KEYS, "status_api_url": "http://status.test",
                                    "s3_sources": {"tenant-a": [f"{source_bucket}/a/"],
                                                   "tenant-b": [f"{source_bucket}/b/"]},
                                    "s3_event_window_s": 0.5} | overrides))
        client = TestClient(create_app(ingest))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client) -> TestClient:
    return make_client()


def batches_created(settings: Settings, expected: int = 0) -> list[BatchCreated]:
    records = read_topic(settings, settings.topic(Topic.BATCH_EVENTS), expected=expected)
    return [e for e in (decode(Topic.BATCH_EVENTS, r.value()) for r in records) if isinstance(e, BatchCreated)]


def chunks_of(settings: Settings, expected: int = 0) -> list[ChunkRequested]:
    return [decode(Topic.OCR_CHUNKS, r.value()) for r in read_topic(settings, settings.topic(Topic.OCR_CHUNKS),
                                                                    expected=expected)]


# ---- the gate: API key and size before a byte of the body is read ------------------------------------------------

class _Body:
    """A request body that records whether anyone read it."""

    def __init__(self, size: int) -> None:
        self.size, self.read = size, False

    def __iter__(self):
        self.read = True
        yield b"x" * self.size


def test_api_key_and_size_are_checked_before_the_body_is_read(make_client, settings: Settings) -> None:
    client = make_client(max_request_bytes=1000)
    unauthenticated, oversized = _Body(5000), _Body(5000)
    no_key = client.post("/v1/batches", content=unauthenticated,
                         headers={"Content-Type": "multipart/form-data; boundary=x", "Content-Length": "5000"})
    too_large = client.post("/v1/batches", content=oversized,
                            headers=A | {"Content-Type": "multipart/form-data; boundary=x", "Content-Length": "5000"})
    chunked = client.post("/v1/batches", content=iter([b"--x\r\n" + b"y" * 600, b"z" * 600]),
                          headers=A | {"Content-Type": "multipart/form-data; boundary=x"})

    assert (no_key.status_code, no_key.json()["code"]) == (401, "unauthorized")
    assert (too_large.status_code, too_large.json()["code"]) == (413, "request_too_large")
    assert (chunked.status_code, chunked.json()["code"]) == (413, "request_too_large")
    assert not unauthenticated.read and not oversized.read
    assert batches_created(settings) == []


# ---- partial accept and field limits -------------------------------------------------------------------------------

def test_bad_files_become_failed_results_and_the_rest_goes_on(make_client, settings: Settings) -> None:
    client = make_client(max_file_bytes=20_000)
    files = [("good-0.png", render(0)), ("empty.png", b""), ("notes.txt", b"plain text"),
             ("big.png", b"\x89PNG\r\n\x1a\n" + bytes(30_000)), ("n" * 300 + ".png", render(1)),
             ("good-1.png", render(2))]
    response = client.post("/v1/batches", headers=A, files=multipart(files))

    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["total_files"], body["total_chunks"]) == (6, 1)
    assert [(r["index"], r["code"]) for r in body["rejected"]] == [
        (1, "empty"), (2, "unsupported_type"), (3, "too_large"), (4, "name_too_long")]
    [created] = batches_created(settings, expected=1)
    assert created.total_files == 6
    assert {r.file_id: r.error_code.value for r in created.rejected} == {r["file_id"]: r["code"]
                                                                        for r in body["rejected"]}
    [chunk] = chunks_of(settings, expected=1)
    assert [f.original_name for f in chunk.files] == ["good-0.png", "good-1.png"]


def test_every_free_text_field_is_bounded_and_languages_must_be_installed(client: TestClient,
                                                                         settings: Settings) -> None:
    png = multipart([("a.png", render(1))])
    answers = {
        "huge languages": client.post("/v1/batches", headers=A, files=png, data={"languages": "kor" * 300_000}),
        "osd": client.post("/v1/batches", headers=A, files=png, data={"languages": "osd"}),
        "uninstalled": client.post("/v1/batches", headers=A, files=png, data={"languages": "kor+fra"}),
        "long name": client.post("/v1/batches", headers=A, files=png, data={"name": "n" * 201}),
        "NUL in name": client.post("/v1/batches", headers=A, files=png, data={"name": "a\x00b"}),
        "S3 key too long": client.post("/v1/batches", headers=A, json={"objects": [{"bucket": "b", "key": "k" * 1025}]}),
    }
    file_name = client.post("/v1/batches", headers=A, files=multipart([("n" * 5000 + ".png", render(1))]))

    assert {what: (r.status_code, r.json()["code"]) for what, r in answers.items()} == {
        "huge languages": (400, "invalid_multipart"),  # over the 64 KiB a form field may hold
        "osd": (422, "invalid_request"), "uninstalled": (422, "invalid_request"),
        "long name": (422, "invalid_request"), "NUL in name": (422, "invalid_request"),
        "S3 key too long": (422, "invalid_request")}
    assert "installed" in answers["osd"].json()["detail"] and "fra" in answers["uninstalled"].json()["detail"]
    assert (file_name.status_code, file_name.json()["code"]) == (400, "invalid_multipart")
    assert "file name" in file_name.json()["detail"] and "Maximum header size" in file_name.json()["detail"]
    assert batches_created(settings) == []


def test_starlettes_thousand_file_limit_is_raised_to_the_setting(make_client, settings: Settings) -> None:
    client = make_client(max_files_per_batch=1500)
    empties = multipart([(f"e{i}.png", b"") for i in range(1200)])  # every one refused: nothing is stored
    over = multipart([(f"e{i}.png", b"") for i in range(1501)])

    within = client.post("/v1/batches", headers=A, files=empties)
    too_many = client.post("/v1/batches", headers=A, files=over)

    assert (within.status_code, within.json()["code"], len(within.json()["errors"])) == (422, "invalid_files", 1200)
    assert (too_many.status_code, too_many.json()["code"]) == (413, "too_many_files")


def test_a_body_of_another_type_is_415(client: TestClient) -> None:
    response = client.post("/v1/batches", headers=A | {"Content-Type": "text/plain"}, content=b"hello")
    assert (response.status_code, response.json()["code"]) == (415, "unsupported_media_type")


# ---- Idempotency-Key ----------------------------------------------------------------------------------------------

def test_a_repeated_idempotency_key_answers_the_first_202(client: TestClient, settings: Settings) -> None:
    files = [("a.png", render(1)), ("b.png", render(2))]
    key = {"Idempotency-Key": "order-17"}
    first = client.post("/v1/batches", headers=A | key, files=multipart(files), data={"name": "x"})
    again = client.post("/v1/batches", headers=A | key, files=multipart(files), data={"name": "x"})
    other_body = client.post("/v1/batches", headers=A | key, files=multipart(files[:1]), data={"name": "x"})
    other_tenant = client.post("/v1/batches", headers=B | key, files=multipart(files), data={"name": "x"})
    bad_key = client.post("/v1/batches", headers=A | {"Idempotency-Key": "k" * 256}, files=multipart(files))

    assert first.status_code == again.status_code == 202
    assert again.json() == first.json() and again.headers["location"] == first.headers["location"]
    assert (other_body.status_code, other_body.json()["code"]) == (409, "idempotency_key_reused")
    assert other_tenant.status_code == 202 and other_tenant.json()["batch_id"] != first.json()["batch_id"]
    assert (bad_key.status_code, bad_key.json()["code"]) == (400, "invalid_idempotency_key")
    assert sorted(c.batch_id for c in batches_created(settings, expected=2)) == sorted(
        [first.json()["batch_id"], other_tenant.json()["batch_id"]])


def test_the_same_idempotency_key_posted_twice_at_once_makes_one_batch(client: TestClient,
                                                                       settings: Settings) -> None:
    files = [(f"p{i}.png", render(i)) for i in range(20)]
    answers: list = [None, None]
    barrier = threading.Barrier(2)

    def post(slot: int) -> None:
        barrier.wait()
        answers[slot] = client.post("/v1/batches", headers=A | {"Idempotency-Key": "concurrent-1"},
                                    files=multipart(files))

    threads = [threading.Thread(target=post, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    assert [a.status_code for a in answers] == [202, 202]
    assert answers[0].json() == answers[1].json()
    [created] = batches_created(settings, expected=1)
    assert created.batch_id == answers[0].json()["batch_id"]
    assert len(chunks_of(settings, expected=2)) == 2


# ---- batches from S3 objects and prefixes --------------------------------------------------------------------------

def _put(s3: Minio, bucket: str, key: str, data: bytes) -> str:
    return s3.put_object(bucket, key, io.BytesIO(data), len(data)).etag


def test_a_batch_of_s3_objects_is_verified_and_never_copied(client: TestClient, settings: Settings,
                                                            source_bucket: str) -> None:
    s3 = build_s3_client(settings)
    scans = {f"a/scans/{i}.png": render(40 + i) for i in range(3)}
    etags = {key: _put(s3, source_bucket, key, data) for key, data in scans.items()}
    keys = list(scans)
    objects = [
        {"bucket": source_bucket, "key": keys[0], "sha256": hashlib.sha256(scans[keys[0]]).hexdigest(),
         "size": len(scans[keys[0]])},
        {"bucket": source_bucket, "key": keys[1], "etag": etags[keys[1]]},
        {"bucket": source_bucket, "key": keys[2], "sha256": "0" * 64},  # not what is stored
        {"bucket": source_bucket, "key": "a/scans/missing.png"},
    ]
    response = client.post("/v1/batches", headers=A, json={"objects": objects, "name": "from s3"})
    by_prefix = client.post("/v1/batches", headers=A, json={"prefix": {"bucket": source_bucket, "prefix": "a/scans/"},
                                                            "dedupe": False})

    assert response.status_code == 202, response.text
    assert [(r["index"], r["code"]) for r in response.json()["rejected"]] == [(2, "checksum_mismatch"),
                                                                             (3, "object_missing")]
    assert by_prefix.status_code == 202 and by_prefix.json()["total_files"] == 3
    chunks = {c.batch_id: c for c in chunks_of(settings, expected=2)}
    files = chunks[response.json()["batch_id"]].files
    assert [(f.bucket, f.key) for f in files] == [(source_bucket, keys[0]), (source_bucket, keys[1])]
    assert [f.sha256 for f in files] == [hashlib.sha256(scans[k]).hexdigest() for k in keys[:2]]
    assert sorted(f.key for f in chunks[by_prefix.json()["batch_id"]].files) == sorted(keys)
    own = [o.object_name for o in s3.list_objects(settings.s3_bucket, recursive=True)]
    assert all(name.endswith("manifest.json") for name in own)  # nothing copied into ingest's bucket


def test_another_tenants_bucket_or_prefix_is_403_and_nothing_is_created(client: TestClient, settings: Settings,
                                                                        source_bucket: str) -> None:
    s3 = build_s3_client(settings)
    _put(s3, source_bucket, "a/scans/0.png", render(7))
    event = {"Records": [{"eventName": "s3:ObjectCreated:Put", "s3": {"bucket": {"name": source_bucket},
                          "object": {"key": "a/scans/0.png", "size": 10, "eTag": "abc"}}}]}
    answers = [
        client.post("/v1/batches", headers=B, json={"prefix": {"bucket": source_bucket, "prefix": "a/"}}),
        client.post("/v1/batches", headers=B, json={"prefix": {"bucket": source_bucket, "prefix": ""}}),
        client.post("/v1/batches", headers=B, json={"objects": [{"bucket": source_bucket, "key": "a/scans/0.png"}]}),
        client.post("/v1/batches", headers=B, json={"objects": [{"bucket": source_bucket, "key": "b/../a/scans/0.png"}]}),
        client.post("/v1/batches", headers=B, json={"objects": [{"bucket": settings.s3_bucket, "key": "x"}]}),
        client.post("/v1/s3-events", headers=B, json=event),
    ]

    assert [(a.status_code, a.json()["code"]) for a in answers] == [(403, "s3_access_denied")] * 6
    with _db(settings) as conn:
        assert conn.execute("SELECT count(*) FROM s3_event_objects").fetchone()[0] == 0
    created = batches_created(settings)
    assert all(c.tenant == "tenant-b" and not any("a/scans" in f.key for ch in chunks_of(settings) for f in ch.files)
               for c in created)


# ---- S3 event notifications -----------------------------------------------------------------------------------------

def _notification(bucket: str, keys: dict[str, str]) -> dict:
    """What MinIO sends a webhook target (the AWS shape): keys URL-encoded."""
    return {"EventName": "s3:ObjectCreated:Put", "Key": bucket, "Records": [
        {"eventVersion": "2.0", "eventSource": "minio:s3", "eventName": "s3:ObjectCreated:Put",
         "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                "object": {"key": key.replace(" ", "+"), "eTag": etag, "sequencer": "17A"}}}
        for key, etag in keys.items()] + [{"eventName": "s3:ObjectRemoved:Delete", "s3": {}}]}


def test_an_s3_event_delivered_three_times_makes_one_batch(client: TestClient, settings: Settings,
                                                           source_bucket: str) -> None:
    s3 = build_s3_client(settings)
    data = {"a/in/scan one.png": render(60), "a/in/scan-2.png": render(61)}
    etags = {key: _put(s3, source_bucket, key, blob) for key, blob in data.items()}
    notification = _notification(source_bucket, etags)

    answers: list = []
    threads = [threading.Thread(target=lambda: answers.append(
        client.post("/v1/s3-events", headers=A, json=notification))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    [created] = batches_created(settings, expected=1)  # grouped once the 0.5 s window has passed
    late = client.post("/v1/s3-events", headers=A, json=notification)  # the third delivery, after the batch

    assert sorted(a.json()["new"] for a in answers) == [0, 2] and all(a.status_code == 202 for a in answers)
    assert late.status_code == 202 and late.json() == {"received": 3, "new": 0, "duplicates": 2, "ignored": 1}
    assert (created.tenant, created.total_files) == ("tenant-a", 2)
    [chunk] = chunks_of(settings, expected=1)
    assert sorted(f.key for f in chunk.files) == sorted(data)  # the URL-encoded key decoded
    with _db(settings) as conn:
        rows = conn.execute("SELECT batch_id, announced_at IS NOT NULL FROM s3_event_objects").fetchall()
    assert rows == [(created.batch_id, True)] * 2
    with pytest.raises(TimeoutError):  # and no second batch, however long one waits
        batches_created(settings, expected=2)


def test_a_malformed_notification_is_400(client: TestClient) -> None:
    response = client.post("/v1/s3-events", headers=A, json={"not": "records"})
    assert (response.status_code, response.json()["code"]) == (400, "invalid_json")


# ---- the OpenAPI document ----------------------------------------------------------------------------------------

def test_the_openapi_document_lists_every_problem_code(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    text = json.dumps(document)
    assert all(f"`{code.value}`" in text for code in ProblemCode)
    assert set(document["components"]["schemas"]["ProblemDetail"]["properties"]) >= {"type", "title", "status",
                                                                                     "code", "detail", "errors"}
    create = document["paths"]["/v1/batches"]["post"]
    assert set(create["requestBody"]["content"]) == {"multipart/form-data", "application/json"}
    assert {"400", "401", "403", "409", "413", "415", "422", "503"} <= set(create["responses"])
    for path, method in [("/v1/batches/{batch_id}", "delete"), ("/v1/batches/{batch_id}/cancel", "post"),
                         ("/v1/batches/{batch_id}/retry", "post"), ("/v1/s3-events", "post")]:
        assert {"202", "401"} <= set(document["paths"][path][method]["responses"])


def _db(settings: Settings) -> psycopg.Connection:
    return psycopg.connect(settings.database_url, autocommit=True,
                           options=f"-c search_path={settings.database_schema},public")
