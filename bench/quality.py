"""`make bench-quality`: how well the Tesseract engine reads a labelled set of rendered pages, per category.

    python -m bench.quality [--pages N] [--seed N] [--no-write]

Renders its own Korean, English and mixed text (not the demo's sentences, which tuned the engine) with
Debian's Nanum fonts, knowing every word's text and ink box, in these categories: clean, noise, JPEG
artefacts, small type, low contrast, rotations of 90/180/270 degrees, skew of +5 and -5 degrees, and a
two-column page. The rotated and skewed pages are the clean pages turned, so they compare like with like.

Prints per category: CER without and with whitespace (edit distance over the page's characters, summed over
the category's pages, whitespace runs counted as one space), the median IoU of each rendered word's box with
the best-matching OCR word box, and OCR seconds per page. Then each floor of issue 17 beside its figure.
Writes bench/results.json ("quality") and the quality section of bench/RESULTS.md, keeping other sections.
"""
from __future__ import annotations

import argparse
import io
import math
import os
import random
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

os.environ.setdefault("OMP_THREAD_LIMIT", "1")  # as in the worker: before tesserocr loads

import numpy as np  # noqa: E402
from PIL import Image, ImageDraw, ImageFilter, ImageFont  # noqa: E402

from bench.report import merge_results  # noqa: E402
from demo.sample_batch import FONT_DIR, character_error_rate  # noqa: E402

FONTS = ("NanumGothic.ttf", "NanumBarunGothic.ttf", "NanumMyeongjo.ttf", "NanumSquareR.ttf")

# Written for this benchmark; none of these sentences is in demo.sample_batch.
KOREAN = (
    "아파트 단지 안에 작은 도서관이 새로 문을 열었다.",
    "내일은 전국에 구름이 많고 곳곳에 소나기가 내리겠습니다.",
    "그 식당은 점심시간마다 직장인들로 북적인다.",
    "우리 팀은 다음 달까지 새 앱의 시험판을 내놓을 계획이다.",
    "공원 산책로를 따라 벚나무가 길게 늘어서 있다.",
    "누나는 주말마다 동네 수영장에서 아이들을 가르친다.",
    "이 제품은 구입한 날로부터 일 년 동안 무상으로 수리해 드립니다.",
    "어젯밤 늦게까지 소설책을 읽느라 잠을 설쳤다.",
    "시장 골목에는 떡볶이와 어묵을 파는 가게가 많다.",
    "회원 가입을 하시면 첫 주문에 할인 쿠폰을 드립니다.",
    "할아버지는 매일 새벽 뒷산에 올라 약수를 떠 오신다.",
    "갑자기 쏟아진 비에 우산을 든 사람이 거의 없었다.",
    "이번 학기에는 통계학과 경제학 수업을 함께 듣는다.",
    "버스 정류장 옆에 새로 생긴 꽃집이 무척 예쁘다.",
    "회사 근처 공원에서 점심을 먹고 잠깐 걸었습니다.",
    "겨울이 오기 전에 보일러 점검을 꼭 받으시기 바랍니다.",
    "친구와 함께 본 영화는 생각보다 훨씬 재미있었다.",
    "바닷가 마을의 아침은 갈매기 소리로 시작된다.",
    "주차장 입구는 건물 뒤편 골목에 있습니다.",
    "작은 화분 하나가 사무실 분위기를 바꾸어 놓았다.",
    "연구팀은 새로운 배터리 소재를 개발했다고 발표했다.",
    "아이들은 눈사람을 만들며 하루 종일 밖에서 놀았다.",
    "이 길을 따라 십 분쯤 걸으면 기차역이 나옵니다.",
    "오래된 한옥을 고쳐 만든 찻집에 손님이 끊이지 않는다.",
    "신청서는 이번 주 금요일 오후 여섯 시까지 받습니다.",
    "삼촌은 시골에서 벼농사와 함께 소를 키우신다.",
    "경기가 끝나자 관중들은 모두 일어나 박수를 쳤다.",
    "새 학기를 맞아 교실 벽을 밝은 색으로 칠했다.",
)
ENGLISH = (
    "The river flooded the lower fields after three days of rain.",
    "Our office moves to the fourth floor next Monday.",
    "She painted the fence a pale shade of green.",
    "The train to the coast leaves every hour on the hour.",
    "A small dog waited patiently outside the grocery store.",
    "Please keep your receipt as proof of purchase.",
    "The lecture covered the history of early printing presses.",
    "He fixed the leaking tap with a new rubber washer.",
    "Volunteers planted two hundred trees along the highway.",
    "The recipe calls for butter, flour and a pinch of salt.",
    "Visitors must sign in at the front desk before entering.",
    "The old bridge was closed for repairs during the summer.",
    "Our team finished the project a week ahead of schedule.",
    "Bright lanterns lit the narrow streets of the old town.",
    "The warranty does not cover damage caused by water.",
    "Farmers brought fresh apples and honey to the market.",
)
MIXED = (  # Korean and English in one line
    "이번 업데이트는 Android 기기부터 먼저 적용됩니다.",
    "회의 자료는 Google Drive 공유 폴더에 올려 두었습니다.",
    "새 모니터는 HDMI 케이블 두 개와 함께 배송됩니다.",
    "예약 번호 K-3391로 호텔 체크인을 하시면 됩니다.",
    "다음 발표 주제는 Machine Learning 입문입니다.",
    "이 프로그램은 Windows와 Linux에서 모두 실행된다.",
    "문의 사항은 support@example.org 로 보내 주세요.",
    "우리 회사는 Berlin 지사를 올해 새로 열었다.",
)


