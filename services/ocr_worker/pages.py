"""File bytes → page images: PDFs rasterized with pdfium, TIFF frames, other images with EXIF rotation applied."""
from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pypdfium2 as pdfium
from PIL import Image, ImageOps

from common.errors import FileFailed
from schemas.results import FailureReason

__all__ = ["UndecodableFile", "decode_pages", "pdf_page_count"]

# Pillow's own bomb limit (about 89 Mpx, e.g. 9,450 x 9,450): far above an A3 scan at 600 dpi.
DEFAULT_MAX_PIXELS = 89_478_485


class UndecodableFile(FileFailed):
    """The file cannot be turned into page images; the message says why, for the person who sent it."""


def decode_pages(
    data: bytes,
    content_type: str,
    *,
    pdf_dpi: int = 200,
    max_pages: int = 500,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    pdf_pages: tuple[int, int] | None = None,
) -> Iterator[Image.Image]:
    """Yield each page as an RGB or L image; raise UndecodableFile (and nothing else) for bad input.

    The bytes decide the format (a PDF is recognized by its header whatever `content_type` says); the
    content type only appears in messages. Pages are produced one at a time, so errors may surface while
    iterating. PDF pages carry info["dpi"] = (pdf_dpi, pdf_dpi). pdfium is not thread-safe: decode in one
    thread per process. `pdf_pages` (first, last; 1-based, inclusive) renders only those pages of a PDF.
    """
    if not data:
        raise UndecodableFile("the file is empty (0 bytes)")
    if _is_pdf(data):
        yield from _pdf_pages(data, pdf_dpi, max_pages, max_pixels, pdf_pages)
    else:
        yield from _image_pages(data, content_type, max_pages, max_pixels)


def pdf_page_count(data: bytes) -> int | None:
    """The number of pages of a PDF (without rendering any), None when the bytes are not a PDF."""
    if not _is_pdf(data):
        return None
    document = _open_pdf(data)
    try:
        return len(document)
    finally:
        document.close()


def _is_pdf(data: bytes) -> bool:
    return b"%PDF-" in data[:1024]


def _open_pdf(data: bytes) -> pdfium.PdfDocument:
    try:
        return pdfium.PdfDocument(data)
    except Exception as exc:  # pdfium's PdfiumError, or anything its ctypes layer raises on odd bytes
        raise UndecodableFile(f"not a readable PDF (damaged, truncated or password-protected): {exc}") from exc


def _pdf_pages(data: bytes, dpi: int, max_pages: int, max_pixels: int,
               page_range: tuple[int, int] | None) -> Iterator[Image.Image]:
    document = _open_pdf(data)
    try:
        count = len(document)
        if count == 0:
            raise UndecodableFile("the PDF has no pages")
        if count > max_pages:
            raise UndecodableFile(f"the PDF has {count} pages, more than the limit of {max_pages}; split it",
                                  FailureReason.TOO_MANY_PAGES)
        first, last = page_range or (1, count)
        if not 1 <= first <= last <= count:
            raise UndecodableFile(f"pages {first}..{last} were asked of a PDF of {count} pages")
        for index in range(first - 1, last):
            image = _render_pdf_page(document, index, dpi, max_pixels)
            yield image
    finally:
        document.close()


def _render_pdf_page(document: pdfium.PdfDocument, index: int, dpi: int, max_pixels: int) -> Image.Image:
    try:
        page = document[index]
        try:
            width_pt, height_pt = page.get_size()
            pixels = round(width_pt * dpi / 72) * round(height_pt * dpi / 72)
            if pixels > max_pixels:
                raise UndecodableFile(
                    f"PDF page {index + 1} is {width_pt / 72:.0f}x{height_pt / 72:.0f} inches, {pixels:,} pixels "
                    f"at {dpi} dpi, above the limit of {max_pixels:,}; use a lower dpi"
                )
            image = page.render(scale=dpi / 72).to_pil()
        finally:
            page.close()
    except UndecodableFile:
        raise
    except Exception as exc:
        raise UndecodableFile(f"PDF page {index + 1} cannot be rendered: {exc}") from exc
    image = _to_ocr_mode(image)
    image.info["dpi"] = (dpi, dpi)
    return image


def _image_pages(data: bytes, content_type: str, max_pages: int, max_pixels: int) -> Iterator[Image.Image]:
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise UndecodableFile(f"the image is too large to decode safely: {exc}") from exc
    except Exception as exc:  # Pillow raises many types (OSError, SyntaxError, ValueError, ...) for bad bytes
        raise UndecodableFile(f"not a PDF or an image format we can read (sent as {content_type!r})") from exc
    with image:
        # Only TIFF pages are pages: other multi-frame formats hold animation frames or previews (MPO).
        frames = getattr(image, "n_frames", 1) if image.format == "TIFF" else 1
        if frames > max_pages:
            raise UndecodableFile(f"the TIFF has {frames} pages, more than the limit of {max_pages}; split it",
                                  FailureReason.TOO_MANY_PAGES)
        for index in range(frames):
            page = _decode_frame(image, index, frames, max_pixels)
            yield page


def _decode_frame(image: Image.Image, index: int, frames: int, max_pixels: int) -> Image.Image:
    where = f"page {index + 1} of the {image.format} image" if frames > 1 else f"the {image.format} image"
    try:
        image.seek(index)
        if image.width * image.height > max_pixels:
            raise UndecodableFile(
                f"{where} is {image.width}x{image.height}, above the limit of {max_pixels:,} pixels"
            )
        image.load()
        page = ImageOps.exif_transpose(image)
        return _to_ocr_mode(page)
    except UndecodableFile:
        raise
    except Image.DecompressionBombError as exc:
        raise UndecodableFile(f"{where} is too large to decode safely: {exc}") from exc
    except Exception as exc:  # any decoder error here means the bytes are damaged
        raise UndecodableFile(f"{where} is damaged or truncated: {exc}") from exc


def _to_ocr_mode(image: Image.Image) -> Image.Image:
    """RGB or L. Transparency is flattened onto white: transparent pixels are often stored black."""
    if image.mode in ("RGB", "L"):
        return image
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if image.mode in ("I", "F") or image.mode.startswith("I;"):
        # Pillow clips 16/32-bit values to 255 (a 16-bit scan turns white): stretch the range instead.
        values = np.asarray(image, dtype=np.float32)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
        return Image.fromarray(scaled.round().astype(np.uint8))
    if image.mode == "1":
        return image.convert("L")
    return image.convert("RGB")
