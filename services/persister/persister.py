"""The persister: batch events and OCR results → PostgreSQL, exactly once → progress snapshots.

Exactly-once is the "offsets outside Kafka" pattern: the rows and the next offsets commit in ONE database
transaction, and on assignment the consumer seeks to the offsets stored there. A crash anywhere replays only
what the database does not hold; a repeated file_id changes nothing either way.
"""
import logging
import time
from dataclasses import dataclass, field
from threading import Event

import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition
from psycopg_pool import ConnectionPool

from common.errors import DeliveryFailed, FatalError
from common.kafka import dlq_record, produce_and_flush
from common.observability import MESSAGES_CONSUMED, MESSAGES_DEAD_LETTERED, TRANSACTION_SECONDS, TRANSACTIONS
from schemas.batch_events import BatchCancelled, BatchCreated, BatchRetryRequested
from schemas.results import FileResult
from schemas.topics import Topic, UndecodableMessage, decode, encode
from services.persister import sql
from services.persister.progress import progress_from_row
from services.persister.settings import PersisterSettings

log = logging.getLogger(__name__)


@dataclass
class PolledWork:
    """One poll's records, sorted: what to write, what to dead-letter, and where each partition resumes."""

    events: list = field(default_factory=list)
    results: list[FileResult] = field(default_factory=list)
    dead_letters: list[tuple[str, bytes | None, bytes]] = field(default_factory=list)
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    first_offsets: dict[tuple[str, int], int] = field(default_factory=dict)


