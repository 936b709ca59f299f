"""Kafka client builders, topic bootstrap, delivery checks, EOF tracking and DLQ records."""
import base64
import logging
import random
import re
import threading
import time
import uuid
from collections.abc import Container, Iterable
from enum import Enum

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from common.errors import DeliveryFailed, FatalError
from common.runtime import Readiness
from common.settings import Settings
from schemas.dlq import DlqHeader, DlqRecord
from schemas.base import Message as MessageModel
from schemas.topics import Topic, encode, message_headers

log = logging.getLogger(__name__)


class RepeatsDropped(logging.Filter):
    """While a broker is away librdkafka tries to connect every few tens of milliseconds and logs every try: one
    line per message (its timings aside) per window_s is kept, with how many were dropped before it."""

    _TIMINGS = re.compile(r"\d+(\.\d+)?ms")

    def __init__(self, window_s: float = 10.0) -> None:
        super().__init__()
        self._window_s = window_s
        self._seen: dict[str, tuple[float, int]] = {}  # message → when last kept, how many dropped since
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key, now = self._TIMINGS.sub("", record.getMessage()), time.monotonic()
        with self._lock:
            kept_at, dropped = self._seen.get(key, (float("-inf"), 0))
            if now - kept_at < self._window_s:
                self._seen[key] = (kept_at, dropped + 1)
                return False
            if len(self._seen) > 1000:
                self._seen.clear()
            self._seen[key] = (now, 0)
        if dropped:
            record.repeats_dropped = dropped
        return True


# librdkafka's own warnings go through Python logging, so they come out as JSON lines like everything else.
_LIBRDKAFKA_LOG = logging.getLogger("librdkafka")
_LIBRDKAFKA_LOG.addFilter(RepeatsDropped())

# Per-topic configs at creation. batch.progress is a changelog of absolute snapshots: compact it.
TOPIC_CONFIGS: dict[Topic, dict[str, str]] = {
    Topic.BATCH_EVENTS: {},
    Topic.OCR_CHUNKS: {},
    Topic.OCR_RESULTS: {"max.message.bytes": "16777216"},  # a 100-page PDF's words and vectors
    Topic.OCR_DLQ: {"retention.ms": str(30 * 24 * 3600 * 1000), "max.message.bytes": "16777216"},
    Topic.BATCH_PROGRESS: {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1", "segment.ms": "600000"},
}


def ensure_topics(settings: Settings, *, timeout: float = 30.0) -> list[str]:
    """Create every topic that is missing (idempotent). Returns the names it created."""
    admin = build_admin(settings)
    existing = set(admin.list_topics(timeout=timeout).topics)
    missing = [
        NewTopic(settings.topic(t), settings.topic_partitions, settings.topic_replication_factor, config=cfg)
        for t, cfg in TOPIC_CONFIGS.items()
        if settings.topic(t) not in existing
    ]
    created = []
    for name, future in (admin.create_topics(missing, operation_timeout=timeout).items() if missing else []):
        try:
            future.result(timeout)
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:  # another process won the race
                raise
    return created


def build_admin(settings: Settings) -> AdminClient:
    return AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers, "logger": _LIBRDKAFKA_LOG,
                        **settings.kafka_config})


def build_producer(settings: Settings, *, client_id: str, transactional_id: str | None = None, **overrides) -> Producer:
    config = {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "client.id": client_id,
        "logger": _LIBRDKAFKA_LOG,
        "enable.idempotence": True,  # no duplicates or reordering from producer retries
        "acks": "all",
        "linger.ms": 5,  # small batches: ingest answers only after a flush
        "message.max.bytes": 16777216,  # matches the results topic's max.message.bytes
        "compression.type": "zstd",
        **settings.kafka_config,  # security (SASL, TLS) and tuning, from OCRSTREAM_KAFKA_CONFIG
    }
    if transactional_id:
        config["transactional.id"] = transactional_id
    config.update(overrides)
    return Producer(config)


