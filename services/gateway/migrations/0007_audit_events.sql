-- The audit trail: one row per call that changed something through the
-- gateway (a write of a forwarded service, or an admin action), with who made
-- it, the ids it named and how it ended; never the request's payload.
CREATE TABLE audit_events (
    audit_event_id uuid NOT NULL,
    tenant_id uuid NOT NULL,
    time timestamptz NOT NULL,
    api_key_id uuid NOT NULL,
    api_key_prefix text NOT NULL,
    service text NOT NULL,
    method text NOT NULL,
    resource text NOT NULL,
    -- The ids of `resource`, for the filter by id.
    resource_ids text[] NOT NULL,
    code text NOT NULL,
    request_id text NOT NULL,
    trace_id text NOT NULL,
    PRIMARY KEY (tenant_id, time, audit_event_id)
);
-- Every tenant's events newest first (operator keys), and expiry.
CREATE INDEX audit_events_by_time ON audit_events (time, audit_event_id);
CREATE INDEX audit_events_by_resource ON audit_events USING gin (resource_ids);
