"""Pure pieces of ingest: what a file is (from its first bytes), whether it may enter, and files → events;
which S3 locations a tenant may read, and what an S3 event notification names.

No I/O here: app.py reads the bytes and sends the events; unit tests call these directly.
"""
import hashlib
import json
import uuid
from typing import Any
from urllib.parse import unquote_plus

from schemas.base import utc_now
from schemas.batch_events import BatchCreated, BatchFilesAdded, BatchOptions, ChunkLayout, DuplicateFile, RejectedFile
from schemas.chunks import ChunkRequested, StoredFile
from schemas.progress import BatchProgress, BatchStatus
from schemas.results import FailureReason

__all__ = [
    "MAX_FILE_NAME_CHARS", "SNIFF_BYTES", "FileRejected", "accepted_content_type", "check_size", "chunk_id_for", "file_id_for",
    "initial_progress", "languages_problem", "location_allowed", "manifest_key", "plan_addition", "plan_batch", "plan_redo", "plan_retry", "request_fingerprint",
    "s3_event_objects", "sniff_content_type", "split_by_bytes", "status_url",
]

MAX_FILE_NAME_CHARS = 255

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


class FileRejected(ValueError):
    """A file that cannot enter a batch; str(exc) is the reason, for a person to act on."""

    def __init__(self, problem: FailureReason, reason: str) -> None:
        super().__init__(reason)
        self.problem = problem


def check_size(size: int, *, max_bytes: int) -> None:
    """FileRejected if a file of this size may not enter a batch."""
    if size == 0:
        raise FileRejected(FailureReason.EMPTY, "empty file")
    if size > max_bytes:
        raise FileRejected(FailureReason.TOO_LARGE, f"file is {size} bytes; the limit is {max_bytes} bytes")


def accepted_content_type(size: int, head: bytes, *, max_bytes: int, name: str = "") -> str:
    """The content type of a file that may enter a batch, from its name, size and first bytes; else FileRejected."""
    if len(name) > MAX_FILE_NAME_CHARS:
        raise FileRejected(FailureReason.NAME_TOO_LONG,
                           f"file name of {len(name)} characters; the limit is {MAX_FILE_NAME_CHARS}")
    check_size(size, max_bytes=max_bytes)
    content_type = sniff_content_type(head)
    if content_type is None:
        raise FileRejected(FailureReason.UNSUPPORTED_TYPE,
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
    rejected: list[RejectedFile] = (),
    duplicates: list[DuplicateFile] = (),
    open: bool = False,
) -> tuple[BatchCreated, list[ChunkRequested]]:
    """Split stored files, in upload order, into chunks (split_by_bytes); the BatchCreated lists the layout, and
    the rejected and duplicate files that end without a chunk. An open batch may grow (plan_addition)."""
    if not (files or rejected or duplicates):
        raise ValueError("a batch needs at least one file")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    now = utc_now()
    chunks = _chunks(batch_id, tenant, options, files, chunk_size, now, attempt=1)
    created = BatchCreated(
        batch_id=batch_id,
        tenant=tenant,
        name=name,
        total_files=len(files) + len(rejected) + len(duplicates),
        chunks=[ChunkLayout(chunk_id=c.chunk_id, file_count=len(c.files)) for c in chunks],
        options=options,
        webhook_url=webhook_url,
        rejected=list(rejected),
        duplicates=list(duplicates),
        open=open,
        created_at=now,
    )
    return created, chunks


