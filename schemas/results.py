"""`ocr.results` (key = batch_id): one result per file, whatever happened to it."""
from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.base import Message, utc_now


class FileStatus(StrEnum):
    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"


class BoundingBox(BaseModel):
    model_config = ConfigDict(extra="forbid")

    x: int = Field(ge=0)
    y: int = Field(ge=0)
    width: int = Field(ge=0)
    height: int = Field(ge=0)


class Word(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str
    confidence: float = Field(ge=0, le=100)
    bbox: BoundingBox


class Page(BaseModel):
    model_config = ConfigDict(extra="forbid")

    page_number: int = Field(ge=1)
    width: int = Field(ge=0)
    height: int = Field(ge=0)
    text: str
    mean_confidence: float = Field(ge=0, le=100)
    words: list[Word] = []
    embedding: list[float] | None = None


class Timings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fetch_ms: float = 0.0
    decode_ms: float = 0.0
    ocr_ms: float = 0.0
    embed_ms: float = 0.0


class FileResult(Message):
    type: Literal["file_result"] = "file_result"
    batch_id: str
    chunk_id: str
    file_id: str
    tenant: str
    status: FileStatus
    original_name: str
    sha256: str
    size: int = Field(ge=0)
    content_type: str
    pages: list[Page] = []
    engine: str
    embedding_model: str | None = None
    timings: Timings = Timings()
    error: str | None = Field(None, description="Why the file failed or was skipped, for a person to act on")
    attempt: int = Field(1, ge=1)
    produced_at: datetime = Field(default_factory=utc_now)
