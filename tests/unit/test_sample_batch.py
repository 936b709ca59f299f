import json
from pathlib import Path

import pytest
from PIL import Image

from demo.sample_batch import character_error_rate, render_sample_batch


@pytest.mark.parametrize(
    ("expected", "actual", "ignore_whitespace", "rate"),
    [
        ("abcd", "abcd", True, 0.0),
        ("abcd", "abxd", True, 0.25),  # one substitution
        ("abcd", "abd", True, 0.25),  # one deletion
        ("abcd", "abcde", True, 0.25),  # one insertion
        ("abcd", "", True, 1.0),
        ("ab", "xyzw", True, 2.0),  # can exceed 1: extra characters are errors too
        ("도서관은 매주", "도 서 관 은 매주", True, 0.0),
        ("도서관은 매주", "도 서 관 은 매주", False, 3 / 7),
        ("a b\nc", "abc", False, 2 / 5),
        ("", "", True, 0.0),
        ("", "noise", True, 1.0),
        ("\u1100\u1161", "가", True, 0.0),  # NFD jamo and the NFC syllable are the same text
    ],
)
def test_character_error_rate(expected: str, actual: str, ignore_whitespace: bool, rate: float) -> None:
    assert character_error_rate(expected, actual, ignore_whitespace=ignore_whitespace) == pytest.approx(rate)


def test_sample_batch_is_deterministic_and_described_by_its_manifest(tmp_path: Path) -> None:
    first = render_sample_batch(tmp_path / "a", images=4, pdf_pages=2, seed=7)
    second = render_sample_batch(tmp_path / "b", images=4, pdf_pages=2, seed=7)

    assert [f.lines for f in first] == [f.lines for f in second]
    assert [f.path.read_bytes() for f in first] == [f.path.read_bytes() for f in second]
    assert [f.content_type for f in first] == ["image/png"] * 3 + ["image/jpeg", "application/pdf"]
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text("utf-8"))
    assert manifest == {f.path.name: f.lines for f in first}
    pdf = first[-1]
    assert len(pdf.pages) == 2 and pdf.lines == pdf.pages[0] + pdf.pages[1]
    for sample in first[:-1]:
        assert 2 <= len(sample.lines) <= 4 and sample.pages == [sample.lines]
        with Image.open(sample.path) as image:
            assert image.width > 300 and image.height > 100


def test_default_batch_repeats_no_sentence(tmp_path: Path) -> None:
    lines = [line for sample in render_sample_batch(tmp_path) for line in sample.lines]

    assert len(lines) == len(set(lines))
