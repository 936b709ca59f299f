"""Issue 18: every Kafka client takes its security from settings alone. A private single-node Kafka (the dev
stack's jars, a temporary directory, free ports) with a SASL_SSL listener: SCRAM-SHA-512 users added at format
time, a CA and a broker certificate made here with openssl. The controller and inter-broker listeners stay
PLAINTEXT on loopback. The project's own builders, given only Settings(kafka_config=...), make a transactional
round trip; a wrong password fails with an authentication error."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaError

from common.kafka import build_consumer, build_producer, ensure_topics, read_topic
from common.settings import Settings
from deploy.devstack import KafkaNode, StackSettings, java_opts, new_cluster_id
from schemas.topics import Topic
from tests.helpers import free_ports

pytestmark = pytest.mark.stack

USER, PASSWORD = "ocrstream-app", "scram-secret-" + uuid.uuid4().hex[:8]
STORE_PASSWORD = "keystore-secret"
START_TIMEOUT_S = 60.0  # a loaded 2-core machine
# Short-lived JVMs: the C1 compiler alone starts the format tool and the broker faster (throughput is irrelevant).
QUICK_START = ["-XX:TieredStopAtLevel=1"]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(tls: Path) -> tuple[Path, Path]:
    """A CA and a broker certificate for 127.0.0.1 signed by it. Returns (CA PEM, broker PKCS12 keystore)."""
    tls.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=ocrstream test CA",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=tls)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "broker.key",
             "-out", "broker.csr", cwd=tls)
    # librdkafka verifies the broker's name (ssl.endpoint.identification.algorithm=https by default).
    (tls / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "1", "-extfile", "san.ext", "-out", "broker.pem", cwd=tls)
    _openssl("pkcs12", "-export", "-in", "broker.pem", "-inkey", "broker.key", "-certfile", "ca.pem",
             "-name", "broker", "-passout", f"pass:{STORE_PASSWORD}", "-out", "broker.p12", cwd=tls)
    return tls / "ca.pem", tls / "broker.p12"


def _server_properties(node: KafkaNode, sasl_port: int, keystore: Path) -> str:
    k, c, s = node.port, node.controller_port, sasl_port
    return f"""\
