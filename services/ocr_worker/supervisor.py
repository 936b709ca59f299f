"""OCR in a supervised child process: a crash, hang or memory blow-up kills the child, never the worker.

The worker's Kafka loop sends one file at a time (its bytes and options), then the chunk's page texts to embed,
and waits for each answer while it keeps polling its consumer (`keep_alive`), so a long file never trips
max.poll.interval.ms. The child holds the engines and the embedder (models loaded once per child); a lost child
is replaced by a fresh one.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import select
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

from common.embedding import build_embedder
from common.errors import FileFailed, OcrstreamError
from schemas.base import PageRange
from schemas.batch_events import BatchOptions
from schemas.results import FailureReason, Page, Timings
from services.ocr_worker.engine import OcrEngine, build_engine
from services.ocr_worker.pages import decode_pages, pdf_page_count
from services.ocr_worker.results import page_from_recognized

log = logging.getLogger(__name__)
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class OcrTask:
    """One file (or one page range of a PDF) to recognize."""

    data: bytes
    content_type: str
    options: BatchOptions
    pages: PageRange | None  # only these pages of a PDF
    split_above: int  # a whole PDF with more pages than this is not OCRed but split into page-range work items


@dataclass(frozen=True)
class EmbedTask:
    """The texts of a chunk's pages, embedded in one call: the model's weights are read once for all of them."""

    texts: list[str]


@dataclass(frozen=True)
class PagesRecognized:
    pages: list[Page]
    timings: Timings


@dataclass(frozen=True)
class SplitNeeded:
    total_pages: int


@dataclass(frozen=True)
class FileRefused:
    """Final for the file: the input itself is the problem (undecodable, too many pages, no such language)."""

    code: FailureReason
    reason: str


@dataclass(frozen=True)
class _Unexpected:
    traceback: str


class OcrTryFailed(OcrstreamError):
    """This try at a file was lost (child crashed, timed out, ran out of memory, or raised unexpectedly):
    the file may be tried again with a fresh child."""

    def __init__(self, code: FailureReason, reason: str) -> None:
        super().__init__(reason)
        self.code = code


@dataclass
class _Child:
    process: multiprocessing.Process
    conn: Connection
    ready: bool = False  # its "ready" (models loaded) was received
    # The parent waits for an answer in 50 ms turns (the memory check), so a turn must be cheap: with one poll
    # object and /proc/<pid>/statm kept open it costs 150 us of CPU; Connection.poll (a new selector each call)
    # and open() per turn cost 400 us, 8 ms/s per worker taken from the OCR on a 2-core machine.
    _pipe: select.poll = field(init=False, repr=False)
    _statm: int | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._pipe = select.poll()
        self._pipe.register(self.conn.fileno(), select.POLLIN)  # an answer, or the end of the pipe if it died
        try:
            self._statm = os.open(f"/proc/{self.process.pid}/statm", os.O_RDONLY)
        except OSError:  # already gone: rss_bytes() says 0, and its closed pipe ends the wait
            pass

    def answered(self, seconds: float) -> bool:
        return bool(self._pipe.poll(seconds * 1000))

    def rss_bytes(self) -> int:
        try:
            return int(os.pread(self._statm, 64, 0).split()[1]) * _PAGE_SIZE if self._statm is not None else 0
        except (OSError, IndexError, ValueError):
            return 0

    def alive(self) -> bool:
        return self.process.is_alive()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(10)
        self.conn.close()
        if self._statm is not None:
            os.close(self._statm)
            self._statm = None

    def exit_reason(self) -> str:
        self.process.join(1)
        code = self.process.exitcode
        return f"killed by {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"


@dataclass
class OcrSupervisor:
    """Runs OcrTasks in one child process under a wall-clock and a memory limit. A second child waits warm
    (models loaded), so a lost child is replaced at once: a file that hangs holds its partition for its tries'
    timeouts, not for model loading on top."""

    engine: str
    embedder: str
    default_languages: str
    max_pages_per_file: int
    file_timeout_s: float
    memory_limit_bytes: int
    start_timeout_s: float = 120.0
    _active: _Child | None = field(default=None, init=False, repr=False)
    _spare: _Child | None = field(default=None, init=False, repr=False)

    def start(self, *, spare_ready: bool = False) -> None:
        """The active child ready (models loaded) and a spare one on its way; with spare_ready, the spare's models
        loaded too before this returns (at the worker's start: loading them later would compete with the first
        files for the cores)."""
        active, self._spare = self._spare or self._spawn(), self._spawn()  # both load their models at once
        self._active = self._ready(active)
        if spare_ready:
            self._spare = self._ready(self._spare)
        log.info("ocr child started", extra={"pid": self._active.process.pid})

    def stop(self) -> None:
        for child in (self._active, self._spare):
            if child is not None:
                child.kill()
        self._active, self._spare = None, None

    def _replace_active(self) -> None:
        if self._active is not None:
            self._active.kill()
            self._active = None

    def _spawn(self) -> _Child:
        context = multiprocessing.get_context("spawn")  # never fork a process that runs librdkafka threads
        parent_end, child_end = context.Pipe()
        process = context.Process(
            target=_child_main, name="ocr-child", daemon=True,
            args=(child_end, self.engine, self.embedder, self.default_languages, self.max_pages_per_file))
        process.start()
        child_end.close()
        return _Child(process, parent_end)

    def _ready(self, child: _Child) -> _Child:
        if child.ready:
            return child
        try:
            if child.answered(self.start_timeout_s) and child.conn.recv() == "ready":
                child.ready = True
                return child
            reason = child.exit_reason() if not child.alive() else "not ready in time"
        except (EOFError, OSError):  # it died loading its models: its end of the pipe closed
            reason = child.exit_reason()
        child.kill()
        raise OcrTryFailed(FailureReason.OCR_CRASHED, f"the OCR child did not start ({reason})")

    def ask(self, task: OcrTask | EmbedTask, keep_alive: Callable[[], None]
            ) -> PagesRecognized | SplitNeeded | FileRefused | list[list[float]]:
        """The child's answer (an EmbedTask's: one vector per text); OcrTryFailed when this try was lost (the
        child is then replaced on the next call). `keep_alive` runs about twice a second while waiting; whatever
        it raises abandons the task."""
        if self._active is None or not self._active.alive():
            self._replace_active()
            self.start()
        child = self._active
        child.conn.send(task)
        deadline = time.monotonic() + self.file_timeout_s
        next_keep_alive = time.monotonic() + 0.5
        try:
            while not child.answered(0.05):  # a child that dies ends the wait too: its end of the pipe closes
                if (rss := child.rss_bytes()) > self.memory_limit_bytes:
                    self._replace_active()
                    raise OcrTryFailed(FailureReason.OCR_OUT_OF_MEMORY, f"the OCR process used {rss >> 20} MiB, "
                                       f"over the limit of {self.memory_limit_bytes >> 20} MiB")
                if time.monotonic() > deadline:
                    self._replace_active()
                    raise OcrTryFailed(FailureReason.OCR_TIMEOUT,
                                       f"OCR took longer than the limit of {self.file_timeout_s:g} s")
                if time.monotonic() >= next_keep_alive:
                    keep_alive()
                    next_keep_alive = time.monotonic() + 0.5
            answer = child.conn.recv()
        except (EOFError, OSError) as exc:  # the pipe broke: the child died
            reason = child.exit_reason()
            self._replace_active()
            raise OcrTryFailed(FailureReason.OCR_CRASHED, f"the OCR process died ({reason})") from exc
        except BaseException:
            self._replace_active()  # abandoned mid-file (shutdown, revoked partition): its answer would be stale
            raise
        if isinstance(answer, _Unexpected):
            raise OcrTryFailed(FailureReason.TRANSFORM_ERROR, answer.traceback)
        return answer


def _child_main(conn: Connection, engine_name: str, embedder_name: str, default_languages: str,
                max_pages: int) -> None:
    """The child: load the models once, then answer tasks until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker decides when its child ends
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    engines: dict[str, OcrEngine] = {}
    embedder = build_embedder(embedder_name)

    def engine_for(languages: str) -> OcrEngine:
        if languages not in engines:
            engines[languages] = build_engine(engine_name, languages)
        return engines[languages]

    engine_for(default_languages)
    conn.send("ready")
    while True:
        try:
            task: OcrTask | EmbedTask = conn.recv()
        except EOFError:
            return
        try:
            answer = embedder.embed(task.texts) if isinstance(task, EmbedTask) else \
                _recognize_file(task, engine_for, max_pages)
        except FileFailed as exc:
            answer = FileRefused(exc.code, str(exc))
        except MemoryError:
            answer = _Unexpected("MemoryError: the OCR process could not allocate memory")
        except Exception:
            answer = _Unexpected(traceback.format_exc(limit=8))
        conn.send(answer)


