"""The OCR worker: consume a chunk → OCR its files → produce one FileResult per file, exactly once.

Exactly-once is Kafka's consume-transform-produce transaction: the results and the chunk's consumed offset
commit together (send_offsets_to_transaction), and the group metadata fences zombie instances.
OCR runs before the transaction begins, so a slow chunk never runs into transaction.timeout.ms.
"""
import hashlib
import logging
import time
from threading import Event

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition
from minio import Minio
from minio.error import S3Error
from prometheus_client import Counter, Histogram

from common.embedding import Embedder
from common.errors import FatalError, KafkaErrorKind, classify_kafka_error
from common.kafka import dlq_record
from common.observability import MESSAGES_CONSUMED, MESSAGES_DEAD_LETTERED, TRANSACTION_SECONDS, TRANSACTIONS
from common.storage import get_object_bytes
from schemas.chunks import ChunkRequested, StoredFile
from schemas.results import FileResult, Timings
from schemas.topics import Topic, UndecodableMessage, decode, encode
from services.ocr_worker.engine import OcrEngine, OcrFailed, RecognizedPage, build_engine
from services.ocr_worker.pages import UndecodableFile, decode_pages
from services.ocr_worker.results import file_result, page_from_recognized
from services.ocr_worker.settings import WorkerSettings

log = logging.getLogger(__name__)

FILES_DONE = Counter("ocrstream_worker_files_total", "Files OCRed", ["status"])
FILE_SECONDS = Histogram("ocrstream_worker_file_seconds", "Fetch+decode+OCR+embed time per file",
                         buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120))


class ObjectStoreUnavailable(Exception):
    """Fetching failed for a reason that may pass (network, 5xx): retry the chunk."""


class ShutdownRequested(Exception):
    """Stopped while waiting to retry: nothing is committed, the chunk goes to the partition's next owner."""


class ChunkOcr:
    """The transform: a ChunkRequested → one FileResult per file. Knows nothing of Kafka."""

    def __init__(self, settings: WorkerSettings, s3: Minio, embedder: Embedder) -> None:
        self._settings = settings
        self._s3 = s3
        self._embedder = embedder
        self._engines: dict[str, OcrEngine] = {}

    def engine_for(self, languages: str) -> OcrEngine:
        """One engine per language set a batch asked for, its models loaded once. OcrFailed if not installed."""
        if languages not in self._engines:
            self._engines[languages] = build_engine(self._settings.engine, languages)
        return self._engines[languages]

    def close(self) -> None:
        for engine in self._engines.values():
            getattr(engine, "close", lambda: None)()

    def ocr_chunk(self, chunk: ChunkRequested, stop: Event) -> list[FileResult]:
        """Bounded retries on object-store errors; after the last one the chunk's files fail, never vanish."""
        for attempt in range(1, self._settings.fetch_attempts + 1):
            try:
                return [self.ocr_file(chunk, stored) for stored in chunk.files]
            except ObjectStoreUnavailable as exc:
                log.warning("object store unavailable", extra={"batch_id": chunk.batch_id, "chunk_id": chunk.chunk_id,
                                                               "attempt": attempt, "error": str(exc)})
                if attempt == self._settings.fetch_attempts:
                    reason = f"object store unavailable after {attempt} attempts: {exc}"
                    return [file_result(chunk, f, engine=self._settings.engine, error=reason) for f in chunk.files]
                if stop.wait(2.0 * attempt):
                    raise ShutdownRequested from exc
        raise AssertionError("unreachable")

    def ocr_file(self, chunk: ChunkRequested, stored: StoredFile) -> FileResult:
        fields = {"batch_id": chunk.batch_id, "chunk_id": chunk.chunk_id, "file_id": stored.file_id}
        started = time.perf_counter()
        timings = Timings()
        data = self._fetch(stored)
        timings.fetch_ms = _ms_since(started)
        error = None
        pages = []
        if data is None:
            error = f"the stored object {stored.bucket}/{stored.key} no longer exists; upload the file again"
        elif hashlib.sha256(data).hexdigest() != stored.sha256:
            error = "stored object does not match the sha256 recorded at upload; upload the file again"
        else:
            try:
                engine = self.engine_for(chunk.options.languages)
                recognized = self._recognize_pages(engine, data, stored, chunk, timings)
                t = time.perf_counter()
                embeddings = self._embedder.embed([p.text for p in recognized]) if chunk.options.embeddings else None
                timings.embed_ms = _ms_since(t)
                pages = [page_from_recognized(i + 1, p, embeddings[i] if embeddings else None)
                         for i, p in enumerate(recognized)]
            except (UndecodableFile, OcrFailed) as exc:
                error = str(exc)
        result = file_result(chunk, stored, engine=self._settings.engine, pages=pages, timings=timings, error=error,
                             embedding_model=self._embedder.model_name if chunk.options.embeddings else None)
        FILES_DONE.labels(result.status).inc()
        FILE_SECONDS.observe(time.perf_counter() - started)
        log.info("file ocred", extra=fields | {"status": result.status, "pages": len(pages), "error": error,
                                                  "ocr_ms": round(timings.ocr_ms, 1)})
        return result

    def _recognize_pages(self, engine: OcrEngine, data: bytes, stored: StoredFile, chunk: ChunkRequested,
                         timings: Timings) -> list[RecognizedPage]:
        """Decode and OCR page by page: only one page image is held at a time, whatever the PDF's length."""
        recognized = []
        pages = decode_pages(data, stored.content_type, pdf_dpi=chunk.options.pdf_dpi,
                             max_pages=self._settings.max_pages_per_file)
        while True:
            t = time.perf_counter()
            image = next(pages, None)
            timings.decode_ms += _ms_since(t)
            if image is None:
                return recognized
            t = time.perf_counter()
            recognized.append(engine.recognize(image))
            timings.ocr_ms += _ms_since(t)

    def _fetch(self, stored: StoredFile) -> bytes | None:
        """The object's bytes; None when it is gone (that file fails); ObjectStoreUnavailable when it may pass."""
        try:
            return get_object_bytes(self._s3, stored.bucket, stored.key)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchBucket"):
                return None
            raise ObjectStoreUnavailable(f"{exc.code}: {exc.message}") from exc
        except Exception as exc:  # connection refused, reset, timeouts
            raise ObjectStoreUnavailable(str(exc)) from exc

