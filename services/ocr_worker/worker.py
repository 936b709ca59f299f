"""The OCR worker: consume a chunk → OCR its files → produce one FileResult per file, exactly once.

Exactly-once is Kafka's consume-transform-produce transaction: the results and the chunk's consumed offset
commit together (send_offsets_to_transaction), and the group metadata fences zombie instances.
OCR runs in a supervised child process before the transaction begins; meanwhile the loop keeps polling, so a slow
chunk never runs into max.poll.interval.ms or transaction.timeout.ms. Records that polling returns meanwhile are
held, in order, and taken next; only once a few are held is the assignment paused. (Pausing purges librdkafka's
fetched records and resuming fetches them again: per chunk, that stall would halve a fast pipeline's rate.)
Nothing one file or one record does can stop a partition: a file that crashes, hangs or blows memory fails
alone after its tries; a chunk whose transform keeps raising goes to the DLQ; a broker away is waited out.
A chunk's objects are fetched concurrently, and the held chunks' while this one is OCRed; only their bytes are
fetched ahead, each chunk itself is taken in its own turn and transaction. When another worker has run out of
work, the files of a chunk not yet started go half to it (handover.py).
"""
import hashlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Container
from concurrent.futures import Future
from concurrent.futures import wait as wait_for_futures
from dataclasses import dataclass, field
from threading import Event

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition
from prometheus_client import Counter, Histogram

from common.errors import FileFailed
from common.kafka import (KafkaErrorKind, Record, classify_kafka_error, dlq_record, is_record, message_record,
                          watch_broker)
from common.observability import (MESSAGES_CONSUMED, MESSAGES_DEAD_LETTERED, TRANSACTION_SECONDS, TRANSACTIONS,
                                  forget_consumer_lag, record_consumer_lag)
from common.runtime import Readiness
from common.storage import STORE_ERRORS, ObjectMissing, ObjectStore
from schemas.chunks import ChunkRequested, StoredFile
from schemas.results import FailureReason, FileResult, Timings
from schemas.topics import Topic, UndecodableMessage, decode
from services.ocr_worker.handover import IdleWorkers, idle_claim
from services.ocr_worker.parts import page_range_work_items, split_result
from services.ocr_worker.prefetch import ObjectPrefetcher
from services.ocr_worker.results import cancelled_result, file_result
from services.ocr_worker.settings import WorkerSettings
from services.ocr_worker.supervisor import (EmbedTask, FileRefused, OcrSupervisor, OcrTask, OcrTryFailed,
                                             SplitNeeded)

log = logging.getLogger(__name__)

FILES_DONE = Counter("ocrstream_worker_files_total", "Files OCRed", ["status"])
FILE_SECONDS = Histogram("ocrstream_worker_file_seconds", "Fetch+decode+OCR time per file (a chunk's pages "
                         "are embedded together, after its files)",
                         buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120))
OCR_TRIES_LOST = Counter("ocrstream_worker_ocr_tries_lost_total", "OCR tries lost to a crash, hang or OOM", ["reason"])
FILES_HANDED_OVER = Counter("ocrstream_worker_files_handed_over_total",
                            "Files of a chunk, not yet started, handed to an idle worker's partition")
PRODUCERS_REBUILT = Counter("ocrstream_worker_producers_rebuilt_total", "Transactional producers rebuilt in-process")
HOLD_BEFORE_PAUSE = 4  # records held while a chunk is in hand before the assignment is paused


class ChunkAbandoned(Exception):
    """Stop requested, or the chunk's partition was revoked mid-chunk: commit nothing, the next owner redoes it."""


class ChunkRetry(Exception):
    """The transform raised unexpectedly; the chunk is read again (bounded by chunk_attempts)."""


class TransactionCallHung(Exception):
    """A transactional call outlived its own timeout (librdkafka issues 5456 and 5511: a stale group coordinator
    after a broker restart keeps send_offsets_to_transaction waiting forever). That producer is given up."""


class RecordsRefused(Exception):
    """The broker refuses the chunk's records themselves (e.g. too large): trying them again cannot help."""


