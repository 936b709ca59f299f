"""The public REST resources of ingest and status_api (request and response models kept apart)."""
import urllib.parse
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.progress import BatchStatus
from schemas.results import FailureReason, FileStatus, Word

MAX_NAME_CHARS = 200
MAX_ID_CHARS = 64
MAX_S3_KEY_CHARS = 1024  # S3's own limit on a key
MAX_BUCKET_CHARS = 63
MAX_URL_CHARS = 2048


def _without_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL (0x00) characters")
    return value


# Free text a client sends: bounded, and refused (not silently changed) when it holds NUL.
def BoundedText(max_length: int) -> type[str]:  # noqa: N802 - reads as a type in annotations
    return Annotated[str, Field(max_length=max_length), AfterValidator(_without_nul)]


class RejectedFilePublic(BaseModel):
    """A file that did not enter the batch; it is a `failed` result with this code."""

    index: int = Field(description="Position in the request (multipart part or objects[] entry)")
    file: str = Field(description="The file's name, or the S3 key")
    file_id: str
    code: FailureReason
    reason: str


class WebhookDeliveryStatus(StrEnum):
    PENDING = "pending"  # not yet accepted by the receiver; retried with backoff
    DELIVERED = "delivered"  # the receiver answered 2xx
    FAILED = "failed"  # no 2xx within the retry window, or a final 4xx
    REFUSED = "refused"  # the URL points at a private, loopback or link-local address (SSRF guard)


class BatchAccepted(BaseModel):
    """202 answer of POST /v1/batches (headers: Location = status_url, Retry-After)."""

    batch_id: str
    status: BatchStatus
    total_files: int = Field(description="Every file of the request, rejected and deduplicated ones included")
    total_chunks: int
    status_url: str
    deduplicated: int = Field(0, description="Files linked to an earlier result of the same sha256 and options")
    rejected: list[RejectedFilePublic] = Field([], description="Files that could not be accepted; each ends failed")


class FilesAccepted(BaseModel):
    """202 answer of POST /v1/batches/{batch_id}/files (headers: Location = status_url, Retry-After)."""

    batch_id: str
    file_ids: list[str] = Field(description="The id of each file of the request, in request order (rejected and "
                                "deduplicated ones included)")
    added_chunks: int
    total_files: int = Field(description="The batch's files with these")
    total_chunks: int = Field(description="The batch's chunks with these")
    status_url: str
    deduplicated: int = Field(0, description="Files linked to an earlier result of the same sha256 and options")
    rejected: list[RejectedFilePublic] = Field([], description="Files that could not be accepted; each ends failed")


class SealAccepted(BaseModel):
    """Answer of POST /v1/batches/{batch_id}/seal: 202 when this request sealed it, 200 when it already was."""

    batch_id: str
    sealed: bool = True
    total_files: int = Field(description="The batch's final file count")
    total_chunks: int
    status_url: str


class S3ObjectRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bucket: BoundedText(MAX_BUCKET_CHARS)
    key: BoundedText(MAX_S3_KEY_CHARS)
    size: int | None = Field(None, ge=0, description="Expected size in bytes; a different one fails the file")
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="Expected sha256 (hex)")
    etag: BoundedText(200) | None = Field(None, description="Expected ETag (quotes optional)")


