"""Pure: which notifications a progress snapshot owes, how they are signed, and when a failed one is retried.

A delivery's id is derived from (batch, event), so reading one snapshot twice, or two snapshots past the same
milestone, owes the same delivery: the log keeps one row, the receiver sees one id (Standard Webhooks' dedupe key).
"""
import base64
import hashlib
import hmac
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from schemas.api import WebhookBatchData, WebhookEvent
from schemas.progress import TERMINAL_STATUSES, BatchProgress

__all__ = ["OwedDelivery", "next_attempt_at", "owed_deliveries", "signature_headers"]

_DELIVERY_IDS = uuid.UUID("5d0c4a7e-1f0b-4d36-9d55-0c8f3c1e2a90")  # namespace of uuid5 delivery ids


@dataclass(frozen=True)
class OwedDelivery:
    delivery_id: str
    batch_id: str
    tenant: str
    event_type: str
    milestone: int | None
    url: str
    body: str


def owed_deliveries(progress: BatchProgress, milestone_percent: int) -> list[OwedDelivery]:
    """The terminal notification of a finished batch, or the highest milestone a running batch has passed.

    Nothing without a webhook_url, and nothing for pending batches. Only the highest milestone passed is
    owed: a snapshot that jumps from 10 % to 80 % announces 75 %, not 25, 50 and 75 after the fact. An open
    batch passes none: its total still grows.
    """
    if not progress.webhook_url:
        return []
    percent = _percent(progress)
    if progress.status in TERMINAL_STATUSES:
        return [_delivery(progress, f"batch.{progress.status.value}", None, percent, "terminal")]
    if milestone_percent <= 0 or progress.total_files == 0 or not progress.sealed:
        return []
    milestone = int(percent // milestone_percent) * milestone_percent
    if milestone <= 0 or milestone >= 100:  # 100 % is the terminal event's to announce
        return []
    return [_delivery(progress, "batch.progress", milestone, percent, f"progress/{milestone}")]


def _percent(progress: BatchProgress) -> float:
    if not progress.total_files:
        return 0.0
    return min(100.0, progress.processed_files / progress.total_files * 100)


def _delivery(progress: BatchProgress, event_type: str, milestone: int | None, percent: float, key: str
              ) -> OwedDelivery:
    event = WebhookEvent(type=event_type, timestamp=progress.updated_at, data=WebhookBatchData(
        batch_id=progress.batch_id, name=progress.name, status=progress.status, total_files=progress.total_files,
        processed_files=progress.processed_files, succeeded=progress.succeeded, failed=progress.failed,
        skipped=progress.skipped, percent=percent, milestone=milestone, updated_at=progress.updated_at,
        finished_at=progress.finished_at, version=progress.version))
    delivery_id = "msg_" + uuid.uuid5(_DELIVERY_IDS, f"{progress.batch_id}/{key}").hex
    return OwedDelivery(delivery_id=delivery_id, batch_id=progress.batch_id, tenant=progress.tenant,
                        event_type=event_type, milestone=milestone, url=progress.webhook_url,
                        body=event.model_dump_json())


def signature_headers(secret: str, delivery_id: str, timestamp: int, body: str) -> dict[str, str]:
    """Standard Webhooks headers: v1 = base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")), key from whsec_<b64>."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{delivery_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return {
        "webhook-id": delivery_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
        "content-type": "application/json",
    }


def next_attempt_at(created_at: datetime, attempts_made: int, now: datetime, *, first_s: float,
                    max_interval_s: float, window_s: float) -> datetime | None:
    """When to try again after `attempts_made` failed attempts (exponential backoff), or None: give up, the
    retry window since `created_at` is over."""
    delay = min(first_s * 2 ** (attempts_made - 1), max_interval_s)
    due = now + timedelta(seconds=delay)
    return due if due <= created_at + timedelta(seconds=window_s) else None
