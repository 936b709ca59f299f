"""ingest against the real Kafka broker and S3 server: what a 202 leaves behind, and what a rejection does not."""
import hashlib
import io
import socket
import statistics
import time
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from minio import Minio
from PIL import Image, ImageDraw

from common.kafka import read_topic
from common.settings import Settings
from common.storage import ObjectStore, build_s3_client
from schemas.batch_events import BatchCreated
from schemas.chunks import ChunkRequested
from schemas.topics import Topic, decode
from services.ingest.app import create_app
from services.ingest.settings import IngestSettings

pytestmark = pytest.mark.integration

API_KEY = "test-key"
TENANT = "acme"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
FORMATS = [("PNG", "png", "image/png"), ("JPEG", "jpg", "image/jpeg"), ("TIFF", "tif", "image/tiff"),
           ("GIF", "gif", "image/gif"), ("BMP", "bmp", "image/bmp"), ("WEBP", "webp", "image/webp"),
           ("PDF", "pdf", "application/pdf")]


# ---- helpers ------------------------------------------------------------------------------------------------------

def render(seed: int, fmt: str = "PNG", size: tuple[int, int] = (160, 90)) -> bytes:
    """A small image whose bytes differ per seed (so no two test files share a sha256)."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    draw.text((8, 8), f"ocrstream test {seed} 한국어", fill="black")
    draw.rectangle((8, 40, 8 + seed % 100, 60), fill=(seed * 37 % 256, seed * 91 % 256, 120))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def scanned_page(seed: int) -> bytes:
    """An A4 page at 150 dpi with lines of text and scanner grain, as a JPEG: about the size of a real scan."""
    grain = Image.effect_noise((1240, 1754), 24).point(lambda v: 200 + v // 5)
    draw = ImageDraw.Draw(grain)
    for line in range(40):
        draw.text((90, 90 + line * 40), f"{seed:04d}-{line:02d} 청구서 invoice total {seed * line} KRW", fill=20)
    buffer = io.BytesIO()
    grain.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def multipart(files: list[tuple[str, bytes]], content_type: str = "application/octet-stream") -> list:
    return [("files", (name, data, content_type)) for name, data in files]


def bucket_keys(s3: Minio, bucket: str) -> list[str]:
    return [o.object_name for o in s3.list_objects(bucket, recursive=True)]


def assert_nothing_accepted(settings: Settings, s3: Minio) -> None:
    assert bucket_keys(s3, settings.s3_bucket) == []
    assert read_topic(settings, settings.topic(Topic.BATCH_EVENTS), expected=0) == []
    assert read_topic(settings, settings.topic(Topic.OCR_CHUNKS), expected=0) == []
    assert read_topic(settings, settings.topic(Topic.BATCH_PROGRESS), expected=0) == []


# ---- fixtures -----------------------------------------------------------------------------------------------------

@pytest.fixture
def make_settings(settings: Settings) -> Callable[..., IngestSettings]:
    """IngestSettings from this test's OCRSTREAM_* environment (set by `settings`), plus overrides."""
    def make(**overrides) -> IngestSettings:
        return IngestSettings(**({"api_keys": {API_KEY: TENANT}, "status_api_url": "http://status.test"} | overrides))
    return make


@pytest.fixture
def s3(settings: Settings) -> Minio:
    return build_s3_client(settings)


@pytest.fixture
def client(make_settings: Callable[..., IngestSettings]) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings())) as test_client:  # entering runs the lifespan
        yield test_client


# ---- 202 ----------------------------------------------------------------------------------------------------------

