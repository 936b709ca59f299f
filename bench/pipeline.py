"""`make bench`: the whole pipeline on a larger batch, against the limit measured in the same run.

Prints: median seconds to 202, end-to-end files/s, OCR seconds per file, persister transaction time, and the
ratio of the pipeline's rate to N x the rate of one bare OCR process (no Kafka, S3 or Postgres) on the same files.
"""
import argparse
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("OMP_THREAD_LIMIT", "1")  # as in the worker: before tesserocr loads
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from common.db import apply_migrations  # noqa: E402
from common.embedding import build_embedder  # noqa: E402
from common.kafka import ensure_topics  # noqa: E402
from common.settings import Settings  # noqa: E402
from common.storage import build_s3_client, ensure_bucket  # noqa: E402
from demo.processes import client_for, isolated_env, running_services, scrape_histogram  # noqa: E402
from demo.sample_batch import render_sample_batch  # noqa: E402
from deploy.devstack import StackSettings, stack_endpoints, start_stack, stop_stack  # noqa: E402
from services.ocr_worker.engine import build_engine  # noqa: E402
from services.ocr_worker.pages import decode_pages  # noqa: E402


def bare_ocr_rate(paths: list[Path]) -> float:
    """Files/s of one process doing only decode + OCR + embed, the work a worker cannot avoid."""
    embedder = build_embedder()
    with build_engine("tesseract", "kor+eng") as engine:
        started = time.perf_counter()
        for path in paths:
            texts = [engine.recognize(image).text for image in decode_pages(path.read_bytes(), "")]
            embedder.embed(texts)
        return len(paths) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=int(os.environ.get("OCRSTREAM_BENCH_IMAGES", 200)))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chunk-size", type=int, default=10)
    args = parser.parse_args()

    stack = StackSettings()
    started_stack = start_stack(stack)
    try:
        env = isolated_env(stack_endpoints(stack), f"bench{uuid.uuid4().hex[:8]}", partitions=6)
        os.environ.update(env)
        settings = Settings()
        ensure_topics(settings)
        ensure_bucket(build_s3_client(settings), settings.s3_bucket)
        apply_migrations(settings)

        work = Path(tempfile.mkdtemp(prefix="ocrstream-bench-"))
        samples = render_sample_batch(work / "batch", images=args.images, pdf_pages=3, seed=1)
        probe = [s.path for s in samples[: min(30, len(samples))]]
        single = bare_ocr_rate(probe)
        print(f"limit: one bare OCR process {single:.2f} files/s on {len(probe)} files "
              f"→ {args.workers} processes at most {single * args.workers:.2f} files/s on {os.cpu_count()} cores")

        with running_services(env, work / "logs", workers=args.workers) as services:
            with client_for(services) as client:
                small = [s.path for s in samples[:10]]
                accept_times = []
                for _ in range(7):
                    t = time.perf_counter()
                    accepted = client.submit(small, name="bench-202", chunk_size=args.chunk_size)
                    accept_times.append(time.perf_counter() - t)
                    client.wait(accepted["batch_id"], timeout=600)
                started = time.perf_counter()
                accepted = client.submit([s.path for s in samples], name="bench", chunk_size=args.chunk_size)
                final = client.wait(accepted["batch_id"], timeout=3600)
                elapsed = time.perf_counter() - started
            workers = [s.probe_url for n, s in services.items() if n.startswith("ocr_worker")]
            ocr_s, ocr_n = scrape_histogram(workers, "ocrstream_worker_file_seconds")
            txn_s, txn_n = scrape_histogram([services["persister"].probe_url], "ocrstream_transaction_seconds",
                                            kind="persist")
            rate = final["total_files"] / elapsed
            print(f"median seconds to 202 (10 images, 7 batches): {statistics.median(accept_times):.3f}")
            print(f"end to end: {final['total_files']} files ({final['succeeded']} ok, {final['failed']} failed) in "
                  f"{elapsed:.1f} s = {rate:.2f} files/s, {rate / (single * args.workers):.0%} of the measured limit")
            print(f"OCR per file (fetch+decode+OCR+embed): {ocr_s / ocr_n:.3f} s mean over {ocr_n} files")
            print(f"persister: {txn_s / txn_n * 1000:.1f} ms mean per DB transaction over {txn_n} transactions")
    finally:
        stop_stack(stack, started_stack)  # only what this run started


if __name__ == "__main__":
    main()
