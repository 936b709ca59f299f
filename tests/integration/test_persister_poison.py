"""Poison records on the real broker and Postgres: none stops the persister.

Each poison is followed by a good record of another batch on the same partition. The persister keeps running,
the good record is persisted, the poisoned file ends `failed` (result_refused), the DLQ topic holds the original
bytes with the reason, and every batch's counts equal its file rows. Also: file parts, the replace rule, and a
dead letter committed but not yet produced when the persister stopped.
"""
import base64
import json
import uuid

import pytest

from common.kafka import build_producer, read_topic
from schemas.batch_events import BatchCreated, ChunkLayout
from schemas.dlq import DlqRecord
from schemas.results import FailureReason, FileResult, FileStatus
from schemas.topics import Topic, decode, encode
from services.persister.settings import PersisterSettings
from tests.integration.test_persister import result, running_persister, wait_for

pytestmark = pytest.mark.integration


def new_batch_id() -> str:
    return f"b{uuid.uuid4().hex[:8]}"


def created(batch: str, total_files: int) -> bytes:
    return encode(BatchCreated(batch_id=batch, tenant="default", total_files=total_files,
                               chunks=[ChunkLayout(chunk_id=f"{batch}.00000", file_count=total_files)]))


def forged(batch: str, file_id: str, change) -> bytes:
    """A result as raw JSON, changed past what the contract (or Postgres) accepts, as a broken producer sends it."""
    message = result(batch, file_id).model_dump(mode="json")
    change(message)
    return json.dumps(message).encode()


def produce_in_order(settings, records: list[tuple[str, str, bytes]]) -> None:
    """(topic, key, value) records onto partition 0 of each topic, in order: a poison sits before the good record."""
    producer = build_producer(settings, client_id="seed")
    for topic, key, value in records:
        producer.produce(topic, value=value, key=key.encode(), partition=0)
    assert producer.flush(10) == 0


def wait_consumed(settings: PersisterSettings, running, records: int) -> None:
    """Until the offsets stored with the rows account for `records` records (one partition per topic used)."""
    wait_for("SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets WHERE group_id = %s",
             (settings.persister_group,), (records,), running.pool)


def assert_counts_match_file_rows(pool) -> None:
    with pool.connection() as conn:
        mismatched = conn.execute(
            """SELECT b.batch_id, b.succeeded, b.failed, b.skipped, count(f.file_id)
               FROM batches b LEFT JOIN files f USING (batch_id) GROUP BY b.batch_id
               HAVING b.succeeded + b.failed + b.skipped <> count(f.file_id)""").fetchall()
    assert mismatched == []


def dead_letters(settings: PersisterSettings, expected: int) -> list[DlqRecord]:
    records = [decode(Topic.OCR_DLQ, m.value()) for m in read_topic(settings, settings.topic_ocr_dlq, expected=expected)]
    assert len(records) == expected
    return records


def persister_settings() -> PersisterSettings:
    return PersisterSettings(persister_group=f"p-{uuid.uuid4().hex}")


def _page(message: dict) -> dict:
    return message["pages"][0]


POISONS = {
    # Refused by the contract now: they take the salvage path (the file named in the JSON is failed).
    "duplicate-page": (lambda m: m["pages"].append(dict(_page(m))), "page numbers repeat"),
    "3-d-embedding": (lambda m: _page(m).update(embedding=[1.0, 0.0, 0.0]), "embedding"),
    "width-2^40": (lambda m: _page(m).update(width=2**40), "width"),
    "page-2^31": (lambda m: _page(m).update(page_number=2**31), "page_number"),
    # Pass the contract: psycopg refuses the NUL (sha256 is not free text) before Postgres sees it; Postgres
    # refuses a size beyond bigint, which aborts the transaction up to the record's savepoint.
    "nul-in-sha256": (lambda m: m.update(sha256="0" * 63 + "\x00"), "PostgreSQL refused the record"),
    "size-2^70": (lambda m: m.update(size=2**70), "bigint out of range"),
}


