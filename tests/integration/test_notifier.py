"""The notifier (a faust-streaming agent, run as its own process) against the real broker and PostgreSQL.

A receiver in this test verifies every Standard Webhooks signature. The notifier is SIGKILLed while the
receiver holds a terminal delivery open; after a restart the same delivery id arrives again: at least once.
"""
import base64
import hashlib
import hmac
import json
import threading
import uuid
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
import pytest
from fastapi.testclient import TestClient

from demo.processes import free_port, notifier_service
from schemas.progress import BatchProgress, BatchStatus
from services.status_api.app import create_app
from services.status_api.settings import StatusSettings
from tests.integration.test_status_api import ACME, KEY_ACME, KEY_GLOBEX, publish, wait_ready, wait_until

pytestmark = pytest.mark.integration

KEY = b"test-signing-key-of-tenant-acme!"
SECRET = "whsec_" + base64.b64encode(KEY).decode()


class Receiver:
    """An HTTP server recording every POST with whether its signature verified.

    /hold/... answers only once `release` is set (a delivery stays in flight); /flaky/... answers 500 to the
    first two requests and 200 after; everything else 200.
    """

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.release = threading.Event()
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers["content-length"]))
                signed = f"{self.headers['webhook-id']}.{self.headers['webhook-timestamp']}.".encode() + body
                expected = base64.b64encode(hmac.new(KEY, signed, hashlib.sha256).digest()).decode()
                with receiver.lock:
                    receiver.requests.append({
                        "path": self.path, "id": self.headers["webhook-id"], "body": json.loads(body),
                        "verified": hmac.compare_digest(self.headers["webhook-signature"], f"v1,{expected}")})
                    earlier = sum(r["path"] == self.path for r in receiver.requests) - 1
                if self.path.startswith("/hold/"):
                    receiver.release.wait(60)
                status = 500 if self.path.startswith("/flaky/") and earlier < 2 else 200
                try:
                    self.send_response(status)
                    self.send_header("content-length", "0")
                    self.end_headers()
                except OSError:  # the notifier was killed while we held its request
                    pass

            def log_message(self, *_args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def to(self, path: str) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if r["path"] == path]


def snapshot(batch_id: str, version: int, processed: int, url: str | None, *, total: int = 10,
             status: BatchStatus = BatchStatus.PROCESSING) -> BatchProgress:
    now = datetime.now(timezone.utc)
    return BatchProgress(batch_id=batch_id, tenant="acme", name=batch_id, status=status, total_files=total,
                         total_chunks=1, succeeded=processed, failed=0, skipped=0, created_at=now - timedelta(seconds=5),
                         updated_at=now, version=version, webhook_url=url,
                         finished_at=now if status is not BatchStatus.PROCESSING else None)


def delivery_rows(settings, batch_id: str) -> list[tuple]:
    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.database_schema},public") as conn:
        return conn.execute("SELECT event_type, status, attempt_count, milestone FROM webhook_deliveries"
                            " WHERE batch_id = %s ORDER BY created_at", (batch_id,)).fetchall()


@pytest.fixture
def receiver():
    receiver = Receiver()
    yield receiver
    receiver.release.set()
    receiver.server.shutdown()