def plan_addition(batch_id: str, tenant: str, options: BatchOptions, files: list[StoredFile], chunk_size: int, *,
                  files_before: int, chunks_before: int, rejected: list[RejectedFile] = (),
                  duplicates: list[DuplicateFile] = ()) -> tuple[BatchFilesAdded, list[ChunkRequested]]:
    """Files added to an open batch that held files_before files in chunks_before chunks: their chunks continue
    the batch's numbering, and the event carries the batch's new absolute totals."""
    if not (files or rejected or duplicates):
        raise ValueError("an addition needs at least one file")
    now = utc_now()
    chunks = _chunks(batch_id, tenant, options, files, chunk_size, now, attempt=1, first_index=chunks_before)
    added = BatchFilesAdded(
        batch_id=batch_id, tenant=tenant, total_files=files_before + len(files) + len(rejected) + len(duplicates),
        total_chunks=chunks_before + len(chunks),
        chunks=[ChunkLayout(chunk_id=c.chunk_id, file_count=len(c.files)) for c in chunks],
        rejected=list(rejected), duplicates=list(duplicates), added_at=now)
    return added, chunks


def plan_retry(batch_id: str, tenant: str, options: BatchOptions, files: list[StoredFile], chunk_size: int,
               attempt: int) -> list[ChunkRequested]:
    """The retried files' chunks: ids of their own ({batch}.r{attempt}.NNNNN), carrying the retry's attempt."""
    return _chunks(batch_id, tenant, options, files, chunk_size, utc_now(), attempt=attempt)


def plan_redo(batch_id: str, tenant: str, options: BatchOptions, files: list[StoredFile], chunk_size: int,
              attempt: int, token: str) -> list[ChunkRequested]:
    """Files whose results were lost, run again in the attempt they were in: ids of their own
    ({batch}.redo{token}.NNNNN); a result of the same attempt that turns up after all changes nothing."""
    return _chunks(batch_id, tenant, options, files, chunk_size, utc_now(), attempt=attempt,
                   prefix=f"{batch_id}.redo{token}")


def _chunks(batch_id: str, tenant: str, options: BatchOptions, files: list[StoredFile], chunk_size: int, now,
            *, attempt: int, first_index: int = 0, prefix: str | None = None) -> list[ChunkRequested]:
    prefix = prefix or (batch_id if attempt == 1 else f"{batch_id}.r{attempt}")
    return [
        ChunkRequested(batch_id=batch_id, chunk_id=chunk_id_for(prefix, index), tenant=tenant, attempt=attempt,
                       options=options, files=chunk, requested_at=now)
        for index, chunk in enumerate(split_by_bytes(files, chunk_size), start=first_index)
    ]


