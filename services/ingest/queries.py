"""Ingest's SQL: reads of the persister's tables (batches, files) and ingest's own (idempotency_keys,
batch_retries, s3_event_objects; schemas/db/006_batch_lifecycle.sql)."""
from collections.abc import Iterable
from datetime import datetime

from psycopg import Connection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from schemas.batch_events import BatchOptions


def lock(conn: Connection, *parts: str) -> None:
    """A transaction-scoped advisory lock on the joined parts: serializes requests on one key or batch."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", ("\x1f".join(parts),))


# --- batches and files -------------------------------------------------------------------------------------
def find_batch(conn: Connection, tenant: str, batch_id: str) -> dict | None:
    """The tenant's batch; None for another tenant's or an unknown one (the same 404 for both)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT batch_id, status, total_files, total_chunks, options, finished_at,"
                           " cancel_requested_at FROM batches WHERE batch_id = %s AND tenant = %s",
                           (batch_id, tenant)).fetchone()


def earlier_results(conn: Connection, tenant: str, sha256s: Iterable[str], options: BatchOptions) -> dict[str, str]:
    """sha256 → the file_id of an ok result of the tenant's, read with the same options (not itself a copy)."""
    rows = conn.execute(
        """SELECT DISTINCT ON (f.sha256) f.sha256, f.file_id FROM files f JOIN batches b USING (batch_id)
           WHERE f.tenant = %s AND f.sha256 = ANY(%s) AND f.status = 'ok' AND f.duplicate_of IS NULL
             AND b.options = %s ORDER BY f.sha256, f.persisted_at""",
        (tenant, list(sha256s), Jsonb(options.model_dump())),
    )
    return dict(rows.fetchall())


def retryable_files(conn: Connection, batch_id: str, ingest_engine: str) -> set[str]:
    """Failed files a worker read (not refused at ingest), not already waiting for a retry."""
    rows = conn.execute("SELECT file_id FROM files WHERE batch_id = %s AND status = 'failed' AND engine <> %s"
                        " AND retry_attempt IS NULL", (batch_id, ingest_engine))
    return {file_id for (file_id,) in rows}


def retry_pending(conn: Connection, batch_id: str, finished_at: datetime | None) -> bool:
    """A retry asked for after the batch last finished: the persister has not seen its results yet."""
    return conn.execute("SELECT 1 FROM batch_retries WHERE batch_id = %s AND (%s::timestamptz IS NULL OR"
                        " requested_at > %s)", (batch_id, finished_at, finished_at)).fetchone() is not None


def add_retry(conn: Connection, batch_id: str, file_ids: list[str]) -> int:
    """Record a retry under a fresh attempt number: above every attempt of the batch's files and earlier retries."""
    return conn.execute(
        """INSERT INTO batch_retries (batch_id, attempt, file_ids)
           SELECT %(b)s, greatest((SELECT max(attempt) FROM files WHERE batch_id = %(b)s),
                                  (SELECT max(attempt) FROM batch_retries WHERE batch_id = %(b)s), 1) + 1, %(ids)s
           RETURNING attempt""", {"b": batch_id, "ids": file_ids}).fetchone()[0]


# --- open batches ----------------------------------------------------------------------------------------
def add_open_batch(conn: Connection, batch_id: str, tenant: str, options: BatchOptions, chunk_size: int,
                   total_files: int, total_chunks: int) -> None:
    conn.execute("INSERT INTO open_batches (batch_id, tenant, options, chunk_size, total_files, total_chunks)"
                 " VALUES (%s, %s, %s, %s, %s, %s)",
                 (batch_id, tenant, Jsonb(options.model_dump()), chunk_size, total_files, total_chunks))


