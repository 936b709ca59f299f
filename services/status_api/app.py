"""status_api ★: batch status, live progress (SSE, long poll) from the progress view; batch and file listings,
per-file results, hybrid search and webhook deliveries from Postgres (read-only: the persister applies the
migrations); the files' bytes and page images from the object store; the web console under /ui.

create_app builds nothing at import; the lifespan builds every client (view, subscriptions, materializer, pool,
embedder), so each test gets its own. Routes are thin: the view, live and queries modules do the work.
"""
import asyncio
import logging
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager
from typing import Annotated

import urllib3
from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request, status
from fastapi.responses import PlainTextResponse, Response, StreamingResponse
from minio import Minio
from minio.error import MinioException, S3Error
from psycopg import Connection, OperationalError
from psycopg_pool import ConnectionPool, PoolTimeout
from pydantic import AwareDatetime
from sse_starlette import EventSourceResponse, ServerSentEvent

from common.db import build_pool
from common.embedding import Embedder, build_embedder
from common.http import NO_NUL, BatchIdInSql, FileIdInSql, TenantDep, probe_router
from common.observability import RequestMetrics
from common.problems import Problem, install_problem_handlers
from common.storage import build_s3_client, get_object_bytes
from schemas.api import (
    BatchesPublic, BatchPublic, FileResultPublic, FileResultsPublic, FileSummariesPublic, ProblemCode, ProblemDetail,
    SearchResults,
    WebhookDeliveriesPublic,
)
from schemas.base import INT32_MAX, utc_now
from schemas.progress import BatchProgress, BatchStatus
from schemas.results import FileStatus
from services.status_api import console, queries
from services.status_api.live import progress_stream, wait_for_newer
from services.status_api.materializer import ProgressMaterializer
from services.status_api.rendering import PageNotRenderable, page_png
from services.status_api.settings import (
    LIST_PAGE_SIZE, LIST_PAGE_SIZE_MAX, LONG_POLL_MAX_SECONDS, RESULTS_PAGE_SIZE_MAX, THUMBNAIL_WIDTH_MAX,
    StatusSettings,
)
from services.status_api.subscriptions import ProgressSubscriptions
from services.status_api.view import ProgressView, batch_public

__all__ = ["create_app"]

log = logging.getLogger(__name__)

_READY_PROBE_SECONDS = 2.0  # /readyz answers quickly even when Postgres does not


def create_app(settings: StatusSettings) -> FastAPI:
    app = FastAPI(title="ocrstream status API", version="0.1.0", lifespan=_lifespan)
    app.state.settings = settings  # read by common.http.tenant_for_request
    app.include_router(probe_router(_is_ready))
    app.include_router(router)
    console.mount(app, settings)
    app.add_middleware(RequestMetrics)
    install_problem_handlers(app, database_errors=(PoolTimeout, OperationalError))
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: StatusSettings = app.state.settings
    with ExitStack() as stack:
        app.state.subscriptions = ProgressSubscriptions(asyncio.get_running_loop(), settings.sse_queue_size)
        app.state.view = ProgressView(on_change=app.state.subscriptions.publish)
        app.state.materializer = ProgressMaterializer(settings, app.state.view)
        app.state.materializer.start()
        stack.callback(app.state.materializer.stop)
        app.state.pool = build_pool(settings, name="status_api")
        stack.callback(app.state.pool.close)
        app.state.s3 = build_s3_client(settings)  # no connection until a file's bytes are asked for
        app.state.embedder = build_embedder(settings.embedder)
        log.info("status api started", extra={"embedder": app.state.embedder.model_name,
                                               "topic": settings.topic_batch_progress})
        yield
    log.info("status api stopped")


def _is_ready(app: FastAPI) -> bool:
    """Ready = the view has caught up with the topic AND Postgres answers."""
    if not app.state.materializer.ready:
        return False
    try:
        with app.state.pool.connection(timeout=_READY_PROBE_SECONDS) as conn:
            conn.execute("SELECT 1")
        return True
    except (PoolTimeout, OperationalError):
        return False


# --- dependencies: route signatures read as nouns ---------------------------------------------------------

def _settings(request: Request) -> StatusSettings:
    return request.app.state.settings


async def _loaded_view(request: Request) -> ProgressView:
    """The progress view, once it has caught up: before that it may hold old versions, so answer 503."""
    if not request.app.state.materializer.ready:
        raise Problem(status.HTTP_503_SERVICE_UNAVAILABLE, ProblemCode.UNAVAILABLE,
                      "status view is still loading, retry shortly", headers={"Retry-After": "2"})
    return request.app.state.view


