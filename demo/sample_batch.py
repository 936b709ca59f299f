"""A deterministic batch of Korean/English document images and one PDF, with the text each one shows.

    python -m demo.sample_batch OUT_DIR [--images N] [--pdf-pages N] [--seed N]

Writes the files and manifest.json (file name → expected lines). Fonts: Debian's fonts-nanum.
"""
from __future__ import annotations

import argparse
import json
import random
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

__all__ = ["SampleFile", "character_error_rate", "render_sample_batch"]

FONT_DIR = Path("/usr/share/fonts/truetype/nanum")
FONTS = ("NanumGothic.ttf", "NanumBarunGothic.ttf", "NanumMyeongjo.ttf", "NanumSquareR.ttf")
PDF_DPI = 200
PDF_PAGE_SIZE = (1654, 2339)  # A4 at 200 dpi

KOREAN = (
    "오늘 아침 서울에는 봄비가 조용히 내렸습니다.",
    "도서관은 매주 월요일에 문을 닫습니다.",
    "할머니께서 만드신 김치찌개가 가장 맛있어요.",
    "회의는 오후 세 시에 대회의실에서 시작합니다.",
    "새로 산 자전거를 타고 한강 공원에 갔습니다.",
    "이 계약서는 양측 서명 후 효력이 발생합니다.",
    "겨울 방학 동안 제주도로 가족 여행을 떠났다.",
    "고양이가 창가에 앉아 햇볕을 쬐고 있습니다.",
    "택배는 내일 오전 중으로 도착할 예정입니다.",
    "우리 동네 빵집은 단팥빵이 특히 유명하다.",
    "시험 기간에는 카페마다 학생들로 가득 찬다.",
    "환자의 혈압과 체온을 두 시간마다 확인하세요.",
    "지하철 이호선은 출근 시간에 매우 붐빕니다.",
    "작년 가을에 심은 사과나무에 꽃이 피었다.",
    "전기 요금 고지서가 이번 달에도 늦게 왔습니다.",
    "박물관 입장료는 어린이와 노인에게 무료입니다.",
    "그는 매일 저녁 피아노 연습을 한 시간씩 한다.",
    "산불 예방을 위해 등산로 일부가 폐쇄되었습니다.",
    "주말 농장에서 감자와 고구마를 함께 캤습니다.",
    "비행기가 안개 때문에 두 시간 늦게 출발했다.",
    "동생은 요즘 수영 강습에 푹 빠져 있습니다.",
    "시청 앞 광장에서 여름 음악 축제가 열립니다.",
    "오래된 사진첩을 정리하다가 편지를 발견했다.",
    "어머니는 아침마다 화분에 물을 주십니다.",
)
ENGLISH = (
    "The quarterly report shows a steady rise in exports.",
    "Please return the signed lease before the end of May.",
    "A heavy fog delayed every flight leaving the harbor city.",
    "Our library now lends telescopes along with books.",
    "The bakery on Elm Street sells out of rye bread by noon.",
    "Remember to water the tomato plants twice a week.",
    "The museum reopened after a long restoration of its roof.",
    "Students gathered in the hall to hear the visiting poet.",
    "The invoice lists twelve boxes of printer paper.",
    "A quiet train carried us through the snowy mountains.",
    "The committee approved the new bicycle lanes downtown.",
    "Fresh coffee and warm bagels are served every morning.",
    "The engineer replaced the worn gear in the old clock.",
    "Children built a sandcastle shaped like a lighthouse.",
    "The hospital added forty beds to its emergency ward.",
    "Our neighbor plays the violin late into the evening.",
    "Strong winds knocked down several fences on the farm.",
    "The chef seasons the soup with thyme and black pepper.",
)
MIXED = (  # Korean and English in one line
    "서울 지사의 매출 보고서는 Global Sales 팀이 담당합니다.",
    "다음 주 Team Meeting은 Zoom으로 진행됩니다.",
    "이 노트북은 USB-C 충전을 지원합니다.",
    "Python 3.11 버전으로 서버를 업그레이드했습니다.",
    "주문 번호 A-2047의 배송이 시작되었습니다.",
    "Open Source 라이선스 목록을 첨부합니다.",
    "마케팅 부서는 New York 박람회에 참가한다.",
    "고객센터 이메일 주소는 help@example.com 입니다.",
)


@dataclass(frozen=True)
class SampleFile:
    path: Path
    content_type: str
    lines: list[str]  # every page's lines, in order
    pages: list[list[str]]


class _Dealer:
    """Hands out sentences from each shuffled pool in turn, so no sentence repeats until a pool runs out."""

    def __init__(self, rng: random.Random) -> None:
        self._pools = {name: rng.sample(pool, len(pool)) for name, pool in
                       (("ko", KOREAN), ("en", ENGLISH), ("mixed", MIXED))}
        self._next = dict.fromkeys(self._pools, 0)

    def take(self, pool: str) -> str:
        sentences = self._pools[pool]
        sentence = sentences[self._next[pool] % len(sentences)]
        self._next[pool] += 1
        return sentence

    def document(self, kind: str, count: int) -> list[str]:
        if kind != "mixed":
            return [self.take(kind) for _ in range(count)]
        return [self.take(("mixed", "ko", "en")[i % 3]) for i in range(count)]