def build_consumer(settings: Settings, *, group_id: str, client_id: str, **overrides) -> Consumer:
    config = {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "group.id": group_id,
        "client.id": client_id,
        "logger": _LIBRDKAFKA_LOG,
        "isolation.level": "read_committed",  # never see aborted or in-flight transactional records
        "enable.auto.commit": False,  # offsets move only with the work they account for
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 10000,  # broker minimum is 6000 on the dev stack
        # A joining worker gets its partitions in the second round of a cooperative rebalance, which the others
        # learn of by heartbeat: librdkafka's 3 s default left a new worker idle that long.
        "heartbeat.interval.ms": 1000,
        "max.poll.interval.ms": 600000,  # OCR of a chunk can take minutes
        # fetch.wait.max.ms stays librdkafka's 500: a long poll returns as soon as a record arrives, and 50 ms made
        # every idle consumer fetch 20 times a second, a third of a core of the broker's on 2 cores.
        "fetch.max.bytes": 33554432,
        "max.partition.fetch.bytes": 16777216,
        **settings.kafka_config,  # security (SASL, TLS) and tuning, from OCRSTREAM_KAFKA_CONFIG
    }
    config.update(overrides)
    return Consumer(config)


Headers = list[tuple[str, bytes]]
Record = tuple[str, bytes | None, bytes, Headers]  # topic, key, value, headers


def message_record(topic: str, key: str | bytes | None, message: MessageModel) -> Record:
    """A contract message as a record to produce: encoded, with its schema/version/tenant/batch headers."""
    return topic, key.encode() if isinstance(key, str) else key, encode(message), message_headers(message)


def produce_and_flush(producer: Producer, records: Iterable[Record | tuple[str, bytes | None, bytes]], *,
                      timeout: float, spread: Container[str] = ()) -> None:
    """Produce (topic, key, value[, headers]) records and wait for every acknowledgement; DeliveryFailed otherwise.
    Records of the `spread` topics go round-robin over the topic's partitions from a random one, not by key: a
    batch's chunks then fall evenly on the workers (hashing 6 chunk ids over 6 partitions leaves some with 3 and
    others idle)."""
    failures: list[str] = []
    pending = 0
    turn = random.randrange(1 << 16)

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        nonlocal pending
        pending -= 1
        if err is not None:
            failures.append(err.str())

    for topic, key, value, *headers in records:
        where = {}
        if topic in spread and (count := _partition_count(producer, topic)):
            where, turn = {"partition": turn % count}, turn + 1
        while True:
            try:
                producer.produce(topic, value=value, key=key, headers=headers[0] if headers else None,
                                 on_delivery=on_delivery, **where)
                pending += 1
                break
            except BufferError:  # local queue full: let deliveries drain, then go on
                producer.poll(0.1)
    producer.flush(timeout)
    # Count this call's own records, not flush()'s queue length: a shared producer (ingest) also holds
    # other requests' records, which must not fail this one.
    if failures or pending:
        raise DeliveryFailed(f"{len(failures)} record(s) failed, {pending} unacknowledged after {timeout} s: "
                             f"{failures[:3]}")


_partition_counts: dict[str, int] = {}


def _partition_count(producer: Producer, topic: str) -> int | None:
    """The topic's partition count, looked up once per process; None (key hashing) while the broker cannot say."""
    if topic not in _partition_counts:
        try:
            partitions = producer.list_topics(topic, timeout=5).topics[topic].partitions
        except (KafkaException, KeyError):
            return None
        if not partitions:
            return None
        _partition_counts[topic] = len(partitions)
    return _partition_counts[topic]


class KafkaErrorKind(Enum):
    RETRIABLE = "retriable"  # try the same operation again
    ABORT = "abort"  # abort the transaction and begin again
    FATAL = "fatal"  # this client is unusable (e.g. fenced): build a new one
    REFUSED = "refused"  # the broker refuses these very records (too large, invalid): trying again cannot help


_REFUSED_CODES = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE,
                            KafkaError.INVALID_RECORD, KafkaError.INVALID_MSG_SIZE})


def classify_kafka_error(exc: KafkaException) -> KafkaErrorKind:
    """The one sorting of the Kafka client's errors, after librdkafka's transactional API documentation."""
    error: KafkaError = exc.args[0]
    if error.fatal():
        return KafkaErrorKind.FATAL
    if error.code() in _REFUSED_CODES:
        return KafkaErrorKind.REFUSED
    if error.txn_requires_abort():
        return KafkaErrorKind.ABORT
    if error.retriable():
        return KafkaErrorKind.RETRIABLE
    # Non-retriable, non-fatal errors inside a transaction leave it in doubt: aborting is always safe.
    return KafkaErrorKind.ABORT


