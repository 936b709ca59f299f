"""The OCR worker on the real broker and S3: one transaction per chunk, one result per file, bad input
failed with a reason or dead-lettered, and the group's offsets moved exactly past what was processed."""
import io
import threading
import time
import uuid
from contextlib import ExitStack

import pytest
from confluent_kafka import Consumer, TopicPartition

from common.embedding import build_embedder
from common.kafka import build_producer, produce_and_flush, read_topic
from common.storage import ObjectStore, build_s3_client
from demo.processes import wait_for_settled_group
from demo.sample_batch import character_error_rate, render_sample_batch
from schemas.batch_events import BatchOptions
from schemas.chunks import ChunkRequested, StoredFile
from schemas.results import FailureReason, FileResult, FileStatus
from schemas.topics import Topic, decode, encode
from services.ocr_worker.__main__ import build_worker
from services.ocr_worker.settings import WorkerSettings
from services.ocr_worker.supervisor import OcrSupervisor, OcrTryFailed

pytestmark = pytest.mark.integration


def upload(settings, _s3, name: str, data: bytes, content_type: str) -> StoredFile:
    file_id = uuid.uuid4().hex
    stored = ObjectStore(settings).put_stream(settings.s3_bucket, f"default/b/{file_id}", io.BytesIO(data), content_type=content_type)
    return StoredFile(file_id=file_id, bucket=stored.bucket, key=stored.key, sha256=stored.sha256, size=stored.size,
                      content_type=content_type, original_name=name)


def test_an_ocr_child_that_dies_loading_its_models_is_a_lost_try_that_names_its_death():
    # The child cannot load (an unknown embedding model), exits, and its end of the pipe closes: the start must
    # say so as a lost try (a file's tries, or the worker's start), not let the pipe's bare EOFError escape.
    supervisor = OcrSupervisor(engine="fast", embedder="no-such-model", default_languages="eng",
                               max_pages_per_file=10, file_timeout_s=5, memory_limit_bytes=1 << 30)
    try:
        with pytest.raises(OcrTryFailed, match=r"the OCR child did not start \(exit code 1\)") as failed:
            supervisor.start()
        assert failed.value.code is FailureReason.OCR_CRASHED
    finally:
        supervisor.stop()


def test_chunks_become_results_in_transactions(settings, tmp_path):
    settings = WorkerSettings(worker_id=f"w-{uuid.uuid4().hex[:6]}", worker_group=f"g-{uuid.uuid4().hex}")
    s3 = build_s3_client(settings)
    samples = render_sample_batch(tmp_path, images=2, pdf_pages=2, seed=3)
    files = [upload(settings, s3, s.path.name, s.path.read_bytes(), s.content_type) for s in samples]
    garbage = upload(settings, s3, "broken.png", b"\x89PNG\r\n\x1a\n but not really", "image/png")
    gone = upload(settings, s3, "deleted.png", samples[0].path.read_bytes(), samples[0].content_type)
    s3.remove_object(settings.s3_bucket, gone.key)
    klingon = upload(settings, s3, "klingon.png", samples[0].path.read_bytes(), samples[0].content_type)
    chunks = [ChunkRequested(batch_id="b", chunk_id="b.00000", tenant="default", files=files[:2]),
              ChunkRequested(batch_id="b", chunk_id="b.00001", tenant="default", files=[files[2], garbage, gone]),
              ChunkRequested(batch_id="b", chunk_id="b.00002", tenant="default", files=[klingon],
                             options=BatchOptions(languages="tlh"))]
    records = [(settings.topic_ocr_chunks, c.chunk_id.encode(), encode(c)) for c in chunks]
    records.append((settings.topic_ocr_chunks, b"junk", b"\x00 not json"))
    produce_and_flush(build_producer(settings, client_id="seed"), records, timeout=10)

    stop = threading.Event()
    with ExitStack() as stack:
        thread = threading.Thread(target=build_worker(settings, stack).run, args=(stop,), daemon=True)
        thread.start()
        try:
            results: list[FileResult] = [decode(Topic.OCR_RESULTS, m.value()) for m in
                                         read_topic(settings, settings.topic_ocr_results, expected=6, deadline_s=180)]
        finally:
            stop.set()
            thread.join(60)

    assert sorted(r.file_id for r in results) == sorted(f.file_id for f in files + [garbage, gone, klingon])
    by_name = {r.original_name: r for r in results}
    assert by_name["broken.png"].status is FileStatus.FAILED and by_name["broken.png"].error
    assert by_name["broken.png"].error_code is FailureReason.UNDECODABLE
    assert by_name["deleted.png"].status is FileStatus.FAILED and "no longer exists" in by_name["deleted.png"].error
    assert by_name["deleted.png"].error_code is FailureReason.OBJECT_MISSING
    assert by_name["klingon.png"].status is FileStatus.FAILED and "tlh" in by_name["klingon.png"].error
    assert by_name["klingon.png"].error_code is FailureReason.LANGUAGE_UNAVAILABLE
    embedder = build_embedder()
    for sample in samples:
        r = by_name[sample.path.name]
        assert r.status is FileStatus.OK and len(r.pages) == len(sample.pages)
        assert all(len(p.embedding) == 512 and p.words for p in r.pages)
        # A chunk's pages are embedded in one call: each vector must still be its own page's.
        for page, alone in zip(r.pages, embedder.embed([p.text for p in r.pages])):
            assert sum(a * b for a, b in zip(page.embedding, alone)) > 0.999
        assert r.timings.embed_ms > 0 and r.timings.ocr_ms > 0
        text = "\n".join(p.text for p in r.pages)
        assert character_error_rate(" ".join(sample.lines), text) < 0.15, text
    dead = [decode(Topic.OCR_DLQ, m.value()) for m in read_topic(settings, settings.topic_ocr_dlq)]
    assert len(dead) == 1 and dead[0].source_topic == settings.topic_ocr_chunks and "JSON" in dead[0].reason

    checker = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": settings.worker_group})
    committed = checker.committed([TopicPartition(settings.topic_ocr_chunks, p) for p in range(3)], timeout=10)
    low_high = [checker.get_watermark_offsets(tp, timeout=10) for tp in committed]
    checker.close()
    for tp, (_low, high) in zip(committed, low_high):
        # Past everything consumed (the log end) on partitions that had records; nothing committed elsewhere.
        assert tp.offset == (high if high > 0 else -1001), (tp, high)