def _draw_lines(canvas: Image.Image, lines: list[str], font: ImageFont.FreeTypeFont, margin: int) -> None:
    draw = ImageDraw.Draw(canvas)
    step = round(font.size * 1.8)
    for index, line in enumerate(lines):
        draw.text((margin, margin + index * step), line, font=font, fill=0)


def _render_image(lines: list[str], font: ImageFont.FreeTypeFont) -> Image.Image:
    margin = font.size * 2
    width = max(round(font.getlength(line)) for line in lines) + 2 * margin
    height = round(font.size * 1.8) * len(lines) + 2 * margin
    canvas = Image.new("L", (width, height), 255)
    _draw_lines(canvas, lines, font, margin)
    return canvas


def _render_pdf_page(lines: list[str], font: ImageFont.FreeTypeFont) -> Image.Image:
    canvas = Image.new("L", PDF_PAGE_SIZE, 255)
    _draw_lines(canvas, lines, font, margin=160)
    return canvas


_PDF_DATE = time.strptime("2026-01-01", "%Y-%m-%d")  # Pillow writes a struct_time as a PDF date


def render_sample_batch(out_dir: Path, images: int = 10, pdf_pages: int = 3, seed: int = 0) -> list[SampleFile]:
    """Render `images` single-page images (every 4th a JPEG) and, if pdf_pages > 0, one PDF of that many pages."""
    rng = random.Random(seed)
    dealer = _Dealer(rng)
    out_dir.mkdir(parents=True, exist_ok=True)
    files: list[SampleFile] = []
    for index in range(images):
        kind = ("ko", "en", "mixed")[index % 3]
        lines = dealer.document(kind, rng.randint(2, 4))
        font = ImageFont.truetype(str(FONT_DIR / rng.choice(FONTS)), rng.randint(28, 36))
        image = _render_image(lines, font)
        if index % 4 == 3:
            path, content_type = out_dir / f"{index + 1:03d}_{kind}.jpg", "image/jpeg"
            image.save(path, "JPEG", quality=90)
        else:
            path, content_type = out_dir / f"{index + 1:03d}_{kind}.png", "image/png"
            image.save(path, "PNG")
        files.append(SampleFile(path, content_type, lines, [lines]))
    if pdf_pages > 0:
        pages = [dealer.document(("ko", "en", "mixed")[i % 3], rng.randint(2, 4)) for i in range(pdf_pages)]
        font = ImageFont.truetype(str(FONT_DIR / "NanumGothic.ttf"), 32)
        rendered = [_render_pdf_page(page, font) for page in pages]
        path = out_dir / f"{images + 1:03d}_document.pdf"
        # A fixed date: Pillow stamps the current second otherwise, and the same seed must give the same bytes.
        rendered[0].save(path, "PDF", save_all=True, append_images=rendered[1:], resolution=PDF_DPI,
                         creationDate=_PDF_DATE, modDate=_PDF_DATE)
        files.append(SampleFile(path, "application/pdf", [line for page in pages for line in page], pages))
    manifest = {f.path.name: f.lines for f in files}
    (out_dir / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", "utf-8")
    return files


def character_error_rate(expected: str, actual: str, *, ignore_whitespace: bool = True) -> float:
    """Levenshtein distance / len(expected), on NFC-normalized text; 0.0 when both are empty, 1.0 when only
    `expected` is. Without whitespace is the fairer measure for Korean, whose word spacing OCR often moves."""
    expected, actual = unicodedata.normalize("NFC", expected), unicodedata.normalize("NFC", actual)
    if ignore_whitespace:
        expected, actual = "".join(expected.split()), "".join(actual.split())
    if not expected:
        return 0.0 if not actual else 1.0
    previous = list(range(len(actual) + 1))
    for i, wanted in enumerate(expected, start=1):
        current = [i]
        for j, got in enumerate(actual, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (wanted != got)))
        previous = current
    return previous[-1] / len(expected)


def line_error_rates(expected_lines: list[str], text: str) -> list[float]:
    """For each expected line, the CER (whitespace ignored) of the OCR line that matches it best."""
    lines = [line for line in text.split("\n") if line.strip()]
    return [min((character_error_rate(want, got) for got in lines), default=1.0) for want in expected_lines]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--pdf-pages", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for sample in render_sample_batch(args.out_dir, args.images, args.pdf_pages, args.seed):
        print(f"{sample.path}\t{sample.content_type}\t{len(sample.pages)} page(s), {len(sample.lines)} lines")


if __name__ == "__main__":
    main()
