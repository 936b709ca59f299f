"""Pushed progress: the SSE stream and the long poll, both fed by the view's subscriptions, never by Postgres.

Each reads the view's current snapshot after subscribing, so no change falls between the read and the wait.
"""
import asyncio
from collections.abc import AsyncIterator

from schemas.progress import TERMINAL_STATUSES, BatchProgress
from services.status_api.subscriptions import ProgressSubscriptions
from services.status_api.view import ProgressView

__all__ = ["progress_stream", "wait_for_newer"]


async def progress_stream(view: ProgressView, subscriptions: ProgressSubscriptions, batch_id: str,
                          after_version: int) -> AsyncIterator[BatchProgress]:
    """Every snapshot of the batch above `after_version`, in version order; ends after a terminal one
    (at once if the client already holds it)."""
    with subscriptions.subscribe(batch_id) as queue:
        snapshot = view.get(batch_id)
        while True:
            if snapshot is not None and snapshot.version > after_version:
                yield snapshot
                after_version = snapshot.version
            if snapshot is not None and snapshot.status in TERMINAL_STATUSES:
                return  # sent now, or the client already holds it (it resumed from there)
            snapshot = await queue.get()


async def wait_for_newer(view: ProgressView, subscriptions: ProgressSubscriptions, batch_id: str,
                         after_version: int, timeout: float) -> BatchProgress | None:
    """The batch's snapshot once its version exceeds `after_version`, or its current one after `timeout` s."""
    with subscriptions.subscribe(batch_id) as queue:
        snapshot = view.get(batch_id)
        try:
            async with asyncio.timeout(timeout):
                while snapshot is None or snapshot.version <= after_version:
                    snapshot = await queue.get()
        except TimeoutError:
            pass
        return view.get(batch_id)