def test_accepted_batch_is_stored_and_announced(client: TestClient, settings: Settings, s3: Minio) -> None:
    uploads = [(f"scan-{i:02d}.{ext}", render(i, fmt)) for i, (fmt, ext, _) in
               ((i, FORMATS[i % len(FORMATS)]) for i in range(23))]
    expected_types = [FORMATS[i % len(FORMATS)][2] for i in range(23)]

    response = client.post("/v1/batches", headers=AUTH, files=multipart(uploads),
                           data={"name": "invoices", "chunk_size": "10", "languages": "eng", "pdf_dpi": "150",
                                 "embeddings": "false"})

    assert response.status_code == 202, response.text
    body = response.json()
    batch_id = body["batch_id"]
    assert body == {"batch_id": batch_id, "status": "pending", "total_files": 23, "total_chunks": 3,
                    "status_url": f"http://status.test/v1/batches/{batch_id}", "deduplicated": 0, "rejected": []}
    assert response.headers["location"] == body["status_url"]
    assert response.headers["retry-after"] == "2"

    # Exactly one BatchCreated, keyed by the batch id, with the layout and options.
    [event_record] = read_topic(settings, settings.topic(Topic.BATCH_EVENTS), expected=1)
    created = decode(Topic.BATCH_EVENTS, event_record.value())
    assert isinstance(created, BatchCreated)
    assert event_record.key() == batch_id.encode()
    assert (created.batch_id, created.tenant, created.name, created.total_files) == (batch_id, TENANT, "invoices", 23)
    assert [c.chunk_id for c in created.chunks] == [f"{batch_id}.00000", f"{batch_id}.00001", f"{batch_id}.00002"]
    assert sum(c.file_count for c in created.chunks) == 23  # chunks of about equal bytes (unit-tested in planning)
    assert (created.options.languages, created.options.pdf_dpi, created.options.embeddings) == ("eng", 150, False)

    # N ChunkRequested, keyed by chunk id, holding the files in upload order.
    chunk_records = read_topic(settings, settings.topic(Topic.OCR_CHUNKS), expected=3)
    assert len(chunk_records) == 3
    chunks = sorted((decode(Topic.OCR_CHUNKS, r.value()) for r in chunk_records), key=lambda c: c.chunk_id)
    assert all(isinstance(c, ChunkRequested) for c in chunks)
    assert sorted(r.key() for r in chunk_records) == [c.chunk_id.encode() for c in chunks]
    assert [(c.chunk_id, len(c.files)) for c in chunks] == [(c.chunk_id, c.file_count) for c in created.chunks]
    files = [f for c in chunks for f in c.files]
    assert [f.original_name for f in files] == [name for name, _ in uploads]
    assert [f.content_type for f in files] == expected_types

    # A 'pending' snapshot, so the status URL answers before the persister has seen the batch.
    [progress_record] = read_topic(settings, settings.topic(Topic.BATCH_PROGRESS), expected=1)
    progress = decode(Topic.BATCH_PROGRESS, progress_record.value())
    assert progress_record.key() == batch_id.encode()
    assert (progress.status, progress.version, progress.total_files, progress.total_chunks, progress.tenant) == (
        "pending", 0, len(uploads), 3, TENANT)

    # Every object is in the store, under tenant/batch/file, with the sha256 computed here; beside them the
    # manifest a retry reads.
    assert sorted(bucket_keys(s3, settings.s3_bucket)) == sorted([f.key for f in files]
                                                                 + [f"{TENANT}/{batch_id}/manifest.json"])
    for stored, (_, data) in zip(files, uploads):
        assert stored.bucket == settings.s3_bucket
        assert stored.key == f"{TENANT}/{batch_id}/{stored.file_id}"
        assert (stored.sha256, stored.size) == (hashlib.sha256(data).hexdigest(), len(data))
        assert hashlib.sha256(ObjectStore(settings).get_bytes(stored.bucket, stored.key)).hexdigest() == stored.sha256


