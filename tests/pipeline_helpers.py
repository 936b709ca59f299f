"""Shared by the end-to-end and chaos tests: the services as processes on this test's isolated stack."""
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from common.settings import Settings
from demo.processes import ServiceProcess, build_services, free_port
from demo.sample_batch import character_error_rate
from ocrstream import OcrstreamClient


@contextmanager
def running_pipeline(env: dict[str, str], log_dir: Path, *, workers: int = 2) -> Iterator[tuple[dict[str, ServiceProcess], OcrstreamClient]]:
    """All services started and ready; stopped (SIGTERM) afterwards, their log tails printed on failure."""
    ports = [free_port() for _ in range(workers + 3)]
    services = build_services(env, log_dir, workers=workers, ingest_port=ports[0], status_port=ports[1],
                              probe_ports=ports[2:])
    try:
        for service in services.values():
            service.start()
        for service in services.values():
            service.wait_ready()
        client = OcrstreamClient(services["ingest"].probe_url, services["status_api"].probe_url, "dev-key")
        yield services, client
    except BaseException:
        for service in services.values():
            print(f"--- {service.name} ---\n{service.log_tail(30)}")
        raise
    finally:
        for service in services.values():
            service.stop()


def file_row_counts(settings: Settings, batch_id: str) -> dict:
    """Rows per file, pages per file, and words-set integrity (each page's word_index is 0..n-1, no gaps)."""
    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.database_schema},public") as conn:
        files = conn.execute("SELECT original_name, count(*) FROM files WHERE batch_id = %s GROUP BY 1",
                             (batch_id,)).fetchall()
        file_ids = conn.execute("SELECT file_id, count(*) FROM files WHERE batch_id = %s GROUP BY 1",
                                (batch_id,)).fetchall()
        broken_word_sets = conn.execute(
            """SELECT w.file_id, w.page_number FROM words w JOIN files f USING (file_id) WHERE f.batch_id = %s
               GROUP BY 1, 2 HAVING count(*) <> max(word_index) + 1 OR min(word_index) <> 0""", (batch_id,)).fetchall()
        pages_without_file = conn.execute(
            "SELECT count(*) FROM pages p WHERE p.batch_id = %s AND NOT EXISTS "
            "(SELECT 1 FROM files f WHERE f.file_id = p.file_id)", (batch_id,)).fetchone()[0]
        counts = conn.execute("SELECT status, count(*) FROM files WHERE batch_id = %s GROUP BY 1", (batch_id,)).fetchall()
    return {"by_name": dict(files), "by_id": dict(file_ids), "broken_word_sets": broken_word_sets,
            "orphan_pages": pages_without_file, "by_status": dict(counts)}


def per_line_cer(expected_lines: list[str], text: str) -> list[float]:
    """CER per expected line (whitespace ignored: Korean spacing is where Tesseract errs most)."""
    actual = [line for line in text.splitlines() if line.strip()]
    if len(actual) != len(expected_lines):  # lines merged or split: score the whole text once per line
        whole = character_error_rate(" ".join(expected_lines), " ".join(actual))
        return [whole] * len(expected_lines)
    return [character_error_rate(e, a) for e, a in zip(expected_lines, actual)]


def distinctive_phrase(line: str) -> str:
    return re.sub(r"\s+", " ", line).strip()
