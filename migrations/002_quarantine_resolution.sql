-- 002: `receiver quarantine replay` marks a row resolved once everything in it is stored.
-- Rows are never deleted: the reason and the content stay as the record of what happened.

-- Nullable columns without a default are a catalog change, not a table rewrite, and the CHECK
-- only scans quarantine once (it holds bad content kept once each: small), so the receiver's
-- writes to quarantine wait only briefly while the release migrates.
ALTER TABLE quarantine
    ADD COLUMN resolved_at timestamptz,
    ADD COLUMN resolution  text,
    -- Resolved means both: when, and what the replay did (stored / duplicate counts).
    ADD CONSTRAINT quarantine_resolution_complete
        CHECK ((resolved_at IS NULL) = (resolution IS NULL));

COMMENT ON COLUMN quarantine.resolved_at IS 'When a replay stored everything in the row; null while it still needs attention';
COMMENT ON COLUMN quarantine.resolution IS 'What the replay did, e.g. "replayed: 1 stored, 0 duplicates"';

-- `quarantine list` and `quarantine replay` look at unresolved rows; resolved ones pile up.
CREATE INDEX quarantine_unresolved ON quarantine (id) WHERE resolved_at IS NULL;
