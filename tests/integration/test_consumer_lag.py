"""ocrstream_consumer_lag from a real consumer's positions and the broker's watermarks."""
import time
import uuid

import pytest
from confluent_kafka import OFFSET_BEGINNING, TopicPartition
from prometheus_client import REGISTRY

from common.kafka import build_consumer, build_producer, produce_and_flush
from common.observability import forget_consumer_lag, record_consumer_lag

pytestmark = pytest.mark.integration


def _lag(group: str, topic: str, partitions: int) -> float:
    return sum(REGISTRY.get_sample_value("ocrstream_consumer_lag",
                                         {"group": group, "topic": topic, "partition": str(p)}) or 0.0
               for p in range(partitions))


def test_lag_is_what_the_group_has_still_to_read(settings):
    topic, group = settings.topic_ocr_chunks, f"lag-{uuid.uuid4().hex[:8]}"
    producer = build_producer(settings, client_id="lag-test")
    produce_and_flush(producer, [(topic, f"k{i}".encode(), b"x") for i in range(10)], timeout=30)
    consumer = build_consumer(settings, group_id=group, client_id="lag-test")
    assignment = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(settings.topic_partitions)]
    consumer.assign(assignment)
    try:
        record_consumer_lag(consumer, group)
        assert _lag(group, topic, settings.topic_partitions) == 10, "nothing read yet: all of it"

        read, deadline = 0, time.monotonic() + 30
        while read < 4:
            assert time.monotonic() < deadline, f"read {read}/4"
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                read += 1
        record_consumer_lag(consumer, group)
        assert _lag(group, topic, settings.topic_partitions) == 6

        # Offsets kept outside Kafka (the persister's): the lag follows the positions it is given.
        stored = [TopicPartition(topic, p, 0) for p in range(settings.topic_partitions)]
        record_consumer_lag(consumer, group, stored)
        assert _lag(group, topic, settings.topic_partitions) == 10

        forget_consumer_lag(group, stored)
        assert REGISTRY.get_sample_value("ocrstream_consumer_lag", {"group": group, "topic": topic,
                                                                    "partition": "0"}) is None
    finally:
        consumer.close()
