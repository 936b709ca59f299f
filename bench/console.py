"""The console's batch page for a 10,000-file batch, in headless Chromium: how long it takes to open (navigation
to the files table drawn, limit 1 s), and whether it stays smooth while the SSE stream delivers snapshots
(longest main-thread task while 300 snapshots arrive at 50/s, limit 50 ms, the browser's "long task" mark).

The batch's rows are written as the persister writes them and its snapshots published to batch.progress; only
the status API runs. `python -m bench.console [--files N]`; writes bench/results.json ("console") and its section
of bench/RESULTS.md.
"""
import argparse
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

from confluent_kafka import Producer

from bench.report import merge_results
from common.db import apply_migrations, build_pool
from common.kafka import ensure_topics, produce_and_flush
from common.settings import Settings
from deploy.devstack import StackSettings, stack_endpoints, start_stack
from demo.processes import build_services, free_port, isolated_env
from schemas.base import utc_now
from schemas.progress import BatchProgress, BatchStatus
from schemas.topics import encode
from tests.e2e.test_console import KEY, chromium

OPEN_LIMIT_MS = 1000
LONG_TASK_LIMIT_MS = 50
SNAPSHOTS, SNAPSHOTS_PER_S = 300, 50


def write_batch(settings: Settings, batch_id: str, files: int) -> None:
    with build_pool(settings, name="bench-console") as pool, pool.connection() as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO batches (batch_id, tenant, name, status, total_files, total_chunks, created_at,"
                    " version) VALUES (%s, 'default', 'ten thousand', 'processing', %s, %s, now(), 1)",
                    (batch_id, files, files // 10))
        with cur.copy("COPY files (file_id, batch_id, chunk_id, tenant, original_name, sha256, size_bytes,"
                      " content_type, status, engine, page_count, timings, attempt) FROM STDIN") as copy:
            for i in range(files):
                copy.write_row((f"{batch_id}-{i:05d}", batch_id, "c", "default", f"scans/page-{i:05d}.png", "0" * 64,
                                1000, "image/png", "ok" if i % 50 else "failed", "fast", 1, "{}", 1))


def snapshot(batch_id: str, files: int, version: int, done: int) -> BatchProgress:
    now = utc_now()
    return BatchProgress(batch_id=batch_id, tenant="default", name="ten thousand", status=BatchStatus.PROCESSING,
                         total_files=files, total_chunks=files // 10, succeeded=done, failed=0, skipped=0,
                         created_at=now - timedelta(seconds=60), started_at=now - timedelta(seconds=59),
                         updated_at=now, version=version)


def measure(files: int, workdir: Path) -> dict:
    start_stack(StackSettings())
    env = isolated_env(stack_endpoints(StackSettings()), uuid.uuid4().hex[:10])
    settings = Settings(**{k.removeprefix("OCRSTREAM_").lower(): v for k, v in env.items()})
    ensure_topics(settings)
    apply_migrations(settings)
    batch_id = uuid.uuid4().hex
    write_batch(settings, batch_id, files)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
    topic = settings.topic_batch_progress
    produce_and_flush(producer, [(topic, batch_id.encode(), encode(snapshot(batch_id, files, 1, 0)))], timeout=30)

    status = build_services(env, workdir / "logs", status_port=free_port(), ingest_port=free_port())["status_api"]
    status.start()
    driver = None
    try:
        status.wait_ready()
        driver = chromium()
        driver.get(f"{status.probe_url}/ui/")
        driver.execute_script("sessionStorage.setItem('ocrstream.apiKey', arguments[0])", KEY)
        opens = []
        for _ in range(5):  # the first load compiles the modules; the figure is the median of five
            driver.get(f"{status.probe_url}/ui/batches/{batch_id}")
            opens.append(_wait_for(driver, "return document.querySelectorAll('#files-table tbody tr').length === 50"
                                   " && performance.now()"))
        driver.execute_script("""
            window.__longest = 0;
            new PerformanceObserver((list) => list.getEntries().forEach((e) => {
              window.__longest = Math.max(window.__longest, e.duration); (window.__tasks ||= []).push(Math.round(e.duration)); })).observe({type: 'longtask'});""")
        for version in range(2, SNAPSHOTS + 2):
            done = files * (version - 1) // SNAPSHOTS
            produce_and_flush(producer, [(topic, batch_id.encode(), encode(snapshot(batch_id, files, version, done)))],
                              timeout=30)
            time.sleep(1 / SNAPSHOTS_PER_S)  # the pace of the stream being measured, not a synchronization
        _wait_for(driver, "return document.getElementById('batch-percent').textContent === '100.0 %'")
        longest = driver.execute_script("return window.__longest")
        long_tasks = driver.execute_script("return window.__tasks || []")
    finally:
        if driver is not None:
            driver.quit()
        status.stop()
    open_ms = sorted(opens)[len(opens) // 2]
    return {"files": files, "open_ms": round(open_ms), "open_limit_ms": OPEN_LIMIT_MS,
            "longest_task_ms": round(longest), "long_task_limit_ms": LONG_TASK_LIMIT_MS, "long_tasks_ms": long_tasks,
            "snapshots": SNAPSHOTS, "snapshots_per_s": SNAPSHOTS_PER_S,
            "within_limits": open_ms < OPEN_LIMIT_MS and longest < LONG_TASK_LIMIT_MS}


def _wait_for(driver, script: str, timeout: float = 60.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := driver.execute_script(script):
            return value
        time.sleep(0.02)  # poll interval of the deadline loop
    raise TimeoutError(f"timed out: {script}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        result = measure(args.files, Path(workdir))
    print(f"batch page of {result['files']:,} files opened in {result['open_ms']} ms (limit {OPEN_LIMIT_MS} ms); "
          f"longest main-thread task while {SNAPSHOTS} snapshots streamed: {result['longest_task_ms']} ms "
          f"(limit {LONG_TASK_LIMIT_MS} ms)")
    merge_results("console", result, [
        "## Console: the batch page of a large batch (bench/console.py)",
        "",
        "| figure | measured | limit |",
        "|---|---|---|",
        f"| open a {result['files']:,}-file batch page (navigation → first 50 rows drawn, median of 5) | "
        f"{result['open_ms']} ms | {OPEN_LIMIT_MS} ms |",
        f"| longest main-thread task while {SNAPSHOTS} snapshots stream at {SNAPSHOTS_PER_S}/s | "
        f"{result['longest_task_ms']} ms | {LONG_TASK_LIMIT_MS} ms |",
    ])


if __name__ == "__main__":
    main()
