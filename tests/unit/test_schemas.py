"""The contracts: round trips, rejections, and the committed JSON Schema files."""
import json

import pytest

from schemas.batch_events import BatchCancelled, BatchCreated, BatchRetryRequested, ChunkLayout
from schemas.chunks import ChunkRequested, StoredFile
from schemas.dlq import DlqRecord
from schemas.export import JSON_DIR, render_json_schemas
from schemas.progress import BatchProgress, BatchStatus
from schemas.results import BoundingBox, FileResult, FileStatus, Page, Word
from schemas.topics import Topic, UndecodableMessage, decode, encode, message_headers

pytestmark = pytest.mark.unit

SHA = "a" * 64
STORED = StoredFile(file_id="f1", bucket="b", key="t/b1/f1", sha256=SHA, size=10, content_type="image/png",
                    original_name="스캔.png")

EXAMPLES = [
    (Topic.BATCH_EVENTS, BatchCreated(batch_id="b1", tenant="t", total_files=3,
                                      chunks=[ChunkLayout(chunk_id="b1.00000", file_count=3)])),
    (Topic.BATCH_EVENTS, BatchCancelled(batch_id="b1", tenant="t", reason="user")),
    (Topic.BATCH_EVENTS, BatchRetryRequested(batch_id="b1", tenant="t", file_ids=["f1"])),
    (Topic.OCR_CHUNKS, ChunkRequested(batch_id="b1", chunk_id="b1.00000", tenant="t", files=[STORED])),
    (Topic.OCR_RESULTS, FileResult(
        batch_id="b1", chunk_id="b1.00000", file_id="f1", tenant="t", status=FileStatus.OK, original_name="스캔.png",
        sha256=SHA, size=10, content_type="image/png", engine="tesseract",
        pages=[Page(page_number=1, width=100, height=50, text="안녕 hello", mean_confidence=0.915,
                    words=[Word(text="안녕", confidence=0.9, bbox=BoundingBox(x=1, y=2, width=30, height=20))],
                    embedding=[0.5, -0.5] * 256)])),
    (Topic.BATCH_PROGRESS, BatchProgress(batch_id="b1", tenant="t", status=BatchStatus.PROCESSING, total_files=3,
                                         total_chunks=1, succeeded=1, failed=0, skipped=0,
                                         updated_at="2026-01-01T00:00:00Z", version=2)),
    (Topic.OCR_DLQ, DlqRecord(source_topic="ocr.chunks", partition=0, offset=7, key_b64=None, value_b64="e30=",
                              reason="bad", error_class="UndecodableMessage", service="ocr_worker")),
]


@pytest.mark.parametrize(("topic", "message"), EXAMPLES, ids=lambda x: type(x).__name__)
def test_round_trip(topic, message):
    data = encode(message)
    assert json.loads(data)["schema_version"] == "1.0"
    assert decode(topic, data) == message


@pytest.mark.parametrize(
    ("topic", "payload", "complaint"),
    [
        (Topic.OCR_CHUNKS, b"not json", "Invalid JSON"),
        (Topic.OCR_CHUNKS, None, "tombstone"),
        (Topic.BATCH_EVENTS, b'{"type": "batch_exploded", "batch_id": "b"}', "does not match any of the expected tags"),
        (Topic.OCR_RESULTS, b'{"schema_version": "2.0"}', "schema_version"),
    ],
)
def test_malformed_payloads_are_rejected_with_a_reason(topic, payload, complaint):
    with pytest.raises(UndecodableMessage, match=complaint):
        decode(topic, payload)


@pytest.mark.parametrize("version", ["2.0", 2, "0.9", "1", "1.x", None])
def test_another_major_or_a_malformed_schema_version_is_rejected(version):
    data = json.loads(encode(EXAMPLES[3][1])) | {"schema_version": version}
    with pytest.raises(UndecodableMessage, match="schema_version"):
        decode(Topic.OCR_CHUNKS, json.dumps(data).encode())


@pytest.mark.parametrize(("version", "read_as"), [("1.0", "1.0"), ("1.7", "1.7"), (1, "1.0")],
                         ids=["same", "newer-minor", "before-minor-versions"])
def test_the_same_major_version_is_read(version, read_as):
    data = json.loads(encode(EXAMPLES[3][1])) | {"schema_version": version}
    assert decode(Topic.OCR_CHUNKS, json.dumps(data).encode()).schema_version == read_as


