"""`make demo`: the dev stack, the four services (two OCR workers), a sample batch end to end.

Leaves the stack and services running so the README's curl examples work; `make stop` ends them.
"""
import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from deploy.devstack import StackSettings, stack_endpoints, start_stack
from demo.processes import build_services, client_for, scrape_histogram
from demo.sample_batch import render_sample_batch

DEMO_DIR = Path(__file__).resolve().parents[1] / ".demo"
PIDS = DEMO_DIR / "pids.json"


def stop_services() -> None:
    """SIGTERM the services a previous demo started (by their recorded PIDs), SIGKILL stragglers."""
    if not PIDS.exists():
        return
    pids = json.loads(PIDS.read_text())
    for name, pid in pids.items():
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        print(f"stopping {name} (pid {pid})")
    deadline = time.monotonic() + 30
    for pid in pids.values():
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)  # poll interval of the deadline loop
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    PIDS.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of ours still answers kill(0): reap it
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


def run_demo(images: int) -> int:
    stack = StackSettings()
    start_stack(stack)
    env = stack_endpoints(stack)
    stop_services()  # a second `make demo` starts fresh services on the same stack
    services = build_services(env, DEMO_DIR / "logs", workers=2)
    for service in services.values():
        service.start()
    PIDS.write_text(json.dumps({name: s.pid for name, s in services.items()}))
    for service in services.values():
        service.wait_ready()
    print("services ready:", ", ".join(f"{n} pid {s.pid}" for n, s in services.items()))
    print(f"console: {services['status_api'].probe_url}/ui/  (API key: dev-key; watch the sample batch there)")

    samples = render_sample_batch(DEMO_DIR / "sample-batch", images=images, pdf_pages=3)
    with client_for(services) as client:
        started = time.perf_counter()
        accepted = client.submit([s.path for s in samples], name="demo", chunk_size=3)
        accepted_s = time.perf_counter() - started
        print(f"202 in {accepted_s * 1000:.0f} ms: batch {accepted['batch_id']} "
              f"({accepted['total_files']} files, {accepted['total_chunks']} chunks)")
        final = client.wait(accepted["batch_id"], timeout=900, on_progress=_print_progress)
        elapsed = time.perf_counter() - started
        print()
        results = client.results(accepted["batch_id"])
        print(f"{'file':<28} {'status':<8} {'pages':>5}  first line")
        for r in sorted(results, key=lambda r: r["original_name"]):
            first = next((line for line in r["text"].splitlines() if line.strip()), r["error"] or "")
            print(f"{r['original_name']:<28} {r['status']:<8} {r['page_count']:>5}  {first[:60]}")
        query = samples[0].lines[0]
        hits = client.search(query, k=1)
        print(f"\nsearch {query!r}:\n  → {hits[0]['original_name']} page {hits[0]['page_number']} "
              f"(score {hits[0]['score']:.3f}): {hits[0]['snippet'][:70]!r}" if hits else "\nsearch: no hits")
    print(f"\n{final['succeeded']}/{final['total_files']} files completed, {final['failed']} failed, "
          f"in {elapsed:.1f} s ({final['total_files'] / elapsed:.2f} files/s end to end)")
    workers = [s.probe_url for n, s in services.items() if n.startswith("ocr_worker")]
    ocr_s, ocr_n = scrape_histogram(workers, "ocrstream_worker_file_seconds")
    txn_s, txn_n = scrape_histogram([services["persister"].probe_url], "ocrstream_transaction_seconds", kind="persist")
    print(f"202 in {accepted_s * 1000:.0f} ms; OCR {ocr_s / max(ocr_n, 1):.2f} s per file (fetch+decode+OCR, "
          f"{ocr_n} files on {len(workers)} workers); persister {txn_s / max(txn_n, 1) * 1000:.1f} ms per DB "
          f"transaction ({txn_n} transactions)")
    print(f"status API: {services['status_api'].probe_url}   ingest: {services['ingest'].probe_url}   "
          f"logs: {DEMO_DIR / 'logs'}   stop everything: make stop")
    return 0 if final["status"] == "completed" and final["succeeded"] == len(samples) else 1


def _print_progress(status: dict) -> None:
    eta = f", ETA {status['eta_seconds']:.0f} s" if status.get("eta_seconds") else ""
    print(f"\r{status['status']:<10} {status['processed_files']:>3}/{status['total_files']} files "
          f"({status['percent']:5.1f} %){eta}      ", end="", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stop", action="store_true", help="stop the services a previous demo started")
    parser.add_argument("--images", type=int, default=12, help="rendered images in the sample batch (plus one PDF)")
    args = parser.parse_args()
    if args.stop:
        stop_services()
        return 0
    return run_demo(args.images)


if __name__ == "__main__":
    sys.exit(main())
