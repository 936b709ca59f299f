"""The persister on the real broker and Postgres: rows + offsets in one transaction, duplicates ignored,
undecodable records dead-lettered, restarts resume from the offsets stored in Postgres."""
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
import pytest
from confluent_kafka import Producer
from psycopg_pool import ConnectionPool

from common.db import build_pool
from common.kafka import build_consumer, build_producer, produce_and_flush, read_topic
from schemas.batch_events import BatchCreated, ChunkLayout
from schemas.progress import BatchProgress
from schemas.results import BoundingBox, FileResult, FileStatus, Page, Word
from schemas.topics import Topic, decode, encode
from services.persister import sql
from services.persister.persister import Persister
from services.persister.settings import PersisterSettings

pytestmark = pytest.mark.integration


def result(batch_id: str, file_id: str, *, status=FileStatus.OK) -> FileResult:
    words = [Word(text=f"w{i}", confidence=0.9, bbox=BoundingBox(x=i, y=0, width=5, height=5)) for i in range(4)]
    return FileResult(batch_id=batch_id, chunk_id=f"{batch_id}.00000", file_id=file_id, tenant="default",
                      status=status, original_name=f"{file_id}.png", sha256="0" * 64, size=1, content_type="image/png",
                      engine="fast", error="bad" if status is FileStatus.FAILED else None,
                      pages=[] if status is FileStatus.FAILED else
                      [Page(page_number=1, width=10, height=10, text=f"text of {file_id}", mean_confidence=0.9,
                            words=words, embedding=[0.0] * 511 + [1.0])])


@dataclass
class RunningPersister:
    pool: ConnectionPool
    thread: threading.Thread


@contextmanager
def running_persister(settings: PersisterSettings, producer: Producer | None = None):
    """The persister's loop on a thread, as __main__ runs it; stopped (and its consumer closed) on exit."""
    stop = threading.Event()
    with build_pool(settings, name="test-persister") as pool:
        consumer = build_consumer(settings, group_id=settings.persister_group, client_id="test-persister")
        persister = Persister(settings, consumer, producer or build_producer(settings, client_id="test-persister"), pool)
        thread = threading.Thread(target=persister.run, args=(stop,), daemon=True)
        thread.start()
        try:
            yield RunningPersister(pool, thread)
        finally:
            stop.set()
            thread.join(30)
            consumer.close()


