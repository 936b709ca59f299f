-- The table contract: written by the persister, read by status_api.
-- Runs inside the configured schema (search_path = <schema>, public); pgvector lives in public.

CREATE TABLE batches (
    batch_id          text PRIMARY KEY,
    tenant            text NOT NULL,
    name              text NOT NULL DEFAULT '',
    status            text NOT NULL DEFAULT 'pending',
    total_files       integer NOT NULL DEFAULT 0,   -- 0 until BatchCreated is persisted
    total_chunks      integer NOT NULL DEFAULT 0,
    succeeded         integer NOT NULL DEFAULT 0,   -- absolute counts, recomputed in the transaction that adds files
    failed            integer NOT NULL DEFAULT 0,
    skipped           integer NOT NULL DEFAULT 0,
    options           jsonb,
    webhook_url       text,
    created_at        timestamptz,
    started_at        timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    finished_at       timestamptz,
    version           bigint NOT NULL DEFAULT 0,    -- bumped in every transaction that touches the batch
    published_version bigint NOT NULL DEFAULT 0     -- highest version sent to batch.progress
);
CREATE INDEX batches_unpublished ON batches (batch_id) WHERE published_version < version;

CREATE TABLE files (
    file_id          text PRIMARY KEY,
    batch_id         text NOT NULL,
    chunk_id         text NOT NULL,
    tenant           text NOT NULL,
    original_name    text NOT NULL,
    sha256           text NOT NULL,
    size_bytes       bigint NOT NULL,
    content_type     text NOT NULL,
    status           text NOT NULL,
    error            text,
    engine           text NOT NULL,
    embedding_model  text,
    page_count       integer NOT NULL,
    timings          jsonb NOT NULL,
    attempt          integer NOT NULL,
    persisted_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX files_by_batch ON files (batch_id, file_id);
CREATE INDEX files_batch_status ON files (batch_id, status);

CREATE TABLE pages (
    file_id          text NOT NULL,
    page_number      integer NOT NULL,
    batch_id         text NOT NULL,
    tenant           text NOT NULL,
    width            integer NOT NULL,
    height           integer NOT NULL,
    text             text NOT NULL,
    mean_confidence  real NOT NULL,
    embedding        vector(512),
    PRIMARY KEY (file_id, page_number)
);
CREATE INDEX pages_embedding_hnsw ON pages USING hnsw (embedding vector_cosine_ops);
CREATE INDEX pages_text_fts ON pages USING gin (to_tsvector('simple', text));

CREATE TABLE words (
    file_id      text NOT NULL,
    page_number  integer NOT NULL,
    word_index   integer NOT NULL,
    text         text NOT NULL,
    confidence   real NOT NULL,
    x            integer NOT NULL,
    y            integer NOT NULL,
    width        integer NOT NULL,
    height       integer NOT NULL,
    PRIMARY KEY (file_id, page_number, word_index)
);

-- The "offsets outside Kafka" pattern: the next offset to read, committed with the rows it produced.
CREATE TABLE consumer_offsets (
    group_id     text NOT NULL,
    topic        text NOT NULL,
    partition    integer NOT NULL,
    next_offset  bigint NOT NULL,
    PRIMARY KEY (group_id, topic, partition)
);
