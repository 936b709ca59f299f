"""The delivery log's SQL (schemas/db/004_webhooks_and_search.sql). Each function receives its connection.

Claiming pushes a delivery's due time out by a lease instead of marking it taken: a sender killed mid-attempt
leaves nothing stuck, the delivery is simply due again when the lease ends (at-least-once).
"""
from datetime import datetime

from psycopg import Connection
from psycopg.rows import dict_row

from schemas.api import WebhookDeliveryStatus
from services.notifier.deliveries import OwedDelivery

__all__ = ["claim_due", "record_attempt", "record_owed"]


def record_owed(conn: Connection, deliveries: list[OwedDelivery]) -> int:
    """Insert deliveries not yet owed, due at once (a known delivery_id changes nothing). A milestone at or below
    one already owed for the batch, or after its terminal event, is skipped. Returns how many rows were new."""
    new = 0
    with conn.cursor() as cur:
        for d in deliveries:
            cur.execute(
                """INSERT INTO webhook_deliveries (delivery_id, batch_id, tenant, event_type, milestone, url, body,
                                                   next_attempt_at)
                   SELECT %(id)s, %(batch)s, %(tenant)s, %(type)s, %(milestone)s, %(url)s, %(body)s, now()
                   WHERE %(milestone)s::int IS NULL OR NOT EXISTS (
                       SELECT 1 FROM webhook_deliveries WHERE batch_id = %(batch)s
                         AND (milestone >= %(milestone)s OR event_type <> 'batch.progress'))
                   ON CONFLICT (delivery_id) DO NOTHING""",
                {"id": d.delivery_id, "batch": d.batch_id, "tenant": d.tenant, "type": d.event_type,
                 "milestone": d.milestone, "url": d.url, "body": d.body},
            )
            new += cur.rowcount
    return new


def claim_due(conn: Connection, *, limit: int, lease_s: float) -> list[dict]:
    """Up to `limit` pending deliveries whose time has come, each pushed `lease_s` into the future."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """UPDATE webhook_deliveries d SET next_attempt_at = now() + make_interval(secs => %(lease)s)
               WHERE d.delivery_id IN (
                   SELECT delivery_id FROM webhook_deliveries
                   WHERE status = 'pending' AND next_attempt_at <= now()
                   ORDER BY next_attempt_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
               RETURNING d.delivery_id, d.batch_id, d.tenant, d.url, d.body, d.attempt_count, d.created_at""",
            {"lease": lease_s, "limit": limit},
        ).fetchall()


def record_attempt(conn: Connection, delivery_id: str, *, attempted_at: datetime, status_code: int | None,
                   error: str | None, duration_ms: float, outcome: WebhookDeliveryStatus,
                   next_attempt_at: datetime | None) -> None:
    """One finished attempt, and the delivery's state after it, in one transaction."""
    with conn.transaction():
        conn.execute(
            """INSERT INTO webhook_attempts (delivery_id, attempt, attempted_at, status_code, error, duration_ms)
               SELECT delivery_id, attempt_count + 1, %s, %s, %s, %s FROM webhook_deliveries WHERE delivery_id = %s
               ON CONFLICT DO NOTHING""",
            (attempted_at, status_code, error, duration_ms, delivery_id),
        )
        conn.execute(
            """UPDATE webhook_deliveries SET attempt_count = attempt_count + 1, status = %s, next_attempt_at = %s,
                      delivered_at = CASE WHEN %s = 'delivered' THEN %s END, last_error = %s
               WHERE delivery_id = %s""",
            (outcome, next_attempt_at, outcome, attempted_at, error, delivery_id),
        )
