"""Pure: how one file's work and one file's result are cut into page ranges.

A long PDF becomes several work items (one ChunkRequested each), so no single try holds a chunk for an hour;
a result too large for one Kafka record becomes several parts. The persister joins the parts into one file.
"""
from schemas.base import PageRange
from schemas.chunks import ChunkRequested, StoredFile
from schemas.results import FailureReason, FileResult, FileStatus, Page
from schemas.topics import encode


def page_range_work_items(chunk: ChunkRequested, stored: StoredFile, total_pages: int,
                          pages_per_item: int) -> list[ChunkRequested]:
    items = []
    for first in range(1, total_pages + 1, pages_per_item):
        pages = PageRange(first_page=first, last_page=min(first + pages_per_item - 1, total_pages),
                          total_pages=total_pages)
        items.append(chunk.model_copy(update={
            "chunk_id": f"{chunk.chunk_id}.{stored.file_id}.p{first}",
            "files": [stored.model_copy(update={"pages": pages})],
        }))
    return items


def split_result(result: FileResult, max_bytes: int) -> list[FileResult]:
    """The result as it is when its record fits in max_bytes; otherwise halves (then quarters...) by pages until
    each part fits. A single page too large for a record becomes a failed part (result_too_large)."""
    if len(encode(result)) <= max_bytes:
        return [result]
    total_pages = result.part.total_pages if result.part else len(result.pages)
    if len(result.pages) <= 1:
        page = result.pages[0].page_number if result.pages else 1
        return [result.model_copy(update={
            "pages": [], "part": PageRange(first_page=page, last_page=page, total_pages=total_pages),
            "status": FileStatus.FAILED, "error_code": FailureReason.RESULT_TOO_LARGE, "embedding_model": None,
            "error": f"page {page}'s result is larger than the largest record ({max_bytes:,} bytes)"})]
    half = len(result.pages) // 2
    return [part for pages in (result.pages[:half], result.pages[half:])
            for part in split_result(_part(result, pages, total_pages), max_bytes)]


def _part(result: FileResult, pages: list[Page], total_pages: int) -> FileResult:
    part = PageRange(first_page=pages[0].page_number, last_page=pages[-1].page_number, total_pages=total_pages)
    return result.model_copy(update={"pages": pages, "part": part})
