-- Features kept current incrementally: a batch of interaction events adds
-- its new rows to each customer's counters instead of recomputing the
-- customer from its whole history. These columns hold what the increments
-- need: the number of priced purchases (for the average order value), the
-- time and interaction of the latest CSAT and NPS answers (a later answer
-- replaces them, an earlier one arriving late does not), and the distinct
-- campaigns sent and responded to (for the response rate).
ALTER TABLE features
    ADD COLUMN priced_purchases bigint NOT NULL DEFAULT 0,
    ADD COLUMN csat_time timestamptz,
    ADD COLUMN csat_interaction uuid,
    ADD COLUMN nps_time timestamptz,
    ADD COLUMN nps_interaction uuid,
    ADD COLUMN campaigns_sent bigint NOT NULL DEFAULT 0,
    ADD COLUMN campaigns_responded bigint NOT NULL DEFAULT 0;

-- The backfill from the interactions already projected.
UPDATE features f SET
    priced_purchases = coalesce((SELECT count(e.amount) FROM events e
        WHERE e.tenant_id = f.tenant_id AND e.customer_id = f.customer_id AND e.type = 'purchase'), 0),
    csat_time = l.csat_time, csat_interaction = l.csat_interaction,
    nps_time = l.nps_time, nps_interaction = l.nps_interaction,
    campaigns_sent = coalesce((SELECT count(DISTINCT e.campaign_id) FROM events e
        WHERE e.tenant_id = f.tenant_id AND e.customer_id = f.customer_id AND e.type = 'campaign_sent'), 0),
    campaigns_responded = coalesce((SELECT count(DISTINCT e.campaign_id) FROM events e
        WHERE e.tenant_id = f.tenant_id AND e.customer_id = f.customer_id
          AND e.type IN ('campaign_clicked', 'campaign_converted')), 0)
FROM features g
LEFT JOIN LATERAL (
    SELECT
        (SELECT e.occur_time FROM events e WHERE e.tenant_id = g.tenant_id AND e.customer_id = g.customer_id
            AND e.type = 'survey_response' AND e.csat IS NOT NULL
          ORDER BY e.occur_time DESC, e.interaction_id DESC LIMIT 1) AS csat_time,
        (SELECT e.interaction_id FROM events e WHERE e.tenant_id = g.tenant_id AND e.customer_id = g.customer_id
            AND e.type = 'survey_response' AND e.csat IS NOT NULL
          ORDER BY e.occur_time DESC, e.interaction_id DESC LIMIT 1) AS csat_interaction,
        (SELECT e.occur_time FROM events e WHERE e.tenant_id = g.tenant_id AND e.customer_id = g.customer_id
            AND e.type = 'survey_response' AND e.nps IS NOT NULL
          ORDER BY e.occur_time DESC, e.interaction_id DESC LIMIT 1) AS nps_time,
        (SELECT e.interaction_id FROM events e WHERE e.tenant_id = g.tenant_id AND e.customer_id = g.customer_id
            AND e.type = 'survey_response' AND e.nps IS NOT NULL
          ORDER BY e.occur_time DESC, e.interaction_id DESC LIMIT 1) AS nps_interaction
) l ON true
WHERE g.tenant_id = f.tenant_id AND g.customer_id = f.customer_id;

-- Campaign responses of a customer to one campaign, for the distinct counts.
CREATE INDEX events_by_campaign ON events (tenant_id, customer_id, campaign_id, type)
    WHERE campaign_id IS NOT NULL;

-- The membership log is numbered per tenant: `tenants.membership_sequence`
-- is the tenant's last sequence, taken (row lock until commit) by each
-- writer, so a tenant's sequence order is its commit order and sequences
-- say nothing about other tenants. Logged changes keep their numbers; each
-- tenant continues above its own.
ALTER TABLE tenants ADD COLUMN membership_sequence bigint NOT NULL DEFAULT 0;
INSERT INTO tenants (tenant_id) SELECT DISTINCT tenant_id FROM membership_log ON CONFLICT DO NOTHING;
UPDATE tenants t SET membership_sequence = m.last
FROM (SELECT tenant_id, max(sequence) AS last FROM membership_log GROUP BY tenant_id) m
WHERE m.tenant_id = t.tenant_id;
ALTER TABLE membership_log ALTER COLUMN sequence DROP IDENTITY;
