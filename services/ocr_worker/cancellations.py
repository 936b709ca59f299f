"""The batches cancelled so far, read from `batch.events` by a consumer of the worker's own (no group offsets).

The worker asks it, before OCR of a chunk, whether the chunk's batch is cancelled. A cancel it has not read yet
only means that chunk is OCRed as if it had started first: its results are kept, nothing is lost or doubled.
"""
import logging
import threading

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from schemas.batch_events import BatchCancelled
from schemas.topics import Topic, UndecodableMessage, decode

log = logging.getLogger(__name__)


class CancelledBatches:
    """A set of batch ids filled by a daemon thread; `batch_id in cancelled` is all the worker needs."""

    def __init__(self, consumer: Consumer, topic: str) -> None:
        self._consumer = consumer  # built with enable.partition.eof, so caught_up can be told
        self._topic = topic
        self._ids: set[str] = set()
        self._stop = threading.Event()
        self._caught_up = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cancelled-batches", daemon=True)

    def __contains__(self, batch_id: object) -> bool:
        return batch_id in self._ids

    def start(self) -> None:
        partitions = self._consumer.list_topics(self._topic, timeout=10).topics[self._topic].partitions
        self._pending_eof = set(partitions)
        self._consumer.assign([TopicPartition(self._topic, p, OFFSET_BEGINNING) for p in partitions])
        self._thread.start()

    def wait_caught_up(self, timeout: float) -> bool:
        """Whether every partition has been read to its end once (for start-up and tests)."""
        return self._caught_up.wait(timeout)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self._consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    self._pending_eof.discard(msg.partition())
                    if not self._pending_eof:
                        self._caught_up.set()
                else:
                    log.warning("batch events consumer error", extra={"error": msg.error().str()})
                continue
            try:
                event = decode(Topic.BATCH_EVENTS, msg.value())
            except UndecodableMessage:
                continue  # the persister dead-letters it; here it cannot be a cancel we could act on
            if isinstance(event, BatchCancelled) and event.batch_id not in self._ids:
                self._ids.add(event.batch_id)
                log.info("batch cancelled: its chunks not yet started will be skipped",
                         extra={"batch_id": event.batch_id})
