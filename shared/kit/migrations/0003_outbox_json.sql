-- Event payloads are written by the service itself and only ever read back
-- whole, so they are stored as `json` (validated text) rather than `jsonb`:
-- converting every payload to jsonb's binary form was the largest single cost
-- of appending events on bulk paths such as interaction ingestion. The json
-- operators (->, ->>) still work for the erasure updates that rewrite payloads.
ALTER TABLE outbox ALTER COLUMN payload TYPE json USING payload::json;
