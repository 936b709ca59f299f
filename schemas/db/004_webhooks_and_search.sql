-- Webhook delivery log (written by the notifier, read by status_api) and the page text index for hybrid search.

-- One row per notification the notifier owes a receiver. delivery_id is derived from (batch, event), so a
-- progress snapshot read twice (at-least-once) finds its row already there and adds nothing.
CREATE TABLE webhook_deliveries (
    delivery_id      text PRIMARY KEY,               -- the webhook-id header, the same on every attempt
    batch_id         text NOT NULL,
    tenant           text NOT NULL,
    event_type       text NOT NULL,                  -- batch.completed | batch.failed | batch.cancelled | batch.progress
    milestone        integer,                        -- percent, for batch.progress; null for terminal events
    url              text NOT NULL,
    body             text NOT NULL,                  -- the exact bytes signed and sent, identical on retries
    status           text NOT NULL DEFAULT 'pending', -- pending | delivered | failed | refused
    attempt_count    integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz,                    -- due time while pending; a claim pushes it out by a lease
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    last_error       text
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_by_batch ON webhook_deliveries (batch_id, created_at);

CREATE TABLE webhook_attempts (
    delivery_id   text NOT NULL REFERENCES webhook_deliveries ON DELETE CASCADE,
    attempt       integer NOT NULL,
    attempted_at  timestamptz NOT NULL,
    status_code   integer,                          -- null when no HTTP answer came (refused, timeout, connect error)
    error         text,
    duration_ms   real NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);

-- Lexical search: the page text lower-cased with every whitespace removed, so a Korean query with or without
-- spaces finds text OCRed either way (Tesseract's Hangul spacing is unreliable), under a trigram index that
-- serves LIKE '%…%' and word-similarity lookups. pg_trgm is a trusted extension shipped with PostgreSQL.
CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public;
ALTER TABLE pages ADD COLUMN text_compact text
    GENERATED ALWAYS AS (lower(regexp_replace(text, '\s+', '', 'g'))) STORED;
CREATE INDEX pages_text_compact_trgm ON pages USING gin (text_compact public.gin_trgm_ops);
