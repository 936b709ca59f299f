"""The persister's pure rules: replace, part assembly, salvage of refused results, DLQ record size, lanes."""
import base64
import json

import pytest

from schemas.base import PageRange
from schemas.batch_events import BatchRetryRequested
from schemas.dlq import DlqRecord
from schemas.results import FailureReason, FileStatus
from schemas.topics import Topic, decode, encode
from services.persister.persister import PolledWork, fit_dlq_record, salvaged_result
from services.persister.sql import accepted_in_order, assembled_file, bulk_writable, covers_all_pages, replaces
from tests.integration.test_persister import result

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("stored", "new", "expected"), [
    (("failed", 1), (FileStatus.OK, 1), True),
    (("failed", 1), (FileStatus.FAILED, 2), True),
    (("failed", 2), (FileStatus.FAILED, 2), False),  # a replay of the same try
    (("failed", 3), (FileStatus.FAILED, 2), False),
    (("ok", 1), (FileStatus.OK, 2), False),  # ok is final
    (("ok", 1), (FileStatus.FAILED, 5), False),
    (("skipped", 1), (FileStatus.OK, 2), False),
])
def test_a_result_replaces_only_a_failed_one_and_only_with_ok_or_a_later_try(stored, new, expected):
    assert replaces({"status": stored[0], "attempt": stored[1]}, {"status": new[0], "attempt": new[1]}) is expected


def _row(status: str, attempt: int) -> dict:
    return {"status": status, "attempt": attempt}


@pytest.mark.parametrize(("stored", "arriving", "accepted"), [
    (None, [("failed", 1), ("ok", 2), ("ok", 2), ("failed", 3)], [0, 1]),  # a replay and a late failure change nothing
    (None, [("ok", 1), ("failed", 2)], [0]),
    (("failed", 1), [("failed", 1), ("failed", 2), ("ok", 2)], [1, 2]),
    (("ok", 1), [("ok", 2), ("failed", 3)], []),
])
def test_a_polls_results_for_one_file_are_accepted_as_one_by_one(stored, arriving, accepted):
    assert accepted_in_order(stored and _row(*stored), [_row(*r) for r in arriving]) == accepted


def test_bulk_writes_unless_one_file_has_whole_and_part_results_in_one_poll():
    whole = result("b", "f1")
    part = whole.model_copy(update={"part": PageRange(first_page=1, last_page=1, total_pages=2)})
    other = result("b", "f2").model_copy(update={"part": PageRange(first_page=1, last_page=1, total_pages=2)})
    assert bulk_writable([whole, other, whole])
    assert not bulk_writable([whole, other, part])


@pytest.mark.parametrize(("ranges", "total", "expected"), [
    ([(1, 3), (4, 6)], 6, True),
    ([(4, 6), (1, 3)], 6, True),  # out of order
    ([(1, 3), (5, 6)], 6, False),  # a hole
    ([(1, 3)], 6, False),
    ([(2, 6)], 6, False),
    ([(1, 1)], 2**31 - 1, False),  # a forged huge total is walked, not enumerated
])
def test_parts_cover_all_pages(ranges, total, expected):
    assert covers_all_pages(ranges, total) is expected


def part(first: int, last: int, status: str = "ok", **extra) -> dict:
    return {"file_id": "f", "batch_id": "b", "chunk_id": f"c{first}", "tenant": "t", "original_name": "n.pdf",
            "sha256": "s", "size_bytes": 9, "content_type": "application/pdf", "engine": "fast",
            "embedding_model": None, "first_page": first, "last_page": last, "total_pages": 6, "status": status,
            "error": None if status == "ok" else f"error of {first}", "error_code": None if status == "ok" else "ocr_timeout",
            "page_count": last - first + 1, "timings": {"ocr_ms": 10.0, "fetch_ms": 1.0}, "attempt": 1} | extra


def test_a_file_is_assembled_once_its_parts_cover_every_page():
    assert assembled_file([part(4, 6), part(1, 2)]) is None
    row = assembled_file([part(4, 6), part(1, 2), part(3, 3, attempt=2)])
    assert (row["status"], row["error"], row["page_count"], row["attempt"], row["chunk_id"]) == ("ok", None, 6, 2, "c1")
    assert row["timings"] == {"fetch_ms": 3.0, "decode_ms": 0.0, "ocr_ms": 30.0, "embed_ms": 0.0}


def test_a_file_with_a_failed_part_fails_with_the_first_failed_parts_error():
    row = assembled_file([part(5, 6, "failed"), part(1, 2), part(3, 4, "failed")])
    assert (row["status"], row["error"], row["error_code"]) == ("failed", "error of 3", "ocr_timeout")


