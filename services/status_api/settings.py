from pydantic import Field

from common.settings import Settings

RESULTS_PAGE_SIZE_MAX = 1000  # bounds one /results answer: a page of files with all their pages' text


class StatusSettings(Settings):
    http_host: str = "127.0.0.1"
    http_port: int = 8001
    embedder: str = Field("use-multilingual-v3", description="Must be the model the OCR workers embed pages with")
    results_page_size: int = Field(
        100, ge=1, le=RESULTS_PAGE_SIZE_MAX, description="Files per /results page when no limit is given"
    )
    database_wait_seconds: float = Field(
        5.0, gt=0, description="How long a request waits for a pooled connection before answering 503"
    )
