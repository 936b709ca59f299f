"""The asynchronous client: the same calls as ocrstream.Client, as coroutines and async iterators."""
import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import httpx

from ocrstream.client import NOT_FOUND_GRACE_SECONDS, POLL_SECONDS
from ocrstream.errors import ApiError, EndpointMissing, Unreachable, WaitTimeout
from ocrstream.protocol import (
    TERMINAL_STATUSES, Endpoints, RetryPolicy, batch_form, expand_paths, parse_sse, progress_of, raise_for_answer,
    upload_request,
)

__all__ = ["AsyncClient"]


class AsyncClient:
    """`async with AsyncClient(base_url, api_key=...) as client: ...`; see ocrstream.Client for each call."""

    def __init__(self, base_url: str | None = None, *, api_key: str, ingest_url: str | None = None,
                 status_url: str | None = None, timeout: float = 60.0, retry: RetryPolicy = RetryPolicy(),
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.endpoints = Endpoints.resolve(base_url, ingest_url, status_url)
        self.retry_policy = retry
        self._http = httpx.AsyncClient(headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout,
                                       transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    # ---- batches -------------------------------------------------------------------------------------------

    async def submit(self, paths: Iterable[str | Path], *, name: str = "", chunk_size: int | None = None,
                     languages: str | None = None, pdf_dpi: int | None = None, embeddings: bool | None = None,
                     keep_open: bool = False, idempotency_key: str | None = None) -> dict:
        form = batch_form(name=name, chunk_size=chunk_size, languages=languages, pdf_dpi=pdf_dpi,
                          embeddings=embeddings, open=keep_open or None)
        return await self._upload("/v1/batches", form, expand_paths(paths), idempotency_key)

    async def add_files(self, batch_id: str, paths: Iterable[str | Path], *,
                        idempotency_key: str | None = None) -> dict:
        return await self._upload(f"/v1/batches/{batch_id}/files", {}, expand_paths(paths), idempotency_key)

    async def seal(self, batch_id: str) -> dict:
        return await self._call("POST", self.endpoints.ingest, f"/v1/batches/{batch_id}/seal", expect=(200, 202))

    async def _upload(self, path: str, form: dict[str, str], files: list[Path], idempotency_key: str | None) -> dict:
        key = idempotency_key or uuid.uuid4().hex
        url = f"{self.endpoints.ingest}{path}"
        return raise_for_answer(await self._send(lambda: upload_request(self._http, url, form, files, key)),
                                expect=(202,))

    async def batch(self, batch_id: str) -> dict:
        return await self._get(f"/v1/batches/{batch_id}")

    async def batches(self, *, status: str | None = None, page_size: int = 100) -> AsyncIterator[dict]:
        params = {"limit": page_size} | ({"status": status} if status else {})
        async for page in self._pages("/v1/batches", params):
            for batch in page:
                yield batch

    async def cancel(self, batch_id: str) -> dict:
        return await self._call("DELETE", self.endpoints.ingest, f"/v1/batches/{batch_id}", expect=(200, 202))

    async def retry(self, batch_id: str, file_ids: list[str] | None = None) -> dict:
        body = {"file_ids": file_ids} if file_ids else {}
        return await self._call("POST", self.endpoints.ingest, f"/v1/batches/{batch_id}/retry", expect=(200, 202),
                                json=body)

    # ---- waiting -------------------------------------------------------------------------------------------

    async def stream(self, batch_id: str, *, timeout: float = 3600.0) -> AsyncIterator[dict]:
        deadline = time.monotonic() + timeout
        last: dict | None = None
        try:
            async for status in self._sse(batch_id, deadline):
                last = status
                yield status
        except EndpointMissing:
            pass
        except ApiError as exc:
            if exc.status_code != 404:
                raise
        if last is not None and last["status"] in TERMINAL_STATUSES:
            return
        async for status in self._poll(batch_id, deadline, timeout, last):
            yield status

    async def wait(self, batch_id: str, *, timeout: float = 3600.0, on_progress=None) -> dict:
        async for status in self.stream(batch_id, timeout=timeout):
            if on_progress:
                on_progress(status)
        return status

    # ---- results and search --------------------------------------------------------------------------------

    def result_pages(self, batch_id: str, *, include_words: bool = False,
                     page_size: int = 100) -> AsyncIterator[list[dict]]:
        return self._pages(f"/v1/batches/{batch_id}/results", {"limit": page_size, "include_words": include_words})

    async def results(self, batch_id: str, *, include_words: bool = False, page_size: int = 100) -> AsyncIterator[dict]:
        async for page in self.result_pages(batch_id, include_words=include_words, page_size=page_size):
            for result in page:
                yield result

    async def search(self, query: str, k: int = 10) -> list[dict]:
        return (await self._get("/v1/search", params={"q": query, "k": k}))["data"]

    # ---- plumbing ------------------------------------------------------------------------------------------

    async def _pages(self, path: str, params: dict) -> AsyncIterator[list[dict]]:
        cursor = None
        while True:
            page = await self._get(path, params=params | ({"cursor": cursor} if cursor else {}))
            yield page["data"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    async def _sse(self, batch_id: str, deadline: float) -> AsyncIterator[dict]:
        last_id: str | None = None
        while time.monotonic() < deadline:
            headers = {"Accept": "text/event-stream"} | ({"Last-Event-ID": last_id} if last_id else {})
            url = f"{self.endpoints.status}/v1/batches/{batch_id}/events"
            timeout = httpx.Timeout(10.0, read=max(1.0, min(60.0, deadline - time.monotonic())))
            response = await self._send(
                lambda: self._http.build_request("GET", url, headers=headers, timeout=timeout), stream=True)
            try:
                if response.status_code != 200:
                    await response.aread()
                    raise_for_answer(response)
                async for event in _aparse_sse(response, deadline):
                    status = progress_of(event)
                    last_id = event.id or last_id
                    if status is not None:
                        yield status
                        if status["status"] in TERMINAL_STATUSES:
                            return
            except httpx.TransportError:
                continue
            finally:
                await response.aclose()
            await asyncio.sleep(POLL_SECONDS)

    async def _poll(self, batch_id: str, deadline: float, timeout: float, last: dict | None) -> AsyncIterator[dict]:
        first_try = time.monotonic()
        while True:
            try:
                status = await self.batch(batch_id)
            except ApiError as exc:
                if exc.status_code != 404 or time.monotonic() - first_try > NOT_FOUND_GRACE_SECONDS:
                    raise
                status = None
            if status is not None and status != last:
                last = status
                yield status
                if status["status"] in TERMINAL_STATUSES:
                    return
            if time.monotonic() > deadline:
                raise WaitTimeout(batch_id, timeout, last)
            await asyncio.sleep(POLL_SECONDS)

    async def _get(self, path: str, params: dict | None = None) -> dict:
        return await self._call("GET", self.endpoints.status, path, params=params)

    async def _call(self, method: str, base: str, path: str, *, expect: tuple[int, ...] = (200,), **kwargs) -> dict:
        headers = {"Idempotency-Key": uuid.uuid4().hex} if method in ("POST", "DELETE") else {}
        build = lambda: self._http.build_request(method, base + path, headers=headers, **kwargs)  # noqa: E731
        return raise_for_answer(await self._send(build), expect=expect)

    async def _send(self, build, *, stream: bool = False) -> httpx.Response:
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._http.send(build(), stream=stream)
            except httpx.TransportError as exc:
                if not self.retry_policy.should_retry(attempt, None):
                    raise Unreachable(f"{exc.request.method} {exc.request.url}: {exc!r}") from exc
                await asyncio.sleep(self.retry_policy.delay(attempt, None))
                continue
            if not self.retry_policy.should_retry(attempt, response):
                return response
            await response.aclose()
            await asyncio.sleep(self.retry_policy.delay(attempt, response))


async def _aparse_sse(response: httpx.Response, deadline: float):
    """parse_sse over an async line stream: collect lines into events as they arrive; stop at the deadline
    (keep-alives alone never end a wait)."""
    pending: list[str] = []
    async for line in response.aiter_lines():
        if time.monotonic() >= deadline:
            return
        pending.append(line)
        if not line:
            for event in parse_sse(pending):
                yield event
            pending.clear()
