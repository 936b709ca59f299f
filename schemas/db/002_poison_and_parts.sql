-- Poison records, file parts and retries (issue 15).

-- Why a file failed, for machines (schemas.results.FailureReason); NULL for ok and skipped files.
ALTER TABLE files ADD COLUMN error_code text;

-- A file whose result comes in page-range parts. Its pages and words are stored with each part; the files
-- row (what counts) is written once the parts cover pages 1..total_pages.
CREATE TABLE file_parts (
    file_id          text NOT NULL,
    first_page       integer NOT NULL,
    last_page        integer NOT NULL,
    total_pages      integer NOT NULL,
    batch_id         text NOT NULL,
    chunk_id         text NOT NULL,
    tenant           text NOT NULL,
    original_name    text NOT NULL,
    sha256           text NOT NULL,
    size_bytes       bigint NOT NULL,
    content_type     text NOT NULL,
    status           text NOT NULL,
    error            text,
    error_code       text,
    engine           text NOT NULL,
    embedding_model  text,
    page_count       integer NOT NULL,              -- pages stored for this part
    timings          jsonb NOT NULL,
    attempt          integer NOT NULL,
    persisted_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (file_id, first_page)
);

-- Every result that wrote or replaced a files row: the history of a file's tries.
CREATE TABLE file_attempts (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    file_id      text NOT NULL,
    attempt      integer NOT NULL,
    status       text NOT NULL,
    error_code   text,
    error        text,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX file_attempts_by_file ON file_attempts (file_id, id);

-- Records dead-lettered by the persister, written in the transaction that moves their offsets and produced
-- to the DLQ topic after the commit (a crash in between sends them on the next start).
CREATE TABLE dlq_outbox (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source_topic      text NOT NULL,
    source_partition  integer NOT NULL,
    source_offset     bigint NOT NULL,
    reason            text NOT NULL,
    error_class       text NOT NULL,
    record_key        bytea,
    record            bytea NOT NULL,               -- the DlqRecord (JSON) holding the original bytes and headers
    created_at        timestamptz NOT NULL DEFAULT now(),
    published_at      timestamptz,
    UNIQUE (source_topic, source_partition, source_offset)
);
CREATE INDEX dlq_outbox_unpublished ON dlq_outbox (id) WHERE published_at IS NULL;
