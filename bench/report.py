"""Where every benchmark writes its figures: bench/results.json (one key per benchmark) and its own section of
bench/RESULTS.md, the other benchmarks' sections kept. `python -m bench.report` (make bench) runs them all."""
import argparse
import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent


def merge_results(section: str, data: dict, markdown: list[str]) -> None:
    """bench/results.json[section] = data; the `section` part of bench/RESULTS.md replaced, the rest kept."""
    json_path, md_path = BENCH_DIR / "results.json", BENCH_DIR / "RESULTS.md"
    results = json.loads(json_path.read_text("utf-8")) if json_path.exists() else {}
    results[section] = data
    json_path.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", "utf-8")
    begin, end = f"<!-- {section}:begin -->", f"<!-- {section}:end -->"
    block = "\n".join([begin, *markdown, end])
    text = md_path.read_text("utf-8") if md_path.exists() else "# Benchmark results\n"
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    md_path.write_text(text, "utf-8")


BENCHMARKS = ("pipeline", "quality", "poison", "sse_idle", "console", "large_batch", "status_load")  # each `python -m bench.<name>`


def machine() -> dict:
    """What the figures were measured on."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown")
    mem_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:"))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=BENCH_DIR, capture_output=True, text=True)
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem_kib / 2**20, 1),
            "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
            "load_average_1m_at_start": os.getloadavg()[0], "commit": commit.stdout.strip() or "unknown",
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def main(argv: list[str] | None = None) -> int:
    """`make bench`: every benchmark in one go, bench/RESULTS.md and bench/results.json regenerated from scratch,
    headed by the machine they ran on. A benchmark that does not record its own section gets its printed lines."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--only", nargs="*", choices=BENCHMARKS, default=list(BENCHMARKS))
    args = parser.parse_args(argv)
    if set(args.only) == set(BENCHMARKS):  # a partial run keeps the other benchmarks' sections
        for stale in (BENCH_DIR / "results.json", BENCH_DIR / "RESULTS.md"):
            stale.unlink(missing_ok=True)
    host = machine()
    merge_results("machine", host, ["## Machine", "", *(f"- {key}: {value}" for key, value in host.items())])
    failed = []
    for name in args.only:
        print(f"=== bench.{name} ===", flush=True)
        run = subprocess.run([sys.executable, "-m", f"bench.{name}"], cwd=BENCH_DIR.parent, capture_output=True,
                             text=True)
        sys.stdout.write(run.stdout)
        sys.stderr.write(run.stderr[-4000:] if run.returncode else "")
        recorded = json.loads((BENCH_DIR / "results.json").read_text("utf-8"))
        if run.returncode != 0:
            failed.append(name)
            merge_results(name, {"failed": run.returncode}, [f"## bench/{name}.py", "",
                                                            f"- FAILED (exit {run.returncode}); see its output"])
        elif name not in recorded:
            lines = [line for line in run.stdout.splitlines() if line.strip()]
            merge_results(name, {"printed": lines}, [f"## bench/{name}.py", "", *(f"- {line}" for line in lines)])
    print(f"bench/RESULTS.md regenerated; failed: {', '.join(failed) or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
