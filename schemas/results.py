"""`ocr.results`: one result per file, whatever happened to it. Key = file_id: a file's parts and attempts stay
in order on one partition, and a batch's files spread over them all."""
from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.base import INT32_MAX, Int32, Message, PageRange, Text, utc_now

EMBEDDING_DIMENSION = 512  # pages.embedding is vector(512)
INGEST_ENGINE = "ingest"  # files.engine of files settled at ingest (refused, deduplicated): no worker read them


class FileStatus(StrEnum):
    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"  # its batch was cancelled before the file was read


class FailureReason(StrEnum):
    """Why a file failed, for machines; `FileResult.error` says it for people."""

    UNDECODABLE = "undecodable"  # not an image or PDF we can read, or empty
    TOO_MANY_PAGES = "too_many_pages"
    LANGUAGE_UNAVAILABLE = "language_unavailable"  # no installed model for a requested language
    OCR_FAILED = "ocr_failed"  # the engine refused the page
    OCR_TIMEOUT = "ocr_timeout"  # over the per-file wall-clock limit on every try
    OCR_CRASHED = "ocr_crashed"  # the OCR process died (segfault, abort) on every try
    OCR_OUT_OF_MEMORY = "ocr_out_of_memory"  # over the per-file memory limit on every try
    OBJECT_MISSING = "object_missing"  # deleted from the object store after upload
    OBJECT_CHANGED = "object_changed"  # no longer matches the sha256 recorded at upload
    OBJECT_STORE_UNAVAILABLE = "object_store_unavailable"
    RESULT_TOO_LARGE = "result_too_large"  # one page's result exceeds the largest record the topic takes
    TRANSFORM_ERROR = "transform_error"  # an unexpected error in the worker on every try; the chunk is in the DLQ
    RESULT_REFUSED = "result_refused"  # Postgres refused the result's data; the record is in the DLQ
    # Refused at ingest (partial accept): the file never reached the object store.
    EMPTY = "empty"
    TOO_LARGE = "too_large"  # over the ingest's max_file_bytes
    UNSUPPORTED_TYPE = "unsupported_type"  # no supported file signature
    NAME_TOO_LONG = "name_too_long"
    CHECKSUM_MISMATCH = "checksum_mismatch"  # an S3 object whose size, sha256 or ETag is not the one the client gave
    DUPLICATE_MISSING = "duplicate_missing"  # deduplicated against a result that is no longer stored


class BoundingBox(BaseModel):
    model_config = ConfigDict(extra="ignore")  # see schemas.base: forward compatible

    x: Int32
    y: Int32
    width: Int32
    height: Int32


class Word(BaseModel):
    model_config = ConfigDict(extra="ignore")  # see schemas.base: forward compatible

    text: Text
    confidence: float = Field(ge=0, le=1, description="0..1")
    bbox: BoundingBox = Field(description="In pixels of the page image as sent (after EXIF rotation), even when "
                              "the page was read turned or deskewed")


class Page(BaseModel):
    model_config = ConfigDict(extra="ignore")  # see schemas.base: forward compatible

    page_number: int = Field(ge=1, le=INT32_MAX)
    width: Int32
    height: Int32
    text: Text
    mean_confidence: float = Field(ge=0, le=1, description="Mean of the words' confidences, 0..1; 0 for a page "
                                   "without words")
    rotation: Literal[0, 90, 180, 270] = Field(0, description="Clockwise turn of the text on the page as sent; "
                                               "the page was read turned back")
    skew: float = Field(0.0, ge=-45, le=45, description="Degrees the page was turned counter-clockwise to level "
                        "its text lines before reading")
    needs_review: bool = Field(False, description="The page's mean confidence is below the batch's min_confidence")
    words: list[Word] = []
    embedding: list[float] | None = Field(None, min_length=EMBEDDING_DIMENSION, max_length=EMBEDDING_DIMENSION)


class Timings(BaseModel):
    model_config = ConfigDict(extra="ignore")  # see schemas.base: forward compatible

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
    original_name: Text
    sha256: str
    size: int = Field(ge=0)
    content_type: Text
    pages: list[Page] = []
    part: PageRange | None = Field(None, description="Set when the file's result comes in several records, one per "
                                   "page range; the file is complete when its parts cover 1..total_pages")
    engine: Text
    embedding_model: Text | None = None
    timings: Timings = Timings()
    error: Text | None = Field(None, description="Why the file failed or was skipped, for a person to act on")
    error_code: FailureReason | None = Field(None, description="Why the file failed, for machines")
    attempt: int = Field(1, ge=1, le=INT32_MAX, description="The chunk's attempt: 1, and one more for each retry or "
                         "replay of the file; a later attempt's result replaces a failed one")
    produced_at: datetime = Field(default_factory=utc_now)

    @model_validator(mode="after")
    def _pages_fit(self) -> "FileResult":
        numbers = [p.page_number for p in self.pages]
        if len(set(numbers)) != len(numbers):
            raise ValueError("page numbers repeat within one result")
        if self.part and any(not self.part.first_page <= n <= self.part.last_page for n in numbers):
            raise ValueError(f"a page number lies outside the part's pages {self.part.first_page}..{self.part.last_page}")
        return self
