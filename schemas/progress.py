"""`batch.progress` (compacted, key = batch_id): absolute, versioned snapshots.

A reader keeps the highest version per batch, so replays and duplicates never move the view backwards.
"""
from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import Field

from schemas.base import Message


class BatchStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"  # including partial failures
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATUSES = frozenset({BatchStatus.COMPLETED, BatchStatus.FAILED, BatchStatus.CANCELLED})


class BatchProgress(Message):
    type: Literal["batch_progress"] = "batch_progress"
    batch_id: str
    tenant: str
    name: str = ""
    status: BatchStatus
    total_files: int = Field(ge=0, description="0 while the BatchCreated event has not been persisted yet")
    total_chunks: int = Field(ge=0)
    succeeded: int = Field(ge=0)
    failed: int = Field(ge=0)
    skipped: int = Field(ge=0)
    cancelled: int = Field(0, ge=0, description="Files never read because the batch was cancelled first")
    cancel_requested: bool = Field(False, description="A cancel was asked for; the batch ends cancelled once "
                                   "its running chunks finish")
    sealed: bool = Field(True, description="False while the batch is open (files may still be added); it "
                         "completes only once sealed")
    created_at: datetime | None = None
    started_at: datetime | None = None
    updated_at: datetime
    finished_at: datetime | None = None
    version: int = Field(ge=0, description="0 is ingest's 'pending' snapshot at acceptance; the persister's start at 1")
    webhook_url: str | None = Field(None, description="Where the notifier POSTs this batch's terminal status")

    @property
    def processed_files(self) -> int:
        return self.succeeded + self.failed + self.skipped + self.cancelled
