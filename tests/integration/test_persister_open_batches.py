"""The persister and an open batch on the real broker and Postgres: the totals grow with BatchFilesAdded whether
the added files' results come before or after it, and the batch completes only once sealed."""
import uuid

import pytest

from common.kafka import build_producer, produce_and_flush, read_topic
from schemas.batch_events import BatchCreated, BatchFilesAdded, BatchSealed, ChunkLayout
from schemas.progress import BatchProgress
from schemas.topics import Topic, decode, encode
from services.persister.settings import PersisterSettings
from tests.integration.test_persister import result, running_persister, wait_for

pytestmark = pytest.mark.integration

_STATE = "SELECT status, total_files, total_chunks, succeeded, sealed, finished_at IS NOT NULL FROM batches" \
         " WHERE batch_id = %s"


def test_an_open_batch_grows_in_either_order_and_completes_only_once_sealed(settings) -> None:
    settings = PersisterSettings(persister_group=f"p-{uuid.uuid4().hex}")
    batch = f"b{uuid.uuid4().hex[:8]}"
    producer = build_producer(settings, client_id="seed")

    def send(*messages) -> None:
        produce_and_flush(producer, [(settings.topic_batch_events if isinstance(m, (BatchCreated, BatchFilesAdded,
                                                                                   BatchSealed))
                                      else settings.topic_ocr_results, batch.encode(), encode(m)) for m in messages],
                          timeout=30)

    def layout(n: int) -> list[ChunkLayout]:
        return [ChunkLayout(chunk_id=f"{batch}.{n:05d}", file_count=1)]

    with running_persister(settings) as persister:
        send(BatchCreated(batch_id=batch, tenant="default", total_files=2, chunks=layout(0) + layout(1), open=True),
             result(batch, "f0"), result(batch, "f1"))
        # Every file so far has a result, but the batch is open.
        wait_for(_STATE, (batch,), ("processing", 2, 2, 2, False, False), persister.pool)

        send(result(batch, "f2"))  # an added file's result before its BatchFilesAdded
        wait_for(_STATE, (batch,), ("processing", 2, 2, 3, False, False), persister.pool)
        send(BatchFilesAdded(batch_id=batch, tenant="default", total_files=4, total_chunks=4,
                             chunks=layout(2) + layout(3)))
        wait_for(_STATE, (batch,), ("processing", 4, 4, 3, False, False), persister.pool)

        send(BatchSealed(batch_id=batch, tenant="default", total_files=4, total_chunks=4))
        wait_for(_STATE, (batch,), ("processing", 4, 4, 3, True, False), persister.pool)  # f3 still to come
        send(result(batch, "f3"), result(batch, "f3"))  # the last result after the seal, and a duplicate
        wait_for(_STATE, (batch,), ("completed", 4, 4, 4, True, True), persister.pool)

        with persister.pool.connection() as conn:
            assert conn.execute("SELECT count(*) FROM files WHERE batch_id = %s", (batch,)).fetchone() == (4,)

    snapshots = [decode(Topic.BATCH_PROGRESS, r.value())
                 for r in read_topic(settings, settings.topic_batch_progress, expected=1)]
    mine = [p for p in snapshots if isinstance(p, BatchProgress) and p.batch_id == batch]
    last = max(mine, key=lambda p: p.version)
    assert (last.status, last.sealed, last.total_files, last.succeeded) == ("completed", True, 4, 4)
    # Published while all its files so far were done: open, not completed.
    assert any((p.status, p.sealed, p.total_files, p.succeeded) == ("processing", False, 2, 2) for p in mine)
    assert [p for p in mine if p.status == "completed"] and all(p.sealed for p in mine if p.status == "completed")
