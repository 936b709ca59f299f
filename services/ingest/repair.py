"""Results the broker lost, run again.

A worker's commit_transaction can succeed and its results still never become readable. Apache Kafka (4.3.1 here)
skips a committed transaction's markers when one of its partitions has no leader while the coordinator sends them:
KRaftMetadataCache.getPartitionLeaderEndpoint answers "no such partition" for a leaderless one, taken for deleted
("Couldn't find leader endpoint ... likely deleted already and hence can be skipped"). A lone broker restarting
after a crash is such a moment, and so is a whole cluster coming back. The chunk's offset was committed, so no
worker redoes it, and its batch would never finish.

A thread of each ingest process looks for such batches (one process at a time, under an advisory lock): sealed,
not finished, no new result for stalled_batch_s, while the pipeline has nothing left to read: the workers'
group has consumed every record of ocr.chunks and the persister every record of its topics. A file of such a
batch without a result (or still waiting for a retry's) was lost, not late; it runs again as a new chunk of
the attempt it was in. The persister keeps the first result of an attempt, so a lost one that turns up after
all changes nothing."""
import logging
import time
import uuid

import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from minio import Minio
from prometheus_client import Counter
from psycopg_pool import ConnectionPool

from common.kafka import PartitionEofTracker, build_consumer, message_record
from common.problems import Problem
from common.runtime import PeriodicTask
from schemas.batch_events import BatchOptions
from schemas.chunks import StoredFile
from services.ingest import queries
from services.ingest.lifecycle import manifest, send
from services.ingest.planning import plan_redo
from services.ingest.settings import IngestSettings

__all__ = ["LostResultRepair", "has_unread_records", "lost_files"]

log = logging.getLogger(__name__)

FILES_RUN_AGAIN = Counter("ocrstream_ingest_lost_files_run_again_total",
                          "Files of stalled batches run again because their results were lost")

_PROBE_TIMEOUT_S = 30.0


class LostResultRepair(PeriodicTask):
    """The repair thread of one ingest process; the advisory lock lets one process act at a time."""

    def __init__(self, settings: IngestSettings, pool: ConnectionPool, s3: Minio, producer: Producer) -> None:
        super().__init__("lost-result-repair", min(10.0, settings.stalled_batch_s / 4), self.repair_stalled_batches,
                         deferred=(psycopg.OperationalError, KafkaException, Problem))
        self._settings = settings
        self._pool = pool
        self._s3 = s3
        self._producer = producer

    def repair_stalled_batches(self) -> dict[str, int]:
        """Batch id → files run again, for each stalled batch with files whose results were lost."""
        with self._pool.connection() as conn, conn.transaction():
            if not conn.execute("SELECT pg_try_advisory_xact_lock(hashtextextended('lost-result-repair', 0))"
                                ).fetchone()[0]:
                return {}  # another ingest process is at it
            stalled = queries.stalled_batches(conn, self._settings.stalled_batch_s)
            if not stalled or not self._pipeline_drained(conn):
                return {}
            return {batch["batch_id"]: count for batch in stalled if (count := self._run_lost_files(conn, batch))}

    def _pipeline_drained(self, conn: psycopg.Connection) -> bool:
        """Nothing left for the workers (their group's committed offsets on ocr.chunks) nor the persister (its
        offsets in Postgres on batch.events and ocr.results) to read."""
        s = self._settings
        consumer = build_consumer(s, group_id=s.worker_group, client_id="ingest-repair-probe",
                                  **{"enable.partition.eof": True})  # never subscribes: not a member of the group
        try:
            chunks = _partitions(consumer, s.topic_ocr_chunks)
            workers_at = consumer.committed(chunks, timeout=_PROBE_TIMEOUT_S)
            persister_at = queries.stored_offsets(conn, s.persister_group)
            persisted = [TopicPartition(tp.topic, tp.partition, persister_at.get((tp.topic, tp.partition),
                                                                                 OFFSET_BEGINNING))
                         for topic in (s.topic_batch_events, s.topic_ocr_results)
                         for tp in _partitions(consumer, topic)]
            positions = [TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING)
                         for tp in workers_at] + persisted
            return not has_unread_records(consumer, positions, _PROBE_TIMEOUT_S)
        finally:
            consumer.close()

    def _run_lost_files(self, conn: psycopg.Connection, batch: dict) -> int:
        s, batch_id, tenant = self._settings, batch["batch_id"], batch["tenant"]
        stored = manifest(self._s3, s, tenant, batch_id, queries.manifest_count(conn, batch_id))
        by_attempt = lost_files(stored, *queries.awaited_results(conn, batch_id))
        if not by_attempt:
            return 0
        options = BatchOptions.model_validate(batch["options"] or {})
        token = uuid.uuid4().hex[:8]
        chunks = [chunk for attempt, files in sorted(by_attempt.items())
                  for chunk in plan_redo(batch_id, tenant, options, files, s.default_chunk_size, attempt, token)]
        send(self._producer, s, [message_record(s.topic_ocr_chunks, c.chunk_id, c) for c in chunks])
        count = sum(len(files) for files in by_attempt.values())
        FILES_RUN_AGAIN.inc(count)
        log.warning("lost results: files run again", extra={"batch_id": batch_id, "tenant": tenant, "files": count,
                                                            "chunks": [c.chunk_id for c in chunks][:20]})
        return count


def lost_files(stored: dict[str, StoredFile], with_result: set[str], awaiting_retry: dict[str, int]
               ) -> dict[int, list[StoredFile]]:
    """A stalled batch's files whose results were lost, by the attempt they were in: those without a result (the
    first attempt's) and those still waiting for a retry's."""
    by_attempt: dict[int, list[StoredFile]] = {}
    for file_id, file in stored.items():
        if file_id not in with_result or file_id in awaiting_retry:
            by_attempt.setdefault(awaiting_retry.get(file_id, 1), []).append(file)
    return by_attempt


def has_unread_records(consumer: Consumer, positions: list[TopicPartition], timeout_s: float) -> bool:
    """Whether a read_committed reader from `positions` (the consumer built with enable.partition.eof) meets a
    record before the end of every partition. Not knowing within timeout_s counts as yes."""
    consumer.assign(positions)
    eof = PartitionEofTracker()
    eof.assigned(positions)
    deadline = time.monotonic() + timeout_s
    try:
        while not eof.caught_up:
            if time.monotonic() > deadline:
                return True
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error() is None:
                return True
            if msg.error().code() != KafkaError._PARTITION_EOF:
                raise KafkaException(msg.error())
            eof.reached_eof(msg.topic(), msg.partition())
        return False
    finally:
        consumer.unassign()


def _partitions(consumer: Consumer, topic: str) -> list[TopicPartition]:
    metadata = consumer.list_topics(topic, timeout=_PROBE_TIMEOUT_S).topics[topic]
    if metadata.error is not None:
        raise KafkaException(metadata.error)
    return [TopicPartition(topic, p) for p in sorted(metadata.partitions)]
