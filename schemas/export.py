"""Writes schemas/json/*.json from the models: `python -m schemas.export [--check]`."""
import argparse
import json
import sys
from pathlib import Path

from pydantic import BaseModel, TypeAdapter

from schemas import api
from schemas.batch_events import (BatchCancelled, BatchCreated, BatchEvent, BatchFilesAdded, BatchRetryRequested,
                                  BatchSealed)
from schemas.chunks import ChunkRequested
from schemas.dlq import DlqRecord
from schemas.progress import BatchProgress
from schemas.results import FileResult

JSON_DIR = Path(__file__).parent / "json"

CONTRACTS: dict[str, type[BaseModel] | TypeAdapter] = {
    "batch_events.BatchEvent": TypeAdapter(BatchEvent),
    "batch_events.BatchCreated": BatchCreated,
    "batch_events.BatchCancelled": BatchCancelled,
    "batch_events.BatchRetryRequested": BatchRetryRequested,
    "batch_events.BatchFilesAdded": BatchFilesAdded,
    "batch_events.BatchSealed": BatchSealed,
    "chunks.ChunkRequested": ChunkRequested,
    "results.FileResult": FileResult,
    "progress.BatchProgress": BatchProgress,
    "dlq.DlqRecord": DlqRecord,
    "api.BatchAccepted": api.BatchAccepted,
    "api.FilesAccepted": api.FilesAccepted,
    "api.SealAccepted": api.SealAccepted,
    "api.BatchPublic": api.BatchPublic,
    "api.BatchesPublic": api.BatchesPublic,
    "api.FileResultPublic": api.FileResultPublic,
    "api.FileResultsPublic": api.FileResultsPublic,
    "api.FileSummariesPublic": api.FileSummariesPublic,
    "api.SearchResults": api.SearchResults,
    "api.WebhookDeliveriesPublic": api.WebhookDeliveriesPublic,
    "api.WebhookEvent": api.WebhookEvent,
}


def render_json_schemas() -> dict[str, str]:
    """File name → JSON text, exactly as committed."""
    rendered = {}
    for name, model in CONTRACTS.items():
        schema = model.json_schema() if isinstance(model, TypeAdapter) else model.model_json_schema()
        rendered[f"{name}.json"] = json.dumps(schema, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
    return rendered


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the committed files differ from the models")
    args = parser.parse_args()
    rendered = render_json_schemas()
    if args.check:
        stale = [n for n, text in rendered.items() if not (JSON_DIR / n).exists() or (JSON_DIR / n).read_text() != text]
        for name in stale:
            print(f"schemas/json/{name} is stale; run `python -m schemas.export`", file=sys.stderr)
        return 1 if stale else 0
    JSON_DIR.mkdir(exist_ok=True)
    for old in JSON_DIR.glob("*.json"):
        if old.name not in rendered:
            old.unlink()
    for name, text in rendered.items():
        (JSON_DIR / name).write_text(text)
    print(f"wrote {len(rendered)} schemas to {JSON_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
