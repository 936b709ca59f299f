-- Issue 19: batches that grow across requests (POST /v1/batches open=true, .../files, .../seal).

-- The persister's: a batch completes only once sealed (BatchCreated open=false, or BatchSealed). Every batch
-- before this one was sealed at once; a placeholder row (results before BatchCreated) has no files to complete.
ALTER TABLE batches ADD COLUMN sealed boolean NOT NULL DEFAULT true;

-- Ingest's: an open batch's files and chunks so far (added chunks continue its numbering; the size limit is
-- checked against it), its manifests (manifest.json, then manifest.1.json, ...: what a retry runs again), and
-- whether it was sealed or cancelled. Each addition or seal locks the row.
CREATE TABLE open_batches (
    batch_id     text PRIMARY KEY,
    tenant       text NOT NULL,
    options      jsonb NOT NULL,
    chunk_size   integer NOT NULL,
    total_files  integer NOT NULL,
    total_chunks integer NOT NULL,
    manifests    integer NOT NULL DEFAULT 1,
    sealed_at    timestamptz,
    cancelled_at timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);
