"""`make bench` (python -m bench.pipeline): issue 20's throughput figures, each beside its limit measured in the
same run on this machine. Prints a table, writes the `pipeline` section of bench/results.json and bench/RESULTS.md.

Limits measured here: the dev-stack S3's raw PUT/GET rates (16 threads, 1.5 KB objects), one bare OCR process
(decode + Tesseract + embed, no Kafka, S3 or Postgres) on the same files, and raw COPY of the same page and word
rows into the same tables. Each pipeline run has topics, bucket and schema of its own, removed afterwards; the
services run as processes, and a run's clock starts once the workers' group has settled. A ratio is taken between
runs of one round (or pass), minutes apart at most, and the median round's is the figure: the machine's speed
drifts.
"""
import argparse
import io
import multiprocessing
import os
import random
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

os.environ.setdefault("OMP_THREAD_LIMIT", "1")  # as in the worker: before tesserocr loads
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import httpx  # noqa: E402
from PIL import Image  # noqa: E402

from bench.environment import own_env  # noqa: E402
from bench.report import merge_results  # noqa: E402
from common.db import build_pool  # noqa: E402
from common.embedding import build_embedder  # noqa: E402
from common.kafka import build_consumer, build_producer, message_record, produce_and_flush  # noqa: E402
from common.settings import Settings  # noqa: E402
from common.storage import ObjectStore  # noqa: E402
from demo.processes import ServiceProcess, client_for, free_port, running_services, wait_for_settled_group  # noqa: E402
from demo.sample_batch import render_sample_batch  # noqa: E402
from deploy.devstack import StackSettings, stack_endpoints, start_stack, stop_stack  # noqa: E402
from schemas.batch_events import BatchCreated, ChunkLayout  # noqa: E402
from schemas.results import BoundingBox, FileResult, FileStatus, Page, Word  # noqa: E402
from services.ocr_worker.engine import build_engine  # noqa: E402
from services.ocr_worker.pages import decode_pages  # noqa: E402
from services.persister.persister import Persister  # noqa: E402
from services.persister.settings import PersisterSettings  # noqa: E402

SECTION = "pipeline"
FLOORS = {  # key: (floor, goal, "higher" | "lower" is better)
    "s3_put_per_s": (600, None, "higher"),
    "s3_get_per_s": (800, None, "higher"),
    "fast_engine_files_per_s": (250, 500, "higher"),
    "seconds_to_202_1000_small": (3.0, 1.5, "lower"),
    "seconds_to_202_100_x_100kb": (1.0, None, "lower"),
    "tesseract_ratio_to_limit": (0.85, 0.95, "higher"),
    "scaling_1_to_2_workers": (1.8, None, "higher"),
    "persister_word_rows_per_s": (50_000, None, "higher"),
    "persister_ratio_to_raw_copy": (0.5, None, "higher"),
    "embedding_overhead_pct": (5.0, None, "lower"),
    "ingest_rss_growth_mb_200mb_upload": (64.0, None, "lower"),
}


# ---- limits ---------------------------------------------------------------------------------------------------

def s3_rates(settings: Settings, objects: int = 2000, threads: int = 16) -> tuple[float, float]:
    """Raw small PUT and GET rates of the S3 server through the data-path client: the limit of ingest and fetch."""
    store, bodies = ObjectStore(settings), [os.urandom(1500) for _ in range(objects)]

    def rate(call) -> float:
        started = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(call, range(objects)))
        return objects / (time.perf_counter() - started)

    put = rate(lambda i: store.put_stream(settings.s3_bucket, f"rate/{i}", io.BytesIO(bodies[i]),
                                          content_type="application/octet-stream"))
    get = rate(lambda i: store.get_bytes(settings.s3_bucket, f"rate/{i}"))
    return put, get