def test_signed_deliveries_survive_a_notifier_sigkill_retry_and_refuse_private_targets(
        settings, isolated_env, receiver, tmp_path, monkeypatch):
    monkeypatch.setenv("OCRSTREAM_API_KEYS", json.dumps({KEY_ACME: "acme", KEY_GLOBEX: "globex"}))
    status_settings = StatusSettings()
    env = isolated_env | {
        "OCRSTREAM_WEBHOOK_SECRETS": json.dumps({"acme": SECRET}),
        "OCRSTREAM_WEBHOOK_ALLOWLIST": json.dumps(["127.0.0.1/32"]),  # the receiver; 169.254.0.0/16 stays refused
        "OCRSTREAM_WEBHOOK_MILESTONE_PERCENT": "50",
        "OCRSTREAM_WEBHOOK_RETRY_FIRST_S": "0.2",
        "OCRSTREAM_WEBHOOK_TIMEOUT_S": "2",  # lease = 2 x 2 + 5 = 9 s: a killed attempt is due again after that
        "OCRSTREAM_DELIVERY_POLL_S": "0.2",
        "OCRSTREAM_NOTIFIER_GROUP": f"notifier-{uuid.uuid4().hex[:8]}",
    }
    held, flaky = f"/hold/{uuid.uuid4().hex}", f"/flaky/{uuid.uuid4().hex}"
    publish(status_settings,
            snapshot("b-held", 1, 3, receiver.url + held),
            snapshot("b-held", 2, 10, receiver.url + held, status=BatchStatus.COMPLETED),
            snapshot("b-metadata", 1, 10, "http://169.254.169.254/latest/meta-data/", status=BatchStatus.COMPLETED),
            snapshot("b-silent", 1, 10, None, status=BatchStatus.COMPLETED))

    notifier = notifier_service(env, tmp_path / "logs", probe_port=free_port()).start()
    try:
        notifier.wait_ready()
        wait_until(lambda: receiver.to(held), "the terminal delivery of b-held to arrive (and be held)")
        notifier.kill()  # SIGKILL mid-delivery: the receiver still holds the request
        receiver.release.set()
        notifier.start()
        notifier.wait_ready()
        # Published after the kill, so that no attempt at them is cut short and left unrecorded: the codes are exact.
        publish(status_settings,
                snapshot("b-flaky", 1, 6, receiver.url + flaky),  # passes the 50 % milestone
                snapshot("b-flaky", 2, 7, receiver.url + flaky),  # still 50 %: the same delivery, not a new one
                snapshot("b-flaky", 3, 10, receiver.url + flaky, status=BatchStatus.FAILED))
        wait_until(lambda: ("batch.completed", "delivered", 1, None) in delivery_rows(settings, "b-held"),
                   "b-held's delivery to be redelivered and recorded", timeout=90)
        wait_until(lambda: [r[1] for r in delivery_rows(settings, "b-flaky")] == ["delivered", "delivered"],
                   "b-flaky's milestone and terminal deliveries, after two 500s")
    except BaseException:
        print(notifier.log_tail(40))
        raise
    finally:
        notifier.stop()

    # At least once, and deduplicable: the held terminal event came twice (or more) with one id, all signed.
    held_requests = receiver.to(held)
    assert len(held_requests) >= 2 and len({r["id"] for r in held_requests}) == 1
    assert all(r["verified"] for r in receiver.requests)
    assert {r["body"]["type"] for r in held_requests} == {"batch.completed"}
    assert held_requests[0]["body"]["data"]["percent"] == 100.0

    # The retried ones: the 50 % milestone (owed once, though two snapshots passed it) and the terminal event,
    # each on one id. They go out independently: receivers order them by data.version, not by arrival.
    flaky_requests = receiver.to(flaky)
    by_type = {r["body"]["type"]: r for r in flaky_requests}
    assert set(by_type) == {"batch.progress", "batch.failed"} and len({r["id"] for r in flaky_requests}) == 2
    assert by_type["batch.progress"]["body"]["data"]["milestone"] == 50
    assert delivery_rows(settings, "b-metadata") == [("batch.completed", "refused", 1, None)]
    assert delivery_rows(settings, "b-silent") == []

    with TestClient(create_app(status_settings)) as client:
        wait_ready(client)
        body = client.get("/v1/batches/b-flaky/webhook-deliveries", headers=ACME).json()
        milestone, terminal = body["data"]
        assert (milestone["event_type"], terminal["event_type"]) == ("batch.progress", "batch.failed")
        codes = [a["status_code"] for d in (milestone, terminal) for a in d["attempts"]]
        assert sorted(codes) == [200, 200, 500, 500]  # the first two requests to the path failed, whichever they were
        assert terminal["status"] == "delivered" and terminal["next_attempt_at"] is None
        assert terminal["delivery_id"] in {r["id"] for r in flaky_requests}
        refused = client.get("/v1/batches/b-metadata/webhook-deliveries", headers=ACME).json()["data"][0]
        assert refused["status"] == "refused" and refused["attempts"][0]["status_code"] is None
        assert "169.254.169.254, a link-local address" in refused["last_error"]
        assert client.get("/v1/batches/b-silent/webhook-deliveries", headers=ACME).json()["data"] == []
        assert client.get("/v1/batches/b-held/webhook-deliveries",
                          headers={"Authorization": f"Bearer {KEY_GLOBEX}"}).status_code == 404