@pytest.mark.parametrize("poison", POISONS)
def test_a_poisoned_result_fails_its_file_and_the_partition_goes_on(settings, poison):
    change, reason_part = POISONS[poison]
    settings = persister_settings()
    poisoned, good = new_batch_id(), new_batch_id()
    poison_bytes = forged(poisoned, f"{poisoned}-bad", change)
    produce_in_order(settings, [
        (settings.topic_batch_events, poisoned, created(poisoned, 2)),
        (settings.topic_batch_events, good, created(good, 1)),
        (settings.topic_ocr_results, poisoned, encode(result(poisoned, f"{poisoned}-ok"))),
        (settings.topic_ocr_results, poisoned, poison_bytes),
        (settings.topic_ocr_results, good, encode(result(good, f"{good}-ok"))),
    ])
    with running_persister(settings) as running:
        wait_for("SELECT status, succeeded, failed FROM batches WHERE batch_id = %s", (good,), ("completed", 1, 0),
                 running.pool)
        wait_for("SELECT status, succeeded, failed FROM batches WHERE batch_id = %s", (poisoned,),
                 ("completed", 1, 1), running.pool)
        with running.pool.connection() as conn:
            status, code, error = conn.execute("SELECT status, error_code, error FROM files WHERE file_id = %s",
                                               (f"{poisoned}-bad",)).fetchone()
        assert (status, code) == ("failed", FailureReason.RESULT_REFUSED) and reason_part in error
        assert_counts_match_file_rows(running.pool)
        wait_for("SELECT count(*) FROM dlq_outbox WHERE published_at IS NULL", (), (0,), running.pool)
        assert running.thread.is_alive()  # no crash, so no crash loop
    [dead] = dead_letters(settings, expected=1)
    assert base64.b64decode(dead.value_b64) == poison_bytes and reason_part in dead.reason
    assert (dead.source_topic, dead.partition, dead.offset, dead.service) == (settings.topic_ocr_results, 0, 1, "persister")


EVENT_POISONS = {
    "nul-in-tenant": (b'"tenant":"default"', b'"tenant":"de\\u0000fault"'),
    "total-files-2^40": (b'"total_files":1', b'"total_files":1099511627776'),
}


@pytest.mark.parametrize("poison", EVENT_POISONS)
def test_a_batch_event_postgres_refuses_is_dead_lettered_and_the_next_batch_persists(settings, poison):
    settings = persister_settings()
    poisoned, good = new_batch_id(), new_batch_id()
    poison_bytes = created(poisoned, 1).replace(*EVENT_POISONS[poison])
    produce_in_order(settings, [
        (settings.topic_batch_events, poisoned, poison_bytes),
        (settings.topic_batch_events, good, created(good, 1)),
        (settings.topic_ocr_results, good, encode(result(good, f"{good}-ok"))),
    ])
    with running_persister(settings) as running:
        wait_for("SELECT status, succeeded FROM batches WHERE batch_id = %s", (good,), ("completed", 1), running.pool)
        wait_for("SELECT count(*) FROM batches WHERE batch_id = %s", (poisoned,), (0,), running.pool)
        assert running.thread.is_alive()
    [dead] = dead_letters(settings, expected=1)
    assert base64.b64decode(dead.value_b64) == poison_bytes and dead.reason.startswith("PostgreSQL refused")


def test_nul_bytes_in_free_text_are_stored_without_them(settings):
    settings = persister_settings()
    batch = new_batch_id()

    def nul_everywhere(m: dict) -> None:
        m["original_name"] = "sc\x00an.png"
        _page(m)["text"] = "hel\x00lo"
        _page(m)["words"][0]["text"] = "w\x000"

    produce_in_order(settings, [
        (settings.topic_batch_events, batch, created(batch, 1).replace(b'"name":""', b'"name":"my\\u0000 batch"')),
        (settings.topic_ocr_results, batch, forged(batch, f"{batch}-f", nul_everywhere)),
    ])
    with running_persister(settings) as running:
        wait_for("SELECT status, succeeded, name FROM batches WHERE batch_id = %s", (batch,),
                 ("completed", 1, "my batch"), running.pool)
        with running.pool.connection() as conn:
            stored = conn.execute(
                """SELECT f.original_name, p.text, w.text FROM files f JOIN pages p USING (file_id)
                   JOIN words w ON w.file_id = p.file_id AND w.page_number = p.page_number AND w.word_index = 0
                   WHERE f.batch_id = %s""", (batch,)).fetchall()
            outbox = conn.execute("SELECT count(*) FROM dlq_outbox").fetchone()
        assert stored == [("scan.png", "hello", "w0")] and outbox == (0,)