def bare_ocr(paths: list[Path], chunk_size: int) -> tuple[float, list[float], list[float]]:
    """One process doing only decode + OCR + embed, the work a worker cannot avoid (and, as a worker does, the
    pages of `chunk_size` files embedded in one call): files/s, and per file the decode+OCR milliseconds and its
    share of its chunk's embedding milliseconds."""
    embedder = build_embedder()
    ocr_ms, embed_ms = [], []
    with build_engine("tesseract", "kor+eng") as engine:
        started = time.perf_counter()
        for first in range(0, len(paths), chunk_size):
            chunk, texts = paths[first:first + chunk_size], []
            for path in chunk:
                t = time.perf_counter()
                texts += [engine.recognize(image).text for image in decode_pages(path.read_bytes(), "")]
                ocr_ms.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            embedder.embed(texts)
            embed_ms += [(time.perf_counter() - t) * 1000 / len(chunk)] * len(chunk)
        return len(paths) / (time.perf_counter() - started), ocr_ms, embed_ms


def bare_ocr_two_at_once(paths: list[Path], chunk_size: int) -> float:
    """files/s of two bare OCR processes at once, each on all the files: what two cores give without the
    pipeline (the cores share caches, memory and the host's budget, so it is less than 2 x one)."""
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        return sum(rate for rate, _, _ in pool.map(bare_ocr, [paths, paths], [chunk_size, chunk_size]))


# ---- the pipeline ---------------------------------------------------------------------------------------------

ENDPOINT_VARS = ("OCRSTREAM_KAFKA_BOOTSTRAP_SERVERS", "OCRSTREAM_S3_ENDPOINT", "OCRSTREAM_S3_ACCESS_KEY",
                 "OCRSTREAM_S3_SECRET_KEY", "OCRSTREAM_DATABASE_URL")


def fresh_env(endpoints: dict[str, str], *, engine: str = "tesseract") -> AbstractContextManager[dict[str, str]]:
    """A run's own topics (6 partitions), bucket and schema, removed afterwards, and the OCR engine named: the
    variables also go into os.environ (for Settings()), so a run must never inherit the previous run's engine."""
    return own_env(endpoints, partitions=6, OCRSTREAM_ENGINE=engine)


