"""Tesseract on the rendered sample batch: how well it reads, and what shape its output has."""
import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from PIL import Image

from demo.sample_batch import SampleFile, character_error_rate, line_error_rates, render_sample_batch
from services.ocr_worker.engine import FastEngine, RecognizedPage, TesseractEngine, build_engine
from services.ocr_worker.pages import decode_pages

pytestmark = pytest.mark.integration

MAX_MEAN_LINE_CER = 0.10


@dataclass
class ReadFile:
    sample: SampleFile
    pages: list[RecognizedPage]


@pytest.fixture(scope="module")
def engine() -> Iterator[TesseractEngine]:
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")  # before tesserocr loads libgomp: the engine imports it lazily
    engine = build_engine("tesseract", "kor+eng")  # what the worker runs
    assert isinstance(engine, TesseractEngine) and engine.languages == "Hangul"
    with engine:
        yield engine


@pytest.fixture(scope="module")
def read_batch(engine: TesseractEngine, tmp_path_factory: pytest.TempPathFactory) -> list[ReadFile]:
    read = []
    for sample in render_sample_batch(tmp_path_factory.mktemp("sample_batch")):
        images = decode_pages(sample.path.read_bytes(), sample.content_type)
        read.append(ReadFile(sample, [engine.recognize(image) for image in images]))
    return read


def test_every_file_is_read_with_a_low_character_error_rate(read_batch: list[ReadFile]) -> None:
    report: list[tuple[float, str]] = []
    spaced: list[float] = []
    for read in read_batch:
        assert len(read.pages) == len(read.sample.pages)
        cers = [c for want, page in zip(read.sample.pages, read.pages) for c in line_error_rates(want, page.text)]
        expected, actual = "\n".join(read.sample.lines), "\n".join(page.text for page in read.pages)
        mean = sum(cers) / len(cers)
        report.append((mean, read.sample.path.name))
        spaced.append(character_error_rate(expected, actual, ignore_whitespace=False))
        print(
            f"{read.sample.path.name:22} line CER {mean:6.1%}  page CER {character_error_rate(expected, actual):6.1%}"
            f" (with whitespace {character_error_rate(expected, actual, ignore_whitespace=False):6.1%})"
        )
    worst, name = max(report)
    print(f"worst: {name} at {worst:.1%}")
    failing = [f"{n} {c:.1%}" for c, n in report if c >= MAX_MEAN_LINE_CER]
    assert not failing, f"mean line CER at or above {MAX_MEAN_LINE_CER:.0%}: {failing}; worst {name} {worst:.1%}"
    # Korean word spacing: Kiwi respaces the Hangul Tesseract splits into syllables or runs together.
    assert sum(spaced) / len(spaced) < MAX_MEAN_LINE_CER, f"CER with whitespace {sum(spaced) / len(spaced):.1%}"


def test_words_have_boxes_inside_the_page_and_confidences_in_range(read_batch: list[ReadFile]) -> None:
    for read in read_batch:
        for page in read.pages:
            assert page.words, read.sample.path.name
            assert 0 < page.mean_confidence <= 1 and (page.rotation, page.skew) == (0, 0.0)
            for word in page.words:
                x, y, width, height = word.bbox
                assert word.text and word.text == word.text.strip()
                assert 0 <= word.confidence <= 1
                assert width > 0 and height > 0
                assert 0 <= x and x + width <= page.width and 0 <= y and y + height <= page.height
            assert "".join(page.text.split()) == "".join(w.text for w in page.words).replace(" ", "")


def test_a_blank_page_has_no_text(engine: TesseractEngine) -> None:
    page = engine.recognize(Image.new("L", (800, 600), 255))

    assert (page.text, page.words, page.mean_confidence) == ("", (), 0.0)
    assert (page.width, page.height) == (800, 600)


def test_a_page_turned_and_skewed_is_read_like_the_upright_page_with_boxes_on_the_page_as_sent(
    engine: TesseractEngine, read_batch: list[ReadFile]
) -> None:
    read = next(r for r in read_batch if r.sample.path.suffix == ".png" and "_ko" in r.sample.path.name)
    upright = Image.open(read.sample.path)
    sent = upright.rotate(-90, expand=True).rotate(-3, expand=True, fillcolor=255, resample=Image.Resampling.BICUBIC)

    page = engine.recognize(sent)

    assert (page.rotation, page.skew) == (90, 3.0)
    assert (page.width, page.height) == sent.size
    assert character_error_rate("\n".join(read.sample.lines), page.text) <= 0.05
    ink = sent.point(lambda v: 255 if v < 128 else 0)
    for word in page.words:  # each box sits on the word's ink in the turned image, inside the image
        x, y, width, height = word.bbox
        assert 0 <= x and x + width <= sent.width and 0 <= y and y + height <= sent.height
        assert ink.crop((x, y, x + width, y + height)).getbbox() is not None
    tall = [w for w in page.words if w.bbox[3] > w.bbox[2]]  # the text runs downwards on the page as sent
    assert len(tall) >= 0.8 * len(page.words)


def test_fast_engine_is_deterministic_and_shaped_like_tesseract(read_batch: list[ReadFile]) -> None:
    image = Image.open(read_batch[0].sample.path)
    fast = build_engine("fast", "Hangul")

    first, second = fast.recognize(image), fast.recognize(image.copy())

    assert isinstance(fast, FastEngine) and first == second and first.words
    assert first.text.split("\n")[0].split(" ")[0] == first.words[0].text
    for word in first.words:
        x, y, width, height = word.bbox
        assert 0 <= x and x + width <= image.width and 0 <= y and y + height <= image.height
    with pytest.raises(ValueError, match="unknown OCR engine"):
        build_engine("nope", "Hangul")
