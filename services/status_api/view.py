"""The status view: the highest version of every batch's progress snapshot, and a hook on its changes.

Pure (no I/O library): the materializer feeds it, the routes read it, unit tests call it directly.
"""
import threading
from collections.abc import Callable
from datetime import datetime

from schemas.api import BatchPublic
from schemas.progress import TERMINAL_STATUSES, BatchProgress

__all__ = ["ProgressView", "batch_public"]


class ProgressView:
    """batch_id → the BatchProgress with the highest version seen. Thread-safe.

    Snapshots are absolute, so keeping the highest version makes replays and duplicates idempotent:
    a lower or equal version never replaces what is there, and the view never goes backwards.
    `on_change` is called with every snapshot that changed the view, in version order per batch, outside the
    lock (live streams subscribe through it).
    """

    def __init__(self, on_change: Callable[[BatchProgress], None] | None = None) -> None:
        self._batches: dict[str, BatchProgress] = {}
        self._lock = threading.Lock()
        self._on_change = on_change

    def apply(self, progress: BatchProgress) -> bool:
        """Keep `progress` if it is newer than what the view holds; True when the view changed."""
        with self._lock:
            current = self._batches.get(progress.batch_id)
            if current is not None and current.version >= progress.version:
                return False
            self._batches[progress.batch_id] = progress
        if self._on_change is not None:
            self._on_change(progress)
        return True

    def get(self, batch_id: str) -> BatchProgress | None:
        with self._lock:
            return self._batches.get(batch_id)

    def __len__(self) -> int:
        with self._lock:
            return len(self._batches)


def batch_public(progress: BatchProgress, now: datetime) -> BatchPublic:
    """The public resource for one snapshot, with percent done and an ETA as of `now`."""
    processed = progress.processed_files
    percent = min(100.0, processed / progress.total_files * 100) if progress.total_files else 0.0
    return BatchPublic(
        batch_id=progress.batch_id,
        name=progress.name,
        status=progress.status,
        total_files=progress.total_files,
        total_chunks=progress.total_chunks,
        processed_files=processed,
        succeeded=progress.succeeded,
        failed=progress.failed,
        skipped=progress.skipped,
        cancelled=progress.cancelled,
        sealed=progress.sealed,
        percent=percent,
        created_at=progress.created_at,
        started_at=progress.started_at,
        updated_at=progress.updated_at,
        finished_at=progress.finished_at,
        eta_seconds=_eta_seconds(progress, now),
        version=progress.version,
    )


def _eta_seconds(progress: BatchProgress, now: datetime) -> float | None:
    """Seconds to completion, or None when unknown (nothing processed yet, no total, no start; an open batch,
    which ends only after its seal) or finished.

    A simple average rate over the whole run: rate = processed / (updated_at - created_at). Measured from
    acceptance, not from started_at (the first persisted result): that would leave the first chunk's OCR time
    out of the clock but its files in the count, and so overstate the rate. The estimate
    holds at updated_at, so the time since then is taken off (floored at 0) and the ETA counts down between
    snapshots. A smoothed (exponentially weighted) rate replaces this later.
    """
    processed = progress.processed_files
    if progress.status in TERMINAL_STATUSES or progress.finished_at is not None or not progress.sealed:
        return None
    since = progress.created_at or progress.started_at
    if processed == 0 or progress.total_files == 0 or since is None:
        return None
    elapsed = (progress.updated_at - since).total_seconds()
    if elapsed <= 0:
        return None
    remaining = max(progress.total_files - processed, 0)
    at_update = remaining / (processed / elapsed)
    return max(0.0, at_update - (now - progress.updated_at).total_seconds())
