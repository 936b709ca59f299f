import pytest
from PIL import Image, ImageDraw, ImageFont

from demo.sample_batch import FONT_DIR
from services.ocr_worker.orientation import PageGeometry, estimate_skew

pytestmark = pytest.mark.unit


def _text_page() -> Image.Image:
    font = ImageFont.truetype(str(FONT_DIR / "NanumGothic.ttf"), 28)
    page = Image.new("L", (900, 420), 255)
    draw = ImageDraw.Draw(page)
    for row in range(6):
        draw.text((60, 50 + row * 52), "도서관은 매주 월요일에 문을 닫습니다. The bakery sells out.", font=font, fill=0)
    return page


@pytest.mark.parametrize("degrees", [-7.0, -5.0, -1.5, 0.0, 2.0, 5.0])
def test_skew_is_measured_as_the_turn_that_levels_the_lines(degrees: float) -> None:
    page = _text_page().rotate(degrees, expand=True, fillcolor=255, resample=Image.Resampling.BICUBIC)

    assert estimate_skew(page) == pytest.approx(-degrees, abs=0.3)


def test_a_page_turned_by_a_right_angle_and_skewed_is_levelled_to_an_axis() -> None:
    page = _text_page().rotate(3, expand=True, fillcolor=255).transpose(Image.Transpose.ROTATE_90)

    assert estimate_skew(page) == pytest.approx(-3, abs=0.3)
    assert estimate_skew(Image.new("L", (300, 200), 255)) == 0.0


def _ink_box(image: Image.Image) -> tuple[int, int, int, int]:
    left, top, right, bottom = Image.eval(image, lambda v: 255 if v < 128 else 0).getbbox()  # resampling greys edges
    return left, top, right - left, bottom - top


@pytest.mark.parametrize(("rotation", "skew"), [(0, 0.0), (90, 0.0), (180, 4.0), (270, -5.0)])
def test_a_box_read_on_the_upright_page_maps_back_onto_the_page_as_sent(rotation: int, skew: float) -> None:
    level = Image.new("L", (640, 400), 255)
    ImageDraw.Draw(level).rectangle((100, 60, 259, 99), fill=0)  # a word, level on the upright page
    sent = level.rotate(-rotation, expand=True).rotate(-skew, expand=True, fillcolor=255)
    geometry = PageGeometry(sent.width, sent.height, skew=skew, rotation=rotation)
    deskewed = geometry.deskewed(sent)

    mapped = geometry.to_original(_ink_box(geometry.upright(deskewed)), deskewed.size)

    assert mapped == pytest.approx(_ink_box(sent), abs=5)  # two resamplings blur the edges by a pixel or two
