"""A 300-page PDF in one batch: OCRed as page-range work items spread over the workers, it lands as one file
with all 300 pages, and no worker (with its OCR child) grows past a stated memory bound on the way."""
import os
import time
from pathlib import Path

import psycopg
import pytest
from PIL import Image, ImageDraw

from demo.processes import client_for, running_services

pytestmark = pytest.mark.e2e

PAGES = 300
RSS_BOUND_MB = 1024  # per worker, its OCR child included: models + one rendered page, whatever the page count


def _rss_mb_with_children(pid: int) -> float:
    total = 0
    pids = [pid]
    while pids:
        current = pids.pop()
        try:
            total += int(Path(f"/proc/{current}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            for children in Path(f"/proc/{current}/task").glob("*/children"):
                pids += [int(c) for c in children.read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total / 2**20


def _render_long_pdf(path: Path) -> Path:
    pages = []
    for number in range(1, PAGES + 1):
        page = Image.new("L", (850, 1100), 255)
        ImageDraw.Draw(page).text((80, 80 + (number % 40) * 20), f"page {number} of a long report", fill=0)
        pages.append(page)
    pages[0].save(path, "PDF", resolution=100.0, save_all=True, append_images=pages[1:])
    return path


def test_a_300_page_pdf_lands_as_one_file_with_all_pages(settings, isolated_env, tmp_path):
    pdf = _render_long_pdf(tmp_path / "long-report.pdf")
    env = isolated_env | {"OCRSTREAM_ENGINE": "fast", "OCRSTREAM_PAGES_PER_WORK_ITEM": "20"}
    with running_services(env, tmp_path / "logs") as services, client_for(services) as client:
        workers = [s.pid for name, s in services.items() if name.startswith("ocr_worker")]
        batch_id = client.submit([pdf], name="long", embeddings=False)["batch_id"]
        peak_mb = 0.0
        deadline = time.monotonic() + 600
        while (status := client.batch(batch_id))["status"] not in ("completed", "failed"):
            assert time.monotonic() < deadline, status
            peak_mb = max([peak_mb] + [_rss_mb_with_children(pid) for pid in workers])
            time.sleep(0.2)  # sampling interval of the memory probe

    print(f"peak worker RSS (with its OCR child) {peak_mb:.0f} MiB, bound {RSS_BOUND_MB} MiB")
    assert status["status"] == "completed" and status["succeeded"] == 1
    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.database_schema},public") as conn:
        [(status_row, page_count)] = conn.execute(
            "SELECT status, page_count FROM files WHERE batch_id = %s", (batch_id,)).fetchall()
        numbers = [n for (n,) in conn.execute(
            "SELECT page_number FROM pages WHERE batch_id = %s ORDER BY page_number", (batch_id,))]
    assert (status_row, page_count) == ("ok", PAGES)
    assert numbers == list(range(1, PAGES + 1)), "every page once"
    assert 0 < peak_mb < RSS_BOUND_MB
