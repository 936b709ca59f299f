"""`ocrstream`: submit, follow and read OCR batches from a terminal or a script.

Exit codes: 0 done; 1 the batch finished with failed files (or failed / was cancelled); 2 a usage or API error.
"""
import csv
import json
import sys
import time
from collections.abc import Iterator
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table
from rich.text import Text

from ocrstream.client import Client
from ocrstream.errors import OcrstreamError
from ocrstream.protocol import TERMINAL_STATUSES

app = typer.Typer(help="Submit batches of images/PDFs for OCR, follow them, read their results.",
                  no_args_is_help=True, add_completion=False)
out = Console()
err = Console(stderr=True)

EXIT_FILES_FAILED = 1
EXIT_ERROR = 2

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout")]


class _Connection:
    """The global options, kept until a command builds its client."""

    url: str | None = None
    ingest_url: str | None = None
    status_url: str | None = None
    api_key: str = ""


_conn = _Connection()


@app.callback()
def _connect(
    url: Annotated[Optional[str], typer.Option(envvar="OCRSTREAM_URL", help="Base URL serving both APIs")] = None,
    ingest_url: Annotated[Optional[str], typer.Option(envvar="OCRSTREAM_INGEST_URL", help="Ingest API URL")] = None,
    status_url: Annotated[Optional[str], typer.Option(envvar="OCRSTREAM_STATUS_URL", help="Status API URL")] = None,
    api_key: Annotated[str, typer.Option(envvar="OCRSTREAM_API_KEY", help="API key (Bearer)")] = "",
) -> None:
    _conn.url, _conn.ingest_url, _conn.status_url, _conn.api_key = url, ingest_url, status_url, api_key


def _client() -> Client:
    if not _conn.api_key:
        _fail("no API key: pass --api-key or set OCRSTREAM_API_KEY")
    try:
        return Client(_conn.url, api_key=_conn.api_key, ingest_url=_conn.ingest_url, status_url=_conn.status_url)
    except ValueError as exc:
        _fail(f"{exc} (--url, or --ingest-url and --status-url; or OCRSTREAM_URL ...)")


def _fail(message: str) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(EXIT_ERROR)


def _print_json(value: object) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False, indent=2) + "\n")


# ---- commands ----------------------------------------------------------------------------------------------

