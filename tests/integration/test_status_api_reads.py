"""The status API's read endpoints the console uses, on the real Postgres and S3: the batch list, the file listing,
one file's result (JSON and text), its bytes and its page images; every 4xx with its code."""
import io
import json
import time
from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from common.db import build_pool
from common.storage import build_s3_client
from services.status_api.app import create_app
from services.status_api.settings import StatusSettings

pytestmark = pytest.mark.integration


def problem(response) -> tuple[str, str]:
    """(detail, code) of an RFC 9457 problem answer."""
    body = response.json()
    assert response.headers["content-type"] == "application/problem+json" and body["status"] == response.status_code
    return body["detail"], body["code"]

ACME, GLOBEX = {"Authorization": "Bearer key-acme"}, {"Authorization": "Bearer key-globex"}
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)


@pytest.fixture
def client(settings, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OCRSTREAM_API_KEYS", json.dumps({"key-acme": "acme", "key-globex": "globex"}))
    with TestClient(create_app(StatusSettings())) as client:
        deadline = time.monotonic() + 60
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "status API not ready in 60 s"
            time.sleep(0.1)  # poll interval only: the deadline decides
        yield client


def execute(settings, statement: str, rows: list[tuple]) -> None:
    with build_pool(settings, name="test-reads") as pool, pool.connection() as conn, conn.cursor() as cur:
        cur.executemany(statement, rows)


def insert_batches(settings, rows: list[tuple[str, str, str, datetime | None]]) -> None:
    """(batch_id, tenant, status, created_at) rows with 4 of 10 files done."""
    execute(settings, "INSERT INTO batches (batch_id, tenant, name, status, total_files, total_chunks, succeeded,"
                      " failed, created_at, updated_at, version) VALUES (%s, %s, %s, %s, 10, 2, 3, 1, %s, %s, 7)",
            [(b, tenant, f"name {b}", status, created, created or T0) for b, tenant, status, created in rows])


def insert_file(settings, batch_id: str, tenant: str, file_id: str, name: str, *, status: str = "ok",
                content_type: str = "image/png", pages: list[tuple[int, int, str]] = (), error: str | None = None,
                error_code: str | None = None) -> None:
    """A files row and its pages (width, height, text), as the persister writes them."""
    execute(settings,
            "INSERT INTO files (file_id, batch_id, chunk_id, tenant, original_name, sha256, size_bytes, content_type,"
            " status, error, error_code, engine, page_count, timings, attempt)"
            " VALUES (%s, %s, 'c1', %s, %s, %s, 100, %s, %s, %s, %s, 'tesseract', %s, '{}', 1)",
            [(file_id, batch_id, tenant, name, "0" * 64, content_type, status, error, error_code, len(pages))])
    execute(settings, "INSERT INTO pages (file_id, page_number, batch_id, tenant, width, height, text, mean_confidence)"
                      " VALUES (%s, %s, %s, %s, %s, %s, %s, 0.9)",
            [(file_id, n, batch_id, tenant, w, h, text) for n, (w, h, text) in enumerate(pages, start=1)])


def test_batches_are_listed_newest_first_by_cursor_within_the_tenant(settings, client):
    insert_batches(settings, [
        ("b1", "acme", "completed", T0), ("b2", "acme", "processing", T0 + timedelta(minutes=1)),
        ("b3a", "acme", "completed", T0 + timedelta(minutes=2)), ("b3b", "acme", "completed", T0 + timedelta(minutes=2)),
        ("b4", "acme", "failed", T0 + timedelta(minutes=3)), ("bg", "globex", "completed", T0 + timedelta(minutes=9)),
        ("placeholder", "acme", "processing", None),  # results came before BatchCreated: not listed yet
    ])

    seen, cursor = [], None
    while True:
        response = client.get("/v1/batches", headers=ACME, params={"limit": 2} | ({"cursor": cursor} if cursor else {}))
        assert response.status_code == 200, response.text
        body = response.json()
        seen += [b["batch_id"] for b in body["data"]]
        if (cursor := body["next_cursor"]) is None:
            break
    assert seen == ["b4", "b3b", "b3a", "b2", "b1"]  # equal created_at: by batch_id, none skipped or repeated

    first = client.get("/v1/batches", headers=ACME, params={"limit": 1}).json()["data"][0]
    assert (first["name"], first["status"], first["total_files"], first["processed_files"], first["percent"],
            first["version"]) == ("name b4", "failed", 10, 4, 40.0, 7)
    assert [b["batch_id"] for b in client.get("/v1/batches", headers=GLOBEX).json()["data"]] == ["bg"]

    completed = client.get("/v1/batches", headers=ACME, params={"status": "completed"}).json()
    assert [b["batch_id"] for b in completed["data"]] == ["b3b", "b3a", "b1"] and completed["next_cursor"] is None
    recent = client.get("/v1/batches", headers=ACME, params={"created_after": (T0 + timedelta(minutes=1)).isoformat()})
    assert [b["batch_id"] for b in recent.json()["data"]] == ["b4", "b3b", "b3a"]

    bad_cursor = client.get("/v1/batches", headers=ACME, params={"cursor": "b4"})
    assert bad_cursor.status_code == 400 and bad_cursor.json()["code"] == "invalid_cursor"
    assert "next_cursor" in bad_cursor.json()["detail"]
    naive = client.get("/v1/batches", headers=ACME, params={"created_after": "2026-03-01T09:00:00"})
    assert naive.status_code == 422 and naive.json()["code"] == "invalid_request"
    assert "timezone" in json.dumps(naive.json()["detail"])
    for bad in ({"status": "done"}, {"limit": 0}, {"limit": 1001}):
        assert client.get("/v1/batches", headers=ACME, params=bad).status_code == 422, bad
    unauthorized = client.get("/v1/batches", headers={"Authorization": "Bearer nope"})
    assert unauthorized.status_code == 401 and problem(unauthorized) == ("unknown API key", "unauthorized")


def test_the_file_listing_filters_by_status_and_name_and_pages_by_cursor(settings, client):
    insert_batches(settings, [("ba", "acme", "completed", T0), ("bg", "globex", "completed", T0)])
    for i in range(5):
        insert_file(settings, "ba", "acme", f"f{i}", f"scans/receipt-{i}.png", pages=[(100, 50, f"text {i}")])
    insert_file(settings, "ba", "acme", "f9", "scans/Broken.PNG", status="failed", error="not an image",
                error_code="undecodable")

    ids, cursor = [], None
    while True:
        body = client.get("/v1/batches/ba/files", headers=ACME,
                          params={"limit": 4} | ({"cursor": cursor} if cursor else {})).json()
        ids += [f["file_id"] for f in body["data"]]
        if (cursor := body["next_cursor"]) is None:
            break
    assert ids == ["f0", "f1", "f2", "f3", "f4", "f9"]

    failed = client.get("/v1/batches/ba/files", headers=ACME, params={"status": "failed"}).json()["data"]
    assert failed == [{"file_id": "f9", "original_name": "scans/Broken.PNG", "status": "failed",
                       "content_type": "image/png", "size": 100, "page_count": 0, "error": "not an image",
                       "error_code": "undecodable"}]
    named = client.get("/v1/batches/ba/files", headers=ACME, params={"name": "broken.png"}).json()["data"]
    assert [f["file_id"] for f in named] == ["f9"]
    literal = client.get("/v1/batches/ba/files", headers=ACME, params={"name": "receipt_"}).json()["data"]
    assert literal == []  # _ is a character, not a LIKE wildcard

    missing = client.get("/v1/batches/bg/files", headers=ACME)
    assert missing.status_code == 404 and problem(missing) == ("batch bg not found", "batch_not_found")
    assert client.get("/v1/batches/ba/files", headers=ACME, params={"status": "done"}).status_code == 422


def png(size: tuple[int, int], color: str) -> bytes:
    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).rectangle((10, 10, 60, 30), fill=color)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def two_page_pdf() -> bytes:
    """A 2-page PDF: 200 x 100 pt pages (at 144 dpi: 400 x 200 px), a black square on the second."""
    first, second = Image.new("RGB", (400, 200), "white"), Image.new("RGB", (400, 200), "white")
    ImageDraw.Draw(second).rectangle((0, 0, 99, 99), fill="black")
    out = io.BytesIO()
    first.save(out, format="PDF", save_all=True, append_images=[second], resolution=144)
    return out.getvalue()


