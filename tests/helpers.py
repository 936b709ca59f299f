"""What several test modules share: counting a batch's rows, free ports."""
import re
import socket

import psycopg

from common.settings import Settings


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


def distinctive_phrase(line: str) -> str:
    return re.sub(r"\s+", " ", line).strip()


def free_ports(n: int) -> list[int]:
    """n distinct ports that are free on 127.0.0.1 right now (all held open together, then released)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()
