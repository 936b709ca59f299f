"""OCR engines behind one small interface: Tesseract for real work, a fast fake for pipeline benchmarks."""
from __future__ import annotations

import glob
import hashlib
import importlib
import logging
import os
import random
import re
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

from PIL import Image

from common.errors import FileFailed
from schemas.results import FailureReason

if TYPE_CHECKING:
    import tesserocr

__all__ = [
    "FastEngine",
    "OcrEngine",
    "OcrFailed",
    "RecognizedPage",
    "RecognizedWord",
    "TesseractEngine",
    "build_engine",
    "join_hangul_syllables",
]

logger = logging.getLogger(__name__)


class OcrFailed(FileFailed):
    """The engine could not recognize a page (timed out, or Tesseract refused the image)."""

    code = FailureReason.OCR_FAILED


@dataclass(frozen=True)
class RecognizedWord:
    text: str
    confidence: float  # 0-100
    bbox: tuple[int, int, int, int]  # x, y, width, height in page pixels


@dataclass(frozen=True)
class RecognizedPage:
    width: int
    height: int
    text: str  # lines joined with "\n"
    mean_confidence: float  # mean of the words' confidences, 0 when there are no words
    words: tuple[RecognizedWord, ...]


class OcrEngine(Protocol):
    name: str

    def recognize(self, image: Image.Image) -> RecognizedPage: ...


def _page_from_lines(width: int, height: int, lines: list[list[RecognizedWord]]) -> RecognizedPage:
    words = tuple(word for line in lines for word in line)
    mean = sum(w.confidence for w in words) / len(words) if words else 0.0
    text = "\n".join(" ".join(w.text for w in line) for line in lines if line)
    return RecognizedPage(width=width, height=height, text=text, mean_confidence=mean, words=words)


def _find_tessdata(languages: str) -> str:
    """The first tessdata folder holding every requested language: $TESSDATA_PREFIX, then Debian's."""
    candidates = [os.environ.get("TESSDATA_PREFIX", ""), *sorted(glob.glob("/usr/share/tesseract-ocr/*/tessdata"))]
    wanted = languages.split("+")
    for folder in filter(None, candidates):
        if all(os.path.isfile(os.path.join(folder, f"{lang}.traineddata")) for lang in wanted):
            return folder
    raise OcrFailed(
        f"no tessdata folder with {wanted} among {[c for c in candidates if c]}: install the Debian package "
        "tesseract-ocr-<lang> (tesseract-ocr-script-hang for Hangul) or set TESSDATA_PREFIX",
        FailureReason.LANGUAGE_UNAVAILABLE,
    )


def _set_image(api: tesserocr.PyTessBaseAPI, image: Image.Image) -> None:
    """Raw pixels, not tesserocr's SetImage: that re-encodes the image (PNG, or BMP, which claims 96 dpi and
    so misleads Tesseract's layout analysis on any page without a known resolution)."""
    channels = len(image.getbands())
    api.SetImageBytes(image.tobytes(), image.width, image.height, channels, image.width * channels)


_HANGUL = re.compile("[\u1100-\u11ff\u3130-\u318f\uac00-\ud7a3]")  # jamo, compatibility jamo, syllables
# Tesseract's Hangul model splits Korean words into syllables ("도 서 관 은"). Within a word the boxes almost
# touch; between words the gap is about a third of the line height or more. Measured on 3 sample batches
# (36 files): joining below 0.4 x height took CER with whitespace from 12.2 % to 5.9 % (0.3: 7.0 %, 0.5: 7.1 %).
_SYLLABLE_GAP_BELOW = 0.4


