"""The floors of issue 17 on bench.quality's labelled set, at a test's size (the full report: make bench-quality).

Clean, turned and skewed pages only: those are the categories with floors. About a minute on one core.
"""
import os
from collections.abc import Iterator

import pytest

from bench.quality import box_iou, render_quality_set, score_set, tesseract_recognizer

pytestmark = pytest.mark.integration

FLOORED = ("clean", "rotated_90", "rotated_180", "rotated_270", "skew_+5", "skew_-5")
PAGES_PER_CATEGORY = 12


@pytest.fixture(scope="module")
def figures() -> Iterator[dict[str, dict[str, float]]]:
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")  # before tesserocr loads libgomp
    categories = render_quality_set(PAGES_PER_CATEGORY)
    scored = score_set({name: categories[name] for name in FLOORED}, tesseract_recognizer())
    for name, row in scored.items():
        print(name, row)
    yield scored


def test_clean_pages_are_read_within_the_floors(figures: dict[str, dict[str, float]]) -> None:
    assert figures["clean"]["cer_ws_pct"] <= 2.5
    assert figures["clean"]["cer_nows_pct"] <= 1.5


@pytest.mark.parametrize("turned", ["rotated_90", "rotated_180", "rotated_270"])
def test_turned_pages_read_within_a_point_of_the_same_pages_upright(
    figures: dict[str, dict[str, float]], turned: str
) -> None:
    for key in ("cer_nows_pct", "cer_ws_pct"):
        assert figures[turned][key] - figures["clean"][key] <= 1.0, key


@pytest.mark.parametrize("skewed", ["skew_+5", "skew_-5"])
def test_pages_skewed_five_degrees_are_read_within_the_floor(
    figures: dict[str, dict[str, float]], skewed: str
) -> None:
    assert figures[skewed]["cer_nows_pct"] <= 3.0


def test_word_boxes_match_the_rendered_boxes_on_the_page_as_sent(figures: dict[str, dict[str, float]]) -> None:
    for name in FLOORED:
        assert figures[name]["box_iou_median"] >= 0.7, name


def test_box_iou() -> None:
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0
