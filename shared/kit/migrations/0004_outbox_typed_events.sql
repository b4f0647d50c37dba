-- Typed events: each event is its service's envelope message (events.proto),
-- stored encoded, with its type URL, exactly as it goes out in
-- ChangeEvent.event. Integers (money units and nanos, scores) stay integers;
-- nothing is rounded through JSON doubles. `payload` remains only for events
-- appended before this migration.
ALTER TABLE outbox ADD COLUMN event_type_url text;
ALTER TABLE outbox ADD COLUMN event bytea;
ALTER TABLE outbox ALTER COLUMN payload DROP NOT NULL;
