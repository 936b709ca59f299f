"""The local dev stack (deploy/devstack.py): a second stack in a temporary directory on free ports, next to
whatever default stack may be running. Shows that `up` is idempotent, that a committed Kafka record survives
down + up, that `down` leaves no recorded process alive, and that `status` follows along."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from deploy.devstack import StackSettings, main, stack_endpoints, stack_status, start_stack, stop_stack

pytestmark = pytest.mark.stack

COMPONENTS = ["kafka", "s3", "postgres"]


def _pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def stack(private_stack_settings) -> StackSettings:
    return private_stack_settings


def _pids(settings: StackSettings) -> dict[str, int | None]:
    return {name: st["pid"] for name, st in stack_status(settings).items()}


def _produce_committed(settings: StackSettings, topic: str, value: bytes) -> tuple[int, int]:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    conf = {"bootstrap.servers": stack_endpoints(settings)["OCRSTREAM_KAFKA_BOOTSTRAP_SERVERS"]}
    admin = AdminClient(conf)  # keep a reference: a collected client fails its futures with _DESTROY
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=30)
    delivered = []
    producer = Producer({**conf, "transactional.id": f"test-devstack-{uuid.uuid4().hex}"})
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, value, on_delivery=lambda err, msg: delivered.append((err, msg)))
    producer.commit_transaction(30)
    (err, msg), = delivered
    assert err is None, err
    return msg.partition(), msg.offset()


def _read_committed(settings: StackSettings, topic: str, partition: int, offset: int, timeout: float = 30) -> bytes:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({
        "bootstrap.servers": stack_endpoints(settings)["OCRSTREAM_KAFKA_BOOTSTRAP_SERVERS"],
        "group.id": f"test-devstack-{uuid.uuid4().hex}",
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
    })
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                return msg.value()
        raise AssertionError(f"no committed record at {topic}[{partition}]@{offset} within {timeout} s")
    finally:
        consumer.close()


def _cli_status(settings: StackSettings, monkeypatch: pytest.MonkeyPatch) -> int:
    for key, value in settings.model_dump().items():
        monkeypatch.setenv(f"OCRSTREAM_STACK_{key.upper()}", str(value))
    return main(["status"])


def test_up_twice_then_data_survives_down_and_up(stack: StackSettings, monkeypatch, capsys) -> None:
    # Nothing runs yet.
    assert all(not st["running"] for st in stack_status(stack).values())
    assert _cli_status(stack, monkeypatch) != 0

    # up from nothing starts everything; a second up starts nothing and leaves the same processes.
    assert sorted(start_stack(stack)) == sorted(COMPONENTS)
    first = _pids(stack)
    assert all(first.values())
    assert start_stack(stack) == []
    assert _pids(stack) == first
    status = stack_status(stack)
    assert all(st["running"] and st["answering"] for st in status.values()), status
    assert _cli_status(stack, monkeypatch) == 0

    # The endpoints file names this stack's ports.
    env_file = (stack.dir / "env").read_text()
    for key, value in stack_endpoints(stack).items():
        assert f"export {key}={value}" in env_file
    assert f"127.0.0.1:{stack.kafka_port}" in env_file

    # A committed record, then down: no recorded process survives, status says stopped.
    topic, value = "devstack-survival", uuid.uuid4().bytes
    partition, offset = _produce_committed(stack, topic, value)
    stop_stack(stack)
    assert not any(_pid_alive(pid) for pid in first.values())
    assert all(not st["running"] for st in stack_status(stack).values())
    assert not list((stack.dir / "run").glob("*.pid"))
    capsys.readouterr()
    assert _cli_status(stack, monkeypatch) == 3
    assert capsys.readouterr().out.count(": stopped") == len(COMPONENTS)

    # up again: everything restarts on the same data, and the record is still there.
    assert sorted(start_stack(stack)) == sorted(COMPONENTS)
    second = _pids(stack)
    assert all(second.values()) and second != first
    assert _read_committed(stack, topic, partition, offset) == value
    assert _cli_status(stack, monkeypatch) == 0

    # And down once more, as the finalizer would.
    stop_stack(stack)
    assert not any(_pid_alive(pid) for pid in second.values())
    assert not list((stack.dir / "run").glob("*.pid"))
