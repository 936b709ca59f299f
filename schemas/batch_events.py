"""`batch.events` (key = batch_id): the lifecycle commands of a batch."""
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.base import Message, Text, utc_now
from schemas.results import FailureReason


class BatchOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")  # see schemas.base: forward compatible

    languages: str = Field("kor+eng", pattern=r"^[a-z_]{3,8}(\+[a-z_]{3,8})*$", description="Tesseract languages, e.g. kor+eng")
    pdf_dpi: int = Field(200, ge=72, le=600)
    embeddings: bool = True
    min_confidence: float | None = Field(None, ge=0, le=1, description="Pages whose mean word confidence (0..1) "
                                         "is below this are marked needs_review in the results; None marks none")


class ChunkLayout(BaseModel):
    model_config = ConfigDict(extra="ignore")  # see schemas.base: forward compatible

    chunk_id: str
    file_count: int = Field(ge=1)


class RejectedFile(BaseModel):
    """A file refused at ingest (partial accept): it ends `failed` with this reason, without being read."""

    model_config = ConfigDict(extra="ignore")  # see schemas.base: forward compatible

    file_id: str
    original_name: Text
    size: int = Field(ge=0)
    sha256: str = ""
    error_code: FailureReason
    error: Text


class DuplicateFile(BaseModel):
    """A file whose sha256 the tenant already had OCRed with the same options: it ends with a copy of that
    result, marked duplicate_of, without being read again."""

    model_config = ConfigDict(extra="ignore")  # see schemas.base: forward compatible

    file_id: str
    original_name: Text
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    content_type: Text
    duplicate_of: str = Field(description="The file_id whose result this file shares")


class BatchCreated(Message):
    type: Literal["batch_created"] = "batch_created"
    batch_id: str
    tenant: str
    name: Text = ""
    total_files: int = Field(ge=1, description="Files in chunks, plus rejected and duplicate files")
    chunks: list[ChunkLayout]
    options: BatchOptions = BatchOptions()
    webhook_url: str | None = None
    rejected: list[RejectedFile] = Field([], description="Counted in total_files, in no chunk: they end failed")
    duplicates: list[DuplicateFile] = Field([], description="Counted in total_files, in no chunk: they end with "
                                            "the earlier result's copy")
    open: bool = Field(False, description="Files may still be added (BatchFilesAdded) until BatchSealed; the batch "
                       "completes only once sealed")
    created_at: datetime = Field(default_factory=utc_now)


class BatchCancelled(Message):
    type: Literal["batch_cancelled"] = "batch_cancelled"
    batch_id: str
    tenant: str
    reason: Text = ""
    requested_at: datetime = Field(default_factory=utc_now)


class BatchRetryRequested(Message):
    type: Literal["batch_retry_requested"] = "batch_retry_requested"
    batch_id: str
    tenant: str
    file_ids: list[str] = Field(description="The failed files to run again; empty means every failed file")
    attempt: int = Field(2, ge=2, description="The attempt the retried files' new chunks carry; a failed row with "
                         "a lower attempt waits for it")
    requested_at: datetime = Field(default_factory=utc_now)


class BatchFilesAdded(Message):
    """Files added to an open batch: their chunks follow this event (in ocr.chunks); the totals are absolute."""

    type: Literal["batch_files_added"] = "batch_files_added"
    batch_id: str
    tenant: str
    total_files: int = Field(ge=1, description="The batch's files once this addition is counted")
    total_chunks: int = Field(ge=0, description="The batch's chunks once this addition is counted")
    chunks: list[ChunkLayout] = Field(description="The added files' chunks; their numbering continues the batch's")
    rejected: list[RejectedFile] = Field([], description="Added files refused at ingest: they end failed")
    duplicates: list[DuplicateFile] = Field([], description="Added files linked to an earlier result")
    added_at: datetime = Field(default_factory=utc_now)


class BatchSealed(Message):
    """No file can be added any more: the batch completes once each of its total_files has a result."""

    type: Literal["batch_sealed"] = "batch_sealed"
    batch_id: str
    tenant: str
    total_files: int = Field(ge=1, description="The batch's final file count")
    total_chunks: int = Field(ge=0)
    sealed_at: datetime = Field(default_factory=utc_now)


BatchEvent = Annotated[BatchCreated | BatchCancelled | BatchRetryRequested | BatchFilesAdded | BatchSealed,
                       Field(discriminator="type")]