def split_by_bytes(files: list[StoredFile], chunk_size: int) -> list[list[StoredFile]]:
    """Files in upload order, cut into ceil(n / chunk_size) chunks of about equal bytes, none over twice
    chunk_size files. A file's OCR time follows its bytes better than a count does: chunks go round-robin over the
    partitions, so equal chunks give each worker an equal share, and the batch ends when the last worker does (by
    the one-process OCR times of bench/pipeline.py's 240 images, the two workers' shares of count-sized chunks of
    10 differ by 0.5-1.1 s, of these by 0.27 s on average). A file bigger than a chunk's share counts as one
    share: it fills a chunk alone, and the rest share the others."""
    if not files:
        return []
    count, cap = -(-len(files) // chunk_size), 2 * chunk_size
    share = sum(f.size for f in files) / count
    for _ in range(50):  # the share with big files capped at it: a fixed point, reached from above
        capped = sum(min(f.size, share) for f in files) / count
        if share - capped <= 1e-6 * share:
            break
        share = capped
    weights = [min(f.size, share) for f in files]
    chunks, start, left_weight = [], 0, sum(weights)
    for left in range(count, 0, -1):  # chunks still to cut, this one included
        remaining = len(files) - start
        fewest = max(1, remaining - (left - 1) * cap)  # the later chunks can hold no more than cap each
        most = min(cap, remaining - (left - 1))  # and each needs one file
        target = left_weight / left
        end = start + fewest
        taken = sum(weights[start:end])
        # A file goes in this chunk if its middle falls within the chunk's share.
        while end - start < most and taken + weights[end] / 2 <= target:
            taken += weights[end]
            end += 1
        chunks.append(files[start:end])
        start, left_weight = end, left_weight - taken
    return chunks


def status_url(base: str, batch_id: str) -> str:
    return f"{base.rstrip('/')}/v1/batches/{batch_id}"


def manifest_key(tenant: str, batch_id: str, part: int = 0) -> str:
    """Where a batch's StoredFiles are kept in ingest's bucket: what a retry runs again. Part 0 holds the files
    the batch was created with; part n those of the nth addition to an open batch."""
    return f"{tenant}/{batch_id}/manifest{f'.{part}' if part else ''}.json"


def languages_problem(languages: str, installed: list[str]) -> str | None:
    """Why `languages` (e.g. kor+eng) cannot be read by the workers, or None."""
    missing = [lang for lang in languages.split("+") if lang not in installed]
    if missing:
        return f"no installed language model for {', '.join(missing)}; installed: {'+'.join(installed)}"
    return None


def request_fingerprint(parts: dict[str, Any]) -> str:
    """sha256 of a request's meaning (fields, and each file's name and sha256): what an Idempotency-Key binds."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def file_id_for(batch_id: str, bucket: str, key: str, version: str) -> str:
    """A file id that a repeated announcement of the same grouped S3 objects repeats exactly."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"s3://{bucket}/{key}?v={version}#{batch_id}").hex


def location_allowed(allowed: list[str], bucket: str, key: str) -> bool:
    """Whether bucket/key lies in one of the tenant's "bucket" or "bucket/prefix" locations. A key with a "." or
    ".." segment never does: S3 servers that resolve them would let b/../a name a's objects."""
    if any(segment in (".", "..") for segment in key.split("/")):
        return False
    path = f"{bucket}/{key}"
    return any(path.startswith(loc if "/" in loc else loc + "/") for loc in allowed)


def s3_event_objects(body: Any) -> tuple[list[tuple[str, str, str, int | None]], int]:
    """The (bucket, key, version, size) of each ObjectCreated record of an AWS or MinIO notification, and how
    many records were something else. Keys arrive URL-encoded; the version is the ETag, else the sequencer."""
    if not isinstance(body, dict) or not isinstance(body.get("Records"), list):
        raise ValueError('not an S3 event notification: expected {"Records": [...]}')
    created, ignored = [], 0
    for record in body["Records"]:
        event = record.get("eventName", "") if isinstance(record, dict) else ""
        if "ObjectCreated:" not in event:
            ignored += 1
            continue
        s3 = record.get("s3") or {}
        bucket, obj = (s3.get("bucket") or {}).get("name"), s3.get("object") or {}
        if not isinstance(bucket, str) or not isinstance(obj.get("key"), str):
            raise ValueError(f"an ObjectCreated record without s3.bucket.name or s3.object.key: {str(record)[:200]}")
        version = str(obj.get("eTag") or obj.get("sequencer") or obj.get("versionId") or "")
        size = obj.get("size") if isinstance(obj.get("size"), int) else None
        key = unquote_plus(obj["key"])
        if "\x00" in bucket + key + version:  # Postgres text cannot hold NUL, nor can a real object's name
            raise ValueError(f"an ObjectCreated record whose bucket, key or eTag holds NUL: {str(record)[:200]}")
        created.append((bucket, key, version.strip('"'), size))
    return created, ignored


def initial_progress(created: BatchCreated, total_chunks: int) -> BatchProgress:
    """Version 0 of the batch's progress: 'pending', so its status URL answers from the 202 on.
    The persister's snapshots start at version 1 and always supersede it."""
    return BatchProgress(batch_id=created.batch_id, tenant=created.tenant, name=created.name,
                         status=BatchStatus.PENDING, total_files=created.total_files, total_chunks=total_chunks,
                         succeeded=0, failed=0, skipped=0, cancelled=0, created_at=created.created_at,
                         updated_at=created.created_at, version=0)