@app.command()
def submit(
    paths: Annotated[list[str], typer.Argument(help="Files, directories (their images/PDFs) or globs")],
    wait: Annotated[bool, typer.Option("--wait", help="Follow the batch to the end with a progress bar")] = False,
    name: Annotated[str, typer.Option(help="A name for the batch")] = "",
    chunk_size: Annotated[Optional[int], typer.Option(help="Files per OCR chunk on average (cut to about equal bytes)")] = None,
    languages: Annotated[Optional[str], typer.Option(help="Tesseract languages, e.g. kor+eng")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait with --wait")] = 3600.0,
    as_json: JsonOpt = False,
) -> None:
    """Submit files as one batch; with --wait, follow it and list the files that failed."""
    with _client() as client:
        try:
            accepted = client.submit(paths, name=name, chunk_size=chunk_size, languages=languages)
        except FileNotFoundError as exc:
            _fail(str(exc))
        batch_id = accepted["batch_id"]
        if not wait:
            _print_json(accepted) if as_json else out.print(
                f"batch [bold]{batch_id}[/]: {accepted['total_files']} files accepted; follow it with "
                f"`ocrstream status {batch_id}`", highlight=False)
            return
        if not as_json:
            err.print(f"batch [bold]{batch_id}[/]: {accepted['total_files']} files accepted", highlight=False)
        final = _follow(client, batch_id, accepted["total_files"], timeout, show=not as_json)
        failures = list(_failed_files(client, batch_id)) if final["failed"] else []
    if as_json:
        _print_json(final | {"failures": failures})
    else:
        _print_summary(final, failures)
    if final["status"] != "completed" or final["failed"]:
        raise typer.Exit(EXIT_FILES_FAILED)


@app.command()
def status(batch_id: str, as_json: JsonOpt = False) -> None:
    """One batch's status, counts and ETA."""
    with _client() as client:
        batch = client.batch(batch_id)
    if as_json:
        _print_json(batch)
        return
    table = Table.grid(padding=(0, 2))
    for key in ("batch_id", "name", "status", "total_files", "succeeded", "failed", "skipped", "percent",
                "eta_seconds", "created_at", "finished_at"):
        table.add_row(Text(key, style="bold"), Text(str(batch.get(key, ""))))
    out.print(table)


@app.command("ls")
def list_batches(
    status_filter: Annotated[Optional[str], typer.Option("--status", help="Only batches in this status")] = None,
    limit: Annotated[int, typer.Option(help="At most this many batches")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """Your batches, newest first."""
    with _client() as client:
        batches = [b for _, b in zip(range(limit), client.batches(status=status_filter, page_size=min(limit, 100)))]
    if as_json:
        _print_json(batches)
        return
    table = Table("batch_id", "name", "status", "files", "failed", "%", "created_at")
    for b in batches:
        table.add_row(b["batch_id"], b.get("name", ""), b["status"], str(b["total_files"]), str(b["failed"]),
                      f"{b['percent']:.0f}", str(b.get("created_at") or ""))
    out.print(table)


@app.command()
def results(
    batch_id: str,
    fmt: Annotated[str, typer.Option("--format", help="jsonl | txt | csv")] = "jsonl",
    words: Annotated[bool, typer.Option("--words", help="Include each word's box and confidence (jsonl)")] = False,
) -> None:
    """Every file's result, streamed page by page to stdout."""
    if fmt not in ("jsonl", "txt", "csv"):
        _fail(f"--format {fmt!r}: choose jsonl, txt or csv")
    with _client() as client:
        write_results(client.results(batch_id, include_words=words), fmt, sys.stdout)


@app.command()
def cancel(batch_id: str, as_json: JsonOpt = False) -> None:
    """Cancel a batch: chunks not started are skipped; results already made are kept."""
    with _client() as client:
        answer = client.cancel(batch_id)
    _print_json(answer) if as_json else out.print(f"batch {batch_id}: cancel requested", highlight=False)


@app.command()
def retry(
    batch_id: str,
    file_ids: Annotated[Optional[list[str]], typer.Option("--file-id", help="Only these files (repeatable)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run a batch's failed files again."""
    with _client() as client:
        answer = client.retry(batch_id, file_ids)
    _print_json(answer) if as_json else out.print(f"batch {batch_id}: retry requested", highlight=False)


@app.command()
def search(
    query: str,
    k: Annotated[int, typer.Option("-k", help="How many pages")] = 10,
    as_json: JsonOpt = False,
) -> None:
    """Pages of your batches most similar in meaning to the query."""
    with _client() as client:
        hits = client.search(query, k)
    if as_json:
        _print_json(hits)
        return
    table = Table("score", "file", "page", "snippet", "batch_id")
    for hit in hits:
        table.add_row(f"{hit['score']:.3f}", hit["original_name"], str(hit["page_number"]),
                      hit["snippet"][:80], hit["batch_id"])
    out.print(table)


dlq_app = typer.Typer(help="The dead-letter topic, for operators: where the server package (ocrstream-server) is "
                      "installed, with the cluster's OCRSTREAM_* settings.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")


def _dlq(argv: list[str]) -> None:
    try:
        from services.dlq.__main__ import main as dlq_main  # the server's tool: it reads and writes Kafka itself
    except ImportError:
        _fail("the dlq commands need the server package: pip install ocrstream-server (or run them where it is)")
    raise typer.Exit(dlq_main(argv))


@dlq_app.command("list")
def dlq_list() -> None:
    """One JSON line per dead-lettered record: its position (partition:offset), source, reason, files."""
    _dlq(["list"])


@dlq_app.command("show")
def dlq_show(position: str) -> None:
    """One record whole, its original value decoded."""
    _dlq(["show", position])


@dlq_app.command("replay")
def dlq_replay(
    positions: Annotated[Optional[list[str]], typer.Argument(help="partition:offset ...")] = None,
    replay_all: Annotated[bool, typer.Option("--all", help="Every record (of --source-topic, if given)")] = False,
    source_topic: Annotated[Optional[str], typer.Option(help="Only records that came from this topic")] = None,
) -> None:
    """Send records again to their source topic, after the cause is fixed (an idempotent effect)."""
    _dlq(["replay", *(positions or []), *(["--all"] if replay_all else []),
          *(["--source-topic", source_topic] if source_topic else [])])


# ---- pieces ------------------------------------------------------------------------------------------------

def _follow(client: Client, batch_id: str, total: int, timeout: float, *, show: bool) -> dict:
    """Wait for the batch's end; while waiting, a live bar: status, files done, files/s, ETA."""
    progress = Progress(TextColumn("[bold]{task.fields[status]:<10}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("[cyan]{task.fields[rate]} files/s"), TextColumn("ETA {task.fields[eta]}"),
                        console=err, disable=not show, refresh_per_second=4)
    started = time.monotonic()
    with progress:
        task = progress.add_task("batch", total=total, status="pending", rate="-.-", eta="-:--")

        def update(status: dict) -> None:
            rate, eta = progress_figures(status, time.monotonic() - started)
            progress.update(task, total=status["total_files"] or total, completed=status["processed_files"],
                            status=status["status"], rate=f"{rate:.1f}" if rate is not None else "-.-",
                            eta=_duration(eta) if eta is not None else "-:--")

        return client.wait(batch_id, timeout=timeout, on_progress=update)


def progress_figures(status: dict, elapsed_s: float) -> tuple[float | None, float | None]:
    """(files/s since submitting, seconds to go): the server's ETA when it gives one, else from that rate."""
    done, total = status["processed_files"], status["total_files"]
    rate = done / elapsed_s if done and elapsed_s > 0 else None
    if status["status"] in TERMINAL_STATUSES:
        return rate, 0.0
    if status.get("eta_seconds") is not None:
        return rate, status["eta_seconds"]
    return rate, (total - done) / rate if rate else None


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


def _failed_files(client: Client, batch_id: str) -> Iterator[dict]:
    for result in client.results(batch_id):
        if result["status"] == "failed":
            yield {"file_id": result["file_id"], "original_name": result["original_name"], "error": result["error"]}


def _print_summary(final: dict, failures: list[dict]) -> None:
    colour = "green" if final["status"] == "completed" and not final["failed"] else "red"
    out.print(f"[{colour}]{final['status']}[/]: {final['succeeded']} ok, {final['failed']} failed, "
              f"{final['skipped']} skipped of {final['total_files']}", highlight=False)
    if failures:
        table = Table("file", "error", "file_id", title="failed files")
        for f in failures:
            table.add_row(f["original_name"], f["error"] or "", f["file_id"])
        out.print(table)


def write_results(results: Iterator[dict], fmt: str, stream) -> None:
    """Results as JSON lines, plain text (a header line per file) or CSV (one row per file)."""
    if fmt == "csv":
        writer = csv.writer(stream)
        writer.writerow(["file_id", "original_name", "status", "page_count", "error", "text"])
    for r in results:
        if fmt == "jsonl":
            stream.write(json.dumps(r, ensure_ascii=False) + "\n")
        elif fmt == "txt":
            stream.write(f"==> {r['original_name']} ({r['status']}) <==\n{r['text'] or r['error'] or ''}\n\n")
        else:
            writer.writerow([r["file_id"], r["original_name"], r["status"], r["page_count"], r["error"] or "",
                             r["text"]])


def main() -> None:
    """Entry point: API errors become one red line and exit code 2 rather than a traceback."""
    try:
        app()
    except OcrstreamError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(EXIT_ERROR)


if __name__ == "__main__":
    main()
