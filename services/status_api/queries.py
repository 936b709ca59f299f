"""Read-only SQL over the table contract (schemas/db/*.sql). Each function receives its connection.

Every query filters by tenant: a batch of another tenant is indistinguishable from one that does not exist.
"""
import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import groupby

from pgvector import Vector
from psycopg import Connection, sql
from psycopg.rows import dict_row

from schemas.api import FileResultPublic, FileSummaryPublic, PagePublic, SearchHit, TextSpan, WebhookDeliveryPublic
from schemas.progress import BatchProgress, BatchStatus
from schemas.results import BoundingBox, FileStatus, Word
from services.status_api import matching

__all__ = ["BatchCursor", "SearchFilters", "StoredFileInfo", "batch_exists_for_tenant", "batches", "file_result",
           "file_results", "file_summaries", "page_size", "search_pages", "stored_file", "webhook_deliveries"]

SNIPPET_CHARS = 200
PAGE_SEPARATOR = "\f"  # between pages in FileResultPublic.text


def batch_exists_for_tenant(conn: Connection, tenant: str, batch_id: str) -> bool:
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM batches WHERE batch_id = %s AND tenant = %s)", (batch_id, tenant)
    ).fetchone()
    return bool(row and row[0])


@dataclass(frozen=True)
class BatchCursor:
    """Where a page of GET /v1/batches ended: the last batch's creation time and id (newest first)."""

    created_at: datetime
    batch_id: str

    def encode(self) -> str:
        raw = json.dumps([self.created_at.isoformat(), self.batch_id]).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> "BatchCursor":
        """The cursor a previous page answered; ValueError for anything else."""
        try:
            created_at, batch_id = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            return cls(datetime.fromisoformat(created_at), str(batch_id))
        except (ValueError, TypeError) as exc:  # bad base64, bad JSON, wrong shape, bad timestamp
            raise ValueError("not a cursor this API answered: pass next_cursor of the previous page unchanged") from exc


def batches(conn: Connection, tenant: str, *, limit: int, cursor: BatchCursor | None, status: BatchStatus | None,
            created_after: datetime | None) -> tuple[list[BatchProgress], BatchCursor | None]:
    """The tenant's batches, newest first, as progress snapshots (the batches row holds the absolute counts).

    Keyset pagination on (created_at, batch_id). A batch is listed once its BatchCreated is persisted (the
    persister may hold a placeholder row without created_at for a moment when results arrive first).
    """
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            """
            SELECT batch_id, tenant, name, status, total_files, total_chunks, succeeded, failed, skipped, cancelled,
                   cancel_requested_at IS NOT NULL AS cancel_requested, sealed, created_at, started_at,
                   updated_at, finished_at, version
            FROM batches
            WHERE tenant = %(tenant)s AND created_at IS NOT NULL
              AND (%(status)s::text IS NULL OR status = %(status)s::text)
              AND (%(created_after)s::timestamptz IS NULL OR created_at > %(created_after)s::timestamptz)
              AND (%(after_at)s::timestamptz IS NULL
                   OR (created_at, batch_id) < (%(after_at)s::timestamptz, %(after_id)s::text))
            ORDER BY created_at DESC, batch_id DESC
            LIMIT %(fetch)s
            """,
            {"tenant": tenant, "status": status, "created_after": created_after, "fetch": limit + 1,
             "after_at": cursor.created_at if cursor else None, "after_id": cursor.batch_id if cursor else None},
        ).fetchall()
    page = [BatchProgress(**row) for row in rows[:limit]]
    last = page[-1] if len(rows) > limit else None
    return page, (BatchCursor(last.created_at, last.batch_id) if last else None)


def file_summaries(conn: Connection, tenant: str, batch_id: str, *, cursor: str | None, limit: int,
                   status: FileStatus | None, name: str | None) -> tuple[list[FileSummaryPublic], str | None]:
    """One page of a batch's file listing by file_id after `cursor`, optionally only one status and/or the
    names containing `name` (case-insensitive); no text, so a page of a 10,000-file batch stays small."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            """
            SELECT file_id, original_name, status, content_type, size_bytes AS size, page_count, error, error_code
            FROM files
            WHERE tenant = %(tenant)s AND batch_id = %(batch_id)s
              AND (%(status)s::text IS NULL OR status = %(status)s::text)
              AND (%(name)s::text IS NULL OR original_name ILIKE %(name)s::text)
              AND (%(cursor)s::text IS NULL OR file_id > %(cursor)s::text)
            ORDER BY file_id
            LIMIT %(fetch)s
            """,
            {"tenant": tenant, "batch_id": batch_id, "status": status, "cursor": cursor, "fetch": limit + 1,
             "name": matching.like_pattern(name) if name else None},
        ).fetchall()
    files = [FileSummaryPublic(**row) for row in rows[:limit]]
    return files, (files[-1].file_id if len(rows) > limit else None)


@dataclass(frozen=True)
class StoredFileInfo:
    """What serving a file's bytes needs to know, read from its row."""

    content_type: str
    original_name: str
    size: int
    page_count: int


