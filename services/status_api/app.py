"""status_api ★: batch status, live progress (SSE, long poll) from the progress view; per-file results, hybrid
search and webhook deliveries from Postgres (read-only: the persister applies the migrations).

create_app builds nothing at import; the lifespan builds every client (view, subscriptions, materializer, pool,
embedder), so each test gets its own. Routes are thin: the view, live and queries modules do the work.
"""
import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Path, Query, Request, status
from fastapi.responses import JSONResponse
from psycopg import Connection, OperationalError
from psycopg_pool import ConnectionPool, PoolTimeout
from sse_starlette import EventSourceResponse, ServerSentEvent

from common.db import build_pool
from common.embedding import Embedder, build_embedder
from common.http import TenantDep, probe_router
from common.observability import RequestMetrics
from schemas.api import BatchPublic, FileResultsPublic, ProblemDetail, SearchResults, WebhookDeliveriesPublic
from schemas.base import utc_now
from schemas.progress import BatchProgress
from services.status_api import queries
from services.status_api.live import progress_stream, wait_for_newer
from services.status_api.materializer import ProgressMaterializer
from services.status_api.settings import LONG_POLL_MAX_SECONDS, RESULTS_PAGE_SIZE_MAX, StatusSettings
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
    app.add_middleware(RequestMetrics)
    app.add_exception_handler(PoolTimeout, _database_unavailable)
    app.add_exception_handler(OperationalError, _database_unavailable)
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


async def _database_unavailable(_request: Request, exc: Exception) -> JSONResponse:
    log.warning("database unavailable", extra={"error": str(exc)})
    return JSONResponse({"detail": "the results database is unavailable, retry shortly"},
                        status_code=status.HTTP_503_SERVICE_UNAVAILABLE, headers={"Retry-After": "5"})


# --- dependencies: route signatures read as nouns ---------------------------------------------------------

def _settings(request: Request) -> StatusSettings:
    return request.app.state.settings


async def _loaded_view(request: Request) -> ProgressView:
    """The progress view, once it has caught up: before that it may hold old versions, so answer 503."""
    if not request.app.state.materializer.ready:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "status view is still loading, retry shortly",
                            headers={"Retry-After": "2"})
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


SettingsDep = Annotated[StatusSettings, Depends(_settings)]
ViewDep = Annotated[ProgressView, Depends(_loaded_view)]
ConnectionDep = Annotated[Connection, Depends(_connection)]
EmbedderDep = Annotated[Embedder, Depends(_embedder)]
SubscriptionsDep = Annotated[ProgressSubscriptions, Depends(_subscriptions)]

_UNAUTHORIZED = {401: {"model": ProblemDetail, "description": "missing or unknown API key"}}
_NOT_FOUND = {404: {"model": ProblemDetail, "description": "no such batch for this API key's tenant"}}
_UNAVAILABLE = {503: {"model": ProblemDetail, "description": "still loading, or the database is unavailable"}}


# Postgres text cannot hold NUL: a parameter that reaches SQL refuses it with a 422 naming the parameter.
NO_NUL = r"^[^\x00]*$"
BatchIdInSql = Annotated[str, Path(pattern=NO_NUL)]


def _batch_not_found(batch_id: str) -> HTTPException:
    # The same answer for "unknown" and "another tenant's": never reveal that another tenant's batch exists.
    return HTTPException(status.HTTP_404_NOT_FOUND, f"batch {batch_id} not found")


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
) -> BatchPublic:
    progress = _visible(view, tenant, batch_id)
    if wait is not None:
        held = progress.version if after_version is None else after_version
        progress = await wait_for_newer(view, subscriptions, batch_id, held, wait) or progress
    return batch_public(progress, utc_now())


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
    if not queries.batch_exists_for_tenant(conn, tenant, batch_id):
        accepted = request.app.state.view.get(batch_id)  # accepted, but the persister has not written it yet
        if accepted is None or accepted.tenant != tenant:
            raise _batch_not_found(batch_id)
        return FileResultsPublic(batch_id=batch_id, data=[], next_cursor=None)
    files, next_cursor = queries.file_results(
        conn, tenant, batch_id, cursor, limit or settings.results_page_size, include_words)
    return FileResultsPublic(batch_id=batch_id, data=files, next_cursor=next_cursor)


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
