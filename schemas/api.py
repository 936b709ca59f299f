"""The public REST resources of ingest and status_api (request and response models kept apart)."""
from datetime import datetime

from pydantic import BaseModel, Field

from schemas.progress import BatchStatus
from schemas.results import FileStatus, Word


class BatchAccepted(BaseModel):
    """202 answer of POST /v1/batches."""

    batch_id: str
    status: BatchStatus
    total_files: int
    total_chunks: int
    status_url: str


class BatchPublic(BaseModel):
    batch_id: str
    name: str
    status: BatchStatus
    total_files: int
    total_chunks: int
    processed_files: int
    succeeded: int
    failed: int
    skipped: int
    percent: float = Field(ge=0, le=100)
    created_at: datetime | None
    started_at: datetime | None
    updated_at: datetime
    finished_at: datetime | None
    eta_seconds: float | None = Field(description="Estimated seconds to completion; null when unknown or finished")
    version: int


class PagePublic(BaseModel):
    page_number: int
    width: int
    height: int
    text: str
    mean_confidence: float
    words: list[Word] | None = Field(None, description="Present when include_words=true")


class FileResultPublic(BaseModel):
    file_id: str
    original_name: str
    status: FileStatus
    content_type: str
    size: int
    sha256: str
    page_count: int
    error: str | None
    engine: str
    text: str = Field(description="All pages' text, pages separated by a form feed")
    pages: list[PagePublic]


class FileResultsPublic(BaseModel):
    batch_id: str
    data: list[FileResultPublic]
    next_cursor: str | None = Field(description="Pass as ?cursor= to get the next page; null at the end")


class SearchHit(BaseModel):
    batch_id: str
    file_id: str
    original_name: str
    page_number: int
    score: float = Field(description="Cosine similarity, 1 is identical")
    snippet: str


class SearchResults(BaseModel):
    query: str
    data: list[SearchHit]


class ProblemDetail(BaseModel):
    """Every 4xx/5xx body: FastAPI's {"detail": ...} with a reason a person can act on."""

    detail: str | list | dict