def test_a_file_its_text_its_bytes_and_its_page_images(settings, client):
    insert_batches(settings, [("ba", "acme", "completed", T0), ("bg", "globex", "completed", T0)])
    s3 = build_s3_client(settings)
    image, pdf = png((120, 80), "red"), two_page_pdf()
    for key, data, content_type in (("acme/ba/img", image, "image/png"), ("acme/ba/doc", pdf, "application/pdf"),
                                    ("globex/bg/other", image, "image/png")):
        s3.put_object(settings.s3_bucket, key, io.BytesIO(data), len(data), content_type=content_type)
    insert_file(settings, "ba", "acme", "img", "사진 1.png", pages=[(120, 80, "안녕 world")])
    insert_file(settings, "ba", "acme", "doc", "doc.pdf", content_type="application/pdf",
                pages=[(400, 200, "first page"), (400, 200, "second page")])
    insert_file(settings, "ba", "acme", "gone", "gone.png", pages=[(10, 10, "")])  # its object was never stored
    insert_file(settings, "bg", "globex", "other", "other.png", pages=[(120, 80, "globex")])
    execute(settings, "INSERT INTO words (file_id, page_number, word_index, text, confidence, x, y, width, height)"
                      " VALUES ('img', 1, %s, %s, %s, %s, 10, 40, 20)", [(0, "안녕", 0.5, 10), (1, "world", 0.97, 60)])

    result = client.get("/v1/batches/ba/files/img", headers=ACME).json()
    assert (result["original_name"], result["text"], result["error_code"]) == ("사진 1.png", "안녕 world", None)
    assert [(w["text"], w["confidence"], w["bbox"]) for w in result["pages"][0]["words"]] == [
        ("안녕", 0.5, {"x": 10, "y": 10, "width": 40, "height": 20}),
        ("world", 0.97, {"x": 60, "y": 10, "width": 40, "height": 20})]
    as_text = client.get("/v1/batches/ba/files/doc", headers=ACME | {"Accept": "text/plain"})
    assert as_text.headers["content-type"].startswith("text/plain") and as_text.text == "first page\fsecond page"
    assert client.get("/v1/batches/ba/files/doc", headers=ACME | {"Accept": "*/*"}).json()["file_id"] == "doc"

    content = client.get("/v1/batches/ba/files/img/content", headers=ACME)
    assert content.status_code == 200 and content.content == image
    assert content.headers["content-type"] == "image/png" and "UTF-8''%EC%82%AC%EC%A7%84%201.png" in \
        content.headers["content-disposition"]
    assert client.get("/v1/batches/ba/files/doc/content", headers=ACME).content == pdf

    page_two = client.get("/v1/batches/ba/files/doc/pages/2/image", headers=ACME)
    assert page_two.status_code == 200 and page_two.headers["content-type"] == "image/png"
    rendered = Image.open(io.BytesIO(page_two.content)).convert("L")
    assert rendered.size == (400, 200)  # the size the page's word boxes refer to
    assert rendered.getpixel((50, 50)) < 40 and rendered.getpixel((300, 150)) > 215  # the square where it was drawn
    thumbnail = client.get("/v1/batches/ba/files/doc/pages/1/image", headers=ACME, params={"width": 100})
    assert Image.open(io.BytesIO(thumbnail.content)).size == (100, 50)
    assert (thumbnail.headers["x-page-width"], thumbnail.headers["x-page-height"]) == ("400", "200")
    image_page = client.get("/v1/batches/ba/files/img/pages/1/image", headers=ACME)
    assert Image.open(io.BytesIO(image_page.content)).convert("RGB").getpixel((30, 20)) == (255, 0, 0)

    def problem(path: str, headers: dict = ACME, **params) -> tuple[int, str, str]:
        response = client.get(path, headers=headers, params=params)
        return response.status_code, response.json().get("code"), str(response.json()["detail"])

    assert problem("/v1/batches/ba/files/doc/pages/3/image") == (
        404, "page_not_found", "file doc has 2 page(s) with results; there is no page 3")
    assert problem("/v1/batches/ba/files/nope")[:2] == (404, "file_not_found")
    assert problem("/v1/batches/ba/files/nope/content")[:2] == (404, "file_not_found")
    assert problem("/v1/batches/zz/files/img")[:2] == (404, "batch_not_found")
    assert problem("/v1/batches/ba/files/gone/content")[:2] == (404, "content_missing")
    assert problem("/v1/batches/ba/files/doc/pages/0/image")[:2] == (422, "invalid_request")
    assert problem("/v1/batches/ba/files/doc/pages/1/image", width=5)[:2] == (422, "invalid_request")
    # Across tenants: the same answer as for a batch that does not exist, for the result, the bytes and the pages.
    for path in ("/v1/batches/bg/files/other", "/v1/batches/bg/files/other/content",
                 "/v1/batches/bg/files/other/pages/1/image"):
        assert problem(path) == (404, "batch_not_found", "batch bg not found"), path
        assert client.get(path, headers=GLOBEX).status_code == 200, path
    assert problem("/v1/batches/ba/files/img/content", headers={})[:2] == (401, "unauthorized")
