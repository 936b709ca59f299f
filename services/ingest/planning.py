"""Pure pieces of ingest: what a file is (from its first bytes), whether it may enter, and files → events.

No I/O here: app.py reads the bytes and sends the events; unit tests call these directly.
"""
from enum import StrEnum

from schemas.base import utc_now
from schemas.batch_events import BatchCreated, BatchOptions, ChunkLayout
from schemas.chunks import ChunkRequested, StoredFile
from schemas.progress import BatchProgress, BatchStatus

__all__ = [
    "SNIFF_BYTES", "FileProblem", "FileRejected", "accepted_content_type", "chunk_id_for", "initial_progress", "plan_batch",
    "sniff_content_type",
]

SNIFF_BYTES = 32  # enough for every signature below (WEBP needs 12, BMP's DIB header size sits at 14..18)

# Sizes of the BMP info headers in the wild (OS/2 v1, v3..v5); "BM" alone is too weak a signature.
_BMP_DIB_HEADER_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})


def sniff_content_type(head: bytes) -> str | None:
    """The content type the first bytes prove, or None. The client's claimed type is never trusted."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"II*\x00", b"MM\x00*")):  # little- and big-endian TIFF
        return "image/tiff"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith(b"BM") and len(head) >= 18 and int.from_bytes(head[14:18], "little") in _BMP_DIB_HEADER_SIZES:
        return "image/bmp"
    return None


class FileProblem(StrEnum):
    EMPTY = "empty"
    TOO_LARGE = "too_large"
    UNSUPPORTED_TYPE = "unsupported_type"


class FileRejected(ValueError):
    """A file that cannot enter a batch; str(exc) is the reason, for a person to act on."""

    def __init__(self, problem: FileProblem, reason: str) -> None:
        super().__init__(reason)
        self.problem = problem


def accepted_content_type(size: int, head: bytes, *, max_bytes: int) -> str:
    """The content type of a file that may enter a batch, from its size and first bytes; else FileRejected."""
    if size == 0:
        raise FileRejected(FileProblem.EMPTY, "empty file")
    if size > max_bytes:
        raise FileRejected(FileProblem.TOO_LARGE, f"file is {size} bytes; the limit is {max_bytes} bytes")
    content_type = sniff_content_type(head)
    if content_type is None:
        raise FileRejected(FileProblem.UNSUPPORTED_TYPE,
                           "unsupported type (unknown file signature); send PNG, JPEG, TIFF, GIF, BMP, WEBP or PDF")
    return content_type


def chunk_id_for(batch_id: str, index: int) -> str:
    return f"{batch_id}.{index:05d}"


def plan_batch(
    batch_id: str,
    tenant: str,
    name: str,
    files: list[StoredFile],
    chunk_size: int,
    options: BatchOptions,
    webhook_url: str | None = None,
) -> tuple[BatchCreated, list[ChunkRequested]]:
    """Split stored files, in upload order, into chunks of chunk_size; the BatchCreated lists the layout."""
    if not files:
        raise ValueError("a batch needs at least one file")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    now = utc_now()
    chunks = [
        ChunkRequested(
            batch_id=batch_id,
            chunk_id=chunk_id_for(batch_id, index),
            tenant=tenant,
            options=options,
            files=files[start : start + chunk_size],
            requested_at=now,
        )
        for index, start in enumerate(range(0, len(files), chunk_size))
    ]
    created = BatchCreated(
        batch_id=batch_id,
        tenant=tenant,
        name=name,
        total_files=len(files),
        chunks=[ChunkLayout(chunk_id=c.chunk_id, file_count=len(c.files)) for c in chunks],
        options=options,
        webhook_url=webhook_url,
        created_at=now,
    )
    return created, chunks


def initial_progress(created: BatchCreated, total_chunks: int) -> BatchProgress:
    """Version 0 of the batch's progress: 'pending', so its status URL answers from the 202 on.
    The persister's snapshots start at version 1 and always supersede it."""
    return BatchProgress(batch_id=created.batch_id, tenant=created.tenant, name=created.name,
                         status=BatchStatus.PENDING, total_files=created.total_files, total_chunks=total_chunks,
                         succeeded=0, failed=0, skipped=0, created_at=created.created_at,
                         updated_at=created.created_at, version=0)
