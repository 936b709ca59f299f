"""The client SDK's pure parts, and its retry/fallback behaviour against an in-process HTTP handler."""
import asyncio
import json
from email.utils import format_datetime
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from ocrstream import ApiError, AsyncClient, Client, EndpointMissing, RetryPolicy, Unreachable
from ocrstream.protocol import Endpoints, expand_paths, parse_sse, progress_of, raise_for_answer, retry_after_seconds

pytestmark = pytest.mark.unit

NO_WAIT = RetryPolicy(attempts=3, base_delay=0.0, max_delay=0.0)


def test_retry_after_reads_seconds_and_http_dates():
    assert retry_after_seconds("7") == 7.0
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert retry_after_seconds(format_datetime(now + timedelta(seconds=30), usegmt=True),
                               now=now.timestamp()) == pytest.approx(30)
    assert retry_after_seconds("not a date") is None and retry_after_seconds(None) is None


def test_retry_policy_honours_retry_after_and_caps_backoff():
    policy = RetryPolicy(attempts=4, base_delay=1.0, max_delay=8.0)
    answer = httpx.Response(503, headers={"Retry-After": "3"})
    assert policy.delay(1, answer) == 3.0
    assert policy.delay(1, httpx.Response(503, headers={"Retry-After": "600"})) == 8.0
    assert all(0 <= policy.delay(10, None) <= 8.0 for _ in range(50))
    assert policy.should_retry(1, answer) and policy.should_retry(1, None)
    assert not policy.should_retry(4, answer), "attempts are bounded"
    assert not policy.should_retry(1, httpx.Response(422)), "a client error is final"


def test_endpoints_from_one_base_url_or_two():
    assert Endpoints.resolve("http://h/", None, None) == Endpoints("http://h", "http://h")
    assert Endpoints.resolve(None, "http://i", "http://s") == Endpoints("http://i", "http://s")
    with pytest.raises(ValueError):
        Endpoints.resolve(None, "http://i", None)