def _connection(request: Request) -> Iterator[Connection]:
    settings: StatusSettings = request.app.state.settings
    pool: ConnectionPool = request.app.state.pool
    with pool.connection(timeout=settings.database_wait_seconds) as conn:
        yield conn


def _embedder(request: Request) -> Embedder:
    return request.app.state.embedder


async def _subscriptions(request: Request) -> ProgressSubscriptions:
    return request.app.state.subscriptions


def _s3(request: Request) -> Minio:
    return request.app.state.s3


SettingsDep = Annotated[StatusSettings, Depends(_settings)]
ViewDep = Annotated[ProgressView, Depends(_loaded_view)]
ConnectionDep = Annotated[Connection, Depends(_connection)]
EmbedderDep = Annotated[Embedder, Depends(_embedder)]
SubscriptionsDep = Annotated[ProgressSubscriptions, Depends(_subscriptions)]
S3Dep = Annotated[Minio, Depends(_s3)]

_UNAUTHORIZED = {401: {"model": ProblemDetail, "description": "missing or unknown API key"}}
_NOT_FOUND = {404: {"model": ProblemDetail, "description": "no such batch for this API key's tenant"}}
_UNAVAILABLE = {503: {"model": ProblemDetail, "description": "still loading, or the database is unavailable"}}
_BAD_CURSOR = {400: {"model": ProblemDetail, "description": "invalid_cursor: not a next_cursor this API answered"}}
_FILE_NOT_FOUND = {404: {"model": ProblemDetail, "description": (
    "batch_not_found, or file_not_found: no such file in the tenant's batch, or its result is not stored yet")}}
_STORE_UNAVAILABLE = {503: {"model": ProblemDetail, "description": "the database or the object store is unavailable"}}


def _batch_not_found(batch_id: str) -> Problem:
    # The same answer for "unknown" and "another tenant's": never reveal that another tenant's batch exists.
    return Problem(status.HTTP_404_NOT_FOUND, ProblemCode.BATCH_NOT_FOUND, f"batch {batch_id} not found")


def _persisted(request: Request, conn: Connection, tenant: str, batch_id: str) -> bool:
    """True when the tenant's batch has rows in Postgres; False when it is only accepted so far (in the view);
    404 when the tenant has no such batch."""
    if queries.batch_exists_for_tenant(conn, tenant, batch_id):
        return True
    accepted = request.app.state.view.get(batch_id)
    if accepted is None or accepted.tenant != tenant:
        raise _batch_not_found(batch_id)
    return False


def _file_not_found(request: Request, conn: Connection, tenant: str, batch_id: str, file_id: str) -> Problem:
    _persisted(request, conn, tenant, batch_id)  # an unknown batch is named as such
    return Problem(status.HTTP_404_NOT_FOUND, ProblemCode.FILE_NOT_FOUND,
                    f"file {file_id} not found in batch {batch_id} (a file is listed once its result is stored)")


def _visible(view: ProgressView, tenant: str, batch_id: str) -> BatchProgress:
    progress = view.get(batch_id)
    if progress is None or progress.tenant != tenant:
        raise _batch_not_found(batch_id)
    return progress


# --- routes -------------------------------------------------------------------------------------------------

router = APIRouter(prefix="/v1", tags=["status"])


@router.get("/batches/{batch_id}", response_model=BatchPublic,
            responses=_UNAUTHORIZED | _NOT_FOUND | _UNAVAILABLE)
async def get_batch(
    batch_id: str,
    tenant: TenantDep,
    view: ViewDep,
    subscriptions: SubscriptionsDep,
    wait: Annotated[float | None, Query(gt=0, le=LONG_POLL_MAX_SECONDS, description=(
        "Long poll: hold the answer up to this many seconds until the version exceeds after_version"))] = None,
    after_version: Annotated[int | None, Query(ge=0, description=(
        "With wait: the version the client holds; default the current one (wait for any change)"))] = None,
) -> Response:
    progress = _visible(view, tenant, batch_id)
    if wait is not None:
        held = progress.version if after_version is None else after_version
        progress = await wait_for_newer(view, subscriptions, batch_id, held, wait) or progress
    # Serialized here: FastAPI would validate the model it was just built from again (the hottest route).
    return Response(batch_public(progress, utc_now()).model_dump_json(by_alias=True), media_type="application/json")


@router.get("/batches/{batch_id}/events", response_class=EventSourceResponse,
            responses=_UNAUTHORIZED | _NOT_FOUND | _UNAVAILABLE | {200: {
                "content": {"text/event-stream": {}},
                "description": "Server-Sent Events: one `progress` event per new version (id = version, data = "
                               "the status body); ends after the terminal one"}})
