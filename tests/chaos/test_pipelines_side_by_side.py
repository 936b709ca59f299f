"""Two pipelines on one cluster, each with its own topics, bucket and schema but the same consumer groups
(the defaults) and the same worker ids: neither fences the other's workers (no producer rebuilt), and both
batches complete. The worker's transactional.id is `{group}-{chunk topic}-{worker id}`."""
import uuid

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.chaos.harness import FULL, assert_exactly_once, pipeline_on

pytestmark = pytest.mark.chaos

FILES = 200 if FULL else 60


def test_two_pipelines_with_the_same_worker_ids_both_complete(stack_endpoints, tmp_path):
    with pipeline_on(stack_endpoints, tmp_path / "a") as first, pipeline_on(stack_endpoints, tmp_path / "b") as second:
        workers = {f"{p}/{name}": s for p, pipeline in (("a", first), ("b", second))
                   for name, s in pipeline.services.items() if name.startswith("ocr_worker")}
        assert {s.env["OCRSTREAM_WORKER_ID"] for s in workers.values()} == {"worker-1", "worker-2"}
        pids = {name: s.pid for name, s in workers.items()}
        batches = [(pipeline, *pipeline.submit(FILES, f"side-by-side-{uuid.uuid4().hex[:4]}"))
                   for pipeline in (first, second)]
        for pipeline, batch_id, total in batches:
            assert_exactly_once(pipeline, batch_id, total)
        assert all(s.alive() for s in workers.values()), "no worker was fenced out"
        assert {name: s.pid for name, s in workers.items()} == pids
        assert {name: producers_rebuilt(s) for name, s in workers.items()} == dict.fromkeys(workers, 0), \
            "no producer was fenced by the other pipeline's namesake"


def producers_rebuilt(worker) -> float:
    metrics = httpx.get(f"{worker.probe_url}/metrics", timeout=5).text
    return sum(sample.value for family in text_string_to_metric_families(metrics) for sample in family.samples
               if sample.name == "ocrstream_worker_producers_rebuilt_total")
