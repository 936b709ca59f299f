"""The persister's SQL over the table contract in schemas/db/ (files are written once: ON CONFLICT DO NOTHING)."""
from collections.abc import Iterable

import numpy as np
from psycopg import Connection
from psycopg.types.json import Jsonb

from schemas.batch_events import BatchCancelled, BatchCreated
from schemas.results import FileResult


def _clean(text: str) -> str:
    return text.replace("\x00", "")  # Postgres text cannot hold NUL


def load_offsets(conn: Connection, group_id: str, topics: Iterable[str], *, for_update: bool = False
                 ) -> dict[tuple[str, int], int]:
    """Next offset per (topic, partition); for_update serializes two owners of one partition."""
    rows = conn.execute(
        "SELECT topic, partition, next_offset FROM consumer_offsets WHERE group_id = %s AND topic = ANY(%s)"
        + (" FOR UPDATE" if for_update else ""),
        (group_id, list(topics)),
    )
    return {(topic, partition): offset for topic, partition, offset in rows}


def store_offsets(conn: Connection, group_id: str, next_offsets: dict[tuple[str, int], int]) -> None:
    conn.cursor().executemany(
        "INSERT INTO consumer_offsets (group_id, topic, partition, next_offset) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (group_id, topic, partition) DO UPDATE SET next_offset = excluded.next_offset",
        [(group_id, topic, partition, offset) for (topic, partition), offset in next_offsets.items()],
    )


def upsert_batch_created(conn: Connection, event: BatchCreated) -> None:
    conn.execute(
        """INSERT INTO batches (batch_id, tenant, name, total_files, total_chunks, options, webhook_url, created_at)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
           ON CONFLICT (batch_id) DO UPDATE SET name = excluded.name, total_files = excluded.total_files,
             total_chunks = excluded.total_chunks, options = excluded.options,
             webhook_url = excluded.webhook_url, created_at = excluded.created_at""",
        (event.batch_id, event.tenant, event.name, event.total_files, len(event.chunks),
         Jsonb(event.options.model_dump()), event.webhook_url, event.created_at),
    )


def mark_batch_cancelled(conn: Connection, event: BatchCancelled) -> None:
    conn.execute(
        """INSERT INTO batches (batch_id, tenant, status, finished_at) VALUES (%s, %s, 'cancelled', now())
           ON CONFLICT (batch_id) DO UPDATE SET status = 'cancelled', finished_at = coalesce(batches.finished_at, now())""",
        (event.batch_id, event.tenant),
    )


def insert_file_results(conn: Connection, results: list[FileResult]) -> list[FileResult]:
    """Insert files not seen before; returns those actually inserted (a repeated file_id changes nothing)."""
    inserted: list[FileResult] = []
    with conn.cursor() as cur:
        for r in results:
            # A result may arrive before its BatchCreated (different topics): hold a placeholder row.
            cur.execute("INSERT INTO batches (batch_id, tenant) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                        (r.batch_id, r.tenant))
            cur.execute(
                """INSERT INTO files (file_id, batch_id, chunk_id, tenant, original_name, sha256, size_bytes,
                     content_type, status, error, engine, embedding_model, page_count, timings, attempt)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                   ON CONFLICT (file_id) DO NOTHING RETURNING file_id""",
                (r.file_id, r.batch_id, r.chunk_id, r.tenant, _clean(r.original_name), r.sha256, r.size,
                 r.content_type, r.status.value, r.error, r.engine, r.embedding_model, len(r.pages),
                 Jsonb(r.timings.model_dump()), r.attempt),
            )
            if cur.fetchone() is not None:
                inserted.append(r)
        cur.executemany(
            """INSERT INTO pages (file_id, page_number, batch_id, tenant, width, height, text, mean_confidence, embedding)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)""",
            [(r.file_id, p.page_number, r.batch_id, r.tenant, p.width, p.height, _clean(p.text), p.mean_confidence,
              None if p.embedding is None else np.asarray(p.embedding, dtype=np.float32))
             for r in inserted for p in r.pages],
        )
        with cur.copy("COPY words (file_id, page_number, word_index, text, confidence, x, y, width, height)"
                      " FROM STDIN") as copy:
            for r in inserted:
                for p in r.pages:
                    for i, w in enumerate(p.words):
                        copy.write_row((r.file_id, p.page_number, i, _clean(w.text), w.confidence,
                                        w.bbox.x, w.bbox.y, w.bbox.width, w.bbox.height))
    return inserted


def recount_batches(conn: Connection, batch_ids: Iterable[str]) -> None:
    """Absolute counts and the status they imply, and a new version, for every touched batch."""
    conn.execute(
        """WITH counts AS (
             SELECT b.batch_id,
                    count(f.file_id) FILTER (WHERE f.status = 'ok') AS succeeded,
                    count(f.file_id) FILTER (WHERE f.status = 'failed') AS failed,
                    count(f.file_id) FILTER (WHERE f.status = 'skipped') AS skipped
             FROM batches b LEFT JOIN files f ON f.batch_id = b.batch_id
             WHERE b.batch_id = ANY(%(ids)s) GROUP BY b.batch_id)
           UPDATE batches b SET
             succeeded = c.succeeded, failed = c.failed, skipped = c.skipped,
             status = CASE
               WHEN b.status = 'cancelled' THEN 'cancelled'
               WHEN b.total_files > 0 AND c.succeeded + c.failed + c.skipped >= b.total_files
                 THEN CASE WHEN c.failed = b.total_files THEN 'failed' ELSE 'completed' END
               WHEN c.succeeded + c.failed + c.skipped > 0 THEN 'processing'
               ELSE 'pending' END,
             started_at = CASE WHEN c.succeeded + c.failed + c.skipped > 0
                               THEN coalesce(b.started_at, now()) END,
             finished_at = CASE WHEN b.status = 'cancelled' THEN b.finished_at
                                WHEN b.total_files > 0 AND c.succeeded + c.failed + c.skipped >= b.total_files
                                THEN coalesce(b.finished_at, now()) END,
             updated_at = now(),
             version = b.version + 1
           FROM counts c WHERE b.batch_id = c.batch_id""",
        {"ids": list(batch_ids)},
    )


def unpublished_batches(conn: Connection, limit: int = 1000) -> list[dict]:
    from psycopg.rows import dict_row

    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT * FROM batches WHERE published_version < version ORDER BY updated_at LIMIT %s", (limit,)
        ).fetchall()


def mark_published(conn: Connection, versions: dict[str, int]) -> None:
    conn.cursor().executemany(
        "UPDATE batches SET published_version = %s WHERE batch_id = %s AND published_version < %s",
        [(v, batch_id, v) for batch_id, v in versions.items()],
    )
