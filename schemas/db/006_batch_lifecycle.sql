-- Issue 16: cancel, retry, dedupe, idempotent submit, batches from S3 events.

-- Cancel: asked for at cancel_requested_at; the batch ends 'cancelled' once every file is terminal (files the
-- workers skipped are status 'cancelled', counted here).
ALTER TABLE batches
    ADD COLUMN cancelled           integer NOT NULL DEFAULT 0,
    ADD COLUMN cancel_requested_at timestamptz;

-- Retry: a failed row whose attempt is below retry_attempt waits for that attempt's result and is not counted
-- meanwhile; the result replaces it (the replace rule) with retry_attempt NULL.
-- Dedupe: a file that shares the earlier result of duplicate_of (a copy of its pages and words).
ALTER TABLE files
    ADD COLUMN retry_attempt integer,
    ADD COLUMN duplicate_of  text;
CREATE INDEX files_ok_by_sha256 ON files (tenant, sha256) WHERE status = 'ok' AND duplicate_of IS NULL;

-- Idempotency-Key: the first 202 of (tenant, key), answered again to a repeat of the same request.
CREATE TABLE idempotency_keys (
    tenant          text NOT NULL,
    idempotency_key text NOT NULL,
    request_sha256  text NOT NULL,
    response        jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, idempotency_key)
);

-- Retries asked of ingest: one attempt number per retry, never reused.
CREATE TABLE batch_retries (
    batch_id      text NOT NULL,
    attempt       integer NOT NULL,
    file_ids      text[] NOT NULL,
    requested_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (batch_id, attempt)
);

-- S3 ObjectCreated notifications: one row per object version (a repeat notification conflicts), grouped into
-- a batch once the oldest waiting row is older than the grouping window.
CREATE TABLE s3_event_objects (
    tenant       text NOT NULL,
    bucket       text NOT NULL,
    object_key   text NOT NULL,
    version      text NOT NULL,               -- ETag (or sequencer) of the notified object version
    size_bytes   bigint,
    received_at  timestamptz NOT NULL DEFAULT now(),
    batch_id     text,                        -- set when grouped
    grouped_at   timestamptz,
    announced_at timestamptz,                 -- set once the batch's events are acknowledged by Kafka
    PRIMARY KEY (tenant, bucket, object_key, version)
);
CREATE INDEX s3_event_objects_waiting ON s3_event_objects (tenant, received_at) WHERE batch_id IS NULL;
CREATE INDEX s3_event_objects_unannounced ON s3_event_objects (batch_id) WHERE announced_at IS NULL;
