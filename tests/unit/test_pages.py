import io

import pytest
from PIL import Image

from services.ocr_worker.pages import UndecodableFile, decode_pages


def _encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _page(color: int = 255, size: tuple[int, int] = (120, 80)) -> Image.Image:
    return Image.new("L", size, color)


def test_pdf_yields_one_image_per_page_at_the_requested_dpi() -> None:
    pages = [_page(), _page(200), _page(100)]
    pdf = _encode(pages[0], "PDF", save_all=True, append_images=pages[1:], resolution=72)

    images = list(decode_pages(pdf, "application/pdf", pdf_dpi=144))

    assert len(images) == 3
    assert all(image.mode in ("RGB", "L") for image in images)
    assert images[0].size == (240, 160)  # 120x80 points at 144 dpi
    assert images[0].info["dpi"] == (144, 144)


def test_multi_frame_tiff_yields_every_frame() -> None:
    frames = [_page(0), _page(128), Image.new("1", (120, 80), 1)]
    tiff = _encode(frames[0], "TIFF", save_all=True, append_images=frames[1:])

    images = list(decode_pages(tiff, "image/tiff"))

    assert len(images) == 3
    assert [image.getpixel((0, 0)) for image in images] == [0, 128, 255]
    assert all(image.mode == "L" for image in images)


def test_exif_orientation_is_applied() -> None:
    image = Image.new("RGB", (200, 100), "white")
    image.paste((255, 0, 0), (0, 0, 20, 20))  # a red mark in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    jpeg = _encode(image, "JPEG", exif=exif, quality=95)

    (page,) = decode_pages(jpeg, "image/jpeg")

    assert page.size == (100, 200)
    red, green, _ = page.getpixel((90, 10))  # the mark moved to the top-right corner
    assert red > 200 and green < 60


def test_transparency_is_flattened_onto_white() -> None:
    image = Image.new("RGBA", (10, 10), (0, 0, 0, 0))

    (page,) = decode_pages(_encode(image, "PNG"), "image/png")

    assert page.mode == "RGB"
    assert page.getpixel((5, 5)) == (255, 255, 255)


def test_sixteen_bit_grey_keeps_its_contrast() -> None:
    image = Image.new("I;16", (2, 1))
    image.putpixel((0, 0), 1000)
    image.putpixel((1, 0), 60000)

    (page,) = decode_pages(_encode(image, "PNG"), "image/png")

    assert page.mode == "L"
    assert (page.getpixel((0, 0)), page.getpixel((1, 0))) == (0, 255)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"this is not an image at all" * 10, "not a PDF or an image"),
        (b"%PDF-1.7\n garbage that is no PDF", "not a readable PDF"),
    ],
)
def test_bytes_that_are_no_document_raise_undecodable_file_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(UndecodableFile, match=reason):
        list(decode_pages(data, "application/octet-stream"))


def test_truncated_png_raises_undecodable_file() -> None:
    png = _encode(Image.effect_noise((300, 300), 64).convert("RGB"), "PNG")

    with pytest.raises(UndecodableFile, match="damaged or truncated"):
        list(decode_pages(png[: len(png) // 2], "image/png"))


def test_truncated_pdf_raises_undecodable_file() -> None:
    pdf = _encode(_page(), "PDF", save_all=True, append_images=[_page()])

    with pytest.raises(UndecodableFile):
        list(decode_pages(pdf[: len(pdf) // 3], "application/pdf"))


def test_too_many_pages_are_refused_before_any_is_rendered() -> None:
    pdf = _encode(_page(), "PDF", save_all=True, append_images=[_page(), _page()])

    with pytest.raises(UndecodableFile, match="3 pages, more than the limit of 2"):
        next(decode_pages(pdf, "application/pdf", max_pages=2))


def test_decompression_bomb_is_refused() -> None:
    # A tiny file declaring a huge canvas: refused from its header, before any pixel is decoded.
    bomb = _encode(Image.new("1", (20_000, 20_000)), "PNG")

    with pytest.raises(UndecodableFile, match="limit|too large"):
        list(decode_pages(bomb, "image/png", max_pixels=10_000_000))


def test_huge_pdf_page_is_refused() -> None:
    pdf = _encode(_page(size=(7200, 7200)), "PDF", resolution=72)  # a 100 x 100 inch page

    with pytest.raises(UndecodableFile, match="lower dpi"):
        list(decode_pages(pdf, "application/pdf", pdf_dpi=200))
