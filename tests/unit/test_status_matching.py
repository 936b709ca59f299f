"""services.status_api.matching: whitespace-free matching, rank fusion, snippets and word boxes."""
import pytest

from schemas.results import BoundingBox, Word
from services.status_api.matching import compact, fuse_ranks, like_pattern, match_span, snippet, words_covering

pytestmark = pytest.mark.unit


def word(text: str, x: int) -> Word:
    return Word(text=text, confidence=0.9, bbox=BoundingBox(x=x, y=0, width=10, height=10))


def test_compact_drops_every_whitespace_and_case():
    assert compact("도서관 대출\t기간은\n2 주  Invoice") == "도서관대출기간은2주invoice"


def test_like_pattern_takes_wildcards_literally():
    assert like_pattern("100%_a\\b") == "%100\\%\\_a\\\\b%"


@pytest.mark.parametrize(("text", "query", "expected"), [
    ("도서 관 대출 기간은 2주입니다", "도서관 대출기간", "도서 관 대출 기간"),  # OCR spaced, query not
    ("도서관대출기간은 2주", "도서관 대출 기간", "도서관대출기간"),  # the other way round
    ("Invoice No. INV-2024-117 due", "inv-2024-117", "INV-2024-117"),
])
def test_a_match_ignores_spaces_and_case_and_maps_back_to_the_page_text(text, query, expected):
    start, end = match_span(text, query)
    assert text[start:end] == expected


def test_no_span_when_the_text_does_not_hold_the_query():
    assert match_span("고양이가 잔다", "강아지") is None
    assert match_span("anything", "   ") is None


def test_rrf_rewards_pages_both_rankings_agree_on():
    fused = fuse_ranks([["a", "b", "c"], ["c", "d", "a"]], k=60)
    assert [key for key, _ in fused] == ["a", "c", "b", "d"]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 63)


def test_snippet_keeps_the_span_and_shifts_it():
    text = "x" * 300 + "MATCH" + "y" * 300
    cut, span = snippet(text, (300, 305), 100)
    assert len(cut) == 100 and cut[span[0]:span[1]] == "MATCH"
    assert snippet("short text", None, 100) == ("short text", None)


def test_the_words_covering_a_span_carry_their_boxes():
    words = [word("Invoice", 0), word("No.", 20), word("INV-2024-117", 40), word("due", 60)]
    text = "Invoice No. INV-2024-117 due"
    assert [w.bbox.x for w in words_covering(text, words, match_span(text, "no. inv-2024"))] == [20, 40]
    hangul = [word("도서", 0), word("관", 20), word("대출", 40), word("기간", 60)]
    hangul_text = "도서 관 대출 기간"
    assert [w.text for w in words_covering(hangul_text, hangul, match_span(hangul_text, "관대출"))] == ["관", "대출"]
