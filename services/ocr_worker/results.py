"""Pure: what the engine and embedder produced → the FileResult contract."""
from schemas.chunks import ChunkRequested, StoredFile
from schemas.results import BoundingBox, FailureReason, FileResult, FileStatus, Page, Timings, Word
from services.ocr_worker.engine import RecognizedPage


def page_from_recognized(page_number: int, page: RecognizedPage) -> Page:
    return Page(
        page_number=page_number,
        width=page.width,
        height=page.height,
        text=page.text,
        mean_confidence=_unit(page.mean_confidence),
        rotation=page.rotation,
        skew=page.skew,
        words=[
            Word(
                text=w.text,
                confidence=_unit(w.confidence),
                bbox=BoundingBox(x=max(0, w.bbox[0]), y=max(0, w.bbox[1]), width=max(0, w.bbox[2]), height=max(0, w.bbox[3])),
            )
            for w in page.words
        ],
    )


def _unit(confidence: float) -> float:
    return max(0.0, min(1.0, confidence))


def file_result(
    chunk: ChunkRequested,
    stored: StoredFile,
    *,
    engine: str,
    pages: list[Page] = (),
    embedding_model: str | None = None,
    timings: Timings | None = None,
    error: str | None = None,
    error_code: FailureReason | None = None,
) -> FileResult:
    """An ok result when there is no error, a failed one with the reason otherwise. Pages whose mean confidence
    is below the batch's min_confidence are marked needs_review (a page without words among them)."""
    return FileResult(
        batch_id=chunk.batch_id,
        chunk_id=chunk.chunk_id,
        file_id=stored.file_id,
        tenant=chunk.tenant,
        status=FileStatus.FAILED if error else FileStatus.OK,
        original_name=stored.original_name,
        sha256=stored.sha256,
        size=stored.size,
        content_type=stored.content_type,
        pages=[] if error else [_reviewed(page, chunk.options.min_confidence) for page in pages],
        part=stored.pages,  # a page-range work item's result is that part of the file
        engine=engine,
        embedding_model=None if error else embedding_model,
        timings=timings or Timings(),
        error=error,
        error_code=(error_code or FailureReason.UNDECODABLE) if error else None,
        attempt=chunk.attempt,
    )


def cancelled_result(chunk: ChunkRequested, stored: StoredFile, *, engine: str) -> FileResult:
    """The file was never read: its batch was cancelled before its chunk started."""
    return FileResult(batch_id=chunk.batch_id, chunk_id=chunk.chunk_id, file_id=stored.file_id, tenant=chunk.tenant,
                      status=FileStatus.CANCELLED, original_name=stored.original_name, sha256=stored.sha256,
                      size=stored.size, content_type=stored.content_type, part=stored.pages, engine=engine,
                      error="the batch was cancelled before this file was read", attempt=chunk.attempt)


def _reviewed(page: Page, min_confidence: float | None) -> Page:
    needs_review = min_confidence is not None and page.mean_confidence < min_confidence
    return page.model_copy(update={"needs_review": needs_review}) if needs_review != page.needs_review else page
