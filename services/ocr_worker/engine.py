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
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

from PIL import Image

from common.errors import FileFailed
from schemas.results import FailureReason
from services.ocr_worker.orientation import PageGeometry, estimate_skew

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
    "respace_line",
]

logger = logging.getLogger(__name__)


class OcrFailed(FileFailed):
    """The engine could not recognize a page (timed out, or Tesseract refused the image)."""

    code = FailureReason.OCR_FAILED


@dataclass(frozen=True)
class RecognizedWord:
    text: str
    confidence: float  # 0..1
    bbox: tuple[int, int, int, int]  # x, y, width, height in pixels of the image as given


@dataclass(frozen=True)
class RecognizedPage:
    width: int
    height: int
    text: str  # lines joined with "\n"
    mean_confidence: float  # mean of the words' confidences (0..1), 0 when there are no words
    words: tuple[RecognizedWord, ...]
    rotation: int = 0  # clockwise turn of the text on the image as given: 0, 90, 180 or 270
    skew: float = 0.0  # degrees the image was turned counter-clockwise to level its text lines


class OcrEngine(Protocol):
    name: str

    def recognize(self, image: Image.Image) -> RecognizedPage: ...


def _page_from_lines(width: int, height: int, lines: list[list[RecognizedWord]], *, rotation: int = 0,
                     skew: float = 0.0) -> RecognizedPage:
    words = tuple(word for line in lines for word in line)
    text = "\n".join(" ".join(w.text for w in line) for line in lines if line)
    return RecognizedPage(width=width, height=height, text=text, mean_confidence=_mean_confidence(lines),
                          words=words, rotation=rotation, skew=skew)


def _mean_confidence(lines: list[list[RecognizedWord]]) -> float:
    confidences = [word.confidence for line in lines for word in line]
    return sum(confidences) / len(confidences) if confidences else 0.0


def _confident_characters(lines: list[list[RecognizedWord]]) -> float:
    """How much a reading says: its characters weighted by confidence. A page read turned the wrong way
    gives few characters, or many at a low confidence."""
    return sum(word.confidence * len(word.text) for line in lines for word in line)


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
_RECHECK_BELOW = 0.90  # words the Hangul model reads well score 0.93-0.97
_RECHECK_MARGIN = 0.10
# Below this mean confidence the page may be turned, and Tesseract's orientation detection is asked. Upright
# clean pages score 0.85-0.95; pages turned 90 or 180 degrees score under 0.5.
_ORIENTATION_CHECK_BELOW = 0.75
_HANGUL_MODELS = {"Hangul", "Hangul_vert", "kor", "kor_vert"}


def _korean_spacer() -> Callable[[str], str]:
    """Kiwi's spacing model (kiwipiepy, its model inside the wheel): reads a line with all its spaces dropped
    and spaces it again. Loaded once per engine (about 2 s); one thread."""
    from kiwipiepy import Kiwi

    with warnings.catch_warnings():  # 0 means one thread since kiwipiepy 0.21, as wanted; it warns of the change
        warnings.simplefilter("ignore", DeprecationWarning)
        kiwi = Kiwi(num_workers=0)
    kiwi.space("모델을 미리 불러 둡니다")  # the first call loads the rest of the model
    return lambda text: kiwi.space(text, reset_whitespace=True)


# Relative width of a character, to split a word's box where the spacing corrector splits the word.
_NARROW = re.compile(r"[\x20-\x7e]")


def respace_line(line: list[RecognizedWord], spaced: str) -> list[RecognizedWord]:
    """The line's words split and joined where `spaced` (the same characters, spaced by a Korean spacing model)
    puts a space or none. Only places next to a Hangul character change: Tesseract spaces Latin text well.

    A joined word's box is the union of its parts' boxes and its confidence their per-character mean; a split
    word's box is shared out by character width (a Hangul syllable is about twice a Latin letter)."""
    chars = "".join(word.text for word in line)
    if "".join(spaced.split()) != chars:  # the model changed characters: keep Tesseract's spacing
        return line
    breaks = _spaces_before(spaced)
    pieces: list[tuple[RecognizedWord, bool]] = []  # (piece, space before it)
    offset = 0
    for index, word in enumerate(line):
        cuts = [0] + [i for i in range(1, len(word.text)) if _keeps(breaks, chars, offset + i, joined=False)]
        for start, stop in zip(cuts, cuts[1:] + [len(word.text)]):
            spaced_before = start > 0 or (index > 0 and _keeps(breaks, chars, offset, joined=True))
            pieces.append((_slice(word, start, stop), spaced_before))
        offset += len(word.text)
    words: list[RecognizedWord] = []
    for piece, spaced_before in pieces:
        words.append(_joined(words.pop(), piece) if words and not spaced_before else piece)
    return words


def _spaces_before(spaced: str) -> set[int]:
    """Indexes (among the non-space characters) of the characters that follow a space."""
    breaks, count = set(), 0
    for char in spaced:
        if char.isspace():
            breaks.add(count)
        else:
            count += 1
    return breaks


def _keeps(breaks: set[int], chars: str, index: int, *, joined: bool) -> bool:
    """Whether a space goes before chars[index]: the model's answer next to Hangul, else Tesseract's
    (`joined`: Tesseract had a space there)."""
    if _HANGUL.match(chars[index - 1]) or _HANGUL.match(chars[index]):
        return index in breaks
    return joined


def _slice(word: RecognizedWord, start: int, stop: int) -> RecognizedWord:
    if (start, stop) == (0, len(word.text)):
        return word
    weights = [0.5 if _NARROW.match(char) else 1.0 for char in word.text]
    x, y, width, height = word.bbox
    left = x + round(width * sum(weights[:start]) / sum(weights))
    right = x + round(width * sum(weights[:stop]) / sum(weights))
    return RecognizedWord(word.text[start:stop], word.confidence, (left, y, right - left, height))


