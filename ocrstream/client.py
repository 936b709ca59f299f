"""A small synchronous client of the ingest and status APIs."""
import mimetypes
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import httpx

TERMINAL = {"completed", "failed", "cancelled"}


class OcrstreamError(Exception):
    """An API answered with an error; the message holds its status and detail."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


class OcrstreamClient:
    def __init__(self, ingest_url: str, status_url: str, api_key: str, *, timeout: float = 60.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"}
        self._ingest = httpx.Client(base_url=ingest_url, headers=headers, timeout=timeout)
        self._status = httpx.Client(base_url=status_url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._ingest.close()
        self._status.close()

    def __enter__(self) -> "OcrstreamClient":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def submit(self, paths: Iterable[Path], *, name: str = "", chunk_size: int | None = None) -> dict:
        """POST /v1/batches with every file; returns the 202 body (batch_id, status_url, …)."""
        handles = [open(p, "rb") for p in paths]
        try:
            files = [("files", (Path(h.name).name, h, mimetypes.guess_type(h.name)[0] or "application/octet-stream"))
                     for h in handles]
            data = {"name": name} | ({"chunk_size": str(chunk_size)} if chunk_size else {})
            return _json(self._ingest.post("/v1/batches", files=files, data=data), expect=202)
        finally:
            for h in handles:
                h.close()

    def batch(self, batch_id: str) -> dict:
        return _json(self._status.get(f"/v1/batches/{batch_id}"))

    def results(self, batch_id: str, *, include_words: bool = False, page_size: int = 100) -> list[dict]:
        """Every file's result, following the cursor to the end."""
        files, cursor = [], None
        while True:
            params = {"limit": page_size, "include_words": include_words} | ({"cursor": cursor} if cursor else {})
            page = _json(self._status.get(f"/v1/batches/{batch_id}/results", params=params))
            files.extend(page["data"])
            cursor = page["next_cursor"]
            if not cursor:
                return files

    def search(self, query: str, k: int = 5) -> list[dict]:
        return _json(self._status.get("/v1/search", params={"q": query, "k": k}))["data"]

    def wait(self, batch_id: str, *, timeout: float = 600.0, poll_s: float = 0.5,
             on_progress: Callable[[dict], None] | None = None) -> dict:
        """Poll until the batch is completed, failed or cancelled; returns the last status."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                status = self.batch(batch_id)
            except OcrstreamError as exc:
                if exc.status_code not in (404, 503):  # until the first snapshot reaches a loaded status view
                    raise
                status = None
            if status and on_progress:
                on_progress(status)
            if status and status["status"] in TERMINAL:
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"batch {batch_id} not finished in {timeout:.0f} s: {status}")
            time.sleep(poll_s)  # poll interval of the deadline loop


def _json(response: httpx.Response, *, expect: int = 200) -> dict:
    if response.status_code != expect:
        raise OcrstreamError(f"{response.request.method} {response.request.url.path}: {response.status_code} "
                             f"{response.text[:500]}", response.status_code)
    return response.json()
