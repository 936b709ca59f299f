from pydantic import Field

from common.settings import Settings, default_instance_id


class WorkerSettings(Settings):
    worker_id: str = Field(
        default_factory=default_instance_id,
        description="Stable per replica: part of the transactional.id, so a restarted replica fences its zombie",
    )
    worker_group: str = "ocrstream-ocr-worker"
    engine: str = Field("tesseract", description="tesseract | fast (the fast engine is for pipeline benchmarks only)")
    embedder: str = "use-multilingual-v3"
    transaction_timeout_ms: int = Field(60000, description="Only produce+commit run inside the transaction, not OCR")
    fetch_attempts: int = Field(3, ge=1, description="Tries per chunk on object-store errors before its files fail")
    max_pages_per_file: int = 500
    probe_host: str = "127.0.0.1"
    probe_port: int = 9101
