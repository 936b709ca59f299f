"""The object store (S3 API via the minio SDK): streamed uploads with sha256, whole-object reads."""
import hashlib
from dataclasses import dataclass
from typing import BinaryIO

from minio import Minio

from common.settings import Settings

PART_SIZE = 16 * 1024 * 1024  # multipart part size; bounds the memory an upload holds


def build_s3_client(settings: Settings) -> Minio:
    return Minio(
        settings.s3_endpoint,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key,
        secure=settings.s3_secure,
    )


def ensure_bucket(client: Minio, bucket: str) -> None:
    if not client.bucket_exists(bucket):
        try:
            client.make_bucket(bucket)
        except Exception:
            if not client.bucket_exists(bucket):  # lost a creation race: fine; anything else: raise
                raise


class HashingReader:
    """A file-like reader that computes sha256 and size of what passes through it."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._hash = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        self._hash.update(data)
        self.size += len(data)
        return data

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


@dataclass(frozen=True)
class StoredObject:
    bucket: str
    key: str
    sha256: str
    size: int


def put_stream(client: Minio, bucket: str, key: str, stream: BinaryIO, *, content_type: str) -> StoredObject:
    """Stream to the store in parts (never the whole file in memory), hashing on the way."""
    reader = HashingReader(stream)
    client.put_object(bucket, key, reader, length=-1, part_size=PART_SIZE, content_type=content_type)
    return StoredObject(bucket, key, reader.sha256, reader.size)


def get_object_bytes(client: Minio, bucket: str, key: str) -> bytes:
    response = client.get_object(bucket, key)
    try:
        return response.read()
    finally:
        response.close()
        response.release_conn()
