"""The persister's SQL over the table contract in schemas/db/, and the pure rules that decide what it writes.

A file's result is written under the replace rule (`replaces`), so retries and DLQ replays are idempotent; a file
sent in page-range parts gets its files row once the parts cover every page (`assembled_file`).
Two ways in for results, with the same outcome: a whole poll's results in a few statements (`write_file_results`:
multi-row INSERT and COPY), and one record at a time (`write_file_result`), which the persister uses when Postgres
refuses the bulk write for its data. Batch events are few and go one at a time either way.
"""
from collections.abc import Iterable, Mapping

import psycopg
from confluent_kafka import Message
from pgvector import Vector
from psycopg import Connection
from psycopg.rows import dict_row
from psycopg.sql import SQL
from psycopg.types.json import Jsonb

from schemas.batch_events import BatchCancelled, BatchCreated, BatchFilesAdded, BatchRetryRequested, BatchSealed
from schemas.dlq import DlqRecord
from schemas.results import INGEST_ENGINE, FailureReason, FileResult, FileStatus
from schemas.topics import encode

# Postgres refuses the record's data (a constraint, a type's range, pgvector's dimension, NUL in text, a value
# too large for an index): trying again cannot help. A lost connection (other OperationalErrors) can.
REFUSED_DATA = (psycopg.DataError, psycopg.IntegrityError, psycopg.errors.ProgramLimitExceeded)

_TIMINGS = ("fetch_ms", "decode_ms", "ocr_ms", "embed_ms")


# --- pure rules --------------------------------------------------------------------------------------------
def replaces(stored: Mapping, new: Mapping) -> bool:
    """A result replaces a stored one (files row or part) iff that one failed and the new one is ok or a later
    try; so a replay of what is stored changes nothing. Both carry `status` and `attempt`."""
    later_or_ok = new["status"] == FileStatus.OK or new["attempt"] > stored["attempt"]
    return stored["status"] == FileStatus.FAILED and later_or_ok


def accepted_in_order(stored: Mapping | None, rows: list[Mapping]) -> list[int]:
    """Which of a file's results, arriving in this order, are written one after another under the replace rule
    (each replacing the one before): their indices. The last is what the files row ends up holding."""
    accepted, current = [], stored
    for index, row in enumerate(rows):
        if current is None or replaces(current, row):
            accepted.append(index)
            current = row
    return accepted


def bulk_writable(results: Iterable[FileResult]) -> bool:
    """Whole-file results are written together before the parts; that keeps the order that matters unless one
    file has both in the same poll."""
    whole, parted = set(), set()
    for r in results:
        (whole if r.part is None else parted).add(r.file_id)
    return not whole & parted


def covers_all_pages(ranges: Iterable[tuple[int, int]], total_pages: int) -> bool:
    """Whether the (first, last) page ranges cover 1..total_pages (interval walk: total_pages may be huge)."""
    next_needed = 1
    for first, last in sorted(ranges):
        if first > next_needed:
            return False
        next_needed = max(next_needed, last + 1)
    return next_needed > total_pages


def assembled_file(parts: list[Mapping]) -> dict | None:
    """The files row of a file whose parts cover all its pages, None before that. Failed if a part failed (the
    first failed part's error), else skipped if one was skipped, else ok; pages and timings summed."""
    if not parts:
        return None
    parts = sorted(parts, key=lambda p: p["first_page"])
    if not covers_all_pages(((p["first_page"], p["last_page"]) for p in parts), max(p["total_pages"] for p in parts)):
        return None
    verdict = next((p for p in parts if p["status"] == FileStatus.FAILED), None) \
        or next((p for p in parts if p["status"] == FileStatus.SKIPPED), None) or parts[0]
    first = parts[0]
    return {
        "file_id": first["file_id"], "batch_id": first["batch_id"], "chunk_id": first["chunk_id"],
        "tenant": first["tenant"], "original_name": first["original_name"], "sha256": first["sha256"],
        "size_bytes": first["size_bytes"], "content_type": first["content_type"], "engine": first["engine"],
        "embedding_model": first["embedding_model"],
        "status": verdict["status"], "error": verdict["error"], "error_code": verdict["error_code"],
        "page_count": sum(p["page_count"] for p in parts),
        "timings": {k: sum(p["timings"].get(k, 0.0) for p in parts) for k in _TIMINGS},
        "attempt": max(p["attempt"] for p in parts),
    }