@dataclass(frozen=True)
class RenderedWord:
    text: str
    box: tuple[int, int, int, int]  # x, y, width, height of its ink in the page image


@dataclass
class LabelledPage:
    category: str
    image: Image.Image
    lines: list[str]  # in reading order (column by column)
    words: list[RenderedWord] = field(default_factory=list)


# ---- rendering -----------------------------------------------------------------------------------------------

class _Dealer:
    """Hands out each pool's sentences in a shuffled order, so a sentence repeats only once its pool is used up."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._decks: dict[str, list[str]] = {}

    def take(self, pool: tuple[str, ...]) -> str:
        deck = self._decks.setdefault(pool[0], [])
        if not deck:
            deck.extend(self._rng.sample(pool, len(pool)))
        return deck.pop()

    def document(self, count: int) -> list[str]:
        """`count` lines cycling through Korean, English, Korean and mixed sentences."""
        pools = (KOREAN, ENGLISH, KOREAN, MIXED)
        return [self.take(pools[i % len(pools)]) for i in range(count)]


def _render(columns: list[list[str]], font: ImageFont.FreeTypeFont, *, ink: int = 0, paper: int = 255,
            gap: int = 0) -> tuple[Image.Image, list[RenderedWord]]:
    """Columns of lines side by side; each word's box is the ink box Pillow reports for it at its place."""
    margin, step = font.size * 2, round(font.size * 1.8)
    widths = [max(round(font.getlength(line)) for line in column) for column in columns]
    width = sum(widths) + gap * (len(columns) - 1) + 2 * margin
    height = step * max(len(column) for column in columns) + 2 * margin
    image = Image.new("L", (width, height), paper)
    draw = ImageDraw.Draw(image)
    words: list[RenderedWord] = []
    left = margin
    for column, column_width in zip(columns, widths):
        for index, line in enumerate(column):
            top = margin + index * step
            draw.text((left, top), line, font=font, fill=ink)
            for match in re.finditer(r"\S+", line):
                x = left + font.getlength(line[: match.start()])
                x1, y1, x2, y2 = draw.textbbox((x, top), match.group(), font=font)
                words.append(RenderedWord(match.group(), (round(x1), round(y1), round(x2 - x1), round(y2 - y1))))
        left += column_width + gap
    return image, words


def _clean_page(rng: random.Random, dealer: _Dealer, size: tuple[int, int] = (28, 36), **colors: int) -> LabelledPage:
    lines = dealer.document(rng.randint(4, 6))
    font = ImageFont.truetype(str(FONT_DIR / rng.choice(FONTS)), rng.randint(*size))
    image, words = _render([lines], font, **colors)
    return LabelledPage("clean", image, lines, words)


def _noisy(page: LabelledPage, rng: random.Random) -> Image.Image:
    """Gaussian grain (sigma 30) and 1 % salt-and-pepper specks, as on a poor scan or fax."""
    pixels = np.asarray(page.image, dtype=np.float32)
    noise = np.random.default_rng(rng.getrandbits(32))
    pixels = pixels + noise.normal(0.0, 30.0, pixels.shape)
    specks = noise.random(pixels.shape)
    pixels[specks < 0.005] = 0
    pixels[specks > 0.995] = 255
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _jpeg(image: Image.Image, quality: int = 20) -> Image.Image:
    """Slightly blurred, then saved at JPEG quality 20: ringing and block artefacts around the strokes."""
    buffer = io.BytesIO()
    image.filter(ImageFilter.GaussianBlur(0.6)).save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("L")


