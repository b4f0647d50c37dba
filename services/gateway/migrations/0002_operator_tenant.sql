-- The operator tenant: its admin keys manage every tenant. At most one.
ALTER TABLE tenants ADD COLUMN is_operator boolean NOT NULL DEFAULT false;
CREATE UNIQUE INDEX tenants_one_operator ON tenants (is_operator) WHERE is_operator;
