"""A batch of 2,000 files, 10 of them bad, through the whole pipeline with the fast engine: the 1,990 good
files are OCRed, the 10 bad ones end failed with their machine codes, and the batch completes."""
import io
import time
import uuid

import httpx
import psycopg
import pytest
from PIL import Image

from common.settings import Settings
from demo.processes import isolated_env, running_services
from tests.helpers import file_row_counts

pytestmark = pytest.mark.e2e

MAX_FILE_BYTES = 20_000


def tiny_png(seed: int) -> bytes:
    image = Image.new("L", (24, 12), 255)
    image.putpixel((seed % 24, (seed // 24) % 12), seed % 200)
    image.putpixel((0, 0), (seed // 288) % 256)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_2000_files_with_10_bad_ones(stack_endpoints, tmp_path, monkeypatch, capsys) -> None:
    env = isolated_env(stack_endpoints, uuid.uuid4().hex[:10]) | {
        "OCRSTREAM_ENGINE": "fast", "OCRSTREAM_MAX_FILE_BYTES": str(MAX_FILE_BYTES)}
    bad = {1: ("empty-1.png", b"", "empty"), 2: ("empty-2.png", b"", "empty"), 3: ("empty-3.png", b"", "empty"),
           4: ("a.txt", b"text", "unsupported_type"), 5: ("b.doc", b"\xd0\xcf\x11\xe0", "unsupported_type"),
           6: ("c.png", b"<svg/>", "unsupported_type"),
           7: ("big-1.png", b"\x89PNG\r\n\x1a\n" + bytes(30_000), "too_large"),
           8: ("big-2.png", b"\x89PNG\r\n\x1a\n" + bytes(40_000), "too_large"),
           9: ("n" * 300 + ".png", tiny_png(9), "name_too_long"), 10: ("m" * 256 + ".png", tiny_png(10), "name_too_long")}
    positions = {i * 199: spec for i, spec in bad.items()}  # spread through the batch
    files = [positions.get(i, (f"scan-{i:04d}.png", tiny_png(i), None)) for i in range(2000)]

    with running_services(env, tmp_path / "logs", workers=1) as services:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        settings = Settings()
        started = time.perf_counter()
        response = httpx.post(f"{services['ingest'].probe_url}/v1/batches", timeout=300,
                              headers={"Authorization": "Bearer dev-key"}, data={"chunk_size": "50"},
                              files=[("files", (name, data, "image/png")) for name, data, _ in files])
        accepted_s = time.perf_counter() - started
        assert response.status_code == 202, response.text
        body = response.json()
        batch_id = body["batch_id"]
        with psycopg.connect(settings.database_url, autocommit=True,
                             options=f"-c search_path={settings.database_schema},public") as conn:
            deadline = time.monotonic() + 300
            while (row := conn.execute("SELECT status, succeeded, failed FROM batches WHERE batch_id = %s",
                                       (batch_id,)).fetchone()) is None or row[0] not in ("completed", "failed"):
                assert time.monotonic() < deadline, f"batch not finished: {row}"
                time.sleep(0.5)  # poll interval of the deadline loop
            done_s = time.perf_counter() - started
            failed = dict(conn.execute("SELECT original_name, error_code FROM files WHERE batch_id = %s AND"
                                       " status = 'failed'", (batch_id,)).fetchall())
            engines = dict(conn.execute("SELECT engine, count(*) FROM files WHERE batch_id = %s GROUP BY 1",
                                        (batch_id,)).fetchall())

    assert (body["total_files"], body["total_chunks"]) == (2000, 40)
    assert sorted((r["index"], r["code"]) for r in body["rejected"]) == sorted(
        (i, code) for i, (_, _, code) in positions.items())
    assert row == ("completed", 1990, 10)
    assert failed == {name: code for name, _, code in bad.values()}
    assert engines == {"fast": 1990, "ingest": 10}
    counts = file_row_counts(settings, batch_id)
    assert len(counts["by_id"]) == 2000 and set(counts["by_id"].values()) == {1}
    with capsys.disabled():
        print(f"\n2,000 files (10 bad): 202 after {accepted_s:.1f} s, completed after {done_s:.1f} s")
