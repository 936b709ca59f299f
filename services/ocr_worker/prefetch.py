"""Objects fetched ahead of the OCR, on a few threads and within a byte budget: a chunk's files at once, and the
next chunk's while this one is OCRed. Only bytes are fetched ahead; which chunk is processed, and when, stays the
worker loop's business (a file fetched ahead and never taken is simply dropped)."""
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from schemas.chunks import StoredFile

__all__ = ["ObjectPrefetcher"]


@dataclass
class _Ahead:
    size: int
    future: Future | None = None  # None until the budget lets its fetch start


class ObjectPrefetcher:
    """`want(files)` in the order they will be needed; `take(file)` hands over that file's fetch (a Future of its
    bytes), or None if it was not fetched ahead (the caller then fetches it itself). Called from one thread."""

    def __init__(self, get: Callable[[str, str], bytes], *, threads: int, max_bytes: int) -> None:
        self._get = get
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="object-prefetch")
        self._max_bytes = max_bytes
        self._wanted: dict[tuple[str, str], _Ahead] = {}  # in the order of need

    def want(self, files: Iterable[StoredFile]) -> None:
        """Fetch exactly these files ahead, in this order; fetches of any other file are dropped."""
        wanted = {}
        for file in files:
            where = (file.bucket, file.key)
            wanted[where] = self._wanted.pop(where, None) or wanted.get(where) or _Ahead(file.size)
        for dropped in self._wanted.values():
            if dropped.future is not None:
                dropped.future.cancel()  # a fetch under way finishes and is garbage
        self._wanted = wanted
        self._start_fetches()

    def take(self, file: StoredFile) -> Future | None:
        ahead = self._wanted.pop((file.bucket, file.key), None)
        self._start_fetches()
        return None if ahead is None else ahead.future

    def close(self) -> None:
        self._wanted = {}
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _start_fetches(self) -> None:
        """Start fetches in order of need while the bytes held ahead stay within the budget. A file larger than
        the whole budget is never fetched ahead, and the ones after it wait until it is taken."""
        held = sum(a.size for a in self._wanted.values() if a.future is not None)
        for (bucket, key), ahead in self._wanted.items():
            if ahead.future is not None:
                continue
            if held + ahead.size > self._max_bytes:
                return
            ahead.future = self._pool.submit(self._get, bucket, key)
            held += ahead.size
