import pytest

from schemas.base import PageRange
from schemas.chunks import ChunkRequested, StoredFile
from schemas.results import FailureReason, FileResult, FileStatus, Page
from schemas.topics import encode
from services.ocr_worker.parts import page_range_work_items, split_result

pytestmark = pytest.mark.unit

STORED = StoredFile(file_id="f1", bucket="b", key="k", sha256="0" * 64, size=3, content_type="application/pdf",
                    original_name="a.pdf")
CHUNK = ChunkRequested(batch_id="b1", chunk_id="b1.00000", tenant="t", files=[STORED])


def _result(pages: int, text: str = "x" * 1000, part: PageRange | None = None) -> FileResult:
    first = part.first_page if part else 1
    return FileResult(batch_id="b1", chunk_id="c", file_id="f1", tenant="t", status=FileStatus.OK, original_name="a",
                      sha256="0" * 64, size=1, content_type="application/pdf", engine="fast", part=part,
                      pages=[Page(page_number=first + i, width=1, height=1, text=text, mean_confidence=0.9)
                             for i in range(pages)])


def test_a_long_pdf_becomes_page_ranges_covering_every_page_once():
    items = page_range_work_items(CHUNK, STORED, total_pages=45, pages_per_item=20)
    assert [(i.files[0].pages.first_page, i.files[0].pages.last_page) for i in items] == [(1, 20), (21, 40), (41, 45)]
    assert len({i.chunk_id for i in items}) == 3 and all(i.batch_id == "b1" and i.files[0].pages.total_pages == 45
                                                          for i in items)


def test_a_result_that_fits_stays_whole():
    result = _result(3)
    assert split_result(result, 1_000_000) == [result]


def test_a_large_result_becomes_parts_that_each_fit_and_cover_every_page():
    parts = split_result(_result(9, part=PageRange(first_page=11, last_page=19, total_pages=40)), 4_000)
    assert [p.page_number for part in parts for p in part.pages] == list(range(11, 20))
    assert all(len(encode(part)) <= 4_000 and part.status is FileStatus.OK for part in parts)
    assert [(part.part.first_page, part.part.last_page) for part in parts][0][0] == 11
    assert {part.part.total_pages for part in parts} == {40}


def test_a_single_page_too_large_for_a_record_fails_as_its_own_part():
    parts = split_result(_result(2, text="y" * 5_000), 4_000)
    assert [(p.status, p.error_code, p.part.first_page, p.part.last_page) for p in parts] == [
        (FileStatus.FAILED, FailureReason.RESULT_TOO_LARGE, 1, 1), (FileStatus.FAILED, FailureReason.RESULT_TOO_LARGE, 2, 2)]
