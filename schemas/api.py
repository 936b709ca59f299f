"""The public REST resources of ingest and status_api (request and response models kept apart)."""
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from schemas.progress import BatchStatus
from schemas.results import FailureReason, FileStatus, Word

MAX_NAME_CHARS = 200
MAX_ID_CHARS = 64
MAX_S3_KEY_CHARS = 1024  # S3's own limit on a key
MAX_BUCKET_CHARS = 63


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


class BatchAccepted(BaseModel):
    """202 answer of POST /v1/batches (headers: Location = status_url, Retry-After)."""

    batch_id: str
    status: BatchStatus
    total_files: int = Field(description="Every file of the request, rejected and deduplicated ones included")
    total_chunks: int
    status_url: str
    deduplicated: int = Field(0, description="Files linked to an earlier result of the same sha256 and options")
    rejected: list[RejectedFilePublic] = Field([], description="Files that could not be accepted; each ends failed")


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
    chunk_size: int | None = Field(None, ge=1, description="Files per OCR chunk, at most max_chunk_size")
    languages: BoundedText(64) = Field("kor+eng", description="Installed Tesseract languages joined by +, e.g. kor+eng")
    pdf_dpi: int = Field(200, ge=72, le=600)
    embeddings: bool = True
    min_confidence: float | None = Field(None, ge=0, le=1)
    dedupe: bool = Field(True, description="Link files already OCRed with the same options (same sha256) to that "
                         "result instead of reading them again")
    strict: bool = Field(False, description="Refuse the whole batch (422/415) if any file cannot be accepted")


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
    BATCH_CANCELLED = "batch_cancelled"  # 409: retry of a cancelled batch
    BATCH_NOT_FINISHED = "batch_not_finished"  # 409: retry before the batch has finished
    NOTHING_TO_RETRY = "nothing_to_retry"  # 409: no failed file to run again
    REQUEST_TOO_LARGE = "request_too_large"  # 413: body over max_request_bytes
    TOO_MANY_FILES = "too_many_files"  # 413: more files than max_files_per_batch
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"  # 415: body neither multipart/form-data nor JSON
    UNSUPPORTED_TYPE = "unsupported_type"  # 415: strict, or no file at all, of a supported type
    INVALID_REQUEST = "invalid_request"  # 422: a field is invalid; `errors` lists each
    NO_FILES = "no_files"  # 422
    INVALID_FILES = "invalid_files"  # 422: strict, or every file refused; `errors` lists each file and why
    FILES_NOT_RETRYABLE = "files_not_retryable"  # 422: a given file id is not a failed file of the batch
    INTERNAL_ERROR = "internal_error"  # 500
    UNAVAILABLE = "unavailable"  # 503: Kafka, S3 or Postgres away; nothing was accepted, retry


class ProblemDetail(BaseModel):
    """Every 4xx/5xx body, RFC 9457 problem details (application/problem+json) with a stable `code`."""

    type: str = Field("about:blank", description="A URI naming the problem type")
    title: str = Field("", description="The HTTP reason phrase")
    status: int | None = None
    code: ProblemCode | None = Field(None, description="Stable machine code; see ProblemCode")
    detail: str | list | dict = Field(description="What went wrong, for a person to act on")
    errors: list[dict] | None = Field(None, description="Each invalid field or file, and why")