def _run_worker(settings, records, *, until, ocr_factory=None, deadline_s: float = 120):
    """A worker thread over `records` (produced to the chunks topic first) until `until(results)` holds."""
    produce_and_flush(build_producer(settings, client_id="seed"), records, timeout=10)
    stop = threading.Event()
    with ExitStack() as stack:
        worker = build_worker(settings, stack)
        if ocr_factory:
            worker._ocr = ocr_factory(worker._ocr)
        thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
        thread.start()
        deadline = time.monotonic() + deadline_s
        try:
            while True:
                results = [decode(Topic.OCR_RESULTS, m.value()) for m in
                           read_topic(settings, settings.topic_ocr_results, expected=1, deadline_s=deadline_s)]
                if until(results):
                    return results
                assert time.monotonic() < deadline, f"not there after {deadline_s} s: {results}"
        finally:
            stop.set()
            thread.join(60)


def _fast_settings(**overrides) -> WorkerSettings:
    return WorkerSettings(worker_id=f"w-{uuid.uuid4().hex[:6]}", worker_group=f"g-{uuid.uuid4().hex}", engine="fast",
                          **overrides)


def test_a_chunk_whose_transform_keeps_raising_goes_to_the_dlq_and_the_partition_moves_on(settings):
    settings = _fast_settings(chunk_attempts=3, topic_partitions=1)
    s3 = build_s3_client(settings)
    files = [upload(settings, s3, f"{i}.png", _png(i), "image/png") for i in range(3)]
    poisoned = ChunkRequested(batch_id="b", chunk_id="b.00000", tenant="default", files=files[:2])
    behind = ChunkRequested(batch_id="b", chunk_id="b.00001", tenant="default", files=files[2:])
    tries: list[str] = []

    class RaisingOnFirstChunk:  # the real transform, with a bug that hits one chunk
        def __init__(self, real):
            self._real = real

        def ocr_chunk(self, chunk, wait, partitions_for_rest):
            if chunk.chunk_id == poisoned.chunk_id:
                tries.append(chunk.chunk_id)
                raise KeyError("a bug in the transform")
            return self._real.ocr_chunk(chunk, wait, partitions_for_rest)

        def failed_chunk(self, *args):
            return self._real.failed_chunk(*args)

        def prefetch(self, chunks):
            return self._real.prefetch(chunks)

    records = [(settings.topic_ocr_chunks, c.chunk_id.encode(), encode(c)) for c in (poisoned, behind)]
    results = _run_worker(settings, records, until=lambda rs: len(rs) >= 3, ocr_factory=RaisingOnFirstChunk)

    assert len(tries) == 3, "tried chunk_attempts times, then dead-lettered"
    by_id = {r.file_id: r for r in results}
    assert len(results) == 3 == len(by_id)
    for stored in files[:2]:
        assert by_id[stored.file_id].error_code is FailureReason.TRANSFORM_ERROR
        assert "KeyError" in by_id[stored.file_id].error and "after 3 tries" in by_id[stored.file_id].error
    assert by_id[files[2].file_id].status is FileStatus.OK, "the chunk behind it on the same partition completed"
    [dead] = [decode(Topic.OCR_DLQ, m.value()) for m in read_topic(settings, settings.topic_ocr_dlq, expected=1)]
    assert dead.attempts == 3 and sorted(dead.file_ids) == sorted(f.file_id for f in files[:2])
    assert decode(Topic.OCR_CHUNKS, __import__("base64").b64decode(dead.value_b64)) == poisoned


