"""Results the broker lost are run again (services/ingest/repair.py), through the whole pipeline on the real stack.

The loss is made the way Kafka makes it (a transaction whose markers were skipped): the workers' group has
committed its offset past a chunk whose results never became readable. Here the offset is committed while the
workers are stopped, so nothing reads that chunk; the batch then stalls one chunk short until ingest runs the
chunk's files again, and ends with one row per file."""
import uuid

import psycopg
import pytest
from confluent_kafka import KafkaException, Producer, TopicPartition

from common.kafka import build_consumer, produce_and_flush, read_topic
from schemas.topics import Topic, decode
from services.ingest.repair import has_unread_records
from tests.chaos.harness import assert_exactly_once, pipeline_on, wait_until

pytestmark = pytest.mark.e2e


def test_a_chunk_whose_results_were_lost_is_run_again_and_the_batch_completes_exactly_once(
        stack_endpoints, tmp_path):
    with pipeline_on(stack_endpoints, tmp_path, OCRSTREAM_STALLED_BATCH_S="2") as pipeline:
        workers = [s for name, s in pipeline.services.items() if name.startswith("ocr_worker")]
        for worker in workers:
            worker.stop()
        batch_id, total = pipeline.submit(12, "lost-results")  # 6 chunks of 2

        s = pipeline.settings
        records = read_topic(s, s.topic_ocr_chunks, expected=6)
        first = min(records, key=lambda m: (m.partition(), m.offset()))
        lost = decode(Topic.OCR_CHUNKS, first.value())
        skip_lost_chunk(s, first.topic(), first.partition(), first.offset())

        for worker in workers:
            worker.start()
        for worker in workers:
            worker.wait_ready()
        assert_exactly_once(pipeline, batch_id, total)

        with psycopg.connect(s.database_url, options=f"-c search_path={s.database_schema},public") as conn:
            chunk_of = dict(conn.execute("SELECT file_id, chunk_id FROM files WHERE batch_id = %s", (batch_id,)))
        lost_ids = {f.file_id for f in lost.files}
        assert {chunk_of[f].split(".")[1].startswith("redo") for f in lost_ids} == {True}, \
            "the lost chunk's files were read by a repair chunk"
        assert not any(".redo" in chunk_of[f] for f in chunk_of.keys() - lost_ids), "nothing else was run again"
        assert '"lost results: files run again"' in pipeline.services["ingest"].log_tail(400)


def skip_lost_chunk(settings, topic: str, partition: int, offset: int) -> None:
    """What a transaction with skipped markers leaves: the workers' group committed past the chunk. (Refused
    while the stopped workers' membership has not ended yet.)"""
    consumer = build_consumer(settings, group_id=settings.worker_group, client_id="test-lost-chunk")

    def committed() -> bool:
        try:
            consumer.commit(offsets=[TopicPartition(topic, partition, offset + 1)], asynchronous=False)
            return True
        except KafkaException:
            return False
    try:
        wait_until(committed, 60, "the workers' group to take an offset from outside it")
    finally:
        consumer.close()


def test_unread_records_are_found_from_before_a_record_and_none_past_it(settings):
    topic = settings.topic_ocr_dlq  # of this test's namespace: empty until written here
    produce_and_flush(Producer({"bootstrap.servers": settings.kafka_bootstrap_servers}),
                      [(topic, b"k", b"one record")], timeout=30)
    consumer = build_consumer(settings, group_id=f"probe-{uuid.uuid4().hex[:8]}", client_id="test-probe",
                              **{"enable.partition.eof": True})
    try:
        [written] = [m for m in read_topic(settings, topic, expected=1)]
        partitions = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        before = [TopicPartition(topic, p, 0) for p in partitions]
        past = [TopicPartition(topic, p, written.offset() + 1 if p == written.partition() else 0) for p in partitions]
        assert has_unread_records(consumer, before, 30)
        assert not has_unread_records(consumer, past, 30)
    finally:
        consumer.close()
