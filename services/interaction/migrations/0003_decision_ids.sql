-- The engagement decision an interaction answers (a conversion of an
-- offered treatment), carried on the feed so the engagement service learns
-- from it.
ALTER TABLE interactions ADD COLUMN decision_id uuid;
