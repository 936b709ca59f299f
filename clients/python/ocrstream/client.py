"""The synchronous client of the ingest and status APIs."""
import time
import uuid
from collections.abc import Iterable, Iterator
from itertools import chain
from pathlib import Path

import httpx

from ocrstream.errors import ApiError, EndpointMissing, Unreachable, WaitTimeout
from ocrstream.protocol import (
    TERMINAL_STATUSES, Endpoints, RetryPolicy, batch_form, expand_paths, lines_until, parse_sse, progress_of,
    raise_for_answer, upload_request,
)

__all__ = ["Client"]

POLL_SECONDS = 0.5
NOT_FOUND_GRACE_SECONDS = 30.0  # a batch just accepted may take a moment to reach the status view


class Client:
    """`Client(base_url, api_key=...)`, or `Client(ingest_url=..., status_url=..., api_key=...)`.

    Every call retries connection errors and 429/502/503/504 per `retry` (honouring Retry-After); submit,
    cancel and retry send an Idempotency-Key, the same one on every try, so a retry never does the work twice.
    """

    def __init__(self, base_url: str | None = None, *, api_key: str, ingest_url: str | None = None,
                 status_url: str | None = None, timeout: float = 60.0, retry: RetryPolicy = RetryPolicy(),
                 transport: httpx.BaseTransport | None = None) -> None:
        self.endpoints = Endpoints.resolve(base_url, ingest_url, status_url)
        self.retry_policy = retry
        self._http = httpx.Client(headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout,
                                  transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ---- batches -------------------------------------------------------------------------------------------

    def submit(self, paths: Iterable[str | Path], *, name: str = "", chunk_size: int | None = None,
               languages: str | None = None, pdf_dpi: int | None = None, embeddings: bool | None = None,
               keep_open: bool = False, idempotency_key: str | None = None) -> dict:
        """POST /v1/batches with every file that paths name (files, directories, globs); the 202 body.
        keep_open: the batch takes more files (add_files) until seal()."""
        form = batch_form(name=name, chunk_size=chunk_size, languages=languages, pdf_dpi=pdf_dpi,
                          embeddings=embeddings, open=keep_open or None)
        return self._upload("/v1/batches", form, expand_paths(paths), idempotency_key)

    def add_files(self, batch_id: str, paths: Iterable[str | Path], *, idempotency_key: str | None = None) -> dict:
        """POST /v1/batches/{batch_id}/files: more files for a batch submitted with keep_open=True; the 202 body."""
        return self._upload(f"/v1/batches/{batch_id}/files", {}, expand_paths(paths), idempotency_key)

    def seal(self, batch_id: str) -> dict:
        """No more files: the batch completes once each has a result. Idempotent."""
        return self._call("POST", self.endpoints.ingest, f"/v1/batches/{batch_id}/seal", expect=(200, 202))

    def _upload(self, path: str, form: dict[str, str], files: list[Path], idempotency_key: str | None) -> dict:
        key = idempotency_key or uuid.uuid4().hex
        url = f"{self.endpoints.ingest}{path}"
        return raise_for_answer(self._send(lambda: upload_request(self._http, url, form, files, key)), expect=(202,))

    def batch(self, batch_id: str) -> dict:
        return self._get(f"/v1/batches/{batch_id}")

    def batches(self, *, status: str | None = None, page_size: int = 100) -> Iterator[dict]:
        """The caller's batches, newest first, following the cursor."""
        params = {"limit": page_size} | ({"status": status} if status else {})
        return chain.from_iterable(self._pages("/v1/batches", params))

    def cancel(self, batch_id: str) -> dict:
        return self._call("DELETE", self.endpoints.ingest, f"/v1/batches/{batch_id}", expect=(200, 202))

    def retry(self, batch_id: str, file_ids: list[str] | None = None) -> dict:
        """Re-run the batch's failed files (only file_ids when given)."""
        body = {"file_ids": file_ids} if file_ids else {}
        return self._call("POST", self.endpoints.ingest, f"/v1/batches/{batch_id}/retry", expect=(200, 202),
                          json=body)

    # ---- waiting -------------------------------------------------------------------------------------------

    def stream(self, batch_id: str, *, timeout: float = 3600.0) -> Iterator[dict]:
        """Every status change of the batch until a terminal one (which is yielded last). Server-Sent Events
        when the server offers them, polling otherwise. WaitTimeout after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        last: dict | None = None
        try:
            for status in self._sse(batch_id, deadline):
                last = status
                yield status
        except EndpointMissing:
            pass
        except ApiError as exc:
            if exc.status_code != 404:
                raise
        if last is not None and last["status"] in TERMINAL_STATUSES:
            return
        yield from self._poll(batch_id, deadline, timeout, last)

    def wait(self, batch_id: str, *, timeout: float = 3600.0, on_progress=None) -> dict:
        """The batch's terminal status; on_progress(status) is called on every change on the way."""
        for status in self.stream(batch_id, timeout=timeout):
            if on_progress:
                on_progress(status)
        return status

    # ---- results and search --------------------------------------------------------------------------------

    def result_pages(self, batch_id: str, *, include_words: bool = False, page_size: int = 100) -> Iterator[list[dict]]:
        """The batch's file results one page (one request) at a time."""
        return self._pages(f"/v1/batches/{batch_id}/results", {"limit": page_size, "include_words": include_words})

    def results(self, batch_id: str, *, include_words: bool = False, page_size: int = 100) -> Iterator[dict]:
        """Every file result of the batch, fetched page by page as the iteration goes."""
        return chain.from_iterable(self.result_pages(batch_id, include_words=include_words, page_size=page_size))

    def search(self, query: str, k: int = 10) -> list[dict]:
        return self._get("/v1/search", params={"q": query, "k": k})["data"]

    # ---- plumbing ------------------------------------------------------------------------------------------

    def _pages(self, path: str, params: dict) -> Iterator[list[dict]]:
        cursor = None
        while True:
            page = self._get(path, params=params | ({"cursor": cursor} if cursor else {}))
            yield page["data"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def _sse(self, batch_id: str, deadline: float) -> Iterator[dict]:
        last_id: str | None = None
        while time.monotonic() < deadline:
            headers = {"Accept": "text/event-stream"} | ({"Last-Event-ID": last_id} if last_id else {})
            url = f"{self.endpoints.status}/v1/batches/{batch_id}/events"
            timeout = httpx.Timeout(10.0, read=max(1.0, min(60.0, deadline - time.monotonic())))
            response = self._send(lambda: self._http.build_request("GET", url, headers=headers, timeout=timeout),
                                  stream=True)
            try:
                if response.status_code != 200:
                    response.read()
                    raise_for_answer(response)
                for event in parse_sse(lines_until(response.iter_lines(), deadline)):
                    status = progress_of(event)
                    last_id = event.id or last_id
                    if status is not None:
                        yield status
                        if status["status"] in TERMINAL_STATUSES:
                            return
            except httpx.TransportError:
                continue  # dropped or idle past the read timeout: reconnect, resuming after last_id
            finally:
                response.close()
            time.sleep(POLL_SECONDS)  # the server closed the stream early: reconnect, gently

    def _poll(self, batch_id: str, deadline: float, timeout: float, last: dict | None) -> Iterator[dict]:
        first_try = time.monotonic()
        while True:
            try:
                status = self.batch(batch_id)
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
            time.sleep(POLL_SECONDS)

    def _get(self, path: str, params: dict | None = None) -> dict:
        return self._call("GET", self.endpoints.status, path, params=params)

    def _call(self, method: str, base: str, path: str, *, expect: tuple[int, ...] = (200,), **kwargs) -> dict:
        headers = {"Idempotency-Key": uuid.uuid4().hex} if method in ("POST", "DELETE") else {}
        build = lambda: self._http.build_request(method, base + path, headers=headers, **kwargs)  # noqa: E731
        return raise_for_answer(self._send(build), expect=expect)

    def _send(self, build, *, stream: bool = False) -> httpx.Response:
        """One call with retries: build() makes a fresh request for each try."""
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._http.send(build(), stream=stream)
            except httpx.TransportError as exc:
                if not self.retry_policy.should_retry(attempt, None):
                    raise Unreachable(f"{exc.request.method} {exc.request.url}: {exc!r}") from exc
                time.sleep(self.retry_policy.delay(attempt, None))
                continue
            if not self.retry_policy.should_retry(attempt, response):
                return response
            response.close()
            time.sleep(self.retry_policy.delay(attempt, response))
