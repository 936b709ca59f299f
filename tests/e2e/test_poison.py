"""One poisoned file never stops a partition: a file whose OCR segfaults, hangs, blows memory or raises fails
alone, with its reason, after the configured tries; the rest of its batch and the batch behind it complete;
the worker process is the same one throughout; Postgres and the status counts agree.

The OCR engine is tests/poison_engine.py (the fast engine, except for pages marked by their top-left pixel).
"""
import time
import uuid
from pathlib import Path

import pytest
from ocrstream import cli
from typer.testing import CliRunner

from common.kafka import read_topic
from common.settings import Settings
from demo.processes import client_for, isolated_env, running_services
from schemas.results import FailureReason
from schemas.topics import Topic, decode
from services.dlq.replay import list_dead_letters
from tests import poison_engine
from tests.helpers import file_row_counts

pytestmark = pytest.mark.e2e

OCR_ATTEMPTS = 2
POISONS = {  # the marker, the failure's code, and what its reason must tell a person
    "segfault": (poison_engine.SEGFAULT, FailureReason.OCR_CRASHED, "the OCR process died (killed by SIGSEGV)"),
    "hang": (poison_engine.HANG, FailureReason.OCR_TIMEOUT, "OCR took longer than the limit of 4 s"),
    "memory": (poison_engine.ALLOCATE, FailureReason.OCR_OUT_OF_MEMORY, "over the limit of 1024 MiB"),
    "exception": (poison_engine.RAISE, FailureReason.TRANSFORM_ERROR, "RuntimeError: the engine has a bug"),
}


@pytest.fixture(scope="module")
def pipeline(stack_endpoints, tmp_path_factory):
    """One pipeline (ingest, one OCR worker, persister, status API) shared by every poison kind."""
    env = isolated_env(stack_endpoints, uuid.uuid4().hex[:10]) | {
        "OCRSTREAM_ENGINE": "tests.poison_engine:build",
        "OCRSTREAM_OCR_ATTEMPTS": str(OCR_ATTEMPTS),
        "OCRSTREAM_OCR_FILE_TIMEOUT_S": "4",
        "OCRSTREAM_OCR_MEMORY_LIMIT_MB": "1024",
        "OCRSTREAM_TEST_FIXED_FLAG": str(tmp_path_factory.mktemp("flag") / "fixed"),
    }
    with running_services(env, tmp_path_factory.mktemp("logs"), workers=1) as services, \
            client_for(services) as client:
        yield env, services, client


def _images(folder, markers):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, marker in enumerate(markers):
        path = folder / f"{i:02d}_{'poison' if marker else 'good'}.png"
        poison_engine.poison_image(marker or (i, i, i)).save(path)
        paths.append(path)
    return paths


@pytest.mark.parametrize("kind", list(POISONS))
def test_a_poisoned_file_fails_alone_after_its_tries(pipeline, tmp_path, monkeypatch, kind):
    env, services, client = pipeline
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    marker, code, reason = POISONS[kind]
    worker = services["ocr_worker-1"]
    pid = worker.pid
    # The poison sits in the middle of its chunk (one chunk of 4), with good files before and after it.
    poisoned = client.submit(_images(tmp_path / "poisoned", [None, marker, None, None]), name=kind, chunk_size=4)
    behind = client.submit(_images(tmp_path / "behind", [None] * 3), name=f"after-{kind}", chunk_size=3)
    final = client.wait(poisoned["batch_id"], timeout=240)
    after = client.wait(behind["batch_id"], timeout=120)

    assert after["status"] == "completed" and after["succeeded"] == 3
    assert final["status"] == "completed" and (final["succeeded"], final["failed"]) == (3, 1)
    assert worker.alive() and worker.pid == pid, "the worker process itself never died"
    rows = file_row_counts(settings, poisoned["batch_id"])
    assert rows["by_status"] == {"ok": 3, "failed": 1} and set(rows["by_id"].values()) == {1}

    failed = [r for r in list(client.results(poisoned["batch_id"])) if r["status"] == "failed"]
    assert [r["original_name"] for r in failed] == ["01_poison.png"]
    assert f"after {OCR_ATTEMPTS} tries" in failed[0]["error"] and reason in failed[0]["error"], failed[0]["error"]
    results = [decode(Topic.OCR_RESULTS, m.value()) for m in read_topic(settings, settings.topic_ocr_results)]
    [poison_result] = [r for r in results if r.batch_id == poisoned["batch_id"] and r.status == "failed"]
    assert poison_result.error_code is code, poison_result.error
    dead = [decode(Topic.OCR_DLQ, m.value()) for m in read_topic(settings, settings.topic_ocr_dlq)]
    assert [d.file_ids for d in dead if poison_result.file_id in d.file_ids] == [[poison_result.file_id]]


def test_a_dead_lettered_file_replayed_after_the_fix_is_persisted_exactly_once(pipeline, tmp_path, monkeypatch):
    env, services, client = pipeline
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    batch = client.submit(_images(tmp_path / "b", [None, poison_engine.RAISE_UNLESS_FLAG]), name="replay")
    assert client.wait(batch["batch_id"], timeout=120)["failed"] == 1
    [letter] = [d for d in list_dead_letters(settings) if d.record.file_ids
                and decode(Topic.OCR_CHUNKS, d.original_value()).batch_id == batch["batch_id"]]

    Path(env["OCRSTREAM_TEST_FIXED_FLAG"]).touch()  # the cause is fixed
    for _ in range(2):  # a second replay changes nothing more
        replayed = CliRunner().invoke(cli.app, ["dlq", "replay", letter.position])
        assert replayed.exit_code == 0 and '"replayed": 1' in replayed.output, replayed.output

    def persisted():
        return file_row_counts(settings, batch["batch_id"])

    deadline = time.monotonic() + 120
    while (status := client.batch(batch["batch_id"]))["succeeded"] != 2:
        assert time.monotonic() < deadline, (status, persisted())
        time.sleep(0.2)  # poll interval of the deadline loop
    assert (status["status"], status["failed"]) == ("completed", 0)
    rows = persisted()
    assert rows["by_status"] == {"ok": 2} and set(rows["by_id"].values()) == {1}, "exactly one row per file"
