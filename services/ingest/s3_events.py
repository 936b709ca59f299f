"""S3 event notifications → batches. Each ObjectCreated object is recorded once in Postgres (a repeated
notification conflicts and creates nothing); a thread groups each tenant's waiting objects into one batch once
the oldest has waited s3_event_window_s, and announces it. A group is committed before it is announced and
announced under deterministic ids, so a crash in between announces the same batch again, never a second one."""
import json
import logging
import uuid
from collections.abc import Callable

import psycopg
from psycopg_pool import ConnectionPool

from schemas.api import ProblemCode, S3EventsAccepted, S3ObjectRef
from common.runtime import PeriodicTask
from services.ingest import queries
from services.ingest.planning import file_id_for, location_allowed, s3_event_objects
from common.problems import Problem
from services.ingest.settings import IngestSettings

__all__ = ["EventGrouper", "receive"]

log = logging.getLogger(__name__)

# (refs, batch_id, file_ids, tenant) → the batch accepted; raises Problem
AcceptObjects = Callable[[list[S3ObjectRef], str, list[str], str], object]


def receive(body: bytes, *, tenant: str, settings: IngestSettings, pool: ConnectionPool) -> S3EventsAccepted:
    """Record the notification's ObjectCreated objects (all of them, or none if one is outside the tenant's
    s3_sources: 403)."""
    try:
        objects, ignored = s3_event_objects(json.loads(body))
    except (ValueError, UnicodeDecodeError) as exc:
        raise Problem(400, ProblemCode.INVALID_JSON, f"not an S3 event notification: {exc}") from exc
    allowed = settings.s3_sources.get(tenant, [])
    refused = [f"s3://{bucket}/{key}" for bucket, key, _, _ in objects if not location_allowed(allowed, bucket, key)]
    if refused:
        raise Problem(403, ProblemCode.S3_ACCESS_DENIED, f"{refused[0]} is outside what this API key may read "
                      f"({len(refused)} such record(s)); nothing was recorded")
    try:
        with pool.connection() as conn:
            new = queries.add_event_objects(conn, tenant, objects)
    except psycopg.OperationalError as exc:
        raise Problem(503, ProblemCode.UNAVAILABLE, f"nothing was recorded: Postgres is unavailable ({exc}); "
                      "deliver the notification again") from exc
    log.info("s3 events received", extra={"tenant": tenant, "objects": len(objects), "new": new})
    return S3EventsAccepted(received=len(objects) + ignored, new=new, duplicates=len(objects) - new, ignored=ignored)


class EventGrouper(PeriodicTask):
    """The grouping thread of one ingest process; several processes share the work through row locks."""

    def __init__(self, settings: IngestSettings, pool: ConnectionPool, accept: AcceptObjects) -> None:
        super().__init__("s3-event-grouper", min(1.0, settings.s3_event_window_s / 2), self.group_and_announce,
                         deferred=(psycopg.OperationalError,))
        self._settings = settings
        self._pool = pool
        self._accept = accept

    def group_and_announce(self) -> list[str]:
        """1. group what is due (committed)  2. announce every group not yet announced, each under a lock so one
        process does it; a group that cannot be announced now (503) stays for the next round."""
        with self._pool.connection() as conn:
            queries.group_due_objects(conn, self._settings.s3_event_window_s, lambda: uuid.uuid4().hex,
                                      self._settings.max_files_per_batch)
        with self._pool.connection() as conn:
            groups = queries.unannounced_groups(conn)
        return [batch_id for tenant, batch_id in groups if self._announce(tenant, batch_id)]

    def _announce(self, tenant: str, batch_id: str) -> bool:
        with self._pool.connection() as conn, conn.transaction():
            if not conn.execute("SELECT pg_try_advisory_xact_lock(hashtextextended(%s, 0))",
                                (f"s3-group\x1f{batch_id}",)).fetchone()[0]:
                return False  # another process is announcing it
            rows = queries.group_objects(conn, batch_id)
            if not rows or queries.group_announced(conn, batch_id):
                return False
            refs = [S3ObjectRef(bucket=bucket, key=key, size=size) for bucket, key, _, size in rows]
            file_ids = [file_id_for(batch_id, bucket, key, version) for bucket, key, version, _ in rows]
            try:
                self._accept(refs, batch_id, file_ids, tenant)
            except Problem as exc:
                if exc.status_code >= 500:
                    log.warning("s3 event batch not announced yet", extra={"batch_id": batch_id, "error": exc.detail})
                    return False
                log.error("s3 event batch refused", extra={"batch_id": batch_id, "tenant": tenant,
                                                           "code": exc.code.value, "detail": exc.detail})
            queries.mark_group_announced(conn, batch_id)
        return True