def test_salvage_fails_the_file_named_by_an_undecodable_result():
    forged = {"batch_id": "b\x00", "file_id": "f", "tenant": "t", "chunk_id": "c" * 2000, "sha256": 7,
              "size": 2**70, "attempt": 3, "part": {"first_page": 2, "last_page": 3, "total_pages": 4},
              "original_name": "bad\ud800name", "pages": [{"page_number": 2**31}]}
    failed = salvaged_result(json.dumps(forged).encode(), "pages.0.page_number: too large")
    assert (failed.batch_id, failed.file_id, failed.sha256, failed.size, failed.attempt) == ("b", "f", "", 0, 3)
    assert (failed.status, failed.error_code, failed.error) == (FileStatus.FAILED, FailureReason.RESULT_REFUSED,
                                                                "pages.0.page_number: too large")
    assert len(failed.chunk_id) == 500 and failed.original_name == "bad?name" and failed.pages == []
    assert (failed.part.first_page, failed.part.last_page) == (2, 3)


@pytest.mark.parametrize("value", [None, b"\xff\xfe", b"[1, 2]", b"not json", b'{"batch_id": "b", "file_id": "f"}',
                                   b'{"batch_id": "b", "file_id": 5, "tenant": "t"}', b"[" * 100_000])
def test_salvage_gives_up_on_what_names_no_file(value):
    assert salvaged_result(value, "reason") is None


def dlq(value: bytes) -> bytes:
    return encode(DlqRecord(source_topic="ocr.results", partition=0, offset=7, key_b64=None,
                            value_b64=base64.b64encode(value).decode(), reason="r", error_class="DataError",
                            service="persister"))


def test_a_dlq_record_too_large_for_the_topic_leaves_out_the_value_and_says_so():
    small = dlq(b"x" * 100)
    assert fit_dlq_record(small, 10_000) == small
    fitted = decode(Topic.OCR_DLQ, fit_dlq_record(dlq(b"x" * 20_000), 10_000))
    assert fitted.value_b64 is None and "20000 bytes is left out" in fitted.reason and fitted.offset == 7


class _Polled:
    """What PolledWork.lanes reads of a consumed message: where it came from."""

    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self._at = (topic, partition, offset)

    def topic(self) -> str:
        return self._at[0]

    def partition(self) -> int:
        return self._at[1]


def _poll(counts: dict[tuple[str, int], int]) -> PolledWork:
    """A poll with counts[tp] results of each partition, interleaved as a consumer hands them out."""
    work = PolledWork()
    for i in range(max(counts.values())):
        for (topic, partition), count in counts.items():
            if i < count:
                file_id = f"{topic}[{partition}]@{100 + i}"
                work.records.append((_Polled(topic, partition, 100 + i), result("b", file_id)))
                work.first_offsets.setdefault((topic, partition), 100)
                work.next_offsets[(topic, partition)] = 101 + i
    return work


def test_lanes_hold_whole_partitions_in_order_and_even_in_records():
    work = _poll({("ocr.results", 0): 5, ("ocr.results", 1): 4, ("ocr.results", 2): 3, ("ocr.results", 5): 1,
                  ("ocr.results", 3): 1})
    lanes = work.lanes(2)
    assert sorted(len(lane.records) for lane in lanes) == [7, 7]
    owners = [{(m.topic(), m.partition()) for m, _ in lane.records} for lane in lanes]
    assert not owners[0] & owners[1] and owners[0] | owners[1] == set(work.first_offsets)
    for lane, owned in zip(lanes, owners):
        assert set(lane.first_offsets) == set(lane.next_offsets) == owned
        assert lane.next_offsets == {tp: work.next_offsets[tp] for tp in owned}
        for tp in owned:  # each partition's records in their order (partitions have no order between them)
            assert [r.file_id for m, r in lane.records if (m.topic(), m.partition()) == tp] == \
                [r.file_id for m, r in work.records if (m.topic(), m.partition()) == tp]


def test_a_poll_of_one_partition_or_one_connection_is_one_lane():
    assert [len(lane.records) for lane in _poll({("ocr.results", 4): 6}).lanes(2)] == [6]
    work = _poll({("ocr.results", 0): 2, ("ocr.results", 1): 3})
    (lane,) = work.lanes(1)
    assert sorted(r.file_id for _, r in lane.records) == sorted(r.file_id for _, r in work.records)
    assert lane.next_offsets == work.next_offsets


def test_a_polls_batch_events_come_apart_from_its_results_with_their_offsets():
    work = _poll({("ocr.results", 0): 3, ("ocr.results", 1): 3})
    work.records.append((_Polled("batch.events", 2, 7), BatchRetryRequested(batch_id="b", tenant="default",
                                                                            attempt=2, file_ids=[])))
    work.first_offsets[("batch.events", 2)], work.next_offsets[("batch.events", 2)] = 7, 8
    events, results = work.apart("batch.events")
    assert [type(m) for _, m in events.records] == [BatchRetryRequested]
    assert (events.first_offsets, events.next_offsets) == ({("batch.events", 2): 7}, {("batch.events", 2): 8})
    assert len(results.records) == 6 and set(results.next_offsets) == {("ocr.results", 0), ("ocr.results", 1)}
