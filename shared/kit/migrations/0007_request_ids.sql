-- Request ids remembered for 24 hours, one table for every service: what a
-- request with a client-chosen id created (`result_id`) and a fingerprint of
-- its content, so a retry gets the same answer and a reuse with other
-- content is refused. `scope` names the method (or kind of object) the id
-- was given to. Read and written through `rapport_kit::idempotency`.
CREATE TABLE request_ids (
    tenant_id   uuid        NOT NULL,
    scope       text        NOT NULL,
    request_id  text        NOT NULL,
    fingerprint text        NOT NULL,
    result_id   uuid        NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, scope, request_id)
);
