-- Idempotency keys of AdminService writes: a retry with the same request_id
-- within 24 hours returns what the first request created.
CREATE TABLE idempotency (
    tenant_id    uuid        NOT NULL,
    kind         text        NOT NULL,
    request_id   text        NOT NULL,
    request_hash bytea       NOT NULL,
    result_id    uuid        NOT NULL,
    create_time  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, kind, request_id)
);
