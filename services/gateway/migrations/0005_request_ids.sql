-- CreateTenant's and CreateApiKey's request ids move to the kit's
-- request_ids table (one mechanism for every service); the scope is the
-- kind of object, the fingerprint the content hash in hex.
INSERT INTO request_ids (tenant_id, scope, request_id, fingerprint, result_id, create_time)
SELECT tenant_id, kind, request_id, encode(request_hash, 'hex'), result_id, create_time FROM idempotency;
DROP TABLE idempotency;
