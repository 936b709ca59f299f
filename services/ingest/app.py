"""ingest ★: batches in (multipart uploads, S3 objects, S3 event notifications), cancel and retry out to Kafka.

POST /v1/batches, top to bottom (the API key and the body size were checked before the body was read: gate.py):
  1. Check the request (file count, chunk size, options), then every file (name, size, and its type from its
     first bytes). A file that cannot enter becomes a `failed` result with a code (strict=true: the whole batch
     is refused, nothing stored). A file the tenant already had OCRed with the same options (same sha256) is
     linked to that result instead of being read again (dedupe=false: never).
  2. An Idempotency-Key seen before answers that first 202 and does nothing else (a different request: 409).
  3. Stream each file to the object store under {tenant}/{batch_id}/{file_id}, hashing it on the way; then the
     batch's manifest (every StoredFile: what a retry runs again).
  4. Plan the chunks; produce BatchCreated, then every ChunkRequested, and wait for every acknowledgement.
  5. If step 3 or 4 fails, delete what step 3 stored and answer 503: nothing was accepted, retry.
  6. Answer 202 with the batch id, Location (the status URL) and Retry-After.
POST /v1/batches/{batch_id}/files adds files to an open batch (created with open=true) the same way: steps 1-6
with the batch's options, its row in open_batches locked meanwhile (lifecycle.addition); .../seal seals it.
Cancel, retry, additions' bookkeeping and seal (lifecycle.py) and S3 events (s3_events.py) are plain functions
the routes below call. A thread runs again the files of stalled batches whose results the broker lost (repair.py).
"""
import hashlib
import io
import json
import logging
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any, BinaryIO

import psycopg
import urllib3
from confluent_kafka import KafkaException, Producer
from fastapi import APIRouter, Body, Depends, FastAPI, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import MinioException
from prometheus_client import Counter, Histogram
from psycopg_pool import ConnectionPool
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException

from common.db import build_pool
from common.errors import DeliveryFailed
from common.http import BatchIdInSql, TenantDep, probe_router
from common.kafka import build_producer, message_record, produce_and_flush
from common.observability import RequestMetrics
from common.storage import STORE_ERRORS, ObjectStore, build_s3_client, ensure_bucket
from schemas.api import (BatchAccepted, BatchCreateFields, BatchOptionsFields, CancelAccepted, FilesAccepted,
                         FilesAddFields, ProblemCode, RejectedFilePublic, RetryAccepted, RetryCreate, S3BatchCreate,
                         S3EventsAccepted, S3ObjectRef, SealAccepted)
from schemas.batch_events import BatchCreated, BatchFilesAdded, BatchOptions, DuplicateFile, RejectedFile
from schemas.chunks import ChunkRequested, StoredFile
from schemas.progress import BatchStatus
from services.ingest import lifecycle, queries, s3_events
from services.ingest.gate import RequestGate
from services.ingest.planning import (
    SNIFF_BYTES, FileRejected, accepted_content_type, initial_progress, languages_problem, location_allowed,
    manifest_key,
    plan_batch, request_fingerprint, status_url,
)
from common.problems import Problem, install_problem_handlers, problem_responses
from services.ingest.repair import LostResultRepair
from services.ingest.settings import IngestSettings
from services.ingest.sources import list_prefix, verify_objects

__all__ = ["Problem", "accept_batch", "create_app"]

log = logging.getLogger(__name__)

BATCHES_ACCEPTED = Counter("ocrstream_ingest_batches_accepted_total", "Batches answered 202")
FILES_ACCEPTED = Counter("ocrstream_ingest_files_accepted_total", "Files stored and announced in accepted batches")
FILES_REFUSED = Counter("ocrstream_ingest_files_refused_total", "Files of accepted batches that end failed unread",
                        ["code"])
FILES_DEDUPLICATED = Counter("ocrstream_ingest_files_deduplicated_total", "Files linked to an earlier result")
SECONDS_TO_ACCEPT = Histogram(
    "ocrstream_ingest_accept_seconds", "From the parsed request to the 202: checks, storing, produce and flush",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)

# The minio SDK (deletion, listing, readiness) raises its own errors and urllib3's; ObjectStore raises STORE_ERRORS.
_STORE_ERRORS = (*STORE_ERRORS, MinioException, urllib3.exceptions.HTTPError)
_FLUSH_GRACE_S = 1.0  # librdkafka expires records on its own timer; wait past it, so none is left queued
_READY_TTL_S = 5.0
_MAX_FORM_FIELDS = 32  # the options are a handful of fields
_MAX_FIELD_BYTES = 64 * 1024
_IDEMPOTENCY_KEY_CHARS = 255


# ---- dependencies: what the lifespan built, read off app.state --------------------------------------------------

def _producer(request: Request) -> Producer:
    return request.app.state.producer


def _s3(request: Request) -> Minio:
    return request.app.state.s3


def _objects(request: Request) -> ObjectStore:
    return request.app.state.objects


def _settings(request: Request) -> IngestSettings:
    return request.app.state.settings


def _pool(request: Request) -> ConnectionPool:
    return request.app.state.pool