def _joined(first: RecognizedWord, second: RecognizedWord) -> RecognizedWord:
    x, y = min(first.bbox[0], second.bbox[0]), min(first.bbox[1], second.bbox[1])
    right = max(first.bbox[0] + first.bbox[2], second.bbox[0] + second.bbox[2])
    bottom = max(first.bbox[1] + first.bbox[3], second.bbox[1] + second.bbox[3])
    confidence = (first.confidence * len(first.text) + second.confidence * len(second.text)) / (
        len(first.text) + len(second.text))
    return RecognizedWord(first.text + second.text, confidence, (x, y, right - x, bottom - y))


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
    - recheck_language "eng": a word with no Hangul and a confidence under 0.9 (often an English term in a
      Korean sentence, which the Hangul model misreads) is read again alone with this model, and replaced
      when that reading is clearly more confident. None turns this off. (So this engine holds two
      Tesseract APIs, each loaded once.)
    - page_segmentation 4 (one column of text of variable sizes). Tesseract's default, 3 (automatic layout),
      drops or garbles whole Korean lines even on clean renders (tesseract issue 3423); 6 (one uniform block)
      loses titles set in a larger size. Multi-column pages come out line by line across the columns.
    Each page is deskewed (estimate_skew, up to +-10 degrees) before it is read; when the reading's mean
    confidence is under 0.75, Tesseract's orientation detection (Debian's tesseract-ocr-osd) is asked whether
    the page is turned, and the more confident of the two readings is kept. Word boxes are mapped back onto the
    image as given. Hangul spacing comes from Kiwi (see respace_line): Tesseract splits Korean words into
    syllables and runs others together. Measured on bench.quality (16 clean pages): CER with whitespace 7.1 %
    with the former syllable-gap rule, 1.8 % with Kiwi; the kor model's spacing gave 1.6-1.8 % but needs a
    second full Tesseract pass (about twice the OCR time). Confidences are 0..1.

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
        wanted = languages + (f"+{recheck_language}" if recheck_language else "") + "+osd"
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
            self._osd_api = tesserocr.PyTessBaseAPI(path=path, lang="osd", psm=tesserocr.PSM.OSD_ONLY)
        except RuntimeError as exc:
            raise OcrFailed(f"Tesseract could not load {wanted!r} from {self.tessdata}: {exc}",
                            FailureReason.LANGUAGE_UNAVAILABLE) from exc
        self._spacer = _korean_spacer() if _HANGUL_MODELS & set(languages.split("+")) else None

    def recognize(self, image: Image.Image) -> RecognizedPage:
        """Deskew, read, and when the reading is poor ask Tesseract's orientation detection whether the page
        is turned; keep the more confident reading. Boxes are mapped back onto `image` as given."""
        if image.mode not in ("RGB", "L"):
            image = image.convert("L" if image.mode == "1" else "RGB")
        geometry = PageGeometry(image.width, image.height, skew=estimate_skew(image))
        deskewed = geometry.deskewed(image)
        with self._lock:
            if self._api is None:
                raise OcrFailed("the Tesseract engine is closed")
            try:
                lines = self._read_lines(self._api, deskewed)
                if _mean_confidence(lines) < _ORIENTATION_CHECK_BELOW:
                    geometry, lines = self._read_turned(geometry, deskewed, lines)
                if self._recheck_api is not None:
                    upright = geometry.upright(deskewed)
                    lines = [[self._recheck(self._recheck_api, upright, word) for word in line] for line in lines]
            except RuntimeError as exc:
                raise OcrFailed(f"Tesseract failed on a {image.width}x{image.height} page: {exc}") from exc
            finally:
                self._api.Clear()  # frees the page image and results; the loaded models stay
        if self._spacer is not None:
            lines = [respace_line(line, self._spacer(" ".join(w.text for w in line))) for line in lines]
        lines = [[replace(w, bbox=geometry.to_original(w.bbox, deskewed.size)) for w in line] for line in lines]
        return _page_from_lines(image.width, image.height, lines, rotation=geometry.rotation, skew=geometry.skew)

    def _read_turned(self, geometry: PageGeometry, deskewed: Image.Image, lines: list[list[RecognizedWord]]
                     ) -> tuple[PageGeometry, list[list[RecognizedWord]]]:
        """The page read again turned as Tesseract's orientation detection says, if that reads more."""
        _set_image(self._osd_api, deskewed)
        try:
            detected = self._osd_api.DetectOrientationScript()  # None when it finds too few characters
        finally:
            self._osd_api.Clear()
        rotation = int(detected["orient_deg"]) % 360 if detected else 0
        if rotation not in (90, 180, 270):
            return geometry, lines
        turned = replace(geometry, rotation=rotation)
        turned_lines = self._read_lines(self._api, turned.upright(deskewed))
        if _confident_characters(turned_lines) > _confident_characters(lines):
            return turned, turned_lines
        return geometry, lines

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
                confidence = min(max(float(word.Confidence(word_level)) / 100, 0.0), 1.0)
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
            confidence = float(api.MeanTextConf()) / 100
        finally:
            api.Clear()
        if text and confidence > word.confidence + _RECHECK_MARGIN:
            return RecognizedWord(text, confidence, word.bbox)
        return word

    def close(self) -> None:
        with self._lock:
            for api in (self._api, self._recheck_api, self._osd_api):
                if api is not None:
                    api.End()
            self._api = self._recheck_api = self._osd_api = None

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
                line.append(RecognizedWord(text, round(rng.uniform(0.6, 0.99), 3), bbox))
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
