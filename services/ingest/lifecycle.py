"""Cancel and retry: checked against Postgres (the tenant's batch, its files), then sent as batch.events (and,
for a retry, new chunks) so the workers and the persister act on them exactly once."""
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import urllib3
from confluent_kafka import KafkaException, Producer
from minio import Minio
from minio.error import MinioException, S3Error
from psycopg_pool import ConnectionPool

from common.errors import DeliveryFailed
from common.kafka import Record, message_record, produce_and_flush
from schemas.api import CancelAccepted, ProblemCode, RetryAccepted
from schemas.batch_events import BatchCancelled, BatchOptions, BatchRetryRequested
from schemas.chunks import StoredFile
from schemas.progress import BatchStatus
from schemas.results import INGEST_ENGINE
from services.ingest import queries
from services.ingest.planning import manifest_key, plan_retry, status_url
from common.problems import Problem
from services.ingest.settings import IngestSettings

__all__ = ["cancel_batch", "retry_batch"]

log = logging.getLogger(__name__)

_FINISHED = (BatchStatus.COMPLETED, BatchStatus.FAILED)


def cancel_batch(batch_id: str, *, tenant: str, settings: IngestSettings, producer: Producer, pool: ConnectionPool
                 ) -> CancelAccepted:
    """Idempotent: a batch already cancelled (or being cancelled) answers the same and nothing is sent again."""
    with _database():
        with pool.connection() as conn:
            batch = _tenants_batch(conn, tenant, batch_id)
    status = BatchStatus(batch["status"])
    if status in _FINISHED:
        raise Problem(409, ProblemCode.BATCH_FINISHED, f"the batch already {status.value}; nothing to cancel")
    if status is not BatchStatus.CANCELLED and batch["cancel_requested_at"] is None:
        _send(producer, settings, [message_record(settings.topic_batch_events, batch_id,
                                                  BatchCancelled(batch_id=batch_id, tenant=tenant))])
        log.info("cancel requested", extra={"batch_id": batch_id, "tenant": tenant})
    return CancelAccepted(batch_id=batch_id, status=status, status_url=status_url(settings.status_api_url, batch_id))


def retry_batch(batch_id: str, file_ids: list[str], *, tenant: str, settings: IngestSettings, producer: Producer,
                s3: Minio, pool: ConnectionPool) -> RetryAccepted:
    """The failed files (all, or those given) as new chunks of a fresh attempt; one retry of a batch at a time.
    The retry is recorded and its events sent in one database transaction: if Kafka fails, nothing is kept."""
    with _database(), pool.connection() as conn, conn.transaction():
        queries.lock(conn, "retry", batch_id)
        batch = _tenants_batch(conn, tenant, batch_id)
        status = BatchStatus(batch["status"])
        if status is BatchStatus.CANCELLED or batch["cancel_requested_at"] is not None:
            raise Problem(409, ProblemCode.BATCH_CANCELLED, "the batch was cancelled; submit its files again")
        if status not in _FINISHED or queries.retry_pending(conn, batch_id, batch["finished_at"]):
            raise Problem(409, ProblemCode.BATCH_NOT_FINISHED,
                          f"the batch is {status.value if status not in _FINISHED else 'being retried'}; "
                          "retry once it has finished")
        stored = _manifest(s3, settings, tenant, batch_id)
        retryable = queries.retryable_files(conn, batch_id, INGEST_ENGINE) & stored.keys()
        chosen = _chosen(file_ids, retryable)
        attempt = queries.add_retry(conn, batch_id, chosen)
        chunks = plan_retry(batch_id, tenant, BatchOptions.model_validate(batch["options"] or {}),
                            [stored[f] for f in chosen], settings.default_chunk_size, attempt)
        event = BatchRetryRequested(batch_id=batch_id, tenant=tenant, file_ids=chosen, attempt=attempt)
        _send(producer, settings, [message_record(settings.topic_batch_events, batch_id, event)]
              + [message_record(settings.topic_ocr_chunks, c.chunk_id, c) for c in chunks])
    log.info("retry requested", extra={"batch_id": batch_id, "tenant": tenant, "attempt": attempt,
                                       "files": len(chosen), "chunks": len(chunks)})
    return RetryAccepted(batch_id=batch_id, status=BatchStatus.PROCESSING, attempt=attempt, file_ids=chosen,
                         total_chunks=len(chunks), status_url=status_url(settings.status_api_url, batch_id))


def _chosen(file_ids: list[str], retryable: set[str]) -> list[str]:
    if not file_ids:
        if not retryable:
            raise Problem(409, ProblemCode.NOTHING_TO_RETRY, "the batch has no failed file that a worker read "
                          "(files refused at submission cannot be retried: submit them again)")
        return sorted(retryable)
    given = list(dict.fromkeys(file_ids))
    refused = [f for f in given if f not in retryable]
    if refused:
        raise Problem(422, ProblemCode.FILES_NOT_RETRYABLE,
                      f"{len(refused)} of the given files are not failed files of this batch that can run again",
                      errors=[{"file_id": f, "reason": "not a failed file of this batch that a worker read"}
                              for f in refused[:1000]])
    return given


def _tenants_batch(conn: psycopg.Connection, tenant: str, batch_id: str) -> dict:
    batch = queries.find_batch(conn, tenant, batch_id)
    if batch is None:
        raise Problem(404, ProblemCode.BATCH_NOT_FOUND, f"no batch {batch_id[:64]} for this API key")
    return batch


def _manifest(s3: Minio, settings: IngestSettings, tenant: str, batch_id: str) -> dict[str, StoredFile]:
    try:
        response = s3.get_object(settings.s3_bucket, manifest_key(tenant, batch_id))
        try:
            data = response.read()
        finally:
            response.close()
            response.release_conn()
    except S3Error as exc:
        if exc.code == "NoSuchKey":
            return {}  # a batch accepted before manifests were kept: none of its files can run again
        raise _unavailable("the object store failed while reading the batch manifest", exc) from exc
    except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise _unavailable("the object store failed while reading the batch manifest", exc) from exc
    return {f.file_id: f for f in (StoredFile.model_validate(item) for item in json.loads(data))}


def _send(producer: Producer, settings: IngestSettings, records: list[Record]) -> None:
    try:
        produce_and_flush(producer, records, timeout=settings.kafka_delivery_timeout_s + 1.0,
                          spread={settings.topic_ocr_chunks})
    except (DeliveryFailed, KafkaException) as exc:
        raise _unavailable("Kafka did not acknowledge the request", exc) from exc


@contextmanager
def _database() -> Iterator[None]:
    """Postgres away (or no pool connection free in time): 503, nothing was changed."""
    try:
        yield
    except psycopg.OperationalError as exc:  # psycopg_pool.PoolTimeout is one too
        raise _unavailable("Postgres is unavailable", exc) from exc


def _unavailable(what: str, exc: BaseException) -> Problem:
    return Problem(503, ProblemCode.UNAVAILABLE, f"nothing changed: {what} ({exc}); retry later")
