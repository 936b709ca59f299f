import math

import pytest

from common.embedding import UniversalSentenceEncoder, build_embedder

pytestmark = pytest.mark.unit

KOREAN = "오늘 날씨가 정말 좋네요. 공원에 산책하러 가요."
ENGLISH = "The weather is really nice today. Let's go for a walk in the park."
UNRELATED = "The invoice total must be paid by Friday."


@pytest.fixture(scope="module")
def embedder() -> UniversalSentenceEncoder:
    return UniversalSentenceEncoder()


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_a_translation_scores_far_above_unrelated_text(embedder: UniversalSentenceEncoder) -> None:
    korean, english, unrelated = embedder.embed([KOREAN, ENGLISH, UNRELATED])

    assert _cosine(korean, english) > 0.6
    assert _cosine(korean, english) > _cosine(korean, unrelated) + 0.4


def test_vectors_have_512_dimensions_and_unit_norm(embedder: UniversalSentenceEncoder) -> None:
    vectors = embedder.embed([KOREAN, ENGLISH, "", "   \n "])

    assert embedder.dimension == 512
    for vector in vectors:
        assert len(vector) == 512
        assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, abs_tol=1e-4)


def test_blank_texts_share_one_vector_unrelated_to_real_text(embedder: UniversalSentenceEncoder) -> None:
    empty, blank, english = embedder.embed(["", " \n\t ", ENGLISH])

    assert empty == blank
    assert abs(_cosine(empty, english)) < 0.3


def test_embedding_nothing_gives_nothing(embedder: UniversalSentenceEncoder) -> None:
    assert embedder.embed([]) == []


def test_unknown_model_name_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown embedding model"):
        build_embedder("no-such-model")


def test_tesseract_style_syllable_spacing_does_not_move_the_vector(embedder: UniversalSentenceEncoder) -> None:
    split, spaced = embedder.embed(["지하철 이 호 선 은 출근 시 간 에 매우 붐 빕 니다.", "지하철 이호선은 출근 시간에 매우 붐빕니다."])
    assert sum(a * b for a, b in zip(split, spaced)) > 0.99
