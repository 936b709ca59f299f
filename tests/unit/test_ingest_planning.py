"""services.ingest.planning: file sniffing, admission and files → events. Pure; no I/O."""
import io

import pytest
from PIL import Image

from schemas.batch_events import BatchOptions
from schemas.chunks import StoredFile
from services.ingest.planning import (
    initial_progress,
    SNIFF_BYTES,
    FileProblem,
    FileRejected,
    accepted_content_type,
    plan_batch,
    sniff_content_type,
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
        (0, b"", FileProblem.EMPTY),
        (101, SIGNATURES["png"][0], FileProblem.TOO_LARGE),
        (10, b"plain text", FileProblem.UNSUPPORTED_TYPE),
    ],
)
def test_rejected_files_say_why(size: int, head: bytes, problem: FileProblem) -> None:
    with pytest.raises(FileRejected) as caught:
        accepted_content_type(size, head, max_bytes=100)
    assert caught.value.problem is problem
    assert str(caught.value)
    if problem is FileProblem.UNSUPPORTED_TYPE:
        assert "send PNG, JPEG, TIFF, GIF, BMP, WEBP or PDF" in str(caught.value)


def _stored(n: int) -> list[StoredFile]:
    return [
        StoredFile(file_id=f"f{i:03d}", bucket="b", key=f"acme/batch1/f{i:03d}", sha256=f"{i:064x}", size=i + 1,
                   content_type="image/png", original_name=f"page-{i}.png")
        for i in range(n)
    ]


def test_chunks_23_files_by_10_in_upload_order() -> None:
    files = _stored(23)
    options = BatchOptions(languages="eng", pdf_dpi=300, embeddings=False)

    created, chunks = plan_batch("batch1", "acme", "scans", files, 10, options, webhook_url="https://example.test/h")

    assert [len(c.files) for c in chunks] == [10, 10, 3]
    assert [f for c in chunks for f in c.files] == files
    assert [c.chunk_id for c in chunks] == ["batch1.00000", "batch1.00001", "batch1.00002"]
    assert all(c.batch_id == "batch1" and c.tenant == "acme" and c.attempt == 1 and c.options == options for c in chunks)
    assert created.batch_id == "batch1"
    assert created.tenant == "acme"
    assert created.name == "scans"
    assert created.total_files == 23
    assert [(c.chunk_id, c.file_count) for c in created.chunks] == [
        ("batch1.00000", 10), ("batch1.00001", 10), ("batch1.00002", 3),
    ]
    assert created.options == options
    assert created.webhook_url == "https://example.test/h"
    assert all(c.requested_at == created.created_at for c in chunks)


@pytest.mark.parametrize("n, chunk_size, sizes", [(1, 10, [1]), (10, 10, [10]), (11, 10, [10, 1]), (3, 1, [1, 1, 1])])
def test_chunk_sizes_at_the_edges(n: int, chunk_size: int, sizes: list[int]) -> None:
    created, chunks = plan_batch("b", "t", "", _stored(n), chunk_size, BatchOptions())
    assert [len(c.files) for c in chunks] == sizes
    assert [c.file_count for c in created.chunks] == sizes


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
