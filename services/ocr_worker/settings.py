from pydantic import Field

from common.settings import Settings, default_instance_id


class WorkerSettings(Settings):
    worker_id: str = Field(
        default_factory=default_instance_id,
        description="Stable per replica: part of the transactional.id, so a restarted replica fences its zombie",
    )
    engine: str = Field("tesseract", description="tesseract | fast (pipeline benchmarks only) | package.module:factory")
    embedder: str = "use-multilingual-v3"
    transaction_timeout_ms: int = Field(60000, description="Only produce+commit run inside the transaction, not OCR")
    transaction_call_timeout_s: float = Field(
        15.0, gt=0, description="Each transactional call's wait; a broker away longer is ridden out by retrying")
    fetch_concurrency: int = Field(8, ge=1, description="Objects fetched at a time: a chunk's files, and the next "
                                   "chunk's while this one is OCRed")
    prefetch_max_bytes: int = Field(64 * 1024 * 1024, ge=0, description="Bytes of objects held fetched ahead of the "
                                    "OCR; a larger file is fetched when its turn comes")
    ocr_attempts: int = Field(3, ge=1, description="Tries per file when its OCR crashes, hangs or runs out of memory")
    ocr_file_timeout_s: float = Field(120.0, gt=0, description="Wall-clock limit of one try at one file (or page range)")
    ocr_memory_limit_mb: int = Field(2048, ge=64, description="Resident memory limit of the OCR child process")
    chunk_attempts: int = Field(
        3, ge=1, description="Tries of a chunk whose transform raises unexpectedly, before it goes to the DLQ")
    handover_check_s: float = Field(
        0.5, ge=0, description="While a chunk has files to start, how often the group is looked at for an idle "
        "worker to hand half of them to (0: never)")
    max_pages_per_file: int = Field(2000, ge=1, description="Longer documents fail with too_many_pages")
    pages_per_work_item: int = Field(
        20, ge=1, description="A longer PDF is OCRed as page-range work items of this size, in parallel")
    max_result_bytes: int = Field(
        8_000_000, ge=10_000, description="A larger file result is split into page-range parts (below the topic's "
        "16 MiB max.message.bytes)")
    probe_host: str = "127.0.0.1"
    probe_port: int = 9101
