"""Read-only SQL over the table contract (schemas/db/001_init.sql). Each function receives its connection.

Every query filters by tenant: a batch of another tenant is indistinguishable from one that does not exist.
"""
from collections.abc import Sequence
from itertools import groupby

from pgvector import Vector
from psycopg import Connection
from psycopg.rows import dict_row

from schemas.api import FileResultPublic, PagePublic, SearchHit
from schemas.results import BoundingBox, Word

__all__ = ["batch_exists_for_tenant", "file_results", "search_pages"]

SNIPPET_CHARS = 200
PAGE_SEPARATOR = "\f"  # between pages in FileResultPublic.text


def batch_exists_for_tenant(conn: Connection, tenant: str, batch_id: str) -> bool:
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM batches WHERE batch_id = %s AND tenant = %s)", (batch_id, tenant)
    ).fetchone()
    return bool(row and row[0])


def file_results(
    conn: Connection, tenant: str, batch_id: str, cursor: str | None, limit: int, include_words: bool
) -> tuple[list[FileResultPublic], str | None]:
    """One page of a batch's files ordered by file_id, after `cursor` (the last file_id of the previous page).

    Keyset pagination: stable while the persister adds files, and as cheap on page 1,000 as on page 1.
    Returns the files and the cursor of the next page (None when this is the last one).
    """
    with conn.cursor(row_factory=dict_row) as cur:
        files = cur.execute(
            """
            SELECT file_id, original_name, status, content_type, size_bytes, sha256, page_count, error, engine
            FROM files
            WHERE tenant = %(tenant)s AND batch_id = %(batch_id)s
              AND (%(cursor)s::text IS NULL OR file_id > %(cursor)s::text)
            ORDER BY file_id
            LIMIT %(fetch)s
            """,
            {"tenant": tenant, "batch_id": batch_id, "cursor": cursor, "fetch": limit + 1},
        ).fetchall()
        has_more = len(files) > limit
        files = files[:limit]
        file_ids = [f["file_id"] for f in files]
        pages = _pages_by_file(cur, tenant, file_ids)
        words = _words_by_page(cur, file_ids) if include_words else None

    results = []
    for f in files:
        file_pages = [
            PagePublic(
                page_number=p["page_number"], width=p["width"], height=p["height"], text=p["text"],
                mean_confidence=p["mean_confidence"],
                words=words.get((f["file_id"], p["page_number"]), []) if words is not None else None,
            )
            for p in pages.get(f["file_id"], [])
        ]
        results.append(FileResultPublic(
            file_id=f["file_id"], original_name=f["original_name"], status=f["status"],
            content_type=f["content_type"], size=f["size_bytes"], sha256=f["sha256"], page_count=f["page_count"],
            error=f["error"], engine=f["engine"],
            text=PAGE_SEPARATOR.join(p.text for p in file_pages), pages=file_pages,
        ))
    return results, (file_ids[-1] if has_more else None)


def _pages_by_file(cur, tenant: str, file_ids: list[str]) -> dict[str, list[dict]]:
    if not file_ids:
        return {}
    rows = cur.execute(
        """
        SELECT file_id, page_number, width, height, text, mean_confidence
        FROM pages WHERE tenant = %s AND file_id = ANY(%s)
        ORDER BY file_id, page_number
        """,
        (tenant, file_ids),
    ).fetchall()
    return {file_id: list(group) for file_id, group in groupby(rows, key=lambda r: r["file_id"])}


def _words_by_page(cur, file_ids: list[str]) -> dict[tuple[str, int], list[Word]]:
    if not file_ids:
        return {}
    rows = cur.execute(
        """
        SELECT file_id, page_number, text, confidence, x, y, width, height
        FROM words WHERE file_id = ANY(%s)
        ORDER BY file_id, page_number, word_index
        """,
        (file_ids,),
    ).fetchall()
    return {
        key: [
            Word(text=w["text"], confidence=w["confidence"],
                 bbox=BoundingBox(x=w["x"], y=w["y"], width=w["width"], height=w["height"]))
            for w in group
        ]
        for key, group in groupby(rows, key=lambda r: (r["file_id"], r["page_number"]))
    }


def search_pages(conn: Connection, tenant: str, embedding: Sequence[float], k: int) -> list[SearchHit]:
    """The k pages of the tenant nearest to `embedding` by cosine distance (score = 1 - distance)."""
    with conn.transaction():
        # The HNSW index filters by tenant after the scan; iterative scans (pgvector >= 0.8) keep scanning
        # until k rows pass the filter, so a small tenant in a large table still gets k hits, in exact order.
        conn.execute("SET LOCAL hnsw.iterative_scan = strict_order")
        with conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(
                """
                SELECT p.batch_id, p.file_id, f.original_name, p.page_number,
                       1 - (p.embedding <=> %(query)s) AS score, left(p.text, %(snippet)s) AS snippet
                FROM pages p JOIN files f ON f.file_id = p.file_id
                WHERE p.tenant = %(tenant)s AND p.embedding IS NOT NULL
                ORDER BY p.embedding <=> %(query)s
                LIMIT %(k)s
                """,
                {"query": Vector(list(embedding)), "tenant": tenant, "snippet": SNIPPET_CHARS, "k": k},
            ).fetchall()
    return [SearchHit(**row) for row in rows]