def part_of(batch: str, file_id: str, first: int, last: int, total: int, *, status=FileStatus.OK, attempt=1) -> bytes:
    base = result(batch, file_id)
    pages = [base.pages[0].model_copy(update={"page_number": n, "text": f"page {n}"}) for n in range(first, last + 1)]
    failed = status is FileStatus.FAILED
    return encode(FileResult.model_validate(base.model_dump() | {
        "part": {"first_page": first, "last_page": last, "total_pages": total}, "status": status, "attempt": attempt,
        "pages": [] if failed else pages, "error": f"pages {first}-{last} timed out" if failed else None,
        "error_code": FailureReason.OCR_TIMEOUT if failed else None}))


def test_parts_out_of_order_and_repeated_make_one_file_once_every_page_is_in(settings):
    settings = persister_settings()
    batch = new_batch_id()
    file_id = f"{batch}-pdf"
    first_half = [(settings.topic_batch_events, batch, created(batch, 1))] + [
        (settings.topic_ocr_results, batch, part_of(batch, file_id, f, l, 5)) for f, l in [(3, 4), (5, 5), (3, 4)]]
    produce_in_order(settings, first_half)
    with running_persister(settings) as running:
        wait_consumed(settings, running, 4)
        with running.pool.connection() as conn:  # parts stored, but the file is not counted yet
            assert conn.execute("SELECT count(*) FROM files WHERE file_id = %s", (file_id,)).fetchone() == (0,)
            assert conn.execute("SELECT count(*) FROM file_parts WHERE file_id = %s", (file_id,)).fetchone() == (2,)
            assert conn.execute("SELECT succeeded + failed FROM batches WHERE batch_id = %s", (batch,)).fetchone() == (0,)
        produce_in_order(settings, [(settings.topic_ocr_results, batch, part_of(batch, file_id, 1, 2, 5))])
        wait_for("SELECT status, succeeded FROM batches WHERE batch_id = %s", (batch,), ("completed", 1), running.pool)
        with running.pool.connection() as conn:
            assert conn.execute("SELECT status, page_count, error_code FROM files WHERE file_id = %s",
                                (file_id,)).fetchone() == ("ok", 5, None)
            assert conn.execute("SELECT array_agg(page_number ORDER BY page_number) FROM pages WHERE file_id = %s",
                                (file_id,)).fetchone() == ([1, 2, 3, 4, 5],)
            assert conn.execute("SELECT count(*) FROM words WHERE file_id = %s", (file_id,)).fetchone() == (20,)
            assert conn.execute("SELECT count(*) FROM file_attempts WHERE file_id = %s", (file_id,)).fetchone() == (1,)
        assert_counts_match_file_rows(running.pool)


def test_a_failed_part_fails_its_file_with_that_parts_reason(settings):
    settings = persister_settings()
    batch = new_batch_id()
    file_id = f"{batch}-pdf"
    produce_in_order(settings, [
        (settings.topic_batch_events, batch, created(batch, 1)),
        (settings.topic_ocr_results, batch, part_of(batch, file_id, 1, 2, 4)),
        (settings.topic_ocr_results, batch, part_of(batch, file_id, 3, 4, 4, status=FileStatus.FAILED, attempt=3)),
    ])
    with running_persister(settings) as running:
        wait_for("SELECT status, failed FROM batches WHERE batch_id = %s", (batch,), ("failed", 1), running.pool)
        with running.pool.connection() as conn:
            assert conn.execute("SELECT status, error_code, error, page_count, attempt FROM files WHERE file_id = %s",
                                (file_id,)).fetchone() == ("failed", "ocr_timeout", "pages 3-4 timed out", 2, 3)


