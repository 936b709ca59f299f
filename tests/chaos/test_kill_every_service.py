"""SIGKILL at random moments across every service (ingest, both OCR workers, the persister, the status API,
the webhook notifier) during a batch of distinct files, each restarted at once; ingest is killed while a
second batch is being uploaded. Every batch ingest accepted completes with one row per file and its status
equal to Postgres. `make test`: 6 kills, 120 files; `make chaos`: 10 kills, 500 files."""
import os
import random
import threading

import pytest

from common.kafka import read_topic
from demo.processes import free_port, notifier_service
from schemas.batch_events import BatchCreated
from schemas.topics import Topic, decode
from tests.chaos.harness import FULL, assert_exactly_once, distinct_images, pipeline_on, wait_until
from tests.chaos.test_kill_mid_batch import persisted_files, wait_for_rows

pytestmark = pytest.mark.chaos

SERVICES = ["ingest", "ocr_worker-1", "ocr_worker-2", "persister", "status_api", "notifier"]
KILLS = 10 if FULL else 6
FILES = 500 if FULL else 120


@pytest.mark.parametrize("seed", [int(os.environ.get("OCRSTREAM_CHAOS_SEED", random.randrange(10**6)))])
def test_sigkill_every_service_mid_batch(stack_endpoints, tmp_path, seed):
    rng = random.Random(seed)
    victims = SERVICES + [rng.choice(SERVICES) for _ in range(KILLS - len(SERVICES))]  # each at least once
    rng.shuffle(victims)
    schedule = list(zip(sorted(rng.sample(range(1, FILES - 10), KILLS)), victims))
    print(f"seed {seed}: SIGKILL schedule (rows persisted → victim): {schedule}")

    with pipeline_on(stack_endpoints, tmp_path) as pipeline:
        services = pipeline.services
        services["notifier"] = notifier_service(pipeline.env, tmp_path / "logs", probe_port=free_port()).start()
        services["notifier"].wait_ready()
        batch_id, total = pipeline.submit(FILES, "kill-every-service")
        uploads: list[threading.Thread] = []
        try:
            for rows_seen, victim in schedule:
                wait_for_rows(pipeline.settings, batch_id, rows_seen)
                if victim == "ingest":  # mid-request: a second batch's upload is under way
                    uploads.append(_upload_in_background(pipeline, tmp_path))
                    wait_until(lambda: uploads[-1].started_at_ingest.is_set(), 30, "the upload began")
                services[victim].kill()
                services[victim].start()
            for service in services.values():
                service.wait_ready()
            for upload in uploads:
                upload.join(120)
            accepted = accepted_batches(pipeline.settings)
            assert batch_id in accepted and accepted[batch_id] == total
            for accepted_id, files in accepted.items():
                assert_exactly_once(pipeline, accepted_id, files)
        finally:
            services["notifier"].stop()
    print(f"{KILLS} SIGKILLs; batches accepted: {len(accepted)}; rows of the first: "
          f"{persisted_files(pipeline.settings, batch_id)}")


def accepted_batches(settings) -> dict[str, int]:
    """batch id → files, of every BatchCreated ingest published (whatever its HTTP answer was)."""
    events = [decode(Topic.BATCH_EVENTS, msg.value()) for msg in read_topic(settings, settings.topic_batch_events)]
    return {e.batch_id: e.total_files for e in events if isinstance(e, BatchCreated)}


def _upload_in_background(pipeline, tmp_path) -> threading.Thread:
    """A 40-file batch posted from a thread; whether it is answered 202 or cut off, the test checks every
    batch ingest ended up accepting."""
    paths = distinct_images(tmp_path / f"upload-{rng_suffix()}", 40)
    began = threading.Event()

    def upload() -> None:
        began.set()
        try:
            pipeline.client.submit(paths, name="cut-off-upload", chunk_size=2, embeddings=False)
        except Exception as exc:  # cut off by the SIGKILL (and maybe its retry): nothing half may remain
            print(f"upload cut off: {exc!r}")

    thread = threading.Thread(target=upload, daemon=True)
    thread.started_at_ingest = began
    thread.start()
    return thread


def rng_suffix() -> str:
    return os.urandom(3).hex()