ProducerDep = Annotated[Producer, Depends(_producer)]
S3Dep = Annotated[Minio, Depends(_s3)]
ObjectsDep = Annotated[ObjectStore, Depends(_objects)]  # the data path (put/get); S3Dep for bucket set-up, listing
SettingsDep = Annotated[IngestSettings, Depends(_settings)]
PoolDep = Annotated[ConnectionPool, Depends(_pool)]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", description="Repeat a POST safely: the "
                                              "same key and request answer the first 202 for at least 24 h")]


# ---- the routes: HTTP in, one plain function, HTTP out ------------------------------------------------------------

router = APIRouter(prefix="/v1", tags=["batches"])

_AUTH = (401, ProblemCode.UNAUTHORIZED, "missing or unknown API key")
_TOO_LARGE = (413, ProblemCode.REQUEST_TOO_LARGE, "the body is over max_request_bytes")
_INVALID = (422, ProblemCode.INVALID_REQUEST, "a field is invalid; `errors` lists each")
_UNAVAILABLE = (503, ProblemCode.UNAVAILABLE, "Kafka, the object store or Postgres unavailable; nothing changed, retry")
_NO_BATCH = (404, ProblemCode.BATCH_NOT_FOUND, "no such batch for this API key's tenant")
_CANCELLED = (409, ProblemCode.BATCH_CANCELLED, "the batch was cancelled")

# What a request with files can be answered besides 202: POST /v1/batches and .../files.
_UPLOAD_ERRORS = (
    (400, ProblemCode.INVALID_MULTIPART, "the multipart body cannot be parsed (the reason is named)"),
    (400, ProblemCode.INVALID_IDEMPOTENCY_KEY, f"Idempotency-Key empty, over {_IDEMPOTENCY_KEY_CHARS} characters "
                                               "or not printable ASCII"),
    _AUTH,
    (409, ProblemCode.IDEMPOTENCY_KEY_REUSED, "the Idempotency-Key was used for a different request"),
    _TOO_LARGE,
    (413, ProblemCode.TOO_MANY_FILES, "more files or objects than max_files_per_batch"),
    (415, ProblemCode.UNSUPPORTED_TYPE, "strict=true (or every file refused) and every refused file is of an "
                                        "unsupported type; `errors` lists each"),
    _INVALID,
    (422, ProblemCode.NO_FILES, "no files, or an empty prefix"),
    (422, ProblemCode.INVALID_FILES, "strict=true (or every file refused): `errors` lists each file and why"),
    _UNAVAILABLE,
)
_CREATE_ERRORS = problem_responses(
    *_UPLOAD_ERRORS,
    (400, ProblemCode.INVALID_JSON, "the JSON body cannot be parsed"),
    (403, ProblemCode.S3_ACCESS_DENIED, "an object or prefix outside the tenant's s3_sources"),
    (413, ProblemCode.BATCH_FULL, "open=true with more files than max_files_per_open_batch"),
    (415, ProblemCode.UNSUPPORTED_MEDIA_TYPE, "the body is neither multipart/form-data nor application/json"),
)

_MULTIPART_SCHEMA = {"type": "object", "required": ["files"], "properties": {
    "files": {"type": "array", "items": {"type": "string", "format": "binary"},
              "description": "The files, in order; repeat the field once per file"},
    **BatchCreateFields.model_json_schema()["properties"]}}
_CREATE_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": _MULTIPART_SCHEMA},
    "application/json": {"schema": {"$ref": "#/components/schemas/S3BatchCreate"}},
}}}


@router.post("/batches", status_code=202, response_model=BatchAccepted, responses=_CREATE_ERRORS,
             openapi_extra=_CREATE_BODY, operation_id="create_batch",
             summary="Submit a batch: files as multipart/form-data, or S3 objects/a prefix as JSON")
async def create_batch(request: Request, tenant: TenantDep, settings: SettingsDep, producer: ProducerDep, s3: S3Dep,
                       objects: ObjectsDep, pool: PoolDep, idempotency_key: IdempotencyKey = None) -> JSONResponse:
    started = time.perf_counter()
    media_type = _media_type(request)
    clients = {"tenant": tenant, "settings": settings, "producer": producer, "s3": s3, "pool": pool,
               "idempotency_key": _checked_key(idempotency_key)}
    if media_type in _FORM_TYPES:
        async with _uploaded(request, settings, BatchCreateFields) as (uploads, fields):
            accepted = await run_in_threadpool(submit_uploads, uploads, fields, objects=objects, **clients)
    elif media_type == "application/json" or media_type.endswith("+json"):
        body = _parsed(S3BatchCreate, await request.body())
        accepted = await run_in_threadpool(submit_objects, body, **clients)
    else:
        raise Problem(415, ProblemCode.UNSUPPORTED_MEDIA_TYPE,
                      f"the body is {media_type or 'untyped'}: send multipart/form-data (files) or "
                      "application/json (S3 objects or a prefix)")
    SECONDS_TO_ACCEPT.observe(time.perf_counter() - started)
    return _accepted_response(accepted, settings)


_ADD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["files"], "properties": {
        "files": _MULTIPART_SCHEMA["properties"]["files"], **FilesAddFields.model_json_schema()["properties"]}}}}}}


@router.post("/batches/{batch_id}/files", status_code=202, response_model=FilesAccepted, openapi_extra=_ADD_BODY,
             operation_id="add_batch_files",
             summary="Add files to an open batch (created with open=true), with the batch's options",
             responses=problem_responses(
                 *_UPLOAD_ERRORS, _NO_BATCH, _CANCELLED,
                 (409, ProblemCode.BATCH_SEALED, "the batch is sealed, or was never open"),
                 (413, ProblemCode.BATCH_FULL, "the batch would hold more files than max_files_per_open_batch"),
                 (415, ProblemCode.UNSUPPORTED_MEDIA_TYPE, "the body is not multipart/form-data")))
