-- Issue 17: how a page was turned before it was read, and whether it is marked for review.
-- Confidences (pages.mean_confidence, words.confidence) are 0..1.
ALTER TABLE pages
    ADD COLUMN rotation     smallint NOT NULL DEFAULT 0 CHECK (rotation IN (0, 90, 180, 270)),
    ADD COLUMN skew         real     NOT NULL DEFAULT 0,
    ADD COLUMN needs_review boolean  NOT NULL DEFAULT false;
CREATE INDEX pages_needs_review ON pages (batch_id) WHERE needs_review;