async def batch_events(
    batch_id: str,
    tenant: TenantDep,
    view: ViewDep,
    subscriptions: SubscriptionsDep,
    settings: SettingsDep,
    last_event_id: Annotated[int | None, Header(alias="Last-Event-ID", ge=0, description=(
        "Resume: only versions above this one are sent (browsers send it on reconnect)"))] = None,
) -> EventSourceResponse:
    _visible(view, tenant, batch_id)

    async def events():
        async for progress in progress_stream(view, subscriptions, batch_id, last_event_id or -1):
            yield ServerSentEvent(data=batch_public(progress, utc_now()).model_dump_json(), event="progress",
                                  id=str(progress.version))

    return EventSourceResponse(events(), ping=settings.sse_ping_seconds)


@router.get("/batches/{batch_id}/webhook-deliveries", response_model=WebhookDeliveriesPublic,
            responses=_UNAUTHORIZED | _NOT_FOUND | _UNAVAILABLE)
def get_webhook_deliveries(batch_id: BatchIdInSql, tenant: TenantDep, conn: ConnectionDep, request: Request
                           ) -> WebhookDeliveriesPublic:
    """Every notification owed for the batch, with each attempt's answer; empty while none is due."""
    deliveries = queries.webhook_deliveries(conn, tenant, batch_id)
    if not deliveries and not queries.batch_exists_for_tenant(conn, tenant, batch_id):
        _visible(request.app.state.view, tenant, batch_id)  # accepted but not yet persisted: empty, not 404
    return WebhookDeliveriesPublic(batch_id=batch_id, data=deliveries)


@router.get("/batches/{batch_id}/results", response_model=FileResultsPublic,
            responses=_UNAUTHORIZED | _NOT_FOUND | _UNAVAILABLE)
def get_batch_results(
    request: Request,
    batch_id: BatchIdInSql,
    tenant: TenantDep,
    conn: ConnectionDep,
    settings: SettingsDep,
    cursor: Annotated[str | None, Query(max_length=512, pattern=NO_NUL, description="next_cursor of the previous page")] = None,
    limit: Annotated[int | None, Query(ge=1, le=RESULTS_PAGE_SIZE_MAX, description="files per page")] = None,
    include_words: Annotated[bool, Query(description="include every word with its box and confidence")] = False,
) -> FileResultsPublic:
    if not _persisted(request, conn, tenant, batch_id):  # accepted, but the persister has not written it yet
        return FileResultsPublic(batch_id=batch_id, data=[], next_cursor=None)
    files, next_cursor = queries.file_results(
        conn, tenant, batch_id, cursor, limit or settings.results_page_size, include_words)
    return FileResultsPublic(batch_id=batch_id, data=files, next_cursor=next_cursor)


@router.get("/batches", response_model=BatchesPublic, responses=_UNAUTHORIZED | _BAD_CURSOR | _UNAVAILABLE)
def list_batches(
    tenant: TenantDep,
    conn: ConnectionDep,
    limit: Annotated[int, Query(ge=1, le=LIST_PAGE_SIZE_MAX, description="batches per page")] = LIST_PAGE_SIZE,
    cursor: Annotated[str | None, Query(max_length=512, pattern=NO_NUL, description="next_cursor of the previous page")] = None,
    batch_status: Annotated[BatchStatus | None, Query(alias="status", description="only batches in this status")] = None,
    created_after: Annotated[AwareDatetime | None, Query(description=(
        "only batches accepted after this instant (ISO 8601 with a time zone)"))] = None,
) -> BatchesPublic:
    """The caller's batches, newest first, with their counts as Postgres holds them."""
    try:
        after = queries.BatchCursor.decode(cursor) if cursor else None
    except ValueError as exc:
        raise Problem(status.HTTP_400_BAD_REQUEST, ProblemCode.INVALID_CURSOR, str(exc)) from exc
    page, next_cursor = queries.batches(conn, tenant, limit=limit, cursor=after, status=batch_status,
                                        created_after=created_after)
    now = utc_now()
    return BatchesPublic(data=[batch_public(p, now) for p in page],
                         next_cursor=next_cursor.encode() if next_cursor else None)


@router.get("/batches/{batch_id}/files", response_model=FileSummariesPublic,
            responses=_UNAUTHORIZED | _NOT_FOUND | _UNAVAILABLE)
