-- Campaign responses (opened, clicked, converted) counted as they arrive, so
-- that classifying a customer reads only its recent purchases, not its whole
-- history.
ALTER TABLE features ADD COLUMN campaign_responses bigint NOT NULL DEFAULT 0;

UPDATE features f SET campaign_responses = r.n
FROM (SELECT tenant_id, customer_id, count(*) AS n FROM events
       WHERE type IN ('campaign_opened', 'campaign_clicked', 'campaign_converted')
       GROUP BY tenant_id, customer_id) r
WHERE r.tenant_id = f.tenant_id AND r.customer_id = f.customer_id;
