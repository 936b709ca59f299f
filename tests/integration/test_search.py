"""Hybrid search over pages rendered here and OCRed by Tesseract: exact Korean phrases whatever their spacing,
numbers, and cross-lingual paraphrases, each found at top-1. Prints top-1 accuracy and MRR."""
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw, ImageFont

from common.db import build_pool
from common.embedding import build_embedder
from services.ocr_worker.engine import build_engine
from services.status_api.app import create_app
from services.status_api.matching import compact
from services.status_api.settings import StatusSettings
from tests.integration.test_status_api import ACME, KEY_ACME, KEY_GLOBEX, wait_ready

pytestmark = pytest.mark.integration

FONT = "/usr/share/fonts/truetype/nanum/NanumGothic.ttf"
DOCUMENTS = {  # file_id → the lines rendered on its page
    "library": ["도서관 이용 안내", "도서 대출 기간은 2주입니다.", "연장은 한 번 가능합니다."],
    "invoice": ["청구서 번호 INV-2024-117", "발행일 2024년 3월 15일", "합계 금액 1,250,000원"],
    "weather": ["일기 예보", "내일은 해안 지역에 강한 바람과", "많은 비가 예상됩니다."],
    "cat": ["우리 집 고양이", "고양이가 따뜻한 창가에 앉아", "낮잠을 자고 있다."],
    "subway": ["지하철 공사 안내", "시청역 3번 출구를", "공사로 임시 폐쇄합니다."],
    "clinic": ["진료 예약 안내", "예약 변경은 하루 전까지", "전화로 해 주세요."],
    "lost": ["분실물 센터", "평일 오전 9시부터", "오후 6시까지 운영합니다."],
    "minutes": ["Minutes of the budget meeting", "The marketing budget was cut", "by ten percent."],
    # Look-alikes the embedding cannot tell apart from the pages above: only the exact text can.
    "invoice2": ["청구서 번호 INV-2023-981", "발행일 2023년 11월 2일", "합계 금액 870,000원"],
    "library2": ["어린이 도서관 안내", "도서 반납 기간은 3주입니다.", "연체료는 없습니다."],
}
QUERIES = [  # (kind, query, the file that should come first)
    ("exact Korean phrase, no spaces", "도서대출기간은2주", "library"),
    ("exact Korean phrase, other spacing", "따뜻한 창 가에", "cat"),
    ("number", "INV-2024-117", "invoice"),
    ("number", "1,250,000원", "invoice"),
    ("number", "INV-2023-981", "invoice2"),
    ("cross-lingual", "library loan period is two weeks", "library"),
    ("cross-lingual", "strong wind and heavy rain on the coast tomorrow", "weather"),
    ("cross-lingual", "a cat napping by the warm window", "cat"),
]


def render(lines: list[str]) -> Image.Image:
    font = ImageFont.truetype(FONT, 32)
    canvas = Image.new("L", (40 + max(round(font.getlength(line)) for line in lines) + 40, 60 + 58 * len(lines)), 255)
    draw = ImageDraw.Draw(canvas)
    for index, line in enumerate(lines):
        draw.text((40, 30 + index * 58), line, font=font, fill=0)
    return canvas