def list_files(
    request: Request,
    batch_id: BatchIdInSql,
    tenant: TenantDep,
    conn: ConnectionDep,
    cursor: Annotated[str | None, Query(max_length=512, pattern=NO_NUL, description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=LIST_PAGE_SIZE_MAX, description="files per page")] = LIST_PAGE_SIZE,
    file_status: Annotated[FileStatus | None, Query(alias="status", description="only files in this status")] = None,
    name: Annotated[str | None, Query(max_length=200, pattern=NO_NUL, description="only files whose name contains this, any case")
                    ] = None,
) -> FileSummariesPublic:
    """The batch's stored files by file_id, without their text: what a table of a large batch pages through."""
    if not _persisted(request, conn, tenant, batch_id):
        return FileSummariesPublic(batch_id=batch_id, data=[], next_cursor=None)
    files, next_cursor = queries.file_summaries(conn, tenant, batch_id, cursor=cursor, limit=limit,
                                                status=file_status, name=name or None)
    return FileSummariesPublic(batch_id=batch_id, data=files, next_cursor=next_cursor)


@router.get("/batches/{batch_id}/files/{file_id}", response_model=FileResultPublic,
            responses=_UNAUTHORIZED | _FILE_NOT_FOUND | _UNAVAILABLE | {200: {
                "content": {"application/json": {}, "text/plain": {}},
                "description": "The file's result with every page's words and boxes; with `Accept: text/plain`, "
                               "its text alone (pages separated by a form feed)"}})
def get_file(
    request: Request,
    batch_id: BatchIdInSql,
    file_id: FileIdInSql,
    tenant: TenantDep,
    conn: ConnectionDep,
    accept: Annotated[str | None, Header(description="text/plain for the text alone")] = None,
) -> FileResultPublic | PlainTextResponse:
    result = queries.file_result(conn, tenant, batch_id, file_id)
    if result is None:
        raise _file_not_found(request, conn, tenant, batch_id, file_id)
    if prefers_text(accept):
        return PlainTextResponse(result.text)
    return result


@router.get("/batches/{batch_id}/files/{file_id}/content", response_class=StreamingResponse,
            responses=_UNAUTHORIZED | _FILE_NOT_FOUND | _STORE_UNAVAILABLE | {200: {
                "content": {"application/octet-stream": {}},
                "description": "The file as uploaded, with its content type"}})
def get_file_content(request: Request, batch_id: BatchIdInSql, file_id: FileIdInSql, tenant: TenantDep, conn: ConnectionDep,
                     settings: SettingsDep, s3: S3Dep) -> StreamingResponse:
    info = queries.stored_file(conn, tenant, batch_id, file_id)
    if info is None:
        raise _file_not_found(request, conn, tenant, batch_id, file_id)
    with _object_store_errors(batch_id, file_id):
        stored = s3.get_object(settings.s3_bucket, _object_key(tenant, batch_id, file_id))

    def body() -> Iterator[bytes]:
        try:
            yield from stored.stream(64 * 1024)
        finally:
            stored.close()
            stored.release_conn()

    return StreamingResponse(body(), media_type=info.content_type, headers={
        "Content-Length": stored.headers.get("Content-Length", str(info.size)),
        "Content-Disposition": f"inline; filename*=UTF-8''{urllib.parse.quote(info.original_name)}",
        "Cache-Control": "private, max-age=3600",  # a file_id's bytes never change
        "X-Content-Type-Options": "nosniff",
    })


@router.get("/batches/{batch_id}/files/{file_id}/pages/{page_number}/image", response_class=Response,
            responses=_UNAUTHORIZED | _FILE_NOT_FOUND | _STORE_UNAVAILABLE | {
                200: {"content": {"image/png": {}}, "description": "The page as the OCR read it; X-Page-Width and "
                      "X-Page-Height give the page's size in the pixels its word boxes use"},
                422: {"model": ProblemDetail, "description": "page_not_renderable: the stored bytes cannot be drawn"}})