def test_long_pdfs_become_page_range_work_items_and_large_results_become_parts(settings, tmp_path):
    settings = _fast_settings(pages_per_work_item=4, max_result_bytes=40_000)
    s3 = build_s3_client(settings)
    pdf = render_sample_batch(tmp_path, images=0, pdf_pages=10, seed=5)[0]
    stored = upload(settings, s3, pdf.path.name, pdf.path.read_bytes(), "application/pdf")
    chunk = ChunkRequested(batch_id="b", chunk_id="b.00000", tenant="default", files=[stored])
    results = _run_worker(settings, [(settings.topic_ocr_chunks, b"b.00000", encode(chunk))],
                          until=lambda rs: sum(r.part.page_count for r in rs) >= 10)

    assert {r.file_id for r in results} == {stored.file_id}
    parts = sorted(results, key=lambda r: r.part.first_page)
    pages = [p.page_number for r in parts for p in r.pages]
    assert pages == list(range(1, 11)), "every page once, across the parts"
    assert [(r.status, r.error, r.part.total_pages) for r in parts] == [(FileStatus.OK, None, 10)] * len(parts)
    assert max(len(encode(r)) for r in parts) <= settings.max_result_bytes
    assert len(parts) >= 3  # 3 work items (4 + 4 + 2 pages), each cut further if over max_result_bytes


def _png(seed: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (120, 60), (seed, seed, seed)).save(buffer, "PNG")
    return buffer.getvalue()


def test_an_idle_worker_takes_half_of_the_files_a_busy_one_has_not_started(settings, monkeypatch):
    """Two workers, one chunk of 8 files on one partition: its worker hands half of the files it has not started
    to the idle worker's partition, in one transaction with its results so far; each file gets one result."""
    monkeypatch.setenv("OCRSTREAM_TEST_OCR_SECONDS", "0.3")  # read by the OCR children: 8 files take 2.4 s alone
    group = f"g-{uuid.uuid4().hex}"
    workers = [WorkerSettings(worker_id=f"w{i}-{uuid.uuid4().hex[:6]}", worker_group=group, handover_check_s=0.1,
                              engine="tests.paced_engine:build") for i in range(2)]
    s3 = build_s3_client(settings)
    files = [upload(settings, s3, f"{i}.png", _png(30 * i), "image/png") for i in range(8)]
    chunk = ChunkRequested(batch_id="b", chunk_id="b.00000", tenant="default", files=files)

    stop = threading.Event()
    with ExitStack() as stack:
        threads = [threading.Thread(target=build_worker(w, stack).run, args=(stop,), daemon=True) for w in workers]
        for thread in threads:
            thread.start()
        try:
            wait_for_settled_group(settings.kafka_bootstrap_servers, group, members=2)
            producer = build_producer(settings, client_id="seed")
            producer.produce(settings.topic_ocr_chunks, value=encode(chunk), key=chunk.chunk_id.encode(), partition=0)
            assert producer.flush(10) == 0
            results = [decode(Topic.OCR_RESULTS, m.value()) for m in
                       read_topic(settings, settings.topic_ocr_results, expected=len(files), deadline_s=120)]
        finally:
            stop.set()
            for thread in threads:
                thread.join(60)

    assert sorted(r.file_id for r in results) == sorted(f.file_id for f in files)  # the workers stopped: all there are
    assert all(r.status is FileStatus.OK and r.chunk_id == chunk.chunk_id for r in results)
    rest = [(m.partition(), decode(Topic.OCR_CHUNKS, m.value()))
            for m in read_topic(settings, settings.topic_ocr_chunks, expected=3)
            if (m.partition(), m.offset()) != (0, 0)]
    handed = [c for partition, c in rest if partition != 0]
    assert handed, f"nothing handed over: {[(p, len(c.files)) for p, c in rest]}"
    # Each rest holds files of the chunk, in its order, under its id.
    for _, c in rest:
        first = files.index(c.files[0])
        assert c.chunk_id == chunk.chunk_id and c.files == files[first:first + len(c.files)]
