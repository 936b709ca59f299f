"""services.ingest.planning: file sniffing, admission and files → events. Pure; no I/O."""
import io
import random

import pytest
from PIL import Image

from schemas.batch_events import BatchOptions, RejectedFile
from schemas.chunks import StoredFile
from schemas.results import FailureReason
from services.ingest.planning import (
    initial_progress,
    SNIFF_BYTES,

    FileRejected,
    accepted_content_type,
    manifest_key,
    plan_addition,
    plan_batch,
    sniff_content_type,
    split_by_bytes,
)

pytestmark = pytest.mark.unit

SIGNATURES = {
    "png": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "image/png"),
    "jpeg": (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "image/jpeg"),
    "tiff little-endian": (b"II*\x00\x08\x00\x00\x00", "image/tiff"),
    "tiff big-endian": (b"MM\x00*\x00\x00\x00\x08", "image/tiff"),
    "pdf": (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "application/pdf"),
    "gif87a": (b"GIF87a\x01\x00\x01\x00", "image/gif"),
    "gif89a": (b"GIF89a\x01\x00\x01\x00", "image/gif"),
    "bmp": (b"BM" + bytes(12) + (40).to_bytes(4, "little") + bytes(8), "image/bmp"),
    "webp": (b"RIFF\x24\x00\x00\x00WEBPVP8 ", "image/webp"),
}


@pytest.mark.parametrize("head, expected", SIGNATURES.values(), ids=SIGNATURES.keys())
def test_sniffs_each_signature(head: bytes, expected: str) -> None:
    assert sniff_content_type(head) == expected


@pytest.mark.parametrize(
    "head",
    [
        b"",
        b"hello, world\n",
        b"PK\x03\x04zip archive",
        b"RIFF\x24\x00\x00\x00WAVEfmt ",  # RIFF, but audio
        b"BM is how this text starts",  # "BM" without a bitmap header
        b"\x89PNX\r\n\x1a\n",
        b"II+\x00",  # BigTIFF: not accepted
    ],
    ids=["empty", "text", "zip", "wav", "bm-text", "bad-png", "bigtiff"],
)
def test_unknown_bytes_are_none(head: bytes) -> None:
    assert sniff_content_type(head) is None


@pytest.mark.parametrize(
    "fmt, save_kwargs, expected",
    [
        ("PNG", {}, "image/png"),
        ("JPEG", {}, "image/jpeg"),
        ("TIFF", {}, "image/tiff"),
        ("GIF", {}, "image/gif"),
        ("BMP", {}, "image/bmp"),
        ("WEBP", {}, "image/webp"),
        ("PDF", {}, "application/pdf"),
    ],
)
def test_sniffs_what_pillow_writes(fmt: str, save_kwargs: dict, expected: str) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "white").save(buffer, format=fmt, **save_kwargs)
    assert sniff_content_type(buffer.getvalue()[:SNIFF_BYTES]) == expected


def test_accepted_content_type_of_a_good_file() -> None:
    png_head = SIGNATURES["png"][0]
    assert accepted_content_type(100, png_head, max_bytes=100) == "image/png"


@pytest.mark.parametrize(
    "size, head, problem",
    [
        (0, b"", FailureReason.EMPTY),
        (101, SIGNATURES["png"][0], FailureReason.TOO_LARGE),
        (10, b"plain text", FailureReason.UNSUPPORTED_TYPE),
    ],
)
def test_rejected_files_say_why(size: int, head: bytes, problem: FailureReason) -> None:
    with pytest.raises(FileRejected) as caught:
        accepted_content_type(size, head, max_bytes=100)
    assert caught.value.problem is problem
    assert str(caught.value)
    if problem is FailureReason.UNSUPPORTED_TYPE:
        assert "send PNG, JPEG, TIFF, GIF, BMP, WEBP or PDF" in str(caught.value)


def _stored(n: int | None = None, *, sizes: list[int] | None = None) -> list[StoredFile]:
    """n files of equal size, or one file per size given."""
    sizes = sizes if sizes is not None else [1000] * n
    return [
        StoredFile(file_id=f"f{i:03d}", bucket="b", key=f"acme/batch1/f{i:03d}", sha256=f"{i:064x}", size=size,
                   content_type="image/png", original_name=f"page-{i}.png")
        for i, size in enumerate(sizes)
    ]


