"""`python -m services.ocr_worker`: one OCR process (run one per core)."""
import os

# Tesseract's OpenMP threads and numpy's BLAS threads oversubscribe the cores when several workers run
# (measured: 7x slower OCR); one OCR process per core instead. Must be set before either library loads.
os.environ.setdefault("OMP_THREAD_LIMIT", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import logging  # noqa: E402
import sys  # noqa: E402
from contextlib import ExitStack  # noqa: E402

from common.embedding import build_embedder  # noqa: E402
from common.kafka import build_consumer, build_producer, ensure_topics  # noqa: E402
from common.observability import configure_logging  # noqa: E402
from common.runtime import run_until_stopped, stop_on_signals  # noqa: E402
from common.storage import build_s3_client  # noqa: E402
from schemas.batch_events import BatchOptions  # noqa: E402
from services.ocr_worker.settings import WorkerSettings  # noqa: E402
from services.ocr_worker.worker import ChunkOcr, OcrWorker  # noqa: E402

log = logging.getLogger("services.ocr_worker")


def main() -> int:
    settings = WorkerSettings()
    configure_logging("ocr_worker", settings.log_level)
    stop = stop_on_signals()
    ensure_topics(settings)
    with ExitStack() as stack:
        ocr = ChunkOcr(settings, build_s3_client(settings), build_embedder(settings.embedder))
        stack.callback(ocr.close)
        ocr.engine_for(BatchOptions().languages)  # load the default models now, before reporting ready
        client_id = f"ocr-worker-{settings.worker_id}"
        consumer = build_consumer(settings, group_id=settings.worker_group, client_id=client_id)
        stack.callback(consumer.close)
        producer = build_producer(settings, client_id=client_id, transactional_id=f"ocrstream-ocr-{settings.worker_id}",
                                  **{"transaction.timeout.ms": settings.transaction_timeout_ms})
        worker = OcrWorker(settings, consumer, producer, ocr)
        log.info("ocr worker configured", extra={"worker_id": settings.worker_id, "engine": settings.engine})
        return run_until_stopped("ocr worker", worker.run, stop, probe_host=settings.probe_host,
                                 probe_port=settings.probe_port, is_ready=lambda: worker.ready)


if __name__ == "__main__":
    sys.exit(main())