def _ms_since(t: float) -> float:
    return (time.perf_counter() - t) * 1000


class OcrWorker:
    def __init__(self, settings: WorkerSettings, consumer: Consumer, producer: Producer, ocr: ChunkOcr) -> None:
        self._settings = settings
        self._consumer = consumer
        self._producer = producer
        self._ocr = ocr
        self.ready = False

    def run(self, stop: Event) -> None:
        """The loop. Each chunk: OCR, then one transaction of results + consumed offset."""
        self._producer.init_transactions()  # fences any older instance with our transactional.id
        self._consumer.subscribe([self._settings.topic_ocr_chunks],
                                 on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost)
        while not stop.is_set():
            msg = self._consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().fatal():
                    raise FatalError(msg.error().str())
                log.warning("consumer error", extra={"error": msg.error().str()})
                continue
            MESSAGES_CONSUMED.labels(msg.topic()).inc()
            try:
                records = self._transform(msg, stop)
            except ShutdownRequested:
                self._rewind(msg)
                break
            try:
                self._commit_chunk(msg, records)
            except KafkaException as exc:
                kind = classify_kafka_error(exc)
                log.warning("transaction failed", extra={"kind": kind.value, "error": str(exc), **_position(msg)})
                if kind is KafkaErrorKind.FATAL:
                    raise FatalError(str(exc)) from exc
                self._producer.abort_transaction()
                TRANSACTIONS.labels("ocr_chunk", "aborted").inc()
                self._rewind(msg)

    def _transform(self, msg: Message, stop: Event) -> list[tuple[str, bytes | None, bytes]]:
        """A chunk → its results; an undecodable record → one DLQ record holding its bytes."""
        try:
            chunk: ChunkRequested = decode(Topic.OCR_CHUNKS, msg.value())
        except UndecodableMessage as exc:
            MESSAGES_DEAD_LETTERED.labels(msg.topic(), "undecodable").inc()
            log.error("undecodable chunk sent to DLQ", extra={"reason": str(exc), **_position(msg)})
            record = dlq_record(msg, reason=str(exc), error=exc, service="ocr_worker")
            return [(self._settings.topic_ocr_dlq, msg.key(), encode(record))]
        results = self._ocr.ocr_chunk(chunk, stop)
        return [(self._settings.topic_ocr_results, chunk.batch_id.encode(), encode(r)) for r in results]

    def _commit_chunk(self, msg: Message, records: list[tuple[str, bytes | None, bytes]]) -> None:
        """1. begin  2. produce the records  3. add the consumed offset  4. commit — all or nothing."""
        started = time.perf_counter()
        self._producer.begin_transaction()
        for topic, key, value in records:
            self._producer.produce(topic, value=value, key=key)
        next_offset = [TopicPartition(msg.topic(), msg.partition(), msg.offset() + 1)]
        self._producer.send_offsets_to_transaction(next_offset, self._consumer.consumer_group_metadata())
        self._commit_transaction()
        TRANSACTION_SECONDS.labels("ocr_chunk").observe(time.perf_counter() - started)
        TRANSACTIONS.labels("ocr_chunk", "committed").inc()
        log.info("chunk committed", extra={"records": len(records), **_position(msg)})

    def _commit_transaction(self, attempts: int = 3) -> None:
        """A retriable commit error (e.g. a timeout) leaves the outcome open: commit again, as librdkafka asks."""
        for attempt in range(1, attempts + 1):
            try:
                self._producer.commit_transaction()
                return
            except KafkaException as exc:
                if attempt == attempts or classify_kafka_error(exc) is not KafkaErrorKind.RETRIABLE:
                    raise

    def _rewind(self, msg: Message) -> None:
        self._consumer.seek(TopicPartition(msg.topic(), msg.partition(), msg.offset()))

    # Rebalance callbacks. Nothing is in flight across polls (each chunk commits before the next poll),
    # so there is nothing to flush on revoke; the committed offsets are the transaction's.
    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.ready = True  # a member of the group now, even if it got no partition
        log.info("partitions assigned", extra={"partitions": [p.partition for p in partitions]})

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("partitions revoked", extra={"partitions": [p.partition for p in partitions]})

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.warning("partitions lost", extra={"partitions": [p.partition for p in partitions]})


def _position(msg: Message) -> dict:
    return {"topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset(),
            "chunk_id": (msg.key() or b"").decode(errors="replace")}
