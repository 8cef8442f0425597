-- since: 1.1.0
-- Expand-only: 1.0.0 keeps working against this schema.
ALTER TABLE items ADD COLUMN tags text[] NOT NULL DEFAULT '{}';