def test_chunks_23_files_by_10_in_upload_order() -> None:
    files = _stored(23)
    options = BatchOptions(languages="eng", pdf_dpi=300, embeddings=False)

    created, chunks = plan_batch("batch1", "acme", "scans", files, 10, options, webhook_url="https://example.test/h")

    assert [len(c.files) for c in chunks] == [8, 8, 7]  # three chunks, as equal as the files allow
    assert [f for c in chunks for f in c.files] == files
    assert [c.chunk_id for c in chunks] == ["batch1.00000", "batch1.00001", "batch1.00002"]
    assert all(c.batch_id == "batch1" and c.tenant == "acme" and c.attempt == 1 and c.options == options for c in chunks)
    assert created.batch_id == "batch1"
    assert created.tenant == "acme"
    assert created.name == "scans"
    assert created.total_files == 23
    assert [(c.chunk_id, c.file_count) for c in created.chunks] == [
        ("batch1.00000", 8), ("batch1.00001", 8), ("batch1.00002", 7),
    ]
    assert created.options == options
    assert created.webhook_url == "https://example.test/h"
    assert all(c.requested_at == created.created_at for c in chunks)


@pytest.mark.parametrize("n, chunk_size, sizes", [(1, 10, [1]), (10, 10, [10]), (11, 10, [6, 5]), (3, 1, [1, 1, 1])])
def test_chunk_sizes_at_the_edges(n: int, chunk_size: int, sizes: list[int]) -> None:
    created, chunks = plan_batch("b", "t", "", _stored(n), chunk_size, BatchOptions())
    assert [len(c.files) for c in chunks] == sizes
    assert [c.file_count for c in created.chunks] == sizes


def test_chunks_carry_about_equal_bytes_not_equal_counts() -> None:
    files = _stored(sizes=[10_000] * 4 + [1000] * 36)  # 40 files by 10: four chunks of 19,000 bytes each
    chunks = split_by_bytes(files, 10)
    assert [len(c) for c in chunks] == [2, 2, 18, 18]
    assert [sum(f.size for f in c) for c in chunks] == [20_000, 20_000, 18_000, 18_000]


@pytest.mark.parametrize("where", [0, 50, 99])
def test_a_file_bigger_than_a_share_fills_a_chunk_and_the_rest_share_the_others(where: int) -> None:
    sizes = [1000] * 99
    sizes.insert(where, 10_000_000)
    chunks = split_by_bytes(_stored(sizes=sizes), 10)
    big = next(c for c in chunks if any(f.size == 10_000_000 for f in c))
    assert len(chunks) == 10 and len(big) <= 2
    assert all(5 <= len(c) <= 13 for c in chunks if c is not big)  # the small files spread over the other nine


def test_every_split_keeps_the_order_the_chunk_count_and_the_file_cap() -> None:
    rng = random.Random(7)
    for _ in range(300):
        n, chunk_size = rng.randint(1, 120), rng.randint(1, 15)
        files = _stored(sizes=[rng.choice([0, 1, 50, 5000, 10**7]) * rng.randint(1, 3) for _ in range(n)])
        chunks = split_by_bytes(files, chunk_size)
        assert [f for c in chunks for f in c] == files
        assert len(chunks) == -(-n // chunk_size)
        assert all(1 <= len(c) <= 2 * chunk_size for c in chunks)


def test_refuses_an_empty_batch_or_a_zero_chunk_size() -> None:
    with pytest.raises(ValueError):
        plan_batch("b", "t", "", [], 10, BatchOptions())
    with pytest.raises(ValueError):
        plan_batch("b", "t", "", _stored(2), 0, BatchOptions())


def test_initial_progress_is_a_pending_version_zero_snapshot():
    created, chunks = plan_batch("b", "t", "scans", _stored(23), 10, BatchOptions())
    progress = initial_progress(created, len(chunks))
    assert (progress.status, progress.version, progress.total_files, progress.total_chunks) == ("pending", 0, 23, 3)
    assert progress.processed_files == 0 and progress.updated_at == created.created_at


# ---- issue 16: names, languages, S3 locations and events, retries -------------------------------------------------

def test_a_file_name_over_255_characters_is_refused() -> None:
    with pytest.raises(FileRejected) as refused:
        accepted_content_type(10, SIGNATURES["png"][0], max_bytes=100, name="n" * 256)
    assert refused.value.problem is FailureReason.NAME_TOO_LONG
    assert accepted_content_type(10, SIGNATURES["png"][0], max_bytes=100, name="n" * 255) == "image/png"


def test_languages_must_be_installed_models() -> None:
    from services.ingest.planning import languages_problem

    assert languages_problem("kor+eng", ["eng", "kor"]) is None
    assert "osd" in languages_problem("osd", ["eng", "kor"])
    assert "fra" in languages_problem("eng+fra", ["eng", "kor"])


def test_a_tenant_reads_only_its_locations() -> None:
    from services.ingest.planning import location_allowed

    allowed = ["scans/acme/", "inbox"]
    assert location_allowed(allowed, "scans", "acme/1.png") and location_allowed(allowed, "inbox", "x/y.png")
    assert not location_allowed(allowed, "scans", "other/1.png")
    assert not location_allowed(allowed, "inbox-2", "x.png")  # a bucket name is not a prefix of another
    assert not location_allowed(allowed, "scans", "acme/../other/1.png")
    assert not location_allowed([], "scans", "acme/1.png")


def test_s3_event_records_aws_and_minio() -> None:
    from services.ingest.planning import s3_event_objects

    body = {"Records": [
        {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "b"},
                                                  "object": {"key": "a/scan+one%21.png", "size": 5, "eTag": "e1"}}},
        {"eventName": "s3:ObjectCreated:CompleteMultipartUpload",
         "s3": {"bucket": {"name": "b"}, "object": {"key": "a/2.pdf", "sequencer": "17A"}}},
        {"eventName": "s3:ObjectRemoved:Delete", "s3": {"bucket": {"name": "b"}, "object": {"key": "a/3.png"}}},
    ]}
    assert s3_event_objects(body) == ([("b", "a/scan one!.png", "e1", 5), ("b", "a/2.pdf", "17A", None)], 1)
    with pytest.raises(ValueError):
        s3_event_objects({"Records": "no"})


