"""ingest ★: POST /v1/batches takes a batch of images/PDFs and answers 202 once it is safely on its way.

The flow, top to bottom:
  1. Check the request as a whole (file count, chunk size, options), then every file (size, and its type
     from its first bytes). Any problem: a 4xx naming each file and why, and nothing is stored.
  2. Stream the files to the object store under {tenant}/{batch_id}/{file_id}, several at a time, hashing each
     on the way.
  3. Plan the chunks; produce BatchCreated, then every ChunkRequested, and wait for every acknowledgement.
  4. If step 2 or 3 fails, delete what step 2 stored and answer 503: nothing was accepted, retry.
  5. Answer 202 with the batch id and the URL to follow it at.
"""
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import asynccontextmanager, contextmanager
from typing import Annotated, Any, BinaryIO

import urllib3
from confluent_kafka import KafkaException, Producer
from fastapi import APIRouter, Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import MinioException
from prometheus_client import Counter, Histogram
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from common.errors import DeliveryFailed
from common.http import TenantDep, probe_router
from common.kafka import build_producer, message_record, produce_and_flush
from common.observability import RequestMetrics
from common.storage import STORE_ERRORS, ObjectStore, build_s3_client, ensure_bucket
from schemas.api import BatchAccepted, ProblemDetail
from schemas.batch_events import BatchCreated, BatchOptions
from schemas.chunks import ChunkRequested, StoredFile
from schemas.progress import BatchStatus
from services.ingest.planning import (
    SNIFF_BYTES, FileProblem, FileRejected, accepted_content_type, initial_progress, plan_batch,
)
from services.ingest.settings import IngestSettings

__all__ = ["BatchRejected", "accept_batch", "create_app"]

log = logging.getLogger(__name__)

BATCHES_ACCEPTED = Counter("ocrstream_ingest_batches_accepted_total", "Batches answered 202")
BATCHES_REJECTED = Counter("ocrstream_ingest_batches_rejected_total", "Batch requests answered 4xx/5xx", ["reason"])
FILES_ACCEPTED = Counter("ocrstream_ingest_files_accepted_total", "Files stored and announced in accepted batches")
SECONDS_TO_ACCEPT = Histogram(
    "ocrstream_ingest_accept_seconds", "From the parsed request to the 202: checks, storing, produce and flush",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)

# The minio SDK (deletion, readiness) raises its own errors and urllib3's; ObjectStore raises STORE_ERRORS.
_STORE_ERRORS = (*STORE_ERRORS, MinioException, urllib3.exceptions.HTTPError)
_FLUSH_GRACE_S = 1.0  # librdkafka expires records on its own timer; wait past it, so none is left queued
_READY_TTL_S = 5.0
_OPTION_DEFAULTS = BatchOptions()


class BatchRejected(HTTPException):
    """A batch request that is answered with an error; `reason` labels the metric and the log line."""

    def __init__(self, status_code: int, reason: str, detail: Any) -> None:
        super().__init__(status_code, detail)
        self.reason = reason


# ---- dependencies: what the lifespan built, read off app.state --------------------------------------------------

def _producer(request: Request) -> Producer:
    return request.app.state.producer


def _s3(request: Request) -> Minio:
    return request.app.state.s3


def _objects(request: Request) -> ObjectStore:
    return request.app.state.objects


def _settings(request: Request) -> IngestSettings:
    return request.app.state.settings


ProducerDep = Annotated[Producer, Depends(_producer)]
S3Dep = Annotated[Minio, Depends(_s3)]
ObjectsDep = Annotated[ObjectStore, Depends(_objects)]
SettingsDep = Annotated[IngestSettings, Depends(_settings)]


# ---- the route: HTTP in, one plain function, HTTP out ------------------------------------------------------------

router = APIRouter(prefix="/v1", tags=["batches"])

_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ProblemDetail, "description": "Missing or unknown API key"},
    413: {"model": ProblemDetail, "description": "More files than one batch may hold"},
    415: {"model": ProblemDetail, "description": "No file is of a supported type; detail lists each file and why"},
    422: {"model": ProblemDetail, "description": "Invalid fields, or some files cannot enter (empty, too large, "
                                                 "unsupported type); detail lists each file and why"},
    503: {"model": ProblemDetail, "description": "Object store or Kafka unavailable; nothing was accepted, retry"},
}


