"""The public REST resources of ingest and status_api (request and response models kept apart)."""
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from schemas.progress import BatchStatus
from schemas.results import FileStatus, Word


class WebhookDeliveryStatus(StrEnum):
    PENDING = "pending"  # not yet accepted by the receiver; retried with backoff
    DELIVERED = "delivered"  # the receiver answered 2xx
    FAILED = "failed"  # no 2xx within the retry window, or a final 4xx
    REFUSED = "refused"  # the URL points at a private, loopback or link-local address (SSRF guard)


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


class BatchesPublic(BaseModel):
    """GET /v1/batches: the caller's batches, newest first."""

    data: list[BatchPublic]
    next_cursor: str | None = Field(description="Pass as ?cursor= to get the next page; null at the end")


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
    error_code: str | None = Field(None, description="Why the file failed, for machines (schemas.results."
                                                      "FailureReason); null unless failed")
    engine: str
    text: str = Field(description="All pages' text, pages separated by a form feed")
    pages: list[PagePublic]


class FileResultsPublic(BaseModel):
    batch_id: str
    data: list[FileResultPublic]
    next_cursor: str | None = Field(description="Pass as ?cursor= to get the next page; null at the end")


class FileSummaryPublic(BaseModel):
    """One row of a batch's file listing: what a table shows, without the text."""

    file_id: str
    original_name: str
    status: FileStatus
    content_type: str
    size: int
    page_count: int
    error: str | None
    error_code: str | None = Field(description="Why the file failed, for machines; null unless failed")


class FileSummariesPublic(BaseModel):
    batch_id: str
    data: list[FileSummaryPublic]
    next_cursor: str | None = Field(description="Pass as ?cursor= to get the next page; null at the end")


class TextSpan(BaseModel):
    start: int = Field(ge=0, description="First character of the span, 0-based")
    end: int = Field(ge=0, description="One past its last character")


class SearchHit(BaseModel):
    batch_id: str
    file_id: str
    original_name: str
    page_number: int
    score: float = Field(description="Reciprocal-rank fusion of the lexical and the semantic rank; higher is better")
    similarity: float | None = Field(None, description="Cosine similarity of the page to the query, 1 is identical; "
                                                       "null when the page has no embedding")
    lexical_rank: int | None = Field(None, description="1-based rank among exact and trigram text matches; null if none")
    semantic_rank: int | None = Field(None, description="1-based rank by cosine similarity; null if outside the pool")
    snippet: str
    match: TextSpan | None = Field(None, description="The query's exact match within `snippet` (spaces and case "
                                                     "ignored); null when the page matched by meaning only")
    match_words: list[Word] = Field(default_factory=list,
                                    description="The page's OCR words covering the match, with boxes to highlight")


class SearchResults(BaseModel):
    query: str
    data: list[SearchHit]


class WebhookAttemptPublic(BaseModel):
    attempt: int
    attempted_at: datetime
    status_code: int | None = Field(description="The receiver's HTTP status; null when no answer came")
    error: str | None
    duration_ms: float


class WebhookDeliveryPublic(BaseModel):
    delivery_id: str = Field(description="Sent as the webhook-id header; the same on every retry")
    event_type: str = Field(description="batch.completed, batch.failed, batch.cancelled or batch.progress")
    url: str
    status: WebhookDeliveryStatus
    attempts: list[WebhookAttemptPublic]
    created_at: datetime
    next_attempt_at: datetime | None = Field(description="When the next attempt is due; null once final")
    delivered_at: datetime | None
    last_error: str | None


class WebhookDeliveriesPublic(BaseModel):
    batch_id: str
    data: list[WebhookDeliveryPublic]


class WebhookBatchData(BaseModel):
    batch_id: str
    name: str
    status: BatchStatus
    total_files: int
    processed_files: int
    succeeded: int
    failed: int
    skipped: int
    percent: float = Field(ge=0, le=100)
    milestone: int | None = Field(description="The percent milestone this batch.progress event marks; null otherwise")
    updated_at: datetime
    finished_at: datetime | None
    version: int


class WebhookEvent(BaseModel):
    """The body the notifier POSTs (Standard Webhooks: webhook-id, webhook-timestamp, webhook-signature headers;
    the signature is v1,base64(HMAC-SHA256(secret, f"{id}.{timestamp}.{body}")))."""

    type: str = Field(description="batch.completed, batch.failed, batch.cancelled, or batch.progress (milestones)")
    timestamp: datetime = Field(description="When the event happened (the snapshot's updated_at)")
    data: WebhookBatchData


class ProblemDetail(BaseModel):
    """Every 4xx/5xx body: FastAPI's {"detail": ...} with a reason a person can act on."""

    detail: str | list | dict
    code: str | None = Field(None, description="Stable machine code of the error, e.g. batch_not_found (status API)")
