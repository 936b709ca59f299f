"""Structured logs (one JSON object per line) and the Prometheus metrics every service shares."""
import json
import logging
import sys
from datetime import datetime, timezone

from prometheus_client import Counter, Histogram

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