# A sync route: FastAPI runs it in its thread pool, so blocking S3 and Kafka calls never stall the event loop.
@router.post("/batches", status_code=202, response_model=BatchAccepted, responses=_ERROR_RESPONSES,
             operation_id="create_batch", summary="Submit a batch of images/PDFs for OCR")
def create_batch(
    tenant: TenantDep,
    settings: SettingsDep,
    producer: ProducerDep,
    s3: S3Dep,
    objects: ObjectsDep,
    files: Annotated[list[UploadFile], File(description="The files, in order; repeat the field once per file")],
    name: Annotated[str, Form(max_length=200)] = "",
    chunk_size: Annotated[int | None, Form(ge=1, description="Files per OCR chunk, at most max_chunk_size; "
                                                             "default default_chunk_size")] = None,
    languages: Annotated[str, Form(description="Tesseract languages, e.g. kor+eng")] = _OPTION_DEFAULTS.languages,
    pdf_dpi: Annotated[int, Form(description="Rasterization DPI of PDF pages, 72..600")] = _OPTION_DEFAULTS.pdf_dpi,
    embeddings: Annotated[bool, Form(description="Compute text embeddings")] = _OPTION_DEFAULTS.embeddings,
    min_confidence: Annotated[float | None, Form(description="Mark pages whose mean word confidence (0..1) is "
                                                             "below this as needs_review")] = _OPTION_DEFAULTS.min_confidence,
) -> BatchAccepted:
    started = time.perf_counter()
    options = _batch_options(languages=languages, pdf_dpi=pdf_dpi, embeddings=embeddings, min_confidence=min_confidence)
    accepted = accept_batch(
        files, tenant=tenant, name=name, chunk_size=chunk_size or settings.default_chunk_size, options=options,
        settings=settings, producer=producer, s3=s3, objects=objects,
    )
    SECONDS_TO_ACCEPT.observe(time.perf_counter() - started)
    return accepted


def accept_batch(
    uploads: list[UploadFile],
    *,
    tenant: str,
    name: str,
    chunk_size: int,
    options: BatchOptions,
    settings: IngestSettings,
    producer: Producer,
    s3: Minio,
    objects: ObjectStore,
) -> BatchAccepted:
    """Steps 1-5 of the module docstring. Raises BatchRejected; on any failure nothing stays stored."""
    # 1. Check everything before storing anything.
    _check_request(uploads, chunk_size, settings)
    content_types = _check_files(uploads, settings)

    batch_id = uuid.uuid4().hex
    prefix = f"{tenant}/{batch_id}"
    with _deleted_on_failure(s3, settings.s3_bucket, prefix) as stored_keys:
        # 2. Store the files.
        try:
            stored = _store_files(objects, settings, prefix, uploads, content_types, stored_keys)
        except _STORE_ERRORS as exc:
            raise _nothing_accepted("the object store failed while storing the files", exc) from exc

        # 3. Announce the batch; acknowledged records are durable, so the 202 can follow.
        #    (4. Any exception out of this block deletes what step 2 stored: see _deleted_on_failure.)
        created, chunks = plan_batch(batch_id, tenant, name, stored, chunk_size, options)
        try:
            _announce(producer, settings, created, chunks)
        except (DeliveryFailed, KafkaException) as exc:
            raise _nothing_accepted("Kafka did not acknowledge the batch", exc) from exc

    # 5. Accepted.
    BATCHES_ACCEPTED.inc()
    FILES_ACCEPTED.inc(len(stored))
    log.info("batch accepted", extra={"batch_id": batch_id, "tenant": tenant, "files": len(stored), "chunks": len(chunks),
                                      "bytes": sum(f.size for f in stored)})
    return BatchAccepted(batch_id=batch_id, status=BatchStatus.PENDING, total_files=created.total_files,
                         total_chunks=len(chunks), status_url=f"{settings.status_api_url.rstrip('/')}/v1/batches/{batch_id}")


# ---- step 1: checks ----------------------------------------------------------------------------------------------

def _batch_options(**fields: Any) -> BatchOptions:
    try:
        return BatchOptions(**fields)
    except ValidationError as exc:  # the same 422 shape as FastAPI's own field validation
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False, include_context=False)]
        ) from exc


