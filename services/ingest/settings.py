from pydantic import Field

from common.settings import Settings

MIB = 1024 * 1024


class IngestSettings(Settings):
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    status_api_url: str = Field("http://127.0.0.1:8001", description="Base of the status_url answered with each batch")
    default_chunk_size: int = Field(10, ge=1, description="Files per OCR chunk when the client names none")
    max_chunk_size: int = Field(500, ge=1)
    max_files_per_batch: int = Field(1000, ge=1)
    max_file_bytes: int = Field(100 * MIB, ge=1)
    store_concurrency: int = Field(16, ge=1, description="Files of one batch stored to the object store at a time")
    kafka_delivery_timeout_s: float = Field(
        15.0, gt=0, description="How long a batch's records may take to be acknowledged before the batch answers 503"
    )
