"""`python -m bench.large_batch`: 10,000 distinct files through the whole pipeline on the fast engine.

Ingest takes at most min(OCRSTREAM_MAX_FILES_PER_BATCH, Starlette's 1,000 multipart parts) files per request,
so the 10,000 files go in as many requests of that size as needed, one batch each. Prints and records: the
seconds to each 202 (median, max, sum), end-to-end files/s from the first request to the last completion,
peak RSS of each service (VmHWM over its process tree), and Postgres rows/s (files + pages + words written).
Limit measured in the same run: bare PUT/s of small objects to the same S3 server (8 threads), which every
file costs once in ingest, against the pipeline's files/s. Writes "large_batch" in bench/results.json and its
section of bench/RESULTS.md.
"""
import argparse
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from pathlib import Path

import psycopg

from bench.environment import own_env
from bench.report import merge_results
from common.settings import Settings
from common.storage import build_s3_client
from demo.processes import client_for, running_services
from deploy.devstack import StackSettings, stack_endpoints, start_stack, stop_stack
from services.ingest.settings import IngestSettings
from tests.chaos.harness import distinct_images

SECTION = "large_batch"
MULTIPART_PARTS_MAX = 1000  # Starlette's request.form() default max_files


def s3_put_rate(settings: Settings, objects: int = 500, threads: int = 8) -> float:
    """PUT/s of 2 KiB objects to the stack's S3 server: the store's own ceiling for accepting files."""
    client = build_s3_client(settings)
    body = os.urandom(2048)

    def put(i: int) -> None:
        client.put_object(settings.s3_bucket, f"bench-put/{i}", BytesIO(body), len(body))

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(put, range(objects)))
    return objects / (time.perf_counter() - started)


def peak_rss_mib(pid: int) -> float:
    """VmHWM of a process and its descendants (the worker's OCR child), in MiB."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
            for children in Path(f"/proc/{current}/task").glob("*/children"):
                pending += [int(child) for child in children.read_text().split()]
        except (FileNotFoundError, ProcessLookupError, StopIteration):
            continue
    return total / 1024


def rows_written(settings: Settings, batch_ids: list[str]) -> int:
    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.database_schema},public") as conn:
        return sum(conn.execute(f"SELECT count(*) FROM {table} WHERE batch_id = ANY(%s)", (batch_ids,)).fetchone()[0]
                   for table in ("files", "pages")) + conn.execute(
            "SELECT count(*) FROM words w JOIN files f USING (file_id) WHERE f.batch_id = ANY(%s)",
            (batch_ids,)).fetchone()[0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chunk-size", type=int, default=50)
    args = parser.parse_args(argv)
    per_request = min(IngestSettings().max_files_per_batch, MULTIPART_PARTS_MAX)

    stack = StackSettings()
    started_stack = start_stack(stack)
    try:
        with own_env(stack_endpoints(stack), partitions=6, OCRSTREAM_ENGINE="fast") as env:
            settings = Settings()
            work = Path(tempfile.mkdtemp(prefix="ocrstream-bench-large-"))
            paths = distinct_images(work / "files", args.files)
            put_rate = s3_put_rate(settings)
            print(f"limit: the S3 server takes {put_rate:.0f} small PUT/s (8 threads); each file is one PUT in ingest")

            with running_services(env, work / "logs", workers=args.workers) as services, \
                    client_for(services) as client:
                accept_s, batch_ids = [], []
                started = time.perf_counter()
                for first in range(0, len(paths), per_request):
                    t = time.perf_counter()
                    accepted = client.submit(paths[first:first + per_request], name="large",
                                             chunk_size=args.chunk_size, embeddings=False)
                    accept_s.append(time.perf_counter() - t)
                    batch_ids.append(accepted["batch_id"])
                finals = [client.wait(batch_id, timeout=7200) for batch_id in batch_ids]
                elapsed = time.perf_counter() - started
                rss = {name: round(peak_rss_mib(service.pid), 1) for name, service in services.items()}
            rows = rows_written(settings, batch_ids)
    finally:
        stop_stack(stack, started_stack)  # only what this run started

    files = sum(f["total_files"] for f in finals)
    ok = sum(f["succeeded"] for f in finals)
    rate = files / elapsed
    figures = {
        "files": files, "ok": ok, "requests": len(batch_ids), "files_per_request": per_request,
        "seconds_to_202_median": round(statistics.median(accept_s), 2), "seconds_to_202_max": round(max(accept_s), 2),
        "seconds_to_202_sum": round(sum(accept_s), 1), "end_to_end_s": round(elapsed, 1),
        "files_per_s": round(rate, 1), "s3_put_per_s_limit": round(put_rate, 1),
        "postgres_rows": rows, "postgres_rows_per_s": round(rows / elapsed, 1), "peak_rss_mib": rss,
        "workers": args.workers, "chunk_size": args.chunk_size, "engine": "fast",
    }
    lines = [
        f"{files} files ({ok} ok) in {len(batch_ids)} requests of up to {per_request} (ingest's cap per request), "
        f"fast engine, {args.workers} workers, chunks of {args.chunk_size}",
        f"seconds to 202 per {per_request}-file request: median {figures['seconds_to_202_median']}, max "
        f"{figures['seconds_to_202_max']}, all requests {figures['seconds_to_202_sum']}",
        f"end to end: {elapsed:.1f} s = {rate:.1f} files/s; limit: the S3 server's {put_rate:.0f} PUT/s "
        f"({rate / put_rate:.0%} of it)",
        f"Postgres: {rows} rows (files + pages + words) = {rows / elapsed:.0f} rows/s over the run",
        "peak RSS (MiB, process tree): " + ", ".join(f"{name} {mib}" for name, mib in rss.items()),
    ]
    print("\n".join(lines))
    merge_results(SECTION, figures, ["## 10,000 files (bench/large_batch.py)", ""] + [f"- {line}" for line in lines])


if __name__ == "__main__":
    main()