@pytest.fixture
def status_settings(settings, monkeypatch) -> StatusSettings:
    monkeypatch.setenv("OCRSTREAM_API_KEYS", json.dumps({KEY_ACME: "acme", KEY_GLOBEX: "globex"}))
    status_settings = StatusSettings()
    embedder = build_embedder()
    with build_engine("tesseract", "kor+eng") as engine:
        pages = {file_id: engine.recognize(render(lines)) for file_id, lines in DOCUMENTS.items()}
    embeddings = dict(zip(pages, embedder.embed([p.text for p in pages.values()])))
    with build_pool(status_settings, name="test-search") as pool, pool.connection() as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO batches (batch_id, tenant, total_files, options, version)"
                    " VALUES ('scans', 'acme', %s, '{\"languages\": \"kor+eng\"}', 1)", (len(pages),))
        for file_id, page in pages.items():
            cur.execute("INSERT INTO files (file_id, batch_id, chunk_id, tenant, original_name, sha256, size_bytes,"
                        " content_type, status, engine, embedding_model, page_count, timings, attempt) VALUES"
                        " (%s, 'scans', 'c1', 'acme', %s, %s, 1, 'image/png', 'ok', 'tesseract', %s, 1, '{}', 1)",
                        (file_id, f"{file_id}.png", "0" * 64, embedder.model_name))
            cur.execute("INSERT INTO pages (file_id, page_number, batch_id, tenant, width, height, text,"
                        " mean_confidence, embedding) VALUES (%s, 1, 'scans', 'acme', %s, %s, %s, %s, %s)",
                        (file_id, page.width, page.height, page.text, page.mean_confidence,
                         np.asarray(embeddings[file_id], dtype=np.float32)))
            cur.executemany("INSERT INTO words (file_id, page_number, word_index, text, confidence, x, y, width, height)"
                            " VALUES (%s, 1, %s, %s, %s, %s, %s, %s, %s)",
                            [(file_id, i, w.text, w.confidence, *w.bbox) for i, w in enumerate(page.words)])
    return status_settings


def test_hybrid_search_finds_exact_phrases_numbers_and_paraphrases_first(status_settings):
    with TestClient(create_app(status_settings)) as client:
        wait_ready(client)

        def search(q: str, **params) -> list[dict]:
            response = client.get("/v1/search", headers=ACME, params={"q": q, "k": 8, **params})
            assert response.status_code == 200, response.text
            return response.json()["data"]

        ranks = []
        for kind, query, expected in QUERIES:
            hits = search(query)
            found = [h["file_id"] for h in hits]
            ranks.append(found.index(expected) + 1 if expected in found else None)
            top = hits[0]
            print(f"{kind:<36} {query!r:<52} → {top['file_id']:<8} (lexical {top['lexical_rank']}, "
                  f"semantic {top['semantic_rank']}, cosine {top['similarity']:.2f})")
        top1 = sum(r == 1 for r in ranks) / len(ranks)
        mrr = sum(1 / r for r in ranks if r) / len(ranks)
        print(f"top-1 {top1:.2f}, MRR {mrr:.2f} over {len(ranks)} queries on {len(DOCUMENTS)} OCRed pages")
        assert ranks == [1] * len(QUERIES), list(zip([q for _, q, _ in QUERIES], ranks))

        # The exact match is located in the snippet and comes with the word boxes to highlight on the image.
        [hit] = search("INV-2024-117", file_id="invoice")
        match = hit["snippet"][hit["match"]["start"]:hit["match"]["end"]]
        assert compact(match) == "inv-2024-117" and hit["lexical_rank"] == 1
        assert hit["match_words"] and all(w["bbox"]["width"] > 0 for w in hit["match_words"])
        assert any("2024-117" in w["text"] for w in hit["match_words"])
        spaced = search("도서대출기간은2주")[0]
        assert compact(spaced["snippet"][spaced["match"]["start"]:spaced["match"]["end"]]) == "도서대출기간은2주"

        # Filters: a batch, a file, a language the batch was OCRed with; another tenant sees nothing.
        assert {h["file_id"] for h in search("안내", batch_id="scans")} <= set(DOCUMENTS)
        assert search("안내", batch_id="other") == []
        assert [h["file_id"] for h in search("예약", file_id="clinic")] == ["clinic"]
        assert search("예약", lang="kor") and search("예약", lang="jpn") == []
        assert client.get("/v1/search", headers={"Authorization": f"Bearer {KEY_GLOBEX}"},
                          params={"q": "INV-2024-117"}).json()["data"] == []
        assert client.get("/v1/search", headers=ACME, params={"q": "x", "lang": "KOREAN!"}).status_code == 422