class Persister:
    def __init__(self, settings: PersisterSettings, consumer: Consumer, producer: Producer, pool: ConnectionPool) -> None:
        self._settings = settings
        self._consumer = consumer
        self._producer = producer
        self._pool = pool
        self._topics = {settings.topic_batch_events: Topic.BATCH_EVENTS, settings.topic_ocr_results: Topic.OCR_RESULTS}
        self.ready = False

    def run(self, stop: Event) -> None:
        self._consumer.subscribe(list(self._topics), on_assign=self._on_assign, on_revoke=self._on_revoke,
                                 on_lost=self._on_lost)
        self.publish_progress()  # snapshots committed before a crash but never sent
        backoff = self._settings.db_retry_backoff_s
        while not stop.is_set():
            messages = self._consumer.consume(self._settings.max_messages_per_transaction, self._settings.poll_timeout_s)
            if not messages:
                continue
            work = self._sort(messages)
            try:
                resume_at = self._persist(work)
            except (psycopg.OperationalError, DeliveryFailed) as exc:  # DB or broker away: rewind, wait, retry
                log.warning("persisting failed, will retry", extra={"error": str(exc), "backoff_s": backoff})
                self._rewind(work.first_offsets)
                stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            if resume_at:  # an earlier owner got further than this poll began: go where the DB says
                self._rewind(work.first_offsets | resume_at)
                continue
            backoff = self._settings.db_retry_backoff_s
            self.publish_progress()

    def _sort(self, messages: list[Message]) -> PolledWork:
        work = PolledWork()
        for msg in messages:
            if msg.error():
                if msg.error().fatal():
                    raise FatalError(msg.error().str())
                log.warning("consumer error", extra={"error": msg.error().str()})
                continue
            MESSAGES_CONSUMED.labels(msg.topic()).inc()
            tp = (msg.topic(), msg.partition())
            work.first_offsets.setdefault(tp, msg.offset())
            work.next_offsets[tp] = msg.offset() + 1
            try:
                message = decode(self._topics[msg.topic()], msg.value())
            except UndecodableMessage as exc:
                MESSAGES_DEAD_LETTERED.labels(msg.topic(), "undecodable").inc()
                log.error("undecodable record sent to DLQ", extra={"topic": msg.topic(), "partition": msg.partition(),
                                                                   "offset": msg.offset(), "reason": str(exc)})
                record = dlq_record(msg, reason=str(exc), error=exc, service="persister")
                work.dead_letters.append((self._settings.topic_ocr_dlq, msg.key(), encode(record)))
                continue
            (work.results if isinstance(message, FileResult) else work.events).append(message)
        return work

    def _persist(self, work: PolledWork) -> dict[tuple[str, int], int]:
        """1. dead letters out (flushed: a crash replays them, at-least-once)
        2. one DB transaction: lock the stored offsets; if an earlier owner of a partition already got past
           this poll's first offset, write nothing and return where to resume
        3. write rows, recount the touched batches, store the next offsets  4. commit."""
        if work.dead_letters:
            produce_and_flush(self._producer, work.dead_letters, timeout=30)
        started = time.perf_counter()
        with self._pool.connection() as conn, conn.transaction():
            stored = sql.load_offsets(conn, self._settings.persister_group, self._topics, for_update=True)
            ahead = {tp: stored[tp] for tp, first in work.first_offsets.items() if stored.get(tp, 0) > first}
            if ahead:
                log.warning("records already persisted by an earlier owner, seeking past them",
                            extra={"positions": {f"{t}[{p}]": o for (t, p), o in ahead.items()}})
                return ahead
            touched: set[str] = set()
            for event in work.events:
                touched.add(event.batch_id)
                if isinstance(event, BatchCreated):
                    sql.upsert_batch_created(conn, event)
                elif isinstance(event, BatchCancelled):
                    sql.mark_batch_cancelled(conn, event)
                elif isinstance(event, BatchRetryRequested):
                    log.warning("retry requests are not supported yet; ignored", extra={"batch_id": event.batch_id})
            inserted = sql.insert_file_results(conn, work.results)
            touched.update(r.batch_id for r in work.results)
            if touched:
                sql.recount_batches(conn, touched)
            sql.store_offsets(conn, self._settings.persister_group, work.next_offsets)
        elapsed = time.perf_counter() - started
        TRANSACTION_SECONDS.labels("persist").observe(elapsed)
        TRANSACTIONS.labels("persist", "committed").inc()
        # Kafka's own commit only feeds lag monitoring; restarts resume from the DB offsets.
        self._consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in work.next_offsets.items()],
                              asynchronous=True)
        log.info("results persisted", extra={"events": len(work.events), "results": len(work.results),
                                             "inserted": len(inserted), "duplicates": len(work.results) - len(inserted),
                                             "batches": sorted(touched), "ms": round(elapsed * 1000, 1)})
        return {}

    def publish_progress(self) -> None:
        """Send every snapshot the DB holds but batch.progress does not yet; versions make repeats harmless.
        On failure the snapshots stay unpublished in the DB and go out on a later call."""
        try:
            self._publish_unpublished_snapshots()
        except (psycopg.OperationalError, DeliveryFailed) as exc:
            log.warning("progress not published yet, will retry", extra={"error": str(exc)})

    def _publish_unpublished_snapshots(self) -> None:
        with self._pool.connection() as conn:
            rows = sql.unpublished_batches(conn)
            if not rows:
                return
            snapshots = [progress_from_row(row) for row in rows]
            produce_and_flush(self._producer, [(self._settings.topic_batch_progress, p.batch_id.encode(), encode(p))
                                               for p in snapshots], timeout=30)
            sql.mark_published(conn, {p.batch_id: p.version for p in snapshots})
        for p in snapshots:
            log.info("progress published", extra={"batch_id": p.batch_id, "status": p.status, "version": p.version,
                                                  "processed": p.processed_files, "total": p.total_files})

    def _rewind(self, positions: dict[tuple[str, int], int]) -> None:
        for (topic, partition), offset in positions.items():
            self._consumer.seek(TopicPartition(topic, partition, offset))

    # Rebalance callbacks: the DB, not Kafka, says where each partition resumes.
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.seek_to_stored_offsets(consumer, partitions)

    def seek_to_stored_offsets(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        with self._pool.connection() as conn:
            stored = sql.load_offsets(conn, self._settings.persister_group, {p.topic for p in partitions})
        for p in partitions:
            p.offset = stored.get((p.topic, p.partition), OFFSET_BEGINNING)
        consumer.assign(partitions)
        self.ready = True  # a member of the group now, reading from where Postgres says
        log.info("partitions assigned", extra={"positions": {f"{p.topic}[{p.partition}]": p.offset for p in partitions}})

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("partitions revoked", extra={"partitions": [f"{p.topic}[{p.partition}]" for p in partitions]})

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.warning("partitions lost", extra={"partitions": [f"{p.topic}[{p.partition}]" for p in partitions]})