def find_open_batch(conn: Connection, tenant: str, batch_id: str) -> dict | None:
    """The tenant's batch created open (sealed or not), locked until the transaction ends; None otherwise."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT * FROM open_batches WHERE batch_id = %s AND tenant = %s FOR UPDATE",
                           (batch_id, tenant)).fetchone()


def record_addition(conn: Connection, batch_id: str, total_files: int, total_chunks: int) -> None:
    """The batch's new totals, and one more manifest (the addition's)."""
    conn.execute("UPDATE open_batches SET total_files = %s, total_chunks = %s, manifests = manifests + 1"
                 " WHERE batch_id = %s", (total_files, total_chunks, batch_id))


def seal_open_batch(conn: Connection, batch_id: str) -> None:
    conn.execute("UPDATE open_batches SET sealed_at = coalesce(sealed_at, now()) WHERE batch_id = %s", (batch_id,))


def cancel_open_batch(conn: Connection, batch_id: str) -> None:
    """No file may be added to a batch whose cancel was sent (a no-op for a batch never open)."""
    conn.execute("UPDATE open_batches SET cancelled_at = coalesce(cancelled_at, now()) WHERE batch_id = %s",
                 (batch_id,))


def manifest_count(conn: Connection, batch_id: str) -> int:
    """How many manifests the batch has: one, plus one per addition to an open batch."""
    row = conn.execute("SELECT manifests FROM open_batches WHERE batch_id = %s", (batch_id,)).fetchone()
    return row[0] if row else 1


# --- repair of lost results --------------------------------------------------------------------------------
def stalled_batches(conn: Connection, stalled_s: float, limit: int = 100) -> list[dict]:
    """Sealed batches not finished nor being cancelled whose row (bumped by every result) is older than stalled_s."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """SELECT batch_id, tenant, options FROM batches
               WHERE status IN ('pending', 'processing') AND sealed AND cancel_requested_at IS NULL
                 AND total_files > 0 AND updated_at < now() - make_interval(secs => %s)
               ORDER BY updated_at LIMIT %s""", (stalled_s, limit)).fetchall()


def awaited_results(conn: Connection, batch_id: str) -> tuple[set[str], dict[str, int]]:
    """The batch's files that have a result row, and of those the ones waiting for a retry's (→ its attempt)."""
    rows = conn.execute("SELECT file_id, retry_attempt FROM files WHERE batch_id = %s", (batch_id,)).fetchall()
    return {file_id for file_id, _ in rows}, {file_id: attempt for file_id, attempt in rows if attempt is not None}


def stored_offsets(conn: Connection, group_id: str) -> dict[tuple[str, int], int]:
    """The next offset per partition of a group whose offsets live in Postgres (the persister's)."""
    rows = conn.execute("SELECT topic, partition, next_offset FROM consumer_offsets WHERE group_id = %s", (group_id,))
    return {(topic, partition): offset for topic, partition, offset in rows}


# --- Idempotency-Key ---------------------------------------------------------------------------------------
def stored_answer(conn: Connection, tenant: str, key: str, ttl_s: float) -> tuple[str, dict] | None:
    """(request sha256, first answer) of a key still within its time to live."""
    return conn.execute("SELECT request_sha256, response FROM idempotency_keys WHERE tenant = %s AND"
                        " idempotency_key = %s AND created_at > now() - make_interval(secs => %s)",
                        (tenant, key, ttl_s)).fetchone()


def store_answer(conn: Connection, tenant: str, key: str, request_sha256: str, response: dict) -> None:
    conn.execute("""INSERT INTO idempotency_keys (tenant, idempotency_key, request_sha256, response)
                    VALUES (%s, %s, %s, %s) ON CONFLICT (tenant, idempotency_key) DO UPDATE
                    SET request_sha256 = excluded.request_sha256, response = excluded.response, created_at = now()""",
                 (tenant, key, request_sha256, Jsonb(response)))


# --- S3 event notifications --------------------------------------------------------------------------------
def add_event_objects(conn: Connection, tenant: str, objects: list[tuple[str, str, str, int | None]]) -> int:
    """(bucket, key, version, size) rows; how many were new (a repeated notification conflicts)."""
    if not objects:
        return 0
    return conn.execute(
        """INSERT INTO s3_event_objects (tenant, bucket, object_key, version, size_bytes)
           SELECT %s, * FROM unnest(%s::text[], %s::text[], %s::text[], %s::bigint[]) ON CONFLICT DO NOTHING""",
        (tenant, *map(list, zip(*objects))),
    ).rowcount


def group_due_objects(conn: Connection, window_s: float, batch_id_for, limit: int) -> list[tuple[str, str]]:
    """Give every tenant whose oldest waiting object is older than the window a new batch id over (up to limit
    of) its waiting objects; the (tenant, batch_id) pairs grouped."""
    tenants = [t for (t,) in conn.execute(
        "SELECT tenant FROM s3_event_objects WHERE batch_id IS NULL GROUP BY tenant"
        " HAVING min(received_at) <= now() - make_interval(secs => %s)", (window_s,))]
    grouped = []
    for tenant in tenants:
        batch_id = batch_id_for()
        conn.execute(
            """UPDATE s3_event_objects SET batch_id = %(b)s, grouped_at = now()
               WHERE (tenant, bucket, object_key, version) IN (
                 SELECT tenant, bucket, object_key, version FROM s3_event_objects
                 WHERE tenant = %(t)s AND batch_id IS NULL ORDER BY received_at LIMIT %(n)s
                 FOR UPDATE SKIP LOCKED)""", {"b": batch_id, "t": tenant, "n": limit})
        grouped.append((tenant, batch_id))
    return grouped


def unannounced_groups(conn: Connection) -> list[tuple[str, str]]:
    """(tenant, batch_id) grouped but not announced: just grouped, or left so by a crash."""
    return conn.execute("SELECT DISTINCT tenant, batch_id FROM s3_event_objects WHERE batch_id IS NOT NULL AND"
                        " announced_at IS NULL").fetchall()


def group_objects(conn: Connection, batch_id: str) -> list[tuple[str, str, str, int | None]]:
    return conn.execute("SELECT bucket, object_key, version, size_bytes FROM s3_event_objects WHERE batch_id = %s"
                        " ORDER BY received_at, bucket, object_key", (batch_id,)).fetchall()


def mark_group_announced(conn: Connection, batch_id: str) -> None:
    conn.execute("UPDATE s3_event_objects SET announced_at = now() WHERE batch_id = %s", (batch_id,))


def group_announced(conn: Connection, batch_id: str) -> bool:
    return conn.execute("SELECT 1 FROM s3_event_objects WHERE batch_id = %s AND announced_at IS NOT NULL LIMIT 1",
                        (batch_id,)).fetchone() is not None