def _file_row(r: FileResult) -> dict:
    return {"file_id": r.file_id, "batch_id": r.batch_id, "chunk_id": r.chunk_id, "tenant": r.tenant,
            "original_name": r.original_name, "sha256": r.sha256, "size_bytes": r.size,
            "content_type": r.content_type, "status": r.status.value, "error": r.error,
            "error_code": r.error_code and r.error_code.value, "engine": r.engine,
            "embedding_model": r.embedding_model, "page_count": len(r.pages), "timings": r.timings.model_dump(),
            "attempt": r.attempt}


# --- consumer offsets --------------------------------------------------------------------------------------
def load_offsets(conn: Connection, group_id: str, topics: Iterable[str]) -> dict[tuple[str, int], int]:
    """Next offset per (topic, partition) of the topics."""
    rows = conn.execute("SELECT topic, partition, next_offset FROM consumer_offsets WHERE group_id = %s"
                        " AND topic = ANY(%s)", (group_id, list(topics)))
    return {(topic, partition): offset for topic, partition, offset in rows}


def lock_offsets(conn: Connection, group_id: str, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """Next offset per (topic, partition) of these partitions only, their rows locked (in one order) for this
    transaction: two owners of one partition are serialized, while transactions of other partitions (another
    lane, another persister) go on at the same time."""
    wanted = sorted(partitions)
    rows = conn.execute(
        "SELECT topic, partition, next_offset FROM consumer_offsets WHERE group_id = %s"
        " AND (topic, partition) IN (SELECT * FROM unnest(%s::text[], %s::int[])) ORDER BY topic, partition"
        " FOR UPDATE", (group_id, [topic for topic, _ in wanted], [partition for _, partition in wanted]))
    return {(topic, partition): offset for topic, partition, offset in rows}


def store_offsets(conn: Connection, group_id: str, next_offsets: dict[tuple[str, int], int]) -> None:
    conn.cursor().executemany(
        "INSERT INTO consumer_offsets (group_id, topic, partition, next_offset) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (group_id, topic, partition) DO UPDATE SET next_offset = excluded.next_offset",
        [(group_id, topic, partition, offset) for (topic, partition), offset in next_offsets.items()],
    )


# --- batch events ------------------------------------------------------------------------------------------
def upsert_batch_created(conn: Connection, event: BatchCreated) -> None:
    conn.execute(
        """INSERT INTO batches (batch_id, tenant, name, total_files, total_chunks, options, webhook_url, created_at,
             sealed)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
           ON CONFLICT (batch_id) DO UPDATE SET name = excluded.name, total_files = excluded.total_files,
             total_chunks = excluded.total_chunks, options = excluded.options,
             webhook_url = excluded.webhook_url, created_at = excluded.created_at, sealed = excluded.sealed""",
        (event.batch_id, event.tenant, event.name, event.total_files, len(event.chunks),
         Jsonb(event.options.model_dump()), event.webhook_url, event.created_at, not event.open),
    )


def grow_batch(conn: Connection, event: BatchFilesAdded | BatchSealed) -> None:
    """The open batch's absolute totals (never lowered), and sealed once BatchSealed says so. BatchCreated came
    first on the same partition, so the row exists; results of the added files may have come before this."""
    conn.execute(
        """UPDATE batches SET total_files = greatest(total_files, %s), total_chunks = greatest(total_chunks, %s),
             sealed = sealed OR %s
           WHERE batch_id = %s AND tenant = %s""",
        (event.total_files, event.total_chunks, isinstance(event, BatchSealed), event.batch_id, event.tenant),
    )


def mark_cancel_requested(conn: Connection, event: BatchCancelled) -> None:
    """The batch ends 'cancelled' once every file is terminal (recount_batches); one already finished stays so."""
    conn.execute(
        """INSERT INTO batches (batch_id, tenant, cancel_requested_at) VALUES (%s, %s, %s)
           ON CONFLICT (batch_id) DO UPDATE
             SET cancel_requested_at = coalesce(batches.cancel_requested_at, excluded.cancel_requested_at)
             WHERE batches.status NOT IN ('completed', 'failed')""",
        (event.batch_id, event.tenant, event.requested_at),
    )


def mark_retry_requested(conn: Connection, event: BatchRetryRequested) -> int:
    """Failed rows below the retry's attempt wait for it (not counted meanwhile); how many wait. A result of that
    attempt that came first already replaced its row, so it does not wait. The batch is unfinished until the
    recount in this transaction says otherwise: its finished_at then follows the retry."""
    conn.execute("UPDATE batches SET finished_at = NULL WHERE batch_id = %s AND status <> 'cancelled'",
                 (event.batch_id,))
    return conn.execute(
        """UPDATE files SET retry_attempt = %(attempt)s
           WHERE batch_id = %(batch_id)s AND tenant = %(tenant)s AND status = 'failed' AND attempt < %(attempt)s
             AND (file_id = ANY(%(file_ids)s) OR (cardinality(%(file_ids)s) = 0 AND engine <> %(ingest)s))""",
        {"attempt": event.attempt, "batch_id": event.batch_id, "tenant": event.tenant,
         "file_ids": event.file_ids, "ingest": INGEST_ENGINE},
    ).rowcount


def settle_files_at_creation(conn: Connection, event: BatchCreated | BatchFilesAdded) -> None:
    """The batch's (or addition's) rejected files as failed rows, and its duplicates as copies of the earlier ok
    result (row, pages, words); a duplicate whose original is gone fails (duplicate_missing). Replays change
    nothing."""
    if not (event.rejected or event.duplicates):
        return
    batch = {"batch_id": event.batch_id, "tenant": event.tenant, "chunk_id": f"{event.batch_id}.ingest",
             "engine": INGEST_ENGINE}
    missing = _copy_duplicates(conn, batch, [d.model_dump() for d in event.duplicates]) if event.duplicates else []
    failed = [{"file_id": r.file_id, "original_name": r.original_name, "size": r.size, "sha256": r.sha256,
               "content_type": "", "error_code": r.error_code.value, "error": r.error} for r in event.rejected]
    failed += [{**{k: d[k] for k in ("file_id", "original_name", "size", "sha256", "content_type")},
                "error_code": FailureReason.DUPLICATE_MISSING.value,
                "error": f"the earlier result {d['duplicate_of']} this file duplicates is no longer stored; "
                         "submit it again with dedupe=false"} for d in missing]
    if failed:
        conn.execute(
            """WITH f AS (
                 INSERT INTO files (file_id, batch_id, chunk_id, tenant, original_name, sha256, size_bytes,
                   content_type, status, error, error_code, engine, page_count, timings, attempt)
                 SELECT r.file_id, %(batch_id)s, %(chunk_id)s, %(tenant)s, r.original_name, r.sha256, r.size,
                   r.content_type, 'failed', r.error, r.error_code, %(engine)s, 0, '{}'::jsonb, 1
                 FROM jsonb_to_recordset(%(rows)s) AS r(file_id text, original_name text, size bigint, sha256 text,
                   content_type text, error_code text, error text)
                 ON CONFLICT (file_id) DO NOTHING RETURNING file_id, attempt, status, error_code, error)
               INSERT INTO file_attempts (file_id, attempt, status, error_code, error) SELECT * FROM f""",
            batch | {"rows": Jsonb(failed)},
        )


def _copy_duplicates(conn: Connection, batch: dict, duplicates: list[dict]) -> list[dict]:
    """Copy each original's ok result to its duplicate (row, pages, words); the duplicates (as dicts) without a
    stored original. A duplicate already stored (a replay) is left as it is."""
    conn.execute(
        """WITH d AS (SELECT * FROM jsonb_to_recordset(%(rows)s) AS r(file_id text, original_name text, size bigint,
                        sha256 text, content_type text, duplicate_of text)),
                f AS (
                  INSERT INTO files (file_id, batch_id, chunk_id, tenant, original_name, sha256, size_bytes,
                    content_type, status, error, error_code, engine, embedding_model, page_count, timings, attempt,
                    duplicate_of)
                  SELECT d.file_id, %(batch_id)s, %(chunk_id)s, %(tenant)s, d.original_name, d.sha256, d.size,
                    d.content_type, o.status, o.error, o.error_code, o.engine, o.embedding_model, o.page_count,
                    o.timings, 1, d.duplicate_of
                  FROM d JOIN files o ON o.file_id = d.duplicate_of AND o.tenant = %(tenant)s AND o.status = 'ok'
                  ON CONFLICT (file_id) DO NOTHING RETURNING file_id, duplicate_of),
                copied_pages AS (
                  INSERT INTO pages (file_id, page_number, batch_id, tenant, width, height, text, mean_confidence,
                    embedding, rotation, skew, needs_review)
                  SELECT f.file_id, p.page_number, %(batch_id)s, %(tenant)s, p.width, p.height, p.text,
                    p.mean_confidence, p.embedding, p.rotation, p.skew, p.needs_review
                  FROM f JOIN pages p ON p.file_id = f.duplicate_of),
                copied_words AS (
                  INSERT INTO words (file_id, page_number, word_index, text, confidence, x, y, width, height)
                  SELECT f.file_id, w.page_number, w.word_index, w.text, w.confidence, w.x, w.y, w.width, w.height
                  FROM f JOIN words w ON w.file_id = f.duplicate_of)
           INSERT INTO file_attempts (file_id, attempt, status) SELECT file_id, 1, 'ok' FROM f""",
        batch | {"rows": Jsonb(duplicates)},
    )
    stored = {row[0] for row in conn.execute("SELECT file_id FROM files WHERE file_id = ANY(%s)",
                                             ([d["file_id"] for d in duplicates],))}
    return [d for d in duplicates if d["file_id"] not in stored]


# --- file results ------------------------------------------------------------------------------------------
def write_file_result(conn: Connection, r: FileResult) -> bool:
    """Store one file's result (or one part of it) under the replace rule; True if anything changed."""
    if r.part is not None:
        return _write_part(conn, r)
    row = _file_row(r)
    if not _insert_file(conn, row):  # a files row exists: a retry, a replay or a duplicate
        stored = _locked_row(conn, "SELECT status, attempt FROM files WHERE file_id = %s FOR UPDATE", (r.file_id,))
        if not replaces(stored, row):
            return False
        _delete_files(conn, [r.file_id])
        _insert_file(conn, row)
    _insert_pages(conn, [r])
    return True


def write_file_results(conn: Connection, results: list[FileResult]) -> None:
    """Whole-file results (no parts), in order, in a few statements; the same rows as write_file_result one by one.
    1. lock the files rows these results name  2. per file, the results the replace rule accepts, in order
    3. delete the rows they replace  4. placeholder batches, files, history, pages and words in bulk"""
    by_file: dict[str, list[tuple[FileResult, dict]]] = {}
    for r in results:
        by_file.setdefault(r.file_id, []).append((r, _file_row(r)))
    with conn.cursor(row_factory=dict_row) as cur:
        stored = {row["file_id"]: row for row in cur.execute(
            "SELECT file_id, status, attempt FROM files WHERE file_id = ANY(%s) ORDER BY file_id FOR UPDATE",
            (list(by_file),))}
    final: list[tuple[FileResult, dict]] = []
    history: list[dict] = []
    for file_id, candidates in by_file.items():
        accepted = [candidates[i] for i in accepted_in_order(stored.get(file_id), [row for _, row in candidates])]
        if accepted:
            history += [row for _, row in accepted]
            final.append(accepted[-1])
    _delete_files(conn, [r.file_id for r, _ in final if r.file_id in stored])
    if not final:
        return
    # Placeholders for batches not known yet, in one lock order. A batch the DB holds is left out before the
    # insert: ON CONFLICT would wait for any transaction that has updated its row (another lane's recount).
    _insert_rows(conn, "INSERT INTO batches (batch_id, tenant) SELECT * FROM (VALUES {}) AS v (batch_id, tenant)"
                       " WHERE NOT EXISTS (SELECT FROM batches b WHERE b.batch_id = v.batch_id)"
                       " ON CONFLICT DO NOTHING", sorted({(row["batch_id"], row["tenant"]) for _, row in final}))
    with conn.cursor() as cur:
        with cur.copy(f"COPY files ({', '.join(_FILE_COLUMNS)}) FROM STDIN") as copy:
            for _, row in final:
                copy.write_row([Jsonb(row[c]) if c == "timings" else row[c] for c in _FILE_COLUMNS])
        with cur.copy("COPY file_attempts (file_id, attempt, status, error_code, error) FROM STDIN") as copy:
            for row in history:
                copy.write_row((row["file_id"], row["attempt"], row["status"], row["error_code"], row["error"]))
    _insert_pages(conn, [r for r, _ in final])


_FILE_COLUMNS = ("file_id", "batch_id", "chunk_id", "tenant", "original_name", "sha256", "size_bytes", "content_type",
                 "status", "error", "error_code", "engine", "embedding_model", "page_count", "timings", "attempt")


def _insert_rows(conn: Connection, statement: str, rows: list[tuple]) -> None:
    """`statement` with its one {} replaced by a VALUES list of `rows` (1,000 rows per statement)."""
    with conn.cursor() as cur:
        for start in range(0, len(rows), 1000):
            chunk = rows[start:start + 1000]
            values = SQL("({})").format(SQL(", ").join([SQL("%s")] * len(chunk[0])))
            cur.execute(SQL(statement).format(SQL(", ").join([values] * len(chunk))),
                        [value for row in chunk for value in row])


def _write_part(conn: Connection, r: FileResult) -> bool:
    """Store the part (replacing a failed one); once the parts cover every page, their file replaces the files row
    under the same rule. Until then the files row, if any, stays as it is."""
    stored_part = _locked_row(conn, "SELECT status, attempt, last_page FROM file_parts"
                                " WHERE file_id = %s AND first_page = %s FOR UPDATE", (r.file_id, r.part.first_page))
    if stored_part is not None and not replaces(stored_part, _file_row(r)):
        return False  # a repeated part
    stored_file = _locked_row(conn, "SELECT status, attempt FROM files WHERE file_id = %s FOR UPDATE", (r.file_id,))
    if stored_file is not None and stored_file["status"] != FileStatus.FAILED:
        return False  # an ok or skipped file is final
    if stored_part is not None:
        for table in ("pages", "words"):
            conn.execute(f"DELETE FROM {table} WHERE file_id = %s AND page_number BETWEEN %s AND %s",
                         (r.file_id, r.part.first_page, stored_part["last_page"]))
        conn.execute("DELETE FROM file_parts WHERE file_id = %s AND first_page = %s", (r.file_id, r.part.first_page))
    _insert_pages(conn, [r])
    row = _file_row(r)
    conn.execute(
        """INSERT INTO file_parts (file_id, first_page, last_page, total_pages, batch_id, chunk_id, tenant,
             original_name, sha256, size_bytes, content_type, status, error, error_code, engine, embedding_model,
             page_count, timings, attempt)
           VALUES (%(file_id)s, %(first_page)s, %(last_page)s, %(total_pages)s, %(batch_id)s, %(chunk_id)s,
             %(tenant)s, %(original_name)s, %(sha256)s, %(size_bytes)s, %(content_type)s, %(status)s, %(error)s,
             %(error_code)s, %(engine)s, %(embedding_model)s, %(page_count)s, %(timings)s, %(attempt)s)""",
        row | r.part.model_dump() | {"timings": Jsonb(row["timings"])},
    )
    with conn.cursor(row_factory=dict_row) as cur:
        parts = cur.execute("SELECT * FROM file_parts WHERE file_id = %s", (r.file_id,)).fetchall()
    file = assembled_file(parts)
    if file is not None and (stored_file is None or replaces(stored_file, file)):
        conn.execute("DELETE FROM files WHERE file_id = %s", (r.file_id,))  # the pages are the parts'
        _insert_file(conn, file)
    return True


def _locked_row(conn: Connection, query: str, params: tuple) -> dict | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchone()


def _delete_files(conn: Connection, file_ids: list[str]) -> None:
    """The files rows with their pages, words and parts: a replaced result leaves nothing behind."""
    if file_ids:
        conn.execute("""WITH words AS (DELETE FROM words WHERE file_id = ANY(%(ids)s)),
                             pages AS (DELETE FROM pages WHERE file_id = ANY(%(ids)s)),
                             parts AS (DELETE FROM file_parts WHERE file_id = ANY(%(ids)s))
                        DELETE FROM files WHERE file_id = ANY(%(ids)s)""", {"ids": file_ids})


def _insert_file(conn: Connection, row: dict) -> bool:
    """The files row (what counts) and its line in the history of attempts, unless the file has a row already.
    A result may arrive before its BatchCreated (different topics): a placeholder batches row holds its place."""
    inserted = conn.execute(
        """WITH batch AS (INSERT INTO batches (batch_id, tenant) VALUES (%(batch_id)s, %(tenant)s) ON CONFLICT DO NOTHING),
                file AS (
                  INSERT INTO files (file_id, batch_id, chunk_id, tenant, original_name, sha256, size_bytes,
                    content_type, status, error, error_code, engine, embedding_model, page_count, timings, attempt)
                  VALUES (%(file_id)s, %(batch_id)s, %(chunk_id)s, %(tenant)s, %(original_name)s, %(sha256)s,
                    %(size_bytes)s, %(content_type)s, %(status)s, %(error)s, %(error_code)s, %(engine)s,
                    %(embedding_model)s, %(page_count)s, %(timings)s, %(attempt)s)
                  ON CONFLICT (file_id) DO NOTHING RETURNING file_id, attempt, status, error_code, error)
           INSERT INTO file_attempts (file_id, attempt, status, error_code, error) SELECT * FROM file RETURNING 1""",
        row | {"timings": Jsonb(row["timings"])},
    ).fetchone()
    return inserted is not None


_PAGE_COLUMNS = "file_id, page_number, batch_id, tenant, width, height, text, mean_confidence, rotation, skew," \
                " needs_review, embedding"


def _insert_pages(conn: Connection, results: list[FileResult]) -> None:
    """The results' pages and words, each table in one binary COPY (words: twice the rows/s of text; pages: a
    512-d vector packed as floats, where its text form cost 0.3 ms of float formatting per page)."""
    if not any(r.pages for r in results):
        return
    with conn.cursor() as cur:
        with cur.copy(f"COPY pages ({_PAGE_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(_PAGE_TYPES)
            for r in results:
                for p in r.pages:
                    copy.write_row((r.file_id, p.page_number, r.batch_id, r.tenant, p.width, p.height, p.text,
                                    p.mean_confidence, p.rotation, p.skew, p.needs_review,
                                    None if p.embedding is None else Vector(p.embedding)))
        if not any(p.words for r in results for p in r.pages):
            return
        with cur.copy("COPY words (file_id, page_number, word_index, text, confidence, x, y, width, height)"
                      " FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(_WORD_TYPES)
            for r in results:
                for p in r.pages:
                    for i, w in enumerate(p.words):
                        box = w.bbox
                        copy.write_row((r.file_id, p.page_number, i, w.text, w.confidence, box.x, box.y, box.width,
                                        box.height))


_PAGE_TYPES = ("text", "int4", "text", "text", "int4", "int4", "text", "float4", "int2", "float4", "bool", "vector")
_WORD_TYPES = ("text", "int4", "int4", "text", "float4", "int4", "int4", "int4", "int4")


# --- batch accounting --------------------------------------------------------------------------------------
def recount_batches(conn: Connection, batch_ids: Iterable[str]) -> None:
    """Absolute counts and the status they imply, and a new version, for every touched batch. A failed row that
    waits for a retry is not counted; a batch whose cancel was asked for ends 'cancelled' once all files are in;
    an open batch (not sealed) may still grow, so it finishes only that way.
    Another transaction may be writing files of the same batches (another lane or persister): their rows are
    locked first, in one order, so that the counts (a statement of its own, so a snapshot of its own under READ
    COMMITTED) see every transaction that touched them and committed before."""
    ids = sorted(batch_ids)
    conn.execute("SELECT 1 FROM batches WHERE batch_id = ANY(%s) ORDER BY batch_id FOR UPDATE", (ids,))
    conn.execute(
        """WITH counts AS (
             SELECT b.batch_id,
                    count(f.file_id) FILTER (WHERE f.status = 'ok') AS succeeded,
                    count(f.file_id) FILTER (WHERE f.status = 'failed' AND f.retry_attempt IS NULL) AS failed,
                    count(f.file_id) FILTER (WHERE f.status = 'skipped') AS skipped,
                    count(f.file_id) FILTER (WHERE f.status = 'cancelled') AS cancelled
             FROM batches b LEFT JOIN files f ON f.batch_id = b.batch_id
             WHERE b.batch_id = ANY(%(ids)s) GROUP BY b.batch_id),
           done AS (SELECT *, succeeded + failed + skipped + cancelled AS n FROM counts),
           -- every file in, and no more to come: sealed, or its cancel asked for
           ended AS (SELECT d.*, b.total_files > 0 AND d.n >= b.total_files
                                 AND (b.sealed OR b.cancel_requested_at IS NOT NULL) AS all_in
                     FROM done d JOIN batches b USING (batch_id))
           UPDATE batches b SET
             succeeded = c.succeeded, failed = c.failed, skipped = c.skipped, cancelled = c.cancelled,
             status = CASE
               WHEN b.status = 'cancelled' THEN 'cancelled'
               WHEN c.all_in THEN CASE
                 WHEN b.cancel_requested_at IS NOT NULL THEN 'cancelled'
                 WHEN c.failed = b.total_files THEN 'failed' ELSE 'completed' END
               WHEN c.n > 0 OR b.status <> 'pending' THEN 'processing'
               ELSE 'pending' END,
             started_at = CASE WHEN c.n > 0 THEN coalesce(b.started_at, now()) END,
             finished_at = CASE WHEN b.status = 'cancelled' THEN b.finished_at
                                WHEN c.all_in THEN coalesce(b.finished_at, now()) END,
             updated_at = now(),
             version = b.version + 1
           FROM ended c WHERE b.batch_id = c.batch_id""",
        {"ids": ids},
    )


# --- what goes out after the commit: progress snapshots and dead letters -----------------------------------
def unpublished_batches(conn: Connection, limit: int = 1000) -> list[dict]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT * FROM batches WHERE published_version < version ORDER BY updated_at LIMIT %s", (limit,)
        ).fetchall()


def mark_published(conn: Connection, versions: dict[str, int]) -> None:
    conn.cursor().executemany(
        "UPDATE batches SET published_version = %s WHERE batch_id = %s AND published_version < %s",
        [(v, batch_id, v) for batch_id, v in versions.items()],
    )


def add_dead_letter(conn: Connection, msg: Message, record: DlqRecord) -> None:
    conn.execute(
        """INSERT INTO dlq_outbox (source_topic, source_partition, source_offset, reason, error_class, record_key, record)
           VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING""",
        (record.source_topic, record.partition, record.offset, record.reason, record.error_class, msg.key(),
         encode(record)),
    )


def unpublished_dead_letters(conn: Connection, limit: int = 100) -> list[tuple[int, bytes | None, bytes]]:
    """(id, key, DlqRecord bytes) not yet produced, oldest first; locked, so two persisters do not both send one."""
    return conn.execute(
        "SELECT id, record_key, record FROM dlq_outbox WHERE published_at IS NULL ORDER BY id LIMIT %s"
        " FOR UPDATE SKIP LOCKED", (limit,),
    ).fetchall()


def mark_dead_letters_published(conn: Connection, ids: list[int]) -> None:
    conn.execute("UPDATE dlq_outbox SET published_at = now() WHERE id = ANY(%s)", (ids,))
