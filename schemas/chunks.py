"""`ocr.chunks` (key = chunk_id): one unit of OCR work, a handful of stored files."""
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.base import Message, PageRange, Text, utc_now
from schemas.batch_events import BatchOptions


class StoredFile(BaseModel):
    """A file accepted into the object store; the sha256 was computed while it streamed in."""

    model_config = ConfigDict(extra="ignore")  # see schemas.base: forward compatible

    file_id: str
    bucket: str
    key: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)
    content_type: Text
    original_name: Text
    pages: PageRange | None = Field(None, description="Only these pages of a PDF: a long PDF is OCRed as several "
                                    "work items, each producing one part of the file's result")


class ChunkRequested(Message):
    type: Literal["chunk_requested"] = "chunk_requested"
    batch_id: str
    chunk_id: str
    tenant: str
    attempt: int = Field(1, ge=1)
    options: BatchOptions = BatchOptions()
    files: list[StoredFile] = Field(min_length=1)
    requested_at: datetime = Field(default_factory=utc_now)
