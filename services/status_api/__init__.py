"""status_api: the batch progress view (from `batch.progress`), per-file results and search (from Postgres)."""
