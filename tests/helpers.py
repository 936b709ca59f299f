"""What several test modules share: reading a topic to its end, and counting a batch's rows."""
import re
import time
import uuid

import psycopg
from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, Message, TopicPartition

from common.kafka import PartitionEofTracker, build_consumer
from common.settings import Settings


def read_topic(settings: Settings, topic: str, *, expected: int = 0, isolation: str = "read_committed",
               deadline_s: float = 30.0) -> list[Message]:
    """Every record of every partition, read until EOF on all of them and at least `expected` records."""
    consumer = build_consumer(settings, group_id=f"test-reader-{uuid.uuid4().hex}", client_id="test-reader",
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
            assert time.monotonic() < deadline, f"{topic}: {len(records)}/{expected} records, caught up: {eof.caught_up}"
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



def file_row_counts(settings: Settings, batch_id: str) -> dict:
    """Rows per file, pages per file, and words-set integrity (each page's word_index is 0..n-1, no gaps)."""
    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.database_schema},public") as conn:
        files = conn.execute("SELECT original_name, count(*) FROM files WHERE batch_id = %s GROUP BY 1",
                             (batch_id,)).fetchall()
        file_ids = conn.execute("SELECT file_id, count(*) FROM files WHERE batch_id = %s GROUP BY 1",
                                (batch_id,)).fetchall()
        broken_word_sets = conn.execute(
            """SELECT w.file_id, w.page_number FROM words w JOIN files f USING (file_id) WHERE f.batch_id = %s
               GROUP BY 1, 2 HAVING count(*) <> max(word_index) + 1 OR min(word_index) <> 0""", (batch_id,)).fetchall()
        pages_without_file = conn.execute(
            "SELECT count(*) FROM pages p WHERE p.batch_id = %s AND NOT EXISTS "
            "(SELECT 1 FROM files f WHERE f.file_id = p.file_id)", (batch_id,)).fetchone()[0]
        counts = conn.execute("SELECT status, count(*) FROM files WHERE batch_id = %s GROUP BY 1", (batch_id,)).fetchall()
    return {"by_name": dict(files), "by_id": dict(file_ids), "broken_word_sets": broken_word_sets,
            "orphan_pages": pages_without_file, "by_status": dict(counts)}


def distinctive_phrase(line: str) -> str:
    return re.sub(r"\s+", " ", line).strip()