def test_a_replayed_part_replaces_its_refused_one_and_the_file_becomes_ok(settings):
    settings = persister_settings()
    batch = new_batch_id()
    file_id = f"{batch}-pdf"
    fixed = part_of(batch, file_id, 3, 4, 4)
    refused = fixed.replace(b'"width":10', b'"width":1099511627776', 1)
    produce_in_order(settings, [
        (settings.topic_batch_events, batch, created(batch, 1)),
        (settings.topic_ocr_results, batch, part_of(batch, file_id, 1, 2, 4)),
        (settings.topic_ocr_results, batch, refused),
    ])
    with running_persister(settings) as running:
        wait_for("SELECT status, error_code, page_count FROM files WHERE file_id = %s", (file_id,),
                 ("failed", "result_refused", 2), running.pool)
        produce_in_order(settings, [(settings.topic_ocr_results, batch, fixed)] * 2)  # the replay, twice
        wait_consumed(settings, running, 5)
        with running.pool.connection() as conn:
            assert conn.execute("SELECT status, error_code, page_count FROM files WHERE file_id = %s",
                                (file_id,)).fetchone() == ("ok", None, 4)
            assert conn.execute("SELECT status, succeeded, failed FROM batches WHERE batch_id = %s",
                                (batch,)).fetchone() == ("completed", 1, 0)
            assert conn.execute("SELECT status FROM file_attempts WHERE file_id = %s ORDER BY id",
                                (file_id,)).fetchall() == [("failed",), ("ok",)]
            assert conn.execute("SELECT count(*) FROM pages WHERE file_id = %s", (file_id,)).fetchone() == (4,)


def test_a_later_or_ok_result_replaces_a_failed_file_once(settings):
    settings = persister_settings()
    batch = new_batch_id()
    file_id = f"{batch}-f"
    failed_first = result(batch, file_id, status=FileStatus.FAILED).model_copy(
        update={"error_code": FailureReason.OCR_CRASHED})
    ok_second = result(batch, file_id).model_copy(update={"attempt": 2})
    produce_in_order(settings, [
        (settings.topic_batch_events, batch, created(batch, 1)),
        (settings.topic_ocr_results, batch, encode(failed_first)),
    ])
    with running_persister(settings) as running:
        wait_for("SELECT status, failed FROM batches WHERE batch_id = %s", (batch,), ("failed", 1), running.pool)
        produce_in_order(settings, [(settings.topic_ocr_results, batch, encode(r)) for r in
                                    (ok_second, ok_second, failed_first.model_copy(update={"attempt": 3}))])
        wait_consumed(settings, running, 5)
        with running.pool.connection() as conn:
            assert conn.execute("SELECT status, succeeded, failed FROM batches WHERE batch_id = %s",
                                (batch,)).fetchone() == ("completed", 1, 0)
            assert conn.execute("SELECT status, attempt, error_code FROM files WHERE file_id = %s",
                                (file_id,)).fetchone() == ("ok", 2, None)
            assert conn.execute("SELECT count(*) FROM pages WHERE file_id = %s", (file_id,)).fetchone() == (1,)
            assert conn.execute("SELECT attempt, status, error_code FROM file_attempts WHERE file_id = %s ORDER BY id",
                                (file_id,)).fetchall() == [(1, "failed", "ocr_crashed"), (2, "ok", None)]


def test_a_dead_letter_committed_but_not_produced_goes_out_after_a_restart(settings):
    settings = persister_settings()
    batch = new_batch_id()
    poison = b'{"batch_id": "' + batch.encode() + b'", "not": "a result"}'
    produce_in_order(settings, [(settings.topic_ocr_results, batch, poison)])
    # A producer that reaches no broker: the DB commit happens, the DLQ produce after it does not.
    unreachable = build_producer(settings, client_id="cut-off", **{"bootstrap.servers": "127.0.0.1:9",
                                                                  "message.timeout.ms": 1000})
    with running_persister(settings, unreachable) as running:
        wait_consumed(settings, running, 1)
        wait_for("SELECT count(*) FROM dlq_outbox WHERE published_at IS NULL", (), (1,), running.pool)
    assert read_topic(settings, settings.topic_ocr_dlq) == []
    with running_persister(settings) as running:  # the restart sends it before consuming anything new
        wait_for("SELECT count(*) FROM dlq_outbox WHERE published_at IS NULL", (), (0,), running.pool)
    [dead] = dead_letters(settings, expected=1)
    assert base64.b64decode(dead.value_b64) == poison
