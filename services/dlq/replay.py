"""The dead-letter topic for operators: list its records, show one, replay some to where they came from.

A replay has an idempotent effect. A dead-lettered chunk is sent again with only the files that kept failing
and its attempt raised by one: the persister lets a later attempt's result replace a failed row, and ignores
anything for a file that is already ok, so replaying the same record twice changes nothing more. Any other
record goes back with its original key, value and headers (the persister's writes are idempotent).
All replayed records are sent in one Kafka transaction: all of them or none.
"""
import base64
import json
import uuid
from dataclasses import dataclass

from common.kafka import build_producer, read_topic
from common.settings import Settings
from schemas.chunks import ChunkRequested
from schemas.dlq import DlqRecord
from schemas.topics import Topic, UndecodableMessage, decode, encode

__all__ = ["DeadLetter", "list_dead_letters", "replay", "replay_record", "show"]


@dataclass(frozen=True)
class DeadLetter:
    partition: int
    offset: int
    record: DlqRecord

    @property
    def position(self) -> str:
        """How an operator names it: partition:offset on the DLQ topic."""
        return f"{self.partition}:{self.offset}"

    def original_value(self) -> bytes | None:
        return None if self.record.value_b64 is None else base64.b64decode(self.record.value_b64)

    def summary(self) -> dict:
        r = self.record
        return {"position": self.position, "source_topic": r.source_topic, "service": r.service,
                "error_class": r.error_class, "attempts": r.attempts, "file_ids": r.file_ids,
                "failed_at": r.failed_at.isoformat(), "reason": r.reason[:300]}


def list_dead_letters(settings: Settings) -> list[DeadLetter]:
    """Every record of the DLQ topic (read to its end); records that are not DlqRecords are skipped."""
    letters = []
    for msg in read_topic(settings, settings.topic_ocr_dlq):
        try:
            letters.append(DeadLetter(msg.partition(), msg.offset(), decode(Topic.OCR_DLQ, msg.value())))
        except UndecodableMessage:
            continue
    return letters


def replay_record(letter: DeadLetter, chunks_topic: str) -> tuple[str, bytes | None, bytes, list]:
    """(topic, key, value, headers) to send again: a chunk narrowed to its dead files at the next attempt,
    anything else as it was."""
    r = letter.record
    key = None if r.key_b64 is None else base64.b64decode(r.key_b64)
    value = letter.original_value()
    if value is None:
        raise ValueError(f"DLQ record {letter.position} holds no value to replay")
    if r.source_topic == chunks_topic:
        chunk: ChunkRequested = decode(Topic.OCR_CHUNKS, value)
        files = [f for f in chunk.files if f.file_id in r.file_ids] if r.file_ids else chunk.files
        value = encode(chunk.model_copy(update={"files": files, "attempt": chunk.attempt + 1}))
    headers = [(h.key, None if h.value_b64 is None else base64.b64decode(h.value_b64)) for h in r.headers]
    return r.source_topic, key, value, headers + [("ocrstream.replayed_from", letter.position.encode())]


def replay(settings: Settings, letters: list[DeadLetter], *, timeout: float = 30.0) -> int:
    """Send the letters' records again, in one transaction; returns how many were sent."""
    records = [replay_record(letter, settings.topic_ocr_chunks) for letter in letters]
    producer = build_producer(settings, client_id="dlq-replay", transactional_id=f"dlq-replay-{uuid.uuid4().hex}")
    producer.init_transactions(timeout)
    producer.begin_transaction()
    try:
        for topic, key, value, headers in records:
            producer.produce(topic, value=value, key=key, headers=headers)
        producer.commit_transaction(timeout)
    except BaseException:
        producer.abort_transaction(timeout)
        raise
    return len(records)


def show(letter: DeadLetter) -> dict:
    """The whole record, with the original value decoded when it is JSON."""
    shown = json.loads(letter.record.model_dump_json())
    value = letter.original_value()
    try:
        shown["value"] = json.loads(value) if value is not None else None
    except ValueError:
        pass
    return {"position": letter.position} | shown
