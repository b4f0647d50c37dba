-- The profile schema: customers, their identifiers, consents, contact links,
-- merges, duplicate marks, attribute definitions and idempotency keys.
-- tenant_id leads every primary key and index.

-- One row per customer id ever issued. `status` is 'active', 'deleted'
-- (soft-deleted), 'merged' (absorbed by `merged_into`) or 'erased' (an
-- anonymous tombstone: `data` is emptied). `data` holds the descriptive
-- profile (names, details, addresses, country, locale, tags, owner, wallet,
-- stage, custom attributes) as one JSON document, filtered by containment.
CREATE TABLE customers (
    tenant_id        uuid        NOT NULL,
    customer_id      uuid        NOT NULL,
    kind             smallint    NOT NULL CHECK (kind IN (1, 2)),
    status           text        NOT NULL CHECK (status IN ('active', 'deleted', 'merged', 'erased')),
    data             jsonb       NOT NULL DEFAULT '{}',
    merged_into      uuid,
    version          bigint      NOT NULL DEFAULT 1,
    create_time      timestamptz NOT NULL DEFAULT now(),
    update_time      timestamptz NOT NULL DEFAULT now(),
    delete_time      timestamptz,
    stage_set_time   timestamptz,
    erase_time       timestamptz,
    erase_reference  text,
    PRIMARY KEY (tenant_id, customer_id),
    CHECK ((status = 'merged') = (merged_into IS NOT NULL))
);
CREATE INDEX customers_create ON customers (tenant_id, create_time, customer_id);
CREATE INDEX customers_update ON customers (tenant_id, update_time, customer_id);
CREATE INDEX customers_merged_into ON customers (tenant_id, merged_into) WHERE merged_into IS NOT NULL;
CREATE INDEX customers_data ON customers USING gin (tenant_id, data jsonb_path_ops);
CREATE INDEX customers_names ON customers USING gin (
    tenant_id,
    (lower(coalesce(data->>'display_name', '') || ' ' ||
           coalesce(data->'person'->>'given_name', '') || ' ' ||
           coalesce(data->'person'->>'family_name', '') || ' ' ||
           coalesce(data->'organization'->>'legal_name', ''))) gin_trgm_ops
);

-- Every e-mail (kind 1), phone (kind 2) and external identifier (kind 3) of a
-- tenant belongs to at most one customer: the primary key decides, so
-- concurrent writers can never give one identifier to two customers.
-- `match_key` is the looser form duplicate detection compares.
CREATE TABLE identifiers (
    tenant_id    uuid     NOT NULL,
    kind         smallint NOT NULL CHECK (kind IN (1, 2, 3)),
    system       text     NOT NULL DEFAULT '',
    value        text     NOT NULL,
    customer_id  uuid     NOT NULL,
    position     integer  NOT NULL,
    is_primary   boolean  NOT NULL DEFAULT false,
    label        text     NOT NULL DEFAULT '',
    match_key    text     NOT NULL,
    CONSTRAINT identifiers_pkey PRIMARY KEY (tenant_id, kind, system, value),
    FOREIGN KEY (tenant_id, customer_id) REFERENCES customers (tenant_id, customer_id)
);
CREATE INDEX identifiers_customer ON identifiers (tenant_id, customer_id, kind, position);
CREATE INDEX identifiers_match ON identifiers (tenant_id, kind, system, match_key);
CREATE INDEX identifiers_value ON identifiers (tenant_id, value);

-- Consent decisions, append-only. `customer_id` is the customer the decision
-- was recorded for; `holder_id` the customer whose history holds it now (the
-- survivor, after a merge).
CREATE TABLE consent_records (
    tenant_id          uuid        NOT NULL,
    consent_record_id  uuid        NOT NULL,
    customer_id        uuid        NOT NULL,
    holder_id          uuid        NOT NULL,
    channel            smallint    NOT NULL,
    purpose            smallint    NOT NULL,
    status             smallint    NOT NULL,
    source             text        NOT NULL,
    evidence           text        NOT NULL DEFAULT '',
    effective_time     timestamptz NOT NULL,
    record_time        timestamptz NOT NULL DEFAULT now(),
    recorded_by        text        NOT NULL,
    PRIMARY KEY (tenant_id, consent_record_id),
    FOREIGN KEY (tenant_id, holder_id) REFERENCES customers (tenant_id, customer_id)
);
CREATE INDEX consent_records_holder
    ON consent_records (tenant_id, holder_id, channel, purpose, effective_time DESC, record_time DESC, consent_record_id DESC);
