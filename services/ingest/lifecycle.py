"""Cancel, retry, and growing an open batch: checked against Postgres (the tenant's batch, its files), then sent
as batch.events (and, for a retry or an addition, new chunks) so the workers and the persister act on them exactly
once.

An open batch (created open=true) grows by additions until it is sealed. Ingest keeps its totals in its own table
(open_batches): an addition or a seal locks that row, so requests on one batch run one after another and their
events reach batch.events in that order (BatchFilesAdded before BatchSealed: the persister's totals are final
when it applies the seal). As for a retry, the row changes in a transaction that commits only after Kafka
acknowledged the events: if Kafka fails, nothing is kept."""
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg
import urllib3
from confluent_kafka import KafkaException, Producer
from minio import Minio
from minio.error import MinioException, S3Error
from psycopg_pool import ConnectionPool

from common.errors import DeliveryFailed
from common.kafka import Record, message_record, produce_and_flush
from common.problems import Problem
from common.storage import get_object_bytes
from schemas.api import CancelAccepted, ProblemCode, RetryAccepted, SealAccepted
from schemas.batch_events import (BatchCancelled, BatchCreated, BatchFilesAdded, BatchOptions, BatchRetryRequested,
                                  BatchSealed, DuplicateFile, RejectedFile)
from schemas.chunks import ChunkRequested, StoredFile
from schemas.progress import BatchStatus
from schemas.results import INGEST_ENGINE
from services.ingest import queries
from services.ingest.planning import manifest_key, plan_addition, plan_retry, status_url
from services.ingest.settings import IngestSettings

__all__ = ["EventsFor", "addition", "cancel_batch", "check_room", "manifest", "recording_open", "retry_batch",
           "seal_batch", "send", "transaction"]

log = logging.getLogger(__name__)

_FINISHED = (BatchStatus.COMPLETED, BatchStatus.FAILED)

