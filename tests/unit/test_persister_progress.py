from datetime import datetime, timezone

import pytest

from schemas.progress import BatchStatus
from services.persister.progress import progress_from_row

pytestmark = pytest.mark.unit


def test_row_becomes_an_absolute_snapshot():
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    row = {"batch_id": "b1", "tenant": "t", "name": "n", "status": "processing", "total_files": 10, "total_chunks": 2,
           "succeeded": 3, "failed": 1, "skipped": 0, "created_at": now, "started_at": now, "updated_at": now,
           "finished_at": None, "version": 7, "published_version": 6, "options": None, "webhook_url": None,
           "cancelled": 2, "cancel_requested_at": now, "sealed": False}
    progress = progress_from_row(row)
    assert progress.status is BatchStatus.PROCESSING
    assert progress.processed_files == 6 and progress.version == 7
    assert (progress.cancelled, progress.cancel_requested) == (2, True)
    assert progress.sealed is False
