"""Structured logs (one JSON object per line), the Prometheus metrics every service shares, the HTTP services'
request metrics and access log, and consumer lag."""
import json
import logging
import sys
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any, Protocol

from prometheus_client import Counter, Gauge, Histogram

# Attributes every LogRecord has; anything else was passed in `extra=` and becomes a field.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "taskName", "color_message"}  # color_message: uvicorn's ANSI copy of the message


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self._service,
            "logger": record.name,
            "event": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# Shared across services; each process exports only what it touches.
MESSAGES_CONSUMED = Counter("ocrstream_messages_consumed_total", "Records consumed", ["topic"])
MESSAGES_DEAD_LETTERED = Counter("ocrstream_messages_dead_lettered_total", "Records sent to the DLQ", ["topic", "reason"])
TRANSACTIONS = Counter("ocrstream_transactions_total", "Transactions finished", ["kind", "outcome"])
TRANSACTION_SECONDS = Histogram(
    "ocrstream_transaction_seconds", "Duration of one Kafka or DB transaction", ["kind"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)

CONSUMER_LAG = Gauge("ocrstream_consumer_lag", "Records a consumer group has still to read, per partition",
                     ["group", "topic", "partition"])
HTTP_REQUESTS = Counter("ocrstream_http_requests_total", "HTTP requests answered", ["method", "route", "status"])
HTTP_REQUEST_SECONDS = Histogram(
    "ocrstream_http_request_seconds", "From the request's arrival to its last response byte", ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)

_access_log = logging.getLogger("ocrstream.access")
_PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})  # every few seconds from every scraper: debug only


# ---- HTTP: one metric sample and one access-log line per request ----------------------------------------------

class RequestMetrics:
    """ASGI middleware (`app.add_middleware(RequestMetrics)`): counts and times every request by its route
    template (not its path: batch ids would explode the label set) and writes one JSON access-log line.
    A plain ASGI wrapper rather than BaseHTTPMiddleware, so streamed answers (SSE) pass through untouched and
    are timed to their last byte."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers if the app raises before starting a response

        async def send_and_note_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            record_request(scope, status, time.perf_counter() - started)


def record_request(scope: dict, status: int, seconds: float) -> None:
    route = route_label(scope)
    HTTP_REQUESTS.labels(scope["method"], route, str(status)).inc()
    HTTP_REQUEST_SECONDS.labels(scope["method"], route).observe(seconds)
    client = scope.get("client")
    _access_log.log(logging.DEBUG if scope["path"] in _PROBE_PATHS else logging.INFO, "http request", extra={
        "method": scope["method"], "path": scope["path"], "route": route, "status": status,
        "duration_ms": round(seconds * 1000, 2), "client": client[0] if client else None,
    })


def route_label(scope: dict) -> str:
    """The matched route's template (/v1/batches/{batch_id}); "unmatched" for a 404 on no route at all, or a
    request refused before routing (ingest's gate: API key, body size)."""
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"


# ---- consumer lag -------------------------------------------------------------------------------------------

class _PartitionLike(Protocol):
    topic: str
    partition: int
    offset: int


class _ConsumerLike(Protocol):
    def assignment(self) -> list: ...
    def position(self, partitions: list) -> list: ...
    def get_watermark_offsets(self, partition: Any, timeout: float | None = None, cached: bool = False) -> tuple: ...


def partition_lag(position: int, low: int, high: int) -> int:
    """Records from position to the high watermark; from the low watermark when there is no position yet
    (negative: librdkafka's OFFSET_INVALID/BEGINNING/END markers)."""
    start = position if position >= 0 else low
    return max(0, high - max(start, low))


def record_consumer_lag(consumer: _ConsumerLike, group: str, positions: Iterable[_PartitionLike] | None = None, *,
                        timeout: float = 5.0, cached: bool = False) -> None:
    """Set ocrstream_consumer_lag{group, topic, partition} for every assigned partition: the high watermark
    (the last stable offset under read_committed) minus the next offset the group will read. `positions` are
    those next offsets when the group keeps them outside Kafka (the persister's DB-stored offsets); by default
    the consumer's own positions. Asks the broker for the watermarks (call it every few seconds, not per poll),
    or with `cached` takes those of the last fetch (no wait, for a loop that must not block on a broker away)."""
    positions = list(positions if positions is not None else consumer.position(consumer.assignment()))
    for tp in positions:
        low, high = consumer.get_watermark_offsets(tp, timeout=timeout, cached=cached)
        if high < 0:  # nothing fetched yet
            continue
        CONSUMER_LAG.labels(group, tp.topic, str(tp.partition)).set(partition_lag(tp.offset, low, high))


def forget_consumer_lag(group: str, partitions: Iterable[_PartitionLike]) -> None:
    """Drop the lag series of revoked partitions: another member reports them now."""
    for tp in partitions:
        try:
            CONSUMER_LAG.remove(group, tp.topic, str(tp.partition))
        except KeyError:
            pass
