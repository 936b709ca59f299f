"""What the sync and async clients share and that needs no I/O: where each call goes, when to retry and how
long to wait, how an error answer reads, which files a path names, and how Server-Sent Events are framed."""
import email.utils
import glob
import json
import mimetypes
import random
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from ocrstream.errors import ApiError, EndpointMissing

TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})
# What a directory contributes: the types ingest accepts (it sniffs content; the suffix only picks files).
DOCUMENT_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".pdf", ".gif", ".webp", ".bmp"})
RETRY_STATUSES = frozenset({429, 502, 503, 504})
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class Endpoints:
    """Ingest (submit, cancel, retry) and status (everything read) base URLs; one URL when one gateway serves both."""

    ingest: str
    status: str

    @classmethod
    def resolve(cls, base_url: str | None, ingest_url: str | None, status_url: str | None) -> "Endpoints":
        ingest, status = ingest_url or base_url, status_url or base_url
        if not ingest or not status:
            raise ValueError("give base_url, or both ingest_url and status_url")
        return cls(ingest.rstrip("/"), status.rstrip("/"))


@dataclass(frozen=True)
class RetryPolicy:
    """Up to `attempts` tries of a call that met a connection error or 429/502/503/504; exponential backoff
    with full jitter between them, or exactly the server's Retry-After when it sends one (up to max_delay)."""

    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0

    def delay(self, attempt: int, response: httpx.Response | None) -> float:
        """Seconds to wait before try number attempt+1 (attempt counts from 1)."""
        retry_after = retry_after_seconds(response.headers.get("Retry-After")) if response is not None else None
        if retry_after is not None:
            return min(retry_after, self.max_delay)
        return random.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))

    def should_retry(self, attempt: int, response: httpx.Response | None) -> bool:
        """response None = the call failed in transport (connect, read timeout, reset)."""
        return attempt < self.attempts and (response is None or response.status_code in RETRY_STATUSES)


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date (RFC 9110 §10.2.3); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def raise_for_answer(response: httpx.Response, *, expect: Iterable[int] = (200,)) -> dict:
    """The JSON body of an expected answer, or ApiError (EndpointMissing when the server lacks the route)."""
    if response.status_code in expect:
        return response.json() if response.content else {}
    try:
        body = response.json()
    except ValueError:
        body = {"detail": response.text[:500]}
    detail = body.get("detail", body) if isinstance(body, dict) else body
    code = body.get("code") if isinstance(body, dict) else None
    method, path = response.request.method, response.request.url.path
    # FastAPI answers an unknown route with exactly {"detail": "Not Found"}; an unknown batch says which.
    if response.status_code == 405 or (response.status_code == 404 and detail == "Not Found"):
        raise EndpointMissing(method, path, response.status_code,
                              "this server does not offer this endpoint yet (upgrade the server)", code)
    raise ApiError(method, path, response.status_code, detail, code)


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files named by paths: a file as is, a directory's documents (recursively, sorted), a glob's matches.
    FileNotFoundError names any path that matches nothing."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if _GLOB_CHARS & set(str(raw)):
            matches = sorted(Path(m) for m in glob.glob(str(raw), recursive=True) if Path(m).is_file())
        elif path.is_dir():
            matches = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in DOCUMENT_SUFFIXES
                             and not any(part.startswith(".") for part in p.relative_to(path).parts))
        elif path.is_file():
            matches = [path]
        else:
            matches = []
        if not matches:
            raise FileNotFoundError(f"{raw}: no such file, or no documents in it")
        files.extend(matches)
    return list(dict.fromkeys(files))  # a file named twice is sent once


@dataclass
class ServerSentEvent:
    event: str = "message"
    data: str = ""
    id: str | None = None


def lines_until(lines: Iterable[str], deadline: float) -> Iterator[str]:
    """The lines until time.monotonic() reaches the deadline: keep-alive lines alone never end a wait."""
    for line in lines:
        if time.monotonic() >= deadline:
            return
        yield line


def parse_sse(lines: Iterable[str]) -> Iterator[ServerSentEvent]:
    """Events of a text/event-stream (WHATWG HTML §9.2.6): fields until a blank line; ':' lines are comments."""
    event, data, event_id = "message", [], None
    for line in lines:
        line = line.rstrip("\r\n")
        if not line:
            if data:
                yield ServerSentEvent(event, "\n".join(data), event_id)
            event, data = "message", []
            continue
        if line.startswith(":"):
            continue  # keep-alive
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            event_id = value


def progress_of(sse: ServerSentEvent) -> dict | None:
    """The batch status an event carries (the same body as GET /v1/batches/{id}), or None for other events."""
    try:
        body = json.loads(sse.data)
    except ValueError:
        return None
    return body if isinstance(body, dict) and "status" in body else None


def multipart_files(paths: list[Path]) -> list[tuple[str, tuple[str, object, str]]]:
    """The 'files' parts of POST /v1/batches, opened; the caller closes them (see close_files)."""
    return [("files", (p.name, open(p, "rb"), mimetypes.guess_type(p.name)[0] or "application/octet-stream"))
            for p in paths]


def close_files(parts: list[tuple[str, tuple[str, object, str]]]) -> None:
    for _field, (_name, handle, _type) in parts:
        handle.close()


def batch_form(**fields: str | int | bool | None) -> dict[str, str]:
    """The form fields of POST /v1/batches that are set, booleans as true/false."""
    return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in fields.items() if v not in (None, "")}


def upload_request(http: httpx.Client | httpx.AsyncClient, url: str, form: dict[str, str], paths: list[Path],
                   idempotency_key: str) -> httpx.Request:
    """A multipart POST of the files, read into memory; built anew per try (a failed try may have read the
    files partly), every try under the same Idempotency-Key."""
    parts = multipart_files(paths)
    try:
        request = http.build_request("POST", url, data=form, files=parts, headers={"Idempotency-Key": idempotency_key})
        request.read()  # the body in memory, so the handles can close now
        return request
    finally:
        close_files(parts)
