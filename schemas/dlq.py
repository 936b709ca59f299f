"""`ocr.dlq`: what could not be processed, kept whole with the reason."""
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.base import Message, utc_now


class DlqHeader(BaseModel):
    model_config = ConfigDict(extra="ignore")  # see schemas.base: forward compatible

    key: str
    value_b64: str | None


class DlqRecord(Message):
    type: Literal["dlq_record"] = "dlq_record"
    source_topic: str
    partition: int
    offset: int
    key_b64: str | None = Field(description="The original key bytes, base64")
    value_b64: str | None = Field(description="The original value bytes, base64")
    headers: list[DlqHeader] = []
    reason: str
    error_class: str
    service: str
    attempts: int = Field(1, ge=1, description="Tries made before the record was dead-lettered")
    file_ids: list[str] = Field([], description="For a chunk: the files that kept failing (a replay reruns only "
                                "these); empty means the whole record")
    failed_at: datetime = Field(default_factory=utc_now)