def _recognize_file(task: OcrTask, engine_for: Callable[[str], OcrEngine], max_pages: int
                    ) -> PagesRecognized | SplitNeeded:
    """Decode and OCR page by page (only one page image held at a time); the pages are embedded per chunk."""
    if task.pages is None and (count := pdf_page_count(task.data)) is not None and count > task.split_above:
        if count > max_pages:
            raise FileFailed(f"the PDF has {count} pages, more than the limit of {max_pages}; split it",
                             FailureReason.TOO_MANY_PAGES)
        return SplitNeeded(total_pages=count)
    engine = engine_for(task.options.languages)
    timings = Timings()
    first_page = task.pages.first_page if task.pages else 1
    images = decode_pages(task.data, task.content_type, pdf_dpi=task.options.pdf_dpi, max_pages=max_pages,
                          pdf_pages=(task.pages.first_page, task.pages.last_page) if task.pages else None)
    recognized = []
    while True:
        started = time.perf_counter()
        image = next(images, None)
        timings.decode_ms += _ms_since(started)
        if image is None:
            break
        started = time.perf_counter()
        recognized.append(engine.recognize(image))
        timings.ocr_ms += _ms_since(started)
    return PagesRecognized(pages=[page_from_recognized(first_page + i, p) for i, p in enumerate(recognized)],
                           timings=timings)


def _ms_since(t: float) -> float:
    return (time.perf_counter() - t) * 1000
