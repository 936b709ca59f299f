"""Where every benchmark writes its figures: bench/results.json (one key per benchmark) and its own section of
bench/RESULTS.md, the other benchmarks' sections kept."""
import json
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
