"""Settings from environment variables (prefix OCRSTREAM_). Each default is defined here, once."""
import socket

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.topics import Topic


# librdkafka properties OCRSTREAM_KAFKA_CONFIG may not change: the delivery guarantees are built on them.
KAFKA_PROPERTIES_SET_BY_CODE = frozenset({
    "bootstrap.servers", "enable.idempotence", "transactional.id", "isolation.level", "enable.auto.commit",
    "group.id", "acks",
})


class Settings(BaseSettings):
    """What every service needs to reach the stack. Services subclass it with their own fields."""

    model_config = SettingsConfigDict(env_prefix="OCRSTREAM_", extra="ignore")

    kafka_bootstrap_servers: str = "127.0.0.1:19092"
    kafka_config: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description='librdkafka properties for every Kafka client, as a JSON object: security, e.g. '
                    '{"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "u", '
                    '"sasl.password": "p", "ssl.ca.location": "/ca.pem"}, or tuning',
    )
    topic_batch_events: str = Topic.BATCH_EVENTS.value
    topic_ocr_chunks: str = Topic.OCR_CHUNKS.value
    topic_ocr_results: str = Topic.OCR_RESULTS.value
    topic_ocr_dlq: str = Topic.OCR_DLQ.value
    topic_batch_progress: str = Topic.BATCH_PROGRESS.value
    topic_partitions: int = Field(6, ge=1, description="Partitions of each topic at creation; bounds worker parallelism")
    topic_replication_factor: int = 1
    # Known beyond their own service: ingest's repair of lost results reads how far each group got.
    worker_group: str = Field("ocrstream-ocr-worker", description="The OCR workers' consumer group; also prefixes "
                              "their transactional.id")
    persister_group: str = Field("ocrstream-persister", description="The persister's group (its offsets are kept "
                                 "in Postgres)")

    s3_endpoint: str = "127.0.0.1:19000"
    s3_access_key: str = "ocrstream"
    s3_secret_key: str = "ocrstream-secret"
    s3_secure: bool = False
    s3_region: str = Field("us-east-1", description="Signing region of the S3 endpoint (MinIO and the dev stack: us-east-1)")
    s3_bucket: str = "ocrstream"

    database_url: str = "postgresql://ocrstream@127.0.0.1:15432/ocrstream"
    database_schema: str = Field("ocrstream", pattern=r"^[a-z_][a-z0-9_]{0,62}$")

    api_keys: dict[str, str] = Field(
        default={"dev-key": "default"}, description='JSON object API key → tenant, e.g. {"k1": "acme"}'
    )
    log_level: str = "INFO"

    @field_validator("kafka_config")
    @classmethod
    def _keeps_the_guarantees(cls, config: dict) -> dict:
        fixed = sorted(set(config) & KAFKA_PROPERTIES_SET_BY_CODE)
        if fixed:
            raise ValueError(f"{fixed} are set by ocrstream itself (exactly-once and offsets depend on them); "
                             f"bootstrap.servers has its own setting, OCRSTREAM_KAFKA_BOOTSTRAP_SERVERS")
        return config

    def topic(self, topic: Topic) -> str:
        return getattr(self, "topic_" + topic.name.lower())


def default_instance_id() -> str:
    return socket.gethostname()
