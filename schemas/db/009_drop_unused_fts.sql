-- The full-text index of 001 serves no query: search reads text_compact under its trigram index (004) and the
-- embeddings under HNSW. It cost the persister 1.1 s of every 3.5 s it spent writing 1,000 pages of 300 words.
DROP INDEX IF EXISTS pages_text_fts;
