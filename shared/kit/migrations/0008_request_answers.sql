-- Requests whose answer is more than the id of what they created (a merge's
-- outcome, an import item's outcome) keep it as a document in `result`, and
-- the customers it names in `subject_ids`, so erasing a customer also
-- forgets every remembered answer that names them. `result_id` stays for
-- requests that created one object; a row has one or the other, or neither
-- while its first request is still running.
ALTER TABLE request_ids
    ALTER COLUMN result_id DROP NOT NULL,
    ADD COLUMN result jsonb,
    ADD COLUMN subject_ids uuid[] NOT NULL DEFAULT '{}';