async def add_batch_files(batch_id: BatchIdInSql, request: Request, tenant: TenantDep, settings: SettingsDep,
                          producer: ProducerDep, s3: S3Dep, objects: ObjectsDep, pool: PoolDep,
                          idempotency_key: IdempotencyKey = None) -> JSONResponse:
    if (media_type := _media_type(request)) not in _FORM_TYPES:
        raise Problem(415, ProblemCode.UNSUPPORTED_MEDIA_TYPE,
                      f"the body is {media_type or 'untyped'}: send the files as multipart/form-data")
    key = _checked_key(idempotency_key)
    async with _uploaded(request, settings, FilesAddFields) as (uploads, fields):
        accepted = await run_in_threadpool(add_uploads, batch_id, uploads, fields, tenant=tenant, settings=settings,
                                           producer=producer, s3=s3, objects=objects, pool=pool,
                                           idempotency_key=key)
    return _accepted_response(accepted, settings)


@router.post("/batches/{batch_id}/seal", status_code=202, response_model=SealAccepted, operation_id="seal_batch",
             summary="Seal an open batch (idempotent: 202 when this request sealed it, 200 when it already was); "
                     "it completes once every file has a result",
             responses=problem_responses(_AUTH, _NO_BATCH, _CANCELLED, _INVALID, _UNAVAILABLE))
def seal_batch(batch_id: BatchIdInSql, tenant: TenantDep, settings: SettingsDep, producer: ProducerDep, pool: PoolDep
               ) -> JSONResponse:
    answer, sealed_now = lifecycle.seal_batch(batch_id, tenant=tenant, settings=settings, producer=producer,
                                              pool=pool)
    return JSONResponse(answer.model_dump(mode="json"), status_code=202 if sealed_now else 200,
                        headers={"Location": answer.status_url})


@router.delete("/batches/{batch_id}", status_code=202, response_model=CancelAccepted, operation_id="cancel_batch",
               summary="Cancel a batch (idempotent): chunks not yet started are skipped, their files end cancelled",
               responses=problem_responses(_AUTH, _NO_BATCH, (409, ProblemCode.BATCH_FINISHED,
                                                              "the batch already completed or failed"), _UNAVAILABLE))
def cancel_batch(batch_id: BatchIdInSql, tenant: TenantDep, settings: SettingsDep, producer: ProducerDep,
                 pool: PoolDep) -> CancelAccepted:
    return lifecycle.cancel_batch(batch_id, tenant=tenant, settings=settings, producer=producer, pool=pool)


@router.post("/batches/{batch_id}/cancel", status_code=202, response_model=CancelAccepted,
             operation_id="cancel_batch_post", summary="The same as DELETE /v1/batches/{batch_id}",
             responses=problem_responses(_AUTH, _NO_BATCH, (409, ProblemCode.BATCH_FINISHED,
                                                            "the batch already completed or failed"), _UNAVAILABLE))
def cancel_batch_post(batch_id: BatchIdInSql, tenant: TenantDep, settings: SettingsDep, producer: ProducerDep,
                      pool: PoolDep) -> CancelAccepted:
    return lifecycle.cancel_batch(batch_id, tenant=tenant, settings=settings, producer=producer, pool=pool)


@router.post("/batches/{batch_id}/retry", status_code=202, response_model=RetryAccepted, operation_id="retry_batch",
             summary="Run the failed files of a finished batch again (all, or the given file ids)",
             responses=problem_responses(
                 (400, ProblemCode.INVALID_JSON, "the body is not JSON"), _AUTH, _NO_BATCH,
                 (409, ProblemCode.BATCH_CANCELLED, "the batch was cancelled"),
                 (409, ProblemCode.BATCH_NOT_FINISHED, "the batch (or an earlier retry) is still running"),
                 (409, ProblemCode.NOTHING_TO_RETRY, "the batch has no failed file a worker read"),
                 _INVALID, (422, ProblemCode.FILES_NOT_RETRYABLE, "a given file id is not a failed file of the "
                                                                  "batch; `errors` lists each"), _UNAVAILABLE))
def retry_batch(batch_id: BatchIdInSql, tenant: TenantDep, settings: SettingsDep, producer: ProducerDep, s3: S3Dep,
                pool: PoolDep, body: Annotated[RetryCreate | None, Body()] = None) -> RetryAccepted:
    return lifecycle.retry_batch(batch_id, (body or RetryCreate()).file_ids, tenant=tenant, settings=settings,
                                 producer=producer, s3=s3, pool=pool)


@router.post("/s3-events", status_code=202, response_model=S3EventsAccepted, operation_id="receive_s3_events",
             summary="S3 event notifications (AWS or MinIO Records[]); ObjectCreated objects become batches, "
                     "grouped per tenant over s3_event_window_s",
             responses=problem_responses(
                 (400, ProblemCode.INVALID_JSON, "not JSON, or not an S3 event notification"), _AUTH,
                 (403, ProblemCode.S3_ACCESS_DENIED, "an object outside the tenant's s3_sources; nothing recorded"),
                 _TOO_LARGE, _UNAVAILABLE))