# Plans the events announcing stored files (rejected and duplicate ones too): a new batch, or an addition.
EventsFor = Callable[[list[StoredFile], list[RejectedFile], list[DuplicateFile]],
                     tuple[BatchCreated | BatchFilesAdded, list[ChunkRequested]]]


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
        send(producer, settings, [message_record(settings.topic_batch_events, batch_id,
                                                  BatchCancelled(batch_id=batch_id, tenant=tenant))])
        log.info("cancel requested", extra={"batch_id": batch_id, "tenant": tenant})
    with _database(), pool.connection() as conn:  # on every answer: a repeat after a 503 here marks it too
        queries.cancel_open_batch(conn, batch_id)
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
        stored = manifest(s3, settings, tenant, batch_id, queries.manifest_count(conn, batch_id))
        retryable = queries.retryable_files(conn, batch_id, INGEST_ENGINE) & stored.keys()
        chosen = _chosen(file_ids, retryable)
        attempt = queries.add_retry(conn, batch_id, chosen)
        chunks = plan_retry(batch_id, tenant, BatchOptions.model_validate(batch["options"] or {}),
                            [stored[f] for f in chosen], settings.default_chunk_size, attempt)
        event = BatchRetryRequested(batch_id=batch_id, tenant=tenant, file_ids=chosen, attempt=attempt)
        send(producer, settings, [message_record(settings.topic_batch_events, batch_id, event)]
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


def manifest(s3: Minio, settings: IngestSettings, tenant: str, batch_id: str, parts: int) -> dict[str, StoredFile]:
    """The StoredFiles of every part of the batch's manifest (one per addition to an open batch)."""
    stored: dict[str, StoredFile] = {}
    for part in range(parts):
        try:
            data = get_object_bytes(s3, settings.s3_bucket, manifest_key(tenant, batch_id, part))
        except S3Error as exc:
            if exc.code == "NoSuchKey":
                continue  # a batch accepted before manifests were kept: none of its files can run again
            raise _unavailable("the object store failed while reading the batch manifest", exc) from exc
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise _unavailable("the object store failed while reading the batch manifest", exc) from exc
        stored |= {f.file_id: f for f in (StoredFile.model_validate(item) for item in json.loads(data))}
    return stored


# ---- open batches --------------------------------------------------------------------------------------------------

@contextmanager
def transaction(pool: ConnectionPool) -> Iterator[psycopg.Connection]:
    """A transaction to record an open batch's change in; the caller leaves it only once the events are sent."""
    with _database(), pool.connection() as conn, conn.transaction():
        yield conn


def recording_open(conn: psycopg.Connection, plan: EventsFor, chunk_size: int) -> EventsFor:
    """plan, recording the new open batch it creates in conn's transaction."""
    def events_for(files: list[StoredFile], rejected: list[RejectedFile], duplicates: list[DuplicateFile]):
        created, chunks = plan(files, rejected, duplicates)
        queries.add_open_batch(conn, created.batch_id, created.tenant, created.options, chunk_size,
                               created.total_files, len(chunks))
        return created, chunks
    return events_for


@contextmanager
def addition(pool: ConnectionPool, tenant: str, batch_id: str, file_count: int, settings: IngestSettings
             ) -> Iterator[tuple[BatchOptions, EventsFor, int]]:
    """The tenant's open batch, locked for an addition of file_count files: its options, how to plan the
    addition (recorded in the lock's transaction, which commits when the block ends), and the manifest part the
    added files go in. 404 for no such batch, 409 if sealed or cancelled, 413 if the files would not fit."""
    with transaction(pool) as conn:
        batch = queries.find_open_batch(conn, tenant, batch_id)
        if batch is None:
            _tenants_batch(conn, tenant, batch_id)  # 404 unless the batch exists: then it was created sealed
            raise Problem(409, ProblemCode.BATCH_SEALED, "the batch was created sealed (without open=true); "
                          "submit these files as a new batch")
        if batch["cancelled_at"] is not None:
            raise Problem(409, ProblemCode.BATCH_CANCELLED, "the batch was cancelled; no file can be added")
        if batch["sealed_at"] is not None:
            raise Problem(409, ProblemCode.BATCH_SEALED, "the batch is sealed; submit these files as a new batch")
        check_room(batch["total_files"], file_count, settings)
        options = BatchOptions.model_validate(batch["options"])

        def events_for(files: list[StoredFile], rejected: list[RejectedFile], duplicates: list[DuplicateFile]):
            added, chunks = plan_addition(batch_id, tenant, options, files, batch["chunk_size"],
                                          files_before=batch["total_files"], chunks_before=batch["total_chunks"],
                                          rejected=rejected, duplicates=duplicates)
            queries.record_addition(conn, batch_id, added.total_files, added.total_chunks)
            return added, chunks
        yield options, events_for, batch["manifests"]


def check_room(files_before: int, file_count: int, settings: IngestSettings) -> None:
    if files_before + file_count > settings.max_files_per_open_batch:
        raise Problem(413, ProblemCode.BATCH_FULL,
                      f"the batch holds {files_before} files; {file_count} more would take it over "
                      f"max_files_per_open_batch ({settings.max_files_per_open_batch}): seal it and start another")


def seal_batch(batch_id: str, *, tenant: str, settings: IngestSettings, producer: Producer, pool: ConnectionPool
               ) -> tuple[SealAccepted, bool]:
    """Idempotent: the answer, and whether this request sealed the batch (a batch created sealed always was)."""
    url = status_url(settings.status_api_url, batch_id)
    with transaction(pool) as conn:
        batch = queries.find_open_batch(conn, tenant, batch_id)
        if batch is None:
            sealed = _tenants_batch(conn, tenant, batch_id)
            return SealAccepted(batch_id=batch_id, total_files=sealed["total_files"],
                                total_chunks=sealed["total_chunks"], status_url=url), False
        if batch["cancelled_at"] is not None:
            raise Problem(409, ProblemCode.BATCH_CANCELLED, "the batch was cancelled; it ends cancelled unsealed")
        answer = SealAccepted(batch_id=batch_id, total_files=batch["total_files"],
                              total_chunks=batch["total_chunks"], status_url=url)
        if batch["sealed_at"] is not None:
            return answer, False
        queries.seal_open_batch(conn, batch_id)
        event = BatchSealed(batch_id=batch_id, tenant=tenant, total_files=batch["total_files"],
                            total_chunks=batch["total_chunks"])
        send(producer, settings, [message_record(settings.topic_batch_events, batch_id, event)])
    log.info("batch sealed", extra={"batch_id": batch_id, "tenant": tenant, "files": event.total_files,
                                    "chunks": event.total_chunks})
    return answer, True


def send(producer: Producer, settings: IngestSettings, records: list[Record]) -> None:
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