process.roles=broker,controller
node.id={node.node_id}
controller.quorum.bootstrap.servers=127.0.0.1:{c}
listeners=PLAINTEXT://127.0.0.1:{k},CONTROLLER://127.0.0.1:{c},SASL_SSL://127.0.0.1:{s}
advertised.listeners=PLAINTEXT://127.0.0.1:{k},SASL_SSL://127.0.0.1:{s}
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PKCS12
ssl.keystore.location={keystore}
ssl.keystore.password={STORE_PASSWORD}
ssl.key.password={STORE_PASSWORD}
log.dirs={node.dir / "data"}
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
"""


def _wait_listening(port: int, broker: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if broker.poll() is not None:
            raise AssertionError(f"private Kafka exited ({broker.returncode}): {log.read_text()[-3000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            try:
                broker.wait(timeout=0.2)  # returns at once if the broker dies
            except subprocess.TimeoutExpired:
                pass
    raise AssertionError(f"private Kafka's SASL_SSL port {port} not open within {START_TIMEOUT_S} s")


def _format(stack: StackSettings, node: KafkaNode, props: Path, out: Path) -> None:
    """Format the node's storage with the SCRAM user in it (KRaft keeps SCRAM credentials in its metadata log)."""
    cmd = [*java_opts(stack, node, "256m"), *QUICK_START, "kafka.tools.StorageTool", "format", "--standalone",
           "-t", new_cluster_id(), "-c", str(props), "--add-scram", f"SCRAM-SHA-512=[name={USER},password={PASSWORD}]"]
    with out.open("ab") as log:
        if subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode != 0:
            raise AssertionError(f"kafka storage format failed: {out.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def sasl_kafka() -> Iterator[tuple[str, Path]]:
    """(bootstrap servers of the SASL_SSL listener, CA PEM) of a private broker, stopped and removed afterwards."""
    stack = StackSettings()  # the shared stack's settings: only its jars are used, read-only
    libs = stack.dir / "kafka-libs"
    assert (libs / ".fetched").exists(), f"no Kafka jars in {libs}: run `ocrstream-stack up` (or fetch-kafka) once"
    root = Path(tempfile.mkdtemp(prefix="ocrstream-kafka-sasl-"))
    broker = None
    try:
        plaintext, controller, sasl = free_ports(3)
        node = KafkaNode("kafka-sasl", 1, plaintext, controller, root / "node")
        for sub in ("data", "logs", "tmp"):
            (node.dir / sub).mkdir(parents=True)
        ca, keystore = make_certificates(root / "tls")
        props = node.dir / "server.properties"
        props.write_text(_server_properties(node, sasl, keystore))
        out = node.dir / "kafka.out"
        _format(stack, node, props, out)
        with out.open("ab") as log:
            broker = subprocess.Popen([*java_opts(stack, node, "384m"), *QUICK_START, "kafka.Kafka", str(props)],
                                      cwd=node.dir, stdout=log, stderr=subprocess.STDOUT)
        _wait_listening(sasl, broker, node.dir / "logs" / "server.log")
        yield f"127.0.0.1:{sasl}", ca
    finally:
        if broker is not None:
            broker.terminate()
            try:
                broker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                broker.kill()
                broker.wait()
        shutil.rmtree(root, ignore_errors=True)


def _settings(bootstrap: str, ca: Path, password: str) -> Settings:
    prefix = f"sasl-{uuid.uuid4().hex[:8]}."
    return Settings(
        kafka_bootstrap_servers=bootstrap, topic_partitions=1,
        kafka_config={"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": USER,
                      "sasl.password": password, "ssl.ca.location": str(ca)},
        **{f"topic_{t.name.lower()}": prefix + t.value for t in Topic},
    )


def test_transactional_round_trip_over_sasl_ssl_configured_by_settings(sasl_kafka):
    settings = _settings(*sasl_kafka, PASSWORD)
    assert sorted(ensure_topics(settings)) == sorted(settings.topic(t) for t in Topic)
    topic = settings.topic(Topic.OCR_RESULTS)

    producer = build_producer(settings, client_id="sasl-test", transactional_id=f"sasl-{uuid.uuid4().hex}")
    producer.init_transactions(15)
    producer.begin_transaction()
    producer.produce(topic, key=b"k", value=b"aborted")
    producer.flush(10)  # the aborted record really reaches the log
    producer.abort_transaction(10)
    producer.begin_transaction()
    producer.produce(topic, key=b"k", value=b"committed")
    producer.commit_transaction(10)

    consumer = build_consumer(settings, group_id=f"sasl-{uuid.uuid4().hex}", client_id="sasl-test")
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 20
        received = []
        while not received and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None:
                assert msg.error() is None, msg.error()
                received.append(msg.value())
        assert received == [b"committed"]  # read_committed: the aborted record is skipped
    finally:
        consumer.close()
    assert [m.value() for m in read_topic(settings, topic, isolation="read_uncommitted")] == [b"aborted",
                                                                                               b"committed"]


def test_wrong_password_fails_with_an_authentication_error(sasl_kafka):
    settings = _settings(*sasl_kafka, "not-" + PASSWORD)
    errors: list[KafkaError] = []
    producer = build_producer(settings, client_id="sasl-wrong-password", error_cb=errors.append)
    producer.produce(settings.topic(Topic.OCR_RESULTS), value=b"never")
    deadline = time.monotonic() + 15
    while not errors and time.monotonic() < deadline:
        producer.poll(0.2)
    assert errors, "no error reported for a wrong password"
    assert errors[0].code() == KafkaError._AUTHENTICATION, errors[0]
    assert "SCRAM-SHA-512" in errors[0].str()