def small_pngs(directory: Path, count: int, side: int, seed: int) -> list[Path]:
    """`count` distinct PNGs of random pixels (side x side)."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    paths = []
    for i in range(count):
        path = directory / f"{i:05d}.png"
        Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3)).save(path, "PNG")
        paths.append(path)
    return paths


def pipeline_run(env: dict[str, str], logs: Path, paths: list[Path], *, workers: int, chunk_size: int,
                 embeddings: bool) -> tuple[float, float]:
    """(files/s from the request to the batch's completion, seconds to the 202) on running services."""
    with running_services(env, logs, workers=workers) as services, client_for(services) as client:
        settings = Settings()
        wait_for_settled_group(settings.kafka_bootstrap_servers, settings.worker_group, workers)
        started = time.perf_counter()
        accepted = client.submit(paths, name="bench", chunk_size=chunk_size, embeddings=embeddings)
        to_202 = time.perf_counter() - started
        final = client.wait(accepted["batch_id"], timeout=3600)
        elapsed = time.perf_counter() - started
    if final["succeeded"] != len(paths):
        raise RuntimeError(f"bench batch ended {final['status']}: {final['succeeded']}/{len(paths)} ok")
    return len(paths) / elapsed, to_202


def seconds_to_202(env: dict[str, str], logs: Path, paths: list[Path]) -> float:
    """The 202 of one batch on an ingest alone (nothing else running in its env)."""
    with running_ingest(env, logs) as (ingest, _):
        with httpx.Client(timeout=120) as http:
            return timed_upload(http, ingest.probe_url, paths)


def timed_upload(http: httpx.Client, url: str, paths: list[Path]) -> float:
    handles = [open(p, "rb") for p in paths]
    try:
        started = time.perf_counter()
        response = http.post(f"{url}/v1/batches", headers={"Authorization": "Bearer dev-key"},
                             files=[("files", (p.name, h, "application/octet-stream")) for p, h in zip(paths, handles)])
        elapsed = time.perf_counter() - started
    finally:
        for handle in handles:
            handle.close()
    if response.status_code != 202:
        raise RuntimeError(f"upload answered {response.status_code}: {response.text[:300]}")
    return elapsed


@contextmanager
def running_ingest(env: dict[str, str], logs: Path) -> Iterator[tuple[ServiceProcess, int]]:
    """The ingest service alone, for figures of its own (202 time, memory)."""
    port = free_port()
    service = ServiceProcess("ingest", "services.ingest", env | {"OCRSTREAM_HTTP_PORT": str(port)},
                             f"http://127.0.0.1:{port}", logs)
    try:
        service.start().wait_ready()
        yield service, service.pid
    finally:
        service.stop()


def ingest_rss_growth_mb(env: dict[str, str], logs: Path, work: Path, megabytes: int = 200) -> float:
    """Peak resident memory of the ingest over a single upload of `megabytes`, less its resident memory before
    (after a small warm-up batch)."""
    big = work / "big.png"
    with open(big, "wb") as out:  # a PNG signature is all the type check reads; the rest is not decoded here
        out.write(b"\x89PNG\r\n\x1a\n")
        for _ in range(megabytes):
            out.write(os.urandom(1024 * 1024))
    warm = small_pngs(work / "warm", 3, 32, seed=9)
    with running_ingest(env | {"OCRSTREAM_MAX_FILE_BYTES": str((megabytes + 10) << 20)}, logs) as (ingest, pid):
        with httpx.Client(timeout=600) as http:
            timed_upload(http, ingest.probe_url, warm)
            before = _proc_status_kb(pid, "VmRSS")
            timed_upload(http, ingest.probe_url, [big])
            peak = _proc_status_kb(pid, "VmHWM")
    big.unlink()
    return (peak - before) / 1024


def _proc_status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


# ---- the persister --------------------------------------------------------------------------------------------

def persister_rates(results: int = 1000, words_per_page: int = 300) -> tuple[float, float, float]:
    """(word rows/s of the persister over a backlog of results; word rows/s of raw COPY of the same pages and words
    into the same tables; word rows/s of raw COPY of the words alone). Each result: one page of `words_per_page`
    words and a 512-d embedding, as OCR gives them. A page row costs Postgres more than its 300 word rows: it
    feeds the HNSW and trigram indexes that search needs, so the raw COPY the persister is held to writes the
    pages too."""
    settings = PersisterSettings(persister_group=f"bench-{uuid.uuid4().hex[:8]}")
    batch_id = uuid.uuid4().hex
    batch = [_bench_result(batch_id, i, words_per_page) for i in range(results)]
    created = BatchCreated(batch_id=batch_id, tenant="default", total_files=results,
                           chunks=[ChunkLayout(chunk_id=f"{batch_id}.00000", file_count=results)])
    producer = build_producer(settings, client_id="bench-seed")
    produce_and_flush(producer, [message_record(settings.topic_batch_events, batch_id, created)]
                      + [message_record(settings.topic_ocr_results, r.file_id, r) for r in batch], timeout=60)

    with build_pool(settings, name="bench-persister", max_size=settings.db_pool_size) as pool:
        pool.wait(30)
        consumer = build_consumer(settings, group_id=settings.persister_group, client_id="bench-persister")
        persister = Persister(settings, consumer, build_producer(settings, client_id="bench-persister"), pool)
        stop = threading.Event()
        thread = threading.Thread(target=persister.run, args=(stop,), daemon=True)
        thread.start()
        try:
            _wait_until(lambda: persister.ready, 60)
            started = time.perf_counter()
            _wait_until(lambda: _files_persisted(pool, batch_id) >= results, 600, every=0.05)
            persisted = results * words_per_page / (time.perf_counter() - started)
        finally:
            stop.set()
            thread.join(30)
            consumer.close()
        rows = results * words_per_page
        return persisted, rows / _raw_copy_seconds(pool, batch, pages=True), rows / _raw_copy_seconds(pool, batch)


def _raw_copy_seconds(pool, batch: list[FileResult], *, pages: bool = False) -> float:
    """Seconds of a plain COPY (text format, rolled back) of the results' words, and first their pages if asked."""
    page_rows = [(f"raw-{r.file_id}", p.page_number, r.batch_id, r.tenant, p.width, p.height, p.text,
                  p.mean_confidence, f"[{','.join(map(str, p.embedding))}]") for r in batch for p in r.pages]
    word_rows = [(f"raw-{r.file_id}", p.page_number, i, w.text, w.confidence, w.bbox.x, w.bbox.y, w.bbox.width,
                  w.bbox.height) for r in batch for p in r.pages for i, w in enumerate(p.words)]
    with pool.connection() as conn, conn.transaction(force_rollback=True), conn.cursor() as cur:
        started = time.perf_counter()
        if pages:
            with cur.copy("COPY pages (file_id, page_number, batch_id, tenant, width, height, text, mean_confidence,"
                          " embedding) FROM STDIN") as copy:
                for row in page_rows:
                    copy.write_row(row)
        with cur.copy("COPY words (file_id, page_number, word_index, text, confidence, x, y, width, height)"
                      " FROM STDIN") as copy:
            for row in word_rows:
                copy.write_row(row)
        return time.perf_counter() - started


def _bench_result(batch_id: str, index: int, words: int) -> FileResult:
    rng = random.Random(index)
    embedding = [rng.uniform(-1, 1) for _ in range(512)]
    norm = sum(v * v for v in embedding) ** 0.5
    page = Page(page_number=1, width=1240, height=1754, mean_confidence=0.9,
                text=" ".join(f"word{rng.randrange(10**6)}" for _ in range(words)),
                words=[Word(text=f"word{rng.randrange(10**6)}", confidence=0.9,
                            bbox=BoundingBox(x=i % 40 * 30, y=i // 40 * 20, width=28, height=18)) for i in range(words)],
                embedding=[v / norm for v in embedding])
    return FileResult(batch_id=batch_id, chunk_id=f"{batch_id}.00000", file_id=f"{batch_id}-{index}", tenant="default",
                      status=FileStatus.OK, original_name=f"{index}.png", sha256="0" * 64, size=1,
                      content_type="image/png", engine="fast", pages=[page])


def _files_persisted(pool, batch_id: str) -> int:
    with pool.connection() as conn:
        return conn.execute("SELECT count(*) FROM files WHERE batch_id = %s", (batch_id,)).fetchone()[0]


def _wait_until(condition, deadline_s: float, every: float = 0.2) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not reached in {deadline_s} s")
        time.sleep(every)  # poll interval of the deadline loop


# ---- the report -----------------------------------------------------------------------------------------------

def _spread(values: list[float]) -> str:
    return f"{len(values)} ({min(values):.3f}-{max(values):.3f})"


def report(figures: dict, limits: dict, load: str) -> None:
    rows = ["| figure | value | limit measured in this run | floor | goal | met |", "|---|---|---|---|---|---|"]
    for key, (floor, goal, better) in FLOORS.items():
        value = figures[key]
        met = value >= floor if better == "higher" else value < floor
        sign = ">=" if better == "higher" else "<"
        rows.append(f"| `{key}` | {value:g} | {limits.get(key, '')} | {sign} {floor:g} | "
                    f"{'' if goal is None else f'{sign} {goal:g}'} | {'yes' if met else 'NO'} |")
    print("\n".join(rows))
    markdown = ["## Throughput (bench/pipeline.py, issue 20)", "",
                f"`python -m bench.pipeline`, one run on {os.cpu_count()} cores; load while it ran: {load}.", "",
                *rows]
    merge_results(SECTION, figures | {"limits": limits, "load": load}, markdown)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small-files", type=int, default=1000)
    # 480 files: about 45 s for 2 workers. A run's start and end do not scale with workers (the upload before
    # the first chunk, 0.3-0.5 s; the last results; the workers' end imbalance, 0.1-0.6 s): at 240 files they
    # were 3 % of a 2-worker run, at 60 a quarter, and the figures measured those instead of the rate.
    parser.add_argument("--ocr-files", type=int, default=480)
    parser.add_argument("--ocr-rounds", type=int, default=5)
    parser.add_argument("--fast-chunk-size", type=int, default=100)
    parser.add_argument("--ocr-chunk-size", type=int, default=10)
    parser.add_argument("--persister-passes", type=int, default=3)
    args = parser.parse_args()

    # The stack's endpoints from the environment when all are set (e.g. another S3 server); else the dev stack.
    stack, started_stack = StackSettings(), []
    if all(os.environ.get(v) for v in ENDPOINT_VARS):
        endpoints = {v: os.environ[v] for v in ENDPOINT_VARS} | {"OCRSTREAM_S3_SECURE": "false"}
    else:
        started_stack, endpoints = start_stack(stack), stack_endpoints(stack)
    work = Path(tempfile.mkdtemp(prefix="ocrstream-bench-"))
    load_before = os.getloadavg()
    figures, limits = {}, {}
    try:
        with fresh_env(endpoints):
            put, get = s3_rates(Settings())
        figures |= {"s3_put_per_s": round(put), "s3_get_per_s": round(get)}
        limits |= {"s3_put_per_s": "floor of the issue", "s3_get_per_s": "floor of the issue"}
        print(f"S3 raw rates, 16 threads, 1.5 KB: PUT {put:.0f}/s, GET {get:.0f}/s", flush=True)

        pngs = small_pngs(work / "small", args.small_files, 32, seed=1)
        with fresh_env(endpoints, engine="fast") as env:
            rate, to_202 = pipeline_run(env, work / "logs-fast", pngs, workers=2, chunk_size=args.fast_chunk_size,
                                        embeddings=False)
        figures |= {"fast_engine_files_per_s": round(rate, 1), "seconds_to_202_1000_small": round(to_202, 3)}
        limits |= {"fast_engine_files_per_s": f"S3 PUT {put:.0f}/s, GET {get:.0f}/s",
                   "seconds_to_202_1000_small": f"{args.small_files} PUTs at the raw rate: {args.small_files / put:.2f} s"}
        print(f"fast engine: {rate:.1f} files/s end to end, 202 in {to_202:.3f} s", flush=True)

        hundred = small_pngs(work / "100kb", 100, 185, seed=2)  # ~100 KB of random pixels each
        with fresh_env(endpoints) as env:
            figures["seconds_to_202_100_x_100kb"] = round(seconds_to_202(env, work / "logs-202", hundred), 3)
        limits["seconds_to_202_100_x_100kb"] = f"100 PUTs at the raw rate: {100 / put:.2f} s"
        print(f"202 for 100 x 100 KB: {figures['seconds_to_202_100_x_100kb']:.3f} s", flush=True)

        # Rounds interleave the runs, and each ratio is taken within its round: this machine's speed drifts by 15 %
        # over minutes (a bare OCR round ran at 7.1 and at 9.1 files/s), which a ratio of medians taken over
        # different rounds would measure instead. A round's limit is the mean of the bare runs that open and close
        # it (one round's closing run opens the next): a drift in between cancels to first order, where a bare run
        # before alone measured it. The figure is the median round's.
        images = [s.path for s in render_sample_batch(work / "ocr", images=args.ocr_files, pdf_pages=0, seed=1)]
        twos, ones, pairs, limits_by_round = [], [], [], []
        single, ocr_ms, embed_ms = bare_ocr(images, args.ocr_chunk_size)
        singles = [single]
        for round_ in range(args.ocr_rounds):
            pairs.append(bare_ocr_two_at_once(images, args.ocr_chunk_size) / (2 * singles[-1]))
            with fresh_env(endpoints) as env:
                two, _ = pipeline_run(env, work / f"logs-ocr2-{round_}", images, workers=2,
                                      chunk_size=args.ocr_chunk_size, embeddings=True)
            with fresh_env(endpoints) as env:
                one, _ = pipeline_run(env, work / f"logs-ocr1-{round_}", images, workers=1,
                                      chunk_size=args.ocr_chunk_size, embeddings=True)
            after, round_ocr_ms, round_embed_ms = bare_ocr(images, args.ocr_chunk_size)
            limits_by_round.append((singles[-1] + after) / 2)
            singles.append(after)
            twos.append(two)
            ones.append(one)
            ocr_ms += round_ocr_ms
            embed_ms += round_embed_ms
            print(f"round {round_ + 1}: one bare OCR process {singles[-2]:.2f} files/s before, {after:.2f} after; "
                  f"tesseract pipeline 1 worker {one:.2f} files/s, 2 workers {two:.2f} files/s (ratio "
                  f"{two / (2 * limits_by_round[-1]):.3f}, scaling {two / one:.3f}; two bare processes at once "
                  f"{pairs[-1]:.3f})", flush=True)
        ratios = [two / (2 * limit) for two, limit in zip(twos, limits_by_round)]
        scalings = [two / one for two, one in zip(twos, ones)]
        single, two, one = (statistics.median(runs) for runs in (limits_by_round, twos, ones))
        figures |= {"tesseract_ratio_to_limit": round(statistics.median(ratios), 3),
                    "scaling_1_to_2_workers": round(statistics.median(scalings), 3),
                    "tesseract_ratio_by_round": [round(r, 3) for r in ratios],
                    "scaling_by_round": [round(r, 3) for r in scalings],
                    "bare_ocr_files_per_s_by_run": [round(r, 2) for r in singles],
                    "bare_ocr_two_at_once_ratio": round(statistics.median(pairs), 3),
                    "tesseract_files_per_s_2_workers": round(two, 2), "tesseract_files_per_s_1_worker": round(one, 2),
                    "bare_ocr_files_per_s": round(single, 2), "tesseract_files": args.ocr_files,
                    "tesseract_rounds": args.ocr_rounds}
        limits |= {"tesseract_ratio_to_limit": f"2 x one bare OCR process, the mean of the runs before and after "
                                               f"each round; median round of {_spread(ratios)}; medians 2 workers "
                                               f"{two:.2f} files/s, bare {single:.2f} files/s; the machine's own: "
                                               f"two bare processes at once {statistics.median(pairs):.3f} of 2 x one",
                   "scaling_1_to_2_workers": f"1 worker, in each round; median round of {_spread(scalings)}; "
                                             f"medians 1 worker {one:.2f} files/s, 2 workers {two:.2f} files/s"}
        overhead = statistics.median(embed_ms) / statistics.median(ocr_ms) * 100
        figures["embedding_overhead_pct"] = round(overhead, 2)
        limits["embedding_overhead_pct"] = (f"median decode+OCR {statistics.median(ocr_ms):.0f} ms per file, "
                                            f"median embedding {statistics.median(embed_ms):.1f} ms")

        # The same for the persister: each pass (topics and schema of its own) beside its raw COPY.
        passes = []
        for _ in range(args.persister_passes):
            with fresh_env(endpoints):
                passes.append(persister_rates())
            print(f"persister: {passes[-1][0]:.0f} word rows/s; raw COPY of the same pages and words "
                  f"{passes[-1][1]:.0f} word rows/s, of the words alone {passes[-1][2]:.0f}/s", flush=True)
        persisted, raw, raw_words = (statistics.median(p[i] for p in passes) for i in range(3))
        ratios = [p / r for p, r, _ in passes]
        word_ratio = statistics.median(p / w for p, _, w in passes)
        figures |= {"persister_word_rows_per_s": round(persisted), "persister_ratio_to_raw_copy": round(statistics.median(ratios), 3),
                    "persister_ratio_by_pass": [round(r, 3) for r in ratios],
                    "persister_ratio_to_raw_word_copy": round(word_ratio, 3)}
        limits |= {"persister_word_rows_per_s": f"raw COPY of the same pages and words {raw:.0f} word rows/s (medians "
                                                f"of {len(passes)} passes)",
                   "persister_ratio_to_raw_copy": f"raw COPY of the same pages and words, in each pass; median pass of "
                                                  f"{_spread(ratios)} (of the words alone: ratio {word_ratio:.3f})"}

        with fresh_env(endpoints) as env:
            figures["ingest_rss_growth_mb_200mb_upload"] = round(ingest_rss_growth_mb(env, work / "logs-rss", work), 1)
        limits["ingest_rss_growth_mb_200mb_upload"] = "multipart parts of 8 MiB, 2 in flight"
    finally:
        if started_stack:  # only what this run started (stop_stack with no names would stop every component)
            stop_stack(stack, started_stack)
    load = (f"load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after "
            f"(other developers' tests share the machine)")
    report(figures, limits, load)


if __name__ == "__main__":
    main()
