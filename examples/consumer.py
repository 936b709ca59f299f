"""A downstream consumer of ocrstream's topics that relies on nothing but the published JSON Schemas.

    python examples/consumer.py --bootstrap localhost:19092 --group my-app --topic ocr.results \
        [--topic batch.progress ...] [--schemas schemas/json] [--until-eof]

Needs only confluent-kafka and jsonschema (no ocrstream code). Reads committed records only (the pipeline
writes inside Kafka transactions), checks each against its JSON Schema, and prints one JSON line per record:
    {"topic", "partition", "offset", "schema", "schema_version", "batch_id", "value"}
A record it cannot read (another major version, or not matching its schema) is reported on stderr as
{"rejected": reason, "topic", "partition", "offset"} and skipped; a real consumer would park it somewhere.
Offsets are committed only for records handled (at-least-once): after a crash, records may be seen again.
See docs/consumers.md for every topic, key, guarantee and header.
"""
import argparse
import json
import sys
from pathlib import Path

import jsonschema
from confluent_kafka import Consumer, KafkaError, KafkaException, Message

SUPPORTED_MAJOR = "1"  # the major version of the schemas this consumer ships with
SCHEMAS_DIR = Path(__file__).resolve().parents[1] / "schemas" / "json"
# When a record has no ocrstream.schema header: the schema of the topic (names end with the logical name).
TOPIC_SCHEMAS = {
    "batch.events": "batch_events.BatchEvent",
    "ocr.chunks": "chunks.ChunkRequested",
    "ocr.results": "results.FileResult",
    "ocr.dlq": "dlq.DlqRecord",
    "batch.progress": "progress.BatchProgress",
}


class Rejected(ValueError):
    """This record cannot be read by this consumer; the message says why."""


class SchemaBook:
    """The JSON Schemas of a directory, one validator each, found by schema name."""

    def __init__(self, directory: Path) -> None:
        self._validators = {p.name.removesuffix(".json"): jsonschema.Draft202012Validator(json.loads(p.read_text()))
                            for p in directory.glob("*.json")}

    def read(self, topic: str, headers: dict[str, str], value: bytes | None) -> tuple[str, dict]:
        """(schema name, the record's JSON) if it is a record of a version this consumer reads; else Rejected."""
        if value is None:
            raise Rejected("tombstone (a compacted topic's deletion marker)")
        name = headers.get("ocrstream.schema") or next(
            (schema for logical, schema in TOPIC_SCHEMAS.items() if topic.endswith(logical)), None)
        if name not in self._validators:
            raise Rejected(f"no schema {name!r} for topic {topic}")
        try:
            record = json.loads(value)
        except ValueError as exc:
            raise Rejected(f"not JSON: {exc}") from exc
        version = str(headers.get("ocrstream.schema_version") or record.get("schema_version", ""))
        if version.split(".")[0] != SUPPORTED_MAJOR:
            raise Rejected(f"schema version {version} is another major version than this consumer's "
                           f"{SUPPORTED_MAJOR}.x: upgrade the consumer")
        error = jsonschema.exceptions.best_match(self._validators[name].iter_errors(record))
        if error is not None:
            raise Rejected(f"does not match {name}: {'/'.join(map(str, error.absolute_path))}: {error.message}")
        return name, record


def consume(args: argparse.Namespace) -> int:
    book = SchemaBook(args.schemas)
    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "isolation.level": "read_committed",  # never aborted or still-open transactions
        "auto.offset.reset": "earliest",
        "enable.auto.commit": True,
        "enable.auto.offset.store": False,  # commit only offsets stored after a record was handled
        "enable.partition.eof": args.until_eof,
    })
    assigned: set[tuple[str, int]] = set()
    at_eof: set[tuple[str, int]] = set()

    def on_assign(_consumer: Consumer, partitions: list) -> None:
        assigned.update((p.topic, p.partition) for p in partitions)

    consumer.subscribe(args.topic, on_assign=on_assign)
    try:
        while not (args.until_eof and assigned and assigned <= at_eof):
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    at_eof.add((msg.topic(), msg.partition()))
                    continue
                raise KafkaException(msg.error())
            at_eof.discard((msg.topic(), msg.partition()))
            handle(book, msg)
            consumer.store_offsets(msg)
    finally:
        consumer.close()  # commits the stored offsets
    return 0


def handle(book: SchemaBook, msg: Message) -> None:
    where = {"topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset()}
    headers = {k: v.decode() for k, v in (msg.headers() or []) if v is not None}
    try:
        schema, record = book.read(msg.topic(), headers, msg.value())
    except Rejected as exc:
        print(json.dumps({"rejected": str(exc), **where}), file=sys.stderr, flush=True)
        return
    print(json.dumps({**where, "schema": schema, "schema_version": str(record.get("schema_version")),
                      "batch_id": record.get("batch_id"), "value": record}, ensure_ascii=False), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers")
    parser.add_argument("--group", required=True, help="your consumer group")
    parser.add_argument("--topic", action="append", required=True, help="a topic to read (repeatable)")
    parser.add_argument("--schemas", type=Path, default=SCHEMAS_DIR, help="directory of the JSON Schemas")
    parser.add_argument("--until-eof", action="store_true", help="stop once every partition is read to its end")
    return consume(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
