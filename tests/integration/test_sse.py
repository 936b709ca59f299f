"""Live progress from a status API process: SSE in version order with Last-Event-ID resume, keep-alives, long poll."""
import json
import threading
from collections.abc import Iterator

import httpx
import pytest

from demo.processes import ServiceProcess, free_port
from schemas.progress import BatchStatus
from services.status_api.settings import StatusSettings
from tests.integration.test_status_api import ACME, KEY_ACME, KEY_GLOBEX, progress, publish

pytestmark = pytest.mark.integration

GLOBEX = {"Authorization": f"Bearer {KEY_GLOBEX}"}


@pytest.fixture
def status_api(settings, isolated_env, tmp_path) -> Iterator[str]:
    port = free_port()
    service = ServiceProcess("status_api", "services.status_api", isolated_env | {
        "OCRSTREAM_HTTP_PORT": str(port), "OCRSTREAM_SSE_PING_SECONDS": "0.5",
        "OCRSTREAM_API_KEYS": json.dumps({KEY_ACME: "acme", KEY_GLOBEX: "globex"})},
        f"http://127.0.0.1:{port}", tmp_path / "logs").start()
    try:
        service.wait_ready()
        yield service.probe_url
    except BaseException:
        print(service.log_tail(30))
        raise
    finally:
        service.stop()


def sse_events(lines: Iterator[str]) -> Iterator[dict]:
    """Parse a text/event-stream: each event as {"id", "event", "data"}; comments (keep-alives) as {"comment"}."""
    event: dict = {}
    for line in lines:
        if line.startswith(":"):
            yield {"comment": line[1:].strip()}
        elif not line:
            if event:
                yield event
            event = {}
        else:
            field, _, value = line.partition(":")
            event[field] = value.removeprefix(" ")


def test_sse_sends_every_version_in_order_resumes_after_last_event_id_and_ends_at_the_terminal_one(status_api):
    settings = StatusSettings()
    publish(settings, progress("b1", 1, succeeded=1))
    with httpx.Client(base_url=status_api, timeout=30) as client:
        assert client.get("/v1/batches/b1/events", headers=GLOBEX).status_code == 404
        assert client.get("/v1/batches/b1/events", headers=ACME | {"Last-Event-ID": "x"}).status_code == 422

        seen: list[dict] = []
        with client.stream("GET", "/v1/batches/b1/events", headers=ACME) as response:
            assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
            events = sse_events(response.iter_lines())
            for event in events:
                if "comment" in event:
                    continue
                seen.append(event)
                if event["id"] == "1":
                    publish(settings, progress("b1", 2, succeeded=2), progress("b1", 3, succeeded=3))
                if event["id"] == "3":
                    break  # the client goes away mid-batch
        assert [(e["event"], e["id"]) for e in seen] == [("progress", "1"), ("progress", "2"), ("progress", "3")]
        body = json.loads(seen[-1]["data"])
        assert body == client.get("/v1/batches/b1", headers=ACME).json() | {"eta_seconds": body["eta_seconds"]}

        # Reconnect as a browser does, naming the last version it got; 4 was published while it was away.
        publish(settings, progress("b1", 4, succeeded=4))
        resumed: list[str] = []
        pings = 0
        with client.stream("GET", "/v1/batches/b1/events", headers=ACME | {"Last-Event-ID": "3"}) as response:
            for event in sse_events(response.iter_lines()):
                if "comment" in event:
                    pings += 1
                    if pings == 2:  # idle long enough for keep-alives: finish the batch
                        publish(settings, progress("b1", 6, succeeded=10, status=BatchStatus.COMPLETED),
                                progress("b1", 5, succeeded=5))  # a stale replay is never sent
                    continue
                resumed.append(event["id"])
        # The stream ended by itself after the terminal version.
        assert resumed == ["4", "6"] and pings >= 2

        with client.stream("GET", "/v1/batches/b1/events", headers=ACME | {"Last-Event-ID": "6"}) as response:
            assert [e for e in sse_events(response.iter_lines()) if "comment" not in e] == []


def test_a_long_poll_answers_when_the_version_moves_or_when_the_wait_is_over(status_api):
    settings = StatusSettings()
    publish(settings, progress("b2", 1, succeeded=1))
    with httpx.Client(base_url=status_api, headers=ACME, timeout=60) as client:
        answer: list[dict] = []
        waiter = threading.Thread(target=lambda: answer.append(
            client.get("/v1/batches/b2", params={"wait": 30, "after_version": 1}).json()))
        waiter.start()
        publish(settings, progress("b2", 2, succeeded=4))
        waiter.join(30)
        assert answer and answer[0]["version"] == 2 and answer[0]["succeeded"] == 4

        unchanged = client.get("/v1/batches/b2", params={"wait": 0.3, "after_version": 2})
        assert unchanged.status_code == 200 and unchanged.json()["version"] == 2
        assert client.get("/v1/batches/b2", params={"wait": 0.3, "after_version": 0}).json()["version"] == 2
        assert client.get("/v1/batches/b2", params={"wait": 61}).status_code == 422
        assert client.get("/v1/batches/b2", params={"wait": 1}, headers=GLOBEX).status_code == 404
