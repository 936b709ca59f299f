-- Ingest's repair of lost results looks every few seconds for unfinished batches whose last result is old.
CREATE INDEX batches_unfinished ON batches (updated_at) WHERE status IN ('pending', 'processing');
