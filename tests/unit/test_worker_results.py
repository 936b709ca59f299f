import pytest

from schemas.chunks import ChunkRequested, StoredFile
from schemas.results import FileStatus
from schemas.batch_events import BatchOptions
from schemas.results import Page
from services.ocr_worker.engine import RecognizedPage, RecognizedWord, respace_line
from services.ocr_worker.results import file_result, page_from_recognized

pytestmark = pytest.mark.unit

STORED = StoredFile(file_id="f1", bucket="b", key="k", sha256="0" * 64, size=3, content_type="image/png",
                    original_name="a.png")
CHUNK = ChunkRequested(batch_id="b1", chunk_id="b1.00000", tenant="t", attempt=2, files=[STORED])


def test_recognized_page_becomes_a_page_with_clamped_values():
    recognized = RecognizedPage(width=100, height=40, text="안녕 hello", mean_confidence=1.01,
                                words=(RecognizedWord("안녕", -0.01, (-2, 3, 20, 10)), RecognizedWord("hello", 0.955, (30, 3, 40, 10))),
                                rotation=270, skew=-4.5)
    page = page_from_recognized(1, recognized)
    assert page.mean_confidence == 1.0
    assert [w.text for w in page.words] == ["안녕", "hello"]
    assert page.words[0].confidence == 0.0 and page.words[0].bbox.x == 0 and page.words[1].confidence == 0.955
    assert (page.rotation, page.skew, page.needs_review) == (270, -4.5, False)
    assert page.embedding is None  # the worker embeds a chunk's pages together, after its files


def test_file_result_ok_and_failed():
    ok = file_result(CHUNK, STORED, engine="tesseract", pages=[], embedding_model="m")
    assert ok.status is FileStatus.OK and ok.error is None and ok.attempt == 2 and ok.embedding_model == "m"
    failed = file_result(CHUNK, STORED, engine="tesseract", error="not an image")
    assert failed.status is FileStatus.FAILED and failed.error == "not an image" and failed.pages == []
    assert (failed.batch_id, failed.chunk_id, failed.file_id, failed.tenant) == ("b1", "b1.00000", "f1", "t")


def _page(number: int, mean_confidence: float) -> Page:
    return Page(page_number=number, width=10, height=10, text="", mean_confidence=mean_confidence)


def test_pages_below_min_confidence_are_marked_for_review_and_kept():
    chunk = CHUNK.model_copy(update={"options": BatchOptions(min_confidence=0.8)})
    pages = [_page(1, 0.95), _page(2, 0.79), _page(3, 0.0)]  # page 3: nothing read at all

    result = file_result(chunk, STORED, engine="tesseract", pages=pages)

    assert [(p.page_number, p.needs_review) for p in result.pages] == [(1, False), (2, True), (3, True)]
    unmarked = file_result(CHUNK, STORED, engine="tesseract", pages=pages)  # no min_confidence: none marked
    assert [p.needs_review for p in unmarked.pages] == [False, False, False]


def _line(*words: tuple[str, float, int, int]) -> list[RecognizedWord]:
    return [RecognizedWord(text, confidence, (x, 0, width, 30)) for text, confidence, x, width in words]


def test_respacing_joins_syllables_tesseract_split():
    line = _line(("도", 0.9, 0, 30), ("서", 0.8, 32, 30), ("관", 0.7, 64, 30), ("은", 0.9, 120, 30))

    respaced = respace_line(line, "도서관은")

    assert [w.text for w in respaced] == ["도서관은"]
    assert respaced[0].bbox == (0, 0, 150, 30) and respaced[0].confidence == pytest.approx(0.825)


def test_respacing_splits_a_run_on_word_and_shares_its_box_by_character_width():
    line = _line(("매우붐빕니다", 0.9, 0, 180), ("OK", 0.95, 200, 30))

    respaced = respace_line(line, "매우 붐빕니다 OK")

    assert [(w.text, w.bbox[0], w.bbox[2], w.confidence) for w in respaced] == [
        ("매우", 0, 60, 0.9), ("붐빕니다", 60, 120, 0.9), ("OK", 200, 30, 0.95)]


def test_respacing_keeps_tesseracts_spaces_between_latin_and_ignores_a_model_that_changes_characters():
    line = _line(("Open", 0.9, 0, 60), ("Source", 0.9, 70, 90), ("라이선스", 0.9, 170, 120))

    assert [w.text for w in respace_line(line, "OpenSource 라이선스")] == ["Open", "Source", "라이선스"]
    assert [w.text for w in respace_line(line, "Open Source라이선스")] == ["Open", "Source라이선스"]
    assert respace_line(line, "Open Source 라이센스") == line  # a different character: spacing left alone
