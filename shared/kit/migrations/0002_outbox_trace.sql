-- The W3C trace context of the call that made each change, so that a feed
-- consumer applying the event continues that call's trace.
ALTER TABLE outbox ADD COLUMN traceparent text;