def is_record(msg: Message | None) -> bool:
    """Whether a polled message is a record to process. A consumer error is logged (librdkafka retries by itself),
    or raised as FatalError when the client is unusable."""
    if msg is None:
        return False
    if (error := msg.error()) is None:
        return True
    if error.fatal():
        raise FatalError(error.str())
    log.warning("consumer error", extra={"error": error.str()})
    return False


def watch_broker(readiness: Readiness, settings: Settings, stop: threading.Event, every_s: float = 2.0) -> None:
    """Keep readiness's "broker" current: a metadata request every `every_s`, from a thread and a client of its
    own, since the loop may be blocked in a flush, a transaction or an OCR when the broker goes away (and the
    client's "all brokers down" never reaches poll()). The thread ends with `stop`. It asks about one topic: the
    whole cluster's metadata costs the broker and this process in proportion to the cluster (3 ms for 233 topics
    here, 0.3 ms for one)."""
    admin = build_admin(settings)

    def watch() -> None:
        while not stop.wait(every_s):
            try:
                admin.list_topics(settings.topic_batch_events, timeout=every_s)
                readiness.available("broker")
            except KafkaException as exc:
                readiness.wait_for("broker", error=str(exc))

    threading.Thread(target=watch, name="broker-watch", daemon=True).start()


class PartitionEofTracker:
    """'Caught up' = end-of-partition seen on every assigned partition (needs enable.partition.eof)."""

    def __init__(self) -> None:
        self._assigned: set[tuple[str, int]] = set()
        self._at_eof: set[tuple[str, int]] = set()

    def assigned(self, partitions: Iterable[TopicPartition]) -> None:
        self._assigned.update((p.topic, p.partition) for p in partitions)

    def revoked(self, partitions: Iterable[TopicPartition]) -> None:
        for p in partitions:
            self._assigned.discard((p.topic, p.partition))
            self._at_eof.discard((p.topic, p.partition))

    def reached_eof(self, topic: str, partition: int) -> None:
        self._at_eof.add((topic, partition))

    @property
    def caught_up(self) -> bool:
        return bool(self._assigned) and self._assigned <= self._at_eof


def read_topic(settings: Settings, topic: str, *, expected: int = 0, isolation: str = "read_committed",
               deadline_s: float = 30.0) -> list[Message]:
    """Every record of every partition, read until EOF on all of them and at least `expected` records
    (TimeoutError after deadline_s). For tools and tests: a consumer group of its own, nothing committed."""
    consumer = build_consumer(settings, group_id=f"reader-{uuid.uuid4().hex}", client_id="topic-reader",
                              **{"enable.partition.eof": True, "isolation.level": isolation})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        assignment = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions]
        consumer.assign(assignment)
        eof = PartitionEofTracker()
        eof.assigned(assignment)
        records: list[Message] = []
        deadline = time.monotonic() + deadline_s
        while not (eof.caught_up and len(records) >= expected):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: {len(records)}/{expected} records, caught up: {eof.caught_up}")
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    eof.reached_eof(msg.topic(), msg.partition())
                    continue
                raise KafkaException(msg.error())
            records.append(msg)
        return records
    finally:
        consumer.close()


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def dlq_record(msg: Message, *, reason: str, error: BaseException | str, service: str, attempts: int = 1,
               file_ids: list[str] | None = None) -> DlqRecord:
    """The original record, whole, with why it could not be processed (`error`: the exception or its kind)."""
    return DlqRecord(
        source_topic=msg.topic(),
        partition=msg.partition(),
        offset=msg.offset(),
        key_b64=_b64(msg.key()),
        value_b64=_b64(msg.value()),
        headers=[DlqHeader(key=k, value_b64=_b64(v)) for k, v in (msg.headers() or [])],
        reason=reason,
        error_class=error if isinstance(error, str) else type(error).__name__,
        service=service,
        attempts=attempts,
        file_ids=file_ids or [],
    )
