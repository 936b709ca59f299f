"""Objects already in S3 as batch files: listed under a prefix, checked against what the client expects (size,
sha256, ETag), hashed and typed by streaming them once. Nothing is copied: a file's StoredFile names the object."""
import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor

from minio import Minio
from minio.error import S3Error

from schemas.api import S3ObjectRef, S3Prefix
from schemas.batch_events import RejectedFile
from schemas.chunks import StoredFile
from schemas.results import FailureReason
from services.ingest.planning import SNIFF_BYTES, FileRejected, accepted_content_type, check_size

__all__ = ["list_prefix", "verify_objects"]

log = logging.getLogger(__name__)

_READ_BYTES = 1024 * 1024


def list_prefix(s3: Minio, prefix: S3Prefix, limit: int) -> list[S3ObjectRef]:
    """The objects under the prefix, in key order; at most limit + 1 (so the caller can tell there are more)."""
    refs = []
    for obj in s3.list_objects(prefix.bucket, prefix=prefix.prefix, recursive=True):
        if obj.is_dir or obj.object_name.endswith("/"):
            continue
        refs.append(S3ObjectRef(bucket=prefix.bucket, key=obj.object_name))
        if len(refs) > limit:
            break
    return refs


def verify_objects(s3: Minio, refs: list[S3ObjectRef], file_ids: list[str], *, max_bytes: int, concurrency: int
                   ) -> list[StoredFile | RejectedFile]:
    """Each object as a StoredFile, or the RejectedFile saying why it cannot enter; store errors propagate."""
    with ThreadPoolExecutor(concurrency, thread_name_prefix="s3-verify") as pool:
        return list(pool.map(lambda pair: _verify(s3, pair[0], pair[1], max_bytes), zip(refs, file_ids)))


def _verify(s3: Minio, ref: S3ObjectRef, file_id: str, max_bytes: int) -> StoredFile | RejectedFile:
    def rejected(code: FailureReason, reason: str, size: int = 0, sha256: str = "") -> RejectedFile:
        return RejectedFile(file_id=file_id, original_name=ref.key, size=size, sha256=sha256, error_code=code,
                            error=f"s3://{ref.bucket}/{ref.key}: {reason}")

    try:
        stat = s3.stat_object(ref.bucket, ref.key)
    except S3Error as exc:
        if exc.code in ("NoSuchKey", "NoSuchBucket", "NoSuchObject", "ResourceNotFound"):
            return rejected(FailureReason.OBJECT_MISSING, "no such object")
        raise
    etag = (stat.etag or "").strip('"')
    if ref.size is not None and stat.size != ref.size:
        return rejected(FailureReason.CHECKSUM_MISMATCH, f"{stat.size} bytes, not the {ref.size} expected", stat.size)
    if ref.etag is not None and etag != ref.etag.strip('"'):
        return rejected(FailureReason.CHECKSUM_MISMATCH, f"ETag {etag}, not the {ref.etag} expected", stat.size)
    try:
        check_size(stat.size, max_bytes=max_bytes)  # before reading it
        sha256, head, size = _hash_object(s3, ref)
        if ref.sha256 is not None and sha256 != ref.sha256:
            return rejected(FailureReason.CHECKSUM_MISMATCH, f"sha256 {sha256}, not the {ref.sha256} expected",
                            size, sha256)
        content_type = accepted_content_type(size, head, max_bytes=max_bytes)
    except FileRejected as exc:
        return rejected(exc.problem, str(exc), stat.size)
    return StoredFile(file_id=file_id, bucket=ref.bucket, key=ref.key, sha256=sha256, size=size,
                      content_type=content_type, original_name=ref.key)


def _hash_object(s3: Minio, ref: S3ObjectRef) -> tuple[str, bytes, int]:
    """sha256, first bytes and size of the object, read once as a stream."""
    digest, head, size = hashlib.sha256(), b"", 0
    response = s3.get_object(ref.bucket, ref.key)
    try:
        for data in response.stream(_READ_BYTES):
            if len(head) < SNIFF_BYTES:
                head += data[: SNIFF_BYTES - len(head)]
            digest.update(data)
            size += len(data)
    finally:
        response.close()
        response.release_conn()
    return digest.hexdigest(), head, size