def get_page_image(
    request: Request,
    batch_id: BatchIdInSql,
    file_id: FileIdInSql,
    page_number: Annotated[int, Path(ge=1, le=INT32_MAX)],
    tenant: TenantDep,
    conn: ConnectionDep,
    settings: SettingsDep,
    s3: S3Dep,
    width: Annotated[int | None, Query(ge=16, le=THUMBNAIL_WIDTH_MAX, description=(
        "scale down to this many pixels wide (a thumbnail); default the page's own size"))] = None,
) -> Response:
    """A PDF page rendered, a TIFF page, or the image upright, at the pixel size its words' boxes refer to."""
    info = queries.stored_file(conn, tenant, batch_id, file_id)
    if info is None:
        raise _file_not_found(request, conn, tenant, batch_id, file_id)
    size = queries.page_size(conn, tenant, file_id, page_number)
    if size is None:
        raise Problem(status.HTTP_404_NOT_FOUND, ProblemCode.PAGE_NOT_FOUND,
                       f"file {file_id} has {info.page_count} page(s) with results; there is no page {page_number}")
    with _object_store_errors(batch_id, file_id):
        data = get_object_bytes(s3, settings.s3_bucket, _object_key(tenant, batch_id, file_id))
    try:
        png = page_png(data, page_number, size, width)
    except PageNotRenderable as exc:
        raise Problem(status.HTTP_422_UNPROCESSABLE_CONTENT, ProblemCode.PAGE_NOT_RENDERABLE, str(exc)) from exc
    # The page's own size, which the words' boxes refer to, also when the image is a scaled-down thumbnail.
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600",
                                                          "X-Page-Width": str(size[0]), "X-Page-Height": str(size[1])})


def prefers_text(accept: str | None) -> bool:
    """Whether an Accept header asks for text/plain rather than JSON: a higher q than application/json, or, when
    JSON is not named, text/plain named with at least the q of */*."""
    ranks: dict[str, float] = {}
    for item in (accept or "").split(","):
        media, *params = [part.strip() for part in item.split(";")]
        q = next((p.removeprefix("q=") for p in params if p.startswith("q=")), "1")
        try:
            ranks[media.lower()] = float(q)
        except ValueError:
            continue
    text = ranks.get("text/plain", 0.0)
    if "application/json" in ranks:
        return text > ranks["application/json"]
    return text > 0 and text >= ranks.get("*/*", 0.0)


def _object_key(tenant: str, batch_id: str, file_id: str) -> str:
    # Where ingest stores an upload (services/ingest/app.py: {tenant}/{batch_id}/{file_id} in the bucket).
    return f"{tenant}/{batch_id}/{file_id}"


@contextmanager
def _object_store_errors(batch_id: str, file_id: str) -> Iterator[None]:
    """Object-store failures as answers: a missing object 404 (content_missing), anything else 503."""
    try:
        yield
    except S3Error as exc:
        if exc.code not in ("NoSuchKey", "NoSuchBucket"):
            raise _store_unavailable(batch_id, file_id, exc) from exc
        raise Problem(status.HTTP_404_NOT_FOUND, ProblemCode.CONTENT_MISSING,
                       f"file {file_id}'s bytes are no longer in the object store") from exc
    except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise _store_unavailable(batch_id, file_id, exc) from exc


def _store_unavailable(batch_id: str, file_id: str, exc: Exception) -> Problem:
    log.warning("object store unavailable", extra={"batch_id": batch_id, "file_id": file_id, "error": str(exc)})
    return Problem(status.HTTP_503_SERVICE_UNAVAILABLE, ProblemCode.OBJECT_STORE_UNAVAILABLE,
                    "the object store is unavailable, retry shortly", headers={"Retry-After": "5"})


@router.get("/search", response_model=SearchResults, responses=_UNAUTHORIZED | _UNAVAILABLE)
def search(
    tenant: TenantDep,
    conn: ConnectionDep,
    embedder: EmbedderDep,
    settings: SettingsDep,
    q: Annotated[str, Query(min_length=1, max_length=500, pattern=r"^[^\x00]*[^\x00\s][^\x00]*$",
                            description="what to look for")],
    k: Annotated[int, Query(ge=1, le=100, description="how many pages to return")] = 10,
    batch_id: Annotated[str | None, Query(max_length=100, pattern=NO_NUL, description="only this batch's pages")] = None,
    file_id: Annotated[str | None, Query(max_length=100, pattern=NO_NUL, description="only this file's pages")] = None,
    lang: Annotated[str | None, Query(pattern=r"^[a-z_]{3,8}$", description=(
        "only pages of batches OCRed with this Tesseract language, e.g. kor or eng"))] = None,
) -> SearchResults:
    """The caller's pages best matching q, best first: the exact text (spaces and case ignored, so Korean
    spacing does not matter), OCR look-alikes, and pages close in meaning in any language, fused by rank."""
    [embedding] = embedder.embed([q])
    filters = queries.SearchFilters(batch_id=batch_id, file_id=file_id, language=lang)
    return SearchResults(query=q, data=queries.search_pages(
        conn, tenant, q, embedding, k=k, filters=filters, candidates=settings.search_candidates,
        rrf_k=settings.search_rrf_k))