@dataclass
class ChunkOutcome:
    """What one chunk produced: results, page-range work items, and the files that kept failing (for the DLQ)."""

    results: list[FileResult] = field(default_factory=list)
    work_items: list[ChunkRequested] = field(default_factory=list)
    dead: dict[str, str] = field(default_factory=dict)  # file_id → why it kept failing
    tries: int = 1  # how often the dead ones were tried
    rest: list[tuple[ChunkRequested, int]] = field(default_factory=list)  # files not started → partition


class ChunkOcr:
    """The transform: a ChunkRequested → its outcome. Knows nothing of Kafka; `wait(seconds)` keeps the caller
    alive (and raises to abandon the chunk) whenever this waits."""

    def __init__(self, settings: WorkerSettings, objects: ObjectStore, supervisor: OcrSupervisor,
                 readiness: Readiness) -> None:
        self._settings = settings
        self._readiness = readiness  # not ready while the object store is away
        self._objects = objects
        self._supervisor = supervisor
        self._ahead = ObjectPrefetcher(objects.get_bytes, threads=settings.fetch_concurrency,
                                       max_bytes=settings.prefetch_max_bytes)

    def prefetch(self, chunks: list[ChunkRequested]) -> None:
        """Fetch these chunks' objects ahead, in order (the chunk about to be OCRed first); drop any other."""
        self._ahead.want(stored for chunk in chunks for stored in chunk.files)

    def close(self) -> None:
        self._ahead.close()

    def ocr_chunk(self, chunk: ChunkRequested, wait: Callable[[float], None],
                  partitions_for_rest: Callable[[], tuple[int, int] | None] = lambda: None) -> ChunkOutcome:
        """`partitions_for_rest`, asked before each file while two or more are still to start: (this worker's
        partition, an idle worker's) to end the chunk there, the files not started split between the two."""
        outcome = ChunkOutcome(tries=self._settings.ocr_attempts)
        for started, stored in enumerate(chunk.files):
            rest = chunk.files[started:]
            if len(rest) >= 2 and (partitions := partitions_for_rest()):
                half = len(rest) // 2
                outcome.rest = [(chunk.model_copy(update={"files": files}), partition)
                                for files, partition in zip((rest[:half], rest[half:]), partitions)]
                break
            self._ocr_file(chunk, stored, wait, outcome)
        if chunk.options.embeddings:
            self._embed_pages(outcome.results, wait, {"batch_id": chunk.batch_id, "chunk_id": chunk.chunk_id})
        # Split only now: the embeddings are part of a result's size.
        outcome.results = [part for result in outcome.results
                           for part in split_result(result, self._settings.max_result_bytes)]
        return outcome

    def _embed_pages(self, results: list[FileResult], wait: Callable[[float], None], fields: dict) -> None:
        """Every page of the chunk embedded in one call: the model's weights are read once for all of them (10
        short pages: 2.6 ms each, against 4.3 ms one by one). Each file is charged its pages' share of the time."""
        pages = [page for result in results for page in result.pages]
        if not pages:
            return
        started = time.perf_counter()
        vectors = self._ask_child(EmbedTask(texts=[page.text for page in pages]), wait, fields)
        for page, vector in zip(pages, vectors, strict=True):
            page.embedding = vector
        per_page_ms = (time.perf_counter() - started) * 1000 / len(pages)
        for result in results:
            result.timings.embed_ms = per_page_ms * len(result.pages)

    def cancelled_chunk(self, chunk: ChunkRequested) -> ChunkOutcome:
        """Every file of the chunk cancelled, unread: its batch was cancelled before the chunk started."""
        return ChunkOutcome(results=[cancelled_result(chunk, f, engine=self._settings.engine) for f in chunk.files])

    def failed_chunk(self, chunk: ChunkRequested, code: FailureReason, reason: str, tries: int) -> ChunkOutcome:
        """Every file of the chunk failed with the same reason, and all of them for the DLQ."""
        results = [self._failed(chunk, f, code, reason) for f in chunk.files]
        return ChunkOutcome(results=results, dead={f.file_id: reason for f in chunk.files}, tries=tries)

    def _ocr_file(self, chunk: ChunkRequested, stored: StoredFile, wait: Callable[[float], None],
                  outcome: ChunkOutcome) -> None:
        fields = {"batch_id": chunk.batch_id, "chunk_id": chunk.chunk_id, "file_id": stored.file_id}
        started = time.perf_counter()
        try:
            data = self._fetch(stored, wait)
            fetch_ms = (time.perf_counter() - started) * 1000
            task = OcrTask(data=data, content_type=stored.content_type, options=chunk.options, pages=stored.pages,
                           split_above=self._settings.pages_per_work_item)
            answer = self._ask_child(task, wait, fields)
        except FileFailed as exc:
            answer = FileRefused(exc.code, str(exc))
        except OcrTryFailed as exc:  # every try lost: the file fails, and the DLQ keeps it for a replay
            answer = FileRefused(exc.code, f"{exc} (after {self._settings.ocr_attempts} tries)")
            outcome.dead[stored.file_id] = answer.reason
        if isinstance(answer, SplitNeeded):
            outcome.work_items += page_range_work_items(chunk, stored, answer.total_pages,
                                                        self._settings.pages_per_work_item)
            log.info("file split into page ranges", extra=fields | {"pages": answer.total_pages})
            return
        if isinstance(answer, FileRefused):
            result = self._failed(chunk, stored, answer.code, answer.reason)
        else:
            answer.timings.fetch_ms = fetch_ms
            result = file_result(chunk, stored, engine=self._settings.engine, pages=answer.pages,
                                 timings=answer.timings,
                                 embedding_model=self._settings.embedder if chunk.options.embeddings else None)
        outcome.results.append(result)
        FILES_DONE.labels(result.status).inc()
        FILE_SECONDS.observe(time.perf_counter() - started)
        log.info("file ocred", extra=fields | {"status": result.status, "pages": len(result.pages),
                                                  "error_code": result.error_code, "error": result.error})

    def _ask_child(self, task: OcrTask | EmbedTask, wait: Callable[[float], None], fields: dict):
        """Up to ocr_attempts tries, each in a healthy child; OcrTryFailed after the last (for an EmbedTask,
        the chunk's transform then raises: the chunk is tried again, then dead-lettered)."""
        for attempt in range(1, self._settings.ocr_attempts + 1):
            try:
                return self._supervisor.ask(task, keep_alive=lambda: wait(0))
            except OcrTryFailed as exc:
                OCR_TRIES_LOST.labels(exc.code.value).inc()
                log.warning("ocr try lost", extra=fields | {"attempt": attempt, "reason": exc.code.value,
                                                           "error": str(exc)[-500:]})
                if attempt == self._settings.ocr_attempts:
                    raise
        raise AssertionError("unreachable")

    def _failed(self, chunk: ChunkRequested, stored: StoredFile, code: FailureReason, reason: str) -> FileResult:
        return file_result(chunk, stored, engine=self._settings.engine, error=reason, error_code=code,
                           timings=Timings())

    def _fetch(self, stored: StoredFile, wait: Callable[[float], None]) -> bytes:
        """The object's bytes (fetched ahead, or now), checked against the sha256 taken at upload. A store that
        does not answer is waited out however long it is away (not ready meanwhile): its outage is no file's fault,
        and failing the files would leave their users to resubmit them."""
        ahead, backoff = self._ahead.take(stored), 0.5
        while True:
            try:
                data = self._fetched(ahead, wait) if ahead is not None else \
                    self._objects.get_bytes(stored.bucket, stored.key)
                break
            except ObjectMissing as exc:
                raise FileFailed(f"the stored object {stored.bucket}/{stored.key} no longer exists; upload the "
                                 "file again", FailureReason.OBJECT_MISSING) from exc
            except STORE_ERRORS as exc:  # connection refused, reset, timeouts, 5xx
                self._readiness.wait_for("object_store", error=str(exc)[-500:], file_id=stored.file_id)
            ahead = None  # a failed fetch ahead: the retries fetch here
            wait(backoff)
            backoff = min(backoff * 2, 10.0)
        self._readiness.available("object_store")
        if hashlib.sha256(data).hexdigest() != stored.sha256:
            raise FileFailed("stored object does not match the sha256 recorded at upload; upload the file again",
                             FailureReason.OBJECT_CHANGED)
        return data

    @staticmethod
    def _fetched(ahead: Future, wait: Callable[[float], None]) -> bytes:
        """A fetch ahead's bytes, the consumer kept alive while it is still under way."""
        while not wait_for_futures([ahead], timeout=0.5).done:
            wait(0)
        return ahead.result()


