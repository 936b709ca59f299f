"""The persister: batch events and OCR results → PostgreSQL, exactly once → progress snapshots.

Exactly-once is the "offsets outside Kafka" pattern: a partition's rows and its next offset commit in ONE
database transaction, and on assignment the consumer seeks to the offsets stored there. A crash anywhere replays
only what the database does not hold. A poll (up to max_messages_per_transaction records) is split into lanes
of whole partitions, written side by side, each in a transaction of its own: a few bulk statements (multi-row
INSERT, COPY) under one savepoint. Only if Postgres refuses that for its data is the lane written again
record by record, each in its own savepoint: the record refused is rolled back alone,
dead-lettered through an outbox table in the same transaction, and its file counted as failed: no record can
stop a partition. Retries and replays follow the replace rule in sql.py, so a repeat changes nothing.
"""
import base64
import json
import logging
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from threading import Event
from typing import Any

import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition
from psycopg_pool import ConnectionPool
from pydantic import ValidationError

from common.db import watch_database
from common.errors import DeliveryFailed
from common.kafka import dlq_record, is_record, message_record, produce_and_flush, watch_broker
from common.observability import (MESSAGES_CONSUMED, MESSAGES_DEAD_LETTERED, TRANSACTION_SECONDS, TRANSACTIONS,
                                  record_consumer_lag)
from common.runtime import Readiness, cyclic_gc_paused
from schemas.base import INT32_MAX, PageRange
from schemas.batch_events import BatchCancelled, BatchCreated, BatchFilesAdded, BatchRetryRequested, BatchSealed
from schemas.results import FailureReason, FileResult, FileStatus
from schemas.topics import Topic, UndecodableMessage, decode, encode
from services.persister import sql
from services.persister.progress import progress_from_row
from services.persister.settings import PersisterSettings

log = logging.getLogger(__name__)


@dataclass
class PolledWork:
    """One poll's records in order, each decoded or the reason it is not, and where each partition resumes."""

    records: list[tuple[Message, Any]] = field(default_factory=list)
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    first_offsets: dict[tuple[str, int], int] = field(default_factory=dict)

    def apart(self, topic: str) -> tuple["PolledWork", "PolledWork"]:
        """(the records of this topic, the others), each with the offsets of its partitions."""
        return (self._part(r for r in self.records if r[0].topic() == topic),
                self._part(r for r in self.records if r[0].topic() != topic))

    def lanes(self, count: int) -> list["PolledWork"]:
        """The poll split into at most `count` parts of whole partitions, as even in records as they go, each to be
        written in a transaction of its own beside the others (Postgres then works on as many cores)."""
        by_partition: dict[tuple[str, int], list[tuple[Message, Any]]] = {}
        for record in self.records:
            by_partition.setdefault((record[0].topic(), record[0].partition()), []).append(record)
        lanes: list[list[tuple[Message, Any]]] = [[] for _ in range(min(count, len(by_partition)))]
        for records in sorted(by_partition.values(), key=len, reverse=True):
            min(lanes, key=len).extend(records)
        return [self._part(records) for records in lanes]

    def _part(self, records: Iterable[tuple[Message, Any]]) -> "PolledWork":
        part = PolledWork(records=list(records))
        for msg, _ in part.records:
            tp = (msg.topic(), msg.partition())
            part.first_offsets[tp], part.next_offsets[tp] = self.first_offsets[tp], self.next_offsets[tp]
        return part