@pytest.mark.parametrize("obj", [{"key": "a/x%00.png", "eTag": "e1"}, {"key": "a/x.png", "eTag": "e\x00"}])
def test_an_s3_event_record_holding_nul_is_refused(obj) -> None:
    from services.ingest.planning import s3_event_objects

    with pytest.raises(ValueError, match="NUL"):
        s3_event_objects({"Records": [{"eventName": "ObjectCreated:Put",
                                       "s3": {"bucket": {"name": "b"}, "object": obj}}]})


def test_a_retry_plans_chunks_of_its_own_attempt() -> None:
    from services.ingest.planning import plan_retry

    files = [StoredFile(file_id=f"f{i}", bucket="b", key=f"k{i}", sha256="0" * 64, size=1, content_type="image/png",
                        original_name=f"{i}.png") for i in range(3)]
    chunks = plan_retry("batch", "t", BatchOptions(), files, 2, attempt=3)
    assert [(c.chunk_id, c.attempt, len(c.files)) for c in chunks] == [("batch.r3.00000", 3, 2), ("batch.r3.00001", 3, 1)]


def test_rejected_and_duplicate_files_count_in_the_total_without_chunks() -> None:
    from schemas.batch_events import DuplicateFile, RejectedFile

    rejected = [RejectedFile(file_id="r", original_name="e.png", size=0, error_code=FailureReason.EMPTY, error="empty")]
    duplicate = [DuplicateFile(file_id="d", original_name="d.png", size=1, sha256="1" * 64, content_type="image/png",
                               duplicate_of="earlier")]
    created, chunks = plan_batch("batch", "t", "", [], 10, BatchOptions(), rejected=rejected, duplicates=duplicate)
    assert (created.total_files, chunks, created.chunks) == (2, [], [])


def test_an_addition_continues_the_chunk_numbering_and_carries_the_new_totals():
    stored = [StoredFile(file_id=f"f{i}", bucket="b", key=f"k{i}", sha256="0" * 64, size=1, content_type="image/png",
                         original_name=f"{i}.png") for i in range(5)]
    refused = [RejectedFile(file_id="r", original_name="r.txt", size=1, error_code=FailureReason.UNSUPPORTED_TYPE,
                            error="unsupported")]
    added, chunks = plan_addition("bid", "t", BatchOptions(), stored, 2, files_before=7, chunks_before=3,
                                  rejected=refused)
    assert [c.chunk_id for c in chunks] == ["bid.00003", "bid.00004", "bid.00005"]
    assert [len(c.files) for c in chunks] == [2, 2, 1] and {c.attempt for c in chunks} == {1}
    assert (added.total_files, added.total_chunks) == (7 + 5 + 1, 6)
    assert [c.chunk_id for c in added.chunks] == [c.chunk_id for c in chunks]
    assert (manifest_key("t", "bid"), manifest_key("t", "bid", 2)) == ("t/bid/manifest.json", "t/bid/manifest.2.json")


def test_lost_files_run_again_in_the_attempt_they_were_in_under_chunk_ids_of_their_own():
    from services.ingest.planning import plan_redo
    from services.ingest.repair import lost_files

    stored = {f.file_id: f for f in _stored(5)}
    ids = sorted(stored)
    # ids[0]: a result; ids[1]: a failed result waiting for retry 2's; ids[2:]: no result at all.
    by_attempt = lost_files(stored, with_result={ids[0], ids[1]}, awaiting_retry={ids[1]: 2})
    assert {a: sorted(f.file_id for f in files) for a, files in by_attempt.items()} == {1: ids[2:], 2: [ids[1]]}
    assert lost_files(stored, with_result=set(ids), awaiting_retry={}) == {}

    chunks = plan_redo("batch", "t", BatchOptions(), by_attempt[1], 2, attempt=1, token="ab12")
    assert [(c.chunk_id, c.attempt, len(c.files)) for c in chunks] == [("batch.redoab12.00000", 1, 2),
                                                                       ("batch.redoab12.00001", 1, 1)]
