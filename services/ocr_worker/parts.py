"""Pure: how one file's work and one file's result are cut into page ranges.

A long PDF becomes several work items (one ChunkRequested each), so no single try holds a chunk for an hour;
a result too large for one Kafka record becomes several parts. The persister joins the parts into one file.
"""
from schemas.base import PageRange
from schemas.chunks import ChunkRequested, StoredFile
from schemas.results import FailureReason, FileResult, FileStatus
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
    """The result as it is when it fits in max_bytes; otherwise parts of consecutive pages that each fit.
    A single page too large for a record becomes a failed part (result_too_large)."""
    if len(encode(result)) <= max_bytes:
        return [result]
    whole = result.part or PageRange(first_page=1, last_page=len(result.pages), total_pages=len(result.pages))
    overhead = len(encode(result.model_copy(update={"pages": [], "part": whole}))) + 64
    parts, group, size = [], [], overhead
    for page in result.pages:
        page_size = len(page.model_dump_json()) + 1
        if group and size + page_size > max_bytes:
            parts.append(group)
            group, size = [], overhead
        group.append(page)
        size += page_size
    parts.append(group)
    return [_part(result, group, whole.total_pages, fits=overhead + sum(len(p.model_dump_json()) + 1 for p in group)
                  <= max_bytes, max_bytes=max_bytes) for group in parts]


def _part(result: FileResult, pages: list, total_pages: int, *, fits: bool, max_bytes: int) -> FileResult:
    part = PageRange(first_page=pages[0].page_number, last_page=pages[-1].page_number, total_pages=total_pages)
    if fits:
        return result.model_copy(update={"pages": pages, "part": part})
    return result.model_copy(update={
        "pages": [], "part": part, "status": FileStatus.FAILED, "error_code": FailureReason.RESULT_TOO_LARGE,
        "embedding_model": None,
        "error": f"page {part.first_page}'s result is larger than the largest record ({max_bytes:,} bytes)"})
