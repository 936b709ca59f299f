"""A 3-broker KRaft cluster (replication factor 3, min.insync.replicas 2 for the project's topics and Kafka's
internal ones): one broker SIGKILLed mid-batch, the batch goes on without it, the broker restarts, and the batch
completes exactly once with its status equal to Postgres, by the same code and the same service processes.

Runs on a dev stack of its own (`ocrstream-stack up --brokers 3` on free ports)."""
import os
import random

import pytest

from deploy.devstack import kafka_nodes, stack_endpoints, start_stack, stop_stack
from tests.chaos.harness import FULL, assert_exactly_once, pipeline_on
from tests.chaos.test_kill_mid_batch import persisted_files, wait_for_rows

pytestmark = pytest.mark.chaos

FILES = 400 if FULL else 120


@pytest.mark.parametrize("seed", [int(os.environ.get("OCRSTREAM_CHAOS_SEED", random.randrange(10**6)))])
def test_a_broker_killed_mid_batch_and_restarted(private_stack_settings, tmp_path, seed):
    cluster = private_stack_settings.model_copy(update={"kafka_brokers": 3})
    start_stack(cluster)
    endpoints = stack_endpoints(cluster)
    assert len(endpoints["OCRSTREAM_KAFKA_BOOTSTRAP_SERVERS"].split(",")) == 3
    assert endpoints["OCRSTREAM_TOPIC_REPLICATION_FACTOR"] == "3"
    victim = random.Random(seed).choice(kafka_nodes(cluster)).name
    print(f"seed {seed}: SIGKILL {victim}")

    with pipeline_on(endpoints, tmp_path) as pipeline:
        pids = {name: s.pid for name, s in pipeline.services.items()}
        batch_id, total = pipeline.submit(FILES, "broker-killed")
        wait_for_rows(pipeline.settings, batch_id, 4)
        stop_stack(cluster, [victim], kill=True)
        without = persisted_files(pipeline.settings, batch_id)
        wait_for_rows(pipeline.settings, batch_id, min(without + 10, total))  # two brokers carry on
        start_stack(cluster)
        final = assert_exactly_once(pipeline, batch_id, total)
        assert final["failed"] == 0
        assert {name: s.pid for name, s in pipeline.services.items()} == pids, "no service restarted or exited"
