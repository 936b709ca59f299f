"""The `ocrstream` CLI against the four running services: a live progress bar in a pseudo-terminal, the failures
table and exit code, then status/results/search/cancel/retry/ls as a script would use them."""
import asyncio
import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

from demo.processes import running_services
from demo.sample_batch import render_sample_batch
from ocrstream import AsyncClient

pytestmark = pytest.mark.e2e

CLIENT_DIR = Path(__file__).resolve().parents[2] / "clients" / "python"
ENDPOINT_MISSING = "does not offer this endpoint"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _cli_env(services) -> dict[str, str]:
    return os.environ | {
        "OCRSTREAM_INGEST_URL": services["ingest"].probe_url, "OCRSTREAM_STATUS_URL": services["status_api"].probe_url,
        "OCRSTREAM_API_KEY": "dev-key", "PYTHONPATH": str(CLIENT_DIR), "COLUMNS": "120", "TERM": "xterm-256color",
    }


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ocrstream", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def test_cli_follows_a_batch_with_a_live_bar_and_reports_its_failed_file(isolated_env, settings, tmp_path):
    batch_dir = tmp_path / "scans"
    samples = render_sample_batch(batch_dir, images=7, pdf_pages=0, seed=3)
    (batch_dir / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not an image" * 50)  # passes the sniff only
    total = len(samples) + 1
    env = isolated_env | {"OCRSTREAM_ENGINE": "fast"}
    with running_services(env, tmp_path / "logs", workers=1) as services:
        cli_env = _cli_env(services)

        # submit --wait, in a pseudo-terminal: rich draws its live bar only on a terminal.
        child = pexpect.spawn(sys.executable, ["-m", "ocrstream", "submit", str(batch_dir), "--wait",
                                               "--chunk-size", "1", "--name", "cli"],
                              env=cli_env, encoding="utf-8", timeout=300, dimensions=(40, 120))
        child.expect(pexpect.EOF)
        child.close()
        screen = ANSI.sub("", child.before)
        batch_id, accepted = re.search(r"batch ([0-9a-f]{32}): (\d+) files accepted", screen).groups()
        frames = re.findall(r"(\w+) +━+ (\d+)/(\d+) ([\d.-]+) files/s ETA ([\d:-]+)", screen)
        assert frames[0][:3] == ("pending", "0", str(total)), screen  # the live bar, drawn from the start ...
        assert frames[-1][:3] == ("completed", str(total), str(total)) and float(frames[-1][3]) > 0, screen
        assert frames[-1][4] == "0:00:00"  # ... to the end, with a rate and an ETA
        assert re.search(rf"completed: {total - 1} ok, 1 failed", screen), screen
        assert re.search(r"failed files[\s\S]*broken\.png", screen), screen
        assert int(accepted) == total
        assert child.exitstatus == 1, "a batch with a failed file exits non-zero"

        status = _cli(cli_env, "status", batch_id, "--json")
        assert status.returncode == 0, status.stderr
        body = json.loads(status.stdout)
        assert (body["status"], body["succeeded"], body["failed"]) == ("completed", total - 1, 1)

        as_csv = _cli(cli_env, "results", batch_id, "--format", "csv")
        rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
        assert sorted(r["original_name"] for r in rows) == sorted([s.path.name for s in samples] + ["broken.png"])
        assert {r["original_name"]: r["status"] for r in rows}["broken.png"] == "failed"
        as_jsonl = _cli(cli_env, "results", batch_id, "--format", "jsonl").stdout.splitlines()
        assert sorted(json.loads(line)["file_id"] for line in as_jsonl) == sorted(r["file_id"] for r in rows)
        as_txt = _cli(cli_env, "results", batch_id, "--format", "txt").stdout
        assert as_txt.count("==> ") == total

        hits = _cli(cli_env, "search", "invoice total amount", "-k", "3", "--json")
        assert hits.returncode == 0, hits.stderr
        assert {h["batch_id"] for h in json.loads(hits.stdout)} == {batch_id}

        # A finished batch cannot be cancelled (the CLI says why); its failed file can be retried.
        cancelled = _cli(cli_env, "cancel", batch_id, "--json")
        assert cancelled.returncode == 2 and "409 batch_finished" in cancelled.stderr, cancelled.stderr
        retried = _cli(cli_env, "retry", batch_id, "--json")
        assert retried.returncode == 0 and json.loads(retried.stdout)["attempt"] == 2, retried.stderr
        # An endpoint another part of the project adds: either it works, or the CLI says clearly it is missing.
        listed = _cli(cli_env, "ls", "--json")
        assert listed.returncode == 0 or (listed.returncode == 2 and ENDPOINT_MISSING in listed.stderr), \
            (listed.returncode, listed.stderr)

        unknown = _cli(cli_env, "status", "0" * 32)
        assert unknown.returncode == 2 and "not found" in " ".join(unknown.stderr.split()) and "Traceback" not in unknown.stderr

        async def read_async() -> tuple[dict, list[dict]]:
            async with AsyncClient(ingest_url=services["ingest"].probe_url, api_key="dev-key",
                                   status_url=services["status_api"].probe_url) as client:
                final = await client.wait(batch_id, timeout=30)
                return final, [r async for r in client.results(batch_id, page_size=3)]

        final, results = asyncio.run(read_async())
        assert final["status"] == "completed" and len(results) == total