def _turned(page: LabelledPage, degrees: int, category: str) -> LabelledPage:
    """The page turned `degrees` counter-clockwise (expanding the canvas), its word boxes turned with it."""
    image = page.image.rotate(degrees, expand=True, fillcolor=255, resample=Image.Resampling.BICUBIC)
    theta = math.radians(degrees)
    cx, cy = page.image.width / 2, page.image.height / 2
    ncx, ncy = image.width / 2, image.height / 2

    def turn(x: float, y: float) -> tuple[float, float]:  # Pillow's rotation: counter-clockwise on screen
        dx, dy = x - cx, y - cy
        return ncx + dx * math.cos(theta) + dy * math.sin(theta), ncy - dx * math.sin(theta) + dy * math.cos(theta)

    words = []
    for word in page.words:
        x, y, w, h = word.box
        corners = [turn(px, py) for px, py in ((x, y), (x + w, y), (x + w, y + h), (x, y + h))]
        xs, ys = [c[0] for c in corners], [c[1] for c in corners]
        words.append(RenderedWord(word.text, (round(min(xs)), round(min(ys)),
                                              round(max(xs) - min(xs)), round(max(ys) - min(ys)))))
    return LabelledPage(category, image, page.lines, words)


def render_quality_set(pages_per_category: int = 8, seed: int = 17) -> dict[str, list[LabelledPage]]:
    """Every category's labelled pages; the same seed always gives the same set."""
    rng = random.Random(seed)
    dealer = _Dealer(rng)
    clean = [_clean_page(rng, dealer) for _ in range(pages_per_category)]
    categories: dict[str, list[LabelledPage]] = {"clean": clean}
    categories["noise"] = [LabelledPage("noise", _noisy(p, rng), p.lines, p.words) for p in clean]
    categories["jpeg"] = [LabelledPage("jpeg", _jpeg(p.image), p.lines, p.words) for p in clean]
    categories["small_type"] = [
        LabelledPage("small_type", *_small(rng, dealer)) for _ in range(pages_per_category)]
    categories["low_contrast"] = [
        _retitled(_clean_page(rng, dealer, ink=150, paper=205), "low_contrast") for _ in range(pages_per_category)]
    for degrees in (90, 180, 270):
        # Pillow turns counter-clockwise; the category names the clockwise turn a scanner or phone gives.
        categories[f"rotated_{degrees}"] = [_turned(p, -degrees % 360, f"rotated_{degrees}") for p in clean]
    categories["skew_+5"] = [_turned(p, 5, "skew_+5") for p in clean]
    categories["skew_-5"] = [_turned(p, -5, "skew_-5") for p in clean]
    categories["two_columns"] = [_two_columns(rng, dealer) for _ in range(pages_per_category)]
    return categories


def _retitled(page: LabelledPage, category: str) -> LabelledPage:
    page.category = category
    return page


def _small(rng: random.Random, dealer: _Dealer) -> tuple[Image.Image, list[str], list[RenderedWord]]:
    """Type 13-15 px high: 7 pt at 150 dpi, the small print of a receipt or a footnote."""
    page = _clean_page(rng, dealer, size=(13, 15))
    return page.image, page.lines, page.words


def _two_columns(rng: random.Random, dealer: _Dealer) -> LabelledPage:
    columns = [dealer.document(6), dealer.document(6)]
    font = ImageFont.truetype(str(FONT_DIR / rng.choice(FONTS)), rng.randint(24, 30))
    image, words = _render(columns, font, gap=font.size * 3)
    return LabelledPage("two_columns", image, columns[0] + columns[1], words)


# ---- scoring -------------------------------------------------------------------------------------------------

@dataclass
class CategoryScore:
    chars_ws: int = 0  # truth characters, whitespace runs counted as one space
    errors_ws: float = 0.0
    chars_nows: int = 0
    errors_nows: float = 0.0
    ious: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def add(self, page: LabelledPage, text: str, boxes: list[tuple[int, int, int, int]], seconds: float) -> None:
        expected, actual = " ".join(page.lines), " ".join(text.split())
        nows = "".join(expected.split())
        self.chars_ws += len(expected)
        self.errors_ws += character_error_rate(expected, actual, ignore_whitespace=False) * len(expected)
        self.chars_nows += len(nows)
        self.errors_nows += character_error_rate(expected, actual) * len(nows)
        self.ious.extend(max((box_iou(word.box, box) for box in boxes), default=0.0) for word in page.words)
        self.seconds.append(seconds)

    def figures(self) -> dict[str, float]:
        return {
            "cer_ws_pct": round(100 * self.errors_ws / self.chars_ws, 2),
            "cer_nows_pct": round(100 * self.errors_nows / self.chars_nows, 2),
            "box_iou_median": round(statistics.median(self.ious), 3) if self.ious else 0.0,
            "ocr_s_per_page": round(statistics.mean(self.seconds), 3),
            "pages": len(self.seconds),
        }


