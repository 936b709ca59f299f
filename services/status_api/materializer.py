"""`batch.progress` → ProgressView, in a daemon thread; ready once every partition has been read to its end.

Every instance reads the whole compacted topic: partitions are assigned (no group subscription, no commits)
from the beginning, so a restart rebuilds the view from the topic and nothing in memory is the only copy.
"""
import logging
import threading
import uuid

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, Message, TopicPartition
from prometheus_client import Counter, Gauge

from common.kafka import PartitionEofTracker, build_consumer
from common.observability import MESSAGES_CONSUMED
from common.settings import Settings
from schemas.topics import Topic, UndecodableMessage, decode
from services.status_api.view import ProgressView

__all__ = ["ProgressMaterializer"]

log = logging.getLogger(__name__)

VIEW_BATCHES = Gauge("ocrstream_status_view_batches", "Batches held in the status view")
VIEW_RECORDS = Counter(
    "ocrstream_status_view_records_total", "batch.progress records read by the status view",
    ["outcome"],  # applied | stale (lower or equal version) | undecodable
)

_POLL_SECONDS = 0.5  # also bounds how long stop() waits for the loop to notice
_METADATA_RETRY_SECONDS = 1.0


class ProgressMaterializer:
    def __init__(self, settings: Settings, view: ProgressView) -> None:
        self._topic = settings.topic_batch_progress
        self._view = view
        instance = uuid.uuid4().hex
        # A throwaway group id: assign() joins no group and nothing is committed, but librdkafka wants one.
        self._consumer = build_consumer(
            settings, group_id=f"ocrstream-status-view-{instance}", client_id=f"status-api-view-{instance[:8]}",
            **{"enable.partition.eof": True},  # "caught up" = EOF on every partition, not a guess from timing
        )
        self._eof = PartitionEofTracker()
        self._caught_up = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress-materializer", daemon=True)

    @property
    def ready(self) -> bool:
        """Every partition was read to its end once (the view is as current as the topic); the loop still runs."""
        return self._caught_up.is_set() and self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)  # the loop closes the consumer: it is not safe to close from here mid-poll
        elif self._thread.ident is None:
            self._consumer.close()

    def _run(self) -> None:
        try:
            if self._assign_all_partitions():
                self._follow()
        except Exception:
            log.exception("progress materializer stopped on an unexpected error", extra={"topic": self._topic})
        finally:
            self._consumer.close()

    def _follow(self) -> None:
        while not self._stop.is_set():
            msg = self._consumer.poll(_POLL_SECONDS)
            if msg is None:
                continue
            error = msg.error()
            if error is None:
                self._apply(msg)
            elif error.code() == KafkaError._PARTITION_EOF:
                self._on_eof(msg)
            elif error.fatal():
                log.error("fatal consumer error, view frozen", extra={"topic": self._topic, "error": error.str()})
                return
            else:  # broker away, leader moving: librdkafka retries by itself
                log.warning("consumer error", extra={"topic": self._topic, "error": error.str()})

    def _assign_all_partitions(self) -> bool:
        """Assign every partition of the topic at its beginning; wait for the topic to exist. False if stopped."""
        while not self._stop.is_set():
            try:
                metadata = self._consumer.list_topics(self._topic, timeout=10).topics.get(self._topic)
            except KafkaException as exc:  # broker unreachable: keep trying, /readyz says not ready meanwhile
                log.warning("no metadata for the progress topic", extra={"topic": self._topic, "error": str(exc)})
                self._stop.wait(_METADATA_RETRY_SECONDS)
                continue
            if metadata is not None and metadata.error is None and metadata.partitions:
                partitions = [TopicPartition(self._topic, p, OFFSET_BEGINNING) for p in sorted(metadata.partitions)]
                self._eof.assigned(partitions)
                self._consumer.assign(partitions)
                log.info("reading the progress topic", extra={"topic": self._topic, "partitions": len(partitions)})
                return True
            log.warning("progress topic not available yet", extra={
                "topic": self._topic, "error": metadata.error.str() if metadata and metadata.error else None})
            self._stop.wait(_METADATA_RETRY_SECONDS)
        return False

    def _apply(self, msg: Message) -> None:
        MESSAGES_CONSUMED.labels(topic=msg.topic()).inc()
        try:
            progress = decode(Topic.BATCH_PROGRESS, msg.value())
        except UndecodableMessage as exc:
            VIEW_RECORDS.labels(outcome="undecodable").inc()
            log.warning("undecodable progress record skipped", extra={
                "topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset(), "error": str(exc)})
            return
        changed = self._view.apply(progress)
        VIEW_RECORDS.labels(outcome="applied" if changed else "stale").inc()
        if changed:
            VIEW_BATCHES.set(len(self._view))

    def _on_eof(self, msg: Message) -> None:
        self._eof.reached_eof(msg.topic(), msg.partition())
        if self._eof.caught_up and not self._caught_up.is_set():
            self._caught_up.set()
            log.info("status view caught up", extra={"topic": self._topic, "batches": len(self._view)})
