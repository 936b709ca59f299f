"""`batch.events` (key = batch_id): the lifecycle commands of a batch."""
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.base import Message, Text, utc_now


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


class BatchCreated(Message):
    type: Literal["batch_created"] = "batch_created"
    batch_id: str
    tenant: str
    name: Text = ""
    total_files: int = Field(ge=1)
    chunks: list[ChunkLayout]
    options: BatchOptions = BatchOptions()
    webhook_url: str | None = None
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
    requested_at: datetime = Field(default_factory=utc_now)


BatchEvent = Annotated[BatchCreated | BatchCancelled | BatchRetryRequested, Field(discriminator="type")]
