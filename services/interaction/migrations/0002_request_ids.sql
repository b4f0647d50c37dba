-- CreateCampaign's request ids move from the campaigns table to the kit's
-- request_ids table (one mechanism for every service), scope
-- 'CreateCampaign', with the request hash as hex.
INSERT INTO request_ids (tenant_id, scope, request_id, fingerprint, result_id, create_time)
SELECT tenant_id, 'CreateCampaign', request_id, encode(request_hash, 'hex'), campaign_id, create_time
  FROM campaigns
 WHERE request_id IS NOT NULL AND request_hash IS NOT NULL;
DROP INDEX campaigns_request;
ALTER TABLE campaigns DROP COLUMN request_id, DROP COLUMN request_hash;
