"""examples/consumer.py, a downstream reader holding only the JSON Schemas: on a real batch, and across a schema
version bump (a newer producer's extra fields read by the v1 consumer; another major refused, not misread)."""
import json
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest

from common.kafka import build_producer
from demo.processes import client_for, running_services
from demo.sample_batch import render_sample_batch
from schemas.results import FileResult, FileStatus, Page
from schemas.topics import encode, message_headers

pytestmark = pytest.mark.e2e

CONSUMER = Path(__file__).resolve().parents[2] / "examples" / "consumer.py"


def run_consumer(settings, *topics: str) -> tuple[list[dict], list[dict]]:
    """(records read, records rejected) of one run to the end of every partition."""
    args = [sys.executable, str(CONSUMER), "--bootstrap", settings.kafka_bootstrap_servers,
            "--group", f"downstream-{uuid.uuid4().hex[:8]}", "--until-eof"]
    for topic in topics:
        args += ["--topic", topic]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd="/")  # no ocrstream on its path
    assert done.returncode == 0, done.stderr
    return ([json.loads(line) for line in done.stdout.splitlines()],
            [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")])


def test_the_example_consumer_reads_every_topic_of_a_real_batch(isolated_env, settings, tmp_path):
    samples = render_sample_batch(tmp_path / "batch", images=4, pdf_pages=0, seed=7)
    with running_services(isolated_env | {"OCRSTREAM_ENGINE": "fast"}, tmp_path / "logs", workers=1) as services, \
            client_for(services) as client:
        accepted = client.submit([s.path for s in samples], name="downstream", chunk_size=2)
        assert client.wait(accepted["batch_id"], timeout=120)["status"] == "completed"
    read, rejected = run_consumer(settings, settings.topic_batch_events, settings.topic_ocr_chunks,
                                  settings.topic_ocr_results, settings.topic_batch_progress)
    assert rejected == []
    by_schema = Counter(r["schema"] for r in read)
    assert by_schema["batch_events.BatchEvent"] == 1 and by_schema["chunks.ChunkRequested"] == 2
    assert by_schema["results.FileResult"] == 4 and by_schema["progress.BatchProgress"] >= 2
    assert {r["batch_id"] for r in read} == {accepted["batch_id"]}
    final = max((r["value"] for r in read if r["schema"] == "progress.BatchProgress"), key=lambda v: v["version"])
    assert (final["status"], final["succeeded"]) == ("completed", 4)


def test_a_newer_minor_version_is_read_and_another_major_is_refused(settings):
    v1 = FileResult(batch_id="b1", chunk_id="b1.00000", file_id="f1", tenant="t", status=FileStatus.OK,
                    original_name="a.png", sha256="a" * 64, size=10, content_type="image/png", engine="fast",
                    pages=[Page(page_number=1, width=10, height=10, text="hello", mean_confidence=90)])
    # The "v2" producer: schema 1.1 added a top-level and a nested field. Its headers say so.
    v1_1 = json.loads(encode(v1)) | {"schema_version": "1.1", "file_id": "f2", "detected_language": "en"}
    v1_1["pages"][0]["rotation"] = 90
    v1_1_headers = [(k, b"1.1" if k == "ocrstream.schema_version" else v) for k, v in message_headers(v1)]
    # A major bump (say, pages re-shaped): the v1 consumer must refuse it rather than misread it.
    v2_0 = json.loads(encode(v1)) | {"schema_version": "2.0", "file_id": "f3", "pages": {"count": 1}}
    topic = settings.topic_ocr_results
    producer = build_producer(settings, client_id="v2-producer")
    for key, value, headers in [(b"b1", encode(v1), message_headers(v1)),
                                (b"b1", json.dumps(v1_1).encode(), v1_1_headers),
                                (b"b1", json.dumps(v2_0).encode(), None),
                                (b"b1", b'{"schema_version": "1.0", "type": "file_result"}', None)]:
        producer.produce(topic, key=key, value=value, headers=headers)
    assert producer.flush(30) == 0, "every record acknowledged"

    read, rejected = run_consumer(settings, topic)
    assert [r["value"]["file_id"] for r in read] == ["f1", "f2"]
    assert read[1]["schema_version"] == "1.1" and read[1]["value"]["detected_language"] == "en"
    assert read[1]["value"]["pages"][0]["text"] == "hello", "the fields it knows read as before"
    assert len(rejected) == 2
    assert "another major version" in rejected[0]["rejected"] and rejected[0]["offset"] == 2
    assert "does not match results.FileResult" in rejected[1]["rejected"]
