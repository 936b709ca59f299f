"""notifier ★: a faust-streaming agent over `batch.progress` owes webhooks; a sender task delivers them.

At-least-once, in two halves that each survive a SIGKILL:
  1. The agent (one stream over every partition, keyed by batch) decodes each snapshot, works out the
     notifications it owes (pure: deliveries.owed_deliveries) and inserts them into the delivery log. Only then
     does the loop take the next record, and faust commits an offset only once every record before it was
     processed (acked): a crash before the insert replays the record, and the insert of a known id is a no-op.
  2. The sender claims due deliveries with a lease, checks the target (SSRF guard), POSTs the signed body and
     records the attempt with its outcome: delivered, retried later with backoff, or final (failed, refused).
     A crash mid-POST leaves the delivery pending; it is due again when the lease ends and goes out again with
     the same webhook-id, so the receiver can drop the duplicate.
faust's exactly-once mode is not used (EOS v1, producer per partition; see ARCHITECTURE.md): nothing here needs it.
"""
import asyncio
import ipaddress
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import faust
import httpx
import psycopg
from prometheus_client import Counter
from psycopg_pool import ConnectionPool, PoolTimeout

from common.observability import MESSAGES_CONSUMED
from schemas.api import WebhookDeliveryStatus
from schemas.base import utc_now
from schemas.topics import Topic, UndecodableMessage, decode
from services.notifier import delivery_log
from services.notifier.deliveries import next_attempt_at, owed_deliveries, signature_headers
from services.notifier.settings import NotifierSettings
from services.notifier.ssrf import TargetRefused, check_url

__all__ = ["Notifier", "build_app"]

log = logging.getLogger(__name__)
T = TypeVar("T")

ATTEMPTS = Counter("ocrstream_webhook_attempts_total", "Webhook delivery attempts by outcome", ["outcome"])
OWED = Counter("ocrstream_webhook_deliveries_owed_total", "Deliveries added to the log")

_DB_ERRORS = (psycopg.OperationalError, PoolTimeout)
_DB_RETRY_S = 1.0


def build_app(settings: NotifierSettings, notifier: "Notifier", datadir: str) -> faust.App:
    app = faust.App(
        settings.notifier_group,
        broker=[f"kafka://{server}" for server in settings.kafka_bootstrap_servers.split(",")],
        autodiscover=False,
        web_enabled=False,  # /healthz, /readyz, /metrics come from common.runtime like the other workers
        topic_disable_leader=True,  # no on_leader tasks: no leader-election topic
        topic_allow_declare=False,  # topics are set up by ensure_topics, never by a service on the side
        datadir=datadir,  # faust wants one; with no tables nothing is kept there
        consumer_auto_offset_reset="earliest",  # a new group reads the whole compacted topic; the log dedupes
        # broker_commit_interval stays faust's 2.8 s: its livelock check first asks the consumer thread for its
        # assignment 2.5 intervals after start, and at 1 s a slow start raised ConsumerNotStarted and stopped the
        # worker (faust-streaming#446). A replay after a crash re-inserts known ids: a no-op.
        broker_session_timeout=10.0,  # faust's 60 s would keep a killed member's partitions that long
        broker_heartbeat_interval=3.0,
    )
    progress_topic = app.topic(settings.topic_batch_progress, key_serializer="raw", value_serializer="raw")

    @app.agent(progress_topic, name="owe-webhooks")
    async def owe_webhooks(stream: faust.StreamT) -> None:
        async for value in stream:
            await notifier.owe(value)

    @app.task
    async def send_webhooks() -> None:
        await notifier.send_forever()

    # Readiness follows the rebalance signals, on the loop. Asking app.consumer from the probe thread raced the
    # worker's start: faust builds it lazily, so a probe at that instant could build a second consumer nobody
    # starts, and faust's table manager then crashed the worker on it (ConsumerNotStarted; 2 starts in 15).
    @app.on_partitions_assigned.connect
    async def track_assigned(_app: faust.App, assigned: set, **_: Any) -> None:
        notifier.assigned = frozenset(assigned)

    @app.on_partitions_revoked.connect
    async def track_revoked(_app: faust.App, revoked: set, **_: Any) -> None:
        notifier.assigned = notifier.assigned - revoked

    return app


