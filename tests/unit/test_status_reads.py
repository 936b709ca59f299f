"""Pure pieces of the status API's console reads: content negotiation, the batch cursor, page images."""
import io
from datetime import datetime, timezone

import pytest
from PIL import Image

from services.status_api.app import prefers_text
from services.status_api.queries import BatchCursor
from services.status_api.rendering import PageNotRenderable, page_png

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("accept", "text"), [
    (None, False), ("", False), ("*/*", False), ("application/json", False), ("text/plain", True),
    ("text/plain, */*", True), ("text/plain;q=0.5, */*", False), ("text/plain, application/json", False),
    ("application/json;q=0.4, text/plain;q=0.9", True), ("text/plain;q=oops", False), ("text/html", False),
])
def test_text_is_answered_only_when_asked_for_above_json(accept, text):
    assert prefers_text(accept) is text


def test_a_batch_cursor_round_trips_and_anything_else_is_refused():
    cursor = BatchCursor(datetime(2026, 3, 1, 9, 0, 0, 123456, tzinfo=timezone.utc), "b/ä")
    assert BatchCursor.decode(cursor.encode()) == cursor
    for token in ("b4", "", "!!!", "WyJ4Il0", "WyJub3QgYSBkYXRlIiwgImIiXQ"):  # ["x"], ["not a date", "b"]
        with pytest.raises(ValueError, match="next_cursor"):
            BatchCursor.decode(token)


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def test_an_image_page_is_drawn_upright_at_the_ocred_size_or_as_a_thumbnail():
    image = Image.new("RGB", (40, 20), "white")
    image.putpixel((0, 0), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # EXIF orientation: turn 90° clockwise to show
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=exif, quality=100)
    upright = Image.open(io.BytesIO(page_png(out.getvalue(), 1, (20, 40))))
    assert upright.size == (20, 40)  # what the worker read (after EXIF rotation), so the boxes line up
    assert Image.open(io.BytesIO(page_png(_png(image), 1, (40, 20), max_width=10))).size == (10, 5)
    with pytest.raises(PageNotRenderable, match="not a page 2"):
        page_png(_png(image), 2, (40, 20))
    with pytest.raises(PageNotRenderable, match="cannot be decoded"):
        page_png(b"not an image", 1, (40, 20))
