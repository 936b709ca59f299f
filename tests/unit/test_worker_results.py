import pytest

from schemas.chunks import ChunkRequested, StoredFile
from schemas.results import FileStatus
from services.ocr_worker.engine import RecognizedPage, RecognizedWord, join_hangul_syllables
from services.ocr_worker.results import file_result, page_from_recognized

pytestmark = pytest.mark.unit

STORED = StoredFile(file_id="f1", bucket="b", key="k", sha256="0" * 64, size=3, content_type="image/png",
                    original_name="a.png")
CHUNK = ChunkRequested(batch_id="b1", chunk_id="b1.00000", tenant="t", attempt=2, files=[STORED])


def test_recognized_page_becomes_a_page_with_clamped_values():
    recognized = RecognizedPage(width=100, height=40, text="안녕 hello", mean_confidence=101.0,
                                words=(RecognizedWord("안녕", -1.0, (-2, 3, 20, 10)), RecognizedWord("hello", 95.5, (30, 3, 40, 10))))
    page = page_from_recognized(1, recognized, [0.1, 0.2] * 256)
    assert page.mean_confidence == 100.0
    assert [w.text for w in page.words] == ["안녕", "hello"]
    assert page.words[0].confidence == 0.0 and page.words[0].bbox.x == 0
    assert page.embedding == [0.1, 0.2] * 256


def test_file_result_ok_and_failed():
    ok = file_result(CHUNK, STORED, engine="tesseract", pages=[], embedding_model="m")
    assert ok.status is FileStatus.OK and ok.error is None and ok.attempt == 2 and ok.embedding_model == "m"
    failed = file_result(CHUNK, STORED, engine="tesseract", error="not an image")
    assert failed.status is FileStatus.FAILED and failed.error == "not an image" and failed.pages == []
    assert (failed.batch_id, failed.chunk_id, failed.file_id, failed.tenant) == ("b1", "b1.00000", "f1", "t")


def test_hangul_syllables_split_by_tesseract_are_joined_but_real_spaces_stay():
    line = [RecognizedWord("도", 90, (0, 0, 30, 30)), RecognizedWord("서", 80, (32, 0, 30, 30)),
            RecognizedWord("관", 70, (64, 2, 30, 30)),  # 2 px gaps: one word
            RecognizedWord("은", 90, (120, 0, 30, 30)),  # 26 px gap: a space
            RecognizedWord("OCR", 95, (152, 0, 60, 30))]  # Latin next to Hangul: never joined
    joined = join_hangul_syllables(line)
    assert [w.text for w in joined] == ["도서관", "은", "OCR"]
    assert joined[0].bbox == (0, 0, 94, 32) and joined[0].confidence == 80