async def receive_s3_events(request: Request, tenant: TenantDep, settings: SettingsDep, pool: PoolDep
                            ) -> S3EventsAccepted:
    body = await request.body()
    return await run_in_threadpool(s3_events.receive, body, tenant=tenant, settings=settings, pool=pool)


# ---- reading the request ------------------------------------------------------------------------------------------

async def _read_form(request: Request, settings: IngestSettings) -> FormData:
    """The multipart form with Starlette's limits raised to the settings (it allows 1,000 files by default)."""
    try:
        return await request.form(max_files=settings.max_files_per_batch + 1, max_fields=_MAX_FORM_FIELDS,
                                  max_part_size=_MAX_FIELD_BYTES)
    except StarletteHTTPException as exc:  # Starlette's 400 for a MultiPartException, which it holds as context
        parse_error = exc.__context__
        if not isinstance(parse_error, MultiPartException):
            raise
        if parse_error.message.startswith("Too many files"):
            raise _too_many_files(f"over {settings.max_files_per_batch}", settings) from exc
        cause = parse_error.__cause__
        reason = f"{parse_error.message.rstrip('.')}: {cause}" if cause else parse_error.message
        if "header size" in str(cause):
            reason += " (a part's headers, e.g. its file name, are over 4 KiB)"
        raise Problem(400, ProblemCode.INVALID_MULTIPART, reason) from exc


_FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


@asynccontextmanager
async def _uploaded(request: Request, settings: IngestSettings, model: type[BaseModel]
                    ) -> AsyncIterator[tuple[list[UploadFile], Any]]:
    """A multipart request's files and its other fields validated as `model`; the form closed afterwards."""
    form = await _read_form(request, settings)
    try:
        uploads = [part for part in form.getlist("files") if isinstance(part, UploadFile)]
        fields = {name: value for name, value in form.multi_items() if name != "files" and isinstance(value, str)}
        yield uploads, _validated(model, fields)
    finally:
        await form.close()


def _parsed(model: type[BaseModel], body: bytes) -> Any:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Problem(400, ProblemCode.INVALID_JSON, f"the body is not JSON: {exc}") from exc
    return _validated(model, data)