class Notifier:
    def __init__(self, settings: NotifierSettings, pool: ConnectionPool) -> None:
        self._settings = settings
        self._pool = pool
        self._allowlist = [ipaddress.ip_network(n, strict=False) for n in settings.webhook_allowlist]
        self._wake: asyncio.Event | None = None
        self.assigned: frozenset = frozenset()  # the progress topic's partitions this member holds

    @property
    def ready(self) -> bool:
        """A member of the group with partitions of the progress topic."""
        return bool(self.assigned)

    # --- 1. the agent's half: snapshot → owed deliveries in the log --------------------------------------------

    async def owe(self, value: bytes | None) -> None:
        MESSAGES_CONSUMED.labels(self._settings.topic_batch_progress).inc()
        try:
            progress = decode(Topic.BATCH_PROGRESS, value)
        except UndecodableMessage as exc:  # the status view skips it too: there is no batch to notify
            log.warning("undecodable progress record skipped", extra={"error": str(exc)})
            return
        owed = owed_deliveries(progress, self._settings.webhook_milestone_percent)
        if not owed:
            return
        new = await self._with_db(delivery_log.record_owed, owed)
        OWED.inc(new)
        if new:
            log.info("webhooks owed", extra={"batch_id": progress.batch_id, "version": progress.version,
                                             "events": [d.event_type for d in owed]})
            self._wake_sender()

    # --- 2. the sender's half: due deliveries → attempts ------------------------------------------------------

    async def send_forever(self) -> None:
        """Claim due deliveries while there is room; each attempt runs on its own, so a slow receiver holds one
        slot, never the others. Sleeps until woken (a new delivery, a freed slot) or the next poll."""
        self._wake = asyncio.Event()
        limit = self._settings.delivery_concurrency
        in_flight: set[asyncio.Task] = set()
        async with httpx.AsyncClient(timeout=self._settings.webhook_timeout_s, follow_redirects=False) as client:
            while True:
                self._wake.clear()
                room = limit - len(in_flight)
                claimed = await self._with_db(delivery_log.claim_due, limit=room,
                                              lease_s=self._settings.delivery_lease_s) if room else []
                for row in claimed:
                    task = asyncio.create_task(self._attempt(client, row), name=f"webhook {row['delivery_id']}")
                    in_flight.add(task)
                    task.add_done_callback(lambda done: (in_flight.discard(done), self._attempt_ended(done)))
                if len(claimed) < room or not room:  # nothing more due now, or no room: wait
                    try:
                        await asyncio.wait_for(self._wake.wait(), self._settings.delivery_poll_s)
                    except TimeoutError:
                        pass

    def _attempt_ended(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:  # the lease brings the delivery back later
            log.error("webhook attempt crashed", exc_info=task.exception(), extra={"task": task.get_name()})
        self._wake_sender()

    async def _attempt(self, client: httpx.AsyncClient, row: dict[str, Any]) -> None:
        attempted_at, started = utc_now(), time.perf_counter()
        status_code, error, outcome = None, None, None
        secret = self._settings.webhook_secrets.get(row["tenant"])
        try:
            if secret is None:
                outcome, error = WebhookDeliveryStatus.FAILED, f"no signing secret for tenant {row['tenant']!r}"
            else:
                await check_url(row["url"], self._allowlist)
                headers = signature_headers(secret, row["delivery_id"], int(time.time()), row["body"])
                response = await client.post(row["url"], content=row["body"].encode(), headers=headers)
                status_code = response.status_code
                if 200 <= status_code < 300:
                    outcome = WebhookDeliveryStatus.DELIVERED
                else:
                    error = f"HTTP {status_code}"
        except TargetRefused as exc:
            outcome, error = WebhookDeliveryStatus.REFUSED, str(exc)
        except (httpx.HTTPError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        retry_at = None
        if outcome is None:
            retry_at = next_attempt_at(row["created_at"], row["attempt_count"] + 1, utc_now(),
                                       first_s=self._settings.webhook_retry_first_s,
                                       max_interval_s=self._settings.webhook_retry_max_interval_s,
                                       window_s=self._settings.webhook_retry_window_s)
            outcome = WebhookDeliveryStatus.PENDING if retry_at else WebhookDeliveryStatus.FAILED
        duration_ms = (time.perf_counter() - started) * 1000
        await self._with_db(delivery_log.record_attempt, row["delivery_id"], attempted_at=attempted_at,
                            status_code=status_code, error=error, duration_ms=duration_ms, outcome=outcome,
                            next_attempt_at=retry_at)
        ATTEMPTS.labels(outcome.value).inc()
        log.log(logging.INFO if outcome is WebhookDeliveryStatus.DELIVERED else logging.WARNING, "webhook attempt",
                extra={"batch_id": row["batch_id"], "delivery_id": row["delivery_id"], "outcome": outcome.value,
                       "attempt": row["attempt_count"] + 1, "status_code": status_code, "error": error,
                       "retry_at": retry_at, "ms": round(duration_ms, 1)})

    def _wake_sender(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _with_db(self, query: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one delivery-log function on a pooled connection (in a thread); ride out a database outage."""
        def run() -> T:
            with self._pool.connection() as conn:
                return query(conn, *args, **kwargs)

        while True:
            try:
                return await asyncio.to_thread(run)
            except _DB_ERRORS as exc:
                log.warning("delivery log unavailable, will retry", extra={"error": str(exc)})
                await asyncio.sleep(_DB_RETRY_S)