def box_iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection over union of two (x, y, width, height) boxes."""
    width = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    height = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    inter = max(width, 0) * max(height, 0)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


Recognizer = Callable[[Image.Image], tuple[str, list[tuple[int, int, int, int]]]]


def score_set(categories: dict[str, list[LabelledPage]], recognize: Recognizer) -> dict[str, dict[str, float]]:
    """Each category's figures: `recognize` turns a page image into (text, word boxes in that image)."""
    figures = {}
    for name, pages in categories.items():
        score = CategoryScore()
        for page in pages:
            started = time.perf_counter()
            text, boxes = recognize(page.image)
            score.add(page, text, boxes, time.perf_counter() - started)
        figures[name] = score.figures()
    return figures


# ---- the floors of issue 17 ------------------------------------------------------------------------------------

UPRIGHT_OF = {"rotated_90": "clean", "rotated_180": "clean", "rotated_270": "clean"}


def floor_checks(figures: dict[str, dict[str, float]]) -> list[tuple[str, float, str, bool]]:
    """(what, figure, limit, met) for each floor of issue 17."""
    checks = [
        ("clean: CER with whitespace %", figures["clean"]["cer_ws_pct"], "<= 2.5",
         figures["clean"]["cer_ws_pct"] <= 2.5),
        ("clean: CER without whitespace %", figures["clean"]["cer_nows_pct"], "<= 1.5",
         figures["clean"]["cer_nows_pct"] <= 1.5),
    ]
    for turned, upright in UPRIGHT_OF.items():
        for key in ("cer_nows_pct", "cer_ws_pct"):
            gap = figures[turned][key] - figures[upright][key]
            checks.append((f"{turned}: {key} minus {upright}'s (points)", round(gap, 2), "<= 1.0", gap <= 1.0))
    for skewed in ("skew_+5", "skew_-5"):
        value = figures[skewed]["cer_nows_pct"]
        checks.append((f"{skewed}: CER without whitespace %", value, "<= 3", value <= 3.0))
    for name, row in figures.items():
        checks.append((f"{name}: median word-box IoU", row["box_iou_median"], ">= 0.7", row["box_iou_median"] >= 0.7))
    return checks


# ---- report --------------------------------------------------------------------------------------------------

def tesseract_recognizer() -> Recognizer:
    """The engine the worker runs for kor+eng batches, as a Recognizer."""
    from services.ocr_worker.engine import build_engine

    engine = build_engine("tesseract", "kor+eng")

    def recognize(image: Image.Image) -> tuple[str, list[tuple[int, int, int, int]]]:
        page = engine.recognize(image)
        return page.text, [word.bbox for word in page.words]

    return recognize


def figures_table(figures: dict[str, dict[str, float]]) -> list[str]:
    lines = ["| category | pages | CER without whitespace % | CER with whitespace % | word-box IoU (median) "
             "| OCR s/page |", "|---|---|---|---|---|---|"]
    lines += [f"| {name} | {row['pages']} | {row['cer_nows_pct']} | {row['cer_ws_pct']} | {row['box_iou_median']} "
              f"| {row['ocr_s_per_page']} |" for name, row in figures.items()]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=16, help="pages per category")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    categories = render_quality_set(args.pages, args.seed)
    figures = score_set(categories, tesseract_recognizer())
    table = figures_table(figures)
    checks = floor_checks(figures)
    print("\n".join(table))
    print()
    for what, value, limit, met in checks:
        print(f"{'ok  ' if met else 'MISS'} {what:55} {value:>8} (limit {limit})")
    if not args.no_write:
        merge_results("quality", figures, [
            "## OCR quality (bench/quality.py)", "",
            f"`python -m bench.quality --pages {args.pages} --seed {args.seed}`: {args.pages} rendered pages per "
            "category, Korean, English and mixed lines in four Nanum fonts; CER summed over each category's pages.",
            "", *table, "", "| floor (issue 17) | figure | limit | met |", "|---|---|---|---|",
            *[f"| {what} | {value} | {limit} | {'yes' if met else 'NO'} |" for what, value, limit, met in checks],
        ])


if __name__ == "__main__":
    main()