def _validated(model: type[BaseModel], data: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [{"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]}
                  for e in exc.errors(include_url=False, include_context=False)]
        raise Problem(422, ProblemCode.INVALID_REQUEST,
                      "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors), errors=errors) from exc


def _checked_key(key: str | None) -> str | None:
    if key is not None and not (0 < len(key) <= _IDEMPOTENCY_KEY_CHARS and key.isascii() and key.isprintable()):
        raise Problem(400, ProblemCode.INVALID_IDEMPOTENCY_KEY,
                      f"Idempotency-Key must be 1..{_IDEMPOTENCY_KEY_CHARS} printable ASCII characters")
    return key


def _accepted_response(accepted: BatchAccepted | FilesAccepted, settings: IngestSettings) -> JSONResponse:
    return JSONResponse(accepted.model_dump(mode="json"), status_code=202,
                        headers={"Location": accepted.status_url, "Retry-After": str(settings.accepted_retry_after_s)})


# ---- submitting: uploads or S3 objects, under an Idempotency-Key ---------------------------------------------------

def submit_uploads(uploads: list[UploadFile], fields: BatchCreateFields, *, tenant: str, settings: IngestSettings,
                   producer: Producer, s3: Minio, objects: ObjectStore, pool: ConnectionPool,
                   idempotency_key: str | None) -> BatchAccepted:
    chunk_size = _check_request(len(uploads), fields, settings)
    if fields.open:
        lifecycle.check_room(0, len(uploads), settings)
    options = _batch_options(fields, settings)
    digests = [_digest(upload.file) for upload in uploads]
    fingerprint = request_fingerprint({"fields": fields.model_dump(mode="json"), "files": _named(uploads, digests)})
    known = _earlier_results(pool, tenant, {d[0] for d in digests}, options) if fields.dedupe else {}
    with _idempotent(pool, tenant, idempotency_key, fingerprint, settings, BatchAccepted) as slot:
        if slot.answer is None:
            batch_id = uuid.uuid4().hex

            def plan(files: list[StoredFile], rejected: list[RejectedFile], duplicates: list[DuplicateFile]):
                return plan_batch(batch_id, tenant, fields.name, files, chunk_size, options, fields.webhook_url,
                                  rejected=rejected, duplicates=duplicates, open=fields.open)
            accept = partial(accept_batch, uploads, digests, batch_id=batch_id, tenant=tenant, strict=fields.strict,
                             known=known, settings=settings, producer=producer, s3=s3, objects=objects)
            if fields.open:  # its row in open_batches commits once the batch is announced
                with lifecycle.transaction(pool) as conn:
                    accepted = accept(events_for=lifecycle.recording_open(conn, plan, chunk_size))
            else:
                accepted = accept(events_for=plan)
            slot.answer = _accepted(accepted.event, accepted.chunks, settings, accepted.refused)
    return slot.answer


def add_uploads(batch_id: str, uploads: list[UploadFile], fields: FilesAddFields, *, tenant: str,
                settings: IngestSettings, producer: Producer, s3: Minio, objects: ObjectStore, pool: ConnectionPool,
                idempotency_key: str | None) -> FilesAccepted:
    """Files added to the tenant's open batch: steps 1-6 with the batch's options, under its lock."""
    _check_file_count(len(uploads), settings)
    digests = [_digest(upload.file) for upload in uploads]
    fingerprint = request_fingerprint({"batch_id": batch_id, "fields": fields.model_dump(mode="json"),
                                       "files": _named(uploads, digests)})
    with _idempotent(pool, tenant, idempotency_key, fingerprint, settings, FilesAccepted) as slot:
        if slot.answer is None:
            with lifecycle.addition(pool, tenant, batch_id, len(uploads), settings) as (options, events_for, part):
                known = _earlier_results(pool, tenant, {d[0] for d in digests}, options) if fields.dedupe else {}
                accepted = accept_batch(uploads, digests, batch_id=batch_id, tenant=tenant, strict=fields.strict,
                                        known=known, settings=settings, producer=producer, s3=s3, objects=objects,
                                        events_for=events_for, manifest=part)
            slot.answer = _files_accepted(accepted, settings)
    return slot.answer


def _named(uploads: list[UploadFile], digests: list[tuple[str, int, bytes]]) -> list[list[str]]:
    """Each file's name and sha256: what an Idempotency-Key binds of the files."""
    return [[_original_name(u, i), d[0]] for i, (u, d) in enumerate(zip(uploads, digests))]


def submit_objects(body: S3BatchCreate, *, tenant: str, settings: IngestSettings, producer: Producer, s3: Minio,
                   pool: ConnectionPool, idempotency_key: str | None) -> BatchAccepted:
    allowed = settings.s3_sources.get(tenant, [])
    locations = [(body.prefix.bucket, body.prefix.prefix)] if body.prefix else [(o.bucket, o.key)
                                                                                for o in body.objects]
    refused = next((f"{b}/{k}" for b, k in locations if not location_allowed(allowed, b, k)), None)
    if refused is not None:
        raise Problem(403, ProblemCode.S3_ACCESS_DENIED, f"s3://{refused} is outside what this API key may read")
    fingerprint = request_fingerprint(body.model_dump(mode="json"))
    with _idempotent(pool, tenant, idempotency_key, fingerprint, settings, BatchAccepted) as slot:
        if slot.answer is None:
            refs = body.objects if body.objects is not None else _listed(s3, body, settings)
            slot.answer = accept_objects(refs, batch_id=uuid.uuid4().hex, file_ids=None, tenant=tenant, fields=body,
                                         settings=settings, producer=producer, s3=s3, pool=pool)
    return slot.answer


def _listed(s3: Minio, body: S3BatchCreate, settings: IngestSettings) -> list[S3ObjectRef]:
    try:
        refs = list_prefix(s3, body.prefix, settings.max_files_per_batch)
    except _STORE_ERRORS as exc:
        raise _nothing_accepted("the object store failed while listing the prefix", exc) from exc
    if not refs:
        raise Problem(422, ProblemCode.NO_FILES, f"no objects under s3://{body.prefix.bucket}/{body.prefix.prefix}")
    return refs


class _Slot:
    answer: BaseModel | None = None


@contextmanager
def _idempotent(pool: ConnectionPool, tenant: str, key: str | None, fingerprint: str, settings: IngestSettings,
                answer_type: type[BaseModel]) -> Iterator[_Slot]:
    """Without a key, a slot to fill. With one: a lock on (tenant, key) held until the answer is stored, so a
    concurrent repeat waits and then answers the same; a stored answer comes back filled in; a stored different
    request is 409. A failed request stores nothing, so its retry runs afresh."""
    slot = _Slot()
    if key is None:
        yield slot
        return
    try:
        with pool.connection() as conn, conn.transaction():
            queries.lock(conn, "idempotency", tenant, key)
            stored = queries.stored_answer(conn, tenant, key, settings.idempotency_ttl_s)
            if stored is not None:
                if stored[0] != fingerprint:
                    raise Problem(409, ProblemCode.IDEMPOTENCY_KEY_REUSED,
                                  "this Idempotency-Key was used for a different request; use a new key")
                slot.answer = answer_type.model_validate(stored[1])
                log.info("idempotent repeat answered", extra={"batch_id": slot.answer.batch_id, "tenant": tenant})
                yield slot
                return
            yield slot
            queries.store_answer(conn, tenant, key, fingerprint, slot.answer.model_dump(mode="json"))
    except psycopg.OperationalError as exc:
        raise _nothing_accepted("Postgres (which keeps Idempotency-Keys) is unavailable", exc) from exc


def _earlier_results(pool: ConnectionPool, tenant: str, sha256s: set[str], options: BatchOptions) -> dict[str, str]:
    """Dedupe is an optimization: with Postgres away, every file is read."""
    try:
        with pool.connection(timeout=5) as conn:
            return queries.earlier_results(conn, tenant, sha256s, options)
    except (psycopg.OperationalError, TimeoutError) as exc:
        log.warning("dedupe lookup failed; every file is read", extra={"tenant": tenant, "error": str(exc)})
        return {}


# ---- accepting: steps 1-6 -----------------------------------------------------------------------------------------

@dataclass
class Accepted:
    """What accept_batch announced, and each refused file with its index in the request."""

    event: BatchCreated | BatchFilesAdded
    chunks: list[ChunkRequested]
    refused: list[tuple[int, RejectedFile]]
    file_ids: list[str]  # every file's, in request order


def accept_batch(
    uploads: list[UploadFile],
    digests: list[tuple[str, int, bytes]],
    *,
    batch_id: str,
    tenant: str,
    strict: bool,
    known: dict[str, str],
    settings: IngestSettings,
    producer: Producer,
    s3: Minio,
    objects: ObjectStore,
    events_for: lifecycle.EventsFor,
    manifest: int = 0,
) -> Accepted:
    """Steps 1 and 3-5 of the module docstring, for a new batch or an addition (events_for plans which; manifest
    is the manifest part the stored files are listed in). Raises Problem; on any failure nothing stays stored."""
    # 1. Sort the files: refused (failed unread), duplicates (linked), the rest stored and read.
    verdicts = _check_files(uploads, digests, settings, strict)
    rejected = {i: v for i, v in enumerate(verdicts) if isinstance(v, FileRejected)}
    refused = [RejectedFile(file_id=uuid.uuid4().hex, original_name=_original_name(uploads[i], i), size=digests[i][1],
                            sha256=digests[i][0], error_code=exc.problem, error=str(exc)) for i, exc in rejected.items()]
    linked = [i for i in range(len(uploads)) if i not in rejected and digests[i][0] in known]
    duplicates = [DuplicateFile(file_id=uuid.uuid4().hex, original_name=_original_name(uploads[i], i),
                                size=digests[i][1], sha256=digests[i][0], content_type=verdicts[i],
                                duplicate_of=known[digests[i][0]]) for i in linked]
    read = [i for i in range(len(uploads)) if i not in rejected and digests[i][0] not in known]
    uploads, content_types = [uploads[i] for i in read], [verdicts[i] for i in read]

    prefix = f"{tenant}/{batch_id}"
    with _deleted_on_failure(s3, settings.s3_bucket, prefix) as stored_keys:
        # 3. Store the files.
        try:
            stored = _store_files(objects, settings, prefix, uploads, content_types, stored_keys)
        except _STORE_ERRORS as exc:
            raise _nothing_accepted("the object store failed while storing the files", exc) from exc

        # 4. Announce the batch. (5. Any exception out of this block deletes what step 3 stored.)
        event, chunks = events_for(stored, refused, duplicates)
        _record_and_announce(s3, producer, settings, event, chunks, stored, stored_keys, manifest)

    # 6. Accepted.
    file_ids = dict(zip([*rejected, *linked, *read], [f.file_id for f in (*refused, *duplicates, *stored)]))
    return Accepted(event, chunks, list(zip(rejected, refused)), [file_ids[i] for i in sorted(file_ids)])


def accept_objects(refs: list[S3ObjectRef], *, batch_id: str, file_ids: list[str] | None, tenant: str,
                   fields: BatchOptionsFields, settings: IngestSettings, producer: Producer, s3: Minio,
                   pool: ConnectionPool, all_refused_is_error: bool = True) -> BatchAccepted:
    """A batch of objects already in S3 (verified, hashed, typed; never copied). file_ids: given by a caller that
    must get the same ids when it repeats itself (S3 events), else new ones. S3 events keep a batch whose every
    object was refused (all_refused_is_error=False): their notifications were accepted, so they end failed."""
    chunk_size = _check_request(len(refs), fields, settings)
    options = _batch_options(fields, settings)
    file_ids = file_ids or [uuid.uuid4().hex for _ in refs]
    try:
        verdicts = verify_objects(s3, refs, file_ids, max_bytes=settings.max_file_bytes,
                                  concurrency=settings.s3_read_concurrency)
    except _STORE_ERRORS as exc:
        raise _nothing_accepted("the object store failed while reading the objects", exc) from exc
    refused = [(i, v) for i, v in enumerate(verdicts) if isinstance(v, RejectedFile)]
    if refused and (fields.strict or (all_refused_is_error and len(refused) == len(refs))):
        raise _files_problem([(i, refs[i].key, v.error_code, v.error) for i, v in refused])
    good = [v for v in verdicts if isinstance(v, StoredFile)]
    known = _earlier_results(pool, tenant, {f.sha256 for f in good}, options) if fields.dedupe else {}
    duplicates = [DuplicateFile(file_id=f.file_id, original_name=f.original_name, size=f.size, sha256=f.sha256,
                                content_type=f.content_type, duplicate_of=known[f.sha256])
                  for f in good if f.sha256 in known]
    read = [f for f in good if f.sha256 not in known]
    with _deleted_on_failure(s3, settings.s3_bucket, f"{tenant}/{batch_id}") as stored_keys:
        created, chunks = plan_batch(batch_id, tenant, fields.name, read, chunk_size, options, fields.webhook_url,
                                     rejected=[v for _, v in refused], duplicates=duplicates)
        _record_and_announce(s3, producer, settings, created, chunks, read, stored_keys)
    return _accepted(created, chunks, settings, refused)


def _record_and_announce(s3: Minio, producer: Producer, settings: IngestSettings,
                         event: BatchCreated | BatchFilesAdded, chunks: list[ChunkRequested],
                         stored: list[StoredFile], stored_keys: list[str], manifest: int = 0) -> None:
    """The manifest part (what a retry runs again), then the events; 503 if either fails."""
    key = manifest_key(event.tenant, event.batch_id, manifest)
    stored_keys.append(key)
    data = json.dumps([f.model_dump(mode="json") for f in stored]).encode()
    try:
        s3.put_object(settings.s3_bucket, key, io.BytesIO(data), len(data), content_type="application/json")
    except _STORE_ERRORS as exc:
        raise _nothing_accepted("the object store failed while storing the batch manifest", exc) from exc
    try:
        _announce(producer, settings, event, chunks)
    except (DeliveryFailed, KafkaException) as exc:
        raise _nothing_accepted("Kafka did not acknowledge the batch", exc) from exc


def _accepted(created: BatchCreated, chunks: list[ChunkRequested], settings: IngestSettings,
              refused: list[tuple[int, RejectedFile]]) -> BatchAccepted:
    BATCHES_ACCEPTED.inc()
    _count_files(created.total_files, created.duplicates, refused)
    log.info("batch accepted", extra={"batch_id": created.batch_id, "tenant": created.tenant,
                                      "files": created.total_files, "chunks": len(chunks), "refused": len(refused),
                                      "deduplicated": len(created.duplicates), "open": created.open})
    return BatchAccepted(
        batch_id=created.batch_id, status=BatchStatus.PENDING, total_files=created.total_files,
        total_chunks=len(chunks), status_url=status_url(settings.status_api_url, created.batch_id),
        deduplicated=len(created.duplicates), rejected=_rejected_public(refused),
    )


def _files_accepted(accepted: Accepted, settings: IngestSettings) -> FilesAccepted:
    added = accepted.event
    _count_files(len(accepted.file_ids), added.duplicates, accepted.refused)
    log.info("files added", extra={"batch_id": added.batch_id, "tenant": added.tenant,
                                   "files": len(accepted.file_ids), "chunks": len(accepted.chunks),
                                   "total_files": added.total_files, "refused": len(accepted.refused),
                                   "deduplicated": len(added.duplicates)})
    return FilesAccepted(
        batch_id=added.batch_id, file_ids=accepted.file_ids, added_chunks=len(accepted.chunks),
        total_files=added.total_files, total_chunks=added.total_chunks,
        status_url=status_url(settings.status_api_url, added.batch_id), deduplicated=len(added.duplicates),
        rejected=_rejected_public(accepted.refused),
    )


def _count_files(files: int, duplicates: list[DuplicateFile], refused: list[tuple[int, RejectedFile]]) -> None:
    FILES_ACCEPTED.inc(files - len(refused) - len(duplicates))
    FILES_DEDUPLICATED.inc(len(duplicates))
    for _, r in refused:
        FILES_REFUSED.labels(r.error_code.value).inc()


def _rejected_public(refused: list[tuple[int, RejectedFile]]) -> list[RejectedFilePublic]:
    return [RejectedFilePublic(index=i, file=r.original_name, file_id=r.file_id, code=r.error_code, reason=r.error)
            for i, r in refused]


# ---- step 1: checks ----------------------------------------------------------------------------------------------

def _batch_options(fields: BatchOptionsFields, settings: IngestSettings) -> BatchOptions:
    problem = languages_problem(fields.languages, settings.ocr_languages)
    errors = [] if problem is None else [{"loc": ["body", "languages"], "msg": problem, "type": "value_error"}]
    try:
        options = BatchOptions(languages=fields.languages, pdf_dpi=fields.pdf_dpi, embeddings=fields.embeddings,
                               min_confidence=fields.min_confidence)
    except ValidationError as exc:
        errors += [{"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]}
                   for e in exc.errors(include_url=False, include_context=False)]
    if errors:
        raise Problem(422, ProblemCode.INVALID_REQUEST, "; ".join(f"{e['loc'][-1]}: {e['msg']}" for e in errors),
                      errors=errors)
    return options


def _check_request(file_count: int, fields: BatchOptionsFields, settings: IngestSettings) -> int:
    """The chunk size to use, once the request as a whole may go on."""
    _check_file_count(file_count, settings)
    chunk_size = fields.chunk_size or min(settings.default_chunk_size, settings.max_chunk_size)
    if chunk_size > settings.max_chunk_size:
        raise Problem(422, ProblemCode.INVALID_REQUEST, f"chunk_size: at most {settings.max_chunk_size}",
                      errors=[{"loc": ["body", "chunk_size"], "type": "less_than_equal",
                               "msg": f"Input should be less than or equal to {settings.max_chunk_size}"}])
    return chunk_size


def _check_file_count(file_count: int, settings: IngestSettings) -> None:
    if not file_count:
        raise Problem(422, ProblemCode.NO_FILES, "no files: send one or more 'files' parts")
    if file_count > settings.max_files_per_batch:
        raise _too_many_files(str(file_count), settings)


def _too_many_files(count: str, settings: IngestSettings) -> Problem:
    return Problem(413, ProblemCode.TOO_MANY_FILES, f"{count} files; a request holds at most "
                   f"{settings.max_files_per_batch}: split the upload into several batches, or create an open "
                   "batch (open=true) and add the rest to it")


def _check_files(uploads: list[UploadFile], digests: list[tuple[str, int, bytes]], settings: IngestSettings,
                 strict: bool) -> list[str | FileRejected]:
    """Each file's sniffed content type, or why it cannot enter. Strict, or every file refused: Problem."""
    verdicts: list[str | FileRejected] = []
    for index, (upload, (_sha256, size, head)) in enumerate(zip(uploads, digests)):
        try:
            verdicts.append(accepted_content_type(size, head, max_bytes=settings.max_file_bytes,
                                                  name=_original_name(upload, index)))
        except FileRejected as exc:
            verdicts.append(exc)
    rejected = [(i, _original_name(uploads[i], i), v.problem, str(v)) for i, v in enumerate(verdicts)
                if isinstance(v, FileRejected)]
    if rejected and (strict or len(rejected) == len(uploads)):
        raise _files_problem(rejected)
    return verdicts


def _files_problem(rejected: list[tuple[int, str, Any, str]]) -> Problem:
    """Every refused file, and why: 415 if each is of an unsupported type, else 422. Nothing is stored."""
    errors = [{"index": i, "file": name[:300], "code": str(code), "reason": reason} for i, name, code, reason in rejected]
    only_types = all(e["code"] == "unsupported_type" for e in errors)
    what = "of an unsupported type" if only_types else "refused"
    return Problem(415 if only_types else 422,
                   ProblemCode.UNSUPPORTED_TYPE if only_types else ProblemCode.INVALID_FILES,
                   f"{len(errors)} file(s) {what}; nothing was accepted (each is listed in errors)", errors=errors)


def _digest(file: BinaryIO) -> tuple[str, int, bytes]:
    """sha256, size and first bytes of a spooled upload, read once; leaves it rewound."""
    file.seek(0)
    digest, head, size = hashlib.sha256(), file.read(SNIFF_BYTES), 0
    data = head
    while data:
        digest.update(data)
        size += len(data)
        data = file.read(1024 * 1024)
    file.seek(0)
    return digest.hexdigest(), size, head


def _original_name(upload: UploadFile, index: int) -> str:
    return upload.filename or f"file-{index}"


# ---- steps 3-5: store, announce, or undo --------------------------------------------------------------------------

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
    if not uploads:
        return []
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


def _announce(producer: Producer, settings: IngestSettings, event: BatchCreated | BatchFilesAdded,
              chunks: list[ChunkRequested]) -> None:
    """BatchCreated (or BatchFilesAdded) first, then every chunk, in one flush. A new batch's 'pending' progress
    snapshot goes too, so the status URL in the 202 answers at once."""
    records = [message_record(settings.topic_batch_events, event.batch_id, event)]
    records += [message_record(settings.topic_ocr_chunks, chunk.chunk_id, chunk) for chunk in chunks]
    if isinstance(event, BatchCreated):
        records.append(message_record(settings.topic_batch_progress, event.batch_id,
                                      initial_progress(event, len(chunks))))
    try:
        produce_and_flush(producer, records, timeout=settings.kafka_delivery_timeout_s + _FLUSH_GRACE_S,
                          spread={settings.topic_ocr_chunks})
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


def _nothing_accepted(what: str, exc: BaseException) -> Problem:
    return Problem(503, ProblemCode.UNAVAILABLE, f"nothing was accepted: {what} ({exc}); retry the whole batch later")


# ---- readiness ----------------------------------------------------------------------------------------------------

def is_ready(app: FastAPI) -> bool:
    """Kafka answers a metadata request and the bucket exists; the answer is kept a few seconds."""
    checked_at, ready = getattr(app.state, "readiness", (float("-inf"), False))
    if time.monotonic() - checked_at > _READY_TTL_S:
        try:
            app.state.producer.list_topics(app.state.settings.topic_ocr_chunks, timeout=2)  # one topic's: cheap
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
        pool = build_pool(settings, name="ingest", max_size=settings.db_pool_size)
        app.state.settings, app.state.s3, app.state.producer, app.state.pool = settings, s3, producer, pool
        app.state.objects = ObjectStore(settings)
        grouper = s3_events.EventGrouper(settings, pool, lambda refs, batch_id, file_ids, tenant: accept_objects(
            refs, batch_id=batch_id, file_ids=file_ids, tenant=tenant, fields=S3BatchCreate(objects=refs),
            settings=settings, producer=producer, s3=s3, pool=pool, all_refused_is_error=False))
        grouper.start()
        repair = LostResultRepair(settings, pool, s3, producer)
        repair.start()
        try:
            yield
        finally:
            repair.stop(timeout_s=35)  # past a Kafka probe's own timeout
            grouper.stop()
            # Every request flushed its own records; this only drains delivery reports.
            await run_in_threadpool(producer.flush, settings.kafka_delivery_timeout_s)
            pool.close()

    app = FastAPI(title="ocrstream ingest", version="0.2.0", lifespan=lifespan,
                  description="Accepts batches of images/PDFs for OCR, cancels and retries them; follow them at the "
                              "status API. Every error is RFC 9457 problem details with a stable `code`: "
                              + ", ".join(f"`{c.value}`" for c in ProblemCode) + ".")
    app.include_router(router)
    app.include_router(probe_router(is_ready))
    app.add_middleware(RequestGate, api_keys=settings.api_keys, max_request_bytes=settings.max_request_bytes)
    # Outside the gate: its refusals are counted and logged, and a body cut off at the limit as the 413 it is.
    app.add_middleware(RequestMetrics)
    if settings.cors_origins:  # the console uploads from the status API's origin; outermost, so preflights pass
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
                           expose_headers=["Location", "Retry-After"], max_age=600)
    install_problem_handlers(app)
    return app