def _check_request(uploads: list[UploadFile], chunk_size: int, settings: IngestSettings) -> None:
    if not uploads:
        raise BatchRejected(422, "no_files", "no files: send one or more 'files' parts")
    if len(uploads) > settings.max_files_per_batch:
        raise BatchRejected(413, "too_many_files",
                            f"{len(uploads)} files; a batch holds at most {settings.max_files_per_batch}: "
                            "split the upload into several batches")
    if chunk_size > settings.max_chunk_size:
        raise RequestValidationError([{
            "type": "less_than_equal", "loc": ("body", "chunk_size"), "input": chunk_size,
            "msg": f"Input should be less than or equal to {settings.max_chunk_size}",
        }])


def _check_files(uploads: list[UploadFile], settings: IngestSettings) -> list[str]:
    """Each file's content type, sniffed; or BatchRejected listing every file that cannot enter, and why."""
    content_types: list[str] = []
    rejected: list[tuple[int, FileRejected]] = []
    for index, upload in enumerate(uploads):
        size, head = _size_and_head(upload.file)
        try:
            content_types.append(accepted_content_type(size, head, max_bytes=settings.max_file_bytes))
        except FileRejected as exc:
            rejected.append((index, exc))
    if rejected:
        only_types = all(exc.problem is FileProblem.UNSUPPORTED_TYPE for _, exc in rejected)
        detail = [{"file": _original_name(uploads[i], i), "index": i, "reason": str(exc)} for i, exc in rejected]
        if only_types:
            raise BatchRejected(415, "unsupported_type", detail)
        raise BatchRejected(422, "invalid_files", detail)
    return content_types


def _size_and_head(file: BinaryIO) -> tuple[int, bytes]:
    """Size and first bytes of a spooled upload, without reading it whole; leaves it rewound."""
    size = file.seek(0, os.SEEK_END)
    file.seek(0)
    head = file.read(SNIFF_BYTES)
    file.seek(0)
    return size, head


def _original_name(upload: UploadFile, index: int) -> str:
    return upload.filename or f"file-{index}"


# ---- steps 2-4: store, announce, or undo --------------------------------------------------------------------------

@contextmanager
def _deleted_on_failure(s3: Minio, bucket: str, prefix: str) -> Iterator[list[str]]:
    """Yields the list the store step appends keys to; if anything fails, those objects are deleted."""
    keys: list[str] = []
    try:
        yield keys
    except BaseException:
        _delete_objects(s3, bucket, prefix, keys)
        raise


def _store_files(objects: ObjectStore, settings: IngestSettings, prefix: str, uploads: list[UploadFile],
                 content_types: list[str], stored_keys: list[str]) -> list[StoredFile]:
    """Every file, store_concurrency at a time, in upload order. On the first failure the files not begun are
    skipped and that failure is raised once the uploads under way have ended: nothing is still being written
    when the batch's objects are deleted."""
    file_ids = [uuid.uuid4().hex for _ in uploads]
    stored_keys.extend(f"{prefix}/{file_id}" for file_id in file_ids)  # before the uploads: half-written ones go too
    with ThreadPoolExecutor(max_workers=min(len(uploads), settings.store_concurrency),
                            thread_name_prefix="ingest-store") as pool:
        futures = [pool.submit(_store_file, objects, settings.s3_bucket, prefix, file_id, upload, index, content_type)
                   for index, (file_id, upload, content_type) in enumerate(zip(file_ids, uploads, content_types))]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        if any(f.exception() is not None for f in done):
            pool.shutdown(wait=True, cancel_futures=True)
    return [f.result() for f in futures if not f.cancelled()]  # the first failure raises here


def _store_file(objects: ObjectStore, bucket: str, prefix: str, file_id: str, upload: UploadFile, index: int,
                content_type: str) -> StoredFile:
    upload.file.seek(0)
    stored = objects.put_stream(bucket, f"{prefix}/{file_id}", upload.file, content_type=content_type)
    return StoredFile(file_id=file_id, bucket=stored.bucket, key=stored.key, sha256=stored.sha256, size=stored.size,
                      content_type=content_type, original_name=_original_name(upload, index))


