"""The object store over S3. Two clients, each where it fits:

- ObjectStore (obstore, Rust): the data path, objects' bytes in and out. About 0.3 ms of CPU per small request
  against the minio SDK's 0.6-1.9 ms, and it releases the GIL, so threads store and fetch in parallel.
- the minio SDK (build_s3_client): bucket set-up, stat, listing, deletion, notifications — the API users expect.
"""
import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import BinaryIO

import obstore
from minio import Minio
from obstore.exceptions import BaseError as ObstoreError
from obstore.store import S3Store

from common.settings import Settings

PART_SIZE = 8 * 1024 * 1024  # one PUT up to this size; multipart parts above it
_PARTS_IN_FLIGHT = 2  # a multipart upload holds about (this + 1) x PART_SIZE in memory
# What a failed call of ObjectStore raises (obstore's own errors; a missing object is FileNotFoundError, an OSError).
STORE_ERRORS = (ObstoreError, OSError)


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


def get_object_bytes(client: Minio, bucket: str, key: str) -> bytes:
    """A whole (small) object through the minio SDK, its connection given back to the pool."""
    response = client.get_object(bucket, key)
    try:
        return response.read()
    finally:
        response.close()
        response.release_conn()


@dataclass(frozen=True)
class StoredObject:
    bucket: str
    key: str
    sha256: str
    size: int


class ObjectMissing(Exception):
    """The object (or its bucket) does not exist."""


class ObjectStore:
    """Objects' bytes in and out over S3 (obstore); thread-safe, one connection pool per bucket."""

    def __init__(self, settings: Settings) -> None:
        scheme = "https" if settings.s3_secure else "http"
        self._options = {
            "endpoint": f"{scheme}://{settings.s3_endpoint}",
            "access_key_id": settings.s3_access_key,
            "secret_access_key": settings.s3_secret_key,
            "region": settings.s3_region,
            "virtual_hosted_style_request": False,  # path-style, as MinIO and the dev stack's gateway serve
            "client_options": {"allow_http": not settings.s3_secure, "connect_timeout": "5s", "timeout": "120s",
                               "pool_max_idle_per_host": "64"},
            # Callers decide how long to keep trying (ingest answers 503, the worker retries while polling);
            # obstore's default would retry for up to 3 minutes inside one call.
            "retry_config": {"max_retries": 2, "retry_timeout": timedelta(seconds=10),
                             "backoff": {"init_backoff": timedelta(milliseconds=100),
                                         "max_backoff": timedelta(seconds=1), "base": 2}},
        }
        self._stores: dict[str, S3Store] = {}
        self._lock = threading.Lock()

    def _store(self, bucket: str) -> S3Store:
        with self._lock:
            if bucket not in self._stores:
                self._stores[bucket] = S3Store(bucket, **self._options)
            return self._stores[bucket]

    def put_stream(self, bucket: str, key: str, stream: BinaryIO, *, content_type: str) -> StoredObject:
        """Store what `stream` yields, hashing on the way: one PUT for a small object, a multipart upload that
        holds a few parts at a time (never the whole object) for a large one."""
        digest = hashlib.sha256()
        first = stream.read(PART_SIZE)
        digest.update(first)
        size = len(first)
        attributes = {"Content-Type": content_type}
        if len(first) < PART_SIZE:
            obstore.put(self._store(bucket), key, first, attributes=attributes, use_multipart=False)
            return StoredObject(bucket, key, digest.hexdigest(), size)

        def parts() -> Iterator[bytes]:
            nonlocal size
            yield first
            while data := stream.read(PART_SIZE):
                digest.update(data)
                size += len(data)
                yield data

        obstore.put(self._store(bucket), key, parts(), attributes=attributes, chunk_size=PART_SIZE,
                    max_concurrency=_PARTS_IN_FLIGHT)
        return StoredObject(bucket, key, digest.hexdigest(), size)

    def get_bytes(self, bucket: str, key: str) -> bytes:
        """The whole object; ObjectMissing if it (or its bucket) does not exist."""
        try:
            return bytes(obstore.get(self._store(bucket), key).bytes())
        except FileNotFoundError as exc:
            raise ObjectMissing(f"{bucket}/{key} does not exist") from exc
