"""`python -m bench.status_load`: one status API process under load from Debian's `wrk` (C, not the bottleneck).

1. Status GET `/v1/batches/{id}` throughput (wrk -t2 -c16) beside `/healthz`'s, measured in the same run: the
   ceiling of the HTTP stack alone. Then p50/p99 of the status GET at a fixed ~200 rps: wrk has no rate flag, so a
   Lua `delay()` paces each of 4 connections to one request per 20 ms (latency is wrk's, from send to answer).
2. Search p50/p99 over N synthetic pages (default 100,000) COPYed straight into the bench's own schema (random
   unit 512-d embeddings, Korean/English words), the HNSW and text indexes built after the load; 4 connections.
Topics, bucket and DB schema are the run's own (bench.environment.own_env) on the shared dev stack.
Writes its section of bench/results.json and bench/RESULTS.md.
"""
import argparse
import json
import os
import random
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from datetime import datetime, timezone

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

from bench.environment import bench_run, status_api_process
from bench.report import merge_results
from bench.sse_idle import publish
from common.settings import Settings
from schemas.progress import BatchProgress, BatchStatus

SECTION = "status_load"
STATUS_RPS_GOAL = 1000
PACED_RPS = 200
PACED_CONNECTIONS = 4  # each waits PACED_CONNECTIONS/PACED_RPS s after an answer: at most 200 rps in all
PACED_P99_LIMIT_MS = 10.0
SEARCH_P99_LIMIT_MS = 50.0
AUTH = "Authorization: Bearer dev-key"
WORDS = ("청구서", "계약서", "합계", "금액", "서울특별시", "주식회사", "납부", "기한", "영수증", "세금", "부가가치세",
         "대한민국", "은행", "계좌", "번호", "날짜", "invoice", "contract", "total", "amount", "payment", "due",
         "receipt", "tax", "bank", "account", "number", "date", "company", "address", "signature", "page")
SEARCH_QUERIES = ("계약서 합계", "invoice total", "부가가치세", "payment due date", "서울특별시 주식회사", "2024",
                  "bank account number", "영수증")
# Prints wrk's figures as one JSON line; latency is in microseconds.
DONE_LUA = """
done = function(summary, latency, requests)
  io.write(string.format('WRKJSON {"requests": %d, "duration_us": %d, "non2xx": %d, "errors": %d, '
    .. '"p50_us": %d, "p99_us": %d}\\n', summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""
PACED_LUA = "delay = function() return {delay_ms} end\n"
# Each request takes the next query of the list (URL-encoded by the bench).
ROTATE_LUA = """
paths = {{{paths}}}
i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i % #paths) + 1])
end
"""


def wrk(url: str, *, threads: int, connections: int, seconds: int, lua: str = "") -> dict:
    """wrk's request count, rps, non-2xx and p50/p99 (ms) for one run."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(lua + DONE_LUA)
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "-H", AUTH, "-s", script.name,
                          url], capture_output=True, text=True, check=True).stdout
    os.unlink(script.name)
    raw = json.loads(next(line for line in out.splitlines() if line.startswith("WRKJSON "))[8:])
    return {"requests": raw["requests"], "rps": round(raw["requests"] / (raw["duration_us"] / 1e6), 1),
            "non2xx": raw["non2xx"], "socket_errors": raw["errors"],
            "p50_ms": round(raw["p50_us"] / 1000, 2), "p99_ms": round(raw["p99_us"] / 1000, 2)}


def wait_for_batch(base: str, batch_id: str, deadline_s: float = 60) -> None:
    deadline = time.monotonic() + deadline_s
    request = urllib.request.Request(f"{base}/v1/batches/{batch_id}", headers={"Authorization": "Bearer dev-key"})
    while True:
        try:
            with urllib.request.urlopen(request, timeout=5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)  # polling the condition (batch visible), bounded by the deadline