def test_a_newer_minor_version_s_unknown_fields_are_ignored_at_every_level():
    """A v1.1 producer added fields (top level and nested); a v1.0 reader reads the rest unchanged."""
    original = EXAMPLES[4][1]
    data = json.loads(encode(original)) | {"schema_version": "1.1", "language": "ko"}
    data["pages"][0] |= {"layout": "two-column"}
    data["pages"][0]["words"][0]["bbox"] |= {"angle": 0.5}
    decoded = decode(Topic.OCR_RESULTS, json.dumps(data).encode())
    assert decoded.model_copy(update={"schema_version": "1.0"}) == original
    assert "language" not in json.loads(encode(decoded)), "a reader re-encoding it writes only what it knows"


def test_what_safety_needs_stays_strict():
    """An unknown event type is not guessed at; bounds the database relies on still hold with a newer minor."""
    unknown_type = json.loads(encode(EXAMPLES[1][1])) | {"type": "batch_paused", "schema_version": "1.4"}
    with pytest.raises(UndecodableMessage, match="batch_paused"):
        decode(Topic.BATCH_EVENTS, json.dumps(unknown_type).encode())
    negative = json.loads(encode(EXAMPLES[5][1])) | {"schema_version": "1.4", "succeeded": -1}
    with pytest.raises(UndecodableMessage, match="succeeded"):
        decode(Topic.BATCH_PROGRESS, json.dumps(negative).encode())


def test_message_headers_name_the_schema_version_tenant_and_batch():
    headers = dict(message_headers(EXAMPLES[4][1]))
    assert headers == {"ocrstream.schema": b"results.FileResult", "ocrstream.schema_version": b"1.0",
                       "ocrstream.tenant": b"t", "ocrstream.batch_id": b"b1"}
    assert (JSON_DIR / f"{headers['ocrstream.schema'].decode()}.json").exists()
    dlq = dict(message_headers(EXAMPLES[6][1]))
    assert dlq == {"ocrstream.schema": b"dlq.DlqRecord", "ocrstream.schema_version": b"1.0"}, "no tenant, no batch"
    for topic, message in EXAMPLES:
        assert (JSON_DIR / f"{dict(message_headers(message))['ocrstream.schema'].decode()}.json").exists()


def test_field_constraints_hold():
    with pytest.raises(ValueError):
        StoredFile(**STORED.model_dump() | {"sha256": "xyz"})
    with pytest.raises(ValueError):
        ChunkRequested(batch_id="b", chunk_id="c", tenant="t", files=[])


def test_committed_json_schemas_match_the_models():
    rendered = render_json_schemas()
    committed = {p.name for p in JSON_DIR.glob("*.json")}
    assert committed == set(rendered), "run `python -m schemas.export`"
    for name, text in rendered.items():
        assert (JSON_DIR / name).read_text() == text, f"schemas/json/{name} is stale; run `python -m schemas.export`"


def test_every_topic_has_a_json_schema():
    names = {p.name for p in JSON_DIR.glob("*.json")}
    for expected in ("batch_events.BatchEvent", "chunks.ChunkRequested", "results.FileResult",
                     "progress.BatchProgress", "dlq.DlqRecord"):
        assert f"{expected}.json" in names


@pytest.mark.parametrize("change", [
    {"pages": [{"page_number": 1, "width": 1, "height": 1, "text": "", "mean_confidence": 0}] * 2},
    {"pages": [{"page_number": 2**31, "width": 1, "height": 1, "text": "", "mean_confidence": 0}]},
    {"pages": [{"page_number": 1, "width": 2**40, "height": 1, "text": "", "mean_confidence": 0}]},
    {"pages": [{"page_number": 1, "width": 1, "height": 1, "text": "", "mean_confidence": 0, "embedding": [1, 0, 0]}]},
    {"part": {"first_page": 3, "last_page": 2, "total_pages": 9}},
    {"part": {"first_page": 1, "last_page": 2, "total_pages": 9},
     "pages": [{"page_number": 5, "width": 1, "height": 1, "text": "", "mean_confidence": 0}]},
], ids=["duplicate-page", "page-2^31", "width-2^40", "3-d-embedding", "reversed-range", "page-outside-part"])
def test_results_postgres_would_refuse_are_undecodable(change):
    """What the table would refuse never gets past the contract (the persister need not die on it)."""
    message = EXAMPLES[4][1].model_dump(mode="json") | change
    with pytest.raises(UndecodableMessage):
        decode(Topic.OCR_RESULTS, json.dumps(message).encode())


def test_nul_bytes_are_dropped_from_free_text():
    message = EXAMPLES[4][1].model_dump(mode="json")
    message["original_name"] = "a\u0000b.png"
    message["pages"][0]["text"] = "x\u0000y"
    decoded = decode(Topic.OCR_RESULTS, json.dumps(message).encode())
    assert (decoded.original_name, decoded.pages[0].text) == ("ab.png", "xy")
    created = decode(Topic.BATCH_EVENTS, encode(EXAMPLES[0][1].model_copy(update={"name": "n\x00ame"})))
    assert created.name == "name"
