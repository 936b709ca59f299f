"""`python -m services.ocr_worker`: one OCR process (run one per core)."""
import os

# Tesseract's OpenMP threads and numpy's BLAS threads oversubscribe the cores when several workers run
# (measured: 7x slower OCR); one OCR process per core instead. Set before either library loads, and
# inherited by the OCR child process.
os.environ.setdefault("OMP_THREAD_LIMIT", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import logging  # noqa: E402
import sys  # noqa: E402
from contextlib import ExitStack  # noqa: E402

from common.kafka import build_consumer, build_producer, ensure_topics  # noqa: E402
from common.observability import configure_logging  # noqa: E402
from common.runtime import Readiness, run_until_stopped, stop_on_signals  # noqa: E402
from common.storage import ObjectStore  # noqa: E402
from schemas.batch_events import BatchOptions  # noqa: E402
from services.ocr_worker.cancellations import CancelledBatches  # noqa: E402
from services.ocr_worker.handover import IdleWorkers  # noqa: E402
from services.ocr_worker.settings import WorkerSettings  # noqa: E402
from services.ocr_worker.supervisor import OcrSupervisor  # noqa: E402
from services.ocr_worker.worker import ChunkOcr, OcrWorker  # noqa: E402

log = logging.getLogger("services.ocr_worker")


def build_worker(settings: WorkerSettings, stack: ExitStack) -> OcrWorker:
    """Every client the worker needs, closed by `stack`; the OCR child started (models loaded)."""
    supervisor = OcrSupervisor(engine=settings.engine, embedder=settings.embedder,
                               default_languages=BatchOptions().languages,
                               max_pages_per_file=settings.max_pages_per_file,
                               file_timeout_s=settings.ocr_file_timeout_s,
                               memory_limit_bytes=settings.ocr_memory_limit_mb << 20)
    stack.callback(supervisor.stop)
    supervisor.start(spare_ready=True)
    client_id = f"ocr-worker-{settings.worker_id}"
    consumer = build_consumer(settings, group_id=settings.worker_group, client_id=client_id,
                              **{"partition.assignment.strategy": "cooperative-sticky"})
    stack.callback(consumer.close)

    def new_producer():
        # Namespaced by the group and the chunk topic, so two pipelines on one cluster never fence each other's
        # workers (even under the default group), while a restarted replica still fences its own zombie.
        return build_producer(settings, client_id=client_id,
                              transactional_id=f"{settings.worker_group}-{settings.topic_ocr_chunks}-"
                                               f"{settings.worker_id}",
                              **{"transaction.timeout.ms": settings.transaction_timeout_ms})

    cancelled = CancelledBatches(build_consumer(settings, group_id=f"{settings.worker_group}-cancellations",
                                                client_id=f"{client_id}-cancellations",
                                                **{"enable.partition.eof": True}), settings.topic_batch_events)
    cancelled.start()
    stack.callback(cancelled.stop)
    readiness = Readiness()
    ocr = ChunkOcr(settings, ObjectStore(settings), supervisor, readiness)
    stack.callback(ocr.close)
    idle_workers = None
    if settings.handover_check_s > 0:
        # Never subscribes (not a member); read_uncommitted, so that its committed() does not wait for the offsets
        # of transactions under way.
        view = build_consumer(settings, group_id=settings.worker_group, client_id=f"{client_id}-group-view",
                              **{"isolation.level": "read_uncommitted"})
        idle_workers = IdleWorkers(view, settings.topic_ocr_chunks, settings.handover_check_s)
        idle_workers.start()
        stack.callback(idle_workers.close)
    return OcrWorker(settings, consumer, new_producer, ocr, readiness, cancelled, idle_workers)


def main() -> int:
    settings = WorkerSettings()
    configure_logging("ocr_worker", settings.log_level)
    stop = stop_on_signals()
    ensure_topics(settings)
    with ExitStack() as stack:
        worker = build_worker(settings, stack)
        log.info("ocr worker configured", extra={"worker_id": settings.worker_id, "engine": settings.engine})
        return run_until_stopped("ocr worker", worker.run, stop, probe_host=settings.probe_host,
                                 probe_port=settings.probe_port, is_ready=lambda: worker.ready)


if __name__ == "__main__":
    sys.exit(main())
