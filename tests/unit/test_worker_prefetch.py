"""The worker's object prefetcher: files fetched in order of need within the byte budget, handed over once,
dropped when no longer wanted; a file larger than the budget is left to the caller."""
import threading

import pytest

from schemas.chunks import StoredFile
from services.ocr_worker.prefetch import ObjectPrefetcher

pytestmark = pytest.mark.unit


def _file(name: str, size: int) -> StoredFile:
    return StoredFile(file_id=name, bucket="b", key=name, sha256="0" * 64, size=size, content_type="image/png",
                      original_name=name)


class _Store:
    """Fetches that finish only when released, so a test sees which ones were started."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.release = threading.Event()

    def get(self, bucket: str, key: str) -> bytes:
        self.started.append(key)
        assert self.release.wait(10)
        return f"{bucket}/{key}".encode()


@pytest.fixture
def store():
    store = _Store()
    yield store
    store.release.set()


def test_fetches_start_in_order_of_need_within_the_budget(store):
    ahead = ObjectPrefetcher(store.get, threads=8, max_bytes=250)
    a, b, c, d = (_file(n, 100) for n in "abcd")
    ahead.want([a, b, c, d])
    assert set(_wait_started(store, 2)) == {"a", "b"}, "c and d wait: 300 bytes would exceed 250"
    assert ahead.take(_file("z", 1)) is None, "a file never wanted was not fetched ahead"
    future = ahead.take(a)
    assert set(_wait_started(store, 3)) == {"a", "b", "c"}, "taking a frees its bytes for c"
    store.release.set()
    assert future.result(5) == b"b/a"
    assert ahead.take(a) is None, "handed over once"
    ahead.close()


def test_a_new_want_keeps_what_is_still_wanted_and_drops_the_rest(store):
    ahead = ObjectPrefetcher(store.get, threads=2, max_bytes=1000)
    a, b, c = (_file(n, 10) for n in "abc")
    ahead.want([a, b])
    kept = ahead._wanted[("b", "b")].future
    ahead.want([b, c])
    assert ahead.take(a) is None
    assert ahead.take(b) is kept
    store.release.set()
    assert ahead.take(c).result(5) == b"b/c"
    ahead.close()


def test_a_file_larger_than_the_budget_is_fetched_by_the_caller(store):
    ahead = ObjectPrefetcher(store.get, threads=2, max_bytes=100)
    big, small = _file("big", 500), _file("small", 10)
    ahead.want([big, small])
    assert ahead.take(big) is None
    store.release.set()
    assert ahead.take(small).result(5) == b"b/small", "the file behind the large one starts once it is taken"
    ahead.close()


def _wait_started(store: _Store, n: int, deadline_s: float = 5.0) -> list[str]:
    import time

    deadline = time.monotonic() + deadline_s
    while len(store.started) < n:
        assert time.monotonic() < deadline, f"only {store.started} started"
        time.sleep(0.01)  # a condition poll with a deadline, not synchronization by sleeping
    return list(store.started)
