from pydantic import Field

from common.settings import Settings

RESULTS_PAGE_SIZE_MAX = 1000  # bounds one /results answer: a page of files with all their pages' text
LONG_POLL_MAX_SECONDS = 60  # bounds ?wait= on GET /v1/batches/{id}: below common proxy idle timeouts
LIST_PAGE_SIZE = 50  # batches or files per listing page when no limit is given: one screen of a table
LIST_PAGE_SIZE_MAX = 1000
THUMBNAIL_WIDTH_MAX = 4096  # bounds ?width= of a page image: the work one request may ask for


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
    sse_ping_seconds: float = Field(15.0, gt=0, description="Keep-alive comment interval on an idle SSE stream")
    sse_queue_size: int = Field(
        256, ge=1, description="Snapshots held for one slow SSE client; beyond that its oldest unsent one is dropped"
    )
    search_candidates: int = Field(100, ge=1, le=1000, description="Pages each ranking (lexical, semantic) "
                                                                   "contributes to the fusion")
    search_rrf_k: int = Field(60, ge=1, description="Reciprocal rank fusion constant: score = sum 1/(k + rank)")
    console_ingest_url: str = Field("http://127.0.0.1:8000", description="The ingest API's base URL as a browser "
                                    "reaches it: the console (/ui) uploads, cancels and retries there (allow the "
                                    "console's origin in ingest's OCRSTREAM_CORS_ORIGINS)")
