-- Tenants and their API keys. Keys are stored only as SHA-256 hashes of the
-- whole key (keys are 256-bit random secrets, so a fast hash is the right
-- tool); the visible prefix identifies a key in lists and logs.

CREATE TABLE tenants (
    tenant_id              uuid        PRIMARY KEY,
    display_name           text        NOT NULL,
    -- Token bucket per API key: sustained calls per second and burst size.
    rate_limit_per_second  integer     NOT NULL DEFAULT 100 CHECK (rate_limit_per_second > 0),
    rate_limit_burst       integer     NOT NULL DEFAULT 200 CHECK (rate_limit_burst > 0),
    max_concurrent_streams integer     NOT NULL DEFAULT 100 CHECK (max_concurrent_streams > 0),
    version                bigint      NOT NULL DEFAULT 1,
    create_time            timestamptz NOT NULL DEFAULT now(),
    update_time            timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    tenant_id      uuid        NOT NULL REFERENCES tenants (tenant_id),
    key_id         uuid        NOT NULL,
    prefix         text        NOT NULL,
    secret_hash    bytea       NOT NULL,
    display_name   text        NOT NULL,
    scopes         text[]      NOT NULL,
    expire_time    timestamptz,
    create_time    timestamptz NOT NULL DEFAULT now(),
    revoke_time    timestamptz,
    last_used_time timestamptz,
    PRIMARY KEY (tenant_id, key_id)
);
-- Authentication looks a key up by its hash; prefixes are unique so that an
-- operator can name a key by prefix.
CREATE UNIQUE INDEX api_keys_secret_hash ON api_keys (secret_hash);
CREATE UNIQUE INDEX api_keys_prefix ON api_keys (prefix);
