"""deploy.devstack's Kafka layout: one node or a cluster, its ports, replication and the names the CLI takes."""
from pathlib import Path

import pytest

from deploy.devstack import StackError, StackSettings, component_names, kafka_nodes, replication, stack_endpoints

pytestmark = pytest.mark.unit


def settings(tmp_path: Path, brokers: int) -> StackSettings:
    return StackSettings(dir=tmp_path, kafka_port=30092, kafka_controller_port=30093, kafka_brokers=brokers)


def test_one_broker_by_default_with_replication_one(tmp_path):
    s = settings(tmp_path, 0)
    assert [(n.name, n.port, n.controller_port) for n in kafka_nodes(s)] == [("kafka", 30092, 30093)]
    assert replication(s) == (1, 1)
    assert stack_endpoints(s)["OCRSTREAM_KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:30092"


def test_three_brokers_replicate_three_times_with_min_isr_two_and_list_every_node(tmp_path):
    s = settings(tmp_path, 3)
    assert [(n.name, n.node_id, n.port, n.controller_port) for n in kafka_nodes(s)] == [
        ("kafka-1", 1, 30092, 30093), ("kafka-2", 2, 30102, 30103), ("kafka-3", 3, 30112, 30113)]
    assert replication(s) == (3, 2)
    env = stack_endpoints(s)
    assert env["OCRSTREAM_KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:30092,127.0.0.1:30102,127.0.0.1:30112"
    assert env["OCRSTREAM_TOPIC_REPLICATION_FACTOR"] == "3"


def test_the_commands_after_up_follow_the_recorded_broker_count(tmp_path):
    (tmp_path / "kafka-brokers").write_text("3\n")
    assert len(kafka_nodes(settings(tmp_path, 0))) == 3
    assert len(kafka_nodes(settings(tmp_path, 1))) == 1  # an explicit count wins


def test_kafka_names_every_node_and_unknown_names_are_refused(tmp_path):
    s = settings(tmp_path, 3)
    assert component_names(s, ["kafka", "s3"]) == ["kafka-1", "kafka-2", "kafka-3", "s3"]
    assert component_names(s, ["kafka-2"]) == ["kafka-2"]
    with pytest.raises(StackError, match="no component 'kafka-4'"):
        component_names(s, ["kafka-4"])
    assert component_names(settings(tmp_path, 1), ["kafka"]) == ["kafka"]