CREATE INDEX consent_records_customer ON consent_records (tenant_id, customer_id);

-- B2B contact links: a person in a role for an organisation.
CREATE TABLE contact_links (
    tenant_id        uuid        NOT NULL,
    contact_link_id  uuid        NOT NULL,
    person_id        uuid        NOT NULL,
    organization_id  uuid        NOT NULL,
    role             smallint    NOT NULL,
    job_title        text        NOT NULL DEFAULT '',
    start_date       jsonb,
    end_date         jsonb,
    end_day          date,
    is_primary       boolean     NOT NULL DEFAULT false,
    create_time      timestamptz NOT NULL DEFAULT now(),
    update_time      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, contact_link_id),
    CONSTRAINT contact_links_unique UNIQUE (tenant_id, person_id, organization_id, role),
    FOREIGN KEY (tenant_id, person_id) REFERENCES customers (tenant_id, customer_id),
    FOREIGN KEY (tenant_id, organization_id) REFERENCES customers (tenant_id, customer_id)
);
CREATE INDEX contact_links_organization ON contact_links (tenant_id, organization_id, create_time, contact_link_id);
CREATE INDEX contact_links_person ON contact_links (tenant_id, person_id, create_time, contact_link_id);

-- Merges in force: what the merged customer brought, so that an unmerge can
-- give it back. Removed by the unmerge (or by an erase).
CREATE TABLE merges (
    tenant_id             uuid        NOT NULL,
    merged_customer_id    uuid        NOT NULL,
    survivor_customer_id  uuid        NOT NULL,
    merge_time            timestamptz NOT NULL DEFAULT now(),
    snapshot              jsonb       NOT NULL,
    PRIMARY KEY (tenant_id, merged_customer_id)
);
CREATE INDEX merges_survivor ON merges (tenant_id, survivor_customer_id);

-- Pairs marked distinct; first_id < second_id.
CREATE TABLE not_duplicates (
    tenant_id  uuid        NOT NULL,
    first_id   uuid        NOT NULL,
    second_id  uuid        NOT NULL,
    mark_time  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, first_id, second_id),
    CHECK (first_id < second_id)
);
CREATE INDEX not_duplicates_second ON not_duplicates (tenant_id, second_id);

-- The tenant's custom attribute definitions. `type` and `state` hold the
-- contract's enum numbers.
CREATE TABLE attribute_definitions (
    tenant_id       uuid        NOT NULL,
    name            text        NOT NULL,
    type            smallint    NOT NULL,
    required        boolean     NOT NULL DEFAULT false,
    description     text        NOT NULL DEFAULT '',
    state           smallint    NOT NULL DEFAULT 1,
    version         bigint      NOT NULL DEFAULT 1,
    create_time     timestamptz NOT NULL DEFAULT now(),
    update_time     timestamptz NOT NULL DEFAULT now(),
    deprecate_time  timestamptz,
    PRIMARY KEY (tenant_id, name)
);

-- Idempotency keys of retried writes: the fingerprint of the first request and
-- the ids its result names (never personal data), for 24 hours.
CREATE TABLE idempotency_keys (
    tenant_id     uuid        NOT NULL,
    method        text        NOT NULL,
    request_id    text        NOT NULL,
    fingerprint   text        NOT NULL,
    result        jsonb,
    customer_ids  uuid[]      NOT NULL DEFAULT '{}',
    create_time   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, method, request_id)
);
CREATE INDEX idempotency_keys_customers ON idempotency_keys USING gin (tenant_id, customer_ids);
