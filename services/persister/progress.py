"""Pure: a batches row → the absolute, versioned BatchProgress snapshot."""
from schemas.progress import BatchProgress, BatchStatus


def progress_from_row(row: dict) -> BatchProgress:
    return BatchProgress(
        batch_id=row["batch_id"],
        tenant=row["tenant"],
        name=row["name"],
        status=BatchStatus(row["status"]),
        total_files=row["total_files"],
        total_chunks=row["total_chunks"],
        succeeded=row["succeeded"],
        failed=row["failed"],
        skipped=row["skipped"],
        cancelled=row["cancelled"],
        cancel_requested=row["cancel_requested_at"] is not None,
        sealed=row["sealed"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        updated_at=row["updated_at"],
        finished_at=row["finished_at"],
        version=row["version"],
        webhook_url=row["webhook_url"],
    )
