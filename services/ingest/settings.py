from pydantic import Field

from common.settings import Settings

MIB = 1024 * 1024


class IngestSettings(Settings):
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    status_api_url: str = Field("http://127.0.0.1:8001", description="Base of the status_url answered with each batch")
    default_chunk_size: int = Field(10, ge=1, description="Files per OCR chunk on average (chunks are cut to about "
                                    "equal bytes) when the client names none")
    max_chunk_size: int = Field(500, ge=1)
    max_files_per_batch: int = Field(
        10_000, ge=1, description="Files (or S3 objects) one request may hold: a new batch, or an addition to an "
        "open one")
    max_files_per_open_batch: int = Field(
        100_000, ge=1, description="Files an open batch (open=true) may grow to across requests")
    max_file_bytes: int = Field(100 * MIB, ge=1)
    cors_origins: list[str] = Field(
        default_factory=list, description='Browser origins that may call this API, as a JSON list, e.g. '
        '["http://127.0.0.1:8001"] for the console the status API serves; none by default')
    max_request_bytes: int = Field(
        4096 * MIB, ge=1, description="Largest request body; checked (with the API key) before any of it is read")
    store_concurrency: int = Field(16, ge=1, description="Files of one batch stored to the object store at a time")
    kafka_delivery_timeout_s: float = Field(
        15.0, gt=0, description="How long a batch's records may take to be acknowledged before the batch answers 503"
    )
    ocr_languages: list[str] = Field(
        ["eng", "kor"], description="Language models installed on the OCR workers; `languages` may name only these")
    accepted_retry_after_s: int = Field(2, ge=1, description="Retry-After of a 202: when to look at the status URL")
    idempotency_ttl_s: float = Field(
        86_400.0, ge=86_400, description="How long an Idempotency-Key answers with its first 202")
    s3_sources: dict[str, list[str]] = Field(
        default_factory=dict,
        description='JSON object tenant → the "bucket" or "bucket/prefix" locations its batches may read from S3, '
                    'e.g. {"acme": ["scans/acme/"]}; a tenant not listed may read none')
    s3_read_concurrency: int = Field(8, ge=1, description="S3 objects verified (stat, sha256) at once per request")
    s3_event_window_s: float = Field(
        10.0, gt=0, description="S3 event notifications of one tenant arriving within this window form one batch")
    stalled_batch_s: float = Field(
        120.0, gt=0, description="A sealed batch with no new result for this long, while the workers and the "
        "persister have nothing left to read, has its files without a result run again (results the broker lost)")
    db_pool_size: int = Field(8, ge=1, description="Postgres connections (dedupe, Idempotency-Key, cancel, retry)")
