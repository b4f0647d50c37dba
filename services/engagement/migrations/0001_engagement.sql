-- The engagement service: treatments, the tenant's policy, stored decisions
-- with their outcomes and the propensities learned from them, and the
-- projection of the other services' feeds it decides with.

-- Treatments: actions the company can take. `doc` holds the fields the
-- decisions read (eligibility, value, cost, levers) as the domain's JSON;
-- the columns hold what is listed and checked in SQL.
CREATE TABLE treatments (
    tenant_id    uuid        NOT NULL,
    treatment_id uuid        NOT NULL,
    name         text        NOT NULL,
    state        text        NOT NULL CHECK (state IN ('active', 'archived')),
    version      bigint      NOT NULL,
    doc          jsonb       NOT NULL,
    create_time  timestamptz NOT NULL,
    update_time  timestamptz NOT NULL,
    archive_time timestamptz,
    PRIMARY KEY (tenant_id, treatment_id)
);
CREATE UNIQUE INDEX treatments_active_name ON treatments (tenant_id, name) WHERE state = 'active';
CREATE INDEX treatments_by_name ON treatments (tenant_id, name, treatment_id);

-- The tenant's policy; no row: the defaults.
CREATE TABLE policies (
    tenant_id   uuid        PRIMARY KEY,
    doc         jsonb       NOT NULL,
    version     bigint      NOT NULL,
    update_time timestamptz NOT NULL
);

-- What the feeds said of each customer. `status` is the profile service's
-- word: 'active' once created, 'deleted' while soft-deleted; 'pending' when
-- another feed named the customer first.
CREATE TABLE customers (
    tenant_id             uuid        NOT NULL,
    customer_id           uuid        NOT NULL,
    status                text        NOT NULL CHECK (status IN ('pending', 'active', 'deleted')),
    ladder_rung           integer     NOT NULL DEFAULT 0,
    stage                 integer     NOT NULL DEFAULT 0,
    clv_currency          text,
    clv_units             bigint,
    clv_nanos             integer,
    p_alive               double precision,
    last_complaint_time   timestamptz,
    last_unsubscribe_time timestamptz,
    PRIMARY KEY (tenant_id, customer_id)
);

-- Segments announced on segmentation's feed (not yet deleted).
CREATE TABLE segments (
    tenant_id  uuid NOT NULL,
    segment_id uuid NOT NULL,
    name       text NOT NULL,
    PRIMARY KEY (tenant_id, segment_id)
);

-- Segment memberships (from segmentation's MembershipChanged).
CREATE TABLE memberships (
    tenant_id   uuid NOT NULL,
    customer_id uuid NOT NULL,
    segment_id  uuid NOT NULL,
    PRIMARY KEY (tenant_id, customer_id, segment_id)
);
CREATE INDEX memberships_by_segment ON memberships (tenant_id, segment_id);

-- The consent record in force per channel and purpose (profile's numbers).
CREATE TABLE consents (
    tenant_id      uuid        NOT NULL,
    customer_id    uuid        NOT NULL,
    channel        integer     NOT NULL,
    purpose        integer     NOT NULL,
    status         integer     NOT NULL,
    effective_time timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, customer_id, channel, purpose)
);

-- Company-initiated interactions, by the interaction service's channel
-- number: what the contact caps count.
CREATE TABLE contacts (
    tenant_id      uuid        NOT NULL,
    interaction_id uuid        NOT NULL,
    customer_id    uuid        NOT NULL,
    channel        integer     NOT NULL,
    occur_time     timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, interaction_id)
);
CREATE INDEX contacts_by_customer ON contacts (tenant_id, customer_id, channel, occur_time);

-- Stored decisions.
CREATE TABLE decisions (
    tenant_id          uuid        NOT NULL,
    decision_id        uuid        NOT NULL,
    customer_id        uuid        NOT NULL,
    treatment_id       uuid        NOT NULL,
    treatment_version  bigint      NOT NULL,
    arm                text        NOT NULL CHECK (arm IN ('treatment', 'control')),
    channel            integer     NOT NULL,
    rank               integer     NOT NULL,
    propensity         double precision NOT NULL,
    env_currency       text        NOT NULL,
    env_units          bigint      NOT NULL,
    env_nanos          integer     NOT NULL,
    ladder_rung        integer     NOT NULL,
    decide_time        timestamptz NOT NULL,
    outcome            text        NOT NULL CHECK (outcome IN ('pending', 'accepted', 'declined', 'ignored')),
    outcome_time       timestamptz,
    PRIMARY KEY (tenant_id, decision_id)
);
CREATE INDEX decisions_newest ON decisions (tenant_id, decide_time DESC, decision_id DESC);
CREATE INDEX decisions_by_customer ON decisions (tenant_id, customer_id, decide_time DESC);
CREATE INDEX decisions_by_treatment ON decisions (tenant_id, treatment_id, decide_time DESC);
CREATE INDEX decisions_pending ON decisions (decide_time) WHERE outcome = 'pending' AND arm = 'treatment';
-- One control-group record per customer and treatment.
CREATE UNIQUE INDEX decisions_one_control ON decisions (tenant_id, treatment_id, customer_id) WHERE arm = 'control';

-- Outcomes counted per treatment and ladder rung: the propensities' data.
CREATE TABLE propensities (
    tenant_id    uuid    NOT NULL,
    treatment_id uuid    NOT NULL,
    ladder_rung  integer NOT NULL,
    accepted     bigint  NOT NULL DEFAULT 0,
    refused      bigint  NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, treatment_id, ladder_rung)
);

-- Complaints still open (a COMPLAINT interaction OPEN or IN_PROGRESS).
CREATE TABLE open_complaints (
    tenant_id      uuid NOT NULL,
    interaction_id uuid NOT NULL,
    customer_id    uuid NOT NULL,
    PRIMARY KEY (tenant_id, interaction_id)
);
CREATE INDEX open_complaints_by_customer ON open_complaints (tenant_id, customer_id);

-- Purchases (from the interaction feed): what conversions and the revenue
-- after a decision are measured with.
CREATE TABLE purchases (
    tenant_id      uuid        NOT NULL,
    interaction_id uuid        NOT NULL,
    customer_id    uuid        NOT NULL,
    occur_time     timestamptz NOT NULL,
    currency       text        NOT NULL,
    amount_nanos   bigint      NOT NULL,
    margin_nanos   bigint,
    PRIMARY KEY (tenant_id, interaction_id)
);
CREATE INDEX purchases_by_customer ON purchases (tenant_id, customer_id, occur_time);
