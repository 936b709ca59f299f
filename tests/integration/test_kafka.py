"""The real broker's guarantees that ocrstream builds on: transactions, EOS offsets, compaction."""
import time
import uuid
from collections import Counter

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import ConfigResource, NewTopic

from common.kafka import build_admin, build_consumer, build_producer, ensure_topics, produce_and_flush, read_topic
from schemas.topics import Topic

pytestmark = pytest.mark.integration


def test_ensure_topics_is_idempotent_and_compacts_progress(settings):
    assert ensure_topics(settings) == []  # the fixture created them already
    admin = build_admin(settings)
    resource = ConfigResource("topic", settings.topic(Topic.BATCH_PROGRESS))
    config = admin.describe_configs([resource])[resource].result(10)
    assert config["cleanup.policy"].value == "compact"
    topics = admin.list_topics(timeout=10).topics
    assert all(len(topics[settings.topic(t)].partitions) == 3 for t in Topic)


def test_read_committed_sees_only_committed_transactions(settings):
    topic = settings.topic_ocr_results
    producer = build_producer(settings, client_id="t", transactional_id=f"t-{uuid.uuid4().hex}")
    producer.init_transactions()
    producer.begin_transaction()
    producer.produce(topic, key=b"k", value=b"committed")
    producer.commit_transaction()
    producer.begin_transaction()
    producer.produce(topic, key=b"k", value=b"aborted")
    producer.flush()  # the aborted record really reaches the log
    producer.abort_transaction()

    assert [m.value() for m in read_topic(settings, topic)] == [b"committed"]
    assert sorted(m.value() for m in read_topic(settings, topic, isolation="read_uncommitted")) == [b"aborted", b"committed"]


def test_send_offsets_to_transaction_commits_exactly_the_consumed_positions(settings):
    source, sink, group = settings.topic_ocr_chunks, settings.topic_ocr_results, f"g-{uuid.uuid4().hex}"
    seed = build_producer(settings, client_id="seed")
    for i in range(30):
        seed.produce(source, key=f"k{i}".encode(), value=f"v{i}".encode())
    seed.flush(10)

    consumer = build_consumer(settings, group_id=group, client_id="ctp")
    producer = build_producer(settings, client_id="ctp", transactional_id=f"ctp-{uuid.uuid4().hex}")
    producer.init_transactions()
    consumer.subscribe([source])
    consumed, positions, deadline = 0, {}, time.monotonic() + 60
    while consumed < 30:
        assert time.monotonic() < deadline
        batch = consumer.consume(10, 1.0)
        if not batch:
            continue
        producer.begin_transaction()
        for msg in batch:
            producer.produce(sink, key=msg.key(), value=msg.value().upper())
            positions[msg.partition()] = msg.offset() + 1
        producer.send_offsets_to_transaction(consumer.position(consumer.assignment()),
                                             consumer.consumer_group_metadata())
        producer.commit_transaction()
        consumed += len(batch)
    consumer.close()

    checker = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": group})
    committed = checker.committed([TopicPartition(source, p) for p in range(3)], timeout=10)
    checker.close()
    assert {tp.partition: tp.offset for tp in committed if tp.offset >= 0} == positions
    assert sorted(m.value() for m in read_topic(settings, sink)) == sorted(f"V{i}".encode() for i in range(30))


def test_compacted_topic_keeps_the_latest_value_per_key(settings):
    topic = f"{settings.topic_batch_progress}.compaction"
    admin = build_admin(settings)
    config = {"cleanup.policy": "compact", "segment.bytes": "1048576", "segment.ms": "100",
              "min.cleanable.dirty.ratio": "0.01", "min.compaction.lag.ms": "0", "delete.retention.ms": "100"}
    admin.create_topics([NewTopic(topic, 1, 1, config=config)])[topic].result(10)
    producer = build_producer(settings, client_id="compaction", **{"linger.ms": 0})
    for version in range(1, 201):
        for key in ("a", "b", "c"):
            producer.produce(topic, key=key.encode(), value=f"{key}:{version}".encode())
        producer.flush(10)
    # Only rolled segments are cleaned: wait until the cleaner has removed most of the history.
    deadline = time.monotonic() + 90
    while True:
        records = read_topic(settings, topic)
        if len(records) < 600 / 2 or time.monotonic() > deadline:
            break
        producer.produce(topic, key=b"roll", value=b"x")  # a new record rolls the segment past segment.ms
        producer.flush(10)
        time.sleep(0.5)  # poll interval of the deadline loop: the log cleaner is a broker-side background job
    assert len(records) < 300, f"log cleaner did not compact in 90 s ({len(records)} records)"
    latest = {m.key(): m.value() for m in records}
    assert latest[b"a"] == b"a:200" and latest[b"b"] == b"b:200" and latest[b"c"] == b"c:200"


def test_spread_records_fall_evenly_on_every_partition(settings):
    """A batch's chunks go round-robin over the chunk topic's partitions, whatever their keys hash to."""
    topic = settings.topic_ocr_chunks  # 3 partitions
    producer = build_producer(settings, client_id="t")
    produce_and_flush(producer, [(topic, b"same-key", str(i).encode()) for i in range(9)], timeout=30, spread={topic})

    per_partition = Counter(m.partition() for m in read_topic(settings, topic))
    assert per_partition == {0: 3, 1: 3, 2: 3}
