"""Fan-out of view changes to the asyncio side: each SSE stream or long poll holds a queue of its batch's snapshots.

The materializer thread calls publish(); the queues live on the event loop, so a waiting client costs nothing
until its batch changes (no polling, no timer per client besides the SSE keep-alive).
"""
import asyncio
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from schemas.progress import BatchProgress

__all__ = ["ProgressSubscriptions"]

log = logging.getLogger(__name__)


class ProgressSubscriptions:
    def __init__(self, loop: asyncio.AbstractEventLoop, queue_size: int) -> None:
        self._loop = loop
        self._queue_size = queue_size
        self._lock = threading.Lock()  # publish() reads the map from the materializer thread
        self._queues: dict[str, set[asyncio.Queue[BatchProgress]]] = {}

    def publish(self, progress: BatchProgress) -> None:
        """From any thread: hand a new snapshot to the batch's subscribers, if it has any."""
        with self._lock:
            if progress.batch_id not in self._queues:
                return
        try:
            self._loop.call_soon_threadsafe(self._deliver, progress)
        except RuntimeError:  # the loop closed: the app is shutting down and nobody is listening
            pass

    def _deliver(self, progress: BatchProgress) -> None:
        with self._lock:
            queues = list(self._queues.get(progress.batch_id, ()))
        for queue in queues:
            if queue.full():  # a stalled client: snapshots are absolute, so its oldest unsent one is superseded
                queue.get_nowait()
                log.warning("slow progress subscriber, snapshot dropped", extra={"batch_id": progress.batch_id})
            queue.put_nowait(progress)

    @contextmanager
    def subscribe(self, batch_id: str) -> Iterator[asyncio.Queue[BatchProgress]]:
        """A queue receiving every snapshot of `batch_id` the view applies while the block runs (loop thread only)."""
        queue: asyncio.Queue[BatchProgress] = asyncio.Queue(self._queue_size)
        with self._lock:
            self._queues.setdefault(batch_id, set()).add(queue)
        try:
            yield queue
        finally:
            with self._lock:
                queues = self._queues[batch_id]
                queues.discard(queue)
                if not queues:
                    del self._queues[batch_id]

    def __len__(self) -> int:
        with self._lock:
            return sum(len(q) for q in self._queues.values())
