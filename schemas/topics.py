"""Topic → message model, and the one encode/decode every service uses."""
from enum import StrEnum
from typing import Any

from pydantic import TypeAdapter, ValidationError

from schemas.base import Message
from schemas.batch_events import BatchEvent
from schemas.chunks import ChunkRequested
from schemas.dlq import DlqRecord
from schemas.progress import BatchProgress
from schemas.results import FileResult


class Topic(StrEnum):
    """Logical topics; the physical names come from settings."""

    BATCH_EVENTS = "batch.events"
    OCR_CHUNKS = "ocr.chunks"
    OCR_RESULTS = "ocr.results"
    OCR_DLQ = "ocr.dlq"
    BATCH_PROGRESS = "batch.progress"


_ADAPTERS: dict[Topic, TypeAdapter[Any]] = {
    Topic.BATCH_EVENTS: TypeAdapter(BatchEvent),
    Topic.OCR_CHUNKS: TypeAdapter(ChunkRequested),
    Topic.OCR_RESULTS: TypeAdapter(FileResult),
    Topic.OCR_DLQ: TypeAdapter(DlqRecord),
    Topic.BATCH_PROGRESS: TypeAdapter(BatchProgress),
}


class UndecodableMessage(ValueError):
    """The bytes are not a valid message of this topic's contract (bad JSON, wrong schema or major version)."""


def encode(message: Message) -> bytes:
    return message.model_dump_json().encode()


# Kafka record headers every producer sets (docs/consumers.md): a reader can route and check a record without
# parsing its value. The schema name is the JSON Schema file's name under schemas/json/ (without ".json").
HEADER_SCHEMA = "ocrstream.schema"
HEADER_SCHEMA_VERSION = "ocrstream.schema_version"
HEADER_TENANT = "ocrstream.tenant"
HEADER_BATCH_ID = "ocrstream.batch_id"


def schema_name(message: Message) -> str:
    """module.Class, e.g. "results.FileResult": the name of the message's file in schemas/json/."""
    cls = type(message)
    return f"{cls.__module__.rsplit('.', 1)[-1]}.{cls.__name__}"


def message_headers(message: Message) -> list[tuple[str, bytes]]:
    """The headers to produce the message with: its schema and version, and its tenant and batch when it has them."""
    headers = [(HEADER_SCHEMA, schema_name(message).encode()),
               (HEADER_SCHEMA_VERSION, message.schema_version.encode())]
    for header, field in ((HEADER_TENANT, "tenant"), (HEADER_BATCH_ID, "batch_id")):
        value = getattr(message, field, None)
        if value is not None:
            headers.append((header, str(value).encode()))
    return headers


def decode(topic: Topic, value: bytes | None) -> Any:
    if value is None:
        raise UndecodableMessage(f"{topic}: empty value (tombstone) where a message was expected")
    try:
        return _ADAPTERS[topic].validate_json(value)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors()[:5])
        raise UndecodableMessage(f"{topic}: {problems}") from exc