def vocabulary(rng: random.Random, size: int = 20_000) -> list[str]:
    """Made-up Hangul (2-3 syllables) and Latin (4-8 letters) words: a spread of trigrams like real text's."""
    hangul = ["".join(chr(0xAC00 + rng.randrange(11172)) for _ in range(rng.randint(2, 3))) for _ in range(size // 2)]
    latin = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(4, 8)))
             for _ in range(size - size // 2)]
    return hangul + latin


def page_text(rng: random.Random, vocab: list[str], n: int) -> str:
    words = rng.choices(vocab, k=rng.randint(30, 80))
    if rng.random() < 0.02:  # the searched words on a few pages, not on all (a 32-word corpus matches everything)
        words[rng.randrange(len(words))] = " ".join(rng.sample(WORDS, 3))
    words.insert(rng.randrange(len(words)), str(n))  # a number on every page, like invoice numbers
    return " ".join(words)


SEARCH_INDEXES = ("pages_embedding_hnsw", "pages_text_compact_trgm")  # dropped for the COPY, built after


def load_pages(settings: Settings, tenant: str, pages: int, pages_per_file: int = 10) -> dict:
    """COPY `pages` synthetic pages (and their files rows) into the run's schema; indexes built after. Seconds."""
    rng, vectors = random.Random(22), np.random.default_rng(22)
    vocab = vocabulary(rng)
    with psycopg.connect(settings.database_url, autocommit=True,
                         options=f"-c search_path={settings.database_schema},public") as conn:
        register_vector(conn)
        definitions = [row[0] for row in conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = %s AND tablename = 'pages' AND indexname = ANY(%s)",
            (settings.database_schema, list(SEARCH_INDEXES)))]
        for name in SEARCH_INDEXES:
            conn.execute(f"DROP INDEX IF EXISTS {name}")
        started = time.monotonic()
        files = pages // pages_per_file
        with conn.cursor() as cur, cur.copy(
                "COPY files (file_id, batch_id, chunk_id, tenant, original_name, sha256, size_bytes, content_type,"
                " status, engine, page_count, timings, attempt) FROM STDIN") as copy:
            for f in range(files):
                copy.write_row((f"f{f}", f"b{f // 100}", f"c{f // 10}", tenant, f"scan-{f}.pdf", f"{f:064x}", 1000,
                                "application/pdf", "ok", "tesseract", pages_per_file, "{}", 1))
        with conn.cursor() as cur, cur.copy(
                "COPY pages (file_id, page_number, batch_id, tenant, width, height, text, mean_confidence, embedding)"
                " FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(["text", "int4", "text", "text", "int4", "int4", "text", "float4", "vector"])
            total = files * pages_per_file
            for start in range(0, total, 10_000):
                block = vectors.standard_normal((min(10_000, total - start), 512), dtype=np.float32)
                block /= np.linalg.norm(block, axis=1, keepdims=True)
                for offset, vector in enumerate(block):
                    n = start + offset
                    f = n // pages_per_file
                    copy.write_row((f"f{f}", n % pages_per_file + 1, f"b{f // 100}", tenant, 2480, 3508,
                                    page_text(rng, vocab, n), 0.9, vector))
        loaded = time.monotonic()
        conn.execute("SET maintenance_work_mem = '512MB'")
        for definition in definitions:
            conn.execute(definition)
        conn.execute("ANALYZE pages; ANALYZE files")
        return {"pages": files * pages_per_file, "copy_s": round(loaded - started, 1),
                "index_build_s": round(time.monotonic() - loaded, 1)}


def measure(base: str, batch_id: str, seconds: int) -> dict:
    status_url = f"{base}/v1/batches/{batch_id}"
    return {
        "healthz": wrk(f"{base}/healthz", threads=2, connections=16, seconds=seconds),
        "status": wrk(status_url, threads=2, connections=16, seconds=seconds),
        "status_paced": wrk(status_url, threads=2, connections=4, seconds=seconds,
                            lua=PACED_LUA.format(delay_ms=PACED_CONNECTIONS * 1000 // PACED_RPS)),
    }


def search_load(base: str, seconds: int) -> dict:
    paths = ", ".join(f'"/v1/search?q={urllib.parse.quote(q)}"' for q in SEARCH_QUERIES)
    return wrk(f"{base}/v1/search", threads=2, connections=4, seconds=seconds, lua=ROTATE_LUA.format(paths=paths))


def verdict(ok: bool) -> str:
    return "OK" if ok else "OVER"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pages", type=int, default=100_000)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    with bench_run() as (run, env, settings):
        now = datetime.now(timezone.utc)
        batch_id = f"{run}-status"
        publish(settings, [BatchProgress(batch_id=batch_id, tenant="default", status=BatchStatus.PROCESSING,
                                         total_files=100, total_chunks=10, succeeded=40, failed=1, skipped=0,
                                         created_at=now, updated_at=now, version=1)])
        corpus = load_pages(settings, "default", args.pages)  # some hundred MB: bench_run drops them afterwards
        with status_api_process(env, "load") as (_service, port):
            base = f"http://127.0.0.1:{port}"
            wait_for_batch(base, batch_id)
            status = measure(base, batch_id, args.seconds)
            search_load(base, 3)  # warm-up: the embedding model and the index pages in memory
            search = search_load(base, max(args.seconds, 20))

    healthz, get, paced = status["healthz"], status["status"], status["status_paced"]
    figures = {
        "healthz_c16": healthz, "status_get_c16": get, "status_get_rps_goal": STATUS_RPS_GOAL,
        "status_get_paced": paced | {"target_rps": PACED_RPS, "connections": PACED_CONNECTIONS},
        "paced_p99_limit_ms": PACED_P99_LIMIT_MS,
        "search_corpus": corpus, "search_c4": search, "search_p99_limit_ms": SEARCH_P99_LIMIT_MS,
        "publish_to_sse_p95": "not measured here; see sse_idle (publish→event at 1,000 streams)",
        "load_generator": "wrk 4.1.0 (Debian), -t2", "cores": os.cpu_count(),
    }
    lines = [
        f"status GET /v1/batches/{{id}}, one process, wrk -t2 -c16 {args.seconds} s: {get['rps']} rps "
        f"(goal ≥ {STATUS_RPS_GOAL}): {'OK' if get['rps'] >= STATUS_RPS_GOAL else 'UNDER'}; "
        f"/healthz in the same run {healthz['rps']} rps (the HTTP stack's ceiling); non-2xx {get['non2xx']}",
        f"status GET paced to ≤ {PACED_RPS} rps ({PACED_CONNECTIONS} connections, Lua delay of "
        f"{PACED_CONNECTIONS * 1000 // PACED_RPS} ms after each answer; measured {paced['rps']} rps): "
        f"p50 {paced['p50_ms']} ms, p99 {paced['p99_ms']} ms (limit < {PACED_P99_LIMIT_MS} ms): "
        f"{verdict(paced['p99_ms'] < PACED_P99_LIMIT_MS)}",
        f"search over {corpus['pages']:,} synthetic pages (COPY {corpus['copy_s']} s, indexes {corpus['index_build_s']} s), "
        f"wrk -c4: {search['rps']} rps, p50 {search['p50_ms']} ms, p99 {search['p99_ms']} ms "
        f"(limit < {SEARCH_P99_LIMIT_MS} ms): {verdict(search['p99_ms'] < SEARCH_P99_LIMIT_MS)}; non-2xx {search['non2xx']}",
        "persisted result → SSE event p95: not measured by this bench (sse_idle measures publish→event)",
    ]
    print("\n".join(lines))
    merge_results(SECTION, figures, ["## Status API under load (wrk)", "", *(f"- {line}" for line in lines)])


if __name__ == "__main__":
    main()
