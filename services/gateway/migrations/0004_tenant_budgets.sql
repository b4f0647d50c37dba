-- Budgets shared by all API keys of a tenant together, so that a tenant with
-- many keys cannot multiply its per-key limits: a token bucket (sustained
-- calls per second and burst) and a ceiling on open streams, applied by each
-- gateway replica on top of each key's own limits.
ALTER TABLE tenants
    ADD COLUMN tenant_rate_limit_per_second  integer NOT NULL DEFAULT 1000
        CHECK (tenant_rate_limit_per_second > 0),
    ADD COLUMN tenant_rate_limit_burst       integer NOT NULL DEFAULT 2000
        CHECK (tenant_rate_limit_burst > 0),
    ADD COLUMN tenant_max_concurrent_streams integer NOT NULL DEFAULT 1000
        CHECK (tenant_max_concurrent_streams > 0);