def stored_file(conn: Connection, tenant: str, batch_id: str, file_id: str) -> StoredFileInfo | None:
    row = conn.execute(
        "SELECT content_type, original_name, size_bytes, page_count FROM files"
        " WHERE tenant = %s AND batch_id = %s AND file_id = %s",
        (tenant, batch_id, file_id),
    ).fetchone()
    return StoredFileInfo(*row) if row else None


def page_size(conn: Connection, tenant: str, file_id: str, page_number: int) -> tuple[int, int] | None:
    """(width, height) in pixels of the page image the words' boxes refer to; None if no such page."""
    row = conn.execute(
        "SELECT width, height FROM pages WHERE tenant = %s AND file_id = %s AND page_number = %s",
        (tenant, file_id, page_number),
    ).fetchone()
    return (row[0], row[1]) if row else None


def file_results(
    conn: Connection, tenant: str, batch_id: str, cursor: str | None, limit: int, include_words: bool
) -> tuple[list[FileResultPublic], str | None]:
    """One page of a batch's files ordered by file_id, after `cursor` (the last file_id of the previous page).

    Keyset pagination: stable while the persister adds files, and as cheap on page 1,000 as on page 1.
    Returns the files and the cursor of the next page (None when this is the last one).
    """
    with conn.cursor(row_factory=dict_row) as cur:
        files = cur.execute(
            f"""
            SELECT {_FILE_COLUMNS} FROM files
            WHERE tenant = %(tenant)s AND batch_id = %(batch_id)s
              AND (%(cursor)s::text IS NULL OR file_id > %(cursor)s::text)
            ORDER BY file_id
            LIMIT %(fetch)s
            """,
            {"tenant": tenant, "batch_id": batch_id, "cursor": cursor, "fetch": limit + 1},
        ).fetchall()
        has_more = len(files) > limit
        files = files[:limit]
        results = _with_pages(cur, tenant, files, include_words)
    return results, (files[-1]["file_id"] if has_more else None)


def file_result(conn: Connection, tenant: str, batch_id: str, file_id: str) -> FileResultPublic | None:
    """One file's result with every page's words; None when the tenant's batch holds no such file (yet)."""
    with conn.cursor(row_factory=dict_row) as cur:
        files = cur.execute(
            f"SELECT {_FILE_COLUMNS} FROM files WHERE tenant = %s AND batch_id = %s AND file_id = %s",
            (tenant, batch_id, file_id),
        ).fetchall()
        results = _with_pages(cur, tenant, files, include_words=True)
    return results[0] if results else None


_FILE_COLUMNS = ("file_id, original_name, status, content_type, size_bytes, sha256, page_count, error, error_code,"
                 " engine")


def _with_pages(cur, tenant: str, files: list[dict], include_words: bool) -> list[FileResultPublic]:
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
            error=f["error"], error_code=f["error_code"], engine=f["engine"],
            text=PAGE_SEPARATOR.join(p.text for p in file_pages), pages=file_pages,
        ))
    return results


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


@dataclass(frozen=True)
class SearchFilters:
    batch_id: str | None = None
    file_id: str | None = None
    language: str | None = None  # a Tesseract language the page's batch was OCRed with, e.g. kor