def _announce(producer: Producer, settings: IngestSettings, created: BatchCreated, chunks: list[ChunkRequested]) -> None:
    """BatchCreated first, then every chunk, in one flush: the batch is known before any of its results.
    Its 'pending' progress snapshot goes too, so the status URL in the 202 answers at once."""
    records = [message_record(settings.topic_batch_events, created.batch_id, created)]
    records += [message_record(settings.topic_ocr_chunks, chunk.chunk_id, chunk) for chunk in chunks]
    records.append(message_record(settings.topic_batch_progress, created.batch_id,
                                  initial_progress(created, len(chunks))))
    try:
        produce_and_flush(producer, records, timeout=settings.kafka_delivery_timeout_s + _FLUSH_GRACE_S)
    except (DeliveryFailed, KafkaException):
        # Nothing still queued may go out once its objects are deleted. The producer is shared, so this also
        # fails records of concurrent requests; they answer 503 and clean up the same way.
        producer.purge(in_queue=True, in_flight=False)
        producer.poll(0)
        raise


def _delete_objects(s3: Minio, bucket: str, prefix: str, keys: list[str]) -> None:
    if not keys:
        return
    try:
        errors: list[Any] = list(s3.remove_objects(bucket, (DeleteObject(key) for key in keys)))
        # File-backed gateways (the dev stack's JuiceFS) keep the emptied folder as an object "prefix/"; on S3 the
        # key does not exist and this is a no-op.
        s3.remove_object(bucket, f"{prefix}/")
    except _STORE_ERRORS as exc:
        errors = [exc]
    if errors:
        log.error("objects of a rejected batch could not be deleted",
                  extra={"bucket": bucket, "keys": keys, "errors": [str(e) for e in errors[:5]]})


def _nothing_accepted(what: str, exc: BaseException) -> BatchRejected:
    return BatchRejected(503, "unavailable",
                         f"nothing was accepted: {what} ({exc}); retry the whole batch later")


# ---- rejections: one log line and one count per rejected batch request --------------------------------------------

def _log_rejection(request: Request, status_code: int, reason: str, detail: Any, cause: BaseException | None) -> None:
    if request.scope.get("endpoint") is not create_batch:
        return
    BATCHES_REJECTED.labels(reason).inc()
    log.log(logging.ERROR if status_code >= 500 else logging.WARNING, "batch rejected",
            extra={"status": status_code, "reason": reason, "detail": detail}, exc_info=cause)


async def _on_http_error(request: Request, exc: StarletteHTTPException):
    reason = getattr(exc, "reason", "unauthorized" if exc.status_code == 401 else f"http_{exc.status_code}")
    _log_rejection(request, exc.status_code, reason, exc.detail, exc.__cause__)
    return await http_exception_handler(request, exc)


async def _on_invalid_request(request: Request, exc: RequestValidationError):
    _log_rejection(request, 422, "invalid_request", [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()],
                   None)
    return await request_validation_exception_handler(request, exc)


# ---- readiness ----------------------------------------------------------------------------------------------------

def is_ready(app: FastAPI) -> bool:
    """Kafka answers a metadata request and the bucket exists; the answer is kept a few seconds."""
    checked_at, ready = getattr(app.state, "readiness", (float("-inf"), False))
    if time.monotonic() - checked_at > _READY_TTL_S:
        try:
            app.state.producer.list_topics(timeout=2)
            ready = app.state.s3.bucket_exists(app.state.settings.s3_bucket)
        except (KafkaException, *_STORE_ERRORS):
            ready = False
        app.state.readiness = (time.monotonic(), ready)
    return ready


# ---- the app ------------------------------------------------------------------------------------------------------

def create_app(settings: IngestSettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        s3 = build_s3_client(settings)
        await run_in_threadpool(ensure_bucket, s3, settings.s3_bucket)
        # Records expire when the request gives up on them, so none is delivered after its batch answered 503.
        producer = build_producer(settings, client_id="ingest",
                                  **{"delivery.timeout.ms": int(settings.kafka_delivery_timeout_s * 1000)})
        app.state.settings, app.state.s3, app.state.producer = settings, s3, producer
        app.state.objects = ObjectStore(settings)
        try:
            yield
        finally:
            # Every request flushed its own records; this only drains delivery reports.
            await run_in_threadpool(producer.flush, settings.kafka_delivery_timeout_s)

    app = FastAPI(title="ocrstream ingest", version="0.1.0", lifespan=lifespan,
                  description="Accepts batches of images/PDFs for OCR; follow them at the status API.")
    app.include_router(router)
    app.include_router(probe_router(is_ready))
    app.add_middleware(RequestMetrics)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(RequestValidationError, _on_invalid_request)
    return app
