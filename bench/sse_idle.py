"""`python -m bench.sse_idle`: the status API's CPU at idle with 1,000 open SSE streams, against none.

One status API process; N batches in the progress view; the same idle window measured twice, with no client
and with N streams open (one per batch, each past its first event). CPU is the process's user+system time from
/proc over the window, as percent of one core. The clients are raw asyncio sockets (no HTTP library), so the
load generator costs nothing while the streams are idle. Then one new version for every batch: the time from
publishing it to its event at the client (p50/p95), the stream fan-out path at full width.
Writes its section of bench/results.json and bench/RESULTS.md.
"""
import argparse
import asyncio
import os
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

from confluent_kafka import Producer

from bench.environment import bench_run, status_api_process
from bench.report import merge_results
from common.kafka import produce_and_flush
from common.settings import Settings
from schemas.progress import BatchProgress, BatchStatus
from schemas.topics import encode

SECTION = "sse_idle"
CPU_LIMIT_PERCENT = 1.0  # idle CPU the streams may add, in percent of one core
LATENCY_P95_LIMIT_S = 0.5
_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime + stime


def cpu_percent(pid: int, window_s: float) -> float:
    before, started = cpu_seconds(pid), time.monotonic()
    time.sleep(window_s)  # a measuring window, not a synchronization
    return (cpu_seconds(pid) - before) / (time.monotonic() - started) * 100


def snapshots(count: int, version: int, run: str) -> list[BatchProgress]:
    now = datetime.now(timezone.utc)
    return [BatchProgress(batch_id=f"{run}-{i}", tenant="default", status=BatchStatus.PROCESSING, total_files=100,
                          total_chunks=10, succeeded=version, failed=0, skipped=0, created_at=now, updated_at=now,
                          version=version) for i in range(count)]


def publish(settings: Settings, progress: list[BatchProgress]) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "linger.ms": 5})
    produce_and_flush(producer, [(settings.topic_batch_progress, p.batch_id.encode(), encode(p)) for p in progress],
                      timeout=60)


class Stream:
    """One SSE client on a raw socket: reads events, remembers when each version arrived."""

    def __init__(self, port: int, batch_id: str) -> None:
        self.port, self.batch_id = port, batch_id
        self.arrived: dict[int, float] = {}
        self.first = asyncio.Event()

    async def run(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(f"GET /v1/batches/{self.batch_id}/events HTTP/1.1\r\nHost: bench\r\n"
                     "Authorization: Bearer dev-key\r\nAccept: text/event-stream\r\n\r\n".encode())
        await writer.drain()
        while line := await reader.readline():
            if line.startswith(b"id:"):
                self.arrived[int(line[3:].strip())] = time.monotonic()
                self.first.set()


async def open_streams(port: int, batch_ids: list[str]) -> tuple[list[Stream], list[asyncio.Task]]:
    streams = [Stream(port, b) for b in batch_ids]
    tasks = []
    for chunk in range(0, len(streams), 100):  # a backlog-friendly pace of connects
        tasks += [asyncio.create_task(s.run()) for s in streams[chunk:chunk + 100]]
        await asyncio.gather(*(s.first.wait() for s in streams[chunk:chunk + 100]))
    return streams, tasks


async def measure(args, settings: Settings, pid: int, port: int, run: str) -> dict:
    streams, tasks = await open_streams(port, [f"{run}-{i}" for i in range(args.streams)])
    loop = asyncio.get_running_loop()
    with_streams = await loop.run_in_executor(None, cpu_percent, pid, args.window)
    published = time.monotonic()
    await loop.run_in_executor(None, publish, settings, snapshots(args.streams, 2, run))
    deadline = time.monotonic() + 60
    while sum(2 in s.arrived for s in streams) < len(streams) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)  # polling the clients' own bookkeeping, bounded by the deadline
    latencies = sorted(s.arrived[2] - published for s in streams if 2 in s.arrived)
    for task in tasks:
        task.cancel()
    return {"with_streams": with_streams, "latencies": latencies}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--window", type=float, default=30.0, help="idle seconds measured (two 15 s keep-alives)")
    args = parser.parse_args()
    with bench_run() as (run, env, settings):
        publish(settings, snapshots(args.streams, 1, run))
        with status_api_process(env, "sse") as (service, port):
            no_streams = cpu_percent(service.pid, args.window)
            result = asyncio.run(measure(args, settings, service.pid, port, run))

    latencies = result["latencies"]
    added = result["with_streams"] - no_streams
    p50 = statistics.median(latencies) if latencies else float("nan")
    p95 = latencies[int(0.95 * (len(latencies) - 1))] if latencies else float("nan")
    figures = {
        "streams": args.streams, "idle_window_s": args.window,
        "cpu_percent_no_streams": round(no_streams, 2), "cpu_percent_with_streams": round(result["with_streams"], 2),
        "cpu_percent_added": round(added, 2), "cpu_percent_added_limit": CPU_LIMIT_PERCENT,
        "events_received": len(latencies), "publish_to_event_p50_s": round(p50, 3),
        "publish_to_event_p95_s": round(p95, 3), "publish_to_event_p95_limit_s": LATENCY_P95_LIMIT_S,
    }
    lines = [
        f"idle CPU, status API, {args.window:.0f} s window: {no_streams:.2f} % with no stream, "
        f"{result['with_streams']:.2f} % with {args.streams} SSE streams open → +{added:.2f} % "
        f"(limit +{CPU_LIMIT_PERCENT} %): {'OK' if added <= CPU_LIMIT_PERCENT else 'OVER'}",
        f"one new version on each of {args.streams} batches → {len(latencies)} events; publish→event p50 "
        f"{p50:.3f} s, p95 {p95:.3f} s (limit {LATENCY_P95_LIMIT_S} s): "
        f"{'OK' if p95 <= LATENCY_P95_LIMIT_S else 'OVER'}",
    ]
    print("\n".join(lines))
    merge_results(SECTION, figures | {"cores": os.cpu_count()},
                  ["## Idle SSE streams (bench/sse_idle.py)", ""] + [f"- {line}" for line in lines])


if __name__ == "__main__":
    main()