def wait_for(query: str, params: tuple, expected, pool, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while True:
        with pool.connection() as conn:
            value = conn.execute(query, params).fetchone()
        if value == expected:
            return
        assert time.monotonic() < deadline, f"{query} gave {value}, wanted {expected}"
        time.sleep(0.1)  # poll interval of the deadline loop


def test_results_persist_once_and_progress_is_published(settings):
    settings = PersisterSettings(persister_group=f"p-{uuid.uuid4().hex}")
    batch = f"b{uuid.uuid4().hex[:8]}"
    producer = build_producer(settings, client_id="seed")
    records = [(settings.topic_ocr_results, batch.encode(), encode(result(batch, f"{batch}-f{i}"))) for i in range(3)]
    records.append((settings.topic_ocr_results, batch.encode(), encode(result(batch, f"{batch}-f0"))))  # duplicate
    records.append((settings.topic_ocr_results, batch.encode(), encode(result(batch, f"{batch}-f3", status=FileStatus.FAILED))))
    records.append((settings.topic_ocr_results, batch.encode(), b'{"not": "a result"}'))
    created = BatchCreated(batch_id=batch, tenant="default", total_files=4, chunks=[ChunkLayout(chunk_id="c", file_count=4)])
    records.append((settings.topic_batch_events, batch.encode(), encode(created)))
    produce_and_flush(producer, records, timeout=10)

    with running_persister(settings) as running:
        pool = running.pool
        wait_for("SELECT status, succeeded, failed FROM batches WHERE batch_id = %s", (batch,),
                 ("completed", 3, 1), pool)
        wait_for("SELECT count(*) = 0 FROM batches WHERE published_version < version", (), (True,), pool)
        with pool.connection() as conn:
            assert conn.execute("SELECT count(*) FROM files WHERE batch_id = %s", (batch,)).fetchone() == (4,)
            assert conn.execute("SELECT count(*) FROM words w JOIN files f USING (file_id) WHERE f.batch_id = %s",
                                (batch,)).fetchone() == (12,)
            stored = conn.execute("SELECT sum(next_offset) FROM consumer_offsets WHERE group_id = %s",
                                  (settings.persister_group,)).fetchone()[0]
            assert stored == 7  # every record consumed, counted once (one result partition + one events partition)

    dead = read_topic(settings, settings.topic_ocr_dlq)
    assert len(dead) == 1 and decode(Topic.OCR_DLQ, dead[0].value()).value_b64 is not None
    snapshots: list[BatchProgress] = [decode(Topic.BATCH_PROGRESS, m.value()) for m in read_topic(settings, settings.topic_batch_progress)]
    latest = max((s for s in snapshots if s.batch_id == batch), key=lambda s: s.version)
    assert (latest.status, latest.succeeded, latest.failed, latest.total_files) == ("completed", 3, 1, 4)


def test_a_batch_spread_over_partitions_is_written_in_lanes_and_counted_once(settings):
    """Results keyed by file, as the workers send them: one batch's files land on every partition, and the
    persister's lanes write them in transactions side by side that all count the same batch."""
    settings = PersisterSettings(persister_group=f"p-{uuid.uuid4().hex}", max_messages_per_transaction=40)
    batch, files = f"b{uuid.uuid4().hex[:8]}", 240
    created = BatchCreated(batch_id=batch, tenant="default", total_files=files,
                           chunks=[ChunkLayout(chunk_id="c", file_count=files)])
    records = [(settings.topic_batch_events, batch.encode(), encode(created))]
    records += [(settings.topic_ocr_results, f"{batch}-f{i}".encode(), encode(result(batch, f"{batch}-f{i}")))
                for i in range(files)]
    produce_and_flush(build_producer(settings, client_id="seed"), records, timeout=30)

    with running_persister(settings) as running:
        wait_for("SELECT status, succeeded FROM batches WHERE batch_id = %s", (batch,), ("completed", files),
                 running.pool)
        with running.pool.connection() as conn:
            assert conn.execute("SELECT count(*) FROM files WHERE batch_id = %s", (batch,)).fetchone() == (files,)
            written = conn.execute("SELECT count(*) FROM consumer_offsets WHERE group_id = %s AND topic = %s",
                                   (settings.persister_group, settings.topic_ocr_results)).fetchone()[0]
    assert written == settings.topic_partitions  # the batch came from every partition
    snapshots = [decode(Topic.BATCH_PROGRESS, m.value()) for m in read_topic(settings, settings.topic_batch_progress)]
    ours = sorted((s for s in snapshots if s.batch_id == batch), key=lambda s: s.version)
    assert (ours[-1].status, ours[-1].succeeded, ours[-1].processed_files) == ("completed", files, files)
    # Each lane counts after the lanes that committed before it: no version counts fewer files than an earlier one.
    assert [s.processed_files for s in ours] == sorted(s.processed_files for s in ours)


def test_a_poll_that_is_not_full_is_written_in_one_transaction(settings):
    """A chunk's few results (a poll that does not come full) are one transaction over all their partitions:
    lanes are for a backlog, and would cost a trickle two transactions for one's work."""
    settings = PersisterSettings(persister_group=f"p-{uuid.uuid4().hex}", max_messages_per_transaction=40,
                                 poll_timeout_s=2.0)  # long enough for one poll to take all six
    batch = f"b{uuid.uuid4().hex[:8]}"
    records = [(settings.topic_ocr_results, f"{batch}-f{i}".encode(), encode(result(batch, f"{batch}-f{i}")))
               for i in range(settings.topic_partitions)]
    produce_and_flush(build_producer(settings, client_id="seed"), records, timeout=10,
                      spread={settings.topic_ocr_results})  # one result on each partition

    with running_persister(settings) as running:
        wait_for("SELECT count(*) FROM files WHERE batch_id = %s", (batch,), (len(records),), running.pool)
        with running.pool.connection() as conn:
            partitions, transactions = conn.execute(
                "SELECT count(*), count(DISTINCT xmin::text) FROM consumer_offsets WHERE group_id = %s AND topic = %s",
                (settings.persister_group, settings.topic_ocr_results)).fetchone()
    assert (partitions, transactions) == (settings.topic_partitions, 1)


def test_a_recount_waits_for_another_transaction_on_its_batch_and_counts_that_ones_files(settings):
    """Two lanes commit files of one batch; the one that recounts second must count the first one's files too."""
    batch = f"b{uuid.uuid4().hex[:8]}"
    with build_pool(settings, name="test-recount", max_size=3) as pool:
        with pool.connection() as conn:  # the batch is known (the lanes' placeholder inserts would queue)
            conn.execute("INSERT INTO batches (batch_id, tenant) VALUES (%s, 'default')", (batch,))
        first, second = pool.getconn(), pool.getconn()
        try:
            sql.write_file_results(first, [result(batch, f"{batch}-1")])
            sql.write_file_results(second, [result(batch, f"{batch}-2")])
            sql.recount_batches(first, {batch})  # the batch row stays locked until `first` commits
            recount = threading.Thread(target=lambda: (sql.recount_batches(second, {batch}), second.commit()))
            recount.start()
            wait_for("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (second.info.backend_pid,),
                     ("Lock",), pool)
            first.commit()
            recount.join(30)
            wait_for("SELECT succeeded FROM batches WHERE batch_id = %s", (batch,), (2,), pool)
        finally:
            pool.putconn(first)
            pool.putconn(second)


def test_restart_resumes_from_the_offsets_stored_in_postgres(settings):
    settings = PersisterSettings(persister_group=f"p-{uuid.uuid4().hex}")
    batch = f"b{uuid.uuid4().hex[:8]}"
    producer = build_producer(settings, client_id="seed")
    produce_and_flush(producer, [(settings.topic_ocr_results, batch.encode(), encode(result(batch, f"{batch}-a")))], timeout=10)
    with running_persister(settings) as running:
        pool = running.pool
        wait_for("SELECT count(*) FROM files WHERE batch_id = %s", (batch,), (1,), pool)
    # If a restart re-read the topic from Kafka's start instead of the DB offsets, this row would come back.
    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.database_schema},public") as conn:
        conn.execute("DELETE FROM files WHERE file_id = %s", (f"{batch}-a",))
    produce_and_flush(producer, [(settings.topic_ocr_results, batch.encode(), encode(result(batch, f"{batch}-b")))], timeout=10)
    with running_persister(settings) as running:
        pool = running.pool
        wait_for("SELECT count(*) FROM files WHERE batch_id = %s", (batch,), (1,), pool)
        with pool.connection() as conn:
            assert conn.execute("SELECT file_id FROM files WHERE batch_id = %s", (batch,)).fetchone() == (f"{batch}-b",)