class Persister:
    def __init__(self, settings: PersisterSettings, consumer: Consumer, producer: Producer, pool: ConnectionPool) -> None:
        self._settings = settings
        self._consumer = consumer
        self._producer = producer
        self._pool = pool
        self._topics = {settings.topic_batch_events: Topic.BATCH_EVENTS, settings.topic_ocr_results: Topic.OCR_RESULTS}
        self.readiness = Readiness()  # not while Postgres or the broker is away

    @property
    def ready(self) -> bool:
        return bool(self.readiness)

    def run(self, stop: Event) -> None:
        watch_broker(self.readiness, self._settings, stop)
        watch_database(self.readiness, self._pool, stop)
        self._consumer.subscribe(list(self._topics), on_assign=self._on_assign, on_revoke=self._on_revoke,
                                 on_lost=self._on_lost)
        self.publish_pending()  # dead letters and snapshots committed before a crash but never sent
        backoff = self._settings.db_retry_backoff_s
        published_at = time.monotonic()
        with ThreadPoolExecutor(self._settings.persister_connections, thread_name_prefix="persist") as lanes:
            while not stop.is_set():
                messages = self._consumer.consume(self._settings.max_messages_per_transaction,
                                                  self._settings.poll_timeout_s)
                if not messages:
                    if time.monotonic() - published_at > 5.0:  # what a broker outage held back, even when idle
                        self.publish_pending()
                        published_at = time.monotonic()
                    continue
                # A poll decodes into a million acyclic objects (see cyclic_gc_paused). They die before collection
                # resumes: its first pass would walk them all (0.17 s for 500 results of 300 words).
                with cyclic_gc_paused():
                    error = self._persist_backlog(messages, lanes, stop)
                published_at = time.monotonic()
                if error is not None:  # Postgres away (or lanes in a deadlock): rewound, so nothing is lost
                    log.warning("persisting failed, will retry", extra={"error": str(error), "backoff_s": backoff})
                    stop.wait(backoff)
                    backoff = min(backoff * 2, 30.0)
                else:
                    backoff = self._settings.db_retry_backoff_s

    def _persist_backlog(self, messages: list[Message], lanes: ThreadPoolExecutor, stop: Event
                         ) -> psycopg.OperationalError | None:
        """Poll after poll, each written in its lanes while the next is read and decoded beside them (Postgres and
        Python on cores of their own), for as long as polls come full (a backlog; otherwise there is nothing to
        overlap, and cyclic GC resumes between polls). A poll that did not commit whole is rewound with the one
        read behind it, from where the DB says each partition resumes; the error if Postgres was away."""
        def write(work: PolledWork, full: bool) -> list[Future]:
            """The poll's batch events (few) commit first, here, and then its results: a retry asked for is written
            before that retry's results. Results of a full poll go in lanes side by side; a trickle's few in one
            transaction (in lanes they cost two transactions' CPU for one's work, and nothing waits on them)."""
            events, results = work.apart(self._settings.topic_batch_events)
            if events.records:
                positions, error = self._persist(events)
                if positions:  # not committed: its results are read again with it
                    return [_settled((positions | results.first_offsets, error))]
            count = self._settings.persister_connections if full else 1
            return [lanes.submit(self._persist, lane) for lane in results.lanes(count)]

        most = self._settings.max_messages_per_transaction
        work, reading_ahead = self._sort(messages), len(messages) == most
        writing = write(work, reading_ahead)
        while True:
            more = self._consumer.consume(most, self._settings.poll_timeout_s) \
                if reading_ahead and not stop.is_set() else []
            reading_ahead = len(more) == most
            following = self._sort(more)  # read and decoded while `work` is written
            outcomes = [lane.result() for lane in writing]
            resume_at = {tp: offset for positions, _ in outcomes for tp, offset in positions.items()}
            if resume_at:  # Postgres away, or an earlier owner got further: read on from where the DB says
                self._rewind(following.first_offsets | resume_at)
                return next((error for _, error in outcomes if error is not None), None)
            # Kafka's own commit only feeds lag monitoring; restarts resume from the DB offsets.
            positions = [TopicPartition(t, p, o) for (t, p), o in work.next_offsets.items()]
            if positions:
                self._consumer.commit(offsets=positions, asynchronous=True)
            writing = write(following, reading_ahead)
            self.publish_pending()
            record_consumer_lag(self._consumer, self._settings.persister_group, cached=True, positions=positions)
            if not writing:
                return None
            work = following

    def _sort(self, messages: list[Message]) -> PolledWork:
        work = PolledWork()
        for msg in messages:
            if not is_record(msg):
                continue
            MESSAGES_CONSUMED.labels(msg.topic()).inc()
            tp = (msg.topic(), msg.partition())
            work.first_offsets.setdefault(tp, msg.offset())
            work.next_offsets[tp] = msg.offset() + 1
            try:
                work.records.append((msg, decode(self._topics[msg.topic()], msg.value())))
            except UndecodableMessage as exc:
                work.records.append((msg, exc))
        return work

    def _persist(self, work: PolledWork) -> tuple[dict[tuple[str, int], int], psycopg.OperationalError | None]:
        """One lane of a poll (a thread of its own) in one DB transaction; where its partitions resume if it did not
        commit, and the error if Postgres was away.
        1. lock the stored offsets of the lane's partitions; if an earlier owner of one already got past this
           poll's first offset, write nothing and resume there
        2. the records in bulk under one savepoint; if Postgres refuses that for its data, roll it back and
           write each record in its own savepoint instead: one refused is rolled back alone, its file is written
           failed (result_refused) and the record goes into the DLQ outbox
        3. recount the touched batches, store the next offsets  4. commit
        (then publish_pending sends the outbox and the progress snapshots)"""
        started = time.perf_counter()
        try:
            with self._pool.connection() as conn, conn.transaction():
                stored = sql.lock_offsets(conn, self._settings.persister_group, work.first_offsets)
                ahead = {tp: stored[tp] for tp, first in work.first_offsets.items() if stored.get(tp, 0) > first}
                if ahead:
                    log.warning("records already persisted by an earlier owner, seeking past them",
                                extra={"positions": {f"{t}[{p}]": o for (t, p), o in ahead.items()}})
                    return work.first_offsets | ahead, None
                touched = self._write_records(conn, work.records)
                if touched:
                    sql.recount_batches(conn, touched)
                sql.store_offsets(conn, self._settings.persister_group, work.next_offsets)
        except psycopg.OperationalError as exc:  # Postgres away (or a deadlock between lanes): rewind and retry
            return work.first_offsets, exc
        elapsed = time.perf_counter() - started
        TRANSACTION_SECONDS.labels("persist").observe(elapsed)
        TRANSACTIONS.labels("persist", "committed").inc()
        log.info("records persisted", extra={"records": len(work.records), "batches": sorted(touched),
                                             "ms": round(elapsed * 1000, 1)})
        return {}, None

    def _write_records(self, conn: psycopg.Connection, records: list[tuple[Message, Any]]) -> set[str]:
        """Step 2: the batches touched."""
        decoded = [message for _, message in records if not isinstance(message, UndecodableMessage)]
        if decoded and sql.bulk_writable(m for m in decoded if isinstance(m, FileResult)):
            try:
                with conn.transaction():  # a savepoint: a refusal rolls back the bulk write alone
                    touched = self._write_in_bulk(conn, decoded)
            except sql.REFUSED_DATA as exc:
                log.warning("postgres refused the poll's bulk write; writing it record by record",
                            extra={"records": len(records), "error": str(exc)})
            else:
                records = [(msg, m) for msg, m in records if isinstance(m, UndecodableMessage)]
                return touched | self._write_one_by_one(conn, records)
        return self._write_one_by_one(conn, records)

    def _write_in_bulk(self, conn: psycopg.Connection, messages: list[Any]) -> set[str]:
        results = [m for m in messages if isinstance(m, FileResult)]
        for event in (m for m in messages if not isinstance(m, FileResult)):
            self._write_message(conn, event)  # batch events are few: one at a time, before the results they precede
        sql.write_file_results(conn, [r for r in results if r.part is None])
        for part in (r for r in results if r.part is not None):
            sql.write_file_result(conn, part)
        return {m.batch_id for m in messages}

    def _write_one_by_one(self, conn: psycopg.Connection, records: list[tuple[Message, Any]]) -> set[str]:
        return {batch_id for msg, message in records if (batch_id := self._write_record(conn, msg, message)) is not None}

    def _write_record(self, conn: psycopg.Connection, msg: Message, message: Any) -> str | None:
        """Write one record; the batch it touched, if any."""
        if isinstance(message, UndecodableMessage):
            return self._dead_letter(conn, msg, reason=str(message), error=message, kind="undecodable")
        try:
            with conn.transaction():  # a savepoint: a refusal rolls back this record alone
                return self._write_message(conn, message)
        except sql.REFUSED_DATA as exc:
            return self._dead_letter(conn, msg, reason=f"PostgreSQL refused the record: {exc}", error=exc,
                                     kind="refused")

    def _write_message(self, conn: psycopg.Connection, message: Any) -> str:
        if isinstance(message, FileResult):
            sql.write_file_result(conn, message)
        elif isinstance(message, BatchCreated):
            sql.upsert_batch_created(conn, message)
            sql.settle_files_at_creation(conn, message)  # rejected and deduplicated files end here, unread
        elif isinstance(message, BatchFilesAdded):
            sql.grow_batch(conn, message)
            sql.settle_files_at_creation(conn, message)
        elif isinstance(message, BatchSealed):
            sql.grow_batch(conn, message)
        elif isinstance(message, BatchCancelled):
            sql.mark_cancel_requested(conn, message)
        elif isinstance(message, BatchRetryRequested):
            waiting = sql.mark_retry_requested(conn, message)
            log.info("retry requested", extra={"batch_id": message.batch_id, "attempt": message.attempt,
                                               "files": waiting})
        return message.batch_id

    def _dead_letter(self, conn: psycopg.Connection, msg: Message, *, reason: str, error: Exception, kind: str
                     ) -> str | None:
        """Into the DLQ outbox with this transaction; a result that still names its file fails that file, so its
        batch counts it. The batch touched, if any."""
        reason = reason.replace("\x00", "")
        sql.add_dead_letter(conn, msg, dlq_record(msg, reason=reason, error=error, service="persister"))
        MESSAGES_DEAD_LETTERED.labels(msg.topic(), kind).inc()
        failed = salvaged_result(msg.value(), reason) if self._topics[msg.topic()] is Topic.OCR_RESULTS else None
        log.error("record dead-lettered", extra={"topic": msg.topic(), "partition": msg.partition(),
                                                 "offset": msg.offset(), "reason": reason, "kind": kind,
                                                 "batch_id": failed and failed.batch_id,
                                                 "file_id": failed and failed.file_id})
        if failed is None:
            return None
        try:
            with conn.transaction():
                sql.write_file_result(conn, failed)
        except sql.REFUSED_DATA as exc:
            log.error("the failed file row was refused too; dead-lettered only",
                      extra={"batch_id": failed.batch_id, "file_id": failed.file_id, "error": str(exc)})
            return None
        return failed.batch_id

    def publish_pending(self) -> None:
        """Send what the DB committed but the topics do not hold yet: dead letters, then progress snapshots.
        On failure they stay unpublished in the DB and go out on a later call, or after a restart."""
        try:
            self._publish_dead_letters()
            self._publish_unpublished_snapshots()
        except (psycopg.OperationalError, DeliveryFailed) as exc:
            log.warning("dead letters or progress not published yet, will retry", extra={"error": str(exc)})

    def _publish_dead_letters(self) -> None:
        """Oldest first, in rounds until none is left; each round marked published after its flush."""
        limit = self._settings.dlq_record_max_bytes
        while True:
            with self._pool.connection() as conn:
                rows = sql.unpublished_dead_letters(conn)
                if not rows:
                    return
                produce_and_flush(self._producer, [(self._settings.topic_ocr_dlq, key, fit_dlq_record(record, limit))
                                                   for _id, key, record in rows], timeout=30)
                sql.mark_dead_letters_published(conn, [row_id for row_id, _key, _record in rows])
            log.info("dead letters published", extra={"count": len(rows)})

    def _publish_unpublished_snapshots(self) -> None:
        """Versions make repeats harmless."""
        with self._pool.connection() as conn:
            rows = sql.unpublished_batches(conn)
            if not rows:
                return
            snapshots = [progress_from_row(row) for row in rows]
            produce_and_flush(self._producer, [message_record(self._settings.topic_batch_progress, p.batch_id, p)
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
        self.readiness.available("start")  # a member of the group now, reading from where Postgres says
        log.info("partitions assigned", extra={"positions": {f"{p.topic}[{p.partition}]": p.offset for p in partitions}})

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("partitions revoked", extra={"partitions": [f"{p.topic}[{p.partition}]" for p in partitions]})

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.warning("partitions lost", extra={"partitions": [f"{p.topic}[{p.partition}]" for p in partitions]})


# --- pure pieces the loop uses -----------------------------------------------------------------------------
def _settled(outcome: Any) -> Future:
    future: Future = Future()
    future.set_result(outcome)
    return future


_SALVAGED_CHARS = 500  # keeps salvaged ids well under Postgres' btree index row limit (2704 bytes)
_BIGINT_MAX = 2**63 - 1


def salvaged_result(value: bytes | None, reason: str) -> FileResult | None:
    """A refused ocr.results record that still names its batch, file and tenant → that file `failed`
    (result_refused, with the reason), so its batch counts it and completes. None if it names no file."""
    try:
        data = json.loads(value)
    except (TypeError, ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    text = {name: _plain_text(data.get(name)) for name in
            ("batch_id", "file_id", "tenant", "chunk_id", "original_name", "sha256", "content_type", "engine")}
    if not (text["batch_id"] and text["file_id"] and text["tenant"]):
        return None
    try:
        part = PageRange.model_validate(data.get("part")) if data.get("part") is not None else None
    except ValidationError:
        part = None  # the file is then failed whole
    return FileResult(**text, status=FileStatus.FAILED, error=reason, error_code=FailureReason.RESULT_REFUSED,
                      size=_bounded_int(data.get("size"), 0, _BIGINT_MAX, default=0),
                      attempt=_bounded_int(data.get("attempt"), 1, INT32_MAX, default=1), part=part)


def _plain_text(value: Any) -> str:
    """A JSON string as Postgres text: no NUL, no lone surrogate, capped. Anything else is empty."""
    if not isinstance(value, str):
        return ""
    return value.encode("utf-8", "replace").decode().replace("\x00", "")[:_SALVAGED_CHARS]


def _bounded_int(value: Any, low: int, high: int, *, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high else default


def fit_dlq_record(record: bytes, max_bytes: int) -> bytes:
    """The DlqRecord as produced: one too large for the DLQ topic leaves out the original value (it stays in
    the dlq_outbox table) and says so, rather than failing every publish after it."""
    if len(record) <= max_bytes:
        return record
    dead = decode(Topic.OCR_DLQ, record)
    size = len(base64.b64decode(dead.value_b64 or ""))
    return encode(dead.model_copy(update={"value_b64": None, "reason": f"{dead.reason} (the original value of "
                                          f"{size} bytes is left out, over {max_bytes} bytes; see dlq_outbox)"}))
