"""Page images for the console: a PDF page rendered, a TIFF frame, or an image with its EXIF turn applied, at the
pixel size the page's word boxes refer to (what the OCR worker read), optionally scaled down to a thumbnail.
"""
import io
import threading

import pypdfium2 as pdfium
from PIL import Image, ImageOps

__all__ = ["PageNotRenderable", "page_png"]

# pdfium is not thread-safe and the routes run in a thread pool: one render at a time per process.
_PDFIUM_LOCK = threading.Lock()


class PageNotRenderable(Exception):
    """The stored bytes cannot be turned into this page's image; the message says why."""


def page_png(data: bytes, page_number: int, size: tuple[int, int], max_width: int | None = None) -> bytes:
    """PNG of page `page_number` (1-based) at `size` (the OCRed page's width, height), or scaled down to
    `max_width` keeping the aspect ratio."""
    width, height = size
    if max_width is not None and max_width < width:
        width, height = max_width, max(1, round(height * max_width / width))
    image = _pdf_page(data, page_number, width) if b"%PDF-" in data[:1024] else _image_page(data, page_number)
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False)
    return out.getvalue()


def _pdf_page(data: bytes, page_number: int, width: int) -> Image.Image:
    with _PDFIUM_LOCK:
        try:
            document = pdfium.PdfDocument(data)
        except Exception as exc:  # pdfium's errors for damaged or protected files
            raise PageNotRenderable(f"the stored PDF cannot be opened: {exc}") from exc
        try:
            if not 1 <= page_number <= len(document):
                raise PageNotRenderable(f"the PDF has {len(document)} pages, not a page {page_number}")
            page = document[page_number - 1]
            try:
                width_pt, _ = page.get_size()
                return page.render(scale=width / width_pt).to_pil()
            finally:
                page.close()
        finally:
            document.close()


def _image_page(data: bytes, page_number: int) -> Image.Image:
    try:
        with Image.open(io.BytesIO(data)) as image:
            frames = getattr(image, "n_frames", 1) if image.format == "TIFF" else 1
            if not 1 <= page_number <= frames:
                raise PageNotRenderable(f"the image has {frames} page(s), not a page {page_number}")
            image.seek(page_number - 1)
            image.load()
            page = ImageOps.exif_transpose(image)  # the worker read the page turned upright, boxes included
            return page if page.mode in ("RGB", "RGBA", "L", "LA") else page.convert("RGBA")
    except PageNotRenderable:
        raise
    except Exception as exc:  # Pillow raises many types for damaged bytes
        raise PageNotRenderable(f"the stored image cannot be decoded: {exc}") from exc
