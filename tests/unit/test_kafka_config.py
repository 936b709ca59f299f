"""OCRSTREAM_KAFKA_CONFIG reaches every Kafka client the builders make, and cannot loosen the guarantees."""
import pytest
from confluent_kafka import KafkaException
from pydantic import ValidationError

from common.kafka import build_consumer, build_producer, ensure_topics
from common.settings import Settings

pytestmark = pytest.mark.unit


def test_librdkafka_properties_come_from_json(monkeypatch):
    monkeypatch.setenv("OCRSTREAM_KAFKA_CONFIG", '{"security.protocol": "SASL_SSL", "sasl.mechanism": '
                                                 '"SCRAM-SHA-512", "socket.keepalive.enable": true}')
    assert Settings().kafka_config == {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
                                       "socket.keepalive.enable": True}


@pytest.mark.parametrize("build", [
    lambda s: build_producer(s, client_id="t"),
    lambda s: build_consumer(s, group_id="g", client_id="t"),
    lambda s: ensure_topics(s, timeout=1),
], ids=["producer", "consumer", "admin"])
def test_every_builder_passes_them_to_librdkafka(build):
    """librdkafka refuses an unknown mechanism when the client is made: proof the property reached it."""
    settings = Settings(kafka_config={"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "NO-SUCH-MECH"})
    with pytest.raises(KafkaException, match="NO-SUCH-MECH"):
        build(settings)


@pytest.mark.parametrize("key", ["enable.idempotence", "isolation.level", "enable.auto.commit", "bootstrap.servers"])
def test_properties_the_guarantees_rest_on_are_refused(key):
    with pytest.raises(ValidationError, match=key):
        Settings(kafka_config={key: "false"})