class S3Prefix(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bucket: BoundedText(MAX_BUCKET_CHARS)
    prefix: BoundedText(MAX_S3_KEY_CHARS) = ""


class BatchOptionsFields(BaseModel):
    """What both ways of creating a batch take besides the files."""

    name: BoundedText(MAX_NAME_CHARS) = ""
    chunk_size: int | None = Field(None, ge=1, description="Files per OCR chunk on average, at most max_chunk_size: "
                                   "n files go out in ceil(n / chunk_size) chunks of about equal bytes, none over "
                                   "twice chunk_size files")
    languages: BoundedText(64) = Field("kor+eng", description="Installed Tesseract languages joined by +, e.g. kor+eng")
    pdf_dpi: int = Field(200, ge=72, le=600)
    embeddings: bool = True
    min_confidence: float | None = Field(None, ge=0, le=1)
    dedupe: bool = Field(True, description="Link files already OCRed with the same options (same sha256) to that "
                         "result instead of reading them again")
    strict: bool = Field(False, description="Refuse the whole batch (422/415) if any file cannot be accepted")
    webhook_url: BoundedText(MAX_URL_CHARS) | None = Field(None, description="http(s) URL the batch's terminal status is "
                                                  "POSTed to, signed (Standard Webhooks headers)")

    @field_validator("webhook_url")
    @classmethod
    def _absolute_http_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parsed = urllib.parse.urlsplit(value.strip())
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError("webhook_url must be an absolute http:// or https:// URL with a host")
        return value.strip()


class BatchCreateFields(BatchOptionsFields):
    """The form fields of a multipart POST /v1/batches."""

    open: bool = Field(False, description="Leave the batch open: add files with POST /v1/batches/{batch_id}/files "
                       "(up to max_files_per_open_batch in all), then POST /v1/batches/{batch_id}/seal; it completes "
                       "only once sealed")


class FilesAddFields(BaseModel):
    """The form fields of POST /v1/batches/{batch_id}/files besides the files (the batch keeps its options)."""

    model_config = ConfigDict(extra="forbid")

    dedupe: bool = Field(True, description="Link files already OCRed with the batch's options (same sha256) to that "
                         "result instead of reading them again")
    strict: bool = Field(False, description="Refuse the whole request (422/415) if any file cannot be accepted")


class S3BatchCreate(BatchOptionsFields):
    """JSON body of POST /v1/batches: a batch of objects already in S3 (exactly one of objects, prefix)."""

    model_config = ConfigDict(extra="forbid")

    objects: list[S3ObjectRef] | None = Field(None, min_length=1)
    prefix: S3Prefix | None = None

    @model_validator(mode="after")
    def _one_source(self) -> "S3BatchCreate":
        if (self.objects is None) == (self.prefix is None):
            raise ValueError("give exactly one of objects, prefix")
        return self


class RetryCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file_ids: list[BoundedText(MAX_ID_CHARS)] = Field([], max_length=100_000,
                                                      description="Only these failed files; empty: every failed file")


class CancelAccepted(BaseModel):
    batch_id: str
    status: BatchStatus = Field(description="The status when the cancel was asked for; it ends cancelled")
    cancel_requested: bool = True
    status_url: str


class RetryAccepted(BaseModel):
    batch_id: str
    status: BatchStatus
    attempt: int
    file_ids: list[str]
    total_chunks: int
    status_url: str


class S3EventsAccepted(BaseModel):
    received: int = Field(description="Records in the notification")
    new: int = Field(description="Objects queued for the next batch")
    duplicates: int = Field(description="Objects already notified (nothing is created twice)")
    ignored: int = Field(description="Records that are not ObjectCreated events")


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
    cancelled: int = 0
    sealed: bool = Field(True, description="False while files may still be added; an open batch never completes")
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




class ProblemCode(StrEnum):
    """The stable machine code of every error answer (RFC 9457 `code` extension member)."""

    UNAUTHORIZED = "unauthorized"  # 401
    S3_ACCESS_DENIED = "s3_access_denied"  # 403: a bucket/prefix this tenant's key may not read
    NOT_FOUND = "not_found"  # 404: no such route
    BATCH_NOT_FOUND = "batch_not_found"  # 404: no such batch for this tenant
    METHOD_NOT_ALLOWED = "method_not_allowed"  # 405
    INVALID_MULTIPART = "invalid_multipart"  # 400
    INVALID_JSON = "invalid_json"  # 400
    INVALID_IDEMPOTENCY_KEY = "invalid_idempotency_key"  # 400
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"  # 409: same key, different request
    BATCH_FINISHED = "batch_finished"  # 409: cancel of a completed or failed batch
    BATCH_CANCELLED = "batch_cancelled"  # 409: retry, addition or seal of a cancelled batch
    BATCH_NOT_FINISHED = "batch_not_finished"  # 409: retry before the batch has finished
    BATCH_SEALED = "batch_sealed"  # 409: files added to a batch that is sealed (or was never open)
    NOTHING_TO_RETRY = "nothing_to_retry"  # 409: no failed file to run again
    REQUEST_TOO_LARGE = "request_too_large"  # 413: body over max_request_bytes
    TOO_MANY_FILES = "too_many_files"  # 413: more files than max_files_per_batch
    BATCH_FULL = "batch_full"  # 413: the files would take an open batch over max_files_per_open_batch
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"  # 415: body neither multipart/form-data nor JSON
    UNSUPPORTED_TYPE = "unsupported_type"  # 415: strict, or no file at all, of a supported type
    INVALID_REQUEST = "invalid_request"  # 422: a field is invalid; `errors` lists each
    NO_FILES = "no_files"  # 422
    INVALID_FILES = "invalid_files"  # 422: strict, or every file refused; `errors` lists each file and why
    FILES_NOT_RETRYABLE = "files_not_retryable"  # 422: a given file id is not a failed file of the batch
    FILE_NOT_FOUND = "file_not_found"  # 404: no such file in the tenant's batch, or its result is not stored yet
    PAGE_NOT_FOUND = "page_not_found"  # 404
    CONTENT_MISSING = "content_missing"  # 404: the stored original is gone from the object store
    INVALID_CURSOR = "invalid_cursor"  # 400: not a next_cursor this API answered
    PAGE_NOT_RENDERABLE = "page_not_renderable"  # 422: the stored bytes cannot be drawn
    INTERNAL_ERROR = "internal_error"  # 500
    UNAVAILABLE = "unavailable"  # 503: Kafka, S3 or Postgres away, or the view still loading; retry
    OBJECT_STORE_UNAVAILABLE = "object_store_unavailable"  # 503


class ProblemDetail(BaseModel):
    """Every 4xx/5xx body, RFC 9457 problem details (application/problem+json) with a stable `code`."""

    type: str = Field("about:blank", description="A URI naming the problem type")
    title: str = Field("", description="The HTTP reason phrase")
    status: int | None = None
    code: ProblemCode | None = Field(None, description="Stable machine code; see ProblemCode")
    detail: str | list | dict = Field(description="What went wrong, for a person to act on")
    errors: list[dict] | None = Field(None, description="Each invalid field or file, and why")