class OcrWorker:
    def __init__(self, settings: WorkerSettings, consumer: Consumer, new_producer: Callable[[], Producer],
                 ocr: ChunkOcr, readiness: Readiness, cancelled: Container[str] = frozenset(),
                 idle_workers: IdleWorkers | None = None) -> None:
        self._settings = settings
        self._cancelled = cancelled  # batch ids whose chunks not yet started are skipped
        self._consumer = consumer
        self._new_producer = new_producer  # same transactional.id each time: a new one fences the old
        self._producer: Producer | None = None
        self._ocr = ocr
        self._stop = Event()
        self._current: tuple[str, int] | None = None  # the partition of the chunk in hand
        self._lost: set[tuple[str, int]] = set()  # revoked or lost while a chunk was in hand
        self._held: deque[Message] = deque()  # polled, not yet taken: the next chunks, in order
        self._paused = False
        self._chunk_failures: dict[tuple[str, int, int], int] = {}
        self._lag_reported_at = 0.0
        self._idle_workers = idle_workers  # None: chunks are never handed over
        self._idle_said = False  # "idle" committed since the last record taken
        self._handing_to: tuple[int, int] | None = None  # (idle worker's partition, files) the chunk in hand gives
        self.readiness = readiness  # not while the broker or the object store is away, or no producer can commit

    @property
    def ready(self) -> bool:
        return bool(self.readiness)

    def run(self, stop: Event) -> None:
        """The loop. Each chunk: pause, OCR (polling on), one transaction of results + consumed offset, resume."""
        self._stop = stop
        watch_broker(self.readiness, self._settings, stop)
        self._consumer.subscribe([self._settings.topic_ocr_chunks],
                                 on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost)
        while not stop.is_set():
            self._report_lag()
            if self._producer is None:
                self._restore_producer()
                continue
            if not self._held:
                self._say_idle()
            msg = self._held.popleft() if self._held else self._consumer.poll(0.5)
            if not is_record(msg):
                continue
            self._idle_said = False
            MESSAGES_CONSUMED.labels(msg.topic()).inc()
            self._current, self._lost = (msg.topic(), msg.partition()), set()
            try:
                try:
                    self._keep_alive()  # holds the next record if the consumer has it: its objects are fetched ahead
                    self._commit_chunk(msg, self._transform(msg))
                except RecordsRefused as exc:
                    self._commit_chunk(msg, self._failed_records(msg, FailureReason.RESULT_TOO_LARGE, str(exc), 1))
            except ChunkRetry:
                self._rewind(msg)
            except ChunkAbandoned as exc:
                log.info("chunk abandoned, the partition's next owner redoes it", extra={"why": str(exc),
                                                                                        **_position(msg)})
            finally:
                self._current, self._handing_to = None, None
                if self._paused:
                    self._consumer.resume(self._consumer.assignment())
                    self._paused = False

    def _transform(self, msg: Message) -> list[Record]:
        """A chunk → its records; an undecodable record or a chunk that keeps raising → the DLQ, its files failed."""
        try:
            chunk: ChunkRequested = decode(Topic.OCR_CHUNKS, msg.value())
        except UndecodableMessage as exc:
            MESSAGES_DEAD_LETTERED.labels(msg.topic(), "undecodable").inc()
            log.error("undecodable chunk sent to DLQ", extra={"reason": str(exc), **_position(msg)})
            return [message_record(self._settings.topic_ocr_dlq, msg.key(),
                                   dlq_record(msg, reason=str(exc), error=exc, service="ocr_worker"))]
        if chunk.batch_id in self._cancelled and not any(f.pages for f in chunk.files):
            # Page-range work items belong to a file already being read: they finish, like a running chunk.
            log.info("chunk of a cancelled batch skipped", extra={"batch_id": chunk.batch_id, **_position(msg)})
            return self._records(msg, chunk, self._ocr.cancelled_chunk(chunk))
        position = (msg.topic(), msg.partition(), msg.offset())
        self._ocr.prefetch([chunk, *filter(None, map(_decoded_chunk, self._held))])
        try:
            outcome = self._ocr.ocr_chunk(chunk, self._wait, lambda: self._partitions_for_rest(msg))
        except ChunkAbandoned:
            raise
        except Exception as exc:  # a bug, not bad input: a bounded number of tries, then the DLQ
            tries = self._chunk_failures[position] = self._chunk_failures.get(position, 0) + 1
            log.exception("transform raised", extra={"tries": tries, **_position(msg)})
            if tries < self._settings.chunk_attempts:
                raise ChunkRetry from exc
            outcome = self._ocr.failed_chunk(chunk, FailureReason.TRANSFORM_ERROR,
                                             f"{type(exc).__name__}: {exc} (after {tries} tries)", tries)
        self._chunk_failures.pop(position, None)
        return self._records(msg, chunk, outcome)

    def _failed_records(self, msg: Message, code: FailureReason, reason: str, tries: int) -> list[Record]:
        chunk: ChunkRequested = decode(Topic.OCR_CHUNKS, msg.value())
        return self._records(msg, chunk, self._ocr.failed_chunk(chunk, code, reason, tries))

    def _records(self, msg: Message, chunk: ChunkRequested, outcome: ChunkOutcome) -> list[Record]:
        s = self._settings
        # Keyed by file: a file's parts and attempts stay in order on one partition, while a batch's files spread
        # over all of them, for the persister to write side by side.
        records = [message_record(s.topic_ocr_results, r.file_id, r) for r in outcome.results]
        records += [message_record(s.topic_ocr_chunks, item.chunk_id, item) for item in outcome.work_items]
        records += [(*message_record(s.topic_ocr_chunks, rest.chunk_id, rest), partition)
                    for rest, partition in outcome.rest]
        if outcome.rest:
            (kept, _), (given, there) = outcome.rest
            self._handing_to = (there, len(given.files))
            log.info("rest of chunk handed over", extra={"batch_id": chunk.batch_id, "to_partition": there,
                                                         "files_kept": len(kept.files),
                                                         "files_handed_over": len(given.files), **_position(msg)})
        if outcome.dead:
            MESSAGES_DEAD_LETTERED.labels(msg.topic(), "kept_failing").inc()
            reason = "; ".join(f"{file_id}: {why}" for file_id, why in outcome.dead.items())
            codes = sorted({r.error_code.value for r in outcome.results if r.file_id in outcome.dead and r.error_code})
            record = dlq_record(msg, reason=reason[:4000], error=",".join(codes), service="ocr_worker",
                                attempts=outcome.tries, file_ids=list(outcome.dead))
            records.append(message_record(s.topic_ocr_dlq, msg.key(), record))
            log.error("files sent to DLQ", extra={"batch_id": chunk.batch_id, "file_ids": list(outcome.dead),
                                                  **_position(msg)})
        return records

    def _commit_chunk(self, msg: Message, records: list[Record]) -> None:
        """1. begin  2. produce the records  3. add the consumed offset  4. commit — all or nothing.
        On a broker error: abort (or rebuild the producer) and commit the same records again, never redoing the
        OCR; a commit whose answer was lost is recognized by the group's committed offset."""
        backoff, in_doubt = 0.5, False
        while True:
            self._keep_alive()
            try:
                if in_doubt and self._committed_past(msg):
                    self.readiness.available("producer")  # the loop builds a new one if need be
                    return
                if self._producer is None:
                    self._producer = self._start_producer()
                self._transact(msg, records)
                self.readiness.available("producer")
                if self._handing_to is not None:
                    self._idle_workers.handed_over(self._handing_to[0])
                    FILES_HANDED_OVER.inc(self._handing_to[1])
                return
            except (KafkaException, TransactionCallHung) as exc:
                in_doubt = True
                self.readiness.wait_for("producer", error=str(exc))
                if self._recover_producer(exc, msg) is KafkaErrorKind.REFUSED:
                    raise RecordsRefused(str(exc)) from exc
            self._wait(backoff)
            backoff = min(backoff * 2, 5.0)

    def _transact(self, msg: Message, records: list[Record]) -> None:
        started = time.perf_counter()
        timeout = self._settings.transaction_call_timeout_s
        self._producer.begin_transaction()
        for topic, key, value, headers, *partition in records:  # a partition only for the rest of a chunk
            self._producer.produce(topic, value=value, key=key, headers=headers,
                                   **({"partition": partition[0]} if partition else {}))
        next_offset = [TopicPartition(msg.topic(), msg.partition(), msg.offset() + 1)]
        self._bounded(self._producer.send_offsets_to_transaction, next_offset,
                      self._consumer.consumer_group_metadata(), timeout)
        self._bounded(self._producer.commit_transaction, timeout)
        TRANSACTION_SECONDS.labels("ocr_chunk").observe(time.perf_counter() - started)
        TRANSACTIONS.labels("ocr_chunk", "committed").inc()
        log.info("chunk committed", extra={"records": len(records), **_position(msg)})

    def _bounded(self, call: Callable, *args):
        """The call's result, or TransactionCallHung if it is still running well past its own timeout."""
        outcome: dict = {}

        def run() -> None:
            try:
                outcome["value"] = call(*args)
            except BaseException as exc:  # handed to the waiting thread as it is
                outcome["error"] = exc

        thread = threading.Thread(target=run, name="transaction-call", daemon=True)
        thread.start()
        thread.join(self._settings.transaction_call_timeout_s + 5)
        if thread.is_alive():
            raise TransactionCallHung(f"{getattr(call, '__name__', call)} still waiting after "
                                      f"{self._settings.transaction_call_timeout_s + 5:g} s")
        if "error" in outcome:
            raise outcome["error"]
        return outcome.get("value")

    def _recover_producer(self, exc: KafkaException | TransactionCallHung, msg: Message) -> KafkaErrorKind:
        """Abort the open transaction; a producer that is fenced, fatal, hung or cannot abort is replaced
        in-process (the new one's init_transactions aborts whatever the old one left open). Returns the kind."""
        kind = KafkaErrorKind.FATAL if isinstance(exc, TransactionCallHung) else classify_kafka_error(exc)
        TRANSACTIONS.labels("ocr_chunk", "aborted").inc()
        log.warning("transaction failed", extra={"kind": kind.value, "error": str(exc), **_position(msg)})
        if self._producer is None:  # not built yet: the broker is still away
            return kind
        if kind is not KafkaErrorKind.FATAL:
            try:
                self._bounded(self._producer.abort_transaction, self._settings.transaction_call_timeout_s)
                return kind
            except (KafkaException, TransactionCallHung) as abort_exc:
                log.warning("abort failed, rebuilding the producer", extra={"error": str(abort_exc)})
        self._producer = None  # the next try builds a new one
        PRODUCERS_REBUILT.inc()
        return kind

    def _restore_producer(self) -> None:
        """A producer (none yet, or one given up) is built before anything else is read, not at the next commit.
        A transaction given up may hold a partition's consumed offset pending, and a read_committed consumer cannot
        start that partition until it is settled (UNSTABLE_OFFSET_COMMIT, retried for as long as it lasts): the
        new producer's init_transactions aborts that transaction at once."""
        try:
            self._producer = self._start_producer()
            self.readiness.available("producer")
        except (KafkaException, TransactionCallHung) as exc:
            self.readiness.wait_for("producer", error=str(exc))
            try:
                self._wait(1.0)
            except ChunkAbandoned:
                pass  # stop requested

    def _start_producer(self) -> Producer:
        producer = self._new_producer()
        self._bounded(producer.init_transactions, self._settings.transaction_call_timeout_s)  # fences older ones
        return producer

    def _partitions_for_rest(self, msg: Message) -> tuple[int, int] | None:
        """(this chunk's partition, an idle worker's) when the chunk's files not started should be split so."""
        if self._idle_workers is None:
            return None
        mine = {tp.partition for tp in self._consumer.assignment() if tp.topic == msg.topic()}
        there = self._idle_workers.partition_for_the_rest(mine)
        return None if there is None else (msg.partition(), there)

    def _say_idle(self) -> None:
        """Nothing in hand or held and every partition read to its end: commit the positions with an idle claim
        as metadata, where a busy worker looks for one to hand the rest of its chunk to (once per idle spell)."""
        if self._idle_workers is None or self._idle_said or self._held or not self.readiness:
            return  # (not ready: e.g. the broker away, where a commit would wait for it)
        assignment = self._consumer.assignment()
        claim = idle_claim(tp.partition for tp in assignment)
        offsets = []
        for tp in self._consumer.position(assignment) if assignment else []:
            low, high = self._consumer.get_watermark_offsets(tp, cached=True)
            # Nothing read from it since it was assigned: at its end only if it holds no record.
            at = tp.offset if tp.offset >= 0 else (high if 0 <= low == high else None)
            if at is None or high < 0 or at < high:
                return
            offsets.append(TopicPartition(tp.topic, tp.partition, at, metadata=claim))
        if not offsets:
            return
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
            self._idle_said = True
        except KafkaException as exc:  # e.g. a rebalance under way: said at the next empty poll
            log.debug("idle not said", extra={"error": str(exc)})

    def _committed_past(self, msg: Message) -> bool:
        tp = TopicPartition(msg.topic(), msg.partition())
        [committed] = self._consumer.committed([tp], timeout=self._settings.transaction_call_timeout_s)
        return committed.offset > msg.offset()

    def _keep_alive(self) -> None:
        """While a chunk is in hand: poll (group membership, rebalance callbacks); a record polled is held for its
        turn, and once a few are held the assignment is paused so that polling takes no more."""
        if self._stop.is_set():
            raise ChunkAbandoned("stop requested")
        msg = self._consumer.poll(0)
        if is_record(msg):
            self._held.append(msg)
        if len(self._held) >= HOLD_BEFORE_PAUSE and not self._paused:
            # librdkafka resumes each partition after the last record it handed out: the held ones stay next.
            self._consumer.pause(self._consumer.assignment())
            self._paused = True
        if self._current in self._lost:
            raise ChunkAbandoned("partition revoked")

    def _wait(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        self._keep_alive()
        while time.monotonic() < deadline:
            self._stop.wait(min(0.5, max(deadline - time.monotonic(), 0)))
            self._keep_alive()

    def _report_lag(self) -> None:
        if time.monotonic() - self._lag_reported_at >= 5.0:
            record_consumer_lag(self._consumer, self._settings.worker_group, cached=True)
            self._lag_reported_at = time.monotonic()

    def _rewind(self, msg: Message) -> None:
        """Read the partition again from this record (its records held are read again too)."""
        self._drop_held({(msg.topic(), msg.partition())})
        self._consumer.seek(TopicPartition(msg.topic(), msg.partition(), msg.offset()))

    def _drop_held(self, partitions: set[tuple[str, int]]) -> None:
        self._held = deque(m for m in self._held if (m.topic(), m.partition()) not in partitions)

    # Rebalance callbacks. A partition revoked while its chunk is in hand abandons that chunk, and its held
    # records are dropped: its new owner redoes them, and this worker's transaction, if it got that far, would be
    # refused by the group anyway.
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.readiness.available("start")  # a member of the group now, even if it got no partition
        consumer.incremental_assign(partitions)
        # A partition paused when it was lost stays paused when it comes back (librdkafka keeps the flag), and
        # would never be read again; one assigned while the assignment is paused waits like the rest.
        if partitions:
            (consumer.pause if self._paused else consumer.resume)(partitions)
        log.info("partitions assigned", extra={"partitions": [p.partition for p in partitions]})

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._forget(partitions)
        forget_consumer_lag(self._settings.worker_group, partitions)
        log.info("partitions revoked", extra={"partitions": [p.partition for p in partitions]})

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._forget(partitions)
        log.warning("partitions lost", extra={"partitions": [p.partition for p in partitions]})

    def _forget(self, partitions: list[TopicPartition]) -> None:
        gone = {(p.topic, p.partition) for p in partitions}
        self._lost |= gone
        self._drop_held(gone)


def _decoded_chunk(msg: Message) -> ChunkRequested | None:
    try:
        return decode(Topic.OCR_CHUNKS, msg.value())
    except UndecodableMessage:
        return None  # the DLQ's, in its own turn


def _position(msg: Message) -> dict:
    return {"topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset(),
            "chunk_id": (msg.key() or b"").decode(errors="replace")}