def search_pages(conn: Connection, tenant: str, query: str, embedding: Sequence[float], *, k: int,
                 filters: SearchFilters, candidates: int, rrf_k: int) -> list[SearchHit]:
    """The tenant's k best pages for `query`: exact/trigram text matches and nearest embeddings, fused by RRF.

    1. lexical: pages whose whitespace-free text contains the whitespace-free query, then trigram look-alikes
       (OCR misreads), by word similarity; 2. semantic: nearest by cosine (HNSW); 3. reciprocal rank fusion;
    4. the k winners' text, similarity, snippet, and the word boxes of the exact match.
    """
    needle = matching.compact(query)
    where, params = _search_filters(tenant, filters)
    params |= {"needle": needle, "pattern": matching.like_pattern(needle), "vector": Vector(list(embedding)),
               "n": candidates}
    with conn.transaction(), conn.cursor() as cur:
        lexical = [tuple(r) for r in cur.execute(sql.SQL(
            """SELECT p.file_id, p.page_number FROM pages p
               WHERE {where} AND (p.text_compact LIKE %(pattern)s OR %(needle)s <%% p.text_compact)
               ORDER BY p.text_compact LIKE %(pattern)s DESC, word_similarity(%(needle)s, p.text_compact) DESC,
                        p.file_id, p.page_number
               LIMIT %(n)s""").format(where=where), params)] if needle else []
        # The HNSW index filters after the scan; iterative scans (pgvector >= 0.8) keep scanning until enough
        # rows pass the filter, so a small tenant or batch in a large table still gets its candidates in order.
        cur.execute("SET LOCAL hnsw.iterative_scan = strict_order")
        semantic = [tuple(r) for r in cur.execute(sql.SQL(
            """SELECT p.file_id, p.page_number FROM pages p
               WHERE {where} AND p.embedding IS NOT NULL
               ORDER BY p.embedding <=> %(vector)s LIMIT %(n)s""").format(where=where), params)]
    fused = matching.fuse_ranks([lexical, semantic], rrf_k)[:k]
    if not fused:
        return []
    pages = _hit_pages(conn, tenant, [key for key, _ in fused], params["vector"])
    lexical_rank = {key: rank for rank, key in enumerate(lexical, start=1)}
    semantic_rank = {key: rank for rank, key in enumerate(semantic, start=1)}
    spans = {key: matching.match_span(pages[key]["text"], query) for key, _ in fused}
    with conn.cursor(row_factory=dict_row) as cur:
        words = _words_by_page(cur, sorted({key[0] for key, span in spans.items() if span is not None}))
    hits = []
    for key, score in fused:
        page, span = pages[key], spans[key]
        text, shifted = matching.snippet(page["text"], span, SNIPPET_CHARS)
        hits.append(SearchHit(
            batch_id=page["batch_id"], file_id=key[0], original_name=page["original_name"], page_number=key[1],
            score=score, similarity=page["similarity"], lexical_rank=lexical_rank.get(key),
            semantic_rank=semantic_rank.get(key), snippet=text,
            match=TextSpan(start=shifted[0], end=shifted[1]) if shifted else None,
            match_words=matching.words_covering(page["text"], words.get(key, []), span) if span else [],
        ))
    return hits


def _search_filters(tenant: str, filters: SearchFilters) -> tuple[sql.Composable, dict]:
    clauses = [sql.SQL("p.tenant = %(tenant)s")]
    if filters.batch_id is not None:
        clauses.append(sql.SQL("p.batch_id = %(batch_id)s"))
    if filters.file_id is not None:
        clauses.append(sql.SQL("p.file_id = %(file_id)s"))
    if filters.language is not None:
        clauses.append(sql.SQL(
            "p.batch_id IN (SELECT batch_id FROM batches WHERE tenant = %(tenant)s"
            " AND %(language)s = ANY(string_to_array(options->>'languages', '+')))"))
    params = {"tenant": tenant, "batch_id": filters.batch_id, "file_id": filters.file_id, "language": filters.language}
    return sql.SQL(" AND ").join(clauses), params


def _hit_pages(conn: Connection, tenant: str, keys: list[tuple[str, int]], vector: Vector) -> dict[tuple[str, int], dict]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            """SELECT p.batch_id, p.file_id, p.page_number, f.original_name, p.text,
                      1 - (p.embedding <=> %(vector)s) AS similarity
               FROM pages p JOIN files f ON f.file_id = p.file_id
               JOIN unnest(%(files)s::text[], %(pages)s::int[]) AS k(file_id, page_number)
                 ON k.file_id = p.file_id AND k.page_number = p.page_number
               WHERE p.tenant = %(tenant)s""",
            {"vector": vector, "files": [f for f, _ in keys], "pages": [n for _, n in keys], "tenant": tenant},
        ).fetchall()
    return {(r["file_id"], r["page_number"]): r for r in rows}


def webhook_deliveries(conn: Connection, tenant: str, batch_id: str) -> list[WebhookDeliveryPublic]:
    """The batch's webhook deliveries, oldest first, each with its attempts in order."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            """SELECT d.delivery_id, d.event_type, d.url, d.status, d.created_at, d.delivered_at, d.last_error,
                      CASE WHEN d.status = 'pending' THEN d.next_attempt_at END AS next_attempt_at,
                      coalesce(jsonb_agg(jsonb_build_object(
                          'attempt', a.attempt, 'attempted_at', a.attempted_at, 'status_code', a.status_code,
                          'error', a.error, 'duration_ms', a.duration_ms) ORDER BY a.attempt)
                        FILTER (WHERE a.attempt IS NOT NULL), '[]') AS attempts
               FROM webhook_deliveries d LEFT JOIN webhook_attempts a ON a.delivery_id = d.delivery_id
               WHERE d.tenant = %s AND d.batch_id = %s
               GROUP BY d.delivery_id ORDER BY d.created_at, d.delivery_id""",
            (tenant, batch_id),
        ).fetchall()
    return [WebhookDeliveryPublic(**row) for row in rows]
