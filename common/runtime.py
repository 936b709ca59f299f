"""Process plumbing for the Kafka workers: a stop event set by SIGTERM/SIGINT, the probe endpoints, the run,
cyclic garbage collection paused around large polls, and a periodic task's thread."""
import faulthandler
import gc
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from common.errors import FatalError

log = logging.getLogger(__name__)


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside (a block, or a function it decorates): for decoding and writing a poll
    of large messages. Their models hold no cycles (reference counting frees them), but allocating a million
    objects at once triggers full collections that walk every one of them again: 1,000 results of 300 words
    decode in 0.7 s instead of 3 s."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class PeriodicTask:
    """`tick()` every interval_s on a thread of its own, from start() to stop(). A tick that raises is logged and
    the next one tries again; `deferred` errors (a dependency away) as a warning, others with their traceback."""

    def __init__(self, name: str, interval_s: float, tick: Callable[[], object], *,
                 deferred: tuple[type[Exception], ...] = ()) -> None:
        self.name = name
        self._interval_s = interval_s
        self._tick = tick
        self._deferred = deferred
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self._tick()
            except self._deferred as exc:
                log.warning("periodic task deferred: a dependency is unavailable", extra={"task": self.name,
                                                                                         "error": str(exc)})
            except Exception:
                log.exception("periodic task failed; tried again next round", extra={"task": self.name})


def stop_on_signals() -> threading.Event:
    """An event set on SIGTERM or SIGINT, so the loop finishes its current transaction and exits cleanly. SIGUSR1
    writes every thread's stack to stderr: what a process that looks stuck is doing."""
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    stop = threading.Event()

    def request_stop(signum: int, _frame) -> None:
        log.info("stop requested", extra={"signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return stop


class Readiness:
    """What /readyz answers: not ready until started, nor while the loop knows a dependency it needs is away.
    The loop names what it waits for where it learns so, and clears it where it sees it work again."""

    def __init__(self) -> None:
        self.waiting: set[str] = {"start"}

    def wait_for(self, dependency: str, **fields) -> None:
        if dependency not in self.waiting:
            log.warning("not ready", extra={"waiting_for": dependency, **fields})
        self.waiting.add(dependency)

    def available(self, dependency: str) -> None:
        if dependency in self.waiting:
            self.waiting.discard(dependency)
            log.info("ready" if not self.waiting else "still not ready",
                     extra={"available": dependency, "waiting_for": sorted(self.waiting)})

    def __bool__(self) -> bool:
        return not self.waiting


def serve_probes(host: str, port: int, is_ready: Callable[[], bool]) -> ThreadingHTTPServer:
    """/healthz (process alive), /readyz (is_ready()), /metrics (Prometheus) on a daemon thread."""

    class ProbeHandler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path == "/healthz":
                self._answer(200, b'{"status":"ok"}', "application/json")
            elif self.path == "/readyz":
                ready = is_ready()
                self._answer(200 if ready else 503, b'{"ready":%s}' % (b"true" if ready else b"false"), "application/json")
            elif self.path == "/metrics":
                self._answer(200, generate_latest(), CONTENT_TYPE_LATEST)
            else:
                self._answer(404, b'{"detail":"not found"}', "application/json")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args) -> None:  # probes are not events worth a log line
            pass

    server = ThreadingHTTPServer((host, port), ProbeHandler)
    threading.Thread(target=server.serve_forever, name="probes", daemon=True).start()
    return server


def run_until_stopped(service: str, loop: Callable[[threading.Event], None], stop: threading.Event, *,
                      probe_host: str, probe_port: int, is_ready: Callable[[], bool]) -> int:
    """Serve the probes and run a Kafka loop until `stop` is set; the process exit code (1 on a fatal error)."""
    probes = serve_probes(probe_host, probe_port, is_ready)
    log.info(f"{service} started")
    try:
        loop(stop)
    except FatalError:
        log.exception("fatal error, exiting")
        return 1
    finally:
        probes.shutdown()
    log.info(f"{service} stopped")
    return 0
