"""Pure pieces of hybrid search: the whitespace-free form of text, rank fusion, and the matched span.

Korean OCR text carries unreliable spaces ("도서관 대출" vs "도서 관대출"), so exact matching compares text with
every whitespace removed and lower-cased, the same form the `pages.text_compact` column holds.
"""
from collections.abc import Hashable, Sequence
from typing import TypeVar

from schemas.results import Word

__all__ = ["compact", "fuse_ranks", "like_pattern", "match_span", "snippet", "words_covering"]

K = TypeVar("K", bound=Hashable)


def _lower_char(ch: str) -> str:
    lowered = ch.lower()
    return lowered if len(lowered) == 1 else ch  # keep one char per char, so offsets map back


def compact(text: str) -> str:
    """Lower-cased, every whitespace removed: what pages.text_compact holds for a page."""
    return "".join(_lower_char(ch) for ch in text if not ch.isspace())


def like_pattern(compact_query: str) -> str:
    """A LIKE pattern matching the compact query anywhere (its %, _ and \\ taken literally)."""
    escaped = compact_query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def fuse_ranks(rankings: Sequence[Sequence[K]], k: int) -> list[tuple[K, float]]:
    """Reciprocal rank fusion: each item scores sum(1 / (k + rank)) over the rankings it is in; best first.

    Ties keep the order of first appearance, so the first ranking breaks them.
    """
    scores: dict[K, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda item: -item[1])


def match_span(text: str, query: str) -> tuple[int, int] | None:
    """Where `query` occurs in `text` with whitespace and case ignored: (start, end) in `text`, or None."""
    needle = compact(query)
    if not needle:
        return None
    positions = [i for i, ch in enumerate(text) if not ch.isspace()]
    found = compact(text).find(needle)
    if found < 0:
        return None
    return positions[found], positions[found + len(needle) - 1] + 1


def snippet(text: str, span: tuple[int, int] | None, width: int) -> tuple[str, tuple[int, int] | None]:
    """About `width` characters of `text` around the span (the start of the text without one), and the span
    shifted into the snippet."""
    if span is None:
        return text[:width], None
    start = max(0, min(span[0] - width // 3, len(text) - width))
    end = max(start + width, span[1])
    return text[start:end], (span[0] - start, span[1] - start)


def words_covering(text: str, words: Sequence[Word], span: tuple[int, int]) -> list[Word]:
    """The OCR words whose characters overlap `span` of the page text they were joined into, in order.

    Each word is located in the text from where the previous one ended; a word the text does not hold
    (the page text was cleaned) is skipped without losing the place.
    """
    covering: list[Word] = []
    cursor = 0
    for word in words:
        at = text.find(word.text, cursor)
        if at < 0:
            continue
        cursor = at + len(word.text)
        if at < span[1] and cursor > span[0]:
            covering.append(word)
        elif at >= span[1]:
            break
    return covering