def test_median_seconds_to_202_for_ten_images(client: TestClient, settings: Settings,
                                              capsys: pytest.CaptureFixture) -> None:
    rounds = 7
    seconds: list[float] = []
    image_sizes: list[int] = []
    for r in range(rounds):
        images = [(f"page-{i}.jpg", scanned_page(r * 10 + i)) for i in range(10)]
        image_sizes += [len(data) for _, data in images]
        started = time.perf_counter()
        response = client.post("/v1/batches", headers=AUTH, files=multipart(images, "image/jpeg"))
        seconds.append(time.perf_counter() - started)
        assert response.status_code == 202, response.text
        assert (response.json()["total_files"], response.json()["total_chunks"]) == (10, 1)

    assert len(read_topic(settings, settings.topic(Topic.BATCH_EVENTS), expected=rounds)) == rounds
    assert len(read_topic(settings, settings.topic(Topic.OCR_CHUNKS), expected=rounds)) == rounds
    with capsys.disabled():
        print(f"\ningest: median seconds to 202 for a 10-image batch: {statistics.median(seconds):.3f} "
              f"(min {min(seconds):.3f}, max {max(seconds):.3f}, {rounds} batches, "
              f"{statistics.mean(image_sizes) / 1024:.0f} KiB per image)")


def test_probes_and_metrics(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert (ready.status_code, ready.json()) == (200, {"ready": True})
    response = client.post("/v1/batches", headers=AUTH, files=multipart([("a.png", render(1))]))
    assert response.status_code == 202
    metrics = client.get("/metrics").text
    assert "ocrstream_ingest_batches_accepted_total" in metrics
    assert "ocrstream_ingest_accept_seconds_bucket" in metrics
    operation = client.get("/openapi.json").json()["paths"]["/v1/batches"]["post"]
    assert operation["operationId"] == "create_batch"
    assert {"202", "400", "401", "403", "409", "413", "415", "422", "503"} <= set(operation["responses"])


# ---- rejections: nothing stored, nothing produced -------------------------------------------------------------------

def test_missing_or_unknown_api_key_is_401(client: TestClient, settings: Settings, s3: Minio) -> None:
    files = multipart([("a.png", render(1))])
    missing = client.post("/v1/batches", files=files)
    unknown = client.post("/v1/batches", files=files, headers={"Authorization": "Bearer not-a-key"})

    assert missing.status_code == 401 and "missing API key" in missing.json()["detail"]
    assert unknown.status_code == 401 and unknown.json()["detail"] == "unknown API key"
    assert missing.json()["code"] == unknown.json()["code"] == "unauthorized"
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.headers["www-authenticate"] == "Bearer"
    assert_nothing_accepted(settings, s3)


def test_no_files_is_422(client: TestClient, settings: Settings, s3: Minio) -> None:
    response = client.post("/v1/batches", headers=AUTH, data={"name": "nothing"})

    assert response.status_code == 422
    assert response.json()["code"] == "no_files"
    assert_nothing_accepted(settings, s3)


def test_strict_empty_file_is_422_naming_the_file(client: TestClient, settings: Settings, s3: Minio) -> None:
    response = client.post("/v1/batches", headers=AUTH, data={"strict": "true"},
                           files=multipart([("good.png", render(1)), ("empty.png", b""), ("good2.png", render(2))]))

    assert response.status_code == 422
    assert response.json()["code"] == "invalid_files"
    assert response.json()["errors"] == [{"file": "empty.png", "index": 1, "code": "empty", "reason": "empty file"}]
    assert_nothing_accepted(settings, s3)


def test_unsupported_types_are_415_and_nothing_is_stored(client: TestClient, settings: Settings, s3: Minio,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    # The claimed content type is a lie: only the first bytes count. Every file refused: nothing to accept.
    response = client.post("/v1/batches", headers=AUTH, files=multipart(
        [("notes.png", b"just some text, not an image"), ("archive.pdf", b"PK\x03\x04 zip, not a pdf")], "image/png"))

    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_type"
    errors = response.json()["errors"]
    assert [(d["file"], d["index"], d["code"]) for d in errors] == [("notes.png", 0, "unsupported_type"),
                                                                    ("archive.pdf", 1, "unsupported_type")]
    assert all(d["reason"].startswith("unsupported type") and "send PNG, JPEG, TIFF, GIF, BMP, WEBP or PDF" in d["reason"]
               for d in errors)
    assert_nothing_accepted(settings, s3)
    refusals = [r for r in caplog.records if r.getMessage() == "request refused"]
    assert [(r.status, r.code) for r in refusals] == [(415, "unsupported_type")]


def test_strict_mixed_problems_are_422_listing_every_file(make_settings, settings: Settings, s3: Minio) -> None:
    big = render(3, "PNG", size=(400, 400))
    with TestClient(create_app(make_settings(max_file_bytes=len(big) - 1))) as client:
        response = client.post("/v1/batches", headers=AUTH, data={"strict": "true"}, files=multipart(
            [("ok.png", render(1)), ("big.png", big), ("notes.txt", b"text")]))

    assert response.status_code == 422
    errors = response.json()["errors"]
    assert [(d["file"], d["index"], d["code"]) for d in errors] == [("big.png", 1, "too_large"),
                                                                    ("notes.txt", 2, "unsupported_type")]
    assert "limit" in errors[0]["reason"] and errors[1]["reason"].startswith("unsupported type")
    assert_nothing_accepted(settings, s3)


def test_too_many_files_is_413(make_settings, settings: Settings, s3: Minio) -> None:
    with TestClient(create_app(make_settings(max_files_per_batch=2))) as client:
        response = client.post("/v1/batches", headers=AUTH,
                               files=multipart([(f"p{i}.png", render(i)) for i in range(3)]))

    assert response.status_code == 413
    assert response.json()["code"] == "too_many_files"
    assert "at most 2" in response.json()["detail"]
    assert_nothing_accepted(settings, s3)


def test_bad_fields_are_422(make_settings, settings: Settings, s3: Minio) -> None:
    with TestClient(create_app(make_settings(max_chunk_size=5))) as client:
        too_big_chunks = client.post("/v1/batches", headers=AUTH, files=multipart([("a.png", render(1))]),
                                     data={"chunk_size": "6"})
        bad_languages = client.post("/v1/batches", headers=AUTH, files=multipart([("a.png", render(1))]),
                                    data={"languages": "kor;rm -rf"})

    assert too_big_chunks.status_code == 422
    assert too_big_chunks.json()["errors"][0]["loc"] == ["body", "chunk_size"]
    assert bad_languages.status_code == 422
    assert bad_languages.json()["errors"][0]["loc"] == ["body", "languages"]
    assert {too_big_chunks.json()["code"], bad_languages.json()["code"]} == {"invalid_request"}
    assert_nothing_accepted(settings, s3)


# ---- 503: Kafka unreachable -----------------------------------------------------------------------------------------

def test_kafka_unreachable_is_503_and_nothing_is_left_stored(make_settings, settings: Settings, s3: Minio) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: every connection is refused
        unreachable = make_settings(kafka_bootstrap_servers=f"127.0.0.1:{closed.getsockname()[1]}",
                                    kafka_delivery_timeout_s=2.0)
        with TestClient(create_app(unreachable)) as client:
            started = time.perf_counter()
            response = client.post("/v1/batches", headers=AUTH,
                                   files=multipart([(f"p{i}.png", render(i)) for i in range(5)]))
            elapsed = time.perf_counter() - started
            ready = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["code"] == "unavailable"
    assert response.json()["detail"].startswith("nothing was accepted")
    assert "retry" in response.json()["detail"]
    assert elapsed < 10, f"503 took {elapsed:.1f} s"
    assert ready.status_code == 503
    assert bucket_keys(s3, settings.s3_bucket) == []


# ---- 503: object store fails ----------------------------------------------------------------------------------------

def test_store_failure_is_503_and_nothing_is_produced(client: TestClient, settings: Settings, s3: Minio) -> None:
    s3.remove_bucket(settings.s3_bucket)  # after the lifespan ensured it: every upload now fails

    response = client.post("/v1/batches", headers=AUTH, files=multipart([(f"p{i}.png", render(i)) for i in range(3)]))

    assert response.status_code == 503
    assert response.json()["detail"].startswith("nothing was accepted: the object store failed")
    assert read_topic(settings, settings.topic(Topic.BATCH_EVENTS), expected=0) == []
    assert read_topic(settings, settings.topic(Topic.OCR_CHUNKS), expected=0) == []
    assert not s3.bucket_exists(settings.s3_bucket)