def test_expand_paths_takes_files_directories_and_globs(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ("d/a.png", "d/sub/b.PDF", "d/notes.txt", "d/.hidden.png", "c.jpg"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in expand_paths([tmp_path / "d"])] == ["a.png", "b.PDF"]
    assert [p.name for p in expand_paths([f"{tmp_path}/**/*.png", tmp_path / "c.jpg", tmp_path / "c.jpg"])] == \
        ["a.png", "c.jpg"]
    with pytest.raises(FileNotFoundError, match="nothing.png"):
        expand_paths([tmp_path / "nothing.png"])


def test_sse_frames_events_and_skips_keep_alives():
    stream = [": keep-alive", "id: 3", "event: progress", 'data: {"status": "processing",', 'data: "version": 3}', "",
              "data: not json", "", ": ping", ""]
    events = list(parse_sse(stream))
    assert [(e.id, e.event) for e in events] == [("3", "progress"), ("3", "message")]
    assert progress_of(events[0]) == {"status": "processing", "version": 3}
    assert progress_of(events[1]) is None


def test_error_answers_name_the_missing_endpoint_or_the_api_error():
    request = httpx.Request("DELETE", "http://h/v1/batches/b1")
    with pytest.raises(EndpointMissing):
        raise_for_answer(httpx.Response(405, json={"detail": "Method Not Allowed"}, request=request))
    with pytest.raises(EndpointMissing):
        raise_for_answer(httpx.Response(404, json={"detail": "Not Found"}, request=request))
    with pytest.raises(ApiError) as caught:
        raise_for_answer(httpx.Response(404, json={"detail": "batch b1 not found", "code": "batch_not_found"},
                                        request=request))
    assert not isinstance(caught.value, EndpointMissing)
    assert caught.value.code == "batch_not_found" and "batch b1 not found" in str(caught.value)


class FlakyIngest:
    """Answers 503 + Retry-After twice, then 202; records each try's Idempotency-Key and body size."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.sizes: list[int] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.keys.append(request.headers["Idempotency-Key"])
        self.sizes.append(len(request.content))
        if len(self.keys) < 3:
            return httpx.Response(503, headers={"Retry-After": "0"}, json={"detail": "Kafka unavailable"})
        return httpx.Response(202, json={"batch_id": "b1", "total_files": 1})


def test_submit_retries_with_one_idempotency_key_and_the_whole_body(tmp_path):
    (tmp_path / "a.png").write_bytes(b"\x89PNG" + b"x" * 1000)
    ingest = FlakyIngest()
    with Client("http://h", api_key="k", retry=NO_WAIT, transport=httpx.MockTransport(ingest)) as client:
        assert client.submit([tmp_path / "a.png"])["batch_id"] == "b1"
    assert len(ingest.keys) == 3 and len(set(ingest.keys)) == 1
    assert len(set(ingest.sizes)) == 1 and ingest.sizes[0] > 1000, "every try sends the whole file"


def test_gives_up_after_the_policy_s_attempts():
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with Client("http://h", api_key="k", retry=NO_WAIT, transport=httpx.MockTransport(refuse)) as client:
        with pytest.raises(Unreachable):
            client.batch("b1")


def _status_server(sse: bool):
    """GET /v1/batches/b1 walks pending → processing → completed; /events streams the same when sse."""
    states = [{"status": s, "version": v, "processed_files": v} for v, s in
              enumerate(["pending", "processing", "completed"])]
    polls = iter(states)

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            if not sse:
                return httpx.Response(404, json={"detail": "Not Found"})
            body = "".join(f"id: {s['version']}\nevent: progress\ndata: {json.dumps(s)}\n\n: keep-alive\n\n"
                           for s in states)
            return httpx.Response(200, text=body, headers={"Content-Type": "text/event-stream"})
        return httpx.Response(200, json=next(polls))

    return handle


@pytest.mark.parametrize("sse", [True, False], ids=["sse", "polling-fallback"])
def test_stream_uses_sse_or_falls_back_to_polling(sse):
    with Client("http://h", api_key="k", transport=httpx.MockTransport(_status_server(sse))) as client:
        seen = [s["status"] for s in client.stream("b1", timeout=30)]
    assert seen == ["pending", "processing", "completed"]


@pytest.mark.parametrize("sse", [True, False], ids=["sse", "polling-fallback"])
def test_async_wait_uses_sse_or_falls_back_to_polling(sse):
    async def wait() -> tuple[dict, list[str]]:
        seen: list[str] = []
        async with AsyncClient("http://h", api_key="k",
                               transport=httpx.MockTransport(_status_server(sse))) as client:
            final = await client.wait("b1", timeout=30, on_progress=lambda s: seen.append(s["status"]))
        return final, seen

    final, seen = asyncio.run(wait())
    assert final["status"] == "completed" and seen == ["pending", "processing", "completed"]


def test_progress_figures_prefer_the_server_eta_and_end_at_zero():
    from ocrstream.cli import progress_figures

    running = {"status": "processing", "processed_files": 10, "total_files": 40}
    assert progress_figures(running, 5.0) == (2.0, 15.0)
    assert progress_figures(running | {"eta_seconds": 7.0}, 5.0) == (2.0, 7.0)
    assert progress_figures(running | {"processed_files": 0}, 5.0) == (None, None)
    assert progress_figures(running | {"status": "completed", "processed_files": 40}, 10.0) == (4.0, 0.0)


def test_a_stream_of_keep_alives_alone_ends_at_the_deadline():
    import itertools
    import time

    from ocrstream.protocol import lines_until

    deadline = time.monotonic() + 0.2
    keep_alives = lines_until(itertools.repeat(": ping"), deadline)  # a server that only ever pings
    assert list(parse_sse(keep_alives)) == [] and time.monotonic() >= deadline


def test_an_open_batch_is_submitted_grown_and_sealed(tmp_path):
    (tmp_path / "a.png").write_bytes(b"\x89PNG" + b"a" * 100)
    (tmp_path / "b.png").write_bytes(b"\x89PNG" + b"b" * 100)
    seen: list[tuple[str, str, bytes]] = []

    def ingest(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.path, request.content))
        if request.url.path.endswith("/seal"):
            return httpx.Response(200 if len(seen) > 3 else 202, json={"batch_id": "b1", "sealed": True})
        return httpx.Response(202, json={"batch_id": "b1", "file_ids": ["f"]})

    with Client("http://h", api_key="k", retry=NO_WAIT, transport=httpx.MockTransport(ingest)) as client:
        assert client.submit([tmp_path / "a.png"], keep_open=True)["batch_id"] == "b1"
        assert client.add_files("b1", [tmp_path / "b.png"])["file_ids"] == ["f"]
        assert client.seal("b1")["sealed"] is True
        assert client.seal("b1")["sealed"] is True  # already sealed: 200

    assert [(m, p) for m, p, _ in seen] == [("POST", "/v1/batches"), ("POST", "/v1/batches/b1/files"),
                                            ("POST", "/v1/batches/b1/seal"), ("POST", "/v1/batches/b1/seal")]
    assert b'name="open"\r\n\r\ntrue' in seen[0][2] and b"b.png" in seen[1][2] and b'name="open"' not in seen[1][2]


def test_the_async_client_grows_and_seals_an_open_batch_too(tmp_path):
    (tmp_path / "a.png").write_bytes(b"\x89PNG" + b"a" * 100)
    paths: list[str] = []

    def ingest(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        return httpx.Response(202, json={"batch_id": "b1"})

    async def run() -> None:
        async with AsyncClient("http://h", api_key="k", retry=NO_WAIT, transport=httpx.MockTransport(ingest)) as c:
            await c.submit([tmp_path / "a.png"], keep_open=True)
            await c.add_files("b1", [tmp_path / "a.png"])
            await c.seal("b1")

    asyncio.run(run())
    assert paths == ["/v1/batches", "/v1/batches/b1/files", "/v1/batches/b1/seal"]