def join_hangul_syllables(line: list[RecognizedWord]) -> list[RecognizedWord]:
    """Join neighbouring words of a line that meet Hangul to Hangul across a gap too narrow for a space."""
    if len(line) < 2:
        return line
    heights = sorted(w.bbox[3] for w in line)
    max_gap = _SYLLABLE_GAP_BELOW * heights[len(heights) // 2]
    joined = [line[0]]
    for word in line[1:]:
        last = joined[-1]
        gap = word.bbox[0] - (last.bbox[0] + last.bbox[2])
        if gap < max_gap and _HANGUL.match(word.text[0]) and _HANGUL.match(last.text[-1]):
            x, y = min(last.bbox[0], word.bbox[0]), min(last.bbox[1], word.bbox[1])
            right = max(last.bbox[0] + last.bbox[2], word.bbox[0] + word.bbox[2])
            bottom = max(last.bbox[1] + last.bbox[3], word.bbox[1] + word.bbox[3])
            confidence = (last.confidence * len(last.text) + word.confidence * len(word.text)) / (
                len(last.text) + len(word.text))
            joined[-1] = RecognizedWord(last.text + word.text, confidence, (x, y, right - x, bottom - y))
        else:
            joined.append(word)
    return joined
_RECHECK_BELOW = 90.0  # words the Hangul model reads well score 93-97
_RECHECK_MARGIN = 10.0


class TesseractEngine:
    """Tesseract through its C API (tesserocr); its models are loaded once, in __init__. One engine per process.

    Set OMP_THREAD_LIMIT=1 in the environment before tesserocr is first imported (the worker's __main__
    does): libgomp reads it once when loaded, and Tesseract's per-page OpenMP threads otherwise oversubscribe
    the cores when one OCR process runs per core. tesserocr is imported here, lazily, so that holds for any
    caller that sets the variable before building the engine. tesserocr must be built against Debian's
    libtesseract (pip install --no-binary tesserocr tesserocr): the PyPI wheel bundles its own libtesseract.

    Defaults, measured on demo.sample_batch (Korean, English and mixed lines; see the integration test):
    - languages "Hangul" (Debian's tesseract-ocr-script-hang; reads Hangul and Latin) instead of "kor+eng":
      with two models Tesseract switches to English mid-line and turns Korean words into Latin junk.
    - recheck_language "eng": a word with no Hangul and a confidence under 90 (often an English term in a
      Korean sentence, which the Hangul model misreads) is read again alone with this model, and replaced
      when that reading is clearly more confident. None turns this off. (So this engine holds two
      Tesseract APIs, each loaded once.)
    - page_segmentation 4 (one column of text of variable sizes). Tesseract's default, 3 (automatic layout),
      drops or garbles whole Korean lines even on clean renders (tesseract issue 3423); 6 (one uniform block)
      loses titles set in a larger size. Multi-column pages come out line by line across the columns.
    Korean word spacing is unreliable (words often split into syllables): compare text without whitespace.

    A Tesseract API is not thread-safe: calls are serialized by a lock.
    """

    name = "tesseract"

    def __init__(
        self,
        languages: str = "Hangul",
        tessdata: str | None = None,
        *,
        recheck_language: str | None = "eng",
        page_segmentation: int = 4,
        page_timeout_s: float | None = None,
    ) -> None:
        if "OMP_THREAD_LIMIT" not in os.environ:
            logger.warning("OMP_THREAD_LIMIT is not set: Tesseract may start one OpenMP thread per core per page")
        import tesserocr

        self._tesserocr = tesserocr
        self.languages = languages
        wanted = languages + (f"+{recheck_language}" if recheck_language else "")
        self.tessdata = tessdata or _find_tessdata(wanted)
        self._timeout_ms = int(page_timeout_s * 1000) if page_timeout_s else 0
        self._lock = threading.Lock()
        # Tesseract appends the model file name to the path as is, so the path needs its trailing slash.
        path = os.path.join(self.tessdata, "")
        try:
            self._api: tesserocr.PyTessBaseAPI | None = tesserocr.PyTessBaseAPI(
                path=path, lang=languages, psm=page_segmentation
            )
            self._recheck_api = (
                tesserocr.PyTessBaseAPI(path=path, lang=recheck_language, psm=tesserocr.PSM.SINGLE_LINE)
                if recheck_language
                else None
            )
        except RuntimeError as exc:
            raise OcrFailed(f"Tesseract could not load {wanted!r} from {self.tessdata}: {exc}",
                            FailureReason.LANGUAGE_UNAVAILABLE) from exc

    def recognize(self, image: Image.Image) -> RecognizedPage:
        if image.mode not in ("RGB", "L"):
            image = image.convert("L" if image.mode == "1" else "RGB")
        with self._lock:
            if self._api is None:
                raise OcrFailed("the Tesseract engine is closed")
            try:
                lines = self._read_lines(self._api, image)
                if self._recheck_api is not None:
                    lines = [[self._recheck(self._recheck_api, image, word) for word in line] for line in lines]
                lines = [join_hangul_syllables(line) for line in lines]
            except RuntimeError as exc:
                raise OcrFailed(f"Tesseract failed on a {image.width}x{image.height} page: {exc}") from exc
            finally:
                self._api.Clear()  # frees the page image and results; the loaded models stay
        return _page_from_lines(image.width, image.height, lines)

    def _read_lines(self, api: tesserocr.PyTessBaseAPI, image: Image.Image) -> list[list[RecognizedWord]]:
        tesserocr = self._tesserocr
        word_level = tesserocr.RIL.WORD
        _set_image(api, image)
        dpi = image.info.get("dpi")
        if dpi and 70 <= dpi[0] <= 2400:  # otherwise Tesseract estimates it from the text height
            api.SetSourceResolution(round(dpi[0]))
        if not api.Recognize(timeout=self._timeout_ms):
            raise OcrFailed(f"Tesseract gave up on a {image.width}x{image.height} page (timeout or cancel)")
        lines: list[list[RecognizedWord]] = []
        for word in tesserocr.iterate_level(api.GetIterator(), word_level):
            if word.IsAtBeginningOf(tesserocr.RIL.TEXTLINE) or not lines:
                lines.append([])
            box = word.BoundingBox(word_level)
            if box is None or word.Empty(word_level):
                continue
            try:
                text = word.GetUTF8Text(word_level).strip()
            except RuntimeError:  # tesserocr's way of saying "this word has no text"
                continue
            if text:
                x1, y1, x2, y2 = box
                confidence = min(max(float(word.Confidence(word_level)), 0.0), 100.0)
                lines[-1].append(RecognizedWord(text, confidence, (x1, y1, x2 - x1, y2 - y1)))
        return [line for line in lines if line]

    @staticmethod
    def _recheck(api: tesserocr.PyTessBaseAPI, image: Image.Image, word: RecognizedWord) -> RecognizedWord:
        if word.confidence >= _RECHECK_BELOW or _HANGUL.search(word.text):
            return word
        x, y, width, height = word.bbox
        pad = max(height // 4, 2)  # vertical only: sideways the crop would take in the neighbouring glyphs
        _set_image(api, image.crop((x, max(y - pad, 0), x + width, min(y + height + pad, image.height))))
        try:
            text = " ".join(api.GetUTF8Text().split())
            confidence = float(api.MeanTextConf())
        finally:
            api.Clear()
        if text and confidence > word.confidence + _RECHECK_MARGIN:
            return RecognizedWord(text, confidence, word.bbox)
        return word

    def close(self) -> None:
        with self._lock:
            for api in (self._api, self._recheck_api):
                if api is not None:
                    api.End()
            self._api = self._recheck_api = None

    def __enter__(self) -> TesseractEngine:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


_FAST_VOCABULARY = (
    "invoice", "total", "amount", "date", "customer", "order", "payment", "address", "page", "report",
    "청구서", "합계", "금액", "날짜", "고객", "주문", "결제", "주소", "보고서", "서울",
)


class FastEngine:
    """Deterministic fake OCR for benchmarks of the pipeline itself: the same image always gives the same
    words, derived from a hash of a small thumbnail (so it costs milliseconds, not a real OCR pass)."""

    name = "fast"

    def recognize(self, image: Image.Image) -> RecognizedPage:
        thumbnail = image.convert("L").resize((32, 32), Image.Resampling.NEAREST)
        digest = hashlib.blake2b(thumbnail.tobytes() + f"{image.width}x{image.height}".encode()).digest()
        rng = random.Random(digest)
        width, height = image.width, image.height
        line_height = max(height // 12, 1)
        lines: list[list[RecognizedWord]] = []
        for row in range(rng.randint(1, 8)):
            x, y = 0, row * line_height
            line: list[RecognizedWord] = []
            if y + line_height > height:
                break
            for _ in range(rng.randint(1, 6)):
                text = rng.choice(_FAST_VOCABULARY)
                word_width = min(len(text) * max(line_height // 2, 1), width - x)
                if word_width <= 0:
                    break
                bbox = (x, y, word_width, line_height)
                line.append(RecognizedWord(text, round(rng.uniform(60.0, 99.0), 2), bbox))
                x += word_width
            lines.append(line)
        return _page_from_lines(width, height, lines)


def build_engine(name: str, languages: str = "kor+eng") -> OcrEngine:
    """"tesseract" reading the pages' `languages` (Tesseract codes, e.g. "kor+eng"), "fast" (benchmarks only),
    or "package.module:factory" for an engine of your own (the tests' misbehaving engines come in this way).

    Korean with or without English is read by the Hangul script model with an English recheck (see
    TesseractEngine): on the sample batch 1.4 % CER against 3.5 % for Tesseract's own "kor+eng".
    """
    if name == "tesseract":
        requested = set(languages.split("+"))
        if "kor" in requested and requested <= {"kor", "eng"}:
            return TesseractEngine("Hangul", recheck_language="eng" if "eng" in requested else None)
        return TesseractEngine(languages, recheck_language=None)
    if name == "fast":
        return FastEngine()
    if ":" in name:
        module, _, factory = name.partition(":")
        return getattr(importlib.import_module(module), factory)(languages)
    raise ValueError(f"unknown OCR engine {name!r}: expected 'tesseract', 'fast' or 'package.module:factory'")
